//! Configuration: what the YAML says (`RawConfig`, every key optional but the folders,
//! unknown keys refused) and what the daemon uses ([`Config`], paths resolved against the
//! config file's folder, provider defaults filled in, cross-field rules checked), and
//! creating the folders it names. The remix fields under `defaults:` are the sidecar
//! module's to read.
//!
//! INTERFACE (skeleton): the helper implementing this module keeps the pub types below.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::de::{self, DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer};
use serde_yaml::{Mapping, Value};

use crate::sidecar::{self, AspectRatio, Fields};

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
        inflight_images, requests_per_minute, daily_image_budget);
    #[rustfmt::skip]
    diff_fields!(changed, old.retry, new.retry, "retry.", max_attempts, initial_backoff,
        max_backoff);
    if old.layout != new.layout {
        changed.push("output.layout".to_owned());
    }
    #[rustfmt::skip]
    diff_fields!(changed, old.logging, new.logging, "logging.", format, level, stats_interval);
    diff_fields!(changed, old, new, "", shutdown_grace, umask, lease);
    changed
}

impl Config {
    /// Creates the inbox, outbox, quarantine and work area when missing (with the umask
    /// applied), and checks that the work area is on the inbox's filesystem (by device id).
    ///
    /// # Errors
    /// A [`ConfigError::Key`] naming the folder key (`inbox`, `work_dir`, ...) and the problem.
    pub fn prepare_folders(&self) -> Result<(), ConfigError> {
        let mode = 0o777 & !self.umask;
        for (key, dir) in [
            ("inbox", &self.inbox),
            ("outbox", &self.outbox),
            ("quarantine", &self.quarantine),
        ] {
            create_folder(dir, mode).map_err(|text| self.key_error(key, &text))?;
        }
        // Checked before creating the work area so a misplaced one is not left behind.
        self.check_same_filesystem()?;
        create_folder(&self.work_dir, mode).map_err(|text| self.key_error("work_dir", &text))
    }

    fn check_same_filesystem(&self) -> Result<(), ConfigError> {
        let device = |dir: &Path| {
            dir.ancestors()
                .find_map(|p| fs::metadata(p).ok())
                .map(|meta| meta.dev())
        };
        let (inbox, work) = (device(&self.inbox), device(&self.work_dir));
        if inbox.is_some() && inbox == work {
            return Ok(());
        }
        Err(self.key_error(
            "work_dir",
            &format!(
                "{} is not on the inbox's filesystem ({}); claiming a job is a rename, which \
                 cannot cross filesystems: leave work_dir unset (<inbox>/.remixd) or pick a \
                 folder on the same filesystem",
                self.work_dir.display(),
                self.inbox.display()
            ),
        ))
    }

    fn key_error(&self, key: &str, problem: &str) -> ConfigError {
        ConfigError::Key {
            path: self.path.clone(),
            key: key.to_owned(),
            problem: one_line(problem),
        }
    }
}

/// Creates `dir` and its missing parents with `mode`, leaving existing folders alone.
fn create_folder(dir: &Path, mode: u32) -> Result<(), String> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|p| matches!(p.try_exists(), Ok(false)))
        .collect();
    for new in missing.iter().rev() {
        match fs::create_dir(new) {
            Ok(()) => set_mode(new, mode)
                .map_err(|e| format!("cannot set the mode of {}: {e}", new.display()))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", new.display())),
        }
    }
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(format!("{} exists but is not a folder", dir.display())),
        Err(e) => Err(format!("cannot use {}: {e}", dir.display())),
    }
}

/// Sets the permission bits explicitly, because `mkdir` would also apply the process umask,
/// which may be stricter than the configured one.
fn set_mode(dir: &Path, mode: u32) -> io::Result<()> {
    // A setgid bit inherited from a group-shared parent must survive, or new files would
    // stop taking the folder's group.
    let special = fs::metadata(dir)?.permissions().mode() & 0o7000;
    fs::set_permissions(dir, fs::Permissions::from_mode(special | mode))
}

// ---------------------------------------------------------------------------------------
// What the YAML says.

