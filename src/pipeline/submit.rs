//! Checking the input, building the request and sending it until there is an answer or a
//! verdict: retries with backoff, 429s, pauses, and the dry-run provider's copies.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::info;

use super::Ctx;
use crate::api::gate::{Signal, Ticket};
use crate::api::{Answer, Outcome, OutputItem};
use crate::config::Provider;
use crate::events;
use crate::fsx::FsError;
use crate::image_info::ImageInfo;
use crate::job::journal::JobDir;
use crate::job::verdict::{Reason, Verdict};
use crate::job::{Input, JobRecord, Stage};
use crate::pipeline::prepare;

/// Checks the input, builds the request and sends it until there is an answer or a verdict.
pub(super) async fn submit_stage(
    ctx: &Ctx,
    dir: &JobDir,
    rec: &mut JobRecord,
) -> Result<Result<Answer, Verdict>, FsError> {
    if let Input::Stray { reason, message } = &rec.input {
        return Ok(Err(Verdict::file(*reason, message.clone())));
    }
    let files = dir.files();
    let (image, request) = match prepare::prepare(&ctx.config(), &files, &rec.source) {
        Ok(ready) => ready,
        Err(verdict) => return Ok(Err(verdict)),
    };
    rec.request = Some(request);
    if ctx.config().api.provider == Provider::DryRun {
        return dry_run(ctx, dir, rec, image).map(Ok);
    }
    submit_loop(ctx, dir, rec, image).await
}

