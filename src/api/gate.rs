//! The API gate: every request passes it. It holds this process's share of the account's
//! limits (`limits.concurrency` requests, `limits.inflight_images` images,
//! `limits.requests_per_minute` starts, each divided among the live processes under
//! `limits.scope: account`), slows the whole client after a 429, pauses everyone when the API
//! is down, the key refused, the balance, the API's daily limit or the day's budget spent, and
//! lets one probe through at a time until it works again. The day's deployment-wide count is
//! [`super::usage`]'s; what an answer means is [`crate::api::classify`]'s and what it may have
//! cost [`super::billing`]'s. This module only keeps score.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

// tokio's clock, so tests can pause and advance it; in production it is the monotonic clock.
use tokio::time::Instant;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn};

use super::usage::{Ledger, Usage};
use crate::api::PauseReason;
use crate::config::{Config, LimitScope};
use crate::events;

/// How often a spent budget is looked at again: requests in flight elsewhere may end up not
/// billed and leave room.
const BUDGET_RECHECK: Duration = Duration::from_secs(30);

/// What a request's outcome tells the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The API answered with images (this many).
    Images(u32),
    /// The API answered, but not with images (a refusal): it is up.
    Answered,
    /// A transient failure (5xx, timeout, connection).
    Transient,
    /// A 429, with its `Retry-After` and the account's in-flight limit when it names one.
    RateLimited(Option<Duration>, Option<u32>),
    /// Not the file's fault: pause everyone.
    Pause(PauseReason),
}

#[derive(Debug, Clone, Copy)]
struct Paused {
    reason: PauseReason,
    /// When this pause began (kept while probes fail), for `remixd status`.
    since: SystemTime,
    probe_at: Instant,
    backoff: Duration,
    probing: bool,
}

/// The daily caps, deployment-wide.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Budgets {
    images: Option<u64>,
    usd: Option<f64>,
}

impl Budgets {
    fn of(config: &Config) -> Self {
        Self {
            images: config.limits.daily_image_budget,
            usd: config.limits.daily_spend_budget_usd,
        }
    }

    fn any(self) -> bool {
        self.images.is_some() || self.usd.is_some()
    }

    /// Whether `used` plus `wanted` stays within every cap.
    fn room(self, today: &Usage, images: u64, usd: f64) -> bool {
        self.images.is_none_or(|cap| today.images() + images <= cap)
            && self
                .usd
                .is_none_or(|cap| today.spend() + usd <= cap + f64::EPSILON * 16.0)
    }

    fn describe(self) -> String {
        match (self.images, self.usd) {
            (Some(n), Some(usd)) => {
                format!("limits.daily_image_budget ({n}) or limits.daily_spend_budget_usd ({usd})")
            }
            (Some(n), None) => format!("limits.daily_image_budget ({n})"),
            (None, Some(usd)) => format!("limits.daily_spend_budget_usd ({usd})"),
            (None, None) => "the daily budget".to_owned(),
        }
    }
}

#[derive(Debug)]
struct State {
    spacing: Duration,
    slowdown: u32,
    next_slot: Instant,
    paused: Option<Paused>,
    consecutive_failures: u32,
    last_success: Option<Instant>,
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    budgets: Budgets,
    ledger: Ledger,
    /// The day whose spent budget was logged, so a re-check does not log it again.
    budget_logged: Option<String>,
}

/// A pause, as `remixd status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PauseInfo {
    /// Why.
    pub reason: PauseReason,
    /// When it began.
    pub since: SystemTime,
    /// When the next probe may go (00:00 UTC for the budget).
    pub next_probe_at: SystemTime,
}

/// Leave to send one request; dropping it frees its slots.
#[derive(Debug)]
pub struct Permit {
    _request: OwnedSemaphorePermit,
    _images: OwnedSemaphorePermit,
    /// Whether this request is the probe of a paused API.
    pub probe: bool,
    /// Images and USD counted against the day until the answer says whether they were billed.
    reserved: (u64, f64),
}

