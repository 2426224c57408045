//! In-process clusters over the simulated network (`kms_cluster::sim`): one count across
//! nodes, degraded serving under partitions with exactly-once replay, leader crashes, and
//! seeded chaos. Clients go through each node's `Ledger`, as the KMS listener does.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kms_cluster::sim::SimRouter;
use kms_cluster::{Node, NodeSettings};
use kms_core::{ActivationInput, Guid, Pool};
use kms_host::{Grant, Ledger, RequestMeta};
use kms_wire::FileTime;

/// A test cluster: nodes on the simulated network, each with its own store.
struct Cluster {
    router: SimRouter,
    nodes: BTreeMap<u64, Arc<Node>>,
    dirs: BTreeMap<u64, tempfile::TempDir>,
    size: u64,
}

fn settings(id: u64, dir: &std::path::Path, size: u64) -> NodeSettings {
    NodeSettings {
        node_id: id,
        name: format!("n{id}"),
        data_dir: dir.to_path_buf(),
        grpc_addr: format!("sim-{id}:1689"),
        kms_addr: format!("127.0.0.{id}:1688"),
        initial_cluster: (1..=size).map(|i| (i, format!("sim-{i}:1689"))).collect(),
        commit_timeout: Duration::from_millis(800),
        batch_max_delay: Duration::from_millis(2),
        ..NodeSettings::default()
    }
}

impl Cluster {
    async fn start(size: u64) -> Cluster {
        let router = SimRouter::new();
        let mut c = Cluster {
            router,
            nodes: BTreeMap::new(),
            dirs: BTreeMap::new(),
            size,
        };
        for id in 1..=size {
            c.dirs.insert(id, tempfile::tempdir().unwrap());
            c.boot(id).await;
        }
        c.wait_ready().await;
        c
    }

    async fn boot(&mut self, id: u64) {
        let dir = self.dirs[&id].path().to_path_buf();
        let node = Node::start_with(
            settings(id, &dir, self.size),
            self.router.network(id),
            self.router.forwarder(id),
            self.router.prober(id),
        )
        .await
        .expect("node starts");
        self.router.add(id, node.raft().clone());
        self.nodes.insert(id, Arc::new(node));
    }

    /// Crash a node: drop it from the network and stop it without a clean handover.
    async fn crash(&mut self, id: u64) {
        self.router.remove(id);
        if let Some(n) = self.nodes.remove(&id) {
            n.shutdown().await;
        }
    }

    /// Wait until a leader is elected and the identity and directory are replicated everywhere.
    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self
                .nodes
                .values()
                .all(|n| n.status().leader_id.is_some() && n.read(|s| s.identity().is_some()));
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "cluster did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn leader(&self) -> Option<u64> {
        self.nodes
            .values()
            .find_map(|n| n.status().leader_id.filter(|l| self.nodes.contains_key(l)))
    }

    /// Wait until every node's state machine holds exactly the same clients.
    async fn wait_converged(&self) -> BTreeSet<Guid> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let sets: Vec<BTreeSet<Guid>> = self.nodes.values().map(|n| windows_cmids(n)).collect();
            let journals: usize = self
                .nodes
                .values()
                .map(|n| n.status().journal_entries)
                .sum();
            if journals == 0 && sets.windows(2).all(|w| w[0] == w[1]) {
                return sets.into_iter().next().unwrap_or_default();
            }
            assert!(
                Instant::now() < deadline,
                "state machines did not converge (journals {journals}, sizes {:?})",
                sets.iter().map(|s| s.len()).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn windows_cmids(n: &Node) -> BTreeSet<Guid> {
    n.read(|s| {
        let page = s.clients(&kms_core::ClientFilter {
            pool: Some(Pool::Windows),
            limit: usize::MAX,
            ..Default::default()
        });
        page.clients.iter().map(|c| c.client_machine_id).collect()
    })
}

fn now() -> FileTime {
    FileTime::from_system_time(SystemTime::now())
}

/// A version-4-looking CMID, distinct for every `i` below 2^48: the low 48 bits of `i` fill
/// bytes 0..6, clear of the version and variant bits. (They used to fill bytes 0..8, and the
/// version nibble in byte 6 then made `i` and `i + 4096` the same CMID — a failover test that
/// activated more than ~3 000 machines in degraded mode counted "missing" clients that were
/// only duplicates of its own.)
fn cmid(i: u64) -> Guid {
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&i.to_be_bytes()[2..]);
    b[8..].copy_from_slice(&0x4000_8000_dead_beefu64.to_be_bytes());
    b[6] = 0x40;
    b[7] = 0x00;
    b[8] = 0x80 | (b[8] & 0x3f);
    Guid(b)
}

