//! `remixd status`, run as the real binary beside real daemons: who serves the inbox, the
//! API's state, the counts and the last quarantined jobs, and its exit statuses (SPEC.md,
//! Running it: "Exit 0: a live process and the API not paused; 3: paused; 4: no live
//! process; 2: bad config").

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::{Daemon, TIMEOUT, run_to_end};
use crate::env::TestEnv;
use crate::fake_api::{FakeApi, Mode, Reply};
use crate::images;

/// `remixd status -c CONFIG --json` with no key in the environment: its exit status and
/// its one JSON object.
fn status_json(env: &TestEnv) -> (ExitStatus, Value) {
    let config = env.config_path.to_string_lossy().into_owned();
    let (status, stdout, stderr) = run_to_end(
        env.root(),
        &["status", "-c", config.as_str(), "--json"],
        None,
    );
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("status --json printed no JSON object ({e}):\n{stdout}\n{stderr}")
    });
    (status, report)
}

/// The table `remixd status -c CONFIG` prints, with its exit status.
fn status_table(env: &TestEnv) -> (ExitStatus, String) {
    let config = env.config_path.to_string_lossy().into_owned();
    let (status, stdout, _) = run_to_end(env.root(), &["status", "-c", config.as_str()], None);
    (status, stdout)
}

