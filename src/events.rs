//! Log event names: the `event` field of every log line, as SPEC.md's "Logs" table names
//! them (the README keeps a copy of that table, with the few events remixd adds, and a test
//! holds this file to it). Monitoring matches on these strings, so they live here once and nowhere else; what
//! each event carries is up to the code that emits it.

/// The daemon has read its config and is starting (version, folders, provider, watch mode).
pub const DAEMON_STARTED: &str = "daemon.started";
/// The daemon is watching and has told systemd it is ready.
pub const DAEMON_READY: &str = "daemon.ready";
/// A SIGHUP re-read the config and applied the changed keys.
pub const DAEMON_RELOADED: &str = "daemon.reloaded";
/// A SIGHUP found an invalid config; the old one stays in force.
pub const DAEMON_RELOAD_FAILED: &str = "daemon.reload_failed";
/// A stop signal arrived; intake has stopped and in-flight jobs get their grace period.
pub const DAEMON_STOPPING: &str = "daemon.stopping";
/// The daemon has stopped.
pub const DAEMON_STOPPED: &str = "daemon.stopped";
/// Periodic counts (pending, in flight, completed, quarantined, images today).
pub const DAEMON_STATS: &str = "daemon.stats";

/// An image was seen in the inbox and given a job id.
pub const JOB_DETECTED: &str = "job.detected";
/// The image (and sidecar) moved into the work area.
pub const JOB_CLAIMED: &str = "job.claimed";
/// A request was sent to the API.
pub const JOB_SUBMITTED: &str = "job.submitted";
/// A transient failure; the request will be sent again.
pub const JOB_RETRY: &str = "job.retry";
/// The API answered and the answer was journaled.
pub const JOB_RESPONDED: &str = "job.responded";
/// The job folder was published to the outbox.
pub const JOB_COMPLETED: &str = "job.completed";
/// The job went to the quarantine with a reason.
pub const JOB_QUARANTINED: &str = "job.quarantined";
/// An unfinished job was picked up again from its journal.
pub const JOB_RESUMED: &str = "job.resumed";
/// A resumed job is sent again because its answer was never recorded (not in SPEC.md's
/// table).
pub const JOB_RESUBMITTED: &str = "job.resubmitted";
/// This process took over the jobs of a process presumed dead (its lease expired; not in
/// SPEC.md's table).
pub const JOB_TAKEN_OVER: &str = "job.taken_over";
/// `remixd requeue` put a quarantined job back into the inbox (not in SPEC.md's table).
pub const JOB_REQUEUED: &str = "job.requeued";

/// Submissions are paused because the API, the network, the key or the balance failed.
pub const API_PAUSED: &str = "api.paused";
/// Submissions resumed after a pause.
pub const API_RESUMED: &str = "api.resumed";

/// This process's share of the account's API limits changed: live processes came or went,
/// or a 429 named the account's in-flight limit (not in SPEC.md's table).
pub const API_LIMITS: &str = "api.limits";
/// A full reconcile scan of the inbox ran.
pub const WATCH_RESCAN: &str = "watch.rescan";
/// Which watch mode a folder got and why (not in SPEC.md's table).
pub const WATCH_MODE: &str = "watch.mode";
/// How many asset folders (`_refs/`) the inbox holds, logged once at start (not in SPEC.md's
/// table).
pub const WATCH_ASSET_FOLDERS: &str = "watch.asset_folders";

/// Every event name above.
pub const ALL: &[&str] = &[
    DAEMON_STARTED,
    DAEMON_READY,
    DAEMON_RELOADED,
    DAEMON_RELOAD_FAILED,
    DAEMON_STOPPING,
    DAEMON_STOPPED,
    DAEMON_STATS,
    JOB_DETECTED,
    JOB_CLAIMED,
    JOB_SUBMITTED,
    JOB_RETRY,
    JOB_RESPONDED,
    JOB_COMPLETED,
    JOB_QUARANTINED,
    JOB_RESUMED,
    JOB_RESUBMITTED,
    JOB_TAKEN_OVER,
    JOB_REQUEUED,
    API_PAUSED,
    API_RESUMED,
    API_LIMITS,
    WATCH_RESCAN,
    WATCH_MODE,
    WATCH_ASSET_FOLDERS,
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The README's copy of SPEC.md's "Logs" table, with the events remixd adds to it.
    const README: &str = include_str!("../README.md");

    /// Event names in the first column of the README's event table (`a`, `b` in one cell too).
    fn table_event_names(readme: &str) -> BTreeSet<String> {
        let logs = readme
            .split("\n## ")
            .find(|section| section.starts_with("Logs"))
            .expect("README.md has a Logs section");
        logs.lines()
            .filter_map(|line| line.strip_prefix('|')?.split('|').next())
            .flat_map(|cell| cell.split(','))
            .filter_map(|name| {
                name.trim()
                    .trim_end_matches('*')
                    .strip_prefix('`')?
                    .strip_suffix('`')
            })
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn names_match_the_readme_event_table() {
        let listed = table_event_names(README);
        assert!(
            listed.len() > 10,
            "the README's Logs section has no event table: {listed:?}"
        );
        let ours: BTreeSet<String> = ALL.iter().map(|name| (*name).to_owned()).collect();
        assert_eq!(
            ours, listed,
            "events.rs and the README's event table differ"
        );
    }

    #[test]
    fn names_are_unique() {
        let unique: BTreeSet<_> = ALL.iter().collect();
        assert_eq!(unique.len(), ALL.len());
    }
}
