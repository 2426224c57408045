//! Answering one query from rendered zones: [`answer`] is a pure function from a decoded query
//! and its context (transport, whether the source may transfer zones) to the response
//! messages, already cut to fit the transport.
//!
//! Behaviour, in the order it is decided:
//!
//! * a response (QR=1) is dropped, never answered;
//! * EDNS version > 0 → BADVERS (with an OPT record, RFC 6891 §6.1.3);
//! * an opcode other than QUERY → NOTIMP;
//! * QDCOUNT ≠ 1 → FORMERR;
//! * a class other than IN (or ANY) → REFUSED; QTYPE OPT → FORMERR;
//! * a name outside every zone → REFUSED (this server does not recurse);
//! * AXFR/IXFR → REFUSED over UDP and to sources outside `axfr_allow`; otherwise the zone,
//!   SOA first and last, in messages of at most [`TRANSFER_RECORDS_PER_MESSAGE`] records
//!   (IXFR is answered with a full transfer, or with the SOA alone when the client is current;
//!   IXFR over UDP from an allowed source gets the SOA alone, RFC 1995 §2);
//! * ANY → over UDP the first RRset at the name only (RFC 8482 §4.1: the SOA at the apex),
//!   over TCP every RRset;
//! * the RRset exists → NOERROR with AA, plus the A/AAAA of in-zone SRV and NS targets in the
//!   additional section;
//! * the name exists without that type → NOERROR/NODATA with the SOA in the authority section;
//! * the name does not exist → NXDOMAIN with the SOA; the SOA carries the negative TTL.
//!
//! Every answer from a zone has AA set. A response to a query with an OPT record carries one,
//! advertising this server's UDP payload limit and echoing the DO bit. Over UDP the response
//! must fit min(client's EDNS size (≥ 512), configured maximum), or 512 without EDNS: the
//! additional section goes first (RFC 2181 §9), then the answer is replaced by an empty
//! `TC=1` response so the client retries over TCP (keeping only the first question if the
//! echoed questions of an error reply are what does not fit).

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::config::normalize;
use crate::observer::DropReason;
use crate::zone::{Zone, serial_gt};

/// Records per message in a zone transfer: small enough that any message fits 64 KiB.
pub const TRANSFER_RECORDS_PER_MESSAGE: usize = 64;

/// Largest DNS message over TCP.
const TCP_MAX_MESSAGE: usize = u16::MAX as usize;

/// The zones a server answers for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Zones {
    zones: Vec<Zone>,
}

impl Zones {
    /// Zones to answer from. Zones may nest; a name is answered from the most specific one.
    pub fn new(zones: Vec<Zone>) -> Self {
        Self { zones }
    }

    /// The zone that contains `name`, if any (the longest matching origin).
    pub fn find(&self, name: &Name) -> Option<&Zone> {
        self.zones
            .iter()
            .filter(|z| z.contains(name))
            .max_by_key(|z| z.origin().num_labels())
    }

    /// Every zone.
    pub fn iter(&self) -> impl Iterator<Item = &Zone> {
        self.zones.iter()
    }
}

/// How the query arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP: size limits apply, no zone transfers.
    Udp,
    /// TCP (or another stream): responses up to 64 KiB, zone transfers allowed.
    Tcp,
}

/// Everything about a query that is not in the message itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryContext {
    /// How the query arrived.
    pub transport: Transport,
    /// The source is in `axfr_allow`.
    pub axfr_allowed: bool,
    /// Configured UDP payload cap (see [`crate::DnsConfig::max_udp_payload`]).
    pub max_udp_payload: u16,
}

/// What to send back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Nothing, for this reason.
    Drop(DropReason),
    /// These messages, in order (several only for a zone transfer).
    Send(Vec<Message>),
}

