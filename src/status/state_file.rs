//! One process's state as others can read it: `owners/<id>/state.json` in the work area,
//! replaced whole (temp + rename) when the state changes and at every stats tick, removed at
//! a clean stop. It is advisory, so it is never synced: a crash leaves the last one, and the
//! lease ([`crate::job::lease`]) decides whether its process is alive.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::job::lease::STATE_FILE;

/// What a process says about itself. Every field has a default, so a file from another
/// version still reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessState {
    /// Host name.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// The remixd version.
    pub version: String,
    /// When the process started (RFC 3339, UTC).
    pub started_at: String,
    /// When this file was written.
    pub written_at: String,
    /// The API as this process sees it.
    pub api: ApiState,
    /// Files waiting in the inbox, as this process counts them.
    pub pending: u64,
    /// This process's jobs, by stage.
    pub in_flight: BTreeMap<String, u64>,
    /// UTC day of the counts below (`YYYY-MM-DD`).
    pub day: String,
    /// Jobs this process published on `day`.
    pub completed_today: u64,
    /// Jobs this process quarantined on `day`.
    pub quarantined_today: u64,
}

/// Working, or paused and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiState {
    /// Submissions are paused.
    pub paused: bool,
    /// Why (`unauthorized`, `balance`, `unavailable`, `budget`).
    pub reason: Option<String>,
    /// When the pause began (RFC 3339, UTC).
    pub since: Option<String>,
    /// When the next probe may go (RFC 3339, UTC).
    pub next_probe_at: Option<String>,
}

/// Replaces the state file in the owner folder `root`.
pub fn write(root: &Path, state: &ProcessState) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    crate::fsx::write_replace(&root.join(STATE_FILE), &bytes)
}

/// The state file in the owner folder `root`, when there is a readable one.
#[must_use]
pub fn read(root: &Path) -> Option<ProcessState> {
    let bytes = std::fs::read(root.join(STATE_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Removes the state file: a process that stopped cleanly is gone from `remixd status`.
pub fn remove(root: &Path) {
    let _ = std::fs::remove_file(root.join(STATE_FILE));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_written_reads_back_and_an_older_file_still_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = ProcessState {
            host: "h".into(),
            pid: 7,
            pending: 3,
            in_flight: BTreeMap::from([("submitting".into(), 2)]),
            ..ProcessState::default()
        };
        write(dir.path(), &state).expect("write");
        assert_eq!(read(dir.path()), Some(state));
        std::fs::write(dir.path().join(STATE_FILE), br#"{"host":"old","pid":1}"#).expect("old");
        assert_eq!(read(dir.path()).map(|s| s.host), Some("old".into()));
        remove(dir.path());
        assert_eq!(read(dir.path()), None);
    }
}
