//! Authorization of the peer service: with TLS on, only certificates with the `node` role may
//! speak Raft (vote, append, snapshots, forwarded writes, joins). Without TLS (the loopback
//! single-node default or `--insecure`) everything is allowed.

use kms_api::raft::v1::raft_peer_server::RaftPeerServer;
use kms_cluster::grpc::RaftPeerService;
use tonic::service::interceptor::InterceptedService;

type PeerInterceptor = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;

fn require_node(req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    let role = kms_tls::request_role(&req)?;
    kms_tls::authorize(role, kms_tls::Action::Peer)?;
    Ok(req)
}

fn allow_all(req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    Ok(req)
}

/// The RaftPeer service, guarded by certificate roles when `tls` is on.
pub fn peer_service(
    peer: RaftPeerService,
    tls: bool,
) -> InterceptedService<RaftPeerServer<RaftPeerService>, PeerInterceptor> {
    let check: PeerInterceptor = if tls { require_node } else { allow_all };
    InterceptedService::new(peer.into_server(), check)
}
