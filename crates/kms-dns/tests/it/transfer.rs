//! Zone transfers: allowed over TCP from `axfr_allow`, refused otherwise and over UDP.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use kms_core::ClusterView;
use kms_dns::{DnsConfig, parse_network};

use crate::harness::*;

#[tokio::test]
async fn axfr_from_an_allowed_source_over_tcp() {
    let cfg = DnsConfig {
        axfr_allow: vec![parse_network("127.0.0.1").unwrap()],
        ..cfg()
    };
    let server = TestServer::start(three_nodes(), cfg).await;
    let msgs = tcp_transfer(server.tcp, &query(ZONE, RecordType::AXFR, None)).await;
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    let types: Vec<RecordType> = m.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(types.first(), Some(&RecordType::SOA));
    assert_eq!(types.last(), Some(&RecordType::SOA));
    let count = |t: RecordType| types.iter().filter(|x| **x == t).count();
    assert_eq!(count(RecordType::NS), 3);
    assert_eq!(count(RecordType::SRV), 3);
    assert_eq!(count(RecordType::A), 2);
    assert_eq!(count(RecordType::AAAA), 1);
    assert_eq!(server.counts.queries("AXFR", "NOERROR"), 1);

    // Over UDP: refused even from the allowed source.
    let udp = udp_ask(server.udp, &query(ZONE, RecordType::AXFR, None)).await;
    assert_eq!(udp.metadata.response_code, ResponseCode::Refused);
    assert!(udp.answers.is_empty());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn axfr_is_refused_to_sources_outside_the_allow_list() {
    for allow in [vec![], vec![parse_network("10.0.0.0/8").unwrap()]] {
        let cfg = DnsConfig {
            axfr_allow: allow,
            ..cfg()
        };
        let server = TestServer::start(three_nodes(), cfg).await;
        let msgs = tcp_transfer(server.tcp, &query(ZONE, RecordType::AXFR, None)).await;
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].metadata.response_code, ResponseCode::Refused);
        assert!(msgs[0].answers.is_empty());
        assert_eq!(server.counts.queries("AXFR", "REFUSED"), 1);
        server.stop().await.unwrap();
    }
}

#[tokio::test]
async fn large_axfr_spans_several_messages() {
    let view = ClusterView {
        members: (1..=60)
            .map(|i| member(i, &format!("kms{i:02}"), &format!("127.0.2.{i}"), true))
            .collect(),
        generation: 1,
        ..ClusterView::default()
    };
    let cfg = DnsConfig {
        axfr_allow: vec![parse_network("127.0.0.0/8").unwrap()],
        ..cfg()
    };
    let server = TestServer::start(view, cfg).await;
    let msgs = tcp_transfer(server.tcp, &query(ZONE, RecordType::AXFR, None)).await;
    // SOA + 60 NS + 60 SRV + 60 A + SOA = 182 records, 64 per message.
    assert_eq!(msgs.len(), 3);
    let total: usize = msgs.iter().map(|m| m.answers.len()).sum();
    assert_eq!(total, 182);
    server.stop().await.unwrap();
}
