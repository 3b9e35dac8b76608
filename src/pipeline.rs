//! One job from claim to its end in the outbox or the quarantine, stage by stage, journaling
//! before each step (the order is in [`crate::journal`]). A resumed job enters at the stage
//! its journal names. Local failures (disk full, read-only) never quarantine: the job waits
//! and tries again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use tracing::{Instrument, error, info, info_span, warn};

use crate::api::{Answer, ApiClient, Outcome, OutputItem};
use crate::claim::{self, Claim, ClaimRequest};
use crate::config::{Config, Provider};
use crate::download::{self, DownloadError, DownloadLimits, Downloaded};
use crate::events;
use crate::fsx::FsError;
use crate::gate::{Gate, Signal, Ticket};
use crate::image_info::ImageInfo;
use crate::job::{self, Input, JobRecord, Stage};
use crate::journal::JobDir;
use crate::prepare;
use crate::publish::{self, Metadata, MetadataTimings};
use crate::quarantine::{self, ErrorRecord, Reason, Verdict};

/// Largest output accepted from a download URL.
pub const MAX_OUTPUT_BYTES: u64 = 128 * 1024 * 1024;

/// Counts since start, for `daemon.stats`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Jobs running now.
    pub in_flight: AtomicU64,
    /// Jobs published.
    pub completed: AtomicU64,
    /// Jobs quarantined.
    pub quarantined: AtomicU64,
    /// Jobs published and quarantined this UTC day: (day, published, quarantined).
    today: std::sync::Mutex<(String, u64, u64)>,
}

impl Stats {
    fn count_end(&self, published: bool) {
        let total = if published {
            &self.completed
        } else {
            &self.quarantined
        };
        total.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut today) = self.today.lock() {
            let day = publish::utc_date();
            if today.0 != day {
                *today = (day, 0, 0);
            }
            if published {
                today.1 += 1;
            } else {
                today.2 += 1;
            }
        }
    }

    /// Jobs published and quarantined so far this UTC day (by this process).
    #[must_use]
    pub fn today(&self) -> (u64, u64) {
        self.today.lock().map_or((0, 0), |today| {
            if today.0 == publish::utc_date() {
                (today.1, today.2)
            } else {
                (0, 0)
            }
        })
    }
}

/// What every job shares.
#[derive(Debug)]
pub struct Ctx {
    /// The config; a reload swaps it, and each step reads the current one.
    config: RwLock<Arc<Config>>,
    /// API pacing and pauses.
    pub gate: Gate,
    /// The API client (its HTTP client also downloads).
    pub api: ApiClient,
    /// Counters.
    pub stats: Stats,
    /// This process's jobs folder in the work area.
    pub jobs: PathBuf,
    /// A disk is full or read-only: no new claims until a job's local step works again.
    disk_blocked: AtomicBool,
}

impl Ctx {
    /// Shared state for a run with `config`.
    #[must_use]
    pub fn new(config: Config, gate: Gate, api: ApiClient, jobs: PathBuf) -> Self {
        Self {
            config: RwLock::new(Arc::new(config)),
            gate,
            api,
            stats: Stats::default(),
            jobs,
            disk_blocked: AtomicBool::new(false),
        }
    }

    /// The config in force now.
    #[must_use]
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(
            &self
                .config
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Whether new claims wait because a disk is full or read-only.
    #[must_use]
    pub fn disk_blocked(&self) -> bool {
        self.disk_blocked.load(Ordering::Relaxed)
    }

    fn set_disk_blocked(&self, blocked: bool) {
        let was = self.disk_blocked.swap(blocked, Ordering::Relaxed);
        if blocked && !was {
            warn!(
                "a disk is full or read-only: no new claims until it has room again; nothing is lost"
            );
        } else if was && !blocked {
            info!("the disk has room again; claiming resumes");
        }
    }

    /// Puts a reloaded config in force for every step that starts from now on.
    pub fn replace_config(&self, config: Config) {
        *self
            .config
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config);
    }
}

/// How a job ended.
enum End {
    Published,
    Quarantined,
    Lost,
}

