//! openraft log storage over the `log` and `meta` trees.

use std::fmt;
use std::fmt::Debug;
use std::io;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::LogIdOptionExt;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;

use crate::codec;
use crate::error::StoreError;
use crate::store::Shared;
use crate::store::meta_key;
use crate::types::Entry;
use crate::types::LogId;
use crate::types::LogState;
use crate::types::TypeConfig;
use crate::types::Vote;

/// The Raft log and vote: implements openraft's [`RaftLogStorage`] and [`RaftLogReader`].
///
/// Clone-able; clones share the database. Durability rules:
///
/// * `append` writes the entries (readable at once) and reports them durable to openraft only
///   after a sled flush has completed (on a spawned task, so the Raft core is not blocked on
///   fsync).
/// * `save_vote` and `truncate_after` flush before returning.
/// * `save_committed` and `purge` do not flush on their own: a lost committed id is recovered
///   from the cluster, a lost purge only leaves entries that are purged again; the next flush
///   (at latest sled's periodic one, every 500 ms) persists them in order.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

impl fmt::Debug for LogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

impl LogStore {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        LogStore { shared }
    }

    /// The id of the last entry in the log, or the last purged id when the log is empty.
    pub fn log_state(&self) -> Result<LogState, StoreError> {
        let last_purged_log_id: Option<LogId> = self
            .shared
            .get_meta(meta_key::LAST_PURGED, "last purged log id")?;
        let last = match self.shared.log.last()? {
            None => None,
            Some((_, v)) => Some(codec::decode_prefix::<LogId>("log entry", &v)?),
        };
        let last_log_id = match last {
            Some(id) if Some(&id) >= last_purged_log_id.as_ref() => Some(id),
            _ => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    /// Entries with index in `range`, in order.
    pub fn entries<RB: RangeBounds<u64>>(&self, range: RB) -> Result<Vec<Entry>, StoreError> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => match s.checked_add(1) {
                Some(s) => s,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => Bound::Included(codec::u64_key(e)),
            Bound::Excluded(&e) => Bound::Excluded(codec::u64_key(e)),
            Bound::Unbounded => Bound::Unbounded,
        };
        if let Bound::Excluded(e) = end
            && u64::from_be_bytes(e) <= start
        {
            return Ok(Vec::new());
        }
        if let Bound::Included(e) = end
            && u64::from_be_bytes(e) < start
        {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for item in self
            .shared
            .log
            .range((Bound::Included(codec::u64_key(start)), end))
        {
            let (_, v) = item?;
            out.push(codec::decode::<Entry>("log entry", &v)?);
        }
        Ok(out)
    }

    /// The saved vote.
    pub fn vote(&self) -> Result<Option<Vote>, StoreError> {
        self.shared.get_meta(meta_key::VOTE, "vote")
    }

    /// The saved committed log id.
    pub fn committed(&self) -> Result<Option<LogId>, StoreError> {
        self.shared
            .get_meta(meta_key::COMMITTED, "committed log id")
    }

    fn write_entries<I>(&self, entries: I) -> Result<(), StoreError>
    where
        I: IntoIterator<Item = Entry>,
    {
        // One insert per entry, in index order: a single-key write takes sled's lock shared (a
        // batch would take it exclusively, see Shared::flush_gate). An append is only reported
        // durable after the flush, so a crash can leave at most an unacknowledged prefix.
        for entry in entries {
            let bytes = codec::encode("log entry", &entry)?;
            self.shared
                .log
                .insert(&codec::u64_key(entry.log_id.index)[..], bytes)?;
        }
        Ok(())
    }

    /// Remove every entry with index `>= from`, newest first, so an interrupted truncation
    /// leaves a contiguous log (single-key removes: see [`LogStore::write_entries`]).
    fn remove_from(&self, from: u64) -> Result<(), StoreError> {
        let keys: Vec<sled::IVec> = self
            .shared
            .log
            .range(codec::u64_key(from)..)
            .keys()
            .collect::<Result<_, _>>()?;
        for k in keys.into_iter().rev() {
            self.shared.log.remove(k)?;
        }
        Ok(())
    }

    /// Remove every entry with index `<= through`, oldest first, so an interrupted purge leaves
    /// a contiguous log (the purge point is recorded before, see `purge`).
    fn remove_through(&self, through: u64) -> Result<(), StoreError> {
        let keys: Vec<sled::IVec> = self
            .shared
            .log
            .range(..=codec::u64_key(through))
            .keys()
            .collect::<Result<_, _>>()?;
        for k in keys {
            self.shared.log.remove(k)?;
        }
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(self.entries(range)?)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.vote()?)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState, io::Error> {
        Ok(self.log_state()?)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let bytes = codec::encode("vote", vote)?;
        self.shared
            .meta
            .insert(meta_key::VOTE, bytes)
            .map_err(StoreError::from)?;
        self.shared.flush().await?;
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        match committed {
            None => {
                self.shared
                    .meta
                    .remove(meta_key::COMMITTED)
                    .map_err(StoreError::from)?;
            }
            Some(id) => {
                let bytes = codec::encode("committed log id", &id)?;
                self.shared
                    .meta
                    .insert(meta_key::COMMITTED, bytes)
                    .map_err(StoreError::from)?;
            }
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.committed()?)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.write_entries(entries)?;
        // Report durability only after the flush; sled's flush covers every write before it,
        // so completions may arrive out of order without ever claiming an unflushed entry.
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let res = shared.flush().await.map_err(io::Error::from);
            callback.io_completed(res);
        });
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        tracing::debug!(?last_log_id, "truncate log");
        self.remove_from(last_log_id.next_index())?;
        self.shared.flush().await?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        tracing::debug!(%log_id, "purge log");
        // Record the purge point first: a crash between the two steps leaves entries that the
        // log state already treats as purged, never a hole.
        let current: Option<LogId> = self
            .shared
            .get_meta(meta_key::LAST_PURGED, "last purged log id")?;
        if current.as_ref() < Some(&log_id) {
            let bytes = codec::encode("last purged log id", &log_id)?;
            self.shared
                .meta
                .insert(meta_key::LAST_PURGED, bytes)
                .map_err(StoreError::from)?;
        }
        self.remove_through(log_id.index)?;
        Ok(())
    }
}
