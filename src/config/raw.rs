//! What the YAML says: the raw sections with every key optional, checked key by key so an
//! unknown key or a bad value is reported under its own dotted name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer};
use serde_yaml::{Mapping, Value};

use super::ConfigError;

/// The YAML as written. Enum-like values stay text so that resolving can name the key and
/// list the allowed values.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) inbox: Option<PathBuf>,
    pub(super) outbox: Option<PathBuf>,
    pub(super) quarantine: Option<PathBuf>,
    pub(super) work_dir: Option<PathBuf>,
    pub(super) api: Option<RawApi>,
    pub(super) defaults: Option<Value>,
    pub(super) watch: Option<RawWatch>,
    pub(super) limits: Option<RawLimits>,
    pub(super) retry: Option<RawRetry>,
    pub(super) pricing: Option<RawPricing>,
    pub(super) output: Option<RawOutput>,
    pub(super) logging: Option<RawLogging>,
    pub(super) metrics: Option<RawMetrics>,
    #[serde(deserialize_with = "duration")]
    pub(super) shutdown_grace: Option<Duration>,
    #[serde(deserialize_with = "umask")]
    pub(super) umask: Option<u32>,
    #[serde(deserialize_with = "duration")]
    pub(super) lease: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawApi {
    pub(super) provider: Option<String>,
    pub(super) base_url: Option<String>,
    pub(super) api_key_file: Option<PathBuf>,
    pub(super) api_key_env: Option<String>,
    #[serde(deserialize_with = "duration")]
    pub(super) request_timeout: Option<Duration>,
    #[serde(deserialize_with = "duration")]
    pub(super) connect_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawWatch {
    pub(super) mode: Option<String>,
    #[serde(deserialize_with = "duration")]
    pub(super) poll_interval: Option<Duration>,
    #[serde(deserialize_with = "duration")]
    pub(super) rescan_interval: Option<Duration>,
    #[serde(deserialize_with = "duration")]
    pub(super) settle: Option<Duration>,
    #[serde(deserialize_with = "duration")]
    pub(super) sidecar_wait: Option<Duration>,
    #[serde(deserialize_with = "duration")]
    pub(super) orphan_after: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_image_bytes: Option<u64>,
    pub(super) concurrency: Option<usize>,
    pub(super) inflight_images: Option<u32>,
    pub(super) requests_per_minute: Option<u32>,
    pub(super) daily_image_budget: Option<u64>,
    pub(super) daily_spend_budget_usd: Option<f64>,
    pub(super) scope: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawRetry {
    pub(super) max_attempts: Option<u32>,
    #[serde(deserialize_with = "duration")]
    pub(super) initial_backoff: Option<Duration>,
    #[serde(deserialize_with = "duration")]
    pub(super) max_backoff: Option<Duration>,
    pub(super) resend_after_timeout: Option<bool>,
}

/// `pricing:` as written: USD per output image by rendering speed.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawPricing {
    #[serde(rename = "FLASH")]
    pub(super) flash: Option<f64>,
    #[serde(rename = "TURBO")]
    pub(super) turbo: Option<f64>,
    #[serde(rename = "DEFAULT")]
    pub(super) default: Option<f64>,
    #[serde(rename = "QUALITY")]
    pub(super) quality: Option<f64>,
    pub(super) character_reference: Option<RawSpeedPrices>,
}

/// `pricing.character_reference:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawSpeedPrices {
    #[serde(rename = "FLASH")]
    pub(super) flash: Option<f64>,
    #[serde(rename = "TURBO")]
    pub(super) turbo: Option<f64>,
    #[serde(rename = "DEFAULT")]
    pub(super) default: Option<f64>,
    #[serde(rename = "QUALITY")]
    pub(super) quality: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawOutput {
    pub(super) layout: Option<String>,
    pub(super) gallery: Option<bool>,
    #[serde(deserialize_with = "duration")]
    pub(super) gallery_delay: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) textfile: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawLogging {
    pub(super) format: Option<String>,
    pub(super) level: Option<String>,
    #[serde(deserialize_with = "duration")]
    pub(super) stats_interval: Option<Duration>,
}

/// A duration written like `500ms`, `2s`, `5m`; null means "the default".
pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
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
pub(super) fn umask<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
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
pub(super) fn describe(value: &Value) -> String {
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
pub(super) struct Problem {
    pub(super) key: String,
    pub(super) text: String,
}

impl Problem {
    pub(super) fn into_error(self, path: &Path) -> ConfigError {
        ConfigError::Key {
            path: path.to_path_buf(),
            key: self.key,
            problem: one_line(&self.text),
        }
    }
}

pub(super) fn problem(key: &str, text: impl Into<String>) -> Problem {
    Problem {
        key: key.to_owned(),
        text: text.into(),
    }
}

/// The promise is one line per refusal, whatever a parser put in its message.
pub(super) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(super) fn parse(text: &str, path: &Path) -> Result<RawConfig, Vec<ConfigError>> {
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

pub(super) type SectionCheck = fn(&Value, &str, &mut Vec<Problem>);

/// The top-level keys that hold a mapping of their own keys. `defaults` is not here: the
/// sidecar module checks remix fields.
pub(super) const SECTIONS: &[(&str, SectionCheck)] = &[
    ("api", check_section::<RawApi>),
    ("watch", check_section::<RawWatch>),
    ("limits", check_section::<RawLimits>),
    ("retry", check_section::<RawRetry>),
    ("pricing", check_pricing),
    ("output", check_section::<RawOutput>),
    ("logging", check_section::<RawLogging>),
];

fn check_pricing(value: &Value, key: &str, out: &mut Vec<Problem>) {
    let nested: &[(&str, SectionCheck)] =
        &[("character_reference", check_section::<RawSpeedPrices>)];
    check_keys::<RawPricing>(value, key, nested, out);
}

pub(super) fn check_section<T: DeserializeOwned>(value: &Value, key: &str, out: &mut Vec<Problem>) {
    check_keys::<T>(value, key, &[], out);
}

/// Checks a mapping key by key, so an unknown key or bad value is reported under its own
/// dotted name rather than serde's view of the whole struct.
pub(super) fn check_keys<T: DeserializeOwned>(
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
pub(super) fn friendly(message: &str) -> String {
    [
        ("expected usize", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected path string", "expected a folder or file path"),
        ("expected a string", "expected text"),
    ]
    .iter()
    .fold(message.to_owned(), |text, (rust, plain)| {
        text.replace(rust, plain)
    })
}

pub(super) fn dotted(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The key names serde's derive gave `T`, so the list of allowed keys has one source: the
/// struct. Asking `T` to deserialize itself from [`FieldNames`] hands them over.
pub(super) fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    match T::deserialize(FieldNames) {
        Err(NamesFound(Some(names))) => names,
        _ => &[],
    }
}

pub(super) struct FieldNames;

#[derive(Debug)]
pub(super) struct NamesFound(Option<&'static [&'static str]>);

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
