//! Real signals to the real binary: clean stops, the grace period for in-flight jobs, and
//! resuming what a stop left behind without losing or resubmitting anything.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::asserts::{assert_nothing_lost, assert_pending, assert_published, locations};
use crate::daemon::{Daemon, start_with_fake};
use crate::env::{TestEnv, sha256};
use crate::fake_api::{FakeApi, FileFault, Mode, Reply};
use crate::images;

fn index_of(events: &[Value], name: &str) -> usize {
    events
        .iter()
        .position(|e| e["event"] == name)
        .unwrap_or_else(|| panic!("no {name} event in {events:#?}"))
}

fn stops_cleanly_on(signal: i32, name: &str) {
    let env = TestEnv::new();
    let (_fake, mut d) = start_with_fake(&env, &[]);
    d.signal(signal);
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after {name}\n{}",
        d.dump()
    );
    d.assert_logs_clean();
    let events = d.events();
    let stopping = &events[index_of(&events, "daemon.stopping")];
    assert!(
        stopping["signal"]
            .as_str()
            .is_some_and(|s| s.contains(name)),
        "daemon.stopping names the signal: {stopping}"
    );
    assert_eq!(stopping["in_flight"], 0, "{stopping}");
    assert!(index_of(&events, "daemon.stopping") < index_of(&events, "daemon.stopped"));
}

/// SPEC.md, Signals and systemd: "SIGTERM/SIGINT: ... exit 0"; Logs: `daemon.stopping`,
/// `daemon.stopped` with signal and in_flight.
#[test]
fn sigterm_while_idle_stops_cleanly() {
    stops_cleanly_on(libc::SIGTERM, "TERM");
}

/// As above, for SIGINT.
#[test]
fn sigint_while_idle_stops_cleanly() {
    stops_cleanly_on(libc::SIGINT, "INT");
}

/// SPEC.md, Signals and systemd: "stop claiming, give in-flight jobs shutdown_grace". A job
/// whose API call ends within the grace is published before the exit; an image dropped after
/// the signal is left alone.
#[test]
fn sigterm_gives_the_in_flight_job_its_grace() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[("shutdown_grace", "8s")]);
    fake.push_reply(Reply::ok().delayed(Duration::from_secs(2)));
    env.drop_file("slowapi.txt", "take your time");
    env.drop_file("slowapi.png", images::png(20, 20, 400));
    d.wait_for_event("job.submitted", |e| e["file"] == "slowapi.png");
    d.signal(libc::SIGTERM);
    d.wait_for_event("daemon.stopping", |_| true);
    env.drop_file("after.txt", "too late");
    env.drop_file("after.png", images::png(20, 20, 401));
    let status = d.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{}", d.dump());
    d.assert_logs_clean();
    let stopping = d.wait_for_event("daemon.stopping", |_| true);
    assert_eq!(stopping["in_flight"], 1, "{stopping}");
    d.wait_completed("slowapi.png");
    assert_published(&env, "slowapi.png");
    assert_eq!(
        fake.uploads().len(),
        1,
        "nothing claimed or sent after the signal"
    );
    assert_pending(&env, "after.png");
    assert_nothing_lost(&env);
}

/// SPEC.md, Signals and systemd: "leave the rest resumable"; A job: "A crash or restart
/// resumes every unfinished job". A job stuck in a slow API call past the grace is left
/// pending and finished by the next run.
#[test]
fn sigterm_past_the_grace_leaves_the_job_resumable() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[("shutdown_grace", "300ms")]);
    fake.push_reply(Reply::ok().delayed(Duration::from_secs(6)));
    env.drop_file("stuck.txt", "stuck");
    let png = images::png(20, 20, 402);
    env.drop_file("stuck.png", &png);
    d.wait_for_event("job.submitted", |e| e["file"] == "stuck.png");
    let signalled = Instant::now();
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", d.dump());
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "exit took {took:?} with a 300 ms grace"
    );
    d.assert_logs_clean();
    assert!(d.events_named("job.completed").is_empty());
    assert!(d.events_named("job.quarantined").is_empty());
    assert_pending(&env, "stuck.png");
    assert_pending(&env, "stuck.txt");
    let claimed = locations(&env, &env.dropped_at("stuck.png"))[0].starts_with(env.work_dir());

    let mut again = Daemon::start(&env, &[]);
    again.wait_completed("stuck.png");
    if claimed {
        again.wait_for_event("job.resumed", |e| e["file"] == "stuck.png");
    }
    assert_published(&env, "stuck.png");
    assert_eq!(
        fake.uploads_of(&sha256(&png)).len(),
        2,
        "the unanswered request was sent again"
    );
    again.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, A job: "a job whose API answer was journaled is never submitted again"; Running
