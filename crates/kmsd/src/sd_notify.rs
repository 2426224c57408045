//! systemd readiness (`Type=notify`): `READY=1` once the node is ready — its KMS listener
//! serves and [`kms_cluster::NodeStatus::readiness`] holds (identity and membership applied,
//! Raft core running, not far behind the leader) — and `STATUS=` lines as readiness changes,
//! so `systemctl start` (and a rolling restart) waits until the node has rejoined its cluster.
//!
//! Without `$NOTIFY_SOCKET` (not started by systemd with `Type=notify`) nothing is sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Send one notification to the socket named by `$NOTIFY_SOCKET` (a path, or an abstract
/// socket name starting with `@`). Errors are returned, never fatal.
pub fn notify(state: &str) -> std::io::Result<()> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    let bytes = target.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        socket.send_to(state.as_bytes(), std::path::Path::new(&target))?;
    }
    Ok(())
}

/// Until `stop` turns true: tell systemd once the node is ready, and its readiness reason
/// whenever it changes.
pub async fn watch_readiness(
    node: Arc<kms_cluster::Node>,
    serving: Arc<AtomicBool>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let mut sent_ready = false;
    let mut last_status = String::new();
    let mut iv = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = iv.tick() => {}
            _ = stop.changed() => {
                let _ = notify("STOPPING=1");
                return;
            }
        }
        let r = node.status().readiness();
        let ready = serving.load(Ordering::SeqCst) && r.ready;
        let status = if ready {
            r.reason.clone()
        } else {
            format!("not ready: {}", r.reason)
        };
        let mut message = String::new();
        if ready && !sent_ready {
            message.push_str("READY=1\n");
        }
        if status != last_status {
            message.push_str(&format!("STATUS={status}\n"));
        }
        if message.is_empty() {
            continue;
        }
        match notify(&message) {
            Ok(()) => {
                sent_ready |= ready;
                last_status = status;
            }
            Err(e) => tracing::warn!(error = %e, "cannot notify systemd"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parent binds a datagram socket and runs this same test in a child process with
    /// `NOTIFY_SOCKET` pointing at it (setting the variable in-process is unsafe in edition
    /// 2024); the child sends, the parent reads what arrived.
    #[test]
    fn notify_sends_to_the_socket_systemd_names() {
        if std::env::var_os("KMSD_SD_NOTIFY_CHILD").is_some() {
            notify("READY=1\nSTATUS=ok: in quorum\n").unwrap();
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sd_notify::tests::notify_sends_to_the_socket_systemd_names",
            ])
            .env("KMSD_SD_NOTIFY_CHILD", "1")
            .env("NOTIFY_SOCKET", &path)
            .status()
            .unwrap();
        assert!(status.success());
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok: in quorum\n");
    }
}
