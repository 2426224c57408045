//! Opening a node's data directory: the sled database, its trees, the format header, and the
//! in-memory state machine restored from the last checkpoint plus the committed log.

use std::fmt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::RwLock;
use std::sync::RwLockReadGuard;
use std::sync::RwLockWriteGuard;

use openraft::LogIdOptionExt;
use serde::Deserialize;
use serde::Serialize;
use sled::Tree;

use crate::codec;
use crate::error::StoreError;
use crate::journal::Journal;
use crate::log_store::LogStore;
use crate::state_machine::StateMachineStore;
use crate::types::Entry;
use crate::types::EntryPayload;
use crate::types::LogId;
use crate::types::StoredMembership;

/// Keys of the `meta` tree.
pub(crate) mod meta_key {
    /// The format header (see [`crate::codec`]).
    pub const HEADER: &[u8] = crate::codec::HEADER_KEY;
    /// The last saved vote.
    pub const VOTE: &[u8] = b"vote";
    /// The last saved committed log id.
    pub const COMMITTED: &[u8] = b"committed";
    /// The id of the last purged log entry.
    pub const LAST_PURGED: &[u8] = b"last_purged";
    /// High-water mark of journal sequence numbers (never reused).
    pub const JOURNAL_NEXT: &[u8] = b"journal_next";
}

/// Keys of the `sm` and `snapshot` trees.
pub(crate) mod sm_key {
    /// `sm`: the applied position of the checkpointed state ([`super::Applied`]).
    pub const APPLIED: &[u8] = b"applied";
    /// `snapshot`: the current snapshot's manifest ([`super::Manifest`]).
    pub const MANIFEST: &[u8] = b"manifest";
    /// `snapshot`, format 1 only: prefix of the data chunks, followed by a big-endian `u32`
    /// chunk number (moved into a checkpoint file on open).
    pub const CHUNK_PREFIX: &[u8] = b"chunk/";
}

/// sled's page cache (its default is 1 GiB). Since the snapshot is a file of its own, sled
/// holds only the log, the journal and a few metadata keys; the hot part (the log tail openraft
/// reads back for replication, vote, applied position) is small.
pub(crate) const PAGE_CACHE_BYTES: u64 = 16 << 20;

/// Directory of the checkpoint files, inside the store directory.
pub(crate) const CHECKPOINT_DIR: &str = "checkpoints";

/// The applied position of the checkpointed state machine (`sm` tree).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Applied {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
}

/// The current snapshot's metadata and where its data is (`snapshot` tree).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub last_log_id: Option<LogId>,
    pub last_membership: StoredMembership,
    /// The data file: `checkpoints/state-<file_seq as 16 hex digits>.bin`.
    pub file_seq: u64,
    /// Its length in bytes.
    pub len: u64,
    /// Its CRC-32 (IEEE).
    pub crc32: u32,
}

/// The manifest of format 1, whose data was in `chunk/<n>` values (read only to migrate).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ManifestV1 {
    pub last_log_id: Option<LogId>,
    pub last_membership: StoredMembership,
    pub chunks: u32,
    pub len: u64,
}

/// The state machine as it lives in memory.
#[derive(Clone, Debug, Default)]
pub(crate) struct Machine {
    pub state: kms_core::State,
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
}

impl Machine {
    /// Apply one entry; returns the command's outcome (`Outcome::Done` for blank and membership
    /// entries, which have no application meaning).
    pub(crate) fn apply(&mut self, entry: &Entry) -> kms_core::Outcome {
        self.last_applied = Some(entry.log_id);
        match &entry.payload {
            EntryPayload::Blank => kms_core::Outcome::Done,
            EntryPayload::Normal(cmd) => self.state.apply(cmd),
            EntryPayload::Membership(m) => {
                self.last_membership = StoredMembership::new(Some(entry.log_id), m.clone());
                kms_core::Outcome::Done
            }
        }
    }
}

/// What [`Store::open`] did to restore the state machine (for the startup log and docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreReport {
    /// Log position of the checkpoint that was loaded, if any.
    pub checkpoint: Option<LogId>,
    /// Size of the encoded checkpoint (the current snapshot's data), in bytes.
    pub checkpoint_bytes: u64,
    /// Time to read and decode the checkpoint.
    pub checkpoint_load: std::time::Duration,
    /// Number of committed log entries replayed on top of the checkpoint.
    pub replayed_entries: u64,
    /// Time to replay them.
    pub replay: std::time::Duration,
}

