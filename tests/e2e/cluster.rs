//! Three nodes, one count: multi-process clusters of real `kmsd` binaries on 127.0.0.1.
//!
//! * Thirty clients spread round-robin over three nodes see the counts 1…30 and one identity.
//! * `kill -9` of the leader under load: the survivors keep answering, every acknowledged
//!   machine is counted exactly once on every node, and the killed node catches up.
//! * A rolling restart (SIGTERM, one node at a time) under load: a client that tries the next
//!   KMS address on a connection failure, like Windows with several SRV records, never fails.
//! * A frozen leader (SIGSTOP ~4 s, the stand-in for a partition, which needs root on
//!   loopback; partitions proper are in kms-cluster's in-process sim tests): the others elect a
//!   new leader and keep committing; after SIGCONT everything converges, nothing counts twice.
//! * A fourth node added with `--join` to a cluster holding many records catches up, is
//!   promoted, serves, and the grown cluster survives losing an old node.
//! * Membership changes under load: a node joins and another is removed while clients
//!   activate; no activation fails, every acknowledged machine counts once on every member.
//! * mutual TLS: a cluster with `kmsctl cert` certificates forms and counts, a node without TLS
//!   cannot join it, and a multi-node kmsd without TLS refuses to start unless `--insecure`.
//!
//! Every node has fixed ports ([`NodePorts`]) so `--initial-cluster` can name them and a
//! restarted node comes back where clients and peers expect it. The tests of this module run
//! one at a time ([`SERIAL`]): each one runs three or four debug-build nodes plus its clients
//! on a two-core machine. Every wait is bounded; dropping a [`Cluster`] kills its processes.
//! Timings are never asserted (see `scripts/bench-cluster.sh` and docs/performance.md).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Parser as _;
use kms_wire::Guid;
use kms_wire::kms::VerifiedResponse;
use kmsctl::catalog::ProductSelection;
use kmsctl::client::ClientIdentity;
use kmsctl::exit::ExitClass;
use serde_json::Value;
use tokio::task::JoinSet;

use crate::harness::{
    Kmsd, NodePorts, eventually, http_get, loopback_flags, metric_value, run_kmsd,
};
use crate::kms::{Attempt, Load, attempt, machine, office2010, windows_client};

/// One cluster test at a time (tokio's mutex: no poisoning, so one failure does not fail the
/// rest, and it may be held across awaits).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WINDOWS_LIVE: &str = "kmsd_pool_clients{pool=\"windows\"}";
const IS_LEADER: &str = "kmsd_raft_is_leader";

/// Hard bound on any background load, whatever the test does.
const LOAD_LIMIT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// Activations

/// Activate `who` at `addr`; panics on anything but a verified success.
async fn activate_at(
    addr: SocketAddr,
    p: &ProductSelection,
    who: &ClientIdentity,
) -> VerifiedResponse {
    match attempt(addr, p, who).await {
        Attempt::Granted(v) => *v,
        other => panic!("activation of {} at {addr}: {other:?}", who.cmid),
    }
}

/// Whether `node` logged the activation of `cmid` as answered in degraded mode (`None` until
/// the event line shows up).
fn degraded_answer(node: &Kmsd, cmid: &Guid) -> Option<bool> {
    let cmid = cmid.to_string();
    node.log_lines().iter().rev().find_map(|l| {
        let v: Value = serde_json::from_str(l).ok()?;
        (v["message"] == "activation request processed" && v["cmid"] == cmid.as_str())
            .then(|| v["degraded"].as_bool())
            .flatten()
    })
}

