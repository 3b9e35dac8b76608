//! What a running process shows of itself: its state file ([`super::state_file`]) replaced
//! when its state changes (at most once a second) and at every `logging.stats_interval`, the
//! metrics file (`metrics.textfile`) at every `logging.stats_interval`, and `--once`'s
//! progress bar at every change. At a clean stop the state file goes and the metrics say
//! `remixd_up 0`. The intake loop decides when; this module decides what is written.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::{debug, warn};

use super::state_file::{self, ApiState, ProcessState};
use crate::api::PauseReason;
use crate::clock;
use crate::job::lease::Owner;
use crate::metrics::Gauges;
use crate::pipeline::Ctx;
use crate::progress::{Done, Progress};

/// The shortest time between two state files written for a change.
const DEBOUNCE: Duration = Duration::from_secs(1);

/// Where the loop stands: what only it knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loop {
    /// Files waiting in the inbox.
    pub pending: usize,
}

/// The counts whose change is worth a new state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    pending: usize,
    in_flight: u64,
    completed: u64,
    quarantined: u64,
    paused: Option<PauseReason>,
}

/// The state and metrics writer of one process.
#[derive(Debug)]
pub struct Publisher {
    owner: Owner,
    started_at: String,
    written: Option<(Instant, Key)>,
    due: Option<Instant>,
    progress: Option<Progress>,
}

impl Publisher {
    /// A writer for `owner`'s folder, with `progress` drawn if given.
    #[must_use]
    pub fn new(owner: &Owner, progress: Option<Progress>) -> Self {
        Self {
            owner: owner.clone(),
            started_at: clock::now_rfc3339(),
            written: None,
            due: None,
            progress,
        }
    }

    /// When a state file held back by the debounce is due.
    #[must_use]
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Something may have changed: the bar moves, and the state file is replaced now or, if
    /// one was written less than a second ago, at [`Publisher::due`].
    pub fn changed(&mut self, ctx: &Ctx, now_loop: Loop) {
        let key = key(ctx, now_loop);
        self.draw(key);
        let now = Instant::now();
        match self.written {
            Some((_, last)) if last == key => self.due = None,
            Some((at, _)) if now < at + DEBOUNCE => self.due = Some(at + DEBOUNCE),
            _ => self.write_state(ctx, key),
        }
    }

    /// The stats tick (and the start): the state file and the metrics file, whatever changed.
    pub fn tick(&mut self, ctx: &Ctx, now_loop: Loop) {
        let key = key(ctx, now_loop);
        self.draw(key);
        self.write_state(ctx, key);
        self.write_metrics(ctx, key, true);
    }

    /// A clean stop: the state file goes (the process is gone from `remixd status` at once),
    /// the metrics say `remixd_up 0`, and the bar shows where the run ended.
    pub fn stopped(&mut self, ctx: &Ctx, now_loop: Loop) {
        let key = key(ctx, now_loop);
        self.draw(key);
        if let Some(bar) = &self.progress {
            bar.finish();
        }
        state_file::remove(self.owner.root());
        self.write_metrics(ctx, key, false);
    }

    fn draw(&self, key: Key) {
        if let Some(bar) = &self.progress {
            let done = key.completed + key.quarantined;
            bar.update(Done {
                done,
                quarantined: key.quarantined,
                total: done + key.in_flight + key.pending as u64,
                paused: key.paused,
            });
        }
    }

    fn write_state(&mut self, ctx: &Ctx, key: Key) {
        self.written = Some((Instant::now(), key));
        self.due = None;
        let info = self.owner.info();
        let (completed_today, quarantined_today) = ctx.stats.today();
        let state = ProcessState {
            host: info.host.clone(),
            pid: info.pid,
            version: info.version.clone(),
            started_at: self.started_at.clone(),
            written_at: clock::now_rfc3339(),
            api: api_state(ctx),
            pending: key.pending as u64,
            in_flight: crate::gallery::stage_counts(std::slice::from_ref(&ctx.jobs)),
            day: clock::utc_date(),
            completed_today,
            quarantined_today,
        };
        if let Err(e) = state_file::write(self.owner.root(), &state) {
            // Advisory: `remixd status` shows an older state, and the next change retries.
            debug!(error = %e, "could not write this process's state file");
        }
    }

    fn write_metrics(&self, ctx: &Ctx, key: Key, up: bool) {
        let Some(path) = ctx.config().metrics_textfile.clone() else {
            return;
        };
        let gauges = Gauges {
            pending: key.pending as u64,
            in_flight: key.in_flight,
            paused: key.paused,
            owner: &self.owner.id(),
            up,
        };
        if let Err(e) = ctx.metrics.write(&path, &gauges) {
            warn!(error = %e, "the metrics file was not written; it is tried again at the next stats tick");
        }
    }
}

fn key(ctx: &Ctx, now_loop: Loop) -> Key {
    let s = &ctx.stats;
    Key {
        pending: now_loop.pending,
        in_flight: s.in_flight.load(Ordering::Relaxed),
        completed: s.completed.load(Ordering::Relaxed),
        quarantined: s.quarantined.load(Ordering::Relaxed),
        paused: ctx.gate.paused(),
    }
}

fn api_state(ctx: &Ctx) -> ApiState {
    let rfc = |t: SystemTime| Some(clock::rfc3339(t));
    match ctx.gate.pause_info() {
        Some(p) => ApiState {
            paused: true,
            reason: Some(p.reason.name().to_owned()),
            since: rfc(p.since),
            next_probe_at: rfc(p.next_probe_at),
        },
        None => ApiState::default(),
    }
}
