//! The operator API: the `kms.admin.v1.Admin` gRPC service (`proto/kms/admin/v1/admin.proto`)
//! that `kmsctl` talks to, served on the node's gRPC port next to the Raft peer service.
//!
//! * **Reads** (status, members, counts, clients, configuration, identity, events, health) are
//!   answered from this node's applied state, without a Raft round trip. A follower may lag the
//!   leader by a few entries; `Status` shows its applied index.
//! * **Replicated changes** (forget a client, set a configuration key, set or rotate the
//!   identity) are [`kms_core::Command`]s written through [`kms_cluster::Node::writer`], which
//!   forwards them to the leader from a follower; the call returns once this node has applied
//!   the change too, so its next KMS response already honours it.
//! * **Membership and leadership** changes must run on the leader: a follower answers
//!   `FAILED_PRECONDITION` with the trailer `x-kmsd-leader: id=<id> addr=<host:port>`, which
//!   kmsctl follows.
//! * **Authorization** ([`AdminSecurity`]): with mutual TLS the caller's certificate role
//!   decides (`kms_tls::request_role` / `kms_tls::authorize`); without TLS every call is
//!   allowed, and each change is logged as a warning and answered with an `x-kmsd-warning`
//!   header that kmsctl prints.
//!
//! Errors are typed ([`AdminError`]) and become a [`tonic::Status`] only at the edge. Every
//! argument comes from the network and is parsed by code that cannot panic.
//!
//! Submodules: [`config_keys`] (the `kmsctl config` keys), [`backup`] (backup file format and
//! `kmsd --restore`).

pub mod backup;
pub mod config_keys;

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kms_api::admin::v1 as pb;
use kms_api::admin::v1::admin_server::{Admin, AdminServer};
use kms_cluster::{MemberStatus, Node, WriteError};
use kms_core::state::SeatScope;
use kms_core::time::{civil_from_unix_days, sub_secs, unix_days_from_civil};
use kms_core::{
    ClientFilter, ClientMachineId, ClientRecord, Command, Epid, HostIdentity, KmsCountedId,
    Outcome, Pool, catalog,
};
use kms_store::openraft::async_runtime::watch::WatchReceiver;
use kms_store::types::{
    ChangeMembers, ChangeMembershipError, ClientWriteError, NodeInfo, RaftError, RaftMetrics,
};
use kms_tls::Action;
use kms_wire::FileTime;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

pub use backup::{RestoreError, RestoreSummary, restore};

use crate::events::EventHub;

/// The version of the admin API's semantics this build speaks (`version` in every message).
pub const ADMIN_API_VERSION: u32 = 1;
/// Trailer naming the leader on `FAILED_PRECONDITION` answers: `id=2 addr=host:1689`.
pub const LEADER_HINT_HEADER: &str = "x-kmsd-leader";
/// Header (and trailer) carrying a warning the caller should show its user.
pub const WARNING_HEADER: &str = "x-kmsd-warning";
/// Trailer with the highest admin API version this server accepts, on version refusals.
pub const VERSION_MAX_HEADER: &str = "x-kmsd-admin-version-max";

/// The warning sent with every change made without TLS.
const INSECURE_WARNING: &str = "this kmsd serves its admin API without TLS: the change was not \
     authenticated; configure TLS so that only admin certificates may change the cluster";

/// Size of one backup chunk on the wire.
const BACKUP_CHUNK_BYTES: usize = 1 << 20;
/// Longest a membership change waits for a change still being committed.
const MEMBERSHIP_WAIT: Duration = Duration::from_secs(10);
/// Longest a change waits to be applied locally after it committed.
const LOCAL_APPLY_WAIT: Duration = Duration::from_secs(5);

/// How callers are authenticated on the gRPC port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminSecurity {
    /// Mutual TLS: every caller presents a certificate signed by the cluster CA, whose role
    /// (`node`, `admin`, `read`) decides what it may do.
    MutualTls,
    /// Clear text with `--insecure`: everything is allowed; changes are logged and answered
    /// with a warning.
    Insecure,
    /// Clear text without `--insecure` (the single-node default): like [`Self::Insecure`],
    /// except that the node may not grow into a cluster (`member add` is refused), because a
    /// multi-node cluster must run TLS unless `--insecure` says otherwise.
    LocalOnly,
}

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Looks only.
    Read,
    /// Changes the cluster.
    Change,
    /// Exports everything including the identity (needs `admin` or `node`).
    Backup,
}

/// Why an admin call failed; converted to a [`Status`] at the edge.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A malformed argument or a refused value (INVALID_ARGUMENT).
    #[error("{0}")]
    InvalidArgument(String),
    /// No such client or member (NOT_FOUND).
    #[error("{0}")]
    NotFound(String),
    /// The member id is taken (ALREADY_EXISTS).
    #[error("{0}")]
    AlreadyExists(String),
    /// The cluster is not in a state that allows the call (FAILED_PRECONDITION).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The call must run on the leader (FAILED_PRECONDITION with a leader hint, or UNAVAILABLE
    /// when no leader is known).
    #[error("node {node_id} is not the leader{}", leader_text(.leader))]
    NotLeader {
        /// This node.
        node_id: u64,
        /// The known leader and its gRPC address.
        leader: Option<(u64, String)>,
    },
    /// A replicated write did not commit (UNAVAILABLE, or INTERNAL when the leader failed it).
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The Raft node failed (INTERNAL).
    #[error("raft: {0}")]
    Raft(String),
    /// The request speaks a newer API version (FAILED_PRECONDITION).
    #[error(
        "admin API version {0} is newer than this kmsd speaks (versions 0 and {ADMIN_API_VERSION}); upgrade kmsd or use an older kmsctl"
    )]
    Version(u32),
}

fn leader_text(leader: &Option<(u64, String)>) -> String {
    match leader {
        Some((id, addr)) => format!("; the leader is node {id} at {addr}"),
        None => "; no leader is known (election in progress?)".into(),
    }
}

