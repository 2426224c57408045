//! Builds the node's [`ClusterView`]: membership from Raft, addresses and DNS weights from the
//! replicated node directory, health from direct probes of every peer about once a second.
//!
//! A peer is healthy while it answered a probe within `unhealthy_after` (default 5 s); the
//! local node is always healthy (a node cut off from every peer may be the only one serving).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kms_core::{ClusterView, MemberView};
use kms_store::StateMachineStore;
use kms_store::openraft::async_runtime::watch::WatchReceiver;
use kms_store::types::{NodeInfo, Raft, RaftMetrics, ServerState};
use tokio::sync::watch;

/// Boxed future used by [`Probe`].
pub type ProbeFuture = Pin<Box<dyn Future<Output = Option<ProbeAnswer>> + Send>>;

/// What a peer said in answer to a health probe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeAnswer {
    /// The peer's last applied log index, when it reports one.
    pub applied_index: Option<u64>,
    /// The peer's Raft core runs and it is a member of the membership it applied: it can serve
    /// as one of the cluster's nodes (false: answer, but do not advertise it).
    pub serving: bool,
    /// The peer's store holds a cluster.
    pub initialized: bool,
    /// The leader the peer knows.
    pub leader_id: Option<u64>,
    /// The peer's `--initial-cluster`, normalized (see [`normalized_initial_cluster`]); empty
    /// when it has none or does not say.
    pub initial_cluster: Option<std::sync::Arc<str>>,
}

/// `--initial-cluster` as nodes compare it: `id=addr` pairs by ascending id, comma-separated,
/// addresses lower-cased.
pub fn normalized_initial_cluster(list: &std::collections::BTreeMap<u64, String>) -> String {
    list.iter()
        .map(|(id, addr)| format!("{id}={}", addr.to_ascii_lowercase()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Checks whether a peer answers (the gRPC transport implements it).
pub trait Probe: Send + Sync + 'static {
    /// `Some` when `target` (and nobody else) answered a health probe.
    fn probe(&self, target: u64, info: NodeInfo) -> ProbeFuture;
}

/// A prober for nodes without a transport: every peer is down.
#[derive(Debug, Default)]
pub struct NoProbe;

impl Probe for NoProbe {
    fn probe(&self, _target: u64, _info: NodeInfo) -> ProbeFuture {
        Box::pin(async { None })
    }
}

/// What this node knows of each peer's reachability, from its health probes.
#[derive(Debug, Default, Clone)]
pub(crate) struct Health {
    peers: Arc<Mutex<HashMap<u64, PeerHealth>>>,
}

/// One peer's probe record.
#[derive(Debug, Clone, Copy, Default)]
struct PeerHealth {
    /// Last answered probe.
    last_ok: Option<Instant>,
    /// When the peer stopped answering (first failed probe after an answer, or first probe),
    /// while it does not answer.
    down_since: Option<Instant>,
    /// The outage was logged (the peer stayed silent past `unhealthy_after`).
    reported: bool,
    /// The peer's last applied index, from its last answer.
    applied: Option<u64>,
    /// On the leader: replication to the peer is stalled.
    stalled: bool,
    /// The peer's last answer said it can serve (Raft core running, a member, ready): only
    /// then is it healthy — advertised in DNS and shown as healthy.
    serving: bool,
}

/// A peer's state as the status, metrics and readiness show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerContact {
    /// The peer answered a probe within `unhealthy_after`.
    pub up: bool,
    /// Time since the peer last answered (`None`: never since this node started).
    pub since_contact: Option<Duration>,
    /// On the leader: replication to the peer makes no progress although it answers.
    pub stalled: bool,
}

/// A change of a peer's reachability worth one log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    /// The peer has not answered for `unhealthy_after`.
    Down,
    /// The peer answers again after an outage of this length.
    Up(Duration),
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, PeerHealth>> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Record one probe of peer `id` (its applied index when it answered); returns the
    /// transition to log, if this probe makes one.
    pub(crate) fn observe(
        &self,
        id: u64,
        answer: Option<(Option<u64>, bool)>,
        unhealthy_after: Duration,
    ) -> Option<Transition> {
        let now = Instant::now();
        let mut peers = self.lock();
        let p = peers.entry(id).or_default();
        match answer {
            Some((applied, serving)) => {
                p.last_ok = Some(now);
                p.applied = applied;
                p.serving = serving;
                let was = p.down_since.take();
                let reported = std::mem::take(&mut p.reported);
                was.filter(|_| reported).map(|t| Transition::Up(now - t))
            }
            None => {
                let since = *p.down_since.get_or_insert(now);
                // Measured from the last answer when there was one: a peer is down once it has
                // been silent for `unhealthy_after`, however the probes fell.
                let silent = p.last_ok.map_or(now - since, |t| now - t);
                if !p.reported && silent >= unhealthy_after {
                    p.reported = true;
                    Some(Transition::Down)
                } else {
                    None
                }
            }
        }
    }

    /// Answered within `within` and said it can serve.
    pub(crate) fn is_healthy(&self, id: u64, within: Duration) -> bool {
        self.lock()
            .get(&id)
            .is_some_and(|p| p.serving && p.last_ok.is_some_and(|t| t.elapsed() <= within))
    }

    /// Answered within `within` (whether or not it can serve).
    fn answers(&self, id: u64, within: Duration) -> bool {
        self.lock()
            .get(&id)
            .and_then(|p| p.last_ok)
            .is_some_and(|t| t.elapsed() <= within)
    }

    /// Peer `id`'s state for status and metrics.
    pub(crate) fn contact(&self, id: u64, within: Duration) -> PeerContact {
        let p = self.lock().get(&id).copied().unwrap_or_default();
        PeerContact {
            up: p.last_ok.is_some_and(|t| t.elapsed() <= within),
            since_contact: p.last_ok.map(|t| t.elapsed()),
            stalled: p.stalled,
        }
    }

    fn set_stalled(&self, stalled: &std::collections::HashSet<u64>) {
        for (id, p) in self.lock().iter_mut() {
            p.stalled = stalled.contains(id);
        }
    }

    /// The largest applied index among peers that answered within `within` (the leader's
    /// progress as far as this node can tell).
    pub(crate) fn peer_applied(&self, id: u64, within: Duration) -> Option<u64> {
        self.lock()
            .get(&id)
            .filter(|p| p.last_ok.is_some_and(|t| t.elapsed() <= within))
            .and_then(|p| p.applied)
    }

    /// Forget peers that are no longer members.
    fn retain(&self, members: &[u64]) {
        self.lock().retain(|id, _| members.contains(id));
    }
}

