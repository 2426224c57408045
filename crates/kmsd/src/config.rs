//! Node configuration in two stages: the operator layer (flags, `KMSD_*` environment variables
//! and a TOML file — the same names everywhere, unknown keys rejected) and the validated
//! [`Settings`] the node runs with.
//!
//! Precedence: flag > environment variable > TOML file > built-in default. Every flag
//! `--some-name` is the TOML key `some-name` and the variable `KMSD_SOME_NAME`. The DNS
//! settings `--dns-zone`, `--dns-ttl`, `--dns-priority`, `--dns-weight`, `--dns-axfr-allow` and
//! `--dns-rate-limit` may instead be written in the file as a `[dns]` table without the prefix
//! (`zones`, `ttl`, `priority`, `weight`, `axfr-allow`, `rate-limit`; [`DnsTable`]), the form
//! `--print-config` prints. `KMSD_*` variables that name no setting are reported by
//! [`unknown_env_vars`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser, ValueEnum};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Command line of `kmsd`.
#[derive(Debug, Parser, Default)]
#[command(
    name = "kmsd",
    version,
    about = "kmsd — a highly available KMS host for Windows and Office volume activation",
    long_about = "kmsd serves KMS clients on TCP 1688. With no arguments it runs a single node \
with its data in ./kmsd-data, KMS on [::]:1688, gRPC on 127.0.0.1:1689 and HTTP on [::]:1690.\n\n\
Every flag is also a TOML key (same name) and an environment variable KMSD_<NAME>.",
    after_help = "Examples:\n  kmsd\n  kmsd --data-dir /var/lib/kmsd --kms-listen [::]:1688\n  kmsd --config /etc/kmsd/kmsd.toml\n  kmsd --print-config"
)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "KMSD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Bootstrap this (new, empty) node from a `kmsctl backup` file: clients, counts,
    /// configuration and identity. Combine with --initial-cluster to restore a whole cluster.
    #[arg(long, value_name = "FILE")]
    pub restore: Option<PathBuf>,
    #[command(flatten)]
    pub layer: Layer,
}

