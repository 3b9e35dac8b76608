//! Layering fields (config defaults, `_defaults.yaml`, sidecar) and turning the result into
//! the form fields of one request.

use std::fmt;

use serde_json::{Map, Value};

use super::{AspectRatio, Fields, Operation, RefPath, RemixRequest, RequestError};
use crate::image_info::{ImageInfo, nearest_aspect_ratio};

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
        if stronger.style_type.is_some() || stronger.style_reference_images.is_some() {
            weaker.style_codes = None;
        }
        if stronger.style_codes.is_some() {
            weaker.style_reference_images = None;
        }
        // A mask belongs to its reference: a new reference takes none from a weaker layer.
        if stronger.character_reference_images.is_some() {
            weaker.character_reference_images_mask = None;
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
            operation: stronger.operation.or(weaker.operation),
            style_reference_images: stronger
                .style_reference_images
                .or(weaker.style_reference_images),
            character_reference_images: stronger
                .character_reference_images
                .or(weaker.character_reference_images),
            character_reference_images_mask: stronger
                .character_reference_images_mask
                .or(weaker.character_reference_images_mask),
        }
    }

    /// This layer with its reference paths taken relative to `folder` (inbox-relative), the
    /// folder of the file that named them.
    #[must_use]
    pub fn anchor(mut self, folder: &std::path::Path) -> Fields {
        for list in [
            &mut self.style_reference_images,
            &mut self.character_reference_images,
            &mut self.character_reference_images_mask,
        ]
        .into_iter()
        .flatten()
        {
            for path in list {
                path.base = folder.to_path_buf();
            }
        }
        self
    }

    /// The reference lists this layer sets, by form name, in sending order.
    #[must_use]
    pub fn references(&self) -> Vec<(&'static str, &[RefPath])> {
        [
            ("style_reference_images", &self.style_reference_images),
            (
                "character_reference_images",
                &self.character_reference_images,
            ),
            (
                "character_reference_images_mask",
                &self.character_reference_images_mask,
            ),
        ]
        .into_iter()
        .filter_map(|(name, list)| list.as_deref().map(|l| (name, l)))
        .collect()
    }

    /// The sidecar keys this layer sets.
    fn keys_set(&self) -> Vec<&'static str> {
        let set = [
            ("prompt", self.prompt.is_some()),
            ("negative_prompt", self.negative_prompt.is_some()),
            ("num_images", self.num_images.is_some()),
            ("rendering_speed", self.rendering_speed.is_some()),
            ("image_weight", self.image_weight.is_some()),
            ("seed", self.seed.is_some()),
            ("resolution", self.resolution.is_some()),
            ("aspect_ratio", self.aspect_ratio.is_some()),
            ("magic_prompt", self.magic_prompt.is_some()),
            ("style_type", self.style_type.is_some()),
            ("style_preset", self.style_preset.is_some()),
            ("style_codes", self.style_codes.is_some()),
            ("color_palette", self.color_palette.is_some()),
            (
                "style_reference_images",
                self.style_reference_images.is_some(),
            ),
            (
                "character_reference_images",
                self.character_reference_images.is_some(),
            ),
            (
                "character_reference_images_mask",
                self.character_reference_images_mask.is_some(),
            ),
        ];
        set.into_iter()
            .filter_map(|(key, is_set)| is_set.then_some(key))
            .collect()
    }

    /// This layer without the fields `operation` does not take: what defaults become for it.
    #[must_use]
    pub fn only_for(self, operation: Operation) -> Fields {
        let takes = |key| operation.takes(key);
        Fields {
            prompt: self.prompt.filter(|_| takes("prompt")),
            negative_prompt: self.negative_prompt.filter(|_| takes("negative_prompt")),
            num_images: self.num_images.filter(|_| takes("num_images")),
            rendering_speed: self.rendering_speed.filter(|_| takes("rendering_speed")),
            image_weight: self.image_weight.filter(|_| takes("image_weight")),
            seed: self.seed.filter(|_| takes("seed")),
            resolution: self.resolution.filter(|_| takes("resolution")),
            aspect_ratio: self.aspect_ratio.filter(|_| takes("aspect_ratio")),
            magic_prompt: self.magic_prompt.filter(|_| takes("magic_prompt")),
            style_type: self.style_type.filter(|_| takes("style_type")),
            style_preset: self.style_preset.filter(|_| takes("style_preset")),
            style_codes: self.style_codes.filter(|_| takes("style_codes")),
            color_palette: self.color_palette.filter(|_| takes("color_palette")),
            extra_fields: self.extra_fields,
            operation: self.operation,
            style_reference_images: self
                .style_reference_images
                .filter(|_| takes("style_reference_images")),
            character_reference_images: self
                .character_reference_images
                .filter(|_| takes("character_reference_images")),
            character_reference_images_mask: self
                .character_reference_images_mask
                .filter(|_| takes("character_reference_images_mask")),
        }
    }

    /// Refuses a field `operation` does not take, naming both.
    fn check_operation(&self, operation: Operation) -> Result<(), RequestError> {
        match self.keys_set().into_iter().find(|k| !operation.takes(k)) {
            None => Ok(()),
            Some(key) => Err(RequestError::Invalid(format!(
                "{key}: the {operation} operation does not take this field (it takes {}); \
                 remove it or choose another operation",
                operation.field_list()
            ))),
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
        let operation = self.operation.unwrap_or_default();
        self.check_operation(operation)?;
        let prompt = self.prompt.as_deref().filter(|p| !p.trim().is_empty());
        if prompt.is_none() && operation.needs_prompt() {
            return Err(RequestError::MissingPrompt);
        }
        if self.resolution.is_none() && operation.needs_resolution() {
            return Err(RequestError::Invalid(format!(
                "resolution: the {operation} operation needs the size to make, e.g. \
                 resolution: 1024x1024"
            )));
        }
        self.check_references()?;
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
            operation,
        })
    }

    /// The rules between reference fields that need no file: one character reference, a
    /// mask only with its reference, and no `style_codes` beside style references.
    fn check_references(&self) -> Result<(), RequestError> {
        let invalid = |m: &str| Err(RequestError::Invalid(m.to_owned()));
        if self.style_codes.is_some() && self.style_reference_images.is_some() {
            return invalid(
                "style_codes and style_reference_images exclude each other: keep only one of them",
            );
        }
        let characters = self.character_reference_images.as_ref().map_or(0, Vec::len);
        if characters > 1 {
            return Err(RequestError::Invalid(format!(
                "character_reference_images: {characters} images given; the API takes exactly one"
            )));
        }
        match (&self.character_reference_images_mask, characters) {
            (Some(_), 0) => invalid(
                "character_reference_images_mask: a mask without its character_reference_images; \
                 name the reference too, or remove the mask",
            ),
            (Some(masks), n) if masks.len() != n => invalid(
                "character_reference_images_mask: give one mask for the one character reference",
            ),
            _ => Ok(()),
        }
    }

    /// The form fields in sending order, once the rules are checked.
    fn form(&self, prompt: Option<&str>, aspect_ratio: Option<&str>) -> Vec<(String, String)> {
        let mut out = Form::default();
        out.push_some("prompt", prompt);
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

/// Merges a job's layers for its operation: `defaults` (the config's, then each
/// `_defaults.yaml` from the inbox root down) and the sidecar. The operation is the strongest
/// layer's; what the defaults set that it does not take is left out (`aspect_ratio: auto` is
/// not sent to reframe), while the sidecar, the one file written for this image, must not set
/// such a field at all.
///
/// # Errors
/// [`RequestError::Invalid`] naming the sidecar's field the operation does not take.
pub fn merge_layers(
    defaults: Vec<Fields>,
    sidecar: Option<Fields>,
) -> Result<Fields, RequestError> {
    let base = defaults
        .into_iter()
        .fold(Fields::default(), Fields::overlay);
    let operation = sidecar
        .as_ref()
        .and_then(|s| s.operation)
        .or(base.operation)
        .unwrap_or_default();
    let mut base = base.only_for(operation);
    base.operation = Some(operation);
    match sidecar {
        None => Ok(base),
        Some(sidecar) => {
            sidecar.check_operation(operation)?;
            Ok(base.overlay(sidecar))
        }
    }
}

/// Form fields in the order they are added.
#[derive(Default)]
pub(super) struct Form(Vec<(String, String)>);

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
        entry("operation", self.operation.map(|op| Value::from(op.name())))?;
        for (name, list) in self.references() {
            let written: Vec<Value> = list
                .iter()
                .map(|r| Value::from(r.written.clone()))
                .collect();
            entry(name, Some(Value::Array(written)))?;
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
