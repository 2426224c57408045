//! The gRPC side of the cluster: the `kms.raft.v1.RaftPeer` server, the wire format, and the
//! helpers kmsd uses to serve it (with its admin service) on the node's one gRPC port.
//!
//! The client side — openraft's network ([`crate::PeerNetwork`], [`crate::PeerClient`]) and
//! the calls the node makes itself (forwarding writes, probing, joining) — lives in
//! `crate::network`.
//!
//! ```no_run
//! # async fn run(raft: kms_store::types::Raft, info: kms_store::NodeInfo) -> Result<(), Box<dyn std::error::Error>> {
//! use kms_cluster::grpc;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:1689").await?;
//! let router = grpc::router(grpc::RaftPeerService::new(raft, 1, info));
//! // kmsd adds its admin service here: router.add_service(admin_server)
//! grpc::serve(listener, router, std::future::pending()).await?;
//! # Ok(()) }
//! ```

mod server;
pub mod wire;

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::{Router, TcpIncoming};

pub use server::{DEFAULT_MAX_SNAPSHOT_BYTES, MAX_MESSAGE_BYTES, RaftPeerService, ReadinessFn};

/// Request metadata: the sending node's id (decimal), named in refusals and logs.
pub const FROM_NODE_KEY: &str = "kmsd-from-node";
/// Request metadata: the node id the sender means to reach (decimal; absent when unknown); a
/// node refuses a call meant for another id.
pub const TO_NODE_KEY: &str = "kmsd-to-node";
pub use tonic::transport::{ClientTlsConfig, ServerTlsConfig};
pub use wire::{MIN_WIRE_VERSION, WIRE_VERSION, WireError};

/// A problem starting or running the gRPC server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The TLS configuration was refused.
    #[error("gRPC TLS configuration: {0}")]
    Tls(#[source] tonic::transport::Error),
    /// The server failed while serving.
    #[error("gRPC server: {0}")]
    Transport(#[source] tonic::transport::Error),
}

/// The gRPC server settings every service on the node's gRPC port shares: keepalives (so a
/// vanished peer's connection is noticed), TCP_NODELAY (heartbeats are small), and TLS when
/// given. The one place where server TLS slots in.
pub fn server(tls: Option<ServerTlsConfig>) -> Result<Server, ServeError> {
    match tls {
        Some(tls) => base_server().tls_config(tls).map_err(ServeError::Tls),
        None => Ok(base_server()),
    }
}

fn base_server() -> Server {
    Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
}

/// A router serving `RaftPeer` (plaintext); add further services (the admin API) to it before
/// [`serve`]. With TLS, build it from [`server`] instead:
/// `grpc::server(Some(tls))?.add_service(peer.into_server())`.
pub fn router(peer: RaftPeerService) -> Router {
    base_server().add_service(peer.into_server())
}

/// Serve `router` on an already-bound `listener` until `shutdown` completes; then stop accepting
/// and let in-flight calls finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(ServeError::Transport)
}
