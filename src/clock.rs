//! Wall-clock moments as remixd writes them: RFC 3339 UTC in `metadata.json`, `error.json`
//! and the day's image count, and the UTC day that `{date}`, the budget and the daily counts
//! roll over on. Measuring durations is tokio's clock, not this module's.

use std::time::{Duration, SystemTime};

/// A moment as RFC 3339 UTC with milliseconds.
#[must_use]
pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// Now, as RFC 3339 UTC with milliseconds.
#[must_use]
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// Today's UTC date as `YYYY-MM-DD`.
#[must_use]
pub fn utc_date() -> String {
    let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    now.get(..10).unwrap_or("1970-01-01").to_owned()
}

/// How long until the next UTC day starts.
#[must_use]
pub fn until_next_utc_day() -> Duration {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Duration::from_secs(86_400 - secs % 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_are_utc_with_milliseconds_and_days_are_their_prefix() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_000_000_123);
        assert_eq!(rfc3339(at), "2025-11-24T16:00:00.123Z");
        assert_eq!(utc_date().len(), 10);
        assert_eq!(now_rfc3339().len(), 24);
        // Read on both sides of the date, so a midnight in between cannot fail it.
        let (before, day, after) = (now_rfc3339(), utc_date(), now_rfc3339());
        assert!(
            before.starts_with(&day) || after.starts_with(&day),
            "{day} is not the day of {before} or {after}"
        );
        let left = until_next_utc_day();
        assert!(left > Duration::ZERO && left <= Duration::from_secs(86_400));
    }
}
