//! The replicated state machine (DESIGN §4): client inventory per pool, replicated config and
//! host identity. `kms-store` persists it and feeds it committed [`Command`]s; every replica
//! that applies the same commands in the same order holds an equal [`State`].
//!
//! ## Determinism
//!
//! [`State::apply`] reads no clock and no randomness: every time comes from the command
//! (`Record::at`, `Prune::before`). Maps are `BTreeMap`s, so iteration and serialization order
//! are fixed and a serialized snapshot is byte-identical on every replica.
//!
//! ## Recording clients
//!
//! A [`Command::Record`] carries a batch of [`RecordRequest`]s proposed by node `node` at time
//! `at`. For each request, in order:
//!
//! 1. **Seat limits** (if configured): a CMID that is not live in the pool (not seen within the
//!    count window before `at`) needs a free seat: refused with 0xC004F042 if the pool already
//!    has `limit` live clients. Likewise per product group, where "live in the group" means live
//!    with the same KMS counted id. Live clients always renew. A refused request changes
//!    nothing, so limits are never exceeded by recording (only by lowering a limit below the
//!    current usage, after which no new client is admitted until enough expire).
//! 2. **Upsert** the [`ClientRecord`]: `first_seen = min`, `last_seen = max` of the stored value
//!    and `at`, so a late or replayed record never moves `last_seen` backwards. The descriptive
//!    fields (product, SKU, workstation, license status, VM flag, N, protocol, node, source)
//!    take the values of the record with the newest `at` (ties: the later one applied).
//! 3. **Duplicates**: if the workstation name differs from the stored one (first DNS label,
//!    ASCII case-insensitive, so `PC1` and `pc1.corp.example` are the same machine), the
//!    record is flagged `duplicate` (sticky) and the other name kept in `duplicate_workstation`.
//! 4. **Request count**: `request_count` counts *recorded* requests (renewals answered without
//!    a write, see [`State::needs_write`], are not recorded). A request id already among the
//!    record's last [`RECENT_REQUEST_IDS`] ids is not counted again, so replaying a degraded-
//!    mode journal whose entries were already committed changes nothing.
//! 5. The outcome carries the pool count *after* this request, so a client sees itself.
//!
//! Callers should put requests of one point in time into one `Record` (the batcher's 2 ms
//! window); a journal replay sets each request's `seen_at` to its original time, so replays can
//! be batched without moving `first_seen`/`last_seen`.
//!
//! ## Counting ([`State::pool_count`])
//!
//! `live` = distinct CMIDs of the pool with `last_seen ≥ now − count_window`; `max_required`
//! = largest N among them; `reported` = `min(live, 2 × max_required)` ([`CountReport::Capped`],
//! Microsoft's cache capacity: 50 once a Windows client is live, 10 with only servers or for
//! Office) or `live` ([`CountReport::Exact`]). `threshold_hint` is the activation threshold the
//! pool's clients wait for: 25 for the Windows pool once a live client sent N ≥ 25, else 5.
//! Counting scans the pool once (`O(clients)`); a `Record` batch scans each touched pool once
//! and then updates the tally incrementally.
//!
//! ## Backup and restore
//!
//! [`State::export_clients`] lists every stored record; [`Command::ImportClients`] brings
//! records back verbatim (restoring a backup into a new cluster), merging with stored records
//! of the same CMID by rules that make a repeated import a no-op. Imports bypass seat limits.
//!
//! ## Bounded inventory
//!
//! [`Command::Prune`] drops records whose `last_seen` is before `before`; the leader proposes
//! [`State::prune_command`] (`now − retention`) hourly. Workstation names and source
//! addresses are truncated to [`MAX_TEXT_CHARS`] characters.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use kms_wire::{Epid, FileTime, Hresult};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, CountReport, ReplicatedConfig};
use crate::identity::{HostIdentity, IdentityError};
use crate::pool::PerPool;
pub use crate::pool::Pool;
use crate::record::Stored;
use crate::time::sub_secs;
use crate::{ClientMachineId, KmsCountedId, SkuId};
use kms_wire::filetime::TICKS_PER_SECOND;

/// Version of the serialized [`State`] layout; `kms-store` writes it into its snapshot header
/// and refuses snapshots of another version.
pub const STATE_FORMAT_VERSION: u32 = 1;

/// How many recent request ids a [`ClientRecord`] remembers for deduplication.
pub const RECENT_REQUEST_IDS: usize = 8;

/// Longest stored workstation name or source address, in characters (the wire allows 63).
pub const MAX_TEXT_CHARS: usize = 64;

/// Threshold of Windows client editions (N = 25).
pub const WINDOWS_CLIENT_THRESHOLD: u32 = 25;
/// Threshold of Windows Server and Office (N = 5).
pub const SERVER_OFFICE_THRESHOLD: u32 = 5;

/// Identifier of one recorded request, unique in the cluster (for example
/// `node_id << 48 | sequence`, or random). Used only to deduplicate replays.
pub type RequestId = u64;

/// What a node records about one accepted request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordRequest {
    /// Unique id of this request (see [`RequestId`]).
    pub request_id: RequestId,
    /// Pool decided by [`crate::policy::decide`].
    pub pool: Pool,
    /// The client's CMID.
    pub client_machine_id: ClientMachineId,
    /// The client's previous CMID (all zero if none).
    pub previous_client_machine_id: ClientMachineId,
    /// Product group requested.
    pub kms_counted_id: KmsCountedId,
    /// Edition requested.
    pub sku_id: SkuId,
    /// Workstation name the client sent (untrusted text).
    pub workstation: String,
    /// License status the client sent (0 … 6).
    pub license_status: u32,
    /// Whether the client said it is a VM.
    pub is_vm: bool,
    /// The client's N policy.
    pub required_count: u32,
    /// Protocol major version (4, 5, 6).
    pub protocol_version: u16,
    /// Peer address the request came from, as text.
    pub source: String,
    /// When the request was answered, if earlier than the command's `at` (journal replays keep
    /// their original time this way, however they are batched). `None`: the command's `at`.
    #[serde(default)]
    pub seen_at: Option<FileTime>,
}