fn windows_client(i: u64) -> ActivationInput {
    let p = kms_core::catalog::find_product_by_name("Windows 10/11 2015 (Volume)")
        .or_else(|| {
            kms_core::catalog::products()
                .iter()
                .find(|p| p.required_client_count == 25 && !p.is_retail && !p.is_preview)
        })
        .expect("a Windows client product group");
    ActivationInput {
        version: 6,
        application_id: p.application_id,
        sku_id: Guid::NIL,
        kms_counted_id: p.kms_counted_id,
        client_machine_id: cmid(i),
        previous_client_machine_id: Guid::NIL,
        required_client_count: 25,
        request_time: now(),
        workstation: format!("PC{i}"),
        is_vm: false,
        license_status: 2,
    }
}

async fn activate(node: &Node, i: u64) -> Result<Grant, kms_host::Denial> {
    let meta = RequestMeta {
        source: SocketAddr::from(([192, 0, 2, 1], 40000)),
        received_at: now(),
    };
    node.ledger().activate(windows_client(i), meta).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_clients_round_robin_see_one_count() {
    let c = Cluster::start(3).await;
    for i in 1..=30u64 {
        let node = &c.nodes[&(1 + (i - 1) % 3)];
        let g = activate(node, i).await.expect("granted");
        assert_eq!(
            g.current_count,
            i as u32,
            "client {i} on node {}",
            1 + (i - 1) % 3
        );
        assert!(!g.degraded);
    }
    // Every node answers with the same identity.
    let epids: BTreeSet<String> = {
        let mut set = BTreeSet::new();
        for n in c.nodes.values() {
            set.insert(activate(n, 1).await.unwrap().epid.to_string());
        }
        set
    };
    assert_eq!(epids.len(), 1, "one identity across the cluster: {epids:?}");
    assert_eq!(c.wait_converged().await.len(), 30);
}

async fn partition_scenario(isolate_leader: bool) {
    let c = Cluster::start(3).await;
    let mut acked = BTreeSet::new();
    for i in 1..=6u64 {
        activate(&c.nodes[&(1 + i % 3)], i).await.unwrap();
        acked.insert(cmid(i));
    }
    let leader = c.leader().expect("leader");
    let cut = if isolate_leader {
        leader
    } else {
        *c.nodes.keys().find(|id| **id != leader).unwrap()
    };
    c.router.isolate(cut);
    // The cut-off node keeps serving from its state plus its journal.
    for i in 100..105u64 {
        let g = activate(&c.nodes[&cut], i)
            .await
            .expect("served while cut off");
        assert!(g.degraded, "answer from the cut-off node is degraded");
        acked.insert(cmid(i));
    }
    assert!(c.nodes[&cut].status().journal_entries >= 1);
    // The majority side keeps committing (after a new election if the leader was cut off).
    let others: Vec<u64> = c.nodes.keys().copied().filter(|id| *id != cut).collect();
    for (k, i) in (200..206u64).enumerate() {
        let node = &c.nodes[&others[k % 2]];
        let g = activate(node, i).await.expect("majority serves");
        acked.insert(cmid(i));
        let _ = g;
    }
    c.router.heal();
    let all = c.wait_converged().await;
    assert_eq!(
        all, acked,
        "every acknowledged record exactly once, nothing else"
    );
    // Replays must not count twice: the count equals the distinct clients.
    let count = c.nodes[&cut].read(|s| s.pool_count(Pool::Windows, now()).live);
    assert_eq!(count as usize, acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_follower_serves_degraded_and_replays_exactly_once() {
    partition_scenario(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_leader_serves_degraded_and_replays_exactly_once() {
    partition_scenario(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_crash_keeps_activations_flowing() {
    let mut c = Cluster::start(3).await;
    for i in 1..=5u64 {
        activate(&c.nodes[&1], i).await.unwrap();
    }
    let leader = c.leader().unwrap();
    c.crash(leader).await;
    let survivor = *c.nodes.keys().next().unwrap();
    let start = Instant::now();
    // Keep activating until a non-degraded (committed) answer arrives.
    let mut i = 1000;
    loop {
        let g = activate(&c.nodes[&survivor], i).await.expect("served");
        i += 1;
        if !g.degraded {
            break;
        }
        if i % 200 == 0 {
            for (id, n) in &c.nodes {
                let st = n.status();
                eprintln!(
                    "t={:?} node {id}: leader {:?} term {} degraded {} journal {}",
                    start.elapsed(),
                    st.leader_id,
                    st.term,
                    st.degraded,
                    st.journal_entries
                );
            }
        }
        // Liveness, not timing: failover times are measured by benchmarks
        // (docs/performance.md), never asserted; this bound only catches a stuck cluster.
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "writes did not commit again after the leader crash"
        );
    }
    assert!(c.leader().is_some());
    // The crashed node comes back and catches up.
    c.boot(leader).await;
    let all = c.wait_converged().await;
    // Every acknowledged machine, by CMID (named when one is missing), and the count.
    let missing: Vec<u64> = (1..=5)
        .chain(1000..i)
        .filter(|k| !all.contains(&cmid(*k)))
        .collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?} of {} (i={i})",
        all.len()
    );
    assert!(
        all.len() >= 5 + (i - 1000) as usize,
        "{} < 5 + {}",
        all.len(),
        i - 1000
    );
}

/// Seeded chaos: random partitions, heals, delays, crashes and restarts while clients activate
/// on random live nodes; after a final heal (every crashed node back) every node holds exactly
/// the acknowledged clients, and the state machines are identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_chaos_loses_nothing_and_invents_nothing() {
    for seed in [7u64, 42, 2026] {
        let mut c = Cluster::start(3).await;
        let mut rng = seed;
        let mut next = move || {
            // xorshift64*: deterministic, no dependency.
            rng ^= rng >> 12;
            rng ^= rng << 25;
            rng ^= rng >> 27;
            rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let mut acked = BTreeSet::new();
        let mut client = seed * 10_000;
        let mut crashes = 0;
        for _round in 0..14 {
            match next() % 6 {
                0 => c.router.isolate(1 + next() % 3),
                1 => c.router.cut(1 + next() % 3, 1 + next() % 3),
                2 => c.router.set_delay(Duration::from_millis(next() % 20)),
                // Crash one node (at most one down at a time, so a quorum can exist).
                3 if c.nodes.len() == 3 => {
                    c.crash(1 + next() % 3).await;
                    crashes += 1;
                }
                // Restart whatever is down, from its data directory.
                4 => {
                    for id in 1..=3 {
                        if !c.nodes.contains_key(&id) {
                            c.boot(id).await;
                        }
                    }
                }
                _ => c.router.heal(),
            }
            let up: Vec<u64> = c.nodes.keys().copied().collect();
            for _ in 0..5 {
                client += 1;
                let node = &c.nodes[&up[(next() % up.len() as u64) as usize]];
                if activate(node, client).await.is_ok() {
                    acked.insert(cmid(client));
                }
            }
        }
        for id in 1..=3 {
            if !c.nodes.contains_key(&id) {
                c.boot(id).await;
            }
        }
        c.router.set_delay(Duration::ZERO);
        c.router.heal();
        let all = c.wait_converged().await;
        assert_eq!(
            all, acked,
            "seed {seed} ({crashes} crashes): no lost and no phantom records"
        );
        let states: Vec<kms_core::State> =
            c.nodes.values().map(|n| n.read(|s| s.clone())).collect();
        assert!(
            states.windows(2).all(|w| w[0] == w[1]),
            "seed {seed}: the state machines differ after heal"
        );
        eprintln!(
            "seed {seed}: {} clients acknowledged, {crashes} crashes",
            acked.len()
        );
        for n in c.nodes.values() {
            n.shutdown().await;
        }
    }
}
