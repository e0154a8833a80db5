//! When and how long to wait before asking the server again.

use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff; doubled on each retry.
    pub backoff_base: Duration,
    /// Upper bound on any single wait, including one asked for by Retry-After.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            backoff_base: Duration::from_millis(500),
            max_wait: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Wait before retry number `retry` (0-based): what the server asked for
    /// when it said so, else exponential backoff; never above `max_wait`.
    pub fn delay(&self, retry: u32, server_asked: Option<Duration>) -> Duration {
        let backoff = self.backoff_base.saturating_mul(1u32 << retry.min(16));
        server_asked.unwrap_or(backoff).min(self.max_wait)
    }
}

/// `Retry-After: <seconds>` or `Retry-After: <HTTP date>`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The `reset=<seconds>` parameter of a `RateLimit` header
/// (`limit=500, remaining=0, reset=37`), used when Retry-After is absent.
pub fn parse_ratelimit_reset(value: &str) -> Option<Duration> {
    value
        .split([',', ';'])
        .filter_map(|part| part.trim().strip_prefix("reset="))
        .find_map(|n| n.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            max_retries: 5,
            backoff_base: Duration::from_secs(1),
            max_wait: Duration::from_secs(5),
        };
        let waits: Vec<u64> = (0..5).map(|r| p.delay(r, None).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(300))),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn reads_retry_after_in_both_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(12));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(12))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(12));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_ratelimit_reset("limit=500, remaining=0, reset=37"),
            Some(Duration::from_secs(37))
        );
        assert_eq!(parse_ratelimit_reset("limit=500"), None);
    }
}