impl RecordRequest {
    /// A request with only the identifying fields set (for tests and tools): no product
    /// group, SKU or workstation, license status 0, N = 25 for the Windows pool and 5
    /// otherwise, protocol 6.
    pub fn new(request_id: RequestId, pool: Pool, client_machine_id: ClientMachineId) -> Self {
        RecordRequest {
            request_id,
            pool,
            client_machine_id,
            previous_client_machine_id: ClientMachineId::NIL,
            kms_counted_id: KmsCountedId::NIL,
            sku_id: SkuId::NIL,
            workstation: String::new(),
            license_status: 0,
            is_vm: false,
            required_count: match pool {
                Pool::Windows => WINDOWS_CLIENT_THRESHOLD,
                _ => SERVER_OFFICE_THRESHOLD,
            },
            protocol_version: 6,
            source: String::new(),
            seen_at: None,
        }
    }
}

/// Everything the cluster knows about one client machine (one CMID in one pool).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    /// Time of the oldest recorded request.
    pub first_seen: FileTime,
    /// Time of the newest recorded request; the record counts while this is within the count
    /// window.
    pub last_seen: FileTime,
    /// Product group of the newest request.
    pub kms_counted_id: KmsCountedId,
    /// Edition of the newest request.
    pub sku_id: SkuId,
    /// Previous CMID sent with the newest request (all zero if none).
    pub previous_client_machine_id: ClientMachineId,
    /// Workstation name of the newest request.
    pub workstation: String,
    /// License status of the newest request.
    pub license_status: u32,
    /// VM flag of the newest request.
    pub is_vm: bool,
    /// N policy of the newest request.
    pub required_count: u32,
    /// Protocol version of the newest request.
    pub protocol_version: u16,
    /// Node that recorded the newest request.
    pub last_node: u64,
    /// Source address of the newest request.
    pub last_source: String,
    /// Number of recorded requests (deduplicated by request id, see the module doc). The
    /// state keeps it in 32 bits: it saturates at `u32::MAX`.
    pub request_count: u64,
    /// The same CMID was seen from different workstation names (a cloned, not generalized
    /// image).
    pub duplicate: bool,
    /// The other workstation name seen most recently, when `duplicate`.
    pub duplicate_workstation: Option<String>,
    /// The last [`RECENT_REQUEST_IDS`] recorded request ids, oldest first.
    pub recent_request_ids: Vec<RequestId>,
}

/// A pool's count at some time (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolCount {
    /// Distinct CMIDs seen within the count window.
    pub live: u32,
    /// Count to put into responses (`currentCount`).
    pub reported: u32,
    /// The activation threshold the pool's clients need (25 or 5).
    pub threshold_hint: u32,
    /// Largest N among live clients (0 if none).
    pub max_required: u32,
    /// Live clients flagged as duplicate CMIDs (same CMID from different workstations).
    pub duplicates: u32,
}

/// Why a recorded request was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordRefusal {
    /// The pool already has `limit` live clients.
    PoolSeatLimit {
        /// The pool.
        pool: Pool,
        /// Its configured cap.
        limit: u32,
    },
    /// The product group already has `limit` live clients.
    GroupSeatLimit {
        /// The product group.
        kms_counted_id: KmsCountedId,
        /// Its configured cap.
        limit: u32,
    },
}

/// Result of one [`RecordRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordOutcome {
    /// Recorded; `count` is the pool count right after it.
    Accepted {
        /// Pool count including this client.
        count: PoolCount,
        /// The CMID was not live in the pool before (it took a new seat).
        new_client: bool,
    },
    /// Not recorded; answer the client with `hresult` (0xC004F042).
    Refused {
        /// HRESULT for the response.
        hresult: Hresult,
        /// Why.
        reason: RecordRefusal,
    },
}

/// A change to the replicated state. Every variant is deterministic to apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Record a batch of accepted requests handled by `node` at time `at`.
    Record {
        /// The proposing node's clock when it handled the requests.
        at: FileTime,
        /// The proposing node's id.
        node: u64,
        /// The requests, applied in order.
        records: Vec<RecordRequest>,
    },
    /// Drop every client record whose `last_seen` is before `before`.
    Prune {
        /// Cutoff (normally `now − retention`).
        before: FileTime,
    },
    /// Drop one client record.
    Forget {
        /// Its pool.
        pool: Pool,
        /// Its CMID.
        cmid: ClientMachineId,
    },
    /// Replace the configuration (only if it validates).
    SetConfig(ReplicatedConfig),
    /// Replace the host identity (only if it validates).
    SetIdentity(HostIdentity),
    /// Set the host identity only if none is set yet, so nodes racing to initialise agree on
    /// the first one committed.
    InitIdentity(HostIdentity),
    /// Add or replace a node's directory entry.
    RegisterNode(NodeRecord),
    /// Remove a node's directory entry (after it left the cluster).
    RemoveNode {
        /// Node id.
        id: u64,
    },
    /// Import client records verbatim (restoring a backup): each record is inserted as it is
    /// or, if the CMID is already in the pool, merged with the stored record (see
    /// [`merge_imported`] for the rules). Seat limits are not applied: an import restores what
    /// a cluster already admitted. Applying the same import twice changes nothing the second
    /// time.
    ImportClients {
        /// The pool the records belong to.
        pool: Pool,
        /// The records, by CMID.
        records: Vec<(ClientMachineId, ClientRecord)>,
    },
}

/// The result of applying a [`Command`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Nothing was applied. `State::apply` never returns it; the store answers Raft entries
    /// that carry no [`Command`] (blank and membership entries) with it.
    Done,
    /// For [`Command::Record`]: one outcome per request, in order.
    Recorded(Vec<RecordOutcome>),
    /// For [`Command::Prune`]: how many records were dropped.
    Pruned {
        /// Number of records removed.
        removed: u64,
    },
    /// For [`Command::Forget`]: the removed record, if there was one.
    Forgotten(Option<Box<ClientRecord>>),
    /// The configuration was replaced.
    ConfigSet,
    /// The configuration was invalid; nothing changed.
    ConfigRejected(ConfigError),
    /// The identity was replaced (SetIdentity) or initialised (InitIdentity).
    IdentitySet,
    /// InitIdentity found an identity already set; nothing changed.
    IdentityAlreadySet,
    /// The identity was invalid; nothing changed.
    IdentityRejected(IdentityError),
    /// A node directory entry was added, replaced or removed.
    NodesChanged,
    /// For [`Command::ImportClients`]: how many records were new and how many merged into
    /// stored ones.
    Imported {
        /// Records of CMIDs the pool did not hold.
        added: u64,
        /// Records merged into a stored record of the same CMID.
        merged: u64,
    },
}