impl Permit {
    /// What [`Gate::report`] needs to know about this request; `billable` says whether it may
    /// have been billed ([`super::billing::may_be_billed`]).
    #[must_use]
    pub fn ticket(&self, billable: bool) -> Ticket {
        Ticket {
            probe: self.probe,
            reserved: self.reserved.0,
            reserved_usd: self.reserved.1,
            billable,
        }
    }
}

/// A sent request, as the gate knows it when its answer is reported.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ticket {
    /// Whether it was the probe of a paused API.
    pub probe: bool,
    /// Images it reserved against the day.
    pub reserved: u64,
    /// USD it reserved against the day.
    pub reserved_usd: f64,
    /// Whether it may have been billed.
    pub billable: bool,
}

/// The account's limits and this process's part of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shares {
    concurrency: usize,
    inflight_images: u32,
    requests_per_minute: u32,
    scope: LimitScope,
    /// Live processes on this `work_dir`, this one included.
    live: usize,
    /// The account's in-flight limit as a 429 named it, until a reload.
    inflight_cap: Option<u32>,
}

/// One process's part of `limit` when `live` processes share it: rounded up, at least 1.
#[must_use]
fn share(limit: u64, live: usize) -> u64 {
    let live = u64::try_from(live.max(1)).unwrap_or(u64::MAX);
    limit.div_ceil(live).max(1)
}

impl Shares {
    fn of(config: &Config, live: usize) -> Self {
        Self {
            concurrency: config.limits.concurrency,
            inflight_images: config.limits.inflight_images,
            requests_per_minute: config.limits.requests_per_minute,
            scope: config.limits.scope,
            live,
            inflight_cap: None,
        }
    }

    fn part(self, limit: u64) -> u64 {
        match self.scope {
            LimitScope::Account => share(limit, self.live),
            LimitScope::Process => limit.max(1),
        }
    }

    fn sizes(self) -> Sizes {
        let images = self.part(u64::from(self.inflight_images));
        let images = self
            .inflight_cap
            .map_or(images, |cap| images.min(self.part(u64::from(cap))));
        Sizes {
            requests: usize::try_from(self.part(self.concurrency as u64)).unwrap_or(usize::MAX),
            images: u32::try_from(images).unwrap_or(u32::MAX),
            requests_per_minute: u32::try_from(self.part(u64::from(self.requests_per_minute)))
                .unwrap_or(u32::MAX),
        }
    }
}

/// The limits the semaphores and the spacing were last sized for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sizes {
    /// Requests at once.
    requests: usize,
    /// Images in flight.
    images: u32,
    /// Request starts per minute.
    requests_per_minute: u32,
}

/// The shares and the sizes they gave.
#[derive(Debug)]
struct Sized {
    shares: Shares,
    sizes: Sizes,
}

/// The shared gate.
#[derive(Debug)]
pub struct Gate {
    requests: Arc<Semaphore>,
    images: Arc<Semaphore>,
    sized: Mutex<Sized>,
    state: Mutex<State>,
    changed: Notify,
    resized: Notify,
}

fn spacing_for(rpm: u32) -> Duration {
    Duration::from_secs(60) / rpm.max(1)
}