/// Runs `status --json` until `pred` holds (the state files are rewritten at most once a
/// second), failing after the global timeout with the last report.
fn status_until(env: &TestEnv, what: &str, pred: impl Fn(i32, &Value) -> bool) -> Value {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (status, report) = status_json(env);
        let code = status.code().unwrap();
        if pred(code, &report) {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for status to show {what}; last (exit {code}): {report:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn drop_job(env: &TestEnv, name: &str, seed: u64) {
    env.drop_file(&name.replace(".png", ".txt"), "a cat");
    env.drop_file(name, images::png(16, 16, seed));
}

/// No process yet: exit 4. A live, working process: exit 0, listed with its pid, the day's
/// counts and the quarantined job (newest first, with its reason and message). After a clean
/// stop the process is gone at once: exit 4 again, and the day's counts remain.
#[test]
fn status_exits_4_without_a_process_0_with_one_and_forgets_a_clean_stop_at_once() {
    let env = TestEnv::new();
    env.config().write();
    let (status, report) = status_json(&env);
    assert_eq!(status.code(), Some(4), "{report:#}");
    assert_eq!(report["processes"], serde_json::json!([]));

    let mut d = Daemon::start(&env, &[]);
    d.wait_ready();
    drop_job(&env, "good.png", 1);
    env.drop_file("broken.png", b"not an image at all");
    d.wait_completed("good.png");
    d.wait_quarantined("broken.png", "unsupported_format");
    let report = status_until(&env, "the ended jobs", |code, r| {
        code == 0 && r["today"]["completed"] == 1 && r["today"]["quarantined"] == 1
    });
    let procs = report["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 1, "{report:#}");
    let pid = d.events_named("daemon.started")[0]["owner"].clone();
    assert_eq!(procs[0]["owner"], pid, "{report:#}");
    assert_eq!(procs[0]["alive"], true);
    assert!(procs[0]["lease_age_s"].as_u64().is_some(), "{report:#}");
    assert!(procs[0]["started_at"].is_string(), "{report:#}");
    assert_eq!(procs[0]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(report["api"]["paused"], false);
    assert_eq!(
        report["today"]["images"], 1,
        "one dry-run image: {report:#}"
    );
    for key in ["pending", "in_flight", "budgets"] {
        assert!(!report[key].is_null(), "{key} missing: {report:#}");
    }
    let recent = report["recent_quarantined"].as_array().unwrap();
    assert_eq!(recent.len(), 1, "{report:#}");
    assert_eq!(recent[0]["file"], "broken.png");
    assert_eq!(recent[0]["reason"], "unsupported_format");
    assert!(recent[0]["message"].as_str().unwrap().len() > 20);
    assert!(recent[0]["at"].as_str().unwrap().ends_with('Z'));

    let (status, table) = status_table(&env);
    assert_eq!(status.code(), Some(0), "{table}");
    for text in [
        "alive",
        "working",
        "broken.png",
        "unsupported_format",
        "1 completed, 1 quarantined",
    ] {
        assert!(
            table.contains(text),
            "{text:?} missing in the table:\n{table}"
        );
    }

    d.stop();
    let (status, report) = status_json(&env);
    assert_eq!(status.code(), Some(4), "{report:#}");
    assert_eq!(report["processes"], serde_json::json!([]), "{report:#}");
    assert_eq!(report["today"]["completed"], 1, "{report:#}");
}

/// A spent balance pauses submissions: exit 3, with the reason, when the pause began and
/// when the next probe goes.
#[test]
fn status_exits_3_while_the_api_is_paused_and_says_why_since_when_and_the_next_probe() {
    let fake = FakeApi::start(Mode::Kkiai);
    fake.set_default(Reply::status(402, r#"{"error": "payment required"}"#));
    let env = TestEnv::new();
    env.config().fake(&fake).write();
    let mut d = Daemon::start(&env, &[]);
    d.wait_ready();
    drop_job(&env, "waits.png", 2);
    d.wait_for_event("api.paused", |_| true);
    let report = status_until(&env, "the pause", |code, _| code == 3);
    let api = &report["api"];
    assert_eq!(api["paused"], true, "{report:#}");
    assert_eq!(api["reason"], "balance", "{report:#}");
    let since = api["since"].as_str().unwrap();
    let next = api["next_probe_at"].as_str().unwrap();
    assert!(since.ends_with('Z') && next >= since, "{report:#}");
    assert_eq!(report["processes"][0]["alive"], true, "{report:#}");
    let (status, table) = status_table(&env);
    assert_eq!(status.code(), Some(3), "{table}");
    assert!(table.contains("PAUSED (balance) since"), "{table}");
    d.stop();
}

/// Two processes on one inbox are both listed, alive. When one is killed (no clean stop),
/// it stays listed, presumed dead (its pid is gone from this host), and status still exits 0
/// for the other.
#[test]
fn status_lists_two_processes_on_one_inbox_and_a_killed_one_as_presumed_dead() {
    let env = TestEnv::new();
    // A long lease: the survivor does not take the dead one's folder over (and remove it)
    // while the test looks; on one host, a gone pid is presumed dead at once anyway.
    env.config().set("lease", "10m").write();
    let mut a = Daemon::start(&env, &[]);
    let mut b = Daemon::start(&env, &[]);
    a.wait_ready();
    b.wait_ready();
    let owner_of = |d: &Daemon| d.events_named("daemon.started")[0]["owner"].clone();
    let (owner_a, owner_b) = (owner_of(&a), owner_of(&b));
    let report = status_until(&env, "two live processes", |code, r| {
        code == 0 && r["processes"].as_array().unwrap().len() == 2
    });
    let procs = report["processes"].as_array().unwrap();
    assert!(procs.iter().all(|p| p["alive"] == true), "{report:#}");
    let owners: Vec<&Value> = procs.iter().map(|p| &p["owner"]).collect();
    assert!(
        owners.contains(&&owner_a) && owners.contains(&&owner_b),
        "{report:#}"
    );

    b.signal(libc::SIGKILL);
    b.wait_exit(TIMEOUT);
    let report = status_until(&env, "the killed one presumed dead", |_, r| {
        r["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["owner"] == owner_b && p["alive"] == false)
    });
    let (status, _) = status_json(&env);
    assert_eq!(status.code(), Some(0), "one is still alive: {report:#}");
    let (_, table) = status_table(&env);
    assert!(
        table.contains("presumed dead") && table.contains("alive"),
        "{table}"
    );
    a.stop();
}

/// A config status cannot read: exit 2, with one line naming the key.
#[test]
fn status_exits_2_on_a_bad_config() {
    let env = TestEnv::new();
    env.config().set("watch.setle", "1s").write();
    let config = env.config_path.to_string_lossy().into_owned();
    let (status, _, stderr) = run_to_end(env.root(), &["status", "-c", config.as_str()], None);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("setle"), "{stderr}");
}
