//! [`DnsObserver`]: how kmsd counts DNS traffic (`kmsd_dns_queries_total{qtype,rcode}`,
//! `kmsd_dns_dropped_total{reason}`) without this crate knowing the metrics registry. Every
//! label value comes from a fixed list, so a hostile client cannot grow the label space.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// Receives one call per answered query and one per query not (fully) answered.
pub trait DnsObserver: Send + Sync + 'static {
    /// A response was sent. `qtype` is one of [`QTYPE_LABELS`], `rcode` one of
    /// [`RCODE_LABELS`] (NODATA is `NOERROR`).
    fn query(&self, qtype: &str, rcode: &str);
    /// A packet got no normal answer; `reason` is one of [`DropReason::ALL`]'s labels.
    fn dropped(&self, reason: &str);
}

/// An observer that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopObserver;

impl DnsObserver for NoopObserver {
    fn query(&self, _qtype: &str, _rcode: &str) {}
    fn dropped(&self, _reason: &str) {}
}

/// Every value [`DnsObserver::query`] passes as `qtype`.
pub const QTYPE_LABELS: &[&str] = &[
    "A", "AAAA", "SRV", "SOA", "NS", "ANY", "AXFR", "IXFR", "TXT", "PTR", "CNAME", "MX", "HTTPS",
    "SVCB", "CAA", "DS", "DNSKEY", "none", "other",
];

/// Every value [`DnsObserver::query`] passes as `rcode`.
pub const RCODE_LABELS: &[&str] = &[
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "NOTAUTH", "BADVERS",
    "other",
];

/// Bounded label for a query type.
pub fn qtype_label(qtype: Option<RecordType>) -> &'static str {
    let Some(qtype) = qtype else { return "none" };
    match qtype {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::SRV => "SRV",
        RecordType::SOA => "SOA",
        RecordType::NS => "NS",
        RecordType::ANY => "ANY",
        RecordType::AXFR => "AXFR",
        RecordType::IXFR => "IXFR",
        RecordType::TXT => "TXT",
        RecordType::PTR => "PTR",
        RecordType::CNAME => "CNAME",
        RecordType::MX => "MX",
        RecordType::HTTPS => "HTTPS",
        RecordType::SVCB => "SVCB",
        RecordType::CAA => "CAA",
        RecordType::DS => "DS",
        RecordType::DNSKEY => "DNSKEY",
        _ => "other",
    }
}

/// Bounded label for a response code.
pub fn rcode_label(rcode: ResponseCode) -> &'static str {
    match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::NotAuth => "NOTAUTH",
        // Code 16: BADVERS in a response to a query (BADSIG is its TSIG meaning).
        ResponseCode::BADVERS | ResponseCode::BADSIG => "BADVERS",
        _ => "other",
    }
}

/// Why a packet got no normal answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Not a decodable DNS message: dropped silently.
    Malformed,
    /// Larger than any legitimate query ([`crate::MAX_QUERY_SIZE`]): dropped silently.
    Oversized,
    /// A response (QR=1) arrived: dropped, so two servers cannot be made to ping-pong.
    NotAQuery,
    /// Over the per-source response rate: dropped, or answered with a bare `TC=1` on a slip
    /// turn (both are counted here, not as queries).
    RateLimited,
    /// A TCP connection beyond `max_tcp_connections`: closed at once.
    TcpConnectionLimit,
    /// Answering failed inside the server (a bug): nothing sent.
    Internal,
}

impl DropReason {
    /// Every reason, for pre-registering metric labels.
    pub const ALL: [Self; 6] = [
        Self::Malformed,
        Self::Oversized,
        Self::NotAQuery,
        Self::RateLimited,
        Self::TcpConnectionLimit,
        Self::Internal,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Oversized => "oversized",
            Self::NotAQuery => "not_a_query",
            Self::RateLimited => "rate_limited",
            Self::TcpConnectionLimit => "tcp_connection_limit",
            Self::Internal => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        for t in 0..=u16::MAX {
            let l = qtype_label(Some(RecordType::from(t)));
            assert!(QTYPE_LABELS.contains(&l), "{t} -> {l}");
        }
        assert_eq!(qtype_label(None), "none");
        for c in 0..=4095u16 {
            let l = rcode_label(<ResponseCode as From<u16>>::from(c));
            assert!(RCODE_LABELS.contains(&l), "{c} -> {l}");
        }
        assert_eq!(qtype_label(Some(RecordType::SRV)), "SRV");
        assert_eq!(rcode_label(ResponseCode::NXDomain), "NXDOMAIN");
    }
}
