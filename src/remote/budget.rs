//! Staying inside the Hugging Face Hub's rate limits (per client, in
//! 5-minute windows: about 3000 resolves and 500 API calls). Each class of
//! request is paced by a token bucket sized so that no window can hold more
//! than the limit: a quarter of it may go at once, the rest at a steady rate.
//! A 429 pauses every request to the Hub until the time it asked for.

use std::str::FromStr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::FetchError;

/// The limits' window.
pub const WINDOW: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Files of the dataset (`/resolve/...`).
    Resolve,
    /// The Hub API (`/api/...`).
    Api,
}

/// Requests allowed per [`WINDOW`]; 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub resolves: u32,
    pub api: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            resolves: 3000,
            api: 500,
        }
    }
}

impl FromStr for RateLimits {
    type Err = String;

    /// `RESOLVES,API` (per 5 minutes), or `0` / `off` for no pacing.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "0" || text.eq_ignore_ascii_case("off") {
            return Ok(RateLimits {
                resolves: 0,
                api: 0,
            });
        }
        let bad = || format!("{text:?} is not RESOLVES,API (requests per 5 minutes), or off");
        let (resolves, api) = text.split_once(',').ok_or_else(bad)?;
        Ok(RateLimits {
            resolves: resolves.trim().parse().map_err(|_| bad())?,
            api: api.trim().parse().map_err(|_| bad())?,
        })
    }
}

/// A token bucket in its "theoretical arrival time" form (GCRA).
#[derive(Debug)]
struct Bucket {
    /// Time between two requests at the steady rate.
    interval: Duration,
    /// How far ahead of the steady rate a burst may run.
    burst: Duration,
    /// When the next request would be due at the steady rate.
    due: Option<Instant>,
}

impl Bucket {
    fn new(limit: u32) -> Option<Bucket> {
        if limit == 0 {
            return None;
        }
        let burst_count = (limit / 4).max(1);
        let steady = (limit - burst_count).max(1);
        Some(Bucket {
            interval: WINDOW / steady,
            burst: WINDOW / steady * (burst_count - 1),
            due: None,
        })
    }

    /// How long a request arriving at `now` must wait; the slot is taken
    /// only when that is at most `max_wait`.
    fn take(&mut self, now: Instant, max_wait: Duration) -> Result<Duration, Duration> {
        let due = self.due.map_or(now, |d| d.max(now));
        let wait = due.saturating_duration_since(now + self.burst);
        if wait > max_wait {
            return Err(wait);
        }
        self.due = Some(due + self.interval);
        Ok(wait)
    }
}

#[derive(Debug)]
pub struct RateBudget {
    limits: RateLimits,
    resolves: Option<Mutex<Bucket>>,
    api: Option<Mutex<Bucket>>,
    paused_until: Mutex<Option<Instant>>,
}

impl RateBudget {
    pub fn new(limits: RateLimits) -> Self {
        RateBudget {
            limits,
            resolves: Bucket::new(limits.resolves).map(Mutex::new),
            api: Bucket::new(limits.api).map(Mutex::new),
            paused_until: Mutex::new(None),
        }
    }

    /// How long a request of `class` arriving at `now` waits (taking its
    /// slot), or an error when that would be more than `max_wait`.
    pub fn reserve(
        &self,
        class: Class,
        now: Instant,
        max_wait: Duration,
    ) -> Result<Duration, FetchError> {
        let paused = self
            .paused_until
            .lock()
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
        let (bucket, limit, what) = match class {
            Class::Resolve => (&self.resolves, self.limits.resolves, "file requests"),
            Class::Api => (&self.api, self.limits.api, "API calls"),
        };
        let refused = |wait: Duration| {
            FetchError::Rejected(format!(
                "the Hugging Face rate limit ({limit} {what} per 5 minutes) is used up; \
                 the next request may go in {} s",
                wait.as_secs().max(1)
            ))
        };
        if paused > max_wait {
            return Err(refused(paused));
        }
        let paced = match bucket {
            Some(bucket) => bucket
                .lock()
                .take(now + paused, max_wait - paused)
                .map_err(|wait| refused(paused + wait))?,
            None => Duration::ZERO,
        };
        Ok(paused + paced)
    }