/// The YAML as written. Enum-like values stay text so that resolving can name the key and
/// list the allowed values.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    inbox: Option<PathBuf>,
    outbox: Option<PathBuf>,
    quarantine: Option<PathBuf>,
    work_dir: Option<PathBuf>,
    api: Option<RawApi>,
    defaults: Option<Value>,
    watch: Option<RawWatch>,
    limits: Option<RawLimits>,
    retry: Option<RawRetry>,
    output: Option<RawOutput>,
    logging: Option<RawLogging>,
    #[serde(deserialize_with = "duration")]
    shutdown_grace: Option<Duration>,
    #[serde(deserialize_with = "umask")]
    umask: Option<u32>,
    #[serde(deserialize_with = "duration")]
    lease: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawApi {
    provider: Option<String>,
    base_url: Option<String>,
    api_key_file: Option<PathBuf>,
    api_key_env: Option<String>,
    #[serde(deserialize_with = "duration")]
    request_timeout: Option<Duration>,
    #[serde(deserialize_with = "duration")]
    connect_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawWatch {
    mode: Option<String>,
    #[serde(deserialize_with = "duration")]
    poll_interval: Option<Duration>,
    #[serde(deserialize_with = "duration")]
    rescan_interval: Option<Duration>,
    #[serde(deserialize_with = "duration")]
    settle: Option<Duration>,
    #[serde(deserialize_with = "duration")]
    sidecar_wait: Option<Duration>,
    #[serde(deserialize_with = "duration")]
    orphan_after: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLimits {
    max_image_bytes: Option<u64>,
    concurrency: Option<usize>,
    inflight_images: Option<u32>,
    requests_per_minute: Option<u32>,
    daily_image_budget: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawRetry {
    max_attempts: Option<u32>,
    #[serde(deserialize_with = "duration")]
    initial_backoff: Option<Duration>,
    #[serde(deserialize_with = "duration")]
    max_backoff: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawOutput {
    layout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLogging {
    format: Option<String>,
    level: Option<String>,
    #[serde(deserialize_with = "duration")]
    stats_interval: Option<Duration>,
}

/// A duration written like `500ms`, `2s`, `5m`; null means "the default".
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let value = Value::deserialize(d)?;
    let parsed = match &value {
        Value::Null => return Ok(None),
        Value::String(text) => humantime::parse_duration(text.trim()).ok(),
        _ => None,
    };
    parsed.map(Some).ok_or_else(|| {
        de::Error::custom(format!(
            "invalid duration {} (write e.g. 500ms, 2s, 5m)",
            describe(&value)
        ))
    })
}

/// Octal digits as text (`"0007"`). A bare integer is read as octal digits too, since
/// nobody means a umask in decimal and YAML 1.2 reads an unquoted `0027` as text anyway.
fn umask<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let value = Value::deserialize(d)?;
    let digits = match &value {
        Value::Null => return Ok(None),
        Value::String(text) => text.trim().to_owned(),
        Value::Number(n) if n.is_u64() => n.to_string(),
        _ => String::new(),
    };
    u32::from_str_radix(&digits, 8)
        .ok()
        .filter(|mask| *mask <= 0o777 && !digits.starts_with('+'))
        .map(Some)
        .ok_or_else(|| {
            de::Error::custom(format!(
                "invalid umask {} (write octal digits up to 0777 in quotes, e.g. \"0007\")",
                describe(&value)
            ))
        })
}

/// A value as a user would recognise it in a message.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

// ---------------------------------------------------------------------------------------
// Reading the YAML, with every refusal naming its dotted key.

/// A problem with one key, before the config path is known to the message.
#[derive(Debug)]
struct Problem {
    key: String,
    text: String,
}

impl Problem {
    fn into_error(self, path: &Path) -> ConfigError {
        ConfigError::Key {
            path: path.to_path_buf(),
            key: self.key,
            problem: one_line(&self.text),
        }
    }
}

fn problem(key: &str, text: impl Into<String>) -> Problem {
    Problem {
        key: key.to_owned(),
        text: text.into(),
    }
}

/// The promise is one line per refusal, whatever a parser put in its message.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn parse(text: &str, path: &Path) -> Result<RawConfig, Vec<ConfigError>> {
    let syntax = |problem: String| {
        vec![ConfigError::Syntax {
            path: path.to_path_buf(),
            problem: one_line(&problem),
        }]
    };
    let doc: Value =
        serde_yaml::from_str(text).map_err(|e| syntax(format!("invalid YAML: {e}")))?;
    match &doc {
        Value::Null => return Ok(RawConfig::default()),
        Value::Mapping(_) => {}
        other => {
            return Err(syntax(format!(
                "the config must be a mapping of keys (inbox: ..., outbox: ...), not {}",
                describe(other)
            )));
        }
    }
    let mut problems = Vec::new();
    check_keys::<RawConfig>(&doc, "", SECTIONS, &mut problems);
    if !problems.is_empty() {
        return Err(problems.into_iter().map(|p| p.into_error(path)).collect());
    }
    // Every key passed on its own above, so this only fails on something unforeseen.
    serde_yaml::from_value(doc).map_err(|e| syntax(e.to_string()))
}

type SectionCheck = fn(&Value, &str, &mut Vec<Problem>);

/// The top-level keys that hold a mapping of their own keys. `defaults` is not here: the
/// sidecar module checks remix fields.
const SECTIONS: &[(&str, SectionCheck)] = &[
    ("api", check_section::<RawApi>),
    ("watch", check_section::<RawWatch>),
    ("limits", check_section::<RawLimits>),
    ("retry", check_section::<RawRetry>),
    ("output", check_section::<RawOutput>),
    ("logging", check_section::<RawLogging>),
];

fn check_section<T: DeserializeOwned>(value: &Value, key: &str, out: &mut Vec<Problem>) {
    check_keys::<T>(value, key, &[], out);
}

/// Checks a mapping key by key, so an unknown key or bad value is reported under its own
/// dotted name rather than serde's view of the whole struct.
fn check_keys<T: DeserializeOwned>(
    value: &Value,
    prefix: &str,
    sections: &[(&str, SectionCheck)],
    out: &mut Vec<Problem>,
) {
    let map = match value {
        Value::Null => return,
        Value::Mapping(map) => map,
        other => {
            let found = describe(other);
            out.push(problem(
                prefix,
                format!("expected a mapping of keys, found {found}"),
            ));
            return;
        }
    };
    let known = field_names::<T>();
    for (name, entry) in map {
        let Some(name_text) = name.as_str() else {
            out.push(problem(
                &dotted(prefix, &describe(name)),
                "keys must be text",
            ));
            continue;
        };
        let key = dotted(prefix, name_text);
        if !known.contains(&name_text) {
            let expected = known.join(", ");
            out.push(problem(
                &key,
                format!("unknown key (expected one of {expected})"),
            ));
            continue;
        }
        if let Some((_, check)) = sections.iter().find(|(section, _)| *section == name_text) {
            check(entry, &key, out);
            continue;
        }
        let alone: Mapping = std::iter::once((name.clone(), entry.clone())).collect();
        if let Err(e) = serde_yaml::from_value::<T>(Value::Mapping(alone)) {
            out.push(problem(&key, friendly(&e.to_string())));
        }
    }
}

/// serde names Rust types; a config author thinks in numbers and paths.
fn friendly(message: &str) -> String {
    [
        ("expected usize", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected path string", "expected a folder or file path"),
        ("expected a string", "expected text"),
    ]
    .iter()
    .fold(message.to_owned(), |text, (rust, plain)| {
        text.replace(rust, plain)
    })
}

fn dotted(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The key names serde's derive gave `T`, so the list of allowed keys has one source: the
/// struct. Asking `T` to deserialize itself from [`FieldNames`] hands them over.
fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    match T::deserialize(FieldNames) {
        Err(NamesFound(Some(names))) => names,
        _ => &[],
    }
}

struct FieldNames;

#[derive(Debug)]
struct NamesFound(Option<&'static [&'static str]>);

impl std::fmt::Display for NamesFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field names requested")
    }
}

impl std::error::Error for NamesFound {}

impl de::Error for NamesFound {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Self(None)
    }
}

