//! A small HTTP server that behaves like the Hugging Face resolve endpoint
//! for a directory laid out as `<root>/<revision>/<path>`:
//!
//! - `GET|HEAD /resolve/<rev>/<path>`: small files answer 200 with a
//!   content ETag (304 on `If-None-Match`, or on `If-Modified-Since`);
//!   textures (`.png`, `.ktx2`), and JSON documents above a size when asked
//!   to, answer 302 to `/cdn/<rev>/<path>?...` with `X-Linked-Etag` (the
//!   sha256), `X-Linked-Size` and `X-Repo-Commit`;
//! - `/cdn/...` serves the bytes with `Range` (206) support;
//! - the same resolve endpoint under the Hub's own layout,
//!   `/datasets/<owner>/<name>/resolve/<rev>/<path>`, and the Hub API's refs
//!   and paginated tree listing (see `hub`);
//! - every request is logged, and faults can be injected per path.
//!
//! The tests and benchmarks use it as the server they can count requests on
//! and break at will.

pub(crate) mod files;
mod hub;
pub(crate) mod message;
mod respond;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

/// Which validators small files carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validators {
    ETagAndDate,
    DateOnly,
    None,
}

#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Textures answer with a redirect to the CDN path, as LFS files do.
    pub lfs_redirects: bool,
    pub validators: Validators,
    /// Where redirects point (`http://other-host:port`): another server's
    /// `/cdn/` path instead of this one's.
    pub cdn_base: Option<String>,
    /// Answer `Range` requests with the whole file, as some servers do.
    pub ignore_range: bool,
    /// Serve the Hub API (`/api/datasets/<owner>/<name>/...`); else 404.
    pub hub_api: bool,
    /// Entries per page of the Hub's tree listing.
    pub tree_page_size: usize,
    /// Name the commit each revision resolves to (`X-Repo-Commit`), and
    /// resolve revisions named by it, as the Hub does; off: a plain mirror.
    pub commits: bool,
    /// What the tree listing says instead of the truth, for these paths:
    /// (sha256 hex, size).
    pub tree_lies: BTreeMap<String, (String, u64)>,
    /// A tree listing whose pages do not end.
    pub tree_pages: TreePages,
    /// Redirects name the bytes (`?sha256=`), and the CDN serves the bytes
    /// a redirect named even after the file changed, as the Hub's CDN
    /// keeps every object; off: the CDN serves the file as it is now.
    pub cdn_keeps_objects: bool,
    /// JSON documents (catalogs, MaterialX maps) of at least this many
    /// bytes are kept in LFS, as the Hub keeps files over 10 MB: `resolve`
    /// answers them with a redirect to the CDN like a texture, whatever a
    /// request's validators. `None`: every JSON document is a git blob.
    pub lfs_json_from: Option<u64>,
}

/// How the tree listing's pages end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TreePages {
    /// As the Hub does: a next link while entries remain.
    #[default]
    Honest,
    /// Every page links to one more, each padded with about this many
    /// bytes of entries outside the asked directory.
    Endless { padding: usize },
    /// Every page's next link is the page itself.
    LoopToSelf,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            lfs_redirects: true,
            validators: Validators::ETagAndDate,
            cdn_base: None,
            ignore_range: false,
            hub_api: true,
            tree_page_size: 1000,
            commits: true,
            tree_lies: BTreeMap::new(),
            tree_pages: TreePages::Honest,
            cdn_keeps_objects: false,
            lfs_json_from: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    /// `<rev>/<path>` for the resolve endpoint, `cdn/<rev>/<path>` for the CDN.
    pub path: String,
    pub status: u16,
    /// `If-None-Match` or `If-Modified-Since` was sent.
    pub conditional: bool,
    pub range: bool,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status (and `Retry-After` seconds when given).
    Status { code: u16, retry_after: Option<u64> },
    /// Read the request and never answer.
    Hang,
    /// Send the headers and half the body, then never send more.
    StallBody,
    /// Send the headers and half the body, then reset the connection.
    ResetBody,
    /// Send the headers (full length) and half the body, then close.
    ShortBody,
    /// Answer 200 with these bytes instead of the file.
    Replace(Vec<u8>),
    /// Send more bytes than Content-Length says, keeping the connection.
    LongBody,
    /// Send the body one byte at a time, this far apart.
    Trickle(Duration),
    /// Send the body chunked, without any length.
    Chunked,
    /// Redirect to the very same URL.
    RedirectLoop,
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Answer normally, with these headers too (e.g. `RateLimit`).
    Headers(Vec<(String, String)>),
}

