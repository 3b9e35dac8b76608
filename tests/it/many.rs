//! Several remixd processes serving one inbox, each with its own config naming its own
//! route on the fake API (so every upload tells which process sent it): each image is
//! uploaded and published exactly once, a process started while the others are busy takes
//! none of their live jobs, and the jobs of a killed or frozen process are finished by the
//! others once its lease lapses.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::asserts::{Kill, assert_all_ended, reupload_violations};
use crate::daemon::Daemon;
use crate::env::{TestEnv, sha256, walk_paths};
use crate::fake_api::{FakeApi, Mode, Upload};
use crate::images;

/// The process names, also their routes on the fake ([`Upload::via`]).
pub(crate) const NAMES: [&str; 3] = ["p0", "p1", "p2"];

/// One config per process, all on the same folders; `extra` applies to every one.
pub(crate) fn configs(env: &TestEnv, fake: &FakeApi, extra: &[(&str, &str)]) -> Vec<PathBuf> {
    NAMES
        .iter()
        .map(|name| {
            env.config()
                .fake(fake)
                .set("api.base_url", &fake.url_via(name))
                .set_all(&[
                    ("limits.requests_per_minute", "6000"),
                    ("limits.concurrency", "4"),
                ])
                .set_all(extra)
                .write_to(&env.root().join(format!("config-{name}.yaml")))
        })
        .collect()
}

/// Drops images `range` (with `.txt` prompts) over a few subfolders; returns the images.
pub(crate) fn drop_many(env: &TestEnv, range: std::ops::Range<usize>) -> Vec<String> {
    range
        .map(|i| {
            let dir = format!("d{}", i % 4);
            env.drop_file(&format!("{dir}/img{i:03}.txt"), format!("many {i}"));
            let rel = format!("{dir}/img{i:03}.png");
            env.drop_file(
                &rel,
                images::png(20, 12 + (i as u32 % 9), 50_000 + i as u64),
            );
            rel
        })
        .collect()
}

pub(crate) fn published(env: &TestEnv) -> usize {
    walk_paths(&env.outbox)
        .iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "metadata.json"))
        .count()
}