impl<'de> Deserializer<'de> for FieldNames {
    type Error = NamesFound;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, NamesFound> {
        Err(NamesFound(None))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, NamesFound> {
        Err(NamesFound(Some(fields)))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

// ---------------------------------------------------------------------------------------
// From what the YAML says to what the daemon uses.

const KEY_FILE: &str = "api.api_key_file";
const KEY_ENV: &str = "api.api_key_env";
const DEFAULT_KEY_ENV: &str = "REMIXD_API_KEY";
const DEFAULT_LAYOUT: &str = "{subdir}/{stem}-{job_id}";
const PLACEHOLDERS: &[&str] = &["subdir", "stem", "job_id", "date", "ext"];
const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

const PROVIDERS: &[(&str, Provider)] = &[
    ("kkiai", Provider::Kkiai),
    ("ideogram", Provider::Ideogram),
    ("dry-run", Provider::DryRun),
];
const WATCH_MODES: &[(&str, WatchMode)] = &[
    ("auto", WatchMode::Auto),
    ("native", WatchMode::Native),
    ("poll", WatchMode::Poll),
];
const LOG_FORMATS: &[(&str, LogFormat)] = &[
    ("auto", LogFormat::Auto),
    ("json", LogFormat::Json),
    ("pretty", LogFormat::Pretty),
];

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The value of `result`, or `None` with its problem noted.
fn keep<T>(problems: &mut Vec<Problem>, result: Result<T, Problem>) -> Option<T> {
    result.map_err(|p| problems.push(p)).ok()
}

/// Resolves every section, collecting every problem rather than stopping at the first.
fn resolve(
    raw: RawConfig,
    path: &Path,
    overrides: Overrides,
    env: &EnvLookup,
) -> Result<Config, Vec<Problem>> {
    let base = path.parent().unwrap_or_else(|| Path::new("/"));
    let mut problems = Vec::new();
    let folders = keep(&mut problems, resolve_folders(&raw, base));
    let output = raw.output.unwrap_or_default();
    let layout = output.layout.unwrap_or_else(|| DEFAULT_LAYOUT.to_owned());
    let layout_ok = keep(
        &mut problems,
        check_layout(&layout).map_err(|text| problem("output.layout", text)),
    );
    let api_raw = raw.api.unwrap_or_default();
    let api = keep(&mut problems, resolve_api(&api_raw, base, overrides, env));
    let defaults = keep(&mut problems, resolve_defaults(raw.defaults.as_ref()));
    let watch = keep(&mut problems, resolve_watch(&raw.watch.unwrap_or_default()));
    let limits = keep(
        &mut problems,
        resolve_limits(&raw.limits.unwrap_or_default()),
    );
    let retry = keep(&mut problems, resolve_retry(&raw.retry.unwrap_or_default()));
    let logging = keep(
        &mut problems,
        resolve_logging(&raw.logging.unwrap_or_default()),
    );
    let lease = keep(&mut problems, positive("lease", raw.lease, secs(60)));
    let (
        Some(folders),
        Some(()),
        Some(api),
        Some(defaults),
        Some(watch),
        Some(limits),
        Some(retry),
        Some(logging),
        Some(lease),
    ) = (
        folders, layout_ok, api, defaults, watch, limits, retry, logging, lease,
    )
    else {
        return Err(problems);
    };
    Ok(Config {
        path: path.to_path_buf(),
        inbox: folders.inbox,
        outbox: folders.outbox,
        quarantine: folders.quarantine,
        work_dir: folders.work_dir,
        api,
        defaults,
        watch,
        limits,
        retry,
        layout,
        logging,
        shutdown_grace: raw.shutdown_grace.unwrap_or(secs(30)),
        umask: raw.umask.unwrap_or(0o007),
        lease,
    })
}

struct Folders {
    inbox: PathBuf,
    outbox: PathBuf,
    quarantine: PathBuf,
    work_dir: PathBuf,
}

fn resolve_folders(raw: &RawConfig, base: &Path) -> Result<Folders, Problem> {
    let required = |key: &str, path: Option<&Path>| {
        path.ok_or_else(|| problem(key, "missing (required)"))
            .and_then(|p| folder(key, p, base))
    };
    let inbox = required("inbox", raw.inbox.as_deref())?;
    let folders = Folders {
        outbox: required("outbox", raw.outbox.as_deref())?,
        quarantine: required("quarantine", raw.quarantine.as_deref())?,
        work_dir: match raw.work_dir.as_deref() {
            Some(p) => folder("work_dir", p, base)?,
            None => inbox.join(".remixd"),
        },
        inbox,
    };
    check_overlap(&folders)?;
    Ok(folders)
}

fn folder(key: &str, path: &Path, base: &Path) -> Result<PathBuf, Problem> {
    if path.as_os_str().is_empty() {
        return Err(problem(key, "is empty (write a folder path)"));
    }
    Ok(normalize(&base.join(path)))
}

/// Removes `.` and `..` without touching the disk, so two spellings of one folder compare
/// equal.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Refuses folders that would feed each other: the same folder twice, or a folder inside
/// the inbox that the inbox would see (its scan skips names starting with `.` or `~`).
fn check_overlap(f: &Folders) -> Result<(), Problem> {
    let named = [
        ("inbox", &f.inbox),
        ("outbox", &f.outbox),
        ("quarantine", &f.quarantine),
        ("work_dir", &f.work_dir),
    ];
    for (i, (key, dir)) in named.iter().enumerate() {
        if let Some((other, _)) = named[..i].iter().find(|(_, earlier)| earlier == dir) {
            let shown = dir.display();
            return Err(problem(
                key,
                format!("{shown} is the same folder as {other}"),
            ));
        }
    }
    for (key, dir) in &named[1..] {
        let seen_by_inbox = dir.strip_prefix(&f.inbox).is_ok_and(|rest| {
            !rest
                .iter()
                .any(|n| n.to_string_lossy().starts_with(['.', '~']))
        });
        if seen_by_inbox {
            return Err(problem(
                key,
                format!(
                    "{} is inside the inbox, which would take its files for new jobs; move \
                     it out, or under a folder whose name starts with \".\"",
                    dir.display()
                ),
            ));
        }
    }
    Ok(())
}

fn resolve_api(
    raw: &RawApi,
    base: &Path,
    overrides: Overrides,
    env: &EnvLookup,
) -> Result<ApiConfig, Problem> {
    let written = choose(
        "api.provider",
        raw.provider.as_deref(),
        PROVIDERS,
        Provider::Kkiai,
    )?;
    let provider = if overrides.dry_run {
        Provider::DryRun
    } else {
        written
    };
    // A written base_url is checked even for dry-run, so a rehearsal catches its typos.
    let written_url = match raw.base_url.as_deref() {
        Some(url) => Some(check_base_url(url).map_err(|text| problem("api.base_url", text))?),
        None => None,
    };
    let base_url = match provider {
        Provider::DryRun => None,
        Provider::Kkiai => Some(written_url.unwrap_or_else(|| KKIAI_URL.to_owned())),
        Provider::Ideogram => Some(written_url.unwrap_or_else(|| IDEOGRAM_URL.to_owned())),
    };
    let (api_key, api_key_source) = if provider == Provider::DryRun {
        (None, "none (dry-run)".to_owned())
    } else {
        let (key, source) = read_key(raw, base, env)?;
        (Some(key), source)
    };
    Ok(ApiConfig {
        provider,
        base_url,
        api_key,
        api_key_source,
        request_timeout: positive("api.request_timeout", raw.request_timeout, secs(180))?,
        connect_timeout: positive("api.connect_timeout", raw.connect_timeout, secs(10))?,
    })
}

const KKIAI_URL: &str = "https://www.kkiai.com/ideogram";
const IDEOGRAM_URL: &str = "https://api.ideogram.ai";

/// An http(s) base URL without its trailing slash; plain http only for this host, since the
/// key travels in a header.
fn check_base_url(written: &str) -> Result<String, String> {
    let trimmed = written.trim().trim_end_matches('/');
    let url = reqwest::Url::parse(trimmed)
        .map_err(|e| format!("{written:?} is not a URL ({e}); write e.g. {KKIAI_URL}"))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(format!(
                "{written:?} must use https (plain http only for localhost, 127.0.0.1 or ::1)"
            ));
        }
        other => return Err(format!("{written:?} has scheme {other:?}; use https")),
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{written:?} must not hold a ?query or #fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{written:?} must not hold credentials; use api.api_key_file"
        ));
    }
    Ok(trimmed.to_owned())
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The key from `api.api_key_file`, else from the variable `api.api_key_env` names, with
/// where it came from (never the key itself) for messages.
fn read_key(raw: &RawApi, base: &Path, env: &EnvLookup) -> Result<(ApiKey, String), Problem> {
    if let Some(file) = &raw.api_key_file {
        let path = normalize(&base.join(file));
        let shown = path.display().to_string();
        let text = fs::read_to_string(&path)
            .map_err(|e| problem(KEY_FILE, format!("cannot read {shown}: {e}")))?;
        let key = checked_key(KEY_FILE, text.trim(), &shown)?;
        return Ok((key, shown));
    }
    let var = raw.api_key_env.as_deref().unwrap_or(DEFAULT_KEY_ENV);
    if var.is_empty() || var.contains(['=', '\0']) {
        return Err(problem(KEY_ENV, format!("{var:?} is not a variable name")));
    }
    let shown = format!("${var}");
    let value = match env(var) {
        Some(v) => v
            .into_string()
            .map_err(|_| problem(KEY_ENV, format!("{shown} is not valid UTF-8")))?,
        None => String::new(),
    };
    if value.trim().is_empty() {
        return Err(problem(
            KEY_ENV,
            format!("no API key: set {shown} or api.api_key_file (or use --dry-run)"),
        ));
    }
    Ok((checked_key(KEY_ENV, value.trim(), &shown)?, shown))
}

