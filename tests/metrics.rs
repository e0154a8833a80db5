//! `--metrics`: the Prometheus exposition at /metrics, parsed by the
//! Prometheus client library (`prometheus_client` from PyPI, in a venv
//! kept under target/), holds the values `stats.json` holds at the same
//! moment, and the latency histograms count what happened; an address that
//! cannot be bound fails the mount before it is reported ready.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BIN, Mount, Served, background_mount, is_mounted, read, wait_for};
use serde_json::Value;

const PARSER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/metrics/parse.py");

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET http://`address``path`: the status and the body.
fn get(address: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// Samples as the Prometheus client library parses them:
/// (name, labels) → value.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn parse(text: &str) -> Samples {
    let python = common::python::venv_with(
        "metrics-venv",
        &["prometheus_client"],
        &["prometheus_client"],
    )
    .unwrap_or_else(|why| panic!("the Prometheus client library is needed: {why}"));
    let mut child = Command::new(python)
        .arg(PARSER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let samples: Vec<(String, BTreeMap<String, String>, f64)> =
        serde_json::from_slice(&output.stdout).unwrap();
    samples
        .into_iter()
        .map(|(name, labels, value)| ((name, labels), value))
        .collect()
}

fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples.get(&(name.to_string(), labels)).copied()
}

fn number(doc: &Value, pointer: &str) -> f64 {
    doc.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} missing from {doc}")) as f64
}

#[test]
fn the_exposition_holds_what_stats_json_holds() {
    let served = Served::small();
    let address = format!("127.0.0.1:{}", free_port());
    let mount = Mount::builder(&served.base_url())
        .arg("--metrics")
        .arg(&address)
        .start();
    let textures: Vec<(String, Vec<u8>)> = served
        .release
        .textures()
        .take(4)
        .map(|(path, bytes)| (path.to_string(), bytes.to_vec()))
        .collect();
    // Each read twice: downloads, then cache hits.
    for _ in 0..2 {
        for (path, bytes) in &textures {
            assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
        }
    }
    wait_for(
        "the downloads to be durable",
        Duration::from_secs(10),
        || mount.stats()["cache"]["pending"] == 0,
    );

    // The two read back to back, nothing read in between.
    let stats = mount.stats();
    let (status, text) = get(&address, "/metrics");
    assert_eq!(status, 200, "{text}");
    let samples = parse(&text);

    let requests = stats["requests"].as_object().unwrap();
    assert!(requests.contains_key("texture"), "{stats}");
    for (kind, outcomes) in requests {
        for (outcome, n) in outcomes.as_object().unwrap() {
            assert_eq!(
                value(
                    &samples,
                    "matvisfs_requests_total",
                    &[("kind", kind), ("outcome", outcome)]
                ),
                Some(n.as_u64().unwrap() as f64),
                "requests {kind} {outcome}"
            );
        }
    }
    let requests_exposed = samples
        .keys()
        .filter(|(name, _)| name == "matvisfs_requests_total")
        .count();
    let requests_counted: usize = requests
        .values()
        .map(|o| o.as_object().unwrap().len())
        .sum();
    assert_eq!(requests_exposed, requests_counted);

    for (name, pointer) in [
        ("matvisfs_downloaded_bytes_total", "/bytes/downloaded"),
        ("matvisfs_served_bytes_total", "/bytes/served"),
        ("matvisfs_cache_hits_total", "/cache/hits"),
        ("matvisfs_cache_misses_total", "/cache/misses"),
        ("matvisfs_cache_dedupe_hits_total", "/cache/dedupe_hits"),
        ("matvisfs_cache_opens_fetched_total", "/cache/opens_fetched"),
        ("matvisfs_cache_evictions_total", "/cache/evictions"),
        ("matvisfs_cache_files", "/cache/files"),
        ("matvisfs_cache_bytes", "/cache/bytes"),
        ("matvisfs_cache_pending", "/cache/pending"),
        ("matvisfs_cache_backlog_waits_total", "/cache/backlog_waits"),
        ("matvisfs_cache_cap_bytes", "/cache/cap"),
        ("matvisfs_fuse_ring_requests_total", "/fuse/ring_requests"),
        ("matvisfs_fuse_ring_entries", "/fuse/ring_entries"),
        (
            "matvisfs_opens_waiting_for_release",
            "/opens/waiting_for_release",
        ),
        (
            "matvisfs_opens_waited_for_release_total",
            "/opens/waited_for_release",
        ),
        ("matvisfs_session_started", "/session/started_unix"),
    ] {
        assert_eq!(
            value(&samples, name, &[]),
            Some(number(&stats, pointer)),
            "{name}"
        );
    }
    let texture_bytes: usize = textures.iter().map(|(_, b)| b.len()).sum();
    // Manifest and catalogs are downloaded too.
    assert!(number(&stats, "/bytes/downloaded") > texture_bytes as f64);
    assert_eq!(number(&stats, "/cache/misses"), textures.len() as f64);
    assert!(number(&stats, "/cache/hits") >= textures.len() as f64);

    for (tag, report) in stats["tags"].as_object().unwrap() {
        let outcome = report["revalidation"].as_str().unwrap();
        assert_eq!(
            value(
                &samples,
                "matvisfs_tag_revalidation",
                &[("tag", tag), ("outcome", outcome)]
            ),
            Some(1.0),
            "{tag}"
        );
        assert_eq!(
            value(
                &samples,
                "matvisfs_tag_changes_found_total",
                &[("tag", tag)]
            ),
            Some(number(report, "/changes_found"))
        );
        assert_eq!(
            value(&samples, "matvisfs_tag_generation", &[("tag", tag)]),
            Some(number(report, "/generation"))
        );
    }

    // One observation per request of a kind, and per kernel operation.
    for kind in ["manifest", "texture"] {
        let counted: u64 = requests[kind]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum();
        assert_eq!(
            value(
                &samples,
                "matvisfs_http_request_duration_seconds_count",
                &[("kind", kind)]
            ),
            Some(counted as f64),
            "{kind}"
        );
    }
    for opcode in ["lookup", "open", "read"] {
        let count = value(
            &samples,
            "matvisfs_fuse_operation_duration_seconds_count",
            &[("opcode", opcode)],
        )
        .unwrap_or(0.0);
        assert!(count > 0.0, "no {opcode} timed:\n{text}");
        let infinite = value(
            &samples,
            "matvisfs_fuse_operation_duration_seconds_bucket",
            &[("opcode", opcode), ("le", "+Inf")],
        );
        assert_eq!(infinite, Some(count), "{opcode}");
    }

    assert_eq!(get(&address, "/").0, 404);
}

#[test]
fn an_address_that_cannot_be_bound_fails_the_mount_naming_it() {
    let served = Served::small();
    let dir = tempfile::tempdir().unwrap();
    let mountpoint = dir.path().join("mnt");
    std::fs::create_dir(&mountpoint).unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let _unmounts = common::Unmounts::new(&mountpoint);
    let output = background_mount(&mountpoint, &served.base_url(), &dir.path().join("cache"))
        .arg("--metrics")
        .arg(&address)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&address), "{stderr}");
    assert!(!is_mounted(&mountpoint));
    wait_for(
        "the background process to be gone",
        Duration::from_secs(10),
        || common::serving_processes(&mountpoint).is_empty(),
    );

    let output = Command::new(BIN)
        .arg("mount")
        .arg(&mountpoint)
        .args(["--metrics", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "a malformed address is a usage error"
    );
}