/// Waits until `n` job folders are in the outbox.
pub(crate) fn wait_published(env: &TestEnv, n: usize, timeout: Duration, daemons: &[&Daemon]) {
    let deadline = Instant::now() + timeout;
    while published(env) < n {
        if Instant::now() > deadline {
            for (d, name) in daemons.iter().zip(NAMES) {
                d.save_log(name);
            }
            let dumps: Vec<String> = daemons.iter().map(|d| d.dump()).collect();
            panic!(
                "only {} of {n} published after {timeout:?}\n{}\n{}",
                published(env),
                dumps.join("\n"),
                env.describe()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Each image's uploads, in arrival order.
pub(crate) fn uploads_by_image(
    env: &TestEnv,
    fake: &FakeApi,
    rels: &[String],
) -> BTreeMap<String, Vec<Upload>> {
    let by_sha: HashMap<String, &String> = rels
        .iter()
        .map(|r| (sha256(env.dropped_at(r).bytes()), r))
        .collect();
    let mut out: BTreeMap<String, Vec<Upload>> =
        rels.iter().map(|r| (r.clone(), Vec::new())).collect();
    for u in fake.uploads() {
        if let Some(rel) = by_sha.get(&u.sha256) {
            out.get_mut(*rel).unwrap().push(u);
        }
    }
    out
}

/// Files named by `event` in each process's log, with the process's index.
fn files_with(events: &[Vec<Value>], event: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (i, evs) in events.iter().enumerate() {
        for e in evs.iter().filter(|e| e["event"] == event) {
            out.push((e["file"].as_str().unwrap().to_string(), i));
        }
    }
    out
}

/// Every log line naming `rel` (or a job folder of its), per process: for failure messages.
fn lines_about(events: &[Vec<Value>], rel: &str) -> String {
    let ids: Vec<&str> = events
        .iter()
        .flatten()
        .filter(|e| e["file"] == rel)
        .filter_map(|e| e["job_id"].as_str())
        .collect();
    let mut out = String::new();
    for (i, evs) in events.iter().enumerate() {
        for e in evs {
            let text = e.to_string();
            if e["file"] == rel || ids.iter().any(|id| text.contains(id)) {
                let _ = writeln!(out, "  {}: {text}", NAMES[i]);
            }
        }
    }
    out
}

/// Every image was published by exactly one process (one `job.completed` in all the logs).
fn assert_completed_once(rels: &[String], events: &[Vec<Value>]) {
    let mut by_file: HashMap<String, Vec<usize>> = HashMap::new();
    for (file, i) in files_with(events, "job.completed") {
        by_file.entry(file).or_default().push(i);
    }
    for rel in rels {
        let by = by_file.get(rel).cloned().unwrap_or_default();
        assert_eq!(
            by.len(),
            1,
            "{rel} completed by processes {by:?}; its log lines:\n{}",
            lines_about(events, rel)
        );
    }
    let mut counts = [0usize; 3];
    for by in by_file.values() {
        counts[by[0]] += 1;
    }
    eprintln!("published per process: {counts:?}");
}

/// SPEC.md, Many processes, one inbox: "each image is processed by exactly one of them";
/// issue: "each image is claimed by exactly one (the atomic rename decides), each process
/// keeps its jobs in its own part of the work area ... No job is ever run by two live
/// processes." Two processes start, 200 images arrive, a third process starts while the
/// first two have jobs in flight; every image is uploaded exactly once and published once.
#[test]
fn three_processes_on_one_inbox_upload_each_image_once() {
    let started = Instant::now();
    let fake = FakeApi::start(Mode::Kkiai);
    fake.set_latency(Duration::from_millis(5), Duration::from_millis(60), 7);
    let env = TestEnv::new();
    let configs = configs(&env, &fake, &[]);
    let mut d0 = Daemon::start_config(&env, &configs[0], &[]);
    let mut d1 = Daemon::start_config(&env, &configs[1], &[]);
    d0.wait_ready();
    d1.wait_ready();
    let rels = drop_many(&env, 0..200);
    d0.wait_for("a few submissions", |events| {
        events
            .iter()
            .filter(|e| e["event"] == "job.submitted")
            .count()
            >= 5
    });
    let mut d2 = Daemon::start_config(&env, &configs[2], &[]);
    wait_published(&env, rels.len(), Duration::from_secs(90), &[&d0, &d1, &d2]);
    for d in [&mut d0, &mut d1, &mut d2] {
        d.stop();
    }
    let quarantined = assert_all_ended(&env);
    assert!(quarantined.is_empty(), "quarantined: {quarantined:?}");
    for (rel, uploads) in uploads_by_image(&env, &fake, &rels) {
        let via: Vec<&str> = uploads.iter().map(|u| u.via.as_str()).collect();
        assert_eq!(via.len(), 1, "{rel} uploaded by {via:?}");
    }
    assert_completed_once(&rels, &[d0.events(), d1.events(), d2.events()]);
    eprintln!(
        "{} images, three processes: {:?}",
        rels.len(),
        started.elapsed()
    );
}

/// Files a process claimed and did not see to an end in its own log.
pub(crate) fn unfinished(events: &[Value]) -> Vec<String> {
    let ended = |f: &str| {
        events.iter().any(|e| {
            (e["event"] == "job.completed" || e["event"] == "job.quarantined") && e["file"] == f
        })
    };
    events
        .iter()
        .filter(|e| e["event"] == "job.claimed")
        .filter_map(|e| e["file"].as_str())
        .filter(|f| !ended(f))
        .map(str::to_string)
        .collect()
}

/// Waits until `d` holds at least `n` unfinished jobs.
pub(crate) fn wait_busy(d: &mut Daemon, n: usize) {
    d.wait_for(&format!("{n} unfinished jobs"), |events| {
        unfinished(events).len() >= n
    });
}

/// Every log line about leases and takeovers, per process: for failure messages.
fn ownership_log(events: &[Vec<Value>]) -> String {
    let mut out = String::from("ownership log lines:\n");
    for (i, evs) in events.iter().enumerate() {
        for e in evs {
            let text = e["message"].as_str().unwrap_or_default();
            if text.contains("lease") || text.contains("took") || text.contains("taking over") {
                let _ = writeln!(out, "  {}: {e}", NAMES[i]);
            }
        }
    }
    out
}

/// The common end of the takeover tests: everything published once, nothing paid for twice
/// except what the stopped process had in flight, and its unfinished jobs finished by the
/// others (logged by them).
pub(crate) fn check_takeover(
    env: &TestEnv,
    uploads: BTreeMap<String, Vec<Upload>>,
    events: &[Vec<Value>],
    victim: usize,
    kill: &Kill,
    orphans: &[String],
) {
    let quarantined = assert_all_ended(env);
    assert!(quarantined.is_empty(), "quarantined: {quarantined:?}");
    let rels: Vec<String> = uploads.keys().cloned().collect();
    let mut violations = Vec::new();
    for (rel, uploads) in uploads {
        violations.extend(reupload_violations(
            &rel,
            &uploads,
            std::slice::from_ref(kill),
        ));
    }
    assert!(
        violations.is_empty(),
        "paid twice:\n{}\n{}",
        violations.join("\n"),
        ownership_log(events)
    );
    assert_completed_once(&rels, events);
    let completed = files_with(events, "job.completed");
    for orphan in orphans {
        let by: Vec<usize> = completed
            .iter()
            .filter(|(f, _)| f == orphan)
            .map(|(_, i)| *i)
            .collect();
        assert!(
            by.iter().all(|i| *i != victim) && by.len() == 1,
            "{orphan}, unfinished by {} when it stopped, was completed by {by:?}",
            NAMES[victim]
        );
    }
    let resumed = files_with(events, "job.resumed");
    assert!(
        orphans
            .iter()
            .all(|o| resumed.iter().any(|(f, i)| f == o && *i != victim)),
        "each taken-over job is logged as job.resumed by its taker: orphans {orphans:?}, \
         resumed {resumed:?}"
    );
}

/// SPEC.md, Many processes, one inbox: "a dead process's unfinished jobs are taken over by
/// the others". `p1` is killed with SIGKILL while it holds unfinished jobs; `p0` and `p2`
/// finish them (after `lease: 1s` at most), and nothing is paid for twice beyond what `p1`
/// had in flight.
#[test]
fn killed_process_jobs_are_finished_by_the_others() {
    let fake = FakeApi::start(Mode::Kkiai);
    fake.set_latency(Duration::from_millis(100), Duration::from_millis(300), 11);
    let env = TestEnv::new();
    let configs = configs(&env, &fake, &[("lease", "1s")]);
    let mut ds: Vec<Daemon> = configs
        .iter()
        .map(|c| Daemon::start_config(&env, c, &[]))
        .collect();
    for d in &mut ds {
        d.wait_ready();
    }
    let rels = drop_many(&env, 0..90);
    wait_busy(&mut ds[1], 3);
    let before = Instant::now();
    ds[1].signal(libc::SIGKILL);
    ds[1].wait_exit(Duration::from_secs(10));
    let kill = Kill {
        process: NAMES[1].into(),
        before,
        dead: Instant::now(),
    };
    let orphans = unfinished(&ds[1].events());
    wait_published(
        &env,
        rels.len(),
        Duration::from_secs(60),
        &[&ds[0], &ds[1], &ds[2]],
    );
    ds[0].stop();
    ds[2].stop();
    for (d, name) in ds.iter().zip(NAMES) {
        d.save_log(name);
    }
    let events: Vec<Vec<Value>> = ds.iter().map(Daemon::events).collect();
    eprintln!("p1 left {} unfinished jobs: {orphans:?}", orphans.len());
    let uploads = uploads_by_image(&env, &fake, &rels);
    check_takeover(&env, uploads, &events, 1, &kill, &orphans);
}

/// As above, for a process that is alive but stuck (SIGSTOP, like a host that hangs on a
/// dead NFS server): its lease lapses, the others take its jobs over; when it wakes up
/// (SIGCONT) it must not run them too, nor publish or upload anything of theirs again.
#[test]
fn frozen_process_jobs_are_taken_over_and_not_run_twice() {
    let fake = FakeApi::start(Mode::Kkiai);
    fake.set_latency(Duration::from_millis(100), Duration::from_millis(300), 13);
    let env = TestEnv::new();
    let configs = configs(&env, &fake, &[("lease", "1s")]);
    let mut ds: Vec<Daemon> = configs
        .iter()
        .map(|c| Daemon::start_config(&env, c, &[]))
        .collect();
    for d in &mut ds {
        d.wait_ready();
    }
    let rels = drop_many(&env, 0..60);
    wait_busy(&mut ds[1], 3);
    let before = Instant::now();
    ds[1].signal(libc::SIGSTOP);
    // Frozen, it can journal nothing from here on: for the upload rule, a kill.
    let kill = Kill {
        process: NAMES[1].into(),
        before,
        dead: Instant::now(),
    };
    // Let the log reader catch up with what it wrote before it froze.
    std::thread::sleep(Duration::from_millis(300));
    let orphans = unfinished(&ds[1].events());
    wait_published(
        &env,
        rels.len(),
        Duration::from_secs(60),
        &[&ds[0], &ds[1], &ds[2]],
    );
    let logged_frozen = ds[1].events().len();
    let wake = Instant::now();
    ds[1].signal(libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(3));
    for d in &mut ds {
        d.stop();
    }
    for (d, name) in ds.iter().zip(NAMES) {
        d.save_log(name);
    }
    let events: Vec<Vec<Value>> = ds.iter().map(Daemon::events).collect();
    eprintln!("p1 left {} unfinished jobs: {orphans:?}", orphans.len());
    let mut uploads = uploads_by_image(&env, &fake, &rels);
    for (rel, list) in &mut uploads {
        redate_frozen_sends(rel, list, &events, logged_frozen, &kill, wake);
    }
    check_takeover(&env, uploads, &events, 1, &kill, &orphans);
}

/// Uploads of the frozen process (`kill.process`, frozen from `kill.before` to `wake`, having
/// logged its first `logged_frozen` events by then) that
/// it had sent, or decided to send, before the freeze are in flight at the freeze, though
/// the API sees them later. For the upload rule they are dated just before the freeze:
/// - every one whose headers arrived while it was frozen (bytes already in its socket);
/// - after `wake`, the first one for a job a taker found journaled at stage `submitting`
///   (`job.resumed`), or that it had logged `job.submitted` for before the freeze and that
///   had not arrived yet: the request was committed before the freeze (a process stopped
///   inside the journal write's fsync sends once it runs again).
///
/// Any other upload after the wake-up keeps its real time.
fn redate_frozen_sends(
    rel: &str,
    uploads: &mut [Upload],
    events: &[Vec<Value>],
    logged_frozen: usize,
    kill: &Kill,
    wake: Instant,
) {
    let victim = NAMES.iter().position(|n| *n == kill.process).unwrap();
    let mine = |u: &Upload| u.via == kill.process;
    for u in uploads
        .iter_mut()
        .filter(|u| mine(u) && u.at >= kill.before && u.at < wake)
    {
        u.at = kill.before.checked_sub(Duration::from_millis(1)).unwrap();
    }
    let taker_found_submitting = events.iter().enumerate().any(|(i, evs)| {
        i != victim
            && evs.iter().any(|e| {
                e["event"] == "job.resumed" && e["file"] == rel && e["stage"] == "submitting"
            })
    });
    let submitted_before = events[victim][..logged_frozen]
        .iter()
        .filter(|e| e["event"] == "job.submitted" && e["file"] == rel)
        .count();
    let arrived = uploads
        .iter()
        .filter(|u| mine(u) && u.at < kill.before)
        .count();
    if taker_found_submitting || submitted_before > arrived {
        if let Some(late) = uploads
            .iter_mut()
            .filter(|u| mine(u) && u.at >= wake)
            .min_by_key(|u| u.at)
        {
            late.at = kill.before.checked_sub(Duration::from_millis(1)).unwrap();
        }
    }
}