/// The replicated state (see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StateRepr")]
pub struct State {
    /// Client records per pool, in their compact form (see `record.rs`), which serializes
    /// exactly as [`ClientRecord`].
    pools: PerPool<BTreeMap<ClientMachineId, Stored>>,
    config: ReplicatedConfig,
    identity: Option<HostIdentity>,
    /// The node directory: how each node is reached and published in DNS.
    #[serde(default)]
    nodes: BTreeMap<u64, NodeRecord>,
    /// Indexes derived from `pools` (never serialized; rebuilt on load).
    #[serde(skip)]
    derived: Derived,
}

/// The serialized form of [`State`]; deserializing rebuilds the derived indexes.
#[derive(Deserialize)]
struct StateRepr {
    pools: PerPool<BulkMap>,
    config: ReplicatedConfig,
    identity: Option<HostIdentity>,
    #[serde(default)]
    nodes: BTreeMap<u64, NodeRecord>,
}

impl From<StateRepr> for State {
    fn from(r: StateRepr) -> State {
        let mut s = State {
            pools: PerPool {
                windows: r.pools.windows.0,
                office2010: r.pools.office2010.0,
                office2013_plus: r.pools.office2013_plus.0,
            },
            config: r.config,
            identity: r.identity,
            nodes: r.nodes,
            derived: Derived::default(),
        };
        s.rebuild_derived();
        s
    }
}

/// A pool's records as read from a snapshot: the same encoding as the `BTreeMap` it becomes,
/// but collected into a vector first and then bulk-built, which fills the tree's nodes. Inserting
/// one by one in key order (what deserializing straight into a `BTreeMap` does) leaves every
/// node about half full: with a million clients that is ~150 MB more memory after a restart
/// (docs/performance.md).
struct BulkMap(BTreeMap<ClientMachineId, Stored>);

impl<'de> Deserialize<'de> for BulkMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<BulkMap, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = BulkMap;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of client records")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<BulkMap, A::Error> {
                // The length comes from the data: trust it only up to a bound, grow past it.
                let mut v = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(entry) = map.next_entry::<ClientMachineId, Stored>()? {
                    v.push(entry);
                }
                // Sorted already (it was written from a BTreeMap); from_iter sorts stably and
                // keeps the last of equal keys, as inserting would.
                Ok(BulkMap(BTreeMap::from_iter(v)))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// Derived, non-replicated indexes that make counting `O(changes)` instead of `O(clients)`:
/// per pool, every record ordered by `last_seen`, and a tally of the live records at the cutoff
/// of the last applied batch. A count at another cutoff adjusts a copy of the tally by the
/// records whose `last_seen` lies between the two cutoffs (normally a handful).
#[derive(Clone, Default)]
struct Derived {
    index: PerPool<BTreeSet<(FileTime, ClientMachineId)>>,
    tallies: PerPool<Option<Tally>>,
}

impl PartialEq for Derived {
    fn eq(&self, _: &Derived) -> bool {
        true // derived from the compared fields
    }
}

impl Eq for Derived {}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Derived { .. }")
    }
}

/// How one node is reached and published (registered by the node itself, so every node can
/// render DNS records and status pages for all of them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node id.
    pub id: u64,
    /// Node name (a DNS label).
    pub name: String,
    /// Advertised host (IP literal or DNS name), without port.
    pub host: String,
    /// Advertised KMS port.
    pub kms_port: u16,
    /// Advertised gRPC address (host:port).
    pub grpc_addr: String,
    /// SRV priority (lower is preferred).
    pub dns_priority: u16,
    /// SRV weight among equal priorities.
    pub dns_weight: u16,
}

/// Live-client tally of one pool at one cutoff, updated incrementally while a batch applies.
#[derive(Debug, Clone)]
struct Tally {
    cutoff: FileTime,
    live: u64,
    /// Live records flagged duplicate.
    duplicates: u64,
    /// N → number of live records with that N.
    required: BTreeMap<u32, u64>,
    /// Product group → number of live records.
    groups: BTreeMap<KmsCountedId, u64>,
}

impl Tally {
    fn build<'a>(records: impl Iterator<Item = &'a Stored>, cutoff: FileTime) -> Tally {
        let mut t = Tally {
            cutoff,
            live: 0,
            duplicates: 0,
            required: BTreeMap::new(),
            groups: BTreeMap::new(),
        };
        for r in records {
            t.add(r);
        }
        t
    }

    fn is_live(&self, r: &Stored) -> bool {
        r.last_seen() >= self.cutoff
    }

    fn add(&mut self, r: &Stored) {
        if self.is_live(r) {
            self.live += 1;
            self.duplicates += u64::from(r.duplicate());
            *self.required.entry(r.required_count()).or_default() += 1;
            *self.groups.entry(r.kms_counted_id()).or_default() += 1;
        }
    }

    fn remove(&mut self, r: &Stored) {
        if self.is_live(r) {
            self.live = self.live.saturating_sub(1);
            self.duplicates = self.duplicates.saturating_sub(u64::from(r.duplicate()));
            decrement(&mut self.required, r.required_count());
            decrement(&mut self.groups, r.kms_counted_id());
        }
    }

    /// Move the cutoff to `cutoff`, adjusting for the records whose `last_seen` lies between
    /// the old and the new cutoff (found through `index`).
    fn move_cutoff(
        &mut self,
        cutoff: FileTime,
        records: &BTreeMap<ClientMachineId, Stored>,
        index: &BTreeSet<(FileTime, ClientMachineId)>,
    ) {
        let old = self.cutoff;
        if cutoff == old {
            return;
        }
        let (lo, hi) = if cutoff > old {
            (old, cutoff)
        } else {
            (cutoff, old)
        };
        // Records with lo ≤ last_seen < hi.
        let between = index.range((lo, ClientMachineId::NIL)..(hi, ClientMachineId::NIL));
        if cutoff > old {
            // Records in [old, new) were live and expire.
            for (_, cmid) in between {
                if let Some(r) = records.get(cmid) {
                    self.remove(r);
                }
            }
            self.cutoff = cutoff;
        } else {
            // Records in [new, old) come back into the window.
            self.cutoff = cutoff;
            for (_, cmid) in between {
                if let Some(r) = records.get(cmid) {
                    self.add(r);
                }
            }
        }
    }

    fn group(&self, id: &KmsCountedId) -> u64 {
        self.groups.get(id).copied().unwrap_or(0)
    }

    fn count(&self, pool: Pool, mode: CountReport) -> PoolCount {
        let live = u32::try_from(self.live).unwrap_or(u32::MAX);
        let max_required = self.required.keys().next_back().copied().unwrap_or(0);
        let reported = match mode {
            CountReport::Exact => live,
            CountReport::Capped => live.min(max_required.saturating_mul(2)),
        };
        let threshold_hint = match pool {
            Pool::Windows if max_required >= WINDOWS_CLIENT_THRESHOLD => WINDOWS_CLIENT_THRESHOLD,
            _ => SERVER_OFFICE_THRESHOLD,
        };
        PoolCount {
            live,
            reported,
            threshold_hint,
            max_required,
            duplicates: u32::try_from(self.duplicates).unwrap_or(u32::MAX),
        }
    }
}

