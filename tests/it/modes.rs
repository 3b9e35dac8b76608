//! The modes of what remixd creates: every file and folder it makes (outputs,
//! `metadata.json`, `error.json`, job folders) gets 0666 / 0777 less the configured `umask`,
//! so the folders' group can read results whatever tool wrote them.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::asserts::{assert_published, assert_quarantined};
use crate::daemon::run_to_end;
use crate::env::{API_KEY, TestEnv};
use crate::images;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn assert_mode(path: &Path, wanted: u32, umask: &str) {
    let got = mode(path);
    assert_eq!(
        got,
        wanted,
        "{} is {got:04o}, not {wanted:04o} under umask {umask}",
        path.display()
    );
}

/// One `--once` run under `umask`: a published job and a quarantined one.
fn made_modes_follow(umask: &str, bits: u32) {
    let env = TestEnv::new();
    env.config().set("umask", &format!("\"{umask}\"")).write();
    env.drop_file("cat.png", images::png(16, 16, 1100));
    env.drop_file("cat.txt", "a cat");
    env.drop_file("notes.docx", b"not an image");
    let cfg = env.config_path.to_string_lossy().into_owned();
    let (status, _, stderr) = run_to_end(env.root(), &["run", "-c", &cfg, "--once"], Some(API_KEY));
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");

    let published = assert_published(&env, "cat.png");
    assert_mode(&published.dir, 0o777 & !bits, umask);
    assert_mode(&published.dir.join("metadata.json"), 0o666 & !bits, umask);
    let outputs = published.output_files();
    assert!(
        !outputs.is_empty(),
        "no outputs in {}",
        published.dir.display()
    );
    for output in outputs {
        assert_mode(&published.dir.join(output), 0o666 & !bits, umask);
    }
    let quarantined = assert_quarantined(&env, "notes.docx", "unsupported_format");
    assert_mode(&quarantined.dir, 0o777 & !bits, umask);
    assert_mode(&quarantined.dir.join("error.json"), 0o666 & !bits, umask);
}

/// Issue 11: `metadata.json` and `error.json` were 0600 whatever the umask (the durable-write
/// helper created them through `tempfile`), so the group got "Permission denied". The unit's
/// umask: the group reads and writes, others get nothing.
#[test]
fn metadata_and_error_json_are_group_readable_under_umask_0007() {
    made_modes_follow("0007", 0o007);
}

/// SPEC.md, Configuration: `umask`. A laxer umask opens results to everyone to read.
#[test]
fn created_files_follow_umask_0002() {
    made_modes_follow("0002", 0o002);
}

/// A stricter umask is obeyed too: nothing is more open than it allows.
#[test]
fn created_files_follow_umask_0077() {
    made_modes_follow("0077", 0o077);
}
