//! `--metrics ADDR`: the session's statistics in the Prometheus text format
//! at `http://ADDR/metrics`. Every counter and gauge is read at the scrape
//! from the very document `.matvisfs/stats.json` shows (one source, nothing
//! to drift); the latency histograms are the [`Latency`] the session keeps
//! once metrics are on.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use serde_json::Value;

use crate::stats::{Latency, Stats};

/// Where `/metrics` is served: `PORT` alone is loopback; any other
/// interface must be named (`0.0.0.0:9100`, `[::]:9100`).
pub fn parse_address(text: &str) -> Result<String, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(format!("127.0.0.1:{port}"));
    }
    if text
        .rsplit_once(':')
        .is_none_or(|(_, port)| port.parse::<u16>().is_err())
    {
        return Err(format!("{text:?} is not PORT or HOST:PORT"));
    }
    Ok(text.to_string())
}

/// The statistics document of the session, rendered on demand.
pub type Source = Box<dyn Fn() -> Value + Send + Sync>;

/// A bound listener, not answering yet: binding comes before the mount is
/// reported ready, so that an address in use fails the mount.
pub struct Exporter {
    server: tiny_http::Server,
    address: SocketAddr,
    latency: Latency,
}

impl Exporter {
    /// Binds `address` and starts keeping the session's latency histograms.
    pub fn bind(address: &str, stats: &Stats) -> Result<Exporter, String> {
        let fail = |why: String| format!("cannot serve metrics at {address}: {why}");
        let resolved = address
            .to_socket_addrs()
            .map_err(|e| fail(e.to_string()))?
            .next()
            .ok_or_else(|| fail("the name resolves to no address".into()))?;
        let server = tiny_http::Server::http(resolved).map_err(|e| fail(e.to_string()))?;
        let address = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| fail("not an IP address".into()))?;
        Ok(Exporter {
            server,
            address,
            latency: stats.keep_latency().clone(),
        })
    }

    /// Answers scrapes on a thread of its own for the rest of the process.
    pub fn serve(self, source: Source) -> Result<(), String> {
        let registry = registry(source, self.latency);
        let address = self.address;
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for request in self.server.incoming_requests() {
                    let response = answer(&registry, &request);
                    if let Err(e) = request.respond(response) {
                        tracing::debug!("a metrics scrape went away: {e}");
                    }
                }
            })
            .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
        tracing::info!(%address, "metrics served at http://{address}/metrics");
        Ok(())
    }
}

type Response = tiny_http::Response<std::io::Cursor<Vec<u8>>>;

fn answer(registry: &Registry, request: &tiny_http::Request) -> Response {
    let path = request.url().split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return tiny_http::Response::from_string("only /metrics is here\n").with_status_code(404);
    }
    if !matches!(
        request.method(),
        tiny_http::Method::Get | tiny_http::Method::Head
    ) {
        return tiny_http::Response::from_string("GET only\n").with_status_code(405);
    }
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut body, registry) {
        return tiny_http::Response::from_string(format!("cannot encode the metrics: {e}\n"))
            .with_status_code(500);
    }
    let content_type = tiny_http::Header::from_bytes(
        "Content-Type",
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
    )
    .expect("a valid header");
    tiny_http::Response::from_string(body).with_header(content_type)
}

fn registry(source: Source, latency: Latency) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StatsCollector(Arc::new(source))));
    registry.register_with_unit(
        "matvisfs_http_request_duration",
        "Time of one HTTP request (all its attempts and its body), by kind",
        Unit::Seconds,
        latency.http,
    );
    registry.register_with_unit(
        "matvisfs_fuse_operation_duration",
        "Time from a kernel request to its reply, by operation",
        Unit::Seconds,
        latency.fuse,
    );
    registry
}

/// The counters and gauges of `stats.json`, read at each scrape.
struct StatsCollector(Arc<Source>);

impl std::fmt::Debug for StatsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatsCollector")
    }
}