/// Claims and runs a job for an input the intake handed over.
pub async fn run_new(ctx: Arc<Ctx>, req: ClaimRequest) {
    let span = info_span!("job", job_id = %req.job_id, file = %req.source.rel_path().display());
    async move {
        let inbox = ctx.config().inbox.clone();
        let claimed = with_local_retry(&ctx, || claim::claim(&inbox, &ctx.jobs, req.clone())).await;
        if let Some(Claim::Taken(dir, record)) = claimed {
            info!(event = events::JOB_CLAIMED, "claimed into the work area");
            run(&ctx, dir, *record).await;
        }
    }
    .instrument(span)
    .await;
}

/// Resumes a job found in the work area at start.
pub async fn run_resumed(ctx: Arc<Ctx>, dir: JobDir) {
    let record = match dir.read() {
        Ok(record) => record,
        Err(e) => {
            if !dir.has_journal() && dir.remove().is_ok() {
                return; // a folder made just before a crash, with nothing claimed into it
            }
            error!(error = %e, dir = %dir.path().display(),
                "a job folder cannot be resumed; it is left as it is for a person to look at");
            return;
        }
    };
    let span =
        info_span!("job", job_id = %record.job_id, file = %record.source.rel_path().display());
    async move {
        info!(event = events::JOB_RESUMED, stage = record.stage.name(), "resuming an unfinished job");
        if let Stage::Submitting { attempt } = record.stage {
            info!(event = events::JOB_RESUBMITTED, attempt,
                reason = "the process stopped after sending a request and before its answer was recorded",
                "submitting again: no answer was recorded");
        }
        run(&ctx, dir, record).await;
    }
    .instrument(span)
    .await;
}

async fn run(ctx: &Ctx, dir: JobDir, mut record: JobRecord) {
    ctx.stats.in_flight.fetch_add(1, Ordering::Relaxed);
    let mut odd_failures = 0;
    let mut unsaved = false;
    let end = loop {
        // After a failed step the record in memory may be ahead of the journal (an answer
        // received but not recorded): it is written first, and never replaced by the older
        // journal, or the job would be sent again.
        let step = if unsaved {
            dir.write(&record).map(|()| unsaved = false)
        } else {
            Ok(())
        };
        let outcome = match step {
            Ok(()) => drive(ctx, &dir, &mut record).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(end) => {
                ctx.set_disk_blocked(false);
                break end;
            }
            Err(_) if !dir.exists() => {
                warn!(
                    "another remixd process took this job over (this one's lease had expired); leaving it to that process"
                );
                break End::Lost;
            }
            Err(e) if !e.is_local_capacity() && odd_failures >= ctx.config().retry.max_attempts => {
                // Not a full disk, and not passing: the job must not hold a slot forever.
                error!(error = %e, dir = %dir.path().display(),
                    "a local file step keeps failing; the job is parked in the work area and resumes at the next start");
                break End::Lost;
            }
            Err(e) => {
                if !e.is_local_capacity() {
                    odd_failures += 1;
                }
                ctx.set_disk_blocked(e.is_local_capacity());
                let wait = ctx.config().retry.max_backoff.min(Duration::from_secs(30));
                warn!(error = %e, retry_in_ms = wait.as_millis() as u64, local_capacity = e.is_local_capacity(),
                    "a local file step failed; the job waits and tries again (nothing was lost)");
                tokio::time::sleep(wait).await;
                unsaved = true;
            }
        }
    };
    ctx.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    match end {
        End::Published => ctx.stats.count_end(true),
        End::Quarantined => ctx.stats.count_end(false),
        End::Lost => {}
    }
}

