//! `kmsctl activate`: act as one or more KMS clients, verify every response, and report each
//! request (text or the JSON shape of [`RequestResult`]).

use std::fmt::Write as _;

use kms_wire::Guid;
use kms_wire::kms::ProtocolVersion;
use kms_wire::rpc::Syntax;
use serde::Serialize;

use crate::catalog::{self, CatalogError, ProductSelection};
use crate::cli::ActivateArgs;
use crate::client::{
    self, ClientError, ClientIdentity, ConnectionOptions, KmsAddr, KmsConnection, Reply,
};
use crate::exit::ExitClass;

/// Everything `activate` will do, resolved from the command line before anything is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivatePlan {
    /// Where to.
    pub kms: KmsAddr,
    /// Which product.
    pub product: ProductSelection,
    /// Protocol version of every request.
    pub protocol: ProtocolVersion,
    /// One identity per machine, in order.
    pub machines: Vec<ClientIdentity>,
    /// Requests per machine.
    pub requests_per_machine: u32,
    /// Open a new connection for every request.
    pub new_connection: bool,
    /// Request-time skew in seconds.
    pub time_offset_secs: i64,
    /// Connection options.
    pub options: ConnectionOptions,
}

impl ActivatePlan {
    /// Resolve the arguments: product lookup, defaults, random CMIDs and workstation names.
    pub fn from_args(args: &ActivateArgs) -> Result<ActivatePlan, CatalogError> {
        let product = catalog::resolve(&args.product)?;
        let protocol = args
            .protocol
            .map_or(product.default_protocol, crate::cli::Protocol::version);
        let machines = (0..args.machines)
            .map(|_| ClientIdentity {
                cmid: args.cmid.unwrap_or_else(client::random_cmid),
                workstation: args
                    .workstation
                    .clone()
                    .unwrap_or_else(|| client::random_workstation(product.is_server)),
                is_vm: args.vm,
                license_status: args.license_status,
                binding_expiration: args.binding_expiration,
            })
            .collect();
        Ok(ActivatePlan {
            kms: args.kms.clone(),
            product,
            protocol,
            machines,
            requests_per_machine: args.requests,
            new_connection: args.new_connection,
            time_offset_secs: args.time_offset_secs,
            options: ConnectionOptions::new(
                args.rpc.ndr64_enabled(),
                args.rpc.btfn_enabled(),
                args.timeout,
            ),
        })
    }

    /// Total requests the plan sends when nothing fails.
    pub fn total_requests(&self) -> u64 {
        self.machines.len() as u64 * u64::from(self.requests_per_machine)
    }
}

/// What happened to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Verified success response.
    Activated,
    /// Verified HRESULT refusal.
    Refused,
    /// Verification or RPC protocol failure.
    Invalid,
    /// Could not reach the host, connection broke, or timeout.
    Connection,
}

impl Outcome {
    /// The exit class.
    pub fn class(self) -> ExitClass {
        match self {
            Outcome::Activated => ExitClass::Success,
            Outcome::Refused => ExitClass::Refused,
            Outcome::Invalid => ExitClass::Invalid,
            Outcome::Connection => ExitClass::Connection,
        }
    }
}

/// One request's result; the element of the documented JSON array of `activate -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestResult {
    /// 1-based request number.
    pub request: u64,
    /// 1-based machine number.
    pub machine: u32,
    /// The request's CMID.
    pub cmid: Guid,
    /// The workstation name sent.
    pub workstation: String,
    /// Protocol major version (4, 5, 6).
    pub protocol: u16,
    /// `ndr32` or `ndr64`; null when no REQUEST was sent.
    pub transfer_syntax: Option<&'static str>,
    /// `activated`, `refused`, `invalid` or `connection`.
    pub outcome: Outcome,
    /// The host's ePID (success only).
    pub epid: Option<String>,
    /// The host's HwId as 16 upper-case hex digits (v6 success only).
    pub hwid: Option<String>,
    /// The count the host reported (success only).
    pub current_count: Option<u32>,
    /// The required count N the request carried.
    pub required_count: u32,
    /// Whether current_count ≥ N, i.e. a Windows client would now be activated (success only).
    pub count_sufficient: Option<bool>,
    /// Activation (retry) interval in minutes (success only).
    pub activation_interval: Option<u32>,
    /// Renewal interval in minutes (success only).
    pub renewal_interval: Option<u32>,
    /// `0x00000000` on success, the refusal's HRESULT, null for other failures.
    pub hresult: Option<String>,
    /// Symbolic name of the HRESULT, when known.
    pub hresult_name: Option<&'static str>,
    /// One-line explanation of the HRESULT, when known.
    pub hresult_meaning: Option<&'static str>,
    /// What went wrong for `invalid` and `connection` outcomes.
    pub error: Option<String>,
}