/// [`degraded_answer`], waiting up to 5 s for the log line.
async fn was_degraded(node: &Kmsd, cmid: &Guid) -> bool {
    let start = Instant::now();
    loop {
        if let Some(d) = degraded_answer(node, cmid) {
            return d;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no activation event for {cmid} in the log of the node that answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster

/// Nodes of one cluster on fixed loopback ports, each with its data directory under one
/// temporary directory. Dropping it kills every process.
struct Cluster {
    nodes: BTreeMap<u64, Kmsd>,
    ports: BTreeMap<u64, NodePorts>,
    /// Nodes that must not be asked anything (stopped, killed or frozen).
    down: BTreeSet<u64>,
    root: tempfile::TempDir,
    /// Operator certificate for the admin API of a TLS cluster: CA, certificate, key.
    admin_tls: Option<[String; 3]>,
}

impl Cluster {
    /// Start nodes `1..=n` as a new cluster (`--initial-cluster` naming all of them) with the
    /// flags `flags(id)` added (`--insecure`, or that node's TLS files).
    fn start(n: u64, flags: impl Fn(u64) -> Vec<String>) -> Cluster {
        let order: Vec<u64> = (1..=n).collect();
        Self::start_in_order(&order, Duration::ZERO, flags)
    }

    /// Like [`Cluster::start`] for nodes `order` (a permutation of `1..=n`), started in that
    /// order with `pause` between them.
    fn start_in_order(
        order: &[u64],
        pause: Duration,
        flags: impl Fn(u64) -> Vec<String>,
    ) -> Cluster {
        let n = order.len() as u64;
        let ports: BTreeMap<u64, NodePorts> = (1..=n).map(|id| (id, NodePorts::pick())).collect();
        let initial = ports
            .iter()
            .map(|(id, p)| format!("{id}=127.0.0.1:{}", p.grpc))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            ports,
            down: BTreeSet::new(),
            root: tempfile::tempdir().unwrap(),
            admin_tls: None,
        };
        for (i, &id) in order.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(pause);
            }
            let mut args = vec![
                "--node-id".to_string(),
                id.to_string(),
                "--initial-cluster".into(),
                initial.clone(),
            ];
            args.extend(flags(id));
            cluster.spawn(id, cluster.ports[&id], &args);
        }
        cluster
    }

    /// An `n`-node cluster without TLS (`--insecure`).
    fn insecure(n: u64) -> Cluster {
        Self::start(n, |_| vec!["--insecure".into()])
    }

    fn data_dir(&self, id: u64) -> PathBuf {
        self.root.path().join(format!("node{id}"))
    }

    /// Start node `id` on `ports` with `args` (its data directory is `data_dir(id)`).
    fn spawn(&mut self, id: u64, ports: NodePorts, args: &[String]) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let node = Kmsd::start_with_ports(&self.data_dir(id), ports, &args);
        self.ports.insert(id, ports);
        self.nodes.insert(id, node);
        self.down.remove(&id);
    }

    /// Start node `id` (new ports, no TLS) with `--join join_addr`.
    fn spawn_joiner(&mut self, id: u64, join_addr: String) {
        let args = [
            "--node-id".into(),
            id.to_string(),
            "--join".into(),
            join_addr,
            "--insecure".into(),
        ];
        self.spawn(id, NodePorts::pick(), &args);
    }

    fn node(&self, id: u64) -> &Kmsd {
        &self.nodes[&id]
    }

    fn node_mut(&mut self, id: u64) -> &mut Kmsd {
        self.nodes.get_mut(&id).unwrap()
    }

    fn kms(&self, id: u64) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[&id].kms))
    }

    fn grpc(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.ports[&id].grpc)
    }

    fn http(&self, id: u64) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[&id].http))
    }

    /// Nodes that are up (not stopped, killed or frozen).
    fn up(&self) -> Vec<u64> {
        self.nodes
            .keys()
            .copied()
            .filter(|id| !self.down.contains(id))
            .collect()
    }

    /// One series of node `id`'s `/metrics` (`None` if the node does not answer).
    async fn metric(&self, id: u64, series: &str) -> Option<f64> {
        assert!(!self.down.contains(&id), "node {id} is down");
        let (status, body) = http_get(self.http(id), "/metrics").await?;
        if status != 200 {
            return None;
        }
        Some(metric_value(&body, series).unwrap_or(0.0))
    }

    /// `/readyz` of node `id`.
    async fn readyz(&self, id: u64) -> Option<(u16, String)> {
        assert!(!self.down.contains(&id), "node {id} is down");
        http_get(self.http(id), "/readyz").await
    }

    /// Wait until every node in `ids` answers `/readyz` 200 "in quorum".
    async fn wait_in_quorum(&self, ids: &[u64], limit: Duration) {
        eventually("every node in quorum", limit, || async move {
            for &id in ids {
                match self.readyz(id).await {
                    Some((200, body)) if body.contains("in quorum") => {}
                    other => return Err(format!("node {id}: {other:?}")),
                }
            }
            Ok(())
        })
        .await
    }

    /// The node among `ids` whose `/metrics` says it leads, once exactly one of them does
    /// (the gauge is refreshed every second).
    async fn leader_among(&self, ids: &[u64], limit: Duration) -> u64 {
        eventually("exactly one leader", limit, || async move {
            let mut leaders = Vec::new();
            for &id in ids {
                match self.metric(id, IS_LEADER).await {
                    Some(1.0) => leaders.push(id),
                    Some(_) => {}
                    None => return Err(format!("node {id} does not answer /metrics")),
                }
            }
            match leaders.as_slice() {
                [one] => Ok(*one),
                more => Err(format!("nodes claiming to lead: {more:?}")),
            }
        })
        .await
    }

    /// Wait until node `id` has applied everything the leader had committed when the wait
    /// began.
    async fn wait_caught_up(&self, id: u64, limit: Duration) {
        let up = self.up();
        let leader = self.leader_among(&up, limit).await;
        let target = self
            .metric(leader, "kmsd_raft_commit_index")
            .await
            .unwrap_or(0.0);
        eventually("a node caught up with the leader", limit, || async move {
            match self.metric(id, "kmsd_raft_applied_index").await {
                Some(v) if v >= target => Ok(()),
                other => Err(format!("node {id} applied {other:?} of {target}")),
            }
        })
        .await
    }

    /// The live Windows count of each node in `ids`.
    async fn counts(&self, ids: &[u64]) -> BTreeMap<u64, Option<f64>> {
        let mut out = BTreeMap::new();
        for &id in ids {
            out.insert(id, self.metric(id, WINDOWS_LIVE).await);
        }
        out
    }

    /// Wait until every node in `ids` counts exactly `expected` Windows clients.
    async fn wait_count(&self, ids: &[u64], expected: usize, limit: Duration) {
        let what = format!("nodes {ids:?} to count {expected} Windows clients");
        eventually(&what, limit, || async move {
            let counts = self.counts(ids).await;
            if counts.values().all(|c| *c == Some(expected as f64)) {
                Ok(())
            } else {
                Err(format!("{counts:?}"))
            }
        })
        .await
    }

    /// Wait until every node in `ids` answers activations from replicated state (the host
    /// identity has reached it): one Office 2010 machine per node, retried while refused.
    /// Office 2010 has its own pool, so the Windows count stays untouched.
    async fn wait_serving(&self, ids: &[u64], limit: Duration) {
        self.wait_in_quorum(ids, limit).await;
        let p = office2010();
        for &id in ids {
            let addr = self.kms(id);
            let p = &p;
            eventually("a node answering activations", limit, || async move {
                match attempt(addr, p, &machine(p)).await {
                    Attempt::Granted(_) => Ok(()),
                    other => Err(format!("node {id}: {other:?}")),
                }
            })
            .await;
        }
    }

    /// Members on node `id`'s view, from the admin API (`kmsctl status`): id → (role,
    /// voter). `None` if the node does not answer.
    async fn members(&self, id: u64) -> Option<BTreeMap<u64, (String, bool)>> {
        assert!(!self.down.contains(&id), "node {id} is down");
        let server = self.grpc(id);
        let mut args = vec!["--server", server.as_str()];
        if let Some([ca, cert, key]) = &self.admin_tls {
            args.extend([
                "--ca",
                ca.as_str(),
                "--cert",
                cert.as_str(),
                "--key",
                key.as_str(),
            ]);
        }
        args.push("status");
        let st = kmsctl_try(&args).await.ok()?;
        st["members"]
            .as_array()?
            .iter()
            .map(|m| {
                Some((
                    m["id"].as_u64()?,
                    (m["role"].as_str()?.to_string(), m["voter"].as_bool()?),
                ))
            })
            .collect()
    }

    /// Wait until every node of `ids` sees exactly `members` members, all of them voters.
    async fn wait_all_voters(&self, ids: &[u64], members: usize, limit: Duration) {
        eventually("every member a voter", limit, || async move {
            let mut seen = Vec::new();
            for &id in ids {
                let m = self
                    .members(id)
                    .await
                    .ok_or(format!("node {id}: no status"))?;
                let ok = m.len() == members && m.values().all(|(_, voter)| *voter);
                seen.push((id, m));
                if !ok {
                    return Err(format!("{seen:?}"));
                }
            }
            Ok(())
        })
        .await;
    }

    /// `kill -9` node `id`.
    fn kill9(&mut self, id: u64) {
        self.down.insert(id);
        self.node_mut(id).kill9();
    }

    /// SIGTERM node `id` and wait for a clean exit.
    fn stop(&mut self, id: u64) {
        self.down.insert(id);
        let status = self.node_mut(id).stop();
        assert!(
            status.success(),
            "node {id} exited with {status} after SIGTERM"
        );
    }

    /// Start a stopped or killed node again: same data directory, ports and flags.
    fn restart(&mut self, id: u64) {
        self.node_mut(id).restart();
        self.down.remove(&id);
    }

    /// SIGSTOP (`freeze`) or SIGCONT node `id`.
    fn freeze(&mut self, id: u64, frozen: bool) {
        let node = &self.nodes[&id];
        assert!(
            node.is_running() && node.pid() != 0,
            "node {id} is not running"
        );
        node.signal(if frozen { "STOP" } else { "CONT" });
        if frozen {
            self.down.insert(id);
        } else {
            self.down.remove(&id);
        }
    }
}

