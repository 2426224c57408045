//! `kmsctl cert`: the cluster CA and the certificates it signs, like CockroachDB's
//! `cockroach cert`.
//!
//! Files (all PEM; keys unencrypted PKCS#8 written with mode 0600 in directories created
//! with mode 0700; never overwritten without `--force`):
//!
//! | command | writes into `--out-dir` |
//! |---|---|
//! | `create-ca` | `ca.crt`, `ca.key` |
//! | `create-node NAME` | `node.crt`, `node.key`, and a copy of `ca.crt` |
//! | `create-client NAME` | `client.NAME.crt`, `client.NAME.key`, and a copy of `ca.crt` |
//!
//! A node directory is therefore complete on its own — exactly what kmsd's `--tls-ca
//! DIR/ca.crt --tls-cert DIR/node.crt --tls-key DIR/node.key` point at — and several client
//! certificates can share one directory. `ca.key` never leaves the CA directory.
//!
//! The generation itself is `kms_tls::generate`; this module only handles arguments, files
//! and output.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand, ValueEnum};
use kms_tls::{CertInfo, ClientRole, PemKind, PemPair, TlsError};

use crate::cli::OutputFormat;

/// Errors of `kmsctl cert`.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Generation or inspection failed (bad input, damaged PEM…).
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A file to be written exists already.
    #[error("refusing to overwrite {0}; pass --force to replace it")]
    Exists(PathBuf),
    /// The out directory holds a `ca.crt` that does not contain the signing CA.
    #[error(
        "{0} holds other CA certificates than the one signing this certificate; pass --force \
         to replace it with the CA's ca.crt (a rotation bundle must contain the new CA)"
    )]
    OtherCa(PathBuf),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A directory or file could not be created or written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Printing the result failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// Default validity of a CA, in days (10 years).
pub const CA_DAYS: u32 = 3650;
/// Default validity of node certificates, in days (2 years).
pub const NODE_DAYS: u32 = 730;
/// Default validity of client certificates, in days (1 year).
pub const CLIENT_DAYS: u32 = 365;

/// The `after_help` of `kmsctl cert`.
pub const CERT_HELP: &str = "\
Examples (a three-node cluster; see docs/security.md):
  kmsctl cert create-ca --out-dir ca/
  kmsctl cert create-node kms1 --host kms1.example.net --host 10.0.0.11 --ca-dir ca/ --out-dir kms1/
  kmsctl cert create-client alice --role admin --ca-dir ca/ --out-dir ~/.kmsctl/
  kmsctl cert show kms1/node.crt

Files: create-ca writes ca.crt and ca.key; create-node writes node.crt, node.key and a copy of
ca.crt; create-client NAME writes client.NAME.crt, client.NAME.key and a copy of ca.crt. Keys
are written with mode 0600, new directories with 0700; existing files are never replaced
without --force. Keep ca.key offline: whoever holds it can mint admin and node certificates.

Exit codes: 0 success; 64 refused (invalid name or host, existing file, unusable CA directory,
not a certificate); every check runs before the first file is written.";

const CREATE_CA_HELP: &str = "\
Examples:
  kmsctl cert create-ca --out-dir /secure/kmsd-ca
  kmsctl cert create-ca --out-dir ca/ --name \"Contoso kmsd CA\" --days 7300

Writes ca.crt (the cluster CA certificate, shared with every node and operator) and ca.key
(mode 0600; keep it offline). The CA may only sign node and client certificates (path
length 0).

JSON output (-o json): {\"written\": [{\"path\", \"kind\", \"mode\"}], \"certificate\": {…as in
`cert show`…}}";

const CREATE_NODE_HELP: &str = "\
Examples:
  kmsctl cert create-node kms1 --host kms1.example.net --host 10.0.0.11 --ca-dir ca/ --out-dir kms1/
  kmsctl cert create-node kms2.example.net --host 10.0.0.12,kms.example.net --ca-dir ca/ --out-dir kms2/
  kmsctl cert create-node localhost --host 127.0.0.1 --ca-dir ca/ --out-dir dev/ --days 30

