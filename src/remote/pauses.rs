//! What any server asks of its clients, honoured per host: after a `429`
//! (its `Retry-After`), or a `RateLimit` header saying that nothing is left
//! of a quota until a reset, requests of that class to that host wait until
//! then. A request that would wait longer than it may (`--retry-max-wait`)
//! fails at once instead, so nothing hangs.
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

#[derive(Default)]
pub struct Pauses {
    until: Mutex<HashMap<(HostKey, Class), Instant>>,
}

impl Pauses {
    /// Waits out a pause of requests of `class` to `url`'s host, if there
    /// is one; refuses when that would take more than `max_wait`.
    pub fn wait(&self, url: &Url, class: Class, max_wait: Duration) -> Result<(), FetchError> {
        let wait = self.remaining(url, class, Instant::now());
        if wait.is_zero() {
            return Ok(());
        }
        if wait > max_wait {
            return Err(FetchError::Rejected(format!(
                "{} asked for no requests for {} s more",
                url.host_str().unwrap_or("the server"),
                wait.as_secs().max(1)
            )));
        }
        tracing::debug!(%url, ?wait, "waiting as the server asked");
        std::thread::sleep(wait);
        Ok(())
    }

    fn remaining(&self, url: &Url, class: Class, now: Instant) -> Duration {
        let Some(host) = HostKey::of(url) else {
            return Duration::ZERO;
        };
        self.until
            .lock()
            .get(&(host, class))
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now))
    }

    /// Nothing of `class` goes to `url`'s host for `wait` (a longer pause
    /// already in place stays).
    pub fn pause(&self, url: &Url, class: Class, wait: Duration) {
        let Some(host) = HostKey::of(url) else {
            return;
        };
        let until = Instant::now() + wait;
        let mut pauses = self.until.lock();
        let entry = pauses.entry((host, class)).or_insert(until);
        if *entry < until {
            *entry = until;
        }
        tracing::warn!(
            host = url.host_str().unwrap_or(""),
            ?class,
            "the server asked to slow down: no request to it for {} s",
            wait.as_secs_f64().ceil()
        );
    }

    /// Reads a response's `RateLimit` headers: a quota with nothing left
    /// pauses the class until its reset.
    pub fn observe(&self, url: &Url, class: Class, headers: &HeaderMap) {
        if let Some(wait) = exhausted_for(headers) {
            self.pause(url, class, wait);
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
        let mirror = url("http://mirror:8080/a");
        pauses.pause(&mirror, Class::Resolve, Duration::from_secs(30));
        let now = Instant::now();
        assert!(
            pauses.remaining(&url("http://MIRROR:8080/b"), Class::Resolve, now)
                > Duration::from_secs(29)
        );
        assert_eq!(pauses.remaining(&mirror, Class::Api, now), Duration::ZERO);
        assert_eq!(
            pauses.remaining(&url("http://mirror:8081/a"), Class::Resolve, now),
            Duration::ZERO
        );
        assert!(
            pauses
                .wait(&mirror, Class::Resolve, Duration::from_secs(1))
                .is_err()
        );
        // A shorter pause does not cut a longer one short.
        pauses.pause(&mirror, Class::Resolve, Duration::from_secs(1));
        assert!(pauses.remaining(&mirror, Class::Resolve, now) > Duration::from_secs(29));
        assert!(
            pauses
                .wait(&url("http://other/"), Class::Resolve, Duration::ZERO)
                .is_ok()
        );
    }
}