/// The settings an operator can give; `None` = not given at this layer.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Layer {
    /// Data directory (Raft log, state, journal). Default ./kmsd-data.
    #[arg(long, env = "KMSD_DATA_DIR", value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// This node's id in the cluster (a positive integer). Default 1.
    #[arg(long, env = "KMSD_NODE_ID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<u64>,
    /// This node's name (DNS target `<name>.<zone>`). Default `kmsd-<node-id>`.
    #[arg(long, env = "KMSD_NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// KMS listen address; repeatable. Default [::]:1688 (dual-stack).
    #[arg(long = "kms-listen", env = "KMSD_KMS_LISTEN", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_listen: Option<Vec<SocketAddr>>,
    /// gRPC listen address (Raft peers and admin API). Default 127.0.0.1:1689. Without TLS it
    /// must be a loopback address unless --insecure is given.
    #[arg(long, env = "KMSD_GRPC_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_listen: Option<SocketAddr>,
    /// HTTP listen address (/metrics, /healthz, /readyz, status page). Default [::]:1690.
    #[arg(long, env = "KMSD_HTTP_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<SocketAddr>,
    /// DNS listen address (UDP and TCP). Default [::]:1053.
    #[arg(long, env = "KMSD_DNS_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_listen: Option<SocketAddr>,
    /// Log format: text or json. Default text.
    #[arg(long, env = "KMSD_LOG_FORMAT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// Log filter: a level (trace, debug, info, warn, error, off), optionally per target
    /// (`info,openraft=warn`, tracing EnvFilter syntax). Default "info,openraft=warn".
    #[arg(long, env = "KMSD_LOG_LEVEL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// Accept NDR64 transfer syntax. Default true.
    #[arg(long, env = "KMSD_NDR64")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ndr64: Option<bool>,
    /// Acknowledge bind-time feature negotiation. Default true.
    #[arg(long, env = "KMSD_BTFN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub btfn: Option<bool>,
    /// Close idle KMS connections after this many seconds. Default 30.
    #[arg(long, env = "KMSD_IDLE_TIMEOUT_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
    /// Maximum open KMS connections. Default 10000.
    #[arg(long, env = "KMSD_MAX_CONNECTIONS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Maximum KMS connections from one source address. Default 256.
    #[arg(long, env = "KMSD_MAX_CONNECTIONS_PER_SOURCE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_source: Option<usize>,
    /// Maximum PDU size in bytes. Default 4096.
    #[arg(long, env = "KMSD_MAX_PDU_SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pdu_size: Option<usize>,
    /// Serve only clients in these networks (CIDR); repeatable. Default: everyone.
    #[arg(
        long = "allow-client",
        env = "KMSD_ALLOW_CLIENT",
        value_delimiter = ','
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_client: Option<Vec<IpNet>>,
    /// Voters of a NEW cluster, the same on every node: `1=host1:1689,2=host2:1689,3=host3:1689`.
    /// Ignored once the node has data.
    #[arg(long, env = "KMSD_INITIAL_CLUSTER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_cluster: Option<String>,
    /// gRPC address of a cluster member to join (a node added later, after `kmsctl member add`).
    #[arg(long, env = "KMSD_JOIN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join: Option<String>,
    /// Host name or address peers, DNS records and clients use for this node. Default: the
    /// gRPC listen host (127.0.0.1 when it listens on every address).
    #[arg(long, env = "KMSD_ADVERTISE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// Allow gRPC without TLS where others can reach it — a multi-node cluster, or a
    /// non-loopback --grpc-listen — with peer and admin traffic in clear text and unauthenticated.
    #[arg(long, env = "KMSD_INSECURE", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    /// Milliseconds a write waits for a leader before answering in degraded mode. Default 2000.
    #[arg(long, env = "KMSD_COMMIT_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_timeout_ms: Option<u64>,
    /// Raft log entries between snapshots (log compaction). Default 20000.
    #[arg(long, env = "KMSD_SNAPSHOT_EVERY", value_name = "ENTRIES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_every: Option<u64>,
    /// Log entries kept behind the latest snapshot (a follower lagging less than this catches
    /// up from the log, one lagging more receives the snapshot). Default 1000.
    #[arg(long, env = "KMSD_SNAPSHOT_KEEP_LOGS", value_name = "ENTRIES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_keep_logs: Option<u64>,
    /// Cluster CA certificate (PEM) for peer and admin mTLS.
    #[arg(long, env = "KMSD_TLS_CA", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM, from `kmsctl cert create-node`).
    #[arg(long, env = "KMSD_TLS_CERT", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, env = "KMSD_TLS_KEY", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// DNS zone served authoritatively (repeatable), e.g. `kms.corp.example`.
    #[arg(long = "dns-zone", env = "KMSD_DNS_ZONE", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_zone: Option<Vec<String>>,
    /// TTL of DNS answers in seconds. Default 60.
    #[arg(long, env = "KMSD_DNS_TTL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_ttl: Option<u32>,
    /// This node's SRV priority (lower is preferred). Default 0.
    #[arg(long, env = "KMSD_DNS_PRIORITY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_priority: Option<u16>,
    /// This node's SRV weight among equal priorities. Default 100.
    #[arg(long, env = "KMSD_DNS_WEIGHT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_weight: Option<u16>,
    /// Networks allowed to transfer the zone (AXFR), repeatable CIDRs. Default: none.
    #[arg(
        long = "dns-axfr-allow",
        env = "KMSD_DNS_AXFR_ALLOW",
        value_delimiter = ','
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_axfr_allow: Option<Vec<IpNet>>,
    /// DNS responses per second allowed to one source address. Default 50.
    #[arg(long, env = "KMSD_DNS_RATE_LIMIT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_rate_limit: Option<u32>,
    /// Seconds a shutdown waits for in-flight activations. Default 10.
    #[arg(long, env = "KMSD_DRAIN_TIMEOUT_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_timeout_secs: Option<u64>,
    /// Show the recent-activations table (time, workstation, client machine id, pool, result
    /// of the last 20 requests) on the status page `/` of the HTTP port. Default false: the
    /// page shows members, counts and thresholds only.
    #[arg(
        long,
        env = "KMSD_STATUS_PAGE_ACTIVATIONS",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_page_activations: Option<bool>,
    /// The `[dns]` table of a TOML file (no flag or variable). [`parse_toml`] folds it into the
    /// `dns_*` fields above, so a parsed or merged layer has `None` here. Last, because TOML
    /// writes tables after plain keys.
    #[arg(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsTable>,
}

/// The `[dns]` table of the TOML file: the `dns-*` settings of [`Layer`] without the prefix,
/// `zones` for `dns-zone`. Giving a setting both here and as its flat key is an error.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DnsTable {
    /// `dns-zone`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<String>>,
    /// `dns-ttl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// `dns-priority`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u16>,
    /// `dns-weight`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u16>,
    /// `dns-axfr-allow`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub axfr_allow: Option<Vec<IpNet>>,
    /// `dns-rate-limit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
}

impl Layer {
    /// Fill every unset field of `self` from `lower`.
    pub fn or(self, lower: Layer) -> Layer {
        Layer {
            data_dir: self.data_dir.or(lower.data_dir),
            node_id: self.node_id.or(lower.node_id),
            name: self.name.or(lower.name),
            kms_listen: self.kms_listen.or(lower.kms_listen),
            grpc_listen: self.grpc_listen.or(lower.grpc_listen),
            http_listen: self.http_listen.or(lower.http_listen),
            dns_listen: self.dns_listen.or(lower.dns_listen),
            log_format: self.log_format.or(lower.log_format),
            log_level: self.log_level.or(lower.log_level),
            ndr64: self.ndr64.or(lower.ndr64),
            btfn: self.btfn.or(lower.btfn),
            idle_timeout_secs: self.idle_timeout_secs.or(lower.idle_timeout_secs),
            max_connections: self.max_connections.or(lower.max_connections),
            max_connections_per_source: self
                .max_connections_per_source
                .or(lower.max_connections_per_source),
            max_pdu_size: self.max_pdu_size.or(lower.max_pdu_size),
            allow_client: self.allow_client.or(lower.allow_client),
            drain_timeout_secs: self.drain_timeout_secs.or(lower.drain_timeout_secs),
            status_page_activations: self
                .status_page_activations
                .or(lower.status_page_activations),
            initial_cluster: self.initial_cluster.or(lower.initial_cluster),
            join: self.join.or(lower.join),
            advertise: self.advertise.or(lower.advertise),
            insecure: self.insecure.or(lower.insecure),
            commit_timeout_ms: self.commit_timeout_ms.or(lower.commit_timeout_ms),
            snapshot_every: self.snapshot_every.or(lower.snapshot_every),
            snapshot_keep_logs: self.snapshot_keep_logs.or(lower.snapshot_keep_logs),
            tls_ca: self.tls_ca.or(lower.tls_ca),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            dns_zone: self.dns_zone.or(lower.dns_zone),
            dns_ttl: self.dns_ttl.or(lower.dns_ttl),
            dns_priority: self.dns_priority.or(lower.dns_priority),
            dns_weight: self.dns_weight.or(lower.dns_weight),
            dns_axfr_allow: self.dns_axfr_allow.or(lower.dns_axfr_allow),
            dns_rate_limit: self.dns_rate_limit.or(lower.dns_rate_limit),
            dns: self.dns.or(lower.dns),
        }
    }

