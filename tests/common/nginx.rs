//! A real nginx on loopback for end-to-end tests, configured by the test
//! (a static mirror, a caching proxy); stopped when dropped.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nginx {
    child: Child,
    pub port: u16,
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

/// The access log line: status, then the request line, then the cache status.
const LOG_FORMAT: &str = "$status \"$request\" $upstream_cache_status";

impl Nginx {
    /// Starts nginx in `dir` with `http_conf` inside its `http` block, where
    /// `{port}` is replaced by the port it listens on.
    pub fn start(dir: &Path, http_conf: &str) -> Nginx {
        // A free port: bound and released, then given to nginx.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.display();
        let http_conf = http_conf.replace("{port}", &port.to_string());
        let conf = format!(
            "daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
    log_format tests '{LOG_FORMAT}';
    access_log {d}/access.log tests;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    types {{ application/json json; image/png png; image/ktx2 ktx2; }}
{http_conf}
}}
"
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

    /// The caching proxy of docs/mirrors.md ("A forward caching proxy"), as a
    /// forward proxy for plain-HTTP origins; containers of older releases
    /// are cached in 1 MiB slices.
    pub fn caching_proxy(dir: &Path) -> Nginx {
        Self::caching(
            dir,
            "        location / {
            proxy_pass http://$http_host;
            slice 1m;
            proxy_cache_key $http_host$uri$slice_range;
            proxy_set_header Range $slice_range;
            proxy_cache_valid 200 206 30d;
            proxy_cache_valid 302 10m;
        }
        location ~ \\.json$ {
            proxy_pass http://$http_host;
            proxy_cache_key $http_host$uri;
            proxy_cache_valid 200 1m;
        }",
        )
    }

    /// The caching mirror of docs/mirrors.md ("A caching mirror") in front
    /// of `origin` (which stands for huggingface.co), its CDN redirects to
    /// `cdn_host` brought back through the mirror.
    pub fn caching_mirror(dir: &Path, origin: &str, cdn_host: &str) -> Nginx {
        let cdn_pattern = cdn_host.replace('.', "\\.");
        let locations = format!(
            "        proxy_http_version 1.1;
        proxy_set_header Authorization \"\";
        proxy_ignore_headers Cache-Control Expires Vary Set-Cookie;
        location /datasets/ {{
            proxy_pass {origin};
            proxy_cache_key $uri;
            proxy_cache_valid 200 1m;
            proxy_cache_valid 302 10m;
            proxy_redirect ~^http://(?<to>{cdn_pattern})/(?<rest>.*)$ /cdn/$to/$rest;
        }}
        location /api/datasets/ {{
            proxy_pass {origin};
            proxy_cache_valid 200 1m;
        }}
        location ~ ^/cdn/(?<cdn>{cdn_pattern})/(?<object>.*)$ {{
            proxy_pass http://$cdn/$object$is_args$args;
            proxy_set_header Host $cdn;
            slice 1m;
            proxy_set_header Range $slice_range;
            proxy_cache_key $cdn/$object$slice_range;
            proxy_cache_valid 200 206 90d;
        }}"
        );
        Self::caching(dir, &locations)
    }

    /// A server with a disk cache, one upstream fetch per file at a time,
    /// and conditional revalidation of expired entries.
    fn caching(dir: &Path, server_body: &str) -> Nginx {
        let d = dir.display();
        let conf = format!(
            "    proxy_cache_path {d}/cache levels=1:2 keys_zone=matvis:10m max_size=1g inactive=90d use_temp_path=off;
    server {{
        listen 127.0.0.1:{{port}};
        proxy_cache matvis;
        proxy_cache_lock on;
        proxy_cache_revalidate on;
{server_body}
    }}"
        );
        Self::start(dir, &conf)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every logged request: status, request target (a path, or a full URL
    /// when nginx acts as a forward proxy) and cache status (`-` when no
    /// cache was involved).
    pub fn requests(&self) -> Vec<Logged> {
        fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let (status, rest) = line.split_once(" \"")?;
                let (request, cache) = rest.rsplit_once("\" ")?;
                let mut words = request.split(' ');
                Some(Logged {
                    status: status.parse().ok()?,
                    method: words.next()?.to_string(),
                    target: words.next()?.to_string(),
                    cache: cache.to_string(),
                })
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct Logged {
    pub status: u16,
    pub method: String,
    pub target: String,
    pub cache: String,
}
