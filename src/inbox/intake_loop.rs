//! The intake loop: sleeps until something is due (the earliest settle, sidecar or orphan
//! deadline, a watcher event, a job slot freed, or a periodic timer: poll, rescan, lease,
//! stats, watchdog), then does only that work and hands ready inputs to jobs. It never wakes
//! on a fixed short tick, and a waiting file costs nothing until its deadline or an event
//! names it.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Instant, Interval, MissedTickBehavior, interval_at, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::settle::{Decision, Intake, IntakeTimings};
use super::watch::{self, Entry, Mode, RescanReason, Scope, WatchMsg};
use crate::api::billing::round_cents;
use crate::config::Config;
use crate::config::reload::Reloader;
use crate::events;
use crate::job::lease::Owner;
use crate::job::{Input, SourceRef};
use crate::pipeline::claim::ClaimRequest;
use crate::pipeline::{self, Ctx};
use crate::shutdown::JobTracker;
use crate::status::publish::{Loop, Publisher};
use crate::systemd;

/// How long a new folder keeps being rescanned, as a safety net: when its event is handled it
/// is watched and then read, which sees everything, but a folder renamed or replaced while
/// that happened is cheap to look at again.
const FRESH_FOLDER_WINDOW: Duration = Duration::from_secs(3);

/// How often claiming is tried again while a full disk holds it back and inputs are ready.
const DISK_RETRY: Duration = Duration::from_secs(1);

/// Events handled in one go before deadlines and dispatch get their turn.
const EVENT_BATCH: usize = 512;

/// Everything the intake loop needs from the daemon.
pub struct IntakeParts {
    /// Shared job state.
    pub ctx: Arc<Ctx>,
    /// What the inbox covers.
    pub scope: Scope,
    /// How changes are noticed.
    pub mode: Mode,
    /// The native watcher, when there is one.
    pub watcher: Option<watch::Watcher>,
    /// The watcher's events.
    pub events: mpsc::Receiver<WatchMsg>,
    /// SIGHUP arrivals.
    pub reloads: Option<mpsc::UnboundedReceiver<()>>,
    /// Re-reads the config.
    pub reloader: Reloader,
    /// This process's part of the work area.
    pub owner: Owner,
    /// Writes the state file, the metrics file and the progress bar.
    pub publisher: Publisher,
}

/// How many jobs may be under way at once, claimed and not yet ended (fixed at start). Jobs
/// past the API's concurrency wait claimed in the work area; keeping that queue short leaves
/// the rest in the inbox for other remixd processes to take.
#[must_use]
pub fn job_slots(config: &Config) -> usize {
    config.limits.concurrency * 2 + 2
}

/// The loop's state: the inbox bookkeeping and the timers.
pub struct IntakeLoop {
    ctx: Arc<Ctx>,
    scope: Scope,
    mode: Mode,
    watcher: Option<watch::Watcher>,
    events: mpsc::Receiver<WatchMsg>,
    reloads: Option<mpsc::UnboundedReceiver<()>>,
    reloader: Reloader,
    owner: Owner,
    publisher: Publisher,
    intake: Intake,
    slots: Arc<Semaphore>,
    fresh: FreshFolders,
    timers: Timers,
}

impl IntakeLoop {
    /// A loop over `parts`; nothing runs until [`IntakeLoop::run`].
    #[must_use]
    pub fn new(parts: IntakeParts) -> Self {
        let config = parts.ctx.config();
        let slots = job_slots(&config);
        Self {
            intake: Intake::new(timings(&config), parts.mode == Mode::Once),
            slots: Arc::new(Semaphore::new(slots)),
            fresh: FreshFolders::default(),
            timers: Timers::new(&config),
            ctx: parts.ctx,
            scope: parts.scope,
            mode: parts.mode,
            watcher: parts.watcher,
            events: parts.events,
            reloads: parts.reloads,
            reloader: parts.reloader,
            owner: parts.owner,
            publisher: parts.publisher,
        }
    }