    /// Move the `[dns]` table into the flat `dns_*` fields. A setting given both ways is an
    /// error naming both keys.
    pub fn fold_dns_table(mut self) -> Result<Layer, String> {
        fn fold<T>(
            flat: &mut Option<T>,
            table: Option<T>,
            key: &str,
            in_table: &str,
        ) -> Result<(), String> {
            match (&flat, table) {
                (_, None) => Ok(()),
                (Some(_), Some(_)) => Err(format!(
                    "`{key}` and `dns.{in_table}` ([dns] table) are the same setting; give only one"
                )),
                (None, Some(v)) => {
                    *flat = Some(v);
                    Ok(())
                }
            }
        }
        let Some(DnsTable {
            zones,
            ttl,
            priority,
            weight,
            axfr_allow,
            rate_limit,
        }) = self.dns.take()
        else {
            return Ok(self);
        };
        fold(&mut self.dns_zone, zones, "dns-zone", "zones")?;
        fold(&mut self.dns_ttl, ttl, "dns-ttl", "ttl")?;
        fold(&mut self.dns_priority, priority, "dns-priority", "priority")?;
        fold(&mut self.dns_weight, weight, "dns-weight", "weight")?;
        fold(
            &mut self.dns_axfr_allow,
            axfr_allow,
            "dns-axfr-allow",
            "axfr-allow",
        )?;
        fold(
            &mut self.dns_rate_limit,
            rate_limit,
            "dns-rate-limit",
            "rate-limit",
        )?;
        Ok(self)
    }

    /// The file form `--print-config` writes: the flat `dns_*` fields moved into the `[dns]`
    /// table (the inverse of [`Layer::fold_dns_table`] for a folded layer).
    pub fn with_dns_table(mut self) -> Layer {
        let table = DnsTable {
            zones: self.dns_zone.take(),
            ttl: self.dns_ttl.take(),
            priority: self.dns_priority.take(),
            weight: self.dns_weight.take(),
            axfr_allow: self.dns_axfr_allow.take(),
            rate_limit: self.dns_rate_limit.take(),
        };
        if table != DnsTable::default() {
            self.dns = Some(table);
        }
        self
    }

    /// The built-in defaults (the embedded single-node configuration).
    pub fn defaults() -> Layer {
        Layer {
            data_dir: Some(PathBuf::from("./kmsd-data")),
            node_id: Some(1),
            name: None,
            kms_listen: Some(vec!["[::]:1688".parse().expect("literal")]),
            grpc_listen: Some("127.0.0.1:1689".parse().expect("literal")),
            http_listen: Some("[::]:1690".parse().expect("literal")),
            dns_listen: Some("[::]:1053".parse().expect("literal")),
            log_format: Some(LogFormat::Text),
            log_level: Some("info,openraft=warn".into()),
            ndr64: Some(true),
            btfn: Some(true),
            idle_timeout_secs: Some(30),
            max_connections: Some(10_000),
            max_connections_per_source: Some(256),
            max_pdu_size: Some(4096),
            allow_client: Some(Vec::new()),
            drain_timeout_secs: Some(10),
            status_page_activations: Some(false),
            initial_cluster: None,
            join: None,
            advertise: None,
            insecure: Some(false),
            commit_timeout_ms: Some(2000),
            snapshot_every: Some(20_000),
            snapshot_keep_logs: Some(1_000),
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            dns_zone: Some(Vec::new()),
            dns_ttl: Some(60),
            dns_priority: Some(0),
            dns_weight: Some(100),
            dns_axfr_allow: Some(Vec::new()),
            dns_rate_limit: Some(50),
            dns: None,
        }
    }
}

