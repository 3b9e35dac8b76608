//! The systemd notify protocol: READY=1 once watching, STATUS= with the counts, WATCHDOG=1
//! while the main loop turns, STOPPING=1. Every call is a no-op outside systemd (no
//! `NOTIFY_SOCKET`), and a failure to notify never stops the daemon.

use std::time::Duration;

use sd_notify::NotifyState;

/// Tells systemd the daemon is ready.
pub fn ready(status: &str) {
    let _ = sd_notify::notify(false, &[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Updates the status line `systemctl status` shows.
pub fn status(status: &str) {
    let _ = sd_notify::notify(false, &[NotifyState::Status(status)]);
}

/// Pings the watchdog.
pub fn watchdog() {
    let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
}

/// Tells systemd the daemon is stopping.
pub fn stopping() {
    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
}

/// How often to ping the watchdog: half its timeout, if systemd set one.
#[must_use]
pub fn watchdog_period() -> Option<Duration> {
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec / 2))
    } else {
        None
    }
}