/// Build the view now.
pub(crate) fn build(
    raft: &Raft,
    sm: &StateMachineStore,
    health: &Health,
    local_id: u64,
    unhealthy_after: Duration,
) -> ClusterView {
    let m = raft.metrics().borrow_watched().clone();
    let membership = m.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let (directory, has_identity) = sm.read(|s| (s.nodes().clone(), s.identity().is_some()));
    // This node advertises itself while it can serve: its Raft core runs and it has the
    // cluster's host identity (a node cut off from every peer still serves, degraded).
    let local_serving = m.running_state.is_ok() && has_identity;
    let members = membership
        .nodes()
        .map(|(id, info)| {
            let dir = directory.get(id);
            let (host, kms_port) = match dir {
                Some(d) => (d.host.clone(), d.kms_port),
                None => split_host_port(&info.kms_addr),
            };
            MemberView {
                id: *id,
                name: dir
                    .map(|d| d.name.clone())
                    .unwrap_or_else(|| info.name.clone()),
                host,
                kms_port,
                grpc_addr: info.grpc_addr.clone(),
                dns_priority: dir.map(|d| d.dns_priority).unwrap_or(0),
                dns_weight: dir.map(|d| d.dns_weight).unwrap_or(100),
                voter: voters.contains(id),
                healthy: if *id == local_id {
                    local_serving
                } else {
                    health.is_healthy(*id, unhealthy_after)
                },
            }
        })
        .collect();
    ClusterView {
        local_id,
        leader_id: m.current_leader,
        term: m.current_term,
        members,
        generation: 0,
    }
}

/// `host:port` → (host without brackets, port); port 0 when absent or invalid.
pub(crate) fn split_host_port(addr: &str) -> (String, u16) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_start_matches('[').trim_end_matches(']').to_string(),
            p.parse().unwrap_or(0),
        ),
        None => (addr.to_string(), 0),
    }
}

/// What the view task works with.
pub(crate) struct ViewTask {
    pub raft: Raft,
    pub sm: StateMachineStore,
    pub prober: Arc<dyn Probe>,
    pub local_id: u64,
    pub unhealthy_after: Duration,
    pub tx: watch::Sender<ClusterView>,
    pub health: Health,
    pub writer: crate::writer::Writer,
}