/// A configuration error, reported before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Parser message (names the offending key).
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting {key}: {message}")]
    Invalid {
        /// Setting name.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Validated settings of one node.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--restore FILE` (one-shot, flag only).
    pub restore: Option<PathBuf>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Node id (≥ 1).
    pub node_id: u64,
    /// Node name.
    pub name: String,
    /// KMS listeners.
    pub kms_listen: Vec<SocketAddr>,
    /// gRPC listener.
    pub grpc_listen: SocketAddr,
    /// HTTP listener.
    pub http_listen: SocketAddr,
    /// DNS listener.
    pub dns_listen: SocketAddr,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// KMS listener limits and switches.
    pub host: kms_host::HostSettings,
    /// `--initial-cluster`, parsed.
    pub initial_cluster: std::collections::BTreeMap<u64, String>,
    /// `--join`.
    pub join: Option<String>,
    /// The host this node advertises.
    pub advertise: String,
    /// Clear-text gRPC reachable by others (multi-node, non-loopback listener) allowed.
    pub insecure: bool,
    /// Commit timeout before degraded mode.
    pub commit_timeout: Duration,
    /// Raft log entries between snapshots.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot.
    pub snapshot_keep_logs: u64,
    /// mTLS files for peer and admin gRPC, when all three are given.
    pub tls: Option<kms_tls::TlsFiles>,
    /// DNS settings.
    pub dns: DnsSettings,
    /// The status page lists recent activations (workstations, CMIDs, addresses).
    pub status_page_activations: bool,
    /// The effective operator layer (for `--print-config`).
    pub effective: Layer,
}

/// DNS settings of this node.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// Zones served (empty: the DNS listener answers REFUSED to everything).
    pub zones: Vec<String>,
    /// Answer TTL.
    pub ttl: u32,
    /// This node's SRV priority.
    pub priority: u16,
    /// This node's SRV weight.
    pub weight: u16,
    /// AXFR allowlist.
    pub axfr_allow: Vec<IpNet>,
    /// Responses per second per source.
    pub rate_limit: u32,
}

/// The refusal of clear-text gRPC where it would be reachable by others (a multi-node
/// cluster, a non-loopback `--grpc-listen`): `why`, then what to do about it. Used by the
/// configuration check and by the node's own check of the members its data directory records.
pub fn clear_text_refusal(why: &str) -> String {
    format!(
        "{why}: give --tls-ca, --tls-cert and --tls-key (see `kmsctl cert`), or run with \
         --insecure to accept clear text"
    )
}

/// Parse `1=host:port,2=host:port,…`.
pub fn parse_initial_cluster(
    text: &str,
) -> Result<std::collections::BTreeMap<u64, String>, ConfigError> {
    let bad = |message: String| ConfigError::Invalid {
        key: "initial-cluster",
        message,
    };
    let mut out = std::collections::BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| bad(format!("'{part}' is not ID=HOST:PORT")))?;
        let id: u64 = id
            .trim()
            .parse()
            .ok()
            .filter(|i| *i > 0)
            .ok_or_else(|| bad(format!("'{id}' is not a positive node id")))?;
        let addr = addr.trim();
        if addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            return Err(bad(format!("'{addr}' is not HOST:PORT")));
        }
        if out.insert(id, addr.to_string()).is_some() {
            return Err(bad(format!("node id {id} is listed twice")));
        }
    }
    Ok(out)
}

/// Parse a TOML layer, rejecting unknown keys (also inside `[dns]`), and fold its `[dns]` table
/// into the flat `dns_*` fields.
pub fn parse_toml(path: &std::path::Path, text: &str) -> Result<Layer, ConfigError> {
    let parse_error = |message: String| ConfigError::Parse {
        path: path.to_owned(),
        message,
    };
    toml::from_str::<Layer>(text)
        .map_err(|e| parse_error(e.to_string()))?
        .fold_dns_table()
        .map_err(parse_error)
}

/// `KMSD_*` names that are not kmsd settings but are expected beside them: the path to the
/// binary that the test and deployment scripts pass around.
const NOT_SETTINGS: &[&str] = &["KMSD_BIN"];

/// A `KMSD_*` environment variable that names no setting (kmsd does not read it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownEnvVar {
    /// The variable as set.
    pub name: String,
    /// The known variable it most likely misspells, if one is close.
    pub suggestion: Option<String>,
}

impl std::fmt::Display for UnknownEnvVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "environment variable {} is not a kmsd setting and is ignored",
            self.name
        )?;
        if let Some(s) = &self.suggestion {
            write!(f, " (did you mean {s}?)")?;
        }
        Ok(())
    }
}

/// The environment variables kmsd reads: every `env` of the command line's arguments.
pub fn known_env_vars() -> Vec<String> {
    Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_env()?.to_str().map(str::to_owned))
        .collect()
}

