//! [`ZoneResponder`]: the current zones plus the per-source rate limiter, turning raw query
//! bytes into raw response bytes and reporting to a [`DnsObserver`]. It is also a hickory
//! [`RequestHandler`], so it can run under `hickory_server::Server` as well as under
//! [`crate::DnsServer`].

use std::fmt;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Header, HeaderCounts, Message, MessageType, Metadata};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use kms_core::ClusterView;
use tracing::{debug, info, warn};

use crate::answer::{QueryContext, Reply, Transport, Zones, answer, truncated_reply};
use crate::config::{DnsConfig, DnsConfigError};
use crate::observer::{DnsObserver, DropReason, qtype_label, rcode_label};
use crate::ratelimit::{RateDecision, ResponseRateLimiter};
use crate::zone::{SerialTracker, render};

/// Largest query accepted, in bytes (UDP datagram or TCP frame). A real query — one question
/// and an OPT record — is well under 512 bytes; anything larger than the Flag Day UDP size is
/// dropped unanswered.
pub const MAX_QUERY_SIZE: usize = 1232;

/// Answers queries from the zones rendered from the latest [`ClusterView`].
pub struct ZoneResponder {
    cfg: DnsConfig,
    zones: RwLock<Arc<Zones>>,
    serials: Mutex<Vec<SerialTracker>>,
    limiter: Mutex<ResponseRateLimiter>,
    observer: Arc<dyn DnsObserver>,
}

impl fmt::Debug for ZoneResponder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZoneResponder")
            .field("cfg", &self.cfg)
            .field("zones", &self.zones)
            .finish_non_exhaustive()
    }
}

impl ZoneResponder {
    /// A responder with empty zones (SOA only) until the first [`ZoneResponder::update`].
    pub fn new(cfg: DnsConfig, observer: Arc<dyn DnsObserver>) -> Result<Self, DnsConfigError> {
        cfg.validate()?;
        let responder = Self {
            zones: RwLock::new(Arc::new(Zones::default())),
            serials: Mutex::new(vec![SerialTracker::new(); cfg.zones.len()]),
            limiter: Mutex::new(ResponseRateLimiter::new(cfg.rate_limit.clone())),
            observer,
            cfg,
        };
        responder.update(&ClusterView::default());
        Ok(responder)
    }

    /// The configuration in force.
    pub fn config(&self) -> &DnsConfig {
        &self.cfg
    }

    /// Re-render every zone from `view`. Members that cannot be published are logged.
    pub fn update(&self, view: &ClusterView) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let previous = self.zones();
        let mut serials = self.serials.lock().unwrap_or_else(PoisonError::into_inner);
        let zones: Vec<_> = self
            .cfg
            .zones
            .iter()
            .zip(serials.iter_mut())
            .map(|(name, tracker)| {
                let mut zone = render(view, &self.cfg, name);
                tracker.stamp(&mut zone, now);
                zone
            })
            .collect();
        drop(serials);
        for zone in &zones {
            let old = previous.iter().find(|z| z.origin() == zone.origin());
            if old.is_none_or(|o| o.problems() != zone.problems()) {
                for problem in zone.problems() {
                    warn!(zone = %zone.origin(), %problem, "member left out of DNS");
                }
            }
            if old.is_none_or(|o| o.serial() != zone.serial()) {
                info!(zone = %zone.origin(), serial = zone.serial(), "DNS zone updated");
            }
        }
        *self.zones.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(Zones::new(zones));
    }

    /// The zones answered from now.
    pub fn zones(&self) -> Arc<Zones> {
        self.zones
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The observer queries are reported to.
    pub(crate) fn observer(&self) -> &dyn DnsObserver {
        self.observer.as_ref()
    }

    /// Answer one packet from `src`: the encoded response messages, empty to send nothing.
    /// Never panics on any input.
    pub fn respond(&self, packet: &[u8], src: SocketAddr, transport: Transport) -> Vec<Vec<u8>> {
        let messages = self.respond_messages(packet, src, transport);
        let mut out = Vec::with_capacity(messages.len());
        for message in &messages {
            match message.to_vec() {
                Ok(bytes) if bytes.len() <= usize::from(u16::MAX) => out.push(bytes),
                Ok(_) | Err(_) => {
                    warn!(%src, "could not encode a DNS response");
                    self.observer.dropped(DropReason::Internal.as_str());
                    return Vec::new();
                }
            }
        }
        out
    }

    /// Answer one packet from `src` as decoded messages (see [`ZoneResponder::respond`]).
    pub fn respond_messages(
        &self,
        packet: &[u8],
        src: SocketAddr,
        transport: Transport,
    ) -> Vec<Message> {
        let drop = |reason: DropReason| {
            debug!(%src, reason = reason.as_str(), "DNS packet dropped");
            self.observer.dropped(reason.as_str());
            Vec::new()
        };
        if packet.len() > MAX_QUERY_SIZE {
            return drop(DropReason::Oversized);
        }
        let Ok(Ok(query)) = catch_unwind(|| Message::from_vec(packet)) else {
            return drop(DropReason::Malformed);
        };
        if query.metadata.message_type != MessageType::Query {
            return drop(DropReason::NotAQuery);
        }
        let ctx = QueryContext {
            transport,
            axfr_allowed: self.cfg.axfr_allowed(src.ip()),
            max_udp_payload: self.cfg.max_udp_payload,
        };
        if transport == Transport::Udp {
            let decision = self
                .limiter
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .check(src.ip(), Instant::now());
            match decision {
                RateDecision::Allow => {}
                RateDecision::Drop => return drop(DropReason::RateLimited),
                RateDecision::Slip => {
                    drop(DropReason::RateLimited);
                    return vec![truncated_reply(&query, packet.len(), &ctx)];
                }
            }
        }
        let zones = self.zones();
        let Ok(reply) = catch_unwind(AssertUnwindSafe(|| answer(&zones, &query, &ctx))) else {
            return drop(DropReason::Internal);
        };
        match reply {
            Reply::Drop(reason) => drop(reason),
            Reply::Send(messages) => {
                let qtype = match query.queries.as_slice() {
                    [q] => Some(q.query_type),
                    _ => None,
                };
                if let Some(first) = messages.first() {
                    self.observer.query(
                        qtype_label(qtype),
                        rcode_label(first.metadata.response_code),
                    );
                }
                messages
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for ZoneResponder {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let transport = match request.protocol() {
            Protocol::Udp => Transport::Udp,
            _ => Transport::Tcp,
        };
        let messages = self.respond_messages(request.as_slice(), request.src(), transport);
        let mut info = ResponseInfo::from(Header {
            metadata: Metadata::response_from_request(&request.metadata),
            counts: HeaderCounts::default(),
        });
        for message in &messages {
            let builder = MessageResponseBuilder::new(&request.queries, message.edns.as_ref());
            let response = builder.build(
                message.metadata,
                message.answers.iter(),
                message.authorities.iter(),
                std::iter::empty(),
                message.additionals.iter(),
            );
            match response_handle.send_response(response).await {
                Ok(sent) => info = sent,
                Err(error) => {
                    debug!(%error, src = %request.src(), "failed to send DNS response");
                    break;
                }
            }
        }
        info
    }
}