fn decrement<K: Ord>(m: &mut BTreeMap<K, u64>, k: K) {
    if let Some(v) = m.get_mut(&k) {
        *v -= 1;
        if *v == 0 {
            m.remove(&k);
        }
    }
}

/// At most [`MAX_TEXT_CHARS`] characters of `s`.
fn bounded(s: &str) -> String {
    bounded_str(s).to_string()
}

/// The prefix of `s` of at most [`MAX_TEXT_CHARS`] characters.
fn bounded_str(s: &str) -> &str {
    match s.char_indices().nth(MAX_TEXT_CHARS) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// Whether two workstation names denote the same machine: equal first DNS label, ASCII
/// case-insensitive (`PC1` = `pc1.corp.example`). Empty names are never compared by the state
/// machine (a client without a name is not evidence of a clone).
pub fn same_workstation(a: &str, b: &str) -> bool {
    fn label(s: &str) -> &str {
        s.trim().split('.').next().unwrap_or("")
    }
    label(a).eq_ignore_ascii_case(label(b))
}

/// Filter and paging for [`State::clients`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientFilter {
    /// Only this pool.
    pub pool: Option<Pool>,
    /// Only this product group.
    pub kms_counted_id: Option<KmsCountedId>,
    /// Only clients with `last_seen ≥ seen_since`.
    pub seen_since: Option<FileTime>,
    /// Only clients with `last_seen < seen_before`.
    pub seen_before: Option<FileTime>,
    /// Only workstation names containing this text (ASCII case-insensitive).
    pub workstation_contains: Option<String>,
    /// Only clients flagged as duplicate CMIDs.
    pub duplicates_only: bool,
    /// Start after this position (the previous page's `next`).
    pub after: Option<(Pool, ClientMachineId)>,
    /// Page size; 0 means the default of 100. At most 10 000.
    pub limit: usize,
}

/// One client in a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientEntry {
    /// Its pool.
    pub pool: Pool,
    /// Its CMID.
    pub client_machine_id: ClientMachineId,
    /// Its record.
    pub record: ClientRecord,
}

/// A page of [`State::clients`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientPage {
    /// Matching clients, ordered by pool then CMID.
    pub clients: Vec<ClientEntry>,
    /// Position to pass as `after` for the next page; `None` when this was the last page.
    pub next: Option<(Pool, ClientMachineId)>,
}

/// Which seat cap a [`SeatUsage`] describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeatScope {
    /// A pool's cap.
    Pool(Pool),
    /// A product group's cap.
    Group(KmsCountedId),
}

/// Usage of one configured seat cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatUsage {
    /// The cap.
    pub scope: SeatScope,
    /// Live clients counted against it.
    pub used: u32,
    /// The cap.
    pub limit: u32,
}

impl SeatUsage {
    /// At or above 90 % of the cap (DESIGN §4 warning level).
    pub fn is_warning(&self) -> bool {
        u64::from(self.used) * 10 >= u64::from(self.limit) * 9
    }
}

impl State {
    /// Apply one command (see the module doc). Never panics, never reads the clock.
    pub fn apply(&mut self, cmd: &Command) -> Outcome {
        match cmd {
            Command::Record { at, node, records } => {
                Outcome::Recorded(self.apply_record(*at, *node, records))
            }
            Command::Prune { before } => {
                let mut removed = 0u64;
                for pool in Pool::ALL {
                    let map = self.pools.get_mut(pool);
                    let index = self.derived.index.get_mut(pool);
                    let tally = self.derived.tallies.get_mut(pool);
                    // The index is ordered by last_seen: the pruned records are its prefix.
                    let keep = index.split_off(&(*before, ClientMachineId::NIL));
                    for (_, cmid) in std::mem::replace(index, keep) {
                        if let Some(r) = map.remove(&cmid) {
                            if let Some(t) = tally.as_mut() {
                                t.remove(&r);
                            }
                            removed += 1;
                        }
                    }
                }
                Outcome::Pruned { removed }
            }
            Command::Forget { pool, cmid } => {
                let removed = self.pools.get_mut(*pool).remove(cmid);
                if let Some(r) = &removed {
                    self.derived
                        .index
                        .get_mut(*pool)
                        .remove(&(r.last_seen(), *cmid));
                    if let Some(t) = self.derived.tallies.get_mut(*pool).as_mut() {
                        t.remove(r);
                    }
                }
                Outcome::Forgotten(removed.map(|r| Box::new(r.to_record())))
            }
            Command::SetConfig(c) => match c.validate() {
                Ok(()) => {
                    self.config = c.clone();
                    Outcome::ConfigSet
                }
                Err(e) => Outcome::ConfigRejected(e),
            },
            Command::SetIdentity(id) => match id.validate() {
                Ok(()) => {
                    self.identity = Some(id.clone());
                    Outcome::IdentitySet
                }
                Err(e) => Outcome::IdentityRejected(e),
            },
            Command::RegisterNode(n) => {
                let mut n = n.clone();
                n.name = bounded(&n.name);
                n.host = bounded(&n.host);
                n.grpc_addr = bounded(&n.grpc_addr);
                self.nodes.insert(n.id, n);
                Outcome::NodesChanged
            }
            Command::RemoveNode { id } => {
                self.nodes.remove(id);
                Outcome::NodesChanged
            }
            Command::ImportClients { pool, records } => self.apply_import(*pool, records),
            Command::InitIdentity(id) => {
                if self.identity.is_some() {
                    return Outcome::IdentityAlreadySet;
                }
                match id.validate() {
                    Ok(()) => {
                        self.identity = Some(id.clone());
                        Outcome::IdentitySet
                    }
                    Err(e) => Outcome::IdentityRejected(e),
                }
            }
        }
    }