/// A key must fit in an HTTP header; the message names its source, never its text.
fn checked_key(key_name: &str, key: &str, source: &str) -> Result<ApiKey, Problem> {
    if key.is_empty() {
        return Err(problem(key_name, format!("{source} is empty")));
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(problem(
            key_name,
            format!(
                "the key in {source} has white space or control characters inside it; it should hold the key alone"
            ),
        ));
    }
    Ok(ApiKey::new(key.to_owned()))
}

fn resolve_defaults(section: Option<&Value>) -> Result<Fields, Problem> {
    let builtin = Fields {
        num_images: Some(1),
        rendering_speed: Some("DEFAULT".into()),
        aspect_ratio: Some(AspectRatio::Auto),
        ..Fields::default()
    };
    match section {
        None => Ok(builtin),
        Some(value) => {
            let written =
                sidecar::from_yaml_value(value).map_err(|e| problem("defaults", e.to_string()))?;
            Ok(builtin.overlay(written))
        }
    }
}

fn resolve_watch(raw: &RawWatch) -> Result<WatchConfig, Problem> {
    Ok(WatchConfig {
        mode: choose(
            "watch.mode",
            raw.mode.as_deref(),
            WATCH_MODES,
            WatchMode::Auto,
        )?,
        poll_interval: positive("watch.poll_interval", raw.poll_interval, secs(2))?,
        rescan_interval: positive("watch.rescan_interval", raw.rescan_interval, secs(300))?,
        settle: positive("watch.settle", raw.settle, secs(1))?,
        sidecar_wait: raw.sidecar_wait.unwrap_or(secs(5)),
        orphan_after: positive("watch.orphan_after", raw.orphan_after, secs(3600))?,
    })
}

fn resolve_limits(raw: &RawLimits) -> Result<Limits, Problem> {
    if raw.daily_image_budget == Some(0) {
        return Err(problem(
            "limits.daily_image_budget",
            "must be at least 1 (or null for no cap)",
        ));
    }
    Ok(Limits {
        max_image_bytes: at_least_one("limits.max_image_bytes", raw.max_image_bytes, 10 << 20)?,
        concurrency: at_least_one("limits.concurrency", raw.concurrency, 4)?,
        inflight_images: at_least_one("limits.inflight_images", raw.inflight_images, 10)?,
        requests_per_minute: at_least_one(
            "limits.requests_per_minute",
            raw.requests_per_minute,
            60,
        )?,
        daily_image_budget: raw.daily_image_budget,
    })
}

fn resolve_retry(raw: &RawRetry) -> Result<RetryConfig, Problem> {
    let initial_backoff = positive("retry.initial_backoff", raw.initial_backoff, secs(2))?;
    let max_backoff = positive("retry.max_backoff", raw.max_backoff, secs(300))?;
    if initial_backoff > max_backoff {
        return Err(problem(
            "retry.initial_backoff",
            format!(
                "{} is longer than retry.max_backoff ({})",
                humantime::format_duration(initial_backoff),
                humantime::format_duration(max_backoff)
            ),
        ));
    }
    Ok(RetryConfig {
        max_attempts: at_least_one("retry.max_attempts", raw.max_attempts, 5)?,
        initial_backoff,
        max_backoff,
    })
}

fn resolve_logging(raw: &RawLogging) -> Result<LoggingConfig, Problem> {
    let level = match raw.level.as_deref() {
        Some(written) => check_level(written).map_err(|text| problem("logging.level", text))?,
        None => "info".to_owned(),
    };
    Ok(LoggingConfig {
        format: choose(
            "logging.format",
            raw.format.as_deref(),
            LOG_FORMATS,
            LogFormat::Auto,
        )?,
        level,
        stats_interval: positive("logging.stats_interval", raw.stats_interval, secs(60))?,
    })
}

