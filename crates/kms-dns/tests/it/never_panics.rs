//! No packet makes the responder panic: arbitrary bytes and mutated real queries.

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::rr::RecordType;
use kms_dns::{DnsConfig, NoopObserver, RateLimitConfig, Transport, ZoneResponder, parse_network};
use proptest::prelude::*;

use crate::harness::*;

fn responder() -> ZoneResponder {
    let cfg = DnsConfig {
        axfr_allow: vec![parse_network("127.0.0.0/8").unwrap()],
        rate_limit: RateLimitConfig {
            responses_per_second: 0,
            ..RateLimitConfig::default()
        },
        ..cfg()
    };
    let r = ZoneResponder::new(cfg, Arc::new(NoopObserver)).unwrap();
    r.update(&three_nodes());
    r
}

fn seeds() -> Vec<Vec<u8>> {
    [
        (SRV_NAME, RecordType::SRV, None),
        (ZONE, RecordType::AXFR, None),
        (ZONE, RecordType::ANY, Some(4096)),
        ("kms1.kms.example.com.", RecordType::A, Some(512)),
    ]
    .into_iter()
    .map(|(n, t, e)| query(n, t, e).to_vec().unwrap())
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1400), tcp in any::<bool>()) {
        let r = responder();
        let src: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        let t = if tcp { Transport::Tcp } else { Transport::Udp };
        for reply in r.respond(&bytes, src, t) {
            prop_assert!(reply.len() <= usize::from(u16::MAX));
        }
    }

    #[test]
    fn mutated_queries(seed in 0usize..4, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<Option<usize>>()) {
        let r = responder();
        let mut bytes = seeds()[seed].clone();
        for (at, value) in flips {
            let i = at % bytes.len();
            bytes[i] = value;
        }
        if let Some(c) = cut {
            bytes.truncate(c % (bytes.len() + 1));
        }
        let src: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        let udp = r.respond(&bytes, src, Transport::Udp);
        for reply in &udp {
            // Never more than the 512-byte default unless the client asked for more.
            prop_assert!(reply.len() <= 1232);
        }
        let _ = r.respond(&bytes, src, Transport::Tcp);
    }
}
