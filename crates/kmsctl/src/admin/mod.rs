//! The admin subcommands: operating a kmsd cluster over its gRPC admin API
//! (`kms.admin.v1`, see `proto/kms/admin/v1/admin.proto` and `docs/admin.md`).
//!
//! * [`connect`] — endpoints (`--server a,b,c`, failover, leader hints), mutual TLS
//!   (`--ca/--cert/--key`), server warnings on stderr.
//! * [`render`] — text tables and the stable `-o json` shapes.
//! * [`backup`](mod@backup) — receiving and checking a backup file.
//!
//! Exit codes: 0 ok, 1 refused or not found, 3 unreachable, 4 permission denied, 64 usage
//! (see [`ADMIN_EXIT_CODES_HELP`]).

pub mod backup;
pub mod connect;
pub mod render;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use kms_api::admin::v1 as pb;
use serde_json::{Value, json};
use tonic::Code;

use crate::cli::OutputFormat;
use crate::exit::ExitClass;
use connect::{CALL_TIMEOUT, Connector};

/// The admin API version kmsctl speaks.
pub const API_VERSION: u32 = 1;

/// The exit codes of the admin subcommands, for their `--help`.
pub const ADMIN_EXIT_CODES_HELP: &str = "\
Exit codes:
  0   done
  1   refused or not found (e.g. no such client, learner not caught up, not the leader)
  3   no --server endpoint could be reached (or none answered in time)
  4   permission denied: the certificate's role may not do this, or no certificate
  64  usage error (bad flag, unknown configuration key, value out of range); nothing changed";

/// How to reach the admin API (global flags).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ConnectArgs {
    /// kmsd gRPC endpoints (host:port), comma-separated: tried in order until one answers;
    /// calls that need the leader follow its hint.
    #[arg(
        id = "admin_server",
        long = "server",
        global = true,
        env = "KMSCTL_SERVER",
        value_name = "HOST:PORT,…",
        value_delimiter = ',',
        default_value = "127.0.0.1:1689",
        help_heading = "Admin API connection"
    )]
    pub server: Vec<String>,
    /// Cluster CA certificate (PEM) for mutual TLS.
    #[arg(
        id = "admin_ca",
        long = "ca",
        global = true,
        env = "KMSCTL_CA",
        value_name = "FILE",
        help_heading = "Admin API connection"
    )]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM; `kmsctl cert create-client`).
    #[arg(
        id = "admin_cert",
        long = "cert",
        global = true,
        env = "KMSCTL_CERT",
        value_name = "FILE",
        help_heading = "Admin API connection"
    )]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(
        id = "admin_key",
        long = "key",
        global = true,
        env = "KMSCTL_KEY",
        value_name = "FILE",
        help_heading = "Admin API connection"
    )]
    pub key: Option<PathBuf>,
}

impl Default for ConnectArgs {
    fn default() -> Self {
        ConnectArgs {
            server: vec!["127.0.0.1:1689".into()],
            ca: None,
            cert: None,
            key: None,
        }
    }
}

/// `kmsctl member …`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum MemberCommand {
    /// List the members (voters and learners) with role, health and addresses.
    #[command(after_help = MEMBER_LIST_HELP)]
    List,
    /// Add a node as a learner (then start it with `kmsd --join`); --promote also makes it a
    /// voter once it has caught up.
    #[command(after_help = MEMBER_ADD_HELP)]
    Add(MemberAddArgs),
    /// Make a caught-up learner a voter.
    #[command(after_help = MEMBER_PROMOTE_HELP)]
    Promote(MemberPromoteArgs),
    /// Remove a member from the cluster.
    #[command(after_help = MEMBER_REMOVE_HELP)]
    Remove {
        /// The member's node id.
        id: u64,
    },
}

/// `kmsctl member add`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct MemberAddArgs {
    /// The new node's id (≥ 1).
    #[arg(value_parser = clap::value_parser!(u64).range(1..))]
    pub id: u64,
    /// The new node's gRPC address, host:port.
    pub address: String,
    /// Its name [default: kmsd-ID; the node's own --name replaces it when it joins].
    #[arg(long)]
    pub name: Option<String>,
    /// Its KMS address, host:port [default: learned when the node registers].
    #[arg(long, value_name = "HOST:PORT")]
    pub kms_address: Option<String>,
    /// Wait until it has caught up and make it a voter.
    #[arg(long)]
    pub promote: bool,
    /// Longest to wait for the catch-up with --promote, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub wait: u32,
}

/// `kmsctl member promote`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct MemberPromoteArgs {
    /// The learner's node id.
    pub id: u64,
    /// Longest to wait for it to catch up, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub wait: u32,
}

/// `kmsctl leader …`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum LeaderCommand {
    /// Hand leadership to another voter and wait until it leads.
    #[command(after_help = LEADER_TRANSFER_HELP)]
    Transfer {
        /// The voter to lead.
        id: u64,
        /// Longest to wait, seconds.
        #[arg(long, value_name = "SECS", default_value_t = 10)]
        wait: u32,
    },
}

