//! Backup files: writing them (the admin API's `Backup` stream), reading and checking them,
//! and restoring one into a new cluster (`kmsd --restore FILE`).
//!
//! ## File format, version 1
//!
//! UTF-8 JSON Lines, one JSON object per line, `\n`-terminated:
//!
//! 1. **Header**: `{"kmsd_backup":1, …}` — the key `kmsd_backup` marks the file and holds the
//!    format version; then when and where it was taken ([`BackupHeader`]).
//! 2. `{"config":{…}}` — the replicated configuration (`kms_core::ReplicatedConfig`, serde).
//! 3. `{"identity":{…}|null}` — the host identity (`kms_core::HostIdentity`, serde).
//! 4. One `{"client":{"pool":"windows","cmid":"…","record":{…}}}` per stored client record
//!    (`kms_core::ClientRecord`, serde), ordered by pool then CMID.
//! 5. **Trailer**: `{"end":{"records":N,"sha256":"<hex>"}}` — the number of client lines and
//!    the SHA-256 of every byte before the trailer line.
//!
//! JSON rather than the snapshot's bincode: a backup outlives the binary that wrote it, and
//! named fields survive additive changes of the Rust types (a later reader fills new fields
//! with defaults). A reader refuses a newer format version, a missing or wrong trailer (a
//! truncated or edited file) and any line it cannot parse, naming the line.
//!
//! ## Restore
//!
//! [`restore`] writes, through the Raft log of a running node: the configuration, the client
//! records (as `Command::ImportClients` batches of [`IMPORT_BATCH`]), and the identity last.
//! The identity doubles as the completion mark: a cluster that already has the backup's
//! identity is left alone (so a `--restore` left in a unit file is harmless), and a cluster
//! holding only clients that the backup also holds (an interrupted restore) is restored again
//! (imports are idempotent). A cluster holding other clients is refused: restoring is for
//! new clusters.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use kms_cluster::{Node, WriteError};
use kms_core::{
    ClientMachineId, ClientRecord, Command, HostIdentity, Outcome, Pool, ReplicatedConfig,
};
use kms_wire::FileTime;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

/// The backup format version this build writes and the newest it reads.
pub const BACKUP_FORMAT_VERSION: u32 = 1;

/// Client records per `ImportClients` command during a restore.
pub const IMPORT_BATCH: usize = 1000;

/// How long a restore keeps retrying a write while the cluster has no leader.
const RESTORE_WRITE_PATIENCE: Duration = Duration::from_secs(120);

/// The first line of a backup file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// Format version ([`BACKUP_FORMAT_VERSION`]); its presence marks a kmsd backup.
    pub kmsd_backup: u32,
    /// When it was taken, Unix seconds.
    pub created_unix: i64,
    /// The node that answered the backup call.
    pub node_id: u64,
    /// That node's name.
    #[serde(default)]
    pub node_name: String,
    /// kmsd version of that node.
    #[serde(default)]
    pub kmsd_version: String,
    /// `kms_core::state::STATE_FORMAT_VERSION` of that node.
    #[serde(default)]
    pub state_format_version: u32,
    /// Raft term of the last log entry applied to the state it was taken from.
    #[serde(default)]
    pub term: u64,
    /// Last applied log index of the state it was taken from (read with the state, under one
    /// lock).
    #[serde(default)]
    pub applied_index: u64,
    /// Stored client records per pool name.
    #[serde(default)]
    pub clients: BTreeMap<String, u64>,
}

/// One client line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ClientLine {
    pool: String,
    cmid: ClientMachineId,
    record: ClientRecord,
}

/// The trailer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct EndLine {
    records: u64,
    sha256: String,
}

