//! A job's verdict: why it ends in the quarantine ([`Reason`], SPEC.md's reason table), what
//! to tell the user ([`Verdict`]), and the record `error.json` and the journal keep of it
//! ([`ErrorRecord`]). Writing that file and moving the folder are the quarantine stage's
//! business ([`crate::pipeline::quarantine`]).

use serde::{Deserialize, Serialize};

use super::describe::{SidecarInfo, SourceInfo};

/// Why a job was quarantined (SPEC.md's reason table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Not PNG/JPEG/WebP by its bytes, or not an image file at all.
    UnsupportedFormat,
    /// Over `limits.max_image_bytes`.
    TooLarge,
    /// Zero bytes.
    EmptyFile,
    /// A symlink, FIFO, socket, device, or a file with other hard links.
    NotRegularFile,
    /// No prompt from sidecar, `_defaults.yaml` or config.
    MissingPrompt,
    /// The sidecar (or a `_defaults.yaml`) could not be used.
    InvalidSidecar,
    /// A sidecar whose image never came.
    OrphanSidecar,
    /// The API refused this request.
    RejectedByApi,
    /// Safety refusal, or every output withheld.
    UnsafeContent,
    /// Transient failures for this job past `retry.max_attempts` while the API worked for others.
    RetriesExhausted,
    /// An output could not be fetched or was not an image.
    DownloadFailed,
    /// The API's answer could not be used.
    BadResponse,
    /// `retry.resend_after_timeout: false` and the request's answer never came after its
    /// upload (it may have been billed).
    AnswerLost,
    /// An `inpaint` job whose `STEM.mask.*` never came.
    MissingMask,
}

impl Reason {
    /// The name used in `error.json` and logs.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::UnsupportedFormat => "unsupported_format",
            Self::TooLarge => "too_large",
            Self::EmptyFile => "empty_file",
            Self::NotRegularFile => "not_regular_file",
            Self::MissingPrompt => "missing_prompt",
            Self::InvalidSidecar => "invalid_sidecar",
            Self::OrphanSidecar => "orphan_sidecar",
            Self::RejectedByApi => "rejected_by_api",
            Self::UnsafeContent => "unsafe_content",
            Self::RetriesExhausted => "retries_exhausted",
            Self::DownloadFailed => "download_failed",
            Self::BadResponse => "bad_response",
            Self::AnswerLost => "answer_lost",
            Self::MissingMask => "missing_mask",
        }
    }
}

/// A job's end in the quarantine, before it is written: the reason and what to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Why.
    pub reason: Reason,
    /// Plain words: what was wrong and what to do.
    pub message: String,
    /// HTTP status of the answer that decided it, if any.
    pub http_status: Option<u16>,
    /// The API's error body, cut to 4 KiB.
    pub api_error: Option<String>,
}

impl Verdict {
    /// A verdict about the file itself (no HTTP involved).
    #[must_use]
    pub fn file(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            http_status: None,
            api_error: None,
        }
    }
}

/// `error.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// The job's id.
    pub job_id: String,
    /// Why.
    pub reason: Reason,
    /// Plain words: what was wrong and what to do.
    pub message: String,
    /// The stage the job had reached.
    pub stage: String,
    /// Requests sent.
    pub attempts: u32,
    /// Requests that may have been billed.
    #[serde(default)]
    pub billable_attempts: u32,
    /// What may have been billed for this job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::api::billing::Cost>,
    /// HTTP status of the deciding answer.
    pub http_status: Option<u16>,
    /// The API's error body, cut to 4 KiB.
    pub api_error: Option<String>,
    /// The input.
    pub source: SourceInfo,
    /// The sidecar, if any.
    pub sidecar: Option<SidecarInfo>,
    /// When it was quarantined (RFC 3339).
    pub at: String,
    /// The remixd version.
    pub remixd_version: String,
}

/// What `error.json` says of an entry quarantined as soon as it is claimed.
#[must_use]
pub fn stray_message(reason: Reason) -> String {
    match reason {
        Reason::NotRegularFile => "this entry is a symlink, FIFO, socket or device, which remixd never opens or follows; it was moved here as it is. Put the image file itself in the inbox".into(),
        Reason::OrphanSidecar => "this sidecar's (or inpaint mask's) image never arrived (watch.orphan_after); drop the image and requeue, or delete this".into(),
        Reason::UnsupportedFormat => "remixd only takes PNG, JPEG or WebP images (.png .jpg .jpeg .webp) and their sidecars (.yaml .yml .json .txt); convert the file and drop it in again".into(),
        other => format!("quarantined: {}", other.name()),
    }
}