async fn drive(ctx: &Ctx, dir: &JobDir, rec: &mut JobRecord) -> Result<End, FsError> {
    loop {
        match rec.stage.clone() {
            Stage::Claiming => match claim::finish(&ctx.config().inbox, dir, rec)? {
                Claim::Taken(..) => {}
                Claim::Lost => return Ok(End::Lost),
            },
            Stage::Claimed | Stage::Submitting { .. } => {
                let verdict = match submit_stage(ctx, dir, rec).await? {
                    Ok(answer) => {
                        rec.timings.responded_at = Some(SystemTime::now());
                        rec.stage = Stage::Responded { answer };
                        dir.write(rec)?;
                        continue;
                    }
                    Err(verdict) => verdict,
                };
                begin_quarantine(ctx, dir, rec, verdict)?;
            }
            Stage::Responded { answer } => match download_all(ctx, dir, rec, &answer).await? {
                Ok(kept) => begin_publish(ctx, dir, rec, &answer, &kept)?,
                Err(verdict) => begin_quarantine(ctx, dir, rec, verdict)?,
            },
            Stage::Publishing { dest } => {
                finish_move(dir, rec, &dest)?;
                let outputs = std::fs::read_dir(&dest).map_or(0, |d| {
                    d.filter_map(Result::ok)
                        .filter(|e| e.file_name().to_string_lossy().contains("-remix-"))
                        .count()
                });
                info!(event = events::JOB_COMPLETED, outputs, dir = %dest.display(),
                    total_ms = total_ms(rec), "published to the outbox");
                return Ok(End::Published);
            }
            Stage::Quarantining { dest, error } => {
                finish_move(dir, rec, &dest)?;
                warn!(event = events::JOB_QUARANTINED, reason = error.reason.name(),
                    message = %error.message, dir = %dest.display(), "moved to the quarantine");
                return Ok(End::Quarantined);
            }
        }
    }
}

