//! What every job shares ([`Ctx`]: the gate, the API client, the counters, the config in
//! force) and what one job is (`Job`: its folder, its record, and the config it started
//! with). A reload replaces the config in force; a job keeps the snapshot it took at its start,
//! so a reload applies to jobs that start after it and never mixes two configs in one job.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tracing::{info, warn};

use crate::api::{ApiClient, Gate};
use crate::clock;
use crate::config::Config;
use crate::job::JobRecord;
use crate::job::journal::JobDir;

/// Counts since start, for `daemon.stats`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Jobs running now.
    pub in_flight: AtomicU64,
    /// Jobs published.
    pub completed: AtomicU64,
    /// Jobs quarantined.
    pub quarantined: AtomicU64,
    today: Mutex<DayCounts>,
}

/// Jobs that ended on one UTC day.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct DayCounts {
    /// `YYYY-MM-DD`.
    day: String,
    published: u64,
    quarantined: u64,
}

impl Stats {
    /// Counts a job's end: published, or else quarantined.
    pub(super) fn count_end(&self, published: bool) {
        let total = if published {
            &self.completed
        } else {
            &self.quarantined
        };
        total.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut today) = self.today.lock() {
            let day = clock::utc_date();
            if today.day != day {
                *today = DayCounts {
                    day,
                    ..DayCounts::default()
                };
            }
            if published {
                today.published += 1;
            } else {
                today.quarantined += 1;
            }
        }
    }

    /// Jobs published and quarantined so far this UTC day (by this process).
    #[must_use]
    pub fn today(&self) -> (u64, u64) {
        self.today.lock().map_or((0, 0), |today| {
            if today.day == clock::utc_date() {
                (today.published, today.quarantined)
            } else {
                (0, 0)
            }
        })
    }
}

/// What every job shares.
#[derive(Debug)]
pub struct Ctx {
    /// The config in force: a reload swaps it; each job takes a snapshot at its start.
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
    /// `--once`: nothing waits for a file that is not there.
    once: bool,
    /// The Prometheus counters and histograms.
    pub metrics: crate::metrics::Metrics,
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
            once: false,
            metrics: crate::metrics::Metrics::new(),
        }
    }

    /// The same for a `--once` run: an inpaint job does not wait for a mask that is not there.
    #[must_use]
    pub fn with_once(self, once: bool) -> Self {
        Self { once, ..self }
    }

    /// Whether this is a `--once` run.
    #[must_use]
    pub fn once(&self) -> bool {
        self.once
    }

    /// The same, reporting job starts and ends to `gallery`.
    #[must_use]
    pub fn with_gallery(self, gallery: crate::gallery::Gallery) -> Self {
        Self {
            gallery: Some(gallery),
            ..self
        }
    }

    /// A job ended in `dest` (outbox or quarantine): its row goes onto the pages.
    pub fn job_ended(&self, dest: &std::path::Path, rec: &crate::job::JobRecord) {
        if let Some(gallery) = &self.gallery {
            gallery.job_ended(dest, &rec.source);
        }
    }

    /// The config in force now. A job reads it once, at its start.
    #[must_use]
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(
            &self
                .config
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Puts a reloaded config in force for every job that starts from now on.
    pub fn replace_config(&self, config: Config) {
        *self
            .config
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config);
    }

    /// Whether new claims wait because a disk is full or read-only.
    #[must_use]
    pub fn disk_blocked(&self) -> bool {
        self.disk_blocked.load(Ordering::Relaxed)
    }

    pub(super) fn set_disk_blocked(&self, blocked: bool) {
        let was = self.disk_blocked.swap(blocked, Ordering::Relaxed);
        if blocked && !was {
            warn!(
                "a disk is full or read-only: no new claims until it has room again; nothing is lost"
            );
        } else if was && !blocked {
            info!("the disk has room again; claiming resumes");
        }
    }
}

/// One job, as every stage sees it.
#[derive(Debug)]
pub(super) struct Job {
    /// Its folder in the work area.
    pub(super) dir: JobDir,
    /// What the journal says (in memory it may be one step ahead after a failed write).
    pub(super) rec: JobRecord,
    /// The config taken when this run of the job started; every stage reads this one.
    pub(super) config: Arc<Config>,
}

impl Job {
    /// What one request of this job may cost, by this job's pricing.
    pub(super) fn request_price(&self, request: &crate::sidecar::RemixRequest) -> f64 {
        crate::api::billing::request_price(
            &self.config.pricing,
            request,
            self.rec.sends_character_reference(),
        )
    }
}
