//! Log event names, as SPEC.md's "Logs" table gives them. Monitoring matches on these.

/// The daemon started.
pub const DAEMON_STARTED: &str = "daemon.started";
/// The daemon is watching and working.
pub const DAEMON_READY: &str = "daemon.ready";
/// A SIGHUP reload was applied.
pub const DAEMON_RELOADED: &str = "daemon.reloaded";
/// A SIGHUP reload was refused; the old config stays.
pub const DAEMON_RELOAD_FAILED: &str = "daemon.reload_failed";
/// A stop signal arrived.
pub const DAEMON_STOPPING: &str = "daemon.stopping";
/// The daemon stopped.
pub const DAEMON_STOPPED: &str = "daemon.stopped";
/// Periodic counts.
pub const DAEMON_STATS: &str = "daemon.stats";
/// An input was first seen.
pub const JOB_DETECTED: &str = "job.detected";
/// An input moved into the work area.
pub const JOB_CLAIMED: &str = "job.claimed";
/// A request was sent.
pub const JOB_SUBMITTED: &str = "job.submitted";
/// A request will be retried.
pub const JOB_RETRY: &str = "job.retry";
/// The API answered.
pub const JOB_RESPONDED: &str = "job.responded";
/// The job is in the outbox.
pub const JOB_COMPLETED: &str = "job.completed";
/// The job is in the quarantine.
pub const JOB_QUARANTINED: &str = "job.quarantined";
/// A job found in the work area at start goes on.
pub const JOB_RESUMED: &str = "job.resumed";
/// A job is sent again because its answer was never recorded.
pub const JOB_RESUBMITTED: &str = "job.resubmitted";
/// Submissions paused for everyone.
pub const API_PAUSED: &str = "api.paused";
/// Submissions resumed.
pub const API_RESUMED: &str = "api.resumed";
/// A full scan of the inbox.
pub const WATCH_RESCAN: &str = "watch.rescan";
/// How the inbox is watched, and why.
pub const WATCH_MODE: &str = "watch.mode";
