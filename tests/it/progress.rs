//! `--once`'s progress bar: drawn on stderr when stderr is a terminal, whatever the log
//! format, showing done/total, quarantined and the pause reason; stdout keeps its JSON lines;
//! without a terminal, no control sequence anywhere. The terminal is a real pseudo-terminal
//! made by util-linux's `script`.

use std::process::{Command, Stdio};

use crate::daemon::{Daemon, bin, command};
use crate::env::TestEnv;
use crate::fake_api::{FakeApi, Mode, Reply};
use crate::images;

/// Runs `remixd --once -c CONFIG > stdout.jsonl` inside `script`, so stderr (only) is a
/// pseudo-terminal. Returns what the terminal showed and the stdout file's text.
fn once_on_a_terminal(env: &TestEnv) -> (String, String) {
    let stdout = env.root().join("stdout.jsonl");
    let line = format!(
        "'{}' --once -c '{}' > '{}'",
        bin(),
        env.config_path.display(),
        stdout.display()
    );
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .current_dir(env.root())
        .env_remove("REMIXD_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env("REMIXD_API_KEY", crate::env::API_KEY)
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("`script` (util-linux, Debian package bsdutils) is needed for this test: {e}")
        });
    let terminal = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "remixd --once under script failed ({:?}):\n{terminal}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (terminal, std::fs::read_to_string(stdout).unwrap())
}

fn drop_jobs(env: &TestEnv, n: u64) {
    for i in 0..n {
        env.drop_file(&format!("p{i}.txt"), "a cat");
        env.drop_file(&format!("p{i}.png"), images::png(12, 12, 300 + i));
    }
}

/// Issue 11: "A progress bar for `--once` on a terminal ... done/total, quarantined, rate and
/// ETA, plus the pause reason while paused. stdout stays exactly as it was, so JSON lines
/// stay JSON." Four jobs and a file that is not an image; the API first says the balance
/// is spent (a pause of a second), then answers.
#[test]
fn once_on_a_terminal_draws_the_bar_on_stderr_and_keeps_stdout_json() {
    let fake = FakeApi::start(Mode::Kkiai);
    fake.push_reply(Reply::status(402, r#"{"error": "payment required"}"#));
    let env = TestEnv::new();
    env.config()
        .fake(&fake)
        .set_all(&[
            ("retry.initial_backoff", "1500ms"),
            ("retry.max_backoff", "2s"),
        ])
        .write();
    drop_jobs(&env, 4);
    env.drop_file("junk.png", b"not an image");
    let (terminal, stdout) = once_on_a_terminal(&env);
    assert!(
        terminal.contains("\r\x1b[2K"),
        "the bar redraws its line:\n{terminal:?}"
    );
    assert!(terminal.contains("5/5 done, 1 quarantined"), "{terminal:?}");
    assert!(
        terminal.contains("PAUSED (balance)"),
        "the pause is shown:\n{terminal:?}"
    );
    assert!(terminal.contains("/s, ETA "), "rate and ETA:\n{terminal:?}");
    assert!(
        !terminal.contains("job.completed"),
        "no log line on the terminal: {terminal:?}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.len() > 10, "{stdout}");
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a stdout line is not JSON ({e}): {line:?}"));
        assert!(v.is_object(), "{line}");
    }
    assert!(!stdout.contains('\x1b'), "no control sequence on stdout");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("\"job.completed\""))
            .count(),
        4
    );
}

/// Without a terminal, `--once` writes JSON lines on stdout and nothing on stderr: no bar,
/// no control sequence.
#[test]
fn once_without_a_terminal_prints_only_json_lines() {
    let env = TestEnv::new();
    env.config().write();
    drop_jobs(&env, 3);
    let config = env.config_path.to_string_lossy().into_owned();
    let mut cmd = command(env.root(), &["--once", "-c", config.as_str()], None);
    let mut d = Daemon::spawn(&mut cmd);
    let status = d.wait_exit(crate::daemon::TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", d.dump());
    d.assert_logs_clean();
    assert_eq!(d.events_named("job.completed").len(), 3, "{}", d.dump());
    assert_eq!(d.stderr(), "", "nothing on stderr without a terminal");
    let raw = d.dump();
    assert!(
        !raw.contains('\x1b'),
        "no control sequence anywhere:\n{raw}"
    );
}
