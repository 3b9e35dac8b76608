//! Transient API failures: retried, logged as `job.retry`, counted in `attempts`.

use std::time::Duration;

use crate::asserts::{assert_nothing_lost, assert_published};
use crate::daemon::{Daemon, start_with_fake};
use crate::env::TestEnv;
use crate::fake_api::{FakeApi, Mode, Reply};
use crate::images;

/// SPEC.md, The quarantine (last paragraph): "A 429 is retried after its Retry-After";
/// Logs: `job.retry` carries attempt, delay_ms, error, http_status; The outbox: "attempts
/// counts the requests sent for the job".
#[test]
fn rate_limit_is_retried_after_retry_after() {
    let fake = FakeApi::start(Mode::Kkiai);
    fake.push_reply(
        Reply::status(429, r#"{"error": "Too many requests"}"#).header("Retry-After", "1"),
    );
    let env = TestEnv::new();
    env.config().fake(&fake).write();
    let mut d = Daemon::start(&env, &[]);
    env.drop_file("busy.txt", "patience");
    env.drop_file("busy.png", images::png(20, 20, 300));
    d.wait_completed("busy.png");
    let retry = d.wait_for_event("job.retry", |e| e["file"] == "busy.png");
    assert_eq!(retry["http_status"], 429, "{retry}");
    assert!(
        retry["delay_ms"].as_u64().is_some_and(|ms| ms >= 1000),
        "delay_ms: {retry}"
    );
    assert!(
        retry["attempt"].is_u64() && retry["error"].is_string(),
        "{retry}"
    );
    let uploads = fake.uploads();
    assert_eq!(uploads.len(), 2);
    let gap = uploads[1].at.duration_since(uploads[0].at);
    assert!(
        gap >= Duration::from_millis(950),
        "retried {gap:?} after a Retry-After of 1 s"
    );
    let p = assert_published(&env, "busy.png");
    assert_eq!(p.meta["attempts"], 2);
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, A job: "retry what is transient"; 5xx is transient.
#[test]
fn server_error_is_retried_then_succeeds() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    fake.push_reply(Reply::status(500, r#"{"error": "internal"}"#));
    env.drop_file("flaky.txt", "try again");
    env.drop_file("flaky.png", images::png(20, 20, 301));
    d.wait_completed("flaky.png");
    let retry = d.wait_for_event("job.retry", |e| e["file"] == "flaky.png");
    assert_eq!(retry["http_status"], 500, "{retry}");
    assert_eq!(fake.uploads().len(), 2);
    let p = assert_published(&env, "flaky.png");
    assert_eq!(p.meta["attempts"], 2);
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, A job: "Download every output, check it (status ...)"; a 500 on a download is
/// transient and the output is fetched again, without a new submission.
#[test]
fn download_error_once_is_retried_without_resubmitting() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    fake.push_reply(Reply::ok().fault_at(1, crate::fake_api::FileFault::FailOnce));
    env.drop_file("dl.txt", "x");
    env.drop_file("dl.png", images::png(20, 20, 302));
    d.wait_completed("dl.png");
    assert_eq!(fake.uploads().len(), 1);
    let p = assert_published(&env, "dl.png");
    let url = p.outputs()[0]["url"].as_str().unwrap();
    assert_eq!(fake.fetches(url), 2);
    d.stop();
}

/// SPEC.md, The quarantine: "when the key is refused (401/403) ... remixd pauses
/// submissions, keeps every job pending, logs it" (`api.paused` with a reason).
#[test]
fn refused_key_pauses_and_keeps_the_job_pending() {
    let fake = FakeApi::start(Mode::Kkiai);
    let env = TestEnv::new();
    env.config().fake(&fake).write();
    let mut d = Daemon::start_with_key(&env, &[], Some("sk-wrong-key"));
    env.drop_file("locked.txt", "x");
    env.drop_file("locked.png", images::png(20, 20, 303));
    let paused = d.wait_for_event("api.paused", |_| true);
    assert!(paused["reason"].is_string(), "{paused}");
    // Probing goes on with backoff; the job stays pending, never quarantined.
    d.wait_for("a second probe", |_| fake.uploads().len() >= 2);
    assert!(d.events_named("job.quarantined").is_empty(), "{}", d.dump());
    d.stop();
    assert!(
        !d.dump().contains("sk-wrong-key"),
        "the key leaked into the output"
    );
    crate::asserts::assert_pending(&env, "locked.png");
    crate::asserts::assert_pending(&env, "locked.txt");
    assert_nothing_lost(&env);
}
