//! The one place that names openraft's generic types.
//!
//! [`TypeConfig`] binds openraft to kmsd's types (log payload [`RaftCommand`] — a
//! [`kms_core::Command`] —, response
//! [`kms_core::Outcome`], node id `u64`, node metadata [`NodeInfo`], tokio). Everything else in
//! the project — kms-cluster above all — uses the aliases below instead of spelling
//! `openraft::X<TypeConfig>`, so an openraft upgrade touches this file and not the callers
//! (the habit of openraft's `examples/utils/declare_types.rs` and databend-meta's
//! `raft_types.rs`). The openraft crate itself is re-exported as [`crate::openraft`] for the
//! traits a caller implements (`RaftNetworkFactory`, `RaftNetworkV2`) and for `Config`.

use std::fmt;

use openraft::RaftTypeConfig;
use openraft::vote::RaftLeaderId;
use serde::Deserialize;
use serde::Serialize;

use crate::state_machine::StateMachineStore;

openraft::declare_raft_types!(
    /// openraft's type configuration for kmsd.
    pub TypeConfig:
        D = RaftCommand,
        R = kms_core::Outcome,
        NodeId = u64,
        Node = NodeInfo,
);

/// The Raft log payload: a [`kms_core::Command`].
///
/// A newtype only because openraft requires its application data to implement `Display` (for
/// its logs), which kms-core's `Command` does not. It is `serde(transparent)`, so the stored and
/// replicated bytes are exactly those of the `Command`; should kms-core implement `Display`
/// itself, `D` can become `kms_core::Command` without any data migration. Build one with
/// `command.into()` (which keeps compiling either way) and read it through `Deref`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RaftCommand(pub kms_core::Command);

impl From<kms_core::Command> for RaftCommand {
    fn from(c: kms_core::Command) -> Self {
        RaftCommand(c)
    }
}

impl std::ops::Deref for RaftCommand {
    type Target = kms_core::Command;
    fn deref(&self) -> &kms_core::Command {
        &self.0
    }
}

impl fmt::Display for RaftCommand {
    /// A one-line summary for logs: record batches show their size, not their contents.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 160;
        match &self.0 {
            kms_core::Command::Record { records, node, .. } => {
                write!(f, "Record({} clients from node {node})", records.len())
            }
            other => {
                let s = format!("{other:?}");
                match s.char_indices().nth(MAX) {
                    Some((i, _)) => write!(f, "{}…", &s[..i]),
                    None => f.write_str(&s),
                }
            }
        }
    }
}

/// What the cluster knows about a member, replicated in the Raft membership.
///
/// Per-node settings that peers need to reach a member; changing them goes through a membership
/// change (`kmsctl member add`), not through this node's config file alone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's name, as published in DNS (`<name>.<zone>`).
    pub name: String,
    /// `host:port` of the node's gRPC endpoint (Raft peers and admin API).
    pub grpc_addr: String,
    /// `host:port` of the node's KMS listener (1688).
    pub kms_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (grpc {}, kms {})",
            self.name, self.grpc_addr, self.kms_addr
        )
    }
}

/// A Raft node id.
pub type NodeId = u64;
/// The Raft handle of a kmsd node.
pub type Raft = openraft::Raft<TypeConfig, StateMachineStore>;
/// Raft runtime configuration (timeouts, snapshot policy, …).
pub type Config = openraft::Config;
/// When openraft builds a snapshot (and so compacts the log).
pub type SnapshotPolicy = openraft::SnapshotPolicy;
/// Leader, follower, candidate or learner.
pub type ServerState = openraft::ServerState;

/// The Raft term.
pub type Term = <TypeConfig as RaftTypeConfig>::Term;
/// A leader id (term + node).
pub type LeaderId = <TypeConfig as RaftTypeConfig>::LeaderId;
/// The committed form of a leader id, as stored in log ids.
pub type CommittedLeaderId = <LeaderId as RaftLeaderId>::Committed;
/// A log id (committed leader id + index).
pub type LogId = openraft::LogId<CommittedLeaderId>;
/// A vote.
pub type Vote = <TypeConfig as RaftTypeConfig>::Vote;
/// A log entry payload: blank, a [`RaftCommand`] or a membership.
pub type EntryPayload = openraft::EntryPayload<RaftCommand, NodeId, NodeInfo>;
/// A log entry.
pub type Entry = <TypeConfig as RaftTypeConfig>::Entry;
/// A cluster membership (voter configs + node metadata).
pub type Membership = openraft::Membership<NodeId, NodeInfo>;
/// A membership with the log id it was applied at.
pub type StoredMembership = openraft::StoredMembership<CommittedLeaderId, NodeId, NodeInfo>;
/// A membership change request (add voters, remove nodes, …).
pub type ChangeMembers = openraft::ChangeMembers<NodeId, NodeInfo>;
/// First and last log ids of the log store.
pub type LogState = openraft::LogState<TypeConfig>;

