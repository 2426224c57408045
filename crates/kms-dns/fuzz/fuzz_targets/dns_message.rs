//! Fuzz target: one DNS packet through what the embedded server does with a UDP datagram or a
//! TCP frame — `ZoneResponder::respond` (size check, hickory-proto decoding, `answer`,
//! encoding) — and, step by step beside it, `Message::from_vec`, `kms_dns::answer` and
//! `Message::to_vec` on the same zones, plus the rate limiter's `truncated_reply`.
//!
//! Input layout: byte 0 selects the context, the rest is the packet.
//!   bit 0      transport: 0 UDP, 1 TCP
//!   bit 1      source inside `axfr_allow` (zone transfers allowed over TCP)
//!   bits 2..=3 configured UDP payload cap: 512, 1232 (the default) or 4096
//!
//! The zones are `corp.example.` and the nested `kms.corp.example.`, rendered from a
//! three-member `ClusterView` (an IPv4 node, an IPv6 node and an unhealthy node advertising an
//! out-of-zone host name), as a running node would serve them.
//!
//! Invariants: nothing panics; every reply encodes, decodes again and carries the query's id,
//! opcode and rcode; a UDP reply fits min(client's EDNS size, configured cap) (512 without
//! EDNS) and is a single message; a TCP message fits 64 KiB; undecodable, oversized and
//! response packets get nothing; the responder's bytes equal the step-by-step result; the
//! rate limiter's TC=1 reply fits the UDP limit and is no larger than the query; metric labels
//! come from the fixed lists and no drop is "internal".

#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType};
use kms_core::{ClusterView, MemberView};
use kms_dns::{
    DnsConfig, DnsObserver, DropReason, MAX_QUERY_SIZE, QTYPE_LABELS, QueryContext, RCODE_LABELS,
    RateLimitConfig, Reply, Transport, ZoneResponder, answer, parse_network, parse_zone,
    truncated_reply,
};
use libfuzzer_sys::fuzz_target;

/// Checks that every metric label is one of the documented values.
struct LabelCheck;

impl DnsObserver for LabelCheck {
    fn query(&self, qtype: &str, rcode: &str) {
        assert!(QTYPE_LABELS.contains(&qtype), "qtype label {qtype:?}");
        assert!(RCODE_LABELS.contains(&rcode), "rcode label {rcode:?}");
    }

    fn dropped(&self, reason: &str) {
        assert!(
            DropReason::ALL.iter().any(|r| r.as_str() == reason),
            "drop reason {reason:?}"
        );
        assert_ne!(reason, DropReason::Internal.as_str(), "internal error");
    }
}

fn member(id: u64, name: &str, host: &str, priority: u16, healthy: bool) -> MemberView {
    MemberView {
        id,
        name: name.into(),
        host: host.into(),
        kms_port: 1688,
        grpc_addr: format!("{host}:1689"),
        dns_priority: priority,
        dns_weight: 100,
        voter: true,
        healthy,
    }
}

fn view() -> ClusterView {
    ClusterView {
        local_id: 1,
        leader_id: Some(2),
        term: 7,
        members: vec![
            member(1, "kms1", "10.0.0.1", 0, true),
            member(2, "kms2", "2001:db8::2", 0, true),
            member(3, "kms3", "kms3.dc.example.org", 10, false),
        ],
        generation: 42,
    }
}

const PAYLOAD_CAPS: [u16; 3] = [512, 1232, 4096];

/// One responder per UDP payload cap, rate limiting off so that every run is deterministic.
fn responders() -> &'static [ZoneResponder; 3] {
    static R: OnceLock<[ZoneResponder; 3]> = OnceLock::new();
    R.get_or_init(|| {
        PAYLOAD_CAPS.map(|cap| {
            let cfg = DnsConfig {
                zones: vec![
                    parse_zone("kms.corp.example").expect("zone"),
                    parse_zone("corp.example.").expect("zone"),
                ],
                ttl: Duration::from_secs(60),
                axfr_allow: vec![parse_network("192.0.2.0/24").expect("network")],
                rate_limit: RateLimitConfig {
                    responses_per_second: 0,
                    ..RateLimitConfig::default()
                },
                max_udp_payload: cap,
                ..DnsConfig::default()
            };
            let r = ZoneResponder::new(cfg, Arc::new(LabelCheck)).expect("valid config");
            r.update(&view());
            r
        })
    })
}

