//! # kms-cluster — the Raft node behind one logical KMS host
//!
//! Opens the node's store (`kms-store`), runs an openraft node over it, bootstraps a one-member
//! cluster on first start (the embedded default), initializes the cluster-wide host identity
//! once, and implements [`kms_host::Ledger`]: the KMS listener's decisions are made against the
//! replicated state and new clients are recorded through a batcher that coalesces concurrent
//! records into one Raft entry (≤ `batch_max_delay` or `batch_max_entries`). The leader proposes
//! `Prune` hourly so the inventory stays bounded.
//!
//! What this crate must never do: answer a client with a count that does not include it, lose
//! a record it acknowledged, or name openraft types except through `kms_store::types`.

/// Event id logged when the Raft leader changes (kmsd logs it).
pub const EVENT_LEADER_CHANGE: u32 = 40001;
/// Event id logged when a node enters degraded mode.
pub const EVENT_DEGRADED_ENTER: u32 = 40010;
/// Event id logged when a node leaves degraded mode.
pub const EVENT_DEGRADED_LEAVE: u32 = 40011;
/// Event id logged when the cluster membership changes.
pub const EVENT_MEMBERSHIP: u32 = 40020;
/// Event id logged once when a peer stops answering (warn) and once when it answers again
/// (info, with the outage's length).
pub const EVENT_PEER_UNREACHABLE: u32 = 40040;
/// Event id logged when a peer answers again after an outage.
pub const EVENT_PEER_REACHABLE: u32 = 40041;
/// Event id logged by the leader when replication to a reachable peer makes no progress.
pub const EVENT_REPLICATION_STALLED: u32 = 40042;
/// Event id logged when a leader loses contact with its quorum (it stops acting as leader).
pub const EVENT_QUORUM_LOST: u32 = 40043;
/// Event id logged when the node's storage fails (writes stop) or recovers.
pub const EVENT_STORAGE_FAILED: u32 = 40050;

mod batcher;
mod degraded;
pub mod grpc;
mod ledger;
mod network;
mod node;
pub mod sim;
mod view;
mod writer;

pub use degraded::{DegradedJournal, JournalEntry};
pub use ledger::ClusterLedger;
pub use network::{
    ForwardError, ForwardedWrite, PeerClient, PeerError, PeerNetwork, PeerNetworkConfig, PeerProbe,
};
pub use node::{
    ClusterError, MemberStatus, Node, NodeSettings, NodeStatus, PoolStatus, READY_MAX_BEHIND,
    Readiness,
};
pub use view::{NoProbe, PeerContact, Probe, ProbeAnswer, ProbeFuture};
pub use writer::{Forward, ForwardFuture, ForwardResult, NoForward, WriteError, Writer};
