//! Degraded mode (DESIGN §3): when no leader commits a record within `commit_timeout`, the
//! record goes to a durable local journal (a sled tree, flushed before the client is answered),
//! the client is answered from the applied state plus the journal, and a background task replays
//! the journal through the leader once one is reachable — exactly once, because replays carry
//! the original request id and `kms-core` ignores a request id it has already recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kms_core::{ClientMachineId, Command, Outcome, Pool, PoolCount, RecordRequest, State};
use kms_store::{Journal, StoreError};
use kms_wire::FileTime;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::writer::Writer;

/// One journaled record: the request and the time the node handled it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// When the node answered the client.
    pub at: FileTime,
    /// What to record.
    pub record: RecordRequest,
}

#[derive(Debug, Default)]
struct Mirror {
    /// seq → entry, for everything not yet replayed.
    entries: BTreeMap<u64, JournalEntry>,
}

/// The journal plus an in-memory mirror used to answer counts while degraded.
#[derive(Debug, Clone)]
pub struct DegradedJournal {
    journal: Journal<JournalEntry>,
    mirror: Arc<Mutex<Mirror>>,
}

impl DegradedJournal {
    /// Load the journal (entries left from before a restart are replayed too).
    pub fn open(journal: Journal<JournalEntry>) -> Result<DegradedJournal, StoreError> {
        let entries = journal.pending()?.into_iter().collect();
        Ok(DegradedJournal {
            journal,
            mirror: Arc::new(Mutex::new(Mirror { entries })),
        })
    }

    /// Durably append; returns when the entry is on disk.
    pub async fn append(&self, entry: JournalEntry) -> Result<(), StoreError> {
        let seq = self.journal.append(&entry).await?;
        self.mirror
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .insert(seq, entry);
        Ok(())
    }

    /// Entries waiting for replay.
    pub fn len(&self) -> usize {
        self.mirror
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }

    /// True when nothing waits for replay.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The count of `pool` as the client should see it: the applied state's clients plus the
    /// journaled clients the state does not know yet, capped like the state caps it.
    pub fn count_with_journal(&self, state: &State, pool: Pool, now: FileTime) -> PoolCount {
        let mut count = state.pool_count(pool, now);
        let m = self.mirror.lock().unwrap_or_else(PoisonError::into_inner);
        let window = state.config().count_window_secs;
        let mut extra: BTreeSet<ClientMachineId> = BTreeSet::new();
        let mut max_required = count.max_required;
        for e in m.entries.values() {
            if e.record.pool != pool {
                continue;
            }
            let live_in_state = state
                .client(pool, &e.record.client_machine_id)
                .is_some_and(|r| {
                    now.0.saturating_sub(r.last_seen.0) / kms_wire::filetime::TICKS_PER_SECOND
                        <= window
                });
            if !live_in_state {
                extra.insert(e.record.client_machine_id);
            }
            max_required = max_required.max(e.record.required_count);
        }
        count.live = count.live.saturating_add(extra.len() as u32);
        count.max_required = max_required;
        count.reported = match state.config().count_report {
            kms_core::CountReport::Exact => count.live,
            kms_core::CountReport::Capped => count.live.min(max_required.saturating_mul(2)),
        };
        count
    }

    fn snapshot(&self, limit: usize) -> Vec<(u64, JournalEntry)> {
        let m = self.mirror.lock().unwrap_or_else(PoisonError::into_inner);
        m.entries
            .iter()
            .take(limit)
            .map(|(s, e)| (*s, e.clone()))
            .collect()
    }

    async fn remove_through(&self, seq: u64) -> Result<(), StoreError> {
        self.journal.remove_through(seq).await?;
        let mut m = self.mirror.lock().unwrap_or_else(PoisonError::into_inner);
        m.entries = m.entries.split_off(&(seq + 1));
        Ok(())
    }
}

/// Replay the journal through the leader whenever it is non-empty; leave degraded mode (clear
/// `degraded`) as soon as a replay commits, i.e. a leader takes writes again.
pub(crate) async fn replay_loop(
    journal: DegradedJournal,
    writer: Writer,
    node_id: u64,
    degraded: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut iv = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = iv.tick() => {}
            _ = stop.changed() => return,
        }
        if journal.is_empty() {
            if degraded.swap(false, Ordering::SeqCst) {
                info!(
                    event_id = crate::EVENT_DEGRADED_LEAVE,
                    "leaving degraded mode"
                );
            }
            continue;
        }
        let batch = journal.snapshot(REPLAY_BATCH);
        let Some(last) = batch.last().map(|(seq, _)| *seq) else {
            continue;
        };
        let n = batch.len();
        let records = batch
            .into_iter()
            .map(|(_, e)| RecordRequest {
                seen_at: Some(e.at),
                ..e.record
            })
            .collect();
        let cmd = Command::Record {
            at: FileTime::from_system_time(std::time::SystemTime::now()),
            node: node_id,
            records,
        };
        match writer.write(cmd).await {
            Ok(outcome) => {
                if !matches!(outcome, Outcome::Recorded(_)) {
                    warn!(?outcome, "unexpected outcome replaying the journal");
                }
                if let Err(e) = journal.remove_through(last).await {
                    warn!(error = %e, "cannot trim the degraded-mode journal");
                    continue;
                }
                info!(
                    replayed = n,
                    left = journal.len(),
                    "degraded-mode journal replayed"
                );
                // A leader takes writes again: new records go the normal way while what is
                // left of the journal drains in the background.
                if degraded.swap(false, Ordering::SeqCst) {
                    info!(
                        event_id = crate::EVENT_DEGRADED_LEAVE,
                        "leaving degraded mode"
                    );
                }
            }
            Err(e) => tracing::debug!(error = %e, "journal replay waits for a leader"),
        }
    }
}

/// Most journal entries replayed in one Raft entry.
const REPLAY_BATCH: usize = 512;
