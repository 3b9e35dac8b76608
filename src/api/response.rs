//! Turning one HTTP answer (status, `Retry-After`, body) into what the job does next. Pure: no
//! I/O, table-tested. Sending the request is [`super::client`]'s job; what to do with an outcome
//! (retry, pause, quarantine) is the pipeline's.

use std::time::{Duration, SystemTime};

use serde_json::Value;

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
    /// The size of an upscaled output, when the API says (it sends this for some edits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upscaled_resolution: Option<String>,
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
    /// `limits.daily_image_budget` or `limits.daily_spend_budget_usd` is spent for this UTC
    /// day.
    Budget,
    /// The API's own daily limit for the account (402 `reject_reason: daily_limit`): until
    /// 00:00 UTC.
    DailyLimit,
}

impl PauseReason {
    /// Every reason, in the order above.
    pub const ALL: [Self; 5] = [
        Self::Unauthorized,
        Self::Balance,
        Self::Unavailable,
        Self::Budget,
        Self::DailyLimit,
    ];

    /// The name used in logs (`unauthorized`, `balance`, `unavailable`, `budget`,
    /// `daily_limit`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Balance => "balance",
            Self::Unavailable => "unavailable",
            Self::Budget => "budget",
            Self::DailyLimit => "daily_limit",
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
        /// The account's in-flight limit, when the body names it (`max_inflight_requests`).
        max_inflight: Option<u32>,
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

/// The longest `Retry-After` honoured; a larger one is cut to this.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);

/// The longest piece of the API's own message quoted in an outcome's `message`.
const QUOTE_MAX: usize = 300;

/// Reads one HTTP answer.
#[must_use]
pub fn classify(http_status: u16, retry_after: Option<&str>, body: &[u8]) -> Outcome {
    let retry_after = retry_after.and_then(|v| parse_retry_after(v, SystemTime::now()));
    if (200..300).contains(&http_status) {
        return classify_success(http_status, retry_after, body);
    }
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let said = json
        .as_ref()
        .and_then(api_message)
        .or_else(|| plain_text_message(body));
    let api_error = api_error_text(body);
    classify_status(
        http_status,
        retry_after,
        said.as_deref(),
        api_error,
        json.as_ref(),
    )
}

/// Parses a `Retry-After` value: delta seconds or an HTTP date, measured from `now`, capped at
/// [`RETRY_AFTER_MAX`]. A date in the past means "now".
#[must_use]
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(RETRY_AFTER_MAX))
}

/// A refusal, from an HTTP status or from a proxy envelope's `code`: both follow one table.
struct Refusal<'a> {
    /// The HTTP status or the envelope's code.
    code: i64,
    /// How to name it in messages: `HTTP 401` or `code 401`.
    label: String,
    /// The real HTTP status, for the outcome's fields.
    http_status: u16,
    /// The API's own words.
    said: Option<&'a str>,
    /// The body, cut.
    api_error: Option<String>,
    /// Whether words about balance mean a spent balance (4xx and envelopes; a 5xx saying
    /// "insufficient" is more likely about resources).
    balance_words_count: bool,
    /// The body as JSON, for the fields a limit's answer names.
    json: Option<&'a Value>,
}

fn classify_status(
    http_status: u16,
    retry_after: Option<Duration>,
    said: Option<&str>,
    api_error: Option<String>,
    json: Option<&Value>,
) -> Outcome {
    decide(
        &Refusal {
            code: i64::from(http_status),
            label: format!("HTTP {http_status}"),
            http_status,
            said,
            api_error,
            balance_words_count: (400..500).contains(&http_status),
            json,
        },
        retry_after,
    )
}

fn decide(r: &Refusal<'_>, retry_after: Option<Duration>) -> Outcome {
    let label = &r.label;
    let quoted = r.said.map(|m| format!(": {m}")).unwrap_or_default();
    match r.code {
        401 | 403 => pause(
            r,
            PauseReason::Unauthorized,
            format!(
                "the API refused the key ({label}){quoted}; check the API key (api.api_key_file \
                 or api.api_key_env); jobs wait until it works"
            ),
        ),
        429 => Outcome::RateLimited {
            retry_after,
            max_inflight: r
                .json
                .and_then(|j| find_key(j, "max_inflight_requests"))
                .and_then(as_count),
        },
        402 if r
            .json
            .and_then(|j| find_key(j, "reject_reason"))
            .is_some_and(|v| v.as_str() == Some("daily_limit")) =>
        {
            pause(
                r,
                PauseReason::DailyLimit,
                format!(
                    "the API account's daily limit is reached ({label}){quoted}; submissions \
                     resume at 00:00 UTC"
                ),
            )
        }
        402 => pause(r, PauseReason::Balance, balance_message(label, &quoted)),
        _ if r.balance_words_count && r.said.is_some_and(talks_about_balance) => {
            pause(r, PauseReason::Balance, balance_message(label, &quoted))
        }
        _ => failure(r, &quoted),
    }
}