/// `kmsctl clients …`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ClientsCommand {
    /// List client records (filters, paging).
    #[command(after_help = CLIENTS_LIST_HELP)]
    List(ClientsListArgs),
    /// Show every pool's record of one client machine id.
    #[command(after_help = CLIENTS_SHOW_HELP)]
    Show {
        /// The client machine id (CMID).
        cmid: String,
    },
    /// Drop a client's record, so it no longer counts (it is counted again when it renews).
    #[command(after_help = CLIENTS_FORGET_HELP)]
    Forget {
        /// The client machine id (CMID).
        cmid: String,
        /// Only this pool (windows, office2010, office2013plus) [default: every pool].
        #[arg(long)]
        pool: Option<String>,
    },
}

/// `kmsctl clients list`.
#[derive(Debug, Clone, PartialEq, Eq, Args, Default)]
pub struct ClientsListArgs {
    /// Only this pool: windows, office2010, office2013plus.
    #[arg(long)]
    pub pool: Option<String>,
    /// Only this product group: KMS counted id or catalog name.
    #[arg(long, value_name = "GROUP")]
    pub product: Option<String>,
    /// Only clients last seen at or after TIME (7d, 12h, 2025-01-31, 2025-01-31T12:00:00Z, @UNIX).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only clients last seen before TIME (same forms as --since).
    #[arg(long, value_name = "TIME")]
    pub before: Option<String>,
    /// Only workstation names containing TEXT (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    pub workstation: Option<String>,
    /// Only clients flagged as duplicate CMIDs (cloned images).
    #[arg(long)]
    pub duplicates: bool,
    /// At most N clients (0: all).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: u64,
    /// Continue after a previous listing (its `next_cursor`).
    #[arg(long)]
    pub cursor: Option<String>,
}

/// `kmsctl config …`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ConfigCommand {
    /// Show every key (or one key's value).
    #[command(after_help = CONFIG_GET_HELP)]
    Get {
        /// One key [default: all].
        key: Option<String>,
    },
    /// Change one key of the replicated configuration (validated; every node applies it).
    #[command(after_help = CONFIG_SET_HELP)]
    Set {
        /// The key, e.g. renewal-interval.
        key: String,
        /// The new value.
        value: String,
    },
}

/// `kmsctl identity …`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum IdentityCommand {
    /// Show the cluster's ePIDs and HwId.
    #[command(after_help = IDENTITY_SHOW_HELP)]
    Show,
    /// Replace one ePID or the HwId.
    #[command(subcommand, after_help = IDENTITY_SET_HELP)]
    Set(IdentitySetCommand),
    /// Generate a whole new identity (every ePID and the HwId).
    #[command(after_help = IDENTITY_ROTATE_HELP)]
    Rotate,
}

/// `kmsctl identity set …`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum IdentitySetCommand {
    /// Replace the ePID of its group.
    #[command(after_help = IDENTITY_SET_HELP)]
    Epid {
        /// The ePID, e.g. 06401-00206-271-298329-03-1033-9600.0000-0452015.
        epid: String,
        /// Refuse unless the ePID belongs to this group.
        #[arg(long)]
        group: Option<u32>,
    },
    /// Replace the HwId (16 hex digits).
    #[command(after_help = IDENTITY_SET_HELP)]
    Hwid {
        /// The HwId, e.g. 3A1C049600B60076.
        hwid: String,
    },
}

/// `kmsctl backup`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct BackupArgs {
    /// The file to write.
    pub file: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,
}

/// `kmsctl events`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct EventsArgs {
    /// Keep printing new events until interrupted.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// How many recent events to print first (at most 1000).
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub recent: u32,
}

/// What an admin subcommand does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    /// `status`.
    Status,
    /// `health`.
    Health,
    /// `member …`.
    Member(MemberCommand),
    /// `leader …`.
    Leader(LeaderCommand),
    /// `counts`.
    Counts,
    /// `clients …`.
    Clients(ClientsCommand),
    /// `config …`.
    Config(ConfigCommand),
    /// `identity …`.
    Identity(IdentityCommand),
    /// `backup`.
    Backup(BackupArgs),
    /// `events`.
    Events(EventsArgs),
}

/// Why an admin subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The command line is wrong (exit 64).
    #[error("{0}")]
    Usage(String),
    /// The TLS files are unusable (exit 64).
    #[error(transparent)]
    Tls(#[from] kms_tls::TlsError),
    /// No endpoint answered (exit 3).
    #[error("cannot reach kmsd: {}", describe_tried(.tried))]
    Unreachable {
        /// Each endpoint tried and why it failed.
        tried: Vec<(String, String)>,
    },
    /// kmsd refused the call (exit by code: 64 invalid argument, 4 permission, 3 unavailable,
    /// else 1).
    #[error("{endpoint}: {message}")]
    Status {
        /// The endpoint that answered.
        endpoint: String,
        /// The gRPC code.
        code: Code,
        /// kmsd's explanation.
        message: String,
    },
    /// The answer or the backup file is not what it should be (exit 1).
    #[error("{0}")]
    Refused(String),
    /// Writing output or a file failed (exit 1).
    #[error("{0}")]
    Io(String),
}

