//! The submit stage: sending the request until there is an answer or a verdict. Each attempt
//! is journaled (`submitting {attempt}`) before it is sent; what an answer means for the job
//! is decided by one pure function (`judge`) from the outcome, the job's count of transient
//! failures and the API's health, so retries, 429s and pauses are table-tested. The dry-run
//! provider never gets here ([`super::dry_run`]).

use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::info;

use super::ctx::{Ctx, Job};
use crate::api::billing;
use crate::api::client::{FilePart, Sent};
use crate::api::gate::Signal;
use crate::api::{Answer, Outcome};
use crate::config::RetryConfig;
use crate::events;
use crate::fsx::FsError;
use crate::job::Stage;
use crate::job::verdict::{Reason, Verdict};

/// Sends the job's request until there is an answer (`Ok(Ok)`) or a verdict (`Ok(Err)`).
pub(super) async fn run(ctx: &Ctx, job: &mut Job) -> Result<Result<Answer, Verdict>, FsError> {
    let Some(request) = job.rec.request.clone() else {
        return Ok(Err(Verdict::file(
            Reason::InvalidSidecar,
            "no request could be built",
        )));
    };
    let files = file_parts(job);
    let mut retries = Retries::default();
    let price = job.request_price(&request);
    loop {
        let permit = ctx.gate.admit(request.num_images, price).await;
        journal_attempt(job)?;
        let started = Instant::now();
        let sent = ctx.api.submit(&files, &request).await?;
        account(ctx, job, &sent, started, price, permit);
        if let Some(verdict) = lost(&sent, &job.config.retry) {
            return Ok(Err(verdict));
        }
        let health = Health {
            paused: ctx.gate.paused().is_some(),
            worked_since_first_failure: ctx
                .gate
                .worked_since(retries.first_failure.unwrap_or(started)),
        };
        let (decision, failures) = judge(sent.outcome, retries.failures, health, &job.config.retry);
        retries.count(failures, started);
        match decision {
            Decision::Done(end) => return Ok(end),
            Decision::Retry {
                wait,
                http_status,
                error,
            } => {
                let delay = wait.delay(&job.config.retry);
                ctx.metrics.retry();
                info!(event = events::JOB_RETRY, attempt = job.rec.attempts,
                    delay_ms = delay.as_millis() as u64, error = %error, http_status,
                    "the request will be sent again");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// What a sent request counts for: time with the API, billable attempts and spend, images,
/// the metrics, and the gate's view of the API (which frees the request's slot).
fn account(
    ctx: &Ctx,
    job: &mut Job,
    sent: &Sent,
    started: Instant,
    price: f64,
    permit: crate::api::gate::Permit,
) {
    let api_ms = started.elapsed().as_millis() as u64;
    ctx.metrics
        .request(http_status(&sent.outcome), started.elapsed());
    job.rec.timings.api_ms += api_ms;
    let billable = billing::may_be_billed(&sent.outcome, sent.upload_completed);
    job.rec.billable_attempts += u32::from(billable);
    if billable {
        ctx.metrics.spend(price);
    }
    let ticket = permit.ticket(billable);
    drop(permit);
    log_answer(&sent.outcome, api_ms);
    let signal = signal(&sent.outcome);
    if let Signal::Images(n) = signal {
        ctx.metrics.images(u64::from(n));
    }
    ctx.gate.report(signal, ticket);
}

/// The files a request sends: the image, the inpaint mask when the operation takes one, and
/// the copies of the references made at claim (never the originals, which may have changed).
fn file_parts(job: &Job) -> Vec<FilePart> {
    let files = job.dir.files();
    let source = &job.rec.source;
    let stem_of = |name: &str| -> String {
        let name = name.rsplit('/').next().unwrap_or(name);
        name.rsplit_once('.')
            .map_or(name, |(stem, _)| stem)
            .to_owned()
    };
    let mut parts = vec![FilePart {
        field: "image".into(),
        path: files.join(source.file_os()),
        stem: source.stem().to_owned(),
    }];
    if let Some((name, os)) = job.rec.sent_mask() {
        parts.push(FilePart {
            field: "mask".into(),
            path: files.join(os),
            stem: stem_of(name),
        });
    }
    for copy in &job.rec.references {
        parts.push(FilePart {
            field: copy.field.clone(),
            path: job.dir.refs().join(&copy.copy),
            stem: stem_of(&copy.file),
        });
    }
    parts
}

/// Journals the next attempt before it is sent.
fn journal_attempt(job: &mut Job) -> Result<(), FsError> {
    job.rec.attempts += 1;
    job.rec.stage = Stage::Submitting {
        attempt: job.rec.attempts,
    };
    job.rec.timings.submitted_at = Some(SystemTime::now());
    job.dir.write(&job.rec)?;
    info!(
        event = events::JOB_SUBMITTED,
        attempt = job.rec.attempts,
        "sending the remix request"
    );
    Ok(())
}

fn log_answer(outcome: &Outcome, api_ms: u64) {
    if let Outcome::Answer(answer) = outcome {
        info!(
            event = events::JOB_RESPONDED,
            http_status = answer.http_status,
            api_ms,
            images = images_in(answer),
            "the API answered"
        );
    }
}

fn images_in(answer: &Answer) -> usize {
    answer.items.iter().filter(|i| i.url.is_some()).count()
}

/// The HTTP status an outcome came with (`None`: no answer arrived).
fn http_status(outcome: &Outcome) -> Option<u16> {
    match outcome {
        Outcome::Answer(answer) => Some(answer.http_status),
        Outcome::Rejected { http_status, .. }
        | Outcome::Unsafe { http_status, .. }
        | Outcome::BadResponse { http_status, .. }
        | Outcome::Pause { http_status, .. } => Some(*http_status),
        Outcome::RateLimited { .. } => Some(429),
        Outcome::Transient { http_status, .. } => *http_status,
    }
}

/// What an outcome tells the gate about the API.
fn signal(outcome: &Outcome) -> Signal {
    match outcome {
        Outcome::Answer(answer) => {
            Signal::Images(u32::try_from(images_in(answer)).unwrap_or(u32::MAX))
        }
        Outcome::Rejected { .. } | Outcome::Unsafe { .. } | Outcome::BadResponse { .. } => {
            Signal::Answered
        }
        Outcome::RateLimited {
            retry_after,
            max_inflight,
        } => Signal::RateLimited(*retry_after, *max_inflight),
        Outcome::Pause { reason, .. } => Signal::Pause(*reason),
        Outcome::Transient { .. } => Signal::Transient,
    }
}

/// The verdict for a request whose answer never came after its upload, when
/// `retry.resend_after_timeout` is off: sending it again could pay twice.
fn lost(sent: &Sent, retry: &RetryConfig) -> Option<Verdict> {
    if retry.resend_after_timeout || !billing::answer_lost(&sent.outcome, sent.upload_completed) {
        return None;
    }
    let what = match &sent.outcome {
        Outcome::Transient { message, .. } => message.as_str(),
        _ => "no answer",
    };
    Some(Verdict::file(
        Reason::AnswerLost,
        format!(
            "the request went out but its answer never came ({what}); the API may have run and \
             billed it. retry.resend_after_timeout is off, so it was not sent again: run \
             `remixd requeue` on this folder to send it again"
        ),
    ))
}

/// A job's transient failures, for `retry.max_attempts`.
#[derive(Debug, Default)]
struct Retries {
    failures: u32,
    first_failure: Option<Instant>,
}

impl Retries {
    /// Takes the count [`judge`] decided on; the first failure's time goes with it.
    fn count(&mut self, failures: u32, started: Instant) {
        if failures == 0 {
            self.first_failure = None;
        } else if failures > self.failures {
            self.first_failure.get_or_insert(started);
        }
        self.failures = failures;
    }
}

/// What the API's state says, as a job's retry decision needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Health {
    /// Submissions are paused for everyone.
    pub(super) paused: bool,
    /// The API answered someone since this job's first transient failure.
    pub(super) worked_since_first_failure: bool,
}

/// What to do after one request.
#[derive(Debug, PartialEq)]
pub(super) enum Decision {
    /// The job has its answer, or its verdict.
    Done(Result<Answer, Verdict>),
    /// Send the request again after `wait`.
    Retry {
        wait: Wait,
        http_status: Option<u16>,
        error: String,
    },
}

impl Decision {
    fn retry(wait: Wait, http_status: Option<u16>, error: String) -> Self {
        Self::Retry {
            wait,
            http_status,
            error,
        }
    }
}

/// How long to wait before sending again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// At once: the gate holds the request back while the API is paused.
    Now,
    /// As the API asked (`Retry-After`).
    For(Duration),
    /// [`backoff`] for the `n`th failure.
    Backoff(u32),
}

impl Wait {
    fn delay(self, retry: &RetryConfig) -> Duration {
        match self {
            Self::Now => Duration::ZERO,
            Self::For(delay) => delay,
            Self::Backoff(n) => backoff(retry, n),
        }
    }
}

/// Decides what one outcome means for the job, given its count of transient `failures` so
/// far and the API's `health`; returns the decision and the new count. Refusals end the job;
/// a 429 or a pause waits without counting; a transient failure counts, and past
/// `retry.max_attempts` ends the job only if the API worked for others meanwhile (otherwise it
/// is an outage, not this file's fault, and the count starts over).
pub(super) fn judge(
    outcome: Outcome,
    failures: u32,
    health: Health,
    retry: &RetryConfig,
) -> (Decision, u32) {
    let refusal = match &outcome {
        Outcome::Rejected { .. } => Reason::RejectedByApi,
        Outcome::Unsafe { .. } => Reason::UnsafeContent,
        _ => Reason::BadResponse,
    };
    match outcome {
        Outcome::Answer(answer) => (Decision::Done(Ok(answer)), failures),
        Outcome::Rejected {
            http_status,
            api_error,
            message,
        }
        | Outcome::Unsafe {
            http_status,
            api_error,
            message,
        }
        | Outcome::BadResponse {
            http_status,
            api_error,
            message,
        } => {
            let verdict = Verdict {
                reason: refusal,
                message,
                http_status: Some(http_status),
                api_error,
            };
            (Decision::Done(Err(verdict)), failures)
        }
        Outcome::RateLimited { retry_after, .. } => {
            let wait = retry_after.map_or(Wait::Backoff(failures + 1), Wait::For);
            let decision = Decision::retry(wait, Some(429), "rate limited (HTTP 429)".into());
            (decision, failures)
        }
        Outcome::Pause {
            http_status,
            message,
            ..
        } => (
            Decision::retry(Wait::Now, Some(http_status), message),
            failures,
        ),
        Outcome::Transient {
            http_status,
            message,
        } if health.paused => (Decision::retry(Wait::Now, http_status, message), failures),
        Outcome::Transient {
            http_status,
            message,
        } => transient(failures + 1, health, retry, http_status, message),
    }
}

/// The `failures`th transient failure in a row for this job.
fn transient(
    failures: u32,
    health: Health,
    retry: &RetryConfig,
    http_status: Option<u16>,
    message: String,
) -> (Decision, u32) {
    let failures = if failures < retry.max_attempts {
        failures
    } else if health.worked_since_first_failure {
        let verdict = Verdict {
            reason: Reason::RetriesExhausted,
            message: format!(
                "{failures} requests for this image failed ({message}) while the API worked for other jobs; requeue it to try again"
            ),
            http_status,
            api_error: None,
        };
        return (Decision::Done(Err(verdict)), failures);
    } else {
        0
    };
    let decision = Decision::retry(Wait::Backoff(failures.max(1)), http_status, message);
    (decision, failures)
}

/// Exponential backoff for the `n`th failure (1-based), capped, with ±20% jitter.
#[must_use]
pub fn backoff(retry: &RetryConfig, n: u32) -> Duration {
    let exp = retry
        .initial_backoff
        .saturating_mul(1u32 << n.saturating_sub(1).min(20))
        .min(retry.max_backoff);
    exp.mul_f64(0.8 + fastrand::f64() * 0.4)
        .min(retry.max_backoff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PauseReason;

    const RETRY: RetryConfig = RetryConfig {
        max_attempts: 3,
        initial_backoff: Duration::from_secs(2),
        max_backoff: Duration::from_secs(60),
        resend_after_timeout: true,
    };
    const UP: Health = Health {
        paused: false,
        worked_since_first_failure: true,
    };
    const DOWN: Health = Health {
        paused: false,
        worked_since_first_failure: false,
    };
    const PAUSED: Health = Health {
        paused: true,
        worked_since_first_failure: false,
    };

    fn answer() -> Answer {
        Answer {
            http_status: 200,
            raw: serde_json::json!({}),
            created: None,
            items: Vec::new(),
        }
    }

    fn transient() -> Outcome {
        Outcome::Transient {
            http_status: Some(503),
            message: "down".into(),
        }
    }

    fn refused(reason: Reason) -> Decision {
        Decision::Done(Err(Verdict {
            reason,
            message: "no".into(),
            http_status: Some(400),
            api_error: Some("body".into()),
        }))
    }

    fn retry(wait: Wait, http_status: Option<u16>, error: &str) -> Decision {
        Decision::Retry {
            wait,
            http_status,
            error: error.into(),
        }
    }

    #[test]
    fn judge_decides_from_outcome_failures_and_health() {
        let (status, api_error, message) = (400, Some("body".to_owned()), "no".to_owned());
        #[rustfmt::skip]
        let cases: Vec<(&str, Outcome, u32, Health, Decision, u32)> = vec![
            ("an answer ends the job", Outcome::Answer(answer()), 2, UP,
                Decision::Done(Ok(answer())), 2),
            ("a rejection quarantines", Outcome::Rejected { http_status: status, api_error: api_error.clone(), message: message.clone() },
                0, UP, refused(Reason::RejectedByApi), 0),
            ("a safety refusal quarantines", Outcome::Unsafe { http_status: status, api_error: api_error.clone(), message: message.clone() },
                0, DOWN, refused(Reason::UnsafeContent), 0),
            ("a bad answer quarantines", Outcome::BadResponse { http_status: status, api_error, message },
                1, PAUSED, refused(Reason::BadResponse), 1),
            ("a 429 waits as told, not counted", Outcome::RateLimited { retry_after: Some(Duration::from_secs(7)), max_inflight: None },
                1, UP, retry(Wait::For(Duration::from_secs(7)), Some(429), "rate limited (HTTP 429)"), 1),
            ("a 429 without Retry-After backs off", Outcome::RateLimited { retry_after: None, max_inflight: None },
                1, UP, retry(Wait::Backoff(2), Some(429), "rate limited (HTTP 429)"), 1),
            ("a pause retries at once, not counted", Outcome::Pause { reason: PauseReason::Balance, http_status: 402, api_error: None, message: "broke".into() },
                2, UP, retry(Wait::Now, Some(402), "broke"), 2),
            ("a transient failure while paused is not counted", transient(),
                2, PAUSED, retry(Wait::Now, Some(503), "down"), 2),
            ("a transient failure counts and backs off", transient(),
                0, UP, retry(Wait::Backoff(1), Some(503), "down"), 1),
            ("the second backs off longer", transient(),
                1, DOWN, retry(Wait::Backoff(2), Some(503), "down"), 2),
        ];
        for (name, outcome, failures, health, want, want_failures) in cases {
            assert_eq!(
                judge(outcome, failures, health, &RETRY),
                (want, want_failures),
                "{name}"
            );
        }
    }

    #[test]
    fn the_last_attempt_quarantines_only_if_the_api_worked_for_others() {
        let (decision, failures) = judge(transient(), 2, UP, &RETRY);
        let Decision::Done(Err(verdict)) = decision else {
            panic!("not ended: {decision:?}");
        };
        assert_eq!(verdict.reason, Reason::RetriesExhausted);
        assert_eq!(verdict.http_status, Some(503));
        assert!(
            verdict.message.starts_with("3 requests"),
            "{}",
            verdict.message
        );
        assert_eq!(failures, 3);
        // Nobody got through: an outage, so the count starts over.
        assert_eq!(
            judge(transient(), 2, DOWN, &RETRY),
            (retry(Wait::Backoff(1), Some(503), "down"), 0)
        );
    }

    #[test]
    fn backoff_doubles_within_jitter_and_stays_capped() {
        for _ in 0..50 {
            for (n, base) in [(1, 2.0), (2, 4.0), (3, 8.0), (5, 32.0)] {
                let got = backoff(&RETRY, n).as_secs_f64();
                assert!((base * 0.8..=base * 1.2).contains(&got), "n={n}: {got}");
            }
            assert!(backoff(&RETRY, 6) <= RETRY.max_backoff);
            assert!(backoff(&RETRY, 100) <= RETRY.max_backoff);
            assert!(backoff(&RETRY, 100) >= RETRY.max_backoff.mul_f64(0.8));
            assert!(backoff(&RETRY, 0) <= Duration::from_secs_f64(2.4));
        }
    }

    #[test]
    fn a_wait_becomes_a_delay() {
        assert_eq!(Wait::Now.delay(&RETRY), Duration::ZERO);
        let seven = Duration::from_secs(7);
        assert_eq!(Wait::For(seven).delay(&RETRY), seven);
        assert!(Wait::Backoff(1).delay(&RETRY) <= Duration::from_secs_f64(2.4));
    }

    #[test]
    fn the_first_failure_time_follows_the_count() {
        let mut retries = Retries::default();
        let t0 = Instant::now();
        retries.count(1, t0);
        assert_eq!(retries.first_failure, Some(t0));
        retries.count(2, t0 + Duration::from_secs(1));
        assert_eq!(retries.first_failure, Some(t0), "the first failure stays");
        retries.count(0, t0 + Duration::from_secs(2));
        assert_eq!(retries.first_failure, None, "an outage starts over");
    }
}
