//! Reading YAML and JSON into a value with hard limits on depth, size and alias expansion, so
//! hostile sidecars are refused quickly and in bounded memory.

use std::cell::Cell;
use std::fmt;

use serde::de::{self as de, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::fields::kind_of;
use super::{MAX_DEPTH, MAX_NODES, MAX_SIDECAR_BYTES, MAX_TEXT_BYTES, SidecarError};

pub(super) fn read_yaml(text: &str) -> Result<Value, SidecarError> {
    let limits = Limits::default();
    Bounded::new(&limits)
        .deserialize(serde_yaml::Deserializer::from_str(text))
        .map_err(|e| SidecarError(format!("bad YAML: {e}")))
}

pub(super) fn read_json(text: &str) -> Result<Value, SidecarError> {
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
pub(super) struct Limits {
    pub(super) nodes: Cell<usize>,
    pub(super) text_bytes: Cell<usize>,
}

/// Reads any YAML or JSON value into a `serde_json::Value`, refusing, while reading, what
/// would take unbounded memory: YAML aliases are replayed by the parser, so a "billion laughs"
/// document only stops when this budget says so.
#[derive(Clone, Copy)]
pub(super) struct Bounded<'a> {
    pub(super) limits: &'a Limits,
    pub(super) depth: usize,
}

impl<'a> Bounded<'a> {
    pub(super) fn new(limits: &'a Limits) -> Self {
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
