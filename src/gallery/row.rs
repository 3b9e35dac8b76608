//! One finished job as the gallery shows it: a row built once, when the job ends, from the
//! `metadata.json` or `error.json` in its folder. Rows are what the owners' logs hold, so the
//! pages never need to read a job folder again.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::job::SourceRef;

/// Longest prompt or message kept in a row; the job's own files hold the whole text.
const MAX_TEXT_BYTES: usize = 2000;

/// One finished job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Row {
    pub job_id: String,
    /// When it ended (RFC 3339, UTC), the order of the pages.
    pub at: String,
    /// Ended in the quarantine (else the outbox).
    pub quarantined: bool,
    /// `{subdir}`, escaped if not UTF-8.
    pub subdir: String,
    /// The job folder relative to the outbox or quarantine, `/`-separated.
    pub dir: String,
    /// The original's name, escaped if not UTF-8.
    pub file: String,
    /// The original's name as bytes, only when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_raw: Option<Vec<u8>>,
    /// The original's size in pixels, when it is an image.
    #[serde(default)]
    pub size: Option<(u32, u32)>,
    #[serde(default)]
    pub outputs: Vec<Slot>,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub operation: Option<String>,
    /// Form fields sent besides the prompt, as (name, shown value).
    #[serde(default)]
    pub fields: Vec<(String, String)>,
    #[serde(default)]
    pub cost_usd: Option<f64>,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// One output position of the API's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Slot {
    /// The file kept for it; `None` when withheld for safety.
    pub file: Option<String>,
    /// Width and height from the API's `resolution`.
    #[serde(default)]
    pub size: Option<(u32, u32)>,
}

impl Row {
    /// The row for the job folder `dest` under `root`, which holds `metadata.json` (published)
    /// or `error.json` (quarantined). `None` when neither can be read.
    pub(crate) fn read(root: &Path, dest: &Path, source: &SourceRef) -> Option<Self> {
        let dir = dest.strip_prefix(root).ok()?.to_str()?.to_owned();
        let (quarantined, doc) = match read_json(&dest.join(crate::job::METADATA_FILE)) {
            Some(doc) => (false, doc),
            None => (true, read_json(&dest.join(crate::job::ERROR_FILE))?),
        };
        let text = |v: &Value| {
            v.as_str()
                .map(|s| crate::text::cut_bytes(s, MAX_TEXT_BYTES).to_owned())
        };
        let src = &doc["source"];
        let size = src["width"].as_u64().zip(src["height"].as_u64());
        let at = if quarantined {
            &doc["at"]
        } else {
            &doc["timings"]["completed_at"]
        };
        let request = doc["request"].as_object();
        Some(Self {
            job_id: text(&doc["job_id"])?,
            at: text(at).unwrap_or_else(crate::clock::now_rfc3339),
            quarantined,
            subdir: source.subdir.clone(),
            dir,
            file: source.file.clone(),
            file_raw: source.raw.as_ref().map(|r| r.file.clone()),
            size: size.map(|(w, h)| (w as u32, h as u32)),
            outputs: doc["outputs"]
                .as_array()
                .map(|list| list.iter().map(Slot::from_entry).collect())
                .unwrap_or_default(),
            prompt: request.and_then(|r| r.get("prompt")).and_then(text),
            operation: text(&doc["operation"])
                .or_else(|| (!quarantined).then(|| operation_from(doc["endpoint"].as_str()))),
            fields: request.map(shown_fields).unwrap_or_default(),
            cost_usd: doc["cost"]["usd"].as_f64(),
            provider: text(&doc["provider"]),
            reason: text(&doc["reason"]),
            message: text(&doc["message"]),
        })
    }

    /// The original's name as it is on disk.
    pub(crate) fn file_bytes(&self) -> &[u8] {
        self.file_raw.as_deref().unwrap_or(self.file.as_bytes())
    }

    /// The order of the pages: by end time, then id, so every process sorts alike.
    pub(crate) fn key(&self) -> (String, String) {
        (self.at.clone(), self.job_id.clone())
    }
}

impl Slot {
    fn from_entry(entry: &Value) -> Self {
        let size = entry["resolution"].as_str().and_then(|r| {
            let (w, h) = r.split_once('x')?;
            Some((w.parse().ok()?, h.parse().ok()?))
        });
        Self {
            file: entry["file"].as_str().map(str::to_owned),
            size,
        }
    }
}

fn read_json(path: &Path) -> Option<Value> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `remix` from `…/v1/ideogram-v3/remix`; a dry run (no endpoint) is a remix too unless
/// its metadata names the operation.
fn operation_from(endpoint: Option<&str>) -> String {
    endpoint
        .and_then(|e| e.rsplit('/').next())
        .unwrap_or("remix")
        .to_owned()
}

/// The request's fields worth showing beside the pictures, in the request's order: every
/// field but the prompt, reference files by name.
fn shown_fields(request: &serde_json::Map<String, Value>) -> Vec<(String, String)> {
    request
        .iter()
        .filter(|(name, _)| name.as_str() != "prompt")
        .map(|(name, value)| (name.clone(), shown_value(value)))
        .collect()
}

fn shown_value(value: &Value) -> String {
    match value {
        Value::String(s) => crate::text::cut_bytes(s, 200).to_owned(),
        Value::Array(items) => items.iter().map(shown_value).collect::<Vec<_>>().join(", "),
        // A reference file: `{file, bytes, sha256}`, shown by its name.
        Value::Object(map) => map
            .get("file")
            .and_then(Value::as_str)
            .map_or_else(|| value.to_string(), str::to_owned),
        other => other.to_string(),
    }
}
