//! What a request may have cost: whether it may have been billed (SPEC.md's Billing
//! paragraph: a request that ran is billed, one refused before it ran or that failed is not,
//! one whose answer never came after its upload may have been), and its estimated price from
//! `pricing`. Pure; the gate keeps the day's sums and the job keeps its own.

use serde::{Deserialize, Serialize};

use super::Outcome;
use crate::config::Pricing;
use crate::sidecar::RemixRequest;

/// The `cost` of `metadata.json` and `error.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Estimated USD.
    pub usd: f64,
    /// Images asked for by the requests that may have been billed.
    pub images: u64,
    /// Where the estimate comes from: `pricing` (the config's prices), `dry-run` (nothing
    /// was sent).
    pub basis: String,
}

/// The estimated price of one request asking for `images` at `rendering_speed` (any case;
/// an unknown speed is priced as `DEFAULT`, the API's own default), with the higher
/// character-reference price when one was sent.
#[must_use]
pub fn request_usd(
    pricing: &Pricing,
    rendering_speed: &str,
    images: u32,
    character_reference: bool,
) -> f64 {
    let table = if character_reference {
        &pricing.character_reference
    } else {
        &pricing.plain
    };
    let each = match rendering_speed.to_ascii_uppercase().as_str() {
        "FLASH" => table.flash,
        "TURBO" => table.turbo,
        "QUALITY" => table.quality,
        _ => table.default,
    };
    round_cents(each * f64::from(images))
}

/// Rounds to a hundredth of a cent, so sums of prices print as people write them.
#[must_use]
pub fn round_cents(usd: f64) -> f64 {
    (usd * 10_000.0).round() / 10_000.0
}

/// The cost of a job whose every request asked for `images` at `usd` each time, `billable` of
/// them possibly billed.
#[must_use]
pub fn job_cost(billable: u32, images: u32, usd_per_request: f64) -> Cost {
    Cost {
        usd: round_cents(f64::from(billable) * usd_per_request),
        images: u64::from(billable) * u64::from(images),
        basis: "pricing".to_owned(),
    }
}

/// The estimated price of one request as built: its `num_images` at its `rendering_speed`
/// (`DEFAULT` when it sends none), at the character-reference price when it sends one.
#[must_use]
pub fn request_price(pricing: &Pricing, request: &RemixRequest, character_reference: bool) -> f64 {
    let speed = request
        .fields
        .iter()
        .find(|(n, _)| n == "rendering_speed")
        .map_or("DEFAULT", |(_, v)| v.as_str());
    request_usd(
        pricing,
        speed,
        u32::from(request.num_images),
        character_reference,
    )
}

/// Whether a request with this outcome may have been billed. `upload_completed` says whether
/// its whole body went out; it matters only when no answer came.
#[must_use]
pub fn may_be_billed(outcome: &Outcome, upload_completed: bool) -> bool {
    match outcome {
        Outcome::Answer(_) => true,
        // A 200 ran: the safety check withheld everything, or the answer was unusable.
        Outcome::Unsafe { http_status, .. } | Outcome::BadResponse { http_status, .. } => {
            (200..300).contains(http_status)
        }
        Outcome::Rejected { .. } | Outcome::RateLimited { .. } | Outcome::Pause { .. } => false,
        // An error status (5xx, 408) failed; no answer at all after the upload may have run.
        Outcome::Transient { http_status, .. } => http_status.is_none() && upload_completed,
    }
}

/// Whether a request was lost after its upload: no answer came, and the API may have run it.
#[must_use]
pub fn answer_lost(outcome: &Outcome, upload_completed: bool) -> bool {
    matches!(
        outcome,
        Outcome::Transient {
            http_status: None,
            ..
        }
    ) && upload_completed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Answer, PauseReason};
    use crate::config::PUBLISHED_PRICES;

    #[test]
    fn published_prices_by_speed_and_character_reference() {
        let p = &PUBLISHED_PRICES;
        #[rustfmt::skip]
        let rows = [
            ("FLASH", 1, false, 0.03), ("turbo", 2, false, 0.06), ("DEFAULT", 1, false, 0.06),
            ("QUALITY", 4, false, 0.36), ("unknown", 1, false, 0.06),
            ("TURBO", 1, true, 0.10), ("DEFAULT", 2, true, 0.30), ("QUALITY", 1, true, 0.20),
        ];
        for (speed, n, character, want) in rows {
            let got = request_usd(p, speed, n, character);
            assert!((got - want).abs() < 1e-9, "{speed} x{n} {character}: {got}");
        }
        let cost = job_cost(2, 3, request_usd(p, "DEFAULT", 3, false));
        assert_eq!((cost.images, cost.basis.as_str()), (6, "pricing"));
        assert!((cost.usd - 0.36).abs() < 1e-9, "{}", cost.usd);
    }

    #[test]
    fn billable_follows_the_billing_rules() {
        let answer = Outcome::Answer(Answer {
            http_status: 200,
            raw: serde_json::json!({}),
            created: None,
            items: Vec::new(),
        });
        let refusal = |s: u16| Outcome::Rejected {
            http_status: s,
            api_error: None,
            message: String::new(),
        };
        let unsafe_ = |s: u16| Outcome::Unsafe {
            http_status: s,
            api_error: None,
            message: String::new(),
        };
        let transient = |s: Option<u16>| Outcome::Transient {
            http_status: s,
            message: String::new(),
        };
        let pause = Outcome::Pause {
            reason: PauseReason::Balance,
            http_status: 402,
            api_error: None,
            message: String::new(),
        };
        let limited = Outcome::RateLimited {
            retry_after: None,
            max_inflight: None,
        };
        #[rustfmt::skip]
        let rows: Vec<(&str, Outcome, bool, bool)> = vec![
            ("200 with images", answer, true, true),
            ("200 all withheld", unsafe_(200), true, true),
            ("400", refusal(400), true, false),
            ("422", unsafe_(422), true, false),
            ("402", pause, true, false),
            ("429", limited, true, false),
            ("503", transient(Some(503)), true, false),
            ("timeout after the upload", transient(None), true, true),
            ("refused connection", transient(None), false, false),
        ];
        for (name, outcome, uploaded, want) in rows {
            assert_eq!(may_be_billed(&outcome, uploaded), want, "{name}");
        }
        assert!(answer_lost(&transient(None), true));
        assert!(!answer_lost(&transient(None), false));
        assert!(!answer_lost(&transient(Some(500)), true));
    }
}