/// The other two of nodes 1, 2, 3.
fn others(of: u64) -> Vec<u64> {
    [1, 2, 3].into_iter().filter(|id| *id != of).collect()
}

/// Run `kmsctl -o json <args>` through the library: the JSON document, or the failure.
async fn kmsctl_try(args: &[&str]) -> Result<Value, String> {
    let mut argv = vec!["kmsctl", "-o", "json"];
    argv.extend_from_slice(args);
    let cli = kmsctl::cli::Cli::try_parse_from(&argv).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    match kmsctl::execute(&cli, &mut out).await {
        Ok(ExitClass::Success) => serde_json::from_slice(&out).map_err(|e| e.to_string()),
        Ok(class) => Err(format!("{class}: {}", String::from_utf8_lossy(&out))),
        Err(e) => Err(e.to_string()),
    }
}

/// [`kmsctl_try`], panicking on failure.
async fn kmsctl_json(args: &[&str]) -> Value {
    kmsctl_try(args)
        .await
        .unwrap_or_else(|e| panic!("kmsctl {args:?}: {e}"))
}

/// Activate `n` new Windows machines round-robin over `ids`; returns their CMIDs.
async fn activate_round_robin(c: &Cluster, ids: &[u64], n: usize) -> Vec<Guid> {
    let p = windows_client();
    let mut out = Vec::new();
    for i in 0..n {
        let who = machine(&p);
        activate_at(c.kms(ids[i % ids.len()]), &p, &who).await;
        out.push(who.cmid);
    }
    out
}