    /// This process's part of the work area.
    #[must_use]
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Runs until `stop` fires (with `--once`, until the inbox and the jobs are done).
    pub async fn run(&mut self, jobs: &JobTracker, stop: &CancellationToken) {
        self.take_over(jobs);
        self.full_scan(RescanReason::Start);
        let pending = self.intake.pending() + jobs.len();
        info!(event = events::DAEMON_READY, pending, "ready");
        systemd::ready(&self.status_line());
        self.publisher.tick(&self.ctx, self.progress());
        loop {
            let wake_at = self.next_wake();
            tokio::select! {
                () = stop.cancelled() => break,
                Some(msg) = self.events.recv() => self.changed_batch(msg),
                () = flagged(self.watcher.as_ref()) => self.watcher_flags(),
                () = sleep_until_some(wake_at) => {}
                () = jobs.ended() => {}
                () = self.ctx.gate.changed() => {}
                _ = self.timers.rescan.tick(), if self.mode != Mode::Once => {
                    self.full_scan(RescanReason::Interval);
                }
                _ = self.timers.poll.tick(), if self.mode == Mode::Poll => self.poll(),
                _ = self.timers.stats.tick() => self.stats(),
                _ = self.timers.watchdog.tick(), if self.timers.watchdog_on => systemd::watchdog(),
                _ = self.timers.lease.tick() => self.take_over(jobs),
                Some(()) = recv_reload(&mut self.reloads) => self.reload(),
            }
            let now = Instant::now();
            let scope = &self.scope;
            self.intake.advance(now, &mut |rel| scope.stat_file(rel));
            self.rescan_fresh_folders(now);
            self.dispatch(jobs, now);
            if let Some(gallery) = &self.ctx.gallery {
                gallery.set_waiting(self.intake.pending());
            }
            self.publisher.changed(&self.ctx, self.progress());
            if self.mode == Mode::Once && self.intake.pending() == 0 && jobs.is_empty() {
                break;
            }
        }
    }

