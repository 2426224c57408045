//! The fault tier: three-node clusters in network namespaces ([`crate::netns`]), each node on
//! its own address, faults injected from outside (kill -9, iptables partitions, a full
//! tmpfs, a skewed clock, an impostor node, mismatched bootstrap lists, a rolling restart),
//! while clients keep activating on all three nodes.
//!
//! After each fault heals the tests check what a user would: every acknowledged client is
//! listed exactly once by every node (`kmsctl clients list`), the nodes' applied indexes agree,
//! exactly one node leads, and no node filled its log during the fault. Nothing is timed:
//! waits poll with generous deadlines, and log volume is counted in lines.
//!
//! Each scenario collects its checks ([`Checks`]) and reports all of them before failing, so
//! one run shows every behaviour that is missing, with the values seen. The scenarios run one
//! at a time ([`SERIAL`]): three debug-build nodes and their clients already fill two cores,
//! and an election caused by CPU starvation would make the partition checks meaningless. Each
//! one still has its own namespaces and subnet, so they could run side by side.
//!
//! All of it is skipped (with "SKIPPED: reason" on stderr) when not root or when `ip netns`
//! or iptables do not work; see docs/testing-faults.md.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kms_wire::Guid;

use crate::harness::{http_get, poll_every};
use crate::kms::{Attempt, Load, LoadResult, attempt, machine, office2010, windows_client};
use crate::netns::{GRPC_PORT, Lab, kmsctl, listed_cmids, metric};

/// One scenario at a time (tokio's mutex: not poisoned by a failed scenario).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Log lines (besides per-client activation events) a node may write during a fault.
const LINE_BOUND: usize = 200;
/// How far apart the nodes' applied indexes may be once everything settled.
const APPLIED_BOUND: f64 = 3.0;
/// Deadline of the waits for formation, recovery and convergence (debug builds, 2 cores).
const LONG: Duration = Duration::from_secs(90);
/// "A few election timeouts" (600–1200 ms each), generously.
const ELECTIONS: Duration = Duration::from_secs(15);
/// Pause between two activations of one load worker.
const PACE: Duration = Duration::from_millis(300);
/// The message of the per-client activation event (not counted as fault noise).
const ACTIVATION_EVENT: &str = "activation request processed";

const IS_LEADER: &str = "kmsd_raft_is_leader";
const TERM: &str = "kmsd_raft_term";
const APPLIED: &str = "kmsd_raft_applied_index";
const STORAGE_OK: &str = "kmsd_storage_ok";

/// A lab of `hosts` hosts, or `None` after printing "SKIPPED: why" (the test then returns).
fn lab(hosts: usize) -> Option<Lab> {
    Lab::new(hosts)
        .map_err(|why| eprintln!("SKIPPED: fault tier: {why}"))
        .ok()
}

/// The start of most scenarios: this scenario's turn ([`SERIAL`], held until the returned
/// guard drops, after the lab), nodes 1–3 in a new lab of `hosts` hosts serving with a leader,
/// and the scenario's checks. Returns the leader too; `None` when the lab cannot be built.
async fn scenario(
    hosts: usize,
    name: &'static str,
) -> Option<(tokio::sync::MutexGuard<'static, ()>, Trio, Checks, u64)> {
    let serial = SERIAL.lock().await;
    let mut t = Trio::plain(lab(hosts)?);
    let ck = Checks::new(name);
    let leader = t.up().await;
    Some((serial, t, ck, leader))
}

// ---------------------------------------------------------------------------------------------
// Checks: every assertion of a scenario, reported together

/// The checks of one scenario: each is printed as it is made, and [`Checks::finish`] fails
/// the test with every failed one.
struct Checks {
    scenario: &'static str,
    failed: Vec<String>,
}

impl Checks {
    fn new(scenario: &'static str) -> Checks {
        Checks {
            scenario,
            failed: Vec::new(),
        }
    }

    fn check(&mut self, what: &str, ok: bool, detail: impl std::fmt::Display) {
        let verdict = if ok { "ok  " } else { "FAIL" };
        eprintln!("[fault {}] {verdict} {what}: {detail}", self.scenario);
        if !ok {
            self.failed.push(format!("{what}: {detail}"));
        }
    }

    fn result<T>(&mut self, what: &str, r: Result<T, String>) -> Option<T> {
        match r {
            Ok(v) => {
                self.check(what, true, "yes");
                Some(v)
            }
            Err(e) => {
                self.check(what, false, e);
                None
            }
        }
    }

    fn note(&self, what: &str, detail: impl std::fmt::Display) {
        eprintln!("[fault {}] note {what}: {detail}", self.scenario);
    }

    fn finish(self) {
        assert!(
            self.failed.is_empty(),
            "scenario {}: {} check(s) failed:\n  {}",
            self.scenario,
            self.failed.len(),
            self.failed.join("\n  ")
        );
    }
}

