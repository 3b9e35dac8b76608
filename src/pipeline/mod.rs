//! One job from claim to its end in the outbox or the quarantine: the stage machine. Each
//! stage has one room that owns its mechanics; this module only moves a job from stage to
//! stage, journaling before each step (the order is in [`crate::job::journal`]). A resumed job
//! enters at the stage its journal names. Local failures (disk full, read-only) never
//! quarantine: the job waits and tries again.
//!
//! The rooms, in the order a job meets them: [`claim`], [`prepare`], [`submit`] (or
//! [`dry_run`]), [`download`], [`publish`] or [`quarantine`], and [`finish`] (the final move
//! both share). [`ctx`] is what every job shares, and the config snapshot a job keeps.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tracing::{Instrument, error, info, info_span, warn};

use crate::config::{Config, Provider};
use crate::events;
use crate::fsx::FsError;
use crate::job::Stage;
use crate::job::journal::JobDir;
use crate::job::verdict::Reason;

pub mod claim;
pub mod ctx;
pub mod download;
pub mod dry_run;
pub mod finish;
pub mod prepare;
pub mod publish;
pub mod quarantine;
pub mod references;
pub mod submit;

use claim::{Claim, ClaimRequest};
use ctx::Job;
pub use ctx::{Ctx, Stats};