/// Every line after the header.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Config(ReplicatedConfig),
    Identity(Option<HostIdentity>),
    Client(ClientLine),
    End(EndLine),
}

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupContents {
    /// Where and when it was taken.
    pub header: BackupHeader,
    /// The replicated configuration.
    pub config: ReplicatedConfig,
    /// The host identity (absent only if the cluster had none yet).
    pub identity: Option<HostIdentity>,
    /// Every stored client record, ordered by pool then CMID.
    pub clients: Vec<(Pool, ClientMachineId, ClientRecord)>,
}

/// Why a backup file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Reading failed.
    #[error("cannot read the backup: {0}")]
    Io(#[from] std::io::Error),
    /// The first line is not a kmsd backup header.
    #[error("not a kmsd backup file (the first line is not a kmsd_backup header)")]
    NotABackup,
    /// Written by a newer kmsd.
    #[error("backup format version {0} is newer than this kmsd reads ({BACKUP_FORMAT_VERSION})")]
    Version(u32),
    /// A line does not parse or is out of place.
    #[error("line {line}: {detail}")]
    Line {
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        detail: String,
    },
    /// No trailer: the file was cut short.
    #[error("the backup is truncated (no end line)")]
    Truncated,
    /// The trailer's checksum or count does not match.
    #[error("the backup is corrupt: {0}")]
    Corrupt(String),
}

/// Encodes a backup incrementally, hashing as it goes.
#[derive(Debug)]
pub struct BackupWriter<W: Write> {
    out: W,
    hasher: Sha256,
    records: u64,
    bytes: u64,
}

impl<W: Write> BackupWriter<W> {
    /// Start a backup on `out` with its header, configuration and identity.
    pub fn new(
        out: W,
        header: &BackupHeader,
        config: &ReplicatedConfig,
        identity: Option<&HostIdentity>,
    ) -> std::io::Result<Self> {
        let mut w = BackupWriter {
            out,
            hasher: Sha256::new(),
            records: 0,
            bytes: 0,
        };
        w.line(header)?;
        w.line(&Line::Config(config.clone()))?;
        w.line(&Line::Identity(identity.cloned()))?;
        Ok(w)
    }

    /// Append one client record.
    pub fn client(
        &mut self,
        pool: Pool,
        cmid: &ClientMachineId,
        record: &ClientRecord,
    ) -> std::io::Result<()> {
        self.records += 1;
        self.line(&Line::Client(ClientLine {
            pool: pool.name().to_string(),
            cmid: *cmid,
            record: record.clone(),
        }))
    }

    /// Write the trailer; returns the output, the client count and the checksum.
    pub fn finish(mut self) -> std::io::Result<(W, u64, String)> {
        let sha256 = hex::encode(self.hasher.clone().finalize());
        let end = Line::End(EndLine {
            records: self.records,
            sha256: sha256.clone(),
        });
        let mut buf = serde_json::to_vec(&end).map_err(std::io::Error::other)?;
        buf.push(b'\n');
        self.out.write_all(&buf)?;
        self.out.flush()?;
        Ok((self.out, self.records, sha256))
    }

    /// Bytes written so far (trailer excluded).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn line<T: Serialize>(&mut self, value: &T) -> std::io::Result<()> {
        let mut buf = serde_json::to_vec(value).map_err(std::io::Error::other)?;
        buf.push(b'\n');
        self.hasher.update(&buf);
        self.bytes += buf.len() as u64;
        self.out.write_all(&buf)
    }
}

/// Encode `contents` into one buffer (tests and small states).
pub fn encode(contents: &BackupContents) -> Vec<u8> {
    let mut w = BackupWriter::new(
        Vec::new(),
        &contents.header,
        &contents.config,
        contents.identity.as_ref(),
    )
    .expect("writing to a Vec cannot fail");
    for (pool, cmid, record) in &contents.clients {
        w.client(*pool, cmid, record)
            .expect("writing to a Vec cannot fail");
    }
    w.finish().expect("writing to a Vec cannot fail").0
}