/// Probe every peer about once a second and publish the view when it changes.
pub(crate) async fn run(task: ViewTask, mut stop: watch::Receiver<bool>) {
    let ViewTask {
        raft,
        sm,
        prober,
        local_id,
        unhealthy_after,
        tx,
        health,
        writer,
    } = task;
    let mut raft_stopped = false;
    let mut cut_off = false;
    let mut iv = tokio::time::interval(Duration::from_millis(1000));
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut generation = 0u64;
    let mut stalls = Stalls::default();
    loop {
        tokio::select! {
            _ = iv.tick() => {}
            _ = stop.changed() => return,
        }
        let peers: Vec<(u64, NodeInfo)> = {
            let m = raft.metrics().borrow_watched().clone();
            m.membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != local_id)
                .map(|(id, info)| (*id, info.clone()))
                .collect()
        };
        let ids: Vec<u64> = peers.iter().map(|(id, _)| *id).collect();
        let probes = peers.into_iter().map(|(id, info)| {
            let prober = prober.clone();
            async move {
                let answer =
                    tokio::time::timeout(Duration::from_millis(900), prober.probe(id, info))
                        .await
                        .unwrap_or(None);
                (id, answer)
            }
        });
        let mut returned = Vec::new();
        let mut named: HashMap<u64, usize> = HashMap::new();
        for (id, answer) in futures::future::join_all(probes).await {
            if let Some(l) = answer.as_ref().and_then(|a| a.leader_id) {
                *named.entry(l).or_default() += 1;
            }
            // A peer that answers but cannot serve (its Raft core stopped, it is not a member,
            // or not ready) is reachable but not healthy: it is not advertised.
            let answer = answer.map(|a| (a.applied_index, a.serving));
            match health.observe(id, answer, unhealthy_after) {
                Some(Transition::Down) => tracing::warn!(
                    event_id = crate::EVENT_PEER_UNREACHABLE,
                    peer = id,
                    after_secs = unhealthy_after.as_secs_f64(),
                    "peer unreachable; retrying with backoff (logged again when it answers)"
                ),
                Some(Transition::Up(outage)) => {
                    tracing::info!(
                        event_id = crate::EVENT_PEER_REACHABLE,
                        peer = id,
                        outage_secs = (outage.as_secs_f64() * 10.0).round() / 10.0,
                        "peer reachable again"
                    );
                    returned.push(id);
                }
                None => {}
            }
        }
        health.retain(&ids);
        // The leader most peers name (ties: the lowest id), for writes while the local Raft
        // core is stopped.
        let peer_leader = named
            .into_iter()
            .filter(|(l, _)| *l != local_id)
            .max_by_key(|(l, n)| (*n, std::cmp::Reverse(*l)))
            .map(|(l, _)| l);
        writer.set_peer_leader(peer_leader);
        let metrics = raft.metrics().borrow_watched().clone();
        if let Err(e) = &metrics.running_state
            && !raft_stopped
        {
            raft_stopped = true;
            tracing::error!(
                event_id = crate::EVENT_STORAGE_FAILED,
                error = %e,
                "raft core stopped: this node takes no writes (not ready; clients are \
                 forwarded to the leader); it restarts in place once its data directory takes \
                 writes again"
            );
        }
        let now_cut_off = crate::node::leader_without_quorum(&metrics);
        if now_cut_off != cut_off {
            cut_off = now_cut_off;
            if cut_off {
                tracing::warn!(
                    event_id = crate::EVENT_QUORUM_LOST,
                    term = metrics.current_term,
                    "leader lost contact with its quorum: no longer acting as leader (writes \
                     are journaled until a leader is reachable)"
                );
            } else {
                tracing::info!(
                    event_id = crate::EVENT_QUORUM_LOST,
                    term = metrics.current_term,
                    "leader reached its quorum again"
                );
            }
        }
        if metrics.state == ServerState::Leader {
            // A peer that answers again is retried at once rather than after the rest of its
            // replication backoff; a reachable peer whose replication is stuck is reported and
            // nudged the same way.
            let stalled_now = stalls.check(&metrics, &health, unhealthy_after);
            returned.extend(stalled_now);
            health.set_stalled(&stalls.reported);
            if !returned.is_empty() {
                let _ = raft.trigger().reset_backoff(returned).await;
            }
        } else {
            stalls.clear();
            health.set_stalled(&stalls.reported);
        }
        let mut view = build(&raft, &sm, &health, local_id, unhealthy_after);
        let changed = {
            let cur = tx.borrow();
            cur.members != view.members || cur.leader_id != view.leader_id || cur.term != view.term
        };
        if changed {
            let (ids_before, ids_now): (Vec<u64>, Vec<u64>) = (
                tx.borrow().members.iter().map(|m| m.id).collect(),
                view.members.iter().map(|m| m.id).collect(),
            );
            if ids_before != ids_now {
                tracing::info!(
                    event_id = crate::EVENT_MEMBERSHIP,
                    members = %comma_list(&ids_now),
                    previous = %comma_list(&ids_before),
                    "cluster membership changed"
                );
            }
            if tx.borrow().members != view.members {
                generation += 1;
            }
            view.generation = generation;
            let _ = tx.send(view);
        }
    }
}

/// A peer whose replication makes no progress for this long while it answers probes is
/// reported as stalled.
pub(crate) const STALL_AFTER: Duration = Duration::from_secs(10);

