//! `remixd check`: everything a start needs, checked without calling the API; each problem
//! printed on its own line, exit 0 when there is none and 2 otherwise.

use std::path::Path;

use crate::config::{self, Overrides};
use crate::error::DaemonError;

/// Checks the config at `path` and the folders it names; prints what it found.
pub fn run(path: &Path) -> Result<(), DaemonError> {
    let config = match config::load_all(path, Overrides::default()) {
        Ok(config) => config,
        Err(all) => {
            for e in &all {
                eprintln!("remixd: {e}");
            }
            return Err(DaemonError::CheckFailed(all.len()));
        }
    };
    let mut problems = Vec::new();
    if let Err(e) = config.prepare_folders() {
        problems.push(e.to_string());
    }
    for (key, dir) in [
        ("inbox", &config.inbox),
        ("outbox", &config.outbox),
        ("quarantine", &config.quarantine),
        ("work_dir", &config.work_dir),
    ] {
        if let Err(e) = probe_writable(dir) {
            problems.push(format!(
                "{}: {key}: {} is not writable: {e}",
                config.path.display(),
                dir.display()
            ));
        }
    }
    if problems.is_empty() {
        println!(
            "{}: ok (provider {}, inbox {})",
            config.path.display(),
            config.api.provider.name(),
            config.inbox.display()
        );
        return Ok(());
    }
    for p in &problems {
        eprintln!("remixd: {p}");
    }
    Err(DaemonError::CheckFailed(problems.len()))
}

fn probe_writable(dir: &Path) -> std::io::Result<()> {
    tempfile::Builder::new()
        .prefix(".remixd-check-")
        .tempfile_in(dir)
        .map(drop)
}