/// Answer `query` from `zones` (see the module docs for the rules).
pub fn answer(zones: &Zones, query: &Message, ctx: &QueryContext) -> Reply {
    if query.metadata.message_type != MessageType::Query {
        return Reply::Drop(DropReason::NotAQuery);
    }
    let mut resp = skeleton(query, ctx);
    if query.edns.as_ref().is_some_and(|e| e.version() > 0) {
        return error(resp, ResponseCode::BADVERS, ctx, query);
    }
    if query.metadata.op_code != OpCode::Query {
        return error(resp, ResponseCode::NotImp, ctx, query);
    }
    let [q] = query.queries.as_slice() else {
        resp.queries.clear();
        return error(resp, ResponseCode::FormErr, ctx, query);
    };
    if q.query_class != DNSClass::IN && q.query_class != DNSClass::ANY {
        return error(resp, ResponseCode::Refused, ctx, query);
    }
    if q.query_type == RecordType::OPT {
        return error(resp, ResponseCode::FormErr, ctx, query);
    }
    let qname = normalize(&q.name);
    let Some(zone) = zones.find(&qname) else {
        return error(resp, ResponseCode::Refused, ctx, query);
    };
    match q.query_type {
        RecordType::AXFR | RecordType::IXFR => transfer(zone, &qname, q, query, resp, ctx),
        qtype => {
            resp.metadata.authoritative = true;
            lookup(zone, &qname, qtype, ctx, &mut resp);
            Reply::Send(vec![fit(resp, limit(query, ctx))])
        }
    }
}

/// The minimal `TC=1` reply sent on a rate-limit slip turn: the first question and OPT only,
/// never larger than the query, whose size on the wire is `query_len`. A question name written
/// as a compression pointer into the query's own header decodes to more bytes than the
/// pointer took; if the question would make the reply larger than the query, it is left out
/// (the header, and OPT if the query had one, always fit).
pub fn truncated_reply(query: &Message, query_len: usize, ctx: &QueryContext) -> Message {
    let mut resp = skeleton(query, ctx);
    if resp.queries.len() > 1 {
        resp.queries.truncate(1);
    }
    resp.metadata.truncation = true;
    if encoded_len(&resp) > query_len {
        resp.queries.clear();
    }
    resp
}

fn skeleton(query: &Message, ctx: &QueryContext) -> Message {
    let mut resp = Message::new(
        query.metadata.id,
        MessageType::Response,
        query.metadata.op_code,
    );
    resp.metadata = Metadata::response_from_request(&query.metadata);
    resp.queries = query.queries.clone();
    if let Some(client) = &query.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(ctx.max_udp_payload.max(512));
        edns.set_version(0);
        edns.set_dnssec_ok(client.flags().dnssec_ok);
        resp.edns = Some(edns);
    }
    resp
}

fn error(mut resp: Message, rcode: ResponseCode, ctx: &QueryContext, query: &Message) -> Reply {
    resp.metadata.response_code = rcode;
    Reply::Send(vec![fit(resp, limit(query, ctx))])
}

fn lookup(zone: &Zone, qname: &Name, qtype: RecordType, ctx: &QueryContext, resp: &mut Message) {
    let rrsets: Vec<&[Record]> = if qtype == RecordType::ANY {
        let all = zone.rrsets_at(qname);
        match ctx.transport {
            Transport::Udp => all.into_iter().take(1).collect(),
            Transport::Tcp => all,
        }
    } else {
        zone.lookup(qname, qtype).into_iter().collect()
    };
    if rrsets.is_empty() {
        if !zone.name_exists(qname) {
            resp.metadata.response_code = ResponseCode::NXDomain;
        }
        resp.authorities.push(zone.negative_soa());
        return;
    }
    let answers: Vec<Record> = rrsets.into_iter().flatten().cloned().collect();
    resp.additionals = additional_for(zone, &answers);
    resp.answers = answers;
}

