//! Starting, observing and stopping one node.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kms_core::{Command, HostIdentity, Pool};
use kms_store::Store;
use kms_store::openraft::async_runtime::watch::WatchReceiver;
use kms_store::types::{Config, NodeInfo, Raft, ServerState, SnapshotPolicy};
use kms_wire::FileTime;
use rand::RngCore;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::batcher::{self, PendingRecord};
use crate::ledger::ClusterLedger;
use crate::network::PeerNetwork;

/// Settings of one node (per node, from its configuration file).
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// Node id (≥ 1).
    pub node_id: u64,
    /// Node name.
    pub name: String,
    /// Data directory; the store lives in `<data_dir>/store`.
    pub data_dir: PathBuf,
    /// Address peers and admin clients use for gRPC.
    pub grpc_addr: String,
    /// Address KMS clients use.
    pub kms_addr: String,
    /// Whether this node speaks NDR64 (the generated identity's host build agrees with it).
    pub ndr64: bool,
    /// Most records in one Raft entry.
    pub batch_max_entries: usize,
    /// Longest a record waits to join a batch while proposals are in flight.
    pub batch_max_delay: Duration,
    /// Raft log entries between snapshots (log compaction).
    pub snapshot_every: u64,
    /// How often the leader proposes `Prune`.
    pub prune_every: Duration,
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            node_id: 1,
            name: "kmsd-1".into(),
            data_dir: PathBuf::from("./kmsd-data"),
            grpc_addr: "127.0.0.1:1689".into(),
            kms_addr: "[::]:1688".into(),
            ndr64: true,
            batch_max_entries: 512,
            batch_max_delay: Duration::from_millis(2),
            snapshot_every: 20_000,
            prune_every: Duration::from_secs(3600),
        }
    }
}

/// Why a node could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] kms_store::StoreError),
    /// openraft refused the configuration.
    #[error("raft configuration: {0}")]
    Config(String),
    /// openraft stopped.
    #[error("raft: {0}")]
    Raft(String),
    /// The node did not become ready in time.
    #[error("timed out: {0}")]
    Timeout(String),
}

/// One pool's count, as shown on status pages and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    /// Pool name.
    pub pool: &'static str,
    /// Distinct clients in the count window.
    pub live: u32,
    /// Count reported to clients.
    pub reported: u32,
    /// The pool's activation threshold.
    pub threshold: u32,
    /// Seat limit, if any.
    pub seat_limit: Option<u32>,
    /// Client machine ids flagged as duplicates.
    pub duplicates: u32,
}

/// One cluster member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// Node id.
    pub id: u64,
    /// Node name.
    pub name: String,
    /// gRPC address.
    pub grpc_addr: String,
    /// KMS address.
    pub kms_addr: String,
    /// "leader", "follower", "learner" or "voter".
    pub role: &'static str,
}

/// A snapshot of the node's view of the cluster.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    /// This node.
    pub node_id: u64,
    /// This node's name.
    pub name: String,
    /// Known leader.
    pub leader_id: Option<u64>,
    /// Raft term.
    pub term: u64,
    /// Last committed log index.
    pub commit_index: u64,
    /// Last applied log index.
    pub applied_index: u64,
    /// Members.
    pub members: Vec<MemberStatus>,
    /// Counts per pool.
    pub pools: Vec<PoolStatus>,
    /// Serving without a reachable leader.
    pub degraded: bool,
    /// Records waiting in the degraded-mode journal.
    pub journal_entries: usize,
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    settings: NodeSettings,
    raft: Raft,
    store: Store,
    records: mpsc::Sender<PendingRecord>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    stop: watch::Sender<bool>,
    request_ids: Arc<std::sync::atomic::AtomicU64>,
}