/// A number of the document (absent: 0).
fn number(doc: &Value, pointer: &str) -> u64 {
    doc.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

/// Counters and gauges with their labels, as the encoder wants them.
struct Family<'a> {
    name: &'a str,
    help: &'a str,
    unit: Option<Unit>,
    kind: MetricType,
    samples: Vec<(Vec<(&'a str, String)>, u64)>,
}

impl<'a> Family<'a> {
    fn new(name: &'a str, help: &'a str, kind: MetricType) -> Self {
        Family {
            name,
            help,
            unit: None,
            kind,
            samples: Vec::new(),
        }
    }

    fn bytes(mut self) -> Self {
        self.unit = Some(Unit::Bytes);
        self
    }

    fn one(mut self, value: u64) -> Self {
        self.samples.push((Vec::new(), value));
        self
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family =
            encoder.encode_descriptor(self.name, self.help, self.unit.as_ref(), self.kind)?;
        for (labels, value) in &self.samples {
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let metric = family.encode_family(&labels)?;
            match self.kind {
                MetricType::Counter => ConstCounter::new(*value).encode(metric)?,
                _ => ConstGauge::new(*value as i64).encode(metric)?,
            }
        }
        Ok(())
    }
}

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let doc = (self.0)();
        for family in families(&doc) {
            family.encode(&mut encoder)?;
        }
        Ok(())
    }
}

/// Every metric the document gives, named as README "Metrics" lists them.
fn families(doc: &Value) -> Vec<Family<'static>> {
    use MetricType::{Counter, Gauge};
    let mut requests = Family::new(
        "matvisfs_requests",
        "HTTP requests by kind and outcome (stats.json requests)",
        Counter,
    );
    for (kind, outcomes) in doc["requests"].as_object().into_iter().flatten() {
        for (outcome, n) in outcomes.as_object().into_iter().flatten() {
            requests.samples.push((
                vec![("kind", kind.clone()), ("outcome", outcome.clone())],
                n.as_u64().unwrap_or(0),
            ));
        }
    }
    let mut revalidation = Family::new(
        "matvisfs_tag_revalidation",
        "1 for each tag's revalidation outcome this session (stats.json tags.*.revalidation)",
        Gauge,
    );
    let mut changes = Family::new(
        "matvisfs_tag_changes_found",
        "Changes found on the server this session (stats.json tags.*.changes_found)",
        Counter,
    );
    let mut generation = Family::new(
        "matvisfs_tag_generation",
        "Each tag's generation (stats.json tags.*.generation)",
        Gauge,
    );
    for (tag, report) in doc["tags"].as_object().into_iter().flatten() {
        let outcome = report["revalidation"].as_str().unwrap_or("unknown");
        revalidation.samples.push((
            vec![("tag", tag.clone()), ("outcome", outcome.to_string())],
            1,
        ));
        changes
            .samples
            .push((vec![("tag", tag.clone())], number(report, "/changes_found")));
        generation
            .samples
            .push((vec![("tag", tag.clone())], number(report, "/generation")));
    }
    let counter = |name, help, pointer| Family::new(name, help, Counter).one(number(doc, pointer));
    let gauge = |name, help, pointer| Family::new(name, help, Gauge).one(number(doc, pointer));
    vec![
        requests,
        counter(
            "matvisfs_downloaded",
            "Bytes received from the server (stats.json bytes.downloaded)",
            "/bytes/downloaded",
        )
        .bytes(),
        counter(
            "matvisfs_served",
            "Bytes read from the mount (stats.json bytes.served)",
            "/bytes/served",
        )
        .bytes(),
        counter(
            "matvisfs_cache_hits",
            "Opens served from the cache (stats.json cache.hits)",
            "/cache/hits",
        ),
        counter(
            "matvisfs_cache_misses",
            "Downloads of texture content (stats.json cache.misses)",
            "/cache/misses",
        ),
        counter(
            "matvisfs_cache_dedupe_hits",
            "Files served from bytes cached for another path (stats.json cache.dedupe_hits)",
            "/cache/dedupe_hits",
        ),
        counter(
            "matvisfs_cache_opens_fetched",
            "Opens answered once their file was downloaded for them (stats.json cache.opens_fetched)",
            "/cache/opens_fetched",
        ),
        counter(
            "matvisfs_cache_evictions",
            "Files evicted to stay under the cap (stats.json cache.evictions)",
            "/cache/evictions",
        ),
        gauge(
            "matvisfs_cache_files",
            "Texture files in the store (stats.json cache.files)",
            "/cache/files",
        ),
        gauge(
            "matvisfs_cache",
            "Bytes of texture content in the store (stats.json cache.bytes)",
            "/cache/bytes",
        )
        .bytes(),
        gauge(
            "matvisfs_cache_pending",
            "Downloads served but not yet durable (stats.json cache.pending)",
            "/cache/pending",
        ),
        counter(
            "matvisfs_cache_backlog_waits",
            "Downloads that waited for the cache's writer to catch up (stats.json cache.backlog_waits)",
            "/cache/backlog_waits",
        ),
        gauge(
            "matvisfs_cache_cap",
            "Most bytes of texture content the store keeps, 0: no limit (stats.json cache.cap)",
            "/cache/cap",
        )
        .bytes(),
        counter(
            "matvisfs_fuse_ring_requests",
            "Kernel requests answered over FUSE's io_uring rings (stats.json fuse.ring_requests)",
            "/fuse/ring_requests",
        ),
        gauge(
            "matvisfs_fuse_ring_entries",
            "Entries registered on FUSE's io_uring rings (stats.json fuse.ring_entries)",
            "/fuse/ring_entries",
        ),
        gauge(
            "matvisfs_opens_waiting_for_release",
            "Opens waiting now for the open files of another version of their file to close (stats.json opens.waiting_for_release)",
            "/opens/waiting_for_release",
        ),
        counter(
            "matvisfs_opens_waited_for_release",
            "Opens that waited for the open files of another version of their file to close (stats.json opens.waited_for_release)",
            "/opens/waited_for_release",
        ),
        gauge(
            "matvisfs_session_started",
            "Unix time the session started (stats.json session.started_unix)",
            "/session/started_unix",
        ),
        revalidation,
        changes,
        generation,
    ]
}