    /// Waits for a slot for a request of `class`, at most `max_wait`.
    pub fn acquire(&self, class: Class, max_wait: Duration) -> Result<(), FetchError> {
        let wait = self.reserve(class, Instant::now(), max_wait)?;
        if !wait.is_zero() {
            tracing::debug!(?class, ?wait, "pacing a request to the Hugging Face Hub");
            std::thread::sleep(wait);
        }
        Ok(())
    }

    /// The Hub answered 429: nothing more goes to it for `wait`.
    pub fn pause(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut paused = self.paused_until.lock();
        if paused.is_none_or(|p| p < until) {
            *paused = Some(until);
        }
        tracing::warn!(
            "the Hugging Face Hub asked to slow down: no request to it for {} s",
            wait.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(3600);

    /// Requests sent at full speed from `start` for one window.
    fn sent_in_a_window(budget: &RateBudget, class: Class) -> u32 {
        let start = Instant::now();
        let mut clock = start;
        let mut sent = 0;
        loop {
            let wait = budget.reserve(class, clock, LONG).unwrap();
            clock += wait;
            if clock >= start + WINDOW {
                return sent;
            }
            sent += 1;
        }
    }

    #[test]
    fn no_window_holds_more_than_the_limit() {
        let budget = RateBudget::new(RateLimits::default());
        let resolves = sent_in_a_window(&budget, Class::Resolve);
        assert!((2900..=3000).contains(&resolves), "{resolves}");
        let api = sent_in_a_window(&budget, Class::Api);
        assert!((480..=500).contains(&api), "{api}");
    }

    #[test]
    fn a_burst_goes_at_once_then_requests_are_paced() {
        let budget = RateBudget::new(RateLimits {
            resolves: 0,
            api: 500,
        });
        let now = Instant::now();
        for _ in 0..125 {
            assert_eq!(
                budget.reserve(Class::Api, now, LONG).unwrap(),
                Duration::ZERO
            );
        }
        let wait = budget.reserve(Class::Api, now, LONG).unwrap();
        assert_eq!(wait, WINDOW / 375);
        // Unlimited classes never wait.
        for _ in 0..10_000 {
            assert_eq!(
                budget.reserve(Class::Resolve, now, LONG).unwrap(),
                Duration::ZERO
            );
        }
    }

    #[test]
    fn a_wait_beyond_the_bound_is_refused_without_taking_a_slot() {
        let budget = RateBudget::new(RateLimits {
            resolves: 8,
            api: 8,
        });
        let now = Instant::now();
        for _ in 0..2 {
            budget.reserve(Class::Api, now, Duration::ZERO).unwrap();
        }
        let error = budget
            .reserve(Class::Api, now, Duration::from_secs(1))
            .unwrap_err();
        assert!(
            error.to_string().contains("8 API calls per 5 minutes"),
            "{error}"
        );
        // The refusal did not push later requests further back.
        let wait = budget.reserve(Class::Api, now, LONG).unwrap();
        assert_eq!(wait, WINDOW / 6);
    }

    #[test]
    fn a_pause_holds_every_class() {
        let budget = RateBudget::new(RateLimits {
            resolves: 0,
            api: 0,
        });
        budget.pause(Duration::from_secs(30));
        let wait = budget
            .reserve(Class::Resolve, Instant::now(), LONG)
            .unwrap();
        assert!(wait > Duration::from_secs(29), "{wait:?}");
        assert!(
            budget
                .reserve(Class::Api, Instant::now(), Duration::from_secs(5))
                .is_err()
        );
    }

    #[test]
    fn limits_parse() {
        assert_eq!("3000,500".parse(), Ok(RateLimits::default()));
        assert_eq!(
            "off".parse(),
            Ok(RateLimits {
                resolves: 0,
                api: 0
            })
        );
        assert!("fast".parse::<RateLimits>().is_err());
        assert!("1,x".parse::<RateLimits>().is_err());
    }
}
