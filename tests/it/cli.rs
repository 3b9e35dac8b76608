//! The command line from outside: help, version, exit statuses, config errors on one line,
//! `check`, and config paths relative to the config file.

use std::time::Duration;

use crate::asserts::{assert_nothing_lost, assert_published};
use crate::daemon::{Daemon, command, run_to_end};
use crate::env::{API_KEY, TestEnv};
use crate::fake_api::{FakeApi, Mode};
use crate::images;

fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr, got {stderr:?}"
    );
    lines[0]
}

/// SPEC.md, Running it: the three subcommands; exit 0 after a clean run.
#[test]
fn help_and_version_exit_zero() {
    let env = TestEnv::new();
    let (status, stdout, _) = run_to_end(env.root(), &["--help"], None);
    assert_eq!(status.code(), Some(0));
    for word in ["run", "check", "requeue"] {
        assert!(
            stdout.contains(word),
            "--help does not mention {word}: {stdout}"
        );
    }
    let (status, stdout, _) = run_to_end(env.root(), &["--version"], None);
    assert_eq!(status.code(), Some(0));
    assert!(
        stdout.contains(env!("CARGO_PKG_VERSION")),
        "--version: {stdout}"
    );
}

/// SPEC.md, Configuration: "Unknown keys are an error"; Running it: "2 for a bad config ...
/// with one clear line saying what and where".
#[test]
fn unknown_config_key_exits_2_naming_the_key() {
    let env = TestEnv::new();
    env.config().set("watch.setle", "1s").write();
    let cfg = env.config_path.to_string_lossy().into_owned();
    let (status, _, stderr) = run_to_end(env.root(), &["run", "-c", &cfg], Some(API_KEY));
    assert_eq!(status.code(), Some(2), "stderr: {stderr}");
    let line = one_line(&stderr);
    assert!(
        line.contains("setle"),
        "the line does not name the key: {line}"
    );
}

/// SPEC.md, Configuration: "Durations are written like 500ms, 2s, 5m"; a bad value is a bad
/// config (exit 2, the dotted key named).
#[test]
fn bad_duration_exits_2_naming_the_key() {
    let env = TestEnv::new();
    env.config().set("watch.settle", "banana").write();
    let cfg = env.config_path.to_string_lossy().into_owned();
    let (status, _, stderr) = run_to_end(env.root(), &["run", "-c", &cfg], Some(API_KEY));
    assert_eq!(status.code(), Some(2), "stderr: {stderr}");
    assert!(one_line(&stderr).contains("watch.settle"), "{stderr}");
}

/// SPEC.md, Running it: a missing config is a bad config: exit 2, one line naming it.
#[test]
fn missing_config_exits_2() {
    let env = TestEnv::new();
    let missing = env.root().join("nope/config.yaml");
    let missing = missing.to_string_lossy().into_owned();
    let (status, _, stderr) = run_to_end(env.root(), &["run", "-c", &missing], Some(API_KEY));
    assert_eq!(status.code(), Some(2), "stderr: {stderr}");
    assert!(one_line(&stderr).contains("nope/config.yaml"), "{stderr}");
}

/// SPEC.md, Running it: exit 2 for bad usage.
#[test]
fn bad_usage_exits_2() {
    let env = TestEnv::new();
    let (status, _, stderr) = run_to_end(env.root(), &["run", "--no-such-flag"], None);
    assert_eq!(status.code(), Some(2), "stderr: {stderr}");
    let (status, _, stderr) = run_to_end(env.root(), &["requeue"], None);
    assert_eq!(
        status.code(),
        Some(2),
        "requeue without --all or DIR: {stderr}"
    );
}

