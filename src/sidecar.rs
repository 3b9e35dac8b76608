//! Sidecars and `_defaults.yaml`: parsing, layering and validation of the remix fields, and
//! turning them into the form fields of one request. Finding the files is the inbox's job;
//! sending them is the API client's.
//!
//! Every input, YAML, JSON or the config's `defaults:`, is first read into a bounded
//! `serde_json::Value` (depth, node count and text size capped, so alias bombs and deep
//! nesting are refused while parsing) and then checked field by field by hand, so each error
//! names the field and the problem.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::image_info::{ASPECT_RATIOS, ImageInfo, nearest_aspect_ratio};

/// Largest sidecar or `_defaults.yaml` accepted, in bytes.
pub const MAX_SIDECAR_BYTES: usize = 64 * 1024;

/// How a sidecar is written, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidecarKind {
    /// `.txt`: the whole file is the prompt.
    Text,
    /// `.yaml` or `.yml`.
    Yaml,
    /// `.json`.
    Json,
}

impl SidecarKind {
    /// The kind for a file extension (any case), if it is a sidecar extension.
    #[must_use]
    pub fn from_ext(ext: &str) -> Option<Self> {
        match ext.to_ascii_lowercase().as_str() {
            "txt" => Some(Self::Text),
            "yaml" | "yml" => Some(Self::Yaml),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// `aspect_ratio` as written: `auto` or one of the supported ratios.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AspectRatio {
    /// The supported ratio nearest the source image's own.
    Auto,
    /// A ratio from [`crate::image_info::ASPECT_RATIOS`].
    Fixed(String),
}

/// The remix fields one layer (config `defaults`, a `_defaults.yaml`, a sidecar) sets.
/// Every field is optional; `None` means "this layer is silent".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields {
    /// `prompt`.
    pub prompt: Option<String>,
    /// `negative_prompt`.
    pub negative_prompt: Option<String>,
    /// `num_images`, 1–8.
    pub num_images: Option<u8>,
    /// `rendering_speed`, upper-case.
    pub rendering_speed: Option<String>,
    /// `image_weight`, 1–100.
    pub image_weight: Option<u8>,
    /// `seed`, 0–2147483647.
    pub seed: Option<u32>,
    /// `resolution`, e.g. `1024x1024`.
    pub resolution: Option<String>,
    /// `aspect_ratio`.
    pub aspect_ratio: Option<AspectRatio>,
    /// `magic_prompt`, upper-case.
    pub magic_prompt: Option<String>,
    /// `style_type`, upper-case.
    pub style_type: Option<String>,
    /// `style_preset`, upper-case.
    pub style_preset: Option<String>,
    /// `style_codes`, 8 hex digits each.
    pub style_codes: Option<Vec<String>>,
    /// `color_palette`, as JSON.
    pub color_palette: Option<serde_json::Value>,
    /// New API fields passed through untouched.
    pub extra_fields: BTreeMap<String, serde_json::Value>,
}

/// Why a sidecar or defaults file was refused. The text names the field and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SidecarError(pub String);

/// Why no request could be built from the merged fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No layer gave a prompt.
    #[error(
        "no prompt: write one in a sidecar next to the image, in _defaults.yaml, or in the config's defaults"
    )]
    MissingPrompt,
    /// The merged fields break a rule (exclusive pair, range).
    #[error("{0}")]
    Invalid(String),
}

/// The form fields of one remix request, in the order they are sent, minus the image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemixRequest {
    /// `(form name, value)` pairs exactly as sent.
    pub fields: Vec<(String, String)>,
    /// How many images this request asks for.
    pub num_images: u8,
}

/// Deepest nesting of lists and maps accepted; real sidecars use two or three levels.
const MAX_DEPTH: usize = 32;

/// Most values (scalars, lists, maps) one document may hold once YAML aliases are expanded.
/// A 64 KiB file cannot spell out more than this without aliases.
const MAX_NODES: usize = 64 * 1024;

/// Most text one document may hold once YAML aliases are expanded. Escapes such as `\L` can
/// make text a little longer than the file, never four times longer.
const MAX_TEXT_BYTES: usize = 4 * MAX_SIDECAR_BYTES;

/// The keys a YAML/JSON sidecar may use, in the order they are sent.
const KEYS: [&str; 14] = [
    "prompt",
    "negative_prompt",
    "num_images",
    "rendering_speed",
    "image_weight",
    "seed",
    "resolution",
    "aspect_ratio",
    "magic_prompt",
    "style_type",
    "style_preset",
    "style_codes",
    "color_palette",
    "extra_fields",
];

const RENDERING_SPEEDS: [&str; 4] = ["FLASH", "TURBO", "DEFAULT", "QUALITY"];
const MAGIC_PROMPTS: [&str; 3] = ["AUTO", "ON", "OFF"];
const STYLE_TYPES: [&str; 5] = ["AUTO", "GENERAL", "REALISTIC", "DESIGN", "FICTION"];

/// Parses a sidecar's bytes.
///
/// # Errors
/// A [`SidecarError`] naming the problem when it is over 64 KiB, not UTF-8, not valid
/// YAML/JSON, has an unknown key or a bad value.
pub fn parse(bytes: &[u8], kind: SidecarKind) -> Result<Fields, SidecarError> {
    if bytes.len() > MAX_SIDECAR_BYTES {
        return Err(SidecarError(format!(
            "the file is {} bytes, over the {MAX_SIDECAR_BYTES}-byte (64 KiB) limit",
            bytes.len()
        )));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        SidecarError(format!(
            "the file is not UTF-8 text (invalid bytes at offset {}); save it as UTF-8",
            e.valid_up_to()
        ))
    })?;
    // Windows editors like to start UTF-8 files with a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Ok(Fields::default());
    }
    match kind {
        SidecarKind::Text => Ok(Fields {
            prompt: Some(text.trim().to_owned()),
            ..Fields::default()
        }),
        SidecarKind::Yaml => fields_from_value(read_yaml(text)?),
        SidecarKind::Json => fields_from_value(read_json(text)?),
    }
}

/// Reads fields from an already-parsed YAML value (the config's `defaults:` section).
///
/// # Errors
/// As [`parse`], for an unknown key or a bad value.
pub fn from_yaml_value(value: &serde_yaml::Value) -> Result<Fields, SidecarError> {
    let limits = Limits::default();
    let bounded = Bounded::new(&limits)
        .deserialize(value)
        .map_err(|e| SidecarError(e.to_string()))?;
    fields_from_value(bounded)
}

