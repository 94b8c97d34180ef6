//! systemd's readiness protocol (`Type=notify`), without a crate: one datagram per state.

use tracing::warn;

/// Tell systemd (`Type=notify`) about the service's state: one datagram to `$NOTIFY_SOCKET`
/// (`READY=1` once mounted, `RELOADING=1`/`READY=1` around a SIGHUP reload, `STOPPING=1`).
/// Without the variable (not under systemd) nothing happens; a failure is only logged.
pub(crate) fn notify_systemd(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        notify(&path, state);
    }
}

fn notify(path: &std::ffi::OsStr, state: &str) {
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "sd_notify: no socket");
            return;
        }
    };
    let bytes = path.as_encoded_bytes();
    // `@name` is a socket in the abstract namespace.
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
        }
        None => sock.send_to(state.as_bytes(), path),
    };
    if let Err(e) = sent {
        warn!(error = %e, state, "sd_notify failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_arrives_as_one_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        notify(path.as_os_str(), "READY=1");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
