//! What any server asks of its clients, honoured per host: after a `429`
//! (its `Retry-After`), or a `RateLimit` header saying that nothing is left
//! of a quota until a reset, requests of that class to that host wait until
//! then. A request that would wait longer than it may (`--retry-max-wait`)
//! fails at once instead, so nothing hangs; and a pause asked for longer
//! than that lasts only that long (its requests failing meanwhile), so that
//! one answer of a server cannot keep a mount from it for a day.
//!
//! `RateLimit` is read in the forms of the IETF drafts
//! (draft-ietf-httpapi-ratelimit-headers): the structured one the Hugging
//! Face Hub sends, `"resolvers";r=0;t=37` (remaining `r`, seconds to the
//! reset `t`), the older `limit=500, remaining=0, reset=37`, and the
//! separate `RateLimit-Remaining` / `RateLimit-Reset` headers. Without a
//! reset, the window of the `RateLimit-Policy` (`...;q=3000;w=300`) says how
//! long.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reqwest::header::HeaderMap;
use url::Url;

use super::FetchError;
use super::budget::Class;

/// A host as requests reach it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostKey {
    host: String,
    port: u16,
}

impl HostKey {
    pub fn of(url: &Url) -> Option<HostKey> {
        Some(HostKey {
            host: url.host_str()?.to_ascii_lowercase(),
            port: url.port_or_known_default()?,
        })
    }
}

/// Requests of one class to one host held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pause {
    until: Instant,
    /// The server asked for longer than a request may wait: requests fail
    /// until then instead of waiting.
    refuse: bool,
}

#[derive(Default)]
pub struct Pauses {
    held: Mutex<HashMap<(HostKey, Class), Pause>>,
}

impl Pauses {
    /// Waits out a pause of requests of `class` to `url`'s host, if there
    /// is one; refuses when that would take more than `max_wait`.
    pub fn wait(&self, url: &Url, class: Class, max_wait: Duration) -> Result<(), FetchError> {
        let wait = self.due(url, class, max_wait, Instant::now())?;
        if !wait.is_zero() {
            tracing::debug!(%url, ?wait, "waiting as the server asked");
            std::thread::sleep(wait);
        }
        Ok(())
    }

    /// How long a request of `class` to `url` must wait at `now`, or why
    /// it may not.
    fn due(
        &self,
        url: &Url,
        class: Class,
        max_wait: Duration,
        now: Instant,
    ) -> Result<Duration, FetchError> {
        let Some(pause) = self.pause_of(url, class) else {
            return Ok(Duration::ZERO);
        };
        let wait = pause.until.saturating_duration_since(now);
        if wait.is_zero() {
            return Ok(wait);
        }
        if pause.refuse || wait > max_wait {
            return Err(FetchError::Rejected(format!(
                "{} asked for no requests for longer than we wait; it is asked again in {} s",
                url.host_str().unwrap_or("the server"),
                wait.as_secs_f64().ceil()
            )));
        }
        Ok(wait)
    }

    fn pause_of(&self, url: &Url, class: Class) -> Option<Pause> {
        self.held.lock().get(&(HostKey::of(url)?, class)).copied()
    }

    /// Nothing of `class` goes to `url`'s host for `asked`, or for
    /// `max_wait` when it asked for longer: then requests fail meanwhile,
    /// and the host is asked again after it. A longer pause already in
    /// place stays.
    pub fn pause(&self, url: &Url, class: Class, asked: Duration, max_wait: Duration) {
        self.pause_at(url, class, asked, max_wait, Instant::now());
    }

    fn pause_at(&self, url: &Url, class: Class, asked: Duration, max_wait: Duration, now: Instant) {
        let Some(host) = HostKey::of(url) else {
            return;
        };
        let refuse = asked > max_wait;
        let held = asked.min(max_wait);
        let new = Pause {
            until: now + held,
            refuse,
        };
        {
            let mut pauses = self.held.lock();
            let pause = pauses.entry((host, class)).or_insert(new);
            if pause.until < new.until {
                *pause = new;
            } else {
                pause.refuse |= refuse;
            }
        }
        let host = url.host_str().unwrap_or("");
        if refuse {
            tracing::warn!(
                host,
                ?class,
                "the server asked for no request to it for {} s, longer than --retry-max-wait: \
                 its requests fail for {} s, then it is asked again",
                asked.as_secs_f64().ceil(),
                held.as_secs_f64().ceil()
            );
        } else {
            tracing::warn!(
                host,
                ?class,
                "the server asked to slow down: no request to it for {} s",
                held.as_secs_f64().ceil()
            );
        }
    }

