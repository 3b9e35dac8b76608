//! `kill -9` at random moments, many times, over many files against a slow and sometimes
//! failing API; then every file must be in exactly one place, complete, and no image may have
//! been paid for twice after its answer was recorded.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::asserts::{Kill, assert_all_ended, is_final_answer, reupload_violations};
use crate::daemon::Daemon;
use crate::env::{Rng, TestEnv, sha256};
use crate::fake_api::{FakeApi, FileFault, Mode, Reply, Upload};
use crate::images;

/// Images dropped in all.
const IMAGES: usize = 40;
/// Daemon runs ended by SIGKILL before the last, clean one.
const KILLS: usize = 13;
/// Stages after which the answer is in the journal (SPEC.md: "a job whose API answer was
/// journaled is never submitted again").
const ANSWERED_STAGES: [&str; 3] = ["responded", "publishing", "quarantining"];

fn drop_image(env: &TestEnv, i: usize) -> String {
    let dir = if i % 3 == 0 { "batch/" } else { "" };
    env.drop_file(&format!("{dir}img{i:02}.txt"), format!("crash test {i}"));
    let rel = format!("{dir}img{i:02}.png");
    env.drop_file(&rel, images::png(24, 16 + (i as u32 % 7), 9_000 + i as u64));
    rel
}

/// A few transient faults among the answers: 500s, one 429 with `Retry-After`, and an output
/// whose first fetch fails.
fn script_faults(fake: &FakeApi, rng: &mut Rng) {
    for n in 0..60 {
        let reply = match rng.range(0, 14) {
            _ if n == 9 => {
                Reply::status(429, r#"{"error": "slow down"}"#).header("Retry-After", "1")
            }
            0 => Reply::status(500, r#"{"error": "internal"}"#),
            1 => Reply::status(502, "bad gateway"),
            2 => Reply::ok().fault_at(1, FileFault::FailOnce),
            _ => Reply::ok(),
        };
        fake.push_reply(reply);
    }
}

/// Runs a daemon for a random while and kills it with SIGKILL; returns the kill and the
/// run's events.
fn run_and_kill(env: &TestEnv, rng: &mut Rng) -> (Kill, Vec<Value>) {
    let d = Daemon::start(env, &[]);
    std::thread::sleep(rng.millis(100, 1500));
    let before = Instant::now();
    d.signal(libc::SIGKILL);
    let mut d = d;
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "{}",
        d.dump()
    );
    d.assert_logs_clean();
    let kill = Kill {
        process: String::new(),
        before,
        dead: Instant::now(),
    };
    (kill, d.events())
}

/// After a clean `--once` run that ended every job, the work area holds no job folder and no
/// temporary file: what a crash left behind was finished or cleaned up, not left to pile up.
/// (Job folders are `<work_dir>/owners/<owner>/jobs/<job_id>/`, `src/lease.rs`.)
fn assert_work_area_empty(env: &TestEnv) {
    let left: Vec<String> = crate::env::walk_paths(&env.work_dir())
        .into_iter()
        .map(|p| {
            p.strip_prefix(env.work_dir())
                .unwrap()
                .display()
                .to_string()
        })
        .filter(|p| {
            p.starts_with("jobs/")
                || p.contains("/jobs/")
                || p.rsplit('.').next().is_some_and(|ext| ext == "part")
        })
        .collect();
    assert!(
        left.is_empty(),
        "left in the work area after every job ended: {left:?}"
    );
}

/// SPEC.md, A job: "Every input image ends in exactly one of: the outbox, the quarantine, or
/// still pending ... Nothing is ever deleted, duplicated or left half-written in the outbox or
/// quarantine. A crash or restart resumes every unfinished job from its journal: a job whose
/// API answer was journaled is never submitted again." Checked over 13 SIGKILLs at random
/// moments against a slow API with transient faults, then one clean `--once` run.
#[test]
fn kill_9_at_random_moments_loses_nothing_and_never_pays_twice() {
    let started = Instant::now();
    let mut rng = Rng::from_env_or_time("REMIXD_CRASH_SEED");
    let fake = FakeApi::start(Mode::Kkiai);
    fake.set_latency(
        Duration::from_millis(50),
        Duration::from_millis(300),
        rng.next_u64(),
    );
    script_faults(&fake, &mut rng);
    let env = TestEnv::new();
    env.config()
        .fake(&fake)
        .set_all(&[("defaults.num_images", "2"), ("limits.concurrency", "4")])
        .write();
    let mut rels: Vec<String> = (0..IMAGES / 2).map(|i| drop_image(&env, i)).collect();
    let mut kills = Vec::new();
    // Files whose journal was past the answer at a kill: (file, index of that kill).
    let mut journaled: Vec<(String, usize)> = Vec::new();
    for k in 0..KILLS {
        if k == 3 {
            rels.extend((IMAGES / 2..IMAGES).map(|i| drop_image(&env, i)));
        }
        let (kill, events) = run_and_kill(&env, &mut rng);
        if k > 0 {
            for e in events.iter().filter(|e| e["event"] == "job.resumed") {
                if ANSWERED_STAGES.contains(&e["stage"].as_str().unwrap_or_default()) {
                    journaled.push((e["file"].as_str().unwrap().to_string(), k - 1));
                }
            }
        }
        kills.push(kill);
    }
    let mut last = Daemon::start(&env, &["--once"]);
    let status = last.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{}", last.dump());
    last.assert_logs_clean();
    for e in last.events_named("job.resumed") {
        if ANSWERED_STAGES.contains(&e["stage"].as_str().unwrap_or_default()) {
            journaled.push((e["file"].as_str().unwrap().to_string(), KILLS - 1));
        }
    }

    let quarantined = assert_all_ended(&env);
    // Only transient faults were scripted: none is the file's fault.
    assert!(quarantined.is_empty(), "quarantined: {quarantined:?}");

    let by_sha: HashMap<String, String> = rels
        .iter()
        .map(|r| (sha256(env.dropped_at(r).bytes()), r.clone()))
        .collect();
    let mut uploads: BTreeMap<&str, Vec<Upload>> = BTreeMap::new();
    for u in fake.uploads() {
        if let Some(rel) = by_sha.get(&u.sha256) {
            uploads.entry(rel.as_str()).or_default().push(u);
        }
    }
    let mut violations = Vec::new();
    for rel in &rels {
        let of = uploads.get(rel.as_str()).map_or(&[][..], Vec::as_slice);
        assert!(
            of.iter().any(is_final_answer),
            "{rel} was published without a 200 answer from the API"
        );
        violations.extend(reupload_violations(rel, of, &kills));
    }
    // Stronger, from the daemon's own account: once a restart found the answer journaled,
    // no upload of that image may come after the kill before that restart.
    for (rel, k) in &journaled {
        let late = uploads
            .get(rel.as_str())
            .into_iter()
            .flatten()
            .filter(|u| u.at > kills[*k].dead)
            .count();
        if late > 0 {
            violations.push(format!(
                "{rel}: resumed with its answer journaled, yet uploaded {late} more time(s)"
            ));
        }
    }
    let total: usize = uploads.values().map(Vec::len).sum();
    eprintln!(
        "{IMAGES} images, {KILLS} kills, {total} uploads, {} answers found journaled at a \
         restart, {:?} in all",
        journaled.len(),
        started.elapsed()
    );
    assert!(
        violations.is_empty(),
        "paid twice:\n{}",
        violations.join("\n")
    );
    assert_work_area_empty(&env);
}
