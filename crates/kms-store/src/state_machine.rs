//! openraft state machine around [`kms_core::State`], with snapshots.

use std::fmt;
use std::io;
use std::sync::Arc;

use futures::Stream;
use futures::StreamExt;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;

use crate::codec;
use crate::error::StoreError;
use crate::store::Applied;
use crate::store::Shared;
use crate::types::LogId;
use crate::types::Snapshot;
use crate::types::SnapshotData;
use crate::types::SnapshotMeta;
use crate::types::StoredMembership;
use crate::types::TypeConfig;

/// The replicated state machine: implements openraft's [`RaftStateMachine`].
///
/// The state lives in memory behind a read-write lock, so the KMS hot path reads counts with
/// [`StateMachineStore::read`] without going through Raft. Clones share the state.
///
/// Applying an entry calls [`kms_core::State::apply`] for a normal entry and answers the client
/// write with its [`kms_core::Outcome`]; blank and membership entries answer
/// [`kms_core::Outcome::Done`], and a membership entry becomes the stored membership. Applied
/// entries are not written to disk one by one — the log already holds them; see [`crate::Store`]
/// for how the state is checkpointed at snapshots and restored on open.
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

impl fmt::Debug for StateMachineStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateMachineStore")
            .field("path", &self.shared.path)
            .field("last_applied", &self.last_applied())
            .finish_non_exhaustive()
    }
}

impl StateMachineStore {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        StateMachineStore { shared }
    }

    /// Run `f` on the current applied state, under a shared lock.
    ///
    /// Keep `f` short: applying entries waits for it.
    pub fn read<F, T>(&self, f: F) -> T
    where
        F: FnOnce(&kms_core::State) -> T,
    {
        f(&self.shared.machine_read().state)
    }

    /// Like [`Self::read`], together with the id of the last applied entry: the position the
    /// state `f` sees reflects, both taken under one lock.
    pub fn read_applied<F, T>(&self, f: F) -> (Option<LogId>, T)
    where
        F: FnOnce(&kms_core::State) -> T,
    {
        let machine = self.shared.machine_read();
        (machine.last_applied, f(&machine.state))
    }

    /// The id of the last applied log entry.
    pub fn last_applied(&self) -> Option<LogId> {
        self.shared.machine_read().last_applied
    }

    /// The last applied membership.
    pub fn last_membership(&self) -> StoredMembership {
        self.shared.machine_read().last_membership.clone()
    }

    /// Build a snapshot of the current state, make it the current snapshot, and return it.
    pub async fn snapshot_now(&self) -> Result<Snapshot, StoreError> {
        self.builder()?.build().await
    }

    /// The current snapshot (the last one built or installed), if any.
    pub async fn current_snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        let shared = self.shared.clone();
        blocking(move || {
            let Some((manifest, data)) = shared.current_snapshot()? else {
                return Ok(None);
            };
            Ok(Some(Snapshot {
                meta: SnapshotMeta {
                    last_log_id: manifest.last_log_id,
                    last_membership: manifest.last_membership,
                },
                snapshot: data,
            }))
        })
        .await
    }

    /// Replace the state with a snapshot's and persist it as the current snapshot.
    ///
    /// The data is decoded before anything changes: a snapshot this build cannot read is
    /// refused with a typed error and the state stays as it was.
    pub async fn install(&self, meta: &SnapshotMeta, data: SnapshotData) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let applied = Applied {
            last_applied: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
        };
        blocking(move || {
            let state: kms_core::State = codec::decode("snapshot data", &data)?;
            shared.persist_snapshot(&applied, &data, false)?;
            let mut machine = shared.machine_write();
            machine.state = state;
            machine.last_applied = applied.last_applied;
            machine.last_membership = applied.last_membership;
            Ok(())
        })
        .await?;
        tracing::info!(
            last_log_index = meta.last_log_id.as_ref().map(|l| l.index),
            "installed snapshot"
        );
        Ok(())
    }

    /// Capture the current state for a snapshot: encodes it under the read lock (one pass over
    /// the state; applying waits meanwhile).
    fn builder(&self) -> Result<StateSnapshotBuilder, StoreError> {
        let machine = self.shared.machine_read();
        let data = codec::encode("snapshot data", &machine.state)?;
        let applied = Applied {
            last_applied: machine.last_applied,
            last_membership: machine.last_membership.clone(),
        };
        drop(machine);
        Ok(StateSnapshotBuilder {
            shared: self.shared.clone(),
            captured: Ok((applied, data)),
        })
    }
}

/// Run blocking storage work off the async runtime.
async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
}

/// A point-in-time view of the state machine, captured when openraft asks for a snapshot; the
/// slow part (writing it to disk) runs in [`RaftSnapshotBuilder::build_snapshot`] on its own task
/// while entries keep being applied.
pub struct StateSnapshotBuilder {
    shared: Arc<Shared>,
    /// The captured position and encoded state, or the error encoding hit (reported by build).
    captured: Result<(Applied, Vec<u8>), String>,
}

impl fmt::Debug for StateSnapshotBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("StateSnapshotBuilder");
        match &self.captured {
            Ok((applied, data)) => d
                .field("last_applied", &applied.last_applied)
                .field("bytes", &data.len()),
            Err(e) => d.field("error", e),
        };
        d.finish_non_exhaustive()
    }
}

impl StateSnapshotBuilder {
    async fn build(&mut self) -> Result<Snapshot, StoreError> {
        let (applied, data) = std::mem::replace(&mut self.captured, Err("already built".into()))
            .map_err(|detail| StoreError::Encode {
                what: "snapshot data",
                detail,
            })?;
        let shared = self.shared.clone();
        let (applied, data) = blocking(move || {
            let wrote = shared.persist_snapshot(&applied, &data, true)?;
            if !wrote {
                tracing::info!(
                    last_applied_index = applied.last_applied.as_ref().map(|l| l.index),
                    "built snapshot not stored: a newer snapshot is already current"
                );
            }
            Ok((applied, data))
        })
        .await?;
        tracing::info!(
            last_log_index = applied.last_applied.as_ref().map(|l| l.index),
            bytes = data.len(),
            "built snapshot"
        );
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.last_membership,
            },
            snapshot: data,
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateSnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        Ok(self.build().await?)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = StateSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let machine = self.shared.machine_read();
        Ok((machine.last_applied, machine.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let outcome = self.shared.machine_write().apply(&entry);
            // Answer after the lock is released, so the client's follow-up read sees the entry.
            if let Some(responder) = responder {
                responder.send(outcome);
            }
        }
        Ok(())
    }

    async fn try_create_snapshot_builder(&mut self, _force: bool) -> Option<Self::SnapshotBuilder> {
        Some(self.get_snapshot_builder().await)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        match self.builder() {
            Ok(b) => b,
            Err(e) => StateSnapshotBuilder {
                shared: self.shared.clone(),
                captured: Err(e.to_string()),
            },
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        Ok(self.install(meta, snapshot).await?)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self.current_snapshot().await?)
    }
}