fn pause(r: &Refusal<'_>, reason: PauseReason, message: String) -> Outcome {
    Outcome::Pause {
        reason,
        http_status: r.http_status,
        api_error: r.api_error.clone(),
        message,
    }
}

/// A refusal that is about this request, not the account: retried, or the job's verdict.
fn failure(r: &Refusal<'_>, quoted: &str) -> Outcome {
    let (label, http_status, api_error) = (&r.label, r.http_status, r.api_error.clone());
    match r.code {
        408 => Outcome::Transient {
            http_status: Some(http_status),
            message: format!("the API timed out waiting for the request ({label}){quoted}"),
        },
        422 => Outcome::Unsafe {
            http_status,
            api_error,
            message: format!(
                "the API's safety check refused the image or prompt ({label}){quoted}; change \
                 the image or the prompt and requeue the job"
            ),
        },
        500..=599 => Outcome::Transient {
            http_status: Some(http_status),
            message: format!("the API failed ({label}){quoted}"),
        },
        _ => Outcome::Rejected {
            http_status,
            api_error,
            message: format!(
                "the API refused the request ({label}){quoted}; fix the sidecar and requeue the \
                 job"
            ),
        },
    }
}

fn balance_message(label: &str, quoted: &str) -> String {
    format!(
        "the API account has no balance left ({label}){quoted}; top up the account; jobs wait \
         until it works"
    )
}

fn classify_success(http_status: u16, retry_after: Option<Duration>, body: &[u8]) -> Outcome {
    let bad = |message: String| Outcome::BadResponse {
        http_status,
        api_error: api_error_text(body),
        message,
    };
    let Ok(raw) = serde_json::from_slice::<Value>(body) else {
        return bad(format!(
            "the API answered with something that is not JSON (HTTP {http_status}); check that \
             api.base_url points at the remix API, then requeue the job"
        ));
    };
    if let Some(code) = envelope_code(&raw).filter(|c| *c != 0 && *c != 200) {
        let said = api_message(&raw);
        let refusal = Refusal {
            code,
            label: format!("code {code}"),
            http_status,
            said: said.as_deref(),
            api_error: api_error_text(body),
            balance_words_count: true,
            json: Some(&raw),
        };
        return decide(&refusal, retry_after);
    }
    match raw.get("data") {
        Some(Value::Array(items)) => read_items(http_status, &raw, items, body),
        Some(data @ Value::Object(_)) if data.get("task_id").is_some() => {
            let task = data.get("task_id").map_or_else(String::new, display_value);
            bad(format!(
                "the API answered with an asynchronous task (task_id {task}) instead of images; \
                 remixd does not poll tasks: use a base_url that answers synchronously, then \
                 requeue the job"
            ))
        }
        _ => bad(format!(
            "the API's answer held no images (HTTP {http_status}); requeue the job to try again"
        )),
    }
}

fn read_items(http_status: u16, raw: &Value, items: &[Value], body: &[u8]) -> Outcome {
    let bad = |message: String| Outcome::BadResponse {
        http_status,
        api_error: api_error_text(body),
        message,
    };
    if items.is_empty() {
        return bad(format!(
            "the API's answer held no images (HTTP {http_status}); requeue the job to try again"
        ));
    }
    let mut parsed = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match read_item(item) {
            Some(item) => parsed.push(item),
            None => {
                return bad(format!(
                    "output {} in the API's answer is not an object (HTTP {http_status}); \
                     requeue the job to try again",
                    i + 1
                ));
            }
        }
    }
    if parsed.iter().all(|item| item.url.is_none()) {
        return Outcome::Unsafe {
            http_status,
            api_error: api_error_text(body),
            message: format!(
                "every output was withheld for safety ({} of {}); change the image or the \
                 prompt and requeue the job",
                parsed.len(),
                parsed.len()
            ),
        };
    }
    Outcome::Answer(Answer {
        http_status,
        raw: raw.clone(),
        created: raw.get("created").map(display_value),
        items: parsed,
    })
}

