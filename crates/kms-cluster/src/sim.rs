//! An in-process network for tests and deterministic chaos: Raft RPCs, leader forwarding and
//! health probes between nodes of one process, over links that can be cut (partitions) or
//! slowed, and nodes that can be dropped (crash).
//!
//! Not used by `kmsd`; exported so the integration tests of this crate and of the whole system
//! can build clusters without sockets.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kms_core::Command;
use kms_store::openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use kms_store::types::{
    AppendEntriesRequest, AppendEntriesResponse, NodeId, NodeInfo, RPCError, Raft,
    ReplicationClosed, Snapshot, SnapshotData, SnapshotResponse, StreamingError, TypeConfig,
    Unreachable, Vote, VoteRequest, VoteResponse,
};

use crate::view::{Probe, ProbeFuture};
use crate::writer::{Forward, ForwardFuture, ForwardResult};

#[derive(Debug, Default)]
struct RouterState {
    nodes: BTreeMap<NodeId, Raft>,
    /// Directed links that drop everything: (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Extra one-way delay per message.
    delay: Duration,
}

/// The shared in-process network.
#[derive(Debug, Clone, Default)]
pub struct SimRouter {
    inner: Arc<Mutex<RouterState>>,
}

impl SimRouter {
    /// A new, empty network.
    pub fn new() -> SimRouter {
        SimRouter::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut RouterState) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Attach a node (after `Raft::new`).
    pub fn add(&self, id: NodeId, raft: Raft) {
        self.with(|s| s.nodes.insert(id, raft));
    }

    /// Detach a node: every message to it fails (a crash, as seen by the others).
    pub fn remove(&self, id: NodeId) {
        self.with(|s| s.nodes.remove(&id));
    }

    /// Cut `node` off from every other node, both directions.
    pub fn isolate(&self, node: NodeId) {
        self.with(|s| {
            let ids: Vec<_> = s.nodes.keys().copied().collect();
            for other in ids.into_iter().filter(|o| *o != node) {
                s.cut.insert((node, other));
                s.cut.insert((other, node));
            }
        });
    }

    /// Cut the directed link `from → to`.
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.with(|s| s.cut.insert((from, to)));
    }

    /// Restore every link.
    pub fn heal(&self) {
        self.with(|s| s.cut.clear());
    }

    /// Delay every message by `d`.
    pub fn set_delay(&self, d: Duration) {
        self.with(|s| s.delay = d);
    }

    /// The handle of `to` if the link `from → to` is up.
    fn route(&self, from: NodeId, to: NodeId) -> Option<(Raft, Duration)> {
        self.with(|s| {
            if s.cut.contains(&(from, to)) {
                return None;
            }
            s.nodes.get(&to).cloned().map(|r| (r, s.delay))
        })
    }

    /// The Raft transport of node `from`.
    pub fn network(&self, from: NodeId) -> SimNetwork {
        SimNetwork {
            router: self.clone(),
            from,
        }
    }

    /// The leader forwarder of node `from`.
    pub fn forwarder(&self, from: NodeId) -> Arc<dyn Forward> {
        Arc::new(self.network(from))
    }

    /// The health prober of node `from`.
    pub fn prober(&self, from: NodeId) -> Arc<dyn Probe> {
        Arc::new(self.network(from))
    }
}

/// One node's view of the [`SimRouter`].
#[derive(Debug, Clone)]
pub struct SimNetwork {
    router: SimRouter,
    from: NodeId,
}

/// A connection from one node to another.
#[derive(Debug, Clone)]
pub struct SimClient {
    net: SimNetwork,
    to: NodeId,
}

fn unreachable(from: NodeId, to: NodeId) -> Unreachable {
    Unreachable::new(&std::io::Error::other(format!(
        "link {from} → {to} is down"
    )))
}

impl SimClient {
    async fn target(&self) -> Result<Raft, Unreachable> {
        let Some((raft, delay)) = self.net.router.route(self.net.from, self.to) else {
            return Err(unreachable(self.net.from, self.to));
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(raft)
    }
}

impl RaftNetworkFactory<TypeConfig> for SimNetwork {
    type Network = SimClient;

    async fn new_client(&mut self, target: NodeId, _node: &NodeInfo) -> SimClient {
        SimClient {
            net: self.clone(),
            to: target,
        }
    }
}

impl RaftNetworkV2<TypeConfig> for SimClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError> {
        let raft = self.target().await?;
        let resp = raft
            .append_entries(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        // The reply crosses the link back.
        self.target().await?;
        Ok(resp)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        _option: RPCOption,
    ) -> Result<VoteResponse, RPCError> {
        let raft = self.target().await?;
        let resp = raft
            .vote(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        self.target().await?;
        Ok(resp)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse, StreamingError> {
        let raft = self.target().await.map_err(StreamingError::Unreachable)?;
        raft.install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))
    }
}

impl Forward for SimNetwork {
    fn forward(&self, target: u64, _info: NodeInfo, cmd: Command) -> ForwardFuture {
        let client = SimClient {
            net: self.clone(),
            to: target,
        };
        Box::pin(async move {
            let raft = match client.target().await {
                Ok(r) => r,
                Err(e) => return ForwardResult::Unreachable(e.to_string()),
            };
            let res = raft.client_write(cmd.into()).await;
            if client.target().await.is_err() {
                return ForwardResult::Unreachable("reply lost".into());
            }
            match res {
                Ok(resp) => ForwardResult::Applied(resp.response().clone()),
                Err(e) => match e.forward_to_leader() {
                    Some(f) => ForwardResult::NotLeader(f.leader_id),
                    None => ForwardResult::Failed(e.to_string()),
                },
            }
        })
    }
}

impl Probe for SimNetwork {
    fn probe(&self, target: u64, _info: NodeInfo) -> ProbeFuture {
        let ok = self.router.route(self.from, target).is_some()
            && self.router.route(target, self.from).is_some();
        Box::pin(async move {
            ok.then_some(crate::view::ProbeAnswer {
                serving: true,
                ..Default::default()
            })
        })
    }
}
