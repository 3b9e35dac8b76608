//! From the raw sections to the [`Config`] the daemon uses: paths resolved, provider defaults
//! filled in, the key read, every value and cross-field rule checked.

use std::fs;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde_yaml::Value;

use super::raw::{
    Problem, RawApi, RawConfig, RawLimits, RawLogging, RawPricing, RawRetry, RawWatch, problem,
};
use super::{
    ApiConfig, ApiKey, Config, EnvLookup, LimitScope, Limits, LogFormat, LoggingConfig, Overrides,
    Pricing, Provider, RetryConfig, SpeedPrices, WatchConfig, WatchMode,
};
use crate::sidecar::{self, AspectRatio, Fields};

pub(super) const KEY_FILE: &str = "api.api_key_file";
pub(super) const KEY_ENV: &str = "api.api_key_env";
pub(super) const DEFAULT_KEY_ENV: &str = "REMIXD_API_KEY";
pub(super) const DEFAULT_LAYOUT: &str = "{subdir}/{stem}-{job_id}";
pub(super) const PLACEHOLDERS: &[&str] = &["subdir", "stem", "job_id", "date", "ext"];
pub(super) const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

pub(super) const PROVIDERS: &[(&str, Provider)] = &[
    ("kkiai", Provider::Kkiai),
    ("ideogram", Provider::Ideogram),
    ("dry-run", Provider::DryRun),
];
pub(super) const SCOPES: &[(&str, LimitScope)] = &[
    ("account", LimitScope::Account),
    ("process", LimitScope::Process),
];
pub(super) const WATCH_MODES: &[(&str, WatchMode)] = &[
    ("auto", WatchMode::Auto),
    ("native", WatchMode::Native),
    ("poll", WatchMode::Poll),
];
pub(super) const LOG_FORMATS: &[(&str, LogFormat)] = &[
    ("auto", LogFormat::Auto),
    ("json", LogFormat::Json),
    ("pretty", LogFormat::Pretty),
];

pub(super) const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The value of `result`, or `None` with its problem noted.
pub(super) fn keep<T>(problems: &mut Vec<Problem>, result: Result<T, Problem>) -> Option<T> {
    result.map_err(|p| problems.push(p)).ok()
}

/// Resolves every section, collecting every problem rather than stopping at the first.
pub(super) fn resolve(
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
    let max_image_bytes = api
        .as_ref()
        .map_or(Provider::Kkiai, |a| a.provider)
        .max_image_bytes();
    let limits = keep(
        &mut problems,
        resolve_limits(&raw.limits.unwrap_or_default(), max_image_bytes),
    );
    let retry = keep(&mut problems, resolve_retry(&raw.retry.unwrap_or_default()));
    let pricing = keep(
        &mut problems,
        resolve_pricing(&raw.pricing.unwrap_or_default()),
    );
    let logging = keep(
        &mut problems,
        resolve_logging(&raw.logging.unwrap_or_default()),
    );
    let lease = keep(&mut problems, positive("lease", raw.lease, secs(60)));
    let metrics_textfile = match raw.metrics.and_then(|m| m.textfile) {
        Some(p) if p.as_os_str().is_empty() => {
            problems.push(problem(
                "metrics.textfile",
                "is empty (write a file path, e.g. /var/lib/prometheus/node-exporter/remixd.prom, or null)",
            ));
            None
        }
        Some(p) => Some(Some(normalize(&base.join(p)))),
        None => Some(None),
    };
    let (
        Some(folders),
        Some(()),
        Some(api),
        Some(defaults),
        Some(watch),
        Some(limits),
        Some(retry),
        Some(pricing),
        Some(logging),
        Some(lease),
        Some(metrics_textfile),
    ) = (
        folders,
        layout_ok,
        api,
        defaults,
        watch,
        limits,
        retry,
        pricing,
        logging,
        lease,
        metrics_textfile,
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
        pricing,
        layout,
        gallery: output.gallery.unwrap_or(true),
        gallery_delay: output.gallery_delay.unwrap_or(secs(5)),
        logging,
        metrics_textfile,
        shutdown_grace: raw.shutdown_grace.unwrap_or(secs(30)),
        umask: raw.umask.unwrap_or(0o007),
        lease,
    })
}

pub(super) struct Folders {
    pub(super) inbox: PathBuf,
    pub(super) outbox: PathBuf,
    pub(super) quarantine: PathBuf,
    pub(super) work_dir: PathBuf,
}