/// The sidecar names to look for beside `image_file_name`, strongest first:
/// `NAME.EXT.{yaml,yml,json,txt}`, then `STEM.{yaml,yml,json,txt}`.
#[must_use]
pub fn sidecar_candidates(image_file_name: &str) -> Vec<String> {
    const EXTS: [&str; 4] = ["yaml", "yml", "json", "txt"];
    let mut names: Vec<String> = EXTS
        .iter()
        .map(|ext| format!("{image_file_name}.{ext}"))
        .collect();
    if let Some((stem, _)) = image_file_name.rsplit_once('.') {
        if !stem.is_empty() {
            names.extend(EXTS.iter().map(|ext| format!("{stem}.{ext}")));
        }
    }
    names
}

fn read_yaml(text: &str) -> Result<Value, SidecarError> {
    let limits = Limits::default();
    Bounded::new(&limits)
        .deserialize(serde_yaml::Deserializer::from_str(text))
        .map_err(|e| SidecarError(format!("bad YAML: {e}")))
}

fn read_json(text: &str) -> Result<Value, SidecarError> {
    let limits = Limits::default();
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Bounded::new(&limits)
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| SidecarError(format!("bad JSON: {e}")))?;
    Ok(value)
}

/// What one document has used up so far while being read.
#[derive(Default)]
struct Limits {
    nodes: Cell<usize>,
    text_bytes: Cell<usize>,
}

/// Reads any YAML or JSON value into a `serde_json::Value`, refusing, while reading, what
/// would take unbounded memory: YAML aliases are replayed by the parser, so a "billion laughs"
/// document only stops when this budget says so.
#[derive(Clone, Copy)]
struct Bounded<'a> {
    limits: &'a Limits,
    depth: usize,
}

impl<'a> Bounded<'a> {
    fn new(limits: &'a Limits) -> Self {
        Self { limits, depth: 0 }
    }

    fn count<E: de::Error>(self) -> Result<(), E> {
        let nodes = self.limits.nodes.get() + 1;
        if nodes > MAX_NODES {
            return Err(E::custom(format!(
                "the document holds more than {MAX_NODES} values (after expanding aliases)"
            )));
        }
        self.limits.nodes.set(nodes);
        Ok(())
    }

    fn text<E: de::Error>(self, s: &str) -> Result<Value, E> {
        self.count()?;
        if s.len() > MAX_SIDECAR_BYTES {
            return Err(E::custom("a text value is longer than 64 KiB"));
        }
        let total = self.limits.text_bytes.get() + s.len();
        if total > MAX_TEXT_BYTES {
            return Err(E::custom(format!(
                "the document holds more than {MAX_TEXT_BYTES} bytes of text (after expanding aliases)"
            )));
        }
        self.limits.text_bytes.set(total);
        Ok(Value::String(s.to_owned()))
    }

    fn nested<E: de::Error>(self) -> Result<Self, E> {
        self.count()?;
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format!(
                "lists and maps are nested deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(Self {
            depth: self.depth + 1,
            ..self
        })
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML or JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::from(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        // Beyond 64 bits only range errors can follow; the text keeps the number readable.
        self.text(&v.to_string())
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        self.text(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.count()?;
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("{v} is not a usable number")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.text(v)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(inner)? {
            let Value::String(key) = key else {
                return Err(de::Error::custom(format!(
                    "a map key must be text, found {}",
                    kind_of(&key)
                )));
            };
            let value = map.next_value_seed(inner)?;
            if out.insert(key.clone(), value).is_some() {
                return Err(de::Error::custom(format!("key \"{key}\" appears twice")));
            }
        }
        Ok(Value::Object(out))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<Value, A::Error> {
        Err(de::Error::custom(
            "YAML tags (`!name`) are not supported; remove the tag",
        ))
    }
}

/// Checks a whole document: nothing at all, or a map of known fields.
fn fields_from_value(value: Value) -> Result<Fields, SidecarError> {
    let map = match value {
        Value::Null => return Ok(Fields::default()),
        Value::Object(map) => map,
        other => {
            return Err(SidecarError(format!(
                "expected a map of fields such as `prompt: ...`, found {}",
                kind_of(&other)
            )));
        }
    };
    let mut fields = Fields::default();
    for (key, value) in map {
        // A key with no value (`seed:` or `null`) leaves the field to weaker layers.
        if !value.is_null() {
            set_field(&mut fields, &key, value)?;
        }
    }
    Ok(fields)
}

fn set_field(f: &mut Fields, key: &str, v: Value) -> Result<(), SidecarError> {
    match key {
        "prompt" => f.prompt = Some(text(key, v)?.trim().to_owned()),
        "negative_prompt" => f.negative_prompt = Some(text(key, v)?.trim().to_owned()),
        "num_images" => f.num_images = Some(whole(key, &v, 1, 8)?),
        "rendering_speed" => f.rendering_speed = Some(choice(key, v, &RENDERING_SPEEDS)?),
        "image_weight" => f.image_weight = Some(whole(key, &v, 1, 100)?),
        "seed" => f.seed = Some(whole(key, &v, 0, 2_147_483_647)?),
        "resolution" => f.resolution = Some(resolution(key, v)?),
        "aspect_ratio" => f.aspect_ratio = Some(aspect_ratio(key, v)?),
        "magic_prompt" => f.magic_prompt = Some(magic_prompt(key, v)?),
        "style_type" => f.style_type = Some(choice(key, v, &STYLE_TYPES)?),
        "style_preset" => f.style_preset = Some(style_preset(key, v)?),
        "style_codes" => f.style_codes = Some(style_codes(key, v)?),
        "color_palette" => f.color_palette = Some(color_palette(key, v)?),
        "extra_fields" => f.extra_fields = extra_fields(key, v)?,
        _ => {
            return Err(SidecarError(format!(
                "unknown key \"{key}\"; the keys are: {}",
                KEYS.join(", ")
            )));
        }
    }
    Ok(())
}

fn field_error(key: &str, problem: impl fmt::Display) -> SidecarError {
    SidecarError(format!("{key}: {problem}"))
}

/// A short name for a value's kind, for "expected X, found Y" messages.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// A user's value cut short so a message stays one readable line.
fn cut(s: &str) -> String {
    const MAX_CHARS: usize = 40;
    if s.chars().count() > MAX_CHARS {
        s.chars().take(MAX_CHARS).chain(['…']).collect()
    } else {
        s.to_owned()
    }
}

/// A user's text quoted for a message.
fn quoted(s: &str) -> String {
    format!("\"{}\"", cut(s))
}

fn text(key: &str, v: Value) -> Result<String, SidecarError> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(field_error(
            key,
            format!("expected text, found {}; put it in quotes", kind_of(&other)),
        )),
    }
}