impl From<AdminError> for Status {
    fn from(e: AdminError) -> Status {
        let msg = e.to_string();
        match e {
            AdminError::InvalidArgument(_) => Status::invalid_argument(msg),
            AdminError::NotFound(_) => Status::not_found(msg),
            AdminError::AlreadyExists(_) => Status::already_exists(msg),
            AdminError::FailedPrecondition(_) => Status::failed_precondition(msg),
            AdminError::NotLeader { leader: None, .. } => Status::unavailable(msg),
            AdminError::NotLeader {
                leader: Some((id, addr)),
                ..
            } => {
                let mut s = Status::failed_precondition(msg);
                if let Ok(v) = MetadataValue::try_from(format!("id={id} addr={addr}")) {
                    s.metadata_mut().insert(LEADER_HINT_HEADER, v);
                }
                s
            }
            AdminError::Write(WriteError::NoLeader(_)) => Status::unavailable(msg),
            AdminError::Write(WriteError::Failed(_)) => Status::internal(msg),
            AdminError::Raft(_) => Status::internal(msg),
            AdminError::Version(_) => {
                let mut s = Status::failed_precondition(msg);
                s.metadata_mut()
                    .insert(VERSION_MAX_HEADER, MetadataValue::from(ADMIN_API_VERSION));
                s
            }
        }
    }
}

/// The admin service of one node.
#[derive(Debug, Clone)]
pub struct AdminService {
    node: Arc<Node>,
    events: EventHub,
    security: AdminSecurity,
    /// True while this node's KMS listener serves (the `serving` of Health).
    kms_ready: Arc<std::sync::atomic::AtomicBool>,
}

/// The tonic server of the admin service for `node`, ready for `Router::add_service`.
/// `events` is the hub the KMS listener publishes activations to (see
/// [`crate::events::WithEvents`]); `security` says whether the gRPC port runs mutual TLS;
/// `kms_ready` is true while the KMS listener serves.
pub fn admin_service(
    node: Arc<Node>,
    events: EventHub,
    security: AdminSecurity,
    kms_ready: Arc<std::sync::atomic::AtomicBool>,
) -> AdminServer<AdminService> {
    AdminServer::new(AdminService {
        node,
        events,
        security,
        kms_ready,
    })
}

/// Requests that carry a `version`.
trait Versioned {
    fn version(&self) -> u32;
}

macro_rules! versioned {
    ($($t:ty),* $(,)?) => {
        $(impl Versioned for $t {
            fn version(&self) -> u32 {
                self.version
            }
        })*
    };
}

versioned!(
    pb::StatusRequest,
    pb::MemberListRequest,
    pb::MemberAddRequest,
    pb::MemberPromoteRequest,
    pb::MemberRemoveRequest,
    pb::LeaderTransferRequest,
    pb::CountsRequest,
    pb::ClientListRequest,
    pb::ClientShowRequest,
    pb::ClientForgetRequest,
    pb::ConfigGetRequest,
    pb::ConfigSetRequest,
    pb::IdentityShowRequest,
    pb::IdentitySetRequest,
    pb::IdentityRotateRequest,
    pb::BackupRequest,
    pb::EventsRequest,
    pb::HealthRequest,
);

/// Wrap `msg`, with the warning header when there is one.
fn reply<T>(msg: T, warning: Option<&'static str>) -> Response<T> {
    let mut r = Response::new(msg);
    if let Some(w) = warning {
        r.metadata_mut()
            .insert(WARNING_HEADER, MetadataValue::from_static(w));
    }
    r
}

