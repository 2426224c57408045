//! The Raft transport, client side: openraft's network over gRPC (`kms.raft.v1.RaftPeer`), and
//! the calls a node makes to its peers itself — forwarding a write to the leader, probing a
//! peer's health, asking a member to join.
//!
//! * [`PeerNetwork`] is openraft's `RaftNetworkFactory`, the [`Forward`] and [`Probe`] the node
//!   uses, and the entry point for [`PeerNetwork::join`] / [`PeerNetwork::probe`]. It keeps one
//!   lazily connected tonic `Channel` per peer address (plus a separate one for snapshot
//!   transfers, so a 100 MB snapshot never queues behind — or in front of — heartbeats), shared
//!   by its clones.
//! * [`PeerClient`] is openraft's `RaftNetworkV2` for one peer.
//!
//! Failures map onto openraft's retry policy: a transport failure or a refused call is
//! `Unreachable` (openraft backs off), a call that outlives its budget is `Timeout`. Budgets:
//! `RPCOption::soft_ttl()` for votes and heartbeats, plus size / `min_throughput` for large
//! AppendEntries; snapshots fail when the stream stops making progress for
//! `snapshot_stall_timeout` (openraft's `install_snapshot_timeout` is meant for one chunk, far
//! too short for a whole snapshot).
//!
//! A single-node cluster never sends a Raft RPC: the node is its own quorum.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use kms_api::raft::v1 as pb;
use kms_api::raft::v1::raft_peer_client::RaftPeerClient;
use kms_core::{Command, Outcome};
use kms_store::openraft::network::stream_append_sequential;
use kms_store::openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory, v2::RaftNetworkV2};
use kms_store::openraft::raft::TransferLeaderResponse as OpenraftTransferLeaderResponse;
use kms_store::types::{
    AppendEntriesRequest, AppendEntriesResponse, ClientWriteError, LogId, Membership, NodeId,
    NodeInfo, RPCError, RaftCommand, RaftError, RemoteError, ReplicationClosed, ServerState,
    Snapshot, SnapshotData, SnapshotResponse, StreamAppendResult, StreamingError, Timeout,
    TransferLeaderRequest, TypeConfig, Unreachable, Vote, VoteRequest, VoteResponse,
};
use prost::bytes::Bytes;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tracing::{debug, info};

use crate::grpc::MAX_MESSAGE_BYTES;
use crate::grpc::wire::{self, WIRE_VERSION, WireError, decode, encode};
use crate::view::{Probe, ProbeAnswer, ProbeFuture};
use crate::writer::{Forward, ForwardFuture, ForwardResult};

/// openraft's answer to a TransferLeader message.
type TransferLeaderResponse = OpenraftTransferLeaderResponse<TypeConfig>;

/// Most leader hints [`PeerNetwork::join`] follows before giving up.
const MAX_JOIN_HOPS: usize = 5;

/// Timeouts and sizes of the peer transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerNetworkConfig {
    /// Longest a TCP (and TLS) connection attempt to a peer may take.
    pub connect_timeout: Duration,
    /// HTTP/2 keepalive ping interval on idle peer connections (a vanished peer is noticed
    /// within this plus 5 s).
    pub keepalive_interval: Duration,
    /// Slowest link speed (bytes/s) assumed when budgeting a large AppendEntries: its timeout
    /// is openraft's `soft_ttl` plus `encoded size / min_throughput`.
    pub min_throughput: u64,
    /// Size of one snapshot data chunk on the wire.
    pub snapshot_chunk_bytes: usize,
    /// A snapshot transfer fails when no chunk could be sent for this long.
    pub snapshot_stall_timeout: Duration,
    /// Longest the receiver may take to check and install a snapshot after its last byte.
    pub snapshot_install_timeout: Duration,
    /// Budget of one forwarded write (the leader commits and applies it).
    pub forward_timeout: Duration,
    /// Budget of one health probe.
    pub probe_timeout: Duration,
    /// Budget of one join call (the leader waits until the new node has caught up, which may
    /// include a snapshot transfer).
    pub join_timeout: Duration,
}

impl Default for PeerNetworkConfig {
    fn default() -> Self {
        PeerNetworkConfig {
            connect_timeout: Duration::from_millis(500),
            keepalive_interval: Duration::from_secs(10),
            min_throughput: 8 << 20,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_stall_timeout: Duration::from_secs(10),
            snapshot_install_timeout: Duration::from_secs(120),
            forward_timeout: Duration::from_secs(10),
            probe_timeout: Duration::from_secs(1),
            join_timeout: Duration::from_secs(600),
        }
    }
}

