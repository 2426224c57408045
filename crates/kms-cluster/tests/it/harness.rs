//! Shared harness: in-process nodes over real gRPC on 127.0.0.1, each with its own store in a
//! temporary directory, its `PeerNetwork` and its `RaftPeer` server.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kms_api::raft::v1::raft_peer_client::RaftPeerClient;
use kms_cluster::grpc::{self, RaftPeerService};
use kms_cluster::{PeerNetwork, PeerNetworkConfig};
use kms_core::{Command, FileTime, Guid, Pool, RecordRequest};
use kms_store::Store;
use kms_store::openraft::async_runtime::watch::WatchReceiver;
use kms_store::types::{ClientWriteResponse, Config, NodeInfo, Raft, ServerState, SnapshotPolicy};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long any wait in these tests may take before it is a failure.
pub const WAIT: Duration = Duration::from_secs(30);

/// One node: store, Raft, gRPC server.
pub struct TestNode {
    pub id: u64,
    pub info: NodeInfo,
    pub addr: SocketAddr,
    pub raft: Raft,
    pub store: Store,
    pub network: PeerNetwork,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// Raft settings for tests: quick elections, and a snapshot every 50 entries so a late node
/// has to be sent one.
pub fn config() -> Arc<Config> {
    Arc::new(
        Config {
            cluster_name: "it".into(),
            heartbeat_interval: 100,
            election_timeout_min: 500,
            election_timeout_max: 1000,
            install_snapshot_timeout: 2_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(50),
            max_in_snapshot_log_to_keep: 0,
            purge_batch_size: 1,
            ..Config::default()
        }
        .validate()
        .expect("valid raft config"),
    )
}

impl TestNode {
    /// Start node `id`: bind a port, open a store, start Raft and serve `RaftPeer`.
    pub async fn start(id: u64) -> TestNode {
        let net = PeerNetworkConfig {
            join_timeout: WAIT,
            ..PeerNetworkConfig::default()
        };
        Self::start_with(id, net, u64::MAX).await
    }

    /// Like [`TestNode::start`] with transport settings and a snapshot size limit.
    pub async fn start_with(id: u64, net: PeerNetworkConfig, max_snapshot: u64) -> TestNode {
        Self::start_inner(id, net, max_snapshot, true).await
    }

    /// A node that answers `StreamAppend` with UNIMPLEMENTED, as a kmsd from before the call.
    pub async fn start_without_stream_append(id: u64) -> TestNode {
        let net = PeerNetworkConfig {
            connect_timeout: Duration::from_secs(1),
            ..PeerNetworkConfig::default()
        };
        Self::start_inner(id, net, u64::MAX, false).await
    }

    async fn start_inner(
        id: u64,
        net: PeerNetworkConfig,
        max_snapshot: u64,
        stream_append: bool,
    ) -> TestNode {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open store");
        let info = NodeInfo {
            name: format!("kms{id}"),
            grpc_addr: addr.to_string(),
            kms_addr: format!("127.0.0.1:{}", 16880 + id),
        };
        let network = PeerNetwork::new(id, net, None);
        let raft = Raft::new(
            id,
            config(),
            network.clone(),
            store.log_store(),
            store.state_machine(),
        )
        .await
        .expect("raft");
        let mut service = RaftPeerService::new(raft.clone(), id, info.clone())
            .with_max_snapshot_bytes(max_snapshot);
        if !stream_append {
            service = service.without_stream_append();
        }
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            if let Err(e) = grpc::serve(listener, grpc::router(service), shutdown).await {
                eprintln!("node {id}: gRPC server: {e}");
            }
        });
        TestNode {
            id,
            info,
            addr,
            raft,
            store,
            network,
            shutdown: Some(tx),
            server: Some(server),
            _dir: dir,
        }
    }

    /// A raw generated client for this node (for malformed requests).
    pub async fn raw_client(&self) -> RaftPeerClient<tonic::transport::Channel> {
        RaftPeerClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect")
    }

    /// Number of Windows clients in this node's state machine.
    pub fn windows_clients(&self) -> usize {
        self.store
            .state_machine()
            .read(|s| s.stored_clients(Pool::Windows))
    }

    /// This node's replicated state.
    pub fn state(&self) -> kms_core::State {
        self.store.state_machine().read(|s| s.clone())
    }

    /// Stop Raft and the server.
    pub async fn stop(mut self) {
        let _ = self.raft.shutdown().await;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
    }
}

/// Start nodes `1..=n` and initialize them as one cluster from node 1; returns once a leader is
/// known to every node.
pub async fn cluster(n: u64) -> Vec<TestNode> {
    let mut nodes = Vec::new();
    for id in 1..=n {
        nodes.push(TestNode::start(id).await);
    }
    let members: BTreeMap<u64, NodeInfo> = nodes.iter().map(|n| (n.id, n.info.clone())).collect();
    nodes[0].raft.initialize(members).await.expect("initialize");
    for node in &nodes {
        node.raft
            .wait(Some(WAIT))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .expect("leader elected");
    }
    nodes
}

/// Write `cmd` through whichever node currently leads, retrying while leadership settles
/// (a fresh leader may still answer "forward to leader" until its lease is established).
/// Returns the leader's index in `nodes` and the response.
pub async fn leader_write(nodes: &[TestNode], cmd: Command) -> (usize, ClientWriteResponse) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let leader = nodes
            .iter()
            .position(|n| n.raft.metrics().borrow_watched().state == ServerState::Leader);
        if let Some(l) = leader {
            match nodes[l].raft.client_write(cmd.clone().into()).await {
                Ok(resp) => return (l, resp),
                Err(e) if e.forward_to_leader().is_some() => {}
                Err(e) => panic!("client_write: {e}"),
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader accepted a write"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Run a test body with an overall bound, so a hang fails instead of blocking the suite.
pub async fn bounded<T>(body: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(180), body)
        .await
        .expect("test did not finish within 180 s")
}

/// A command recording `n` Windows clients, distinct per `seed`.
pub fn record_command(seed: u64, n: u64) -> Command {
    let records = (0..n)
        .map(|i| {
            let id = seed * 1_000_000 + i;
            let mut g = [0u8; 16];
            g[..8].copy_from_slice(&id.to_le_bytes());
            g[8] = 0x42;
            RecordRequest {
                workstation: format!("WS-{id:08}.corp.example.com"),
                source: "10.20.30.40:49731".to_string(),
                ..RecordRequest::new(id, Pool::Windows, Guid(g))
            }
        })
        .collect();
    Command::Record {
        at: FileTime::from_unix_secs(1_700_000_000 + seed as i64),
        node: 1,
        records,
    }
}
