//! # kms-store — a kmsd node's durable storage
//!
//! What this crate is for: everything a node keeps on disk, in one sled database per data
//! directory.
//!
//! * [`LogStore`] — openraft's Raft log and vote (`RaftLogStorage`, `RaftLogReader`).
//! * [`StateMachineStore`] — openraft's state machine around [`kms_core::State`]
//!   (`RaftStateMachine`, `RaftSnapshotBuilder`), with [`StateMachineStore::read`] for the KMS
//!   hot path to read counts without a Raft round trip.
//! * Snapshots — the encoded `State` plus its log position; they double as the state
//!   machine's checkpoint (see [`Store`] for the durability and restart design).
//! * [`Journal`] — the degraded-mode journal (DESIGN §3).
//! * [`types`] — the one module that names openraft's generic types; kms-cluster uses these
//!   aliases and the re-exported [`openraft`] crate.
//! * An on-disk format header and a version byte on every stored value ([`codec`]).
//!
//! ## Layout
//!
//! * [`store`] — [`Store::open`]: the database, its trees, the header, restoring the state.
//! * [`log_store`], [`state_machine`], [`journal`] — the handles.
//! * [`codec`] — keys, versioned values, the header.
//! * [`error`] — [`StoreError`].
//!
//! ## What this crate must never do
//!
//! * Expose sled: no sled type appears in the public API; other crates must not depend on it.
//! * Decide anything about activations: it calls `kms_core::State::apply` and stores what
//!   comes out; the logic lives in kms-core.
//! * Read a clock or any other input during apply: replicas must stay identical.
//! * Panic on corrupt or foreign on-disk data: every decode returns a typed [`StoreError`].
//! * Tell openraft a log entry is durable before it has been flushed to disk.
//! * Open a store written in a newer format, or silently reinterpret unknown data.

pub mod codec;
pub mod error;
pub mod journal;
pub mod log_store;
pub mod state_machine;
pub mod store;
pub mod types;

pub use openraft;

pub use error::StoreError;
pub use journal::Journal;
pub use log_store::LogStore;
pub use state_machine::StateMachineStore;
pub use state_machine::StateSnapshotBuilder;
pub use store::RestoreReport;
pub use store::Store;
pub use types::NodeInfo;
pub use types::RaftCommand;
pub use types::TypeConfig;