impl RequestResult {
    fn base(n: u64, machine: u32, plan: &ActivatePlan, id: &ClientIdentity) -> RequestResult {
        RequestResult {
            request: n,
            machine,
            cmid: id.cmid,
            workstation: id.workstation.clone(),
            protocol: plan.protocol.major(),
            transfer_syntax: None,
            outcome: Outcome::Connection,
            epid: None,
            hwid: None,
            current_count: None,
            required_count: plan.product.required_client_count,
            count_sufficient: None,
            activation_interval: None,
            renewal_interval: None,
            hresult: None,
            hresult_name: None,
            hresult_meaning: None,
            error: None,
        }
    }

    fn set_hresult(&mut self, h: kms_wire::Hresult) {
        self.hresult = Some(format!("0x{:08X}", h.0));
        self.hresult_name = h.name();
        self.hresult_meaning = h.meaning();
    }

    fn set_error(&mut self, e: &ClientError) {
        self.outcome = match e.class() {
            ExitClass::Invalid => Outcome::Invalid,
            _ => Outcome::Connection,
        };
        self.error = Some(e.to_string());
    }
}

/// The label of a transfer syntax in results.
pub fn syntax_label(s: Syntax) -> &'static str {
    match s {
        Syntax::Ndr32 => "ndr32",
        Syntax::Ndr64 => "ndr64",
    }
}

/// The result of an `activate` run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivateReport {
    /// The address as given.
    pub kms: String,
    /// The resolved address (None if resolution failed).
    pub address: Option<String>,
    /// Product display name.
    pub product: String,
    /// Requests that were not sent because the host could not be reached.
    pub not_sent: u64,
    /// One entry per request sent (or attempted).
    pub results: Vec<RequestResult>,
}

impl ActivateReport {
    /// The exit class of the run: the worst of its results.
    pub fn exit_class(&self) -> ExitClass {
        ExitClass::worst(self.results.iter().map(|r| r.outcome.class()))
    }

    /// The documented JSON document: the array of results.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.results).unwrap_or(serde_json::Value::Null)
    }

    /// Human-readable rendering.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "KMS host {}{}, product {}",
            self.kms,
            self.address
                .as_ref()
                .filter(|a| **a != self.kms)
                .map(|a| format!(" ({a})"))
                .unwrap_or_default(),
            self.product
        );
        for r in &self.results {
            let syntax = r
                .transfer_syntax
                .map(|t| format!(" {}", t.to_ascii_uppercase()))
                .unwrap_or_default();
            let _ = write!(
                s,
                "#{} cmid {} ({}) v{}{}: ",
                r.request, r.cmid, r.workstation, r.protocol, syntax
            );
            match r.outcome {
                Outcome::Activated => {
                    let _ = writeln!(s, "activated");
                    let _ = writeln!(
                        s,
                        "    ePID                 {}",
                        r.epid.as_deref().unwrap_or("-")
                    );
                    if let Some(h) = &r.hwid {
                        let _ = writeln!(s, "    HwId                 {h}");
                    }
                    let count = r.current_count.unwrap_or(0);
                    let _ = writeln!(
                        s,
                        "    current count        {count} (client requires {}{})",
                        r.required_count,
                        if r.count_sufficient == Some(false) {
                            "; a Windows client would report 0xC004F038 and retry"
                        } else {
                            ""
                        }
                    );
                    let _ = writeln!(
                        s,
                        "    activation interval  {} min",
                        r.activation_interval.unwrap_or(0)
                    );
                    let _ = writeln!(
                        s,
                        "    renewal interval     {} min",
                        r.renewal_interval.unwrap_or(0)
                    );
                }
                Outcome::Refused => {
                    let _ = writeln!(
                        s,
                        "refused with {} {}",
                        r.hresult.as_deref().unwrap_or("?"),
                        r.hresult_name.unwrap_or("(unknown HRESULT)")
                    );
                    if let Some(m) = r.hresult_meaning {
                        let _ = writeln!(s, "    {m}");
                    }
                }
                Outcome::Invalid | Outcome::Connection => {
                    let _ = writeln!(s, "error: {}", r.error.as_deref().unwrap_or("?"));
                }
            }
        }
        let count = |o: Outcome| self.results.iter().filter(|r| r.outcome == o).count();
        let _ = write!(
            s,
            "{} request(s): {} activated, {} refused, {} invalid, {} connection error(s)",
            self.results.len(),
            count(Outcome::Activated),
            count(Outcome::Refused),
            count(Outcome::Invalid),
            count(Outcome::Connection)
        );
        if self.not_sent > 0 {
            let _ = write!(s, "; {} not sent (host unreachable)", self.not_sent);
        }
        let _ = writeln!(s);
        s
    }
}

