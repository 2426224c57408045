//! `ZoneResponder` is a hickory `RequestHandler`: it also runs under `hickory_server::Server`.

use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use hickory_server::Server;
use kms_dns::{NoopObserver, ZoneResponder};
use tokio::net::{TcpListener, UdpSocket};

use crate::harness::*;

#[tokio::test]
async fn zone_responder_under_hickory_server() {
    let responder = ZoneResponder::new(cfg(), Arc::new(NoopObserver)).unwrap();
    responder.update(&three_nodes());
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (udp_addr, tcp_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
    let mut server = Server::new(responder);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 16);

    let srv = udp_ask(udp_addr, &query(SRV_NAME, RecordType::SRV, Some(1232))).await;
    assert!(srv.metadata.authoritative);
    assert_eq!(srv_targets(&srv).len(), 3);
    assert!(srv.edns.is_some());

    let nx = tcp_ask(
        tcp_addr,
        &query("nope.kms.example.com.", RecordType::A, None),
    )
    .await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(nx.authorities.len(), 1);

    let refused = udp_ask(udp_addr, &query("example.org.", RecordType::A, None)).await;
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);

    server.shutdown_gracefully().await.unwrap();
}
