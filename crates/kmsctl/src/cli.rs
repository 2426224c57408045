//! The command line: clap 4 derive definitions, shared by the binary and the tests.
//!
//! Layout: global options (`-o/--output`) on [`Cli`], one [`Command`] variant per
//! subcommand, and reusable argument groups ([`ProductArgs`], [`RpcArgs`]) flattened into
//! the subcommands that need them. The admin subcommands over gRPC (status, member, config, …)
//! are [`Command`] variants whose arguments live in [`crate::admin`]; their connection flags
//! ([`crate::admin::ConnectArgs`]) are global.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kms_wire::Guid;
use kms_wire::kms::ProtocolVersion;

use crate::client::KmsAddr;
use crate::exit::EXIT_CODES_HELP;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON document on stdout (shapes documented in each subcommand's --help).
    Json,
}

/// KMS protocol version of a request (PROTOCOL.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum)]
pub enum Protocol {
    /// v4: plaintext request with a CBC-MAC (Vista, 7, Server 2008/R2, Office 2010).
    #[value(name = "4")]
    V4,
    /// v5: AES-128-CBC (8, Server 2012, Office 2013).
    #[value(name = "5")]
    V5,
    /// v6: modified AES-128 with HMAC (8.1 and later, Office 2016 and later).
    #[value(name = "6")]
    V6,
}

impl Protocol {
    /// The major version number on the wire.
    pub const fn major(self) -> u16 {
        match self {
            Protocol::V4 => 4,
            Protocol::V5 => 5,
            Protocol::V6 => 6,
        }
    }

    /// From a major version number.
    pub const fn from_major(major: u16) -> Option<Protocol> {
        match major {
            4 => Some(Protocol::V4),
            5 => Some(Protocol::V5),
            6 => Some(Protocol::V6),
            _ => None,
        }
    }

    /// All versions, oldest first.
    pub const ALL: [Protocol; 3] = [Protocol::V4, Protocol::V5, Protocol::V6];

    /// The kms-wire protocol version.
    pub const fn version(self) -> ProtocolVersion {
        match self {
            Protocol::V4 => ProtocolVersion::V4,
            Protocol::V5 => ProtocolVersion::V5,
            Protocol::V6 => ProtocolVersion::V6,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.major())
    }
}

/// Protocol choice of `bench`: one version, or all three in rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchProtocol {
    /// v4 only.
    #[value(name = "4")]
    V4,
    /// v5 only.
    #[value(name = "5")]
    V5,
    /// v6 only.
    #[value(name = "6")]
    V6,
    /// v4, v5 and v6 in turn, request by request.
    Mix,
}

impl BenchProtocol {
    /// The versions used in turn (`mix` rotates v4, v5, v6).
    pub fn versions(self) -> Vec<ProtocolVersion> {
        match self {
            BenchProtocol::V4 => vec![ProtocolVersion::V4],
            BenchProtocol::V5 => vec![ProtocolVersion::V5],
            BenchProtocol::V6 => vec![ProtocolVersion::V6],
            BenchProtocol::Mix => ProtocolVersion::ALL.to_vec(),
        }
    }

    /// The label used in reports: `4`, `5`, `6` or `mix`.
    pub fn label(self) -> &'static str {
        match self {
            BenchProtocol::V4 => "4",
            BenchProtocol::V5 => "5",
            BenchProtocol::V6 => "6",
            BenchProtocol::Mix => "mix",
        }
    }
}

/// How `bench` uses connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum BenchMode {
    /// Open a connection (TCP + BIND) for every request, then close it.
    PerConnection,
    /// Each worker keeps one connection and sends request after request on it.
    #[default]
    Keepalive,
}

impl fmt::Display for BenchMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BenchMode::PerConnection => "per-connection",
            BenchMode::Keepalive => "keepalive",
        })
    }
}

const TOP_HELP: &str = "\
Examples:
  kmsctl activate --kms kms1.example.net:1688 --product \"Windows 11 Enterprise\"
  kmsctl bench --kms 127.0.0.1:1688 --concurrency 32 --duration 30 -o json
  kmsctl cert create-ca --out-dir ca/
  kmsctl products \"Windows 11 Enterprise\"
  kmsctl status --server kms1:1689,kms2:1689,kms3:1689
  kmsctl config set renewal-interval 1440
  kmsctl completions bash > /etc/bash_completion.d/kmsctl";

const ACTIVATE_HELP: &str = "\
Examples:
  kmsctl activate --kms 127.0.0.1:1688 --product \"Windows 11 Enterprise\" --protocol 6
  kmsctl activate --kms [::1]:1688 --product \"Office Professional Plus 2019\" --machines 5
  kmsctl activate --product \"Windows Server 2022 Datacenter\" --requests 3 --no-ndr64 -o json
  kmsctl activate --app-id 55c92734-d682-4d71-983e-d6ec3f16059f \\
      --kms-id b74263e4-0f92-46c6-bcf8-c11d5efe2959 --required-count 5 --time-offset-secs 18000

