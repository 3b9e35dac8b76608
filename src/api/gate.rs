//! The API gate: every request passes it. It holds the limits (`limits.concurrency` requests,
//! `limits.inflight_images` images, `limits.requests_per_minute` starts), slows the whole
//! client after a 429, pauses everyone when the API is down, the key refused, the balance or
//! the day's budget spent, and lets one probe through at a time until it works again.
//! Deciding what an answer means is [`crate::api::classify`]'s job; this module only keeps
//! score.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

// tokio's clock, so tests can pause and advance it; in production it is the monotonic clock.
use tokio::time::Instant;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn};

use crate::api::PauseReason;
use crate::config::Config;
use crate::events;

/// What a request's outcome tells the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The API answered with images (this many).
    Images(u32),
    /// The API answered, but not with images (a refusal): it is up.
    Answered,
    /// A transient failure (5xx, timeout, connection).
    Transient,
    /// A 429.
    RateLimited(Option<Duration>),
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
    budget: Option<u64>,
    usage: Usage,
    /// Images asked for by requests still waiting for their answer.
    reserved: u64,
}

/// Images received per UTC day, kept in the work area so it survives restarts.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
struct Usage {
    day: String,
    images: u64,
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
    /// Images counted against the day's budget until the answer says how many came.
    reserved: u64,
}

impl Permit {
    /// What [`Gate::report`] needs to know about this request.
    #[must_use]
    pub fn ticket(&self) -> Ticket {
        Ticket {
            probe: self.probe,
            reserved: self.reserved,
        }
    }
}

/// A sent request, as the gate knows it when its answer is reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ticket {
    /// Whether it was the probe of a paused API.
    pub probe: bool,
    /// Images it reserved against the day's budget.
    pub reserved: u64,
}

/// The limits the semaphores were last sized for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sizes {
    /// Requests at once (`limits.concurrency`).
    requests: usize,
    /// Images in flight (`limits.inflight_images`).
    images: u32,
}

impl Sizes {
    fn of(config: &Config) -> Self {
        Self {
            requests: config.limits.concurrency,
            images: config.limits.inflight_images,
        }
    }
}

/// The shared gate.
#[derive(Debug)]
pub struct Gate {
    requests: Arc<Semaphore>,
    images: Arc<Semaphore>,
    sizes: Mutex<Sizes>,
    state: Mutex<State>,
    changed: Notify,
    resized: Notify,
    usage_path: PathBuf,
    /// Where the day's count is written before it is renamed into place.
    scratch: PathBuf,
}

fn spacing_for(rpm: u32) -> Duration {
    Duration::from_secs(60) / rpm.max(1)
}