/// How a job ended.
enum End {
    Published,
    /// With its reason's name.
    Quarantined(&'static str),
    Lost,
}

/// Claims and runs a job for an input the intake handed over, with the config in force now.
pub async fn run_new(ctx: Arc<Ctx>, req: ClaimRequest) {
    let span = info_span!("job", job_id = %req.job_id, file = %req.source.rel_path().display());
    async move {
        let config = ctx.config();
        let claimed = with_local_retry(&ctx, &config, || {
            claim::claim(&config, &ctx.jobs, req.clone())
        })
        .await;
        if let Some(Claim::Taken(dir, rec)) = claimed {
            info!(event = events::JOB_CLAIMED, "claimed into the work area");
            let rec = *rec;
            run(&ctx, Job { dir, rec, config }).await;
        }
    }
    .instrument(span)
    .await;
}

/// Resumes a job found in the work area (at start, or taken over), with the config in force
/// now.
pub async fn run_resumed(ctx: Arc<Ctx>, dir: JobDir) {
    let mut rec = match dir.read() {
        Ok(rec) => rec,
        Err(e) => {
            if dir.is_unclaimed() && dir.remove().is_ok() {
                return; // a folder made just before a crash, with nothing claimed into it
            }
            error!(error = %e, dir = %dir.path().display(),
                "a job folder cannot be resumed; it is left as it is for a person to look at");
            return;
        }
    };
    let span = info_span!("job", job_id = %rec.job_id, file = %rec.source.rel_path().display());
    async move {
        info!(event = events::JOB_RESUMED, stage = rec.stage.name(), "resuming an unfinished job");
        if let Stage::Submitting { attempt } = rec.stage {
            // Its answer never came back to anyone: the request may have run and been billed.
            rec.billable_attempts = rec.billable_attempts.max(attempt);
            info!(event = events::JOB_RESUBMITTED, attempt,
                reason = "the process stopped after sending a request and before its answer was recorded",
                "submitting again: no answer was recorded");
        }
        let config = ctx.config();
        run(&ctx, Job { dir, rec, config }).await;
    }
    .instrument(span)
    .await;
}

/// Drives the job to its end, waiting out local failures; keeps the counts.
async fn run(ctx: &Ctx, mut job: Job) {
    ctx.stats.in_flight.fetch_add(1, Ordering::Relaxed);
    if let Some(gallery) = &ctx.gallery {
        gallery.touch();
    }
    let mut failures = LocalFailures::default();
    let mut unsaved = false;
    let end = loop {
        // After a failed step the record in memory may be ahead of the journal (an answer
        // received but not recorded): it is written first, and never replaced by the older
        // journal, or the job would be sent again.
        let step = if unsaved {
            job.dir.write(&job.rec).map(|()| unsaved = false)
        } else {
            Ok(())
        };
        let outcome = match step {
            Ok(()) => drive(ctx, &mut job).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(end) => {
                failures.passed(ctx);
                break end;
            }
            Err(_) if !job.dir.exists() => {
                warn!(
                    "another remixd process took this job over (this one's lease had expired); leaving it to that process"
                );
                break End::Lost;
            }
            Err(e) => {
                if !failures.wait(ctx, &job.config, &e, "a local file step failed; the job waits and tries again (nothing was lost)").await {
                    error!(error = %e, dir = %job.dir.path().display(),
                        "a local file step keeps failing; the job is parked in the work area and resumes at the next start");
                    break End::Lost;
                }
                unsaved = true;
            }
        }
    };
    ctx.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    let took = Duration::from_millis(job.rec.timings.total_ms());
    match end {
        End::Published => {
            ctx.stats.count_end(true);
            ctx.metrics.job_ended(None, took);
        }
        End::Quarantined(reason) => {
            ctx.stats.count_end(false);
            ctx.metrics.job_ended(Some(reason), took);
        }
        End::Lost => {}
    }
}

/// The stage machine: runs the stage the record names, until the job has ended.
async fn drive(ctx: &Ctx, job: &mut Job) -> Result<End, FsError> {
    loop {
        match job.rec.stage.clone() {
            Stage::Claiming => match claim::finish(&job.config, &job.dir, &mut job.rec)? {
                Claim::Taken(..) => {}
                Claim::Lost => return Ok(End::Lost),
            },
            Stage::Claimed | Stage::Submitting { .. } => match send(ctx, job).await? {
                Ok(answer) => {
                    job.rec.timings.responded_at = Some(SystemTime::now());
                    job.rec.stage = Stage::Responded { answer };
                    job.dir.write(&job.rec)?;
                }
                Err(verdict) => quarantine::begin(job, verdict)?,
            },
            Stage::Responded { answer } => match download::run(ctx, job, &answer).await? {
                Ok(kept) => publish::begin(ctx, job, &answer, &kept)?,
                Err(verdict) => quarantine::begin(job, verdict)?,
            },
            Stage::Publishing { dest } => {
                publish::complete(job, &dest)?;
                ctx.job_ended(&dest, &job.rec);
                return Ok(End::Published);
            }
            Stage::Quarantining { dest, error } => {
                quarantine::complete(job, &dest, &error)?;
                ctx.job_ended(&dest, &job.rec);
                return Ok(End::Quarantined(error.reason.name()));
            }
        }
    }
}

/// Prepares the request and sends it (or makes the dry-run copies): an answer or a verdict.
async fn send(
    ctx: &Ctx,
    job: &mut Job,
) -> Result<Result<crate::api::Answer, crate::job::verdict::Verdict>, FsError> {
    let image = match prepare::run(job) {
        Ok(image) => image,
        Err(verdict) if verdict.reason == Reason::MissingMask && await_mask(ctx, job).await? => {
            match prepare::run(job) {
                Ok(image) => image,
                Err(verdict) => return Ok(Err(verdict)),
            }
        }
        Err(verdict) => return Ok(Err(verdict)),
    };
    if job.config.api.provider == Provider::DryRun {
        return dry_run::run(ctx, job, image).map(Ok);
    }
    submit::run(ctx, job).await
}

/// An inpaint job claimed without its mask waits for it until `watch.sidecar_wait` after the
/// claim (not at all under `--once`), then takes it once it holds still for `watch.settle`.
/// True when the job now has its mask.
async fn await_mask(ctx: &Ctx, job: &mut Job) -> Result<bool, FsError> {
    if ctx.once() {
        return Ok(false);
    }
    let waited = job
        .rec
        .timings
        .claimed_at
        .and_then(|at| at.elapsed().ok())
        .unwrap_or_default();
    tokio::time::sleep(job.config.watch.sidecar_wait.saturating_sub(waited)).await;
    let folder = job.config.inbox.join(job.rec.source.subdir_path());
    let candidates = crate::sidecar::mask_candidates(&job.rec.source.file_os());
    let snapshot = || {
        candidates
            .iter()
            .find_map(|n| std::fs::symlink_metadata(folder.join(n)).ok())
            .and_then(|m| crate::fsx::Snapshot::from_metadata(&m))
    };
    let Some(first) = snapshot() else {
        return claim::take_late_mask(&job.config, &job.dir, &mut job.rec);
    };
    // A mask still being copied would be taken half-written.
    tokio::time::sleep(job.config.watch.settle).await;
    if snapshot() != Some(first) {
        return Ok(false);
    }
    claim::take_late_mask(&job.config, &job.dir, &mut job.rec)
}

/// Runs a claim until it works, waiting out local failures as a job does.
async fn with_local_retry<T>(
    ctx: &Ctx,
    config: &Config,
    mut step: impl FnMut() -> Result<T, FsError>,
) -> Option<T> {
    let mut failures = LocalFailures::default();
    loop {
        match step() {
            Ok(v) => {
                failures.passed(ctx);
                return Some(v);
            }
            Err(e) => {
                let what = "claiming failed; the input stays where it is and remixd tries again";
                if !failures.wait(ctx, config, &e, what).await {
                    error!(error = %e, "claiming keeps failing; the input is left where it is for now");
                    return None;
                }
            }
        }
    }
}

/// How a job copes with local file failures: a full or read-only disk is waited out, and
/// blocks new claims meanwhile; any other failure is tried again `retry.max_attempts` times,
/// so a job never holds its slot forever.
#[derive(Debug, Default)]
struct LocalFailures {
    others: u32,
}

impl LocalFailures {
    fn passed(&mut self, ctx: &Ctx) {
        self.others = 0;
        ctx.set_disk_blocked(false);
    }

