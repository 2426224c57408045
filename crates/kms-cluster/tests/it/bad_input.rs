//! Whatever a peer sends, the server answers with a status (INVALID_ARGUMENT for garbage) and
//! keeps serving; nothing panics and the Raft node keeps running.

use std::collections::BTreeMap;

use futures::stream;
use kms_api::raft::v1 as pb;
use kms_cluster::grpc::WIRE_VERSION;
use kms_cluster::grpc::wire::encode;
use kms_store::openraft::async_runtime::watch::WatchReceiver;
use kms_store::types::{SnapshotMeta, Vote};
use prost::bytes::Bytes;

use crate::harness::{TestNode, WAIT};

const GARBAGE: &[&[u8]] = &[
    b"",
    b"\x00",
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\xfd\xff\xff\xff\xff\xff\xff\xff\x7fzzzz",
    b"definitely not bincode, not even close to it",
];

fn assert_invalid(what: &str, r: Result<impl std::fmt::Debug, tonic::Status>) {
    match r {
        Err(s) => assert_eq!(s.code(), tonic::Code::InvalidArgument, "{what}: {s:?}"),
        Ok(v) => panic!("{what}: accepted garbage: {v:?}"),
    }
}

fn header(vote: Bytes, meta: Bytes, total_bytes: u64) -> pb::SnapshotChunk {
    pb::SnapshotChunk {
        version: WIRE_VERSION,
        part: Some(pb::snapshot_chunk::Part::Header(pb::SnapshotHeader {
            vote,
            meta,
            total_bytes,
        })),
    }
}

fn data(d: &'static [u8]) -> pb::SnapshotChunk {
    pb::SnapshotChunk {
        version: WIRE_VERSION,
        part: Some(pb::snapshot_chunk::Part::Data(Bytes::from_static(d))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_refused_and_the_node_keeps_serving() {
    let node = TestNode::start_with(1, Default::default(), 1 << 20).await;
    node.raft
        .initialize(BTreeMap::from([(1, node.info.clone())]))
        .await
        .expect("initialize");
    node.raft
        .wait(Some(WAIT))
        .metrics(|m| m.current_leader == Some(1), "leads itself")
        .await
        .expect("leader");
    let mut raw = node.raw_client().await;

    for g in GARBAGE {
        let g = Bytes::from_static(g);
        let v = pb::VoteRequest {
            version: WIRE_VERSION,
            vote_request: g.clone(),
        };
        assert_invalid("vote", raw.vote(v.clone()).await);
        assert_invalid("pre-vote", raw.pre_vote(v).await);
        assert_invalid(
            "append entries",
            raw.append_entries(pb::AppendEntriesRequest {
                version: WIRE_VERSION,
                append_entries_request: g.clone(),
            })
            .await,
        );
        assert_invalid(
            "transfer leader",
            raw.transfer_leader(pb::TransferLeaderRequest {
                version: WIRE_VERSION,
                transfer_leader_request: g.clone(),
            })
            .await,
        );
        assert_invalid(
            "forward write",
            raw.forward_write(pb::ForwardWriteRequest {
                version: WIRE_VERSION,
                command: g.clone(),
                from_node_id: 9,
            })
            .await,
        );
        assert_invalid(
            "snapshot header",
            raw.install_snapshot(stream::iter(vec![header(g.clone(), g.clone(), 0)]))
                .await,
        );
    }

    // Join without a node, with node id 0, without an address.
    assert_invalid(
        "join without node",
        raw.join(pb::JoinRequest {
            version: WIRE_VERSION,
            node: None,
        })
        .await,
    );
    for node_msg in [
        pb::Member {
            id: 0,
            name: "x".into(),
            grpc_address: "127.0.0.1:1".into(),
            kms_address: String::new(),
        },
        pb::Member {
            id: 5,
            name: "x".into(),
            grpc_address: String::new(),
            kms_address: String::new(),
        },
    ] {
        assert_invalid(
            "join with a bad node",
            raw.join(pb::JoinRequest {
                version: WIRE_VERSION,
                node: Some(node_msg),
            })
            .await,
        );
    }

    // Snapshot streams out of order or with the wrong sizes.
    let vote = Bytes::from(encode("vote", &Vote::new_committed(1, 1)).expect("encode"));
    let meta = Bytes::from(encode("meta", &SnapshotMeta::default()).expect("encode"));
    assert_invalid(
        "snapshot without header",
        raw.install_snapshot(stream::iter(vec![data(b"abc")])).await,
    );
    assert_invalid(
        "empty snapshot stream",
        raw.install_snapshot(stream::iter(Vec::<pb::SnapshotChunk>::new()))
            .await,
    );
    assert_invalid(
        "snapshot longer than announced",
        raw.install_snapshot(stream::iter(vec![
            header(vote.clone(), meta.clone(), 4),
            data(b"abc"),
            data(b"def"),
        ]))
        .await,
    );
    assert_invalid(
        "snapshot shorter than announced",
        raw.install_snapshot(stream::iter(vec![
            header(vote.clone(), meta.clone(), 10),
            data(b"abc"),
        ]))
        .await,
    );
    assert_invalid(
        "two snapshot headers",
        raw.install_snapshot(stream::iter(vec![
            header(vote.clone(), meta.clone(), 3),
            header(vote.clone(), meta.clone(), 3),
        ]))
        .await,
    );
    let mut wrong_version = data(b"abc");
    wrong_version.version = WIRE_VERSION + 1;
    assert_invalid(
        "snapshot chunk in another version",
        raw.install_snapshot(stream::iter(vec![
            header(vote.clone(), meta.clone(), 3),
            wrong_version,
        ]))
        .await,
    );
    // Well-framed, but the data is not a kmsd state: refused before openraft sees it (an
    // uninstallable snapshot would stop the Raft node).
    assert_invalid(
        "snapshot data that is not a state",
        raw.install_snapshot(stream::iter(vec![
            header(vote.clone(), meta.clone(), 9),
            data(b"\x01garbage"),
            data(b"!"),
        ]))
        .await,
    );
    // Larger than this node accepts (1 MiB here).
    match raw
        .install_snapshot(stream::iter(vec![header(vote, meta, 2 << 20)]))
        .await
    {
        Err(s) => assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}"),
        Ok(r) => panic!("oversized snapshot accepted: {r:?}"),
    }

    // Still serving, still leading, still writing.
    let p = node
        .network
        .probe(&node.info.grpc_addr)
        .await
        .expect("probe");
    assert_eq!(p.node_id, 1);
    assert_eq!(node.raft.metrics().borrow_watched().current_leader, Some(1));
    node.raft
        .client_write(crate::harness::record_command(1, 1).into())
        .await
        .expect("write after garbage");
    assert_eq!(node.windows_clients(), 1);
    node.stop().await;
}