    /// The earliest moment something held here is due.
    fn next_wake(&self) -> Option<Instant> {
        let disk = (self.ctx.disk_blocked() && self.intake.has_ready())
            .then(|| Instant::now() + DISK_RETRY);
        [
            self.intake.next_deadline(),
            self.fresh.next(),
            disk,
            self.publisher.due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Handles one event and whatever else is already queued (a drop of many files arrives
    /// as a burst).
    fn changed_batch(&mut self, first: WatchMsg) {
        self.changed(first);
        for _ in 1..EVENT_BATCH {
            match self.events.try_recv() {
                Ok(msg) => self.changed(msg),
                Err(_) => break,
            }
        }
    }

    fn changed(&mut self, WatchMsg::Changed(path): WatchMsg) {
        let Some(rel) = self.scope.relative(&path) else {
            return;
        };
        match self.scope.stat(&rel) {
            Entry::Seen(snap) => self.observe(&rel, Some(snap)),
            Entry::Gone => self.observe(&rel, None),
            Entry::Folder => {
                self.scan_folder(&rel);
                let window = FRESH_FOLDER_WINDOW.max(self.ctx.config().watch.settle * 2);
                self.fresh.add(rel, Instant::now(), window);
            }
        }
    }

    fn watcher_flags(&mut self) {
        let Some(watcher) = &self.watcher else {
            return;
        };
        if watcher.take_degraded() && self.mode != Mode::Poll {
            self.mode = Mode::Poll;
            warn!(
                event = events::WATCH_MODE,
                watch_mode = "poll",
                why = "the inotify watch limit was reached (raise fs.inotify.max_user_watches)",
                "native events are incomplete; polling the inbox from now on"
            );
        }
        if watcher.take_overflow() {
            self.full_scan(RescanReason::Overflow);
        }
    }

    fn observe(&mut self, rel: &Path, snap: Option<super::Snapshot>) {
        if let Some(new) = self.intake.observe(rel, snap, Instant::now()) {
            let file = crate::text::escape_name(new.path.as_os_str().as_bytes());
            info!(event = events::JOB_DETECTED, job_id = %new.job_id, file = %file, "new input seen");
        }
    }

    /// The reconcile scan: every entry `lstat`ed, and what is no longer there forgotten.
    fn full_scan(&mut self, reason: RescanReason) {
        info!(
            event = events::WATCH_RESCAN,
            reason = reason.name(),
            "scanning the whole inbox"
        );
        let scan = self.scan(Path::new(""));
        for (rel, snap) in scan.found {
            self.observe(&rel, Some(snap));
        }
        self.intake.sweep(&scan.unlisted, Instant::now());
    }

    /// A poll: every folder read, only new names `stat`ed. What settles is `stat`ed at its
    /// deadline, and settled entries again only when they are claimed.
    fn poll(&mut self) {
        debug!(
            event = events::WATCH_RESCAN,
            reason = RescanReason::Poll.name(),
            "polling the inbox"
        );
        let listing = self.scope.list();
        for (folder, names) in listing.folders {
            for name in names {
                let rel = folder.join(name);
                if !self.intake.touch(&rel) {
                    if let Entry::Seen(snap) = self.scope.stat(&rel) {
                        self.observe(&rel, Some(snap));
                    }
                }
            }
        }
        self.intake.sweep(&listing.unlisted, Instant::now());
    }

    fn scan_folder(&mut self, rel: &Path) {
        for (found, snap) in self.scan(rel).found {
            self.observe(&found, Some(snap));
        }
    }

    /// Scans below `rel`, watching each folder just before it is read when events are native.
    fn scan(&mut self, rel: &Path) -> watch::Scan {
        match (&mut self.watcher, self.mode) {
            (Some(watcher), Mode::Native) => {
                let inbox = &self.scope.inbox;
                // The root is watched from the start (`Path::join("")` would name it anew).
                let mut watch = |dir: &Path| {
                    if !dir.as_os_str().is_empty() {
                        watcher.watch_folder(&inbox.join(dir));
                    }
                };
                self.scope.scan_watching(rel, &mut watch)
            }
            _ => self.scope.scan(rel),
        }
    }

    fn rescan_fresh_folders(&mut self, now: Instant) {
        for folder in self.fresh.due(now) {
            self.scan_folder(&folder);
        }
    }

    fn dispatch(&mut self, jobs: &JobTracker, now: Instant) {
        if !self.intake.has_ready() || self.ctx.disk_blocked() {
            return;
        }
        let capacity = self.slots.available_permits();
        let scope = &self.scope;
        let ready = self
            .intake
            .take_ready(now, capacity, &mut |rel| scope.stat_file(rel));
        for decision in ready {
            let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
                warn!("no job slot free for a ready input; it will be retried");
                continue;
            };
            let ctx = Arc::clone(&self.ctx);
            let request = claim_request(decision);
            jobs.spawn(async move {
                pipeline::run_new(ctx, request).await;
                drop(permit);
            });
        }
    }

    /// Renews this process's lease and resumes the jobs of processes presumed dead.
    fn take_over(&self, jobs: &JobTracker) {
        let now = match self.owner.renew() {
            Ok(now) => now,
            Err(e) => {
                warn!(error = %e, "could not renew the lease; other processes may take this one's jobs over");
                return;
            }
        };
        let lease = self.ctx.config().lease;
        // The share first: at start no job may be admitted with the whole account's limits.
        self.ctx.gate.set_live(self.owner.live_owners(lease, now));
        for dir in self.owner.take_over_dead(lease, now) {
            jobs.spawn(pipeline::run_resumed(Arc::clone(&self.ctx), dir));
        }
        self.ctx.gate.flush_usage();
    }

    fn reload(&mut self) {
        let Some(fresh) = self.reloader.reload(&self.ctx.config()) else {
            return;
        };
        self.intake.set_timings(timings(&fresh));
        self.timers.reset(&fresh);
        self.ctx.gate.apply(&fresh);
        self.ctx.replace_config(fresh);
        // STATUS shows the new state at once rather than at the next stats tick.
        systemd::status(&self.status_line());
    }

    /// A clean stop: the state file goes, the metrics say the process is down.
    pub fn stopped(&mut self) {
        self.publisher.stopped(&self.ctx, self.progress());
    }

    /// Where the loop stands, for the publisher.
    fn progress(&self) -> Loop {
        Loop {
            pending: self.intake.pending(),
        }
    }

    fn stats(&mut self) {
        self.publisher.tick(&self.ctx, self.progress());
        let s = &self.ctx.stats;
        let today = self.ctx.gate.today();
        info!(
            event = events::DAEMON_STATS,
            pending = self.intake.pending(),
            in_flight = s.in_flight.load(Ordering::Relaxed),
            completed = s.completed.load(Ordering::Relaxed),
            quarantined = s.quarantined.load(Ordering::Relaxed),
            images_today = today.images(),
            spend_today_usd = round_cents(today.spend()),
            api_paused = self.ctx.gate.paused().is_some(),
            "counts"
        );
        systemd::status(&self.status_line());
    }

    /// What `systemctl status` shows: the counts of `daemon.stats`, and the API's state
    /// always spelled out, so "not paused" is visible rather than an absence.
    fn status_line(&self) -> String {
        let s = &self.ctx.stats;
        let (done_today, quarantined_today) = s.today();
        let usage = self.ctx.gate.today();
        format!(
            "pending {}, in flight {}, completed {}, quarantined {} (since start); \
             today: done {done_today}, quarantined {quarantined_today}, {} images, ${:.2} \
             (whole deployment); API {}",
            self.intake.pending(),
            s.in_flight.load(Ordering::Relaxed),
            s.completed.load(Ordering::Relaxed),
            s.quarantined.load(Ordering::Relaxed),
            usage.images(),
            usage.spend(),
            self.ctx
                .gate
                .paused()
                .map_or("ok".to_owned(), |r| format!("paused ({})", r.name())),
        )
    }
}

fn timings(config: &Config) -> IntakeTimings {
    IntakeTimings {
        settle: config.watch.settle,
        sidecar_wait: config.watch.sidecar_wait,
        orphan_after: config.watch.orphan_after,
    }
}

/// The loop's periodic timers; each fires only as often as its own setting says.
struct Timers {
    rescan: Interval,
    poll: Interval,
    stats: Interval,
    lease: Interval,
    watchdog: Interval,
    watchdog_on: bool,
}

impl Timers {
    fn new(config: &Config) -> Self {
        let watchdog = systemd::watchdog_period();
        Self {
            rescan: interval_after(config.watch.rescan_interval),
            poll: interval_after(config.watch.poll_interval),
            stats: interval_after(config.logging.stats_interval),
            lease: interval_after(config.lease / 3),
            watchdog: interval_after(watchdog.unwrap_or(Duration::from_secs(3600))),
            watchdog_on: watchdog.is_some(),
        }
    }

    /// New periods after a reload. The stats timer keeps its phase when its period did not
    /// change, so `daemon.stats` and STATUS keep their rhythm.
    fn reset(&mut self, config: &Config) {
        self.rescan = interval_after(config.watch.rescan_interval);
        self.poll = interval_after(config.watch.poll_interval);
        if self.stats.period() != period(config.logging.stats_interval) {
            self.stats = interval_after(config.logging.stats_interval);
        }
        self.lease = interval_after(config.lease / 3);
    }
}

fn period(every: Duration) -> Duration {
    every.max(Duration::from_millis(10))
}

pub(crate) fn interval_after(every: Duration) -> Interval {
    let every = period(every);
    let mut i = interval_at(Instant::now() + every, every);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

/// Folders created a moment ago, rescanned a few times while notify catches up.
#[derive(Debug, Default)]
struct FreshFolders {
    folders: Vec<FreshFolder>,
}

/// A folder created a moment ago, and how many of its rescans are done.
#[derive(Debug)]
struct FreshFolder {
    rel: PathBuf,
    since: Instant,
    window: Duration,
    rescans: usize,
}

impl FreshFolder {
    fn next(&self) -> Instant {
        self.since + self.window / FRESH_RESCANS[self.rescans]
    }
}

/// When a fresh folder is scanned again, as fractions of its window.
const FRESH_RESCANS: [u32; 3] = [12, 3, 1];

impl FreshFolders {
    fn add(&mut self, rel: PathBuf, now: Instant, window: Duration) {
        self.folders.retain(|f| f.rel != rel);
        self.folders.push(FreshFolder {
            rel,
            since: now,
            window,
            rescans: 0,
        });
    }

    fn next(&self) -> Option<Instant> {
        self.folders.iter().map(FreshFolder::next).min()
    }

    fn due(&mut self, now: Instant) -> Vec<PathBuf> {
        let mut due = Vec::new();
        for folder in &mut self.folders {
            if folder.next() <= now {
                due.push(folder.rel.clone());
                folder.rescans += 1;
            }
        }
        self.folders.retain(|f| f.rescans < FRESH_RESCANS.len());
        due
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn flagged(watcher: Option<&watch::Watcher>) {
    match watcher {
        Some(w) => w.flagged().await,
        None => std::future::pending().await,
    }
}

async fn recv_reload(rx: &mut Option<mpsc::UnboundedReceiver<()>>) -> Option<()> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn claim_request(decision: Decision) -> ClaimRequest {
    let parent = |p: &Path| p.parent().map(PathBuf::from).unwrap_or_default();
    let name = |p: &Path| p.file_name().unwrap_or_default().to_os_string();
    match decision {
        Decision::Image {
            job_id,
            detected_at,
            image,
            sidecar,
            mask,
        } => {
            let sidecar = sidecar.as_deref().map(name);
            let mask = mask.as_deref().map(name);
            ClaimRequest {
                job_id,
                detected_at,
                source: SourceRef::new(&parent(&image), &name(&image), sidecar.as_deref())
                    .with_mask(mask.as_deref()),
                input: Input::Image,
            }
        }
        Decision::Stray {
            job_id,
            detected_at,
            path,
            reason,
        } => ClaimRequest {
            job_id,
            detected_at,
            source: SourceRef::new(&parent(&path), &name(&path), None),
            input: Input::Stray {
                reason,
                message: crate::job::verdict::stray_message(reason),
            },
        },
    }
}
