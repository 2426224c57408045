//! SRV/A/AAAA/SOA/NS answers over UDP and TCP, negative answers, truncation and TCP fallback.

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use kms_core::ClusterView;

use crate::harness::*;

#[tokio::test]
async fn srv_a_aaaa_soa_ns_over_udp_and_tcp() {
    let server = TestServer::start(three_nodes(), cfg()).await;
    for over_tcp in [false, true] {
        let ask = |q: Message| async move {
            if over_tcp {
                tcp_ask(server.tcp, &q).await
            } else {
                udp_ask(server.udp, &q).await
            }
        };
        let srv = ask(query(SRV_NAME, RecordType::SRV, None)).await;
        assert_eq!(srv.metadata.response_code, ResponseCode::NoError);
        assert!(srv.metadata.authoritative, "AA on SRV (tcp={over_tcp})");
        assert_eq!(
            srv_targets(&srv),
            vec![
                "kms1.kms.example.com.",
                "kms2.kms.example.com.",
                "kms3.kms.example.com."
            ]
        );
        for r in &srv.answers {
            let RData::SRV(s) = &r.data else { panic!() };
            assert_eq!((s.priority, s.weight, s.port), (0, 100, 1688));
            assert_eq!(r.ttl, 60);
        }
        // Target addresses ride along in the additional section.
        assert_eq!(srv.additionals.len(), 3);

        let a = ask(query("KMS1.kms.EXAMPLE.com.", RecordType::A, None)).await;
        assert!(a.metadata.authoritative);
        assert_eq!(a.answers.len(), 1);
        assert_eq!(a.answers[0].data.to_string(), "127.0.0.11");

        let aaaa = ask(query("kms3.kms.example.com.", RecordType::AAAA, None)).await;
        assert_eq!(aaaa.answers[0].data.to_string(), "::1");

        let soa = ask(query(ZONE, RecordType::SOA, None)).await;
        assert!(soa.metadata.authoritative);
        let RData::SOA(s) = &soa.answers[0].data else {
            panic!()
        };
        assert_eq!(s.mname.to_string(), "kms1.kms.example.com.");
        assert!(
            s.serial > 1_600_000_000,
            "time-based serial, got {}",
            s.serial
        );

        let ns = ask(query(ZONE, RecordType::NS, None)).await;
        assert_eq!(ns.answers.len(), 3);
        assert!(ns.answers.iter().all(|r| r.record_type() == RecordType::NS));
    }
    assert!(server.counts.queries("SRV", "NOERROR") >= 2);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn negative_answers_and_refusals() {
    let server = TestServer::start(three_nodes(), cfg()).await;
    let nx = udp_ask(
        server.udp,
        &query("kms9.kms.example.com.", RecordType::A, None),
    )
    .await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(nx.metadata.authoritative);
    assert_eq!(nx.authorities.len(), 1);
    assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(nx.authorities[0].ttl, 30, "negative TTL");

    let nodata = udp_ask(
        server.udp,
        &query("kms1.kms.example.com.", RecordType::TXT, None),
    )
    .await;
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert_eq!(nodata.authorities[0].record_type(), RecordType::SOA);

    let refused = udp_ask(server.udp, &query("www.example.org.", RecordType::A, None)).await;
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    assert!(!refused.metadata.authoritative);
    assert!(refused.answers.is_empty());

    // QDCOUNT 0 → FORMERR.
    let empty = Message::new(77, MessageType::Query, OpCode::Query);
    let formerr = udp_ask(server.udp, &empty).await;
    assert_eq!(formerr.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(server.counts.queries("none", "FORMERR"), 1);
    assert_eq!(server.counts.queries("A", "REFUSED"), 1);
    assert_eq!(server.counts.queries("A", "NXDOMAIN"), 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn edns_answers_carry_opt() {
    let server = TestServer::start(three_nodes(), cfg()).await;
    let resp = udp_ask(server.udp, &query(SRV_NAME, RecordType::SRV, Some(4096))).await;
    let opt = resp.edns.expect("OPT in the response");
    assert_eq!(opt.max_payload(), 1232);
    server.stop().await.unwrap();
}

fn forty_nodes() -> ClusterView {
    ClusterView {
        members: (1..=40)
            .map(|i| member(i, &format!("kms{i:02}"), &format!("127.0.1.{i}"), true))
            .collect(),
        generation: 1,
        ..ClusterView::default()
    }
}

#[tokio::test]
async fn large_answer_truncates_over_udp_and_is_complete_over_tcp() {
    let server = TestServer::start(forty_nodes(), cfg()).await;
    for edns in [None, Some(1232), Some(4096)] {
        let q = query(SRV_NAME, RecordType::SRV, edns);
        let bytes = udp_raw(
            &udp_client("127.0.0.1").await,
            server.udp,
            &q.to_vec().unwrap(),
            ANSWER_WAIT,
        )
        .await
        .expect("a UDP answer");
        let limit = edns.map_or(512, |e| usize::from(e.min(1232)));
        assert!(
            bytes.len() <= limit,
            "{} bytes over a {limit} limit",
            bytes.len()
        );
        let udp = Message::from_vec(&bytes).unwrap();
        assert!(udp.metadata.truncation, "TC set (edns {edns:?})");
        assert!(udp.answers.is_empty());

        let tcp = tcp_ask(server.tcp, &q).await;
        assert!(!tcp.metadata.truncation);
        assert_eq!(tcp.answers.len(), 40);
        assert_eq!(tcp.additionals.len(), 40);
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn several_queries_on_one_tcp_connection() {
    let server = TestServer::start(three_nodes(), cfg()).await;
    let mut stream = tokio::net::TcpStream::connect(server.tcp).await.unwrap();
    let queries = [
        query(SRV_NAME, RecordType::SRV, None),
        query(ZONE, RecordType::SOA, None),
        query("kms2.kms.example.com.", RecordType::A, None),
    ];
    for q in &queries {
        tcp_send(&mut stream, &q.to_vec().unwrap()).await;
    }
    for q in &queries {
        let r = tcp_recv(&mut stream, ANSWER_WAIT).await.expect("answer");
        assert_eq!(r.metadata.id, q.metadata.id);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(!r.answers.is_empty());
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_returns_and_frees_the_ports() {
    let server = TestServer::start(three_nodes(), cfg()).await;
    let (udp, tcp) = (server.udp, server.tcp);
    udp_ask(udp, &query(ZONE, RecordType::SOA, None)).await;
    server.stop().await.unwrap();
    tokio::net::UdpSocket::bind(udp)
        .await
        .expect("UDP port free");
    tokio::net::TcpListener::bind(tcp)
        .await
        .expect("TCP port free");
}

#[tokio::test]
async fn invalid_config_is_a_typed_error() {
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(three_nodes());
    let err = kms_dns::DnsServer::serve(
        udp,
        tcp,
        rx,
        kms_dns::DnsConfig::default(),
        std::sync::Arc::new(kms_dns::NoopObserver),
        std::future::pending::<()>(),
    )
    .await
    .unwrap_err();
    assert!(matches!(
        err,
        kms_dns::DnsError::Config(kms_dns::DnsConfigError::NoZones)
    ));
}