/// Renew every machine in `cmids` at `addr` (4 concurrent clients); every one must be granted.
async fn renew_all(addr: SocketAddr, cmids: &[Guid]) {
    let chunk = cmids.len().div_ceil(4).max(1);
    let mut set = JoinSet::new();
    for part in cmids.chunks(chunk) {
        let part = part.to_vec();
        set.spawn(async move {
            let p = windows_client();
            for cmid in part {
                let mut who = machine(&p);
                who.cmid = cmid;
                activate_at(addr, &p, &who).await;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("renewal worker panicked");
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_clients_round_robin_over_three_nodes_see_one_count() {
    let _serial = SERIAL.lock().await;
    let c = Cluster::insecure(3);
    c.wait_serving(&[1, 2, 3], Duration::from_secs(60)).await;

    let p = windows_client();
    let mut epids = BTreeSet::new();
    let mut hwids = BTreeSet::new();
    for i in 1..=30u32 {
        let id = u64::from((i - 1) % 3 + 1);
        let r = activate_at(c.kms(id), &p, &machine(&p)).await;
        assert_eq!(
            r.response.current_count, i,
            "client {i} (at node {id}) saw count {}, expected {i}",
            r.response.current_count
        );
        epids.insert(r.response.epid.clone());
        hwids.insert(r.hwid);
    }
    assert_eq!(epids.len(), 1, "one host, one ePID: {epids:?}");
    assert_eq!(hwids.len(), 1, "one host, one HwId: {hwids:?}");
    c.wait_count(&[1, 2, 3], 30, Duration::from_secs(10)).await;
    for id in [1, 2, 3] {
        assert_eq!(
            c.metric(id, "kmsd_degraded_journal_entries").await,
            Some(0.0)
        );
    }

    // The data directory, not the flags, makes a node a cluster member: node 3 restarted with
    // neither --initial-cluster nor --insecure (and no TLS) refuses to start in clear text.
    let mut c = c;
    c.stop(3);
    let mut args = loopback_flags(&c.data_dir(3).to_string_lossy());
    args.extend(["--node-id".into(), "3".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, _out, err) = run_kmsd(&args, &[], Duration::from_secs(30));
    assert!(
        !status.success() && err.contains("--insecure") && err.contains("3 members"),
        "a member restarted without TLS or --insecure: {status}, {err}"
    );
    // With its flags back it rejoins, its data intact.
    c.restart(3);
    c.wait_count(&[3], 30, Duration::from_secs(30)).await;
}

/// Formation does not depend on which node starts first (here the last-named one, the
/// others seconds later), and a node with data ignores `--initial-cluster`: restarted with a
/// different one, it neither forms a new cluster nor forgets its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_start_order_forms_one_cluster_and_data_outranks_initial_cluster() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start_in_order(&[3, 1, 2], Duration::from_secs(2), |_| {
        vec!["--insecure".into()]
    });
    c.wait_serving(&[1, 2, 3], Duration::from_secs(60)).await;
    let p = windows_client();
    for i in 1..=6u32 {
        let id = [3, 1, 2][(i as usize - 1) % 3];
        let r = activate_at(c.kms(id), &p, &machine(&p)).await;
        assert_eq!(r.response.current_count, i, "client {i} at node {id}");
    }
    c.wait_count(&[1, 2, 3], 6, Duration::from_secs(10)).await;

    // Node 2 restarted with an --initial-cluster naming only itself.
    c.stop(2);
    let ports = c.ports[&2];
    let args: Vec<String> = [
        "--node-id".to_string(),
        "2".into(),
        "--initial-cluster".into(),
        format!("2=127.0.0.1:{}", ports.grpc),
        "--insecure".into(),
    ]
    .into();
    c.spawn(2, ports, &args);
    c.wait_in_quorum(&[1, 2, 3], Duration::from_secs(30)).await;
    c.wait_count(&[2], 6, Duration::from_secs(30)).await;
    for id in [1, 2, 3] {
        let m = c.members(id).await.expect("status");
        assert_eq!(
            m.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 3],
            "node {id} after node 2 restarted with another --initial-cluster"
        );
    }
    let log = c.node(2).log_lines();
    assert!(
        log.iter().all(|l| !l.contains("new cluster: initializing"))
            && log
                .iter()
                .any(|l| l.contains("--initial-cluster/--join are ignored")),
        "node 2 did not keep its cluster over the new --initial-cluster"
    );
    // And it still counts with the others.
    let r = activate_at(c.kms(2), &p, &machine(&p)).await;
    assert_eq!(r.response.current_count, 7);
    c.wait_count(&[1, 2, 3], 7, Duration::from_secs(10)).await;
}

/// The single-node default (no TLS, no --insecure) cannot grow into a clear-text cluster:
/// `kmsctl member add` is refused and a `--join` from another node fails, while it keeps
/// serving clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_single_node_default_takes_no_clear_text_peers() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let single = Kmsd::start(&dir.path().join("single"), &[]);
    let grpc = single.grpc.to_string();
    let err = kmsctl_try(&["--server", &grpc, "member", "add", "2", "127.0.0.1:9"])
        .await
        .expect_err("member add on the single-node default");
    assert!(err.contains("--insecure"), "{err}");

    let joiner = Kmsd::start(
        &dir.path().join("joiner"),
        &["--node-id", "2", "--join", &grpc, "--insecure"],
    );
    eventually(
        "the clear-text join to fail",
        Duration::from_secs(20),
        || {
            let joiner = &joiner;
            async move {
                let refused = joiner
                    .log_lines()
                    .iter()
                    .filter(|l| l.contains("join failed") && l.contains("takes no peers"))
                    .count();
                (refused >= 1)
                    .then_some(())
                    .ok_or("no refused join logged yet".to_string())
            }
        },
    )
    .await;
    let members = kmsctl_json(&["--server", &grpc, "status"]).await;
    assert_eq!(
        members["members"].as_array().map(Vec::len),
        Some(1),
        "{members}"
    );
    // Still a working KMS host.
    let p = windows_client();
    let r = activate_at(single.kms_addr(), &p, &machine(&p)).await;
    assert_eq!(r.response.current_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_under_load_loses_no_acknowledged_client() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::insecure(3);
    c.wait_serving(&[1, 2, 3], Duration::from_secs(60)).await;
    let earlier = activate_round_robin(&c, &[1, 2, 3], 6).await;

    let leader = c.leader_among(&[1, 2, 3], Duration::from_secs(10)).await;
    let survivors = others(leader);
    let addrs: Vec<SocketAddr> = survivors.iter().map(|id| c.kms(*id)).collect();
    let load = Load::spawn(addrs, 6, Duration::from_millis(10), true, LOAD_LIMIT);
    load.wait_acked(100, Duration::from_secs(15)).await;
    let before_kill = load.acked();
    c.kill9(leader);
    let killed_at = Instant::now();
    // Activations continue within 5 s of the kill: every load worker gets an answer (from a
    // new leader, or in degraded mode while the election runs).
    load.wait_acked(before_kill + 6, Duration::from_secs(5))
        .await;
    let resumed = load.acked() - before_kill;
    assert!(
        resumed >= 6,
        "only {resumed} activation(s) answered in the 5 s after the leader was killed"
    );
    // Keep the load going through the election and some time after it.
    let new_leader = c.leader_among(&survivors, Duration::from_secs(20)).await;
    let elected_after = killed_at.elapsed();
    // The new leader logs the change as a cluster event (event id 40001).
    eventually(
        "the leader-change event in the new leader's log",
        Duration::from_secs(10),
        || {
            let node = c.node(new_leader);
            async move {
                node.log_lines()
                    .iter()
                    .any(|l| {
                        l.contains("\"event_id\":40001")
                            && l.contains(&format!("\"leader\":{new_leader},"))
                    })
                    .then_some(())
                    .ok_or("not logged yet".to_string())
            }
        },
    )
    .await;
    load.wait_acked(load.acked() + 100, Duration::from_secs(15))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let result = load.finish().await;
    assert!(
        result.failures.is_empty(),
        "{} activation(s) failed on the surviving nodes: {:?}",
        result.failures.len(),
        &result.failures[..result.failures.len().min(5)]
    );
    let after_kill = result.acked.len() - before_kill;
    assert!(
        after_kill >= 50,
        "only {after_kill} activations after the kill"
    );
    let degraded = {
        let mut n = 0;
        for (cmid, i) in &result.acked[before_kill..] {
            if degraded_answer(c.node(survivors[*i]), cmid) == Some(true) {
                n += 1;
            }
        }
        n
    };
    eprintln!(
        "leader {leader} killed after {before_kill} activations; node {new_leader} leads \
         (seen {elected_after:?} after the kill); {after_kill} activations after the kill, \
         {degraded} of them answered in degraded mode"
    );

    // The killed node comes back with its data and catches up; every node counts every
    // acknowledged machine exactly once.
    c.restart(leader);
    c.wait_in_quorum(&[1, 2, 3], Duration::from_secs(60)).await;
    let expected = earlier.len() + result.distinct();
    c.wait_count(&[1, 2, 3], expected, Duration::from_secs(60))
        .await;
    // It knows each of them: renewing them all at the restarted node adds nobody.
    let acked: Vec<Guid> = result.acked.iter().map(|(g, _)| *g).collect();
    renew_all(c.kms(leader), &acked).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    c.wait_count(&[1, 2, 3], expected, Duration::from_secs(5))
        .await;
    // And it takes new machines again.
    activate_round_robin(&c, &[leader], 1).await;
    c.wait_count(&[1, 2, 3], expected + 1, Duration::from_secs(20))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_load_fails_no_client_that_tries_every_address() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::insecure(3);
    c.wait_serving(&[1, 2, 3], Duration::from_secs(60)).await;
    let addrs: Vec<SocketAddr> = [1, 2, 3].iter().map(|id| c.kms(*id)).collect();
    let load = Load::spawn(addrs, 6, Duration::from_millis(10), true, LOAD_LIMIT);
    load.wait_acked(50, Duration::from_secs(15)).await;
    for id in [1, 2, 3] {
        let t = Instant::now();
        c.stop(id);
        let stopped = t.elapsed();
        let during = load.acked();
        // Down for a moment, as a real restart is: the load meets the closed port.
        tokio::time::sleep(Duration::from_secs(1)).await;
        c.restart(id);
        // Back, ready and caught up with the leader before the next one goes.
        c.wait_in_quorum(&[id], Duration::from_secs(60)).await;
        c.wait_caught_up(id, Duration::from_secs(60)).await;
        eprintln!(
            "node {id}: SIGTERM → exit {stopped:?}, back in quorum {:?} after the signal, \
             {} activations meanwhile",
            t.elapsed(),
            load.acked() - during
        );
        load.wait_acked(load.acked() + 30, Duration::from_secs(15))
            .await;
    }
    let result = load.finish().await;
    assert!(
        result.failures.is_empty(),
        "{} activation(s) failed during the rolling restart: {:?}",
        result.failures.len(),
        &result.failures[..result.failures.len().min(5)]
    );
    eprintln!(
        "rolling restart: {} activations, {} connection failures moved to the next address",
        result.acked.len(),
        result.skipped
    );
    c.wait_in_quorum(&[1, 2, 3], Duration::from_secs(30)).await;
    c.wait_count(&[1, 2, 3], result.distinct(), Duration::from_secs(60))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_is_replaced_and_rejoins_without_double_counting() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::insecure(3);
    c.wait_serving(&[1, 2, 3], Duration::from_secs(60)).await;
    let earlier = activate_round_robin(&c, &[1, 2, 3], 6).await;

    let old = c.leader_among(&[1, 2, 3], Duration::from_secs(10)).await;
    let survivors = others(old);
    let addrs: Vec<SocketAddr> = survivors.iter().map(|id| c.kms(*id)).collect();
    let load = Load::spawn(addrs, 4, Duration::from_millis(20), true, LOAD_LIMIT);
    load.wait_acked(40, Duration::from_secs(15)).await;

    c.freeze(old, true);
    let frozen_at = Instant::now();
    let new = c.leader_among(&survivors, Duration::from_secs(15)).await;
    assert_ne!(new, old);
    let elected_after = frozen_at.elapsed();
    // The survivors commit again: each answers a new machine from the replicated state, not
    // from its degraded-mode journal (the journal of a node that waited for the frozen leader
    // drains first).
    let p = windows_client();
    let mut committed = Vec::new();
    // Every machine activated while probing, degraded answers included: those are journaled
    // and replayed, so they count too.
    let probed = Mutex::new(Vec::new());
    for &id in &survivors {
        let node = c.node(id);
        let addr = c.kms(id);
        let (p, probed) = (&p, &probed);
        let cmid = eventually(
            "a committed (non-degraded) activation",
            Duration::from_secs(15),
            || async move {
                let who = machine(p);
                activate_at(addr, p, &who).await;
                probed.lock().unwrap().push(who.cmid);
                if was_degraded(node, &who.cmid).await {
                    Err(format!("node {id} still answers in degraded mode"))
                } else {
                    Ok(who.cmid)
                }
            },
        )
        .await;
        committed.push(cmid);
    }
    // Stay frozen ~4 s in all.
    let frozen_for = Duration::from_secs(4);
    if let Some(rest) = frozen_for.checked_sub(frozen_at.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    c.freeze(old, false);
    eprintln!(
        "leader {old} frozen for {:?}; node {new} leads (seen {elected_after:?} after SIGSTOP)",
        frozen_at.elapsed()
    );
    load.wait_acked(load.acked() + 40, Duration::from_secs(15))
        .await;
    let result = load.finish().await;
    assert!(
        result.failures.is_empty(),
        "{} activation(s) failed on the nodes that were not frozen: {:?}",
        result.failures.len(),
        &result.failures[..result.failures.len().min(5)]
    );

    // The old leader steps down, catches up, and everyone agrees on one count.
    c.wait_in_quorum(&[1, 2, 3], Duration::from_secs(30)).await;
    let leader = c.leader_among(&[1, 2, 3], Duration::from_secs(15)).await;
    assert_ne!(
        leader, old,
        "the frozen node should have lost its leadership"
    );
    let probed = probed.into_inner().unwrap();
    assert!(committed.iter().all(|g| probed.contains(g)));
    let mut expected = earlier.len() + probed.len() + result.distinct();
    c.wait_count(&[1, 2, 3], expected, Duration::from_secs(60))
        .await;
    // The thawed node serves and counts its clients once.
    let p = windows_client();
    let who = machine(&p);
    activate_at(c.kms(old), &p, &who).await;
    activate_at(c.kms(old), &p, &who).await;
    expected += 1;
    c.wait_count(&[1, 2, 3], expected, Duration::from_secs(20))
        .await;
}

/// Client records in the cluster before the fourth node joins. They arrive through `kmsd
/// --restore` of a generated backup (filling 100 000 through the KMS port takes minutes with
/// debug builds); `scripts/bench-cluster.sh` measures joins into 1M records with release builds.
const JOIN_RECORDS: usize = 100_000;

/// A backup holding `n` live Windows clients: a real single node's backup (configuration,
/// identity, one activated machine) with its client record cloned under `n` distinct CMIDs.
async fn large_backup(dir: &std::path::Path, n: usize) -> PathBuf {
    use kmsd::admin::backup;
    let mut seed = Kmsd::start(&dir.join("seed"), &[]);
    let p = windows_client();
    activate_at(seed.kms_addr(), &p, &machine(&p)).await;
    let small = dir.join("seed.kmsbak");
    let grpc = seed.grpc.to_string();
    kmsctl_json(&["--server", &grpc, "backup", &small.to_string_lossy()]).await;
    seed.stop();
    let mut contents = backup::read_file(&small).expect("the seed backup reads back");
    let (pool, _, template) = contents.clients.pop().expect("the seed's client");
    contents.clients = (0..n as u128)
        .map(|i| {
            let mut cmid = [0u8; 16];
            cmid.copy_from_slice(&(0x5eed_0000_0000_0000_0000_0000_0000_0000 | i).to_be_bytes());
            let mut r = template.clone();
            r.workstation = format!("RESTORED-{i:06}");
            r.recent_request_ids.clear();
            (pool, Guid(cmid), r)
        })
        .collect();
    let file = dir.join("large.kmsbak");
    std::fs::write(&file, backup::encode(&contents)).unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_joins_a_cluster_with_many_records_and_serves() {
    let _serial = SERIAL.lock().await;
    let work = tempfile::tempdir().unwrap();
    let file = large_backup(work.path(), JOIN_RECORDS).await;
    let file = file.to_string_lossy().into_owned();
    // Snapshots every 40 entries, 10 entries kept behind them: the log that restored the
    // records is compacted away, so a new member can only catch up by installing a snapshot.
    let mut c = Cluster::start(3, |id| {
        let mut f: Vec<String> = [
            "--insecure",
            "--snapshot-every",
            "40",
            "--snapshot-keep-logs",
            "10",
        ]
        .map(String::from)
        .to_vec();
        // The last node started restores: `--restore` runs before a node reports that it
        // serves, and needs the quorum the first two already make.
        if id == 3 {
            f.extend(["--restore".to_string(), file.clone()]);
        }
        f
    });
    c.wait_serving(&[1, 2, 3], Duration::from_secs(60)).await;
    let restored_at = Instant::now();
    c.wait_count(&[1, 2, 3], JOIN_RECORDS, Duration::from_secs(180))
        .await;
    eprintln!(
        "{JOIN_RECORDS} records restored and replicated in {:?}",
        restored_at.elapsed()
    );
    let total = JOIN_RECORDS;
    // A few through the KMS port as well, while the store is large.
    let live = activate_round_robin(&c, &[1, 2, 3], 3).await;
    let total = total + live.len();
    c.wait_count(&[1, 2, 3], total, Duration::from_secs(30))
        .await;

    // `--join` alone: the leader adds the node as a learner, which installs a snapshot (the
    // log behind it is gone), and promotes it once it has caught up.
    let join_addr = c.grpc(1);
    let joined_at = Instant::now();
    c.spawn_joiner(4, join_addr);
    c.wait_count(&[4], total, Duration::from_secs(120)).await;
    let caught_up = joined_at.elapsed();
    c.wait_all_voters(&[1, 2, 3, 4], 4, Duration::from_secs(30))
        .await;
    let log = c.node(4).log_lines();
    assert!(
        log.iter().any(|l| l.contains("installed snapshot")),
        "node 4 caught up without installing a snapshot"
    );
    eprintln!(
        "node 4 installed a snapshot of {total} records and caught up {caught_up:?} after it started"
    );
    c.wait_in_quorum(&[4], Duration::from_secs(30)).await;

    // It serves: new machines at node 4 count on every node.
    let new = activate_round_robin(&c, &[4], 3).await;
    let mut expected = total + new.len();
    c.wait_count(&[1, 2, 3, 4], expected, Duration::from_secs(20))
        .await;

    // Four voters: with one old node stopped, the other three are still a quorum and commit.
    let leader = c.leader_among(&[1, 2, 3, 4], Duration::from_secs(10)).await;
    let victim = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    c.stop(victim);
    let rest: Vec<u64> = c.up();
    let p = windows_client();
    for &id in &rest {
        let who = machine(&p);
        activate_at(c.kms(id), &p, &who).await;
        assert!(
            !was_degraded(c.node(id), &who.cmid).await,
            "node {id} answered in degraded mode with node {victim} stopped: the remaining \
             three of four voters should commit"
        );
        expected += 1;
    }
    c.wait_count(&rest, expected, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_under_load_fail_no_client_and_lose_nothing() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::insecure(3);
    c.wait_serving(&[1, 2, 3], Duration::from_secs(60)).await;
    let earlier = activate_round_robin(&c, &[1, 2, 3], 6).await;
    // Clients use nodes 1 and 2, which stay members throughout; 3 leaves, 4 arrives.
    let load = Load::spawn(
        vec![c.kms(1), c.kms(2)],
        6,
        Duration::from_millis(10),
        true,
        LOAD_LIMIT,
    );
    load.wait_acked(50, Duration::from_secs(15)).await;

    // Grow: node 4 joins (learner, caught up, promoted) while the load runs.
    let join_addr = c.grpc(1);
    c.spawn_joiner(4, join_addr);
    c.wait_all_voters(&[1, 2], 4, Duration::from_secs(60)).await;
    let at_grow = load.acked();

    // Shrink: remove node 3 (asked at whichever node; followers forward to the leader).
    let servers = [1, 2, 4].map(|id| c.grpc(id)).join(",");
    let removed = kmsctl_json(&["--server", &servers, "member", "remove", "3"]).await;
    let ids: Vec<u64> = removed["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["id"].as_u64())
        .collect();
    assert_eq!(ids, vec![1, 2, 4], "{removed}");
    c.stop(3);
    // Each change is a cluster event (event id 40020) in the members' logs.
    eventually(
        "the membership events in node 1's log",
        Duration::from_secs(10),
        || {
            let node = c.node(1);
            async move {
                let events: Vec<String> = node
                    .log_lines()
                    .into_iter()
                    .filter(|l| l.contains("\"event_id\":40020"))
                    .collect();
                events
                    .iter()
                    .any(|l| l.contains("\"members\":\"1,2,4\""))
                    .then_some(())
                    .ok_or(format!("membership events so far: {events:?}"))
            }
        },
    )
    .await;
    // The remaining three commit without node 3.
    load.wait_acked(load.acked() + 100, Duration::from_secs(20))
        .await;
    let result = load.finish().await;
    assert!(
        result.failures.is_empty(),
        "{} activation(s) failed during the membership changes: {:?}",
        result.failures.len(),
        &result.failures[..result.failures.len().min(5)]
    );
    let after = result.acked.len() - at_grow;
    assert!(after >= 100, "only {after} activations after node 4 joined");
    eprintln!(
        "{} activations under load, {at_grow} before node 4 was a voter, {after} after",
        result.acked.len()
    );

    // One count on every member, old and new, with every acknowledged machine once.
    let expected = earlier.len() + result.distinct();
    c.wait_count(&[1, 2, 4], expected, Duration::from_secs(30))
        .await;
    for id in [1, 2, 4] {
        let m = c.members(id).await.expect("status");
        assert_eq!(
            m.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 4],
            "node {id}"
        );
    }
    // Node 4 serves new machines, and every member counts them.
    activate_round_robin(&c, &[4], 2).await;
    c.wait_count(&[1, 2, 4], expected + 2, Duration::from_secs(20))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cluster_forms_and_counts_and_keeps_plaintext_nodes_out() {
    let _serial = SERIAL.lock().await;
    let certs = tempfile::tempdir().unwrap();
    let dir = |name: &str| certs.path().join(name).to_string_lossy().into_owned();
    kmsctl_json(&["cert", "create-ca", "--out-dir", &dir("ca")]).await;
    for id in 1..=3 {
        kmsctl_json(&[
            "cert",
            "create-node",
            &format!("kmsd-{id}"),
            "--host",
            "127.0.0.1",
            "--ca-dir",
            &dir("ca"),
            "--out-dir",
            &dir(&format!("node{id}")),
        ])
        .await;
    }
    let mut c = Cluster::start(3, |id| {
        let d = dir(&format!("node{id}"));
        vec![
            "--tls-ca".into(),
            format!("{d}/ca.crt"),
            "--tls-cert".into(),
            format!("{d}/node.crt"),
            "--tls-key".into(),
            format!("{d}/node.key"),
        ]
    });
    kmsctl_json(&[
        "cert",
        "create-client",
        "ops",
        "--role",
        "admin",
        "--ca-dir",
        &dir("ca"),
        "--out-dir",
        &dir("ops"),
    ])
    .await;
    c.admin_tls = Some([
        format!("{}/ca.crt", dir("ops")),
        format!("{}/client.ops.crt", dir("ops")),
        format!("{}/client.ops.key", dir("ops")),
    ]);
    c.wait_serving(&[1, 2, 3], Duration::from_secs(60)).await;
    let p = windows_client();
    for i in 1..=9u32 {
        let id = u64::from((i - 1) % 3 + 1);
        let r = activate_at(c.kms(id), &p, &machine(&p)).await;
        assert_eq!(r.response.current_count, i, "client {i} at node {id}");
    }
    c.wait_count(&[1, 2, 3], 9, Duration::from_secs(10)).await;
    for id in [1, 2, 3] {
        let log = c.node(id).log_lines().join("\n");
        assert!(log.contains("mutual TLS"), "node {id} did not report TLS");
    }

    // A node without TLS (clear text, --insecure) cannot join it.
    let join_addr = c.grpc(1);
    c.spawn_joiner(4, join_addr);
    eventually(
        "the plaintext node's join to fail",
        Duration::from_secs(20),
        || {
            let c = &c;
            async move {
                let failed = c
                    .node(4)
                    .log_lines()
                    .iter()
                    .filter(|l| l.contains("join failed"))
                    .count();
                (failed >= 2)
                    .then_some(())
                    .ok_or(format!("{failed} failed attempts logged"))
            }
        },
    )
    .await;
    let outsider = c.readyz(4).await;
    assert!(
        !outsider
            .as_ref()
            .is_some_and(|(_, b)| b.contains("in quorum")),
        "the plaintext node claims to be in quorum: {outsider:?}"
    );
    assert_eq!(c.metric(4, WINDOWS_LIVE).await, Some(0.0));
    for id in [1, 2, 3] {
        let m = c.members(id).await.expect("admin status over mutual TLS");
        assert_eq!(
            m.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 3],
            "node {id}: {m:?}"
        );
    }
    // The cluster is unaffected.
    activate_round_robin(&c, &[2], 1).await;
    c.wait_count(&[1, 2, 3], 10, Duration::from_secs(10)).await;
    c.stop(4);

    // Multi-node without TLS and without --insecure: refused at startup, naming --insecure.
    let data = tempfile::tempdir().unwrap();
    let data_s = data.path().to_string_lossy().into_owned();
    let nowhere = crate::harness::free_ports(2);
    let peers = format!("1=127.0.0.1:{},2=127.0.0.1:{}", nowhere[0], nowhere[1]);
    let join = format!("127.0.0.1:{}", nowhere[0]);
    for (what, flags) in [
        ("--initial-cluster", ["--initial-cluster", peers.as_str()]),
        ("--join", ["--join", join.as_str()]),
    ] {
        let node_id = if what == "--join" { "5" } else { "1" };
        let mut args = loopback_flags(&data_s);
        args.extend(
            ["--node-id", node_id]
                .into_iter()
                .chain(flags)
                .map(String::from),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, _out, err) = run_kmsd(&args, &[], Duration::from_secs(30));
        assert!(
            !status.success(),
            "kmsd {what} without TLS or --insecure started: {err}"
        );
        assert!(
            err.contains("--insecure"),
            "kmsd {what} without TLS: the error does not name --insecure: {err}"
        );
    }

    // A `read` certificate of the same CA looks at every node but changes nothing.
    kmsctl_json(&[
        "cert",
        "create-client",
        "viewer",
        "--role",
        "read",
        "--ca-dir",
        &dir("ca"),
        "--out-dir",
        &dir("viewer"),
    ])
    .await;
    let viewer = dir("viewer");
    let tls = [
        "--ca".to_string(),
        format!("{viewer}/ca.crt"),
        "--cert".into(),
        format!("{viewer}/client.viewer.crt"),
        "--key".into(),
        format!("{viewer}/client.viewer.key"),
    ];
    let known = activate_round_robin(&c, &[3], 1).await;
    c.wait_count(&[1, 2, 3], 11, Duration::from_secs(10)).await;
    for id in [1, 2, 3] {
        let server = c.grpc(id);
        let with = |args: &[&str]| -> Vec<String> {
            ["--server", server.as_str()]
                .iter()
                .map(|s| s.to_string())
                .chain(tls.iter().cloned())
                .chain(args.iter().map(|s| s.to_string()))
                .collect()
        };
        let as_viewer = |args: &[&str]| {
            let argv = with(args);
            async move {
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                kmsctl_json(&argv).await
            }
        };
        let st = as_viewer(&["status"]).await;
        assert_eq!(st["node_id"], id, "{st}");
        assert_eq!(st["members"].as_array().map(Vec::len), Some(3), "{st}");
        let cmid = known[0].to_string();
        for change in [
            &["config", "set", "renewal-interval", "60"][..],
            &["clients", "forget", &cmid][..],
        ] {
            let mut argv = vec!["kmsctl".to_string()];
            argv.extend(with(change));
            let cli = kmsctl::cli::Cli::try_parse_from(&argv).expect("kmsctl arguments");
            let mut out = Vec::new();
            let (class, msg) = match kmsctl::execute(&cli, &mut out).await {
                Ok(class) => (class, String::from_utf8_lossy(&out).into_owned()),
                Err(e) => (e.class(), e.to_string()),
            };
            assert_eq!(
                class,
                ExitClass::PermissionDenied,
                "node {id}: a read certificate ran {change:?}: {msg}"
            );
        }
        let got = as_viewer(&["config", "get", "renewal-interval"]).await;
        assert_eq!(got["value"], "10080", "node {id}: {got}");
        let shown = as_viewer(&["clients", "show", &cmid]).await;
        assert_eq!(shown["records"][0]["cmid"], cmid, "node {id}: {shown}");
    }
    c.wait_count(&[1, 2, 3], 11, Duration::from_secs(10)).await;
}
