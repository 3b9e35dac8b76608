//! Stopping: signals only cancel a token (and remember which signal it was); the daemon then
//! stops claiming, gives in-flight jobs `shutdown_grace`, and leaves the rest resumable.
//! SIGHUP is passed on as a reload request.

use std::sync::{Arc, Mutex};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