/// The leader's watch over each peer's replication progress.
#[derive(Debug, Default)]
struct Stalls {
    /// Per peer: the matched index last seen and since when it has not moved while behind.
    progress: HashMap<u64, (u64, Instant)>,
    /// Peers reported as stalled (logged once per stall).
    reported: std::collections::HashSet<u64>,
}

impl Stalls {
    fn clear(&mut self) {
        self.progress.clear();
        self.reported.clear();
    }

    /// Peers that just became stalled: behind the leader's log, answering probes, and without
    /// progress for [`STALL_AFTER`]. Logs once per stall and once when it ends.
    fn check(&mut self, m: &RaftMetrics, health: &Health, unhealthy_after: Duration) -> Vec<u64> {
        let Some(replication) = m.replication.as_ref() else {
            self.clear();
            return Vec::new();
        };
        let last = m.last_log_index.unwrap_or(0);
        let now = Instant::now();
        let mut newly = Vec::new();
        for (id, matched) in replication.iter() {
            if *id == m.id {
                continue;
            }
            let matched = matched.as_ref().map(|l| l.index).unwrap_or(0);
            let entry = self.progress.entry(*id).or_insert((matched, now));
            if matched != entry.0 || matched >= last {
                *entry = (matched, now);
                if self.reported.remove(id) {
                    tracing::info!(
                        event_id = crate::EVENT_REPLICATION_STALLED,
                        peer = *id,
                        matched,
                        "replication to peer progresses again"
                    );
                }
                continue;
            }
            let stuck = now - entry.1;
            if stuck >= STALL_AFTER
                && health.answers(*id, unhealthy_after)
                && self.reported.insert(*id)
            {
                tracing::warn!(
                    event_id = crate::EVENT_REPLICATION_STALLED,
                    peer = *id,
                    matched,
                    last_log_index = last,
                    stuck_secs = stuck.as_secs(),
                    "replication to a reachable peer makes no progress; restarting its backoff"
                );
                newly.push(*id);
            }
        }
        self.progress
            .retain(|id, _| replication.iter().any(|(r, _)| r == id));
        newly
    }
}

/// Node ids as comma-separated text for log fields (`1,2,3`).
fn comma_list(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_reported_once_each_way() {
        let h = Health::default();
        let after = Duration::from_millis(30);
        assert_eq!(h.observe(2, Some((Some(5), true)), after), None);
        // Failed probes within `unhealthy_after` of the last answer: nothing yet.
        assert_eq!(h.observe(2, None, after), None);
        std::thread::sleep(after + Duration::from_millis(5));
        assert_eq!(h.observe(2, None, after), Some(Transition::Down));
        for _ in 0..10 {
            assert_eq!(h.observe(2, None, after), None, "logged once per outage");
        }
        assert!(!h.contact(2, after).up);
        match h.observe(2, Some((Some(9), true)), after) {
            Some(Transition::Up(outage)) => assert!(outage >= after, "{outage:?}"),
            other => panic!("expected Up, got {other:?}"),
        }
        assert_eq!(h.observe(2, Some((Some(10), true)), after), None);
        let c = h.contact(2, after);
        assert!(c.up && c.since_contact.is_some() && !c.stalled, "{c:?}");
        assert_eq!(h.peer_applied(2, after), Some(10));
    }

    #[test]
    fn a_blip_shorter_than_unhealthy_after_is_not_logged() {
        let h = Health::default();
        let after = Duration::from_secs(5);
        h.observe(3, Some((None, true)), after);
        assert_eq!(h.observe(3, None, after), None);
        assert_eq!(
            h.observe(3, Some((None, true)), after),
            None,
            "no Up without a Down"
        );
        assert!(h.is_healthy(3, after));
        // Reachable but not ready: up, yet not healthy (not advertised).
        assert_eq!(h.observe(3, Some((None, false)), after), None);
        assert!(h.contact(3, after).up && !h.is_healthy(3, after));
    }

    #[test]
    fn a_peer_never_seen_is_reported_after_unhealthy_after() {
        let h = Health::default();
        let after = Duration::from_millis(20);
        assert_eq!(h.observe(4, None, after), None);
        std::thread::sleep(after + Duration::from_millis(5));
        assert_eq!(h.observe(4, None, after), Some(Transition::Down));
        assert_eq!(h.contact(4, after).since_contact, None);
    }

    #[test]
    fn initial_cluster_lists_compare_normalized() {
        let a: std::collections::BTreeMap<u64, String> =
            [(2, "KMS2:1689".to_string()), (1, "kms1:1689".to_string())].into();
        assert_eq!(normalized_initial_cluster(&a), "1=kms1:1689,2=kms2:1689");
    }
}