/// Read and check a backup (see the module doc for what is refused).
pub fn decode(input: impl BufRead) -> Result<BackupContents, BackupError> {
    let mut hasher = Sha256::new();
    let mut lines = input.split(b'\n');
    let mut n = 0u64;
    let line_err = |line: u64, detail: String| BackupError::Line { line, detail };

    let first = lines.next().ok_or(BackupError::NotABackup)??;
    n += 1;
    let header_value: serde_json::Value =
        serde_json::from_slice(&first).map_err(|_| BackupError::NotABackup)?;
    let version = header_value
        .get("kmsd_backup")
        .and_then(|v| v.as_u64())
        .ok_or(BackupError::NotABackup)?;
    if version > u64::from(BACKUP_FORMAT_VERSION) || version == 0 {
        return Err(BackupError::Version(
            u32::try_from(version).unwrap_or(u32::MAX),
        ));
    }
    let header: BackupHeader =
        serde_json::from_value(header_value).map_err(|e| line_err(1, e.to_string()))?;
    hasher.update(&first);
    hasher.update(b"\n");

    let mut config = None;
    let mut identity = None;
    let mut clients = Vec::new();
    for raw in lines {
        let raw = raw?;
        n += 1;
        if raw.is_empty() {
            continue;
        }
        let line: Line = serde_json::from_slice(&raw).map_err(|e| line_err(n, e.to_string()))?;
        match line {
            Line::Config(c) => {
                if config.replace(c).is_some() {
                    return Err(line_err(n, "a second config line".into()));
                }
            }
            Line::Identity(i) => {
                if identity.replace(i).is_some() {
                    return Err(line_err(n, "a second identity line".into()));
                }
            }
            Line::Client(c) => {
                let pool = Pool::from_name(&c.pool)
                    .ok_or_else(|| line_err(n, format!("unknown pool `{}`", c.pool)))?;
                clients.push((pool, c.cmid, c.record));
            }
            Line::End(end) => {
                let actual = hex::encode(hasher.clone().finalize());
                if !actual.eq_ignore_ascii_case(&end.sha256) {
                    return Err(BackupError::Corrupt(format!(
                        "SHA-256 is {actual}, the end line says {}",
                        end.sha256
                    )));
                }
                if end.records != clients.len() as u64 {
                    return Err(BackupError::Corrupt(format!(
                        "{} client lines, the end line says {}",
                        clients.len(),
                        end.records
                    )));
                }
                let config = config.ok_or_else(|| line_err(n, "no config line".into()))?;
                let identity = identity.ok_or_else(|| line_err(n, "no identity line".into()))?;
                return Ok(BackupContents {
                    header,
                    config,
                    identity,
                    clients,
                });
            }
        }
        hasher.update(&raw);
        hasher.update(b"\n");
    }
    Err(BackupError::Truncated)
}

/// Read and check the backup file at `path`.
pub fn read_file(path: &Path) -> Result<BackupContents, BackupError> {
    let f = std::fs::File::open(path)?;
    decode(std::io::BufReader::with_capacity(1 << 20, f))
}

/// What [`restore`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreSummary {
    /// The cluster already has the backup's identity: nothing was written.
    AlreadyRestored,
    /// Restored.
    Restored {
        /// Client records imported.
        clients: u64,
        /// Whether an identity was restored.
        identity: bool,
    },
}

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The file is unusable.
    #[error("{path}: {source}")]
    Backup {
        /// The file.
        path: String,
        /// Why.
        source: BackupError,
    },
    /// The cluster holds clients the backup does not.
    #[error(
        "the cluster already holds {foreign} client record(s) that are not in the backup; \
         --restore only bootstraps a new cluster (start it on an empty data directory), or \
         remove --restore to keep the current data"
    )]
    NotEmpty {
        /// Records not in the backup.
        foreign: u64,
    },
    /// A write was not committed.
    #[error("writing the restored {what} failed: {source}")]
    Write {
        /// What was being written.
        what: &'static str,
        /// Why.
        source: WriteError,
    },
    /// The state machine refused something from the backup.
    #[error("the cluster refused the restored {what}: {detail}")]
    Refused {
        /// What.
        what: &'static str,
        /// The refusal.
        detail: String,
    },
}