/// Journal sequence bookkeeping shared by every [`Journal`] handle.
#[derive(Debug)]
pub(crate) struct JournalSeq {
    pub next: u64,
    pub len: usize,
}

/// Everything the handles share.
pub(crate) struct Shared {
    pub db: sled::Db,
    pub meta: Tree,
    pub log: Tree,
    pub sm: Tree,
    pub snapshot: Tree,
    pub journal: Tree,
    pub machine: RwLock<Machine>,
    /// Serializes snapshot writes (a build runs on its own task, concurrently with installs).
    pub snapshot_write: Mutex<()>,
    /// Keeps sled's exclusive operations (transactions) from overlapping a flush. sled 0.34
    /// holds its global concurrency-control lock shared while a flush waits for the flusher
    /// thread; an exclusive request queued behind it blocks the flusher's own shared request,
    /// and every thread parks forever. Flushes take this gate shared ([`Shared::flush`]); the
    /// one transaction (the snapshot checkpoint) takes it exclusively; everything else uses
    /// single-key operations, which take sled's lock shared.
    pub flush_gate: tokio::sync::RwLock<()>,
    /// Group-commit flusher (see [`Flusher`]).
    pub flusher: Flusher,
    pub journal_seq: Mutex<JournalSeq>,
    pub path: PathBuf,
    /// `path/checkpoints`.
    pub checkpoint_dir: PathBuf,
    pub restore: RestoreReport,
}