/// Why a call to a peer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The peer's address cannot be used as a gRPC endpoint.
    #[error("invalid peer address {addr:?}: {detail}")]
    InvalidAddress {
        /// The address.
        addr: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The peer could not be reached (connection refused or lost, TLS failure, shutting down).
    #[error("peer {addr} is unreachable: {detail}")]
    Unreachable {
        /// The peer's address.
        addr: String,
        /// The transport's explanation.
        detail: String,
    },
    /// The peer did not answer within the call's budget.
    #[error("peer {addr} did not answer within {timeout:?}")]
    Timeout {
        /// The peer's address.
        addr: String,
        /// The budget.
        timeout: Duration,
    },
    /// The peer answered with an error status (e.g. it refused our wire version or payload).
    #[error("peer {addr} refused the call ({code:?}): {message}")]
    Refused {
        /// The peer's address.
        addr: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// The peer's answer could not be understood, or our request could not be encoded.
    #[error("peer {addr}: {error}")]
    Protocol {
        /// The peer's address.
        addr: String,
        /// What went wrong.
        error: WireError,
    },
}

/// Why a forwarded write (or a join) did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The peer is not the leader; retry at the hinted leader, if any. Nothing was proposed.
    #[error("not the leader; leader is {leader_id:?} at {leader_addr:?}")]
    NotLeader {
        /// The leader the peer knows, if any.
        leader_id: Option<NodeId>,
        /// The leader's gRPC address, if known.
        leader_addr: Option<String>,
    },
    /// The peer could not be asked (or did not answer in time, or could not be understood).
    #[error(transparent)]
    Unreachable(#[from] PeerError),
    /// The leader tried and failed: openraft's error, rebuilt from the peer's answer. For
    /// `ClientWriteError::LogEntryDiscarded` the outcome is unknown (the entry may still
    /// commit); replayed records are deduplicated by request id.
    #[error(transparent)]
    Remote(Box<RemoteError<RaftError<ClientWriteError>>>),
}

/// A write the leader committed and applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedWrite {
    /// The entry's log id (wait until it is applied locally before reading its effect here).
    pub log_id: LogId,
    /// The outcome of applying it on the leader.
    pub outcome: Outcome,
}

/// A peer's answer to a health probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerProbe {
    /// The peer's node id.
    pub node_id: NodeId,
    /// The peer's name.
    pub name: String,
    /// The peer's Raft term.
    pub term: u64,
    /// The leader the peer knows.
    pub leader_id: Option<NodeId>,
    /// The peer's last applied log index.
    pub last_applied_index: Option<u64>,
    /// The peer's last log index.
    pub last_log_index: Option<u64>,
    /// The peer's Raft role (`None` if the peer sent a role this build does not know).
    pub role: Option<ServerState>,
    /// The peer's gRPC address, as it sees it.
    pub grpc_addr: String,
    /// The peer's KMS address.
    pub kms_addr: String,
    /// Why the peer's Raft core stopped; empty while it runs.
    pub raft_stopped: String,
    /// The peer is in the membership it has applied.
    pub is_member: bool,
    /// The peer's normalized `--initial-cluster` (empty: none, or a kmsd that does not say).
    pub initial_cluster: String,
    /// The peer's store holds a cluster.
    pub initialized: bool,
    /// The peer's readiness (`None`: it does not say).
    pub ready: Option<bool>,
    /// Why the peer is not ready.
    pub not_ready_reason: String,
}

impl PeerProbe {
    /// Whether the peer knows a leader.
    pub fn has_leader(&self) -> bool {
        self.leader_id.is_some()
    }

    fn from_pb(p: pb::ProbeResponse) -> PeerProbe {
        let role = match pb::RaftRole::try_from(p.role) {
            Ok(pb::RaftRole::Leader) => Some(ServerState::Leader),
            Ok(pb::RaftRole::Follower) => Some(ServerState::Follower),
            Ok(pb::RaftRole::Candidate) => Some(ServerState::Candidate),
            Ok(pb::RaftRole::Learner) => Some(ServerState::Learner),
            Ok(pb::RaftRole::Shutdown) => Some(ServerState::Shutdown),
            Ok(pb::RaftRole::Unspecified) | Err(_) => None,
        };
        PeerProbe {
            node_id: p.node_id,
            name: p.name,
            term: p.term,
            leader_id: p.leader_id,
            last_applied_index: p.last_applied_index,
            last_log_index: p.last_log_index,
            role,
            grpc_addr: p.grpc_address,
            kms_addr: p.kms_address,
            raft_stopped: p.raft_stopped,
            // A kmsd from before these fields says neither; it served while it answered.
            is_member: p.is_member || !p.initialized,
            initial_cluster: p.initial_cluster,
            initialized: p.initialized,
            ready: p.ready,
            not_ready_reason: p.not_ready_reason,
        }
    }
}

/// Which connection to a peer a client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ChannelKind {
    /// Votes, AppendEntries, heartbeats, forwarding, probes, joins.
    Rpc,
    /// Snapshot transfers.
    Snapshot,
}

#[derive(Debug, Default)]
struct Shared {
    local_id: NodeId,
    config: PeerNetworkConfig,
    tls: Option<ClientTlsConfig>,
    channels: Mutex<HashMap<(ChannelKind, String), Channel>>,
    /// Reachability of each peer address, shared by every client of that address.
    links: Mutex<HashMap<String, Arc<Mutex<Link>>>>,
}

/// Longest a peer that stopped answering is left alone between two attempts of a Raft call.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);
/// First wait after a peer stopped answering; doubled per failed attempt up to
/// [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(200);
/// A peer that answered anything within this long is not considered down on a timeout (a
/// slow answer under load is not an outage; a peer behind a partition that drops packets only
/// ever times out, and is held back once it has been silent this long).
const RECENT_ANSWER: Duration = Duration::from_secs(5);

/// What the transport knows of one peer address: when it last answered and, while it does not,
/// when the next Raft call may try it again. Openraft retries heartbeats, votes and
/// replication on its own schedule (heartbeats every 150 ms); while a peer is down those calls
/// fail at once, without a connection attempt, until `retry_at` — so a node that stays down
/// costs the others (almost) nothing. Health probes are never held back: a probe that is
/// answered reopens the gate at once.
#[derive(Debug, Default)]
struct Link {
    /// The last answer of any kind (an error status is an answer too).
    last_answer: Option<Instant>,
    /// Failed attempts since the last answer.
    failures: u32,
    /// Raft calls fail at once until then.
    retry_at: Option<Instant>,
}

