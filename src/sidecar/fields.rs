//! Checking every field of a parsed sidecar: types, ranges, enums, shapes.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use super::{
    AspectRatio, Fields, KEYS, MAGIC_PROMPTS, OPERATIONS, Operation, RENDERING_SPEEDS, RefPath,
    STYLE_TYPES, SidecarError,
};
use crate::image_info::ASPECT_RATIOS;

/// Checks a whole document: nothing at all, or a map of known fields.
pub(super) fn fields_from_value(value: Value) -> Result<Fields, SidecarError> {
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

pub(super) fn set_field(f: &mut Fields, key: &str, v: Value) -> Result<(), SidecarError> {
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
        "operation" => f.operation = Some(operation(key, v)?),
        "style_reference_images" => f.style_reference_images = Some(ref_paths(key, v)?),
        "character_reference_images" => f.character_reference_images = Some(ref_paths(key, v)?),
        "character_reference_images_mask" => {
            f.character_reference_images_mask = Some(ref_paths(key, v)?);
        }
        _ => {
            return Err(SidecarError(format!(
                "unknown key \"{key}\"; the keys are: {}",
                KEYS.join(", ")
            )));
        }
    }
    Ok(())
}

pub(super) fn field_error(key: &str, problem: impl fmt::Display) -> SidecarError {
    SidecarError(format!("{key}: {problem}"))
}

/// A short name for a value's kind, for "expected X, found Y" messages.
pub(super) fn kind_of(value: &Value) -> &'static str {
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
pub(super) fn cut(s: &str) -> String {
    const MAX_CHARS: usize = 40;
    if s.chars().count() > MAX_CHARS {
        s.chars().take(MAX_CHARS).chain(['…']).collect()
    } else {
        s.to_owned()
    }
}

/// A user's text quoted for a message.
pub(super) fn quoted(s: &str) -> String {
    format!("\"{}\"", cut(s))
}

pub(super) fn text(key: &str, v: Value) -> Result<String, SidecarError> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(field_error(
            key,
            format!("expected text, found {}; put it in quotes", kind_of(&other)),
        )),
    }
}

/// A whole number in `min..=max`, written as a number or as digits in text (`"2"`).
pub(super) fn whole<T: TryFrom<i64>>(
    key: &str,
    v: &Value,
    min: i64,
    max: i64,
) -> Result<T, SidecarError> {
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
pub(super) fn choice(key: &str, v: Value, allowed: &[&str]) -> Result<String, SidecarError> {
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

pub(super) fn magic_prompt(key: &str, v: Value) -> Result<String, SidecarError> {
    match v {
        Value::Bool(true) => Ok("ON".to_owned()),
        Value::Bool(false) => Ok("OFF".to_owned()),
        other => choice(key, other, &MAGIC_PROMPTS),
    }
}

pub(super) fn style_preset(key: &str, v: Value) -> Result<String, SidecarError> {
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

pub(super) fn resolution(key: &str, v: Value) -> Result<String, SidecarError> {
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

pub(super) fn aspect_ratio(key: &str, v: Value) -> Result<AspectRatio, SidecarError> {
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

pub(super) fn style_codes(key: &str, v: Value) -> Result<Vec<String>, SidecarError> {
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

pub(super) fn style_code(key: &str, v: Value) -> Result<String, SidecarError> {
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

pub(super) const PALETTE_SHAPE: &str =
    "expected {name: PRESET} or {members: [{color_hex: \"#RRGGBB\", color_weight: 0.5}, ...]}";

pub(super) fn color_palette(key: &str, v: Value) -> Result<Value, SidecarError> {
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

pub(super) fn palette_members(v: Value) -> Result<Value, SidecarError> {
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

pub(super) fn palette_member(key: &str, v: Value) -> Result<Value, SidecarError> {
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

pub(super) fn color_hex(key: &str, v: Value) -> Result<String, SidecarError> {
    let s = text(key, v)?;
    let hex = s.trim();
    match hex.strip_prefix('#') {
        Some(digits) if digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(hex.to_owned())
        }
        _ => Err(field_error(key, format!("{} is not #RRGGBB", quoted(&s)))),
    }
}

pub(super) fn color_weight(key: &str, v: &Value) -> Result<Value, SidecarError> {
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
pub(super) fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(super) fn extra_fields(key: &str, v: Value) -> Result<BTreeMap<String, Value>, SidecarError> {
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
        if ["image", "mask"].contains(&name.as_str()) || name.trim().is_empty() {
            return Err(field_error(
                key,
                format!("{} cannot be used as a field name", quoted(name)),
            ));
        }
    }
    Ok(map.into_iter().collect())
}

pub(super) fn operation(key: &str, v: Value) -> Result<Operation, SidecarError> {
    let s = text(key, v)?;
    Operation::parse(&s).ok_or_else(|| {
        let names: Vec<&str> = OPERATIONS.iter().map(|op| op.name()).collect();
        field_error(
            key,
            format!("{} is not one of {}", quoted(&s), names.join(", ")),
        )
    })
}

/// A list of paths (one path alone is a list of one), each relative to the naming file's
/// folder; where that folder is, the caller says ([`Fields::anchor`]).
pub(super) fn ref_paths(key: &str, v: Value) -> Result<Vec<RefPath>, SidecarError> {
    let items = match v {
        Value::Array(items) => items,
        single @ Value::String(_) => vec![single],
        other => {
            return Err(field_error(
                key,
                format!(
                    "expected a list of image paths such as [_refs/style.png], found {}",
                    kind_of(&other)
                ),
            ));
        }
    };
    if items.is_empty() {
        return Err(field_error(
            key,
            "the list is empty; name an image or remove the key",
        ));
    }
    items.into_iter().map(|item| ref_path(key, item)).collect()
}

fn ref_path(key: &str, item: Value) -> Result<RefPath, SidecarError> {
    let written = text(key, item)?.trim().to_owned();
    if written.is_empty() || written.contains('\0') {
        return Err(field_error(key, "an empty path; name an image file"));
    }
    if std::path::Path::new(&written).is_absolute() {
        return Err(field_error(
            key,
            format!(
                "\"{written}\": absolute paths are not allowed; write it relative to the folder of this file"
            ),
        ));
    }
    Ok(RefPath {
        base: std::path::PathBuf::new(),
        written,
    })
}
