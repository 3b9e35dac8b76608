//! The spine: load what the daemon needs, resume unfinished jobs, watch the inbox, hand ready
//! inputs to jobs, tell systemd, wait for a stop, drain. Business rules live in the stages.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::api::ApiClient;
use crate::claim::ClaimRequest;
use crate::config::Config;
use crate::error::DaemonError;
use crate::events;
use crate::gate::Gate;
use crate::inbox::{Decision, Intake, IntakeTimings};
use crate::job::{Input, SourceRef};
use crate::journal;
use crate::lease::Owner;
use crate::pipeline::{self, Ctx};
use crate::shutdown::Shutdown;
use crate::systemd;
use crate::watch::{self, Entry, RescanReason, Scope, WatchMsg};

/// How this run behaves.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// Process what is there now, then exit.
    pub once: bool,
    /// The command line's overrides, applied again on reload.
    pub overrides: crate::config::Overrides,
    /// SIGHUP arrivals.
    pub reloads: Option<mpsc::UnboundedReceiver<()>>,
    /// Changes the log level on reload.
    pub logging: Option<crate::logging::ReloadHandle>,
}

/// Runs the daemon until `shutdown` fires (or, with `once`, until the work at start is done).
pub async fn run(
    config: Config,
    mut options: RunOptions,
    shutdown: Shutdown,
) -> Result<(), DaemonError> {
    config.prepare_folders()?;
    let api = ApiClient::new(&config.api).map_err(DaemonError::Http)?;
    let scope = Scope {
        inbox: config.inbox.clone(),
        exclude: vec![
            config.work_dir.clone(),
            config.outbox.clone(),
            config.quarantine.clone(),
        ],
    };
    let owner = Owner::register(&config.work_dir)?;
    let mut gate = Gate::new(&config);
    gate.set_scratch(owner.root().to_path_buf());
    let ctx = Arc::new(Ctx::new(config, gate, api, owner.jobs()));
    let (tx, rx) = mpsc::channel(4096);
    let (watcher, chosen) = if options.once {
        (
            None,
            watch::Chosen {
                native: false,
                poll: false,
                why: "--once: one scan, no watching".into(),
            },
        )
    } else {
        let (w, c) = watch::start(&scope, ctx.config().watch.mode, tx);
        (Some(w), c)
    };
    let mode = match (chosen.native, chosen.poll) {
        (true, _) => "native",
        (false, true) => "poll",
        (false, false) => "once",
    };
    info!(event = events::DAEMON_STARTED, version = crate::VERSION,
        inbox = %ctx.config().inbox.display(), outbox = %ctx.config().outbox.display(),
        quarantine = %ctx.config().quarantine.display(), provider = ctx.config().api.provider.name(),
        watch_mode = mode, owner = owner.id(), "remixd started");
    info!(event = events::WATCH_MODE, watch_mode = mode, why = %chosen.why, "watching the inbox");
    let jobs = Jobs {
        tracker: TaskTracker::new(),
        hard_stop: CancellationToken::new(),
    };
    let mut intake = IntakeLoop::new(&ctx, scope, options.once, chosen.poll, watcher, rx, owner);
    intake.take_over(&jobs);
    intake.reloads = options.reloads.take();
    intake.reloader = Reloader {
        overrides: options.overrides,
        logging: options.logging.take(),
    };
    intake.run(&jobs, shutdown.token()).await;
    drain(&ctx, &jobs, &shutdown, &intake.owner).await;
    if journal::list(&ctx.jobs).is_ok_and(|left| left.is_empty()) {
        intake.owner.retire();
    }
    Ok(())
}

/// The running jobs, and the token that abandons them when the grace period is over.
struct Jobs {
    tracker: TaskTracker,
    hard_stop: CancellationToken,
}

impl Jobs {
    fn spawn(&self, job: impl Future<Output = ()> + Send + 'static) {
        let hard_stop = self.hard_stop.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = job => {}
                () = hard_stop.cancelled() => {}
            }
        });
    }
}