impl AdminService {
    /// Check the request's version and the caller's right to `access`; returns the warning
    /// to send back, if any.
    fn admit<T: Versioned>(
        &self,
        call: &'static str,
        req: &Request<T>,
        access: Access,
    ) -> Result<Option<&'static str>, Status> {
        let v = req.get_ref().version();
        if v > ADMIN_API_VERSION {
            return Err(AdminError::Version(v).into());
        }
        match self.security {
            AdminSecurity::MutualTls => {
                let role = kms_tls::request_role(req).inspect_err(|s| {
                    warn!(
                        call,
                        peer = req.remote_addr().map(tracing::field::display),
                        reason = s.message(),
                        "admin call refused"
                    );
                })?;
                let allowed = match access {
                    Access::Read => kms_tls::authorize(role, Action::Read),
                    Access::Change => kms_tls::authorize(role, Action::Mutate),
                    Access::Backup if role.allows(Action::Mutate) => Ok(()),
                    Access::Backup => Err(Status::permission_denied(format!(
                        "certificate role '{role}' may not take backups: the file holds the \
                         host identity and can clone the cluster; use an admin certificate \
                         (kmsctl cert create-client NAME --role admin)"
                    ))),
                };
                if let Err(s) = &allowed {
                    warn!(call, %role, peer = req.remote_addr().map(tracing::field::display), reason = s.message(), "admin call refused");
                } else if access != Access::Read {
                    info!(call, %role, peer = req.remote_addr().map(tracing::field::display), "admin change");
                }
                allowed.map(|()| None)
            }
            AdminSecurity::Insecure | AdminSecurity::LocalOnly => {
                if access == Access::Read {
                    return Ok(None);
                }
                warn!(
                    call,
                    peer = req.remote_addr().map(tracing::field::display),
                    "unauthenticated admin change: the admin API runs without TLS"
                );
                Ok(Some(INSECURE_WARNING))
            }
        }
    }

    fn metrics(&self) -> RaftMetrics {
        self.node.raft().metrics().borrow_watched().clone()
    }

    fn node_id(&self) -> u64 {
        self.metrics().id
    }

    /// The known leader and its gRPC address.
    fn leader(&self) -> Option<(u64, String)> {
        let m = self.metrics();
        let id = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.grpc_addr.clone())
            .unwrap_or_default();
        Some((id, addr))
    }

    /// Fail unless this node leads.
    fn require_leader(&self) -> Result<RaftMetrics, AdminError> {
        let m = self.metrics();
        if m.current_leader == Some(m.id) {
            Ok(m)
        } else {
            Err(AdminError::NotLeader {
                node_id: m.id,
                leader: self.leader(),
            })
        }
    }

    /// An openraft write error as an [`AdminError`] (leader hints preserved).
    fn raft_error(&self, e: RaftError<ClientWriteError>) -> AdminError {
        if let Some(f) = e.forward_to_leader() {
            return AdminError::NotLeader {
                node_id: self.node_id(),
                leader: f.leader_id.map(|id| {
                    let addr = f
                        .leader_node
                        .as_ref()
                        .map(|n| n.grpc_addr.clone())
                        .unwrap_or_default();
                    (id, addr)
                }),
            };
        }
        if e.api_error().is_some() {
            AdminError::FailedPrecondition(e.to_string())
        } else {
            AdminError::Raft(e.to_string())
        }
    }

    /// The members as this node sees them, with replication progress when it leads.
    fn members(&self) -> Vec<pb::MemberStatus> {
        let status = self.node.status();
        let m = self.metrics();
        status
            .members
            .iter()
            .map(|ms| member_proto(ms, matched_index(&m, ms.id)))
            .collect()
    }

    /// Wait (bounded) until this node's applied state satisfies `done`.
    async fn applied_locally(&self, done: impl Fn(&kms_core::State) -> bool) {
        let start = Instant::now();
        while !self.node.read(&done) && start.elapsed() < LOCAL_APPLY_WAIT {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Wait (bounded) until learner `id` has replicated the leader's log as of now.
    async fn caught_up(&self, id: u64, wait: Duration) -> Result<(), AdminError> {
        let target = self.metrics().last_log_index.unwrap_or(0);
        let start = Instant::now();
        loop {
            let m = self.require_leader()?;
            let matched = matched_index(&m, id);
            if matched.is_some_and(|i| i >= target) {
                return Ok(());
            }
            if start.elapsed() >= wait {
                return Err(AdminError::FailedPrecondition(format!(
                    "learner {id} has not caught up within {}s (it has log index {}, the \
                     leader {target}); is it running (kmsd --join <member>)? retry with \
                     `kmsctl member promote {id}`",
                    wait.as_secs(),
                    matched.map_or_else(|| "none".to_string(), |i| i.to_string())
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn promote(&self, id: u64, wait: Duration) -> Result<String, AdminError> {
        let m = self.require_leader()?;
        let membership = m.membership_config.membership();
        if membership.voter_ids().any(|v| v == id) {
            return Ok(format!("node {id} is already a voter"));
        }
        if membership.get_node(&id).is_none() {
            return Err(AdminError::NotFound(format!(
                "node {id} is not a member; add it first (kmsctl member add {id} HOST:PORT)"
            )));
        }
        self.caught_up(id, wait).await?;
        self.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
            .await?;
        info!(node_id = id, "learner promoted to voter");
        Ok(format!("node {id} promoted to voter"))
    }

    /// Change the membership; while another change is still being committed (a join's
    /// promotion, say), wait for it — up to [`MEMBERSHIP_WAIT`] — instead of refusing.
    async fn change_membership(&self, change: ChangeMembers) -> Result<(), AdminError> {
        let start = Instant::now();
        loop {
            match self
                .node
                .raft()
                .change_membership(change.clone(), false)
                .await
            {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                ))) if start.elapsed() < MEMBERSHIP_WAIT => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(self.raft_error(e)),
            }
        }
    }

    /// Commit `cmd`; a refused configuration or identity is an invalid argument.
    async fn write(&self, cmd: Command) -> Result<Outcome, AdminError> {
        let outcome = self.node.writer().write(cmd).await?;
        match outcome {
            Outcome::ConfigRejected(e) => Err(AdminError::InvalidArgument(format!(
                "configuration refused: {e}"
            ))),
            Outcome::IdentityRejected(e) => Err(AdminError::InvalidArgument(format!(
                "identity refused: {e}"
            ))),
            o => Ok(o),
        }
    }

    fn identity_response(&self) -> pb::IdentityResponse {
        identity_proto(self.node.read(|s| s.identity().cloned()).as_ref())
    }

    /// Replace the identity with `new` and wait until it is applied here.
    async fn set_identity(&self, new: HostIdentity) -> Result<pb::IdentityResponse, AdminError> {
        new.validate()
            .map_err(|e| AdminError::InvalidArgument(format!("identity refused: {e}")))?;
        self.write(Command::SetIdentity(new.clone())).await?;
        self.applied_locally(|s| s.identity() == Some(&new)).await;
        Ok(identity_proto(Some(&new)))
    }

    fn counts_now(&self) -> pb::CountsResponse {
        let now = FileTime::from_system_time(SystemTime::now());
        self.node.read(|s| {
            let pools: Vec<pb::PoolCounts> = Pool::ALL
                .iter()
                .map(|&pool| {
                    let c = s.pool_count(pool, now);
                    pb::PoolCounts {
                        pool: pool.name().to_string(),
                        live: c.live,
                        reported: c.reported,
                        threshold: c.threshold_hint,
                        threshold_met: c.reported >= c.threshold_hint,
                        max_required: c.max_required,
                        duplicates: c.duplicates,
                        seat_limit: s.config().seat_limits.pool(pool),
                        seats_used: c.live,
                        // Clients wait while their N is above the reported count.
                        waiting: u32::try_from(s.waiting_clients(pool, now)).unwrap_or(u32::MAX),
                        stored: s.stored_clients(pool) as u64,
                    }
                })
                .collect();
            let group_seats = s
                .seat_usage(now)
                .into_iter()
                .filter_map(|u| match u.scope {
                    SeatScope::Group(id) => Some(pb::GroupSeats {
                        kms_counted_id: id.to_string(),
                        name: catalog::product(id)
                            .map(|p| p.name.to_string())
                            .unwrap_or_default(),
                        limit: u.limit,
                        used: u.used,
                    }),
                    SeatScope::Pool(_) => None,
                })
                .collect();
            pb::CountsResponse {
                version: ADMIN_API_VERSION,
                pools,
                group_seats,
                count_window_days: s.config().count_window_secs as f64 / 86_400.0,
                now_unix: now.unix_secs(),
            }
        })
    }

    fn list_clients(
        &self,
        req: &pb::ClientListRequest,
    ) -> Result<pb::ClientListResponse, AdminError> {
        let filter = ClientFilter {
            pool: optional_pool(&req.pool)?,
            kms_counted_id: if req.product_group.trim().is_empty() {
                None
            } else {
                Some(product_group(&req.product_group)?)
            },
            seen_since: req.seen_since_unix.map(FileTime::from_unix_secs),
            seen_before: req.seen_before_unix.map(FileTime::from_unix_secs),
            workstation_contains: Some(req.workstation_contains.trim())
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            duplicates_only: req.duplicates_only,
            after: parse_cursor(&req.cursor)?,
            limit: req.page_size.min(10_000) as usize,
        };
        let now = FileTime::from_system_time(SystemTime::now());
        Ok(self.node.read(|s| {
            let cutoff = sub_secs(now, s.config().count_window_secs);
            let page = s.clients(&filter);
            pb::ClientListResponse {
                version: ADMIN_API_VERSION,
                clients: page
                    .clients
                    .iter()
                    .map(|e| client_proto(e.pool, &e.client_machine_id, &e.record, cutoff))
                    .collect(),
                next_cursor: page
                    .next
                    .map(|(p, c)| format!("{}:{c}", p.name()))
                    .unwrap_or_default(),
            }
        }))
    }
}

/// The last log index the leader knows `id` has (only on the leader).
fn matched_index(m: &RaftMetrics, id: u64) -> Option<u64> {
    if m.id == id && m.current_leader == Some(id) {
        return m.last_log_index;
    }
    m.replication
        .as_ref()
        .and_then(|r| r.get(&id))
        .and_then(|l| l.as_ref())
        .map(|l| l.index)
}

fn member_proto(m: &MemberStatus, matched_index: Option<u64>) -> pb::MemberStatus {
    let role = match m.role {
        "leader" => pb::MemberRole::Leader,
        "follower" => pb::MemberRole::Follower,
        "learner" => pb::MemberRole::Learner,
        _ => pb::MemberRole::Unspecified,
    };
    pb::MemberStatus {
        id: m.id,
        name: m.name.clone(),
        grpc_address: m.grpc_addr.clone(),
        kms_address: m.kms_addr.clone(),
        role: role as i32,
        healthy: m.healthy,
        voter: m.role != "learner",
        matched_index,
        lag: m.lag,
        last_contact_seconds: m
            .contact
            .and_then(|c| c.since_contact)
            .map(|d| (d.as_secs_f64() * 10.0).round() / 10.0),
        stalled: m.contact.is_some_and(|c| c.stalled),
    }
}

fn client_proto(
    pool: Pool,
    cmid: &ClientMachineId,
    r: &ClientRecord,
    cutoff: FileTime,
) -> pb::Client {
    pb::Client {
        pool: pool.name().to_string(),
        client_machine_id: cmid.to_string(),
        first_seen_unix: r.first_seen.unix_secs(),
        last_seen_unix: r.last_seen.unix_secs(),
        live: r.last_seen >= cutoff,
        kms_counted_id: r.kms_counted_id.to_string(),
        product_group: catalog::product(r.kms_counted_id)
            .map(|p| p.name.to_string())
            .unwrap_or_default(),
        sku_id: r.sku_id.to_string(),
        edition: catalog::sku(r.sku_id)
            .map(|s| s.edition.to_string())
            .unwrap_or_default(),
        previous_client_machine_id: r.previous_client_machine_id.to_string(),
        workstation: r.workstation.clone(),
        license_status: r.license_status,
        is_vm: r.is_vm,
        required_count: r.required_count,
        protocol_version: u32::from(r.protocol_version),
        last_node: r.last_node,
        last_source: r.last_source.clone(),
        request_count: r.request_count,
        duplicate: r.duplicate,
        duplicate_workstation: r.duplicate_workstation.clone().unwrap_or_default(),
    }
}

fn identity_proto(id: Option<&HostIdentity>) -> pb::IdentityResponse {
    pb::IdentityResponse {
        version: ADMIN_API_VERSION,
        initialized: id.is_some(),
        epids: id
            .map(|i| {
                i.epids
                    .iter()
                    .map(|(g, e)| pb::EpidEntry {
                        group: *g,
                        epid: e.to_string(),
                        build: e.build,
                        lcid: e.lcid,
                        date: epid_date(e),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        hwid: id.map(|i| hex::encode_upper(i.hwid)).unwrap_or_default(),
    }
}

/// The ePID's activation date as YYYY-MM-DD.
fn epid_date(e: &Epid) -> String {
    let jan1 = unix_days_from_civil(i64::from(e.year), 1, 1);
    let (y, m, d) = civil_from_unix_days(jan1 + i64::from(e.day_of_year) - 1);
    format!("{y:04}-{m:02}-{d:02}")
}

fn parse_cmid(s: &str) -> Result<ClientMachineId, AdminError> {
    ClientMachineId::from_str(s).map_err(|_| {
        AdminError::InvalidArgument(format!(
            "`{s}` is not a client machine id (a GUID like 3f2504e0-4f89-41d3-9a0c-0305e82c3301)"
        ))
    })
}

fn optional_pool(s: &str) -> Result<Option<Pool>, AdminError> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    Pool::from_name(s).map(Some).ok_or_else(|| {
        AdminError::InvalidArgument(format!(
            "unknown pool `{s}` (windows, office2010 or office2013plus)"
        ))
    })
}

/// A product group by KMS counted id or catalog name.
fn product_group(s: &str) -> Result<KmsCountedId, AdminError> {
    if let Ok(id) = KmsCountedId::from_str(s) {
        return Ok(id);
    }
    catalog::find_product_by_name(s)
        .map(|p| p.kms_counted_id)
        .ok_or_else(|| {
            AdminError::InvalidArgument(format!(
                "`{s}` is neither a KMS counted id nor a product group of the catalog"
            ))
        })
}

fn parse_cursor(s: &str) -> Result<Option<(Pool, ClientMachineId)>, AdminError> {
    if s.is_empty() {
        return Ok(None);
    }
    let bad = || AdminError::InvalidArgument(format!("invalid cursor `{s}`"));
    let (pool, cmid) = s.split_once(':').ok_or_else(bad)?;
    let pool = Pool::from_name(pool).ok_or_else(bad)?;
    let cmid = ClientMachineId::from_str(cmid).map_err(|_| bad())?;
    Ok(Some((pool, cmid)))
}

/// `host:port` with a numeric port and a non-empty host.
fn check_address(addr: &str) -> Result<(), AdminError> {
    let ok = addr
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    if ok && !addr.contains(char::is_whitespace) && !addr.contains('/') {
        Ok(())
    } else {
        Err(AdminError::InvalidArgument(format!(
            "`{addr}` is not a gRPC address (host:port, e.g. 10.0.0.4:1689)"
        )))
    }
}

fn wait_or(secs: u32, default: u64) -> Duration {
    match secs {
        0 => Duration::from_secs(default),
        n => Duration::from_secs(u64::from(n).min(3600)),
    }
}

type Result2<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(&self, req: Request<pb::StatusRequest>) -> Result2<pb::StatusResponse> {
        self.admit("Status", &req, Access::Read)?;
        let st = self.node.status();
        Ok(reply(
            pb::StatusResponse {
                version: ADMIN_API_VERSION,
                node_id: st.node_id,
                node_name: st.name.clone(),
                leader_id: st.leader_id,
                term: st.term,
                members: self.members(),
                pools: st
                    .pools
                    .iter()
                    .map(|p| pb::PoolStatus {
                        pool: p.pool.to_string(),
                        live: p.live,
                        reported: p.reported,
                        threshold: p.threshold,
                        seat_limit: p.seat_limit,
                        duplicates: p.duplicates,
                    })
                    .collect(),
                commit_index: st.commit_index,
                applied_index: st.applied_index,
                degraded: st.degraded,
                journal_entries: st.journal_entries as u64,
                server_version: env!("CARGO_PKG_VERSION").to_string(),
            },
            None,
        ))
    }

    async fn member_list(
        &self,
        req: Request<pb::MemberListRequest>,
    ) -> Result2<pb::MemberListResponse> {
        self.admit("MemberList", &req, Access::Read)?;
        let m = self.metrics();
        Ok(reply(
            pb::MemberListResponse {
                version: ADMIN_API_VERSION,
                members: self.members(),
                leader_id: m.current_leader,
                term: m.current_term,
            },
            None,
        ))
    }

    async fn member_add(
        &self,
        req: Request<pb::MemberAddRequest>,
    ) -> Result2<pb::MemberChangeResponse> {
        let warning = self.admit("MemberAdd", &req, Access::Change)?;
        if self.security == AdminSecurity::LocalOnly {
            return Err(AdminError::FailedPrecondition(
                "this node runs without TLS and without --insecure: a multi-node cluster must use \
                 TLS for peer and admin traffic; restart every node with --tls-ca/--tls-cert/\
                 --tls-key (see `kmsctl cert`), or with --insecure to accept clear text"
                    .into(),
            )
            .into());
        }
        let r = req.into_inner();
        let result: Result<String, AdminError> = async {
            if r.id == 0 {
                return Err(AdminError::InvalidArgument("node id 0 is not a valid member id".into()));
            }
            check_address(&r.grpc_address)?;
            if !r.kms_address.is_empty() {
                check_address(&r.kms_address)?;
            }
            let m = self.require_leader()?;
            let membership = m.membership_config.membership();
            let mut message = match membership.get_node(&r.id) {
                Some(existing) if existing.grpc_addr == r.grpc_address => {
                    format!("node {} is already a member at {}", r.id, r.grpc_address)
                }
                Some(existing) => {
                    return Err(AdminError::AlreadyExists(format!(
                        "node {} is already a member at {}; remove it first (kmsctl member remove {})",
                        r.id, existing.grpc_addr, r.id
                    )));
                }
                None => {
                    let name = Some(r.name.trim())
                        .filter(|n| !n.is_empty())
                        .map_or_else(|| format!("kmsd-{}", r.id), str::to_string);
                    let info = NodeInfo {
                        name,
                        grpc_addr: r.grpc_address.clone(),
                        kms_addr: r.kms_address.clone(),
                    };
                    self.node
                        .raft()
                        .add_learner(r.id, info, false)
                        .await
                        .map_err(|e| self.raft_error(e))?;
                    info!(node_id = r.id, grpc = %r.grpc_address, "member added as learner");
                    format!(
                        "node {} added as learner at {}; start it with `kmsd --node-id {} --join <member address>`",
                        r.id, r.grpc_address, r.id
                    )
                }
            };
            if r.promote {
                message = self.promote(r.id, wait_or(r.wait_secs, 60)).await?;
            }
            Ok(message)
        }
        .await;
        let message = result?;
        Ok(reply(
            pb::MemberChangeResponse {
                version: ADMIN_API_VERSION,
                members: self.members(),
                message,
            },
            warning,
        ))
    }

    async fn member_promote(
        &self,
        req: Request<pb::MemberPromoteRequest>,
    ) -> Result2<pb::MemberChangeResponse> {
        let warning = self.admit("MemberPromote", &req, Access::Change)?;
        let r = req.into_inner();
        let message = self.promote(r.id, wait_or(r.wait_secs, 60)).await?;
        Ok(reply(
            pb::MemberChangeResponse {
                version: ADMIN_API_VERSION,
                members: self.members(),
                message,
            },
            warning,
        ))
    }

    async fn member_remove(
        &self,
        req: Request<pb::MemberRemoveRequest>,
    ) -> Result2<pb::MemberChangeResponse> {
        let warning = self.admit("MemberRemove", &req, Access::Change)?;
        let id = req.into_inner().id;
        let m = self.require_leader()?;
        let membership = m.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Err(AdminError::NotFound(format!("node {id} is not a member")).into());
        }
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let change = if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(AdminError::FailedPrecondition(format!(
                    "node {id} is the last voter; a cluster cannot remove its last voter"
                ))
                .into());
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.change_membership(change).await?;
        info!(node_id = id, "member removed");
        // The directory entry only serves DNS and status pages; the membership is what counts.
        if let Err(e) = self.node.writer().write(Command::RemoveNode { id }).await {
            warn!(node_id = id, error = %e, "removing the node's directory entry failed");
        }
        let self_removed = id == m.id;
        Ok(reply(
            pb::MemberChangeResponse {
                version: ADMIN_API_VERSION,
                members: self.members(),
                message: if self_removed {
                    format!(
                        "node {id} (this node, the leader) removed; it steps down; stop its kmsd"
                    )
                } else {
                    format!(
                        "node {id} removed; stop its kmsd and clear its data directory before reusing the id"
                    )
                },
            },
            warning,
        ))
    }

    async fn leader_transfer(
        &self,
        req: Request<pb::LeaderTransferRequest>,
    ) -> Result2<pb::LeaderTransferResponse> {
        let warning = self.admit("LeaderTransfer", &req, Access::Change)?;
        let r = req.into_inner();
        let m = self.require_leader()?;
        if r.id != m.id {
            let membership = m.membership_config.membership();
            if membership.get_node(&r.id).is_none() {
                return Err(AdminError::NotFound(format!("node {} is not a member", r.id)).into());
            }
            if !membership.voter_ids().any(|v| v == r.id) {
                return Err(AdminError::FailedPrecondition(format!(
                    "node {} is a learner; only a voter can lead (kmsctl member promote {})",
                    r.id, r.id
                ))
                .into());
            }
            self.node
                .raft()
                .trigger()
                .transfer_leader(r.id)
                .await
                .map_err(|e| AdminError::Raft(e.to_string()))?;
            let wait = wait_or(r.wait_secs, 10);
            let start = Instant::now();
            loop {
                let now = self.metrics();
                if now.current_leader == Some(r.id) {
                    info!(to = r.id, term = now.current_term, "leadership transferred");
                    break;
                }
                if start.elapsed() >= wait {
                    return Err(AdminError::FailedPrecondition(format!(
                        "leadership did not move to node {} within {}s (leader now: {:?}); is it healthy?",
                        r.id,
                        wait.as_secs(),
                        now.current_leader
                    ))
                    .into());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let m = self.metrics();
        Ok(reply(
            pb::LeaderTransferResponse {
                version: ADMIN_API_VERSION,
                leader_id: m.current_leader.unwrap_or(r.id),
                term: m.current_term,
            },
            warning,
        ))
    }

    async fn counts(&self, req: Request<pb::CountsRequest>) -> Result2<pb::CountsResponse> {
        self.admit("Counts", &req, Access::Read)?;
        Ok(reply(self.counts_now(), None))
    }

    async fn client_list(
        &self,
        req: Request<pb::ClientListRequest>,
    ) -> Result2<pb::ClientListResponse> {
        self.admit("ClientList", &req, Access::Read)?;
        Ok(reply(self.list_clients(req.get_ref())?, None))
    }

    async fn client_show(
        &self,
        req: Request<pb::ClientShowRequest>,
    ) -> Result2<pb::ClientShowResponse> {
        self.admit("ClientShow", &req, Access::Read)?;
        let cmid = parse_cmid(&req.get_ref().client_machine_id)?;
        let now = FileTime::from_system_time(SystemTime::now());
        let records = self.node.read(|s| {
            let cutoff = sub_secs(now, s.config().count_window_secs);
            s.find_client(&cmid)
                .into_iter()
                .map(|(p, r)| client_proto(p, &cmid, &r, cutoff))
                .collect::<Vec<_>>()
        });
        if records.is_empty() {
            return Err(AdminError::NotFound(format!("no pool holds client {cmid}")).into());
        }
        Ok(reply(
            pb::ClientShowResponse {
                version: ADMIN_API_VERSION,
                records,
            },
            None,
        ))
    }

    async fn client_forget(
        &self,
        req: Request<pb::ClientForgetRequest>,
    ) -> Result2<pb::ClientForgetResponse> {
        let warning = self.admit("ClientForget", &req, Access::Change)?;
        let r = req.into_inner();
        let cmid = parse_cmid(&r.client_machine_id)?;
        let pools: Vec<Pool> = match optional_pool(&r.pool)? {
            Some(p) => vec![p],
            None => self
                .node
                .read(|s| s.find_client(&cmid).into_iter().map(|(p, _)| p).collect()),
        };
        let now = FileTime::from_system_time(SystemTime::now());
        let cutoff = self
            .node
            .read(|s| sub_secs(now, s.config().count_window_secs));
        let mut forgotten = Vec::new();
        for pool in pools {
            if let Outcome::Forgotten(Some(rec)) =
                self.write(Command::Forget { pool, cmid }).await?
            {
                info!(%cmid, %pool, "client forgotten");
                forgotten.push(client_proto(pool, &cmid, &rec, cutoff));
            }
        }
        if forgotten.is_empty() {
            return Err(AdminError::NotFound(match Pool::from_name(&r.pool) {
                Some(p) => format!("the {p} pool does not hold client {cmid}"),
                None => format!("no pool holds client {cmid}"),
            })
            .into());
        }
        self.applied_locally(|s| {
            forgotten
                .iter()
                .filter_map(|f| Pool::from_name(&f.pool))
                .all(|p| s.client(p, &cmid).is_none())
        })
        .await;
        Ok(reply(
            pb::ClientForgetResponse {
                version: ADMIN_API_VERSION,
                forgotten,
            },
            warning,
        ))
    }

    async fn config_get(
        &self,
        req: Request<pb::ConfigGetRequest>,
    ) -> Result2<pb::ConfigGetResponse> {
        self.admit("ConfigGet", &req, Access::Read)?;
        let cfg = self.node.read(|s| s.config().clone());
        let keys = match req.get_ref().key.trim() {
            "" => config_keys::keys(&cfg),
            key => vec![
                config_keys::ConfigKey::parse(key)
                    .map_err(|e| AdminError::InvalidArgument(e.to_string()))?,
            ],
        };
        Ok(reply(
            pb::ConfigGetResponse {
                version: ADMIN_API_VERSION,
                entries: keys
                    .iter()
                    .map(|k| pb::ConfigEntry {
                        key: k.name(),
                        value: k.get(&cfg),
                        default_value: k.default_value(),
                        description: k.description(),
                    })
                    .collect(),
            },
            None,
        ))
    }

    async fn config_set(
        &self,
        req: Request<pb::ConfigSetRequest>,
    ) -> Result2<pb::ConfigSetResponse> {
        let warning = self.admit("ConfigSet", &req, Access::Change)?;
        let r = req.into_inner();
        let current = self.node.read(|s| s.config().clone());
        let (key, new) = config_keys::apply(&current, &r.key, &r.value)
            .map_err(|e| AdminError::InvalidArgument(e.to_string()))?;
        let old_value = key.get(&current);
        let new_value = key.get(&new);
        if new != current {
            self.write(Command::SetConfig(new.clone())).await?;
            info!(key = %key, old = %old_value, new = %new_value, "configuration changed");
            self.applied_locally(|s| s.config() == &new).await;
        }
        Ok(reply(
            pb::ConfigSetResponse {
                version: ADMIN_API_VERSION,
                key: key.name(),
                old_value,
                new_value,
            },
            warning,
        ))
    }

    async fn identity_show(
        &self,
        req: Request<pb::IdentityShowRequest>,
    ) -> Result2<pb::IdentityResponse> {
        self.admit("IdentityShow", &req, Access::Read)?;
        Ok(reply(self.identity_response(), None))
    }

    async fn identity_set(
        &self,
        req: Request<pb::IdentitySetRequest>,
    ) -> Result2<pb::IdentityResponse> {
        let warning = self.admit("IdentitySet", &req, Access::Change)?;
        let r = req.into_inner();
        let current = self.node.read(|s| s.identity().cloned()).ok_or_else(|| {
            AdminError::FailedPrecondition(
                "the cluster has no identity yet (it is generated when the cluster first has a leader)"
                    .into(),
            )
        })?;
        let mut new = current.clone();
        match (r.epid.trim(), r.hwid.trim()) {
            (epid, "") if !epid.is_empty() => {
                let e = Epid::from_str(epid).map_err(|e| {
                    AdminError::InvalidArgument(format!("`{epid}` is not a valid ePID: {e}"))
                })?;
                if r.group != 0 && r.group != e.group_id {
                    return Err(AdminError::InvalidArgument(format!(
                        "the ePID belongs to group {}, not {}",
                        e.group_id, r.group
                    ))
                    .into());
                }
                info!(group = e.group_id, epid = %e, "ePID replaced");
                new.epids.insert(e.group_id, e);
            }
            ("", hwid) if !hwid.is_empty() => {
                let bytes = hex::decode(hwid.trim_start_matches("0x"))
                    .ok()
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .ok_or_else(|| {
                        AdminError::InvalidArgument(format!(
                            "`{hwid}` is not a HwId (16 hex digits, e.g. 3A1C049600B60076)"
                        ))
                    })?;
                info!(hwid = %hex::encode_upper(bytes), "HwId replaced");
                new.hwid = bytes;
            }
            _ => {
                return Err(AdminError::InvalidArgument(
                    "give exactly one of an ePID or a HwId".into(),
                )
                .into());
            }
        }
        Ok(reply(self.set_identity(new).await?, warning))
    }

    async fn identity_rotate(
        &self,
        req: Request<pb::IdentityRotateRequest>,
    ) -> Result2<pb::IdentityResponse> {
        let warning = self.admit("IdentityRotate", &req, Access::Change)?;
        // Keep the host build family the cluster answers with (NDR64 ↔ build ≥ 9200).
        let ndr64 = self.node.read(|s| {
            s.identity()
                .and_then(|i| i.epids.values().next())
                .is_none_or(|e| e.build >= 9200)
        });
        let now = FileTime::from_system_time(SystemTime::now());
        let new = {
            use rand::RngCore;
            let mut rng = rand::rng();
            HostIdentity::generate(&mut |b: &mut [u8]| rng.fill_bytes(b), now, ndr64)
        };
        info!("host identity rotated");
        Ok(reply(self.set_identity(new).await?, warning))
    }

    type BackupStream = ReceiverStream<Result<pb::BackupChunk, Status>>;

    async fn backup(&self, req: Request<pb::BackupRequest>) -> Result2<Self::BackupStream> {
        let warning = self.admit("Backup", &req, Access::Backup)?;
        let status = self.node.status();
        // One consistent copy, taken under one read, with the log position it reflects.
        let ((term, applied_index), (config, identity, clients)) = self.node.read_applied(|s| {
            (
                s.config().clone(),
                s.identity().cloned(),
                s.export_clients().collect::<Vec<_>>(),
            )
        });
        let mut per_pool: BTreeMap<String, u64> = BTreeMap::new();
        for (p, _, _) in &clients {
            *per_pool.entry(p.name().to_string()).or_default() += 1;
        }
        let header =
            backup::header_now(status.node_id, &status.name, term, applied_index, per_pool);
        info!(clients = clients.len(), "backup started");
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let sink = ChunkSink {
                tx: tx.clone(),
                buf: Vec::with_capacity(BACKUP_CHUNK_BYTES),
            };
            let result = (|| {
                let mut w = backup::BackupWriter::new(sink, &header, &config, identity.as_ref())?;
                for (p, c, r) in &clients {
                    w.client(*p, c, r)?;
                }
                let (mut sink, records, sha) = w.finish()?;
                sink.flush_chunk()?;
                Ok::<_, std::io::Error>((records, sha))
            })();
            match result {
                Ok((records, sha256)) => info!(records, %sha256, "backup sent"),
                Err(e) => {
                    warn!(error = %e, "backup aborted");
                    let _ = tx.blocking_send(Err(Status::aborted(format!("backup aborted: {e}"))));
                }
            }
        });
        Ok(reply(ReceiverStream::new(rx), warning))
    }

    type EventsStream = ReceiverStream<Result<pb::EventsResponse, Status>>;

    async fn events(&self, req: Request<pb::EventsRequest>) -> Result2<Self::EventsStream> {
        self.admit("Events", &req, Access::Read)?;
        let r = req.into_inner();
        let recent = match r.recent {
            0 => 20,
            n => n as usize,
        };
        let mut sub = self.events.subscribe(recent);
        let (tx, rx) = mpsc::channel(64);
        let message = |e: pb::ActivationEvent, missed: u64| pb::EventsResponse {
            version: ADMIN_API_VERSION,
            event: Some(e),
            missed,
        };
        tokio::spawn(async move {
            for e in sub.recent.drain(..) {
                if tx.send(Ok(message(e, 0))).await.is_err() {
                    return;
                }
            }
            if !r.follow {
                return;
            }
            let mut missed = 0u64;
            loop {
                tokio::select! {
                    got = sub.live.recv() => match got {
                        Ok(e) => {
                            if tx.send(Ok(message(e, missed))).await.is_err() {
                                return;
                            }
                            missed = 0;
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => missed += n,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(reply(ReceiverStream::new(rx), None))
    }

    async fn health(&self, req: Request<pb::HealthRequest>) -> Result2<pb::HealthResponse> {
        self.admit("Health", &req, Access::Read)?;
        let st = self.node.status();
        let serving = self.kms_ready.load(std::sync::atomic::Ordering::SeqCst);
        let readiness = st.readiness();
        let reason = match (st.degraded, st.leader_id) {
            _ if !serving => "not serving: the KMS listener is not running".to_string(),
            _ if !readiness.ready => format!("not ready: {}", readiness.reason),
            (false, Some(l)) if l == st.node_id => "in quorum, this node leads".to_string(),
            (false, Some(l)) => format!("in quorum, leader {l}"),
            (true, _) => format!(
                "degraded: no reachable leader; {} record(s) journaled locally",
                st.journal_entries
            ),
            (false, None) => "no leader known".to_string(),
        };
        Ok(reply(
            pb::HealthResponse {
                version: ADMIN_API_VERSION,
                serving,
                degraded: st.degraded,
                leader_known: st.leader_id.is_some(),
                leader_id: st.leader_id,
                node_id: st.node_id,
                reason,
                ready: Some(serving && readiness.ready),
            },
            None,
        ))
    }
}

/// Cuts the backup byte stream into chunks for the gRPC stream (blocking side).
struct ChunkSink {
    tx: mpsc::Sender<Result<pb::BackupChunk, Status>>,
    buf: Vec<u8>,
}

impl ChunkSink {
    fn flush_chunk(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(BACKUP_CHUNK_BYTES));
        self.tx
            .blocking_send(Ok(pb::BackupChunk {
                version: ADMIN_API_VERSION,
                data: data.into(),
            }))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the caller hung up"))
    }
}

impl std::io::Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= BACKUP_CHUNK_BYTES {
            self.flush_chunk()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_codes_and_hints() {
        let s: Status = AdminError::NotLeader {
            node_id: 1,
            leader: Some((2, "10.0.0.2:1689".into())),
        }
        .into();
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            s.metadata().get(LEADER_HINT_HEADER).unwrap(),
            "id=2 addr=10.0.0.2:1689"
        );
        assert!(
            s.message()
                .contains("the leader is node 2 at 10.0.0.2:1689")
        );
        let s: Status = AdminError::NotLeader {
            node_id: 1,
            leader: None,
        }
        .into();
        assert_eq!(s.code(), tonic::Code::Unavailable);
        let s: Status = AdminError::Version(7).into();
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        assert_eq!(s.metadata().get(VERSION_MAX_HEADER).unwrap(), "1");
        let s: Status = AdminError::Write(WriteError::NoLeader(Duration::from_secs(2))).into();
        assert_eq!(s.code(), tonic::Code::Unavailable);
    }

    #[test]
    fn argument_parsing() {
        assert!(check_address("10.0.0.4:1689").is_ok());
        assert!(check_address("[::1]:1689").is_ok());
        assert!(check_address("kms4.corp.example:1689").is_ok());
        for bad in [
            "",
            "host",
            ":1689",
            "host:0",
            "host:99999",
            "http://h:1",
            "a b:1",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
        let cmid = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
        assert!(parse_cmid(cmid).is_ok());
        assert!(parse_cmid(&format!("{{{cmid}}}")).is_ok());
        assert!(matches!(
            parse_cmid("nope"),
            Err(AdminError::InvalidArgument(_))
        ));
        let c = parse_cursor(&format!("office2010:{cmid}"))
            .unwrap()
            .unwrap();
        assert_eq!(c.0, Pool::Office2010);
        assert!(parse_cursor("").unwrap().is_none());
        assert!(parse_cursor("windows").is_err());
        assert!(parse_cursor("mac:00000000-0000-0000-0000-000000000000").is_err());
        assert_eq!(optional_pool(" Windows ").unwrap(), Some(Pool::Windows));
        assert!(optional_pool("linux").is_err());
        assert_eq!(
            product_group("Windows 10/11 2015 (Volume)").unwrap(),
            "58e2134f-8e11-4d17-9cb2-91069c151148".parse().unwrap()
        );
        assert!(product_group("Windows 95").is_err());
        assert_eq!(wait_or(0, 60), Duration::from_secs(60));
        assert_eq!(wait_or(999_999, 60), Duration::from_secs(3600));
    }

    #[test]
    fn epid_dates() {
        let e: Epid = "06401-00206-271-298329-03-1033-9600.0000-0452015"
            .parse()
            .unwrap();
        assert_eq!(epid_date(&e), "2015-02-14");
    }
}

#[cfg(test)]
mod service_tests;

#[cfg(test)]
mod tls_tests;