impl Shared {
    /// Make every write so far durable (see [`Flusher`] and [`Shared::flush_gate`]).
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        let _gate = self.flush_gate.read().await;
        self.flusher.flush().await
    }

    /// The in-memory state for reading. A poisoned lock (a panic while applying) still yields
    /// the data: apply is pure kms-core logic, and refusing reads would take the node down.
    pub(crate) fn machine_read(&self) -> RwLockReadGuard<'_, Machine> {
        self.machine.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn machine_write(&self) -> RwLockWriteGuard<'_, Machine> {
        self.machine.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn journal_seq(&self) -> MutexGuard<'_, JournalSeq> {
        self.journal_seq.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>, StoreError> {
        match self.meta.get(key)? {
            None => Ok(None),
            Some(v) => codec::decode(what, &v).map(Some),
        }
    }

    /// Read one log entry.
    pub(crate) fn log_entry(&self, index: u64) -> Result<Option<Entry>, StoreError> {
        match self.log.get(codec::u64_key(index))? {
            None => Ok(None),
            Some(v) => codec::decode("log entry", &v).map(Some),
        }
    }

    /// Read the current snapshot's manifest.
    pub(crate) fn manifest(&self) -> Result<Option<Manifest>, StoreError> {
        match self.snapshot.get(sm_key::MANIFEST)? {
            None => Ok(None),
            Some(v) => codec::decode("snapshot manifest", &v).map(Some),
        }
    }

    /// Read the current snapshot: its manifest and its data, consistent with each other even
    /// while [`Self::persist_snapshot`] replaces it (a snapshot sent to a peer while a newer one
    /// is being stored).
    pub(crate) fn current_snapshot(&self) -> Result<Option<(Manifest, Vec<u8>)>, StoreError> {
        let _guard = self
            .snapshot_write
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(manifest) = self.manifest()? else {
            return Ok(None);
        };
        let data = std::fs::read(self.checkpoint_path(manifest.file_seq)).map_err(checkpoint_io)?;
        check_checkpoint(&manifest, data.len() as u64, crc32fast::hash(&data))?;
        Ok(Some((manifest, data)))
    }

    /// The path of checkpoint file `seq`.
    pub(crate) fn checkpoint_path(&self, seq: u64) -> PathBuf {
        self.checkpoint_dir.join(format!("state-{seq:016x}.bin"))
    }

    /// Write checkpoint file `seq` durably: a temporary file, synced, renamed into place, and
    /// the directory synced.
    pub(crate) fn write_checkpoint(&self, seq: u64, data: &[u8]) -> Result<(), StoreError> {
        use std::io::Write;
        std::fs::create_dir_all(&self.checkpoint_dir).map_err(checkpoint_io)?;
        let tmp = self.checkpoint_dir.join(format!("state-{seq:016x}.tmp"));
        let mut f = std::fs::File::create(&tmp).map_err(checkpoint_io)?;
        f.write_all(data).map_err(checkpoint_io)?;
        f.sync_all().map_err(checkpoint_io)?;
        drop(f);
        std::fs::rename(&tmp, self.checkpoint_path(seq)).map_err(checkpoint_io)?;
        std::fs::File::open(&self.checkpoint_dir)
            .and_then(|d| d.sync_all())
            .map_err(checkpoint_io)
    }

    /// Delete every file of the checkpoint directory except checkpoint `keep` (files of
    /// replaced checkpoints, and what a crash between writing a file and committing its
    /// manifest left). Failures are logged, not returned: a stray file only costs disk space.
    pub(crate) fn remove_stale_checkpoints(&self, keep: Option<u64>) {
        let keep = keep.map(|seq| self.checkpoint_path(seq));
        let Ok(dir) = std::fs::read_dir(&self.checkpoint_dir) else {
            return;
        };
        for entry in dir.flatten() {
            let path = entry.path();
            if Some(&path) != keep.as_ref()
                && let Err(e) = std::fs::remove_file(&path)
            {
                tracing::warn!(file = %path.display(), error = %e, "cannot remove a stale checkpoint file");
            }
        }
    }

    /// Persist a snapshot as the new checkpoint: its data in a new checkpoint file, then the
    /// manifest (in `snapshot`) and the applied position (in `sm`) in one transaction, then
    /// flush, then delete the previous file.
    ///
    /// With `only_if_newer`, nothing is written when the stored snapshot already covers
    /// `last_log_id` (a build that raced with a newer install). Returns whether it wrote.
    pub(crate) fn persist_snapshot(
        &self,
        applied: &Applied,
        data: &[u8],
        only_if_newer: bool,
    ) -> Result<bool, StoreError> {
        let _guard = self
            .snapshot_write
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let old = self.manifest()?;
        if only_if_newer
            && let Some(old) = &old
            && old.last_log_id >= applied.last_applied
        {
            return Ok(false);
        }
        let seq = old.as_ref().map_or(1, |m| m.file_seq + 1);
        self.write_checkpoint(seq, data)?;
        let manifest = Manifest {
            last_log_id: applied.last_applied,
            last_membership: applied.last_membership.clone(),
            file_seq: seq,
            len: data.len() as u64,
            crc32: crc32fast::hash(data),
        };
        let manifest_bytes = codec::encode("snapshot manifest", &manifest)?;
        let applied_bytes = codec::encode("applied state", applied)?;

        // Never start sled's exclusive transaction while a flush is waiting (see flush_gate).
        // Runs on a blocking thread (spawn_blocking), where blocking on the gate is fine.
        let _gate = self.flush_gate.blocking_write();
        use sled::Transactional;
        (&self.snapshot, &self.sm)
            .transaction(|(snap, sm)| {
                snap.insert(sm_key::MANIFEST, manifest_bytes.as_slice())?;
                sm.insert(sm_key::APPLIED, applied_bytes.as_slice())?;
                Ok::<(), sled::transaction::ConflictableTransactionError<StoreError>>(())
            })
            .map_err(StoreError::from)?;
        self.db.flush()?;
        self.remove_stale_checkpoints(Some(seq));
        Ok(true)
    }
}

/// A checkpoint file's I/O error.
fn checkpoint_io(source: std::io::Error) -> StoreError {
    StoreError::File {
        what: "checkpoint",
        source,
    }
}

/// Refuse checkpoint data whose length or CRC-32 differs from its manifest's.
fn check_checkpoint(manifest: &Manifest, len: u64, crc32: u32) -> Result<(), StoreError> {
    if len != manifest.len {
        return Err(StoreError::corrupt(
            "checkpoint",
            format!("{len} bytes, manifest says {}", manifest.len),
        ));
    }
    if crc32 != manifest.crc32 {
        return Err(StoreError::corrupt(
            "checkpoint",
            format!("CRC-32 {crc32:08x}, manifest says {:08x}", manifest.crc32),
        ));
    }
    Ok(())
}

