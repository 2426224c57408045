//! The Raft transport.
//!
//! A single-node cluster never sends a Raft RPC: the node is its own quorum. Until the gRPC
//! transport exists (peers over tonic on the gRPC port), every peer is reported unreachable, so
//! openraft keeps retrying with backoff and never blocks the local node.

use std::future::Future;

use kms_store::openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use kms_store::types::{
    AppendEntriesRequest, AppendEntriesResponse, NodeId, NodeInfo, RPCError, ReplicationClosed,
    Snapshot, SnapshotData, SnapshotResponse, StreamingError, TypeConfig, Unreachable, Vote,
    VoteRequest, VoteResponse,
};

/// Creates clients for peers.
#[derive(Debug, Clone, Default)]
pub struct PeerNetwork;

/// A client for one peer.
#[derive(Debug, Clone)]
pub struct PeerClient {
    target: NodeId,
}

impl PeerClient {
    fn unreachable(&self) -> Unreachable {
        Unreachable::new(&std::io::Error::other(format!(
            "node {} is not reachable: this build has no peer transport configured",
            self.target
        )))
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, _node: &NodeInfo) -> PeerClient {
        PeerClient { target }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn vote(&mut self, _rpc: VoteRequest, _option: RPCOption) -> Result<VoteResponse, RPCError> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse, StreamingError> {
        Err(StreamingError::Unreachable(self.unreachable()))
    }
}
