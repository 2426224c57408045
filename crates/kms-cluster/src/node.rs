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
use crate::degraded::{self, DegradedJournal};
use crate::ledger::ClusterLedger;
use crate::network::PeerNetwork;
use crate::view::{self as cluster_view, Health, Probe};
use crate::writer::{Forward, Writer};
use std::sync::atomic::{AtomicBool, Ordering};

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
    /// Log entries kept behind a snapshot, so a briefly lagging follower catches up from the
    /// log instead of receiving the whole snapshot.
    pub snapshot_keep_logs: u64,
    /// How often the leader proposes `Prune`.
    pub prune_every: Duration,
    /// `--initial-cluster`: every voter of a new cluster, id → gRPC address. Used only when the
    /// store is empty; all nodes of a new cluster must be given the same map.
    pub initial_cluster: BTreeMap<u64, String>,
    /// `--join`: a member's gRPC address to ask for admission (new node, empty store).
    pub join: Option<String>,
    /// How long a write may wait for a leader before the node answers in degraded mode.
    pub commit_timeout: Duration,
    /// SRV priority published for this node.
    pub dns_priority: u16,
    /// SRV weight published for this node.
    pub dns_weight: u16,
    /// A peer that has not answered a probe for this long is unhealthy (leaves DNS answers).
    pub unhealthy_after: Duration,
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
            snapshot_keep_logs: 1_000,
            prune_every: Duration::from_secs(3600),
            initial_cluster: BTreeMap::new(),
            join: None,
            commit_timeout: Duration::from_secs(2),
            dns_priority: 0,
            dns_weight: 100,
            unhealthy_after: Duration::from_secs(5),
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
    /// "leader", "follower" or "learner".
    pub role: &'static str,
    /// Answered its recent health probes.
    pub healthy: bool,
    /// What this node knows of the member's reachability (`None` for this node itself).
    pub contact: Option<crate::PeerContact>,
    /// On the leader: log entries the member is behind.
    pub lag: Option<u64>,
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
    /// On the leader: log entries each peer is behind (peer id, entries).
    pub replication_lag: Vec<(u64, u64)>,
    /// Usage of every configured seat limit (pools and product groups).
    pub seats: Vec<kms_core::state::SeatUsage>,
    /// Openraft thinks this node leads, but no quorum acknowledged it within the leader lease:
    /// it is cut off and does not act (or report itself) as leader.
    pub leader_without_quorum: bool,
    /// Why the Raft core stopped, if it did (a storage error, a fatal bug): the node takes no
    /// writes until the process restarts.
    pub raft_stopped: Option<String>,
    /// The cluster's host identity is applied on this node.
    pub has_identity: bool,
    /// This node is a member (voter or learner) of the membership it has applied.
    pub is_member: bool,
    /// On a follower: entries this node's applied index is behind the leader's, as the leader
    /// last reported it in a probe (`None` when unknown).
    pub behind_leader: Option<u64>,
    /// While a new cluster forms: what it waits for, or why it refuses to form.
    pub forming: Option<String>,
}

/// Readiness of a node, as `/readyz`, `kmsctl health`, systemd and the DNS server see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Ready to serve as one of the cluster's KMS hosts.
    pub ready: bool,
    /// The reason, one line for operators.
    pub reason: String,
}

/// A follower whose applied index is further than this behind the leader's is not ready.
pub const READY_MAX_BEHIND: u64 = 1_000;

