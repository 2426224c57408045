//! # kmsctl — the operator's command line for kmsd
//!
//! `kmsctl` talks to KMS hosts and, later, to kmsd clusters:
//!
//! * `kmsctl activate` is a KMS client like `vlmcs`: it binds like Windows (PROTOCOL.md §3.3),
//!   sends v4/v5/v6 activation requests and verifies every response with all client checks
//!   of §6.7, printing the ePID, HwId, count and intervals or the HRESULT of a refusal.
//! * `kmsctl bench` is a bounded load generator on the same client code: it verifies every
//!   response too and reports throughput, latency percentiles and errors by reason.
//! * `kmsctl cert` creates the cluster CA and the node and operator certificates of the gRPC
//!   port's mutual TLS, and shows what a certificate says ([`cert`], over `kms_tls`).
//! * `kmsctl products` lists the catalog offline: editions with their GVLK, product group and
//!   required client count, or the product groups ([`products`]).
//! * The admin subcommands (`status`, `health`, `member`, `leader`, `counts`, `clients`,
//!   `config`, `identity`, `backup`, `events`) operate a kmsd cluster over its gRPC admin API
//!   ([`admin`]): endpoint failover, leader hints, mutual TLS, tables or stable JSON.
//!
//! Layout: [`cli`] (clap definitions), [`catalog`] (product lookup, delegated to
//! `kms_core::catalog`), [`client`] (the async KMS connection), [`activate`] and [`bench`](mod@bench)
//! (the two subcommands), [`exit`] (exit codes). `main.rs` only parses, builds the runtime
//! and calls [`execute`], so tests drive everything in-process.
//!
//! What this crate must never do: send to any address but the one the operator gave, run
//! without a bound (every wait has a timeout, every run a request or time limit), or report
//! a response as valid without verifying it.

pub mod activate;
pub mod admin;
pub mod bench;
pub mod catalog;
pub mod cert;
pub mod cli;
pub mod client;
pub mod exit;
pub mod products;

use std::io::Write;

use clap::CommandFactory;

use crate::cli::{Cli, Command, OutputFormat};
use crate::exit::ExitClass;

/// Errors that end a command before or instead of producing results.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The command line named something that does not exist (exit code 64).
    #[error(transparent)]
    Catalog(#[from] catalog::CatalogError),
    /// The KMS host could not be reached at all (exit code 3).
    #[error(transparent)]
    Client(#[from] client::ClientError),
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    /// `kmsctl cert` refused or failed (exit code 64); nothing was sent anywhere.
    #[error(transparent)]
    Cert(#[from] cert::CertError),
    /// An admin subcommand failed (exit code by cause: 1, 3, 4 or 64).
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
}

impl CommandError {
    /// The exit class of the error.
    pub fn class(&self) -> ExitClass {
        match self {
            CommandError::Catalog(_) => ExitClass::Usage,
            CommandError::Client(e) => e.class(),
            CommandError::Output(_) => ExitClass::Connection,
            CommandError::Cert(_) => ExitClass::Usage,
            CommandError::Admin(e) => e.class(),
        }
    }
}

/// Run a parsed command line, writing results to `out`; returns the exit class of the
/// results.
pub async fn execute(cli: &Cli, out: &mut dyn Write) -> Result<ExitClass, CommandError> {
    match &cli.command {
        Command::Activate(args) => {
            let plan = activate::ActivatePlan::from_args(args)?;
            let report = activate::run(&plan).await;
            match cli.output {
                OutputFormat::Text => out.write_all(report.to_text().as_bytes())?,
                OutputFormat::Json => {
                    serde_json::to_writer_pretty(&mut *out, &report.to_json())
                        .map_err(std::io::Error::from)?;
                    writeln!(out)?;
                }
            }
            Ok(report.exit_class())
        }
        Command::Bench(args) => {
            let plan = bench::BenchPlan::from_args(args)?;
            let report = bench::run(&plan).await?;
            match cli.output {
                OutputFormat::Text => out.write_all(report.to_text().as_bytes())?,
                OutputFormat::Json => {
                    serde_json::to_writer_pretty(&mut *out, &report)
                        .map_err(std::io::Error::from)?;
                    writeln!(out)?;
                }
            }
            Ok(report.exit_class)
        }
        Command::Cert(command) => {
            cert::run(command, cli.output, out)?;
            Ok(ExitClass::Success)
        }
        Command::Products(args) => Ok(products::run(
            args,
            cli.output,
            out,
            &mut std::io::stderr(),
        )?),
        Command::Status
        | Command::Health
        | Command::Member(_)
        | Command::Leader(_)
        | Command::Counts
        | Command::Clients(_)
        | Command::Config(_)
        | Command::Identity(_)
        | Command::Backup(_)
        | Command::Events(_) => {
            let command = admin_command(&cli.command)
                .ok_or_else(|| admin::AdminError::Usage("not an admin subcommand".into()))?;
            Ok(admin::run(&command, &cli.connect, cli.output, out).await?)
        }
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "kmsctl", out);
            Ok(ExitClass::Success)
        }
    }
}

/// The admin subcommand of a command line, if it is one.
fn admin_command(command: &Command) -> Option<admin::AdminCommand> {
    use admin::AdminCommand as A;
    Some(match command {
        Command::Status => A::Status,
        Command::Health => A::Health,
        Command::Member(m) => A::Member(m.clone()),
        Command::Leader(l) => A::Leader(l.clone()),
        Command::Counts => A::Counts,
        Command::Clients(c) => A::Clients(c.clone()),
        Command::Config(c) => A::Config(c.clone()),
        Command::Identity(i) => A::Identity(i.clone()),
        Command::Backup(b) => A::Backup(b.clone()),
        Command::Events(e) => A::Events(e.clone()),
        _ => return None,
    })
}
