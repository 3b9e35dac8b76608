//! Sidecars and `_defaults.yaml`: parsing, layering and validation of the remix fields, and
//! turning them into the form fields of one request. Finding the files is the inbox's job;
//! sending them is the API client's.
//!
//! INTERFACE (skeleton): the helper implementing this module keeps these signatures.

use std::collections::BTreeMap;

use crate::image_info::ImageInfo;

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
    #[error("no prompt: write one in a sidecar next to the image, in _defaults.yaml, or in the config's defaults")]
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

/// Parses a sidecar's bytes.
///
/// # Errors
/// A [`SidecarError`] naming the problem when it is over 64 KiB, not UTF-8, not valid
/// YAML/JSON, has an unknown key or a bad value.
pub fn parse(bytes: &[u8], kind: SidecarKind) -> Result<Fields, SidecarError> {
    let _ = (bytes, kind);
    todo!("sidecar::parse")
}

/// Reads fields from an already-parsed YAML value (the config's `defaults:` section).
///
/// # Errors
/// As [`parse`], for an unknown key or a bad value.
pub fn from_yaml_value(value: &serde_yaml::Value) -> Result<Fields, SidecarError> {
    let _ = value;
    todo!("sidecar::from_yaml_value")
}

impl Fields {
    /// This layer with `stronger` laid over it: every field `stronger` sets wins; setting one
    /// of an exclusive pair (`resolution`/`aspect_ratio`, `style_codes`/`style_type`) in the
    /// stronger layer drops the other from the weaker one.
    #[must_use]
    pub fn overlay(self, stronger: Fields) -> Fields {
        let _ = stronger;
        todo!("Fields::overlay")
    }

    /// The request these merged fields make for `image`.
    ///
    /// # Errors
    /// [`RequestError::MissingPrompt`] with no prompt; `Invalid` when the merged fields break
    /// a rule.
    pub fn to_request(&self, image: &ImageInfo) -> Result<RemixRequest, RequestError> {
        let _ = image;
        todo!("Fields::to_request")
    }
}

/// The sidecar names to look for beside an image, strongest first.
#[must_use]
pub fn sidecar_candidates(image_file_name: &str) -> Vec<String> {
    let _ = image_file_name;
    todo!()
}
