//! Which of Ideogram's image edits a job asks for (`operation:`), and the fields each one
//! takes (SPEC.md's operation table). Which fields a layer set is the caller's to know; this
//! module only answers "does this operation take that field, and what does it require".

use std::fmt;

use serde::{Deserialize, Serialize};

/// One of Ideogram 3.0's edits of an input image; each has its own endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    /// `remix`: a new image from the input and a prompt (the default).
    #[default]
    Remix,
    /// `reframe`: the input extended to a new `resolution`; no prompt.
    Reframe,
    /// `replace-background`: the subject kept, the background redrawn from the prompt.
    ReplaceBackground,
    /// `inpaint`: the black part of the mask (`STEM.mask.*`) redrawn from the prompt.
    Inpaint,
}

/// The operations, in the order they are listed in messages.
pub const OPERATIONS: [Operation; 4] = [
    Operation::Remix,
    Operation::Reframe,
    Operation::ReplaceBackground,
    Operation::Inpaint,
];

/// Fields every operation takes besides its own: passed through untouched.
const EVERYWHERE: [&str; 2] = ["operation", "extra_fields"];

const REMIX: &[&str] = &[
    "prompt",
    "image_weight",
    "seed",
    "resolution",
    "aspect_ratio",
    "rendering_speed",
    "magic_prompt",
    "negative_prompt",
    "num_images",
    "color_palette",
    "style_codes",
    "style_type",
    "style_preset",
    "style_reference_images",
    "character_reference_images",
    "character_reference_images_mask",
];

const REFRAME: &[&str] = &[
    "resolution",
    "num_images",
    "seed",
    "rendering_speed",
    "style_preset",
    "color_palette",
    "style_codes",
    "style_reference_images",
];

const REPLACE_BACKGROUND: &[&str] = &[
    "prompt",
    "magic_prompt",
    "num_images",
    "seed",
    "rendering_speed",
    "style_preset",
    "color_palette",
    "style_codes",
    "style_reference_images",
];

const INPAINT: &[&str] = &[
    "prompt",
    "magic_prompt",
    "num_images",
    "seed",
    "rendering_speed",
    "style_type",
    "style_preset",
    "color_palette",
    "style_codes",
    "style_reference_images",
    "character_reference_images",
    "character_reference_images_mask",
];

impl Operation {
    /// The name in sidecars, the endpoint's last segment and output names.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Remix => "remix",
            Self::Reframe => "reframe",
            Self::ReplaceBackground => "replace-background",
            Self::Inpaint => "inpaint",
        }
    }

    /// The operation named `text` (any case; `_` for `-` too).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let wanted = text.trim().to_ascii_lowercase().replace('_', "-");
        OPERATIONS.into_iter().find(|op| op.name() == wanted)
    }

    /// Whether this operation takes the sidecar field `key`.
    #[must_use]
    pub fn takes(self, key: &str) -> bool {
        EVERYWHERE.contains(&key) || self.fields().contains(&key)
    }

    /// Whether the request needs a prompt.
    #[must_use]
    pub fn needs_prompt(self) -> bool {
        self != Self::Reframe
    }

    /// Whether the request needs `resolution`.
    #[must_use]
    pub fn needs_resolution(self) -> bool {
        self == Self::Reframe
    }

    /// Whether the request needs the image's mask (`STEM.mask.*`).
    #[must_use]
    pub fn needs_mask(self) -> bool {
        self == Self::Inpaint
    }

    fn fields(self) -> &'static [&'static str] {
        match self {
            Self::Remix => REMIX,
            Self::Reframe => REFRAME,
            Self::ReplaceBackground => REPLACE_BACKGROUND,
            Self::Inpaint => INPAINT,
        }
    }

    /// The fields it takes, for messages.
    #[must_use]
    pub fn field_list(self) -> String {
        self.fields().join(", ")
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_operation_takes_what_the_spec_table_says() {
        assert!(Operation::Remix.takes("aspect_ratio"));
        assert!(!Operation::Reframe.takes("prompt"));
        assert!(!Operation::Reframe.takes("aspect_ratio"));
        assert!(Operation::Reframe.takes("style_reference_images"));
        assert!(!Operation::ReplaceBackground.takes("character_reference_images"));
        assert!(!Operation::ReplaceBackground.takes("style_type"));
        assert!(Operation::Inpaint.takes("style_type"));
        assert!(!Operation::Inpaint.takes("image_weight"));
        for op in OPERATIONS {
            assert!(op.takes("extra_fields") && op.takes("operation"), "{op}");
            assert_eq!(Operation::parse(&op.name().to_uppercase()), Some(op));
        }
        assert_eq!(
            Operation::parse("replace_background"),
            Some(Operation::ReplaceBackground)
        );
        assert_eq!(Operation::parse("upscale"), None);
        assert!(Operation::Reframe.needs_resolution() && !Operation::Reframe.needs_prompt());
        assert!(Operation::Inpaint.needs_mask() && Operation::Inpaint.needs_prompt());
    }
}