/// Restore the backup at `file` into the cluster of `node` (see the module doc). Call it once
/// the node has started, before it serves clients.
pub async fn restore(node: &Node, file: &Path) -> Result<RestoreSummary, RestoreError> {
    let path = file.display().to_string();
    let owned = file.to_path_buf();
    let contents = tokio::task::spawn_blocking(move || read_file(&owned))
        .await
        .map_err(|e| RestoreError::Backup {
            path: path.clone(),
            source: BackupError::Io(std::io::Error::other(e)),
        })?
        .map_err(|source| RestoreError::Backup {
            path: path.clone(),
            source,
        })?;
    info!(
        file = %path,
        created_unix = contents.header.created_unix,
        from_node = contents.header.node_id,
        clients = contents.clients.len(),
        "restoring backup"
    );
    if let Some(id) = &contents.identity
        && node.read(|s| s.identity() == Some(id))
    {
        info!(file = %path, "the cluster already has this backup's identity: restore skipped (remove --restore)");
        return Ok(RestoreSummary::AlreadyRestored);
    }
    let wanted: BTreeSet<(Pool, ClientMachineId)> =
        contents.clients.iter().map(|(p, c, _)| (*p, *c)).collect();
    let foreign = node.read(|s| {
        s.export_clients()
            .filter(|(p, c, _)| !wanted.contains(&(*p, *c)))
            .count() as u64
    });
    if foreign > 0 {
        return Err(RestoreError::NotEmpty { foreign });
    }

    match write(
        node,
        Command::SetConfig(contents.config.clone()),
        "configuration",
    )
    .await?
    {
        Outcome::ConfigSet => {}
        other => {
            return Err(RestoreError::Refused {
                what: "configuration",
                detail: format!("{other:?}"),
            });
        }
    }
    let mut imported = 0u64;
    for pool in Pool::ALL {
        let records: Vec<(ClientMachineId, ClientRecord)> = contents
            .clients
            .iter()
            .filter(|(p, _, _)| *p == pool)
            .map(|(_, c, r)| (*c, r.clone()))
            .collect();
        for batch in records.chunks(IMPORT_BATCH) {
            let cmd = Command::ImportClients {
                pool,
                records: batch.to_vec(),
            };
            match write(node, cmd, "client records").await? {
                Outcome::Imported { added, merged } => imported += added + merged,
                other => {
                    return Err(RestoreError::Refused {
                        what: "client records",
                        detail: format!("{other:?}"),
                    });
                }
            }
        }
    }
    let identity = match &contents.identity {
        Some(id) => {
            match write(node, Command::SetIdentity(id.clone()), "identity").await? {
                Outcome::IdentitySet => {}
                other => {
                    return Err(RestoreError::Refused {
                        what: "identity",
                        detail: format!("{other:?}"),
                    });
                }
            }
            true
        }
        None => false,
    };
    info!(file = %path, clients = imported, identity, "backup restored");
    Ok(RestoreSummary::Restored {
        clients: imported,
        identity,
    })
}