/// Reads a checkpoint file (buffered) and computes its CRC-32 on the way, so the state can be
/// decoded while it is read and the checksum checked after.
pub(crate) struct CheckpointReader {
    file: std::io::BufReader<std::fs::File>,
    hasher: crc32fast::Hasher,
    len: u64,
}

impl CheckpointReader {
    pub(crate) fn open(path: &Path) -> Result<CheckpointReader, StoreError> {
        let file = std::fs::File::open(path).map_err(checkpoint_io)?;
        Ok(CheckpointReader {
            file: std::io::BufReader::with_capacity(1 << 20, file),
            hasher: crc32fast::Hasher::new(),
            len: 0,
        })
    }

    /// Read what is left (nothing, after a whole decode) and check length and CRC-32.
    pub(crate) fn finish(mut self, manifest: &Manifest) -> Result<(), StoreError> {
        std::io::copy(&mut self, &mut std::io::sink()).map_err(checkpoint_io)?;
        check_checkpoint(manifest, self.len, self.hasher.finalize())
    }
}

impl std::io::Read for CheckpointReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

pub(crate) fn chunk_key(i: u32) -> Vec<u8> {
    let mut k = sm_key::CHUNK_PREFIX.to_vec();
    k.extend_from_slice(&i.to_be_bytes());
    k
}

/// A node's durable store: one sled database in the node's data directory.
///
/// Cheap to clone; every handle ([`LogStore`], [`StateMachineStore`], [`Journal`]) shares the
/// same database and in-memory state machine. The database stays open until the last handle is
/// dropped.
///
/// # Layout (format version [`codec::FORMAT_VERSION`])
///
/// | tree | keys | values |
/// | --- | --- | --- |
/// | `meta` | `format`, `vote`, `committed`, `last_purged`, `journal_next` | header, vote, log ids, next journal seq |
/// | `log` | big-endian `u64` log index | log entry |
/// | `sm` | `applied` | last applied log id + membership of the checkpointed state |
/// | `snapshot` | `manifest` | snapshot meta; name, length and CRC-32 of its data file |
/// | `journal` | big-endian `u64` sequence | a degraded-mode record (caller-defined type) |
///
/// Beside sled's files, the directory `checkpoints/` holds the current snapshot's data, the
/// encoded `kms_core::State`, in `state-<seq>.bin` (one file; the previous one is deleted once
/// a new manifest is committed). It is a plain file because sled keeps the pages it reads or
/// writes in memory regardless of its cache size: with a million clients that was ≈ 100 MB
/// of snapshot chunks held for nothing.
///
/// # Durability and restart
///
/// The state machine lives in memory and is checkpointed at every snapshot (openraft's
/// snapshot policy decides when): the snapshot data **is** the persisted state, stored once,
/// and `sm/applied` names the log position it covers. Log appends are flushed before openraft
/// is told they are durable, so an acknowledged write survives `kill -9` in the log. On open,
/// the state machine is decoded from the checkpoint and the log is replayed from the checkpoint
/// up to the last saved committed index; openraft replays anything committed later.
///
/// The alternative — persisting the state on every apply batch — would rewrite the whole
/// state (hundreds of megabytes at a million clients) every few milliseconds, because
/// `kms_core::State` is opaque and has no per-record diff. Checkpoint + bounded log replay keeps
/// writes proportional to the log and bounds restart time by the snapshot policy (entries since
/// the last snapshot) plus one decode of the state.
///
/// Restart cost is therefore: sled recovery, plus reading and decoding the checkpoint (about
/// 1 s for a million clients, ~145 MB), plus replaying the entries committed since it — each
/// costing one `kms_core::State::apply`. [`Store::restore_report`] tells how long each part
/// took. The snapshot policy kms-cluster configures must keep the replayed tail short enough
/// for the restart budget at the measured apply cost.
#[derive(Clone)]
pub struct Store {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Open (or create) the store in the directory `path`.
    ///
    /// A fresh directory is initialized with the current format header. An existing store is
    /// checked: a foreign database is refused with [`StoreError::NotAKmsdStore`], a newer format
    /// with [`StoreError::UnsupportedFormat`] — in both cases without writing anything. Then
    /// the state machine is restored (checkpoint + committed log), which decodes the whole state:
    /// this blocks, so call it from `spawn_blocking` or before serving.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        let db = open_sled(&path)?;
        let flusher = Flusher::start(db.clone())?;
        let meta = db.open_tree("meta")?;
        // Check before creating the other trees, so a refused directory is left as it was
        // (apart from an empty `meta` tree on a foreign database).
        let found = check_header(&db, &meta)?;
        let log = db.open_tree("log")?;
        let sm = db.open_tree("sm")?;
        let snapshot = db.open_tree("snapshot")?;
        let journal = db.open_tree("journal")?;