/// Poll `f` every 200 ms until it returns `Ok`, for at most `limit`; the last error otherwise.
async fn poll<T, F, Fut>(limit: Duration, f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    poll_every(Duration::from_millis(200), limit, f)
        .await
        .map_err(|e| format!("after {limit:?}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// A three-node cluster in the lab

/// Each node's log length at one moment (node id → lines).
type Marks = BTreeMap<u64, usize>;

/// Nodes 1, 2, 3 on lab hosts 0, 1, 2 (plus whatever else a scenario starts in the lab).
struct Trio {
    lab: Lab,
    /// Node id → the lab's node index.
    k: BTreeMap<u64, usize>,
    initial: String,
}

/// The `--initial-cluster` naming hosts 0, 1, 2 as nodes 1, 2, 3.
fn initial_cluster(lab: &Lab) -> String {
    (1..=3u64)
        .map(|id| format!("{id}={}:{GRPC_PORT}", lab.host_ip(id as usize - 1)))
        .collect::<Vec<_>>()
        .join(",")
}

/// The flags of node `id` of a new insecure cluster.
fn node_flags(id: u64, initial: &str) -> Vec<String> {
    vec![
        "--node-id".into(),
        id.to_string(),
        "--initial-cluster".into(),
        initial.into(),
        "--insecure".into(),
    ]
}

impl Trio {
    /// Start nodes 1–3; `data(lab, id)` gives each data directory and `faketime(id)` an
    /// optional clock offset.
    fn start(
        mut lab: Lab,
        data: impl Fn(&mut Lab, u64) -> PathBuf,
        faketime: impl Fn(u64) -> Option<&'static str>,
    ) -> Trio {
        let initial = initial_cluster(&lab);
        let mut k = BTreeMap::new();
        for id in 1..=3u64 {
            let dir = data(&mut lab, id);
            let idx = lab.spawn(
                id as usize - 1,
                &dir,
                &node_flags(id, &initial),
                faketime(id),
            );
            k.insert(id, idx);
        }
        Trio { lab, k, initial }
    }

    /// Nodes 1–3 with data directories in the lab's directory and real clocks.
    fn plain(lab: Lab) -> Trio {
        Self::start(lab, |lab, id| lab.dir().join(format!("node{id}")), |_| None)
    }

    fn kms(&self, id: u64) -> SocketAddr {
        self.lab.node(self.k[&id]).kms()
    }

    fn http(&self, id: u64) -> SocketAddr {
        self.lab.node(self.k[&id]).http()
    }

    fn grpc(&self, id: u64) -> String {
        self.lab.node(self.k[&id]).grpc().to_string()
    }

    fn host(&self, id: u64) -> usize {
        id as usize - 1
    }

    /// `/readyz` of node `id` (`None` if it does not answer).
    async fn readyz(&self, id: u64) -> Option<(u16, String)> {
        http_get(self.http(id), "/readyz").await
    }

    /// One series of node `id` (0 when absent); `Err` if the node does not answer.
    async fn metric(&self, id: u64, series: &str) -> Result<f64, String> {
        metric(self.http(id), series)
            .await
            .ok_or_else(|| format!("node {id} does not answer /metrics"))
    }

    /// One series of node `id`: `Ok(None)` when the node does not export it.
    async fn series(&self, id: u64, series: &str) -> Result<Option<f64>, String> {
        match http_get(self.http(id), "/metrics").await {
            Some((200, body)) => Ok(crate::harness::metric_value(&body, series)),
            other => Err(format!("node {id} /metrics: {other:?}")),
        }
    }

    /// Wait until every node of `ids` has logged "kmsd serving", says "ok: in quorum" and has
    /// answered one Office 2010 activation (its own pool: Windows counts stay untouched).
    async fn wait_serving(&mut self, ids: &[u64], limit: Duration) -> Result<(), String> {
        for &id in ids {
            let k = self.k[&id];
            if !self.lab.node_mut(k).wait_listening(limit).await {
                return Err(format!(
                    "node {id} did not start serving; log tail:\n{}",
                    tail(&self.lab.node(k).log_lines(), 20)
                ));
            }
        }
        let this = &*self;
        poll(limit, || async move {
            for &id in ids {
                match this.readyz(id).await {
                    Some((200, b)) if b.starts_with("ok: in quorum") => {}
                    other => return Err(format!("node {id} /readyz: {other:?}")),
                }
            }
            Ok(())
        })
        .await?;
        let p = office2010();
        for &id in ids {
            let (addr, p) = (self.kms(id), &p);
            poll(limit, || async move {
                match attempt(addr, p, &machine(p)).await {
                    Attempt::Granted(_) => Ok(()),
                    other => Err(format!("node {id}: {other:?}")),
                }
            })
            .await?;
        }
        Ok(())
    }

    /// Wait until nodes 1–3 serve and one of them leads (panics otherwise); returns the leader.
    async fn up(&mut self) -> u64 {
        self.wait_serving(&[1, 2, 3], LONG)
            .await
            .expect("cluster up");
        self.leader_among(&[1, 2, 3], LONG).await.expect("a leader")
    }

    /// Start the scenario's clients: three workers, worker `w` starting each activation at
    /// node `w + 1` and moving on to the next node only when one is unreachable (like Windows
    /// with several SRV records). Returns once `warm` activations were acknowledged.
    async fn load(&self, warm: usize) -> Load {
        let addrs = (1..=3).map(|id| self.kms(id)).collect();
        // Hard bound whatever the test does.
        let load = Load::spawn(addrs, 3, PACE, false, Duration::from_secs(300));
        load.wait_more(warm, LONG).await;
        load
    }

    /// The node of `ids` that leads, once exactly one of them says so.
    async fn leader_among(&self, ids: &[u64], limit: Duration) -> Result<u64, String> {
        poll(limit, || async move {
            let mut leaders = Vec::new();
            for &id in ids {
                if self.metric(id, IS_LEADER).await? == 1.0 {
                    leaders.push(id);
                }
            }
            match leaders.as_slice() {
                [one] => Ok(*one),
                more => Err(format!("nodes claiming to lead: {more:?}")),
            }
        })
        .await
    }

    /// The sum of `kmsd_raft_is_leader` over `ids`, per node.
    async fn leader_gauges(&self, ids: &[u64]) -> BTreeMap<u64, Option<f64>> {
        let mut out = BTreeMap::new();
        for &id in ids {
            out.insert(id, self.metric(id, IS_LEADER).await.ok());
        }
        out
    }

    /// Log marks of nodes 1–3 (see [`Trio::fault_lines`]).
    fn marks(&self) -> Marks {
        self.k
            .iter()
            .map(|(id, k)| (*id, self.lab.node(*k).log_len()))
            .collect()
    }

    /// Lines node `id` logged between the marks `from` and `to`, without the per-client
    /// activation events: (counted lines, activation events, the counted lines themselves).
    fn fault_lines(&self, id: u64, from: &Marks, to: &Marks) -> (usize, usize, Vec<String>) {
        let lines = self.lab.node(self.k[&id]).log_since(from[&id]);
        let lines = &lines[..(to[&id] - from[&id]).min(lines.len())];
        let (events, other): (Vec<&String>, Vec<&String>) =
            lines.iter().partition(|l| l.contains(ACTIVATION_EVENT));
        (
            other.len(),
            events.len(),
            other.into_iter().cloned().collect(),
        )
    }

    /// Check each node's log volume between `from` and `to` against [`LINE_BOUND`].
    fn check_lines(&self, ck: &mut Checks, from: &Marks, to: &Marks) {
        for id in 1..=3 {
            let (n, events, lines) = self.fault_lines(id, from, to);
            ck.check(
                &format!("node {id} logged at most {LINE_BOUND} lines during the fault"),
                n <= LINE_BOUND,
                format!(
                    "{n} lines (+{events} activation events); most frequent: {}",
                    frequent(&lines)
                ),
            );
        }
    }

    /// After a fault healed: exactly one leader, applied indexes together, every acknowledged
    /// CMID listed exactly once by every node.
    async fn check_converged(&self, ck: &mut Checks, acked: &[Guid]) {
        let ids = [1, 2, 3];
        let one = poll(LONG, || async move {
            let g = self.leader_gauges(&ids).await;
            let sum: f64 = g.values().map(|v| v.unwrap_or(0.0)).sum();
            if sum == 1.0 && g.values().all(Option::is_some) {
                Ok(())
            } else {
                Err(format!("kmsd_raft_is_leader per node: {g:?}"))
            }
        })
        .await;
        ck.result("exactly one leader after heal", one);

        let applied = poll(LONG, || async move {
            let mut v = BTreeMap::new();
            for id in ids {
                v.insert(id, self.metric(id, APPLIED).await?);
            }
            let max = v.values().cloned().fold(f64::MIN, f64::max);
            let min = v.values().cloned().fold(f64::MAX, f64::min);
            if max - min <= APPLIED_BOUND && min > 0.0 {
                Ok(v)
            } else {
                Err(format!("kmsd_raft_applied_index per node: {v:?}"))
            }
        })
        .await;
        // A node that did not catch up cannot list everything: do not wait long for it.
        let list_limit = if applied.is_ok() {
            LONG
        } else {
            Duration::from_secs(5)
        };
        if let Some(v) = ck.result(
            &format!("applied indexes within {APPLIED_BOUND} of each other"),
            applied,
        ) {
            ck.note("applied indexes", format!("{v:?}"));
        }

        let want: BTreeSet<String> = acked
            .iter()
            .map(|g| g.to_string().to_ascii_lowercase())
            .collect();
        for id in ids {
            let grpc: SocketAddr = self.grpc(id).parse().expect("grpc addr");
            let want = &want;
            let listed = poll(list_limit, || async move {
                let seen = listed_cmids(grpc).await?;
                let missing: Vec<&String> =
                    want.iter().filter(|c| !seen.contains_key(*c)).collect();
                if missing.is_empty() {
                    Ok(seen)
                } else {
                    Err(format!(
                        "{} of {} acknowledged CMIDs missing, e.g. {:?}",
                        missing.len(),
                        want.len(),
                        &missing[..missing.len().min(3)]
                    ))
                }
            })
            .await;
            if let Some(seen) = ck.result(
                &format!("node {id} lists all {} acknowledged CMIDs", want.len()),
                listed,
            ) {
                let twice: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
                ck.check(
                    &format!("node {id} lists each CMID once"),
                    twice.is_empty(),
                    format!("listed more than once: {twice:?}"),
                );
            }
        }
    }
}

/// The last `n` lines of `lines`.
fn tail(lines: &[String], n: usize) -> String {
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The three most frequent messages (JSON `message` field) among `lines`, with counts.
fn frequent(lines: &[String]) -> String {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for l in lines {
        let msg = serde_json::from_str::<serde_json::Value>(l)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| l.chars().take(80).collect());
        *by.entry(msg).or_default() += 1;
    }
    let mut v: Vec<(String, usize)> = by.into_iter().collect();
    v.sort_by_key(|x| std::cmp::Reverse(x.1));
    v.truncate(3);
    format!("{v:?}")
}

/// The log lines of `lines` at level WARN or ERROR (a few, for the report).
fn warnings(lines: &[String], n: usize) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
        .take(n)
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Clients

/// Acknowledged activations per answering node.
fn per_node(r: &LoadResult) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for (_, i) in &r.acked {
        // The load's addresses are those of nodes 1, 2, 3 in that order.
        *m.entry(*i as u64 + 1).or_default() += 1;
    }
    m
}

/// Report what the clients saw and check that none was refused.
fn check_load(ck: &mut Checks, r: &LoadResult) {
    ck.note(
        "clients",
        format!(
            "{} acknowledged (per answering node {:?}), {} unreachable attempts moved on",
            r.acked.len(),
            per_node(r),
            r.skipped
        ),
    );
    ck.check(
        "no client refused or left unanswered",
        r.failures.is_empty(),
        format!(
            "{} failed, e.g. {:?}",
            r.failures.len(),
            &r.failures[..r.failures.len().min(3)]
        ),
    );
}

/// Wait for `more` further acknowledged activations, stop the clients and check what they saw.
async fn stop_load(ck: &mut Checks, load: Load, more: usize) -> LoadResult {
    load.wait_more(more, LONG).await;
    let r = load.finish().await;
    check_load(ck, &r);
    r
}

impl Trio {
    /// The end of a scenario: [`stop_load`], the log volume between the marks `fault` (if
    /// given), convergence on every acknowledged CMID and `extra`, then every check reported.
    async fn conclude(
        &self,
        mut ck: Checks,
        load: Load,
        more: usize,
        fault: Option<(&Marks, &Marks)>,
        extra: Vec<Guid>,
    ) {
        let r = stop_load(&mut ck, load, more).await;
        if let Some((from, to)) = fault {
            self.check_lines(&mut ck, from, to);
        }
        let mut all = r.cmids();
        all.extend(extra);
        self.check_converged(&mut ck, &all).await;
        ck.finish();
    }
}

/// Sleep until `since + total`.
async fn sleep_until(since: Instant, total: Duration) {
    if let Some(left) = total.checked_sub(since.elapsed()) {
        tokio::time::sleep(left).await;
    }
}

/// The node ids of 1, 2, 3 other than `of`.
fn others(of: u64) -> Vec<u64> {
    [1, 2, 3].into_iter().filter(|id| *id != of).collect()
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// (a) A follower is killed (kill -9) for 60 s, then restarted on the same data. During the
/// outage the leader marks the peer down, stays quiet (log lines counted, CPU time printed),
/// and the clients of the dead node move on to the others; afterwards everything converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_down_60s() {
    let Some((_serial, mut t, mut ck, leader)) = scenario(3, "a follower down").await else {
        return;
    };
    let f = others(leader)[0];
    let peer_up = format!("kmsd_peer_up{{peer=\"{f}\"}}");
    ck.note(
        "before the kill",
        format!(
            "leader {leader}, follower {f}; leader's {peer_up} = {:?}",
            t.series(leader, &peer_up).await
        ),
    );
    let load = t.load(6).await;

    let from = t.marks();
    let cpu0 = t.lab.node(t.k[&leader]).cpu_ticks();
    let kf = t.k[&f];
    t.lab.node_mut(kf).kill9();
    let down = Instant::now();
    let (tr, ps) = (&t, &peer_up);
    let seen = poll(Duration::from_secs(30), || async move {
        match tr.series(leader, ps).await? {
            Some(v) if v == 0.0 => Ok(v),
            other => Err(format!(
                "{ps} on the leader = {other:?} (None: not exported)"
            )),
        }
    })
    .await;
    ck.result(&format!("leader's {peer_up} is 0 during the outage"), seen);
    sleep_until(down, Duration::from_secs(60)).await;
    let to = t.marks();
    let cpu = t.lab.node(t.k[&leader]).cpu_ticks().saturating_sub(cpu0);
    let (lines, events, text) = t.fault_lines(leader, &from, &to);
    ck.note(
        "leader during the 60 s outage",
        format!(
            "{lines} log lines (+{events} activation events), {cpu} CPU ticks (utime+stime, \
             ~{:.2} s at 100 Hz); warnings: {:?}",
            cpu as f64 / 100.0,
            warnings(&text, 3)
        ),
    );
    ck.note(
        "leader still leads at the end of the outage",
        format!("{:?}", t.leader_gauges(&others(f)).await),
    );
    t.check_lines(&mut ck, &from, &to);

    t.lab.node_mut(kf).restart();
    let back = t.wait_serving(&[f], LONG).await;
    ck.result("restarted follower back in quorum", back);
    t.conclude(ck, load, 6, None, Vec::new()).await;
}

/// (b) The leader is cut off from both followers (iptables) for ~20 s while clients activate
/// on all three nodes: the two elect a new leader, the old one steps down and stops saying it
/// is in quorum, and after the heal it catches up by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_leader_cut_off() {
    let Some((_serial, t, mut ck, old)) = scenario(3, "b leader cut off").await else {
        return;
    };
    let rest = others(old);
    let load = t.load(6).await;

    let from = t.marks();
    t.lab.cut(t.host(old), &[t.host(rest[0]), t.host(rest[1])]);
    let cut = Instant::now();
    ck.note(
        "cut",
        format!(
            "old leader {old}: {}",
            t.lab.rules(t.host(old)).trim().replace('\n', "; ")
        ),
    );
    let new = t.leader_among(&rest, ELECTIONS * 2).await;
    if let Some(n) = ck.result(&format!("a new leader among {rest:?}"), new) {
        ck.note("new leader", n);
    }
    let tr = &t;
    let stepped = poll(ELECTIONS, || async move {
        match tr.metric(old, IS_LEADER).await? {
            0.0 => Ok(()),
            v => Err(format!("old leader {old}: kmsd_raft_is_leader = {v}")),
        }
    })
    .await;
    ck.result("the old leader's kmsd_raft_is_leader drops to 0", stepped);
    let ready = poll(ELECTIONS, || async move {
        match tr.readyz(old).await {
            Some((code, body)) if !body.starts_with("ok: in quorum") => Ok((code, body)),
            other => Err(format!("old leader {old} /readyz: {other:?}")),
        }
    })
    .await;
    if let Some((code, body)) = ck.result(
        "the old leader's /readyz stops saying \"ok: in quorum\"",
        ready,
    ) {
        ck.note(
            "old leader /readyz during the cut",
            format!("{code} {}", body.trim()),
        );
    }
    sleep_until(cut, Duration::from_secs(20)).await;
    ck.note(
        "old leader /readyz at the end of the cut",
        format!("{:?}", t.readyz(old).await),
    );
    let to = t.marks();
    t.lab.heal(t.host(old));

    t.conclude(ck, load, 6, Some((&from, &to)), Vec::new())
        .await;
}

/// (c) A follower is cut off from both peers for 30 s, then healed: thanks to pre-vote the
/// leader does not change and the healthy nodes' term does not move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_follower_cut_off_prevote() {
    let Some((_serial, mut t, mut ck, leader)) = scenario(3, "c follower cut off").await else {
        return;
    };
    let (f, h) = (others(leader)[0], others(leader)[1]);
    let load = t.load(6).await;
    let mut before = BTreeMap::new();
    for id in [1, 2, 3] {
        before.insert(id, t.metric(id, TERM).await.expect("term"));
    }

    let from = t.marks();
    t.lab.cut(t.host(f), &[t.host(leader), t.host(h)]);
    tokio::time::sleep(Duration::from_secs(30)).await;
    ck.note(
        "cut-off follower after 30 s",
        format!(
            "term {:?}, /readyz {:?}",
            t.metric(f, TERM).await,
            t.readyz(f).await
        ),
    );
    let to = t.marks();
    t.lab.heal(t.host(f));
    let back = t.wait_serving(&[f], LONG).await;
    ck.result("the follower back in quorum", back);
    let after_leader = t.leader_among(&[1, 2, 3], LONG).await;
    ck.check(
        "the leader did not change",
        after_leader == Ok(leader),
        format!("before {leader}, after {after_leader:?}"),
    );
    let mut after = BTreeMap::new();
    for id in [1, 2, 3] {
        after.insert(id, t.metric(id, TERM).await.ok());
    }
    for id in [leader, h] {
        ck.check(
            &format!("node {id}'s term did not move"),
            after[&id] == Some(before[&id]),
            format!("before {}, after {:?}", before[&id], after[&id]),
        );
    }
    ck.note("terms", format!("before {before:?}, after {after:?}"));

    t.conclude(ck, load, 6, Some((&from, &to)), Vec::new())
        .await;
}

