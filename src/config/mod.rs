//! Configuration: what the YAML says (`RawConfig`, every key optional but the folders,
//! unknown keys refused) and what the daemon uses ([`Config`], paths resolved against the
//! config file's folder, provider defaults filled in, cross-field rules checked), and
//! creating the folders it names. The remix fields under `defaults:` are the sidecar
//! module's to read. Parts: `raw` (the YAML, key by key), `resolve` (to [`Config`]),
//! `folders` (creating them), and the tests.

use std::ffi::OsString;
use std::fs;
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

    /// The largest input image the provider takes, the default of `limits.max_image_bytes`:
    /// kkiai's page says 10 MB (10 MiB would let through files its proxy refuses), Ideogram's
    /// reference 25 MB. A dry run keeps the stricter one.
    #[must_use]
    pub fn max_image_bytes(self) -> u64 {
        match self {
            Self::Kkiai | Self::DryRun => 10_000_000,
            Self::Ideogram => 25_000_000,
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
    /// Estimated USD per UTC day, if capped.
    pub daily_spend_budget_usd: Option<f64>,
    /// Whether the limits above are the account's (shared by live processes) or each one's.
    pub scope: LimitScope,
}

/// `limits.scope`: who the API limits belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    /// The account's: every live process on this `work_dir` takes its share.
    Account,
    /// Each process's: every process takes them all.
    Process,
}

/// USD per output image for each rendering speed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeedPrices {
    /// `FLASH`.
    pub flash: f64,
    /// `TURBO`.
    pub turbo: f64,
    /// `DEFAULT`.
    pub default: f64,
    /// `QUALITY`.
    pub quality: f64,
}

/// `pricing:` resolved: what one output image costs, for `cost` and the spend budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pricing {
    /// Without a character reference.
    pub plain: SpeedPrices,
    /// With a character reference.
    pub character_reference: SpeedPrices,
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
    /// Send again a request whose answer never came after its upload (it may have been
    /// billed); false quarantines the job `answer_lost` instead.
    pub resend_after_timeout: bool,
}

pub use crate::logging::LogFormat;

/// The folder under `work_dir` holding one folder per remixd process (its lease, its usage
/// count, its jobs).
pub const OWNERS_DIR: &str = "owners";

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
    /// Prices per output image.
    pub pricing: Pricing,
    /// `output.layout`, validated: only known placeholders.
    pub layout: String,
    /// `output.gallery`: write the outbox's and quarantine's `index.html` pages.
    pub gallery: bool,
    /// `output.gallery_delay`: pages are rewritten at most this long after a job ends.
    pub gallery_delay: Duration,
    /// Logging.
    pub logging: LoggingConfig,
    /// `metrics.textfile`: where the Prometheus metrics are written (absolute), if anywhere.
    pub metrics_textfile: Option<PathBuf>,
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

/// Where the config file is: the `-c` value, else `$REMIXD_CONFIG`, else
/// [`DEFAULT_CONFIG_PATH`].
#[must_use]
pub fn resolve_path(cli: Option<&Path>) -> PathBuf {
    config_path_from(cli, std::env::var_os("REMIXD_CONFIG"))
}

fn config_path_from(cli: Option<&Path>, env: Option<OsString>) -> PathBuf {
    cli.map(Path::to_path_buf)
        .or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

/// Reads, resolves and checks the config at `path` (no folders are touched; see
/// [`Config::prepare_folders`]).
///
/// # Errors
/// A [`ConfigError`] naming the key and the problem.
pub fn load(path: &Path, overrides: Overrides) -> Result<Config, ConfigError> {
    load_with_env(path, overrides, &|name| std::env::var_os(name))
}

/// As [`load`], but reports every problem found rather than the first (for `remixd check`).
///
/// # Errors
/// Every [`ConfigError`] found, one per key.
pub fn load_all(path: &Path, overrides: Overrides) -> Result<Config, Vec<ConfigError>> {
    load_all_with_env(path, overrides, &|name| std::env::var_os(name))
}

/// Reads an environment variable; tests pass their own so they never touch the process's.
type EnvLookup = dyn Fn(&str) -> Option<OsString>;

fn load_with_env(
    path: &Path,
    overrides: Overrides,
    env: &EnvLookup,
) -> Result<Config, ConfigError> {
    load_all_with_env(path, overrides, env).map_err(|mut all| all.swap_remove(0))
}

fn load_all_with_env(
    path: &Path,
    overrides: Overrides,
    env: &EnvLookup,
) -> Result<Config, Vec<ConfigError>> {
    let path = std::path::absolute(path).map_err(|source| {
        vec![ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }]
    })?;
    let text = fs::read_to_string(&path).map_err(|source| {
        vec![ConfigError::Read {
            path: path.clone(),
            source,
        }]
    })?;
    let raw = parse(&text, &path)?;
    resolve(raw, &path, overrides, env)
        .map_err(|all| all.into_iter().map(|p| p.into_error(&path)).collect())
}

/// Pushes `prefix` + the field's name for every listed field that differs.
macro_rules! diff_fields {
    ($out:ident, $old:expr, $new:expr, $prefix:literal, $($field:ident),+ $(,)?) => {
        $(
            if $old.$field != $new.$field {
                $out.push(concat!($prefix, stringify!($field)).to_owned());
            }
        )+
    };
}

/// The dotted names of the keys whose resolved values differ, for the reload log line. The
/// API key itself shows as `api.api_key`, never its value.
#[must_use]
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    diff_fields!(changed, old, new, "", inbox, outbox, quarantine, work_dir);
    diff_fields!(changed, old.api, new.api, "api.", provider, base_url);
    if old.api.api_key != new.api.api_key || old.api.api_key_source != new.api.api_key_source {
        changed.push("api.api_key".to_owned());
    }
    #[rustfmt::skip]
    diff_fields!(changed, old.api, new.api, "api.", request_timeout, connect_timeout);
    #[rustfmt::skip]
    diff_fields!(changed, old.defaults, new.defaults, "defaults.", prompt, negative_prompt,
        num_images, rendering_speed, image_weight, seed, resolution, aspect_ratio, magic_prompt,
        style_type, style_preset, style_codes, color_palette, extra_fields);
    #[rustfmt::skip]
    diff_fields!(changed, old.watch, new.watch, "watch.", mode, poll_interval, rescan_interval,
        settle, sidecar_wait, orphan_after);
    #[rustfmt::skip]
    diff_fields!(changed, old.limits, new.limits, "limits.", max_image_bytes, concurrency,
        inflight_images, requests_per_minute, daily_image_budget, daily_spend_budget_usd, scope);
    #[rustfmt::skip]
    diff_fields!(changed, old.retry, new.retry, "retry.", max_attempts, initial_backoff,
        max_backoff, resend_after_timeout);
    if old.pricing != new.pricing {
        changed.push("pricing".to_owned());
    }
    if old.layout != new.layout {
        changed.push("output.layout".to_owned());
    }
    diff_fields!(changed, old, new, "output.", gallery, gallery_delay);
    #[rustfmt::skip]
    diff_fields!(changed, old.logging, new.logging, "logging.", format, level, stats_interval);
    if old.metrics_textfile != new.metrics_textfile {
        changed.push("metrics.textfile".to_owned());
    }
    diff_fields!(changed, old, new, "", shutdown_grace, umask, lease);
    changed
}

mod folders;
mod raw;
pub mod reload;
mod resolve;
#[cfg(test)]
mod tests;

use raw::parse;
pub use resolve::PUBLISHED_PRICES;
use resolve::resolve;
