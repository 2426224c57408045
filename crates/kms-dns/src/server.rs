//! [`DnsServer`]: the UDP and TCP loops around a [`ZoneResponder`], re-rendering the zones
//! whenever the [`ClusterView`] watch changes.
//!
//! The loops are ours rather than `hickory_server::Server`'s because the server must drop what
//! it cannot parse (hickory answers FORMERR to anything with a 12-byte header, a reflection
//! vector), drop oversized queries, and cap concurrent TCP connections; the answering itself
//! is the same [`ZoneResponder`], which is also a hickory `RequestHandler`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kms_core::ClusterView;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::{debug, info, warn};

use crate::answer::Transport;
use crate::config::{DnsConfig, DnsConfigError};
use crate::observer::{DnsObserver, DropReason};
use crate::responder::{MAX_QUERY_SIZE, ZoneResponder};

/// Why [`DnsServer::serve`] could not run.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The configuration is invalid.
    #[error("invalid DNS configuration: {0}")]
    Config(#[from] DnsConfigError),
}

/// The authoritative DNS server of one kmsd node.
#[derive(Debug)]
pub struct DnsServer {
    _private: (),
}

impl DnsServer {
    /// Serve the zones in `cfg` on the already-bound `udp` socket and `tcp` listener until
    /// `shutdown` completes, re-rendering whenever `views` changes (if its sender goes away,
    /// the last view keeps being served).
    ///
    /// UDP: each datagram is answered inline; responses are rate-limited per source.
    /// TCP: up to `max_tcp_connections` connections, each closed after `tcp_idle_timeout`
    /// without a complete query; queries on a connection are answered in order.
    /// Returns `Ok(())` after shutdown; errors only for an invalid configuration. Socket
    /// errors are logged and retried, never fatal.
    pub async fn serve(
        udp: UdpSocket,
        tcp: TcpListener,
        mut views: watch::Receiver<ClusterView>,
        cfg: DnsConfig,
        metrics: Arc<dyn DnsObserver>,
        shutdown: impl Future,
    ) -> Result<(), DnsError> {
        let max_tcp = cfg.max_tcp_connections;
        let idle = cfg.tcp_idle_timeout;
        let responder = Arc::new(ZoneResponder::new(cfg, metrics)?);
        let first = views.borrow_and_update().clone();
        responder.update(&first);
        info!(
            udp = udp.local_addr().ok().map(tracing::field::display),
            tcp = tcp.local_addr().ok().map(tracing::field::display),
            zones = %responder
                .config()
                .zones
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            "DNS server listening"
        );

        let watcher = {
            let responder = responder.clone();
            async move {
                while views.changed().await.is_ok() {
                    let view = views.borrow_and_update().clone();
                    responder.update(&view);
                }
                debug!("ClusterView sender gone; serving the last view");
                std::future::pending::<()>().await;
            }
        };

        tokio::select! {
            _ = shutdown => {}
            () = watcher => {}
            () = udp_loop(udp, responder.clone()) => {}
            () = tcp_loop(tcp, responder, max_tcp, idle) => {}
        }
        info!("DNS server stopped");
        Ok(())
    }
}

/// Receive, answer, send — forever.
async fn udp_loop(socket: UdpSocket, responder: Arc<ZoneResponder>) {
    // One byte more than the largest accepted query, so oversized datagrams are detectable.
    let mut buf = vec![0u8; MAX_QUERY_SIZE + 1];
    loop {
        let (len, src) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(error) => {
                transient(&error, "UDP receive").await;
                continue;
            }
        };
        if src.port() == 0 || src.ip().is_unspecified() {
            responder.observer().dropped(DropReason::Malformed.as_str());
            continue;
        }
        let packet = buf.get(..len).unwrap_or_default();
        for reply in responder.respond(packet, src, Transport::Udp) {
            if let Err(error) = socket.send_to(&reply, src).await {
                debug!(%error, %src, "UDP send failed");
            }
        }
    }
}

/// Accept connections within the limit and serve each on its own task.
async fn tcp_loop(
    listener: TcpListener,
    responder: Arc<ZoneResponder>,
    max: usize,
    idle: Duration,
) {
    let permits = Arc::new(Semaphore::new(max));
    // Dropping the set (on shutdown) aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                transient(&error, "TCP accept").await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!(%peer, "TCP connection limit reached; closing");
            responder
                .observer()
                .dropped(DropReason::TcpConnectionLimit.as_str());
            drop(stream);
            continue;
        };
        let responder = responder.clone();
        connections.spawn(async move {
            let _permit = permit;
            tcp_connection(stream, peer, &responder, idle).await;
        });
    }
}

/// Length-prefixed queries in, length-prefixed responses out, until EOF, idle timeout, an
/// oversized frame or a write that does not complete within the idle timeout.
async fn tcp_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    responder: &ZoneResponder,
    idle: Duration,
) {
    let mut len = [0u8; 2];
    loop {
        match timeout(idle, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return,
        }
        let size = usize::from(u16::from_be_bytes(len));
        if size > MAX_QUERY_SIZE {
            debug!(%peer, size, "oversized TCP query; closing");
            responder.observer().dropped(DropReason::Oversized.as_str());
            return;
        }
        let mut query = vec![0u8; size];
        match timeout(idle, stream.read_exact(&mut query)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return,
        }
        for reply in responder.respond(&query, peer, Transport::Tcp) {
            let Ok(frame_len) = u16::try_from(reply.len()) else {
                return;
            };
            let mut frame = Vec::with_capacity(reply.len() + 2);
            frame.extend_from_slice(&frame_len.to_be_bytes());
            frame.extend_from_slice(&reply);
            match timeout(idle, stream.write_all(&frame)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return,
            }
        }
    }
}

/// Log a socket error and pause briefly so a persistent error cannot spin the loop.
async fn transient(error: &io::Error, what: &str) {
    match error.kind() {
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => {
            debug!(%error, "{what} error");
        }
        _ => {
            warn!(%error, "{what} error");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
