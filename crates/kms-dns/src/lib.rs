//! # kms-dns — the cluster's authoritative DNS
//!
//! Windows and Office clients find a KMS host by asking DNS for `_vlmcs._tcp.<domain>` SRV
//! records. This crate makes every kmsd node answer those questions itself, for one or more
//! operator-named zones, the way Consul's DNS interface renders whatever its catalog holds:
//! it renders SRV, A/AAAA, SOA and NS records from the [`kms_core::ClusterView`] the cluster
//! layer publishes, and serves them authoritatively over UDP and TCP.
//!
//! ## What it must never do
//!
//! * Know about Raft, sled or gRPC: its only input is a `ClusterView` on a watch channel.
//! * Panic because of a packet, or answer a packet it cannot decode: undecodable, oversized
//!   and response packets are dropped silently; decodable but malformed queries get FORMERR.
//! * Be an amplifier: UDP responses are rate-limited per source ([`RateLimitConfig`]), never
//!   exceed the client's advertised size, and ANY over UDP returns one RRset.
//! * Recurse or answer for names outside its zones (REFUSED), or transfer a zone to a source
//!   outside `axfr_allow`.
//! * Publish an empty SRV set while it knows of any member.
//!
//! ## Layout
//!
//! * [`config`] — [`DnsConfig`] and its validation, flag parsers.
//! * [`zone`] — [`render`]: `ClusterView` → [`Zone`] (pure), and [`SerialTracker`].
//! * [`mod@answer`] — [`answer()`]: zones + decoded query → response messages (pure).
//! * [`ratelimit`] — per-source token buckets ([`ResponseRateLimiter`]).
//! * [`observer`] — [`DnsObserver`], the metrics hook with bounded label values.
//! * [`responder`] — [`ZoneResponder`]: bytes in, bytes out; a hickory `RequestHandler`.
//! * [`server`] — [`DnsServer::serve`]: the UDP and TCP loops.
//!
//! The operator's guide, including how to hook the zone into corporate DNS, is
//! `docs/dns.md`.

pub mod answer;
pub mod config;
pub mod observer;
pub mod ratelimit;
pub mod responder;
pub mod server;
pub mod zone;

pub use answer::{QueryContext, Reply, Transport, Zones, answer, truncated_reply};
pub use config::{
    DEFAULT_MAX_UDP_PAYLOAD, DnsConfig, DnsConfigError, RateLimitConfig, SoaConfig, parse_network,
    parse_zone,
};
pub use hickory_proto::rr::Name;
pub use ipnet::IpNet;
pub use observer::{
    DnsObserver, DropReason, NoopObserver, QTYPE_LABELS, RCODE_LABELS, qtype_label, rcode_label,
};
pub use ratelimit::{RateDecision, ResponseRateLimiter};
pub use responder::{MAX_QUERY_SIZE, ZoneResponder};
pub use server::{DnsError, DnsServer};
pub use zone::{
    RenderProblem, RenderProblemKind, SerialTracker, VLMCS_SRV_PREFIX, Zone, is_valid_node_name,
    render, serial_gt,
};