    fn apply_record(
        &mut self,
        at: FileTime,
        node: u64,
        requests: &[RecordRequest],
    ) -> Vec<RecordOutcome> {
        let cutoff = sub_secs(at, self.config.count_window_secs);
        let mode = self.config.count_report;
        let mut out = Vec::with_capacity(requests.len());
        for req in requests {
            let pool = req.pool;
            let map = self.pools.get_mut(pool);
            let index = self.derived.index.get_mut(pool);
            let tally = self
                .derived
                .tallies
                .get_mut(pool)
                .get_or_insert_with(|| Tally::build(map.values(), cutoff));
            tally.move_cutoff(cutoff, map, index);
            let existing = map.get(&req.client_machine_id);
            let live_in_pool = existing.is_some_and(|r| tally.is_live(r));

            if !live_in_pool
                && let Some(limit) = self.config.seat_limits.pool(pool)
                && tally.live >= u64::from(limit)
            {
                out.push(RecordOutcome::Refused {
                    hresult: Hresult::KMS_ID_MISMATCH,
                    reason: RecordRefusal::PoolSeatLimit { pool, limit },
                });
                continue;
            }
            let live_in_group = existing
                .is_some_and(|r| tally.is_live(r) && r.kms_counted_id() == req.kms_counted_id);
            if !live_in_group
                && let Some(limit) = self.config.seat_limits.group(&req.kms_counted_id)
                && tally.group(&req.kms_counted_id) >= u64::from(limit)
            {
                out.push(RecordOutcome::Refused {
                    hresult: Hresult::KMS_ID_MISMATCH,
                    reason: RecordRefusal::GroupSeatLimit {
                        kms_counted_id: req.kms_counted_id,
                        limit,
                    },
                });
                continue;
            }

            // A replayed request keeps the time it was answered at.
            let seen = req.seen_at.unwrap_or(at);
            let record = match map.get_mut(&req.client_machine_id) {
                Some(r) => {
                    tally.remove(r);
                    index.remove(&(r.last_seen(), req.client_machine_id));
                    update_record(r, seen, node, req);
                    index.insert((r.last_seen(), req.client_machine_id));
                    &*r
                }
                None => {
                    let r = map
                        .entry(req.client_machine_id)
                        .or_insert_with(|| new_record(seen, node, req));
                    index.insert((r.last_seen(), req.client_machine_id));
                    &*r
                }
            };
            tally.add(record);
            out.push(RecordOutcome::Accepted {
                count: tally.count(pool, mode),
                new_client: !live_in_pool,
            });
        }
        out
    }

    fn apply_import(&mut self, pool: Pool, records: &[(ClientMachineId, ClientRecord)]) -> Outcome {
        let map = self.pools.get_mut(pool);
        let index = self.derived.index.get_mut(pool);
        let mut tally = self.derived.tallies.get_mut(pool).as_mut();
        let (mut added, mut merged) = (0u64, 0u64);
        for (cmid, imported) in records {
            let imported = sanitized_import(imported);
            match map.get_mut(cmid) {
                Some(r) => {
                    if let Some(t) = tally.as_deref_mut() {
                        t.remove(r);
                    }
                    index.remove(&(r.last_seen(), *cmid));
                    let mut record = r.to_record();
                    merge_imported(&mut record, &imported);
                    *r = Stored::from_record(record);
                    index.insert((r.last_seen(), *cmid));
                    if let Some(t) = tally.as_deref_mut() {
                        t.add(r);
                    }
                    merged += 1;
                }
                None => {
                    index.insert((imported.last_seen, *cmid));
                    let imported = Stored::from_record(imported);
                    if let Some(t) = tally.as_deref_mut() {
                        t.add(&imported);
                    }
                    map.insert(*cmid, imported);
                    added += 1;
                }
            }
        }
        Outcome::Imported { added, merged }
    }