pub(super) async fn submit_loop(
    ctx: &Ctx,
    dir: &JobDir,
    rec: &mut JobRecord,
    image: ImageInfo,
) -> Result<Result<Answer, Verdict>, FsError> {
    let Some(request) = rec.request.clone() else {
        return Ok(Err(Verdict::file(
            Reason::InvalidSidecar,
            "no request could be built",
        )));
    };
    let path = dir.files().join(rec.source.file_os());
    let mut retries = Retries::default();
    loop {
        let permit = ctx.gate.admit(request.num_images).await;
        rec.attempts += 1;
        rec.stage = Stage::Submitting {
            attempt: rec.attempts,
        };
        rec.timings.submitted_at = Some(SystemTime::now());
        dir.write(rec)?;
        info!(
            event = events::JOB_SUBMITTED,
            attempt = rec.attempts,
            "sending the remix request"
        );
        let started = Instant::now();
        let outcome = ctx
            .api
            .submit(&path, &rec.source.file, image.format, &request)
            .await?;
        let api_ms = started.elapsed().as_millis() as u64;
        rec.timings.api_ms += api_ms;
        let ticket = permit.ticket();
        drop(permit);
        if let Outcome::Answer(answer) = &outcome {
            let images = answer.items.iter().filter(|i| i.url.is_some()).count();
            info!(
                event = events::JOB_RESPONDED,
                http_status = answer.http_status,
                api_ms,
                images,
                "the API answered"
            );
        }
        match retries.judge(ctx, outcome, ticket, started) {
            Next::Done(end) => return Ok(end),
            Next::Retry {
                delay,
                http_status,
                error,
            } => {
                info!(event = events::JOB_RETRY, attempt = rec.attempts,
                    delay_ms = delay.as_millis() as u64, error = %error, http_status,
                    "the request will be sent again");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// What to do after one request.
pub(super) enum Next {
    Done(Result<Answer, Verdict>),
    Retry {
        delay: Duration,
        http_status: Option<u16>,
        error: String,
    },
}

/// A job's count of transient failures, for `retry.max_attempts`.
#[derive(Default)]
pub(super) struct Retries {
    failures: u32,
    first_failure: Option<Instant>,
}

impl Retries {
    /// Reports `outcome` to the gate and decides: an end for the job, or a retry after a delay.
    fn judge(&mut self, ctx: &Ctx, outcome: Outcome, ticket: Ticket, started: Instant) -> Next {
        let retry = &ctx.config().retry;
        let refused = |reason, http_status, api_error, message| {
            ctx.gate.report(Signal::Answered, ticket);
            Next::Done(Err(api_verdict(reason, http_status, api_error, message)))
        };
        match outcome {
            Outcome::Answer(answer) => {
                let images = answer.items.iter().filter(|i| i.url.is_some()).count();
                ctx.gate.report(Signal::Images(images as u32), ticket);
                Next::Done(Ok(answer))
            }
            Outcome::Rejected {
                http_status,
                api_error,
                message,
            } => refused(Reason::RejectedByApi, http_status, api_error, message),
            Outcome::Unsafe {
                http_status,
                api_error,
                message,
            } => refused(Reason::UnsafeContent, http_status, api_error, message),
            Outcome::BadResponse {
                http_status,
                api_error,
                message,
            } => refused(Reason::BadResponse, http_status, api_error, message),
            Outcome::RateLimited { retry_after } => {
                ctx.gate.report(Signal::RateLimited(retry_after), ticket);
                let delay = retry_after.unwrap_or_else(|| backoff(retry, self.failures + 1));
                Next::Retry {
                    delay,
                    http_status: Some(429),
                    error: "rate limited (HTTP 429)".into(),
                }
            }
            Outcome::Pause {
                reason,
                http_status,
                message,
                ..
            } => {
                ctx.gate.report(Signal::Pause(reason), ticket);
                Next::Retry {
                    delay: Duration::ZERO,
                    http_status: Some(http_status),
                    error: message,
                }
            }
            Outcome::Transient {
                http_status,
                message,
            } => {
                ctx.gate.report(Signal::Transient, ticket);
                if ctx.gate.paused().is_some() {
                    return Next::Retry {
                        delay: Duration::ZERO,
                        http_status,
                        error: message,
                    };
                }
                self.failures += 1;
                let since = *self.first_failure.get_or_insert(started);
                if self.failures >= retry.max_attempts {
                    if ctx.gate.worked_since(since) {
                        return Next::Done(Err(Verdict {
                            reason: Reason::RetriesExhausted,
                            message: format!(
                                "{} requests for this image failed ({message}) while the API worked for other jobs; requeue it to try again",
                                self.failures
                            ),
                            http_status,
                            api_error: None,
                        }));
                    }
                    // Nothing worked for anyone: an outage, not this file's fault.
                    *self = Self::default();
                }
                let delay = backoff(retry, self.failures.max(1));
                Next::Retry {
                    delay,
                    http_status,
                    error: message,
                }
            }
        }
    }
}

pub(super) fn api_verdict(
    reason: Reason,
    http_status: u16,
    api_error: Option<String>,
    message: String,
) -> Verdict {
    Verdict {
        reason,
        message,
        http_status: Some(http_status),
        api_error,
    }
}

/// Exponential backoff for the `n`th failure (1-based), capped, with ±20% jitter.
#[must_use]
pub fn backoff(retry: &crate::config::RetryConfig, n: u32) -> Duration {
    let exp = retry
        .initial_backoff
        .saturating_mul(1u32 << n.saturating_sub(1).min(20))
        .min(retry.max_backoff);
    exp.mul_f64(0.8 + fastrand::f64() * 0.4)
        .min(retry.max_backoff)
}

/// The dry-run provider: `num_images` copies of the input, and an answer saying so.
pub(super) fn dry_run(
    ctx: &Ctx,
    dir: &JobDir,
    rec: &mut JobRecord,
    image: ImageInfo,
) -> Result<Answer, FsError> {
    let files = dir.files();
    let source = files.join(rec.source.file_os());
    rec.timings.submitted_at = Some(SystemTime::now());
    let n = rec.request.as_ref().map_or(1, |r| r.num_images);
    let prompt = rec.request.as_ref().and_then(|r| {
        r.fields
            .iter()
            .find(|(k, _)| k == "prompt")
            .map(|(_, v)| v.clone())
    });
    let mut items = Vec::new();
    for i in 1..=usize::from(n) {
        let name = format!("{}-remix-{i}.{}", rec.source.stem(), image.format.ext());
        let dest = files.join(&name);
        crate::fsx::copy_durable(&source, &dest).map_err(|e| FsError {
            action: "writing a dry-run output",
            path: dest.clone(),
            source: e,
        })?;
        items.push(OutputItem {
            url: None,
            prompt: prompt.clone(),
            resolution: Some(format!("{}x{}", image.width, image.height)),
            seed: Some(0),
            is_image_safe: true,
            style_type: None,
        });
    }
    ctx.gate.count_images(u32::from(n));
    let raw = serde_json::json!({
        "created": crate::clock::now_rfc3339(),
        "data": items,
    });
    info!(
        event = events::JOB_RESPONDED,
        http_status = 200u16,
        api_ms = 0u64,
        images = n,
        "dry-run: made copies of the input instead of calling the API"
    );
    Ok(Answer {
        http_status: 200,
        raw,
        created: None,
        items,
    })
}