impl Link {
    /// Record the outcome of a call.
    fn record<T>(&mut self, result: &Result<T, PeerError>) {
        let now = Instant::now();
        match result {
            Ok(_) | Err(PeerError::Refused { .. } | PeerError::Protocol { .. }) => {
                self.last_answer = Some(now);
                self.failures = 0;
                self.retry_at = None;
            }
            Err(PeerError::Unreachable { .. }) => self.failed(now),
            // A timeout counts only when the peer has not answered anything recently.
            Err(PeerError::Timeout { .. })
                if self.last_answer.is_none_or(|t| now - t > RECENT_ANSWER) =>
            {
                self.failed(now)
            }
            Err(_) => {}
        }
    }

    fn failed(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        let delay = FIRST_RETRY_DELAY
            .saturating_mul(1u32 << self.failures.saturating_sub(1).min(8))
            .min(MAX_RETRY_DELAY);
        self.retry_at = Some(now + delay);
    }

    /// Whether a Raft call may try the peer now; if not, how long until it may.
    fn gate(&self) -> Result<(), Duration> {
        match self.retry_at {
            Some(at) if at > Instant::now() => Err(at - Instant::now()),
            _ => Ok(()),
        }
    }
}

/// The peer transport of one node: openraft's network factory, the node's leader forwarder and
/// health prober. Cheap to clone; clones share the cached connections.
#[derive(Debug, Clone, Default)]
pub struct PeerNetwork {
    shared: Arc<Shared>,
}