The certificate serves TLS and also dials the other nodes (serverAuth and clientAuth) and
carries the role `node` (SAN URI urn:kmsd:role:node), which allows Raft peer calls and every
admin call. Its SANs are NAME plus every --host: give every name and address peers and
kmsctl use to reach the node (the hosts of --initial-cluster and --advertise, load balancer
names, 127.0.0.1 for a kmsctl on the node itself) — a name missing here fails the TLS
handshake. Writes node.crt, node.key (0600) and a copy of ca.crt into --out-dir: one
directory per node.

JSON output (-o json): as for create-ca.";

const CREATE_CLIENT_HELP: &str = "\
Examples:
  kmsctl cert create-client alice --role admin --ca-dir ca/ --out-dir ~/.kmsctl/
  kmsctl cert create-client prometheus --role read --ca-dir ca/ --out-dir monitoring/

An operator's certificate for kmsctl (clientAuth only). --role admin may read and change the
cluster; --role read (the default) may only read. The role is the SAN URI
urn:kmsd:role:admin|read. NAME (letters, digits, '.', '_', '-') is the subject CN and the file
name: writes client.NAME.crt, client.NAME.key (0600) and a copy of ca.crt into --out-dir.

JSON output (-o json): as for create-ca.";

const SHOW_HELP: &str = "\
Examples:
  kmsctl cert show kms1/node.crt
  kmsctl cert show ca/ca.crt -o json

Prints every certificate in FILE (a certificate, a chain or a CA bundle): subject, issuer,
kmsd role, CA or not, SANs, extended key usage, validity (and whether it holds now), serial
and SHA-256 fingerprint.

JSON output (-o json): an array, one object per certificate:
  {\"subject\", \"issuer\", \"role\": \"node\"|\"admin\"|\"read\"|null, \"is_ca\": bool,
   \"sans\": [\"DNS:…\", \"IP:…\", \"URI:…\"], \"extended_key_usage\": [\"serverAuth\", …],
   \"not_before\": \"YYYY-MM-DD HH:MM:SS UTC\", \"not_after\": \"…\",
   \"not_before_unix\": n, \"not_after_unix\": n, \"valid_now\": bool,
   \"serial\": \"…\", \"sha256_fingerprint\": \"…\"}";

/// `kmsctl cert` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum CertCommand {
    /// Create the cluster CA: ca.crt and ca.key.
    #[command(after_help = CREATE_CA_HELP)]
    CreateCa(CreateCaArgs),
    /// Create a node certificate signed by the CA: node.crt and node.key.
    #[command(after_help = CREATE_NODE_HELP)]
    CreateNode(CreateNodeArgs),
    /// Create an operator (client) certificate signed by the CA, with role admin or read.
    #[command(after_help = CREATE_CLIENT_HELP)]
    CreateClient(CreateClientArgs),
    /// Print what a certificate file says: subject, SANs, role, validity.
    #[command(after_help = SHOW_HELP)]
    Show(ShowArgs),
}