        let mut shared = Shared {
            db,
            meta,
            log,
            sm,
            snapshot,
            journal,
            machine: RwLock::new(Machine::default()),
            snapshot_write: Mutex::new(()),
            flush_gate: tokio::sync::RwLock::new(()),
            flusher,
            journal_seq: Mutex::new(JournalSeq { next: 1, len: 0 }),
            checkpoint_dir: path.join(CHECKPOINT_DIR),
            path,
            restore: RestoreReport::default(),
        };
        if found == 1 {
            migrate_from_v1(&shared)?;
        }
        shared.remove_stale_checkpoints(shared.manifest()?.map(|m| m.file_seq));
        let (machine, report) = restore_machine(&shared)?;
        tracing::info!(
            checkpoint_index = report.checkpoint.as_ref().map(|l| l.index),
            checkpoint_bytes = report.checkpoint_bytes,
            checkpoint_load_ms = report.checkpoint_load.as_millis() as u64,
            replayed_entries = report.replayed_entries,
            replay_ms = report.replay.as_millis() as u64,
            "restored state machine"
        );
        shared.restore = report;
        *shared.machine_write() = machine;
        *shared.journal_seq() = crate::journal::load_seq(&shared)?;

        Ok(Store {
            shared: Arc::new(shared),
        })
    }

    /// The Raft log handle (give it to `Raft::new`).
    pub fn log_store(&self) -> LogStore {
        LogStore::new(self.shared.clone())
    }

    /// The state machine handle (give it to `Raft::new`; keep a clone for reads).
    pub fn state_machine(&self) -> StateMachineStore {
        StateMachineStore::new(self.shared.clone())
    }

    /// The degraded-mode journal, holding values of type `T`.
    ///
    /// All journals of a store share one tree and one sequence; use one value type per store.
    pub fn journal<T>(&self) -> Journal<T>
    where
        T: Serialize + serde::de::DeserializeOwned,
    {
        Journal::new(self.shared.clone())
    }

    /// What opening did to restore the state machine.
    pub fn restore_report(&self) -> &RestoreReport {
        &self.shared.restore
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The on-disk format version of this store (always [`codec::FORMAT_VERSION`] once open).
    pub fn format_version(&self) -> u32 {
        codec::FORMAT_VERSION
    }

    /// Flush every pending write to disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.shared.flush().await?;
        Ok(())
    }

    /// Size of the database on disk, in bytes.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        let checkpoints: u64 = std::fs::read_dir(&self.shared.checkpoint_dir)
            .map(|dir| {
                dir.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        Ok(self.shared.db.size_on_disk()? + checkpoints)
    }
}

/// Open the sled database in `path`. A directory lock still held by a store of this process
/// that is just being dropped (sled releases it from a background thread) is waited for, up to
/// one second; a lock held longer (another kmsd on the same directory) is an error.
fn open_sled(path: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(PAGE_CACHE_BYTES)
            .open()
        {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return Ok(other?),
        }
    }
}

/// Check (or write, for a fresh database) the format header; returns the version found (the
/// current one for a fresh database).
fn check_header(db: &sled::Db, meta: &Tree) -> Result<u32, StoreError> {
    match meta.get(meta_key::HEADER)? {
        Some(v) => {
            let version = codec::parse_header(&v)?;
            if version > codec::FORMAT_VERSION {
                return Err(StoreError::UnsupportedFormat {
                    found: version,
                    supported: codec::FORMAT_VERSION,
                });
            }
            if version == 0 {
                return Err(StoreError::NotAKmsdStore {
                    detail: "format version 0".to_string(),
                });
            }
            // Older formats are migrated by the caller, one version step at a time.
            Ok(version)
        }
        None => {
            // Fresh means: nothing in the default tree or `meta`, and no tree besides those two.
            let default_name: &[u8] = b"__sled__default";
            let foreign_tree = db
                .tree_names()
                .into_iter()
                .find(|n| n.as_ref() != default_name && n.as_ref() != b"meta");
            if let Some(name) = foreign_tree {
                return Err(StoreError::NotAKmsdStore {
                    detail: format!(
                        "no kmsd format header, but tree {:?} exists",
                        String::from_utf8_lossy(&name)
                    ),
                });
            }
            if !meta.is_empty() || db.iter().next().is_some() {
                return Err(StoreError::NotAKmsdStore {
                    detail: "data present but no kmsd format header".to_string(),
                });
            }
            meta.insert(meta_key::HEADER, codec::header_value(codec::FORMAT_VERSION))?;
            db.flush()?;
            Ok(codec::FORMAT_VERSION)
        }
    }
}

