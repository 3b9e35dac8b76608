//! Stopping: signals only cancel a token (and remember which signal it was); the daemon then
//! stops claiming, gives in-flight jobs `shutdown_grace`, and leaves the rest resumable.
//! SIGHUP is passed on as a reload request. The job tracker lives here too: stopping is
//! mostly about the jobs still running.

use std::sync::{Arc, Mutex};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The stop trigger shared by the signal thread and the daemon.
#[derive(Debug, Default, Clone)]
pub struct Shutdown {
    token: CancellationToken,
    signal: Arc<Mutex<Option<&'static str>>>,
}

impl Shutdown {
    /// A trigger not yet pulled.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the daemon to stop, naming why (`SIGTERM`, `SIGINT`, ...).
    pub fn trigger(&self, signal: &'static str) {
        if let Ok(mut s) = self.signal.lock() {
            s.get_or_insert(signal);
        }
        self.token.cancel();
    }

    /// The token cancelled on stop.
    #[must_use]
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// The signal that asked for the stop, if any.
    #[must_use]
    pub fn signal(&self) -> Option<&'static str> {
        self.signal.lock().ok().and_then(|s| *s)
    }
}

/// Starts a thread that turns SIGTERM/SIGINT into `shutdown.trigger` and SIGHUP into a
/// message on the returned channel.
pub fn listen(shutdown: &Shutdown) -> std::io::Result<mpsc::UnboundedReceiver<()>> {
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let (tx, rx) = mpsc::unbounded_channel();
    let shutdown = shutdown.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                match signal {
                    SIGHUP => {
                        let _ = tx.send(());
                    }
                    SIGINT => shutdown.trigger("SIGINT"),
                    _ => shutdown.trigger("SIGTERM"),
                }
            }
        })?;
    Ok(rx)
}

/// The running jobs: their tracker, the token that abandons them when the grace period is
/// over, and a wake-up for the intake each time one ends (a job slot is free again).
#[derive(Debug, Default)]
pub struct JobTracker {
    tracker: TaskTracker,
    hard_stop: CancellationToken,
    ended: Arc<Notify>,
}

impl JobTracker {
    /// No jobs yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `job` until it ends or the grace period is over.
    pub fn spawn(&self, job: impl Future<Output = ()> + Send + 'static) {
        let hard_stop = self.hard_stop.clone();
        let ended = Arc::clone(&self.ended);
        self.tracker.spawn(async move {
            tokio::select! {
                () = job => {}
                () = hard_stop.cancelled() => {}
            }
            ended.notify_one();
        });
    }

    /// How many jobs are running.
    #[must_use]
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    /// Whether no job is running.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }

    /// Resolves when a job has ended since the last call.
    pub async fn ended(&self) {
        self.ended.notified().await;
    }

    /// Stops taking jobs; [`JobTracker::wait`] then resolves once the running ones end.
    pub fn close(&self) {
        self.tracker.close();
    }

    /// Resolves when every job has ended (after [`JobTracker::close`]).
    pub async fn wait(&self) {
        self.tracker.wait().await;
    }

    /// Abandons the running jobs at their current (journaled) step.
    pub fn abandon(&self) {
        self.hard_stop.cancel();
    }
}
