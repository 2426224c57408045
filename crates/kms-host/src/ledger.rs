//! The boundary between the listener and the replicated store.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use kms_core::ActivationInput;
use kms_wire::{FileTime, Guid, Hresult};
use serde::Serialize;

/// Where and how a request arrived (informative; recorded with the client).
#[derive(Debug, Clone)]
pub struct RequestMeta {
    /// The client's address.
    pub source: SocketAddr,
    /// The host's clock when the request was decoded.
    pub received_at: FileTime,
}

/// What the host answers a granted activation with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The host ePID for the request's product group (shared text: the same few ePIDs answer
    /// every request).
    pub epid: std::sync::Arc<str>,
    /// The cluster's hardware id (v6 responses).
    pub hwid: [u8; 8],
    /// The count reported to the client (includes the client itself).
    pub current_count: u32,
    /// Minutes an unactivated client waits before retrying.
    pub activation_interval: u32,
    /// Minutes between renewals of an activated client.
    pub renewal_interval: u32,
    /// Pool name for logs and metrics ("windows", "office2010", "office2013").
    pub pool: &'static str,
    /// The ledger is running without a reachable Raft leader and answered from its journal.
    pub degraded: bool,
}

/// A refusal: the HRESULT the client receives and the reason for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Returned in the RESPONSE stub.
    pub hresult: Hresult,
    /// Human-readable reason (logged, never sent).
    pub reason: String,
    /// Pool, when the request got that far.
    pub pool: Option<&'static str>,
}

/// Decides and records activations. Implemented by the cluster (Raft) and by test ledgers.
pub trait Ledger: Send + Sync + 'static {
    /// Decide `request`; when granted, record the client (durably, before returning) and report
    /// the pool's count including it.
    fn activate(
        &self,
        request: ActivationInput,
        meta: RequestMeta,
    ) -> impl Future<Output = Result<Grant, Denial>> + Send;
}

/// One processed activation request, with the fields of Microsoft's event 12290.
#[derive(Debug, Clone, Serialize)]
pub struct ActivationEvent {
    /// 12290 for every processed request (Microsoft's "activation request processed").
    pub event_id: u32,
    /// The HRESULT returned (0 on success).
    pub hresult: u32,
    /// KMS protocol major version (4, 5, 6).
    pub protocol: u16,
    /// RPC transfer syntax ("ndr32" / "ndr64").
    pub syntax: &'static str,
    /// The client's threshold N.
    pub required_client_count: u32,
    /// Reported count (0 when refused).
    pub current_count: u32,
    /// Client workstation name (untrusted text).
    pub workstation: String,
    /// Client machine id.
    pub client_machine_id: Guid,
    /// Client timestamp (FILETIME, as sent).
    pub client_time: u64,
    /// Virtual machine flag.
    pub is_vm: bool,
    /// Client license status (0…6).
    pub license_status: u32,
    /// Minutes to the client's state expiration.
    pub binding_expiration: u32,
    /// Edition (activation id).
    pub sku_id: Guid,
    /// Product group.
    pub kms_counted_id: Guid,
    /// Application id.
    pub application_id: Guid,
    /// Pool, if determined.
    pub pool: Option<&'static str>,
    /// Client address (an IPv4 client of a dual-stack listener as IPv4).
    pub source: SocketAddr,
    /// Why it was refused, if it was.
    pub reason: Option<String>,
    /// Answered in degraded mode.
    pub degraded: bool,
    /// Time spent deciding and recording.
    #[serde(skip)]
    pub duration: Duration,
}

/// Receives the listener's events (metrics, event streams). Every method has a no-op default.
pub trait HostObserver: Send + Sync + 'static {
    /// A connection was accepted and will be served.
    fn connection_opened(&self) {}
    /// A served connection ended.
    fn connection_closed(&self) {}
    /// A connection was closed at once (`reason`: "max_connections", "per_source", "allowlist").
    fn connection_rejected(&self, _reason: &'static str) {}
    /// A connection was closed because of a protocol violation or timeout.
    fn protocol_error(&self, _reason: &'static str) {}
    /// An activation request was answered (granted or refused).
    fn activation(&self, _event: &ActivationEvent) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl HostObserver for NoopObserver {}