    /// Every stored client record (live or not), ordered by pool then CMID: what a backup
    /// exports and [`Command::ImportClients`] brings back.
    pub fn export_clients(
        &self,
    ) -> impl Iterator<Item = (Pool, ClientMachineId, ClientRecord)> + '_ {
        Pool::ALL.into_iter().flat_map(move |p| {
            self.pools
                .get(p)
                .iter()
                .map(move |(c, r)| (p, *c, r.to_record()))
        })
    }

    /// When `cmid` was last seen in `pool`, if it is stored.
    pub fn last_seen(&self, pool: Pool, cmid: &ClientMachineId) -> Option<FileTime> {
        self.pools.get(pool).get(cmid).map(Stored::last_seen)
    }

    /// The replicated configuration.
    pub fn config(&self) -> &ReplicatedConfig {
        &self.config
    }

    /// The host identity, once initialised.
    pub fn identity(&self) -> Option<&HostIdentity> {
        self.identity.as_ref()
    }

    /// The ePID to answer product group `id` with (see [`HostIdentity::epid_for`]).
    pub fn identity_for(&self, id: KmsCountedId) -> Option<&Epid> {
        self.identity.as_ref().and_then(|i| i.epid_for(id))
    }

    /// The node directory.
    pub fn nodes(&self) -> &BTreeMap<u64, NodeRecord> {
        &self.nodes
    }

    /// The count of `pool` at time `now` (see the module doc).
    pub fn pool_count(&self, pool: Pool, now: FileTime) -> PoolCount {
        let cutoff = sub_secs(now, self.config.count_window_secs);
        self.tally_at(pool, cutoff)
            .count(pool, self.config.count_report)
    }

    /// Live clients of `pool` at `now` whose N is above the reported count: they are not
    /// activated by the answer they get and keep retrying.
    pub fn waiting_clients(&self, pool: Pool, now: FileTime) -> u64 {
        let cutoff = sub_secs(now, self.config.count_window_secs);
        let t = self.tally_at(pool, cutoff);
        let reported = t.count(pool, self.config.count_report).reported;
        t.required
            .range((Bound::Excluded(reported), Bound::Unbounded))
            .map(|(_, n)| n)
            .sum()
    }

    /// The tally of `pool` at `cutoff`: the cached one when no record lies between the two
    /// cutoffs (every record is live at both or at neither: the usual case, and no copy), a
    /// copy adjusted by those records otherwise, or a full scan when nothing is cached yet.
    fn tally_at(&self, pool: Pool, cutoff: FileTime) -> std::borrow::Cow<'_, Tally> {
        let records = self.pools.get(pool);
        let index = self.derived.index.get(pool);
        match self.derived.tallies.get(pool) {
            Some(t) => {
                let (lo, hi) = if cutoff > t.cutoff {
                    (t.cutoff, cutoff)
                } else {
                    (cutoff, t.cutoff)
                };
                let between = index
                    .range((lo, ClientMachineId::NIL)..(hi, ClientMachineId::NIL))
                    .next()
                    .is_some();
                if !between {
                    return std::borrow::Cow::Borrowed(t);
                }
                let mut t = t.clone();
                t.move_cutoff(cutoff, records, index);
                std::borrow::Cow::Owned(t)
            }
            None => std::borrow::Cow::Owned(Tally::build(records.values(), cutoff)),
        }
    }

    /// Rebuild the client maps and the derived index with full nodes: the same contents in
    /// less memory. Decoding a snapshot builds them full; inserts into full nodes split them,
    /// so a restart's log replay (or any burst of new clients) leaves many nodes half empty —
    /// about 1 KB more per insert until the nodes fill up again. The store calls this after
    /// the replay; it takes one pass over the records (~0.1 s per million).
    pub fn compact(&mut self) {
        for pool in Pool::ALL {
            let map = std::mem::take(self.pools.get_mut(pool));
            *self.pools.get_mut(pool) = map.into_iter().collect();
            let index = std::mem::take(self.derived.index.get_mut(pool));
            *self.derived.index.get_mut(pool) = index.into_iter().collect();
        }
    }

    /// Rebuild the derived indexes from the records (after deserializing).
    fn rebuild_derived(&mut self) {
        for pool in Pool::ALL {
            let index: BTreeSet<(FileTime, ClientMachineId)> = self
                .pools
                .get(pool)
                .iter()
                .map(|(cmid, r)| (r.last_seen(), *cmid))
                .collect();
            // Start the tally at the newest record's cutoff; reads and batches move it.
            let cutoff = index
                .last()
                .map(|(t, _)| sub_secs(*t, self.config.count_window_secs))
                .unwrap_or_default();
            let tally = Tally::build(self.pools.get(pool).values(), cutoff);
            *self.derived.index.get_mut(pool) = index;
            *self.derived.tallies.get_mut(pool) = Some(tally);
        }
    }

    /// Whether a request from `cmid` at `now` must be written: the CMID is unknown in the pool,
    /// or its record is at least `renew_write_after` old.
    pub fn needs_write(&self, pool: Pool, cmid: &ClientMachineId, now: FileTime) -> bool {
        match self.pools.get(pool).get(cmid) {
            None => true,
            Some(r) => self.is_stale(r, now),
        }
    }

    /// Like [`State::needs_write`], and also when the request names another workstation
    /// (duplicate CMID to flag) or another product group than the stored record.
    pub fn needs_write_for(
        &self,
        pool: Pool,
        cmid: &ClientMachineId,
        workstation: &str,
        kms_counted_id: &KmsCountedId,
        now: FileTime,
    ) -> bool {
        match self.pools.get(pool).get(cmid) {
            None => true,
            Some(r) => {
                self.is_stale(r, now)
                    || r.kms_counted_id() != *kms_counted_id
                    || (!r.workstation().is_empty()
                        && !workstation.is_empty()
                        && !same_workstation(r.workstation(), workstation))
            }
        }
    }

    /// Whether `r` was last written at least `renew_write_after` before `now`.
    fn is_stale(&self, r: &Stored, now: FileTime) -> bool {
        now.0.saturating_sub(r.last_seen().0) / TICKS_PER_SECOND
            >= self.config.renew_write_after_secs
    }

    /// The record of `cmid` in `pool`.
    pub fn client(&self, pool: Pool, cmid: &ClientMachineId) -> Option<ClientRecord> {
        self.pools.get(pool).get(cmid).map(Stored::to_record)
    }

    /// Every pool's record of `cmid` (a CMID may run Windows and Office).
    pub fn find_client(&self, cmid: &ClientMachineId) -> Vec<(Pool, ClientRecord)> {
        Pool::ALL
            .into_iter()
            .filter_map(|p| self.client(p, cmid).map(|r| (p, r)))
            .collect()
    }

    /// Number of stored records (live or not) in `pool`.
    pub fn stored_clients(&self, pool: Pool) -> usize {
        self.pools.get(pool).len()
    }

    /// A page of clients matching `filter`, ordered by pool then CMID.
    pub fn clients(&self, filter: &ClientFilter) -> ClientPage {
        let limit = match filter.limit {
            0 => 100,
            n => n.min(10_000),
        };
        let needle = filter
            .workstation_contains
            .as_ref()
            .map(|s| s.to_ascii_lowercase());
        let matches = |r: &Stored| {
            filter
                .kms_counted_id
                .is_none_or(|id| r.kms_counted_id() == id)
                && filter.seen_since.is_none_or(|t| r.last_seen() >= t)
                && filter.seen_before.is_none_or(|t| r.last_seen() < t)
                && (!filter.duplicates_only || r.duplicate())
                && needle
                    .as_ref()
                    .is_none_or(|n| r.workstation().to_ascii_lowercase().contains(n.as_str()))
        };
        let mut clients = Vec::new();
        for pool in Pool::ALL {
            if filter.pool.is_some_and(|p| p != pool) {
                continue;
            }
            let start = match filter.after {
                Some((p, _)) if p > pool => continue,
                Some((p, cmid)) if p == pool => Bound::Excluded(cmid),
                _ => Bound::Unbounded,
            };
            for (cmid, r) in self.pools.get(pool).range((start, Bound::Unbounded)) {
                if !matches(r) {
                    continue;
                }
                if clients.len() == limit {
                    let next = clients
                        .last()
                        .map(|e: &ClientEntry| (e.pool, e.client_machine_id));
                    return ClientPage { clients, next };
                }
                clients.push(ClientEntry {
                    pool,
                    client_machine_id: *cmid,
                    record: r.to_record(),
                });
            }
        }
        ClientPage {
            clients,
            next: None,
        }
    }

    /// Usage of every configured seat cap at `now`.
    pub fn seat_usage(&self, now: FileTime) -> Vec<SeatUsage> {
        let cutoff = sub_secs(now, self.config.count_window_secs);
        let limits = &self.config.seat_limits;
        let mut out = Vec::new();
        let sat = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        let mut tallies = Vec::new();
        for pool in Pool::ALL {
            let t = self.tally_at(pool, cutoff);
            if let Some(limit) = limits.pool(pool) {
                out.push(SeatUsage {
                    scope: SeatScope::Pool(pool),
                    used: sat(t.live),
                    limit,
                });
            }
            tallies.push(t);
        }
        for (id, limit) in &limits.groups {
            let used: u64 = tallies.iter().map(|t| t.group(id)).sum();
            out.push(SeatUsage {
                scope: SeatScope::Group(*id),
                used: sat(used),
                limit: *limit,
            });
        }
        out
    }

    /// The prune command the leader proposes at `now`: drop records older than the retention.
    pub fn prune_command(&self, now: FileTime) -> Command {
        Command::Prune {
            before: sub_secs(now, self.config.retention_secs),
        }
    }
}

