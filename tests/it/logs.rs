//! The JSON log contract: common fields on every line, the daemon's own events, and the
//! fields job events carry.

use crate::daemon::Daemon;
use crate::env::TestEnv;
use crate::fake_api::{FakeApi, Mode};
use crate::images;

fn is_rfc3339(s: &str) -> bool {
    s.len() >= 20 && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b'T'
}

/// SPEC.md, Logs: "One JSON object per line on stdout: timestamp (RFC 3339), level, event,
/// message, and the fields below. Job events carry job_id and file".
#[test]
fn every_line_carries_the_common_fields() {
    let fake = FakeApi::start(Mode::Kkiai);
    let env = TestEnv::new();
    env.config().fake(&fake).write();
    env.drop_file("sub/log.txt", "log me");
    env.drop_file("sub/log.png", images::png(20, 20, 600));
    let mut d = Daemon::start(&env, &[]);
    d.wait_completed("sub/log.png");
    d.stop();
    let events = d.events();
    for e in &events {
        assert!(
            e["timestamp"].as_str().is_some_and(is_rfc3339),
            "timestamp: {e}"
        );
        assert!(e["level"].is_string(), "level: {e}");
        assert!(e["event"].is_string(), "event: {e}");
        assert!(e["message"].is_string(), "message: {e}");
        if e["event"].as_str().unwrap().starts_with("job.") {
            assert!(
                e["job_id"].is_string() && e["file"].is_string(),
                "job fields: {e}"
            );
        }
    }
    let started = d.wait_for_event("daemon.started", |_| true);
    for key in [
        "version",
        "inbox",
        "outbox",
        "quarantine",
        "provider",
        "watch_mode",
    ] {
        assert!(
            !started[key].is_null(),
            "daemon.started has no {key}: {started}"
        );
    }
    assert_eq!(started["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(started["provider"], "kkiai");
    assert!(d.wait_ready()["pending"].is_u64());
    let completed = d.wait_completed("sub/log.png");
    assert!(
        completed["dir"].is_string() && completed["total_ms"].is_u64(),
        "{completed}"
    );
    let submitted = d.wait_for_event("job.submitted", |e| e["file"] == "sub/log.png");
    assert_eq!(submitted["attempt"], 1, "{submitted}");
}

/// SPEC.md, Logs: `watch.rescan` with reason `start`.
#[test]
fn start_runs_a_rescan() {
    let env = TestEnv::new();
    env.config().write();
    let mut d = Daemon::start_with_key(&env, &[], None);
    d.wait_for_event("watch.rescan", |e| e["reason"] == "start");
    d.stop();
}
