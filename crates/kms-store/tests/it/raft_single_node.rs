//! The stores under a real openraft node (single member, so no network is used): writes are
//! answered with kms-core outcomes, snapshots are taken, and a restarted node comes back with
//! the same state. This is what kms-cluster builds on.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kms_store::NodeInfo;
use kms_store::Store;
use kms_store::TypeConfig;
use kms_store::openraft::errors::Unreachable as UnreachableErr;
use kms_store::openraft::network::RPCOption;
use kms_store::openraft::network::RaftNetworkFactory;
use kms_store::openraft::network::RaftNetworkV2;
use kms_store::types::AppendEntriesRequest;
use kms_store::types::AppendEntriesResponse;
use kms_store::types::Config;
use kms_store::types::RPCError;
use kms_store::types::Raft;
use kms_store::types::ReplicationClosed;
use kms_store::types::ServerState;
use kms_store::types::Snapshot;
use kms_store::types::SnapshotData;
use kms_store::types::SnapshotResponse;
use kms_store::types::StreamingError;
use kms_store::types::Vote;
use kms_store::types::VoteRequest;
use kms_store::types::VoteResponse;

use crate::common::*;

/// A network for a one-node cluster: every peer is unreachable.
struct NoPeers;

fn unreachable() -> UnreachableErr<TypeConfig> {
    UnreachableErr::new(&std::io::Error::other("single-node test: no peers"))
}

impl RaftNetworkV2<TypeConfig> for NoPeers {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError> {
        Err(RPCError::Unreachable(unreachable()))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest,
        _option: RPCOption,
    ) -> Result<VoteResponse, RPCError> {
        Err(RPCError::Unreachable(unreachable()))
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse, StreamingError> {
        Err(StreamingError::Unreachable(unreachable()))
    }
}

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeers;
    async fn new_client(&mut self, _target: u64, _node: &NodeInfo) -> NoPeers {
        NoPeers
    }
}

fn config() -> Arc<Config> {
    Arc::new(
        Config {
            heartbeat_interval: 50,
            election_timeout_min: 150,
            election_timeout_max: 300,
            ..Default::default()
        }
        .validate()
        .unwrap(),
    )
}

async fn start(store: &Store) -> Raft {
    Raft::new(
        1,
        config(),
        NoPeers,
        store.log_store(),
        store.state_machine(),
    )
    .await
    .unwrap()
}

fn open_retrying(path: &std::path::Path) -> Store {
    // The previous node's tasks may still be dropping their handles; sled's directory lock is
    // released with the last one.
    for _ in 0..200 {
        match Store::open(path) {
            Ok(s) => return s,
            Err(_) => std::thread::sleep(Duration::from_millis(25)),
        }
    }
    Store::open(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_writes_snapshots_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let timeout = Some(Duration::from_secs(10));
    let last_index;
    let state_before;
    {
        let store = Store::open(dir.path()).unwrap();
        let raft = start(&store).await;
        let me = NodeInfo {
            name: "kms1".into(),
            grpc_addr: "127.0.0.1:1689".into(),
            kms_addr: "127.0.0.1:1688".into(),
        };
        raft.initialize(BTreeMap::from([(1u64, me)])).await.unwrap();
        raft.wait(timeout)
            .state(ServerState::Leader, "single node becomes leader")
            .await
            .unwrap();

        let resp = raft
            .client_write(record_command(1, 3).into())
            .await
            .unwrap();
        match &resp.data {
            kms_core::Outcome::Recorded(outcomes) => assert_eq!(outcomes.len(), 3),
            other => panic!("unexpected outcome {other:?}"),
        }
        // The write is visible to the hot-path reader as soon as it is answered.
        let sm = store.state_machine();
        assert_eq!(sm.read(|s| s.stored_clients(kms_core::Pool::Windows)), 3);

        raft.trigger().snapshot().await.unwrap();
        raft.wait(timeout)
            .snapshot(resp.log_id, "snapshot taken")
            .await
            .unwrap();

        let resp = raft
            .client_write(record_command(2, 4).into())
            .await
            .unwrap();
        last_index = resp.log_id.index;
        assert_eq!(sm.read(|s| s.stored_clients(kms_core::Pool::Windows)), 7);
        state_before = sm.read(|s| s.clone());
        raft.shutdown().await.unwrap();
    }

    let store = open_retrying(dir.path());
    // Restored on open, before Raft even starts: checkpoint + committed log.
    let sm = store.state_machine();
    assert!(sm.read(|s| *s == state_before));
    let raft = start(&store).await;
    raft.wait(timeout)
        .state(ServerState::Leader, "restarted node leads again")
        .await
        .unwrap();
    raft.wait(timeout)
        .applied_index_at_least(Some(last_index), "applied after restart")
        .await
        .unwrap();
    assert!(sm.read(|s| *s == state_before));
    let resp = raft
        .client_write(record_command(3, 1).into())
        .await
        .unwrap();
    assert!(resp.log_id.index > last_index);
    assert_eq!(sm.read(|s| s.stored_clients(kms_core::Pool::Windows)), 8);
    raft.shutdown().await.unwrap();
}