fn describe_tried(tried: &[(String, String)]) -> String {
    if tried.is_empty() {
        return "no endpoint".into();
    }
    tried
        .iter()
        .map(|(e, why)| format!("{e}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl AdminError {
    /// From a gRPC status answered by `endpoint`.
    pub fn from_status(endpoint: String, status: tonic::Status) -> AdminError {
        let message = match status.code() {
            Code::Unimplemented => format!(
                "this kmsd does not know the call (older version?): {}",
                status.message()
            ),
            _ => status.message().to_string(),
        };
        AdminError::Status {
            endpoint,
            code: status.code(),
            message,
        }
    }

    /// The exit class.
    pub fn class(&self) -> ExitClass {
        match self {
            AdminError::Usage(_) | AdminError::Tls(_) => ExitClass::Usage,
            AdminError::Unreachable { .. } => ExitClass::Connection,
            AdminError::Status { code, .. } => match code {
                Code::InvalidArgument | Code::OutOfRange => ExitClass::Usage,
                Code::PermissionDenied | Code::Unauthenticated => ExitClass::PermissionDenied,
                Code::Unavailable | Code::DeadlineExceeded => ExitClass::Connection,
                _ => ExitClass::Refused,
            },
            AdminError::Refused(_) | AdminError::Io(_) => ExitClass::Refused,
        }
    }
}

impl From<std::io::Error> for AdminError {
    fn from(e: std::io::Error) -> Self {
        AdminError::Io(format!("cannot write output: {e}"))
    }
}

/// Run an admin subcommand against the endpoints of `connect`, writing to `out`.
pub async fn run(
    command: &AdminCommand,
    connect: &ConnectArgs,
    output: OutputFormat,
    out: &mut dyn Write,
) -> Result<ExitClass, AdminError> {
    let c = Connector::from_args(connect)?;
    run_with(&c, command, output, out).await
}

/// Like [`run`] with a ready [`Connector`] (tests).
pub async fn run_with(
    c: &Connector,
    command: &AdminCommand,
    output: OutputFormat,
    out: &mut dyn Write,
) -> Result<ExitClass, AdminError> {
    let json = output == OutputFormat::Json;
    let v = API_VERSION;
    match command {
        AdminCommand::Status => {
            let s = c
                .call(
                    pb::StatusRequest { version: v },
                    CALL_TIMEOUT,
                    |mut a, r| async move { a.status(r).await },
                )
                .await?
                .message;
            if c.endpoints().len() > 1 {
                // Every endpoint given is checked, not only the one that answered.
                let all = endpoint_health(c).await;
                let mut value = render::status_json(&s);
                value["endpoints"] = Value::Array(all.iter().map(EndpointHealth::json).collect());
                emit(out, json, value, || {
                    format!(
                        "{}\nEndpoints\n{}",
                        render::status_text(&s),
                        endpoint_table(&all)
                    )
                })?;
                if all.iter().any(|e| !e.ok()) {
                    return Ok(worst_class(&all));
                }
            } else {
                emit(out, json, render::status_json(&s), || {
                    render::status_text(&s)
                })?;
            }
        }
        AdminCommand::Health if c.endpoints().len() > 1 => {
            let all = endpoint_health(c).await;
            let failed = all.iter().filter(|e| !e.ok()).count();
            emit(
                out,
                json,
                Value::Array(all.iter().map(EndpointHealth::json).collect()),
                || endpoint_table(&all),
            )?;
            if failed > 0 {
                return Ok(worst_class(&all));
            }
        }
        AdminCommand::Health => {
            let h = c
                .call(
                    pb::HealthRequest { version: v },
                    CALL_TIMEOUT,
                    |mut a, r| async move { a.health(r).await },
                )
                .await?
                .message;
            let ok = health_ok(&h);
            emit(
                out,
                json,
                json!({
                    "node_id": h.node_id,
                    "serving": h.serving,
                    "degraded": h.degraded,
                    "leader_known": h.leader_known,
                    "leader_id": h.leader_id,
                    "ready": h.ready,
                    "ok": ok,
                    "reason": h.reason,
                }),
                || format!("node {}: {}\n", h.node_id, h.reason),
            )?;
            if !ok {
                return Ok(ExitClass::Refused);
            }
        }
        AdminCommand::Member(m) => member(c, m, json, out).await?,
        AdminCommand::Leader(LeaderCommand::Transfer { id, wait }) => {
            let req = pb::LeaderTransferRequest {
                version: v,
                id: *id,
                wait_secs: *wait,
            };
            let timeout = CALL_TIMEOUT + Duration::from_secs(u64::from(*wait));
            let r = c
                .call(req, timeout, |mut a, r| async move {
                    a.leader_transfer(r).await
                })
                .await?
                .message;
            emit(
                out,
                json,
                json!({"leader_id": r.leader_id, "term": r.term}),
                || format!("node {} leads (term {})\n", r.leader_id, r.term),
            )?;
        }
        AdminCommand::Counts => {
            let r = c
                .call(
                    pb::CountsRequest { version: v },
                    CALL_TIMEOUT,
                    |mut a, r| async move { a.counts(r).await },
                )
                .await?
                .message;
            emit(out, json, render::counts_json(&r), || {
                render::counts_text(&r)
            })?;
        }
        AdminCommand::Clients(cmd) => return clients(c, cmd, json, out).await,
        AdminCommand::Config(cmd) => config(c, cmd, json, out).await?,
        AdminCommand::Identity(cmd) => identity(c, cmd, json, out).await?,
        AdminCommand::Backup(args) => backup::run(c, args, json, out).await?,
        AdminCommand::Events(args) => events(c, args, json, out).await?,
    }
    Ok(ExitClass::Success)
}

/// Write `value` as pretty JSON, or the text.
/// One endpoint's answer to `Health`, or why there is none.
struct EndpointHealth {
    endpoint: String,
    answer: Result<pb::HealthResponse, AdminError>,
}

impl EndpointHealth {
    fn ok(&self) -> bool {
        self.answer.as_ref().is_ok_and(health_ok)
    }

    fn json(&self) -> Value {
        match &self.answer {
            Ok(h) => json!({
                "endpoint": self.endpoint,
                "node_id": h.node_id,
                "ok": health_ok(h),
                "ready": h.ready,
                "serving": h.serving,
                "degraded": h.degraded,
                "leader_id": h.leader_id,
                "reason": h.reason,
            }),
            Err(e) => json!({
                "endpoint": self.endpoint,
                "ok": false,
                "error": e.to_string(),
            }),
        }
    }
}

/// A node is healthy when it serves, is ready and in quorum (a server from before `ready`
/// says nothing of its Raft core or catch-up).
fn health_ok(h: &pb::HealthResponse) -> bool {
    h.serving && !h.degraded && h.leader_known && h.ready.unwrap_or(true)
}

/// Ask every endpoint of `c` for its health, concurrently.
async fn endpoint_health(c: &Connector) -> Vec<EndpointHealth> {
    let asks: Vec<_> = c
        .each_endpoint()
        .into_iter()
        .map(|one| {
            tokio::spawn(async move {
                let endpoint = one.endpoints()[0].clone();
                let answer = one
                    .call(
                        pb::HealthRequest {
                            version: API_VERSION,
                        },
                        CALL_TIMEOUT,
                        |mut a, r| async move { a.health(r).await },
                    )
                    .await
                    .map(|a| a.message);
                EndpointHealth { endpoint, answer }
            })
        })
        .collect();
    let mut all = Vec::with_capacity(asks.len());
    for (ask, endpoint) in asks.into_iter().zip(c.endpoints()) {
        all.push(ask.await.unwrap_or_else(|e| EndpointHealth {
            endpoint: endpoint.clone(),
            answer: Err(AdminError::Io(format!("health check task failed: {e}"))),
        }));
    }
    all
}

fn endpoint_table(all: &[EndpointHealth]) -> String {
    let mut t = render::Table::new(&["ENDPOINT", "NODE", "OK", "STATE"]);
    for e in all {
        let (node, state) = match &e.answer {
            Ok(h) => (h.node_id.to_string(), h.reason.clone()),
            Err(err) => ("-".to_string(), err.to_string()),
        };
        t.row(vec![
            e.endpoint.clone(),
            node,
            if e.ok() { "yes" } else { "no" }.to_string(),
            state,
        ]);
    }
    t.render()
}

/// The exit class of a multi-endpoint check: unreachable endpoints weigh more than unhealthy
/// ones.
fn worst_class(all: &[EndpointHealth]) -> ExitClass {
    let mut class = ExitClass::Success;
    for e in all {
        match &e.answer {
            Err(err) => return err.class(),
            Ok(h) if !health_ok(h) => class = ExitClass::Refused,
            Ok(_) => {}
        }
    }
    class
}

fn emit(
    out: &mut dyn Write,
    json: bool,
    value: Value,
    text: impl FnOnce() -> String,
) -> Result<(), AdminError> {
    if json {
        serde_json::to_writer_pretty(&mut *out, &value).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        out.write_all(text().as_bytes())?;
    }
    Ok(())
}

fn change_json(r: &pb::MemberChangeResponse) -> Value {
    json!({
        "message": r.message,
        "members": r.members.iter().map(render::member_json).collect::<Vec<_>>(),
    })
}

async fn member(
    c: &Connector,
    cmd: &MemberCommand,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let v = API_VERSION;
    let change = match cmd {
        MemberCommand::List => {
            let r = c
                .call(
                    pb::MemberListRequest { version: v },
                    CALL_TIMEOUT,
                    |mut a, r| async move { a.member_list(r).await },
                )
                .await?
                .message;
            return emit(
                out,
                json,
                json!({
                    "leader_id": r.leader_id,
                    "term": r.term,
                    "members": r.members.iter().map(render::member_json).collect::<Vec<_>>(),
                }),
                || render::members_table(&r.members),
            );
        }
        MemberCommand::Add(a) => {
            let req = pb::MemberAddRequest {
                version: v,
                id: a.id,
                grpc_address: a.address.clone(),
                name: a.name.clone().unwrap_or_default(),
                kms_address: a.kms_address.clone().unwrap_or_default(),
                promote: a.promote,
                wait_secs: a.wait,
            };
            let timeout = CALL_TIMEOUT + Duration::from_secs(u64::from(a.wait));
            c.call(
                req,
                timeout,
                |mut a, r| async move { a.member_add(r).await },
            )
            .await?
            .message
        }
        MemberCommand::Promote(p) => {
            let req = pb::MemberPromoteRequest {
                version: v,
                id: p.id,
                wait_secs: p.wait,
            };
            let timeout = CALL_TIMEOUT + Duration::from_secs(u64::from(p.wait));
            c.call(
                req,
                timeout,
                |mut a, r| async move { a.member_promote(r).await },
            )
            .await?
            .message
        }
        MemberCommand::Remove { id } => {
            let req = pb::MemberRemoveRequest {
                version: v,
                id: *id,
            };
            c.call(req, CALL_TIMEOUT, |mut a, r| async move {
                a.member_remove(r).await
            })
            .await?
            .message
        }
    };
    emit(out, json, change_json(&change), || {
        format!(
            "{}\n\n{}",
            change.message,
            render::members_table(&change.members)
        )
    })
}

async fn clients(
    c: &Connector,
    cmd: &ClientsCommand,
    json: bool,
    out: &mut dyn Write,
) -> Result<ExitClass, AdminError> {
    let v = API_VERSION;
    match cmd {
        ClientsCommand::List(args) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let time = |s: &Option<String>| -> Result<Option<i64>, AdminError> {
                s.as_deref()
                    .map(|t| render::parse_time(t, now).map_err(AdminError::Usage))
                    .transpose()
            };
            let mut req = pb::ClientListRequest {
                version: v,
                pool: args.pool.clone().unwrap_or_default(),
                product_group: args.product.clone().unwrap_or_default(),
                seen_since_unix: time(&args.since)?,
                seen_before_unix: time(&args.before)?,
                workstation_contains: args.workstation.clone().unwrap_or_default(),
                duplicates_only: args.duplicates,
                page_size: 0,
                cursor: args.cursor.clone().unwrap_or_default(),
            };
            let mut all: Vec<pb::Client> = Vec::new();
            let next = loop {
                let remaining = match args.limit {
                    0 => 1000,
                    n => (n - all.len() as u64).min(1000),
                };
                req.page_size = remaining as u32;
                let page = c
                    .call(req.clone(), CALL_TIMEOUT, |mut a, r| async move {
                        a.client_list(r).await
                    })
                    .await?
                    .message;
                all.extend(page.clients);
                let next = page.next_cursor;
                if next.is_empty() || (args.limit != 0 && all.len() as u64 >= args.limit) {
                    break next;
                }
                req.cursor = next;
            };
            emit(
                out,
                json,
                json!({
                    "clients": all.iter().map(render::client_json).collect::<Vec<_>>(),
                    "next_cursor": if next.is_empty() { Value::Null } else { Value::String(next.clone()) },
                }),
                || {
                    let mut t = render::clients_table(&all);
                    t.push_str(&format!("{} client(s)\n", all.len()));
                    if !next.is_empty() {
                        t.push_str(&format!("more: --cursor {next}\n"));
                    }
                    t
                },
            )?;
        }
        ClientsCommand::Show { cmid } => {
            let req = pb::ClientShowRequest {
                version: v,
                client_machine_id: cmid.clone(),
            };
            let r = c
                .call(req, CALL_TIMEOUT, |mut a, r| async move {
                    a.client_show(r).await
                })
                .await?
                .message;
            emit(
                out,
                json,
                json!({"records": r.records.iter().map(render::client_json).collect::<Vec<_>>()}),
                || {
                    r.records
                        .iter()
                        .map(render::client_text)
                        .collect::<Vec<_>>()
                        .join("\n")
                },
            )?;
        }
        ClientsCommand::Forget { cmid, pool } => {
            let req = pb::ClientForgetRequest {
                version: v,
                client_machine_id: cmid.clone(),
                pool: pool.clone().unwrap_or_default(),
            };
            let r = c
                .call(req, CALL_TIMEOUT, |mut a, r| async move {
                    a.client_forget(r).await
                })
                .await?
                .message;
            emit(
                out,
                json,
                json!({"forgotten": r.forgotten.iter().map(render::client_json).collect::<Vec<_>>()}),
                || {
                    r.forgotten
                        .iter()
                        .map(|f| {
                            format!(
                                "forgot {} ({}) in the {} pool\n",
                                f.client_machine_id, f.workstation, f.pool
                            )
                        })
                        .collect()
                },
            )?;
        }
    }
    Ok(ExitClass::Success)
}

async fn config(
    c: &Connector,
    cmd: &ConfigCommand,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let v = API_VERSION;
    match cmd {
        ConfigCommand::Get { key } => {
            let req = pb::ConfigGetRequest {
                version: v,
                key: key.clone().unwrap_or_default(),
            };
            let r = c
                .call(req, CALL_TIMEOUT, |mut a, r| async move {
                    a.config_get(r).await
                })
                .await?
                .message;
            if key.is_some() {
                let e = r
                    .entries
                    .first()
                    .ok_or_else(|| AdminError::Refused("kmsd answered without the key".into()))?;
                emit(out, json, render::config_entry_json(e), || {
                    format!("{}\n", e.value)
                })
            } else {
                emit(
                    out,
                    json,
                    json!({"entries": r.entries.iter().map(render::config_entry_json).collect::<Vec<_>>()}),
                    || render::config_table(&r.entries),
                )
            }
        }
        ConfigCommand::Set { key, value } => {
            let req = pb::ConfigSetRequest {
                version: v,
                key: key.clone(),
                value: value.clone(),
            };
            let r = c
                .call(req, CALL_TIMEOUT, |mut a, r| async move {
                    a.config_set(r).await
                })
                .await?
                .message;
            emit(
                out,
                json,
                json!({"key": r.key, "old_value": r.old_value, "new_value": r.new_value}),
                || {
                    if r.old_value == r.new_value {
                        format!("{}: {} (unchanged)\n", r.key, r.new_value)
                    } else {
                        format!("{}: {} -> {}\n", r.key, r.old_value, r.new_value)
                    }
                },
            )
        }
    }
}

async fn identity(
    c: &Connector,
    cmd: &IdentityCommand,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let v = API_VERSION;
    let r = match cmd {
        IdentityCommand::Show => {
            c.call(
                pb::IdentityShowRequest { version: v },
                CALL_TIMEOUT,
                |mut a, r| async move { a.identity_show(r).await },
            )
            .await?
            .message
        }
        IdentityCommand::Set(set) => {
            let req = match set {
                IdentitySetCommand::Epid { epid, group } => pb::IdentitySetRequest {
                    version: v,
                    epid: epid.clone(),
                    group: group.unwrap_or(0),
                    hwid: String::new(),
                },
                IdentitySetCommand::Hwid { hwid } => pb::IdentitySetRequest {
                    version: v,
                    epid: String::new(),
                    group: 0,
                    hwid: hwid.clone(),
                },
            };
            c.call(req, CALL_TIMEOUT, |mut a, r| async move {
                a.identity_set(r).await
            })
            .await?
            .message
        }
        IdentityCommand::Rotate => {
            c.call(
                pb::IdentityRotateRequest { version: v },
                CALL_TIMEOUT,
                |mut a, r| async move { a.identity_rotate(r).await },
            )
            .await?
            .message
        }
    };
    emit(out, json, render::identity_json(&r), || {
        render::identity_text(&r)
    })
}

async fn events(
    c: &Connector,
    args: &EventsArgs,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let req = pb::EventsRequest {
        version: API_VERSION,
        recent: args.recent,
        follow: args.follow,
    };
    let answer = c
        .call(
            req,
            CALL_TIMEOUT,
            |mut a, r| async move { a.events(r).await },
        )
        .await?;
    let mut stream = answer.message;
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(()),
            Err(status) => return Err(AdminError::from_status(answer.endpoint, status)),
        };
        let Some(e) = msg.event else { continue };
        if json {
            serde_json::to_writer(&mut *out, &render::event_json(&e, msg.missed))
                .map_err(std::io::Error::from)?;
            writeln!(out)?;
        } else {
            out.write_all(render::event_text(&e, msg.missed).as_bytes())?;
        }
        out.flush()?;
    }
}