/// SPEC.md, Running it: "remixd check ... exit 0 or 2"; "The dry-run provider needs no key".
#[test]
fn check_accepts_a_good_dry_run_config() {
    let env = TestEnv::new();
    env.config().write();
    let cfg = env.config_path.to_string_lossy().into_owned();
    let (status, stdout, stderr) = run_to_end(env.root(), &["check", "-c", &cfg], None);
    assert_eq!(status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
}

/// SPEC.md, Running it: `check` validates the key (exit 2 without one) and "never calls the
/// API".
#[test]
fn check_without_a_key_exits_2_and_calls_nothing() {
    let fake = FakeApi::start(Mode::Kkiai);
    let env = TestEnv::new();
    env.config().fake(&fake).write();
    let cfg = env.config_path.to_string_lossy().into_owned();
    let (status, _, stderr) = run_to_end(env.root(), &["check", "-c", &cfg], None);
    assert_eq!(status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("REMIXD_API_KEY"),
        "the line names where the key was looked for: {stderr}"
    );
    let (status, stdout, stderr) = run_to_end(env.root(), &["check", "-c", &cfg], Some(API_KEY));
    assert_eq!(status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        !stdout.contains(API_KEY) && !stderr.contains(API_KEY),
        "check printed the key"
    );
    assert!(
        fake.requests().is_empty(),
        "check called the API: {:?}",
        fake.requests()
    );
}

/// SPEC.md, Running it: "Config file: -c, else $REMIXD_CONFIG"; "Relative paths in it are
/// relative to the config file's folder" (not to the working directory).
#[test]
fn config_from_env_with_paths_relative_to_its_folder() {
    let env = TestEnv::new();
    let conf_dir = env.root().join("etc");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let cfg = env
        .config()
        .set_all(&[
            ("inbox", "../inbox"),
            ("outbox", "../outbox"),
            ("quarantine", "../quarantine"),
        ])
        .write_to(&conf_dir.join("remixd.yaml"));
    env.drop_file("rel.txt", "relative");
    env.drop_file("rel.png", images::png(20, 20, 500));
    let elsewhere = tempfile::tempdir().unwrap();
    let mut cmd = command(elsewhere.path(), &["run", "--once"], None);
    cmd.env("REMIXD_CONFIG", &cfg);
    let mut d = Daemon::spawn(&mut cmd);
    let status = d.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", d.dump());
    assert_published(&env, "rel.png");
    assert_nothing_lost(&env);
    assert!(
        std::fs::read_dir(elsewhere.path())
            .unwrap()
            .next()
            .is_none(),
        "remixd created files in its working directory"
    );
}

/// Issue 11: on a system without CA certificates remixd said only "cannot set up the HTTP
/// client: builder error" and the cause was lost. SPEC.md, Running it: a fatal error exits 1;
/// its whole cause chain is printed.
#[test]
fn fatal_error_prints_its_whole_cause_chain_no_ca_certificates() {
    let env = TestEnv::new();
    env.config().write();
    let no_certs = env.root().join("no-certs");
    std::fs::create_dir(&no_certs).unwrap();
    let cfg = env.config_path.to_string_lossy().into_owned();
    // rustls-native-certs reads only these when they are set: an empty system trust store.
    let output = command(env.root(), &["run", "-c", &cfg, "--once"], Some(API_KEY))
        .env("SSL_CERT_FILE", no_certs.join("none.pem"))
        .env("SSL_CERT_DIR", &no_certs)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("remixd: "))
        .unwrap_or_else(|| panic!("no remixd: line on stderr: {stderr}"));
    assert!(
        line.contains("cannot set up the HTTP client: builder error: ")
            && line.contains("No CA certificates were loaded from the system"),
        "the line lacks the cause: {line}"
    );
}

/// Issue 11: the package's shell completions and man page come from the clap definition
/// through the hidden `remixd generate`.
#[test]
fn generate_writes_completions_and_the_man_page() {
    let env = TestEnv::new();
    for (shell, marker) in [
        ("bash", "complete -F _remixd"),
        ("zsh", "#compdef remixd"),
        ("fish", "complete -c remixd"),
    ] {
        let (status, stdout, stderr) =
            run_to_end(env.root(), &["generate", "completions", shell], None);
        assert_eq!(status.code(), Some(0), "{shell}: {stderr}");
        assert!(stdout.contains(marker), "{shell} completion: {stdout}");
        assert!(stdout.contains("requeue"), "{shell} lacks requeue");
        assert!(!stdout.contains("generate"), "{shell} offers generate");
    }
    let (status, man, stderr) = run_to_end(env.root(), &["generate", "man"], None);
    assert_eq!(status.code(), Some(0), "{stderr}");
    for part in [
        ".TH remixd 1",
        ".SH COMMANDS",
        "remixd requeue",
        ".SH \"EXIT STATUS\"",
    ] {
        assert!(man.contains(part), "the man page lacks {part}: {man}");
    }
    let (status, _, _) = run_to_end(env.root(), &["generate", "completions", "tcsh"], None);
    assert_eq!(status.code(), Some(2), "an unknown shell is bad usage");
}
