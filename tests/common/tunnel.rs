//! A forward proxy for HTTPS as sites run one: it cannot see into TLS, so
//! it only tunnels (`CONNECT host:port`), and records what it was asked for.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

pub struct ConnectProxy {
    addr: SocketAddr,
    tunnels: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let tunnels = Arc::new(Mutex::new(Vec::new()));
        let seen = tunnels.clone();
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let seen = seen.clone();
                thread::spawn(move || {
                    let _ = tunnel(client, &seen);
                });
            }
        });
        ConnectProxy { addr, tunnels }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `host:port` of every tunnel asked for, in order.
    pub fn tunnels(&self) -> Vec<String> {
        self.tunnels.lock().unwrap().clone()
    }
}

fn tunnel(client: TcpStream, seen: &Mutex<Vec<String>>) -> io::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut request = String::new();
    from_client.read_line(&mut request)?;
    loop {
        let mut header = String::new();
        if from_client.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    let mut to_client = client;
    let target = match request.split_whitespace().collect::<Vec<_>>()[..] {
        ["CONNECT", target, _] => target.to_string(),
        _ => {
            to_client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")?;
            return Ok(());
        }
    };
    seen.lock().unwrap().push(target.clone());
    let upstream = TcpStream::connect(&target)?;
    to_client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    // The client sends nothing before that answer, so the reader holds no
    // bytes of the tunnel yet; it is used from here on all the same.
    let mut to_upstream = upstream.try_clone()?;
    let forward = thread::spawn(move || {
        let _ = io::copy(&mut from_client, &mut to_upstream);
        let _ = to_upstream.shutdown(Shutdown::Write);
    });
    let mut from_upstream = upstream;
    let _ = io::copy(&mut from_upstream, &mut to_client);
    let _ = to_client.shutdown(Shutdown::Write);
    let _ = forward.join();
    Ok(())
}