/// A/AAAA records of in-zone SRV and NS targets, each target once.
fn additional_for(zone: &Zone, answers: &[Record]) -> Vec<Record> {
    let mut targets: Vec<&Name> = Vec::new();
    for record in answers {
        let target = match &record.data {
            RData::SRV(srv) => &srv.target,
            RData::NS(ns) => &ns.0,
            _ => continue,
        };
        if zone.contains(target) && !targets.contains(&target) {
            targets.push(target);
        }
    }
    targets
        .into_iter()
        .flat_map(|t| {
            let a = zone.lookup(t, RecordType::A).unwrap_or_default();
            let aaaa = zone.lookup(t, RecordType::AAAA).unwrap_or_default();
            a.iter().chain(aaaa).cloned()
        })
        .collect()
}

fn transfer(
    zone: &Zone,
    qname: &Name,
    q: &Query,
    query: &Message,
    mut resp: Message,
    ctx: &QueryContext,
) -> Reply {
    let is_ixfr = q.query_type == RecordType::IXFR;
    let allowed = ctx.axfr_allowed && qname == zone.origin();
    let udp = ctx.transport == Transport::Udp;
    if !allowed || (udp && !is_ixfr) {
        return error(resp, ResponseCode::Refused, ctx, query);
    }
    resp.metadata.authoritative = true;
    // IXFR over UDP, or from a client that already has our serial: the SOA alone tells it
    // to retry over TCP or that it is current (RFC 1995 §2, §4).
    let client_current = query.authorities.iter().any(|r| match &r.data {
        RData::SOA(theirs) => !serial_gt(zone.serial(), theirs.serial),
        _ => false,
    });
    if is_ixfr && (udp || client_current) {
        resp.answers.push(zone.soa().clone());
        return Reply::Send(vec![fit(resp, limit(query, ctx))]);
    }
    let soa = zone.soa();
    let all: Vec<&Record> = std::iter::once(soa)
        .chain(zone.records())
        .chain(std::iter::once(soa))
        .collect();
    let messages = all
        .chunks(TRANSFER_RECORDS_PER_MESSAGE)
        .map(|chunk| {
            let mut m = resp.clone();
            m.answers = chunk.iter().map(|r| (*r).clone()).collect();
            m
        })
        .collect();
    Reply::Send(messages)
}

/// Largest response for this query.
fn limit(query: &Message, ctx: &QueryContext) -> usize {
    match ctx.transport {
        Transport::Tcp => TCP_MAX_MESSAGE,
        Transport::Udp => {
            let cap = ctx.max_udp_payload.max(512);
            let asked = query
                .edns
                .as_ref()
                .map_or(512, |e| e.max_payload().max(512));
            usize::from(asked.min(cap))
        }
    }
}

/// Make `resp` fit `limit` bytes: drop the additional section, then, if still too large,
/// every record with TC=1, and last every question but the first (an error reply echoes every
/// question of a NOTIMP or BADVERS query, and a 1232-byte query can hold more than 512 bytes of
/// them once their compression pointers are expanded; one question always fits in 512).
fn fit(mut resp: Message, limit: usize) -> Message {
    if encoded_len(&resp) <= limit {
        return resp;
    }
    resp.additionals.clear();
    if encoded_len(&resp) <= limit {
        return resp;
    }
    resp.answers.clear();
    resp.authorities.clear();
    resp.metadata.truncation = true;
    if resp.queries.len() > 1 && encoded_len(&resp) > limit {
        resp.queries.truncate(1);
    }
    resp
}

