//! The spine: load what the daemon needs, resume unfinished jobs, watch the inbox, hand ready
//! inputs to jobs, tell systemd, wait for a stop, drain. Business rules live in the stages
//! ([`crate::pipeline`]) and the inbox's rooms ([`crate::inbox`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{ApiClient, Gate};
use crate::config::Config;
use crate::config::reload::Reloader;
use crate::error::DaemonError;
use crate::events;
use crate::gallery::Gallery;
use crate::inbox::intake_loop::{IntakeLoop, IntakeParts};
use crate::inbox::watch::{self, Chosen, Mode, Scope};
use crate::job::journal;
use crate::job::lease::Owner;
use crate::pipeline::Ctx;
use crate::progress::Progress;
use crate::shutdown::{JobTracker, Shutdown};
use crate::status::publish::Publisher;
use crate::systemd;

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
    let Shared {
        ctx,
        owner,
        scope,
        gallery,
    } = open_shared(config, options.once)?;
    let gallery_stop = CancellationToken::new();
    let gallery_task = tokio::spawn(gallery.run(gallery_live(&ctx), gallery_stop.clone()));
    let (tx, events) = mpsc::channel(4096);
    let (watcher, chosen) = start_watching(&scope, &ctx, options.once, tx);
    log_started(&ctx, &owner, &chosen);
    log_asset_folders(&scope);
    let jobs = JobTracker::new();
    let mut intake = IntakeLoop::new(IntakeParts {
        ctx: Arc::clone(&ctx),
        scope,
        mode: chosen.mode,
        watcher,
        events,
        reloads: options.reloads.take(),
        reloader: Reloader {
            overrides: options.overrides,
            logging: options.logging.take(),
        },
        publisher: Publisher::new(&owner, options.once.then(Progress::start).flatten()),
        owner,
    });
    intake.run(&jobs, shutdown.token()).await;
    drain(&ctx, &jobs, &shutdown, intake.owner()).await;
    ctx.gate.flush_usage();
    intake.stopped();
    gallery_stop.cancel();
    let _ = gallery_task.await;
    if journal::list(&ctx.jobs).is_ok_and(|left| left.is_empty()) {
        intake.owner().retire();
    }
    Ok(())
}

/// What every part of the run shares.
struct Shared {
    ctx: Arc<Ctx>,
    owner: Owner,
    scope: Scope,
    gallery: Gallery,
}

/// The folders made, this process registered in the work area, the API client and the gate
/// (with this process's share of the limits from the start), and the gallery.
fn open_shared(config: Config, once: bool) -> Result<Shared, DaemonError> {
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
    let gate = Gate::new(&config);
    gate.set_owner_dir(owner.root());
    let gallery = Gallery::new(&config, &owner.id());
    let ctx = Arc::new(
        Ctx::new(config, gate, api, owner.jobs())
            .with_gallery(gallery.clone())
            .with_once(once),
    );
    Ok(Shared {
        ctx,
        owner,
        scope,
        gallery,
    })
}

/// Native events or polling as `watch.mode` and the filesystem say; nothing with `--once`.
fn start_watching(
    scope: &Scope,
    ctx: &Ctx,
    once: bool,
    tx: mpsc::Sender<watch::WatchMsg>,
) -> (Option<watch::Watcher>, Chosen) {
    if once {
        let why = "--once: one scan, no watching".into();
        return (
            None,
            Chosen {
                mode: Mode::Once,
                why,
            },
        );
    }
    let (watcher, chosen) = watch::start(scope, ctx.config().watch.mode, tx);
    (Some(watcher), chosen)
}

fn log_started(ctx: &Ctx, owner: &Owner, chosen: &Chosen) {
    let config = ctx.config();
    let mode = chosen.mode.name();
    info!(event = events::DAEMON_STARTED, version = crate::VERSION,
        inbox = %config.inbox.display(), outbox = %config.outbox.display(),
        quarantine = %config.quarantine.display(), provider = config.api.provider.name(),
        watch_mode = mode, owner = owner.id(), "remixd started");
    info!(event = events::WATCH_MODE, watch_mode = mode, why = %chosen.why, "watching the inbox");
}

/// Says once which asset folders (`_refs/`) the inbox holds: they are never taken as jobs,
/// so a folder named so by mistake is seen at start, not wondered about later.
fn log_asset_folders(scope: &Scope) {
    const SHOWN: usize = 20;
    let found = scope.asset_folders();
    let shown: Vec<String> = found
        .iter()
        .take(SHOWN)
        .map(|p| p.display().to_string())
        .collect();
    info!(
        event = events::WATCH_ASSET_FOLDERS,
        count = found.len(),
        folders = ?shown,
        "{} asset folder(s) (names starting with _): shared files for references, never taken as jobs",
        found.len()
    );
}

/// What the gallery's writer reads from the running daemon.
fn gallery_live(ctx: &Arc<Ctx>) -> crate::gallery::Live {
    let (for_config, for_pause) = (Arc::clone(ctx), Arc::clone(ctx));
    crate::gallery::Live {
        config: Box::new(move || for_config.config()),
        paused: Box::new(move || for_pause.gate.paused()),
    }
}

/// Stops intake's work: waits up to `shutdown_grace` for the running jobs, renewing the lease
/// meanwhile so no other process takes them over, then abandons the rest at their current
/// (journaled) step.
async fn drain(ctx: &Ctx, jobs: &JobTracker, shutdown: &Shutdown, owner: &Owner) {
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
    jobs.close();
    let deadline = tokio::time::Instant::now() + ctx.config().shutdown_grace;
    let mut renew = crate::inbox::intake_loop::interval_after(ctx.config().lease / 3);
    loop {
        tokio::select! {
            () = jobs.wait() => break,
            _ = renew.tick() => {
                if let Err(e) = owner.renew() {
                    warn!(error = %e, "could not renew the lease while stopping");
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                jobs.abandon();
                jobs.wait().await;
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
