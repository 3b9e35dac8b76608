//! SIGHUP: re-read the config, refuse what needs a restart, log what changed, and hand back
//! the new config for the daemon to apply. A reload applies to jobs that start after it: a
//! job keeps the config it started with.

use tracing::{info, warn};

use super::{Config, Overrides, changed_keys, load};
use crate::events;

/// Keys whose new value needs a restart: the folders, and the API's provider and key.
const RESTART_KEYS: [&str; 5] = ["inbox", "outbox", "quarantine", "work_dir", "api."];

/// Keys a reload can only apply at the next start: how the inbox is watched and the
/// process-wide log format and umask. Everything else applies at once.
const AT_RESTART_KEYS: [&str; 3] = ["watch.mode", "logging.format", "umask"];

/// Re-reads the config file on SIGHUP.
#[derive(Debug, Default)]
pub struct Reloader {
    /// The command line's overrides, applied again on every reload.
    pub overrides: Overrides,
    /// Changes the log level.
    pub logging: Option<crate::logging::ReloadHandle>,
}

impl Reloader {
    /// The new config, when the reload is accepted; otherwise the reason is logged as
    /// `daemon.reload_failed` and the current config stays.
    #[must_use]
    pub fn reload(&self, current: &Config) -> Option<Config> {
        let fresh = match load(&current.path, self.overrides) {
            Ok(fresh) => fresh,
            Err(e) => {
                warn!(event = events::DAEMON_RELOAD_FAILED, error = %e,
                    "the new config is invalid; keeping the old one");
                return None;
            }
        };
        let changed = changed_keys(current, &fresh);
        let restart = matching(&changed, &RESTART_KEYS);
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
        let at_restart = matching(&changed, &AT_RESTART_KEYS);
        info!(event = events::DAEMON_RELOADED, changed = ?changed, at_restart = ?at_restart,
            "config re-read; it applies to jobs that start after it (running jobs keep the \
             config they started with); keys listed in at_restart take effect at the next start");
        Some(fresh)
    }
}

fn matching<'a>(changed: &'a [String], prefixes: &[&str]) -> Vec<&'a str> {
    changed
        .iter()
        .map(String::as_str)
        .filter(|k| prefixes.iter().any(|p| k.starts_with(p)))
        .collect()
}
