//! When and how long to wait before asking the server again: exponential
//! backoff with jitter (backon's schedule), or what the server asked for.
//! The loop itself stays with the caller: backon's blocking retry cannot
//! take its wait from the error (a `Retry-After`), which is the point here.

use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff; doubled on each retry, plus up to as much again of
    /// jitter, so that clients that failed together do not retry together.
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
    /// The waits before each retry, `max_retries` of them.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            backoff: ExponentialBuilder::default()
                .with_jitter()
                .with_min_delay(self.backoff_base)
                .with_max_delay(self.max_wait)
                .with_max_times(self.max_retries as usize)
                .build(),
            max_wait: self.max_wait,
        }
    }
}

/// The waits of one request's retries.
pub struct Schedule {
    backoff: backon::ExponentialBackoff,
    max_wait: Duration,
}

impl Schedule {
    /// The wait before the next retry (what the server asked for when it
    /// said so, else the backoff; never above `max_wait`), or `None` when
    /// the retries are used up.
    pub fn next(&mut self, server_asked: Option<Duration>) -> Option<Duration> {
        let backoff = self.backoff.next()?;
        Some(server_asked.unwrap_or(backoff).min(self.max_wait))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let policy = RetryPolicy {
            max_retries: 5,
            backoff_base: Duration::from_secs(1),
            max_wait: Duration::from_secs(5),
        };
        for _ in 0..20 {
            let mut schedule = policy.schedule();
            let waits: Vec<Duration> = std::iter::from_fn(|| schedule.next(None)).collect();
            assert_eq!(waits.len(), 5, "one wait per retry");
            // Each wait is the doubled base plus at most as much jitter.
            for (retry, wait) in waits.iter().enumerate() {
                let base = Duration::from_secs(1 << retry).min(policy.max_wait);
                assert!(*wait >= base && *wait <= policy.max_wait.max(base * 2));
                assert!(*wait <= policy.max_wait, "{waits:?}");
            }
        }
        let mut schedule = policy.schedule();
        assert_eq!(
            schedule.next(Some(Duration::from_secs(3))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            schedule.next(Some(Duration::from_secs(300))),
            Some(Duration::from_secs(5))
        );
        let none = RetryPolicy {
            max_retries: 0,
            ..policy
        };
        assert_eq!(none.schedule().next(None), None);
    }

    #[test]
    fn jitter_spreads_the_waits() {
        let policy = RetryPolicy {
            max_retries: 1,
            backoff_base: Duration::from_secs(1),
            max_wait: Duration::from_secs(60),
        };
        let waits: std::collections::HashSet<Duration> = (0..20)
            .filter_map(|_| policy.schedule().next(None))
            .collect();
        assert!(waits.len() > 1, "{waits:?}");
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
    }
}