Every response is verified like a Windows client does (PROTOCOL.md §6.7): RPC framing, the v4
MAC or the v5/v6 decryption, padding, hash, v6 HMAC, and the version/CMID/time echoes. A count
below the required count is reported (a real client would show 0xC004F038 and retry) but is
not an error.

JSON output (-o json): an array with one object per request:
  {\"request\": 1, \"machine\": 1, \"cmid\": \"…\", \"workstation\": \"…\", \"protocol\": 6,
   \"transfer_syntax\": \"ndr32\"|\"ndr64\"|null,
   \"outcome\": \"activated\"|\"refused\"|\"invalid\"|\"connection\",
   \"epid\": \"…\"|null, \"hwid\": \"16 hex digits\"|null (v6 only), \"current_count\": n|null,
   \"required_count\": n, \"count_sufficient\": bool|null, \"activation_interval\": minutes|null,
   \"renewal_interval\": minutes|null, \"hresult\": \"0x00000000\"|\"0xC004F042\"|null,
   \"hresult_name\": \"…\"|null, \"hresult_meaning\": \"…\"|null, \"error\": \"…\"|null}

";

const BENCH_HELP: &str = "\
Examples:
  kmsctl bench --kms 127.0.0.1:1688 --concurrency 16 --duration 10
  kmsctl bench --kms kms1:1688 --requests 10000 --mode per-connection --protocol mix
  kmsctl bench --kms kms1:1688 --clients 500 --duration 60 -o json   # renewals after round 1

Every response is verified; a response that fails verification counts as invalid. The run is
bounded by --duration or --requests (plus at most one --timeout for requests in flight) and
only ever connects to the one address --kms resolves to (the first, if a name has several).
Latency is one activation as the client sees it, including TCP connect and BIND when the
request opened a connection.

JSON output (-o json): one object:
  {\"kms\": \"as given\", \"address\": \"resolved ip:port\",
   \"mode\": \"keepalive\"|\"per-connection\", \"protocol\": \"4\"|\"5\"|\"6\"|\"mix\",
   \"concurrency\": n, \"clients\": n, \"elapsed_secs\": f, \"requests\": n, \"successes\": n,
   \"refusals\": n, \"invalid_responses\": n, \"connection_errors\": n, \"connections\": n,
   \"throughput_rps\": f (requests / elapsed_secs),
   \"latency_us\": {\"count\", \"min\", \"mean\", \"p50\", \"p90\", \"p99\", \"max\"},
   \"errors_by_reason\": {\"<reason>\": n, …}}
  Latencies in microseconds. Reasons: \"connect\", \"timeout\", \"closed\", \"io\", \"hresult 0x…\",
  \"rpc: <kind>\", \"rpc: fault 0x…\", \"verify: <kind>\" (e.g. \"verify: bad_hmac\").

";

/// kmsctl — operate a kmsd cluster and test KMS hosts.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kmsctl",
    version,
    about = "Operate kmsd clusters and test KMS hosts (Windows/Office volume activation)",
    after_help = TOP_HELP,
    propagate_version = true
)]
pub struct Cli {
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// How the admin subcommands reach kmsd (`--server`, `--ca`, `--cert`, `--key`).
    #[command(flatten)]
    pub connect: crate::admin::ConnectArgs,

    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Activate like a Windows/Office KMS client and verify every response.
    #[command(after_help = format!("{ACTIVATE_HELP}{EXIT_CODES_HELP}"))]
    Activate(ActivateArgs),
    /// Load-test a KMS host with verified activations and report latency and errors.
    #[command(after_help = format!("{BENCH_HELP}{EXIT_CODES_HELP}"))]
    Bench(BenchArgs),
    /// Create and inspect the cluster's TLS certificates: CA, nodes, operators.
    #[command(subcommand, after_help = crate::cert::CERT_HELP)]
    Cert(crate::cert::CertCommand),
    /// List editions with their GVLK (KMS client setup key), product group and N (offline).
    #[command(after_help = crate::products::PRODUCTS_HELP)]
    Products(crate::products::ProductsArgs),
    /// Show the cluster: members, leader, term, health, counts against thresholds.
    #[command(after_help = format!("{}{}", crate::admin::STATUS_HELP, crate::admin::ADMIN_EXIT_CODES_HELP))]
    Status,
    /// Check one node: serving, degraded, leader known (exit 0 only when all is well).
    #[command(after_help = format!("{}{}", crate::admin::HEALTH_HELP, crate::admin::ADMIN_EXIT_CODES_HELP))]
    Health,
    /// Cluster membership: list, add, promote, remove.
    #[command(subcommand, after_help = format!("Examples:\n  kmsctl member list\n  kmsctl member add 4 kms4:1689\n  kmsctl member remove 4\n\n{}{}", crate::admin::GROUP_HELP, crate::admin::ADMIN_EXIT_CODES_HELP))]
    Member(crate::admin::MemberCommand),
    /// Raft leadership: transfer it to another voter.
    #[command(subcommand, after_help = format!("Example:\n  kmsctl leader transfer 2\n\n{}{}", crate::admin::GROUP_HELP, crate::admin::ADMIN_EXIT_CODES_HELP))]
    Leader(crate::admin::LeaderCommand),
    /// Per-pool counts: live, reported, threshold, seats, clients waiting for the threshold.
    #[command(after_help = format!("{}{}", crate::admin::COUNTS_HELP, crate::admin::ADMIN_EXIT_CODES_HELP))]
    Counts,
    /// The client inventory: list, show, forget.
    #[command(subcommand, after_help = format!("Examples:\n  kmsctl clients list --since 7d\n  kmsctl clients show CMID\n  kmsctl clients forget CMID\n\n{}{}", crate::admin::GROUP_HELP, crate::admin::ADMIN_EXIT_CODES_HELP))]
    Clients(crate::admin::ClientsCommand),
    /// The replicated configuration (intervals, served products, seat limits, counting).
    #[command(subcommand, after_help = format!("Examples:\n  kmsctl config get\n  kmsctl config set renewal-interval 1440\n\n{}{}", crate::admin::GROUP_HELP, crate::admin::ADMIN_EXIT_CODES_HELP))]
    Config(crate::admin::ConfigCommand),
    /// The host identity every node answers with (ePIDs, HwId): show, set, rotate.
    #[command(subcommand, after_help = format!("Examples:\n  kmsctl identity show\n  kmsctl identity rotate\n\n{}{}", crate::admin::GROUP_HELP, crate::admin::ADMIN_EXIT_CODES_HELP))]
    Identity(crate::admin::IdentityCommand),
    /// Write a backup (clients, configuration, identity) to a file, for `kmsd --restore`.
    #[command(after_help = format!("{}{}", crate::admin::BACKUP_HELP, crate::admin::ADMIN_EXIT_CODES_HELP))]
    Backup(crate::admin::BackupArgs),
    /// Show a node's activation events (event 12290 fields), optionally following new ones.
    #[command(after_help = format!("{}{}", crate::admin::EVENTS_HELP, crate::admin::ADMIN_EXIT_CODES_HELP))]
    Events(crate::admin::EventsArgs),
    /// Print a shell completion script.
    #[command(after_help = "Example:\n  kmsctl completions zsh > ~/.zfunc/_kmsctl")]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Which product the client claims to be (`--product` or explicit ids).
#[derive(Debug, Clone, PartialEq, Eq, Default, Args)]
pub struct ProductArgs {
    /// Product (edition or product group) from the catalog, case-insensitive
    /// [default: Windows 11 Enterprise, unless --kms-id is given].
    #[arg(long, value_name = "NAME", conflicts_with_all = ["app_id", "kms_id", "sku_id"])]
    pub product: Option<String>,
    /// Application id GUID (Windows 55c92734-…, Office 2010 59a52881-…, Office 2013+ 0ff1ce15-…).
    #[arg(long, value_name = "GUID", requires = "kms_id")]
    pub app_id: Option<Guid>,
    /// KMS counted id GUID (product group). With --kms-id, --app-id is required.
    #[arg(long, value_name = "GUID", requires = "app_id")]
    pub kms_id: Option<Guid>,
    /// SKU (activation) id GUID; informative, hosts do not check it [default: nil GUID].
    #[arg(long, value_name = "GUID", requires = "kms_id")]
    pub sku_id: Option<Guid>,
    /// Required client count N the client sends [default: the product's; 25 with raw ids].
    #[arg(long, value_name = "N")]
    pub required_count: Option<u32>,
}

/// DCE/RPC binding options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct RpcArgs {
    /// Offer NDR64 in the BIND, like Windows 8 and later (default).
    #[arg(long, overrides_with = "no_ndr64")]
    pub ndr64: bool,
    /// Offer only NDR32 (like Windows 7 and earlier).
    #[arg(long, overrides_with = "ndr64")]
    pub no_ndr64: bool,
    /// Offer bind-time feature negotiation in the BIND (default).
    #[arg(long, overrides_with = "no_btfn")]
    pub btfn: bool,
    /// Do not offer bind-time feature negotiation.
    #[arg(long, overrides_with = "btfn")]
    pub no_btfn: bool,
}