fn new_record(at: FileTime, node: u64, req: &RecordRequest) -> Stored {
    Stored::from_record(ClientRecord {
        first_seen: at,
        last_seen: at,
        kms_counted_id: req.kms_counted_id,
        sku_id: req.sku_id,
        previous_client_machine_id: req.previous_client_machine_id,
        workstation: bounded(&req.workstation),
        license_status: req.license_status,
        is_vm: req.is_vm,
        required_count: req.required_count,
        protocol_version: req.protocol_version,
        last_node: node,
        last_source: bounded(&req.source),
        request_count: 1,
        duplicate: false,
        duplicate_workstation: None,
        recent_request_ids: vec![req.request_id],
    })
}

fn update_record(r: &mut Stored, at: FileTime, node: u64, req: &RecordRequest) {
    let workstation = bounded_str(&req.workstation);
    if !r.workstation().is_empty()
        && !workstation.is_empty()
        && !same_workstation(r.workstation(), workstation)
    {
        // Keep the name that is *not* the current one after this update.
        let other = if at >= r.last_seen() {
            Box::from(r.workstation())
        } else {
            Box::from(workstation)
        };
        r.flag_duplicate(other);
    }
    if !r.holds_request_id(req.request_id) {
        r.count_request();
        r.push_request_id(req.request_id);
    }
    let first_seen = r.first_seen().min(at);
    if at >= r.last_seen() {
        r.set_seen(first_seen, at);
        r.set_kms_counted_id(req.kms_counted_id);
        r.set_sku_id(req.sku_id);
        r.set_previous_client_machine_id(req.previous_client_machine_id);
        if r.workstation() != workstation {
            r.set_workstation(Box::from(workstation));
        }
        r.set_description(
            req.license_status,
            req.is_vm,
            req.required_count,
            req.protocol_version,
            node,
        );
        r.set_source(bounded_str(&req.source));
    } else {
        r.set_seen(first_seen, r.last_seen());
    }
}

/// An imported record made safe to store: text bounded like recorded text, at most
/// [`RECENT_REQUEST_IDS`] request ids, `first_seen ≤ last_seen`.
fn sanitized_import(r: &ClientRecord) -> ClientRecord {
    let mut r = r.clone();
    r.workstation = bounded(&r.workstation);
    r.last_source = bounded(&r.last_source);
    r.duplicate_workstation = r.duplicate_workstation.as_deref().map(bounded);
    let excess = r
        .recent_request_ids
        .len()
        .saturating_sub(RECENT_REQUEST_IDS);
    r.recent_request_ids.drain(..excess);
    r.first_seen = r.first_seen.min(r.last_seen);
    r
}