/// Fill `dir` with a filler file until a write fails (the filesystem is full); returns the
/// bytes written.
fn fill(dir: &std::path::Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).expect("filler file");
    let chunk = vec![0x5au8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let _ = f.sync_all();
    written
}

/// (d) One node's data directory on a 16 MB tmpfs that is then filled up: the node says so
/// (`/readyz` 503 with a reason, `kmsctl health` fails, `kmsd_storage_ok` 0) but its clients
/// are still answered; once space is freed it recovers (restarted if it does not by itself)
/// and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_disk_full() {
    let _serial = SERIAL.lock().await;
    let Some(lab) = lab(3) else {
        return;
    };
    let mut t = Trio::start(
        lab,
        |lab, id| {
            if id == 3 {
                lab.tmpfs("tmpfs3", 16).join("node3")
            } else {
                lab.dir().join(format!("node{id}"))
            }
        },
        |_| None,
    );
    let mut ck = Checks::new("d disk full");
    let leader = t.up().await;
    if leader == 3 {
        // The full disk is a follower's: move leadership away first.
        let (code, _, err) = kmsctl(&["--server", &t.grpc(3), "leader", "transfer", "1"]).await;
        ck.note(
            "leader transfer 3 -> 1",
            format!("exit {code} {}", err.trim()),
        );
        let l = t.leader_among(&[1, 2, 3], LONG).await;
        ck.note("leader now", format!("{l:?}"));
    }
    ck.note(
        "node 3 kmsd_storage_ok before",
        format!("{:?}", t.series(3, STORAGE_OK).await),
    );
    let load = t.load(6).await;

    let from = t.marks();
    let mount = t.lab.dir().join("tmpfs3");
    let filled = fill(&mount);
    ck.note(
        "filler",
        format!("{filled} bytes until the 16 MB tmpfs was full"),
    );
    // Clients of node 3 (only node 3, no failover) while its disk is full.
    let p = windows_client();
    let mut answers = Vec::new();
    let mut detected = None;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(40) {
        let who = machine(&p);
        answers.push(match attempt(t.kms(3), &p, &who).await {
            Attempt::Granted(_) => Ok(who.cmid),
            other => Err(format!("{other:?}")),
        });
        if detected.is_none() {
            let ok = t.series(3, STORAGE_OK).await;
            let ready = t.readyz(3).await;
            if matches!(ok, Ok(Some(v)) if v == 0.0) || matches!(ready, Some((503, _))) {
                detected = Some(answers.len());
            }
        } else if answers.len() >= detected.unwrap_or(0) + 10 {
            break;
        }
        tokio::time::sleep(PACE).await;
    }
    let storage_ok = t.series(3, STORAGE_OK).await;
    ck.check(
        "node 3 kmsd_storage_ok is 0 while its disk is full",
        matches!(storage_ok, Ok(Some(v)) if v == 0.0),
        format!("{storage_ok:?} (None: not exported)"),
    );
    let ready = t.readyz(3).await;
    ck.check(
        "node 3 /readyz is 503 with a reason",
        matches!(&ready, Some((503, body)) if !body.trim().is_empty()),
        format!("{ready:?}"),
    );
    let (code, out, err) = kmsctl(&["-o", "json", "--server", &t.grpc(3), "health"]).await;
    ck.check(
        "kmsctl health --server <node 3> exits non-zero",
        code != 0,
        format!("exit {code}: {} {}", out.trim(), err.trim()),
    );
    let refused: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    ck.check(
        "node 3's clients are answered while its disk is full",
        refused.is_empty() && !answers.is_empty(),
        format!(
            "{} of {} answered; failures e.g. {:?}; 0xC004F041 among them: {}",
            answers.len() - refused.len(),
            answers.len(),
            &refused[..refused.len().min(3)],
            refused.iter().any(|e| e.contains("C004F041"))
        ),
    );
    let to = t.marks();
    ck.note(
        "node 3 warnings while full",
        format!("{:?}", warnings(&t.fault_lines(3, &from, &to).2, 3)),
    );

    std::fs::remove_file(mount.join("filler")).expect("free the space");
    let tr = &t;
    let recovered = poll(Duration::from_secs(30), || async move {
        let ok = tr.series(3, STORAGE_OK).await?;
        match (ok, tr.readyz(3).await) {
            (Some(v), Some((200, b))) if v == 1.0 && b.starts_with("ok") => Ok(()),
            other => Err(format!("kmsd_storage_ok, /readyz: {other:?}")),
        }
    })
    .await;
    ck.note(
        "node 3 recovered without a restart",
        format!("{recovered:?}"),
    );
    if recovered.is_err() {
        let k3 = t.k[&3];
        let node = t.lab.node_mut(k3);
        if node.is_running() {
            let st = node.stop();
            ck.note("node 3 stopped (SIGTERM)", st);
        } else {
            ck.note("node 3", "had exited by itself");
        }
        t.lab.node_mut(k3).restart();
        let back = t.wait_serving(&[3], LONG).await;
        ck.result("node 3 back in quorum after a restart", back);
    }
    let acked_at_3: Vec<Guid> = answers.iter().filter_map(|a| a.clone().ok()).collect();
    t.conclude(ck, load, 6, Some((&from, &to)), acked_at_3)
        .await;
}

