//! # kms-host — the KMS listener on TCP 1688
//!
//! Accepts KMS client connections, frames DCE/RPC PDUs with `kms_wire::rpc`, decodes KMS
//! requests with `kms_wire::kms`, and hands each well-formed activation to a [`Ledger`] — the
//! replicated store in production (`kms-cluster`), an in-memory one in tests. It owns the
//! operational limits of the port: idle and per-PDU timeouts, a cap on open connections and on
//! connections per source address, the maximum PDU size, an optional client CIDR allowlist,
//! and a graceful drain on shutdown.
//!
//! What this crate must never do: let one client's bytes panic the process, stall other
//! clients, or answer a well-formed request with anything but a RESPONSE (KMS refusals are
//! HRESULTs, never dropped connections). It does not know about Raft, sled or DNS.

mod config;
mod ledger;
mod limits;
mod server;

pub use config::HostSettings;
pub use ledger::{ActivationEvent, Denial, Grant, HostObserver, Ledger, NoopObserver, RequestMeta};
pub use server::serve;
