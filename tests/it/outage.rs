//! What is not the file's fault never quarantines it: an API that refuses connections, a
//! refused key, a spent balance and the daily image budget pause submissions, keep every job
//! pending, and end by themselves. (A 503 outage and `retries_exhausted` are in `inbox.rs`
//! and `quarantine.rs`.)

use std::time::Duration;

use serde_json::Value;

use crate::asserts::{assert_nothing_lost, assert_pending, assert_published};
use crate::daemon::Daemon;
use crate::env::{TestEnv, sha256};
use crate::fake_api::{FakeApi, Mode, Reply};
use crate::images;

/// `api.paused` names its reason and when the next probe goes; SPEC.md: "probes with
/// backoff capped at `retry.max_backoff`" (1 s in the test config).
fn check_paused(paused: &Value, reason: &str) {
    assert_eq!(paused["reason"], reason, "{paused}");
    let next = paused["retry_in_ms"].as_u64();
    assert!(
        next.is_some_and(|ms| ms <= 1000),
        "retry_in_ms must be a number within retry.max_backoff (1s): {paused}"
    );
    assert!(
        paused["message"].as_str().is_some_and(|m| m.len() > 10),
        "{paused}"
    );
}

/// Drops `name` with a prompt and returns its SHA-256.
fn drop_job(env: &TestEnv, name: &str, seed: u64) -> String {
    let png = images::png(20, 20, seed);
    env.drop_file(&name.replace(".png", ".txt"), "not the file's fault");
    env.drop_file(name, &png);
    sha256(&png)
}

/// SPEC.md, The quarantine: "when the API or the network is down ... remixd pauses
/// submissions, keeps every job pending, logs it, and probes with backoff ... until it works
/// again". Here nothing listens on the API's port (connection refused), well past
/// `retry.max_attempts`; then the server comes up on that port.
#[test]
fn refused_connections_pause_until_the_api_comes_up() {
    let port = FakeApi::unused_port();
    let env = TestEnv::new();
    env.config()
        .set_all(&[
            ("api.provider", "kkiai"),
            ("api.base_url", &format!("http://127.0.0.1:{port}")),
            ("retry.max_attempts", "2"),
        ])
        .write();
    let mut d = Daemon::start(&env, &[]);
    drop_job(&env, "down.png", 2001);
    let paused = d.wait_for_event("api.paused", |_| true);
    check_paused(&paused, "unavailable");
    // Probes (each a `job.submitted`) go on past retry.max_attempts; nothing is quarantined.
    d.wait_for("four attempts", |events| {
        events
            .iter()
            .filter(|e| e["event"] == "job.submitted")
            .count()
            >= 4
    });
    assert!(d.events_named("job.quarantined").is_empty(), "{}", d.dump());
    assert!(d.events_named("job.completed").is_empty(), "{}", d.dump());
    assert_pending(&env, "down.png");
    assert_pending(&env, "down.txt");

    let fake = FakeApi::start_on(Mode::Kkiai, port);
    d.wait_completed("down.png");
    let resumed = d.wait_for_event("api.resumed", |_| true);
    assert!(resumed["reason"].is_string(), "{resumed}");
    assert_eq!(fake.uploads().len(), 1, "one upload once the API is up");
    assert_published(&env, "down.png");
    d.stop();
    assert_nothing_lost(&env);
}

