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

/// How often to ping the watchdog: half its timeout, if systemd set one for this process.
#[must_use]
pub fn watchdog_period() -> Option<Duration> {
    period_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// The rule of `sd_watchdog_enabled(3)`: `WATCHDOG_USEC` is the timeout; a `WATCHDOG_PID` that is
/// set must name this process (so a child never pings for its parent), but an unset one means
/// this process. (The sd-notify crate's own check refuses an unset `WATCHDOG_PID`.)
fn period_from(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(own_pid) {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_is_half_the_timeout_for_this_process() {
        let half = Some(Duration::from_millis(100));
        assert_eq!(period_from(Some("200000"), None, 42), half);
        assert_eq!(period_from(Some("200000"), Some("42"), 42), half);
        assert_eq!(
            period_from(Some("60000000"), Some("42"), 42),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn no_pings_for_another_process_or_without_a_timeout() {
        assert_eq!(period_from(Some("200000"), Some("41"), 42), None);
        assert_eq!(period_from(Some("200000"), Some("not a pid"), 42), None);
        assert_eq!(period_from(None, Some("42"), 42), None);
        assert_eq!(period_from(Some("0"), None, 42), None);
        assert_eq!(period_from(Some("soon"), None, 42), None);
    }
}