/// (e) Node 3 runs two hours ahead (libfaketime `+2h`): the cluster still forms and counts;
/// what node 3's clients see (count, ePID) and what the inventory records for them
/// (`last_seen`) is printed for docs/testing-faults.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_clock_skew_2h() {
    let _serial = SERIAL.lock().await;
    let Some(lab) = lab(3) else {
        return;
    };
    if crate::netns::faketime_lib().is_none() {
        eprintln!("SKIPPED: fault tier: libfaketime not installed (scripts/install-test-deps.sh)");
        return;
    }
    let mut t = Trio::start(
        lab,
        |lab, id| lab.dir().join(format!("node{id}")),
        |id| (id == 3).then_some("+2h"),
    );
    let mut ck = Checks::new("e clock skew");
    let up = t.wait_serving(&[1, 2, 3], LONG).await;
    if ck
        .result("the cluster forms with node 3 two hours ahead", up)
        .is_none()
    {
        ck.finish();
        return;
    }
    ck.note(
        "leader",
        format!("{:?}", t.leader_among(&[1, 2, 3], LONG).await),
    );
    let load = t.load(30).await;
    // One client at each node, one after the other: counts follow each other and one ePID.
    let p = windows_client();
    let mut seen = Vec::new();
    for id in [1, 2, 3] {
        let who = machine(&p);
        let a = match attempt(t.kms(id), &p, &who).await {
            Attempt::Granted(v) => format!("Granted, count {}", v.response.current_count),
            other => format!("{other:?}"),
        };
        seen.push((id, who.cmid, a));
    }
    let r = stop_load(&mut ck, load, 0).await;
    for (id, cmid, a) in &seen {
        ck.check(
            &format!("a client of node {id} is activated"),
            a.starts_with("Granted"),
            a,
        );
        let (code, out, err) = kmsctl(&[
            "-o",
            "json",
            "--server",
            &t.grpc(1),
            "clients",
            "show",
            &cmid.to_string(),
        ])
        .await;
        let rec: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        let rec = &rec["records"][0];
        ck.note(
            &format!("inventory record of the client of node {id}"),
            format!(
                "exit {code} {} first_seen {} last_seen {} live {} last_node {}",
                err.trim(),
                rec["first_seen"],
                rec["last_seen"],
                rec["live"],
                rec["last_node"]
            ),
        );
    }
    let mut all = r.cmids();
    all.extend(seen.iter().map(|(_, c, _)| *c));
    t.check_converged(&mut ck, &all).await;
    ck.finish();
}