impl NodeStatus {
    /// Whether the node may be advertised and sent clients, and why (the KMS listener's state
    /// is the caller's to add).
    pub fn readiness(&self) -> Readiness {
        let not = |reason: String| Readiness {
            ready: false,
            reason,
        };
        if let Some(e) = &self.raft_stopped {
            return not(format!(
                "raft stopped: {e}; the node takes no writes until it restarts (kmsd does so \
                 itself once its data directory takes writes again)"
            ));
        }
        if let Some(f) = &self.forming {
            return not(f.clone());
        }
        if !self.is_member {
            return not(
                "not a member of the cluster it knows (removed, not yet added, or an impostor \
                 using another node's id)"
                    .into(),
            );
        }
        if !self.has_identity {
            return not("waiting for the cluster's host identity to be applied".into());
        }
        if let Some(n) = self.behind_leader.filter(|n| *n > READY_MAX_BEHIND) {
            return not(format!("catching up: {n} log entries behind the leader"));
        }
        let reason = if self.leader_without_quorum {
            "degraded: leader cut off from its quorum; answering from local state and journal"
        } else if self.degraded {
            "degraded: no reachable leader; answering from local state and journal"
        } else if self.leader_id.is_some() {
            "ok: in quorum"
        } else {
            // Serving: a record waits up to commit_timeout for a leader, then goes to the journal.
            "electing: no leader known yet; activations are answered (journaled if none appears)"
        };
        Readiness {
            ready: true,
            reason: reason.into(),
        }
    }
}

/// openraft's `election_timeout_max`, which is also its leader lease.
const LEADER_LEASE_MS: u64 = 1200;

/// A running node.
#[derive(Debug)]
pub struct Node {
    settings: NodeSettings,
    raft: Raft,
    store: Store,
    writer: Writer,
    journal: DegradedJournal,
    degraded: Arc<AtomicBool>,
    view: watch::Receiver<kms_core::ClusterView>,
    health: Health,
    records: mpsc::Sender<PendingRecord>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    stop: watch::Sender<bool>,
    request_ids: Arc<std::sync::atomic::AtomicU64>,
    /// While a new cluster forms: what it waits for (or why it refuses to form).
    formation: Arc<std::sync::Mutex<Option<String>>>,
}

impl Node {
    /// Open the store, start Raft, bootstrap a one-member cluster if the store is new, and make
    /// sure the cluster has a host identity.
    pub async fn start(settings: NodeSettings) -> Result<Node, ClusterError> {
        let net = PeerNetwork::new(
            settings.node_id,
            crate::network::PeerNetworkConfig::default(),
            None,
        );
        Self::start_with(settings, net.clone(), Arc::new(net.clone()), Arc::new(net)).await
    }