/// Merge an imported record into the stored record of the same CMID:
///
/// * `first_seen = min`, `last_seen = max`;
/// * the descriptive fields (product, SKU, workstation, license status, VM flag, N, protocol,
///   node, source) come from the imported record only if it is strictly newer (ties keep the
///   stored values, so a repeated import changes nothing);
/// * `request_count = max` (not the sum: the two may describe the same requests);
/// * `duplicate` is set if either was flagged or the two workstation names differ (then the
///   older name is kept in `duplicate_workstation`);
/// * `recent_request_ids`: the stored ids, then the imported ids not among them, keeping the
///   last [`RECENT_REQUEST_IDS`].
fn merge_imported(r: &mut ClientRecord, imp: &ClientRecord) {
    let names_differ = !r.workstation.is_empty()
        && !imp.workstation.is_empty()
        && !same_workstation(&r.workstation, &imp.workstation);
    let imported_newer = imp.last_seen > r.last_seen;
    if names_differ {
        r.duplicate = true;
        r.duplicate_workstation = Some(if imported_newer {
            r.workstation.clone()
        } else {
            imp.workstation.clone()
        });
    } else if imp.duplicate {
        r.duplicate = true;
        if r.duplicate_workstation.is_none() || imported_newer {
            r.duplicate_workstation = imp
                .duplicate_workstation
                .clone()
                .or(r.duplicate_workstation.take());
        }
    }
    r.first_seen = r.first_seen.min(imp.first_seen);
    if imported_newer {
        r.last_seen = imp.last_seen;
        r.kms_counted_id = imp.kms_counted_id;
        r.sku_id = imp.sku_id;
        r.previous_client_machine_id = imp.previous_client_machine_id;
        r.workstation = imp.workstation.clone();
        r.license_status = imp.license_status;
        r.is_vm = imp.is_vm;
        r.required_count = imp.required_count;
        r.protocol_version = imp.protocol_version;
        r.last_node = imp.last_node;
        r.last_source = imp.last_source.clone();
    }
    r.request_count = r.request_count.max(imp.request_count);
    for id in &imp.recent_request_ids {
        if !r.recent_request_ids.contains(id) {
            r.recent_request_ids.push(*id);
        }
    }
    let excess = r
        .recent_request_ids
        .len()
        .saturating_sub(RECENT_REQUEST_IDS);
    r.recent_request_ids.drain(..excess);
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;

#[cfg(test)]
mod import_tests {
    use super::*;
    use kms_wire::Guid;

    fn t(secs: i64) -> FileTime {
        FileTime::from_unix_secs(1_700_000_000 + secs)
    }

    fn cmid(n: u8) -> ClientMachineId {
        Guid([n; 16])
    }

    fn recorded(s: &mut State, n: u8, at: i64, ws: &str) {
        let mut req =
            RecordRequest::new(u64::from(n) << 8 | at as u64 & 0xff, Pool::Windows, cmid(n));
        req.workstation = ws.into();
        s.apply(&Command::Record {
            at: t(at),
            node: 1,
            records: vec![req],
        });
    }

    fn export(s: &State, pool: Pool) -> Vec<(ClientMachineId, ClientRecord)> {
        s.export_clients()
            .filter(|(p, _, _)| *p == pool)
            .map(|(_, c, r)| (c, r))
            .collect()
    }

    #[test]
    fn import_into_empty_state_reproduces_records_and_counts() {
        let mut a = State::default();
        for n in 1..=30 {
            recorded(&mut a, n, i64::from(n), &format!("PC{n}"));
        }
        let mut o = RecordRequest::new(999, Pool::Office2010, cmid(200));
        o.workstation = "OFFICE1".into();
        a.apply(&Command::Record {
            at: t(50),
            node: 2,
            records: vec![o],
        });
        let mut b = State::default();
        b.apply(&Command::SetConfig(a.config().clone()));
        for pool in Pool::ALL {
            let records = export(&a, pool);
            let out = b.apply(&Command::ImportClients { pool, records });
            let n = a.stored_clients(pool) as u64;
            assert_eq!(
                out,
                Outcome::Imported {
                    added: n,
                    merged: 0
                }
            );
        }
        for pool in Pool::ALL {
            assert_eq!(export(&a, pool), export(&b, pool));
            assert_eq!(a.pool_count(pool, t(100)), b.pool_count(pool, t(100)));
        }
        assert_eq!(a.pool_count(Pool::Windows, t(100)).live, 30);
        // Importing again changes nothing.
        let before = b.clone();
        let out = b.apply(&Command::ImportClients {
            pool: Pool::Windows,
            records: export(&a, Pool::Windows),
        });
        assert_eq!(
            out,
            Outcome::Imported {
                added: 0,
                merged: 30
            }
        );
        assert_eq!(b, before);
        // Derived indexes agree with a rebuilt state.
        let rebuilt: State = bincode_round_trip(&b);
        assert_eq!(
            rebuilt.pool_count(Pool::Windows, t(100)),
            b.pool_count(Pool::Windows, t(100))
        );
    }

    fn bincode_round_trip(s: &State) -> State {
        let bytes = bincode::serialize(s).unwrap();
        bincode::deserialize(&bytes).unwrap()
    }

    #[test]
    fn import_merges_with_stored_records() {
        let mut s = State::default();
        recorded(&mut s, 1, 100, "PC1");
        let stored = s.client(Pool::Windows, &cmid(1)).unwrap().clone();
        // Older import from another workstation: keeps the stored (newer) fields, widens
        // first_seen, flags the duplicate with the older name.
        let mut older = stored.clone();
        older.first_seen = t(10);
        older.last_seen = t(20);
        older.workstation = "CLONE".into();
        older.request_count = 5;
        older.recent_request_ids = vec![7, 8];
        let out = s.apply(&Command::ImportClients {
            pool: Pool::Windows,
            records: vec![(cmid(1), older)],
        });
        assert_eq!(
            out,
            Outcome::Imported {
                added: 0,
                merged: 1
            }
        );
        let r = s.client(Pool::Windows, &cmid(1)).unwrap();
        assert_eq!((r.first_seen, r.last_seen), (t(10), t(100)));
        assert_eq!(r.workstation, "PC1");
        assert!(r.duplicate);
        assert_eq!(r.duplicate_workstation.as_deref(), Some("CLONE"));
        assert_eq!(r.request_count, 5);
        assert_eq!(r.recent_request_ids.len(), 3);
        // Newer import: takes its fields and moves the record in the count window.
        let mut newer = r.clone();
        newer.last_seen = t(40 * 86_400);
        newer.workstation = "pc1.corp.example".into();
        newer.required_count = 5;
        s.apply(&Command::ImportClients {
            pool: Pool::Windows,
            records: vec![(cmid(1), newer)],
        });
        let r = s.client(Pool::Windows, &cmid(1)).unwrap();
        assert_eq!(r.last_seen, t(40 * 86_400));
        assert_eq!(r.required_count, 5);
        assert_eq!(s.pool_count(Pool::Windows, t(40 * 86_400)).live, 1);
        assert_eq!(s.pool_count(Pool::Windows, t(100)).live, 1);
    }

    #[test]
    fn import_ignores_seat_limits_and_sanitizes() {
        let mut s = State::default();
        let mut cfg = s.config().clone();
        cfg.seat_limits.pools.windows = Some(1);
        assert_eq!(s.apply(&Command::SetConfig(cfg)), Outcome::ConfigSet);
        recorded(&mut s, 1, 0, "A");
        let template = s.client(Pool::Windows, &cmid(1)).unwrap().clone();
        let mut long = template.clone();
        long.workstation = "x".repeat(500);
        long.recent_request_ids = (0..50).collect();
        long.first_seen = t(5);
        long.last_seen = t(1);
        let out = s.apply(&Command::ImportClients {
            pool: Pool::Windows,
            records: vec![(cmid(2), long), (cmid(3), template)],
        });
        assert_eq!(
            out,
            Outcome::Imported {
                added: 2,
                merged: 0
            }
        );
        assert_eq!(s.pool_count(Pool::Windows, t(10)).live, 3);
        let r = s.client(Pool::Windows, &cmid(2)).unwrap();
        assert_eq!(r.workstation.chars().count(), MAX_TEXT_CHARS);
        assert_eq!(r.recent_request_ids, (42..50).collect::<Vec<u64>>());
        assert!(r.first_seen <= r.last_seen);
        // Forget still works on imported records and the tally follows.
        s.apply(&Command::Forget {
            pool: Pool::Windows,
            cmid: cmid(2),
        });
        assert_eq!(s.pool_count(Pool::Windows, t(10)).live, 2);
    }

    #[test]
    fn export_orders_by_pool_then_cmid() {
        let mut s = State::default();
        recorded(&mut s, 9, 0, "");
        recorded(&mut s, 3, 0, "");
        let mut o = RecordRequest::new(1, Pool::Office2013Plus, cmid(1));
        o.workstation = String::new();
        s.apply(&Command::Record {
            at: t(0),
            node: 1,
            records: vec![o],
        });
        let order: Vec<(Pool, u8)> = s.export_clients().map(|(p, c, _)| (p, c.0[0])).collect();
        assert_eq!(
            order,
            vec![
                (Pool::Windows, 3),
                (Pool::Windows, 9),
                (Pool::Office2013Plus, 1)
            ]
        );
    }
}