impl Gate {
    /// A gate for `config`'s limits as if this process were alone, reading the day's count
    /// from every owner's usage file in the work area.
    #[must_use]
    pub fn new(config: &Config) -> Self {
        let shares = Shares::of(config, 1);
        let sizes = shares.sizes();
        Self {
            requests: Arc::new(Semaphore::new(sizes.requests)),
            images: Arc::new(Semaphore::new(sizes.images as usize)),
            sized: Mutex::new(Sized { shares, sizes }),
            state: Mutex::new(State {
                spacing: spacing_for(sizes.requests_per_minute),
                slowdown: 1,
                next_slot: Instant::now(),
                paused: None,
                consecutive_failures: 0,
                last_success: None,
                max_attempts: config.retry.max_attempts,
                initial_backoff: config.retry.initial_backoff,
                max_backoff: config.retry.max_backoff,
                budgets: Budgets::of(config),
                ledger: Ledger::new(&config.work_dir),
                budget_logged: None,
            }),
            changed: Notify::new(),
            resized: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_sized(&self) -> MutexGuard<'_, Sized> {
        self.sized
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until a request asking for `num_images`, estimated at `usd`, may start.
    pub async fn admit(&self, num_images: u8, usd: f64) -> Permit {
        loop {
            let max_images = self.lock_sized().sizes.images;
            let wanted = u32::from(num_images).clamp(1, max_images);
            let resized = self.resized.notified();
            let slots = async {
                let request = Arc::clone(&self.requests).acquire_owned().await;
                let images = Arc::clone(&self.images).acquire_many_owned(wanted).await;
                (request, images)
            };
            // A share or a reload that shrinks the limits could leave a waiter asking for more
            // than exists; it starts over with the new sizes.
            let acquired = tokio::select! {
                slots = slots => slots,
                () = resized => continue,
            };
            let (Ok(request), Ok(images)) = acquired else {
                continue;
            };
            loop {
                let notified = self.changed.notified();
                match self.try_enter(u64::from(num_images), usd) {
                    Ok(probe) => {
                        return Permit {
                            _request: request,
                            _images: images,
                            probe,
                            reserved: (u64::from(num_images), usd),
                        };
                    }
                    Err(until) => {
                        tokio::select! {
                            () = tokio::time::sleep(until) => {}
                            () = notified => {}
                        }
                    }
                }
            }
        }
    }

    /// Ok(probe?) when a request may go now (its start slot is taken and its images reserved),
    /// Err(wait) otherwise.
    fn try_enter(&self, num_images: u64, usd: f64) -> Result<bool, Duration> {
        let now = Instant::now();
        let mut st = self.lock();
        if let Some(p) = st.paused.filter(|p| p.reason == PauseReason::Budget) {
            if now < p.probe_at {
                return Err(p.probe_at - now);
            }
            st.paused = None;
        }
        if let Some(wait) = st.check_budget(num_images, usd, now) {
            return Err(wait);
        }
        let mut probe = false;
        if let Some(p) = st.paused.as_mut() {
            if p.probing {
                return Err(Duration::from_secs(1));
            }
            if now < p.probe_at {
                return Err(p.probe_at - now);
            }
            p.probing = true;
            probe = true;
        }
        if now < st.next_slot {
            if probe {
                if let Some(p) = st.paused.as_mut() {
                    p.probing = false;
                }
            }
            return Err(st.next_slot - now);
        }
        st.next_slot = now + st.spacing * st.slowdown;
        st.ledger.reserve(num_images, usd);
        st.save_usage();
        Ok(probe)
    }

    /// Records what a request's answer says about the API, and what it may have cost.
    pub fn report(&self, signal: Signal, ticket: Ticket) {
        let probe = ticket.probe;
        let now = Instant::now();
        let mut st = self.lock();
        let received = match signal {
            Signal::Images(n) => u64::from(n),
            _ => 0,
        };
        st.ledger.settle(
            (ticket.reserved, ticket.reserved_usd),
            ticket.billable,
            received,
        );
        st.save_usage();
        let mut cap = None;
        match signal {
            Signal::Images(_) | Signal::Answered => st.working(now),
            Signal::Transient => {
                st.consecutive_failures += 1;
                if probe || st.consecutive_failures >= st.max_attempts {
                    st.pause(PauseReason::Unavailable, now, probe);
                }
            }
            Signal::RateLimited(after, max_inflight) => {
                let delay = after.unwrap_or(st.initial_backoff);
                st.next_slot = st.next_slot.max(now + delay);
                st.slowdown = (st.slowdown * 2).min(8);
                if let Some(p) = st.paused.as_mut() {
                    p.probing = false;
                }
                cap = max_inflight;
            }
            Signal::Pause(reason) => st.pause(reason, now, probe),
        }
        drop(st);
        if let Some(cap) = cap {
            self.reshare(
                |s| s.inflight_cap = Some(s.inflight_cap.map_or(cap, |old| old.min(cap))),
                "a 429 named the account's in-flight limit (max_inflight_requests); kept until a reload or restart",
            );
        }
        self.changed.notify_waiters();
    }

    /// Writes this process's usage file from now on into `owner_dir` (its own folder in the
    /// work area).
    pub fn set_owner_dir(&self, owner_dir: &Path) {
        self.lock().ledger.set_owner_dir(owner_dir);
    }

    /// Writes the day's usage now (at stop, and at each lease renewal when it is not kept
    /// synced request by request).
    pub fn flush_usage(&self) {
        self.lock().ledger.save(false, true);
    }

    /// Takes this process's share for `live` processes (this one included); logs a change.
    pub fn set_live(&self, live: usize) {
        self.reshare(
            |s| s.live = live.max(1),
            "the number of live remixd processes on this work_dir changed",
        );
    }

    /// Applies reloaded limits and retry settings; a 429's in-flight limit is forgotten. Slots
    /// added are free at once; slots removed are taken out as the requests holding them
    /// finish.
    pub fn apply(&self, config: &Config) {
        {
            let mut st = self.lock();
            st.max_attempts = config.retry.max_attempts;
            st.initial_backoff = config.retry.initial_backoff;
            st.max_backoff = config.retry.max_backoff;
            st.budgets = Budgets::of(config);
        }
        self.reshare(
            |s| *s = Shares::of(config, s.live),
            "the config was reloaded",
        );
        self.changed.notify_waiters();
    }

    /// Changes the shares, resizes the semaphores and the spacing to match, and logs a change.
    fn reshare(&self, change: impl FnOnce(&mut Shares), why: &str) {
        let mut sized = self.lock_sized();
        let old = sized.sizes;
        change(&mut sized.shares);
        let new = sized.shares.sizes();
        if new == old {
            return;
        }
        resize(&self.requests, old.requests, new.requests);
        resize(&self.images, old.images as usize, new.images as usize);
        sized.sizes = new;
        let live = sized.shares.live;
        drop(sized);
        self.lock().spacing = spacing_for(new.requests_per_minute);
        info!(
            event = events::API_LIMITS,
            concurrency = new.requests,
            inflight_images = new.images,
            requests_per_minute = new.requests_per_minute,
            live_processes = live,
            why,
            "this process's share of the API limits changed"
        );
        self.resized.notify_waiters();
        self.changed.notify_waiters();
    }

    /// Whether the API gave any answer after `since`.
    #[must_use]
    pub fn worked_since(&self, since: Instant) -> bool {
        self.lock().last_success.is_some_and(|t| t >= since)
    }

    /// Why submissions are paused, if they are.
    #[must_use]
    pub fn paused(&self) -> Option<PauseReason> {
        self.lock().paused.map(|p| p.reason)
    }

    /// The pause in force, with when it began and when the next probe may go.
    #[must_use]
    pub fn pause_info(&self) -> Option<PauseInfo> {
        let p = self.lock().paused?;
        let wait = p.probe_at.saturating_duration_since(Instant::now());
        Some(PauseInfo {
            reason: p.reason,
            since: p.since,
            next_probe_at: SystemTime::now() + wait,
        })
    }

    /// Resolves at the next answer reported or limits applied (a pause may have begun or
    /// ended); only waiters already polled are woken.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// This UTC day's usage over the whole deployment: images and USD that may have been
    /// billed (requests in flight included) and images received.
    #[must_use]
    pub fn today(&self) -> Usage {
        self.lock().ledger.total()
    }

    /// Counts images made without the API (dry-run) toward the day, at no cost.
    pub fn count_images(&self, n: u32) {
        let mut st = self.lock();
        st.ledger.settle((u64::from(n), 0.0), true, u64::from(n));
        st.save_usage();
    }
}

impl State {
    /// Writes this process's usage file: synced only when a budget depends on it.
    fn save_usage(&mut self) {
        let durable = self.budgets.any();
        self.ledger.save(durable, false);
    }

    fn working(&mut self, now: Instant) {
        self.consecutive_failures = 0;
        self.last_success = Some(now);
        self.slowdown = (self.slowdown / 2).max(1);
        if let Some(p) = self.paused.take_if(|p| p.reason != PauseReason::Budget) {
            info!(
                event = events::API_RESUMED,
                reason = p.reason.name(),
                retry_in_ms = 0u64,
                "the API works again; submissions resume"
            );
        }
    }

    fn pause(&mut self, reason: PauseReason, now: Instant, probe_failed: bool) {
        let backoff = match self.paused {
            // The API's own daily limit lifts at midnight UTC; probing before is pointless.
            _ if reason == PauseReason::DailyLimit => crate::clock::until_next_utc_day(),
            Some(p) if probe_failed || p.probing => (p.backoff * 2).min(self.max_backoff),
            Some(p) => p.backoff,
            None => self.initial_backoff.min(self.max_backoff),
        };
        let first = self.paused.is_none_or(|p| p.reason != reason);
        self.paused = Some(Paused {
            reason,
            since: self.paused.map_or_else(SystemTime::now, |p| p.since),
            probe_at: now + backoff,
            backoff,
            probing: false,
        });
        let retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX);
        if first {
            warn!(
                event = events::API_PAUSED,
                reason = reason.name(),
                retry_in_ms,
                "submissions paused: {}; every job stays pending",
                pause_text(reason)
            );
        } else {
            tracing::debug!(
                event = events::API_PAUSED,
                reason = reason.name(),
                retry_in_ms,
                "the probe failed; still paused"
            );
        }
    }

    /// `None` when a request for `images` estimated at `usd` fits the day's budgets. Otherwise
    /// how long to wait: a little while this process's own requests in flight may leave
    /// room (their answers may not be billed), else a budget pause, looked at again now and
    /// then, and logged once a day.
    fn check_budget(&mut self, images: u64, usd: f64, now: Instant) -> Option<Duration> {
        if !self.budgets.any() {
            return None;
        }
        let today = self.ledger.total();
        if self.budgets.room(&today, images, usd) {
            return None;
        }
        if self.ledger.own_reserved() > 0 {
            return Some(Duration::from_millis(500));
        }
        let until_midnight = crate::clock::until_next_utc_day();
        let wait = BUDGET_RECHECK.min(until_midnight);
        if self.paused.is_none() {
            self.paused = Some(Paused {
                reason: PauseReason::Budget,
                since: SystemTime::now(),
                probe_at: now + wait,
                backoff: wait,
                probing: false,
            });
        }
        if self.budget_logged.as_deref() != Some(today.day.as_str()) {
            self.budget_logged = Some(today.day.clone());
            let retry_in_ms = u64::try_from(until_midnight.as_millis()).unwrap_or(u64::MAX);
            warn!(
                event = events::API_PAUSED,
                reason = PauseReason::Budget.name(),
                retry_in_ms,
                images_today = today.images(),
                spend_today_usd = super::billing::round_cents(today.spend()),
                "{} is spent for today (whole deployment); submissions resume at 00:00 UTC",
                self.budgets.describe()
            );
        }
        Some(wait)
    }
}

/// Grows or shrinks a semaphore from `old` to `new` permits.
fn resize(semaphore: &Arc<Semaphore>, old: usize, new: usize) {
    if new > old {
        semaphore.add_permits(new - old);
    } else if new < old {
        let semaphore = Arc::clone(semaphore);
        let gone = u32::try_from(old - new).unwrap_or(u32::MAX);
        tokio::spawn(async move {
            if let Ok(permits) = semaphore.acquire_many_owned(gone).await {
                permits.forget();
            }
        });
    }
}

fn pause_text(reason: PauseReason) -> &'static str {
    match reason {
        PauseReason::Unauthorized => {
            "the API refuses the key (check api.api_key_file or the key variable)"
        }
        PauseReason::Balance => "the account's balance is spent (top it up)",
        PauseReason::Unavailable => "the API or the network is unavailable",
        PauseReason::Budget => "the daily budget is spent",
        PauseReason::DailyLimit => {
            "the API account's daily limit is reached; submissions resume at 00:00 UTC"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Overrides, load};

    fn config(extra: &str) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        let yaml = format!("inbox: in\noutbox: out\nquarantine: q\n{extra}");
        std::fs::write(&path, yaml).expect("config");
        let config = load(&path, Overrides { dry_run: true }).expect("valid config");
        std::fs::create_dir_all(&config.work_dir).expect("work dir");
        (dir, config)
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_spaced_by_requests_per_minute() {
        let (_dir, cfg) = config("limits: {requests_per_minute: 60}\n");
        let gate = Gate::new(&cfg);
        let start = tokio::time::Instant::now();
        drop(gate.admit(1, 0.0).await);
        drop(gate.admit(1, 0.0).await);
        drop(gate.admit(1, 0.0).await);
        // The paused clock advances exactly to each start slot: two spacings, no more.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(2_100), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_lets_one_probe_through_and_resumes_on_success() {
        let (_dir, cfg) = config("retry: {initial_backoff: 1s, max_backoff: 4s}\n");
        let gate = Gate::new(&cfg);
        gate.report(Signal::Pause(PauseReason::Unauthorized), Ticket::default());
        assert_eq!(gate.paused(), Some(PauseReason::Unauthorized));
        let probe = gate.admit(1, 0.0).await;
        assert!(
            probe.probe,
            "the first request after the backoff is the probe"
        );
        gate.report(
            Signal::Pause(PauseReason::Unauthorized),
            Ticket {
                probe: true,
                reserved: 1,
                ..Ticket::default()
            },
        );
        drop(probe);
        let again = gate.admit(1, 0.0).await;
        assert!(again.probe);
        gate.report(
            Signal::Images(1),
            Ticket {
                probe: true,
                reserved: 1,
                ..Ticket::default()
            },
        );
        assert_eq!(gate.paused(), None);
        drop(again);
        assert!(!gate.admit(1, 0.0).await.probe);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_in_a_row_pause_everyone() {
        let (_dir, cfg) = config("retry: {max_attempts: 3}\n");
        let gate = Gate::new(&cfg);
        for _ in 0..2 {
            gate.report(Signal::Transient, Ticket::default());
        }
        assert_eq!(gate.paused(), None);
        let since = Instant::now();
        gate.report(Signal::Transient, Ticket::default());
        assert_eq!(gate.paused(), Some(PauseReason::Unavailable));
        assert!(!gate.worked_since(since));
        gate.report(Signal::Answered, Ticket::default());
        assert!(gate.worked_since(since));
        assert_eq!(gate.paused(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_daily_budget_pauses_and_survives_a_restart() {
        let (_dir, cfg) = config("limits: {daily_image_budget: 2}\n");
        let owners = cfg.work_dir.join("owners");
        let gate = Gate::new(&cfg);
        gate.set_owner_dir(&owners.join("FIRST"));
        std::fs::create_dir_all(owners.join("FIRST")).expect("owner");
        gate.count_images(2);
        assert!(gate.try_enter(1, 0.0).is_err());
        assert_eq!(gate.paused(), Some(PauseReason::Budget));
        let restarted = Gate::new(&cfg);
        restarted.set_owner_dir(&owners.join("SECOND"));
        assert_eq!(restarted.today().images(), 2);
        assert!(restarted.try_enter(1, 0.0).is_err());
        assert_eq!(restarted.paused(), Some(PauseReason::Budget));
    }

    #[tokio::test(start_paused = true)]
    async fn the_spend_budget_counts_reservations_and_what_may_have_been_billed() {
        let (_dir, cfg) = config("limits: {daily_spend_budget_usd: 0.15}\n");
        let owners = cfg.work_dir.join("owners");
        std::fs::create_dir_all(owners.join("A")).expect("owner");
        let gate = Gate::new(&cfg);
        gate.set_owner_dir(&owners.join("A"));
        let first = gate.admit(1, 0.06).await;
        let second = gate.admit(1, 0.06).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            gate.try_enter(1, 0.06),
            Err(Duration::from_millis(500)),
            "0.18 would pass 0.15 while two are in flight: wait for their answers"
        );
        gate.report(Signal::Answered, first.ticket(false));
        drop(first);
        assert_eq!(
            gate.try_enter(1, 0.06),
            Ok(false),
            "a refusal is not billed"
        );
        gate.report(Signal::Images(1), second.ticket(true));
        let today = gate.today();
        assert_eq!((today.images(), today.received), (2, 1));
        assert!((today.spend() - 0.12).abs() < 1e-9, "{}", today.spend());
    }

    #[test]
    fn shares_are_rounded_up_and_at_least_one() {
        assert_eq!(share(10, 3), 4);
        assert_eq!(share(6, 3), 2);
        assert_eq!(share(1, 3), 1);
        assert_eq!(share(60, 0), 60);
    }

    #[tokio::test(start_paused = true)]
    async fn live_processes_and_a_429_shrink_this_process_share() {
        let (_dir, cfg) = config("limits: {inflight_images: 10, concurrency: 4}\n");
        let gate = Gate::new(&cfg);
        gate.set_live(3);
        tokio::task::yield_now().await;
        assert_eq!(gate.images.available_permits(), 4);
        assert_eq!(gate.requests.available_permits(), 2);
        gate.report(Signal::RateLimited(None, Some(6)), Ticket::default());
        tokio::task::yield_now().await;
        assert_eq!(gate.images.available_permits(), 2, "its share of 6 is 2");
        gate.set_live(1);
        assert_eq!(gate.images.available_permits(), 6, "the 429's limit stays");
        gate.apply(&cfg);
        assert_eq!(gate.images.available_permits(), 10, "until a reload");
        let (_d, alone) = config("limits: {inflight_images: 10, scope: process}\n");
        gate.set_live(3);
        tokio::task::yield_now().await;
        gate.apply(&alone);
        assert_eq!(gate.images.available_permits(), 10, "scope: process");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_can_shrink_the_image_limit_under_a_waiter() {
        let (_dir, cfg) = config("limits: {inflight_images: 8}\n");
        let gate = Arc::new(Gate::new(&cfg));
        let held = gate.admit(8, 0.0).await;
        let waiter = tokio::spawn({
            let gate = Arc::clone(&gate);
            async move { gate.admit(8, 0.0).await }
        });
        tokio::task::yield_now().await;
        let (_dir2, smaller) = config("limits: {inflight_images: 4}\n");
        gate.apply(&smaller);
        drop(held);
        let permit = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter got the smaller limit's slots in time")
            .expect("the waiter did not panic");
        assert_eq!(
            gate.images.available_permits(),
            0,
            "the waiter holds all 4 slots of the smaller limit; the other 4 are gone"
        );
        drop(permit);
        tokio::task::yield_now().await;
        assert_eq!(gate.images.available_permits(), 4, "the limit shrank to 4");
    }
}
