//! `metrics.textfile`: the Prometheus file the real binary writes for node_exporter's
//! textfile collector, checked with `promtool check metrics` and against the numbers of a
//! known workload (SPEC.md, Metrics: "mode 0644, whatever `umask`; `remixd_up 0` after a
//! clean stop").

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::daemon::{Daemon, TIMEOUT};
use crate::env::TestEnv;
use crate::fake_api::{FakeApi, Mode, Reply};
use crate::images;

/// `promtool check metrics < path`: fails the test with its complaints, or with what to
/// install when promtool is missing.
fn promtool_check(path: &Path) {
    let file = std::fs::File::open(path).unwrap();
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(file)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool is needed for this test ({e}): install the Debian package `prometheus` (apt-get install prometheus)")
        });
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(path).unwrap()
    );
}

/// The value of the sample `series` (name and labels exactly as written) in `text`, as
/// written (`1`, `0.0`): every value checked here is a whole count.
fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            let value = l.strip_prefix(series)?.strip_prefix(' ')?;
            value.strip_suffix(".0").unwrap_or(value).parse().ok()
        })
        .unwrap_or_else(|| panic!("no whole-number sample {series} in:\n{text}"))
}

fn drop_job(env: &TestEnv, name: &str, seed: u64) {
    env.drop_file(&name.replace(".png", ".txt"), "a cat");
    env.drop_file(name, images::png(16, 16, seed));
}

/// A known workload: one job answered after a 500 and a 429 (three requests, two retries,
/// one image), one whose only output is withheld for safety (`unsafe_content`), one file
/// that is not an image (`unsupported_format`, no request). The file is there while the
/// daemon runs (`remixd_up 1`), passes promtool, and after the stop holds exactly these
/// numbers with `remixd_up 0`, mode 0644 although the umask is 0077.
#[test]
fn the_metrics_file_passes_promtool_and_counts_a_known_workload() {
    let fake = FakeApi::start(Mode::Kkiai);
    let env = TestEnv::new();
    let prom = env.root().join("textfile").join("remixd.prom");
    std::fs::create_dir_all(prom.parent().unwrap()).unwrap();
    env.config()
        .fake(&fake)
        .set_all(&[
            ("metrics.textfile", "textfile/remixd.prom"),
            ("logging.stats_interval", "200ms"),
            ("umask", "\"0077\""),
            ("defaults.num_images", "1"),
        ])
        .write();
    fake.push_reply(Reply::status(500, r#"{"error": "internal"}"#));
    fake.push_reply(Reply::status(429, r#"{"error": "slow down"}"#).header("Retry-After", "1"));
    fake.push_reply(Reply::ok());
    let mut d = Daemon::start(&env, &[]);
    d.wait_ready();
    drop_job(&env, "retried.png", 11);
    d.wait_completed("retried.png");
    fake.push_reply(Reply::ok().unsafe_at(&[1]));
    drop_job(&env, "withheld.png", 12);
    d.wait_quarantined("withheld.png", "unsafe_content");
    env.drop_file("notes.png", b"plain text, not an image");
    d.wait_quarantined("notes.png", "unsupported_format");

    let deadline = Instant::now() + TIMEOUT;
    let running = loop {
        let text = std::fs::read_to_string(&prom).unwrap_or_default();
        if text
            .contains("remixd_jobs_total{outcome=\"quarantined\",reason=\"unsupported_format\"} 1")
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the metrics file never showed the workload:\n{text}\n{}",
            d.dump()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let owner = d.events_named("daemon.started")[0]["owner"]
        .as_str()
        .unwrap()
        .to_owned();
    let up = format!(
        "remixd_up{{version=\"{}\",owner=\"{owner}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&running, &up), 1);
    promtool_check(&prom);

    d.stop();
    let text = std::fs::read_to_string(&prom).unwrap();
    promtool_check(&prom);
    assert_eq!(sample(&text, &up), 0, "down after a clean stop");
    let expected = [
        ("remixd_jobs_total{outcome=\"completed\",reason=\"\"}", 1),
        (
            "remixd_jobs_total{outcome=\"quarantined\",reason=\"unsafe_content\"}",
            1,
        ),
        (
            "remixd_jobs_total{outcome=\"quarantined\",reason=\"unsupported_format\"}",
            1,
        ),
        ("remixd_api_requests_total{status=\"500\"}", 1),
        ("remixd_api_requests_total{status=\"429\"}", 1),
        ("remixd_api_requests_total{status=\"200\"}", 2),
        ("remixd_images_total", 1),
        ("remixd_retries_total", 2),
        ("remixd_pending", 0),
        ("remixd_in_flight", 0),
        ("remixd_api_paused{reason=\"balance\"}", 0),
        ("remixd_job_duration_seconds_count", 3),
        ("remixd_api_latency_seconds_count", 4),
        ("remixd_download_seconds_count", 1),
    ];
    for (series, value) in expected {
        assert_eq!(sample(&text, series), value, "{series} in:\n{text}");
    }
    // Two requests ran (the answer and the one withheld for safety: SPEC.md, Billing), one
    // image each at the DEFAULT price; the 500 and the 429 were not billed.
    let spend: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("remixd_spend_usd_total ")?.parse().ok())
        .unwrap_or_else(|| panic!("no remixd_spend_usd_total in:\n{text}"));
    assert!((spend - 0.12).abs() < 1e-9, "spend {spend} in:\n{text}");
    let mode = std::fs::metadata(&prom).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "node_exporter must be able to read it");
    let left: Vec<_> = std::fs::read_dir(prom.parent().unwrap()).unwrap().collect();
    assert_eq!(left.len(), 1, "no temporary file left beside it: {left:?}");
}
