//! Turning one HTTP answer (status, `Retry-After`, body) into what the job does next. Pure: no
//! I/O, table-tested.
//!
//! INTERFACE (skeleton): the helper implementing this module keeps the pub items below.

use std::time::Duration;

/// One output as the API described it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OutputItem {
    /// Download URL; `None` when withheld for safety.
    pub url: Option<String>,
    /// The prompt the API used.
    pub prompt: Option<String>,
    /// e.g. `1024x1024`.
    pub resolution: Option<String>,
    /// The seed used.
    pub seed: Option<i64>,
    /// False when withheld for safety.
    pub is_image_safe: bool,
    /// The style used.
    pub style_type: Option<String>,
}

/// A usable answer: at least one output with a URL.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Answer {
    /// The HTTP status (200).
    pub http_status: u16,
    /// The API's JSON exactly as received (native or proxy envelope).
    pub raw: serde_json::Value,
    /// `created`, when given.
    pub created: Option<String>,
    /// The outputs in the API's order.
    pub items: Vec<OutputItem>,
}

/// Why submissions pause for everyone (never the file's fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    /// 401/403: the key is refused.
    Unauthorized,
    /// 402 or a proxy envelope about balance.
    Balance,
    /// The API or the network is down (many transient failures in a row).
    Unavailable,
    /// `limits.daily_image_budget` is spent for this UTC day.
    Budget,
}

impl PauseReason {
    /// The name used in logs (`unauthorized`, `balance`, `unavailable`, `budget`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Balance => "balance",
            Self::Unavailable => "unavailable",
            Self::Budget => "budget",
        }
    }
}

/// What one request's answer means for the job.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Images to download.
    Answer(Answer),
    /// The API refused this request (400, other 4xx): quarantine `rejected_by_api`.
    Rejected {
        /// HTTP status.
        http_status: u16,
        /// The API's error body, cut to 4 KiB.
        api_error: Option<String>,
        /// Plain words for `error.json`.
        message: String,
    },
    /// 422, or every output withheld: quarantine `unsafe_content`.
    Unsafe {
        /// HTTP status.
        http_status: u16,
        /// The API's error body (or answer), cut to 4 KiB.
        api_error: Option<String>,
        /// Plain words for `error.json`.
        message: String,
    },
    /// Unusable answer (not JSON, no images, task envelope): quarantine `bad_response`.
    BadResponse {
        /// HTTP status.
        http_status: u16,
        /// The body, cut to 4 KiB.
        api_error: Option<String>,
        /// Plain words, naming the task id for a task envelope.
        message: String,
    },
    /// 429: retry after this (or the backoff), slow the whole client, not counted.
    RateLimited {
        /// Parsed `Retry-After` (seconds or HTTP date).
        retry_after: Option<Duration>,
    },
    /// 5xx, 408, timeouts, connection errors: retry with backoff.
    Transient {
        /// HTTP status when there was one.
        http_status: Option<u16>,
        /// What went wrong.
        message: String,
    },
    /// 401/403, 402, balance envelope: pause submissions for everyone.
    Pause {
        /// Why.
        reason: PauseReason,
        /// HTTP status.
        http_status: u16,
        /// The body, cut to 4 KiB.
        api_error: Option<String>,
        /// What went wrong.
        message: String,
    },
}

/// Largest `api_error` kept, in bytes.
pub const API_ERROR_MAX: usize = 4096;

/// Reads one HTTP answer.
#[must_use]
pub fn classify(http_status: u16, retry_after: Option<&str>, body: &[u8]) -> Outcome {
    let _ = (http_status, retry_after, body);
    todo!("classify")
}