/// Decode an encoded reply and check it against the message it was made from and the query.
fn check_reply(bytes: &[u8], sent: &Message, query: &Message) -> Message {
    let back = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(e) => panic!("reply does not decode: {e}\n{sent:?}"),
    };
    assert_eq!(back.metadata.id, query.metadata.id, "reply id");
    assert_eq!(back.metadata.message_type, MessageType::Response);
    assert_eq!(back.metadata.op_code, query.metadata.op_code, "reply opcode");
    // Compared as numbers: 16 decodes as BADSIG, the TSIG name hickory gives BADVERS's code.
    assert_eq!(
        u16::from(back.metadata.response_code),
        u16::from(sent.metadata.response_code),
        "rcode survives encoding"
    );
    assert_eq!(back.metadata.truncation, sent.metadata.truncation);
    assert_eq!(back.answers.len(), sent.answers.len());
    assert_eq!(back.authorities.len(), sent.authorities.len());
    assert_eq!(back.additionals.len(), sent.additionals.len());
    assert_eq!(
        back.edns.is_some(),
        query.edns.is_some(),
        "OPT in the reply iff in the query"
    );
    back
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, packet)) = data.split_first() else {
        return;
    };
    let transport = if sel & 1 == 0 {
        Transport::Udp
    } else {
        Transport::Tcp
    };
    let src: SocketAddr = if sel & 2 != 0 {
        ([192, 0, 2, 53], 5353).into()
    } else {
        ([198, 51, 100, 7], 5353).into()
    };
    let index = usize::from((sel >> 2) & 3) % PAYLOAD_CAPS.len();
    let responder = &responders()[index];
    let cap = PAYLOAD_CAPS[index];

    // What the server sends for this packet.
    let sent = responder.respond(packet, src, transport);

    // The same, step by step.
    if packet.len() > MAX_QUERY_SIZE {
        assert!(sent.is_empty(), "oversized query answered");
        return;
    }
    let Ok(query) = Message::from_vec(packet) else {
        assert!(sent.is_empty(), "undecodable query answered");
        return;
    };
    if query.metadata.message_type != MessageType::Query {
        assert!(sent.is_empty(), "response answered");
        return;
    }
    let ctx = QueryContext {
        transport,
        axfr_allowed: responder.config().axfr_allowed(src.ip()),
        max_udp_payload: cap,
    };
    let udp_limit = usize::from(
        query
            .edns
            .as_ref()
            .map_or(512, |e| e.max_payload().max(512))
            .min(cap),
    );

    // The TC=1 reply of a rate-limit slip turn.
    let tc = truncated_reply(&query, packet.len(), &ctx);
    let tc_bytes = tc.to_vec().expect("truncated reply encodes");
    assert!(
        tc_bytes.len() <= udp_limit,
        "truncated reply of {} bytes exceeds the UDP limit {udp_limit}",
        tc_bytes.len()
    );
    assert!(
        tc_bytes.len() <= packet.len(),
        "truncated reply of {} bytes is larger than the {}-byte query",
        tc_bytes.len(),
        packet.len()
    );
    let tc_back = check_reply(&tc_bytes, &tc, &query);
    assert!(tc_back.metadata.truncation, "slip reply has TC=1");
    assert!(tc_back.answers.is_empty() && tc_back.authorities.is_empty());

    let messages = match answer(&responder.zones(), &query, &ctx) {
        Reply::Drop(_) => {
            assert!(sent.is_empty(), "dropped query answered");
            return;
        }
        Reply::Send(messages) => messages,
    };
    assert!(!messages.is_empty(), "Reply::Send without a message");
    assert_eq!(messages.len(), sent.len(), "responder sent another number of messages");
    if transport == Transport::Udp {
        assert_eq!(messages.len(), 1, "several messages over UDP");
    }
    for (message, bytes) in messages.iter().zip(&sent) {
        let encoded = message.to_vec().expect("reply encodes");
        assert_eq!(&encoded, bytes, "responder bytes differ from answer()'s");
        match transport {
            Transport::Udp => assert!(
                bytes.len() <= udp_limit,
                "UDP reply of {} bytes exceeds {udp_limit}",
                bytes.len()
            ),
            Transport::Tcp => assert!(bytes.len() <= usize::from(u16::MAX)),
        }
        let back = check_reply(bytes, message, &query);
        if back.metadata.truncation {
            assert!(back.answers.is_empty() && back.authorities.is_empty());
        }
        if let Some(edns) = &back.edns {
            assert_eq!(edns.max_payload(), cap, "advertised payload is the cap");
        }
    }
});
