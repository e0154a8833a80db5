//! Staying inside the Hugging Face Hub's rate limits (per client, in
//! 5-minute windows: about 3000 resolves and 500 API calls). Only requests
//! to the Hub itself (the host of `--hf-endpoint`) are paced; a mirror has
//! limits of its own, which it says with a 429 or `RateLimit` headers (see
//! `pauses`). Each class of request is paced by a GCRA token bucket
//! (governor's) sized so that no window can hold more than the limit: a
//! quarter of it may go at once, the rest at a steady rate.

use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use super::FetchError;

/// The limits' window.
pub const WINDOW: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Files of the dataset (`/resolve/...`, and where they redirect).
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

type Bucket<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// `limit` requests per [`WINDOW`]: a quarter at once, the rest steadily.
fn quota(limit: u32) -> Option<Quota> {
    if limit == 0 {
        return None;
    }
    let burst = NonZeroU32::new((limit / 4).max(1))?;
    let steady = (limit - burst.get()).max(1);
    Quota::with_period(WINDOW / steady).map(|q| q.allow_burst(burst))
}

pub struct RateBudget<C: Clock + Clone = DefaultClock> {
    limits: RateLimits,
    resolves: Option<Bucket<C>>,
    api: Option<Bucket<C>>,
    clock: C,
}

impl RateBudget {
    pub fn new(limits: RateLimits) -> Self {
        Self::with_clock(limits, DefaultClock::default())
    }

    /// Waits for a slot for a request of `class`, at most `max_wait`; a
    /// request that would wait longer fails without taking a slot.
    pub fn acquire(&self, class: Class, max_wait: Duration) -> Result<(), FetchError> {
        let deadline = Instant::now() + max_wait;
        loop {
            // Another thread may take the slot we waited for: ask again,
            // within the same deadline.
            let wait = self.reserve(class, deadline.saturating_duration_since(Instant::now()))?;
            if wait.is_zero() {
                return Ok(());
            }
            tracing::debug!(?class, ?wait, "pacing a request to the Hugging Face Hub");
            std::thread::sleep(wait);
        }
    }
}

impl<C: Clock + Clone> RateBudget<C> {
    fn with_clock(limits: RateLimits, clock: C) -> Self {
        let bucket = |limit| quota(limit).map(|q| RateLimiter::direct_with_clock(q, clock.clone()));
        RateBudget {
            limits,
            resolves: bucket(limits.resolves),
            api: bucket(limits.api),
            clock,
        }
    }

    /// Takes a slot now (`Ok(ZERO)`), or says how long until one is free
    /// (`Ok(wait)`, nothing taken), or refuses when that is more than
    /// `max_wait`.
    fn reserve(&self, class: Class, max_wait: Duration) -> Result<Duration, FetchError> {
        let (bucket, limit, what) = match class {
            Class::Resolve => (&self.resolves, self.limits.resolves, "file requests"),
            Class::Api => (&self.api, self.limits.api, "API calls"),
        };
        let Some(bucket) = bucket else {
            return Ok(Duration::ZERO);
        };
        match bucket.check() {
            Ok(()) => Ok(Duration::ZERO),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                match wait > max_wait {
                    false => Ok(wait),
                    true => Err(FetchError::Rejected(format!(
                        "the Hugging Face rate limit ({limit} {what} per 5 minutes) is used up; \
                         the next request may go in {} s",
                        wait.as_secs().max(1)
                    ))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    const LONG: Duration = Duration::from_secs(3600);

    fn budget(limits: RateLimits) -> (RateBudget<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (RateBudget::with_clock(limits, clock.clone()), clock)
    }

    /// Requests sent at full speed for one window, waiting as told.
    fn sent_in_a_window(limits: RateLimits, class: Class) -> u32 {
        let (budget, clock) = budget(limits);
        let mut elapsed = Duration::ZERO;
        let mut sent = 0;
        loop {
            let wait = budget.reserve(class, LONG).unwrap();
            if wait.is_zero() {
                sent += 1;
                continue;
            }
            clock.advance(wait);
            elapsed += wait;
            if elapsed >= WINDOW {
                return sent;
            }
        }
    }

    #[test]
    fn no_window_holds_more_than_the_limit() {
        let resolves = sent_in_a_window(RateLimits::default(), Class::Resolve);
        assert!((2900..=3000).contains(&resolves), "{resolves}");
        let api = sent_in_a_window(RateLimits::default(), Class::Api);
        assert!((480..=500).contains(&api), "{api}");
    }

    #[test]
    fn a_burst_goes_at_once_then_requests_are_paced() {
        let (budget, _clock) = budget(RateLimits {
            resolves: 0,
            api: 500,
        });
        for _ in 0..125 {
            assert_eq!(budget.reserve(Class::Api, LONG).unwrap(), Duration::ZERO);
        }
        let wait = budget.reserve(Class::Api, LONG).unwrap();
        assert!(wait > Duration::ZERO && wait <= WINDOW / 375, "{wait:?}");
        // Unlimited classes never wait.
        for _ in 0..10_000 {
            assert_eq!(
                budget.reserve(Class::Resolve, LONG).unwrap(),
                Duration::ZERO
            );
        }
    }

    #[test]
    fn a_wait_beyond_the_bound_is_refused_without_taking_a_slot() {
        let (budget, clock) = budget(RateLimits {
            resolves: 8,
            api: 8,
        });
        for _ in 0..2 {
            assert_eq!(
                budget.reserve(Class::Api, Duration::ZERO).unwrap(),
                Duration::ZERO
            );
        }
        let error = budget
            .reserve(Class::Api, Duration::from_secs(1))
            .unwrap_err();
        assert!(matches!(error, FetchError::Rejected(_)), "{error}");
        // The refusal did not push later requests further back: one slot
        // every 50 s.
        clock.advance(WINDOW / 6);
        assert_eq!(budget.reserve(Class::Api, LONG).unwrap(), Duration::ZERO);
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
        assert!(quota(0).is_none());
        assert_eq!(quota(1).unwrap().burst_size().get(), 1);
    }
}