/// (f) An impostor: a second kmsd with a follower's node id, on its own host with an empty
/// data directory and the same `--initial-cluster`. It must never lead or report ready,
/// and the real cluster keeps exactly one leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_impostor_with_an_existing_id() {
    let Some((_serial, mut t, mut ck, leader)) = scenario(4, "f impostor").await else {
        return;
    };
    let victim = others(leader)[0];
    let load = t.load(6).await;

    let from = t.marks();
    let dir = t.lab.dir().join("impostor");
    let flags = node_flags(victim, &t.initial);
    let imp = t.lab.spawn(3, &dir, &flags, None);
    let imp_http = t.lab.node(imp).http();
    ck.note(
        "impostor",
        format!(
            "node id {victim} at {} (the real one at {})",
            t.lab.host_ip(3),
            t.grpc(victim)
        ),
    );
    let mut imp_leader = BTreeSet::new();
    let mut imp_ready = BTreeSet::new();
    let mut real_leaders = BTreeSet::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        imp_leader.insert(format!("{:?}", metric(imp_http, IS_LEADER).await));
        imp_ready.insert(format!("{:?}", http_get(imp_http, "/readyz").await));
        let g = t.leader_gauges(&[1, 2, 3]).await;
        let leaders: Vec<u64> = g
            .iter()
            .filter(|(_, v)| **v == Some(1.0))
            .map(|(id, _)| *id)
            .collect();
        real_leaders.insert(format!("{leaders:?}"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ck.check(
        "the impostor never leads",
        !imp_leader.contains("Some(1.0)"),
        format!("kmsd_raft_is_leader seen: {imp_leader:?}"),
    );
    ck.check(
        "the impostor never reports ready",
        !imp_ready.iter().any(|r| r.starts_with("Some((200")),
        format!("/readyz seen: {imp_ready:?}"),
    );
    ck.check(
        "the real cluster never had two leaders",
        real_leaders.iter().all(|l| !l.contains(',')),
        format!("leaders seen: {real_leaders:?}"),
    );
    let imp_running = t.lab.node_mut(imp).is_running();
    let imp_log = t.lab.node(imp).log_lines();
    ck.note(
        "impostor",
        format!(
            "still running: {imp_running}; {} log lines; warnings {:?}",
            imp_log.len(),
            warnings(&imp_log, 3)
        ),
    );
    if imp_running {
        t.lab.node_mut(imp).kill9();
    }
    let to = t.marks();

    t.conclude(ck, load, 6, Some((&from, &to)), Vec::new())
        .await;
}

/// (g) Three new nodes whose `--initial-cluster` lists differ must not form a cluster, and an
/// error line names both lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g_mismatched_initial_cluster() {
    let _serial = SERIAL.lock().await;
    let Some(mut lab) = lab(3) else {
        return;
    };
    let mut ck = Checks::new("g mismatched initial-cluster");
    let ip = |i: usize| lab.host_ip(i);
    let right = initial_cluster(&lab);
    let lists = [
        right.clone(),
        // A fourth member nobody else names (its address exists in no namespace).
        format!("{right},4={}:{GRPC_PORT}", ip(3)),
        // Node 1 on another port.
        format!(
            "1={}:1699,2={}:{GRPC_PORT},3={}:{GRPC_PORT}",
            ip(0),
            ip(1),
            ip(2)
        ),
    ];
    let mut k = Vec::new();
    for (i, list) in lists.iter().enumerate() {
        let id = i as u64 + 1;
        let dir = lab.dir().join(format!("node{id}"));
        k.push(lab.spawn(i, &dir, &node_flags(id, list), None));
    }
    let mut leaders = BTreeSet::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        for (i, &n) in k.iter().enumerate() {
            if let Some(1.0) = metric(lab.node(n).http(), IS_LEADER).await {
                leaders.insert(i + 1);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ck.check(
        "no node became leader",
        leaders.is_empty(),
        format!("nodes seen leading: {leaders:?}"),
    );
    let mut named = Vec::new();
    for (i, &n) in k.iter().enumerate() {
        let running = lab.node_mut(n).is_running();
        let log = lab.node(n).log_lines();
        let own = &lists[i];
        let both = log.iter().find(|l| {
            l.contains(own.as_str())
                && lists
                    .iter()
                    .enumerate()
                    .any(|(j, other)| j != i && l.contains(other.as_str()))
        });
        let mentions: Vec<&String> = log
            .iter()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                l.contains("initial") && (l.contains("mismatch") || l.contains("differ"))
            })
            .take(2)
            .collect();
        ck.note(
            &format!("node {} (list {own})", i + 1),
            format!(
                "running {running}; {} log lines; a line naming both lists: {both:?}; \
                 mismatch lines: {mentions:?}; warnings {:?}",
                log.len(),
                warnings(&log, 2)
            ),
        );
        if both.is_some() {
            named.push(i + 1);
        }
    }
    ck.check(
        "an error line names both initial-cluster lists",
        !named.is_empty(),
        format!("nodes with such a line: {named:?}"),
    );
    ck.finish();
}

/// (h) A rolling restart under load (followers first, the leader last): SIGTERM, start again,
/// wait for `/readyz` "ok: in quorum". No client is refused and no acknowledged record lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h_rolling_restart_under_load() {
    let Some((_serial, mut t, mut ck, leader)) = scenario(3, "h rolling restart").await else {
        return;
    };
    let mut order = others(leader);
    order.push(leader);
    let load = t.load(6).await;

    for id in order {
        let k = t.k[&id];
        let st = t.lab.node_mut(k).stop();
        ck.check(
            &format!("node {id} exits cleanly on SIGTERM"),
            st.success(),
            st,
        );
        // Down for a few seconds, as during an upgrade: its clients move on meanwhile.
        tokio::time::sleep(Duration::from_secs(3)).await;
        t.lab.node_mut(k).restart();
        let back = t.wait_serving(&[id], LONG).await;
        ck.result(&format!("node {id} back in quorum"), back);
        load.wait_more(15, LONG).await;
    }
    t.conclude(ck, load, 0, None, Vec::new()).await;
}