/// The exposition text of a document alone, for tests.
#[cfg(test)]
fn render(doc: Value) -> String {
    let registry = registry(Box::new(move || doc.clone()), Latency::default());
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_alone_is_loopback_and_other_interfaces_are_named() {
        assert_eq!(parse_address("9100").unwrap(), "127.0.0.1:9100");
        assert_eq!(parse_address("0.0.0.0:9100").unwrap(), "0.0.0.0:9100");
        assert_eq!(parse_address("[::1]:0").unwrap(), "[::1]:0");
        for bad in ["", "host", "host:", "host:99999", "1.2.3.4"] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_counter_of_the_document_is_exposed_with_its_labels() {
        let doc = serde_json::json!({
            "requests": {"texture": {"200": 3, "5xx": 1}, "manifest": {"304": 1}},
            "bytes": {"downloaded": 100, "served": 250},
            "cache": {"hits": 4, "misses": 3, "dedupe_hits": 1, "opens_fetched": 5, "evictions": 2,
                      "files": 7, "bytes": 900, "pending": 0, "backlog_waits": 6, "cap": 5000},
            "fuse": {"ring_requests": 12, "ring_entries": 288},
            "opens": {"waiting_for_release": 1, "waited_for_release": 3},
            "tags": {"v1": {"revalidation": "unchanged", "generation": 2, "changes_found": 1}},
            "session": {"started_unix": 1795250000},
        });
        let text = render(doc);
        for line in [
            "matvisfs_requests_total{kind=\"texture\",outcome=\"200\"} 3",
            "matvisfs_requests_total{kind=\"texture\",outcome=\"5xx\"} 1",
            "matvisfs_requests_total{kind=\"manifest\",outcome=\"304\"} 1",
            "matvisfs_downloaded_bytes_total 100",
            "matvisfs_served_bytes_total 250",
            "matvisfs_cache_hits_total 4",
            "matvisfs_cache_misses_total 3",
            "matvisfs_cache_dedupe_hits_total 1",
            "matvisfs_cache_opens_fetched_total 5",
            "matvisfs_cache_evictions_total 2",
            "matvisfs_cache_files 7",
            "matvisfs_cache_bytes 900",
            "matvisfs_cache_pending 0",
            "matvisfs_cache_backlog_waits_total 6",
            "matvisfs_cache_cap_bytes 5000",
            "matvisfs_fuse_ring_requests_total 12",
            "matvisfs_fuse_ring_entries 288",
            "matvisfs_opens_waiting_for_release 1",
            "matvisfs_opens_waited_for_release_total 3",
            "matvisfs_tag_revalidation{tag=\"v1\",outcome=\"unchanged\"} 1",
            "matvisfs_tag_changes_found_total{tag=\"v1\"} 1",
            "matvisfs_tag_generation{tag=\"v1\"} 2",
            "matvisfs_session_started 1795250000",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