/// A whole number in `min..=max`, written as a number or as digits in text (`"2"`).
fn whole<T: TryFrom<i64>>(key: &str, v: &Value, min: i64, max: i64) -> Result<T, SidecarError> {
    let written = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_owned(),
        other => {
            return Err(field_error(
                key,
                format!("expected a whole number, found {}", kind_of(other)),
            ));
        }
    };
    let digits = written.strip_prefix(['-', '+']).unwrap_or(&written);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        let shown = if v.is_string() {
            quoted(&written)
        } else {
            written
        };
        return Err(field_error(key, format!("{shown} is not a whole number")));
    }
    // Digits too many for 64 bits are still a number, just far out of range.
    written
        .parse::<i64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| {
            field_error(
                key,
                format!("{} is out of range {min}–{max}", cut(&written)),
            )
        })
}

/// One of `allowed` (upper-case), written in any case.
fn choice(key: &str, v: Value, allowed: &[&str]) -> Result<String, SidecarError> {
    let s = text(key, v)?;
    let upper = s.trim().to_ascii_uppercase();
    if allowed.contains(&upper.as_str()) {
        Ok(upper)
    } else {
        Err(field_error(
            key,
            format!("{} is not one of {}", quoted(&s), allowed.join(", ")),
        ))
    }
}

fn magic_prompt(key: &str, v: Value) -> Result<String, SidecarError> {
    match v {
        Value::Bool(true) => Ok("ON".to_owned()),
        Value::Bool(false) => Ok("OFF".to_owned()),
        other => choice(key, other, &MAGIC_PROMPTS),
    }
}

fn style_preset(key: &str, v: Value) -> Result<String, SidecarError> {
    let s = text(key, v)?;
    let preset = s.trim().to_ascii_uppercase();
    if preset.is_empty() {
        return Err(field_error(
            key,
            "is empty; name a preset or remove the key",
        ));
    }
    Ok(preset)
}

fn resolution(key: &str, v: Value) -> Result<String, SidecarError> {
    let s = text(key, v)?;
    let lower = s.trim().to_ascii_lowercase();
    let is_size = |part: &str| {
        (1..=5).contains(&part.len())
            && part.bytes().all(|b| b.is_ascii_digit())
            && part.bytes().any(|b| b != b'0')
    };
    match lower.split_once('x') {
        Some((w, h)) if is_size(w) && is_size(h) => Ok(lower),
        _ => Err(field_error(
            key,
            format!("{} is not WIDTHxHEIGHT, e.g. 1024x1024", quoted(&s)),
        )),
    }
}

fn aspect_ratio(key: &str, v: Value) -> Result<AspectRatio, SidecarError> {
    let s = text(key, v)?;
    let lower = s.trim().to_ascii_lowercase();
    if lower == "auto" {
        return Ok(AspectRatio::Auto);
    }
    if let Some(ratio) = ASPECT_RATIOS.iter().find(|r| **r == lower) {
        return Ok(AspectRatio::Fixed((*ratio).to_owned()));
    }
    let hint = if lower.contains(':') {
        " (write it with an x, e.g. 16x9)"
    } else {
        ""
    };
    Err(field_error(
        key,
        format!(
            "{} is not auto or one of {}{hint}",
            quoted(&s),
            ASPECT_RATIOS.join(", ")
        ),
    ))
}

fn style_codes(key: &str, v: Value) -> Result<Vec<String>, SidecarError> {
    let items = match v {
        Value::Array(items) => items,
        single @ (Value::String(_) | Value::Number(_)) => vec![single],
        other => {
            return Err(field_error(
                key,
                format!(
                    "expected a list of 8-hex-digit codes, found {}",
                    kind_of(&other)
                ),
            ));
        }
    };
    if items.is_empty() {
        return Err(field_error(
            key,
            "the list is empty; give a code or remove the key",
        ));
    }
    items
        .into_iter()
        .map(|item| style_code(key, item))
        .collect()
}

fn style_code(key: &str, v: Value) -> Result<String, SidecarError> {
    // YAML reads an all-digit code such as 12345678 as a number; its digits are the code.
    let code = match v {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) if n.is_u64() => n.to_string(),
        other => {
            return Err(field_error(
                key,
                format!("expected an 8-hex-digit code, found {}", kind_of(&other)),
            ));
        }
    };
    if code.len() == 8 && code.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(code)
    } else {
        Err(field_error(
            key,
            format!("{} is not 8 hex digits", quoted(&code)),
        ))
    }
}

const PALETTE_SHAPE: &str =
    "expected {name: PRESET} or {members: [{color_hex: \"#RRGGBB\", color_weight: 0.5}, ...]}";

fn color_palette(key: &str, v: Value) -> Result<Value, SidecarError> {
    let Value::Object(map) = v else {
        return Err(field_error(
            key,
            format!("{PALETTE_SHAPE}, found {}", kind_of(&v)),
        ));
    };
    let mut entries = map.into_iter();
    let (Some((name, value)), None) = (entries.next(), entries.next()) else {
        return Err(field_error(
            key,
            format!("{PALETTE_SHAPE}: give exactly one of the two"),
        ));
    };
    match name.as_str() {
        "name" => {
            let preset = style_preset("color_palette.name", value)?;
            Ok(serde_json::json!({ "name": preset }))
        }
        "members" => palette_members(value),
        other => Err(field_error(
            key,
            format!("unknown key \"{other}\"; {PALETTE_SHAPE}"),
        )),
    }
}

fn palette_members(v: Value) -> Result<Value, SidecarError> {
    const KEY: &str = "color_palette.members";
    let Value::Array(items) = v else {
        return Err(field_error(
            KEY,
            format!(
                "expected a list of {{color_hex, color_weight}}, found {}",
                kind_of(&v)
            ),
        ));
    };
    if items.is_empty() {
        return Err(field_error(KEY, "the list is empty"));
    }
    let members = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| palette_member(&format!("{KEY}[{i}]"), item))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(serde_json::json!({ "members": members }))
}

fn palette_member(key: &str, v: Value) -> Result<Value, SidecarError> {
    let Value::Object(map) = v else {
        return Err(field_error(
            key,
            format!(
                "expected {{color_hex, color_weight}}, found {}",
                kind_of(&v)
            ),
        ));
    };
    let mut member = Map::new();
    for (name, value) in map {
        let path = format!("{key}.{name}");
        match name.as_str() {
            _ if value.is_null() => {}
            "color_hex" => {
                member.insert(name, Value::String(color_hex(&path, value)?));
            }
            "color_weight" => {
                member.insert(name, color_weight(&path, &value)?);
            }
            _ => {
                return Err(field_error(
                    key,
                    format!("unknown key \"{name}\"; a member has color_hex and color_weight"),
                ));
            }
        }
    }
    if !member.contains_key("color_hex") {
        return Err(field_error(key, "color_hex is missing, e.g. \"#FF8800\""));
    }
    Ok(Value::Object(member))
}

