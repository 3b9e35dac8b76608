//! The publish stage: `metadata.json` written and the outbox destination journaled
//! (`begin`), then the move into the outbox (`complete`, shared with the quarantine through
//! [`super::finish`]).

use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;
use tracing::info;

use super::ctx::{Ctx, Job};
use super::download::Downloaded;
use super::finish;
use crate::api::billing::{self, Cost};
use crate::api::{Answer, OutputItem};
use crate::clock::rfc3339;
use crate::config::Provider;
use crate::events;
use crate::fsx::{self, Context, FsError};
use crate::job::Stage;
use crate::job::describe::{SidecarInfo, SourceInfo, describe};

pub use crate::job::METADATA_FILE;

/// Writes `metadata.json` for the answer and the outputs kept, then journals `publishing`
/// with the job's place in the outbox. Reads the job's config snapshot once.
pub(super) fn begin(
    ctx: &Ctx,
    job: &mut Job,
    answer: &Answer,
    kept: &[Option<Downloaded>],
) -> Result<(), FsError> {
    let files = job.dir.files();
    finish::remove_temporaries(&files)?;
    let config = &*job.config;
    let rec = &job.rec;
    let (source, sidecar) = describe(&files, &rec.source);
    let operation = rec.operation();
    let at = |t: Option<SystemTime>| t.map(rfc3339);
    let metadata = Metadata {
        job_id: rec.job_id.to_string(),
        remixd_version: crate::VERSION.to_owned(),
        provider: config.api.provider.name().to_owned(),
        operation: operation.name().to_owned(),
        endpoint: (config.api.provider != Provider::DryRun).then(|| ctx.api.endpoint(operation)),
        source,
        sidecar,
        request: request_with_files(&files, rec),
        response: answer.raw.clone(),
        outputs: output_entries(answer, kept),
        attempts: rec.attempts,
        billable_attempts: rec.billable_attempts,
        cost: job_cost(job),
        timings: MetadataTimings {
            detected_at: at(rec.timings.detected_at),
            claimed_at: at(rec.timings.claimed_at),
            submitted_at: at(rec.timings.submitted_at),
            responded_at: at(rec.timings.responded_at),
            completed_at: rfc3339(SystemTime::now()),
            api_ms: rec.timings.api_ms,
            download_ms: rec.timings.download_ms,
            total_ms: rec.timings.total_ms(),
        },
    };
    write_metadata(&files, &metadata)?;
    let dest = finish::destination(&config.outbox, &config.layout, rec);
    job.rec.stage = Stage::Publishing { dest };
    job.dir.write(&job.rec)
}

/// Moves the job's folder into the outbox at `dest` and logs `job.completed`.
pub(super) fn complete(job: &Job, dest: &Path) -> Result<(), FsError> {
    finish::finish_move(&job.dir, &job.rec, dest, METADATA_FILE)?;
    let marker = format!("-{}-", job.rec.operation());
    let outputs = std::fs::read_dir(dest).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(&marker))
            .count()
    });
    info!(event = events::JOB_COMPLETED, outputs, dir = %dest.display(),
        total_ms = job.rec.timings.total_ms(), "published to the outbox");
    Ok(())
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
    /// The upscaled output's size, when the API sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upscaled_resolution: Option<String>,
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
            upscaled_resolution: item.upscaled_resolution.clone(),
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
    /// `remix`, `reframe`, `replace-background` or `inpaint`.
    pub operation: String,
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
    /// Requests that may have been billed.
    pub billable_attempts: u32,
    /// What may have been billed: every billable request's images at `pricing`.
    pub cost: Cost,
    /// When things happened.
    pub timings: MetadataTimings,
}

/// What a job may have cost so far: each billable request at the job's `pricing` (a dry run
/// sends nothing and costs nothing).
pub(super) fn job_cost(job: &Job) -> Cost {
    if job.config.api.provider == Provider::DryRun {
        return Cost {
            usd: 0.0,
            images: 0,
            basis: "dry-run".to_owned(),
        };
    }
    let (price, images) = job.rec.request.as_ref().map_or((0.0, 0), |r| {
        (job.request_price(r), u32::from(r.num_images))
    });
    billing::job_cost(job.rec.billable_attempts, images, price)
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

/// `request` with the files sent besides the image: each reference field as a list of
/// `{file, bytes, sha256}` (`file` relative to the inbox; the hashes are those of the copies
/// sent), and the inpaint mask as `mask: {file, bytes, sha256}`.
#[must_use]
pub fn request_with_files(
    files: &Path,
    rec: &crate::job::JobRecord,
) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::{Value, json};
    let mut map = request_object(rec.request.as_ref().map_or(&[][..], |r| &r.fields));
    for copy in &rec.references {
        let entry = json!({"file": copy.file, "bytes": copy.bytes, "sha256": copy.sha256});
        match map
            .entry(copy.field.clone())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(list) => list.push(entry),
            other => *other = Value::Array(vec![entry]),
        }
    }
    if let Some((name, os)) = rec.sent_mask() {
        let hashed = crate::job::describe::hash_file(&files.join(os));
        let file = if rec.source.subdir.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", rec.source.subdir)
        };
        map.insert(
            "mask".into(),
            json!({"file": file, "bytes": hashed.as_ref().map(|h| h.bytes),
                   "sha256": hashed.map(|h| h.sha256)}),
        );
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
