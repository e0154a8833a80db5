//! The HTTP client, driven on the thread that asks: each thread that sends
//! requests has a runtime of its own (current-thread) and its own reqwest
//! client, connections and pool, so a request and every chunk of its body
//! are sent and read where they are needed, with no thread to hand them to
//! and wake back. Pooled connections cannot be shared between threads: a
//! connection is polled only by the runtime that opened it, and that
//! runtime runs only while its thread waits for a request of its own.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, StatusCode};
use tokio::runtime::Runtime;
use url::Url;

/// How a thread's client is built; shared by every thread of one remote.
#[derive(Debug)]
pub(super) struct ClientSettings {
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Extra trusted certificate authorities (PEM), beside the system's.
    pub ca_pem: Option<Vec<u8>>,
}

/// What every thread's client of one remote is built from: the settings,
/// and the TLS configuration, built once.
struct Shared {
    settings: ClientSettings,
    tls: rustls::ClientConfig,
}

/// One remote's client: a handle on each thread's own.
#[derive(Clone)]
pub(super) struct Client {
    id: u64,
    shared: Arc<Shared>,
}

/// Clients a thread keeps, of as many remotes (a process has one remote;
/// tests make more).
const CLIENTS_A_THREAD: usize = 4;
/// An idle connection is not reused after this long: its server may have
/// closed it meanwhile, and a connection's close is noticed only while its
/// thread waits for a request. Servers keep connections longer (nginx 75 s,
/// the Hub's CDN 60 s and more).
const POOL_IDLE: Duration = Duration::from_secs(20);

struct ThreadClients {
    // Dropped before the runtime that polls their connections.
    clients: Vec<(u64, reqwest::Client)>,
    runtime: Option<Runtime>,
}

thread_local! {
    static THREAD: RefCell<ThreadClients> = const {
        RefCell::new(ThreadClients { clients: Vec::new(), runtime: None })
    };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Client {
    /// Checks the settings by building a client on this thread.
    pub fn new(settings: ClientSettings) -> Result<Client, String> {
        let tls = tls_config(settings.ca_pem.as_deref())?;
        let client = Client {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shared: Arc::new(Shared { settings, tls }),
        };
        build(&client.shared)?;
        Ok(client)
    }

    pub fn get(&self, url: Url) -> RequestBuilder {
        self.request(Method::GET, url)
    }

    pub fn head(&self, url: Url) -> RequestBuilder {
        self.request(Method::HEAD, url)
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.thread_client().request(method, url)
    }

    /// This thread's client for this remote, built at its first request.
    fn thread_client(&self) -> reqwest::Client {
        THREAD.with_borrow_mut(|thread| {
            if let Some((_, client)) = thread.clients.iter().find(|(id, _)| *id == self.id) {
                return client.clone();
            }
            // Checked in `new`: the same settings built a client then.
            let client = build(&self.shared).expect("the settings built a client before");
            if thread.clients.len() >= CLIENTS_A_THREAD {
                thread.clients.remove(0);
            }
            thread.clients.push((self.id, client.clone()));
            client
        })
    }
}

fn build(shared: &Shared) -> Result<reqwest::Client, String> {
    let settings = &shared.settings;
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.timeout)
        .connect_timeout(settings.connect_timeout)
        .pool_max_idle_per_host(4)
        .pool_idle_timeout(POOL_IDLE)
        .user_agent(concat!("matvisfs/", env!("CARGO_PKG_VERSION")))
        .tls_backend_preconfigured(shared.tls.clone())
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))
}

/// The TLS configuration reqwest builds for itself: the system's roots
/// (and `extra_pem`'s) through the platform's verifier, HTTP/2 or 1.1.
fn tls_config(extra_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let extra = match extra_pem {
        Some(pem) => CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cannot read the CA certificates: {e}"))?,
        None => Vec::new(),
    };
    if extra_pem.is_some() && extra.is_empty() {
        return Err("cannot read the CA certificates: no certificate in them".into());
    }
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Makes this thread's runtime, at its first request. It takes an epoll
/// and an eventfd, which a process out of descriptors cannot open.
fn runtime_ready() -> std::io::Result<()> {
    THREAD.with_borrow_mut(|thread| {
        if thread.runtime.is_none() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()?;
            thread.runtime = Some(runtime);
        }
        Ok(())
    })
}

/// Runs `future` to its end on this thread's runtime, made already.
fn block_on<T>(future: impl Future<Output = T>) -> T {
    THREAD.with_borrow_mut(|thread| {
        let runtime = thread
            .runtime
            .as_mut()
            .expect("made by the request sent first");
        runtime.block_on(future)
    })
}

/// Why a request got no answer.
pub(super) enum SendError {
    Http(reqwest::Error),
    /// This thread's runtime could not be made.
    NoRuntime(std::io::Error),
}

/// Sends `request` and waits for its answer's head.
pub(super) fn send(request: RequestBuilder) -> Result<Response, SendError> {
    runtime_ready().map_err(SendError::NoRuntime)?;
    // Sent inside the runtime: its time bound is a timer of the runtime's.
    block_on(async move { request.send().await })
        .map(|inner| Response { inner })
        .map_err(SendError::Http)
}

/// An answer whose body is read on the thread that sent it.
pub(super) struct Response {
    inner: reqwest::Response,
}

impl Response {
    pub fn status(&self) -> StatusCode {
        self.inner.status()
    }

    pub fn headers(&self) -> &HeaderMap {
        self.inner.headers()
    }

    /// The next piece of the body as it came off the connection, or `None`
    /// at its end.
    pub fn chunk(&mut self) -> Result<Option<bytes::Bytes>, reqwest::Error> {
        block_on(self.inner.chunk())
    }
}