/// it: "--once processes what is in the inbox and the work area now (resumed jobs
/// included)". The stop comes while the output is downloading.
#[test]
fn journaled_answer_is_never_submitted_again() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[("shutdown_grace", "300ms")]);
    fake.push_reply(Reply::ok().fault_at(1, FileFault::SlowOnce(Duration::from_secs(6))));
    env.drop_file("dl.txt", "download me");
    let png = images::png(20, 20, 403);
    env.drop_file("dl.png", &png);
    d.wait_for_event("job.responded", |e| e["file"] == "dl.png");
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", d.dump());
    d.assert_logs_clean();
    assert!(
        d.events_named("job.completed").is_empty(),
        "the download was meant to be cut"
    );
    assert_pending(&env, "dl.png");

    let mut again = Daemon::start(&env, &["--once"]);
    let status = again.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", again.dump());
    again.assert_logs_clean();
    again.wait_for_event("job.resumed", |e| e["file"] == "dl.png");
    again.wait_completed("dl.png");
    assert_eq!(
        fake.uploads_of(&sha256(&png)).len(),
        1,
        "submitted again after a journaled answer"
    );
    let p = assert_published(&env, "dl.png");
    assert_eq!(p.meta["attempts"], 1);
    assert_nothing_lost(&env);
}

/// SPEC.md, Signals and systemd: "SIGHUP: re-read the config; apply what can change live";
/// Logs: `daemon.reloaded` with `changed` (dotted key names).
#[test]
fn sighup_reloads_changed_defaults() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    env.config()
        .fake(&fake)
        .set("defaults.rendering_speed", "QUALITY")
        .write();
    d.signal(libc::SIGHUP);
    let reloaded = d.wait_for_event("daemon.reloaded", |_| true);
    env.drop_file("hup.txt", "after reload");
    env.drop_file("hup.png", images::png(20, 20, 410));
    d.wait_completed("hup.png");
    assert_eq!(
        fake.uploads()[0].field("rendering_speed"),
        Some("QUALITY"),
        "the new default was not applied live: {reloaded}"
    );
    // A list of dotted key names, not one string holding JSON.
    let changed: Vec<&str> = reloaded["changed"]
        .as_array()
        .unwrap_or_else(|| panic!("changed is not a list: {reloaded}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(changed, ["defaults.rendering_speed"], "{reloaded}");
    d.stop();
}

/// SPEC.md, Signals and systemd: "keep the old config and log daemon.reload_failed if the new
/// one is invalid".
#[test]
fn sighup_with_a_bad_config_keeps_the_old_one() {
    let env = TestEnv::new();
    let (_fake, mut d) = start_with_fake(&env, &[]);
    std::fs::write(&env.config_path, "inbox: [broken\n").unwrap();
    d.signal(libc::SIGHUP);
    let failed = d.wait_for_event("daemon.reload_failed", |_| true);
    assert!(failed["error"].is_string(), "{failed}");
    env.drop_file("kept.txt", "old config still works");
    env.drop_file("kept.png", images::png(20, 20, 411));
    d.wait_completed("kept.png");
    assert_published(&env, "kept.png");
    d.stop();
}

/// Issue 8, "a job is one value": a job takes one config snapshot at its start. A SIGHUP that
/// lands while a job waits for the API applies to jobs that start after it; the waiting job
/// finishes with the config it started with, in its request and in where it is published
/// (the layout is read after the answer, so a job reading the config in force would mix).
#[test]
fn a_reload_applies_to_jobs_that_start_after_it() {
    let fake = FakeApi::start(Mode::Kkiai);
    let env = TestEnv::new();
    let config = |speed: &str, layout: &str| {
        env.config()
            .fake(&fake)
            .set("defaults.rendering_speed", speed)
            .set("output.layout", layout)
            .write();
    };
    config("TURBO", "old/{stem}-{job_id}");
    let before = images::png(20, 20, 420);
    fake.always_for(
        &sha256(&before),
        Reply::ok().delayed(Duration::from_secs(4)),
    );
    let mut d = Daemon::start(&env, &[]);
    d.wait_ready();
    env.drop_file("before.txt", "started before the reload");
    env.drop_file("before.png", &before);
    d.wait_for_event("job.submitted", |e| e["file"] == "before.png");
    config("QUALITY", "new/{stem}-{job_id}");
    d.signal(libc::SIGHUP);
    d.wait_for_event("daemon.reloaded", |_| true);
    env.drop_file("after.txt", "started after the reload");
    env.drop_file("after.png", images::png(20, 20, 421));
    let old = d.wait_completed("before.png");
    let new = d.wait_completed("after.png");
    d.stop();
    for (end, speed, folder) in [(&old, "TURBO", "old"), (&new, "QUALITY", "new")] {
        let dir = std::path::PathBuf::from(end["dir"].as_str().expect("dir"));
        assert_eq!(
            dir.parent(),
            Some(env.outbox.join(folder).as_path()),
            "{end}"
        );
        let meta: Value =
            serde_json::from_slice(&std::fs::read(dir.join("metadata.json")).expect("metadata"))
                .expect("json");
        assert_eq!(meta["request"]["rendering_speed"], speed, "{meta}");
    }
    let speeds: Vec<Option<String>> = fake
        .uploads()
        .iter()
        .map(|u| u.field("rendering_speed").map(str::to_owned))
        .collect();
    assert_eq!(
        speeds,
        [Some("TURBO".to_owned()), Some("QUALITY".to_owned())]
    );
}
