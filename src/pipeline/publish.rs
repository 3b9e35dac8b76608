//! The outbox: where a finished job goes (`output.layout`), what `metadata.json` says, and the
//! one move that makes a job folder appear complete. The quarantine uses the same layout and
//! move.

use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::api::{Answer, OutputItem};
use crate::fsx::{self, Context, FsError};
use crate::job::describe::{SidecarInfo, SourceInfo};
use crate::job::{JobId, SourceRef};
use crate::pipeline::download::Downloaded;

/// The metadata file's name.
pub const METADATA_FILE: &str = "metadata.json";

/// Renders `layout` for a job: `{subdir}`, `{stem}`, `{job_id}`, `{date}` (UTC `YYYY-MM-DD`),
/// `{ext}`. Empty segments are dropped (so `{subdir}` at the inbox root leaves none) and any
/// segment that could climb out (`.`, `..`) is replaced, so the result always stays below the
/// root it is joined to.
#[must_use]
pub fn render_layout(layout: &str, source: &SourceRef, job_id: &JobId, date: &str) -> PathBuf {
    let text = layout
        .replace("{subdir}", &source.subdir)
        .replace("{stem}", source.stem())
        .replace("{job_id}", job_id.as_str())
        .replace("{date}", date)
        .replace("{ext}", &source.ext());
    let mut out = PathBuf::new();
    for segment in text.split('/') {
        match segment {
            "" => {}
            "." | ".." => out.push("_"),
            // File names are at most 255 bytes, and a `-N` suffix may still be added.
            s => out.push(crate::text::cut_bytes(&s.replace('\0', "_"), 240)),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(job_id.as_str());
    }
    debug_assert!(out.components().all(|c| matches!(c, Component::Normal(_))));
    out
}

/// A free destination under `root` for `rel`: `rel` itself, else `rel-2`, `rel-3`, ...
#[must_use]
pub fn free_destination(root: &Path, rel: &Path) -> PathBuf {
    let first = root.join(rel);
    if std::fs::symlink_metadata(&first).is_err() {
        return first;
    }
    let name = rel
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    (2u32..=u32::MAX)
        .map(|n| first.with_file_name(format!("{name}-{n}")))
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .unwrap_or(first)
}

/// Whether `dest` is a complete job folder of `job_id` (its `metadata.json` or `error.json`
/// names the job).
#[must_use]
pub fn holds_job(dest: &Path, job_id: &JobId) -> bool {
    [METADATA_FILE, crate::pipeline::quarantine::ERROR_FILE]
        .iter()
        .any(|name| {
            std::fs::read(dest.join(name))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .is_some_and(|v| v["job_id"] == job_id.as_str())
        })
}

/// Removes remixd's own temporary files (dot-names: `.tmp-*.part`, `.STEM-remix-N.part`) that a
/// crash left in a job's files folder, so they never reach the outbox or quarantine. Inputs
/// never have dot-names: the inbox ignores them.
pub fn remove_temporaries(files: &Path) -> Result<(), FsError> {
    let entries = std::fs::read_dir(files).context("listing a job's files", files)?;
    for entry in entries.filter_map(Result::ok) {
        if entry.file_name().to_string_lossy().starts_with('.') {
            let path = entry.path();
            std::fs::remove_file(&path).context("removing a temporary file", &path)?;
        }
    }
    Ok(())
}

/// Moves a job's files folder to `dest` (creating its parents): one rename on the same
/// filesystem, else a synced copy and rename; either way `dest` appears complete.
pub fn move_out(files: &Path, dest: &Path) -> Result<(), FsError> {
    if let Some(parent) = dest.parent() {
        fsx::create_dir_all_durable(parent).context("creating the destination folder", parent)?;
    }
    fsx::move_dir_durable(files, dest).context("moving the job folder into place", dest)
}

/// One entry of `metadata.json`'s `outputs`.
#[derive(Debug, Clone, Serialize)]
pub struct OutputEntry {
    /// File name in the job folder; null when withheld for safety or not downloaded.
    pub file: Option<String>,
    /// Where it was downloaded from.
    pub url: Option<String>,
    /// Seed used.
    pub seed: Option<i64>,
    /// Resolution.
    pub resolution: Option<String>,
    /// Whether the API judged it safe.
    pub is_image_safe: bool,
    /// Style used.
    pub style_type: Option<String>,
    /// Prompt the API used.
    pub prompt: Option<String>,
    /// Size in bytes.
    pub bytes: Option<u64>,
    /// Hex SHA-256.
    pub sha256: Option<String>,
}

impl OutputEntry {
    /// Joins the API's description of an output with the file kept for it, if any.
    #[must_use]
    pub fn new(item: &OutputItem, kept: Option<&Downloaded>) -> Self {
        Self {
            file: kept.map(|d| d.file.clone()),
            url: item.url.clone(),
            seed: item.seed,
            resolution: item.resolution.clone(),
            is_image_safe: item.is_image_safe,
            style_type: item.style_type.clone(),
            prompt: item.prompt.clone(),
            bytes: kept.map(|d| d.bytes),
            sha256: kept.map(|d| d.sha256.clone()),
        }
    }
}

/// `metadata.json`'s `timings`.
#[derive(Debug, Clone, Serialize)]
pub struct MetadataTimings {
    /// RFC 3339.
    pub detected_at: Option<String>,
    /// RFC 3339.
    pub claimed_at: Option<String>,
    /// RFC 3339.
    pub submitted_at: Option<String>,
    /// RFC 3339.
    pub responded_at: Option<String>,
    /// RFC 3339.
    pub completed_at: String,
    /// Time waiting for the API.
    pub api_ms: u64,
    /// Time downloading.
    pub download_ms: u64,
    /// Detection to completion.
    pub total_ms: u64,
}

/// `metadata.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Metadata {
    /// The job's id.
    pub job_id: String,
    /// The remixd version.
    pub remixd_version: String,
    /// `kkiai`, `ideogram` or `dry-run`.
    pub provider: String,
    /// The endpoint called; null for dry-run.
    pub endpoint: Option<String>,
    /// The input.
    pub source: SourceInfo,
    /// The sidecar; null when there was none.
    pub sidecar: Option<SidecarInfo>,
    /// Every form field as sent, minus the image.
    pub request: serde_json::Map<String, serde_json::Value>,
    /// The API's JSON as received.
    pub response: serde_json::Value,
    /// One entry per output, in the API's order.
    pub outputs: Vec<OutputEntry>,
    /// Requests sent.
    pub attempts: u32,
    /// When things happened.
    pub timings: MetadataTimings,
}