#[derive(Debug, Clone)]
pub struct FaultRule {
    /// Applies to requests whose logged path contains this (empty: all).
    pub path_contains: String,
    pub fault: Fault,
    /// How many requests it applies to (`None`: until cleared).
    pub times: Option<u32>,
}

impl FaultRule {
    pub fn new(path_contains: &str, fault: Fault) -> Self {
        FaultRule {
            path_contains: path_contains.into(),
            fault,
            times: None,
        }
    }

    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
}

pub(crate) struct Shared {
    root: PathBuf,
    options: Mutex<ServerOptions>,
    log: Mutex<Vec<LoggedRequest>>,
    /// Requests read and not yet logged (their answers being built).
    answering: AtomicU64,
    /// Requests logged since the start, whatever was cleared since.
    logged: AtomicU64,
    faults: Mutex<Vec<FaultRule>>,
    stopping: AtomicBool,
    /// Commits made per revision since its manifest was written.
    commits: Mutex<HashMap<String, u64>>,
    /// The bytes redirects named, by quoted sha256 (`cdn_keeps_objects`).
    objects: Mutex<HashMap<String, Vec<u8>>>,
    /// Open connections, to cut them when the server stops.
    connections: Mutex<HashMap<u64, TcpStream>>,
    next_connection: AtomicU64,
}

impl Shared {
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn take_fault(&self, path: &str) -> Option<Fault> {
        let mut faults = self.faults.lock();
        let index = faults
            .iter()
            .position(|r| path.contains(&r.path_contains) && r.times != Some(0))?;
        let rule = &mut faults[index];
        let fault = rule.fault.clone();
        if let Some(times) = rule.times.as_mut() {
            *times -= 1;
        }
        Some(fault)
    }
}

pub struct DevServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    acceptor: Option<JoinHandle<()>>,
}

impl DevServer {
    /// Serves `root` on a free loopback port.
    pub fn start(root: impl Into<PathBuf>) -> io::Result<DevServer> {
        Self::start_with(root, ServerOptions::default())
    }

    pub fn start_with(root: impl Into<PathBuf>, options: ServerOptions) -> io::Result<DevServer> {
        Self::launch(root.into(), options, None)
    }