/// Migrate a format-1 store to format 2: the snapshot chunks become checkpoint file 1, and the
/// new manifest, the removal of the chunks and the new header are one transaction (a crash
/// before it leaves a format-1 store and a stray file, which the next open replaces).
fn migrate_from_v1(shared: &Shared) -> Result<(), StoreError> {
    let old: Option<ManifestV1> = match shared.snapshot.get(sm_key::MANIFEST)? {
        None => None,
        Some(v) => Some(codec::decode("snapshot manifest (format 1)", &v)?),
    };
    let mut manifest_bytes = None;
    if let Some(old) = &old {
        let len = usize::try_from(old.len)
            .map_err(|_| StoreError::corrupt("snapshot manifest", "length exceeds memory"))?;
        let mut data = Vec::with_capacity(len.min(1 << 30));
        for i in 0..old.chunks {
            let chunk = shared.snapshot.get(chunk_key(i))?.ok_or_else(|| {
                StoreError::corrupt("snapshot data", format!("chunk {i} missing"))
            })?;
            data.extend_from_slice(&chunk);
        }
        if data.len() as u64 != old.len {
            return Err(StoreError::corrupt(
                "snapshot data",
                format!("{} bytes, manifest says {}", data.len(), old.len),
            ));
        }
        shared.write_checkpoint(1, &data)?;
        manifest_bytes = Some(codec::encode(
            "snapshot manifest",
            &Manifest {
                last_log_id: old.last_log_id,
                last_membership: old.last_membership.clone(),
                file_seq: 1,
                len: old.len,
                crc32: crc32fast::hash(&data),
            },
        )?);
    }
    let chunks = old.as_ref().map_or(0, |m| m.chunks);
    use sled::Transactional;
    (&shared.snapshot, &shared.meta)
        .transaction(|(snap, meta)| {
            if let Some(bytes) = &manifest_bytes {
                snap.insert(sm_key::MANIFEST, bytes.as_slice())?;
            }
            for i in 0..chunks {
                snap.remove(&chunk_key(i)[..])?;
            }
            meta.insert(meta_key::HEADER, codec::header_value(2))?;
            Ok::<(), sled::transaction::ConflictableTransactionError<StoreError>>(())
        })
        .map_err(StoreError::from)?;
    shared.db.flush()?;
    tracing::info!(
        checkpoint_bytes = old.as_ref().map_or(0, |m| m.len),
        "store migrated from format 1 to 2: the snapshot data is now a checkpoint file"
    );
    Ok(())
}