/// The names among `names` that look like kmsd variables (prefix `KMSD_`, in any case) but name
/// no setting, each with the closest known variable when the spelling is near enough to be an
/// obvious typo. Call with the names of `std::env::vars_os()`.
pub fn unknown_env_vars<I, S>(names: I) -> Vec<UnknownEnvVar>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let known = known_env_vars();
    let mut out: Vec<UnknownEnvVar> = names
        .into_iter()
        .map(|n| n.as_ref().to_string_lossy().into_owned())
        .filter(|n| n.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("KMSD_")))
        .filter(|n| !known.contains(n) && !NOT_SETTINGS.contains(&n.as_str()))
        .map(|name| {
            let upper = name.to_ascii_uppercase();
            let suggestion = known
                .iter()
                .map(|k| (edit_distance(&upper[5..], &k[5..]), k))
                .min()
                .filter(|(d, _)| *d <= (upper.len() - 5).div_ceil(4).max(2))
                .map(|(_, k)| k.clone());
            UnknownEnvVar { name, suggestion }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Levenshtein distance (insertions, deletions, substitutions) between two ASCII-ish strings.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

impl Settings {
    /// Merge flags/env (`cli`) over the file named by `--config` over defaults, and validate.
    pub fn load(cli: &Cli) -> Result<Settings, ConfigError> {
        let file = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                parse_toml(path, &text)?
            }
            None => Layer::default(),
        };
        let mut s = Settings::from_layer(cli.layer.clone().or(file).or(Layer::defaults()))?;
        s.restore = cli.restore.clone();
        Ok(s)
    }

    /// Validate a fully merged layer.
    pub fn from_layer(l: Layer) -> Result<Settings, ConfigError> {
        let l = l.fold_dns_table().map_err(|message| ConfigError::Invalid {
            key: "dns",
            message,
        })?;
        let d = Layer::defaults();
        let node_id = l.node_id.or(d.node_id).unwrap_or(1);
        if node_id == 0 {
            return Err(ConfigError::Invalid {
                key: "node-id",
                message: "must be a positive integer".into(),
            });
        }
        let kms_listen = l.kms_listen.clone().or(d.kms_listen).unwrap_or_default();
        if kms_listen.is_empty() {
            return Err(ConfigError::Invalid {
                key: "kms-listen",
                message: "at least one address is required".into(),
            });
        }
        let idle = l.idle_timeout_secs.unwrap_or(30);
        if !(1..=3600).contains(&idle) {
            return Err(ConfigError::Invalid {
                key: "idle-timeout-secs",
                message: "must be 1…3600".into(),
            });
        }
        let max_pdu = l.max_pdu_size.unwrap_or(4096);
        if !(512..=65535).contains(&max_pdu) {
            return Err(ConfigError::Invalid {
                key: "max-pdu-size",
                message: "must be 512…65535 (KMS PDUs are at most 312 bytes)".into(),
            });
        }
        let max_conn = l.max_connections.unwrap_or(10_000);
        let per_source = l.max_connections_per_source.unwrap_or(256);
        if max_conn == 0 || per_source == 0 {
            return Err(ConfigError::Invalid {
                key: "max-connections",
                message: "limits must be positive".into(),
            });
        }
        let name = l.name.clone().unwrap_or_else(|| format!("kmsd-{node_id}"));
        if name.is_empty()
            || name.len() > 63
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(ConfigError::Invalid {
                key: "name",
                message: "must be a DNS label: 1–63 letters, digits or '-'".into(),
            });
        }
        let host = kms_host::HostSettings {
            node_id,
            ndr64: l.ndr64.unwrap_or(true),
            btfn: l.btfn.unwrap_or(true),
            idle_timeout: Duration::from_secs(idle),
            max_connections: max_conn,
            max_connections_per_source: per_source,
            max_pdu_size: max_pdu,
            allow_clients: l.allow_client.clone().unwrap_or_default(),
            drain_timeout: Duration::from_secs(l.drain_timeout_secs.unwrap_or(10)),
        };
        let initial_cluster = match &l.initial_cluster {
            Some(t) => parse_initial_cluster(t)?,
            None => Default::default(),
        };
        if !initial_cluster.is_empty() && !initial_cluster.contains_key(&node_id) {
            return Err(ConfigError::Invalid {
                key: "initial-cluster",
                message: format!("does not list this node's id {node_id}"),
            });
        }
        let grpc_listen = l.grpc_listen.or(d.grpc_listen).expect("default");
        let advertise = match &l.advertise {
            Some(a) if !a.trim().is_empty() => a.trim().to_string(),
            _ if grpc_listen.ip().is_unspecified() => "127.0.0.1".to_string(),
            _ => grpc_listen.ip().to_string(),
        };
        // This node's own entry must be the address its peers will use for it: the advertised
        // host and the gRPC port (a port chosen at bind time, 0, is checked once bound).
        if let Some(own) = initial_cluster.get(&node_id) {
            let host = if advertise.contains(':') && !advertise.starts_with('[') {
                format!("[{advertise}]")
            } else {
                advertise.clone()
            };
            let expected = format!("{host}:{}", grpc_listen.port());
            if grpc_listen.port() != 0 && !own.eq_ignore_ascii_case(&expected) {
                return Err(ConfigError::Invalid {
                    key: "initial-cluster",
                    message: format!(
                        "lists node {node_id} at {own}, but this node advertises its gRPC \
                         address as {expected} (advertise, and the grpc-listen port): start each \
                         node with its own node-id and advertise, or fix the list"
                    ),
                });
            }
        }
        let commit_timeout_ms = l.commit_timeout_ms.unwrap_or(2000);
        if !(100..=60_000).contains(&commit_timeout_ms) {
            return Err(ConfigError::Invalid {
                key: "commit-timeout-ms",
                message: "must be 100…60000".into(),
            });
        }
        let snapshot_every = l.snapshot_every.unwrap_or(20_000);
        if !(10..=10_000_000).contains(&snapshot_every) {
            return Err(ConfigError::Invalid {
                key: "snapshot-every",
                message: "must be 10…10000000 log entries".into(),
            });
        }
        let snapshot_keep_logs = l.snapshot_keep_logs.unwrap_or(1_000);
        if snapshot_keep_logs > 10_000_000 {
            return Err(ConfigError::Invalid {
                key: "snapshot-keep-logs",
                message: "must be 0…10000000 log entries".into(),
            });
        }
        let tls = match (&l.tls_ca, &l.tls_cert, &l.tls_key) {
            (None, None, None) => None,
            (Some(ca), Some(cert), Some(key)) => Some(kms_tls::TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => {
                return Err(ConfigError::Invalid {
                    key: "tls-ca",
                    message: "tls-ca, tls-cert and tls-key must be given together".into(),
                });
            }
        };
        let log_level = l
            .log_level
            .clone()
            .unwrap_or_else(|| "info,openraft=warn".into());
        let log_level =
            crate::logging::check_filter(&log_level).map_err(|message| ConfigError::Invalid {
                key: "log-level",
                message,
            })?;
        let insecure = l.insecure.unwrap_or(false);
        if tls.is_none() && !insecure {
            if !initial_cluster.is_empty() || l.join.is_some() {
                return Err(ConfigError::Invalid {
                    key: if l.join.is_some() {
                        "join"
                    } else {
                        "initial-cluster"
                    },
                    message: clear_text_refusal(
                        "a multi-node cluster (--initial-cluster/--join) must use TLS for peer \
                         and admin traffic",
                    ),
                });
            }
            if !grpc_listen.ip().to_canonical().is_loopback() {
                return Err(ConfigError::Invalid {
                    key: "grpc-listen",
                    message: clear_text_refusal(&format!(
                        "{grpc_listen} is not a loopback address, and without TLS the admin API \
                         (configuration, identity rotation, full backups) would be open to \
                         anyone who reaches it; listen on 127.0.0.1 or [::1]"
                    )),
                });
            }
        }
        let zones: Vec<String> = l
            .dns_zone
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|z| z.trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|z| !z.is_empty())
            .collect();
        for z in &zones {
            let ok = z.len() <= 253
                && z.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                });
            if !ok {
                return Err(ConfigError::Invalid {
                    key: "dns-zone",
                    message: format!("'{z}' is not a DNS name"),
                });
            }
        }
        let dns = DnsSettings {
            zones,
            ttl: l.dns_ttl.unwrap_or(60).clamp(1, 86_400),
            priority: l.dns_priority.unwrap_or(0),
            weight: l.dns_weight.unwrap_or(100),
            axfr_allow: l.dns_axfr_allow.clone().unwrap_or_default(),
            rate_limit: l.dns_rate_limit.unwrap_or(50),
        };
        if dns.rate_limit == 0 {
            return Err(ConfigError::Invalid {
                key: "dns-rate-limit",
                message: "must be positive".into(),
            });
        }
        Ok(Settings {
            restore: None,
            tls,
            dns,
            initial_cluster,
            join: l.join.clone(),
            advertise,
            insecure,
            status_page_activations: l.status_page_activations.unwrap_or(false),
            commit_timeout: Duration::from_millis(commit_timeout_ms),
            snapshot_every,
            snapshot_keep_logs,
            data_dir: l.data_dir.clone().unwrap_or_else(|| "./kmsd-data".into()),
            node_id,
            name,
            kms_listen,
            grpc_listen,
            http_listen: l.http_listen.or(d.http_listen).expect("default"),
            dns_listen: l.dns_listen.or(d.dns_listen).expect("default"),
            log_format: l.log_format.unwrap_or_default(),
            log_level,
            host,
            effective: l,
        })
    }

    /// The effective configuration as TOML (what `--print-config` shows), the DNS settings as
    /// the `[dns]` table.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(&self.effective.clone().with_dns_table())
            .unwrap_or_else(|e| format!("# error: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_embedded_single_node() {
        let s = Settings::from_layer(Layer::defaults()).unwrap();
        assert_eq!(
            s.kms_listen,
            vec!["[::]:1688".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(s.grpc_listen.to_string(), "127.0.0.1:1689");
        assert_eq!(s.name, "kmsd-1");
        assert_eq!(s.data_dir, PathBuf::from("./kmsd-data"));
    }

    #[test]
    fn unknown_toml_keys_are_rejected() {
        let err = parse_toml("x.toml".as_ref(), "data-dir = \"/x\"\nbogus-key = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus-key"), "{err}");
    }

    #[test]
    fn flags_override_file_override_defaults() {
        let file = parse_toml("x.toml".as_ref(), "node-id = 3\nname = \"from-file\"\n").unwrap();
        let flags = Layer {
            name: Some("from-flag".into()),
            ..Layer::default()
        };
        let s = Settings::from_layer(flags.or(file).or(Layer::defaults())).unwrap();
        assert_eq!(s.node_id, 3);
        assert_eq!(s.name, "from-flag");
    }

    #[test]
    fn printed_config_parses_back() {
        let s = Settings::from_layer(Layer::defaults()).unwrap();
        let again = parse_toml("p.toml".as_ref(), &s.to_toml()).unwrap();
        assert_eq!(again, s.effective);
    }

    const DNS_TABLE: &str = "name = \"n1\"\n\n[dns]\nzones = [\"kms.example\", \"b.example\"]\n\
        ttl = 20\npriority = 10\nweight = 30\naxfr-allow = [\"10.0.0.0/24\"]\nrate-limit = 7\n";
    const DNS_FLAT: &str = "name = \"n1\"\ndns-zone = [\"kms.example\", \"b.example\"]\n\
        dns-ttl = 20\ndns-priority = 10\ndns-weight = 30\ndns-axfr-allow = [\"10.0.0.0/24\"]\n\
        dns-rate-limit = 7\n";

    fn check_dns_settings(l: Layer) {
        let s = Settings::from_layer(l.or(Layer::defaults())).unwrap();
        assert_eq!(s.dns.zones, ["kms.example", "b.example"]);
        assert_eq!(s.dns.ttl, 20);
        assert_eq!(s.dns.priority, 10);
        assert_eq!(s.dns.weight, 30);
        assert_eq!(s.dns.axfr_allow, ["10.0.0.0/24".parse::<IpNet>().unwrap()]);
        assert_eq!(s.dns.rate_limit, 7);
    }

    #[test]
    fn dns_table_parses_into_the_dns_settings() {
        let l = parse_toml("t.toml".as_ref(), DNS_TABLE).unwrap();
        assert_eq!(l.dns, None, "the table is folded into the flat fields");
        assert_eq!(l.dns_priority, Some(10));
        check_dns_settings(l);
    }

    #[test]
    fn flat_dns_keys_still_parse_to_the_same_layer() {
        let flat = parse_toml("f.toml".as_ref(), DNS_FLAT).unwrap();
        assert_eq!(flat, parse_toml("t.toml".as_ref(), DNS_TABLE).unwrap());
        check_dns_settings(flat);
        // Both forms in one file, for different settings, is fine.
        let mixed = "dns-zone = [\"kms.example\"]\n[dns]\npriority = 5\n";
        let l = parse_toml("m.toml".as_ref(), mixed).unwrap();
        assert_eq!(
            (l.dns_zone, l.dns_priority),
            (Some(vec!["kms.example".to_string()]), Some(5))
        );
    }

    #[test]
    fn a_dns_setting_given_both_ways_is_an_error_naming_both_keys() {
        for (flat, table) in [
            ("dns-zone = [\"a.example\"]", "zones = [\"b.example\"]"),
            ("dns-ttl = 20", "ttl = 20"),
            ("dns-priority = 1", "priority = 2"),
            ("dns-weight = 1", "weight = 2"),
            ("dns-axfr-allow = []", "axfr-allow = []"),
            ("dns-rate-limit = 5", "rate-limit = 5"),
        ] {
            let text = format!("{flat}\n[dns]\n{table}\n");
            let err = parse_toml("both.toml".as_ref(), &text).unwrap_err();
            let msg = err.to_string();
            let flat_key = flat.split(' ').next().unwrap();
            let table_key = format!("dns.{}", table.split(' ').next().unwrap());
            assert!(
                msg.contains(flat_key) && msg.contains(&table_key) && msg.contains("both.toml"),
                "{text:?}: {msg}"
            );
        }
    }

    #[test]
    fn unknown_or_mistyped_keys_in_the_dns_table_are_rejected() {
        for (text, want) in [
            ("[dns]\nzone = [\"a.example\"]\n", "zone"),
            ("[dns]\ndns-ttl = 20\n", "dns-ttl"),
            ("[dns]\nlisten = \"[::]:53\"\n", "listen"),
            ("[dns]\nttl = \"soon\"\n", "ttl"),
            ("dns = 1\n", "dns"),
        ] {
            let err = parse_toml("x.toml".as_ref(), text).unwrap_err();
            assert!(
                matches!(err, ConfigError::Parse { .. }) && err.to_string().contains(want),
                "{text:?}: {err}"
            );
        }
    }

    #[test]
    fn printed_config_has_the_dns_table_and_parses_back() {
        let file = parse_toml("t.toml".as_ref(), DNS_TABLE).unwrap();
        let s = Settings::from_layer(file.or(Layer::defaults())).unwrap();
        let printed = s.to_toml();
        assert!(printed.contains("\n[dns]\n"), "{printed}");
        assert!(printed.contains("\npriority = 10\n"), "{printed}");
        assert!(!printed.contains("dns-zone"), "{printed}");
        assert!(
            printed.contains("dns-listen = "),
            "dns-listen stays a plain key: {printed}"
        );
        let again = parse_toml("p.toml".as_ref(), &printed).unwrap();
        assert_eq!(again, s.effective);
        assert_eq!(Settings::from_layer(again).unwrap().to_toml(), printed);
    }

    #[test]
    fn flags_override_the_dns_table_of_the_file() {
        let file = parse_toml("t.toml".as_ref(), DNS_TABLE).unwrap();
        let flags = Layer {
            dns_priority: Some(3),
            ..Layer::default()
        };
        let s = Settings::from_layer(flags.or(file).or(Layer::defaults())).unwrap();
        assert_eq!((s.dns.priority, s.dns.weight), (3, 30));
    }

    #[test]
    fn every_setting_has_its_environment_variable() {
        let known = known_env_vars();
        for arg in Cli::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if ["print-config", "restore", "help", "version"].contains(&long) {
                continue;
            }
            let want = format!("KMSD_{}", long.to_ascii_uppercase().replace('-', "_"));
            assert!(known.contains(&want), "--{long}: no {want} in {known:?}");
        }
        assert!(known.iter().any(|k| k == "KMSD_CONFIG"));
    }

    #[test]
    fn unknown_kmsd_variables_are_reported_with_the_closest_known_one() {
        let got = unknown_env_vars([
            "KMSD_DNS_ZONE",
            "KMSD_DATA_DIR",
            "KMSD_CONFIG",
            "KMSD_BIN",
            "PATH",
            "XKMSD_FOO",
            "KMSD",
            "KMSD_DNS_ZONES",
            "KMSD_DATADIR",
            "KMSD_LOG_LEVLE",
            "kmsd_name",
            "KMSD_TLS_CRT",
            "KMSD_SOMETHING_ELSE",
            "KMSD_X",
        ]);
        let got: Vec<(&str, Option<&str>)> = got
            .iter()
            .map(|v| (v.name.as_str(), v.suggestion.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("KMSD_DATADIR", Some("KMSD_DATA_DIR")),
                ("KMSD_DNS_ZONES", Some("KMSD_DNS_ZONE")),
                ("KMSD_LOG_LEVLE", Some("KMSD_LOG_LEVEL")),
                ("KMSD_SOMETHING_ELSE", None),
                ("KMSD_TLS_CRT", Some("KMSD_TLS_CERT")),
                ("KMSD_X", None),
                ("kmsd_name", Some("KMSD_NAME")),
            ]
        );
        let v = UnknownEnvVar {
            name: "KMSD_DNS_ZONES".into(),
            suggestion: Some("KMSD_DNS_ZONE".into()),
        };
        assert_eq!(
            v.to_string(),
            "environment variable KMSD_DNS_ZONES is not a kmsd setting and is ignored \
             (did you mean KMSD_DNS_ZONE?)"
        );
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn initial_cluster_parses_and_validates() {
        let m = parse_initial_cluster("1=a:1689, 2=b:1689,3=[::1]:1689").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[&3], "[::1]:1689");
        assert!(parse_initial_cluster("1=a").is_err());
        assert!(parse_initial_cluster("0=a:1").is_err());
        assert!(parse_initial_cluster("1=a:1,1=b:2").is_err());
        let bad = Layer {
            node_id: Some(4),
            initial_cluster: Some("1=a:1,2=b:2".into()),
            ..Layer::defaults()
        };
        assert!(Settings::from_layer(bad).is_err());
    }

    #[test]
    fn clear_text_grpc_off_loopback_needs_insecure_or_tls() {
        let listen = |addr: &str, insecure: Option<bool>| Layer {
            grpc_listen: Some(addr.parse().unwrap()),
            insecure,
            ..Layer::defaults()
        };
        for addr in [
            "0.0.0.0:1689",
            "[::]:1689",
            "192.0.2.7:1689",
            "[2001:db8::1]:1689",
        ] {
            let err = Settings::from_layer(listen(addr, None)).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("grpc-listen")
                    && msg.contains(addr)
                    && msg.contains("--tls-ca")
                    && msg.contains("--insecure"),
                "{addr}: {msg}"
            );
            assert!(Settings::from_layer(listen(addr, Some(true))).is_ok());
        }
        for addr in [
            "127.0.0.1:1689",
            "127.0.0.2:0",
            "[::1]:1689",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(Settings::from_layer(listen(addr, None)).is_ok(), "{addr}");
        }
        let with_tls = Layer {
            tls_ca: Some("ca.crt".into()),
            tls_cert: Some("node.crt".into()),
            tls_key: Some("node.key".into()),
            ..listen("0.0.0.0:1689", None)
        };
        assert!(Settings::from_layer(with_tls).is_ok());
        let cluster = Layer {
            initial_cluster: Some("1=a:1689,2=b:1689".into()),
            advertise: Some("a".into()),
            ..Layer::defaults()
        };
        let err = Settings::from_layer(cluster.clone())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("initial-cluster") && err.contains("--insecure"),
            "{err}"
        );
        let cluster = Layer {
            insecure: Some(true),
            ..cluster
        };
        assert!(Settings::from_layer(cluster).is_ok());
    }

    #[test]
    fn invalid_values_are_refused() {
        let bad = Layer {
            node_id: Some(0),
            ..Layer::defaults()
        };
        assert!(Settings::from_layer(bad).is_err());
        let bad = Layer {
            name: Some("not a label".into()),
            ..Layer::defaults()
        };
        assert!(Settings::from_layer(bad).is_err());
    }

    #[test]
    fn own_initial_cluster_entry_must_be_the_advertised_grpc_address() {
        let layer = |advertise: &str, list: &str| Layer {
            initial_cluster: Some(list.into()),
            advertise: Some(advertise.into()),
            insecure: Some(true),
            grpc_listen: Some("0.0.0.0:1689".parse().unwrap()),
            ..Layer::defaults()
        };
        assert!(Settings::from_layer(layer("kms1", "1=KMS1:1689,2=kms2:1689")).is_ok());
        let err = Settings::from_layer(layer("kms9", "1=kms1:1689,2=kms2:1689"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("initial-cluster")
                && err.contains("kms1:1689")
                && err.contains("kms9:1689"),
            "{err}"
        );
        let err = Settings::from_layer(layer("kms1", "1=kms1:1700,2=kms2:1689"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("kms1:1700"), "{err}");
    }
}