impl PeerNetwork {
    /// The transport of node `local_id`; `tls` (from the cluster CA) secures every connection,
    /// `None` is plaintext (`--insecure` and single-node loopback only).
    pub fn new(local_id: NodeId, config: PeerNetworkConfig, tls: Option<ClientTlsConfig>) -> Self {
        PeerNetwork {
            shared: Arc::new(Shared {
                local_id,
                config,
                tls,
                channels: Mutex::new(HashMap::new()),
                links: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The transport's settings.
    pub fn config(&self) -> &PeerNetworkConfig {
        &self.shared.config
    }

    /// The cached channel to `addr`, created (lazily connected) on first use.
    fn channel(&self, kind: ChannelKind, addr: &str) -> Result<Channel, PeerError> {
        let key = (kind, addr.to_string());
        let mut channels = self
            .shared
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = channels.get(&key) {
            return Ok(c.clone());
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(PeerError::InvalidAddress {
                addr: addr.to_string(),
                detail: "peer channels must be created inside a tokio runtime".into(),
            });
        }
        let channel = endpoint(addr, &self.shared.config, self.shared.tls.as_ref())?.connect_lazy();
        channels.insert(key, channel.clone());
        Ok(channel)
    }

    /// The shared reachability record of `addr`.
    fn link(&self, addr: &str) -> Arc<Mutex<Link>> {
        self.shared
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(addr.to_string())
            .or_default()
            .clone()
    }

    fn client_with(&self, kind: ChannelKind, target: NodeId, addr: &str) -> PeerClient {
        PeerClient {
            target,
            addr: addr.to_string(),
            link: self.link(addr),
            local_id: self.shared.local_id,
            config: self.shared.config.clone(),
            channel: self.channel(kind, addr),
            version: WIRE_VERSION,
            pipelined: true,
        }
    }

    /// A client for node `target` (0 if unknown) at gRPC address `addr`. Must be called inside
    /// a tokio runtime; the connection is made on first use.
    pub fn client(&self, target: NodeId, addr: &str) -> Result<PeerClient, PeerError> {
        let client = self.client_with(ChannelKind::Rpc, target, addr);
        client.channel.clone()?;
        Ok(client)
    }

    /// Probe the node at `addr`.
    pub async fn probe(&self, addr: &str) -> Result<PeerProbe, PeerError> {
        self.client(0, addr)?.probe().await
    }

    /// Forward `cmd` to node `target` at `addr`, which should be the leader.
    pub async fn forward_write(
        &self,
        target: NodeId,
        addr: &str,
        cmd: impl Into<RaftCommand>,
    ) -> Result<ForwardedWrite, ForwardError> {
        self.client(target, addr)?.forward_write(cmd).await
    }

    /// Ask the member at `addr` to add node `id` (described by `info`) to the cluster, following
    /// leader hints; returns the membership once `id` is a voter.
    pub async fn join(
        &self,
        addr: &str,
        id: NodeId,
        info: NodeInfo,
    ) -> Result<Membership, ForwardError> {
        let mut addr = addr.to_string();
        let mut hops = 0;
        loop {
            let result = self.client(0, &addr)?.join(id, info.clone()).await;
            match result {
                Err(ForwardError::NotLeader {
                    leader_addr: Some(leader),
                    ..
                }) if leader != addr && hops < MAX_JOIN_HOPS => {
                    info!(from = %addr, to = %leader, "join: following the leader hint");
                    addr = leader;
                    hops += 1;
                }
                other => return other,
            }
        }
    }
}

/// The endpoint for a peer's gRPC address: the one place where client TLS slots in.
fn endpoint(
    addr: &str,
    config: &PeerNetworkConfig,
    tls: Option<&ClientTlsConfig>,
) -> Result<Endpoint, PeerError> {
    let invalid = |detail: String| PeerError::InvalidAddress {
        addr: addr.to_string(),
        detail,
    };
    if addr.is_empty() {
        return Err(invalid("empty".into()));
    }
    let uri = if addr.contains("://") {
        addr.to_string()
    } else if tls.is_some() {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| invalid(e.to_string()))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(config.keepalive_interval)
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    match tls {
        Some(tls) => endpoint
            .tls_config(tls.clone())
            .map_err(|e| invalid(format!("TLS: {e}"))),
        None => Ok(endpoint),
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        self.client_with(ChannelKind::Rpc, target, &node.grpc_addr)
    }

    async fn new_snapshot_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        self.client_with(ChannelKind::Snapshot, target, &node.grpc_addr)
    }
}

impl Forward for PeerNetwork {
    fn forward(&self, target: u64, info: NodeInfo, cmd: Command) -> ForwardFuture {
        let network = self.clone();
        Box::pin(async move {
            match network.forward_write(target, &info.grpc_addr, cmd).await {
                Ok(w) => ForwardResult::Applied(w.outcome),
                Err(ForwardError::NotLeader { leader_id, .. }) => {
                    ForwardResult::NotLeader(leader_id)
                }
                Err(ForwardError::Unreachable(e)) => ForwardResult::Unreachable(e.to_string()),
                Err(ForwardError::Remote(e)) => ForwardResult::Failed(e.to_string()),
            }
        })
    }
}

impl Probe for PeerNetwork {
    fn probe(&self, target: u64, info: NodeInfo) -> ProbeFuture {
        let network = self.clone();
        Box::pin(async move {
            let probe = match network.client(target, &info.grpc_addr) {
                Ok(mut c) => c.probe().await,
                Err(e) => Err(e),
            };
            match probe {
                // Someone else answering at that address is not `target`.
                Ok(p) if p.node_id == target => Some(ProbeAnswer {
                    applied_index: p.last_applied_index,
                    serving: p.raft_stopped.is_empty() && p.is_member && p.ready.unwrap_or(true),
                    initialized: p.initialized,
                    leader_id: p.leader_id,
                    initial_cluster: (!p.initial_cluster.is_empty())
                        .then(|| p.initial_cluster.as_str().into()),
                }),
                Ok(p) => {
                    debug!(
                        target,
                        answered = p.node_id,
                        "probe answered by another node"
                    );
                    None
                }
                Err(e) => {
                    debug!(target, error = %e, "probe failed");
                    None
                }
            }
        })
    }
}

/// A client for one peer: openraft's `RaftNetworkV2`, plus forwarding, probing and joining.
#[derive(Clone)]
pub struct PeerClient {
    target: NodeId,
    addr: String,
    local_id: NodeId,
    config: PeerNetworkConfig,
    /// The channel, or why there is none (an unusable address: every call fails with it).
    channel: Result<Channel, PeerError>,
    /// The peer address's reachability, shared with every other client of it.
    link: Arc<Mutex<Link>>,
    /// The wire version this client speaks to the peer (lowered once if the peer refuses ours).
    version: u32,
    /// Send AppendEntries pipelined on one `StreamAppend` stream; cleared for good when the
    /// peer does not know the call (an older kmsd), which then gets unary calls one at a time.
    pipelined: bool,
}

impl fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerClient")
            .field("target", &self.target)
            .field("addr", &self.addr)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl PeerClient {
    /// The peer's node id (0 if unknown).
    pub fn target(&self) -> NodeId {
        self.target
    }

    /// The peer's gRPC address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn grpc(channel: Channel) -> RaftPeerClient<Channel> {
        RaftPeerClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn protocol(&self, error: WireError) -> PeerError {
        PeerError::Protocol {
            addr: self.addr.clone(),
            error,
        }
    }

    fn status_error(&self, status: tonic::Status) -> PeerError {
        use tonic::Code;
        let addr = self.addr.clone();
        // tonic's own deadline (the `grpc-timeout` we set) surfaces as CANCELLED "Timeout expired".
        let deadline = status.code() == Code::Cancelled
            && status.message() == tonic::TimeoutExpired(()).to_string();
        match status.code() {
            Code::DeadlineExceeded => PeerError::Timeout {
                addr,
                timeout: Duration::ZERO,
            },
            _ if deadline => PeerError::Timeout {
                addr,
                timeout: Duration::ZERO,
            },
            Code::Unavailable | Code::Unknown | Code::Cancelled => PeerError::Unreachable {
                addr,
                detail: status.message().to_string(),
            },
            code => PeerError::Refused {
                addr,
                code,
                message: status.message().to_string(),
            },
        }
    }

    /// One unary call within `budget`: the request is built by `build` for a wire version and
    /// sent by `send`; a version refusal is retried once in the version the peer names.
    async fn call<Req, Resp, Fut>(
        &mut self,
        budget: Duration,
        build: impl Fn(u32) -> Req,
        send: impl Fn(RaftPeerClient<Channel>, tonic::Request<Req>) -> Fut,
    ) -> Result<Resp, PeerError>
    where
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
        Resp: HasVersion,
    {
        let channel = self.channel.clone()?;
        let first = self.version;
        let attempt = async {
            let mut version = first;
            loop {
                let mut request = self.addressed(build(version));
                request.set_timeout(budget);
                match send(Self::grpc(channel.clone()), request).await {
                    Ok(r) => return Ok((version, r.into_inner())),
                    Err(status) => match wire::fallback_version(&status, version) {
                        Some(lower) => {
                            info!(peer = %self.addr, from = version, to = lower, "peer refused our wire version; falling back");
                            version = lower;
                        }
                        None => return Err(status),
                    },
                }
            }
        };
        let result = match tokio::time::timeout(budget, attempt).await {
            Err(_) => Err(PeerError::Timeout {
                addr: self.addr.clone(),
                timeout: budget,
            }),
            Ok(Err(status)) => Err(match self.status_error(status) {
                PeerError::Timeout { addr, .. } => PeerError::Timeout {
                    addr,
                    timeout: budget,
                },
                e => e,
            }),
            Ok(Ok((version, resp))) => {
                self.version = version;
                wire::check_version(resp.version())
                    .map(|_| resp)
                    .map_err(|e| self.protocol(e))
            }
        };
        self.record(&result);
        result
    }

    /// A request that names its sender and, when known, the node it is meant for (the peer
    /// refuses a call meant for another node).
    fn addressed<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let md = request.metadata_mut();
        md.insert(crate::grpc::FROM_NODE_KEY, self.local_id.into());
        if self.target != 0 {
            md.insert(crate::grpc::TO_NODE_KEY, self.target.into());
        }
        request
    }

    /// Record a call's outcome in the peer's shared reachability record.
    fn record<T>(&self, result: &Result<T, PeerError>) {
        self.link
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(result);
    }

    /// Whether a Raft call (or a forwarded write) may try the peer now: while a peer that
    /// stopped answering waits for its next attempt, calls fail at once as `Unreachable`.
    fn admit(&self) -> Result<(), PeerError> {
        let gate = self
            .link
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .gate();
        gate.map_err(|wait| PeerError::Unreachable {
            addr: self.addr.clone(),
            detail: format!("not answering; next attempt in {} ms", wait.as_millis()),
        })
    }

    /// One `StreamAppend` answer as openraft's result.
    fn stream_answer(&self, msg: pb::StreamAppendResponse) -> Result<StreamAppendResult, RPCError> {
        use pb::stream_append_response::Result as R;
        wire::check_version(msg.version)
            .map_err(|e| self.rpc_error(RPCTypes::AppendEntries, self.protocol(e)))?;
        let answer = msg.result.map(|r| match r {
            R::StreamAppendResult(b) => Ok(b),
            R::RaftError(b) => Err(b),
        });
        self.raft_answer(
            RPCTypes::AppendEntries,
            "stream append result",
            "stream append result",
            answer,
        )
    }

    /// A Raft RPC's answer as openraft's result: `Ok` holds the encoded reply (decoded as
    /// `what`), `Err` the remote node's fatal error; no answer at all is a protocol error
    /// naming `missing`.
    fn raft_answer<T: serde::de::DeserializeOwned>(
        &self,
        action: RPCTypes,
        what: &'static str,
        missing: &'static str,
        answer: Option<Result<Bytes, Bytes>>,
    ) -> Result<T, RPCError> {
        match answer {
            Some(Ok(b)) => decode(what, &b).map_err(|e| self.rpc_error(action, self.protocol(e))),
            Some(Err(b)) => Err(RPCError::Unreachable(self.remote_fatal(&b))),
            None => Err(self.rpc_error(action, self.missing(missing))),
        }
    }

    /// The openraft error for a failed Raft RPC.
    fn rpc_error(&self, action: RPCTypes, e: PeerError) -> RPCError {
        match e {
            PeerError::Timeout { timeout, .. } => RPCError::Timeout(Timeout {
                action,
                id: self.local_id,
                target: self.target,
                timeout,
            }),
            e => RPCError::Unreachable(Unreachable::new(&e)),
        }
    }

    /// The openraft error for a Raft error the peer reported (its Raft node failed or stopped):
    /// openraft's network API has no remote-error slot for Raft RPCs, so it is `Unreachable`
    /// (back off), carrying the rebuilt remote error.
    fn remote_fatal(&self, bytes: &[u8]) -> Unreachable {
        match decode::<RaftError>("raft error", bytes) {
            Ok(e) => Unreachable::new(&RemoteError::new(self.target, e)),
            Err(e) => Unreachable::new(&self.protocol(e)),
        }
    }

    fn encode_payload<T: serde::Serialize>(
        &self,
        what: &'static str,
        v: &T,
    ) -> Result<Bytes, PeerError> {
        encode(what, v)
            .map(Bytes::from)
            .map_err(|e| self.protocol(e))
    }

    fn missing(&self, what: &'static str) -> PeerError {
        self.protocol(WireError::Missing(what))
    }

    async fn vote_call(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
        pre_vote: bool,
    ) -> Result<VoteResponse, RPCError> {
        self.admit()
            .map_err(|e| self.rpc_error(RPCTypes::Vote, e))?;
        let payload = self
            .encode_payload("vote request", &rpc)
            .map_err(|e| self.rpc_error(RPCTypes::Vote, e))?;
        let build = |version| pb::VoteRequest {
            version,
            vote_request: payload.clone(),
        };
        let resp = if pre_vote {
            self.call(option.soft_ttl(), build, |mut c, r| async move {
                c.pre_vote(r).await
            })
            .await
        } else {
            self.call(option.soft_ttl(), build, |mut c, r| async move {
                c.vote(r).await
            })
            .await
        };
        let resp = match resp {
            // A peer from before PreVote existed: grant, as openraft's default does.
            Err(PeerError::Refused {
                code: tonic::Code::Unimplemented,
                ..
            }) if pre_vote => return Ok(VoteResponse::new(rpc.vote, None, true)),
            r => r.map_err(|e| self.rpc_error(RPCTypes::Vote, e))?,
        };
        use pb::vote_response::Result as R;
        let answer = resp.result.map(|r| match r {
            R::VoteResponse(b) => Ok(b),
            R::RaftError(b) => Err(b),
        });
        self.raft_answer(RPCTypes::Vote, "vote response", "vote result", answer)
    }

    /// Forward a write to this peer, which should be the leader.
    pub async fn forward_write(
        &mut self,
        cmd: impl Into<RaftCommand>,
    ) -> Result<ForwardedWrite, ForwardError> {
        self.admit()?;
        let cmd: RaftCommand = cmd.into();
        let payload = self.encode_payload("command", &cmd)?;
        let from = self.local_id;
        let resp = self
            .call(
                self.config.forward_timeout,
                |version| pb::ForwardWriteRequest {
                    version,
                    command: payload.clone(),
                    from_node_id: from,
                },
                |mut c, r| async move { c.forward_write(r).await },
            )
            .await?;
        use pb::forward_write_response::Result as R;
        match resp.result {
            Some(R::Committed(w)) => Ok(ForwardedWrite {
                log_id: decode("log id", &w.log_id).map_err(|e| self.protocol(e))?,
                outcome: decode("outcome", &w.outcome).map_err(|e| self.protocol(e))?,
            }),
            Some(R::NotLeader(hint)) => Err(not_leader(hint)),
            Some(R::RaftError(b)) => Err(self.remote_write_error(&b)),
            None => Err(self.missing("forward write result").into()),
        }
    }

    fn remote_write_error(&self, bytes: &[u8]) -> ForwardError {
        match decode::<RaftError<ClientWriteError>>("raft error", bytes) {
            Ok(e) => ForwardError::Remote(Box::new(RemoteError::new(self.target, e))),
            Err(e) => self.protocol(e).into(),
        }
    }

    /// Probe this peer.
    pub async fn probe(&mut self) -> Result<PeerProbe, PeerError> {
        let from = self.local_id;
        let resp = self
            .call(
                self.config.probe_timeout,
                |version| pb::ProbeRequest {
                    version,
                    from_node_id: from,
                },
                |mut c, r| async move { c.probe(r).await },
            )
            .await?;
        Ok(PeerProbe::from_pb(resp))
    }

    /// Ask this peer to add node `id` to the cluster (as a learner, then a voter once caught
    /// up); returns the membership after the join. See [`PeerNetwork::join`] to follow leader
    /// hints.
    pub async fn join(&mut self, id: NodeId, info: NodeInfo) -> Result<Membership, ForwardError> {
        let node = pb::Member {
            id,
            name: info.name,
            grpc_address: info.grpc_addr,
            kms_address: info.kms_addr,
        };
        let resp = self
            .call(
                self.config.join_timeout,
                |version| pb::JoinRequest {
                    version,
                    node: Some(node.clone()),
                },
                |mut c, r| async move { c.join(r).await },
            )
            .await?;
        use pb::join_response::Result as R;
        match resp.result {
            Some(R::Membership(b)) => Ok(decode("membership", &b).map_err(|e| self.protocol(e))?),
            Some(R::NotLeader(hint)) => Err(not_leader(hint)),
            Some(R::RaftError(b)) => Err(self.remote_write_error(&b)),
            None => Err(self.missing("join result").into()),
        }
    }
}

fn not_leader(hint: pb::LeaderHint) -> ForwardError {
    ForwardError::NotLeader {
        leader_id: hint.leader_id,
        leader_addr: (!hint.leader_grpc_address.is_empty()).then_some(hint.leader_grpc_address),
    }
}

/// Responses carry the wire version they were encoded in.
trait HasVersion {
    fn version(&self) -> u32;
}

macro_rules! has_version {
    ($($t:ty),* $(,)?) => {
        $(impl HasVersion for $t {
            fn version(&self) -> u32 {
                self.version
            }
        })*
    };
}

has_version!(
    pb::VoteResponse,
    pb::AppendEntriesResponse,
    pb::InstallSnapshotResponse,
    pb::TransferLeaderResponse,
    pb::ForwardWriteResponse,
    pb::ProbeResponse,
    pb::JoinResponse,
);

/// Progress of a snapshot transfer, for its stall watchdog.
#[derive(Debug)]
struct SnapshotProgress {
    /// When the last message was handed to the transport, and whether it was the last one.
    last: Mutex<(Instant, bool)>,
}

impl SnapshotProgress {
    fn touch(&self, done: bool) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = (Instant::now(), done);
    }

    /// The limit that was exceeded, if the transfer is stalled.
    fn stalled(&self, config: &PeerNetworkConfig) -> Option<Duration> {
        let (at, done) = *self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let limit = if done {
            config.snapshot_install_timeout
        } else {
            config.snapshot_stall_timeout
        };
        (at.elapsed() > limit).then_some(limit)
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    /// Pipelined AppendEntries on one ordered `StreamAppend` stream (see raft.proto): requests go
    /// out as openraft produces them, answers come back in the same order. Each answer is due
    /// `soft_ttl` plus its request's transfer time (at `min_throughput`) after it was sent or
    /// after the previous answer, whichever is later; a late answer ends the stream with a
    /// timeout, as a unary call's would. A peer that does not know the call is sent unary
    /// AppendEntries one at a time from then on.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, Result<StreamAppendResult, RPCError>>, RPCError>>
    where
        S: futures::Stream<Item = AppendEntriesRequest> + Send + Unpin + 'static,
    {
        Box::pin(async move {
            // openraft waits out its replication backoff while it produces a request: take the
            // first one before anything else, so that a peer that keeps failing is retried at
            // the backoff's pace rather than in a tight loop (a call that fails before it reads
            // its input would skip the wait), and so that the budget for opening the stream
            // below starts when there is something to send — not before a backoff that may be
            // longer than the budget itself (which kept a returning peer from ever catching up).
            let mut input = input;
            let Some(first) = input.next().await else {
                return Ok(Box::pin(futures::stream::empty()) as BoxStream<'s, _>);
            };
            let input = futures::stream::iter([first]).chain(input);
            if !self.pipelined {
                return stream_append_sequential(self, input, option).await;
            }
            self.admit()
                .map_err(|e| self.rpc_error(RPCTypes::AppendEntries, e))?;
            let channel = match &self.channel {
                Ok(c) => c.clone(),
                Err(e) => return Err(self.rpc_error(RPCTypes::AppendEntries, e.clone())),
            };
            let me = self.clone();
            let version = self.version;
            // Requests sent and not yet answered: when each was sent and its encoded size.
            let unanswered: Arc<Mutex<std::collections::VecDeque<(Instant, usize)>>> =
                Arc::default();
            let sent = unanswered.clone();
            // The request half ends when the answers are dropped (session over, error, or the
            // peer ended its answers): openraft's request stream may wait for new entries
            // forever, and a request half left open keeps the HTTP/2 stream alive on both
            // sides (the peer's graceful shutdown would wait for it).
            let (end_requests, requests_ended) = tokio::sync::oneshot::channel::<()>();
            let requests = input.take_until(requests_ended).map(move |rpc| {
                let payload = encode("append entries request", &rpc).unwrap_or_default();
                sent.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push_back((Instant::now(), payload.len()));
                pb::AppendEntriesRequest {
                    version,
                    append_entries_request: payload.into(),
                }
            });
            let mut grpc = Self::grpc(channel);
            let open = grpc.stream_append(self.addressed(requests));
            // The peer answers the call once the first request is in: allow for connecting.
            let open_budget = option.soft_ttl() + me.config.connect_timeout;
            let opened = match tokio::time::timeout(open_budget, open).await {
                Err(_) => Err(PeerError::Timeout {
                    addr: me.addr.clone(),
                    timeout: open_budget,
                }),
                Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
                    info!(peer = %self.addr, "peer does not know StreamAppend; sending AppendEntries one at a time");
                    self.pipelined = false;
                    Err(me.status_error(status))
                }
                Ok(Err(status)) => Err(me.status_error(status)),
                Ok(Ok(r)) => Ok(r.into_inner()),
            };
            me.record(&opened);
            let answers = opened.map_err(|e| me.rpc_error(RPCTypes::AppendEntries, e))?;
            let soft_ttl = option.soft_ttl();
            let per_byte = 1.0 / me.config.min_throughput.max(1) as f64;
            let state = (answers, me, Instant::now(), false, end_requests);
            let out = futures::stream::unfold(
                state,
                move |(mut answers, me, mut last, done, end)| {
                    let unanswered = unanswered.clone();
                    async move {
                        if done {
                            return None;
                        }
                        let next = loop {
                            let due = unanswered
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .front()
                                .map(|(at, bytes)| {
                                    (*at).max(last)
                                        + soft_ttl
                                        + Duration::from_secs_f64(*bytes as f64 * per_byte)
                                });
                            // Nothing unanswered: wait for an answer or re-check shortly (the next
                            // request may be on its way).
                            let wait = due.map_or(Duration::from_millis(50), |d| {
                                d.saturating_duration_since(Instant::now())
                            });
                            tokio::select! {
                                m = answers.next() => break m,
                                _ = tokio::time::sleep(wait) => {
                                    if due.is_some_and(|d| Instant::now() >= d) {
                                        let e = PeerError::Timeout { addr: me.addr.clone(), timeout: wait };
                                        me.record::<()>(&Err(e.clone()));
                                        let e = me.rpc_error(RPCTypes::AppendEntries, e);
                                        return Some((Err(e), (answers, me, last, true, end)));
                                    }
                                }
                            }
                        };
                        let item = match next {
                            None => return None,
                            Some(Err(status)) => {
                                let e = me.status_error(status);
                                me.record::<()>(&Err(e.clone()));
                                Err(me.rpc_error(RPCTypes::AppendEntries, e))
                            }
                            Some(Ok(msg)) => {
                                unanswered
                                    .lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .pop_front();
                                last = Instant::now();
                                me.stream_answer(msg)
                            }
                        };
                        let done = item.is_err();
                        Some((item, (answers, me, last, done, end)))
                    }
                },
            );
            Ok(Box::pin(out) as BoxStream<'s, _>)
        })
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError> {
        self.admit()
            .map_err(|e| self.rpc_error(RPCTypes::AppendEntries, e))?;
        let payload = self
            .encode_payload("append entries request", &rpc)
            .map_err(|e| self.rpc_error(RPCTypes::AppendEntries, e))?;
        // Heartbeats get openraft's budget; a large batch also gets time to cross the wire.
        let transfer = Duration::from_secs_f64(
            payload.len() as f64 / self.config.min_throughput.max(1) as f64,
        );
        let budget = option.soft_ttl() + transfer;
        let resp = self
            .call(
                budget,
                |version| pb::AppendEntriesRequest {
                    version,
                    append_entries_request: payload.clone(),
                },
                |mut c, r| async move { c.append_entries(r).await },
            )
            .await
            .map_err(|e| self.rpc_error(RPCTypes::AppendEntries, e))?;
        use pb::append_entries_response::Result as R;
        let answer = resp.result.map(|r| match r {
            R::AppendEntriesResponse(b) => Ok(b),
            R::RaftError(b) => Err(b),
        });
        self.raft_answer(
            RPCTypes::AppendEntries,
            "append entries response",
            "append entries result",
            answer,
        )
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RPCError> {
        self.vote_call(rpc, option, false).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RPCError> {
        self.vote_call(rpc, option, true).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse, StreamingError> {
        let unreachable = |e: PeerError| StreamingError::Unreachable(Unreachable::new(&e));
        self.admit().map_err(unreachable)?;
        let channel = self.channel.clone().map_err(unreachable)?;
        let version = self.version;
        let total = snapshot.snapshot.len();
        let header = pb::SnapshotHeader {
            vote: self
                .encode_payload("snapshot vote", &vote)
                .map_err(unreachable)?,
            meta: self
                .encode_payload("snapshot meta", &snapshot.meta)
                .map_err(unreachable)?,
            total_bytes: total as u64,
        };
        info!(
            target = self.target,
            last_log_index = snapshot.meta.last_log_id.as_ref().map(|l| l.index),
            bytes = total,
            "sending snapshot"
        );
        let data = Bytes::from(snapshot.snapshot);
        let chunk = self.config.snapshot_chunk_bytes.max(1);
        let chunks = total.div_ceil(chunk);
        let progress = Arc::new(SnapshotProgress {
            last: Mutex::new((Instant::now(), false)),
        });
        let first = pb::SnapshotChunk {
            version,
            part: Some(pb::snapshot_chunk::Part::Header(header)),
        };
        let touch = progress.clone();
        let messages = std::iter::once(first)
            .chain((0..chunks).map(move |i| pb::SnapshotChunk {
                version,
                part: Some(pb::snapshot_chunk::Part::Data(
                    data.slice(i * chunk..((i + 1) * chunk).min(total)),
                )),
            }))
            .enumerate()
            .map(move |(i, m)| {
                touch.touch(i == chunks);
                m
            });
        let mut client = Self::grpc(channel);
        let rpc = client.install_snapshot(self.addressed(futures::stream::iter(messages)));
        let config = self.config.clone();
        let watchdog = async {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if let Some(limit) = progress.stalled(&config) {
                    return limit;
                }
            }
        };
        let resp = tokio::select! {
            r = rpc => r,
            closed = cancel => return Err(StreamingError::Closed(closed)),
            limit = watchdog => {
                return Err(StreamingError::Timeout(Timeout {
                    action: RPCTypes::InstallSnapshot,
                    id: self.local_id,
                    target: self.target,
                    timeout: limit,
                }));
            }
        };
        let resp = match resp {
            Ok(r) => r.into_inner(),
            Err(status) => {
                if let Some(lower) = wire::fallback_version(&status, version) {
                    // Retried by openraft after its backoff, then in the peer's version.
                    self.version = lower;
                }
                let e = self.status_error(status);
                self.record::<()>(&Err(e.clone()));
                return Err(unreachable(e));
            }
        };
        self.record(&Ok(()));
        wire::check_version(resp.version).map_err(|e| unreachable(self.protocol(e)))?;
        use pb::install_snapshot_response::Result as R;
        match resp.result {
            Some(R::SnapshotResponse(b)) => {
                decode("snapshot response", &b).map_err(|e| unreachable(self.protocol(e)))
            }
            Some(R::RaftError(b)) => Err(StreamingError::Unreachable(self.remote_fatal(&b))),
            None => Err(unreachable(self.missing("snapshot result"))),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse, RPCError> {
        self.admit()
            .map_err(|e| self.rpc_error(RPCTypes::TransferLeader, e))?;
        let payload = self
            .encode_payload("transfer leader request", &req)
            .map_err(|e| self.rpc_error(RPCTypes::TransferLeader, e))?;
        let resp = self
            .call(
                option.soft_ttl(),
                |version| pb::TransferLeaderRequest {
                    version,
                    transfer_leader_request: payload.clone(),
                },
                |mut c, r| async move { c.transfer_leader(r).await },
            )
            .await
            .map_err(|e| self.rpc_error(RPCTypes::TransferLeader, e))?;
        use pb::transfer_leader_response::Result as R;
        let answer = resp.result.map(|r| match r {
            R::TransferLeaderResponse(b) => Ok(b),
            R::RaftError(b) => Err(b),
        });
        self.raft_answer(
            RPCTypes::TransferLeader,
            "transfer leader response",
            "transfer leader result",
            answer,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable() -> Result<(), PeerError> {
        Err(PeerError::Unreachable {
            addr: "p:1689".into(),
            detail: "tcp connect error".into(),
        })
    }

    fn timeout() -> Result<(), PeerError> {
        Err(PeerError::Timeout {
            addr: "p:1689".into(),
            timeout: Duration::from_millis(100),
        })
    }

    #[test]
    fn a_failing_peer_is_left_alone_longer_each_time_up_to_the_cap() {
        let mut link = Link::default();
        assert!(link.gate().is_ok(), "a new peer is tried at once");
        let mut waits = Vec::new();
        for _ in 0..8 {
            link.record(&unreachable());
            waits.push(link.gate().expect_err("held back after a failure"));
        }
        for pair in waits.windows(2) {
            assert!(pair[1] + Duration::from_millis(50) >= pair[0], "{waits:?}");
        }
        assert!(waits[0] <= FIRST_RETRY_DELAY, "{waits:?}");
        assert!(waits[7] <= MAX_RETRY_DELAY, "{waits:?}");
        assert!(waits[7] > MAX_RETRY_DELAY / 2, "{waits:?}");
    }

    #[test]
    fn any_answer_reopens_the_gate() {
        let mut link = Link::default();
        for _ in 0..5 {
            link.record(&unreachable());
        }
        assert!(link.gate().is_err());
        // A refusal is an answer too: the peer is there.
        link.record::<()>(&Err(PeerError::Refused {
            addr: "p:1689".into(),
            code: tonic::Code::FailedPrecondition,
            message: "misdirected".into(),
        }));
        assert!(link.gate().is_ok());
        assert_eq!(link.failures, 0);
    }

    #[test]
    fn a_timeout_right_after_an_answer_is_slowness_not_an_outage() {
        let mut link = Link::default();
        link.record(&Ok(()));
        link.record(&timeout());
        assert!(
            link.gate().is_ok(),
            "the peer answered within RECENT_ANSWER"
        );
        // Never answered: a timeout counts as a failure.
        let mut silent = Link::default();
        silent.record(&timeout());
        assert!(silent.gate().is_err());
    }
}