/// The `request` object: form fields by name; a repeated field becomes an array.
#[must_use]
pub fn request_object(fields: &[(String, String)]) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::Value;
    let mut map = serde_json::Map::new();
    for (name, value) in fields {
        let value = Value::String(value.clone());
        match map.get_mut(name) {
            None => {
                map.insert(name.clone(), value);
            }
            Some(Value::Array(list)) => list.push(value),
            Some(first) => *first = Value::Array(vec![first.take(), value]),
        }
    }
    map
}

/// The outputs entries for an answer and the files kept (by 1-based position).
#[must_use]
pub fn output_entries(answer: &Answer, kept: &[Option<Downloaded>]) -> Vec<OutputEntry> {
    answer
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| OutputEntry::new(item, kept.get(i).and_then(Option::as_ref)))
        .collect()
}

/// Writes `metadata.json` durably into the job's files folder.
pub fn write_metadata(files: &Path, metadata: &Metadata) -> Result<(), FsError> {
    let path = files.join(METADATA_FILE);
    fsx::write_json(&path, metadata, crate::secrets::scrub_bytes)
        .context("writing metadata.json", &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(subdir: &str, file: &str) -> SourceRef {
        SourceRef {
            subdir: subdir.into(),
            file: file.into(),
            sidecar: None,
            raw: None,
        }
    }

    #[test]
    fn layout_at_inbox_root_has_no_empty_segment() {
        let id = JobId::new();
        let rel = render_layout("{subdir}/{stem}-{job_id}", &source("", "cat.png"), &id, "d");
        assert_eq!(rel, PathBuf::from(format!("cat-{id}")));
    }

    #[test]
    fn layout_keeps_subfolders_and_placeholders() {
        let id = JobId::new();
        let rel = render_layout(
            "{date}/{subdir}/{stem}.{ext}-{job_id}",
            &source("a/b", "Cat.JPG"),
            &id,
            "2026-01-02",
        );
        assert_eq!(rel, PathBuf::from(format!("2026-01-02/a/b/Cat.jpg-{id}")));
    }

    #[test]
    fn layout_cannot_climb_out() {
        let id = JobId::new();
        let rel = render_layout("{subdir}/../{stem}", &source("..", ".."), &id, "d");
        assert!(rel.components().all(|c| matches!(c, Component::Normal(_))));
    }

    #[test]
    fn repeated_fields_become_arrays() {
        let fields = vec![
            ("prompt".to_owned(), "p".to_owned()),
            ("style_codes".to_owned(), "AAAAAAAA".to_owned()),
            ("style_codes".to_owned(), "BBBBBBBB".to_owned()),
        ];
        let obj = request_object(&fields);
        assert_eq!(obj["prompt"], "p");
        assert_eq!(
            obj["style_codes"],
            serde_json::json!(["AAAAAAAA", "BBBBBBBB"])
        );
    }
}

#[cfg(test)]
mod recovery_tests {
    use super::*;

    #[test]
    fn temporaries_are_removed_and_inputs_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["cat.png", "cat.yaml", ".tmp-x.part", ".cat-remix-1.part"] {
            std::fs::write(dir.path().join(name), b"x").expect("write");
        }
        remove_temporaries(dir.path()).expect("clean");
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["cat.png", "cat.yaml"]);
    }

    #[test]
    fn holds_job_checks_the_job_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = JobId::new();
        assert!(!holds_job(dir.path(), &id));
        let json = serde_json::json!({ "job_id": id.as_str() }).to_string();
        std::fs::write(dir.path().join(METADATA_FILE), json).expect("write");
        assert!(holds_job(dir.path(), &id));
        assert!(!holds_job(dir.path(), &JobId::new()));
    }
}
