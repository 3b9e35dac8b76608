//! Fatal errors: the ones that stop the process, each with its exit status. A job's own
//! failures are not here; they are data ([`crate::job::verdict::Reason`]) and never stop remixd.

use std::process::ExitCode;

use crate::config::ConfigError;
use crate::fsx::FsError;

/// Exit status after a clean run or a clean stop.
pub const EXIT_OK: u8 = 0;
/// Exit status for any fatal error other than config and usage.
pub const EXIT_FATAL: u8 = 1;
/// Exit status for a bad config or bad usage.
pub const EXIT_USAGE: u8 = 2;

/// An error that stops remixd.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The config is invalid (exit 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A folder remixd owns could not be read or written.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// Logging could not be set up.
    #[error("cannot set up logging: {0}")]
    Logging(String),
    /// The HTTP client could not be built (e.g. no CA certificates on the system); the cause
    /// is the source, printed by [`chain`].
    #[error("cannot set up the HTTP client")]
    Http(#[source] reqwest::Error),
    /// What was asked for could not be written to stdout.
    #[error("cannot write to stdout")]
    Stdout(#[source] std::io::Error),
    /// The async runtime could not be started.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    /// `remixd check` found problems (exit 2); they were already printed.
    #[error("the check found {0} problem(s)")]
    CheckFailed(usize),
    /// `remixd requeue` could not requeue every job asked for.
    #[error("{0} job(s) could not be requeued")]
    RequeueIncomplete(usize),
}

/// The error's message followed by every cause in its `source()` chain, joined by ": ", as
/// printed for a fatal error. A cause whose text the message already holds (an [`FsError`]
/// prints its I/O error itself) is not repeated.
#[must_use]
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        let part = cause.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = cause.source();
    }
    text
}

impl DaemonError {
    /// The process exit status for this error.
    #[must_use]
    pub fn exit_status(&self) -> u8 {
        match self {
            Self::Config(_) | Self::CheckFailed(_) => EXIT_USAGE,
            _ => EXIT_FATAL,
        }
    }

    /// The exit code for this error.
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.exit_status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Link(&'static str, #[source] Option<Box<Link>>);

    fn link(text: &'static str, cause: Option<Link>) -> Link {
        Link(text, cause.map(Box::new))
    }

    #[test]
    fn chain_prints_every_cause_in_order() {
        let err = link(
            "outer",
            Some(link("middle", Some(link("root cause", None)))),
        );
        assert_eq!(chain(&err), "outer: middle: root cause");
    }

    #[test]
    fn chain_does_not_repeat_a_cause_the_message_holds() {
        let err = DaemonError::Fs(FsError {
            action: "claiming into the work area",
            path: "/srv/remix/inbox/.remixd".into(),
            source: std::io::Error::from_raw_os_error(libc::EACCES),
        });
        let text = chain(&err);
        assert_eq!(text.matches("ermission denied").count(), 1, "{text}");
        assert!(text.starts_with("claiming into the work area /srv/remix/inbox/.remixd: "));
    }
}
