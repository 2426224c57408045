//! The `kms.raft.v1.RaftPeer` server: decodes peers' messages and hands them to the local Raft
//! node.
//!
//! Input problems (unknown version, undecodable payload, a snapshot stream out of order or too
//! large) are answered with a [`tonic::Status`] converted from a [`WireError`]; nothing a peer
//! sends can panic this code. Errors of the Raft node itself travel back inside the response as
//! encoded openraft errors, so the caller can rebuild them.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt as _;

use kms_api::raft::v1 as pb;
use kms_api::raft::v1::raft_peer_server::{RaftPeer, RaftPeerServer};
use kms_store::openraft::async_runtime::watch::WatchReceiver;
use kms_store::openraft::errors::ClientWriteError as OpenraftClientWriteError;
use kms_store::openraft::errors::RaftError as OpenraftRaftError;
use kms_store::types::{
    AppendEntriesRequest, ChangeMembers, Fatal, ForwardToLeader, Membership, NodeId, NodeInfo,
    Raft, RaftCommand, RaftError, RaftMetrics, ServerState, Snapshot, SnapshotMeta,
    TransferLeaderRequest, Vote, VoteRequest,
};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use super::wire::{WireError, check_version, decode, encode};
use super::{FROM_NODE_KEY, TO_NODE_KEY};

/// The answers of a `StreamAppend` call.
type AnswerStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::StreamAppendResponse, Status>> + Send>>;

/// Largest message either side of `RaftPeer` accepts (an AppendEntries carrying openraft's
/// `max_payload_entries` record batches can be tens of megabytes).
pub const MAX_MESSAGE_BYTES: usize = 128 << 20;

/// Default largest snapshot a node accepts (a million clients is about 100 MB).
pub const DEFAULT_MAX_SNAPSHOT_BYTES: u64 = 4 << 30;

/// A node's readiness, computed when a peer probes it.
pub type ReadinessFn = Arc<dyn Fn() -> crate::node::Readiness + Send + Sync>;

/// The `RaftPeer` service of one node.
#[derive(Clone)]
pub struct RaftPeerService {
    raft: Raft,
    node_id: NodeId,
    info: NodeInfo,
    max_snapshot_bytes: u64,
    /// Turns true when the node stops: open `StreamAppend` streams end then, so the server's
    /// graceful shutdown does not wait for peers that keep theirs open.
    closing: Option<tokio::sync::watch::Receiver<bool>>,
    /// Serve `StreamAppend` (false: answer UNIMPLEMENTED, as a kmsd from before the call did).
    stream_append: bool,
    /// Calls refused because they were addressed to another node.
    refused: Arc<AtomicU64>,
    /// When a refusal was last logged (one line a minute at most).
    refusal_logged: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    /// This node's normalized `--initial-cluster` (empty: none).
    initial_cluster: String,
    /// This node's readiness, told to probing peers (kmsd's `/readyz` rule).
    readiness: Option<ReadinessFn>,
}

impl fmt::Debug for RaftPeerService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RaftPeerService")
            .field("node_id", &self.node_id)
            .field("info", &self.info)
            .field("max_snapshot_bytes", &self.max_snapshot_bytes)
            .finish_non_exhaustive()
    }
}

impl RaftPeerService {
    /// The service for the node `node_id` (described by `info`) running `raft`.
    pub fn new(raft: Raft, node_id: NodeId, info: NodeInfo) -> Self {
        RaftPeerService {
            raft,
            node_id,
            info,
            max_snapshot_bytes: DEFAULT_MAX_SNAPSHOT_BYTES,
            closing: None,
            stream_append: true,
            initial_cluster: String::new(),
            refused: Arc::default(),
            refusal_logged: Arc::default(),
            readiness: None,
        }
    }

    /// Tell probing peers this node's `--initial-cluster` (nodes forming a new cluster compare
    /// their lists before they initialize).
    pub fn with_initial_cluster(mut self, list: &std::collections::BTreeMap<u64, String>) -> Self {
        self.initial_cluster = crate::view::normalized_initial_cluster(list);
        self
    }

