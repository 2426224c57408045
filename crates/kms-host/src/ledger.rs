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

/// The stable token of a refusal reason, for logs and alerts: the label of kms-core's
/// `RefusalReason` (`time_skew`, `retail`, `not_served`, …), `pool_seat_limit` /
/// `group_seat_limit`, `no_identity`, `journal_failed`, `shutting_down`, `encode_failed`, or
/// `other` for a text this function does not know. The ledger hands over a human-readable
/// text (kept as the event's `detail`); the token is recognised from it.
pub fn reason_token(reason: &str) -> &'static str {
    const PREFIXES: [(&str, &str); 12] = [
        ("unsupported protocol version", "unsupported_version"),
        ("request time differs from host time", "time_skew"),
        ("required client count is 0", "required_count_zero"),
        ("required client count ", "required_count_too_large"),
        ("unknown product group", "unknown_product"),
        ("unknown application id", "unknown_application"),
        ("PoolSeatLimit", "pool_seat_limit"),
        ("GroupSeatLimit", "group_seat_limit"),
        ("the cluster has no host identity", "no_identity"),
        ("no leader and the local journal failed", "journal_failed"),
        ("the node is shutting down", "shutting_down"),
        (ENCODE_FAILED, "encode_failed"),
    ];
    const SUFFIXES: [(&str, &str); 3] = [
        (" is retail", "retail"),
        (" is a pre-release", "preview"),
        (" is not served by this cluster", "not_served"),
    ];
    if let Some((_, token)) = PREFIXES.iter().find(|(p, _)| reason.starts_with(p)) {
        return token;
    }
    if let Some((_, token)) = SUFFIXES.iter().find(|(s, _)| reason.ends_with(s)) {
        return token;
    }
    if reason.starts_with("application id ") && reason.contains(" does not match product group ") {
        return "application_mismatch";
    }
    "other"
}

/// Start of the reason of a response the host could not encode.
pub(crate) const ENCODE_FAILED: &str = "cannot encode the response";

impl ActivationEvent {
    /// The refusal's token ([`reason_token`]); `None` for a granted request.
    pub fn reason_token(&self) -> Option<&'static str> {
        self.reason.as_deref().map(reason_token)
    }

    /// The refusal's text for people; `None` for a granted request. A seat-limit refusal is
    /// said in words (the ledger's form names Rust types).
    pub fn reason_detail(&self) -> Option<std::borrow::Cow<'_, str>> {
        let text = self.reason.as_deref()?;
        let scope = match reason_token(text) {
            "pool_seat_limit" => "the pool",
            "group_seat_limit" => "the product group",
            _ => return Some(text.into()),
        };
        let limit = text
            .split_once("limit: ")
            .map(|(_, rest)| rest.trim_end_matches([' ', '}']))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        Some(match limit {
            Some(n) => format!("{scope} has reached its seat limit of {n} live clients").into(),
            None => format!("{scope} has reached its seat limit").into(),
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use kms_core::RefusalReason;
    use kms_core::state::RecordRefusal;

    /// The ledger's texts come from kms-core (Display of `RefusalReason`, Debug of
    /// `RecordRefusal`): every one of them has its token, the reason's own label.
    #[test]
    fn every_refusal_text_has_its_documented_token() {
        let g = Guid([7; 16]);
        for r in [
            RefusalReason::UnsupportedVersion(3),
            RefusalReason::TimeSkew {
                skew_secs: 20_000,
                limit_secs: 14_400,
            },
            RefusalReason::RequiredCountZero,
            RefusalReason::RequiredCountTooLarge(5000),
            RefusalReason::UnknownProductGroup(g),
            RefusalReason::UnknownApplication(g),
            RefusalReason::ApplicationMismatch {
                kms_counted_id: g,
                expected: g,
                got: Guid([8; 16]),
            },
            RefusalReason::Retail(g),
            RefusalReason::Preview(g),
            RefusalReason::NotServed(g),
        ] {
            assert_eq!(reason_token(&r.to_string()), r.label(), "{r}");
        }
        let pool = format!(
            "{:?}",
            RecordRefusal::PoolSeatLimit {
                pool: kms_core::Pool::Windows,
                limit: 5
            }
        );
        let group = format!(
            "{:?}",
            RecordRefusal::GroupSeatLimit {
                kms_counted_id: g,
                limit: 12
            }
        );
        assert_eq!(reason_token(&pool), "pool_seat_limit");
        assert_eq!(reason_token(&group), "group_seat_limit");
        assert_eq!(reason_token("the node is shutting down"), "shutting_down");
        assert_eq!(reason_token("something new"), "other");

        let mut e = ActivationEvent {
            event_id: 12290,
            hresult: 0xC004_F042,
            protocol: 6,
            syntax: "ndr32",
            required_client_count: 25,
            current_count: 0,
            workstation: "PC".into(),
            client_machine_id: g,
            client_time: 0,
            is_vm: false,
            license_status: 2,
            binding_expiration: 0,
            sku_id: g,
            kms_counted_id: g,
            application_id: g,
            pool: None,
            source: ([127, 0, 0, 1], 1).into(),
            reason: Some(pool),
            degraded: false,
            duration: Duration::ZERO,
        };
        assert_eq!(
            e.reason_detail().as_deref(),
            Some("the pool has reached its seat limit of 5 live clients")
        );
        e.reason = Some(group);
        assert_eq!(
            e.reason_detail().as_deref(),
            Some("the product group has reached its seat limit of 12 live clients")
        );
        e.reason = None;
        assert_eq!((e.reason_token(), e.reason_detail()), (None, None));
    }
}