/// `kmsctl cert create-ca`.
#[derive(Debug, Clone, Args)]
pub struct CreateCaArgs {
    /// Directory to write ca.crt and ca.key into (created with mode 0700 if missing).
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
    /// The CA's subject common name.
    #[arg(long, value_name = "NAME", default_value = "kmsd CA")]
    pub name: String,
    /// Validity in days.
    #[arg(long, value_name = "N", default_value_t = CA_DAYS, value_parser = days_parser())]
    pub days: u32,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

/// `kmsctl cert create-node`.
#[derive(Debug, Clone, Args)]
pub struct CreateNodeArgs {
    /// Node name: the subject CN and the first SAN (a DNS name or an IP address).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// A further DNS name or IP address the node is reached by; repeatable, or
    /// comma-separated. No ports.
    #[arg(long = "host", value_name = "HOST", value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Directory holding the CA's ca.crt and ca.key.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// Directory to write node.crt, node.key and ca.crt into (one directory per node).
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
    /// Validity in days.
    #[arg(long, value_name = "N", default_value_t = NODE_DAYS, value_parser = days_parser())]
    pub days: u32,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

/// The role of a client certificate on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum RoleArg {
    /// Read and change the cluster.
    Admin,
    /// Read only.
    #[default]
    Read,
}

impl From<RoleArg> for ClientRole {
    fn from(role: RoleArg) -> ClientRole {
        match role {
            RoleArg::Admin => ClientRole::Admin,
            RoleArg::Read => ClientRole::Read,
        }
    }
}

/// `kmsctl cert create-client`.
#[derive(Debug, Clone, Args)]
pub struct CreateClientArgs {
    /// Client name: the subject CN and part of the file names (letters, digits, `.`, `_`, `-`).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// What the certificate may do.
    #[arg(long, value_enum, default_value_t = RoleArg::Read)]
    pub role: RoleArg,
    /// Directory holding the CA's ca.crt and ca.key.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// Directory to write client.NAME.crt, client.NAME.key and ca.crt into.
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
    /// Validity in days.
    #[arg(long, value_name = "N", default_value_t = CLIENT_DAYS, value_parser = days_parser())]
    pub days: u32,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

/// `kmsctl cert show`.
#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    /// A PEM certificate file (a chain or bundle shows every certificate).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

fn days_parser() -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..=i64::from(kms_tls::MAX_VALIDITY_DAYS))
}

/// What a written file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Certificate,
    PrivateKey,
    CaCopy,
}

impl FileKind {
    fn label(self) -> &'static str {
        match self {
            FileKind::Certificate => "certificate",
            FileKind::PrivateKey => "private key",
            FileKind::CaCopy => "CA certificate (copy)",
        }
    }

    fn mode(self) -> u32 {
        match self {
            FileKind::PrivateKey => 0o600,
            FileKind::Certificate | FileKind::CaCopy => 0o644,
        }
    }
}

/// A file to write.
struct Output {
    path: PathBuf,
    kind: FileKind,
    text: String,
}

/// Run a `kmsctl cert` subcommand.
pub fn run(
    command: &CertCommand,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), CertError> {
    match command {
        CertCommand::CreateCa(a) => {
            let pair = kms_tls::create_ca(&a.name, a.days)?;
            let files = vec![
                Output {
                    path: a.out_dir.join(kms_tls::CA_CERT_FILE),
                    kind: FileKind::Certificate,
                    text: pair.cert.clone(),
                },
                Output {
                    path: a.out_dir.join(kms_tls::CA_KEY_FILE),
                    kind: FileKind::PrivateKey,
                    text: pair.key.clone(),
                },
            ];
            write_all(&a.out_dir, &files, a.force)?;
            report(
                &files,
                &pair,
                format,
                out,
                Some("keep ca.key offline: whoever holds it can issue node and admin certificates"),
            )
        }
        CertCommand::CreateNode(a) => {
            let ca = read_ca(&a.ca_dir)?;
            let pair = kms_tls::create_node(&ca.cert, &ca.key, &a.name, &a.hosts, a.days)
                .map_err(|e| ca_error(&a.ca_dir, e))?;
            let mut files = vec![
                Output {
                    path: a.out_dir.join(kms_tls::NODE_CERT_FILE),
                    kind: FileKind::Certificate,
                    text: pair.cert.clone(),
                },
                Output {
                    path: a.out_dir.join(kms_tls::NODE_KEY_FILE),
                    kind: FileKind::PrivateKey,
                    text: pair.key.clone(),
                },
            ];
            files.extend(ca_copy(&a.ca_dir, &a.out_dir, &ca.cert, a.force)?);
            write_all(&a.out_dir, &files, a.force)?;
            report(&files, &pair, format, out, None)
        }
        CertCommand::CreateClient(a) => {
            kms_tls::check_client_name(&a.name)?;
            let ca = read_ca(&a.ca_dir)?;
            let pair = kms_tls::create_client(&ca.cert, &ca.key, &a.name, a.role.into(), a.days)
                .map_err(|e| ca_error(&a.ca_dir, e))?;
            let mut files = vec![
                Output {
                    path: a.out_dir.join(kms_tls::client_cert_file(&a.name)),
                    kind: FileKind::Certificate,
                    text: pair.cert.clone(),
                },
                Output {
                    path: a.out_dir.join(kms_tls::client_key_file(&a.name)),
                    kind: FileKind::PrivateKey,
                    text: pair.key.clone(),
                },
            ];
            files.extend(ca_copy(&a.ca_dir, &a.out_dir, &ca.cert, a.force)?);
            write_all(&a.out_dir, &files, a.force)?;
            report(&files, &pair, format, out, None)
        }
        CertCommand::Show(a) => {
            let text = std::fs::read(&a.file).map_err(|source| CertError::Read {
                path: a.file.clone(),
                source,
            })?;
            let infos =
                kms_tls::inspect_pem(&text).map_err(|e| e.locate(PemKind::Certificate, &a.file))?;
            show(&a.file, &infos, format, out)
        }
    }
}