    /// Answer `StreamAppend` with UNIMPLEMENTED, like a kmsd from before the call: peers then
    /// replicate to this node with unary AppendEntries (rolling-upgrade tests).
    pub fn without_stream_append(mut self) -> Self {
        self.stream_append = false;
        self
    }

    /// End open `StreamAppend` streams once `closing` turns true (the node is stopping).
    pub fn with_closing(mut self, closing: tokio::sync::watch::Receiver<bool>) -> Self {
        self.closing = Some(closing);
        self
    }

    /// Refuse snapshots larger than `bytes` (default [`DEFAULT_MAX_SNAPSHOT_BYTES`]).
    pub fn with_max_snapshot_bytes(mut self, bytes: u64) -> Self {
        self.max_snapshot_bytes = bytes;
        self
    }

    /// Answer probes with this node's readiness (`ready`, `not_ready_reason`), so that peers
    /// advertise it (DNS, health) only while it is ready.
    pub fn with_readiness(mut self, readiness: ReadinessFn) -> Self {
        self.readiness = Some(readiness);
        self
    }

    /// Count of calls refused as misdirected (for a metric).
    pub fn refusals(&self) -> Arc<AtomicU64> {
        self.refused.clone()
    }

    /// Refuse a call addressed to another node id: the sender's membership names this address
    /// for another node (an address reused, a node moved, a second process started with
    /// another node's id on another address). Senders name themselves and the intended receiver
    /// in the metadata [`FROM_NODE_KEY`] / [`TO_NODE_KEY`]; a call without a receiver (a kmsd
    /// from before, or an address-only probe or join) is accepted.
    fn check_addressee<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let id = |key| {
            request
                .metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|v| *v != 0)
        };
        let (from, to) = (id(FROM_NODE_KEY), id(TO_NODE_KEY));
        let problem = match (from, to) {
            (_, Some(to)) if to != self.node_id => format!(
                "misdirected call: addressed to node {to}, but this is node {} ({}); the \
                 sender's membership lists this address for node {to}",
                self.node_id, self.info.grpc_addr
            ),
            _ => return Ok(()),
        };
        self.refused.fetch_add(1, Ordering::Relaxed);
        let mut last = self
            .refusal_logged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60)) {
            *last = Some(std::time::Instant::now());
            warn!(
                from = from.unwrap_or(0),
                to = to.unwrap_or(0),
                peer = request.remote_addr().map(tracing::field::display),
                "{problem}"
            );
        }
        Err(Status::failed_precondition(problem))
    }

    /// The tonic service, with message size limits set, ready for `Router::add_service`.
    pub fn into_server(self) -> RaftPeerServer<Self> {
        RaftPeerServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow_watched().clone()
    }

    /// A hint naming the leader this node knows, if any.
    fn leader_hint(
        &self,
        leader_id: Option<NodeId>,
        leader_node: Option<&NodeInfo>,
    ) -> pb::LeaderHint {
        let m = self.metrics();
        let leader_id = leader_id.or(m.current_leader);
        let node = leader_node.cloned().or_else(|| {
            leader_id.and_then(|id| m.membership_config.membership().get_node(&id).cloned())
        });
        pb::LeaderHint {
            leader_id,
            leader_grpc_address: node
                .as_ref()
                .map(|n| n.grpc_addr.clone())
                .unwrap_or_default(),
            leader_name: node.map(|n| n.name).unwrap_or_default(),
        }
    }

    fn forward_hint(&self, f: &ForwardToLeader) -> pb::LeaderHint {
        self.leader_hint(f.leader_id, f.leader_node.as_ref())
    }

    async fn vote_impl(
        &self,
        req: pb::VoteRequest,
        pre_vote: bool,
    ) -> Result<pb::VoteResponse, WireError> {
        let version = check_version(req.version)?;
        let rpc: VoteRequest = decode("vote request", &req.vote_request)?;
        let result = if pre_vote {
            self.raft.pre_vote(rpc).await
        } else {
            self.raft.vote(rpc).await
        };
        use pb::vote_response::Result as R;
        let result = match result {
            Ok(resp) => R::VoteResponse(encode("vote response", &resp)?.into()),
            Err(e) => R::RaftError(encode("raft error", &e)?.into()),
        };
        Ok(pb::VoteResponse {
            version,
            result: Some(result),
        })
    }

    async fn append_impl(
        &self,
        req: pb::AppendEntriesRequest,
    ) -> Result<pb::AppendEntriesResponse, WireError> {
        let version = check_version(req.version)?;
        let rpc: AppendEntriesRequest =
            decode("append entries request", &req.append_entries_request)?;
        use pb::append_entries_response::Result as R;
        let result = match self.raft.append_entries(rpc).await {
            Ok(resp) => R::AppendEntriesResponse(encode("append entries response", &resp)?.into()),
            Err(e) => R::RaftError(encode("raft error", &e)?.into()),
        };
        Ok(pb::AppendEntriesResponse {
            version,
            result: Some(result),
        })
    }

    /// Pipelined AppendEntries (`Raft::stream_append`): the first request fixes the stream's
    /// version and is checked before the answer stream opens (so a version refusal is the
    /// call's status, as for a unary call); a later request that does not decode, or carries
    /// another version, ends the input, and its status follows the last answer.
    async fn stream_append_impl(
        &self,
        mut incoming: Streaming<pb::AppendEntriesRequest>,
    ) -> Result<AnswerStream, Status> {
        if !self.stream_append {
            return Err(Status::unimplemented(
                "StreamAppend is not served by this node",
            ));
        }
        let Some(first) = incoming.message().await? else {
            return Ok(Box::pin(futures::stream::empty()));
        };
        let version = check_version(first.version)?;
        let first: AppendEntriesRequest =
            decode("append entries request", &first.append_entries_request)?;
        let failure: Arc<Mutex<Option<Status>>> = Arc::default();
        let fail = failure.clone();
        let rest = futures::stream::unfold(Some(incoming), move |state| {
            let fail = fail.clone();
            async move {
                let mut incoming = state?;
                let decoded = match incoming.message().await {
                    Ok(None) => return None,
                    Ok(Some(m)) if m.version != version => Err(WireError::Invalid(format!(
                        "stream started in wire version {version}, then sent {}",
                        m.version
                    ))
                    .into()),
                    Ok(Some(m)) => decode::<AppendEntriesRequest>(
                        "append entries request",
                        &m.append_entries_request,
                    )
                    .map_err(Status::from),
                    Err(status) => Err(status),
                };
                match decoded {
                    Ok(req) => Some((req, Some(incoming))),
                    Err(status) => {
                        *fail.lock().unwrap_or_else(PoisonError::into_inner) = Some(status);
                        None
                    }
                }
            }
        });
        let input = futures::stream::once(async move { first }).chain(rest);
        let answers = self.raft.stream_append(input).map(move |item| {
            use pb::stream_append_response::Result as R;
            let result = match item {
                Ok(r) => {
                    encode("stream append result", &r).map(|b| R::StreamAppendResult(b.into()))
                }
                Err(fatal) => {
                    let e: RaftError = RaftError::Fatal(fatal);
                    encode("raft error", &e).map(|b| R::RaftError(b.into()))
                }
            };
            result
                .map(|r| pb::StreamAppendResponse {
                    version,
                    result: Some(r),
                })
                .map_err(Status::from)
        });
        let tail = futures::stream::once(async move {
            failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                .map(Err)
        })
        .filter_map(|failed| async move { failed });
        let closing = self.closing.clone();
        let stopped = async move {
            match closing {
                Some(mut rx) => {
                    while !*rx.borrow_and_update() {
                        if rx.changed().await.is_err() {
                            return;
                        }
                    }
                }
                None => futures::future::pending::<()>().await,
            }
        };
        Ok(Box::pin(answers.chain(tail).take_until(stopped)))
    }

    async fn install_snapshot_impl(
        &self,
        mut stream: Streaming<pb::SnapshotChunk>,
    ) -> Result<pb::InstallSnapshotResponse, Status> {
        let first = stream
            .message()
            .await?
            .ok_or(WireError::Missing("snapshot header"))?;
        let version = check_version(first.version)?;
        let header = match first.part {
            Some(pb::snapshot_chunk::Part::Header(h)) => h,
            _ => {
                return Err(WireError::Invalid(
                    "the first snapshot chunk must carry the header".into(),
                )
                .into());
            }
        };
        let vote: Vote = decode("snapshot vote", &header.vote)?;
        let meta: SnapshotMeta = decode("snapshot meta", &header.meta)?;
        let total = header.total_bytes;
        if total > self.max_snapshot_bytes {
            return Err(WireError::SnapshotTooLarge {
                announced: total,
                limit: self.max_snapshot_bytes,
            }
            .into());
        }
        let total = usize::try_from(total).map_err(|_| WireError::SnapshotTooLarge {
            announced: total,
            limit: usize::MAX as u64,
        })?;
        // Grow as data arrives rather than trusting the announced size with one allocation.
        let mut data = Vec::with_capacity(total.min(64 << 20));
        while let Some(chunk) = stream.message().await? {
            if chunk.version != version {
                return Err(WireError::Invalid(format!(
                    "snapshot chunk in wire version {} inside a version {version} stream",
                    chunk.version
                ))
                .into());
            }
            match chunk.part {
                Some(pb::snapshot_chunk::Part::Data(d)) => {
                    if d.len() > total - data.len() {
                        return Err(WireError::Invalid(format!(
                            "snapshot data exceeds the announced {total} bytes"
                        ))
                        .into());
                    }
                    data.extend_from_slice(&d);
                }
                Some(pb::snapshot_chunk::Part::Header(_)) => {
                    return Err(WireError::Invalid("a second snapshot header".into()).into());
                }
                None => return Err(WireError::Missing("snapshot chunk content").into()),
            }
        }
        if data.len() != total {
            return Err(WireError::Invalid(format!(
                "snapshot stream ended after {} of {total} bytes",
                data.len()
            ))
            .into());
        }
        // A snapshot openraft cannot install is a storage error, which stops the Raft node: make
        // sure the data decodes before handing it over, so a bad peer cannot take this node down.
        let data = tokio::task::spawn_blocking(move || {
            kms_store::codec::decode::<kms_core::State>("snapshot data", &data)
                .map(|_| data)
                .map_err(|e| WireError::Decode {
                    what: "snapshot data",
                    detail: e.to_string(),
                })
        })
        .await
        .map_err(|e| Status::internal(format!("snapshot check: {e}")))??;
        info!(
            from_vote = %vote,
            last_log_id = ?meta.last_log_id,
            bytes = total,
            "installing snapshot received from the leader"
        );
        let snapshot = Snapshot {
            meta,
            snapshot: data,
        };
        use pb::install_snapshot_response::Result as R;
        let result = match self.raft.install_full_snapshot(vote, snapshot).await {
            Ok(resp) => R::SnapshotResponse(encode("snapshot response", &resp)?.into()),
            Err(fatal) => R::RaftError(fatal_bytes(fatal)?),
        };
        Ok(pb::InstallSnapshotResponse {
            version,
            result: Some(result),
        })
    }

    async fn transfer_leader_impl(
        &self,
        req: pb::TransferLeaderRequest,
    ) -> Result<pb::TransferLeaderResponse, WireError> {
        let version = check_version(req.version)?;
        let rpc: TransferLeaderRequest =
            decode("transfer leader request", &req.transfer_leader_request)?;
        use pb::transfer_leader_response::Result as R;
        let result = match self.raft.handle_transfer_leader(rpc).await {
            Ok(resp) => {
                R::TransferLeaderResponse(encode("transfer leader response", &resp)?.into())
            }
            Err(fatal) => R::RaftError(fatal_bytes(fatal)?),
        };
        Ok(pb::TransferLeaderResponse {
            version,
            result: Some(result),
        })
    }

    async fn forward_write_impl(
        &self,
        req: pb::ForwardWriteRequest,
    ) -> Result<pb::ForwardWriteResponse, WireError> {
        let version = check_version(req.version)?;
        let command: RaftCommand = decode("command", &req.command)?;
        debug!(from = req.from_node_id, %command, "forwarded write");
        use pb::forward_write_response::Result as R;
        let result = match self.raft.client_write(command).await {
            Ok(resp) => R::Committed(pb::WriteCommitted {
                log_id: encode("log id", &resp.log_id)?.into(),
                outcome: encode("outcome", &resp.data)?.into(),
            }),
            Err(OpenraftRaftError::APIError(OpenraftClientWriteError::ForwardToLeader(f))) => {
                R::NotLeader(self.forward_hint(&f))
            }
            Err(e) => R::RaftError(encode("raft error", &e)?.into()),
        };
        Ok(pb::ForwardWriteResponse {
            version,
            result: Some(result),
        })
    }

    fn probe_impl(&self, req: pb::ProbeRequest) -> Result<pb::ProbeResponse, WireError> {
        let version = check_version(req.version)?;
        let readiness = self.readiness.as_ref().map(|f| f());
        let m = self.metrics();
        Ok(pb::ProbeResponse {
            version,
            node_id: self.node_id,
            name: self.info.name.clone(),
            term: m.current_term,
            has_leader: m.current_leader.is_some(),
            leader_id: m.current_leader,
            last_applied_index: m.last_applied.map(|l| l.index),
            last_log_index: m.last_log_index,
            role: role(m.state) as i32,
            grpc_address: self.info.grpc_addr.clone(),
            kms_address: self.info.kms_addr.clone(),
            raft_stopped: m
                .running_state
                .as_ref()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default(),
            is_member: m
                .membership_config
                .membership()
                .get_node(&self.node_id)
                .is_some(),
            initial_cluster: self.initial_cluster.clone(),
            initialized: m.membership_config.membership().nodes().next().is_some(),
            ready: readiness.as_ref().map(|r| r.ready),
            not_ready_reason: readiness
                .filter(|r| !r.ready)
                .map(|r| r.reason)
                .unwrap_or_default(),
        })
    }

    async fn join_impl(&self, req: pb::JoinRequest) -> Result<pb::JoinResponse, WireError> {
        let version = check_version(req.version)?;
        let node = req.node.ok_or(WireError::Missing("joining node"))?;
        if node.id == 0 {
            return Err(WireError::Invalid(
                "node id 0 is not a valid member id".into(),
            ));
        }
        if node.grpc_address.is_empty() {
            return Err(WireError::Missing("joining node's gRPC address"));
        }
        let id = node.id;
        let info = NodeInfo {
            name: node.name,
            grpc_addr: node.grpc_address,
            kms_addr: node.kms_address,
        };
        use pb::join_response::Result as R;
        let reply = |result| pb::JoinResponse {
            version,
            result: Some(result),
        };
        let m = self.metrics();
        if m.current_leader != Some(self.node_id) {
            return Ok(reply(R::NotLeader(self.leader_hint(None, None))));
        }
        let membership = m.membership_config.membership();
        let is_voter = membership.voter_ids().any(|v| v == id);
        if is_voter && membership.get_node(&id) == Some(&info) {
            info!(node_id = id, "join: already a voter");
            return Ok(reply(R::Membership(
                encode("membership", membership)?.into(),
            )));
        }

        info!(node_id = id, node = %info, "join: adding as learner and waiting for it to catch up");
        if let Err(e) = self.raft.add_learner(id, info, true).await {
            return Ok(reply(self.write_error(e)?));
        }
        if !is_voter {
            info!(node_id = id, "join: caught up, promoting to voter");
            let change = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
            if let Err(e) = self.raft.change_membership(change, false).await {
                return Ok(reply(self.write_error(e)?));
            }
        }
        let membership: Membership = self.metrics().membership_config.membership().clone();
        Ok(reply(R::Membership(
            encode("membership", &membership)?.into(),
        )))
    }

    fn write_error(
        &self,
        e: RaftError<kms_store::types::ClientWriteError>,
    ) -> Result<pb::join_response::Result, WireError> {
        use pb::join_response::Result as R;
        Ok(match e {
            OpenraftRaftError::APIError(OpenraftClientWriteError::ForwardToLeader(f)) => {
                R::NotLeader(self.forward_hint(&f))
            }
            e => {
                warn!(error = %e, "join failed");
                R::RaftError(encode("raft error", &e)?.into())
            }
        })
    }
}