/// Stops intake's work: waits up to `shutdown_grace` for the running jobs, renewing the lease
/// meanwhile so no other process takes them over, then abandons the rest at their current
/// (journaled) step.
async fn drain(ctx: &Ctx, jobs: &Jobs, shutdown: &Shutdown, owner: &Owner) {
    let in_flight = ctx.stats.in_flight.load(Ordering::Relaxed);
    let signal = shutdown.signal();
    if signal.is_some() {
        systemd::stopping();
        info!(
            event = events::DAEMON_STOPPING,
            signal,
            in_flight,
            "stopping: no new claims; in-flight jobs get {}",
            humantime::format_duration(ctx.config().shutdown_grace)
        );
    }
    jobs.tracker.close();
    let deadline = tokio::time::Instant::now() + ctx.config().shutdown_grace;
    let mut renew = interval_after(ctx.config().lease / 3);
    loop {
        tokio::select! {
            () = jobs.tracker.wait() => break,
            _ = renew.tick() => {
                if let Err(e) = owner.renew() {
                    warn!(error = %e, "could not renew the lease while stopping");
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                jobs.hard_stop.cancel();
                jobs.tracker.wait().await;
                break;
            }
        }
    }
    let left = journal::list(&ctx.jobs).map_or(0, |l| l.len());
    info!(
        event = events::DAEMON_STOPPED,
        signal,
        in_flight = left,
        "stopped; {left} unfinished job(s) will resume at the next start"
    );
}

struct IntakeLoop {
    ctx: Arc<Ctx>,
    scope: Scope,
    once: bool,
    poll: bool,
    watcher: Option<watch::Watcher>,
    rx: mpsc::Receiver<WatchMsg>,
    intake: Intake,
    slots: Arc<Semaphore>,
    reloads: Option<mpsc::UnboundedReceiver<()>>,
    reloader: Reloader,
    owner: Owner,
    fresh_folders: Vec<(PathBuf, Instant)>,
}

impl IntakeLoop {
    fn new(
        ctx: &Arc<Ctx>,
        scope: Scope,
        once: bool,
        poll: bool,
        watcher: Option<watch::Watcher>,
        rx: mpsc::Receiver<WatchMsg>,
        owner: Owner,
    ) -> Self {
        let w = &ctx.config().watch;
        let timings = IntakeTimings {
            settle: w.settle,
            sidecar_wait: w.sidecar_wait,
            orphan_after: w.orphan_after,
        };
        // Jobs past the API's concurrency wait claimed in the work area; keeping that queue
        // short leaves the rest in the inbox for other remixd processes to take.
        let slots = ctx.config().limits.concurrency * 2 + 2;
        Self {
            ctx: Arc::clone(ctx),
            scope,
            once,
            poll,
            watcher,
            rx,
            intake: Intake::new(timings, once),
            slots: Arc::new(Semaphore::new(slots)),
            reloads: None,
            reloader: Reloader::default(),
            owner,
            fresh_folders: Vec::new(),
        }
    }

    async fn run(&mut self, jobs: &Jobs, stop: &CancellationToken) {
        self.full_scan(RescanReason::Start);
        let pending = self.intake.pending() + jobs.tracker.len();
        info!(event = events::DAEMON_READY, pending, "ready");
        systemd::ready(&self.status_line());
        let cfg = self.ctx.config();
        let mut tick = tokio::time::interval(tick_period(cfg.watch.settle));
        let mut rescan = interval_after(cfg.watch.rescan_interval);
        let mut poll = interval_after(cfg.watch.poll_interval);
        let mut stats = interval_after(cfg.logging.stats_interval);
        let mut lease = interval_after(cfg.lease / 3);
        let mut dog =
            interval_after(systemd::watchdog_period().unwrap_or(Duration::from_secs(3600)));
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                Some(msg) = self.rx.recv() => self.changed(msg),
                _ = tick.tick() => {
                    if self.watcher.as_ref().is_some_and(watch::Watcher::take_degraded) && !self.poll {
                        self.poll = true;
                        warn!(event = events::WATCH_MODE, watch_mode = "poll",
                            why = "the inotify watch limit was reached (raise fs.inotify.max_user_watches)",
                            "native events are incomplete; polling the inbox from now on");
                    }
                    if self.watcher.as_ref().is_some_and(watch::Watcher::take_overflow) {
                        self.full_scan(RescanReason::Overflow);
                    }
                    self.restat();
                    self.rescan_fresh_folders();
                    self.dispatch(jobs);
                    if self.once && self.intake.pending() == 0 && jobs.tracker.is_empty() {
                        break;
                    }
                }
                _ = rescan.tick(), if !self.once => self.full_scan(RescanReason::Interval),
                _ = poll.tick(), if self.poll => self.full_scan(RescanReason::Poll),
                _ = stats.tick() => self.stats(),
                _ = dog.tick() => systemd::watchdog(),
                _ = lease.tick() => self.take_over(jobs),
                Some(()) = recv_reload(&mut self.reloads) => {
                    if let Some(fresh) = self.reloader.reload(&self.ctx.config()) {
                        let w = &fresh.watch;
                        self.intake.set_timings(IntakeTimings { settle: w.settle, sidecar_wait: w.sidecar_wait, orphan_after: w.orphan_after });
                        tick = tokio::time::interval(tick_period(w.settle));
                        rescan = interval_after(w.rescan_interval);
                        poll = interval_after(w.poll_interval);
                        stats = interval_after(fresh.logging.stats_interval);
                        lease = interval_after(fresh.lease / 3);
                        self.ctx.gate.apply(&fresh);
                        self.ctx.replace_config(fresh);
                    }
                }
            }
        }
    }

    fn changed(&mut self, WatchMsg::Changed(path): WatchMsg) {
        let Some(rel) = self.scope.relative(&path) else {
            return;
        };
        if self.once {
            return;
        }
        match self.scope.stat(&rel) {
            Entry::Seen(snap) => self.observe(&rel, Some(snap)),
            Entry::Gone => self.observe(&rel, None),
            // A new folder: files may land in it before notify has added its watch, so it is
            // scanned now and on every tick for a while.
            Entry::Folder => {
                self.scan_folder(&rel);
                self.fresh_folders.push((rel, Instant::now()));
            }
        }
    }

    fn observe(&mut self, rel: &std::path::Path, snap: Option<crate::inbox::Snapshot>) {
        if let Some(new) = self.intake.observe(rel, snap, Instant::now()) {
            use std::os::unix::ffi::OsStrExt;
            let file = crate::text::escape_name(new.path.as_os_str().as_bytes());
            info!(event = events::JOB_DETECTED, job_id = %new.job_id, file = %file, "new input seen");
        }
    }

    fn full_scan(&mut self, reason: RescanReason) {
        if reason == RescanReason::Poll {
            debug!(
                event = events::WATCH_RESCAN,
                reason = reason.name(),
                "polling the inbox"
            );
        } else {
            info!(
                event = events::WATCH_RESCAN,
                reason = reason.name(),
                "scanning the whole inbox"
            );
        }
        let found = self.scope.scan(std::path::Path::new(""));
        let seen: std::collections::HashSet<PathBuf> =
            found.iter().map(|(p, _)| p.clone()).collect();
        let gone: Vec<PathBuf> = self
            .intake
            .tracked_paths()
            .filter(|p| !seen.contains(*p))
            .map(PathBuf::from)
            .collect();
        for rel in gone {
            self.intake.observe(&rel, None, Instant::now());
        }
        self.intake.forget_handed_missing(&seen);
        for (rel, snap) in found {
            self.observe(&rel, Some(snap));
        }
    }

    fn restat(&mut self) {
        let paths: Vec<PathBuf> = self.intake.tracked_paths().map(PathBuf::from).collect();
        for rel in paths {
            match self.scope.stat(&rel) {
                Entry::Seen(snap) => self.observe(&rel, Some(snap)),
                Entry::Gone => self.observe(&rel, None),
                Entry::Folder => {}
            }
        }
    }

    fn scan_folder(&mut self, rel: &std::path::Path) {
        for (found, snap) in self.scope.scan(rel) {
            self.observe(&found, Some(snap));
        }
    }

    /// Scans folders created in the last few seconds, which native events may not cover yet.
    fn rescan_fresh_folders(&mut self) {
        let window = FRESH_FOLDER_WINDOW.max(self.ctx.config().watch.settle * 2);
        self.fresh_folders.retain(|(_, at)| at.elapsed() < window);
        let folders: Vec<PathBuf> = self.fresh_folders.iter().map(|(p, _)| p.clone()).collect();
        for rel in folders {
            self.scan_folder(&rel);
        }
    }

    fn dispatch(&mut self, jobs: &Jobs) {
        let capacity = if self.ctx.disk_blocked() {
            0
        } else {
            self.slots.available_permits()
        };
        for decision in self.intake.take_ready(Instant::now(), capacity) {
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
    fn take_over(&self, jobs: &Jobs) {
        let now = match self.owner.renew() {
            Ok(now) => now,
            Err(e) => {
                warn!(error = %e, "could not renew the lease; other processes may take this one's jobs over");
                return;
            }
        };
        for dir in self.owner.take_over_dead(self.ctx.config().lease, now) {
            jobs.spawn(pipeline::run_resumed(Arc::clone(&self.ctx), dir));
        }
    }

    fn stats(&self) {
        let s = &self.ctx.stats;
        info!(
            event = events::DAEMON_STATS,
            pending = self.intake.pending(),
            in_flight = s.in_flight.load(Ordering::Relaxed),
            completed = s.completed.load(Ordering::Relaxed),
            quarantined = s.quarantined.load(Ordering::Relaxed),
            images_today = self.ctx.gate.images_today(),
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
        format!(
            "pending {}, in flight {}, completed {}, quarantined {} (since start); \
             today: done {done_today}, quarantined {quarantined_today}, {} images; API {}",
            self.intake.pending(),
            s.in_flight.load(Ordering::Relaxed),
            s.completed.load(Ordering::Relaxed),
            s.quarantined.load(Ordering::Relaxed),
            self.ctx.gate.images_today(),
            self.ctx
                .gate
                .paused()
                .map_or("ok".to_owned(), |r| format!("paused ({})", r.name())),
        )
    }
}

fn claim_request(decision: Decision) -> ClaimRequest {
    let parent = |p: &std::path::Path| p.parent().map(PathBuf::from).unwrap_or_default();
    let name = |p: &std::path::Path| p.file_name().unwrap_or_default().to_os_string();
    match decision {
        Decision::Image {
            job_id,
            detected_at,
            image,
            sidecar,
        } => {
            let sidecar = sidecar.as_deref().map(name);
            ClaimRequest {
                job_id,
                detected_at,
                source: SourceRef::new(&parent(&image), &name(&image), sidecar.as_deref()),
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
                message: crate::quarantine::stray_message(reason),
            },
        },
    }
}

/// How long a new folder is rescanned on every tick.
const FRESH_FOLDER_WINDOW: Duration = Duration::from_secs(3);

fn tick_period(settle: Duration) -> Duration {
    (settle / 4).clamp(Duration::from_millis(20), Duration::from_millis(250))
}

fn interval_after(period: Duration) -> tokio::time::Interval {
    let period = period.max(Duration::from_millis(10));
    let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

async fn recv_reload(rx: &mut Option<mpsc::UnboundedReceiver<()>>) -> Option<()> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Keys whose new value needs a restart: the folders, and the API's provider and key.
const RESTART_KEYS: [&str; 5] = ["inbox", "outbox", "quarantine", "work_dir", "api."];

/// Keys a reload can only apply at the next start: how the inbox is watched and the
/// process-wide log format and umask. Everything else applies at once.
const AT_RESTART_KEYS: [&str; 3] = ["watch.mode", "logging.format", "umask"];

/// SIGHUP: re-read the config, apply what can change live, refuse what needs a restart.
#[derive(Debug, Default)]
struct Reloader {
    overrides: crate::config::Overrides,
    logging: Option<crate::logging::ReloadHandle>,
}

impl Reloader {
    /// The new config, when the reload is accepted.
    fn reload(&self, current: &Config) -> Option<Config> {
        let fresh = match crate::config::load(&current.path, self.overrides) {
            Ok(fresh) => fresh,
            Err(e) => {
                warn!(event = events::DAEMON_RELOAD_FAILED, error = %e,
                    "the new config is invalid; keeping the old one");
                return None;
            }
        };
        let changed = crate::config::changed_keys(current, &fresh);
        let restart: Vec<&str> = changed
            .iter()
            .map(String::as_str)
            .filter(|k| RESTART_KEYS.iter().any(|r| k.starts_with(r)))
            .collect();
        if !restart.is_empty() {
            let error = format!(
                "{} cannot change while running; restart remixd to apply",
                restart.join(", ")
            );
            warn!(event = events::DAEMON_RELOAD_FAILED, error = %error, "reload refused; keeping the old config");
            return None;
        }
        if let Some(handle) = &self.logging {
            if let Err(e) = handle.set_level(&fresh.logging.level) {
                warn!(event = events::DAEMON_RELOAD_FAILED, error = %e, "keeping the old log level");
            }
        }
        let at_restart: Vec<&str> = changed
            .iter()
            .map(String::as_str)
            .filter(|k| AT_RESTART_KEYS.iter().any(|r| k.starts_with(r)))
            .collect();
        info!(event = events::DAEMON_RELOADED, changed = ?changed, at_restart = ?at_restart,
            "config re-read and applied; keys listed in at_restart take effect at the next start");
        Some(fresh)
    }
}
