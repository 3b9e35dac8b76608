//! The end of a job: `metadata.json` or `error.json` written, the destination journaled, the
//! files folder moved into the outbox or quarantine, the job folder removed.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{Ctx, total_ms};
use crate::api::Answer;
use crate::clock::{now_rfc3339, rfc3339};
use crate::config::Provider;
use crate::fsx::FsError;
use crate::job::describe::describe;
use crate::job::journal::JobDir;
use crate::job::verdict::{ErrorRecord, Verdict};
use crate::job::{JobRecord, Stage};
use crate::pipeline::download::Downloaded;
use crate::pipeline::publish::{self, Metadata, MetadataTimings};
use crate::pipeline::quarantine;

pub(super) fn finish_move(dir: &JobDir, rec: &JobRecord, dest: &Path) -> Result<(), FsError> {
    let files = dir.files();
    if files.exists() {
        if publish::holds_job(dest, &rec.job_id) {
            // A copy across filesystems was renamed into place, then the process stopped
            // before removing the source: the destination is complete, the source redundant.
            std::fs::remove_dir_all(&files).map_err(|e| FsError {
                action: "removing a job's files already copied to their destination",
                path: files.clone(),
                source: e,
            })?;
        } else {
            publish::move_out(&files, dest)?;
        }
    }
    dir.remove()
}

pub(super) fn begin_publish(
    ctx: &Ctx,
    dir: &JobDir,
    rec: &mut JobRecord,
    answer: &Answer,
    kept: &[Option<Downloaded>],
) -> Result<(), FsError> {
    let files = dir.files();
    publish::remove_temporaries(&files)?;
    let (source, sidecar) = describe(&files, &rec.source);
    let now = SystemTime::now();
    let at = |t: Option<SystemTime>| t.map(rfc3339);
    let metadata = Metadata {
        job_id: rec.job_id.to_string(),
        remixd_version: crate::VERSION.to_owned(),
        provider: ctx.config().api.provider.name().to_owned(),
        endpoint: (ctx.config().api.provider != Provider::DryRun)
            .then(|| ctx.api.endpoint().to_owned()),
        source,
        sidecar,
        request: publish::request_object(rec.request.as_ref().map_or(&[][..], |r| &r.fields)),
        response: answer.raw.clone(),
        outputs: publish::output_entries(answer, kept),
        attempts: rec.attempts,
        timings: MetadataTimings {
            detected_at: at(rec.timings.detected_at),
            claimed_at: at(rec.timings.claimed_at),
            submitted_at: at(rec.timings.submitted_at),
            responded_at: at(rec.timings.responded_at),
            completed_at: rfc3339(now),
            api_ms: rec.timings.api_ms,
            download_ms: rec.timings.download_ms,
            total_ms: total_ms(rec),
        },
    };
    publish::write_metadata(&files, &metadata)?;
    let dest = destination(&ctx.config().outbox, ctx, rec);
    rec.stage = Stage::Publishing { dest };
    dir.write(rec)
}

pub(super) fn begin_quarantine(
    ctx: &Ctx,
    dir: &JobDir,
    rec: &mut JobRecord,
    verdict: Verdict,
) -> Result<(), FsError> {
    let files = dir.files();
    publish::remove_temporaries(&files)?;
    let (source, sidecar) = describe(&files, &rec.source);
    let error = ErrorRecord {
        job_id: rec.job_id.to_string(),
        reason: verdict.reason,
        message: verdict.message,
        stage: rec.stage.name().to_owned(),
        attempts: rec.attempts,
        http_status: verdict.http_status,
        api_error: verdict.api_error,
        source,
        sidecar,
        at: now_rfc3339(),
        remixd_version: crate::VERSION.to_owned(),
    };
    quarantine::write_error(&files, &error)?;
    let dest = destination(&ctx.config().quarantine, ctx, rec);
    rec.stage = Stage::Quarantining {
        dest,
        error: Box::new(error),
    };
    dir.write(rec)
}

/// Where under `root` (the outbox or the quarantine) the job's folder goes, per `output.layout`.
fn destination(root: &Path, ctx: &Ctx, rec: &JobRecord) -> PathBuf {
    let rel = publish::render_layout(
        &ctx.config().layout,
        &rec.source,
        &rec.job_id,
        &crate::clock::utc_date(),
    );
    publish::free_destination(root, &rel)
}
