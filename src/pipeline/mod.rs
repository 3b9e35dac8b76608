//! One job from claim to its end in the outbox or the quarantine, stage by stage, journaling
//! before each step (the order is in [`crate::journal`]). A resumed job enters at the stage
//! its journal names. Local failures (disk full, read-only) never quarantine: the job waits
//! and tries again. Parts: `submit` (checks, request, retries, dry-run), `outputs` (downloads),
//! `finish` (metadata or error file, the final move).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tracing::{Instrument, error, info, info_span, warn};

use crate::api::ApiClient;
use crate::claim::{self, Claim, ClaimRequest};
use crate::config::Config;
use crate::events;
use crate::fsx::FsError;
use crate::gate::Gate;
use crate::job::{JobRecord, Stage};
use crate::journal::JobDir;
use crate::publish;

mod finish;
mod outputs;
mod submit;

use finish::{begin_publish, begin_quarantine, finish_move};
use outputs::download_all;
pub use submit::backoff;
use submit::submit_stage;

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
    /// The pages that show finished jobs.
    pub gallery: Option<crate::gallery::Gallery>,
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
            gallery: None,
        }
    }

    /// The same, reporting job ends and starts to `gallery`.
    #[must_use]
    pub fn with_gallery(self, gallery: crate::gallery::Gallery) -> Self {
        Self {
            gallery: Some(gallery),
            ..self
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
                failures.passed(ctx);
                break end;
            }
            Err(_) if !dir.exists() => {
                warn!(
                    "another remixd process took this job over (this one's lease had expired); leaving it to that process"
                );
                break End::Lost;
            }
            Err(e) => {
                if !failures.wait(ctx, &e, "a local file step failed; the job waits and tries again (nothing was lost)").await {
                    error!(error = %e, dir = %dir.path().display(),
                        "a local file step keeps failing; the job is parked in the work area and resumes at the next start");
                    break End::Lost;
                }
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
                if let Some(gallery) = &ctx.gallery {
                    gallery.job_ended(&dest, &rec.source);
                }
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
                if let Some(gallery) = &ctx.gallery {
                    gallery.job_ended(&dest, &rec.source);
                }
                warn!(event = events::JOB_QUARANTINED, reason = error.reason.name(),
                    message = %error.message, dir = %dest.display(), "moved to the quarantine");
                return Ok(End::Quarantined);
            }
        }
    }
}

fn total_ms(rec: &JobRecord) -> u64 {
    rec.timings
        .detected_at
        .and_then(|t| t.elapsed().ok())
        .map_or(0, |d| d.as_millis() as u64)
}

async fn with_local_retry<T>(ctx: &Ctx, mut step: impl FnMut() -> Result<T, FsError>) -> Option<T> {
    let mut failures = LocalFailures::default();
    loop {
        match step() {
            Ok(v) => {
                failures.passed(ctx);
                return Some(v);
            }
            Err(e) => {
                if !failures
                    .wait(
                        ctx,
                        &e,
                        "claiming failed; the input stays where it is and remixd tries again",
                    )
                    .await
                {
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
#[derive(Default)]
struct LocalFailures {
    others: u32,
}

impl LocalFailures {
    fn passed(&mut self, ctx: &Ctx) {
        self.others = 0;
        ctx.set_disk_blocked(false);
    }

    /// Waits before the next try, logging `what`; false when the step should be given up.
    async fn wait(&mut self, ctx: &Ctx, e: &FsError, what: &str) -> bool {
        let capacity = e.is_local_capacity();
        if !capacity {
            if self.others >= ctx.config().retry.max_attempts {
                return false;
            }
            self.others += 1;
        }
        ctx.set_disk_blocked(capacity);
        let wait = ctx.config().retry.max_backoff.min(Duration::from_secs(30));
        warn!(error = %e, retry_in_ms = wait.as_millis() as u64, local_capacity = capacity, "{what}");
        tokio::time::sleep(wait).await;
        true
    }
}
