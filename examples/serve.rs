//! Serves a directory of releases like the Hugging Face resolve endpoint
//! (the test server), optionally adding latency to every request, for
//! benchmarks:
//!
//!     cargo run --release --example serve -- <ROOT> [DELAY_MS]
//!
//! Prints the base URL, then the same release's base URL in the Hugging
//! Face layout (with the Hub API beside it), then serves until killed.
//! Each line read on stdin asks for the requests logged since the last
//! ask: one line each, `<method> <status> <logged path>`, then an empty
//! line (for benchmarks that count every client's requests, not only
//! matvisfs's own).

use std::io::{BufRead, Write};
use std::time::Duration;

use matvisfs_testkit::devserver::{DevServer, Fault, FaultRule};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(root) = args.first() else {
        eprintln!("usage: serve <ROOT> [DELAY_MS]");
        std::process::exit(2);
    };
    let server = DevServer::start(root).expect("starting the server");
    if let Some(ms) = args
        .get(1)
        .and_then(|ms| ms.parse().ok())
        .filter(|&ms: &u64| ms > 0)
    {
        server.inject(FaultRule::new("", Fault::Delay(Duration::from_millis(ms))));
    }
    println!("{}", server.base_url());
    println!("{}", server.hub_base_url("gerchowl/mat-vis"));
    let mut told = 0;
    for _ in std::io::stdin().lock().lines().map_while(Result::ok) {
        let requests = server.requests();
        let mut out = std::io::stdout().lock();
        for r in requests.get(told..).unwrap_or(&[]) {
            let _ = writeln!(out, "{} {} {}", r.method, r.status, r.path);
        }
        let _ = writeln!(out);
        let _ = out.flush();
        told = requests.len();
    }
    // Stdin closed (or never open): serve until killed.
    loop {
        std::thread::park();
    }
}