fn color_hex(key: &str, v: Value) -> Result<String, SidecarError> {
    let s = text(key, v)?;
    let hex = s.trim();
    match hex.strip_prefix('#') {
        Some(digits) if digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(hex.to_owned())
        }
        _ => Err(field_error(key, format!("{} is not #RRGGBB", quoted(&s)))),
    }
}

fn color_weight(key: &str, v: &Value) -> Result<Value, SidecarError> {
    let weight = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        other => {
            return Err(field_error(
                key,
                format!("expected a number from 0 to 1, found {}", kind_of(other)),
            ));
        }
    };
    match weight {
        Some(w) if (0.0..=1.0).contains(&w) => Ok(match v {
            Value::Number(_) => v.clone(),
            _ => Value::from(w),
        }),
        _ => Err(field_error(
            key,
            format!("{} is not a number from 0 to 1", cut(&plain(v))),
        )),
    }
}

/// A scalar as the user wrote it, without JSON quotes.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn extra_fields(key: &str, v: Value) -> Result<BTreeMap<String, Value>, SidecarError> {
    let Value::Object(map) = v else {
        return Err(field_error(
            key,
            format!("expected a map of name: value, found {}", kind_of(&v)),
        ));
    };
    for name in map.keys() {
        if KEYS.contains(&name.as_str()) {
            return Err(field_error(
                key,
                format!("\"{name}\" is a known field; set it directly, not under {key}"),
            ));
        }
        if name == "image" || name.trim().is_empty() {
            return Err(field_error(
                key,
                format!("{} cannot be used as a field name", quoted(name)),
            ));
        }
    }
    Ok(map.into_iter().collect())
}

impl Fields {
    /// This layer with `stronger` laid over it: every field `stronger` sets wins; setting one
    /// of an exclusive pair (`resolution`/`aspect_ratio`, `style_codes`/`style_type`) in the
    /// stronger layer drops the other from the weaker one.
    #[must_use]
    pub fn overlay(self, stronger: Fields) -> Fields {
        let mut weaker = self;
        if stronger.resolution.is_some() {
            weaker.aspect_ratio = None;
        }
        if stronger.aspect_ratio.is_some() {
            weaker.resolution = None;
        }
        if stronger.style_codes.is_some() {
            weaker.style_type = None;
        }
        if stronger.style_type.is_some() {
            weaker.style_codes = None;
        }
        let mut extra_fields = weaker.extra_fields;
        extra_fields.extend(stronger.extra_fields);
        Fields {
            prompt: stronger.prompt.or(weaker.prompt),
            negative_prompt: stronger.negative_prompt.or(weaker.negative_prompt),
            num_images: stronger.num_images.or(weaker.num_images),
            rendering_speed: stronger.rendering_speed.or(weaker.rendering_speed),
            image_weight: stronger.image_weight.or(weaker.image_weight),
            seed: stronger.seed.or(weaker.seed),
            resolution: stronger.resolution.or(weaker.resolution),
            aspect_ratio: stronger.aspect_ratio.or(weaker.aspect_ratio),
            magic_prompt: stronger.magic_prompt.or(weaker.magic_prompt),
            style_type: stronger.style_type.or(weaker.style_type),
            style_preset: stronger.style_preset.or(weaker.style_preset),
            style_codes: stronger.style_codes.or(weaker.style_codes),
            color_palette: stronger.color_palette.or(weaker.color_palette),
            extra_fields,
        }
    }

    /// The request these merged fields make for `image`.
    ///
    /// An empty `negative_prompt` and an `extra_fields` entry set to null are not sent, so a
    /// stronger layer can take back what a weaker one set.
    ///
    /// # Errors
    /// [`RequestError::MissingPrompt`] with no prompt; `Invalid` when the merged fields break
    /// a rule.
    pub fn to_request(&self, image: &ImageInfo) -> Result<RemixRequest, RequestError> {
        let prompt = self
            .prompt
            .as_deref()
            .filter(|p| !p.trim().is_empty())
            .ok_or(RequestError::MissingPrompt)?;
        let num_images = self.num_images.unwrap_or(1);
        if !(1..=8).contains(&num_images) {
            return Err(RequestError::Invalid(format!(
                "num_images: {num_images} is out of range 1–8"
            )));
        }
        if let (Some(codes), Some(style_type)) = (&self.style_codes, &self.style_type) {
            return Err(RequestError::Invalid(format!(
                "style_codes ({}) and style_type ({style_type}) exclude each other: \
                 keep only one of them",
                codes.join(", ")
            )));
        }
        let aspect_ratio = self.aspect_ratio_to_send(image)?;
        Ok(RemixRequest {
            fields: self.form(prompt, aspect_ratio),
            num_images,
        })
    }

    /// The form fields in sending order, once the rules are checked.
    fn form(&self, prompt: &str, aspect_ratio: Option<&str>) -> Vec<(String, String)> {
        let mut out = Form::default();
        out.push("prompt", prompt);
        out.push_some(
            "negative_prompt",
            self.negative_prompt.as_deref().filter(|n| !n.is_empty()),
        );
        out.push_some("num_images", self.num_images.map(|n| n.to_string()));
        out.push_some("rendering_speed", self.rendering_speed.as_deref());
        out.push_some("image_weight", self.image_weight.map(|n| n.to_string()));
        out.push_some("seed", self.seed.map(|n| n.to_string()));
        out.push_some("resolution", self.resolution.as_deref());
        out.push_some("aspect_ratio", aspect_ratio);
        out.push_some("magic_prompt", self.magic_prompt.as_deref());
        out.push_some("style_type", self.style_type.as_deref());
        out.push_some("style_preset", self.style_preset.as_deref());
        // The API takes a list as the same form name repeated.
        for code in self.style_codes.iter().flatten() {
            out.push("style_codes", code);
        }
        out.push_some(
            "color_palette",
            self.color_palette.as_ref().map(Value::to_string),
        );
        for (name, value) in &self.extra_fields {
            match value {
                Value::Null => {}
                Value::String(s) => out.push(name, s),
                other => out.push(name, other.to_string()),
            }
        }
        out.0
    }

    /// The `aspect_ratio` value to send, if any: `auto` resolved against the image, and
    /// nothing at all for `auto` next to an explicit `resolution`.
    fn aspect_ratio_to_send(&self, image: &ImageInfo) -> Result<Option<&str>, RequestError> {
        match (&self.aspect_ratio, &self.resolution) {
            (None, _) | (Some(AspectRatio::Auto), Some(_)) => Ok(None),
            (Some(AspectRatio::Auto), None) => {
                Ok(Some(nearest_aspect_ratio(image.width, image.height)))
            }
            (Some(AspectRatio::Fixed(ratio)), None) => Ok(Some(ratio)),
            (Some(AspectRatio::Fixed(ratio)), Some(resolution)) => {
                Err(RequestError::Invalid(format!(
                    "resolution ({resolution}) and aspect_ratio ({ratio}) exclude each other: \
                     keep only one of them"
                )))
            }
        }
    }
}