/// A fatal error of the local Raft node, encoded as the `RaftError` the caller rebuilds.
fn fatal_bytes(fatal: Fatal) -> Result<prost::bytes::Bytes, WireError> {
    let error: RaftError = RaftError::Fatal(fatal);
    Ok(encode("raft error", &error)?.into())
}

/// The proto role of an openraft server state.
fn role(state: ServerState) -> pb::RaftRole {
    match state {
        ServerState::Leader => pb::RaftRole::Leader,
        ServerState::Follower => pb::RaftRole::Follower,
        ServerState::Candidate => pb::RaftRole::Candidate,
        ServerState::Learner => pb::RaftRole::Learner,
        ServerState::Shutdown => pb::RaftRole::Shutdown,
    }
}

#[tonic::async_trait]
impl RaftPeer for RaftPeerService {
    async fn vote(
        &self,
        request: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        self.check_addressee(&request)?;
        Ok(Response::new(
            self.vote_impl(request.into_inner(), false).await?,
        ))
    }

    async fn pre_vote(
        &self,
        request: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        self.check_addressee(&request)?;
        Ok(Response::new(
            self.vote_impl(request.into_inner(), true).await?,
        ))
    }

    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        self.check_addressee(&request)?;
        Ok(Response::new(self.append_impl(request.into_inner()).await?))
    }

    type StreamAppendStream = AnswerStream;

    async fn stream_append(
        &self,
        request: Request<Streaming<pb::AppendEntriesRequest>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        self.check_addressee(&request)?;
        Ok(Response::new(
            self.stream_append_impl(request.into_inner()).await?,
        ))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::InstallSnapshotResponse>, Status> {
        self.check_addressee(&request)?;
        let resp = self.install_snapshot_impl(request.into_inner()).await;
        if let Err(status) = &resp {
            warn!(code = ?status.code(), message = status.message(), "snapshot refused");
        }
        Ok(Response::new(resp?))
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        self.check_addressee(&request)?;
        Ok(Response::new(
            self.transfer_leader_impl(request.into_inner()).await?,
        ))
    }

    async fn forward_write(
        &self,
        request: Request<pb::ForwardWriteRequest>,
    ) -> Result<Response<pb::ForwardWriteResponse>, Status> {
        self.check_addressee(&request)?;
        Ok(Response::new(
            self.forward_write_impl(request.into_inner()).await?,
        ))
    }

    async fn probe(
        &self,
        request: Request<pb::ProbeRequest>,
    ) -> Result<Response<pb::ProbeResponse>, Status> {
        self.check_addressee(&request)?;
        Ok(Response::new(self.probe_impl(request.into_inner())?))
    }

    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        self.check_addressee(&request)?;
        Ok(Response::new(self.join_impl(request.into_inner()).await?))
    }
}