/// Run the plan: requests one after the other, on one connection (or one per request with
/// `new_connection`); a connection that breaks is replaced for the next request; the run
/// stops at the first failure to connect or bind.
pub async fn run(plan: &ActivatePlan) -> ActivateReport {
    let mut report = ActivateReport {
        kms: plan.kms.to_string(),
        address: None,
        product: plan.product.name.clone(),
        not_sent: 0,
        results: Vec::new(),
    };
    let total = plan.total_requests();
    let addr = match plan.kms.resolve().await {
        Ok(a) => a,
        Err(e) => {
            if let Some(first) = plan.machines.first() {
                let mut r = RequestResult::base(1, 1, plan, first);
                r.set_error(&e);
                report.results.push(r);
            }
            report.not_sent = total.saturating_sub(1);
            return report;
        }
    };
    report.address = Some(addr.to_string());

    let mut conn: Option<KmsConnection> = None;
    let mut n = 0u64;
    for (m, id) in plan.machines.iter().enumerate() {
        let machine = u32::try_from(m + 1).unwrap_or(u32::MAX);
        for _ in 0..plan.requests_per_machine {
            n += 1;
            let mut r = RequestResult::base(n, machine, plan, id);
            if plan.new_connection {
                conn = None;
            }
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match KmsConnection::connect(addr, plan.options).await {
                    Ok(c) => conn.insert(c),
                    Err(e) => {
                        r.set_error(&e);
                        report.results.push(r);
                        report.not_sent = total - n;
                        return report;
                    }
                },
            };
            r.transfer_syntax = c.next_syntax().map(syntax_label);
            let req =
                client::build_request(plan.protocol, &plan.product, id, plan.time_offset_secs);
            match c.activate(&req).await {
                Ok(outcome) => {
                    r.transfer_syntax = Some(syntax_label(outcome.syntax));
                    match outcome.reply {
                        Reply::Activated(v) => {
                            r.outcome = Outcome::Activated;
                            r.set_hresult(kms_wire::Hresult::S_OK);
                            let resp = &v.response;
                            r.epid = Some(resp.epid.clone());
                            r.hwid = v.hwid.map(hex::encode_upper);
                            r.current_count = Some(resp.current_count);
                            r.count_sufficient =
                                Some(resp.current_count >= plan.product.required_client_count);
                            r.activation_interval = Some(resp.activation_interval);
                            r.renewal_interval = Some(resp.renewal_interval);
                        }
                        Reply::Refused(h) => {
                            r.outcome = Outcome::Refused;
                            r.set_hresult(h);
                        }
                    }
                }
                Err(e) => {
                    r.set_error(&e);
                    conn = None;
                }
            }
            report.results.push(r);
        }
    }
    report
}