/// One output. An output marked unsafe never keeps a URL, so nothing downloads it.
fn read_item(item: &Value) -> Option<OutputItem> {
    let obj = item.as_object()?;
    let text = |key: &str| obj.get(key).and_then(Value::as_str).map(str::to_owned);
    let url = text("url").filter(|u| !u.trim().is_empty());
    let is_image_safe = obj
        .get("is_image_safe")
        .and_then(Value::as_bool)
        .unwrap_or(url.is_some());
    let seed = obj.get("seed").and_then(|s| match s {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    });
    Some(OutputItem {
        url: url.filter(|_| is_image_safe),
        prompt: text("prompt"),
        resolution: text("resolution"),
        seed,
        is_image_safe,
        style_type: text("style_type"),
        upscaled_resolution: text("upscaled_resolution"),
    })
}

/// A proxy envelope's `code` (number or numeric string), if the answer is one.
fn envelope_code(raw: &Value) -> Option<i64> {
    match raw.get("code")? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The first value of `key` in `json`, looked for at the top and then in nested objects.
fn find_key<'v>(json: &'v Value, key: &str) -> Option<&'v Value> {
    let map = json.as_object()?;
    map.get(key)
        .or_else(|| map.values().find_map(|v| find_key(v, key)))
}

/// A positive count written as a number or as numeric text.
fn as_count(value: &Value) -> Option<u32> {
    let n = match value {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    u32::try_from(n).ok().filter(|n| *n > 0)
}

/// The API's own words: `message`, `error` or `detail`, looked into when nested.
fn api_message(json: &Value) -> Option<String> {
    let text = match json {
        Value::String(s) => s.trim().to_owned(),
        Value::Object(map) => {
            return ["message", "error", "detail", "msg"]
                .iter()
                .filter_map(|k| map.get(*k))
                .find_map(api_message);
        }
        Value::Null => return None,
        other => other.to_string(),
    };
    (!text.is_empty()).then(|| cut(&one_line(&text), QUOTE_MAX))
}

/// A short plain-text body (not an HTML page) quoted as the API's message.
fn plain_text_message(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() || text.starts_with('<') {
        return None;
    }
    Some(cut(&one_line(text), QUOTE_MAX))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn talks_about_balance(message: &str) -> bool {
    const WORDS: [&str; 7] = [
        "balance",
        "credit",
        "insufficient",
        "quota",
        "余额",
        "欠费",
        "额度",
    ];
    let lower = message.to_lowercase();
    WORDS.iter().any(|w| lower.contains(w))
}

fn display_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The body as text, cut to [`API_ERROR_MAX`] bytes at a character boundary; `None` when empty.
fn api_error_text(body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    Some(cut(&String::from_utf8_lossy(body), API_ERROR_MAX))
}

fn cut(text: &str, max: usize) -> String {
    crate::text::cut_bytes(text, max).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A short name for an outcome's kind, so a table row reads in one line.
    fn kind(outcome: &Outcome) -> String {
        match outcome {
            Outcome::Answer(a) => format!("answer:{}", a.items.len()),
            Outcome::Rejected { .. } => "rejected".into(),
            Outcome::Unsafe { .. } => "unsafe".into(),
            Outcome::BadResponse { .. } => "bad".into(),
            Outcome::RateLimited {
                retry_after,
                max_inflight: None,
            } => format!("rate:{retry_after:?}"),
            Outcome::RateLimited {
                retry_after,
                max_inflight: Some(n),
            } => format!("rate:{retry_after:?}:max{n}"),
            Outcome::Transient { http_status, .. } => format!("transient:{http_status:?}"),
            Outcome::Pause { reason, .. } => format!("pause:{}", reason.name()),
        }
    }

    fn message(outcome: &Outcome) -> &str {
        match outcome {
            Outcome::Rejected { message, .. }
            | Outcome::Unsafe { message, .. }
            | Outcome::BadResponse { message, .. }
            | Outcome::Transient { message, .. }
            | Outcome::Pause { message, .. } => message,
            Outcome::Answer(_) | Outcome::RateLimited { .. } => "",
        }
    }

    const ITEM: &str = r#"{"url":"https://x/1.png","prompt":"p","resolution":"1024x1024","seed":7,"is_image_safe":true,"style_type":"GENERAL"}"#;
    const UNSAFE: &str = r#"{"url":null,"is_image_safe":false}"#;

    /// (row, status, `Retry-After`, body, kind, a word the message must hold)
    type Row<'a> = (&'a str, u16, Option<&'a str>, &'a str, &'a str, &'a str);

    fn check(rows: &[Row<'_>]) {
        for (row, status, retry_after, body, want, word) in rows {
            let got = classify(*status, *retry_after, body.as_bytes());
            assert_eq!(kind(&got), *want, "row {row}: {got:?}");
            assert!(message(&got).contains(word), "row {row}: {got:?}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn classify_table_success() {
        let native = format!(r#"{{"created":"2025-08-27T22:13:44Z","data":[{ITEM}]}}"#);
        let mixed = format!(r#"{{"created":"c","data":[{UNSAFE},{ITEM}]}}"#);
        let envelope0 = format!(r#"{{"code":0,"message":"ok","data":[{ITEM},{ITEM}]}}"#);
        let envelope200 = format!(r#"{{"code":200,"message":"ok","data":[{ITEM}]}}"#);
        let all_unsafe = format!(r#"{{"data":[{UNSAFE},{UNSAFE}]}}"#);
        check(&[
            ("native", 200, None, &native, "answer:1", ""),
            ("unsafe item kept", 200, None, &mixed, "answer:2", ""),
            ("envelope code 0", 200, None, &envelope0, "answer:2", ""),
            ("envelope code 200", 200, None, &envelope200, "answer:1", ""),
            ("not json", 200, None, "<html>hi</html>", "bad", "not JSON"),
            ("empty data", 200, None, r#"{"created":"c","data":[]}"#, "bad", "no images"),
            ("no data", 200, None, r#"{"created":"c"}"#, "bad", "no images"),
            ("item not object", 200, None, r#"{"data":[1]}"#, "bad", "output 1"),
            ("task envelope", 200, None, r#"{"code":200,"message":"ok","data":{"task_id":"t-42","task_status":"submitted"}}"#, "bad", "task_id t-42"),
            ("all unsafe", 200, None, &all_unsafe, "unsafe", "withheld for safety"),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn classify_table_envelope_errors() {
        check(&[
            ("envelope 401", 200, None, r#"{"code":401,"message":"bad token"}"#, "pause:unauthorized", "bad token"),
            ("envelope 403", 200, None, r#"{"code":403,"message":"no"}"#, "pause:unauthorized", "code 403"),
            ("envelope 402", 200, None, r#"{"code":402,"message":"pay"}"#, "pause:balance", "top up"),
            ("envelope balance", 200, None, r#"{"code":1001,"message":"Insufficient balance"}"#, "pause:balance", ""),
            ("envelope quota", 200, None, r#"{"code":-1,"message":"quota exhausted"}"#, "pause:balance", ""),
            ("envelope 余额", 200, None, r#"{"code":500,"message":"余额不足"}"#, "pause:balance", "余额"),
            ("envelope 429", 200, Some("3"), r#"{"code":429,"message":"slow"}"#, "rate:Some(3s)", ""),
            ("envelope 5xx", 200, None, r#"{"code":503,"message":"busy"}"#, "transient:Some(200)", "busy"),
            ("envelope other", 200, None, r#"{"code":1234,"message":"prompt too long"}"#, "rejected", "prompt too long"),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn classify_table_http_errors() {
        check(&[
            ("400", 400, None, r#"{"message":"bad aspect"}"#, "rejected", "bad aspect"),
            ("400 nested error", 400, None, r#"{"error":{"message":"nested"}}"#, "rejected", "nested"),
            ("401", 401, None, "", "pause:unauthorized", "API key"),
            ("403", 403, None, "forbidden", "pause:unauthorized", "forbidden"),
            ("402", 402, None, "", "pause:balance", ""),
            ("400 credit", 400, None, r#"{"detail":"Not enough credit"}"#, "pause:balance", "credit"),
            ("403 balance", 403, None, "insufficient balance", "pause:unauthorized", ""),
            ("408", 408, None, "", "transient:Some(408)", "timed out"),
            ("409", 409, None, r#"{"detail":"conflict"}"#, "rejected", "HTTP 409"),
            ("404", 404, None, "<html>nope</html>", "rejected", "fix the sidecar"),
            ("422", 422, None, r#"{"detail":"unsafe"}"#, "unsafe", "safety"),
            ("429 seconds", 429, Some("120"), "", "rate:Some(120s)", ""),
            ("429 huge", 429, Some("999999"), "", "rate:Some(3600s)", ""),
            ("429 past date", 429, Some("Wed, 21 Oct 2015 07:28:00 GMT"), "", "rate:Some(0ns)", ""),
            ("429 garbage", 429, Some("soon"), "", "rate:None", ""),
            ("429 none", 429, None, "", "rate:None", ""),
            ("429 names the in-flight limit", 429, Some("2"), r#"{"error":{"message":"too many","max_inflight_requests":10}}"#, "rate:Some(2s):max10", ""),
            ("402 daily limit", 402, None, r#"{"reject_reason":"daily_limit","message":"daily limit"}"#, "pause:daily_limit", "00:00 UTC"),
            ("402 insufficient funds", 402, None, r#"{"reject_reason":"insufficient_funds"}"#, "pause:balance", "top up"),
            ("500", 500, None, "oops", "transient:Some(500)", "HTTP 500"),
            ("503 insufficient", 503, None, "insufficient capacity", "transient:Some(503)", ""),
            ("302", 302, None, "", "rejected", "HTTP 302"),
        ]);
    }

    #[test]
    fn answer_keeps_raw_json_and_reads_items() {
        let body = format!(r#"{{"created":"2025","data":[{UNSAFE},{ITEM}]}}"#);
        let Outcome::Answer(answer) = classify(200, None, body.as_bytes()) else {
            panic!("expected an answer");
        };
        assert_eq!(answer.http_status, 200);
        assert_eq!(answer.created.as_deref(), Some("2025"));
        assert_eq!(
            answer.raw,
            serde_json::from_str::<Value>(&body).expect("json")
        );
        assert_eq!(answer.items[0].url, None);
        assert!(!answer.items[0].is_image_safe);
        let item = &answer.items[1];
        assert_eq!(item.url.as_deref(), Some("https://x/1.png"));
        assert_eq!(item.seed, Some(7));
        assert_eq!(item.resolution.as_deref(), Some("1024x1024"));
        assert_eq!(item.style_type.as_deref(), Some("GENERAL"));
        assert_eq!(item.prompt.as_deref(), Some("p"));
    }

    /// Issue 10: "`upscaled_resolution` is kept in outputs when the API sends it".
    #[test]
    fn upscaled_resolution_is_kept_when_sent() {
        let body = r#"{"data":[{"url":"https://x/a.png","upscaled_resolution":"2048x2048"},{"url":"https://x/b.png"}]}"#;
        let Outcome::Answer(answer) = classify(200, None, body.as_bytes()) else {
            panic!("expected an answer");
        };
        assert_eq!(
            answer.items[0].upscaled_resolution.as_deref(),
            Some("2048x2048")
        );
        assert_eq!(answer.items[1].upscaled_resolution, None);
    }

    #[test]
    fn missing_safety_flag_follows_the_url() {
        let body = r#"{"data":[{"url":"https://x/a.png"},{"url":null}]}"#;
        let Outcome::Answer(answer) = classify(200, None, body.as_bytes()) else {
            panic!("expected an answer");
        };
        assert!(answer.items[0].is_image_safe);
        assert!(!answer.items[1].is_image_safe);
    }

    #[test]
    fn an_unsafe_item_never_keeps_its_url() {
        let body = r#"{"data":[{"url":"https://x/unsafe.png","is_image_safe":false},{"url":"https://x/safe.png","is_image_safe":true}]}"#;
        let Outcome::Answer(answer) = classify(200, None, body.as_bytes()) else {
            panic!("expected an answer");
        };
        assert_eq!(
            answer.items[0].url, None,
            "the unsafe item's url is dropped"
        );
        assert!(!answer.items[0].is_image_safe);
        assert_eq!(answer.items[1].url.as_deref(), Some("https://x/safe.png"));
        // With every item unsafe there is nothing to fetch: a safety refusal, no answer.
        let body = r#"{"data":[{"url":"https://x/unsafe.png","is_image_safe":false}]}"#;
        assert_eq!(kind(&classify(200, None, body.as_bytes())), "unsafe");
    }

    #[test]
    fn api_error_is_cut_at_a_char_boundary() {
        let body = "é".repeat(API_ERROR_MAX);
        let Outcome::Rejected { api_error, .. } = classify(400, None, body.as_bytes()) else {
            panic!("expected a refusal");
        };
        let api_error = api_error.expect("body kept");
        assert_eq!(api_error.len(), API_ERROR_MAX);
        assert!(api_error.chars().all(|c| c == 'é'));
    }

    #[test]
    fn retry_after_http_date_counts_from_now() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").expect("date");
        let later = "Wed, 21 Oct 2015 07:29:30 GMT";
        assert_eq!(parse_retry_after(later, now), Some(Duration::from_secs(90)));
        assert_eq!(parse_retry_after(" 5 ", now), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