    /// Serves over HTTPS with this certificate chain and key (PEM).
    pub fn start_tls(
        root: impl Into<PathBuf>,
        options: ServerOptions,
        cert_chain_pem: &[u8],
        key_pem: &[u8],
    ) -> io::Result<DevServer> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let invalid =
            |e: &dyn std::fmt::Display| io::Error::new(io::ErrorKind::InvalidInput, e.to_string());
        let certs = CertificateDer::pem_slice_iter(cert_chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(&e))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| invalid(&e))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(&e))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| invalid(&e))?;
        Self::launch(root.into(), options, Some(Arc::new(config)))
    }

    fn launch(
        root: PathBuf,
        options: ServerOptions,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<DevServer> {
        let shared = Arc::new(Shared {
            root,
            options: Mutex::new(options),
            log: Mutex::new(Vec::new()),
            answering: AtomicU64::new(0),
            logged: AtomicU64::new(0),
            faults: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            commits: Mutex::new(HashMap::new()),
            objects: Mutex::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let acceptor = Some(spawn_acceptor(listener, shared.clone(), tls.clone()));
        Ok(DevServer {
            shared,
            addr,
            tls,
            acceptor,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A base URL in the Hub's own layout, for dataset `repo`
    /// (`owner/name`): the Hub API is found next to it.
    pub fn hub_base_url(&self, repo: &str) -> String {
        format!("http://{}/datasets/{repo}/resolve", self.addr)
    }

    /// The value for `--base-url` / `MAT_VIS_HF_BASE`.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}/resolve", self.addr)
    }

    /// A new commit of `revision`, as the Hub makes for any upload: its
    /// commit moves even when its manifest did not change.
    pub fn commit(&self, revision: &str) {
        *self
            .shared
            .commits
            .lock()
            .entry(revision.to_string())
            .or_default() += 1;
    }

    /// The commit `revision` resolves to (`None` for a plain mirror).
    pub fn commit_of(&self, revision: &str) -> Option<String> {
        files::commit_of(&self.shared, revision)
    }

    pub fn set_options(&self, options: ServerOptions) {
        *self.shared.options.lock() = options;
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.log.lock().clone()
    }

    pub fn clear_requests(&self) {
        self.shared.log.lock().clear();
    }

    /// Waits until every request read is in the log and none has come for
    /// a while. A request is logged once its answer is built, which can
    /// take a while (a large page, a large file's digest), so one whose
    /// client gave up on it (a timeout, a killed process) may be logged
    /// after the test has moved on; tests call this before they clear or
    /// count the log after such requests. Panics if the server is still
    /// busy after 30 s.
    pub fn settle(&self) {
        const QUIET: Duration = Duration::from_millis(200);
        const LIMIT: Duration = Duration::from_secs(30);
        let began = std::time::Instant::now();
        let mut last = (self.shared.logged.load(Ordering::SeqCst), began);
        loop {
            let logged = self.shared.logged.load(Ordering::SeqCst);
            let now = std::time::Instant::now();
            if logged != last.0 {
                last = (logged, now);
            } else if self.shared.answering.load(Ordering::SeqCst) == 0
                && now.duration_since(last.1) >= QUIET
            {
                return;
            }
            assert!(
                now.duration_since(began) < LIMIT,
                "the server still answers requests after {LIMIT:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Requests with `method` whose logged path ends with `suffix`.
    pub fn count(&self, method: &str, suffix: &str) -> usize {
        self.shared
            .log
            .lock()
            .iter()
            .filter(|r| r.method == method && r.path.ends_with(suffix))
            .count()
    }

    pub fn inject(&self, rule: FaultRule) {
        self.shared.faults.lock().push(rule);
    }

    pub fn clear_faults(&self) {
        self.shared.faults.lock().clear();
    }

    /// Stops listening and drops every connection: the server is down.
    pub fn stop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            // Wake the blocking accept.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let _ = acceptor.join();
        }
        for (_, connection) in self.shared.connections.lock().drain() {
            let _ = connection.shutdown(Shutdown::Both);
        }
    }

    /// Listens again on the same port after [`DevServer::stop`].
    pub fn restart(&mut self) -> io::Result<()> {
        if self.acceptor.is_some() {
            return Ok(());
        }
        let listener = TcpListener::bind(self.addr)?;
        self.shared.stopping.store(false, Ordering::SeqCst);
        self.acceptor = Some(spawn_acceptor(
            listener,
            self.shared.clone(),
            self.tls.clone(),
        ));
        Ok(())
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_acceptor(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("devserver".into())
        .spawn(move || {
            for stream in listener.incoming() {
                if shared.stopping() {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
                if let Ok(clone) = stream.try_clone() {
                    shared.connections.lock().insert(id, clone);
                }
                let shared = shared.clone();
                let tls = tls.clone();
                let _ = std::thread::Builder::new()
                    .name("devserver-conn".into())
                    .spawn(move || {
                        match tls.map(rustls::ServerConnection::new) {
                            None => respond::serve_connection(&mut &stream, &stream, &shared),
                            Some(Ok(session)) => {
                                let mut secure = rustls::StreamOwned::new(session, &stream);
                                respond::serve_connection(&mut secure, &stream, &shared);
                            }
                            Some(Err(_)) => {}
                        }
                        // Drop the clone first so that closing `stream` really
                        // closes the socket (and a zero linger resets it).
                        shared.connections.lock().remove(&id);
                        drop(stream);
                    });
            }
        })
        .expect("spawning a thread")
}
