//! Sidecars and `_defaults.yaml`: parsing, layering and validation of the remix fields, and
//! turning them into the form fields of one request. Finding the files is the inbox's job;
//! sending them is the API client's.
//!
//! Every input, YAML, JSON or the config's `defaults:`, is first read into a bounded
//! `serde_json::Value` (depth, node count and text size capped, so alias bombs and deep
//! nesting are refused while parsing) and then checked field by field by hand, so each error
//! names the field and the problem. Parts: `reader` (bounded reading), `fields` (checks
//! per field), `request` (layering and the form fields).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use serde::de::DeserializeSeed;

/// Largest sidecar or `_defaults.yaml` accepted, in bytes.
pub const MAX_SIDECAR_BYTES: usize = 64 * 1024;

/// The per-folder defaults file, never moved.
pub const DEFAULTS_FILE: &str = "_defaults.yaml";

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
    /// `operation`: which edit of the image (remix when no layer says).
    pub operation: Option<Operation>,
    /// `style_reference_images`: images whose style the outputs take.
    pub style_reference_images: Option<Vec<RefPath>>,
    /// `character_reference_images`: the one image of a character to keep.
    pub character_reference_images: Option<Vec<RefPath>>,
    /// `character_reference_images_mask`: the character reference's mask.
    pub character_reference_images_mask: Option<Vec<RefPath>>,
}

/// A reference file as a sidecar or `_defaults.yaml` names it: a path relative to the folder
/// of the file naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefPath {
    /// The folder of the file that names it, relative to the inbox (`""` at its root, and for
    /// the config's `defaults`).
    pub base: PathBuf,
    /// The path as written.
    pub written: String,
}

impl RefPath {
    /// The path relative to the inbox with `.` and `..` taken by name, so a `..` may climb
    /// only while it stays inside the inbox (symlinks are refused when it is opened).
    ///
    /// # Errors
    /// A message when the path is absolute or climbs out of the inbox.
    pub fn resolve(&self) -> Result<PathBuf, String> {
        let written = Path::new(&self.written);
        if written.is_absolute() {
            return Err(
                "is an absolute path; write it relative to the folder of the file \
                        that names it, e.g. ../_refs/logo.png"
                    .into(),
            );
        }
        let mut parts: Vec<&OsStr> = Vec::new();
        for part in self.base.components().chain(written.components()) {
            match part {
                Component::Normal(name) => parts.push(name),
                Component::CurDir => {}
                Component::ParentDir => {
                    if parts.pop().is_none() {
                        return Err("leads out of the inbox; a reference must be inside it \
                                    (e.g. in an _refs/ folder)"
                            .into());
                    }
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err("is an absolute path".into());
                }
            }
        }
        if parts.is_empty() {
            return Err("names a folder, not an image file".into());
        }
        Ok(parts.iter().collect())
    }
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

/// The form fields of one request, in the order they are sent, minus the files (image,
/// mask, references), and the operation that takes them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemixRequest {
    /// `(form name, value)` pairs exactly as sent.
    pub fields: Vec<(String, String)>,
    /// How many images this request asks for.
    pub num_images: u8,
    /// The endpoint's operation (journals from before operations existed are remixes).
    #[serde(default)]
    pub operation: Operation,
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
const KEYS: [&str; 18] = [
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
    "operation",
    "style_reference_images",
    "character_reference_images",
    "character_reference_images_mask",
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

/// The sidecar names to look for beside `image`, strongest first:
/// `NAME.EXT.{yaml,yml,json,txt}`, then `STEM.{yaml,yml,json,txt}`. Built from the name's
/// bytes, so a name that is not UTF-8 finds its sidecar too.
#[must_use]
pub fn sidecar_candidates(image: &OsStr) -> Vec<OsString> {
    let bytes = image.as_bytes();
    let stem = match bytes.iter().rposition(|&b| b == b'.') {
        Some(dot) if dot > 0 => Some(&bytes[..dot]),
        _ => None,
    };
    let mut names = Vec::new();
    for base in std::iter::once(bytes).chain(stem) {
        for ext in ["yaml", "yml", "json", "txt"] {
            let mut name = base.to_vec();
            name.push(b'.');
            name.extend_from_slice(ext.as_bytes());
            names.push(OsString::from_vec(name));
        }
    }
    names
}

/// An inpaint mask is, like a sidecar, a companion file beside its image.
///
/// The names `image`'s mask may have, in the order they are looked for:
/// `STEM.mask.{png,jpg,jpeg,webp}`, lower-case and then upper-case extensions.
#[must_use]
pub fn mask_candidates(image: &OsStr) -> Vec<std::ffi::OsString> {
    use std::os::unix::ffi::OsStringExt;
    let bytes = image.as_bytes();
    let stem = match bytes.iter().rposition(|&b| b == b'.') {
        Some(dot) if dot > 0 => &bytes[..dot],
        _ => bytes,
    };
    let mut names = Vec::new();
    for mark in [".mask.", ".MASK."] {
        for ext in crate::image_info::IMAGE_EXTS {
            for ext in [ext.to_owned(), ext.to_ascii_uppercase()] {
                let mut name = stem.to_vec();
                name.extend_from_slice(mark.as_bytes());
                name.extend_from_slice(ext.as_bytes());
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    names
        .into_iter()
        .map(std::ffi::OsString::from_vec)
        .collect()
}

mod fields;
mod operation;
mod reader;
mod request;
#[cfg(test)]
mod tests;

use fields::fields_from_value;
pub use operation::{OPERATIONS, Operation};
use reader::{Bounded, Limits, read_json, read_yaml};
pub use request::merge_layers;
