//! `remixd status`: who serves this inbox, whether the API is paused, the counts, the day's
//! images and spend, and the last quarantined jobs, read from the shared state alone (the
//! owners' leases and state files, the job folders, the usage files and the gallery's row
//! logs in the work area): no key, no network, no running process. Also the state each
//! process publishes for it ([`state_file`], [`publish`]). The table is [`render`]'s.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;

use crate::config::Config;
use crate::gallery::Ended;
use crate::job::lease::{self, Peer};

pub mod publish;
pub mod render;
pub mod state_file;

pub use state_file::ApiState;

/// Exit status: a live process, the API not paused.
pub const EXIT_LIVE: u8 = 0;
/// Exit status: submissions are paused.
pub const EXIT_PAUSED: u8 = 3;
/// Exit status: no live process serves the inbox.
pub const EXIT_NO_PROCESS: u8 = 4;

/// Quarantined jobs listed.
const RECENT: usize = 10;

/// Everything `remixd status` says; `--json` prints it as it is (SPEC.md's keys).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Every process with an owner folder, live or presumed dead.
    pub processes: Vec<Process>,
    /// The API as the live processes see it.
    pub api: ApiState,
    /// Files waiting in the inbox (the largest count among live processes: each sees them all).
    pub pending: u64,
    /// Jobs in the work area, by stage.
    pub in_flight: BTreeMap<String, u64>,
    /// This UTC day, whole deployment.
    pub today: Today,
    /// The daily budgets (`null`: none).
    pub budgets: Budgets,
    /// The last quarantined jobs, newest first.
    pub recent_quarantined: Vec<Ended>,
}

/// One process serving the inbox.
#[derive(Debug, Clone, Serialize)]
pub struct Process {
    /// Its owner id.
    pub owner: String,
    /// Host name.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// The remixd version.
    pub version: String,
    /// When it started (`null` when it wrote no state file).
    pub started_at: Option<String>,
    /// Seconds since it last renewed its lease.
    pub lease_age_s: Option<u64>,
    /// Alive by the lease rule (not presumed dead).
    pub alive: bool,
}

/// The day's counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Today {
    /// Jobs published.
    pub completed: u64,
    /// Jobs quarantined.
    pub quarantined: u64,
    /// Images that may have been billed.
    pub images: u64,
    /// USD that may have been billed (`null` until the usage files record spend).
    pub spend_usd: Option<f64>,
}

/// The daily budgets.
#[derive(Debug, Clone, Serialize)]
pub struct Budgets {
    /// `limits.daily_image_budget`.
    pub images: Option<u64>,
    /// `limits.daily_spend_budget_usd`.
    pub spend_usd: Option<f64>,
}

impl Report {
    /// The exit status: 0 live and working, 3 paused, 4 no live process.
    #[must_use]
    pub fn exit_status(&self) -> u8 {
        if !self.processes.iter().any(|p| p.alive) {
            EXIT_NO_PROCESS
        } else if self.api.paused {
            EXIT_PAUSED
        } else {
            EXIT_LIVE
        }
    }
}

/// Reads the shared state of `config`'s work area now.
#[must_use]
pub fn gather(config: &Config) -> Report {
    let now = SystemTime::now();
    let host = lease::host_name();
    let day = crate::clock::utc_date();
    let mut processes = Vec::new();
    let mut live_states = Vec::new();
    for peer in Peer::all(&config.work_dir) {
        let Some(info) = peer.info.clone() else {
            continue;
        };
        let alive = !peer.presumed_dead(&host, config.lease, now);
        let state = state_file::read(&peer.root);
        processes.push(Process {
            owner: peer.id(),
            host: info.host,
            pid: info.pid,
            version: info.version,
            started_at: state.as_ref().map(|s| s.started_at.clone()),
            lease_age_s: peer
                .renewed
                .map(|at| now.duration_since(at).map_or(0, |d| d.as_secs())),
            alive,
        });
        if let Some(state) = state.filter(|_| alive) {
            live_states.push(state);
        }
    }
    let history = crate::gallery::history(&config.work_dir, &day, RECENT);
    let (images, spend_usd) = usage_today(&config.work_dir);
    Report {
        processes,
        api: merged_api(&live_states),
        pending: live_states.iter().map(|s| s.pending).max().unwrap_or(0),
        in_flight: crate::gallery::stage_counts(&crate::gallery::jobs_folders(&config.work_dir)),
        today: Today {
            completed: history.completed_today,
            quarantined: history.quarantined_today,
            images,
            spend_usd,
        },
        budgets: Budgets {
            images: config.limits.daily_image_budget,
            spend_usd: config.limits.daily_spend_budget_usd,
        },
        recent_quarantined: history.recent_quarantined,
    }
}

/// The pause that began first among the live processes; the soonest next probe.
fn merged_api(states: &[state_file::ProcessState]) -> ApiState {
    let mut paused: Vec<&ApiState> = states.iter().map(|s| &s.api).filter(|a| a.paused).collect();
    paused.sort_by(|a, b| a.since.cmp(&b.since));
    let Some(first) = paused.first() else {
        return ApiState::default();
    };
    ApiState {
        next_probe_at: paused.iter().filter_map(|a| a.next_probe_at.clone()).min(),
        ..(*first).clone()
    }
}

/// Images and USD that may have been billed this UTC day, whole deployment: the gate's own
/// sum over every owner's `owners/<id>/usage.json` of the day, read-only here.
fn usage_today(work_dir: &Path) -> (u64, Option<f64>) {
    let today = crate::api::usage::Ledger::new(work_dir).total();
    (
        today.images(),
        Some(crate::api::billing::round_cents(today.spend())),
    )
}

/// `remixd status`: prints the report (a table, or one JSON object with `json`) and returns
/// the exit status.
#[must_use]
pub fn run(config: &Config, json: bool) -> u8 {
    let report = gather(config);
    if json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        print!("{}", render::table(&report, config, SystemTime::now()));
    }
    report.exit_status()
}