/// Name the CA directory's files in errors about the CA text read from them.
fn ca_error(dir: &Path, e: TlsError) -> CertError {
    CertError::Tls(
        e.locate(PemKind::CaCertificate, &dir.join(kms_tls::CA_CERT_FILE))
            .locate(PemKind::CaKey, &dir.join(kms_tls::CA_KEY_FILE)),
    )
}

/// The CA's certificate and key, read from `DIR/ca.crt` and `DIR/ca.key`.
fn read_ca(dir: &Path) -> Result<PemPair, CertError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| CertError::Read { path, source })
    };
    Ok(PemPair {
        cert: read(kms_tls::CA_CERT_FILE)?,
        key: read(kms_tls::CA_KEY_FILE)?,
    })
}

/// The copy of `ca.crt` to write into `out_dir`: none when `out_dir` is the CA directory or
/// already holds a `ca.crt` containing the CA (identical, or a bundle with it); the CA's
/// `ca.crt` when there is none; an error when there is a different one, unless `force`.
fn ca_copy(
    ca_dir: &Path,
    out_dir: &Path,
    ca_cert: &str,
    force: bool,
) -> Result<Option<Output>, CertError> {
    let target = out_dir.join(kms_tls::CA_CERT_FILE);
    let same_dir = match (ca_dir.canonicalize(), out_dir.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same_dir {
        return Ok(None);
    }
    let copy = Output {
        path: target.clone(),
        kind: FileKind::CaCopy,
        text: ca_cert.to_owned(),
    };
    let existing = match std::fs::read(&target) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some(copy)),
        Err(source) => {
            return Err(CertError::Read {
                path: target,
                source,
            });
        }
    };
    let fingerprints = |pem: &[u8]| -> Vec<String> {
        kms_tls::inspect_pem(pem)
            .map(|v| v.into_iter().map(|i| i.sha256_fingerprint).collect())
            .unwrap_or_default()
    };
    let ours = fingerprints(ca_cert.as_bytes());
    let theirs = fingerprints(&existing);
    if ours.iter().all(|f| theirs.contains(f)) && !ours.is_empty() {
        Ok(None)
    } else if force {
        Ok(Some(copy))
    } else {
        Err(CertError::OtherCa(target))
    }
}