impl RpcArgs {
    /// Whether NDR64 is offered.
    pub fn ndr64_enabled(&self) -> bool {
        !self.no_ndr64
    }
    /// Whether BTFN is offered.
    pub fn btfn_enabled(&self) -> bool {
        !self.no_btfn
    }
}

/// `kmsctl activate`.
#[derive(Debug, Clone, Args)]
pub struct ActivateArgs {
    /// KMS host as host:port (`[v6addr]:port` for IPv6; port defaults to 1688).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:1688")]
    pub kms: KmsAddr,
    /// Product selection.
    #[command(flatten)]
    pub product: ProductArgs,
    /// KMS protocol version [default: the product's default protocol].
    #[arg(long, value_enum, value_name = "4|5|6")]
    pub protocol: Option<Protocol>,
    /// Client machine id [default: a random version-4 GUID].
    #[arg(long, value_name = "GUID", conflicts_with = "machines")]
    pub cmid: Option<Guid>,
    /// Workstation name, at most 63 characters [default: a random DESKTOP-…/WIN-… name].
    #[arg(long, value_name = "NAME", value_parser = parse_workstation)]
    pub workstation: Option<String>,
    /// Claim to be a virtual machine.
    #[arg(long)]
    pub vm: bool,
    /// License status (0 unlicensed, 1 licensed, 2 OOB grace, 3 OOT grace, 4 non-genuine
    /// grace, 5 notification, 6 extended grace).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub license_status: u32,
    /// Binding expiration / grace time in minutes.
    #[arg(long, value_name = "MINUTES", default_value_t = 43200)]
    pub binding_expiration: u32,
    /// Number of distinct machines (CMIDs), one after the other, like vlmcs charging a host.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub machines: u32,
    /// Requests per machine, repeated on the same connection (renewals).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub requests: u32,
    /// RPC binding options.
    #[command(flatten)]
    pub rpc: RpcArgs,
    /// Open a new TCP connection (and BIND) for every request.
    #[arg(long)]
    pub new_connection: bool,
    /// Shift the request time by S seconds (negative allowed), e.g. 18000 to provoke
    /// 0xC004F06C from a host that enforces the ±4 h window.
    #[arg(
        long,
        value_name = "S",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub time_offset_secs: i64,
    /// Timeout in seconds for connecting and for each reply.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_duration_secs)]
    pub timeout: Duration,
}

