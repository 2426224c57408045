//! # kms-core — what a KMS host decides and remembers
//!
//! The pure logic of the kmsd cluster (DESIGN §2–§4), with the protocol facts of
//! `shared/kms/PROTOCOL.md` §8–§9:
//!
//! * [`catalog`] — products, SKUs, CSVLKs, host builds, compiled from `data/*.csv` at build time.
//! * [`pool`] — the three client-count pools (Windows, Office 2010, Office 2013+).
//! * [`policy`] — request → accept into a [`Pool`] or refuse with an HRESULT.
//! * [`config`] — the configuration every node must agree on ([`ReplicatedConfig`]).
//! * [`identity`] — the cluster's ePIDs and HwId ([`HostIdentity`]) and their generation.
//! * [`state`] — the replicated state machine: [`State::apply`]`(&`[`Command`]`) -> `[`Outcome`],
//!   client inventory, counts, seat limits.
//! * [`time`] — small date arithmetic on FILETIMEs.
//! * [`view`] — [`ClusterView`]: members, addresses and health as DNS and status pages see them.
//!
//! What this crate must never do: touch the network or disk at run time, read a clock, draw from
//! a global random number generator, spawn threads or tasks, use `unsafe`, or panic on untrusted
//! input. Time and randomness are parameters, so every replica that applies the same commands
//! reaches the same state.

pub mod catalog;
pub mod config;
pub mod identity;
pub mod policy;
pub mod pool;
mod record;
pub mod state;
pub mod time;
pub mod view;

pub use catalog::{Application, Csvlk, HostBuild, Product, Sku};
pub use config::{ConfigError, CountReport, ReplicatedConfig, SeatLimits, ServedGroups};
pub use identity::{HostIdentity, IdentityError};
pub use kms_wire::{Epid, FileTime, Guid, Hresult};
pub use policy::{ActivationInput, Refusal, RefusalReason, decide};
pub use pool::{PerPool, Pool};
pub use state::{
    ClientFilter, ClientRecord, Command, NodeRecord, Outcome, PoolCount, RecordOutcome,
    RecordRefusal, RecordRequest, RequestId, State,
};
pub use view::{ClusterView, MemberView};

/// A client machine id (CMID): random per Windows/Office installation.
pub type ClientMachineId = Guid;
/// A KMS counted id: the product group a request belongs to.
pub type KmsCountedId = Guid;
/// An application id: Windows, Office 2010 or Office 2013+.
pub type ApplicationId = Guid;
/// A SKU id (activation id): the edition.
pub type SkuId = Guid;
