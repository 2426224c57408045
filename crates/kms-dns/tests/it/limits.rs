//! What the server refuses to spend effort on: garbage, oversized queries, floods, too many or
//! idle TCP connections — and that it keeps answering everyone else.

use std::time::Duration;

use hickory_proto::op::{MessageType, ResponseCode};
use hickory_proto::rr::RecordType;
use kms_dns::{DnsConfig, RateLimitConfig};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::harness::*;

#[tokio::test]
async fn garbage_and_oversized_udp_are_dropped_and_the_next_query_answered() {
    let server = TestServer::start(three_nodes(), cfg()).await;
    let sock = udp_client("127.0.0.1").await;
    let mut response_bit = query(ZONE, RecordType::SOA, None);
    response_bit.metadata.message_type = MessageType::Response;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("three bytes", vec![1, 2, 3]),
        ("header only, claims a question", {
            let mut h = vec![0u8; 12];
            h[5] = 1;
            h
        }),
        (
            "random bytes",
            (0..200u32).map(|i| (i * 37 % 251) as u8).collect(),
        ),
        ("name pointer loop", {
            let mut p = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
            p.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            p
        }),
        ("a response", response_bit.to_vec().unwrap()),
        ("oversized", {
            let mut big = query(ZONE, RecordType::SOA, None).to_vec().unwrap();
            big.resize(4000, 0);
            big
        }),
    ];
    for (what, bytes) in &cases {
        let got = udp_raw(&sock, server.udp, bytes, SILENCE_WAIT).await;
        assert!(got.is_none(), "{what}: expected no response, got {got:?}");
        // The very next real query is answered.
        let ok = udp_ask_on(&sock, server.udp, &query(ZONE, RecordType::SOA, None))
            .await
            .unwrap_or_else(|| panic!("{what}: no answer to the following query"));
        assert_eq!(ok.metadata.response_code, ResponseCode::NoError);
    }
    assert!(server.counts.dropped("malformed") >= 4);
    assert_eq!(server.counts.dropped("oversized"), 1);
    assert_eq!(server.counts.dropped("not_a_query"), 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn garbage_and_oversized_tcp_frames() {
    let server = TestServer::start(three_nodes(), cfg()).await;
    // A garbage frame gets no answer but the connection keeps working.
    let mut stream = TcpStream::connect(server.tcp).await.unwrap();
    tcp_send(&mut stream, &[0xde, 0xad, 0xbe, 0xef]).await;
    let q = query(SRV_NAME, RecordType::SRV, None);
    tcp_send(&mut stream, &q.to_vec().unwrap()).await;
    let r = tcp_recv(&mut stream, ANSWER_WAIT)
        .await
        .expect("answer after garbage");
    assert_eq!(r.metadata.id, q.metadata.id);

    // An oversized frame closes the connection without an answer.
    let mut stream = TcpStream::connect(server.tcp).await.unwrap();
    tcp_send(&mut stream, &vec![0u8; 5000]).await;
    let mut buf = [0u8; 16];
    let n = timeout(ANSWER_WAIT, stream.read(&mut buf))
        .await
        .expect("closed promptly")
        .unwrap_or(0);
    assert_eq!(n, 0, "connection closed without a response");
    assert_eq!(server.counts.dropped("oversized"), 1);

    // And a new connection is served.
    let r = tcp_ask(server.tcp, &query(ZONE, RecordType::NS, None)).await;
    assert_eq!(r.answers.len(), 3);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_flood_from_one_source_is_limited_while_another_source_is_answered() {
    let cfg = DnsConfig {
        rate_limit: RateLimitConfig {
            responses_per_second: 10,
            burst: 10,
            slip: 0,
            ..RateLimitConfig::default()
        },
        ..cfg()
    };
    let server = TestServer::start(three_nodes(), cfg).await;
    let flooder = udp_client("127.0.0.1").await;
    let q = query(SRV_NAME, RecordType::SRV, None).to_vec().unwrap();
    const FLOOD: usize = 200;
    let started = Instant::now();
    for _ in 0..FLOOD {
        flooder.send_to(&q, server.udp).await.unwrap();
    }
    let mut answered = 0usize;
    let mut buf = vec![0u8; 4096];
    while let Ok(Ok(_)) = timeout(SILENCE_WAIT, flooder.recv_from(&mut buf)).await {
        answered += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The burst plus what refilled while the flood and the wait lasted, with slack.
    let allowed = 10 + (elapsed * 10.0).ceil() as usize + 2;
    assert!(answered >= 10, "the burst is answered, got {answered}");
    assert!(
        answered <= allowed,
        "{answered} of {FLOOD} answered in {elapsed:.2}s; at most {allowed} expected"
    );
    assert!(server.counts.dropped("rate_limited") >= (FLOOD - allowed) as u64);

    // A second source (127.0.0.2) is unaffected.
    let other = udp_client("127.0.0.2").await;
    let r = udp_ask_on(&other, server.udp, &query(SRV_NAME, RecordType::SRV, None))
        .await
        .expect("another source is answered during the flood");
    assert_eq!(srv_targets(&r).len(), 3);
    // TCP from the flooding address is not rate-limited.
    let r = tcp_ask(server.tcp, &query(SRV_NAME, RecordType::SRV, None)).await;
    assert_eq!(srv_targets(&r).len(), 3);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn slip_answers_limited_queries_with_tc() {
    let cfg = DnsConfig {
        rate_limit: RateLimitConfig {
            responses_per_second: 1,
            burst: 1,
            slip: 1,
            ..RateLimitConfig::default()
        },
        ..cfg()
    };
    let server = TestServer::start(three_nodes(), cfg).await;
    let sock = udp_client("127.0.0.1").await;
    let first = udp_ask_on(&sock, server.udp, &query(SRV_NAME, RecordType::SRV, None))
        .await
        .unwrap();
    assert!(!first.metadata.truncation);
    let q = query(SRV_NAME, RecordType::SRV, None);
    let second = udp_ask_on(&sock, server.udp, &q)
        .await
        .expect("a slip reply");
    assert!(second.metadata.truncation);
    assert!(second.answers.is_empty());
    assert!(second.to_vec().unwrap().len() <= q.to_vec().unwrap().len());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn tcp_connection_limit_and_idle_timeout() {
    let cfg = DnsConfig {
        max_tcp_connections: 1,
        tcp_idle_timeout: Duration::from_millis(500),
        ..cfg()
    };
    let server = TestServer::start(three_nodes(), cfg).await;
    // The first connection holds the only slot...
    let mut held = TcpStream::connect(server.tcp).await.unwrap();
    let q = query(ZONE, RecordType::SOA, None);
    tcp_send(&mut held, &q.to_vec().unwrap()).await;
    tcp_recv(&mut held, ANSWER_WAIT)
        .await
        .expect("first connection served");
    // ...so the second is closed at once.
    let mut extra = TcpStream::connect(server.tcp).await.unwrap();
    let mut buf = [0u8; 4];
    let n = timeout(ANSWER_WAIT, extra.read(&mut buf))
        .await
        .expect("closed promptly")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(server.counts.dropped("tcp_connection_limit"), 1);
    // The idle first connection is closed by the server after the idle timeout...
    let started = Instant::now();
    let n = timeout(ANSWER_WAIT, held.read(&mut buf))
        .await
        .expect("idle connection closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() < ANSWER_WAIT);
    // ...which frees the slot.
    let mut again = None;
    for _ in 0..20 {
        let mut s = TcpStream::connect(server.tcp).await.unwrap();
        tcp_send(&mut s, &q.to_vec().unwrap()).await;
        if let Some(r) = tcp_recv(&mut s, SILENCE_WAIT).await {
            again = Some(r);
            break;
        }
    }
    assert!(
        again.is_some(),
        "a new connection is served once the slot is free"
    );
    server.stop().await.unwrap();
}
