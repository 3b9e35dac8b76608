//! Fetching every output of a recorded answer, retrying what is transient.

use std::path::Path;

use tokio::time::Instant;
use tracing::warn;

use super::{Ctx, MAX_OUTPUT_BYTES, backoff};
use crate::api::Answer;
use crate::fsx::FsError;
use crate::job::JobRecord;
use crate::job::journal::JobDir;
use crate::job::verdict::{Reason, Verdict};
use crate::pipeline::download::{self, DownloadError, DownloadLimits, Downloaded};

/// Fetches every output not already kept. `Ok(Err)` is a verdict for the job.
pub(super) async fn download_all(
    ctx: &Ctx,
    dir: &JobDir,
    rec: &mut JobRecord,
    answer: &Answer,
) -> Result<Result<Vec<Option<Downloaded>>, Verdict>, FsError> {
    let files = dir.files();
    let stem = rec.source.stem().to_owned();
    let limits = DownloadLimits {
        timeout: ctx.config().api.request_timeout,
        max_bytes: MAX_OUTPUT_BYTES,
        allow_private: crate::api::public_only::private_allowed(
            ctx.config().api.base_url.as_deref(),
        ),
    };
    let started = Instant::now();
    let mut kept = Vec::new();
    for (i, item) in answer.items.iter().enumerate() {
        let n = i + 1;
        if let Some(done) = download::existing(&files, &stem, n) {
            kept.push(Some(done));
            continue;
        }
        let Some(url) = item.url.as_deref().filter(|_| item.is_image_safe) else {
            kept.push(None);
            continue;
        };
        match fetch_with_retry(ctx, url, &files, &stem, n, limits).await? {
            Ok(done) => kept.push(Some(done)),
            Err(message) => {
                rec.timings.download_ms += started.elapsed().as_millis() as u64;
                return Ok(Err(Verdict::file(
                    Reason::DownloadFailed,
                    format!(
                        "output {n} could not be downloaded: {message}; the outputs already fetched are kept here. Requeue the job to submit it again (this pays for a new remix)"
                    ),
                )));
            }
        }
    }
    rec.timings.download_ms += started.elapsed().as_millis() as u64;
    Ok(Ok(kept))
}

pub(super) async fn fetch_with_retry(
    ctx: &Ctx,
    url: &str,
    files: &Path,
    stem: &str,
    n: usize,
    limits: DownloadLimits,
) -> Result<Result<Downloaded, String>, FsError> {
    let retry = &ctx.config().retry;
    let mut failures = 0;
    loop {
        match download::fetch(ctx.api.http(), url, files, stem, n, limits).await {
            Ok(done) => return Ok(Ok(done)),
            Err(DownloadError::Permanent(m)) => return Ok(Err(m)),
            Err(DownloadError::Local(m, capacity)) => {
                let kind = if capacity {
                    std::io::ErrorKind::StorageFull
                } else {
                    std::io::ErrorKind::Other
                };
                return Err(FsError {
                    action: "saving a downloaded output",
                    path: files.to_path_buf(),
                    source: std::io::Error::new(kind, m),
                });
            }
            Err(DownloadError::Transient(m)) => {
                failures += 1;
                if failures >= retry.max_attempts {
                    return Ok(Err(format!("{m} ({failures} tries)")));
                }
                let delay = backoff(retry, failures);
                warn!(output = n, delay_ms = delay.as_millis() as u64, error = %m, "a download failed; trying again");
                tokio::time::sleep(delay).await;
            }
        }
    }
}