impl Node {
    /// Open the store, start Raft, bootstrap a one-member cluster if the store is new, and make
    /// sure the cluster has a host identity.
    pub async fn start(settings: NodeSettings) -> Result<Node, ClusterError> {
        let store_dir = settings.data_dir.join("store");
        let store = Store::open(&store_dir)?;
        let config = Config {
            cluster_name: "kmsd".into(),
            heartbeat_interval: 150,
            election_timeout_min: 600,
            election_timeout_max: 1200,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_every),
            max_in_snapshot_log_to_keep: 1_000,
            ..Config::default()
        }
        .validate()
        .map_err(|e| ClusterError::Config(e.to_string()))?;
        let raft = Raft::new(
            settings.node_id,
            Arc::new(config),
            PeerNetwork,
            store.log_store(),
            store.state_machine(),
        )
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))?;

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        if !initialized {
            info!(
                node_id = settings.node_id,
                "new data directory: bootstrapping a one-member cluster"
            );
            let mut members = BTreeMap::new();
            members.insert(
                settings.node_id,
                NodeInfo {
                    name: settings.name.clone(),
                    grpc_addr: settings.grpc_addr.clone(),
                    kms_addr: settings.kms_addr.clone(),
                },
            );
            raft.initialize(members)
                .await
                .map_err(|e| ClusterError::Raft(e.to_string()))?;
        }
        raft.wait(Some(Duration::from_secs(30)))
            .metrics(|m| m.current_leader.is_some(), "a leader is elected")
            .await
            .map_err(|e| ClusterError::Timeout(e.to_string()))?;

        let (tx, rx) = mpsc::channel(16_384);
        let (stop, stop_rx) = watch::channel(false);
        let node = Node {
            raft: raft.clone(),
            store,
            records: tx,
            tasks: std::sync::Mutex::new(Vec::new()),
            stop,
            request_ids: Arc::new(std::sync::atomic::AtomicU64::new(seed_request_ids())),
            settings,
        };
        node.ensure_identity().await?;
        let batcher = tokio::spawn(batcher::run(
            raft.clone(),
            node.settings.node_id,
            rx,
            node.settings.batch_max_entries,
            node.settings.batch_max_delay,
        ));
        let pruner = tokio::spawn(prune_loop(
            raft,
            node.store.state_machine(),
            node.settings.node_id,
            node.settings.prune_every,
            stop_rx,
        ));
        if let Ok(mut t) = node.tasks.lock() {
            t.push(batcher);
            t.push(pruner);
        }
        Ok(node)
    }

    /// Propose a generated identity unless the cluster already has one. `InitIdentity` applies
    /// only to a state without identity, so nodes racing here agree on the first one committed.
    async fn ensure_identity(&self) -> Result<(), ClusterError> {
        if self.store.state_machine().read(|s| s.identity().is_some()) {
            return Ok(());
        }
        let now = FileTime::from_system_time(SystemTime::now());
        let mut rng = rand::rng();
        let identity =
            HostIdentity::generate(&mut |buf: &mut [u8]| rng.fill_bytes(buf), now, self.settings.ndr64);
        info!("proposing the cluster's host identity (ePIDs, HwId)");
        self.raft
            .client_write(Command::InitIdentity(identity).into())
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        Ok(())
    }

    /// The ledger the KMS listener records through.
    pub fn ledger(&self) -> ClusterLedger {
        ClusterLedger::new(
            self.settings.node_id,
            self.store.state_machine(),
            self.records.clone(),
            self.request_ids.clone(),
        )
    }

    /// Read the replicated state (no Raft round trip).
    pub fn read<T>(&self, f: impl FnOnce(&kms_core::State) -> T) -> T {
        self.store.state_machine().read(f)
    }

    /// The node's current view.
    pub fn status(&self) -> NodeStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        let now = FileTime::from_system_time(SystemTime::now());
        let members = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, info)| {
                let voter = m.membership_config.membership().get_joint_config().iter().any(|c| c.contains(id));
                MemberStatus {
                    id: *id,
                    name: info.name.clone(),
                    grpc_addr: info.grpc_addr.clone(),
                    kms_addr: info.kms_addr.clone(),
                    role: if m.current_leader == Some(*id) {
                        "leader"
                    } else if voter {
                        "follower"
                    } else {
                        "learner"
                    },
                }
            })
            .collect();
        let pools = self.read(|s| {
            Pool::ALL
                .iter()
                .map(|&pool| {
                    let c = s.pool_count(pool, now);
                    PoolStatus {
                        pool: pool.name(),
                        live: c.live,
                        reported: c.reported,
                        threshold: c.threshold_hint,
                        seat_limit: s.config().seat_limits.pool(pool),
                        duplicates: c.duplicates,
                    }
                })
                .collect()
        });
        NodeStatus {
            node_id: self.settings.node_id,
            name: self.settings.name.clone(),
            leader_id: m.current_leader,
            term: m.current_term,
            commit_index: m.cluster_committed.map(|l| l.index).unwrap_or(0),
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            members,
            pools,
            degraded: m.current_leader.is_none() && m.state != ServerState::Leader,
            journal_entries: 0,
        }
    }

    /// The Raft handle (for the admin API and tests).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Stop background tasks and Raft, flush the store.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let tasks: Vec<_> = self
            .tasks
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        for t in tasks {
            t.abort();
        }
        if let Err(e) = self.raft.shutdown().await {
            warn!(error = %e, "raft shutdown");
        }
        if let Err(e) = self.store.flush().await {
            warn!(error = %e, "store flush on shutdown");
        }
    }
}

fn seed_request_ids() -> u64 {
    // Request ids only need to be unique per node across restarts: start from the clock.
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1)
        << 8
}

async fn prune_loop(
    raft: Raft,
    sm: kms_store::StateMachineStore,
    node_id: u64, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut iv = tokio::time::interval(every);
    iv.tick().await;
    loop {
        tokio::select! {
            _ = iv.tick() => {}
            _ = stop.changed() => return,
        }
        if raft.metrics().borrow_watched().current_leader != Some(node_id) {
            continue;
        }
        let now = FileTime::from_system_time(SystemTime::now());
        let cmd = sm.read(|s| s.prune_command(now));
        if let Err(e) = raft.client_write(cmd.into()).await {
            warn!(error = %e, "prune proposal failed");
        }
    }
}