/// Restore the in-memory state machine: decode the checkpoint, then replay the log up to the
/// saved committed index.
fn restore_machine(shared: &Shared) -> Result<(Machine, RestoreReport), StoreError> {
    let mut report = RestoreReport::default();
    let started = std::time::Instant::now();
    let applied: Option<Applied> = match shared.sm.get(sm_key::APPLIED)? {
        None => None,
        Some(v) => Some(codec::decode("applied state", &v)?),
    };
    let manifest = shared.manifest()?;
    let mut machine = match (applied, manifest) {
        (None, None) => Machine::default(),
        (Some(applied), Some(manifest)) => {
            if applied.last_applied != manifest.last_log_id {
                return Err(StoreError::corrupt(
                    "applied state",
                    "checkpoint position differs from the snapshot manifest",
                ));
            }
            // Decoded while the file is read, so the encoding is never in memory whole.
            let mut reader = CheckpointReader::open(&shared.checkpoint_path(manifest.file_seq))?;
            let decoded: Result<kms_core::State, StoreError> =
                codec::decode_reader("snapshot data", &mut reader, manifest.len);
            // A damaged file shows as a checksum error even where it also fails to decode.
            reader.finish(&manifest)?;
            let state = decoded?;
            report.checkpoint = applied.last_applied;
            report.checkpoint_bytes = manifest.len;
            Machine {
                state,
                last_applied: applied.last_applied,
                last_membership: applied.last_membership,
            }
        }
        (Some(_), None) => {
            return Err(StoreError::corrupt(
                "applied state",
                "checkpoint without snapshot data",
            ));
        }
        (None, Some(_)) => {
            return Err(StoreError::corrupt(
                "snapshot manifest",
                "snapshot without checkpoint position",
            ));
        }
    };
    report.checkpoint_load = started.elapsed();

    let started = std::time::Instant::now();
    let committed: Option<LogId> = shared.get_meta(meta_key::COMMITTED, "committed log id")?;
    if let Some(committed) = committed
        && Some(&committed) > machine.last_applied.as_ref()
    {
        let from = machine.last_applied.next_index();
        for index in from..=committed.index {
            let entry = shared
                .log_entry(index)?
                .ok_or(StoreError::MissingLogEntry { index })?;
            if entry.log_id.index != index {
                return Err(StoreError::corrupt(
                    "log entry",
                    format!("entry at key {index} has index {}", entry.log_id.index),
                ));
            }
            machine.apply(&entry);
            report.replayed_entries += 1;
        }
    }
    if report.replayed_entries > 0 {
        // The replay's inserts split the nodes the decode had filled.
        machine.state.compact();
    }
    report.replay = started.elapsed();
    Ok((machine, report))
}

/// One dedicated thread that makes writes durable for every caller, group-commit style: each
/// request waits for a `sled::Db::flush` that started after the request was made, and all
/// requests that arrived during one flush share the next one.
///
/// Why not `sled::Tree::flush_async`: sled 0.34.7 runs that blocking flush on its own IO thread
/// pool, which is also where the IO-buffer writes a flush waits for are queued. With several
/// flushes in flight every pool thread ends up waiting in `make_stable` for a write that no
/// thread is free to run, and the node stops (found under load by the end-to-end benchmark;
/// `tests/regress/store_flush.rs`). Flushing from a thread of our own keeps sled's pool free.
#[derive(Debug)]
pub(crate) struct Flusher {
    requests: Option<std::sync::mpsc::Sender<tokio::sync::oneshot::Sender<Result<(), String>>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Flusher {
    /// Stop the thread and wait for it, so that dropping the store releases the database (and
    /// its directory lock) at once, as it would without the thread.
    fn drop(&mut self) {
        self.requests.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Flusher {
    fn start(db: sled::Db) -> Result<Flusher, StoreError> {
        let (tx, rx) =
            std::sync::mpsc::channel::<tokio::sync::oneshot::Sender<Result<(), String>>>();
        let thread = std::thread::Builder::new()
            .name("kms-store-flush".into())
            .spawn(move || {
                // Ends when the last handle (and so the sender) is dropped.
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    let result = db.flush().map(|_| ()).map_err(|e| e.to_string());
                    for w in waiting {
                        let _ = w.send(result.clone());
                    }
                }
            })
            .map_err(|e| StoreError::Task(format!("cannot start the flush thread: {e}")))?;
        Ok(Flusher {
            requests: Some(tx),
            thread: Some(thread),
        })
    }

    /// Wait until every write made before this call is on disk.
    async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.requests
            .as_ref()
            .ok_or_else(|| StoreError::Task("the store is closing".into()))?
            .send(tx)
            .map_err(|_| StoreError::Task("the flush thread stopped".into()))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Task(format!("flush failed: {e}"))),
            Err(_) => Err(StoreError::Task("the flush thread stopped".into())),
        }
    }
}

#[cfg(test)]
mod migration_tests {
    use super::*;
    use kms_core::{Command, FileTime, Guid, Pool, RecordRequest};
    use openraft::vote::RaftLeaderIdExt;