/// `kmsctl bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// KMS host as host:port (`[v6addr]:port` for IPv6; port defaults to 1688).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:1688")]
    pub kms: KmsAddr,
    /// Concurrent workers (each one request at a time).
    #[arg(long, short = 'c', value_name = "C", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// Run for this many seconds [default: 10, unless --requests is given].
    #[arg(long, value_name = "SECS", value_parser = parse_duration_secs, conflicts_with = "requests")]
    pub duration: Option<Duration>,
    /// Stop after this many requests.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,
    /// Protocol version, or `mix` for v4/v5/v6 in turn [default: the product's].
    #[arg(long, value_enum, value_name = "4|5|6|mix")]
    pub protocol: Option<BenchProtocol>,
    /// Connection handling.
    #[arg(long, value_enum, default_value_t = BenchMode::Keepalive)]
    pub mode: BenchMode,
    /// 0: a new CMID per request (every request a new activation); K > 0: a fixed pool of K
    /// CMIDs used in turn (renewals after the first round).
    #[arg(long, value_name = "K", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub clients: u32,
    /// Product selection.
    #[command(flatten)]
    pub product: ProductArgs,
    /// RPC binding options.
    #[command(flatten)]
    pub rpc: RpcArgs,
    /// Timeout in seconds for each whole request (connect and BIND included).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_duration_secs)]
    pub timeout: Duration,
}

impl BenchArgs {
    /// The configured bound: a duration or a request count.
    pub fn limit(&self) -> crate::bench::Limit {
        match (self.requests, self.duration) {
            (Some(n), _) => crate::bench::Limit::Requests(n),
            (None, Some(d)) => crate::bench::Limit::Duration(d),
            (None, None) => crate::bench::Limit::Duration(Duration::from_secs(10)),
        }
    }
}

/// Parse a positive number of seconds (fractions allowed, at most one day).
pub fn parse_duration_secs(s: &str) -> Result<Duration, String> {
    let v = f64::from_str(s.trim()).map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(v > 0.0 && v <= 86_400.0) {
        return Err(format!(
            "`{s}` must be more than 0 and at most 86400 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

/// A workstation name fits the 128-byte UTF-16 field: at most 63 code units, no NUL.
pub fn parse_workstation(s: &str) -> Result<String, String> {
    if s.encode_utf16().count() > 63 {
        return Err("at most 63 (UTF-16) characters".into());
    }
    if s.contains('\0') {
        return Err("must not contain NUL".into());
    }
    Ok(s.to_owned())
}
