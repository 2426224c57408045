//! The degraded-mode journal (DESIGN §3): records accepted while no leader is reachable.
//!
//! When a node cannot get a record committed within `commit_timeout`, it still answers the
//! client and appends the record here; once a leader is back it replays the journal through
//! Raft and removes what was committed. The journal is local to the node (never replicated)
//! and durable: [`Journal::append`] returns only after the value is flushed to disk.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::error::StoreError;
use crate::store::JournalSeq;
use crate::store::Shared;
use crate::store::meta_key;

/// A durable FIFO of values of type `T`, each under a strictly increasing sequence number.
///
/// Sequence numbers start at 1 and are never reused, not even after the journal was emptied
/// and the node restarted. Cheap to clone.
pub struct Journal<T> {
    shared: Arc<Shared>,
    _values: PhantomData<fn() -> T>,
}

impl<T> Clone for Journal<T> {
    fn clone(&self) -> Self {
        Journal {
            shared: self.shared.clone(),
            _values: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Journal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl<T> Journal<T>
where
    T: Serialize + DeserializeOwned,
{
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Journal {
            shared,
            _values: PhantomData,
        }
    }

    /// Append `value`; returns its sequence number once it is on disk.
    pub async fn append(&self, value: &T) -> Result<u64, StoreError> {
        let bytes = codec::encode("journal value", value)?;
        let seq = {
            let mut seq = self.shared.journal_seq();
            let n = seq.next;
            self.shared.journal.insert(codec::u64_key(n), bytes)?;
            seq.next = n.saturating_add(1);
            seq.len += 1;
            n
        };
        self.shared.flush().await?;
        Ok(seq)
    }

    /// Every pending value with its sequence number, oldest first.
    pub fn pending(&self) -> Result<Vec<(u64, T)>, StoreError> {
        self.shared
            .journal
            .iter()
            .map(|item| {
                let (k, v) = item?;
                let seq = codec::parse_u64_key("journal key", &k)?;
                let value = codec::decode("journal value", &v)?;
                Ok((seq, value))
            })
            .collect()
    }

    /// Remove every value with a sequence number `<= seq` (they were replayed), durably.
    pub async fn remove_through(&self, seq: u64) -> Result<(), StoreError> {
        {
            let mut state = self.shared.journal_seq();
            // Single-key removes (sled's lock shared; see Shared::flush_gate), oldest first.
            let keys: Vec<sled::IVec> = self
                .shared
                .journal
                .range(..=codec::u64_key(seq))
                .keys()
                .collect::<Result<_, _>>()?;
            let removed = keys.len();
            // Keep the high-water mark, so an emptied journal never hands out a used number.
            let hwm = codec::encode("journal sequence", &state.next)?;
            self.shared.meta.insert(meta_key::JOURNAL_NEXT, hwm)?;
            for k in keys {
                self.shared.journal.remove(k)?;
            }
            state.len = state.len.saturating_sub(removed);
        }
        self.shared.flush().await?;
        Ok(())
    }
}

impl<T> Journal<T> {
    /// Number of pending values (kept in memory; cheap enough for every metrics scrape).
    pub fn len(&self) -> usize {
        self.shared.journal_seq().len
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Load the journal's next sequence number and length at open.
pub(crate) fn load_seq(shared: &Shared) -> Result<JournalSeq, StoreError> {
    let hwm: u64 = shared
        .get_meta(meta_key::JOURNAL_NEXT, "journal sequence")?
        .unwrap_or(1);
    let after_last = match shared.journal.last()? {
        None => 1,
        Some((k, _)) => codec::parse_u64_key("journal key", &k)?.saturating_add(1),
    };
    let len = shared.journal.len();
    Ok(JournalSeq {
        next: hwm.max(after_last).max(1),
        len,
    })
}
