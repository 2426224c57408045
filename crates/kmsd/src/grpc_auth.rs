//! Authorization of the peer service: with TLS on, only certificates with the `node` role may
//! speak Raft (vote, append, snapshots, forwarded writes, joins). With `--insecure` everything
//! is allowed. Without either (the loopback single-node default) the node has no peers and
//! takes none: every peer call is refused, so nothing can join it in clear text.

use kms_api::raft::v1::raft_peer_server::RaftPeerServer;
use kms_cluster::grpc::RaftPeerService;
use tonic::service::interceptor::InterceptedService;

type PeerInterceptor = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;

/// How the gRPC port treats peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAccess {
    /// Mutual TLS: callers need a `node` certificate.
    Tls,
    /// `--insecure`: clear text, anyone may speak Raft.
    Insecure,
    /// Neither: a single node that refuses peers.
    SingleNode,
}

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

/// The RaftPeer service, guarded as `access` says.
pub fn peer_service(
    peer: RaftPeerService,
    access: PeerAccess,
) -> InterceptedService<RaftPeerServer<RaftPeerService>, PeerInterceptor> {
    let check: PeerInterceptor = match access {
        PeerAccess::Tls => require_node,
        PeerAccess::Insecure => allow_all,
        PeerAccess::SingleNode => refuse_peers,
    };
    InterceptedService::new(peer.into_server(), check)
}
