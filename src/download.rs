//! Fetching one output: streamed to a temporary file in the job folder, checked (HTTP status,
//! length, image magic), then renamed to `STEM-remix-N.EXT` with EXT from the bytes. Retrying
//! is the pipeline's business; this module says whether a failure is worth retrying.
//!
//! INTERFACE (skeleton): the helper implementing this module keeps the pub items below.

use std::path::Path;
use std::time::Duration;

use crate::image_info::ImageFormat;

/// One output kept on disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Downloaded {
    /// File name inside the job's files folder.
    pub file: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// Format from the bytes.
    pub format: ImageFormat,
}

/// Why an output could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownloadError {
    /// Worth another try (connection, timeout, 5xx, 429, cut short).
    #[error("{0}")]
    Transient(String),
    /// Will not get better (404/410/403, not an image, too large, bad URL).
    #[error("{0}")]
    Permanent(String),
    /// Writing it failed (disk full, read-only): never the file's fault.
    #[error("{0}")]
    Local(String),
}

/// Limits for one download.
#[derive(Debug, Clone, Copy)]
pub struct DownloadLimits {
    /// Whole-download timeout.
    pub timeout: Duration,
    /// Largest output accepted.
    pub max_bytes: u64,
}

/// Fetches `url` into `dir` as `{stem}-remix-{n}.{ext}`.
///
/// # Errors
/// A [`DownloadError`] saying whether to retry.
pub async fn fetch(
    http: &reqwest::Client,
    url: &str,
    dir: &Path,
    stem: &str,
    n: usize,
    limits: DownloadLimits,
) -> Result<Downloaded, DownloadError> {
    let _ = (http, url, dir, stem, n, limits);
    todo!()
}

/// An output already fetched by an earlier run (`{stem}-remix-{n}.*` with image bytes), re-hashed.
#[must_use]
pub fn existing(dir: &Path, stem: &str, n: usize) -> Option<Downloaded> {
    let _ = (dir, stem, n);
    todo!()
}