/// Form fields in the order they are added.
#[derive(Default)]
struct Form(Vec<(String, String)>);

impl Form {
    fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push((name.to_owned(), value.into()));
    }

    fn push_some(&mut self, name: &str, value: Option<impl Into<String>>) {
        if let Some(value) = value {
            self.push(name, value);
        }
    }
}

impl serde::Serialize for AspectRatio {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(match self {
            Self::Auto => "auto",
            Self::Fixed(ratio) => ratio,
        })
    }
}

/// Serializes the fields this layer sets, by their sidecar key, in sending order; handy for
/// diffing two configs' `defaults` key by key.
impl serde::Serialize for Fields {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        let mut entry = |key: &str, value: Option<Value>| match value {
            Some(value) => map.serialize_entry(key, &value),
            None => Ok(()),
        };
        entry("prompt", self.prompt.clone().map(Value::from))?;
        entry(
            "negative_prompt",
            self.negative_prompt.clone().map(Value::from),
        )?;
        entry("num_images", self.num_images.map(Value::from))?;
        entry(
            "rendering_speed",
            self.rendering_speed.clone().map(Value::from),
        )?;
        entry("image_weight", self.image_weight.map(Value::from))?;
        entry("seed", self.seed.map(Value::from))?;
        entry("resolution", self.resolution.clone().map(Value::from))?;
        entry(
            "aspect_ratio",
            self.aspect_ratio
                .as_ref()
                .map(|a| Value::from(a.to_string())),
        )?;
        entry("magic_prompt", self.magic_prompt.clone().map(Value::from))?;
        entry("style_type", self.style_type.clone().map(Value::from))?;
        entry("style_preset", self.style_preset.clone().map(Value::from))?;
        entry("style_codes", self.style_codes.clone().map(Value::from))?;
        entry("color_palette", self.color_palette.clone())?;
        if !self.extra_fields.is_empty() {
            let extra: Map<String, Value> = self.extra_fields.clone().into_iter().collect();
            entry("extra_fields", Some(Value::Object(extra)))?;
        }
        map.end()
    }
}