/// Runs one job against a fake that answers `refusal` to the first `times` uploads and
/// then works: remixd must pause with `reason`, keep the job pending, resume by itself and
/// publish the job, with no quarantine at any point.
fn pauses_then_recovers(refusal: &Reply, times: usize, reason: &str) {
    let fake = FakeApi::start(Mode::Kkiai);
    for _ in 0..times {
        fake.push_reply(refusal.clone());
    }
    let env = TestEnv::new();
    env.config()
        .fake(&fake)
        .set("retry.max_attempts", "2")
        .write();
    let mut d = Daemon::start(&env, &[]);
    let sha = drop_job(&env, "refused.png", 2002);
    let paused = d.wait_for_event("api.paused", |_| true);
    check_paused(&paused, reason);
    assert!(
        paused["message"]
            .as_str()
            .is_some_and(|m| !m.contains(crate::env::API_KEY)),
        "{paused}"
    );
    d.wait_completed("refused.png");
    let resumed = d.wait_for_event("api.resumed", |_| true);
    assert!(resumed["reason"].is_string(), "{resumed}");
    assert!(d.events_named("job.quarantined").is_empty(), "{}", d.dump());
    // Paused means one probe at a time: every refused request plus the one that worked.
    assert_eq!(
        fake.uploads_of(&sha).len(),
        times + 1,
        "uploads: each refusal, then the one that worked\n{}",
        d.dump()
    );
    let p = assert_published(&env, "refused.png");
    assert_eq!(p.meta["attempts"], times as u64 + 1, "{}", p.meta);
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, The quarantine: "when the key is refused (401/403) ... remixd pauses
/// submissions, keeps every job pending ... until it works again"; past
/// `retry.max_attempts`, and no quarantine.
#[test]
fn refused_key_pauses_as_unauthorized_then_resumes() {
    let refusal = Reply::status(401, r#"{"code": 401, "message": "invalid api key"}"#);
    pauses_then_recovers(&refusal, 4, "unauthorized");
}

/// As above for 403.
#[test]
fn forbidden_pauses_as_unauthorized_then_resumes() {
    let refusal = Reply::status(403, r#"{"error": "forbidden"}"#);
    pauses_then_recovers(&refusal, 3, "unauthorized");
}

/// SPEC.md, The remote API: "402 or a proxy envelope about balance"; The quarantine: "or
/// the balance is spent, remixd pauses submissions".
#[test]
fn payment_required_pauses_as_balance_then_resumes() {
    let refusal = Reply::status(402, r#"{"error": "payment required"}"#);
    pauses_then_recovers(&refusal, 3, "balance");
}

/// As above for a proxy's 200 envelope about balance (the kkiai proxy answers errors in
/// `{"code", "message"}` envelopes).
#[test]
fn proxy_balance_envelope_pauses_as_balance_then_resumes() {
    let refusal = Reply::status(200, r#"{"code": 1001, "message": "Insufficient balance"}"#);
    pauses_then_recovers(&refusal, 3, "balance");
}

fn budget_env(fake: &FakeApi) -> TestEnv {
    let env = TestEnv::new();
    env.config()
        .fake(fake)
        .set_all(&[
            ("limits.daily_image_budget", "2"),
            ("defaults.num_images", "1"),
        ])
        .write();
    env
}

/// SPEC.md, Configuration: `limits.daily_image_budget`; issue: "when the day's images are
/// spent, pause until the next UTC day (`api.paused`, reason budget). The count survives
/// restarts." Two images are made one after the other; the third waits, pending, and still
/// waits after a restart.
#[test]
fn daily_budget_pauses_and_survives_a_restart() {
    let fake = FakeApi::start(Mode::Kkiai);
    let env = budget_env(&fake);
    let mut d = Daemon::start(&env, &[]);
    drop_job(&env, "one.png", 2101);
    d.wait_completed("one.png");
    drop_job(&env, "two.png", 2102);
    d.wait_completed("two.png");
    let third = drop_job(&env, "three.png", 2103);
    let paused = d.wait_for_event("api.paused", |_| true);
    assert_eq!(paused["reason"], "budget", "{paused}");
    // The next probe is at the next UTC day, not within the backoff.
    assert!(paused["retry_in_ms"].is_u64(), "{paused}");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(fake.uploads_of(&third).is_empty(), "the third was sent");
    assert_eq!(fake.uploads().len(), 2);
    d.stop();
    assert_pending(&env, "three.png");

    let mut again = Daemon::start(&env, &[]);
    let paused = again.wait_for_event("api.paused", |_| true);
    assert_eq!(
        paused["reason"],
        "budget",
        "after a restart\n{}",
        again.dump()
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        fake.uploads_of(&third).is_empty(),
        "the budget was forgotten across the restart\n{}",
        again.dump()
    );
    assert!(again.events_named("job.quarantined").is_empty());
    again.stop();
    assert_published(&env, "one.png");
    assert_published(&env, "two.png");
    assert_pending(&env, "three.png");
    assert_nothing_lost(&env);
}

/// The budget is a ceiling on what is paid for: three images dropped together, all in
/// flight at once on a slow API (concurrency 4), must still cost at most two images.
#[test]
fn daily_budget_is_not_overspent_by_concurrent_jobs() {
    let fake = FakeApi::start(Mode::Kkiai);
    fake.set_default(Reply::ok().delayed(Duration::from_millis(800)));
    let env = budget_env(&fake);
    for (i, name) in ["a.png", "b.png", "c.png"].iter().enumerate() {
        drop_job(&env, name, 2200 + i as u64);
    }
    let mut d = Daemon::start(&env, &[]);
    d.wait_for("two jobs completed", |events| {
        events
            .iter()
            .filter(|e| e["event"] == "job.completed")
            .count()
            >= 2
    });
    std::thread::sleep(Duration::from_millis(1500));
    let sent = fake.uploads().len();
    assert_eq!(
        sent,
        2,
        "a budget of 2 images paid for {sent} uploads of 1 image\n{}",
        d.dump()
    );
    let paused = d.wait_for_event("api.paused", |_| true);
    assert_eq!(paused["reason"], "budget", "{paused}");
    d.stop();
    assert_eq!(d.events_named("job.completed").len(), 2);
    assert_nothing_lost(&env);
}
