//! The test server behaves like the Hugging Face resolve endpoint, so that
//! what the other tests show holds against the real thing.

use matvisfs_sample::{Release, ReleaseSpec, sha256_hex};
use matvisfs_testkit::devserver::DevServer;
use reqwest::blocking::Client;
use reqwest::redirect::Policy;

const TAG: &str = "v2026.04.2";

/// A small release on disk and the server over it.
struct Served {
    _dir: tempfile::TempDir,
    server: DevServer,
    release: Release,
}

impl Served {
    fn small() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let release = Release::generate(&ReleaseSpec::small(TAG));
        release.write_to(dir.path()).unwrap();
        let server = DevServer::start(dir.path()).unwrap();
        Served {
            _dir: dir,
            server,
            release,
        }
    }

    fn base_url(&self) -> String {
        self.server.base_url()
    }
}

fn client() -> Client {
    Client::builder().redirect(Policy::none()).build().unwrap()
}

#[test]
fn textures_redirect_with_linked_headers_and_the_cdn_serves_ranges() {
    let served = Served::small();
    let path = "ambientcg/1k/Rock064/color.png";
    let bytes = &served.release.files[path];
    let url = format!("{}/{TAG}/{path}", served.base_url());
    let head = client().head(&url).send().unwrap();
    assert_eq!(head.status(), 302);
    let header = |name: &str| head.headers()[name].to_str().unwrap().to_string();
    assert_eq!(header("x-linked-size"), bytes.len().to_string());
    assert_eq!(
        header("x-linked-etag"),
        format!("\"{}\"", sha256_hex(bytes))
    );
    assert_eq!(header("x-repo-commit").len(), 40);
    assert_ne!(
        header("content-length"),
        bytes.len().to_string(),
        "a redirect's own length"
    );

    let cdn = format!("http://{}{}", served.server.addr(), header("location"));
    let ranged = client()
        .get(&cdn)
        .header("Range", "bytes=8-15")
        .send()
        .unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(
        ranged.headers()["content-range"],
        format!("bytes 8-15/{}", bytes.len()).as_str()
    );
    assert_eq!(ranged.bytes().unwrap().as_ref(), &bytes[8..16]);
    let whole = client().get(&cdn).send().unwrap();
    assert_eq!(whole.bytes().unwrap().as_ref(), bytes.as_slice());
}

#[test]
fn small_files_answer_304_to_their_etag_and_404_when_missing() {
    let served = Served::small();
    let url = format!("{}/{TAG}/release-manifest.json", served.base_url());
    let first = client().get(&url).send().unwrap();
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag.len(), 42, "a quoted 40-digit blob id: {etag}");
    let again = client()
        .get(&url)
        .header("If-None-Match", &etag)
        .send()
        .unwrap();
    assert_eq!(again.status(), 304);
    let missing = client()
        .get(format!("{}/{TAG}/nope.json", served.base_url()))
        .send()
        .unwrap();
    assert_eq!(missing.status(), 404);
    let escape = client()
        .get(format!("{}/{TAG}/..%2F..%2Fetc/passwd", served.base_url()))
        .send()
        .unwrap();
    assert_eq!(escape.status(), 404);
    let log = served.server.requests();
    assert_eq!(log.len(), 4);
    assert!(log[1].conditional && log[1].status == 304);
}

#[test]
fn json_documents_above_the_lfs_size_redirect_like_textures_even_when_conditional() {
    let served = Served::small();
    let catalog = "ambientcg.json";
    let bytes = &served.release.files[catalog];
    served
        .server
        .set_options(matvisfs_testkit::devserver::ServerOptions {
            lfs_json_from: Some(bytes.len() as u64),
            ..Default::default()
        });
    let url = format!("{}/{TAG}/{catalog}", served.base_url());
    let linked = format!("\"{}\"", sha256_hex(bytes));
    // Asked with its own linked ETag, the Hub redirects all the same: the
    // client compares.
    for conditional in [false, true] {
        let mut request = client().get(&url);
        if conditional {
            request = request.header("If-None-Match", &linked);
        }
        let response = request.send().unwrap();
        assert_eq!(response.status(), 302);
        assert_eq!(response.headers()["x-linked-etag"], linked.as_str());
        assert_eq!(
            response.headers()["x-linked-size"],
            bytes.len().to_string().as_str()
        );
        assert!(!response.headers().contains_key("etag"));
    }
    // A smaller document stays a git blob.
    let manifest = format!("{}/{TAG}/release-manifest.json", served.base_url());
    assert_eq!(client().get(&manifest).send().unwrap().status(), 200);
}

#[test]
fn the_dataset_info_and_a_revisions_read_token_answer_as_the_hub_does() {
    let served = Served::small();
    let api = format!(
        "http://{}/api/datasets/gerchowl/mat-vis",
        served.server.addr()
    );
    let get_json = |url: &str| -> serde_json::Value {
        serde_json::from_slice(&client().get(url).send().unwrap().bytes().unwrap()).unwrap()
    };
    let info = get_json(&api);
    let refs = get_json(&format!("{api}/refs"));
    assert_eq!(info["id"], "gerchowl/mat-vis");
    assert_eq!(info["author"], "gerchowl");
    assert_eq!(info["sha"], refs["branches"][0]["targetCommit"]);
    assert_eq!(info["private"], false);
    let modified = info["lastModified"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(modified).is_ok(),
        "{modified}"
    );
    assert_eq!(
        served.server.requests()[0].path,
        "api/info",
        "logged as the dataset's info"
    );

    let token = get_json(&format!("{api}/xet-read-token/{TAG}"));
    assert!(token["casUrl"].as_str().unwrap().starts_with("http://"));
    assert!(!token["accessToken"].as_str().unwrap().is_empty());
    assert!(token["exp"].as_u64().unwrap() > 1_700_000_000);
    let unknown = client()
        .get(format!("{api}/xet-read-token/v1999.01.0"))
        .send()
        .unwrap();
    assert_eq!(unknown.status(), 404, "an unknown revision has no token");

    served
        .server
        .set_options(matvisfs_testkit::devserver::ServerOptions {
            hub_api: false,
            ..Default::default()
        });
    assert_eq!(client().get(&api).send().unwrap().status(), 404);
}

/// A request whose answer is slow to build is logged only once built: one
/// its client gave up on reaches the log after the client moved on, and
/// `settle` waits for it.
#[test]
fn settle_waits_for_a_request_given_up_on_while_its_answer_was_built() {
    use matvisfs_testkit::devserver::{ServerOptions, TreePages};
    use std::io::Write;
    let served = Served::small();
    served.server.set_options(ServerOptions {
        tree_pages: TreePages::Endless { padding: 16 << 20 },
        ..ServerOptions::default()
    });
    let mut client = std::net::TcpStream::connect(served.server.addr()).unwrap();
    write!(
        client,
        "GET /api/datasets/gerchowl/mat-vis/tree/{TAG}/ambientcg?recursive=true HTTP/1.1\r\n\
         Host: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    drop(client);
    assert!(
        served.server.requests().is_empty(),
        "a 16 MiB page is not built yet"
    );
    served.server.settle();
    let logged = served.server.requests();
    assert_eq!(logged.len(), 1, "{logged:#?}");
    assert!(logged[0].path.contains("tree/"), "{logged:#?}");
    assert_eq!(logged[0].status, 200, "{logged:#?}");
}