    /// Like [`Node::start`] with an explicit Raft transport and leader forwarder.
    pub async fn start_with<N>(
        settings: NodeSettings,
        network: N,
        forward: Arc<dyn Forward>,
        prober: Arc<dyn Probe>,
    ) -> Result<Node, ClusterError>
    where
        N: kms_store::openraft::network::RaftNetworkFactory<kms_store::TypeConfig>,
        N::Network: kms_store::openraft::network::NetSnapshot<
                kms_store::TypeConfig,
                SnapshotData = kms_store::types::SnapshotData,
            >,
    {
        let store_dir = settings.data_dir.join("store");
        let store = Store::open(&store_dir)?;
        let config = Config {
            cluster_name: "kmsd".into(),
            heartbeat_interval: 150,
            election_timeout_min: 600,
            election_timeout_max: LEADER_LEASE_MS,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_every),
            max_in_snapshot_log_to_keep: settings.snapshot_keep_logs,
            // Entries carry up to 512 records each: keep AppendEntries messages well below the
            // gRPC message limit.
            max_payload_entries: 64,
            // A node that was cut off (or restarted, or has a stale log) first asks whether it
            // could win before it raises its term, so its return does not depose a healthy
            // leader.
            enable_pre_vote: Some(true),
            // Not `quorum_loss_probe_interval`: on a starved host (acks late, not lost) its
            // heartbeat pauses cause elections; heartbeats to peers that do not answer already
            // fail at the transport's gate without a connection attempt.
            ..Config::default()
        }
        .validate()
        .map_err(|e| ClusterError::Config(e.to_string()))?;
        let raft = Raft::new(
            settings.node_id,
            Arc::new(config),
            network,
            store.log_store(),
            store.state_machine(),
        )
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))?;

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let single_node = settings.initial_cluster.is_empty() && settings.join.is_none();
        let mut formation = None;
        if initialized {
            if !single_node {
                info!("store already holds a cluster: --initial-cluster/--join are ignored");
            }
        } else if !settings.initial_cluster.is_empty() {
            let members = initial_members(&settings)?;
            info!(
                members = %crate::view::normalized_initial_cluster(&settings.initial_cluster),
                "new cluster: forming with --initial-cluster once a quorum of the listed nodes \
                 answers with the same list"
            );
            formation = Some(members);
        } else if let Some(join) = &settings.join {
            info!(join = %join, "empty store: waiting to be added by the cluster (--join)");
        } else {
            info!(
                node_id = settings.node_id,
                "new data directory: bootstrapping a one-member cluster"
            );
            let mut members = BTreeMap::new();
            members.insert(settings.node_id, own_info(&settings));
            raft.initialize(members)
                .await
                .map_err(|e| ClusterError::Raft(e.to_string()))?;
        }
        if single_node {
            // The embedded default is its own quorum: wait until it leads, so the first client
            // is answered from a node that can commit.
            raft.wait(Some(Duration::from_secs(30)))
                .metrics(|m| m.current_leader.is_some(), "a leader is elected")
                .await
                .map_err(|e| ClusterError::Timeout(e.to_string()))?;
        }
        let journal = DegradedJournal::open(store.journal())?;
        let degraded = Arc::new(AtomicBool::new(!journal.is_empty()));
        let writer = Writer::new(
            raft.clone(),
            settings.node_id,
            forward,
            settings.commit_timeout,
        );

        let (tx, rx) = mpsc::channel(16_384);
        let (stop, stop_rx) = watch::channel(false);
        let health = Health::default();
        let initial_view = cluster_view::build(
            &raft,
            &store.state_machine(),
            &health,
            settings.node_id,
            settings.unhealthy_after,
        );
        let (view_tx, view_rx) = watch::channel(initial_view);
        let node = Node {
            raft: raft.clone(),
            store,
            writer: writer.clone(),
            journal: journal.clone(),
            degraded: degraded.clone(),
            view: view_rx,
            health: health.clone(),
            records: tx,
            tasks: std::sync::Mutex::new(Vec::new()),
            stop,
            request_ids: Arc::new(std::sync::atomic::AtomicU64::new(seed_request_ids())),
            formation: Arc::default(),
            settings,
        };
        let identity = tokio::spawn(ensure_identity(
            writer.clone(),
            node.store.state_machine(),
            node.settings.ndr64,
            stop_rx.clone(),
        ));
        if single_node {
            // Single node: have the identity before serving the first client.
            wait_identity(&node.store, Duration::from_secs(30)).await?;
        }
        let registrar = tokio::spawn(ensure_registered(
            writer.clone(),
            node.store.state_machine(),
            own_record(&node.settings),
            stop_rx.clone(),
        ));
        let former = formation.map(|members| {
            tokio::spawn(form_cluster(
                raft.clone(),
                members,
                node.settings.initial_cluster.clone(),
                node.settings.node_id,
                prober.clone(),
                node.formation.clone(),
                stop_rx.clone(),
            ))
        });
        let viewer = tokio::spawn(cluster_view::run(
            cluster_view::ViewTask {
                raft: raft.clone(),
                sm: node.store.state_machine(),
                prober,
                local_id: node.settings.node_id,
                unhealthy_after: node.settings.unhealthy_after,
                tx: view_tx,
                health,
                writer: writer.clone(),
            },
            stop_rx.clone(),
        ));
        let replayer = tokio::spawn(degraded::replay_loop(
            journal,
            writer.clone(),
            node.settings.node_id,
            degraded.clone(),
            stop_rx.clone(),
        ));
        let batcher = tokio::spawn(batcher::run(
            writer.clone(),
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
            t.push(identity);
            t.push(replayer);
            t.push(registrar);
            t.push(viewer);
            t.extend(former);
        }
        Ok(node)
    }

    /// The ledger the KMS listener records through.
    pub fn ledger(&self) -> ClusterLedger {
        ClusterLedger::new(
            self.store.state_machine(),
            self.journal.clone(),
            self.degraded.clone(),
            self.records.clone(),
            self.request_ids.clone(),
            self.settings.commit_timeout,
        )
    }

    /// Read the replicated state (no Raft round trip).
    pub fn read<T>(&self, f: impl FnOnce(&kms_core::State) -> T) -> T {
        self.store.state_machine().read(f)
    }

    /// Like [`Node::read`], with the (term, index) of the last applied log entry — the
    /// position the state `f` sees reflects — taken under the same lock; (0, 0) before any.
    pub fn read_applied<T>(&self, f: impl FnOnce(&kms_core::State) -> T) -> ((u64, u64), T) {
        let (id, value) = self.store.state_machine().read_applied(f);
        let at = id.map(|l| (l.leader_id.term, l.index)).unwrap_or((0, 0));
        (at, value)
    }

    /// The node's current view.
    pub fn status(&self) -> NodeStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        let me = self.settings.node_id;
        let cut_off = leader_without_quorum(&m);
        let now = FileTime::from_system_time(SystemTime::now());
        let directory = self.read(|s| s.nodes().clone());
        let members: Vec<MemberStatus> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, info)| {
                let voter = m
                    .membership_config
                    .membership()
                    .get_joint_config()
                    .iter()
                    .any(|c| c.contains(id));
                let dir = directory.get(id);
                MemberStatus {
                    id: *id,
                    name: dir
                        .map(|d| d.name.clone())
                        .unwrap_or_else(|| info.name.clone()),
                    grpc_addr: info.grpc_addr.clone(),
                    kms_addr: dir
                        .map(|d| {
                            if d.host.contains(':') {
                                format!("[{}]:{}", d.host, d.kms_port)
                            } else {
                                format!("{}:{}", d.host, d.kms_port)
                            }
                        })
                        .unwrap_or_else(|| info.kms_addr.clone()),
                    healthy: *id == self.settings.node_id
                        || self.health.is_healthy(*id, self.settings.unhealthy_after),
                    contact: (*id != self.settings.node_id)
                        .then(|| self.health.contact(*id, self.settings.unhealthy_after)),
                    lag: lag_of(&m, *id),
                    role: if m.current_leader == Some(*id) && !(cut_off && *id == me) {
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
        let seats = self.read(|s| s.seat_usage(now));
        // The same per-member lag the member list shows (on the leader only).
        let replication_lag = members
            .iter()
            .filter(|ms: &&MemberStatus| ms.id != me)
            .filter_map(|ms| ms.lag.map(|lag| (ms.id, lag)))
            .collect();
        let leader_id = m.current_leader.filter(|l| !(cut_off && *l == me));
        let applied_index = m.last_applied.as_ref().map(|l| l.index).unwrap_or(0);
        let behind_leader = match m.current_leader {
            Some(l) if l != me => self
                .health
                .peer_applied(l, self.settings.unhealthy_after)
                .map(|a| a.saturating_sub(applied_index)),
            _ => None,
        };
        NodeStatus {
            leader_without_quorum: cut_off,
            raft_stopped: m.running_state.as_ref().err().map(|e| e.to_string()),
            has_identity: self.read(|s| s.identity().is_some()),
            is_member: m.membership_config.membership().get_node(&me).is_some(),
            behind_leader,
            forming: self
                .formation
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            node_id: self.settings.node_id,
            name: self.settings.name.clone(),
            leader_id,
            term: m.current_term,
            commit_index: m.cluster_committed.map(|l| l.index).unwrap_or(0),
            applied_index,
            members,
            pools,
            degraded: self.degraded.load(Ordering::SeqCst)
                || cut_off
                || (m.current_leader.is_none() && m.state != ServerState::Leader),
            journal_entries: self.journal.len(),
            seats,
            replication_lag,
        }
    }

    /// The node's view of the cluster (members, addresses, health), updated about once a second.
    pub fn view(&self) -> watch::Receiver<kms_core::ClusterView> {
        self.view.clone()
    }

    /// Writes commands through the leader (for the admin API).
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// This node's membership entry (name and addresses).
    pub fn info(&self) -> NodeInfo {
        own_info(&self.settings)
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.settings.node_id
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
    node_id: u64,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
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

/// This node's membership entry.
fn own_info(s: &NodeSettings) -> NodeInfo {
    NodeInfo {
        name: s.name.clone(),
        grpc_addr: s.grpc_addr.clone(),
        kms_addr: s.kms_addr.clone(),
    }
}

/// The membership of a new cluster, identical on every node: derived from --initial-cluster only.
fn initial_members(s: &NodeSettings) -> Result<BTreeMap<u64, NodeInfo>, ClusterError> {
    let Some(own) = s.initial_cluster.get(&s.node_id) else {
        return Err(ClusterError::Config(format!(
            "--initial-cluster does not list this node's id {}",
            s.node_id
        )));
    };
    if !own.eq_ignore_ascii_case(&s.grpc_addr) {
        return Err(ClusterError::Config(format!(
            "--initial-cluster lists node {} at {own}, but this node advertises its gRPC address \
             as {} (--advertise and the --grpc-listen port): start each node with its own id, or \
             fix the list",
            s.node_id, s.grpc_addr
        )));
    }
    Ok(s.initial_cluster
        .iter()
        .map(|(id, addr)| {
            (
                *id,
                NodeInfo {
                    name: format!("kmsd-{id}"),
                    grpc_addr: addr.clone(),
                    kms_addr: String::new(),
                },
            )
        })
        .collect())
}

/// Form a new cluster from `--initial-cluster`: probe the listed peers about twice a second and
/// initialize (with the membership every node derives from the same list) once a quorum of the
/// listed nodes, this one included, answers with the same list — or once a listed peer already
/// holds the cluster. A peer that answers with a different list stops the formation: the nodes
/// would otherwise form a cluster of the members they happen to agree on.
async fn form_cluster(
    raft: Raft,
    members: BTreeMap<u64, NodeInfo>,
    list: BTreeMap<u64, String>,
    me: u64,
    prober: Arc<dyn crate::view::Probe>,
    status: Arc<std::sync::Mutex<Option<String>>>,
    mut stop: watch::Receiver<bool>,
) {
    let ours = crate::view::normalized_initial_cluster(&list);
    let quorum = list.len() / 2 + 1;
    let set = |s: Option<String>| {
        *status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = s;
    };
    let mut reported_mismatch: Option<(u64, String)> = None;
    loop {
        let probes = members
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(id, info)| {
                let prober = prober.clone();
                let (id, info) = (*id, info.clone());
                async move { (id, prober.probe(id, info).await) }
            });
        let answers = futures::future::join_all(probes).await;
        let mut agree = 1; // this node
        let mut formed = false;
        let mut mismatch = None;
        for (id, answer) in answers {
            let Some(a) = answer else { continue };
            match a.initial_cluster.as_deref() {
                Some(theirs) if theirs != ours && !a.initialized => {
                    mismatch = Some((id, theirs.to_string()));
                }
                _ => {
                    agree += 1;
                    formed |= a.initialized;
                }
            }
        }
        if let Some((id, theirs)) = mismatch {
            let reason = format!(
                "refusing to form a cluster: node {id} was started with --initial-cluster {theirs}, \
                 this node with {ours}; start every node of a new cluster with the same list"
            );
            if reported_mismatch.as_ref() != Some(&(id, theirs.clone())) {
                tracing::error!(
                    peer = id,
                    theirs = %theirs,
                    ours = %ours,
                    "{reason}"
                );
                reported_mismatch = Some((id, theirs));
            }
            set(Some(reason));
        } else if agree >= quorum || formed {
            info!(
                members = %ours,
                agreeing = agree,
                "new cluster: initializing with --initial-cluster"
            );
            // Every node of a new cluster initializes with the identical membership (derived
            // only from --initial-cluster), which openraft allows; the vote elects one leader.
            match raft.initialize(members.clone()).await {
                Ok(()) => {}
                Err(e) if e.api_error().is_some() => {
                    info!(error = %e, "cluster already initialized by a peer");
                }
                Err(e) => {
                    tracing::error!(error = %e, "initializing the new cluster failed");
                    set(Some(format!("initializing the new cluster failed: {e}")));
                    return;
                }
            }
            set(None);
            return;
        } else {
            set(Some(format!(
                "forming a new cluster: {agree} of the {} listed nodes answer with the same \
                 --initial-cluster; {quorum} needed",
                list.len()
            )));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Propose a generated identity until the cluster has one. `InitIdentity` applies only to a
/// state without identity, so nodes racing here agree on the first one committed.
async fn ensure_identity(
    writer: Writer,
    sm: kms_store::StateMachineStore,
    ndr64: bool,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if sm.read(|s| s.identity().is_some()) {
            return;
        }
        let now = FileTime::from_system_time(SystemTime::now());
        let identity = {
            let mut rng = rand::rng();
            HostIdentity::generate(&mut |buf: &mut [u8]| rng.fill_bytes(buf), now, ndr64)
        };
        match writer.write(Command::InitIdentity(identity)).await {
            Ok(_) => info!("cluster host identity (ePIDs, HwId) is set"),
            Err(e) => tracing::debug!(error = %e, "identity proposal waits for a leader"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn wait_identity(store: &Store, limit: Duration) -> Result<(), ClusterError> {
    let sm = store.state_machine();
    let start = std::time::Instant::now();
    while sm.read(|s| s.identity().is_none()) {
        if start.elapsed() > limit {
            return Err(ClusterError::Timeout(
                "the host identity was not committed".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A leader whose last quorum acknowledgement is older than the leader lease (openraft's
/// `election_timeout_max`): the rest of the cluster has elected, or is free to elect, another
/// leader. openraft keeps its vote until it hears a higher one; kmsd stops treating the node as
/// leader at once (status, metrics, readiness, DNS).
pub(crate) fn leader_without_quorum(m: &kms_store::types::RaftMetrics) -> bool {
    if m.state != ServerState::Leader || m.membership_config.membership().voter_ids().count() <= 1 {
        return false;
    }
    let lease = Duration::from_millis(LEADER_LEASE_MS);
    match &m.last_quorum_acked {
        Some(at) => kms_store::openraft::Instant::elapsed(&**at) > lease,
        // Not yet acknowledged by a quorum: a leader elected a moment ago waits a lease too.
        None => false,
    }
}

/// Entries member `id` is behind this leader's log (`None` when this node does not lead).
fn lag_of(m: &kms_store::types::RaftMetrics, id: u64) -> Option<u64> {
    let replication = m.replication.as_ref()?;
    let last = m.last_log_index.unwrap_or(0);
    replication
        .get(&id)
        .map(|matched| last.saturating_sub(matched.as_ref().map(|l| l.index).unwrap_or(0)))
}

/// This node's directory entry.
fn own_record(s: &NodeSettings) -> kms_core::NodeRecord {
    let (host, kms_port) = cluster_view::split_host_port(&s.kms_addr);
    kms_core::NodeRecord {
        id: s.node_id,
        name: s.name.clone(),
        host,
        kms_port,
        grpc_addr: s.grpc_addr.clone(),
        dns_priority: s.dns_priority,
        dns_weight: s.dns_weight,
    }
}

/// Keep this node's directory entry current (written through the leader when it differs).
async fn ensure_registered(
    writer: Writer,
    sm: kms_store::StateMachineStore,
    record: kms_core::NodeRecord,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let current = sm.read(|s| s.nodes().get(&record.id).cloned());
        if current.as_ref() != Some(&record) {
            match writer.write(Command::RegisterNode(record.clone())).await {
                Ok(_) => info!(name = %record.name, "node registered in the cluster directory"),
                Err(e) => tracing::debug!(error = %e, "node registration waits for a leader"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => return,
        }
    }
}