pub(super) fn resolve_folders(raw: &RawConfig, base: &Path) -> Result<Folders, Problem> {
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

pub(super) fn folder(key: &str, path: &Path, base: &Path) -> Result<PathBuf, Problem> {
    if path.as_os_str().is_empty() {
        return Err(problem(key, "is empty (write a folder path)"));
    }
    Ok(normalize(&base.join(path)))
}

/// Removes `.` and `..` without touching the disk, so two spellings of one folder compare
/// equal.
pub(super) fn normalize(path: &Path) -> PathBuf {
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
pub(super) fn check_overlap(f: &Folders) -> Result<(), Problem> {
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

pub(super) fn resolve_api(
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

pub(super) const KKIAI_URL: &str = "https://www.kkiai.com/ideogram";
pub(super) const IDEOGRAM_URL: &str = "https://api.ideogram.ai";

/// An http(s) base URL without its trailing slash; plain http only for this host, since the
/// key travels in a header.
pub(super) fn check_base_url(written: &str) -> Result<String, String> {
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

pub(super) fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The key from `api.api_key_file`, else from the variable `api.api_key_env` names, with
/// where it came from (never the key itself) for messages.
pub(super) fn read_key(
    raw: &RawApi,
    base: &Path,
    env: &EnvLookup,
) -> Result<(ApiKey, String), Problem> {
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
pub(super) fn checked_key(key_name: &str, key: &str, source: &str) -> Result<ApiKey, Problem> {
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

pub(super) fn resolve_defaults(section: Option<&Value>) -> Result<Fields, Problem> {
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

pub(super) fn resolve_watch(raw: &RawWatch) -> Result<WatchConfig, Problem> {
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

/// `provider_max` is the provider's own image limit, the default of `max_image_bytes`.
pub(super) fn resolve_limits(raw: &RawLimits, provider_max: u64) -> Result<Limits, Problem> {
    if raw.daily_image_budget == Some(0) {
        return Err(problem(
            "limits.daily_image_budget",
            "must be at least 1 (or null for no cap)",
        ));
    }
    Ok(Limits {
        max_image_bytes: at_least_one("limits.max_image_bytes", raw.max_image_bytes, provider_max)?,
        concurrency: at_least_one("limits.concurrency", raw.concurrency, 4)?,
        inflight_images: at_least_one("limits.inflight_images", raw.inflight_images, 10)?,
        requests_per_minute: at_least_one(
            "limits.requests_per_minute",
            raw.requests_per_minute,
            60,
        )?,
        daily_image_budget: raw.daily_image_budget,
        daily_spend_budget_usd: spend_budget(raw.daily_spend_budget_usd)?,
        scope: choose(
            "limits.scope",
            raw.scope.as_deref(),
            SCOPES,
            LimitScope::Account,
        )?,
    })
}

fn spend_budget(written: Option<f64>) -> Result<Option<f64>, Problem> {
    match written {
        Some(usd) if !(usd.is_finite() && usd > 0.0) => Err(problem(
            "limits.daily_spend_budget_usd",
            "must be more than 0 (or null for no cap)",
        )),
        other => Ok(other),
    }
}

/// The published prices (USD per output image, Ideogram 3.0, 2025-08).
pub const PUBLISHED_PRICES: Pricing = Pricing {
    plain: SpeedPrices {
        flash: 0.03,
        turbo: 0.03,
        default: 0.06,
        quality: 0.09,
    },
    // No character-reference price is published for FLASH; TURBO's is the nearest.
    character_reference: SpeedPrices {
        flash: 0.10,
        turbo: 0.10,
        default: 0.15,
        quality: 0.20,
    },
};

pub(super) fn resolve_pricing(raw: &RawPricing) -> Result<Pricing, Problem> {
    let plain = speed_prices(
        "pricing",
        [raw.flash, raw.turbo, raw.default, raw.quality],
        PUBLISHED_PRICES.plain,
    )?;
    let character =
        raw.character_reference
            .as_ref()
            .map_or(Ok(PUBLISHED_PRICES.character_reference), |c| {
                speed_prices(
                    "pricing.character_reference",
                    [c.flash, c.turbo, c.default, c.quality],
                    PUBLISHED_PRICES.character_reference,
                )
            })?;
    Ok(Pricing {
        plain,
        character_reference: character,
    })
}

fn speed_prices(
    section: &str,
    written: [Option<f64>; 4],
    default: SpeedPrices,
) -> Result<SpeedPrices, Problem> {
    let defaults = [
        default.flash,
        default.turbo,
        default.default,
        default.quality,
    ];
    let names = ["FLASH", "TURBO", "DEFAULT", "QUALITY"];
    let mut out = [0.0; 4];
    for (i, price) in written.iter().enumerate() {
        out[i] = match price {
            Some(usd) if !(usd.is_finite() && *usd >= 0.0) => {
                return Err(problem(
                    &format!("{section}.{}", names[i]),
                    "must be a price in USD of 0 or more",
                ));
            }
            Some(usd) => *usd,
            None => defaults[i],
        };
    }
    Ok(SpeedPrices {
        flash: out[0],
        turbo: out[1],
        default: out[2],
        quality: out[3],
    })
}

pub(super) fn resolve_retry(raw: &RawRetry) -> Result<RetryConfig, Problem> {
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
        resend_after_timeout: raw.resend_after_timeout.unwrap_or(true),
    })
}

pub(super) fn resolve_logging(raw: &RawLogging) -> Result<LoggingConfig, Problem> {
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
pub(super) fn check_level(written: &str) -> Result<String, String> {
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
pub(super) fn check_layout(layout: &str) -> Result<(), String> {
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

pub(super) fn choose<T: Copy>(
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

pub(super) fn positive(
    key: &str,
    written: Option<Duration>,
    default: Duration,
) -> Result<Duration, Problem> {
    match written {
        Some(d) if d.is_zero() => Err(problem(key, "must be longer than 0s")),
        Some(d) => Ok(d),
        None => Ok(default),
    }
}

pub(super) fn at_least_one<T: PartialOrd + From<u8>>(
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
