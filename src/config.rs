//! Configuration: what the YAML says ([`RawConfig`], every key optional but the folders,
//! unknown keys refused) and what the daemon uses ([`Config`], paths resolved against the
//! config file's folder, provider defaults filled in, cross-field rules checked).
//!
//! INTERFACE (skeleton): the helper implementing this module keeps the pub types below.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sidecar::Fields;

/// Where the config is looked for when neither `-c` nor `$REMIXD_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/remixd/config.yaml";

/// Which remote service the remix step talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// The kkiai proxy (`Authorization: Bearer KEY`).
    Kkiai,
    /// Ideogram itself (`Api-Key: KEY`).
    Ideogram,
    /// No network: outputs are copies of the input.
    DryRun,
}

impl Provider {
    /// The name used in the config, logs and `metadata.json`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Kkiai => "kkiai",
            Self::Ideogram => "ideogram",
            Self::DryRun => "dry-run",
        }
    }
}

/// An API key. Its `Debug` and `Display` print `***`, so it cannot leak through a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key (surrounding white space already trimmed).
    #[must_use]
    pub fn new(key: String) -> Self {
        Self(key)
    }

    /// The key itself, for the one place that sends it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// `api:` resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    /// The provider.
    pub provider: Provider,
    /// Base URL (provider default filled in); `None` for dry-run.
    pub base_url: Option<String>,
    /// The key; `None` only for dry-run.
    pub api_key: Option<ApiKey>,
    /// Where the key was read from, for messages (`api.api_key_file` path or `$VAR`).
    pub api_key_source: String,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
}

/// `watch.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    /// Native events, polling for network and FUSE mounts.
    Auto,
    /// Native events only.
    Native,
    /// Polling only.
    Poll,
}

/// `watch:` resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchConfig {
    /// How changes are noticed.
    pub mode: WatchMode,
    /// Poll period.
    pub poll_interval: Duration,
    /// Full reconcile scan period.
    pub rescan_interval: Duration,
    /// Unchanged this long = completely written.
    pub settle: Duration,
    /// After an image settles, wait this long for its sidecar.
    pub sidecar_wait: Duration,
    /// A sidecar with no image this long is quarantined.
    pub orphan_after: Duration,
}

/// `limits:` resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest source image accepted.
    pub max_image_bytes: u64,
    /// Jobs talking to the API at once.
    pub concurrency: usize,
    /// Images being generated at once.
    pub inflight_images: u32,
    /// Requests started per minute.
    pub requests_per_minute: u32,
    /// Images per UTC day, if capped.
    pub daily_image_budget: Option<u64>,
}

/// `retry:` resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Requests per job before `retries_exhausted`.
    pub max_attempts: u32,
    /// First backoff.
    pub initial_backoff: Duration,
    /// Backoff cap, also for API probes.
    pub max_backoff: Duration,
}

/// `logging.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// JSON unless stdout is a terminal.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Pretty,
}

/// `logging:` resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggingConfig {
    /// Output format.
    pub format: LogFormat,
    /// Level filter (`info`, `debug`, an `EnvFilter` directive).
    pub level: String,
    /// `daemon.stats` period.
    pub stats_interval: Duration,
}

/// The configuration the daemon runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// Absolute inbox folder.
    pub inbox: PathBuf,
    /// Absolute outbox folder.
    pub outbox: PathBuf,
    /// Absolute quarantine folder.
    pub quarantine: PathBuf,
    /// Absolute work area (default `<inbox>/.remixd`).
    pub work_dir: PathBuf,
    /// The API.
    pub api: ApiConfig,
    /// Remix fields used where a sidecar is silent (weakest layer).
    pub defaults: Fields,
    /// Watching.
    pub watch: WatchConfig,
    /// Limits.
    pub limits: Limits,
    /// Retries.
    pub retry: RetryConfig,
    /// `output.layout`, validated: only known placeholders.
    pub layout: String,
    /// Logging.
    pub logging: LoggingConfig,
    /// Time given to in-flight jobs on stop.
    pub shutdown_grace: Duration,
    /// Mode bits cleared on what remixd creates.
    pub umask: u32,
    /// Lease time for multi-process takeover.
    pub lease: Duration,
}

/// Why a config was refused: one line naming the file, the key and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read the config: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key is missing, unknown or has a bad value.
    #[error("{path}: {key}: {problem}")]
    Key {
        /// The config file.
        path: PathBuf,
        /// Dotted key name, e.g. `watch.settle`.
        key: String,
        /// What is wrong and what is expected.
        problem: String,
    },
    /// The file is not valid YAML.
    #[error("{path}: {problem}")]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// The parser's message with line and column.
        problem: String,
    },
}

/// Options from the command line that override the file.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides {
    /// `--dry-run`: provider `dry-run`.
    pub dry_run: bool,
}

/// Reads, resolves and checks the config at `path` (no folders are touched; see
/// [`Config::prepare_folders`]).
///
/// # Errors
/// A [`ConfigError`] naming the key and the problem.
pub fn load(path: &Path, overrides: Overrides) -> Result<Config, ConfigError> {
    let _ = (path, overrides);
    todo!("config::load")
}

impl Config {
    /// Creates the inbox, outbox, quarantine and work area when missing (with the umask
    /// applied), and checks that the work area is on the inbox's filesystem (by device id).
    ///
    /// # Errors
    /// A [`ConfigError::Key`] naming the folder key (`inbox`, `work_dir`, ...) and the problem.
    pub fn prepare_folders(&self) -> Result<(), ConfigError> {
        todo!("Config::prepare_folders")
    }
}