    /// Counts one failure; false when the step should be given up. A full or read-only disk
    /// never gives up and never counts.
    fn count(&mut self, capacity: bool, max_attempts: u32) -> bool {
        if capacity {
            return true;
        }
        if self.others >= max_attempts {
            return false;
        }
        self.others += 1;
        true
    }

    /// Waits before the next try, logging `what`; false when the step should be given up.
    async fn wait(&mut self, ctx: &Ctx, config: &Config, e: &FsError, what: &str) -> bool {
        let capacity = e.is_local_capacity();
        if !self.count(capacity, config.retry.max_attempts) {
            return false;
        }
        ctx.set_disk_blocked(capacity);
        let wait = local_wait(&config.retry);
        warn!(error = %e, retry_in_ms = wait.as_millis() as u64, local_capacity = capacity, "{what}");
        tokio::time::sleep(wait).await;
        true
    }
}

/// How long a local failure waits: `retry.max_backoff`, at most 30 s.
fn local_wait(retry: &crate::config::RetryConfig) -> Duration {
    retry.max_backoff.min(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_failures_give_up_after_max_attempts_but_never_for_a_full_disk() {
        let mut failures = LocalFailures::default();
        assert!(failures.count(false, 2));
        assert!(failures.count(false, 2));
        assert!(!failures.count(false, 2), "the third failure gives up");
        let mut full = LocalFailures::default();
        for _ in 0..100 {
            assert!(full.count(true, 2), "a full disk is waited out");
        }
        assert!(
            full.count(false, 2),
            "and does not count as another failure"
        );
    }

    #[test]
    fn a_local_failure_waits_max_backoff_but_at_most_30_s() {
        let mut retry = crate::config::RetryConfig {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
            resend_after_timeout: true,
        };
        assert_eq!(local_wait(&retry), Duration::from_secs(5));
        retry.max_backoff = Duration::from_secs(300);
        assert_eq!(local_wait(&retry), Duration::from_secs(30));
    }
}