impl Gate {
    /// A gate for `config`'s limits, reading the day's image count from the work area.
    #[must_use]
    pub fn new(config: &Config) -> Self {
        let usage_path = config.work_dir.join("usage.json");
        let usage = std::fs::read(&usage_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self {
            requests: Arc::new(Semaphore::new(config.limits.concurrency)),
            images: Arc::new(Semaphore::new(config.limits.inflight_images as usize)),
            sizes: Mutex::new(Sizes::of(config)),
            state: Mutex::new(State {
                spacing: spacing_for(config.limits.requests_per_minute),
                slowdown: 1,
                next_slot: Instant::now(),
                paused: None,
                consecutive_failures: 0,
                last_success: None,
                max_attempts: config.retry.max_attempts,
                initial_backoff: config.retry.initial_backoff,
                max_backoff: config.retry.max_backoff,
                budget: config.limits.daily_image_budget,
                usage,
                reserved: 0,
            }),
            changed: Notify::new(),
            resized: Notify::new(),
            scratch: config.work_dir.clone(),
            usage_path,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until a request asking for `num_images` may start.
    pub async fn admit(&self, num_images: u8) -> Permit {
        loop {
            let max_images = self.sizes.lock().map_or(1, |s| s.images);
            let wanted = u32::from(num_images).clamp(1, max_images);
            let resized = self.resized.notified();
            let slots = async {
                let request = Arc::clone(&self.requests).acquire_owned().await;
                let images = Arc::clone(&self.images).acquire_many_owned(wanted).await;
                (request, images)
            };
            // A reload that shrinks the limits could leave a waiter asking for more than
            // exists; it starts over with the new sizes.
            let acquired = tokio::select! {
                slots = slots => slots,
                () = resized => continue,
            };
            let (Ok(request), Ok(images)) = acquired else {
                continue;
            };
            loop {
                let notified = self.changed.notified();
                match self.try_enter(u64::from(num_images)) {
                    Ok(probe) => {
                        return Permit {
                            _request: request,
                            _images: images,
                            probe,
                            reserved: u64::from(num_images),
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

    /// Ok(probe?) when a request may go now (its start slot is taken), Err(wait) otherwise.
    fn try_enter(&self, num_images: u64) -> Result<bool, Duration> {
        let now = Instant::now();
        let mut st = self.lock();
        if st.check_budget(num_images, now) {
            return Err(Duration::from_millis(500));
        }
        let mut probe = false;
        if let Some(p) = st.paused.as_mut() {
            if p.probing {
                return Err(Duration::from_secs(1));
            }
            if now < p.probe_at {
                return Err(p.probe_at - now);
            }
            if p.reason == PauseReason::Budget {
                st.paused = None;
                return Err(Duration::ZERO);
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
        st.reserved += num_images;
        Ok(probe)
    }

    /// Records what a request's answer says about the API.
    pub fn report(&self, signal: Signal, ticket: Ticket) {
        let probe = ticket.probe;
        let now = Instant::now();
        let mut st = self.lock();
        st.reserved = st.reserved.saturating_sub(ticket.reserved);
        match signal {
            Signal::Images(n) => {
                st.add_images(u64::from(n), &self.scratch, &self.usage_path);
                st.working(now);
            }
            Signal::Answered => st.working(now),
            Signal::Transient => {
                st.consecutive_failures += 1;
                if probe || st.consecutive_failures >= st.max_attempts {
                    st.pause(PauseReason::Unavailable, now, probe);
                }
            }
            Signal::RateLimited(after) => {
                let delay = after.unwrap_or(st.initial_backoff);
                st.next_slot = st.next_slot.max(now + delay);
                st.slowdown = (st.slowdown * 2).min(8);
                if let Some(p) = st.paused.as_mut() {
                    p.probing = false;
                }
            }
            Signal::Pause(reason) => st.pause(reason, now, probe),
        }
        drop(st);
        self.changed.notify_waiters();
    }

    /// Writes the day's count through `dir` (this process's own folder in the work area), so
    /// a write cut short by a crash leaves nothing in the shared work area.
    pub fn set_scratch(&mut self, dir: PathBuf) {
        self.scratch = dir;
    }

    /// Applies reloaded limits and retry settings. Slots added are free at once; slots removed
    /// are taken out as the requests holding them finish.
    pub fn apply(&self, config: &Config) {
        {
            let mut st = self.lock();
            st.spacing = spacing_for(config.limits.requests_per_minute);
            st.max_attempts = config.retry.max_attempts;
            st.initial_backoff = config.retry.initial_backoff;
            st.max_backoff = config.retry.max_backoff;
            st.budget = config.limits.daily_image_budget;
        }
        let Ok(mut sizes) = self.sizes.lock() else {
            return;
        };
        let new = Sizes::of(config);
        resize(&self.requests, sizes.requests, new.requests);
        resize(&self.images, sizes.images as usize, new.images as usize);
        *sizes = new;
        drop(sizes);
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

    /// Images received this UTC day.
    #[must_use]
    pub fn images_today(&self) -> u64 {
        let mut st = self.lock();
        st.roll_day();
        st.usage.images
    }

    /// Counts images made without the API (dry-run) toward the day.
    pub fn count_images(&self, n: u32) {
        self.lock()
            .add_images(u64::from(n), &self.scratch, &self.usage_path);
    }
}

impl State {
    fn working(&mut self, now: Instant) {
        self.consecutive_failures = 0;
        self.last_success = Some(now);
        self.slowdown = (self.slowdown / 2).max(1);
        if let Some(p) = self.paused.take() {
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
            Some(p) if probe_failed || p.probing => (p.backoff * 2).min(self.max_backoff),
            Some(p) => p.backoff,
            None => self.initial_backoff.min(self.max_backoff),
        };
        let first = self.paused.is_none();
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

    fn roll_day(&mut self) {
        let today = crate::clock::utc_date();
        if self.usage.day != today {
            self.usage = Usage {
                day: today,
                images: 0,
            };
        }
    }

    fn add_images(&mut self, n: u64, scratch: &std::path::Path, path: &std::path::Path) {
        self.roll_day();
        self.usage.images += n;
        if let Ok(bytes) = serde_json::to_vec(&self.usage) {
            if let Err(e) = crate::fsx::write_durable_via(scratch, path, &bytes) {
                warn!(error = %e, "could not record the day's image count");
            }
        }
    }

    /// Pauses for the day when `wanted` more images would pass the budget. True when only the
    /// requests still in flight stand in the way: their answers may leave room, so the caller
    /// waits a little instead.
    fn check_budget(&mut self, wanted: u64, now: Instant) -> bool {
        self.roll_day();
        let Some(budget) = self.budget else {
            return false;
        };
        if self.usage.images + self.reserved + wanted <= budget || self.paused.is_some() {
            return false;
        }
        if self.usage.images + wanted <= budget {
            return true;
        }
        let wait = crate::clock::until_next_utc_day();
        self.paused = Some(Paused {
            reason: PauseReason::Budget,
            since: SystemTime::now(),
            probe_at: now + wait,
            backoff: wait,
            probing: false,
        });
        let retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        warn!(
            event = events::API_PAUSED,
            reason = "budget",
            retry_in_ms,
            "limits.daily_image_budget ({budget}) is spent for today; submissions resume at 00:00 UTC"
        );
        false
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
        PauseReason::Budget => "the daily image budget is spent",
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
        drop(gate.admit(1).await);
        drop(gate.admit(1).await);
        drop(gate.admit(1).await);
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
        let probe = gate.admit(1).await;
        assert!(
            probe.probe,
            "the first request after the backoff is the probe"
        );
        gate.report(
            Signal::Pause(PauseReason::Unauthorized),
            Ticket {
                probe: true,
                reserved: 1,
            },
        );
        drop(probe);
        let again = gate.admit(1).await;
        assert!(again.probe);
        gate.report(
            Signal::Images(1),
            Ticket {
                probe: true,
                reserved: 1,
            },
        );
        assert_eq!(gate.paused(), None);
        drop(again);
        assert!(!gate.admit(1).await.probe);
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
        let gate = Gate::new(&cfg);
        gate.count_images(2);
        let _ = gate.try_enter(1);
        assert_eq!(gate.paused(), Some(PauseReason::Budget));
        let restarted = Gate::new(&cfg);
        assert_eq!(restarted.images_today(), 2);
        let _ = restarted.try_enter(1);
        assert_eq!(restarted.paused(), Some(PauseReason::Budget));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_can_shrink_the_image_limit_under_a_waiter() {
        let (_dir, cfg) = config("limits: {inflight_images: 8}\n");
        let gate = Arc::new(Gate::new(&cfg));
        let held = gate.admit(8).await;
        let waiter = tokio::spawn({
            let gate = Arc::clone(&gate);
            async move { gate.admit(8).await }
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
