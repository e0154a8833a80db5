//! End to end against a real nginx serving a generated release, the way a
//! plain static mirror of the dataset would.

mod common;

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Mount, TAG, read, walk};
use matvisfs::fixture::{Release, ReleaseSpec};

struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("nginx is needed for this test: apt-get install -y nginx-light")
}

impl Nginx {
    fn serve(root: &Path, dir: &Path) -> Nginx {
        // A free port: bound and released, then given to nginx.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.display();
        let conf = format!(
            "daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    types {{ application/json json; image/png png; image/ktx2 ktx2; }}
    server {{
        listen 127.0.0.1:{port};
        location /resolve/ {{ alias {root}/; }}
    }}
}}
",
            root = root.display()
        );
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, conf).unwrap();
        let child = Command::new(nginx_binary())
            .args(["-e", &format!("{d}/error.log"), "-p"])
            .arg(dir)
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut nginx = Nginx {
            child,
            port,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = nginx.child.try_wait().unwrap() {
                panic!(
                    "nginx exited with {status}: {}",
                    fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/resolve", self.port)
    }

    /// (status, path) of every logged request.
    fn requests(&self) -> Vec<(u16, String)> {
        fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let request = line.split('"').nth(1)?;
                let path = request.split(' ').nth(1)?.to_string();
                let status = line
                    .split('"')
                    .nth(2)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                Some((status, path))
            })
            .collect()
    }
}

#[test]
fn a_release_served_by_nginx_mounts_reads_and_revalidates() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let release = Release::generate(&ReleaseSpec::small(TAG));
    release.write_to(&data).unwrap();
    let nginx = Nginx::serve(&data, work.path());
    let cache = work.path().join("cache");
    {
        let mount = Mount::builder(&nginx.base_url()).cache(&cache).start();
        let expected: Vec<String> = release.expected_tree().into_iter().collect();
        assert_eq!(walk(&mount.path.join(TAG)), expected);
        for (path, bytes) in release.textures() {
            assert_eq!(
                fs::metadata(mount.tag_path(path)).unwrap().len(),
                bytes.len() as u64,
                "{path}"
            );
        }
        for (path, bytes) in &release.files {
            if !path.ends_with(".tier_complete") {
                assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
            }
        }
    }
    let before = nginx.requests().len();
    let mount = Mount::builder(&nginx.base_url()).cache(&cache).start();
    for (path, bytes) in release.textures() {
        assert_eq!(&read(&mount.tag_path(path)).unwrap(), bytes, "{path}");
    }
    let second: Vec<(u16, String)> = nginx.requests().split_off(before);
    let manifest: Vec<_> = second
        .iter()
        .filter(|(_, p)| p.ends_with("release-manifest.json"))
        .collect();
    assert_eq!(manifest.len(), 1, "{second:?}");
    assert_eq!(
        manifest[0].0, 304,
        "nginx's ETag answers the conditional request"
    );
    assert!(
        second.iter().all(|(status, _)| *status == 304),
        "cached files cost nothing: {second:?}"
    );
}
