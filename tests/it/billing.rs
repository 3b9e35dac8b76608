//! What may have been billed: `billable_attempts` and `cost` in `metadata.json` and
//! `error.json`, `answer_lost`, the dollar budget and `spend_today_usd`, the API's own daily
//! limit, and the modes of the files remixd keeps in the work area.

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use crate::asserts::{assert_pending, assert_published, assert_quarantined};
use crate::daemon::start_with_fake;
use crate::env::{TestEnv, walk_paths};
use crate::images;

use crate::fake_api::Reply;

fn close(a: &serde_json::Value, want: f64) -> bool {
    a.as_f64().is_some_and(|v| (v - want).abs() < 1e-9)
}

/// SPEC.md, The outbox: "`billable_attempts` those that may have been billed (see Billing).
/// `cost.usd` is the sum over billable attempts of the images asked for times the `pricing`
/// entry for its rendering speed"; Billing: a 5xx "is not" billed.
#[test]
fn metadata_counts_billable_attempts_and_their_cost() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[("pricing.QUALITY", "0.1")]);
    fake.push_reply(Reply::status(503, r#"{"error": "busy"}"#));
    env.drop_file(
        "paid.yaml",
        "prompt: two of them\nnum_images: 2\nrendering_speed: QUALITY\n",
    );
    env.drop_file("paid.png", images::png(20, 20, 900));
    d.wait_completed("paid.png");
    let meta = assert_published(&env, "paid.png").meta;
    assert_eq!(
        (
            meta["attempts"].as_u64(),
            meta["billable_attempts"].as_u64()
        ),
        (Some(2), Some(1))
    );
    assert_eq!(meta["cost"]["images"], 2, "{meta}");
    assert_eq!(meta["cost"]["basis"], "pricing");
    assert!(close(&meta["cost"]["usd"], 0.2), "{}", meta["cost"]);
    d.stop();
}

/// SPEC.md, Billing: "A request whose answer never arrived after its upload completed ... may
/// have been billed"; the reason table: `answer_lost` when `retry.resend_after_timeout: false`.
#[test]
fn a_lost_answer_is_quarantined_answer_lost_and_counted_as_billable() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(
        &env,
        &[
            ("api.request_timeout", "1s"),
            ("retry.resend_after_timeout", "false"),
        ],
    );
    fake.push_reply(Reply::ok().delayed(Duration::from_secs(3)));
    env.drop_file("lost.txt", "where did it go");
    env.drop_file("lost.png", images::png(20, 20, 901));
    d.wait_quarantined("lost.png", "answer_lost");
    let q = assert_quarantined(&env, "lost.png", "answer_lost");
    let message = q.error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("may have") && message.contains("remixd requeue"),
        "{message}"
    );
    assert_eq!(q.error["billable_attempts"], 1, "{}", q.error);
    assert!(close(&q.error["cost"]["usd"], 0.06), "{}", q.error);
    assert_eq!(fake.uploads().len(), 1, "never sent again");
    d.stop();
}

/// SPEC.md, Configuration: `daily_spend_budget_usd` "estimated USD per UTC day, for the whole
/// deployment"; Logs: `daemon.stats` carries `spend_today_usd`.
#[test]
fn the_dollar_budget_pauses_and_stats_carry_the_spend() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(
        &env,
        &[
            ("limits.daily_spend_budget_usd", "0.15"),
            ("limits.concurrency", "1"),
            ("logging.stats_interval", "300ms"),
        ],
    );
    for i in 0..4 {
        env.drop_file(&format!("s{i}.txt"), "spend");
        env.drop_file(&format!("s{i}.png"), images::png(20, 20, 910 + i));
    }
    d.wait_for_event("api.paused", |e| e["reason"] == "budget");
    let stats = d.wait_for_event("daemon.stats", |e| close(&e["spend_today_usd"], 0.12));
    assert_eq!(stats["images_today"], 2, "{stats}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        fake.uploads().len(),
        2,
        "2 × 0.06 fit in 0.15, a third does not"
    );
    d.stop();
    let pending = (0..4)
        .filter(|i| {
            walk_paths(&env.inbox)
                .iter()
                .any(|p| p.ends_with(format!("s{i}.png")))
        })
        .count();
    assert_eq!(pending, 2, "the rest stay pending");
}

/// SPEC.md, The remote API: "A 402 whose `reject_reason` is `daily_limit` pauses submissions
/// until 00:00 UTC (`api.paused`, reason `daily_limit`)".
#[test]
fn the_apis_daily_limit_pauses_until_midnight() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    fake.set_default(Reply::status(
        402,
        r#"{"reject_reason": "daily_limit", "message": "daily limit reached"}"#,
    ));
    env.drop_file("later.txt", "tomorrow");
    env.drop_file("later.png", images::png(20, 20, 920));
    let paused = d.wait_for_event("api.paused", |e| e["reason"] == "daily_limit");
    // Measured from the line's own timestamp: the test may read the line seconds after it was
    // written on a loaded machine.
    let logged_at = humantime::parse_rfc3339_weak(paused["timestamp"].as_str().unwrap())
        .expect("the line's timestamp is RFC 3339");
    let logged_ms = logged_at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let ms_to_midnight = 86_400_000 - logged_ms % 86_400_000;
    let retry_in_ms = paused["retry_in_ms"].as_u64().unwrap();
    assert!(
        retry_in_ms.abs_diff(ms_to_midnight) <= 2_000,
        "probes at midnight ({ms_to_midnight} ms after the line): {paused}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(fake.uploads().len(), 1, "no probe before midnight");
    d.stop();
    assert_pending(&env, "later.png");
}

/// SPEC.md, Many processes: "Files remixd creates, in the work area too, are created with
/// modes 0666 (files) and 0777 (folders) less `umask`". The usage file and the owner's folder
/// are checked with a umask of 0002 and of 0077.
#[test]
fn work_area_files_follow_the_umask() {
    for (umask, file_mode, dir_mode) in [("0002", 0o664, 0o775), ("0077", 0o600, 0o700)] {
        let env = TestEnv::new();
        let (_fake, mut d) = start_with_fake(&env, &[("umask", &format!("\"{umask}\""))]);
        env.drop_file("m.txt", "modes");
        env.drop_file("m.png", images::png(20, 20, 930));
        d.wait_completed("m.png");
        d.stop();
        let owners = env.work_dir().join("owners");
        let usage: Vec<_> = walk_paths(&owners)
            .into_iter()
            .filter(|p| p.ends_with("usage.json"))
            .collect();
        assert_eq!(usage.len(), 1, "one usage file: {usage:?}");
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&usage[0]), file_mode, "usage.json with umask {umask}");
        let owner = usage[0].parent().unwrap();
        assert_eq!(
            mode(owner),
            dir_mode,
            "the owner's folder with umask {umask}"
        );
        assert_eq!(mode(&owners), dir_mode, "owners/ with umask {umask}");
    }
}
