//! Writing a command to the cluster from any node: proposed locally on the leader, forwarded to
//! the leader from a follower, retried across leader changes, bounded by `commit_timeout`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kms_core::{Command, Outcome};
use kms_store::openraft::async_runtime::watch::WatchReceiver;
use kms_store::types::{NodeInfo, Raft};

/// Why a write did not commit in time.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// No leader was known or reachable within the commit timeout.
    #[error("no reachable leader within {0:?}")]
    NoLeader(Duration),
    /// The leader refused or failed the write.
    #[error("write failed: {0}")]
    Failed(String),
}

/// Outcome of forwarding one command to a peer that should be the leader.
#[derive(Debug)]
pub enum ForwardResult {
    /// Committed and applied on the leader.
    Applied(Outcome),
    /// The peer is not the leader (it may name one).
    NotLeader(Option<u64>),
    /// The peer could not be reached.
    Unreachable(String),
    /// The peer answered with an error.
    Failed(String),
}

/// Boxed future used by [`Forward`].
pub type ForwardFuture = Pin<Box<dyn Future<Output = ForwardResult> + Send>>;

/// Sends a command to another node (the gRPC transport implements it).
pub trait Forward: Send + Sync + 'static {
    /// Forward `cmd` to node `target` at `info`.
    fn forward(&self, target: u64, info: NodeInfo, cmd: Command) -> ForwardFuture;
}

/// Writes commands through whichever node leads.
#[derive(Clone)]
pub struct Writer {
    raft: Raft,
    node_id: u64,
    forward: Arc<dyn Forward>,
    commit_timeout: Duration,
    /// The leader this node's peers name in their probe answers: where writes go when the
    /// local Raft core has stopped (a storage error) and knows no leader of its own.
    peer_leader: Arc<std::sync::Mutex<Option<u64>>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("node_id", &self.node_id)
            .field("commit_timeout", &self.commit_timeout)
            .finish()
    }
}

impl Writer {
    /// A writer for `raft`.
    pub fn new(
        raft: Raft,
        node_id: u64,
        forward: Arc<dyn Forward>,
        commit_timeout: Duration,
    ) -> Writer {
        Writer {
            raft,
            node_id,
            forward,
            commit_timeout,
            peer_leader: Arc::default(),
        }
    }

    /// Record the leader the peers name (the view task calls it after every probe round).
    pub(crate) fn set_peer_leader(&self, leader: Option<u64>) {
        *self
            .peer_leader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = leader;
    }

    /// Commit `cmd` and return its outcome, or fail after `commit_timeout`.
    pub async fn write(&self, cmd: Command) -> Result<Outcome, WriteError> {
        let deadline = tokio::time::Instant::now() + self.commit_timeout;
        let mut last_error: Option<String> = None;
        loop {
            if tokio::time::Instant::now() >= deadline {
                return Err(match last_error {
                    Some(e) => WriteError::Failed(e),
                    None => WriteError::NoLeader(self.commit_timeout),
                });
            }
            let (leader, info) = {
                let m = self.raft.metrics();
                let m = m.borrow_watched();
                let mut leader = m.current_leader;
                if m.running_state.is_err() {
                    // The local core stopped (its storage failed): it cannot commit, but the
                    // cluster's leader can — send the write there.
                    leader = *self
                        .peer_leader
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    leader = leader.filter(|l| *l != self.node_id);
                }
                let info =
                    leader.and_then(|l| m.membership_config.membership().get_node(&l).cloned());
                (leader, info)
            };
            match leader {
                Some(l) if l == self.node_id => {
                    let res = tokio::time::timeout_at(
                        deadline,
                        self.raft.client_write(cmd.clone().into()),
                    )
                    .await;
                    match res {
                        Ok(Ok(resp)) => return Ok(resp.response().clone()),
                        Ok(Err(e)) => {
                            if e.forward_to_leader().is_some() {
                                // Not (or no longer) able to lead — e.g. a leader whose quorum
                                // lease expired refuses proposals: wait for the metrics to name
                                // another leader instead of asking again at once.
                                last_error = None;
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            } else {
                                last_error = Some(e.to_string());
                                if e.api_error().is_none() {
                                    return Err(WriteError::Failed(e.to_string()));
                                }
                            }
                        }
                        Err(_) => return Err(WriteError::NoLeader(self.commit_timeout)),
                    }
                }
                Some(l) => {
                    let Some(info) = info else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let fut = self.forward.forward(l, info, cmd.clone());
                    match tokio::time::timeout_at(deadline, fut).await {
                        Ok(ForwardResult::Applied(o)) => return Ok(o),
                        Ok(ForwardResult::NotLeader(_)) | Ok(ForwardResult::Unreachable(_)) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Ok(ForwardResult::Failed(e)) => last_error = Some(e),
                        Err(_) => return Err(WriteError::NoLeader(self.commit_timeout)),
                    }
                }
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

/// A forwarder for nodes without a peer transport (single-node clusters): every peer is
/// unreachable.
#[derive(Debug, Default)]
pub struct NoForward;

impl Forward for NoForward {
    fn forward(&self, target: u64, _info: NodeInfo, _cmd: Command) -> ForwardFuture {
        Box::pin(
            async move { ForwardResult::Unreachable(format!("no transport to node {target}")) },
        )
    }
}
