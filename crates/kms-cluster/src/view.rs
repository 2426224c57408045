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
use kms_store::types::{NodeInfo, Raft};
use tokio::sync::watch;

/// Boxed future used by [`Probe`].
pub type ProbeFuture = Pin<Box<dyn Future<Output = bool> + Send>>;

/// Checks whether a peer answers (the gRPC transport implements it).
pub trait Probe: Send + Sync + 'static {
    /// True when `target` answered a health probe.
    fn probe(&self, target: u64, info: NodeInfo) -> ProbeFuture;
}

/// A prober for nodes without a transport: every peer is down.
#[derive(Debug, Default)]
pub struct NoProbe;

impl Probe for NoProbe {
    fn probe(&self, _target: u64, _info: NodeInfo) -> ProbeFuture {
        Box::pin(async { false })
    }
}

/// Last successful probe per peer.
#[derive(Debug, Default, Clone)]
pub(crate) struct Health {
    last_ok: Arc<Mutex<HashMap<u64, Instant>>>,
}

impl Health {
    fn mark(&self, id: u64) {
        self.last_ok
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Instant::now());
    }

    pub(crate) fn is_healthy(&self, id: u64, within: Duration) -> bool {
        self.last_ok
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .is_some_and(|t| t.elapsed() <= within)
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
    let directory = sm.read(|s| s.nodes().clone());
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
                healthy: *id == local_id || health.is_healthy(*id, unhealthy_after),
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
    } = task;
    let mut iv = tokio::time::interval(Duration::from_millis(1000));
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut generation = 0u64;
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
        let probes = peers.into_iter().map(|(id, info)| {
            let prober = prober.clone();
            async move {
                let ok = tokio::time::timeout(Duration::from_millis(900), prober.probe(id, info))
                    .await
                    .unwrap_or(false);
                (id, ok)
            }
        });
        for (id, ok) in futures::future::join_all(probes).await {
            if ok {
                health.mark(id);
            }
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
                    members = ?ids_now,
                    previous = ?ids_before,
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