    /// Reads a response's `RateLimit` headers: a quota with nothing left
    /// pauses the class until its reset.
    pub fn observe(&self, url: &Url, class: Class, headers: &HeaderMap, max_wait: Duration) {
        if let Some(wait) = exhausted_for(headers) {
            self.pause(url, class, wait, max_wait);
        }
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// How long until a quota that has nothing left is reset, when the
/// headers say one has nothing left.
pub fn exhausted_for(headers: &HeaderMap) -> Option<Duration> {
    let window = header(headers, "ratelimit-policy").and_then(|p| parameter(p, &["w"]));
    let combined = header(headers, "ratelimit").map(|value| {
        // Several quotas may be listed, comma-separated (structured form),
        // or one quota's parameters may be (older form).
        let items: Vec<&str> = match value.contains("remaining=") {
            true => vec![value],
            false => value.split(',').collect(),
        };
        items
            .into_iter()
            .filter(|item| parameter(item, &["r", "remaining"]) == Some(0))
            .map(|item| parameter(item, &["t", "reset"]).or(window))
            .max()
    });
    let reset = match combined {
        Some(found) => found?,
        None => {
            let remaining = header(headers, "ratelimit-remaining")?
                .trim()
                .parse::<u64>();
            if remaining != Ok(0) {
                return None;
            }
            header(headers, "ratelimit-reset")
                .and_then(|t| t.trim().parse().ok())
                .or(window)
        }
    };
    // Exhausted without a reset: a second is the least a client can do.
    Some(Duration::from_secs(reset.unwrap_or(1).max(1)))
}

/// The value of the first of `names` among `key=value` parameters
/// separated by `;` or `,`.
fn parameter(text: &str, names: &[&str]) -> Option<u64> {
    text.split([';', ','])
        .filter_map(|part| part.split_once('='))
        .find(|(key, _)| names.contains(&key.trim().to_ascii_lowercase().as_str()))
        .and_then(|(_, value)| value.trim().trim_matches('"').parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn a_quota_with_nothing_left_pauses_until_its_reset() {
        let secs = |s| Some(Duration::from_secs(s));
        // As the Hugging Face Hub sends them.
        let hub = headers(&[
            ("ratelimit", "\"resolvers\";r=0;t=37"),
            (
                "ratelimit-policy",
                "\"fixed window\";\"resolvers\";q=3000;w=300",
            ),
        ]);
        assert_eq!(exhausted_for(&hub), secs(37));
        let left = headers(&[("ratelimit", "\"resolvers\";r=2999;t=274")]);
        assert_eq!(exhausted_for(&left), None);
        let two = headers(&[("ratelimit", "\"a\";r=5;t=9, \"b\";r=0;t=12")]);
        assert_eq!(exhausted_for(&two), secs(12));
        let older = headers(&[("ratelimit", "limit=500, remaining=0, reset=20")]);
        assert_eq!(exhausted_for(&older), secs(20));
        let separate = headers(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "4")]);
        assert_eq!(exhausted_for(&separate), secs(4));
        let no_reset = headers(&[
            ("ratelimit", "\"api\";r=0"),
            ("ratelimit-policy", "\"api\";q=500;w=300"),
        ]);
        assert_eq!(exhausted_for(&no_reset), secs(300));
        for nothing in [
            headers(&[]),
            headers(&[("ratelimit", "garbage")]),
            headers(&[("ratelimit-policy", "\"api\";q=500;w=300")]),
            headers(&[("ratelimit-remaining", "3")]),
        ] {
            assert_eq!(exhausted_for(&nothing), None, "{nothing:?}");
        }
    }

    #[test]
    fn a_pause_holds_one_host_and_class_and_refuses_long_waits() {
        let pauses = Pauses::default();
        let url = |u: &str| Url::parse(u).unwrap();
        let secs = Duration::from_secs;
        let mirror = url("http://mirror:8080/a");
        let now = Instant::now();
        pauses.pause_at(&mirror, Class::Resolve, secs(30), secs(60), now);
        let due = |u: &Url, class, max_wait, at| pauses.due(u, class, max_wait, at);
        assert_eq!(
            due(&url("http://MIRROR:8080/b"), Class::Resolve, secs(60), now).unwrap(),
            secs(30)
        );
        assert_eq!(due(&mirror, Class::Api, secs(60), now).unwrap(), secs(0));
        let other_port = url("http://mirror:8081/a");
        assert_eq!(
            due(&other_port, Class::Resolve, secs(60), now).unwrap(),
            secs(0)
        );
        // A request that may not wait that long fails at once.
        assert!(due(&mirror, Class::Resolve, secs(1), now).is_err());
        // A shorter pause does not cut a longer one short.
        pauses.pause_at(&mirror, Class::Resolve, secs(1), secs(60), now);
        assert_eq!(
            due(&mirror, Class::Resolve, secs(60), now).unwrap(),
            secs(30)
        );
        assert_eq!(
            due(&mirror, Class::Resolve, secs(60), now + secs(31)).unwrap(),
            secs(0)
        );
        assert!(
            pauses
                .wait(&url("http://other/"), Class::Resolve, Duration::ZERO)
                .is_ok()
        );
    }

    #[test]
    fn a_pause_asked_for_longer_than_the_longest_wait_ends_after_that_wait() {
        let pauses = Pauses::default();
        let mirror = Url::parse("http://mirror:8080/a").unwrap();
        let secs = Duration::from_secs;
        let now = Instant::now();
        // `Retry-After: 100000` on one texture, with --retry-max-wait 60.
        pauses.pause_at(&mirror, Class::Resolve, secs(100_000), secs(60), now);
        // Meanwhile requests fail at once, even those that could wait out
        // what is left of the minute: the server asked for far longer.
        for at in [now, now + secs(59)] {
            assert!(pauses.due(&mirror, Class::Resolve, secs(60), at).is_err());
        }
        // After the longest wait the host is asked again.
        assert_eq!(
            pauses
                .due(&mirror, Class::Resolve, secs(60), now + secs(61))
                .unwrap(),
            secs(0)
        );
    }
}
