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
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client: {0}")]
    Http(String),
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
