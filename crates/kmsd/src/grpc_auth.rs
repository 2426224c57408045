//! Authorization of the peer service: with TLS on, only certificates with the `node` role may
//! speak Raft (vote, append, snapshots, forwarded writes, joins). With `--insecure` everything
//! is allowed. Without either (the loopback single-node default) the node has no peers and
//! takes none: every peer call is refused, so nothing can join it in clear text.

use kms_api::raft::v1::raft_peer_server::RaftPeerServer;
use kms_cluster::grpc::RaftPeerService;
use tonic::service::interceptor::InterceptedService;

use crate::admin::AdminSecurity;

type PeerInterceptor = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;

fn require_node(req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    let role = kms_tls::request_role(&req)?;
    kms_tls::authorize(role, kms_tls::Action::Peer)?;
    Ok(req)
}

fn allow_all(req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    Ok(req)
}

fn refuse_peers(_: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    Err(tonic::Status::failed_precondition(
        "this kmsd runs as a single node without TLS and without --insecure: it takes no \
         peers; a multi-node cluster must use TLS (--tls-ca/--tls-cert/--tls-key) or run every \
         node with --insecure",
    ))
}

/// The RaftPeer service, guarded as the gRPC port's `security` says: `node` certificates with
/// mutual TLS, anyone with `--insecure`, no one on the clear-text single-node default.
pub fn peer_service(
    peer: RaftPeerService,
    security: AdminSecurity,
) -> InterceptedService<RaftPeerServer<RaftPeerService>, PeerInterceptor> {
    let check: PeerInterceptor = match security {
        AdminSecurity::MutualTls => require_node,
        AdminSecurity::Insecure => allow_all,
        AdminSecurity::LocalOnly => refuse_peers,
    };
    InterceptedService::new(peer.into_server(), check)
}