impl fmt::Display for AspectRatio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Fixed(ratio) => ratio,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::image_info::ImageFormat;

    fn yaml(text: &str) -> Result<Fields, SidecarError> {
        parse(text.as_bytes(), SidecarKind::Yaml)
    }

    fn yaml_err(text: &str) -> String {
        yaml(text).expect_err(text).0
    }

    fn image(width: u32, height: u32) -> ImageInfo {
        ImageInfo {
            format: ImageFormat::Png,
            width,
            height,
        }
    }

    fn prompt(p: &str) -> Fields {
        Fields {
            prompt: Some(p.to_owned()),
            ..Fields::default()
        }
    }

    fn sent(fields: &Fields) -> Vec<(String, String)> {
        fields
            .to_request(&image(1024, 1024))
            .expect("request")
            .fields
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn text_sidecar_is_the_trimmed_prompt() {
        let f = parse("\u{feff}  a cat in a hat\n\n".as_bytes(), SidecarKind::Text).unwrap();
        assert_eq!(f, prompt("a cat in a hat"));
        let empty = parse(b" \n\t\n", SidecarKind::Text).unwrap();
        assert_eq!(empty, Fields::default());
        // A .txt is never read as YAML, even when it looks like it.
        let literal = parse(b"seed: 5", SidecarKind::Text).unwrap();
        assert_eq!(literal.prompt.as_deref(), Some("seed: 5"));
    }

    const FULL_YAML: &str = r##"
prompt: |
  a cat in a hat
negative_prompt: blurry
num_images: 2
rendering_speed: turbo
image_weight: 80
seed: 2147483647
resolution: 1024X768
magic_prompt: off
style_preset: bright_art
style_codes: [AbCdEf01, 12345678]
color_palette: {members: [{color_hex: "#FF8800", color_weight: 0.5}, {color_hex: "#000000"}]}
extra_fields: {new_knob: 3, label: hi}
"##;

    #[test]
    fn yaml_sidecar_reads_every_field_and_normalises_case() {
        let f = yaml(FULL_YAML).unwrap();
        assert_eq!(f.prompt.as_deref(), Some("a cat in a hat"));
        assert_eq!(f.negative_prompt.as_deref(), Some("blurry"));
        assert_eq!(f.num_images, Some(2));
        assert_eq!(f.rendering_speed.as_deref(), Some("TURBO"));
        assert_eq!(f.image_weight, Some(80));
        assert_eq!(f.seed, Some(2_147_483_647));
        assert_eq!(f.resolution.as_deref(), Some("1024x768"));
        assert_eq!(f.magic_prompt.as_deref(), Some("OFF"));
        assert_eq!(f.style_preset.as_deref(), Some("BRIGHT_ART"));
        let codes = vec!["AbCdEf01".to_owned(), "12345678".to_owned()];
        assert_eq!(f.style_codes, Some(codes));
        let palette = serde_json::json!({"members": [
            {"color_hex": "#FF8800", "color_weight": 0.5}, {"color_hex": "#000000"}]});
        assert_eq!(f.color_palette, Some(palette));
        assert_eq!(f.extra_fields["new_knob"], serde_json::json!(3));
        assert_eq!(f.extra_fields["label"], serde_json::json!("hi"));
    }

    #[test]
    fn json_sidecar_reads_the_same_fields_as_yaml() {
        let json = r##"{"prompt": "a cat in a hat\n", "negative_prompt": "blurry",
            "num_images": "2", "rendering_speed": "Turbo", "image_weight": 80,
            "seed": 2147483647, "resolution": "1024x768", "magic_prompt": false,
            "style_preset": "BRIGHT_ART", "style_codes": ["AbCdEf01", "12345678"],
            "color_palette": {"members": [{"color_hex": "#FF8800", "color_weight": 0.5},
                                          {"color_hex": "#000000"}]},
            "extra_fields": {"new_knob": 3, "label": "hi"}}"##;
        let from_json = parse(json.as_bytes(), SidecarKind::Json).unwrap();
        assert_eq!(from_json, yaml(FULL_YAML).unwrap());
        let bad = parse(b"{\"prompt\": \"x\",}", SidecarKind::Json).unwrap_err();
        assert!(bad.0.starts_with("bad JSON"), "{bad}");
        let two = parse(b"{} {}", SidecarKind::Json).unwrap_err();
        assert!(two.0.starts_with("bad JSON"), "{two}");
    }

    #[test]
    fn yaml_follows_the_1_2_core_schema() {
        assert_eq!(
            yaml("magic_prompt: OFF").unwrap().magic_prompt.as_deref(),
            Some("OFF")
        );
        assert_eq!(
            yaml("magic_prompt: on").unwrap().magic_prompt.as_deref(),
            Some("ON")
        );
        assert_eq!(
            yaml("magic_prompt: true").unwrap().magic_prompt.as_deref(),
            Some("ON")
        );
        assert_eq!(
            yaml("magic_prompt: false").unwrap().magic_prompt.as_deref(),
            Some("OFF")
        );
        assert_eq!(yaml("prompt: yes").unwrap().prompt.as_deref(), Some("yes"));
        assert_eq!(yaml("prompt: 'no'").unwrap().prompt.as_deref(), Some("no"));
        assert_eq!(yaml("seed: 012").unwrap().seed, Some(12));
    }

    #[test]
    fn unknown_key_is_named_with_the_allowed_keys() {
        let msg = yaml_err("prompt: x\nnum_image: 2");
        assert!(msg.contains("\"num_image\""), "{msg}");
        assert!(msg.contains("prompt, negative_prompt, num_images"), "{msg}");
        assert!(msg.contains("extra_fields"), "{msg}");
        let upper = yaml_err("Prompt: x");
        assert!(upper.contains("\"Prompt\""), "{upper}");
    }

    #[test]
    fn out_of_range_and_malformed_numbers_are_refused_by_name() {
        for (doc, want) in [
            ("num_images: 12", "num_images: 12 is out of range 1–8"),
            ("num_images: 0", "num_images: 0 is out of range 1–8"),
            ("num_images: '9'", "num_images: 9 is out of range 1–8"),
            (
                "num_images: two",
                "num_images: \"two\" is not a whole number",
            ),
            ("num_images: 2.5", "num_images: 2.5 is not a whole number"),
            (
                "num_images: [2]",
                "num_images: expected a whole number, found a list",
            ),
            ("image_weight: 0", "image_weight: 0 is out of range 1–100"),
            (
                "image_weight: 101",
                "image_weight: 101 is out of range 1–100",
            ),
            ("seed: -1", "seed: -1 is out of range 0–2147483647"),
            (
                "seed: 2147483648",
                "seed: 2147483648 is out of range 0–2147483647",
            ),
            (
                "seed: 99999999999999999999999",
                "seed: 99999999999999999999999 is out of range 0–2147483647",
            ),
            (
                "seed: true",
                "seed: expected a whole number, found true/false",
            ),
        ] {
            assert_eq!(yaml_err(doc), want, "{doc}");
        }
    }

    #[test]
    fn bad_enum_and_format_values_are_refused_by_name() {
        for (doc, want) in [
            (
                "rendering_speed: fast",
                "rendering_speed: \"fast\" is not one of FLASH",
            ),
            (
                "magic_prompt: maybe",
                "magic_prompt: \"maybe\" is not one of AUTO, ON, OFF",
            ),
            (
                "style_type: anime",
                "style_type: \"anime\" is not one of AUTO, GENERAL",
            ),
            (
                "aspect_ratio: 7x5",
                "aspect_ratio: \"7x5\" is not auto or one of 1x3",
            ),
            ("aspect_ratio: '16:9'", "(write it with an x, e.g. 16x9)"),
            ("resolution: big", "resolution: \"big\" is not WIDTHxHEIGHT"),
            (
                "resolution: '0x100'",
                "resolution: \"0x100\" is not WIDTHxHEIGHT",
            ),
            (
                "style_codes: [xyz]",
                "style_codes: \"xyz\" is not 8 hex digits",
            ),
            ("style_codes: []", "style_codes: the list is empty"),
            (
                "style_codes: {a: b}",
                "style_codes: expected a list of 8-hex-digit codes",
            ),
            ("style_preset: ''", "style_preset: is empty"),
            ("prompt: [a, b]", "prompt: expected text, found a list"),
            (
                "prompt: 42",
                "prompt: expected text, found a number; put it in quotes",
            ),
        ] {
            let msg = yaml_err(doc);
            assert!(msg.starts_with(want) || msg.contains(want), "{doc}: {msg}");
        }
    }

    #[test]
    fn enum_values_take_any_case_and_aspect_ratio_any_x() {
        let f =
            yaml("rendering_speed: qUaLiTy\nstyle_type: Realistic\naspect_ratio: 16X9").unwrap();
        assert_eq!(f.rendering_speed.as_deref(), Some("QUALITY"));
        assert_eq!(f.style_type.as_deref(), Some("REALISTIC"));
        assert_eq!(f.aspect_ratio, Some(AspectRatio::Fixed("16x9".into())));
        assert_eq!(
            yaml("aspect_ratio: AUTO").unwrap().aspect_ratio,
            Some(AspectRatio::Auto)
        );
    }

    #[test]
    fn numbers_written_as_text_are_accepted() {
        let f = yaml("num_images: \"2\"\nimage_weight: ' 50 '\nseed: '0'").unwrap();
        assert_eq!(
            (f.num_images, f.image_weight, f.seed),
            (Some(2), Some(50), Some(0))
        );
        let single = yaml("style_codes: 'DEADBEEF'").unwrap();
        assert_eq!(single.style_codes, Some(vec!["DEADBEEF".to_owned()]));
    }

    #[test]
    fn color_palette_shapes_are_checked() {
        let named = yaml("color_palette: {name: pastel}").unwrap();
        assert_eq!(
            named.color_palette,
            Some(serde_json::json!({"name": "PASTEL"}))
        );
        for (doc, want) in [
            (
                "color_palette: pastel",
                "color_palette: expected {name: PRESET}",
            ),
            ("color_palette: {}", "give exactly one of the two"),
            (
                "color_palette: {name: a, members: []}",
                "give exactly one of the two",
            ),
            (
                "color_palette: {colour: a}",
                "color_palette: unknown key \"colour\"",
            ),
            (
                "color_palette: {members: []}",
                "color_palette.members: the list is empty",
            ),
            (
                "color_palette: {members: [{color_hex: red}]}",
                "color_palette.members[0].color_hex: \"red\" is not #RRGGBB",
            ),
            (
                "color_palette: {members: [{color_hex: '#FFFFFF', color_weight: 2}]}",
                "color_palette.members[0].color_weight: 2 is not a number from 0 to 1",
            ),
            (
                "color_palette: {members: [{color_weight: 0.1}]}",
                "color_palette.members[0]: color_hex is missing",
            ),
            (
                "color_palette: {members: [{color_hex: '#FFFFFF', alpha: 1}]}",
                "color_palette.members[0]: unknown key \"alpha\"",
            ),
        ] {
            let msg = yaml_err(doc);
            assert!(msg.starts_with(want) || msg.contains(want), "{doc}: {msg}");
        }
    }

    #[test]
    fn extra_fields_may_not_shadow_known_fields() {
        for name in ["prompt", "image", "style_codes"] {
            let msg = yaml_err(&format!("extra_fields: {{{name}: x}}"));
            assert!(msg.starts_with("extra_fields: \""), "{msg}");
            assert!(msg.contains(name), "{msg}");
        }
        let msg = yaml_err("extra_fields: [a]");
        assert!(
            msg.contains("expected a map of name: value, found a list"),
            "{msg}"
        );
    }

    #[test]
    fn empty_null_and_non_map_documents() {
        assert_eq!(yaml("").unwrap(), Fields::default());
        assert_eq!(yaml("# just a comment\n").unwrap(), Fields::default());
        assert_eq!(yaml("null").unwrap(), Fields::default());
        assert_eq!(yaml("~\n").unwrap(), Fields::default());
        assert_eq!(yaml("seed:\nprompt: x").unwrap(), prompt("x"));
        assert_eq!(
            parse(b"null", SidecarKind::Json).unwrap(),
            Fields::default()
        );
        let msg = yaml_err("- a\n- b");
        assert!(
            msg.contains("expected a map of fields") && msg.contains("a list"),
            "{msg}"
        );
        let msg = yaml_err("just a prompt without a key");
        assert!(msg.contains("found text"), "{msg}");
        assert!(
            yaml("prompt: [unclosed")
                .unwrap_err()
                .0
                .starts_with("bad YAML")
        );
        assert!(yaml("---\nprompt: a\n---\nprompt: b\n").is_err());
    }

    #[test]
    fn duplicate_keys_and_tags_are_refused() {
        let msg = yaml_err("prompt: a\nprompt: b");
        assert!(msg.contains("\"prompt\" appears twice"), "{msg}");
        let msg = yaml_err("prompt: !shout a");
        assert!(msg.contains("tags"), "{msg}");
        let msg = parse(br#"{"seed": 1, "seed": 2}"#, SidecarKind::Json).unwrap_err();
        assert!(msg.0.contains("appears twice"), "{msg}");
    }

    #[test]
    fn size_cap_is_64_kib() {
        let at_cap = format!("prompt: {}", "a".repeat(MAX_SIDECAR_BYTES - 8));
        assert_eq!(at_cap.len(), MAX_SIDECAR_BYTES);
        assert!(yaml(&at_cap).is_ok());
        let over = format!("{at_cap}b");
        let msg = yaml_err(&over);
        assert!(
            msg.contains("65537 bytes") && msg.contains("64 KiB"),
            "{msg}"
        );
        let text = "x".repeat(MAX_SIDECAR_BYTES + 1);
        assert!(parse(text.as_bytes(), SidecarKind::Text).is_err());
    }

    #[test]
    fn non_utf8_is_refused() {
        let err = parse(b"prompt: caf\xe9", SidecarKind::Yaml).unwrap_err();
        assert!(
            err.0.contains("not UTF-8") && err.0.contains("offset 11"),
            "{err}"
        );
        assert!(parse(b"\xff\xfe", SidecarKind::Text).is_err());
        assert!(parse(b"\"\xc3\"", SidecarKind::Json).is_err());
    }

    #[test]
    fn billion_laughs_is_refused_quickly() {
        let mut doc = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..10 {
            let p = i - 1;
            let refs = vec![format!("*a{p}"); 9].join(", ");
            writeln!(doc, "a{i}: &a{i} [{refs}]").unwrap();
        }
        // Padding raises the parser's own alias limit (it scales with the event count).
        writeln!(doc, "pad: [{}]", vec!["0"; 20_000].join(",")).unwrap();
        assert!(doc.len() <= MAX_SIDECAR_BYTES);
        let started = Instant::now();
        assert!(yaml(&doc).is_err());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn one_long_text_repeated_by_aliases_is_refused() {
        // Each alias is four bytes but copies 32 KiB: 512 MiB if nothing stops it.
        let long = "x".repeat(32 * 1024);
        let refs = vec!["*a"; 7_000].join(",");
        let doc = format!("extra_fields:\n  big: &a {long}\n  copies: [{refs}]\n");
        assert!(doc.len() <= MAX_SIDECAR_BYTES);
        let msg = yaml_err(&doc);
        assert!(msg.contains("bytes of text"), "{msg}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let ok = format!("extra_fields: {{x: {}}}", deep(28));
        assert!(yaml(&ok).is_ok());
        let msg = yaml_err(&format!("extra_fields: {{x: {}}}", deep(40)));
        assert!(msg.contains("nested deeper than 32"), "{msg}");
        let json = format!("{{\"extra_fields\": {{\"x\": {}}}}}", deep(40));
        let msg = parse(json.as_bytes(), SidecarKind::Json).unwrap_err();
        assert!(msg.0.contains("nested deeper than 32"), "{msg}");
        let very_deep = format!("extra_fields: {{x: {}}}", deep(3_000));
        assert!(yaml(&very_deep).is_err());
    }

    #[test]
    fn config_defaults_are_read_from_a_yaml_value() {
        let value: serde_yaml::Value =
            serde_yaml::from_str("num_images: 1\nrendering_speed: default\naspect_ratio: auto")
                .unwrap();
        let f = from_yaml_value(&value).unwrap();
        assert_eq!(f.num_images, Some(1));
        assert_eq!(f.rendering_speed.as_deref(), Some("DEFAULT"));
        assert_eq!(f.aspect_ratio, Some(AspectRatio::Auto));
        let bad: serde_yaml::Value = serde_yaml::from_str("rendering_sped: x").unwrap();
        assert!(
            from_yaml_value(&bad)
                .unwrap_err()
                .0
                .contains("\"rendering_sped\"")
        );
        assert_eq!(
            from_yaml_value(&serde_yaml::Value::Null).unwrap(),
            Fields::default()
        );
    }

    #[test]
    fn overlay_stronger_wins_field_by_field() {
        let weak =
            yaml("prompt: weak\nseed: 1\nnum_images: 3\nextra_fields: {a: 1, b: 1}").unwrap();
        let strong =
            yaml("prompt: strong\nnegative_prompt: fog\nextra_fields: {b: 2, c: 2}").unwrap();
        let merged = weak.overlay(strong);
        assert_eq!(merged.prompt.as_deref(), Some("strong"));
        assert_eq!(merged.negative_prompt.as_deref(), Some("fog"));
        assert_eq!((merged.seed, merged.num_images), (Some(1), Some(3)));
        let extra: Vec<_> = merged
            .extra_fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(extra, ["a=1", "b=2", "c=2"]);
    }

    #[test]
    fn overlay_drops_the_weaker_half_of_an_exclusive_pair() {
        let weak = yaml("aspect_ratio: 16x9\nstyle_type: design").unwrap();
        let strong = yaml("resolution: 1024x1024\nstyle_codes: [DEADBEEF]").unwrap();
        let merged = weak.clone().overlay(strong.clone());
        assert_eq!(merged.aspect_ratio, None);
        assert_eq!(merged.style_type, None);
        assert_eq!(merged.resolution.as_deref(), Some("1024x1024"));
        let back = strong.overlay(weak);
        assert_eq!(back.resolution, None);
        assert_eq!(back.style_codes, None);
        assert_eq!(back.style_type.as_deref(), Some("DESIGN"));
        // Both halves in the one (stronger) layer stay, for to_request to refuse.
        let both = yaml("resolution: 1024x1024\naspect_ratio: 1x1").unwrap();
        let kept = Fields::default().overlay(both);
        assert!(kept.resolution.is_some() && kept.aspect_ratio.is_some());
    }

    #[test]
    fn request_fields_are_sent_in_form_order() {
        let f = yaml(FULL_YAML).unwrap();
        let got = f.to_request(&image(640, 480)).unwrap();
        assert_eq!(got.num_images, 2);
        let palette =
            r##"{"members":[{"color_hex":"#FF8800","color_weight":0.5},{"color_hex":"#000000"}]}"##;
        assert_eq!(
            got.fields,
            pairs(&[
                ("prompt", "a cat in a hat"),
                ("negative_prompt", "blurry"),
                ("num_images", "2"),
                ("rendering_speed", "TURBO"),
                ("image_weight", "80"),
                ("seed", "2147483647"),
                ("resolution", "1024x768"),
                ("magic_prompt", "OFF"),
                ("style_preset", "BRIGHT_ART"),
                ("style_codes", "AbCdEf01"),
                ("style_codes", "12345678"),
                ("color_palette", palette),
                ("label", "hi"),
                ("new_knob", "3"),
            ])
        );
    }

    #[test]
    fn auto_aspect_ratio_follows_the_image_unless_resolution_is_set() {
        let auto = yaml("prompt: p\naspect_ratio: auto").unwrap();
        let wide = auto.to_request(&image(1920, 1080)).unwrap().fields;
        assert_eq!(wide, pairs(&[("prompt", "p"), ("aspect_ratio", "16x9")]));
        let tall = auto.to_request(&image(600, 1800)).unwrap().fields;
        assert_eq!(tall[1], ("aspect_ratio".to_owned(), "1x3".to_owned()));
        let with_res = yaml("prompt: p\naspect_ratio: auto\nresolution: 1024x1024").unwrap();
        assert_eq!(
            sent(&with_res),
            pairs(&[("prompt", "p"), ("resolution", "1024x1024")])
        );
        let fixed = yaml("prompt: p\naspect_ratio: 4x3").unwrap();
        assert_eq!(
            sent(&fixed),
            pairs(&[("prompt", "p"), ("aspect_ratio", "4x3")])
        );
    }

    #[test]
    fn exclusive_pairs_in_one_layer_are_invalid() {
        let both = yaml("prompt: p\naspect_ratio: 1x1\nresolution: 1024x1024").unwrap();
        let Err(RequestError::Invalid(msg)) = both.to_request(&image(1, 1)) else {
            panic!("resolution with aspect_ratio accepted");
        };
        assert!(
            msg.contains("resolution (1024x1024) and aspect_ratio (1x1)"),
            "{msg}"
        );
        let style = yaml("prompt: p\nstyle_type: general\nstyle_codes: DEADBEEF").unwrap();
        let Err(RequestError::Invalid(msg)) = style.to_request(&image(1, 1)) else {
            panic!("style_codes with style_type accepted");
        };
        assert!(
            msg.contains("style_codes (DEADBEEF) and style_type (GENERAL)"),
            "{msg}"
        );
    }

    #[test]
    fn missing_or_blank_prompt_is_missing() {
        let none = yaml("seed: 3").unwrap();
        assert_eq!(
            none.to_request(&image(1, 1)),
            Err(RequestError::MissingPrompt)
        );
        let blank = yaml("prompt: '  '").unwrap();
        assert_eq!(
            blank.to_request(&image(1, 1)),
            Err(RequestError::MissingPrompt)
        );
        // An explicit empty prompt in a stronger layer overrides a weaker one.
        let merged = prompt("from defaults").overlay(yaml("prompt: ''").unwrap());
        assert_eq!(
            merged.to_request(&image(1, 1)),
            Err(RequestError::MissingPrompt)
        );
    }

    #[test]
    fn unset_fields_default_and_are_not_sent() {
        let got = prompt("p").to_request(&image(1, 1)).unwrap();
        assert_eq!(got.num_images, 1);
        assert_eq!(got.fields, pairs(&[("prompt", "p")]));
    }

    #[test]
    fn extra_fields_pass_through_and_null_takes_one_back() {
        let weak = yaml("prompt: p\nextra_fields: {gone: 1, kept: true}").unwrap();
        let strong = yaml("extra_fields: {gone: null, obj: {k: [1, x]}, s: 'a b'}").unwrap();
        let fields = sent(&weak.overlay(strong));
        assert_eq!(
            fields,
            pairs(&[
                ("prompt", "p"),
                ("kept", "true"),
                ("obj", r#"{"k":[1,"x"]}"#),
                ("s", "a b")
            ])
        );
        let cleared = yaml("prompt: p\nnegative_prompt: ''").unwrap();
        assert_eq!(sent(&cleared), pairs(&[("prompt", "p")]));
    }

    #[test]
    fn candidates_try_full_name_then_stem() {
        assert_eq!(
            sidecar_candidates("cat.png"),
            [
                "cat.png.yaml",
                "cat.png.yml",
                "cat.png.json",
                "cat.png.txt",
                "cat.yaml",
                "cat.yml",
                "cat.json",
                "cat.txt"
            ]
        );
        assert_eq!(sidecar_candidates("my.cat.JPG")[4], "my.cat.yaml");
        assert_eq!(sidecar_candidates("noext").len(), 4);
    }

    #[test]
    fn fields_serialize_only_what_is_set() {
        let f = yaml("seed: 4\naspect_ratio: auto\nextra_fields: {a: 1}").unwrap();
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"seed": 4, "aspect_ratio": "auto", "extra_fields": {"a": 1}})
        );
    }
}