// ---------------------------------------------------------------------------------------------
// --help texts

/// `kmsctl status --help` epilogue.
pub const STATUS_HELP: &str = "\
Examples:
  kmsctl status
  kmsctl status --server kms1:1689,kms2:1689,kms3:1689 -o json
  kmsctl status --ca certs/ca.crt --cert certs/client.ops.crt --key certs/client.ops.key

The answering node's view: members with role and health, leader, term, log indexes, and
per pool the live and reported count against the threshold.

JSON output (-o json):
  {\"node_id\": 1, \"node_name\": \"kmsd-1\", \"server_version\": \"0.1.0\", \"leader_id\": 1|null,
   \"term\": 3, \"commit_index\": 42, \"applied_index\": 42, \"degraded\": false, \"journal_entries\": 0,
   \"members\": [{\"id\", \"name\", \"grpc_address\", \"kms_address\", \"role\": \"leader\"|\"follower\"|
                \"learner\", \"voter\", \"healthy\", \"matched_index\": n|null}],
   \"pools\": [{\"pool\": \"windows\"|\"office2010\"|\"office2013plus\", \"live\", \"reported\",
              \"threshold\", \"threshold_met\", \"seat_limit\": n|null, \"duplicates\"}]}

";

/// `kmsctl health --help` epilogue.
pub const HEALTH_HELP: &str = "\
Examples:
  kmsctl health && echo ok
  kmsctl health --server kms2:1689 -o json

Exits 0 when the node serves, is not degraded and knows a leader; 1 otherwise.

JSON output (-o json):
  {\"node_id\", \"serving\", \"degraded\", \"leader_known\", \"leader_id\": n|null, \"ok\", \"reason\"}

";

const MEMBER_LIST_HELP: &str = "\
Example:
  kmsctl member list -o json

JSON output: {\"leader_id\": n|null, \"term\": n, \"members\": [member, …]} (member as in status).
";

const MEMBER_ADD_HELP: &str = "\
Examples:
  kmsctl member add 4 kms4.corp.example:1689         # then on kms4: kmsd --node-id 4 --join kms1:1689
  kmsctl member add 4 10.0.0.4:1689 --name kms4 --promote --wait 120

Runs on the leader (kmsctl follows the leader hint). The node joins as a learner; `kmsd --join`
promotes it to voter once it has caught up, or --promote does it here.

JSON output: {\"message\": \"…\", \"members\": [member, …]}
";

const MEMBER_PROMOTE_HELP: &str = "\
Example:
  kmsctl member promote 4 --wait 120

JSON output: {\"message\": \"…\", \"members\": [member, …]}
";

const MEMBER_REMOVE_HELP: &str = "\
Example:
  kmsctl member remove 3

Removing the leader makes it step down; the last voter cannot be removed. Stop the removed
node's kmsd afterwards.

JSON output: {\"message\": \"…\", \"members\": [member, …]}
";

const LEADER_TRANSFER_HELP: &str = "\
Example:
  kmsctl leader transfer 2        # e.g. before restarting the current leader

JSON output: {\"leader_id\": n, \"term\": n}
";

/// `kmsctl counts --help` epilogue.
pub const COUNTS_HELP: &str = "\
Examples:
  kmsctl counts
  kmsctl counts -o json | jq '.pools[] | select(.pool == \"windows\") | .reported'

Per pool: live (distinct CMIDs in the count window), reported (what clients receive),
threshold, whether it is met, the largest N among live clients, clients waiting for the
threshold (their N is above the reported count), seat limit use, duplicates, stored records.

JSON output (-o json):
  {\"now\": \"2025-06-15T12:00:00Z\", \"count_window_days\": 30,
   \"pools\": [{\"pool\", \"live\", \"reported\", \"threshold\", \"threshold_met\", \"max_required\",
              \"waiting\", \"seat_limit\": n|null, \"seats_used\", \"duplicates\", \"stored\"}],
   \"group_seats\": [{\"kms_counted_id\", \"name\", \"limit\", \"used\"}]}

";

const CLIENTS_LIST_HELP: &str = "\
Examples:
  kmsctl clients list
  kmsctl clients list --pool windows --since 7d --workstation desktop- --limit 0
  kmsctl clients list --duplicates -o json
  kmsctl clients list --product \"Windows 10/11 2015 (Volume)\" --before 2025-01-01

Ordered by pool, then CMID. --limit 0 lists everything (in pages of 1000).

JSON output (-o json):
  {\"clients\": [{\"pool\", \"cmid\", \"workstation\", \"first_seen\", \"last_seen\" (UTC, RFC 3339),
     \"live\", \"kms_counted_id\", \"product_group\": s|null, \"sku_id\", \"edition\": s|null,
     \"previous_cmid\", \"license_status\", \"is_vm\", \"required_count\", \"protocol\",
     \"last_node\", \"last_source\", \"request_count\", \"duplicate\",
     \"duplicate_workstation\": s|null}],
   \"next_cursor\": \"…\"|null}
";

const CLIENTS_SHOW_HELP: &str = "\
Example:
  kmsctl clients show 3f2504e0-4f89-41d3-9a0c-0305e82c3301

JSON output: {\"records\": [client, …]} (one per pool holding the CMID; client as in
`clients list`). Exit 1 when no pool holds it.
";

const CLIENTS_FORGET_HELP: &str = "\
Examples:
  kmsctl clients forget 3f2504e0-4f89-41d3-9a0c-0305e82c3301
  kmsctl clients forget 3f2504e0-4f89-41d3-9a0c-0305e82c3301 --pool office2013plus

The count drops at once; the machine is counted again when it next renews.

JSON output: {\"forgotten\": [client, …]}. Exit 1 when no pool holds it.
";

const CONFIG_GET_HELP: &str = "\
Examples:
  kmsctl config get
  kmsctl config get renewal-interval

Keys: activation-interval, renewal-interval (minutes, 15 … 43200), served-groups
(all-volume | csvlk-covered | comma list of product group ids or names),
seat-limit.<windows|office2010|office2013plus|group-id> (number | none), count-window-days,
retention-days, count-report (capped | exact), time-skew-check (off | hours),
renew-write-after-minutes.

JSON output: one key: {\"key\", \"value\", \"default\", \"description\"};
all keys: {\"entries\": [{\"key\", \"value\", \"default\", \"description\"}, …]}
";

const CONFIG_SET_HELP: &str = "\
Examples:
  kmsctl config set renewal-interval 1440
  kmsctl config set activation-interval 2h
  kmsctl config set seat-limit.windows 500
  kmsctl config set served-groups csvlk-covered
  kmsctl config set time-skew-check off

Every node answers with the new value from its next response on. A refused value exits 64
with the reason; nothing changes.

JSON output: {\"key\", \"old_value\", \"new_value\"}
";

const IDENTITY_SHOW_HELP: &str = "\
Example:
  kmsctl identity show -o json

JSON output: {\"initialized\", \"hwid\": \"16 hex digits\"|null,
              \"epids\": [{\"group\", \"epid\", \"build\", \"lcid\", \"date\": \"YYYY-MM-DD\"}]}
";

const IDENTITY_SET_HELP: &str = "\
Examples:
  kmsctl identity set epid 06401-00206-271-298329-03-1033-9600.0000-0452015
  kmsctl identity set epid 06401-00206-271-298329-03-1033-9600.0000-0452015 --group 206
  kmsctl identity set hwid 3A1C049600B60076

JSON output: as `identity show`.
";

const IDENTITY_ROTATE_HELP: &str = "\
Example:
  kmsctl identity rotate

Every node answers with the new ePIDs and HwId from its next response on. Clients accept a
changed host identity; their counts are unaffected.

JSON output: as `identity show`.
";

/// `kmsctl backup --help` epilogue.
pub const BACKUP_HELP: &str = "\
Examples:
  kmsctl backup /var/backups/kmsd-$(date +%F).kmsbak
  kmsctl backup cluster.kmsbak --force -o json
  # restore into a new cluster:  kmsd --data-dir /var/lib/kmsd-new --restore cluster.kmsbak

Client records, replicated configuration and host identity, from one consistent read of the
answering node. The file is checked (format version, SHA-256, record count) before it is
moved into place. Needs an admin certificate when TLS is on.

JSON output: {\"file\", \"bytes\", \"clients\", \"sha256\", \"created\", \"node_id\"}
";

/// `kmsctl events --help` epilogue.
pub const EVENTS_HELP: &str = "\
Examples:
  kmsctl events
  kmsctl events --follow --server kms2:1689
  kmsctl events -f -o json | jq -c 'select(.result != \"success\")'

Activation requests answered by the node you ask (each node reports its own), with the fields
of Microsoft's event 12290: the most recent first, then new ones with --follow.

JSON output (-o json): one object per line:
  {\"time\", \"time_unix_ms\", \"sequence\", \"node_id\", \"event_id\": 12290, \"result\",
   \"hresult\": \"0x00000000\", \"pool\": s|null, \"cmid\", \"workstation\", \"current_count\",
   \"required_client_count\", \"protocol\", \"syntax\", \"license_status\", \"binding_expiration\",
   \"is_vm\", \"client_time\", \"sku_id\", \"kms_counted_id\", \"application_id\", \"source\",
   \"reason\": s|null, \"degraded\", \"duration_us\", \"missed\"}

";

/// `kmsctl member|leader|clients|config|identity --help` epilogue.
pub const GROUP_HELP: &str = "\
Run `kmsctl <command> <subcommand> --help` for examples and the JSON shapes.

";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_parse() {
        use crate::cli::{Cli, Command};
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "kmsctl",
            "--server",
            "a:1,b:2",
            "--ca",
            "ca.crt",
            "--cert",
            "c.crt",
            "--key",
            "c.key",
            "config",
            "set",
            "renewal-interval",
            "60",
        ])
        .unwrap();
        assert_eq!(cli.connect.server, vec!["a:1", "b:2"]);
        assert_eq!(
            cli.connect.key.as_deref(),
            Some(std::path::Path::new("c.key"))
        );
        assert!(matches!(
            cli.command,
            Command::Config(ConfigCommand::Set { ref key, ref value }) if key == "renewal-interval" && value == "60"
        ));
        // Global flags after the subcommand too.
        let cli = Cli::try_parse_from([
            "kmsctl",
            "config",
            "get",
            "count-report",
            "--server",
            "x:1",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.connect.server, vec!["x:1"]);
        assert!(matches!(
            cli.command,
            Command::Config(ConfigCommand::Get { key: Some(_) })
        ));
        for argv in [
            vec!["kmsctl", "status"],
            vec!["kmsctl", "health"],
            vec!["kmsctl", "member", "list"],
            vec![
                "kmsctl",
                "member",
                "add",
                "4",
                "h:1689",
                "--promote",
                "--wait",
                "5",
            ],
            vec!["kmsctl", "member", "promote", "4"],
            vec!["kmsctl", "member", "remove", "4"],
            vec!["kmsctl", "leader", "transfer", "2"],
            vec!["kmsctl", "counts"],
            vec![
                "kmsctl", "clients", "list", "--pool", "windows", "--since", "7d", "--limit", "0",
            ],
            vec!["kmsctl", "clients", "show", "x"],
            vec!["kmsctl", "clients", "forget", "x", "--pool", "windows"],
            vec!["kmsctl", "config", "get"],
            vec!["kmsctl", "identity", "show"],
            vec!["kmsctl", "identity", "set", "epid", "e", "--group", "206"],
            vec!["kmsctl", "identity", "set", "hwid", "00"],
            vec!["kmsctl", "identity", "rotate"],
            vec!["kmsctl", "backup", "f", "--force"],
            vec!["kmsctl", "events", "-f", "--recent", "5"],
        ] {
            let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            assert_eq!(cli.connect, ConnectArgs::default(), "{argv:?}");
        }
        for bad in [
            vec!["kmsctl", "member", "add", "0", "h:1"],
            vec!["kmsctl", "events", "--recent", "0"],
            vec!["kmsctl", "config", "set", "k"],
        ] {
            assert!(Cli::try_parse_from(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn status_codes_map_to_exit_classes() {
        let e = |code| AdminError::Status {
            endpoint: "x".into(),
            code,
            message: String::new(),
        };
        assert_eq!(e(Code::InvalidArgument).class(), ExitClass::Usage);
        assert_eq!(e(Code::NotFound).class(), ExitClass::Refused);
        assert_eq!(e(Code::FailedPrecondition).class(), ExitClass::Refused);
        assert_eq!(
            e(Code::PermissionDenied).class(),
            ExitClass::PermissionDenied
        );
        assert_eq!(
            e(Code::Unauthenticated).class(),
            ExitClass::PermissionDenied
        );
        assert_eq!(e(Code::Unavailable).class(), ExitClass::Connection);
        assert_eq!(ExitClass::PermissionDenied.code(), 4);
        assert_eq!(
            AdminError::Unreachable { tried: vec![] }.class(),
            ExitClass::Connection
        );
        assert_eq!(AdminError::Usage("x".into()).class(), ExitClass::Usage);
    }
}
