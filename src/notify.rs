//! Readiness for a service manager (systemd's `Type=notify`): `READY=1`
//! once the mount serves, `STOPPING=1` when it begins to unmount, sent to
//! the datagram socket named by `NOTIFY_SOCKET`, when there is one. A
//! path starting with `@` names an abstract socket.

use std::os::unix::net::UnixDatagram;

fn send(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| -> std::io::Result<()> {
        let datagram = UnixDatagram::unbound()?;
        let bytes = socket.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            datagram.send_to_addr(state.as_bytes(), &address)?;
        } else {
            datagram.send_to(state.as_bytes(), &socket)?;
        }
        Ok(())
    })();
    if let Err(e) = sent {
        tracing::warn!("cannot tell the service manager {state}: {e}");
    }
}

/// The mount serves.
pub fn ready() {
    send("READY=1");
}

/// The mount is being unmounted.
pub fn stopping() {
    send("STOPPING=1");
}
