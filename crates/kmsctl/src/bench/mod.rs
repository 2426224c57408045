//! `kmsctl bench`: a bounded load generator built on [`crate::client`], verifying every
//! response, with latency percentiles and errors by reason.
//!
//! `concurrency` workers share one request counter. Each worker sends one request at a time:
//! on its own kept-alive connection (`keepalive`, reconnecting after an error) or on a fresh
//! connection per request (`per-connection`). The run stops by itself: after `requests`
//! requests, or once `duration` has passed (requests in flight then finish or time out — each
//! request, connect and bind included, is bounded by the timeout). Only the one resolved
//! address is ever contacted, and a worker pauses [`CONNECT_ERROR_BACKOFF`] after a failed
//! connect instead of spinning.

pub mod histogram;
pub mod stats;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kms_wire::kms::ProtocolVersion;
use tokio::task::JoinSet;

use crate::catalog::{self, CatalogError, ProductSelection};
use crate::cli::{BenchArgs, BenchMode};
use crate::client::{
    self, ClientError, ClientIdentity, ConnectionOptions, KmsAddr, KmsConnection, Reply,
};

pub use histogram::Histogram;
pub use stats::{BenchReport, BenchStats, LatencySummary, ReportHeader, Sample};

/// Pause of a worker after a failed TCP connect, so a host that is down is probed, not
/// flooded.
pub const CONNECT_ERROR_BACKOFF: Duration = Duration::from_millis(20);

/// What bounds a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Start no request after this much time.
    Duration(Duration),
    /// Send exactly this many requests.
    Requests(u64),
}

/// A resolved bench configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchPlan {
    /// Where to.
    pub kms: KmsAddr,
    /// Which product every request claims.
    pub product: ProductSelection,
    /// Versions used in turn, request by request.
    pub protocols: Vec<ProtocolVersion>,
    /// `4`, `5`, `6` or `mix`, for the report.
    pub protocol_label: String,
    /// Connection handling.
    pub mode: BenchMode,
    /// Workers.
    pub concurrency: u32,
    /// Bound of the run.
    pub limit: Limit,
    /// CMID pool used in turn; empty = a new random identity per request.
    pub clients: Vec<ClientIdentity>,
    /// Connection options; `timeout` bounds each whole request.
    pub options: ConnectionOptions,
}

impl BenchPlan {
    /// Resolve the arguments (product lookup, CMID pool).
    pub fn from_args(args: &BenchArgs) -> Result<BenchPlan, CatalogError> {
        let product = catalog::resolve(&args.product)?;
        let (protocols, protocol_label) = match args.protocol {
            Some(p) => (p.versions(), p.label().to_string()),
            None => (
                vec![product.default_protocol],
                product.default_protocol.major().to_string(),
            ),
        };
        let clients = (0..args.clients)
            .map(|_| random_identity(&product))
            .collect();
        Ok(BenchPlan {
            kms: args.kms.clone(),
            protocols,
            protocol_label,
            mode: args.mode,
            concurrency: args.concurrency,
            limit: args.limit(),
            clients,
            options: ConnectionOptions::new(
                args.rpc.ndr64_enabled(),
                args.rpc.btfn_enabled(),
                args.timeout,
            ),
            product,
        })
    }
}

fn random_identity(product: &ProductSelection) -> ClientIdentity {
    ClientIdentity {
        cmid: client::random_cmid(),
        workstation: client::random_workstation(product.is_server),
        is_vm: false,
        license_status: 2,
        binding_expiration: 43200,
    }
}

struct Shared {
    plan: BenchPlan,
    addr: std::net::SocketAddr,
    next: AtomicU64,
    deadline: Option<Instant>,
}

impl Shared {
    /// The next request number, or None when the run is over.
    fn ticket(&self) -> Option<u64> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        match self.plan.limit {
            Limit::Requests(n) if i >= n => None,
            _ => Some(i),
        }
    }
}

/// Run the benchmark. Fails only when the address does not resolve.
pub async fn run(plan: &BenchPlan) -> Result<BenchReport, ClientError> {
    let addr = plan.kms.resolve().await?;
    let started = Instant::now();
    let shared = Arc::new(Shared {
        plan: plan.clone(),
        addr,
        next: AtomicU64::new(0),
        deadline: match plan.limit {
            Limit::Duration(d) => Some(started + d),
            Limit::Requests(_) => None,
        },
    });
    let mut workers = JoinSet::new();
    for _ in 0..plan.concurrency.max(1) {
        workers.spawn(worker(shared.clone()));
    }
    let mut total = BenchStats::default();
    while let Some(done) = workers.join_next().await {
        if let Ok(stats) = done {
            total.merge(&stats);
        }
    }
    let elapsed = started.elapsed();
    let header = ReportHeader {
        kms: plan.kms.to_string(),
        address: addr.to_string(),
        mode: plan.mode.to_string(),
        protocol: plan.protocol_label.clone(),
        concurrency: plan.concurrency,
        clients: u32::try_from(plan.clients.len()).unwrap_or(u32::MAX),
    };
    Ok(BenchReport::new(header, &total, elapsed))
}

async fn worker(shared: Arc<Shared>) -> BenchStats {
    let plan = &shared.plan;
    let mut stats = BenchStats::default();
    let mut conn: Option<KmsConnection> = None;
    while let Some(i) = shared.ticket() {
        let version = plan.protocols[(i % plan.protocols.len() as u64) as usize];
        let fresh;
        let identity = if plan.clients.is_empty() {
            fresh = random_identity(&plan.product);
            &fresh
        } else {
            &plan.clients[(i % plan.clients.len() as u64) as usize]
        };
        let req = client::build_request(version, &plan.product, identity, 0);
        if plan.mode == BenchMode::PerConnection {
            conn = None;
        }
        let started = Instant::now();
        let result = tokio::time::timeout(plan.options.timeout, async {
            if conn.is_none() {
                conn = Some(KmsConnection::connect(shared.addr, plan.options).await?);
                stats.connections += 1;
            }
            match conn.as_mut() {
                Some(c) => c.activate(&req).await,
                None => unreachable_connection(),
            }
        })
        .await;
        let latency = started.elapsed();
        let sample = match result {
            Ok(Ok(outcome)) => match outcome.reply {
                Reply::Activated(_) => Sample::Success,
                Reply::Refused(h) => Sample::Refused(h.0),
            },
            Ok(Err(e)) => sample_of(&e),
            Err(_) => Sample::Connection {
                reason: "timeout".into(),
            },
        };
        let replied = matches!(
            sample,
            Sample::Success | Sample::Refused(_) | Sample::Invalid { .. }
        );
        if !matches!(sample, Sample::Success | Sample::Refused(_)) {
            conn = None; // state unknown after any failure
        }
        let backoff = matches!(&sample, Sample::Connection { reason } if reason == "connect");
        stats.record(&sample, replied.then_some(latency));
        if backoff {
            // A refused connect returns at once: do not spin against a host that is down.
            tokio::time::sleep(CONNECT_ERROR_BACKOFF).await;
        }
    }
    stats
}

/// The connection was just set; this cannot happen but must not panic.
fn unreachable_connection<T>() -> Result<T, ClientError> {
    Err(ClientError::Closed {
        stage: client::Stage::Connect,
    })
}

fn sample_of(e: &ClientError) -> Sample {
    match e.class() {
        crate::exit::ExitClass::Invalid => Sample::Invalid { reason: e.reason() },
        _ => Sample::Connection { reason: e.reason() },
    }
}