fn finish_move(dir: &JobDir, rec: &JobRecord, dest: &Path) -> Result<(), FsError> {
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

fn total_ms(rec: &JobRecord) -> u64 {
    rec.timings
        .detected_at
        .and_then(|t| t.elapsed().ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// Checks the input, builds the request and sends it until there is an answer or a verdict.
async fn submit_stage(
    ctx: &Ctx,
    dir: &JobDir,
    rec: &mut JobRecord,
) -> Result<Result<Answer, Verdict>, FsError> {
    if let Input::Stray { reason, message } = &rec.input {
        return Ok(Err(Verdict::file(*reason, message.clone())));
    }
    let files = dir.files();
    let (image, request) = match prepare::prepare(&ctx.config(), &files, &rec.source) {
        Ok(ready) => ready,
        Err(verdict) => return Ok(Err(verdict)),
    };
    rec.request = Some(request);
    if ctx.config().api.provider == Provider::DryRun {
        return dry_run(ctx, dir, rec, image).map(Ok);
    }
    submit_loop(ctx, dir, rec, image).await
}

async fn submit_loop(
    ctx: &Ctx,
    dir: &JobDir,
    rec: &mut JobRecord,
    image: ImageInfo,
) -> Result<Result<Answer, Verdict>, FsError> {
    let Some(request) = rec.request.clone() else {
        return Ok(Err(Verdict::file(
            Reason::InvalidSidecar,
            "no request could be built",
        )));
    };
    let path = dir.files().join(rec.source.file_os());
    let mut retries = Retries::default();
    loop {
        let permit = ctx.gate.admit(request.num_images).await;
        rec.attempts += 1;
        rec.stage = Stage::Submitting {
            attempt: rec.attempts,
        };
        rec.timings.submitted_at = Some(SystemTime::now());
        dir.write(rec)?;
        info!(
            event = events::JOB_SUBMITTED,
            attempt = rec.attempts,
            "sending the remix request"
        );
        let started = Instant::now();
        let outcome = ctx
            .api
            .submit(&path, &rec.source.file, image.format, &request)
            .await?;
        let api_ms = started.elapsed().as_millis() as u64;
        rec.timings.api_ms += api_ms;
        let ticket = permit.ticket();
        drop(permit);
        if let Outcome::Answer(answer) = &outcome {
            let images = answer.items.iter().filter(|i| i.url.is_some()).count();
            info!(
                event = events::JOB_RESPONDED,
                http_status = answer.http_status,
                api_ms,
                images,
                "the API answered"
            );
        }
        match retries.judge(ctx, outcome, ticket, started) {
            Next::Done(end) => return Ok(end),
            Next::Retry {
                delay,
                http_status,
                error,
            } => {
                info!(event = events::JOB_RETRY, attempt = rec.attempts,
                    delay_ms = delay.as_millis() as u64, error = %error, http_status,
                    "the request will be sent again");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// What to do after one request.
enum Next {
    Done(Result<Answer, Verdict>),
    Retry {
        delay: Duration,
        http_status: Option<u16>,
        error: String,
    },
}

/// A job's count of transient failures, for `retry.max_attempts`.
#[derive(Default)]
struct Retries {
    failures: u32,
    first_failure: Option<Instant>,
}

impl Retries {
    /// Reports `outcome` to the gate and decides: an end for the job, or a retry after a delay.
    fn judge(&mut self, ctx: &Ctx, outcome: Outcome, ticket: Ticket, started: Instant) -> Next {
        let retry = &ctx.config().retry;
        let refused = |reason, http_status, api_error, message| {
            ctx.gate.report(Signal::Answered, ticket);
            Next::Done(Err(api_verdict(reason, http_status, api_error, message)))
        };
        match outcome {
            Outcome::Answer(answer) => {
                let images = answer.items.iter().filter(|i| i.url.is_some()).count();
                ctx.gate.report(Signal::Images(images as u32), ticket);
                Next::Done(Ok(answer))
            }
            Outcome::Rejected {
                http_status,
                api_error,
                message,
            } => refused(Reason::RejectedByApi, http_status, api_error, message),
            Outcome::Unsafe {
                http_status,
                api_error,
                message,
            } => refused(Reason::UnsafeContent, http_status, api_error, message),
            Outcome::BadResponse {
                http_status,
                api_error,
                message,
            } => refused(Reason::BadResponse, http_status, api_error, message),
            Outcome::RateLimited { retry_after } => {
                ctx.gate.report(Signal::RateLimited(retry_after), ticket);
                let delay = retry_after.unwrap_or_else(|| backoff(retry, self.failures + 1));
                Next::Retry {
                    delay,
                    http_status: Some(429),
                    error: "rate limited (HTTP 429)".into(),
                }
            }
            Outcome::Pause {
                reason,
                http_status,
                message,
                ..
            } => {
                ctx.gate.report(Signal::Pause(reason), ticket);
                Next::Retry {
                    delay: Duration::ZERO,
                    http_status: Some(http_status),
                    error: message,
                }
            }
            Outcome::Transient {
                http_status,
                message,
            } => {
                ctx.gate.report(Signal::Transient, ticket);
                if ctx.gate.paused().is_some() {
                    return Next::Retry {
                        delay: Duration::ZERO,
                        http_status,
                        error: message,
                    };
                }
                self.failures += 1;
                let since = *self.first_failure.get_or_insert(started);
                if self.failures >= retry.max_attempts {
                    if ctx.gate.worked_since(since) {
                        return Next::Done(Err(Verdict {
                            reason: Reason::RetriesExhausted,
                            message: format!(
                                "{} requests for this image failed ({message}) while the API worked for other jobs; requeue it to try again",
                                self.failures
                            ),
                            http_status,
                            api_error: None,
                        }));
                    }
                    // Nothing worked for anyone: an outage, not this file's fault.
                    *self = Self::default();
                }
                let delay = backoff(retry, self.failures.max(1));
                Next::Retry {
                    delay,
                    http_status,
                    error: message,
                }
            }
        }
    }
}

fn api_verdict(
    reason: Reason,
    http_status: u16,
    api_error: Option<String>,
    message: String,
) -> Verdict {
    Verdict {
        reason,
        message,
        http_status: Some(http_status),
        api_error,
    }
}

/// Exponential backoff for the `n`th failure (1-based), capped, with ±20% jitter.
#[must_use]
pub fn backoff(retry: &crate::config::RetryConfig, n: u32) -> Duration {
    let exp = retry
        .initial_backoff
        .saturating_mul(1u32 << n.saturating_sub(1).min(20))
        .min(retry.max_backoff);
    exp.mul_f64(0.8 + fastrand::f64() * 0.4)
        .min(retry.max_backoff)
}

/// The dry-run provider: `num_images` copies of the input, and an answer saying so.
fn dry_run(
    ctx: &Ctx,
    dir: &JobDir,
    rec: &mut JobRecord,
    image: ImageInfo,
) -> Result<Answer, FsError> {
    let files = dir.files();
    let source = files.join(rec.source.file_os());
    rec.timings.submitted_at = Some(SystemTime::now());
    let n = rec.request.as_ref().map_or(1, |r| r.num_images);
    let prompt = rec.request.as_ref().and_then(|r| {
        r.fields
            .iter()
            .find(|(k, _)| k == "prompt")
            .map(|(_, v)| v.clone())
    });
    let mut items = Vec::new();
    for i in 1..=usize::from(n) {
        let name = format!("{}-remix-{i}.{}", rec.source.stem(), image.format.ext());
        let dest = files.join(&name);
        crate::fsx::copy_durable(&source, &dest).map_err(|e| FsError {
            action: "writing a dry-run output",
            path: dest.clone(),
            source: e,
        })?;
        items.push(OutputItem {
            url: None,
            prompt: prompt.clone(),
            resolution: Some(format!("{}x{}", image.width, image.height)),
            seed: Some(0),
            is_image_safe: true,
            style_type: None,
        });
    }
    ctx.gate.count_images(u32::from(n));
    let raw = serde_json::json!({
        "created": quarantine::now_rfc3339(),
        "data": items,
    });
    info!(
        event = events::JOB_RESPONDED,
        http_status = 200u16,
        api_ms = 0u64,
        images = n,
        "dry-run: made copies of the input instead of calling the API"
    );
    Ok(Answer {
        http_status: 200,
        raw,
        created: None,
        items,
    })
}

/// Fetches every output not already kept. `Ok(Err)` is a verdict for the job.
async fn download_all(
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
        allow_private: download::private_allowed(ctx.config().api.base_url.as_deref()),
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

async fn fetch_with_retry(
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

fn begin_publish(
    ctx: &Ctx,
    dir: &JobDir,
    rec: &mut JobRecord,
    answer: &Answer,
    kept: &[Option<Downloaded>],
) -> Result<(), FsError> {
    let files = dir.files();
    publish::remove_temporaries(&files)?;
    let (source, sidecar) = job::describe(&files, &rec.source);
    let now = SystemTime::now();
    let at = |t: Option<SystemTime>| t.map(quarantine::rfc3339);
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
            completed_at: quarantine::rfc3339(now),
            api_ms: rec.timings.api_ms,
            download_ms: rec.timings.download_ms,
            total_ms: total_ms(rec),
        },
    };
    publish::write_metadata(&files, &metadata)?;
    let rel = publish::render_layout(
        &ctx.config().layout,
        &rec.source,
        &rec.job_id,
        &publish::utc_date(),
    );
    let dest = publish::free_destination(&ctx.config().outbox, &rel);
    rec.stage = Stage::Publishing { dest };
    dir.write(rec)
}

fn begin_quarantine(
    ctx: &Ctx,
    dir: &JobDir,
    rec: &mut JobRecord,
    verdict: Verdict,
) -> Result<(), FsError> {
    let files = dir.files();
    publish::remove_temporaries(&files)?;
    let (source, sidecar) = job::describe(&files, &rec.source);
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
        at: quarantine::now_rfc3339(),
        remixd_version: crate::VERSION.to_owned(),
    };
    quarantine::write_error(&files, &error)?;
    let rel = publish::render_layout(
        &ctx.config().layout,
        &rec.source,
        &rec.job_id,
        &publish::utc_date(),
    );
    let dest = publish::free_destination(&ctx.config().quarantine, &rel);
    rec.stage = Stage::Quarantining {
        dest,
        error: Box::new(error),
    };
    dir.write(rec)
}

async fn with_local_retry<T>(ctx: &Ctx, mut step: impl FnMut() -> Result<T, FsError>) -> Option<T> {
    let mut odd_failures = 0;
    loop {
        match step() {
            Ok(v) => {
                ctx.set_disk_blocked(false);
                return Some(v);
            }
            Err(e) if !e.is_local_capacity() && odd_failures >= ctx.config().retry.max_attempts => {
                error!(error = %e, "claiming keeps failing; the input is left where it is for now");
                return None;
            }
            Err(e) => {
                if !e.is_local_capacity() {
                    odd_failures += 1;
                }
                ctx.set_disk_blocked(e.is_local_capacity());
                let wait = ctx.config().retry.max_backoff.min(Duration::from_secs(30));
                warn!(error = %e, retry_in_ms = wait.as_millis() as u64,
                    "claiming failed; the input stays where it is and remixd tries again");
                tokio::time::sleep(wait).await;
            }
        }
    }
}