    /// A store laid out as format 1 wrote it: header 1, the snapshot data in `chunk/<n>`
    /// values of `chunk_len` bytes, a format-1 manifest, the applied position.
    fn write_v1_store(path: &Path, state: &kms_core::State, chunk_len: usize) -> Applied {
        let db = open_sled(path).unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.insert(meta_key::HEADER, codec::header_value(1))
            .unwrap();
        for tree in ["log", "journal"] {
            db.open_tree(tree).unwrap();
        }
        let data = codec::encode("snapshot data", state).unwrap();
        let chunks: Vec<&[u8]> = data.chunks(chunk_len).collect();
        let applied = Applied {
            last_applied: Some(LogId::new(crate::types::LeaderId::new_committed(3, 1), 42)),
            last_membership: StoredMembership::default(),
        };
        let snapshot = db.open_tree("snapshot").unwrap();
        for (i, c) in chunks.iter().enumerate() {
            snapshot.insert(chunk_key(i as u32), *c).unwrap();
        }
        let manifest = ManifestV1 {
            last_log_id: applied.last_applied,
            last_membership: applied.last_membership.clone(),
            chunks: chunks.len() as u32,
            len: data.len() as u64,
        };
        snapshot
            .insert(
                sm_key::MANIFEST,
                codec::encode("manifest", &manifest).unwrap(),
            )
            .unwrap();
        db.open_tree("sm")
            .unwrap()
            .insert(sm_key::APPLIED, codec::encode("applied", &applied).unwrap())
            .unwrap();
        db.flush().unwrap();
        applied
    }

    fn some_state() -> kms_core::State {
        let mut state = kms_core::State::default();
        let records = (1..=300u64)
            .map(|i| {
                let mut g = [0u8; 16];
                g[..8].copy_from_slice(&i.to_le_bytes());
                RecordRequest {
                    workstation: format!("PC-{i}.corp.example"),
                    source: format!("10.0.{}.{}:50000", i / 256, i % 256),
                    ..RecordRequest::new(i, Pool::Windows, Guid(g))
                }
            })
            .collect();
        state.apply(&Command::Record {
            at: FileTime::from_unix_secs(1_800_000_000),
            node: 1,
            records,
        });
        state
    }

    #[test]
    fn a_format_1_store_is_migrated_on_open_and_keeps_its_state() {
        let dir = tempfile::tempdir().unwrap();
        let state = some_state();
        let applied = write_v1_store(dir.path(), &state, 1000);
        {
            let store = Store::open(dir.path()).unwrap();
            let sm = store.state_machine();
            assert!(sm.read(|s| *s == state));
            assert_eq!(sm.last_applied(), applied.last_applied);
            let shared = &store.shared;
            let header = shared.meta.get(meta_key::HEADER).unwrap().unwrap();
            assert_eq!(codec::parse_header(&header).unwrap(), 2);
            assert!(
                shared
                    .snapshot
                    .scan_prefix(sm_key::CHUNK_PREFIX)
                    .next()
                    .is_none(),
                "the chunks are gone"
            );
            let (manifest, data) = shared.current_snapshot().unwrap().unwrap();
            assert_eq!(manifest.file_seq, 1);
            assert_eq!(manifest.last_log_id, applied.last_applied);
            assert_eq!(data, codec::encode("snapshot data", &state).unwrap());
        }
        // Opening again reads format 2 as it is.
        let store = Store::open(dir.path()).unwrap();
        assert!(store.state_machine().read(|s| *s == state));
    }

    #[test]
    fn a_format_1_store_without_a_snapshot_only_changes_its_header() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open_sled(dir.path()).unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert(meta_key::HEADER, codec::header_value(1))
                .unwrap();
            db.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert!(store.shared.manifest().unwrap().is_none());
        let header = store.shared.meta.get(meta_key::HEADER).unwrap().unwrap();
        assert_eq!(codec::parse_header(&header).unwrap(), 2);
    }

    #[test]
    fn a_damaged_format_1_snapshot_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        write_v1_store(dir.path(), &some_state(), 1000);
        {
            let db = open_sled(dir.path()).unwrap();
            db.open_tree("snapshot")
                .unwrap()
                .remove(chunk_key(1))
                .unwrap();
            db.flush().unwrap();
        }
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Corrupt { .. })
        ));
        let db = open_sled(dir.path()).unwrap();
        let header = db.open_tree("meta").unwrap().get(meta_key::HEADER).unwrap();
        assert_eq!(codec::parse_header(&header.unwrap()).unwrap(), 1);
    }
}
