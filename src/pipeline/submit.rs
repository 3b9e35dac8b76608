//! The submit stage: sending the request until there is an answer or a verdict. Each attempt
//! is journaled (`submitting {attempt}`) before it is sent; what an answer means for the job
//! is decided by one pure function ([`judge`]) from the outcome, the job's count of transient
//! failures and the API's health, so retries, 429s and pauses are table-tested. The dry-run
//! provider never gets here ([`super::dry_run`]).

use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::info;

use super::ctx::{Ctx, Job};
use crate::api::gate::Signal;
use crate::api::{Answer, Outcome};
use crate::config::RetryConfig;
use crate::events;
use crate::fsx::FsError;
use crate::image_info::ImageInfo;
use crate::job::Stage;
use crate::job::verdict::{Reason, Verdict};

/// Sends the job's request until there is an answer (`Ok(Ok)`) or a verdict (`Ok(Err)`).
pub(super) async fn run(
    ctx: &Ctx,
    job: &mut Job,
    image: ImageInfo,
) -> Result<Result<Answer, Verdict>, FsError> {
    let Some(request) = job.rec.request.clone() else {
        return Ok(Err(Verdict::file(
            Reason::InvalidSidecar,
            "no request could be built",
        )));
    };
    let path = job.dir.files().join(job.rec.source.file_os());
    let mut retries = Retries::default();
    loop {
        let permit = ctx.gate.admit(request.num_images).await;
        journal_attempt(job)?;
        let started = Instant::now();
        let outcome = ctx
            .api
            .submit(&path, &job.rec.source.file, image.format, &request)
            .await?;
        let api_ms = started.elapsed().as_millis() as u64;
        job.rec.timings.api_ms += api_ms;
        let ticket = permit.ticket();
        drop(permit);
        log_answer(&outcome, api_ms);
        ctx.gate.report(signal(&outcome), ticket);
        let health = Health {
            paused: ctx.gate.paused().is_some(),
            worked_since_first_failure: ctx
                .gate
                .worked_since(retries.first_failure.unwrap_or(started)),
        };
        let (decision, failures) = judge(outcome, retries.failures, health, &job.config.retry);
        retries.count(failures, started);
        match decision {
            Decision::Done(end) => return Ok(end),
            Decision::Retry {
                wait,
                http_status,
                error,
            } => {
                let delay = wait.delay(&job.config.retry);
                info!(event = events::JOB_RETRY, attempt = job.rec.attempts,
                    delay_ms = delay.as_millis() as u64, error = %error, http_status,
                    "the request will be sent again");
                tokio::time::sleep(delay).await;
            }
        }
    }
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

/// What an outcome tells the gate about the API.
fn signal(outcome: &Outcome) -> Signal {
    match outcome {
        Outcome::Answer(answer) => {
            Signal::Images(u32::try_from(images_in(answer)).unwrap_or(u32::MAX))
        }
        Outcome::Rejected { .. } | Outcome::Unsafe { .. } | Outcome::BadResponse { .. } => {
            Signal::Answered
        }
        Outcome::RateLimited { retry_after } => Signal::RateLimited(*retry_after),
        Outcome::Pause { reason, .. } => Signal::Pause(*reason),
        Outcome::Transient { .. } => Signal::Transient,
    }
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
    let retry_now = |http_status, error| Decision::Retry {
        wait: Wait::Now,
        http_status,
        error,
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
        Outcome::RateLimited { retry_after } => {
            let wait = retry_after.map_or(Wait::Backoff(failures + 1), Wait::For);
            let decision = Decision::Retry {
                wait,
                http_status: Some(429),
                error: "rate limited (HTTP 429)".into(),
            };
            (decision, failures)
        }
        Outcome::Pause {
            http_status,
            message,
            ..
        } => (retry_now(Some(http_status), message), failures),
        Outcome::Transient {
            http_status,
            message,
        } if health.paused => (retry_now(http_status, message), failures),
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
    let decision = Decision::Retry {
        wait: Wait::Backoff(failures.max(1)),
        http_status,
        error: message,
    };
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
