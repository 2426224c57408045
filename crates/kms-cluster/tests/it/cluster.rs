//! A three-node cluster over real gRPC: replication, forwarding, probes, a join that needs a
//! snapshot, and the transport's refusals.

use std::time::Duration;

use kms_cluster::grpc::{MIN_WIRE_VERSION, WIRE_VERSION};
use kms_cluster::{ForwardError, PeerError, PeerNetwork, PeerNetworkConfig};
use kms_store::openraft::async_runtime::watch::WatchReceiver;
use kms_store::openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use kms_store::types::{RPCError, ServerState, Vote, VoteRequest};

use crate::harness::{TestNode, WAIT, bounded, cluster, leader_write, record_command};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_one_count() {
    bounded(three_nodes_one_count_body()).await;
}

async fn three_nodes_one_count_body() {
    let mut nodes = cluster(3).await;

    // Writes on the leader reach every state machine.
    let (mut l, mut last) = leader_write(&nodes, record_command(1, 10)).await;
    for seed in 2..=5 {
        (l, last) = leader_write(&nodes, record_command(seed, 10)).await;
    }
    let leader = nodes[l].id;
    let f = (l + 1) % nodes.len();
    for n in &nodes {
        n.raft
            .wait(Some(WAIT))
            .applied_index_at_least(Some(last.log_id.index), "writes applied")
            .await
            .expect("replicated");
        assert_eq!(n.windows_clients(), 50, "node {}", n.id);
    }

    // A follower forwards a write to the leader over gRPC and gets the leader's outcome.
    let follower = &nodes[f];
    let forwarded = follower
        .network
        .forward_write(leader, &nodes[l].info.grpc_addr, record_command(100, 4))
        .await
        .expect("forwarded write");
    match &forwarded.outcome {
        kms_core::Outcome::Recorded(o) => assert_eq!(o.len(), 4),
        other => panic!("unexpected outcome {other:?}"),
    }
    follower
        .raft
        .wait(Some(WAIT))
        .applied_index_at_least(Some(forwarded.log_id.index), "forwarded write applied")
        .await
        .expect("applied on the follower");
    assert_eq!(follower.windows_clients(), 54);

    // Forwarding to a follower is refused with a hint naming the leader; nothing is written.
    let other = &nodes[(l + 2) % nodes.len()];
    match follower
        .network
        .forward_write(other.id, &other.info.grpc_addr, record_command(200, 1))
        .await
    {
        Err(ForwardError::NotLeader {
            leader_id,
            leader_addr,
        }) => {
            assert_eq!(leader_id, Some(leader));
            assert_eq!(
                leader_addr.as_deref(),
                Some(nodes[l].info.grpc_addr.as_str())
            );
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }

    // The Forward trait the node's writer uses.
    {
        use kms_cluster::{Forward, ForwardResult};
        match Forward::forward(
            &follower.network,
            leader,
            nodes[l].info.clone(),
            record_command(300, 2),
        )
        .await
        {
            ForwardResult::Applied(kms_core::Outcome::Recorded(o)) => assert_eq!(o.len(), 2),
            other => panic!("unexpected forward result {other:?}"),
        }
    }

    // Probes answer with each node's view.
    for n in &nodes {
        let p = nodes[f]
            .network
            .probe(&n.info.grpc_addr)
            .await
            .expect("probe");
        assert_eq!(p.node_id, n.id);
        assert_eq!(p.name, n.info.name);
        assert!(p.has_leader());
        assert_eq!(p.leader_id, Some(leader));
        assert!(p.term >= 1);
        assert!(p.last_applied_index.is_some());
        let expected = if n.id == leader {
            ServerState::Leader
        } else {
            ServerState::Follower
        };
        assert_eq!(p.role, Some(expected));
        use kms_cluster::Probe;
        assert!(
            Probe::probe(&nodes[f].network, n.id, n.info.clone())
                .await
                .is_some()
        );
        // A different node id at that address is not healthy for the asked id.
        assert!(
            Probe::probe(&nodes[f].network, n.id + 100, n.info.clone())
                .await
                .is_none()
        );
        // The node itself refuses a call addressed to another id, naming both.
        let misdirected = nodes[f]
            .network
            .client(n.id + 100, &n.info.grpc_addr)
            .expect("client")
            .probe()
            .await
            .expect_err("a call meant for another node id is refused");
        match misdirected {
            kms_cluster::PeerError::Refused { code, message, .. } => {
                assert_eq!(code, tonic::Code::FailedPrecondition);
                assert!(
                    message.contains(&format!("addressed to node {}", n.id + 100))
                        && message.contains(&format!("this is node {}", n.id)),
                    "{message}"
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    // Enough entries for a snapshot, then compact the log so a new node cannot catch up from it.
    let mut last = None;
    for seed in 1_000..1_060 {
        last = Some(leader_write(&nodes, record_command(seed, 2)).await.1.log_id);
    }
    let last = last.expect("a last write");
    // On every node, so whichever leads when node 4 joins has only a snapshot to offer.
    for n in &nodes {
        n.raft
            .wait(Some(WAIT))
            .applied_index_at_least(Some(last.index), "applied before compaction")
            .await
            .expect("applied");
        n.raft.trigger().snapshot().await.expect("trigger snapshot");
        n.raft
            .wait(Some(WAIT))
            .snapshot(last, "snapshot at the last write")
            .await
            .expect("snapshot built");
        n.raft
            .trigger()
            .purge_log(last.index)
            .await
            .expect("trigger purge");
        n.raft
            .wait(Some(WAIT))
            .purged(Some(last), "log purged up to the snapshot")
            .await
            .expect("purged");
    }

    // A fourth node joins through a follower: the hint leads to the leader, which adds it as a
    // learner (it must be sent the snapshot), waits for it to catch up and promotes it.
    let fourth = TestNode::start(4).await;
    let membership = fourth
        .network
        .join(&nodes[f].info.grpc_addr, 4, fourth.info.clone())
        .await
        .expect("join");
    assert!(
        membership.voter_ids().any(|v| v == 4),
        "node 4 is a voter: {membership:?}"
    );
    assert_eq!(membership.get_node(&4), Some(&fourth.info));
    fourth
        .raft
        .wait(Some(WAIT))
        .applied_index_at_least(Some(last.index), "caught up")
        .await
        .expect("node 4 caught up");
    let m = fourth.raft.metrics().borrow_watched().clone();
    assert!(
        m.snapshot.is_some_and(|s| s.index >= last.index),
        "node 4 was brought up by a snapshot, got {:?}",
        m.snapshot
    );
    let expected = nodes[l].state();
    assert!(fourth.state() == expected, "node 4 converged");
    assert_eq!(fourth.windows_clients(), 54 + 2 + 120);
    // Joining again is idempotent.
    let again = fourth
        .network
        .join(&nodes[l].info.grpc_addr, 4, fourth.info.clone())
        .await
        .expect("join again");
    assert_eq!(again.voter_ids().count(), 4);

    // One more write reaches all four.
    nodes.push(fourth);
    let (_, resp) = leader_write(&nodes, record_command(5_000, 1)).await;
    for n in &nodes {
        n.raft
            .wait(Some(WAIT))
            .applied_index_at_least(Some(resp.log_id.index), "last write applied")
            .await
            .expect("replicated to all four");
    }
    let expected = nodes[l].state();
    for n in &nodes {
        assert!(n.state() == expected, "node {} converged", n.id);
    }

    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_wire_version_is_refused() {
    let node = TestNode::start(1).await;
    let mut raw = node.raw_client().await;
    for version in [0, WIRE_VERSION + 1, 99] {
        let status = raw
            .probe(kms_api::raft::v1::ProbeRequest {
                version,
                from_node_id: 7,
            })
            .await
            .expect_err("unknown version refused");
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
        assert!(
            status.message().contains(&format!("version {version}")),
            "{status:?}"
        );
        let md = status.metadata();
        assert_eq!(
            md.get("kms-wire-min").and_then(|v| v.to_str().ok()),
            Some(MIN_WIRE_VERSION.to_string().as_str())
        );
        assert_eq!(
            md.get("kms-wire-max").and_then(|v| v.to_str().ok()),
            Some(WIRE_VERSION.to_string().as_str())
        );
    }
    // The supported version is answered, in that version.
    let ok = raw
        .probe(kms_api::raft::v1::ProbeRequest {
            version: WIRE_VERSION,
            from_node_id: 7,
        })
        .await
        .expect("probe")
        .into_inner();
    assert_eq!(ok.version, WIRE_VERSION);
    assert_eq!(ok.node_id, 1);
    assert!(!ok.has_leader, "an uninitialized node knows no leader");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_peers_map_to_openraft_errors() {
    // A port nobody listens on.
    let addr = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let network = PeerNetwork::new(1, PeerNetworkConfig::default(), None);
    match network.probe(&addr).await {
        Err(PeerError::Unreachable { .. }) => {}
        other => panic!("expected Unreachable, got {other:?}"),
    }
    let mut factory = network.clone();
    let info = kms_store::NodeInfo {
        name: "gone".into(),
        grpc_addr: addr,
        kms_addr: String::new(),
    };
    let mut client = factory.new_client(2, &info).await;
    let rpc = VoteRequest::new(Vote::new(1, 1), None);
    match client
        .vote(rpc, RPCOption::new(Duration::from_secs(2)))
        .await
    {
        Err(RPCError::Unreachable(_)) => {}
        other => panic!("expected Unreachable, got {other:?}"),
    }
    // An address that is not one.
    let bad = kms_store::NodeInfo {
        name: "bad".into(),
        grpc_addr: "not an address".into(),
        kms_addr: String::new(),
    };
    let mut client = factory.new_client(3, &bad).await;
    let rpc = VoteRequest::new(Vote::new(1, 1), None);
    match client
        .vote(rpc, RPCOption::new(Duration::from_secs(2)))
        .await
    {
        Err(RPCError::Unreachable(_)) => {}
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(matches!(
        network.client(3, ""),
        Err(PeerError::InvalidAddress { .. })
    ));

    // A peer that accepts TCP but never answers: the call times out within its budget.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_addr = silent.local_addr().expect("addr").to_string();
    let _keep = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let info = kms_store::NodeInfo {
        name: "silent".into(),
        grpc_addr: silent_addr,
        kms_addr: String::new(),
    };
    let mut client = factory.new_client(4, &info).await;
    let rpc = VoteRequest::new(Vote::new(1, 1), None);
    match client
        .vote(rpc, RPCOption::new(Duration::from_millis(400)))
        .await
    {
        Err(RPCError::Timeout(t)) => {
            assert_eq!(t.target, 4);
            assert_eq!(t.id, 1);
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
}

/// A heartbeat of a leader (node 2, term 1): an empty follower accepts it.
fn heartbeat() -> kms_store::types::AppendEntriesRequest {
    kms_store::types::AppendEntriesRequest {
        vote: Vote::new_committed(1, 2),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    }
}

/// `n` heartbeats through the openraft network client's `stream_append`: `n` answers, each
/// matching at no log id.
async fn all_heartbeats_accepted(client: &mut kms_cluster::PeerClient, n: usize) {
    use futures::StreamExt as _;
    let input = futures::stream::iter((0..n).map(|_| heartbeat()).collect::<Vec<_>>());
    let results: Vec<_> = client
        .stream_append(input, RPCOption::new(Duration::from_secs(1)))
        .await
        .expect("stream opened")
        .collect()
        .await;
    assert_eq!(results.len(), n);
    assert!(
        results.iter().all(|r| matches!(r, Ok(Ok(None)))),
        "{results:?}"
    );
}

/// Every answer of one raw `StreamAppend` call carrying `requests`.
async fn all_answers(
    raw: &mut kms_api::raft::v1::raft_peer_client::RaftPeerClient<tonic::transport::Channel>,
    requests: impl futures::Stream<Item = kms_api::raft::v1::AppendEntriesRequest> + Send + 'static,
) -> Vec<Result<kms_api::raft::v1::StreamAppendResponse, tonic::Status>> {
    use futures::StreamExt as _;
    raw.stream_append(requests)
        .await
        .expect("stream opened")
        .into_inner()
        .collect()
        .await
}

/// Pipelined AppendEntries (`StreamAppend`): answers come back one per request, in order, both
/// through the raw RPC and through the openraft network client; the first request's version
/// is checked before the stream opens, and a later request in another version ends it with
/// INVALID_ARGUMENT after the answers before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_append_answers_in_order_and_checks_versions() {
    use kms_api::raft::v1 as pb;
    use kms_store::types::StreamAppendResult;

    let node = TestNode::start(1).await;
    let message = move |version| pb::AppendEntriesRequest {
        version,
        append_entries_request: kms_cluster::grpc::wire::encode("request", &heartbeat())
            .unwrap()
            .into(),
    };

    // Raw RPC, three requests: three answers.
    let mut raw = node.raw_client().await;
    let requests = futures::stream::iter((0..3).map(|_| message(WIRE_VERSION)).collect::<Vec<_>>());
    let answers = all_answers(&mut raw, requests).await;
    assert_eq!(answers.len(), 3, "{answers:?}");
    for a in answers {
        let a = a.expect("an answer");
        assert_eq!(a.version, WIRE_VERSION);
        match a.result {
            Some(pb::stream_append_response::Result::StreamAppendResult(b)) => {
                let r: StreamAppendResult =
                    kms_cluster::grpc::wire::decode("result", &b).expect("decodes");
                assert_eq!(r, Ok(None), "a heartbeat with no log matches at None");
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }

    // An unknown version in the first request: the call is refused, naming the versions.
    let status = raw
        .stream_append(futures::stream::iter([message(WIRE_VERSION + 1)]))
        .await
        .expect_err("unknown version refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");

    // Another version mid-stream: the answers before it, then INVALID_ARGUMENT.
    let requests = futures::stream::iter([message(WIRE_VERSION), message(WIRE_VERSION + 7)]);
    let answers = all_answers(&mut raw, requests).await;
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(answers[0].is_ok());
    let e = answers[1]
        .as_ref()
        .expect_err("the version switch ends the stream");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    // The openraft network client pipelines through the same call.
    let mut factory = node.network.clone();
    let mut client = factory.new_client(1, &node.info).await;
    all_heartbeats_accepted(&mut client, 5).await;
    node.stop().await;
}

/// A peer without `StreamAppend` (an older kmsd): the first pipelined attempt fails with the
/// peer's UNIMPLEMENTED, and every later one is sent as unary AppendEntries, which succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_stream_append_gets_unary_appends() {
    let node = TestNode::start_without_stream_append(1).await;
    let mut factory = node.network.clone();
    let mut client = factory.new_client(1, &node.info).await;
    let input = futures::stream::iter(vec![heartbeat()]);
    match client
        .stream_append(input, RPCOption::new(Duration::from_secs(1)))
        .await
    {
        Err(e) => assert!(e.to_string().contains("StreamAppend"), "{e}"),
        Ok(_) => panic!("the peer does not serve StreamAppend"),
    }
    // Unary from now on.
    all_heartbeats_accepted(&mut client, 3).await;
    node.stop().await;
}