/// Write `cmd`, retrying while no leader is reachable (a new cluster may still be electing).
async fn write(node: &Node, cmd: Command, what: &'static str) -> Result<Outcome, RestoreError> {
    let start = std::time::Instant::now();
    loop {
        match node.writer().write(cmd.clone()).await {
            Ok(o) => return Ok(o),
            Err(e) if start.elapsed() < RESTORE_WRITE_PATIENCE => {
                warn!(error = %e, what, "restore write not committed yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(source) => return Err(RestoreError::Write { what, source }),
        }
    }
}

/// The header of a backup taken now from `node`'s state.
pub(crate) fn header_now(
    node_id: u64,
    node_name: &str,
    term: u64,
    applied_index: u64,
    clients: BTreeMap<String, u64>,
) -> BackupHeader {
    BackupHeader {
        kmsd_backup: BACKUP_FORMAT_VERSION,
        created_unix: FileTime::from_system_time(SystemTime::now()).unix_secs(),
        node_id,
        node_name: node_name.to_string(),
        kmsd_version: env!("CARGO_PKG_VERSION").to_string(),
        state_format_version: kms_core::state::STATE_FORMAT_VERSION,
        term,
        applied_index,
        clients,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kms_core::{Guid, RecordRequest, State};

    fn sample() -> BackupContents {
        let mut s = State::default();
        let at = FileTime::from_unix_secs(1_750_000_000);
        let mut reqs = Vec::new();
        for n in 0..5u8 {
            let mut r = RecordRequest::new(u64::from(n), Pool::Windows, Guid([n + 1; 16]));
            r.workstation = format!("PC-{n} \"quoted\" ünïcode\n");
            reqs.push(r);
        }
        reqs.push(RecordRequest::new(9, Pool::Office2010, Guid([9; 16])));
        s.apply(&Command::Record {
            at,
            node: 2,
            records: reqs,
        });
        let identity = HostIdentity::generate(&mut |b: &mut [u8]| b.fill(7), at, true);
        let mut config = ReplicatedConfig {
            renewal_interval_minutes: 60,
            ..ReplicatedConfig::default()
        };
        config.seat_limits.groups.insert(Guid([3; 16]), 10);
        BackupContents {
            header: header_now(1, "kmsd-1", 3, 42, BTreeMap::new()),
            config,
            identity: Some(identity),
            clients: s.export_clients().collect(),
        }
    }

    #[test]
    fn round_trip() {
        let c = sample();
        let bytes = encode(&c);
        assert!(bytes.starts_with(b"{\"kmsd_backup\":1,"));
        let back = decode(&bytes[..]).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.clients.len(), 6);
    }

    #[test]
    fn damage_is_detected() {
        let bytes = encode(&sample());
        // Truncated anywhere before the end line.
        let cut = bytes.len() - 20;
        assert!(matches!(
            decode(&bytes[..cut]),
            Err(BackupError::Line { .. } | BackupError::Truncated)
        ));
        let last_nl = bytes[..bytes.len() - 1]
            .iter()
            .rposition(|b| *b == b'\n')
            .unwrap();
        assert!(matches!(
            decode(&bytes[..=last_nl]),
            Err(BackupError::Truncated)
        ));
        // One byte changed inside a record.
        let text = String::from_utf8(bytes.clone()).unwrap();
        let edited = text.replacen("\"request_count\":1", "\"request_count\":2", 1);
        assert_ne!(edited, text);
        let e = decode(edited.as_bytes()).unwrap_err();
        assert!(matches!(e, BackupError::Corrupt(_)), "{e}");
        // A line dropped (and the checksum recomputed would still miss the count).
        let mut lines: Vec<&str> = text.lines().collect();
        lines.remove(4);
        let e = decode(lines.join("\n").as_bytes()).unwrap_err();
        assert!(matches!(e, BackupError::Corrupt(_)), "{e}");
        // Not a backup, newer version, garbage line.
        assert!(matches!(
            decode(&b"hello\n"[..]),
            Err(BackupError::NotABackup)
        ));
        assert!(matches!(decode(&b""[..]), Err(BackupError::NotABackup)));
        let newer = text.replacen("{\"kmsd_backup\":1", "{\"kmsd_backup\":2", 1);
        assert!(matches!(
            decode(newer.as_bytes()),
            Err(BackupError::Version(2))
        ));
        let garbage = text.replacen("{\"client\"", "{\"clyent\"", 1);
        let e = decode(garbage.as_bytes()).unwrap_err();
        assert!(matches!(e, BackupError::Line { line: 4, .. }), "{e}");
    }
}