/// Encoded size; `usize::MAX` if it cannot be encoded.
pub(crate) fn encoded_len(m: &Message) -> usize {
    m.to_vec().map_or(usize::MAX, |v| v.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DnsConfig, parse_zone};
    use crate::zone::render;
    use hickory_proto::rr::rdata::SOA;
    use kms_core::{ClusterView, MemberView};

    fn member(id: u64, name: &str, host: &str, healthy: bool) -> MemberView {
        MemberView {
            id,
            name: name.into(),
            host: host.into(),
            kms_port: 1688,
            grpc_addr: format!("{host}:1689"),
            dns_priority: 0,
            dns_weight: 100,
            voter: true,
            healthy,
        }
    }

    fn zones_with(members: Vec<MemberView>, names: &[&str]) -> Zones {
        let cfg = DnsConfig {
            zones: names.iter().map(|z| parse_zone(z).unwrap()).collect(),
            ..DnsConfig::default()
        };
        let view = ClusterView {
            members,
            generation: 3,
            ..ClusterView::default()
        };
        Zones::new(cfg.zones.iter().map(|z| render(&view, &cfg, z)).collect())
    }

    fn zones() -> Zones {
        zones_with(
            vec![
                member(1, "kms1", "10.0.0.1", true),
                member(2, "kms2", "2001:db8::2", true),
                member(3, "kms3", "10.0.0.3", false),
            ],
            &["kms.example.com", "kms.example.net"],
        )
    }

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn q(name: &str, qtype: RecordType) -> Message {
        let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(n(name), qtype));
        m
    }

    const UDP: QueryContext = QueryContext {
        transport: Transport::Udp,
        axfr_allowed: false,
        max_udp_payload: 1232,
    };
    const TCP: QueryContext = QueryContext {
        transport: Transport::Tcp,
        axfr_allowed: false,
        max_udp_payload: 1232,
    };
    const TCP_AXFR: QueryContext = QueryContext {
        transport: Transport::Tcp,
        axfr_allowed: true,
        max_udp_payload: 1232,
    };

    fn one(reply: Reply) -> Message {
        match reply {
            Reply::Send(mut v) if v.len() == 1 => v.remove(0),
            other => panic!("expected one message, got {other:?}"),
        }
    }

    fn types(records: &[Record]) -> Vec<RecordType> {
        records.iter().map(Record::record_type).collect()
    }

    struct Case {
        what: &'static str,
        name: &'static str,
        qtype: RecordType,
        rcode: ResponseCode,
        aa: bool,
        answers: Vec<RecordType>,
        authority_soa: bool,
    }

    #[test]
    fn table_of_answers() {
        use RecordType::*;
        let cases = vec![
            Case {
                what: "SRV, healthy only",
                name: "_vlmcs._tcp.kms.example.com.",
                qtype: SRV,
                rcode: ResponseCode::NoError,
                aa: true,
                answers: vec![SRV, SRV],
                authority_soa: false,
            },
            Case {
                what: "SRV, mixed case",
                name: "_VLMCS._TCP.Kms.Example.COM.",
                qtype: SRV,
                rcode: ResponseCode::NoError,
                aa: true,
                answers: vec![SRV, SRV],
                authority_soa: false,
            },
            Case {
                what: "second zone",
                name: "_vlmcs._tcp.kms.example.net.",
                qtype: SRV,
                rcode: ResponseCode::NoError,
                aa: true,
                answers: vec![SRV, SRV],
                authority_soa: false,
            },
            Case {
                what: "A",
                name: "kms1.kms.example.com.",
                qtype: A,
                rcode: ResponseCode::NoError,
                aa: true,
                answers: vec![A],
                authority_soa: false,
            },
            Case {
                what: "AAAA",
                name: "kms2.kms.example.com.",
                qtype: AAAA,
                rcode: ResponseCode::NoError,
                aa: true,
                answers: vec![AAAA],
                authority_soa: false,
            },
            Case {
                what: "unhealthy member keeps its A",
                name: "kms3.kms.example.com.",
                qtype: A,
                rcode: ResponseCode::NoError,
                aa: true,
                answers: vec![A],
                authority_soa: false,
            },
            Case {
                what: "AAAA of an IPv4 member: NODATA",
                name: "kms1.kms.example.com.",
                qtype: AAAA,
                rcode: ResponseCode::NoError,
                aa: true,
                answers: vec![],
                authority_soa: true,
            },
            Case {
                what: "SOA",
                name: "kms.example.com.",
                qtype: SOA,
                rcode: ResponseCode::NoError,
                aa: true,
                answers: vec![SOA],
                authority_soa: false,
            },
            Case {
                what: "NS: every member",
                name: "kms.example.com.",
                qtype: NS,
                rcode: ResponseCode::NoError,
                aa: true,
                answers: vec![NS, NS, NS],
                authority_soa: false,
            },
            Case {
                what: "empty non-terminal: NODATA",
                name: "_tcp.kms.example.com.",
                qtype: SRV,
                rcode: ResponseCode::NoError,
                aa: true,
                answers: vec![],
                authority_soa: true,
            },
            Case {
                what: "missing name: NXDOMAIN",
                name: "nope.kms.example.com.",
                qtype: A,
                rcode: ResponseCode::NXDomain,
                aa: true,
                answers: vec![],
                authority_soa: true,
            },
            Case {
                what: "TXT at apex: NODATA",
                name: "kms.example.com.",
                qtype: TXT,
                rcode: ResponseCode::NoError,
                aa: true,
                answers: vec![],
                authority_soa: true,
            },
            Case {
                what: "outside every zone",
                name: "www.example.org.",
                qtype: A,
                rcode: ResponseCode::Refused,
                aa: false,
                answers: vec![],
                authority_soa: false,
            },
            Case {
                what: "parent of a zone",
                name: "example.com.",
                qtype: SOA,
                rcode: ResponseCode::Refused,
                aa: false,
                answers: vec![],
                authority_soa: false,
            },
            Case {
                what: "ANY over UDP: one RRset",
                name: "kms.example.com.",
                qtype: ANY,
                rcode: ResponseCode::NoError,
                aa: true,
                answers: vec![SOA],
                authority_soa: false,
            },
        ];
        let z = zones();
        for c in cases {
            let resp = one(answer(&z, &q(c.name, c.qtype), &UDP));
            assert_eq!(resp.metadata.response_code, c.rcode, "{}", c.what);
            assert_eq!(resp.metadata.authoritative, c.aa, "{}: AA", c.what);
            assert_eq!(resp.metadata.message_type, MessageType::Response);
            assert_eq!(resp.metadata.id, 4242);
            assert!(resp.metadata.recursion_desired, "{}: RD copied", c.what);
            assert!(!resp.metadata.recursion_available, "{}: no RA", c.what);
            assert!(!resp.metadata.truncation, "{}", c.what);
            assert_eq!(types(&resp.answers), c.answers, "{}", c.what);
            assert_eq!(
                types(&resp.authorities) == vec![SOA],
                c.authority_soa,
                "{}: authority {:?}",
                c.what,
                resp.authorities
            );
            assert_eq!(resp.queries.len(), 1, "{}: question echoed", c.what);
        }
    }

    #[test]
    fn nested_zones_answer_from_the_most_specific() {
        let z = zones_with(
            vec![member(1, "kms1", "10.0.0.1", true)],
            &["example.com", "kms.example.com"],
        );
        let inner = one(answer(&z, &q("kms1.kms.example.com.", RecordType::A), &UDP));
        assert_eq!(types(&inner.answers), vec![RecordType::A]);
        let outer = one(answer(&z, &q("kms1.example.com.", RecordType::A), &UDP));
        assert_eq!(types(&outer.answers), vec![RecordType::A]);
        let srv = one(answer(
            &z,
            &q("_vlmcs._tcp.example.com.", RecordType::SRV),
            &UDP,
        ));
        assert_eq!(srv.answers.len(), 1);
        let soa = one(answer(&z, &q("kms.example.com.", RecordType::SOA), &UDP));
        let RData::SOA(s) = &soa.answers[0].data else {
            panic!()
        };
        assert_eq!(s.mname.to_string(), "kms1.kms.example.com.");
    }

    #[test]
    fn negative_answers_carry_the_negative_ttl() {
        let resp = one(answer(
            &zones(),
            &q("x.kms.example.com.", RecordType::A),
            &UDP,
        ));
        assert_eq!(resp.authorities[0].ttl, 30);
        let RData::SOA(soa) = &resp.authorities[0].data else {
            panic!()
        };
        assert_eq!(soa.minimum, 30);
    }

    #[test]
    fn srv_answer_carries_target_addresses_in_additional() {
        let resp = one(answer(
            &zones(),
            &q("_vlmcs._tcp.kms.example.com.", RecordType::SRV),
            &UDP,
        ));
        assert_eq!(
            types(&resp.additionals),
            vec![RecordType::A, RecordType::AAAA]
        );
        assert!(resp.answers.iter().all(|r| r.ttl == 60));
    }

    #[test]
    fn any_over_tcp_returns_every_rrset() {
        let resp = one(answer(
            &zones(),
            &q("kms.example.com.", RecordType::ANY),
            &TCP,
        ));
        assert_eq!(
            types(&resp.answers),
            vec![
                RecordType::SOA,
                RecordType::NS,
                RecordType::NS,
                RecordType::NS
            ]
        );
    }

    #[test]
    fn header_problems() {
        let z = zones();
        // QDCOUNT 0 and 2.
        let mut none = q("kms.example.com.", RecordType::SOA);
        none.queries.clear();
        let resp = one(answer(&z, &none, &UDP));
        assert_eq!(resp.metadata.response_code, ResponseCode::FormErr);
        let mut two = q("kms.example.com.", RecordType::SOA);
        two.add_query(Query::query(n("kms.example.com."), RecordType::NS));
        let resp = one(answer(&z, &two, &UDP));
        assert_eq!(resp.metadata.response_code, ResponseCode::FormErr);
        assert!(resp.queries.is_empty());
        // Opcode.
        let mut notify = q("kms.example.com.", RecordType::SOA);
        notify.metadata.op_code = OpCode::Notify;
        let resp = one(answer(&z, &notify, &UDP));
        assert_eq!(resp.metadata.response_code, ResponseCode::NotImp);
        // A response is never answered.
        let mut r = q("kms.example.com.", RecordType::SOA);
        r.metadata.message_type = MessageType::Response;
        assert_eq!(answer(&z, &r, &UDP), Reply::Drop(DropReason::NotAQuery));
        // Class CHAOS.
        let mut chaos = Message::new(1, MessageType::Query, OpCode::Query);
        let mut cq = Query::query(n("version.bind."), RecordType::TXT);
        cq.set_query_class(DNSClass::CH);
        chaos.add_query(cq);
        let resp = one(answer(&z, &chaos, &UDP));
        assert_eq!(resp.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn edns_is_echoed_and_bad_versions_rejected() {
        let z = zones();
        let mut m = q("kms.example.com.", RecordType::SOA);
        let mut e = Edns::new();
        e.set_max_payload(4096);
        e.set_dnssec_ok(true);
        m.edns = Some(e.clone());
        let resp = one(answer(&z, &m, &UDP));
        let opt = resp.edns.as_ref().expect("OPT in response");
        assert_eq!(opt.max_payload(), 1232);
        assert!(opt.flags().dnssec_ok);

        e.set_version(1);
        m.edns = Some(e);
        let resp = one(answer(&z, &m, &UDP));
        assert_eq!(resp.metadata.response_code, ResponseCode::BADVERS);
        assert!(resp.edns.is_some());
        // And it survives the wire.
        let wire = Message::from_vec(&resp.to_vec().unwrap()).unwrap();
        // BADVERS and BADSIG share code 16; the decoder names it BADSIG.
        assert_eq!(u16::from(wire.metadata.response_code), 16);

        let plain = one(answer(&z, &q("kms.example.com.", RecordType::SOA), &UDP));
        assert!(plain.edns.is_none());
    }

    fn big_zones() -> Zones {
        zones_with(
            (1..=40)
                .map(|i| member(i, &format!("kms{i:02}"), &format!("10.0.1.{i}"), true))
                .collect(),
            &["kms.example.com"],
        )
    }

    #[test]
    fn large_answers_truncate_over_udp_only() {
        let z = big_zones();
        let query = q("_vlmcs._tcp.kms.example.com.", RecordType::SRV);
        // No EDNS: 512 bytes; 40 SRV records do not fit.
        let resp = one(answer(&z, &query, &UDP));
        assert!(resp.metadata.truncation);
        assert!(resp.answers.is_empty());
        assert!(resp.to_vec().unwrap().len() <= 512);
        // EDNS 4096 but the configured cap of 1232: 40 SRV records (~1.6 KB) still do not fit.
        let mut edns_q = query.clone();
        let mut e = Edns::new();
        e.set_max_payload(4096);
        edns_q.edns = Some(e);
        let resp = one(answer(&z, &edns_q, &UDP));
        assert!(resp.metadata.truncation);
        assert!(resp.edns.is_some(), "OPT kept in a truncated response");
        // A 2000-byte cap: the answer fits once the additional section is dropped (no TC).
        let roomy = QueryContext {
            max_udp_payload: 2000,
            ..UDP
        };
        let resp = one(answer(&z, &edns_q, &roomy));
        assert!(!resp.metadata.truncation);
        assert_eq!(resp.answers.len(), 40);
        assert!(resp.additionals.is_empty());
        assert!(resp.to_vec().unwrap().len() <= 2000);
        // A 4096-byte cap: everything.
        let resp = one(answer(
            &z,
            &edns_q,
            &QueryContext {
                max_udp_payload: 4096,
                ..UDP
            },
        ));
        assert_eq!((resp.answers.len(), resp.additionals.len()), (40, 40));
        // TCP: everything.
        let resp = one(answer(&z, &query, &TCP));
        assert!(!resp.metadata.truncation);
        assert_eq!(resp.answers.len(), 40);
        assert_eq!(resp.additionals.len(), 40);
    }

    #[test]
    fn zone_transfer_rules() {
        let z = zones();
        let axfr = q("kms.example.com.", RecordType::AXFR);
        let udp_allowed = QueryContext {
            axfr_allowed: true,
            ..UDP
        };
        for (what, ctx, query) in [
            ("AXFR over UDP", udp_allowed, &axfr),
            ("AXFR not allowed", TCP, &axfr),
            (
                "AXFR below the apex",
                TCP_AXFR,
                &q("kms1.kms.example.com.", RecordType::AXFR),
            ),
        ] {
            let resp = one(answer(&z, query, &ctx));
            assert_eq!(resp.metadata.response_code, ResponseCode::Refused, "{what}");
            assert!(resp.answers.is_empty(), "{what}");
        }
        let resp = one(answer(&z, &axfr, &TCP_AXFR));
        let t = types(&resp.answers);
        assert_eq!(t.first(), Some(&RecordType::SOA));
        assert_eq!(t.last(), Some(&RecordType::SOA));
        // SOA + 3 NS + 2 SRV + 3 address records + SOA.
        assert_eq!(t.len(), 10);
        assert!(resp.metadata.authoritative);
    }

    #[test]
    fn large_transfers_span_messages() {
        let z = big_zones();
        let Reply::Send(msgs) = answer(&z, &q("kms.example.com.", RecordType::AXFR), &TCP_AXFR)
        else {
            panic!()
        };
        // SOA + 40 NS + 40 SRV + 40 A + SOA = 122 records.
        assert_eq!(msgs.len(), 2);
        let all: Vec<&Record> = msgs.iter().flat_map(|m| &m.answers).collect();
        assert_eq!(all.len(), 122);
        assert_eq!(all[0].record_type(), RecordType::SOA);
        assert_eq!(all[121].record_type(), RecordType::SOA);
        assert!(
            msgs.iter()
                .all(|m| m.to_vec().unwrap().len() <= TCP_MAX_MESSAGE)
        );
    }

    #[test]
    fn ixfr_variants() {
        let z = zones();
        let serial = z.find(&n("kms.example.com.")).unwrap().serial();
        let ixfr = q("kms.example.com.", RecordType::IXFR);
        // Over UDP from an allowed source: the SOA alone.
        let resp = one(answer(
            &z,
            &ixfr,
            &QueryContext {
                axfr_allowed: true,
                ..UDP
            },
        ));
        assert_eq!(types(&resp.answers), vec![RecordType::SOA]);
        // Over UDP from anyone else: refused.
        let resp = one(answer(&z, &ixfr, &UDP));
        assert_eq!(resp.metadata.response_code, ResponseCode::Refused);
        // Over TCP, client current: SOA alone; client behind: full transfer.
        let with_serial = |s: u32| {
            let mut m = ixfr.clone();
            m.add_authority(Record::from_rdata(
                n("kms.example.com."),
                0,
                RData::SOA(SOA::new(n("a."), n("b."), s, 1, 1, 1, 1)),
            ));
            m
        };
        let resp = one(answer(&z, &with_serial(serial), &TCP_AXFR));
        assert_eq!(types(&resp.answers), vec![RecordType::SOA]);
        let resp = one(answer(&z, &with_serial(serial - 1), &TCP_AXFR));
        assert_eq!(resp.answers.len(), 10);
    }

    /// Found by the `dns_message` fuzz target: a NOTIMP (or BADVERS) reply echoes every
    /// question, so many long questions made a UDP reply larger than 512 bytes.
    #[test]
    fn error_replies_echoing_many_questions_fit_udp() {
        let z = zones();
        let mut m = Message::new(77, MessageType::Query, OpCode::Status);
        let long = "a".repeat(60);
        for i in 0..16 {
            let name = format!("{long}.{long}.q{i}.kms.example.com.");
            m.add_query(Query::query(n(&name), RecordType::A));
        }
        assert!(m.to_vec().unwrap().len() > 512);
        let resp = one(answer(&z, &m, &UDP));
        assert_eq!(resp.metadata.response_code, ResponseCode::NotImp);
        assert!(resp.metadata.truncation);
        assert_eq!(resp.queries, m.queries[..1]);
        assert!(resp.to_vec().unwrap().len() <= 512);
        // BADVERS likewise, within the client's EDNS size.
        m.metadata.op_code = OpCode::Query;
        let mut e = Edns::new();
        e.set_version(1);
        e.set_max_payload(600);
        m.edns = Some(e);
        let resp = one(answer(&z, &m, &UDP));
        assert_eq!(resp.metadata.response_code, ResponseCode::BADVERS);
        assert!(resp.to_vec().unwrap().len() <= 600);
        // Over TCP there is room for all of them.
        let resp = one(answer(&z, &m, &TCP));
        assert_eq!(resp.queries.len(), 16);
        assert!(!resp.metadata.truncation);
    }

    #[test]
    fn slip_reply_is_bare_and_truncated() {
        let mut m = q("_vlmcs._tcp.kms.example.com.", RecordType::SRV);
        m.edns = Some(Edns::new());
        let wire = m.to_vec().unwrap();
        let r = truncated_reply(&m, wire.len(), &UDP);
        assert!(r.metadata.truncation);
        assert!(!r.metadata.authoritative);
        assert!(r.answers.is_empty() && r.authorities.is_empty());
        assert_eq!(r.queries, m.queries);
        assert!(r.to_vec().unwrap().len() <= wire.len());
    }

    /// Found while reviewing what the `dns_message` fuzz target checks: a question name that is
    /// a pointer into the query's header (here to offset 0: a 9-byte label made of the rest of
    /// the id, the flags and the counts) decodes to 11 bytes from 2, so echoing it made the
    /// slip reply 27 bytes for an 18-byte query.
    #[test]
    fn slip_reply_is_never_larger_than_the_query_on_the_wire() {
        let wire = [
            0x09, 0x61, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // header
            0xc0, 0x00, 0x00, 0x01, 0x00, 0x01, // name = pointer to offset 0, A, IN
        ];
        let m = Message::from_vec(&wire).unwrap();
        assert_eq!(m.queries.len(), 1);
        let r = truncated_reply(&m, wire.len(), &UDP);
        let bytes = r.to_vec().unwrap();
        assert!(
            bytes.len() <= wire.len(),
            "{} > {}",
            bytes.len(),
            wire.len()
        );
        assert!(r.metadata.truncation);
        assert!(r.queries.is_empty());
        assert_eq!(Message::from_vec(&bytes).unwrap().metadata.id, 0x0961);
    }
}