/// Write every file, after checking that none exists (unless `force`); each through a
/// temporary file renamed into place, keys created with mode 0600.
fn write_all(dir: &Path, files: &[Output], force: bool) -> Result<(), CertError> {
    if !force {
        for f in files {
            if f.path.exists() {
                return Err(CertError::Exists(f.path.clone()));
            }
        }
    }
    create_dir(dir)?;
    for f in files {
        write_file(&f.path, f.text.as_bytes(), f.kind.mode())?;
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), CertError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| CertError::Write {
        path: dir.to_owned(),
        source,
    })
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertError> {
    let err = |source| CertError::Write {
        path: path.to_owned(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        // The umask may have narrowed the mode of a certificate; make it exact.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn info_json(info: &CertInfo) -> serde_json::Value {
    serde_json::json!({
        "subject": info.subject,
        "issuer": info.issuer,
        "role": info.role.map(|r| r.as_str()),
        "is_ca": info.is_ca,
        "sans": info.sans,
        "extended_key_usage": info.extended_key_usage,
        "not_before": info.not_before_utc(),
        "not_after": info.not_after_utc(),
        "not_before_unix": info.not_before,
        "not_after_unix": info.not_after,
        "valid_now": info.is_valid_at(now_unix()),
        "serial": info.serial,
        "sha256_fingerprint": info.sha256_fingerprint,
    })
}

fn info_text(info: &CertInfo, indent: &str) -> String {
    let now = now_unix();
    let list = |v: &[String]| {
        if v.is_empty() {
            "(none)".to_owned()
        } else {
            v.join(", ")
        }
    };
    let validity = if now > info.not_after {
        format!("EXPIRED {} days ago", (now - info.not_after) / 86_400)
    } else if now < info.not_before {
        "NOT YET VALID".to_owned()
    } else {
        // Rounded up: a certificate made a moment ago for N days shows N.
        format!(
            "valid, expires in {} days",
            (info.not_after - now + 86_399) / 86_400
        )
    };
    let role = match info.role {
        Some(role) => format!("{role} ({})", role.uri()),
        None => "(none)".to_owned(),
    };
    [
        ("subject", info.subject.clone()),
        ("issuer", info.issuer.clone()),
        ("role", role),
        ("CA", if info.is_ca { "yes" } else { "no" }.to_owned()),
        ("SANs", list(&info.sans)),
        ("ext. key usage", list(&info.extended_key_usage)),
        ("not before", info.not_before_utc()),
        (
            "not after",
            format!("{} ({validity})", info.not_after_utc()),
        ),
        ("serial", info.serial.clone()),
        ("sha256", info.sha256_fingerprint.clone()),
    ]
    .iter()
    .map(|(k, v)| format!("{indent}{:<16}{v}\n", format!("{k}:")))
    .collect()
}

fn report(
    files: &[Output],
    pair: &PemPair,
    format: OutputFormat,
    out: &mut dyn Write,
    note: Option<&str>,
) -> Result<(), CertError> {
    let info = kms_tls::inspect_pem(pair.cert.as_bytes())?
        .into_iter()
        .next()
        .ok_or_else(|| TlsError::NotPem {
            file: kms_tls::PemSource::text(PemKind::Certificate),
            expected: "CERTIFICATE",
            detail: "generation produced no certificate".to_owned(),
        })?;
    match format {
        OutputFormat::Text => {
            for f in files {
                writeln!(
                    out,
                    "wrote {} ({}, mode {:04o})",
                    f.path.display(),
                    f.kind.label(),
                    f.kind.mode()
                )?;
            }
            out.write_all(info_text(&info, "  ").as_bytes())?;
            if let Some(note) = note {
                writeln!(out, "note: {note}")?;
            }
        }
        OutputFormat::Json => {
            let written: Vec<serde_json::Value> = files
                .iter()
                .map(|f| {
                    serde_json::json!({
                        "path": f.path.display().to_string(),
                        "kind": f.kind.label(),
                        "mode": format!("{:04o}", f.kind.mode()),
                    })
                })
                .collect();
            let doc = serde_json::json!({ "written": written, "certificate": info_json(&info) });
            serde_json::to_writer_pretty(&mut *out, &doc).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
    }
    Ok(())
}

fn show(
    file: &Path,
    infos: &[CertInfo],
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), CertError> {
    match format {
        OutputFormat::Text => {
            for (i, info) in infos.iter().enumerate() {
                if i > 0 {
                    writeln!(out)?;
                }
                writeln!(
                    out,
                    "{} — certificate {} of {}",
                    file.display(),
                    i + 1,
                    infos.len()
                )?;
                out.write_all(info_text(info, "  ").as_bytes())?;
            }
        }
        OutputFormat::Json => {
            let doc: Vec<serde_json::Value> = infos.iter().map(info_json).collect();
            serde_json::to_writer_pretty(&mut *out, &doc).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
    }
    Ok(())
}
