//! The quarantine stage: `error.json` written from the job's verdict and the quarantine
//! destination journaled (`begin`), then the move into the quarantine (`complete`, shared
//! with the outbox through [`super::finish`]). The verdict itself is the job's
//! ([`crate::job::verdict`]).

use std::path::Path;

use tracing::warn;

use super::ctx::Job;
use super::finish;
use crate::clock::now_rfc3339;
use crate::events;
use crate::fsx::{self, Context, FsError};
use crate::job::Stage;
use crate::job::describe::describe;
use crate::job::verdict::{ErrorRecord, Verdict};

pub use crate::job::ERROR_FILE;

/// Writes `error.json` durably into the job's files folder.
pub fn write_error(files: &Path, record: &ErrorRecord) -> Result<(), FsError> {
    let path = files.join(ERROR_FILE);
    fsx::write_json(&path, record, crate::secrets::scrub_bytes).context("writing error.json", &path)
}

/// Writes `error.json` for `verdict`, then journals `quarantining` with the job's place in
/// the quarantine.
pub(super) fn begin(job: &mut Job, verdict: Verdict) -> Result<(), FsError> {
    let files = job.dir.files();
    finish::remove_temporaries(&files)?;
    let rec = &job.rec;
    let (source, sidecar) = describe(&files, &rec.source);
    let error = ErrorRecord {
        job_id: rec.job_id.to_string(),
        reason: verdict.reason,
        message: verdict.message,
        stage: rec.stage.name().to_owned(),
        attempts: rec.attempts,
        billable_attempts: rec.billable_attempts,
        cost: Some(super::publish::job_cost(job)),
        http_status: verdict.http_status,
        api_error: verdict.api_error,
        source,
        sidecar,
        at: now_rfc3339(),
        remixd_version: crate::VERSION.to_owned(),
    };
    write_error(&files, &error)?;
    let dest = finish::destination(&job.config.quarantine, &job.config.layout, rec);
    job.rec.stage = Stage::Quarantining {
        dest,
        error: Box::new(error),
    };
    job.dir.write(&job.rec)
}

/// Moves the job's folder into the quarantine at `dest` and logs `job.quarantined`.
pub(super) fn complete(job: &Job, dest: &Path, error: &ErrorRecord) -> Result<(), FsError> {
    finish::finish_move(&job.dir, &job.rec, dest, ERROR_FILE)?;
    warn!(event = events::JOB_QUARANTINED, reason = error.reason.name(),
        message = %error.message, dir = %dest.display(), "moved to the quarantine");
    Ok(())
}
