//! The zone follows the ClusterView watch channel.

use std::time::Duration;

use hickory_proto::rr::RecordType;
use kms_dns::serial_gt;
use tokio::time::{Instant, sleep};

use crate::harness::*;

/// Ask for the SRV set until `done` holds or `ANSWER_WAIT` passes.
async fn srv_until(server: &TestServer, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + ANSWER_WAIT;
    loop {
        let m = udp_ask(server.udp, &query(SRV_NAME, RecordType::SRV, None)).await;
        let targets = srv_targets(&m);
        if done(&targets) || Instant::now() > deadline {
            return targets;
        }
        sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_unhealthy_member_leaves_the_srv_answers_and_returns() {
    let server = TestServer::start(three_nodes(), cfg()).await;
    let before = udp_ask(server.udp, &query(ZONE, RecordType::SOA, None)).await;
    assert_eq!(srv_until(&server, |t| t.len() == 3).await.len(), 3);

    let mut view = three_nodes();
    view.members[1].healthy = false;
    view.generation += 1;
    server.views.send(view.clone()).unwrap();
    let targets = srv_until(&server, |t| t.len() == 2).await;
    assert_eq!(
        targets,
        vec!["kms1.kms.example.com.", "kms3.kms.example.com."]
    );
    // Its address record stays (it is still a member), and NS still lists it.
    let a = udp_ask(
        server.udp,
        &query("kms2.kms.example.com.", RecordType::A, None),
    )
    .await;
    assert_eq!(a.answers.len(), 1);
    let ns = udp_ask(server.udp, &query(ZONE, RecordType::NS, None)).await;
    assert_eq!(ns.answers.len(), 3);
    // The serial rose.
    let after = udp_ask(server.udp, &query(ZONE, RecordType::SOA, None)).await;
    assert!(serial_gt(soa_serial(&after), soa_serial(&before)));

    // Healthy again: back in the answers.
    view.members[1].healthy = true;
    view.generation += 1;
    server.views.send(view).unwrap();
    assert_eq!(srv_until(&server, |t| t.len() == 3).await.len(), 3);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn members_added_and_removed() {
    let server = TestServer::start(three_nodes(), cfg()).await;
    let mut view = three_nodes();
    view.members.push(member(4, "kms4", "127.0.0.14", true));
    view.generation += 1;
    server.views.send(view.clone()).unwrap();
    assert_eq!(srv_until(&server, |t| t.len() == 4).await.len(), 4);
    let a = udp_ask(
        server.udp,
        &query("kms4.kms.example.com.", RecordType::A, None),
    )
    .await;
    assert_eq!(a.answers[0].data.to_string(), "127.0.0.14");

    view.members.retain(|m| m.id != 1);
    view.generation += 1;
    server.views.send(view).unwrap();
    assert_eq!(srv_until(&server, |t| t.len() == 3).await.len(), 3);
    let gone = udp_ask(
        server.udp,
        &query("kms1.kms.example.com.", RecordType::A, None),
    )
    .await;
    assert_eq!(
        gone.metadata.response_code,
        hickory_proto::op::ResponseCode::NXDomain
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_dropped_view_sender_keeps_the_last_zone() {
    let server = TestServer::start(three_nodes(), cfg()).await;
    let TestServer { udp, .. } = &server;
    let udp = *udp;
    // Replace the sender with a fresh one; the original is dropped.
    let (dummy, _rx) = tokio::sync::watch::channel(three_nodes());
    let mut server = server;
    drop(std::mem::replace(&mut server.views, dummy));
    sleep(Duration::from_millis(50)).await;
    let m = udp_ask(udp, &query(SRV_NAME, RecordType::SRV, None)).await;
    assert_eq!(srv_targets(&m).len(), 3);
    server.stop().await.unwrap();
}