/// A level name (any case) or an `EnvFilter` directive list such as `info,remixd=debug`.
/// A bare word that is not a level is refused: `EnvFilter` would take a typo like
/// `verbose` for a target name and silently log nothing.
fn check_level(written: &str) -> Result<String, String> {
    let level = written.trim();
    let lower = level.to_ascii_lowercase();
    if LEVELS.contains(&lower.as_str()) {
        return Ok(lower);
    }
    let refused = || {
        format!(
            "unknown level {written:?} (expected one of {}, or a filter like \"info,remixd=debug\")",
            LEVELS.join(", ")
        )
    };
    let parts_ok = level.split(',').all(|part| {
        let part = part.trim().to_ascii_lowercase();
        LEVELS.contains(&part.as_str()) || part.contains(['=', '['])
    });
    if !parts_ok {
        return Err(refused());
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .map(|_| level.to_owned())
        .map_err(|e| format!("{}: {e}", refused()))
}

/// Only known placeholders, and a result that stays inside the outbox.
fn check_layout(layout: &str) -> Result<(), String> {
    if layout.trim().is_empty() {
        return Err("is empty (the default is \"{subdir}/{stem}-{job_id}\")".to_owned());
    }
    if layout.starts_with('/') {
        return Err(format!(
            "{layout:?} must be relative to the outbox (no leading /)"
        ));
    }
    if layout.split('/').any(|segment| segment == "..") {
        return Err(format!(
            "{layout:?} must not climb out of the outbox with \"..\""
        ));
    }
    let allowed = || {
        let names: Vec<String> = PLACEHOLDERS.iter().map(|p| format!("{{{p}}}")).collect();
        names.join(" ")
    };
    let mut rest = layout;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(format!("{layout:?} has a \"}}\" with no \"{{\" before it"));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("{layout:?} has an unclosed \"{{\""))?;
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            let allowed = allowed();
            return Err(format!(
                "unknown placeholder {{{name}}} (expected {allowed})"
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

fn choose<T: Copy>(
    key: &str,
    written: Option<&str>,
    table: &[(&str, T)],
    default: T,
) -> Result<T, Problem> {
    let Some(written) = written else {
        return Ok(default);
    };
    let wanted = written.trim().to_ascii_lowercase();
    table
        .iter()
        .find(|(name, _)| *name == wanted)
        .map(|(_, value)| *value)
        .ok_or_else(|| {
            let names: Vec<&str> = table.iter().map(|(name, _)| *name).collect();
            let names = names.join(", ");
            problem(
                key,
                format!("unknown value {written:?} (expected one of {names})"),
            )
        })
}

fn positive(key: &str, written: Option<Duration>, default: Duration) -> Result<Duration, Problem> {
    match written {
        Some(d) if d.is_zero() => Err(problem(key, "must be longer than 0s")),
        Some(d) => Ok(d),
        None => Ok(default),
    }
}

fn at_least_one<T: PartialOrd + From<u8>>(
    key: &str,
    written: Option<T>,
    default: T,
) -> Result<T, Problem> {
    match written {
        Some(n) if n < T::from(1) => Err(problem(key, "must be at least 1")),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const FOLDERS: &str = "inbox: in\noutbox: out\nquarantine: q\n";
    const KEY: &[(&str, &str)] = &[("REMIXD_API_KEY", "sk-test-4242")];

    /// Writes `yaml` as `remixd.yaml` in a new temp folder and loads it with `vars` as the
    /// environment.
    fn load_in(
        yaml: &str,
        overrides: Overrides,
        vars: &[(&str, &str)],
    ) -> (tempfile::TempDir, Result<Config, ConfigError>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("remixd.yaml");
        fs::write(&path, yaml).unwrap();
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        let result = load_with_env(&path, overrides, &move |name| vars.get(name).cloned());
        (dir, result)
    }

    fn load_ok(yaml: &str) -> (tempfile::TempDir, Config) {
        let (dir, result) = load_in(yaml, Overrides::default(), KEY);
        (dir, result.unwrap())
    }

    /// The refusal's text after `<config path>: `, checking it is one line.
    fn refusal(yaml: &str) -> String {
        refusal_with(yaml, Overrides::default(), KEY)
    }

    fn refusal_with(yaml: &str, overrides: Overrides, vars: &[(&str, &str)]) -> String {
        let (dir, result) = load_in(yaml, overrides, vars);
        let message = result.unwrap_err().to_string();
        assert!(!message.contains('\n'), "not one line: {message}");
        let prefix = format!("{}: ", dir.path().join("remixd.yaml").display());
        message
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{message:?} does not start with the config path"))
            .to_owned()
    }

    #[test]
    fn minimal_config_resolves_every_default() {
        let (dir, cfg) = load_ok(FOLDERS);
        let root = dir.path();
        assert_eq!(cfg.path, root.join("remixd.yaml"));
        assert_eq!(cfg.inbox, root.join("in"));
        assert_eq!(cfg.outbox, root.join("out"));
        assert_eq!(cfg.quarantine, root.join("q"));
        assert_eq!(cfg.work_dir, root.join("in/.remixd"));
        assert_eq!(cfg.api.provider, Provider::Kkiai);
        assert_eq!(cfg.api.base_url.as_deref(), Some(KKIAI_URL));
        assert_eq!(cfg.api.api_key.as_ref().unwrap().expose(), "sk-test-4242");
        assert_eq!(cfg.api.api_key_source, "$REMIXD_API_KEY");
        assert_eq!(cfg.api.request_timeout, secs(180));
        assert_eq!(cfg.api.connect_timeout, secs(10));
        let defaults = Fields {
            num_images: Some(1),
            rendering_speed: Some("DEFAULT".into()),
            aspect_ratio: Some(AspectRatio::Auto),
            ..Fields::default()
        };
        assert_eq!(cfg.defaults, defaults);
        let watch = WatchConfig {
            mode: WatchMode::Auto,
            poll_interval: secs(2),
            rescan_interval: secs(300),
            settle: secs(1),
            sidecar_wait: secs(5),
            orphan_after: secs(3600),
        };
        assert_eq!(cfg.watch, watch);
        let limits = Limits {
            max_image_bytes: 10_485_760,
            concurrency: 4,
            inflight_images: 10,
            requests_per_minute: 60,
            daily_image_budget: None,
        };
        assert_eq!(cfg.limits, limits);
        assert_eq!(
            (
                cfg.retry.max_attempts,
                cfg.retry.initial_backoff,
                cfg.retry.max_backoff
            ),
            (5, secs(2), secs(300))
        );
        assert_eq!(cfg.layout, "{subdir}/{stem}-{job_id}");
        assert_eq!(cfg.logging.format, LogFormat::Auto);
        assert_eq!(cfg.logging.level, "info");
        assert_eq!(cfg.logging.stats_interval, secs(60));
        assert_eq!(
            (cfg.shutdown_grace, cfg.umask, cfg.lease),
            (secs(30), 0o007, secs(60))
        );
    }

    #[test]
    fn written_values_replace_defaults() {
        let (_dir, cfg) = load_ok(&format!(
            "{FOLDERS}api:\n  provider: Ideogram\n  request_timeout: 90s\nwatch:\n  mode: poll\n  \
             settle: 500ms\nlimits:\n  concurrency: 2\n  daily_image_budget: 100\nlogging:\n  \
             format: json\n  level: DEBUG\nlease: 5m\n"
        ));
        assert_eq!(cfg.api.provider, Provider::Ideogram);
        assert_eq!(cfg.api.base_url.as_deref(), Some(IDEOGRAM_URL));
        assert_eq!(cfg.api.request_timeout, secs(90));
        assert_eq!(cfg.watch.mode, WatchMode::Poll);
        assert_eq!(cfg.watch.settle, Duration::from_millis(500));
        assert_eq!(
            (cfg.limits.concurrency, cfg.limits.daily_image_budget),
            (2, Some(100))
        );
        assert_eq!(
            (cfg.logging.format, cfg.logging.level.as_str()),
            (LogFormat::Json, "debug")
        );
        assert_eq!(cfg.lease, secs(300));
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        fs::create_dir_all(etc.join("secrets")).unwrap();
        fs::write(etc.join("secrets/key"), "sk-file").unwrap();
        let absolute_out = dir.path().join("abs/out");
        let yaml = format!(
            "inbox: ../srv/in\noutbox: {}\nquarantine: ./q\nwork_dir: ../srv/in/.work\n\
             api:\n  api_key_file: secrets/key\n",
            absolute_out.display()
        );
        let path = etc.join("remixd.yaml");
        fs::write(&path, yaml).unwrap();
        let cfg = load_with_env(&path, Overrides::default(), &|_| None).unwrap();
        assert_eq!(cfg.inbox, dir.path().join("srv/in"));
        assert_eq!(cfg.outbox, absolute_out);
        assert_eq!(cfg.quarantine, etc.join("q"));
        assert_eq!(cfg.work_dir, dir.path().join("srv/in/.work"));
        assert_eq!(cfg.api.api_key.unwrap().expose(), "sk-file");
        assert_eq!(
            cfg.api.api_key_source,
            etc.join("secrets/key").display().to_string()
        );
    }

    #[test]
    fn unknown_keys_are_named_by_their_dotted_path() {
        assert!(
            refusal(&format!("{FOLDERS}inboxx: x\n"))
                .starts_with("inboxx: unknown key (expected one of inbox, outbox, quarantine, work_dir, api, defaults, watch,"),
        );
        assert_eq!(
            refusal(&format!("{FOLDERS}watch:\n  setle: 1s\n")),
            "watch.setle: unknown key (expected one of mode, poll_interval, rescan_interval, \
             settle, sidecar_wait, orphan_after)"
        );
        assert_eq!(
            refusal(&format!("{FOLDERS}output:\n  layuot: x\n")),
            "output.layuot: unknown key (expected one of layout)"
        );
    }

    #[test]
    fn bad_durations_name_the_key_and_the_expected_form() {
        assert_eq!(
            refusal(&format!("{FOLDERS}watch:\n  settle: abc\n")),
            "watch.settle: invalid duration \"abc\" (write e.g. 500ms, 2s, 5m)"
        );
        assert_eq!(
            refusal(&format!("{FOLDERS}lease: 5\n")),
            "lease: invalid duration 5 (write e.g. 500ms, 2s, 5m)"
        );
        assert_eq!(
            refusal(&format!("{FOLDERS}watch:\n  settle: 0s\n")),
            "watch.settle: must be longer than 0s"
        );
    }

    #[test]
    fn bad_enum_values_list_the_allowed_ones() {
        assert_eq!(
            refusal(&format!("{FOLDERS}api:\n  provider: openai\n")),
            "api.provider: unknown value \"openai\" (expected one of kkiai, ideogram, dry-run)"
        );
        assert_eq!(
            refusal(&format!("{FOLDERS}watch:\n  mode: inotify\n")),
            "watch.mode: unknown value \"inotify\" (expected one of auto, native, poll)"
        );
        assert_eq!(
            refusal(&format!("{FOLDERS}logging:\n  format: xml\n")),
            "logging.format: unknown value \"xml\" (expected one of auto, json, pretty)"
        );
    }

    #[test]
    fn wrong_shapes_name_the_key() {
        assert_eq!(
            refusal(&format!("{FOLDERS}watch: 5\n")),
            "watch: expected a mapping of keys, found 5"
        );
        assert_eq!(
            refusal(&format!("{FOLDERS}limits:\n  concurrency: four\n")),
            "limits.concurrency: invalid type: string \"four\", expected a whole number"
        );
        // An empty section is the same as leaving it out.
        let (_dir, cfg) = load_ok(&format!("{FOLDERS}api:\nwatch:\n"));
        assert_eq!(cfg.api.provider, Provider::Kkiai);
    }

    #[test]
    fn missing_folder_keys_are_named() {
        assert_eq!(
            refusal("outbox: out\nquarantine: q\n"),
            "inbox: missing (required)"
        );
        assert_eq!(
            refusal("inbox: in\noutbox: null\nquarantine: q\n"),
            "outbox: missing (required)"
        );
        assert_eq!(refusal(""), "inbox: missing (required)");
    }

    #[test]
    fn yaml_syntax_errors_are_one_line_with_a_position() {
        let (_dir, result) = load_in("inbox: [in\noutbox: out\n", Overrides::default(), KEY);
        let err = result.unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("line") && !text.contains('\n'), "{text}");
        let (_dir, result) = load_in("- inbox\n- outbox\n", Overrides::default(), KEY);
        assert!(
            result
                .unwrap_err()
                .to_string()
                .contains("must be a mapping of keys")
        );
    }

    #[test]
    fn a_missing_api_key_says_where_to_put_one() {
        assert_eq!(
            refusal_with(FOLDERS, Overrides::default(), &[]),
            "api.api_key_env: no API key: set $REMIXD_API_KEY or api.api_key_file (or use --dry-run)"
        );
        assert_eq!(
            refusal_with(FOLDERS, Overrides::default(), &[("REMIXD_API_KEY", " \n")]),
            "api.api_key_env: no API key: set $REMIXD_API_KEY or api.api_key_file (or use --dry-run)"
        );
        let other_var = format!("{FOLDERS}api:\n  api_key_env: IDEOGRAM_KEY\n");
        assert!(refusal(&other_var).starts_with("api.api_key_env: no API key: set $IDEOGRAM_KEY"));
        let (_dir, result) = load_in(
            &other_var,
            Overrides::default(),
            &[("IDEOGRAM_KEY", " k2 ")],
        );
        assert_eq!(result.unwrap().api.api_key.unwrap().expose(), "k2");
    }

    #[test]
    fn the_key_file_is_trimmed_and_wins_over_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("remixd.yaml");
        fs::write(dir.path().join("key"), "  sk-from-file \n\n").unwrap();
        fs::write(&path, format!("{FOLDERS}api:\n  api_key_file: key\n")).unwrap();
        let env = |_: &str| Some(OsString::from("sk-from-env"));
        let cfg = load_with_env(&path, Overrides::default(), &env).unwrap();
        assert_eq!(cfg.api.api_key.unwrap().expose(), "sk-from-file");

        fs::write(dir.path().join("key"), " \n").unwrap();
        let err = load_with_env(&path, Overrides::default(), &env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(": api.api_key_file: ") && err.ends_with("is empty"),
            "{err}"
        );

        fs::remove_file(dir.path().join("key")).unwrap();
        let err = load_with_env(&path, Overrides::default(), &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains(": api.api_key_file: cannot read "), "{err}");

        fs::write(dir.path().join("key"), "sk-one\nsk-two\n").unwrap();
        let err = load_with_env(&path, Overrides::default(), &env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("white space") && !err.contains("sk-one"),
            "{err}"
        );
    }

    #[test]
    fn dry_run_needs_no_key_and_no_url() {
        let dry = Overrides { dry_run: true };
        let (_dir, result) = load_in(&format!("{FOLDERS}api:\n  provider: ideogram\n"), dry, &[]);
        let api = result.unwrap().api;
        assert_eq!(
            (api.provider, api.base_url, api.api_key),
            (Provider::DryRun, None, None)
        );
        let (_dir, result) = load_in(
            &format!("{FOLDERS}api:\n  provider: dry-run\n"),
            Overrides::default(),
            &[],
        );
        assert_eq!(result.unwrap().api.provider, Provider::DryRun);
        // A written base_url is still checked, so a rehearsal catches its mistakes.
        let bad_url = format!("{FOLDERS}api:\n  base_url: http://example.com\n");
        assert!(refusal_with(&bad_url, dry, &[]).starts_with("api.base_url: "));
    }

    #[test]
    fn base_url_must_be_https_unless_loopback() {
        let cases = [
            (
                "https://proxy.example.com/ideogram/",
                Some("https://proxy.example.com/ideogram"),
            ),
            ("http://127.0.0.1:8080/", Some("http://127.0.0.1:8080")),
            ("http://127.9.9.9", Some("http://127.9.9.9")),
            ("http://[::1]:9000", Some("http://[::1]:9000")),
            ("http://LOCALHOST:9000", Some("http://LOCALHOST:9000")),
            ("http://example.com", None),
            ("http://10.0.0.1", None),
            ("ftp://example.com", None),
            ("example.com", None),
            ("https://example.com/?x=1", None),
            ("https://user:pw@example.com", None),
        ];
        for (written, expected) in cases {
            let yaml = format!("{FOLDERS}api:\n  base_url: \"{written}\"\n");
            let (_dir, result) = load_in(&yaml, Overrides::default(), KEY);
            if let Some(url) = expected {
                assert_eq!(result.unwrap().api.base_url.as_deref(), Some(url));
            } else {
                let err = result.unwrap_err().to_string();
                assert!(err.contains(": api.base_url: "), "{written}: {err}");
            }
        }
    }

    #[test]
    fn umask_is_read_as_octal() {
        for (written, mask) in [
            ("\"0027\"", 0o027),
            ("0027", 0o027),
            ("7", 0o7),
            ("27", 0o27),
            ("\"777\"", 0o777),
        ] {
            let (_dir, cfg) = load_ok(&format!("{FOLDERS}umask: {written}\n"));
            assert_eq!(cfg.umask, mask, "{written}");
        }
        for written in ["\"1000\"", "\"0089\"", "abc", "-1", "\"\"", "\"+7\""] {
            let text = refusal(&format!("{FOLDERS}umask: {written}\n"));
            assert!(
                text.starts_with("umask: invalid umask "),
                "{written}: {text}"
            );
        }
    }

    #[test]
    fn numbers_and_backoffs_are_range_checked() {
        let cases = [
            (
                "limits:\n  concurrency: 0\n",
                "limits.concurrency: must be at least 1",
            ),
            (
                "limits:\n  inflight_images: 0\n",
                "limits.inflight_images: must be at least 1",
            ),
            (
                "limits:\n  requests_per_minute: 0\n",
                "limits.requests_per_minute: must be at least 1",
            ),
            (
                "limits:\n  max_image_bytes: 0\n",
                "limits.max_image_bytes: must be at least 1",
            ),
            (
                "limits:\n  daily_image_budget: 0\n",
                "limits.daily_image_budget: must be at least 1 (or null for no cap)",
            ),
            (
                "retry:\n  max_attempts: 0\n",
                "retry.max_attempts: must be at least 1",
            ),
            (
                "retry:\n  initial_backoff: 10m\n",
                "retry.initial_backoff: 10m is longer than retry.max_backoff (5m)",
            ),
            (
                "watch:\n  poll_interval: 0ms\n",
                "watch.poll_interval: must be longer than 0s",
            ),
        ];
        for (yaml, expected) in cases {
            assert_eq!(refusal(&format!("{FOLDERS}{yaml}")), expected);
        }
    }

    #[test]
    fn layout_accepts_only_known_placeholders_inside_the_outbox() {
        let (_dir, cfg) = load_ok(&format!(
            "{FOLDERS}output:\n  layout: \"{{date}}/{{stem}}.{{ext}}-{{job_id}}\"\n"
        ));
        assert_eq!(cfg.layout, "{date}/{stem}.{ext}-{job_id}");
        for bad in [
            "{subdir}/{stem}-{jobid}",
            "/srv/{job_id}",
            "{subdir}/../{job_id}",
            "{job_id",
            "a}b",
            "",
        ] {
            let text = refusal(&format!("{FOLDERS}output:\n  layout: \"{bad}\"\n"));
            assert!(text.starts_with("output.layout: "), "{bad}: {text}");
        }
    }

    #[test]
    fn logging_level_accepts_levels_and_filters_but_not_typos() {
        for (written, level) in [("WARN", "warn"), ("info,remixd=debug", "info,remixd=debug")] {
            let (_dir, cfg) = load_ok(&format!("{FOLDERS}logging:\n  level: \"{written}\"\n"));
            assert_eq!(cfg.logging.level, level);
        }
        for bad in ["verbose", "remixd=loud"] {
            let text = refusal(&format!("{FOLDERS}logging:\n  level: \"{bad}\"\n"));
            assert!(
                text.starts_with("logging.level: unknown level"),
                "{bad}: {text}"
            );
        }
    }

    #[test]
    fn folders_that_would_feed_each_other_are_refused() {
        let text = refusal("inbox: in\noutbox: in/done\nquarantine: q\n");
        assert!(
            text.starts_with("outbox: ") && text.contains("is inside the inbox"),
            "{text}"
        );
        assert!(refusal("inbox: in\noutbox: out\nquarantine: out\n").starts_with("quarantine: "));
        assert!(refusal(&format!("{FOLDERS}work_dir: in/work\n")).starts_with("work_dir: "));
        let (_dir, cfg) = load_ok("inbox: in\noutbox: in/.done\nquarantine: q\n");
        assert!(cfg.outbox.ends_with("in/.done"));
    }

    #[test]
    fn prepare_folders_creates_them_with_the_umask() {
        let (dir, cfg) = load_ok("inbox: a/in\noutbox: out\nquarantine: q\numask: \"0027\"\n");
        fs::create_dir(dir.path().join("q")).unwrap();
        fs::set_permissions(dir.path().join("q"), fs::Permissions::from_mode(0o700)).unwrap();
        cfg.prepare_folders().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        for created in [
            &cfg.inbox,
            &cfg.outbox,
            &cfg.work_dir,
            &dir.path().join("a"),
        ] {
            assert_eq!(mode(created), 0o750, "{}", created.display());
        }
        assert_eq!(
            mode(&cfg.quarantine),
            0o700,
            "an existing folder keeps its mode"
        );
        // Again: everything exists now.
        cfg.prepare_folders().unwrap();
    }

    #[test]
    fn prepare_folders_names_the_folder_it_cannot_create() {
        let (dir, cfg) = load_ok(FOLDERS);
        fs::write(dir.path().join("out"), "a file").unwrap();
        let err = cfg.prepare_folders().unwrap_err().to_string();
        assert!(
            err.contains(": outbox: ") && err.ends_with("exists but is not a folder"),
            "{err}"
        );
    }

    #[test]
    fn prepare_folders_refuses_a_work_dir_on_another_filesystem() {
        let shm = Path::new("/dev/shm");
        let (dir, _) = load_ok(FOLDERS);
        let temp_dev = fs::metadata(dir.path()).unwrap().dev();
        let Ok(shm_meta) = fs::metadata(shm) else {
            return;
        };
        if shm_meta.dev() == temp_dev {
            return; // Nothing to test on this machine: both are one filesystem.
        }
        let work = shm.join(format!("remixd-test-{}", std::process::id()));
        let (_dir, cfg) = load_ok(&format!("{FOLDERS}work_dir: {}\n", work.display()));
        let err = cfg.prepare_folders().unwrap_err().to_string();
        assert!(
            err.contains(": work_dir: ") && err.contains("not on the inbox's filesystem"),
            "{err}"
        );
        assert!(
            !work.exists(),
            "the misplaced work area must not be created"
        );
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let (_dir, cfg) = load_ok(FOLDERS);
        let shown = format!("{cfg:?} {cfg:#?}");
        assert!(!shown.contains("sk-test-4242"));
        assert!(shown.contains("***"));
    }

    #[test]
    fn changed_keys_names_what_differs() {
        let (_dir, old) = load_ok(FOLDERS);
        assert!(changed_keys(&old, &old.clone()).is_empty());
        let mut new = old.clone();
        new.watch.settle = secs(3);
        new.api.api_key = Some(ApiKey::new("sk-rotated".into()));
        new.defaults.rendering_speed = Some("TURBO".into());
        new.layout = "{job_id}".into();
        assert_eq!(
            changed_keys(&old, &new),
            [
                "api.api_key",
                "defaults.rendering_speed",
                "watch.settle",
                "output.layout"
            ]
        );
    }

    #[test]
    fn config_path_comes_from_flag_then_variable_then_default() {
        let flag = Path::new("/tmp/flag.yaml");
        let var = || Some(OsString::from("/tmp/var.yaml"));
        assert_eq!(config_path_from(Some(flag), var()), flag);
        assert_eq!(config_path_from(None, var()), Path::new("/tmp/var.yaml"));
        assert_eq!(
            config_path_from(None, Some(OsString::new())),
            Path::new(DEFAULT_CONFIG_PATH)
        );
        assert_eq!(config_path_from(None, None), Path::new(DEFAULT_CONFIG_PATH));
    }

    fn example_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml")
    }

    #[test]
    fn the_example_config_shows_the_defaults() {
        let path = example_path();
        let text = fs::read_to_string(&path).unwrap();
        let mut example = parse(&text, &path).unwrap();
        // The remix defaults are the sidecar module's to read; the rest must match.
        example.defaults = None;
        let minimal = parse(FOLDERS, &path).unwrap();
        let dry = Overrides { dry_run: true };
        let mut from_example = resolve(example, &path, dry, &|_| None).unwrap();
        let from_minimal = resolve(minimal, &path, dry, &|_| None).unwrap();
        from_example.inbox = from_minimal.inbox.clone();
        from_example.outbox = from_minimal.outbox.clone();
        from_example.quarantine = from_minimal.quarantine.clone();
        from_example.work_dir = from_minimal.work_dir.clone();
        assert_eq!(
            changed_keys(&from_minimal, &from_example),
            Vec::<String>::new()
        );
    }

    #[test]

    fn the_example_config_loads() {
        let cfg = load(&example_path(), Overrides { dry_run: true }).unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        assert_eq!(cfg.inbox, root.join("example/inbox"));
        assert_eq!(cfg.work_dir, root.join("example/inbox/.remixd"));
        assert_eq!(cfg.api.provider, Provider::DryRun);
        assert_eq!(cfg.defaults.num_images, Some(1));
        assert_eq!(cfg.defaults.aspect_ratio, Some(AspectRatio::Auto));
        assert_eq!(cfg.watch.settle, secs(1));
    }

    #[test]

    fn config_defaults_lie_over_the_builtin_ones() {
        let (_dir, cfg) = load_ok(&format!(
            "{FOLDERS}defaults:\n  prompt: a watercolour\n  num_images: 2\n"
        ));
        assert_eq!(cfg.defaults.prompt.as_deref(), Some("a watercolour"));
        assert_eq!(cfg.defaults.num_images, Some(2));
        assert_eq!(cfg.defaults.rendering_speed.as_deref(), Some("DEFAULT"));
        let text = refusal(&format!("{FOLDERS}defaults:\n  num_image: 2\n"));
        assert!(text.starts_with("defaults: "), "{text}");
    }

    #[test]
    fn load_all_reports_every_problem_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        fs::write(
            &path,
            "inbox: in\noutbox: out\nquarantine: q\nwatch:\n  setle: 1s\nlimits:\n  concurrency: 0\nretry:\n  max_attempts: x\n",
        )
        .expect("write");
        // Keys and types are checked first, all of them; values in range after that.
        let all = load_all_with_env(&path, Overrides { dry_run: true }, &|_| None)
            .expect_err("two key problems");
        let text: Vec<String> = all.iter().map(ToString::to_string).collect();
        assert_eq!(all.len(), 2, "{text:?}");
        assert!(text.iter().any(|t| t.contains("watch.setle")), "{text:?}");
        assert!(
            text.iter().any(|t| t.contains("retry.max_attempts")),
            "{text:?}"
        );
        fs::write(
            &path,
            "inbox: in\noutbox: out\nquarantine: q\nlimits:\n  concurrency: 0\nlease: 0s\napi:\n  base_url: http://example.com\n",
        )
        .expect("write");
        let all = load_all_with_env(&path, Overrides { dry_run: true }, &|_| None)
            .expect_err("three value problems");
        let text: Vec<String> = all.iter().map(ToString::to_string).collect();
        assert_eq!(all.len(), 3, "{text:?}");
        for key in ["limits.concurrency", "lease", "api.base_url"] {
            assert!(
                text.iter().any(|t| t.contains(&format!(": {key}:"))),
                "{key}: {text:?}"
            );
        }
    }
}
