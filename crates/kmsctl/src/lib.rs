//! # kmsctl — the operator's command line for kmsd
//!
//! `kmsctl` talks to KMS hosts and, later, to kmsd clusters:
//!
//! * `kmsctl activate` is a KMS client like `vlmcs`: it binds like Windows (PROTOCOL.md §3.3),
//!   sends v4/v5/v6 activation requests and verifies every response with all client checks
//!   of §6.7, printing the ePID, HwId, count and intervals or the HRESULT of a refusal.
//! * `kmsctl bench` is a bounded load generator on the same client code: it verifies every
//!   response too and reports throughput, latency percentiles and errors by reason.
//! * Admin subcommands over gRPC (status, member, config, …) join [`cli::Command`] later.
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
pub mod bench;
pub mod catalog;
pub mod cli;
pub mod client;
pub mod exit;

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
}

impl CommandError {
    /// The exit class of the error.
    pub fn class(&self) -> ExitClass {
        match self {
            CommandError::Catalog(_) => ExitClass::Usage,
            CommandError::Client(e) => e.class(),
            CommandError::Output(_) => ExitClass::Connection,
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
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "kmsctl", out);
            Ok(ExitClass::Success)
        }
    }
}