/// The bytes of a snapshot as shipped between nodes: one version byte then the encoded
/// [`kms_core::State`] (see [`crate::codec`]).
pub type SnapshotData = Vec<u8>;
/// Snapshot metadata: last included log id and membership.
pub type SnapshotMeta = openraft::SnapshotMeta<CommittedLeaderId, NodeId, NodeInfo>;
/// A snapshot: metadata plus [`SnapshotData`].
pub type Snapshot = openraft::Snapshot<CommittedLeaderId, NodeId, NodeInfo, SnapshotData>;

/// Raft metrics (term, leader, log ids, membership, replication).
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
/// Data-related subset of [`RaftMetrics`].
pub type RaftDataMetrics = openraft::metrics::RaftDataMetrics<TypeConfig>;
/// Server-related subset of [`RaftMetrics`].
pub type RaftServerMetrics = openraft::metrics::RaftServerMetrics<TypeConfig>;

/// RequestVote RPC request.
pub type VoteRequest = openraft::raft::VoteRequest<TypeConfig>;
/// RequestVote RPC response.
pub type VoteResponse = openraft::raft::VoteResponse<TypeConfig>;
/// AppendEntries RPC request.
pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
/// AppendEntries RPC response.
pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<TypeConfig>;
/// One answer of a pipelined append (`Raft::stream_append`).
pub type StreamAppendResult = openraft::raft::StreamAppendResult<TypeConfig>;
/// Response to a full snapshot transfer.
pub type SnapshotResponse = openraft::raft::SnapshotResponse<TypeConfig>;
/// TransferLeader RPC request.
pub type TransferLeaderRequest = openraft::raft::TransferLeaderRequest<TypeConfig>;
/// Successful response of `Raft::client_write`.
pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;
/// Result of `Raft::client_write`.
pub type ClientWriteResult = openraft::raft::ClientWriteResult<TypeConfig>;

/// Error of a Raft API call; `E` is the API-specific error.
pub type RaftError<E = openraft::errors::Infallible> = openraft::errors::RaftError<TypeConfig, E>;
/// API-specific error of `client_write`.
pub type ClientWriteError = openraft::errors::ClientWriteError<TypeConfig>;
/// "Not the leader; here is who is" — carried by write and read errors.
pub type ForwardToLeader = openraft::errors::ForwardToLeader<TypeConfig>;
/// API-specific error of membership changes.
pub type ChangeMembershipError = openraft::errors::ChangeMembershipError<CommittedLeaderId, NodeId>;
/// API-specific error of `Raft::initialize`.
pub type InitializeError = openraft::errors::InitializeError<TypeConfig>;
/// API-specific error of `Raft::ensure_linearizable`.
pub type LinearizableReadError = openraft::errors::LinearizableReadError<TypeConfig>;
/// An unrecoverable error: the Raft node stopped.
pub type Fatal = openraft::errors::Fatal<TypeConfig>;
/// Error of an RPC to a peer, as returned by a network implementation.
pub type RPCError<E = openraft::errors::Infallible> = openraft::errors::RPCError<TypeConfig, E>;
/// An error returned by the remote peer.
pub type RemoteError<E> = openraft::errors::RemoteError<TypeConfig, E>;
/// A network failure worth an immediate retry.
pub type NetworkError = openraft::errors::NetworkError<TypeConfig>;
/// The peer is unreachable; back off.
pub type Unreachable = openraft::errors::Unreachable<TypeConfig>;
/// An RPC timed out.
pub type Timeout = openraft::errors::Timeout<TypeConfig>;
/// Error of a snapshot transfer.
pub type StreamingError = openraft::errors::StreamingError<TypeConfig>;
/// openraft's storage error (what a [`crate::StoreError`] becomes inside Raft).
pub type StorageError = openraft::StorageError<TypeConfig>;
/// Replication to a peer was closed (e.g. leadership lost) — ends a snapshot transfer.
pub type ReplicationClosed = openraft::errors::ReplicationClosed;
