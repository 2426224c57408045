//! Bench statistics: counters, errors by reason, a latency histogram, and the report.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::histogram::Histogram;
use crate::exit::ExitClass;

/// What happened to one bench request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sample {
    /// A verified success response.
    Success,
    /// A verified refusal: the host answered with this HRESULT.
    Refused(u32),
    /// The response failed verification or broke the RPC protocol; `reason` is a stable
    /// label such as `verify: bad_hmac` or `rpc: fault 0x1c010003`.
    Invalid {
        /// Stable label.
        reason: String,
    },
    /// Connect error, timeout, or a connection that broke; `reason` is `connect`, `timeout`
    /// or `io`.
    Connection {
        /// Stable label.
        reason: String,
    },
}

impl Sample {
    /// The exit class this sample contributes.
    pub fn class(&self) -> ExitClass {
        match self {
            Sample::Success => ExitClass::Success,
            Sample::Refused(_) => ExitClass::Refused,
            Sample::Invalid { .. } => ExitClass::Invalid,
            Sample::Connection { .. } => ExitClass::Connection,
        }
    }
}

/// Label of a refusal in `errors_by_reason`.
pub fn hresult_reason(h: u32) -> String {
    format!("hresult 0x{h:08X}")
}

/// Accumulated statistics of one worker or of a whole run (workers merge theirs).
#[derive(Debug, Clone, Default)]
pub struct BenchStats {
    /// Latency of every request that got a reply (success, refusal or invalid), in µs.
    pub latency_us: Histogram,
    /// Requests attempted (each counted once, whatever its outcome).
    pub requests: u64,
    /// Verified successes.
    pub successes: u64,
    /// Verified refusals (HRESULT).
    pub refusals: u64,
    /// Responses that failed verification or broke the protocol.
    pub invalid_responses: u64,
    /// Connect errors, timeouts and broken connections.
    pub connection_errors: u64,
    /// TCP connections opened (successfully).
    pub connections: u64,
    /// Every non-success by reason.
    pub errors_by_reason: BTreeMap<String, u64>,
    /// The worst class seen.
    pub worst: ExitClass,
}

impl BenchStats {
    /// Record one request. `latency` is `None` for requests that got no reply.
    pub fn record(&mut self, sample: &Sample, latency: Option<Duration>) {
        self.requests += 1;
        if let Some(l) = latency {
            self.latency_us
                .record(u64::try_from(l.as_micros()).unwrap_or(u64::MAX));
        }
        self.worst = self.worst.max(sample.class());
        let reason = match sample {
            Sample::Success => {
                self.successes += 1;
                return;
            }
            Sample::Refused(h) => {
                self.refusals += 1;
                hresult_reason(*h)
            }
            Sample::Invalid { reason } => {
                self.invalid_responses += 1;
                reason.clone()
            }
            Sample::Connection { reason } => {
                self.connection_errors += 1;
                reason.clone()
            }
        };
        *self.errors_by_reason.entry(reason).or_insert(0) += 1;
    }

    /// Add `other` into `self`.
    pub fn merge(&mut self, other: &BenchStats) {
        self.latency_us.merge(&other.latency_us);
        self.requests += other.requests;
        self.successes += other.successes;
        self.refusals += other.refusals;
        self.invalid_responses += other.invalid_responses;
        self.connection_errors += other.connection_errors;
        self.connections += other.connections;
        for (k, v) in &other.errors_by_reason {
            *self.errors_by_reason.entry(k.clone()).or_insert(0) += v;
        }
        self.worst = self.worst.max(other.worst);
    }

    /// Total errors of any kind (refusals included).
    pub fn errors(&self) -> u64 {
        self.refusals + self.invalid_responses + self.connection_errors
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Exact minimum.
    pub min: u64,
    /// Exact mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Exact maximum.
    pub max: u64,
}

impl LatencySummary {
    /// Summarise a histogram.
    pub fn of(h: &Histogram) -> LatencySummary {
        LatencySummary {
            count: h.count(),
            min: h.min(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.percentile(50.0),
            p90: h.percentile(90.0),
            p99: h.percentile(99.0),
            max: h.max(),
        }
    }
}

/// The result of a bench run; this is the documented JSON shape of `kmsctl bench -o json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    /// The --kms argument as given.
    pub kms: String,
    /// The resolved socket address every connection went to.
    pub address: String,
    /// `keepalive` or `per-connection`.
    pub mode: String,
    /// `4`, `5`, `6` or `mix`.
    pub protocol: String,
    /// Workers.
    pub concurrency: u32,
    /// CMID pool size (0 = a new CMID per request).
    pub clients: u32,
    /// Wall-clock duration of the run.
    pub elapsed_secs: f64,
    /// Requests attempted.
    pub requests: u64,
    /// Verified successes.
    pub successes: u64,
    /// Verified HRESULT refusals.
    pub refusals: u64,
    /// Responses that failed verification or broke the RPC protocol.
    pub invalid_responses: u64,
    /// Connect errors, timeouts and broken connections.
    pub connection_errors: u64,
    /// TCP connections opened.
    pub connections: u64,
    /// Requests attempted per second of wall-clock time.
    pub throughput_rps: f64,
    /// Latency of requests that got a reply, in microseconds.
    pub latency_us: LatencySummary,
    /// Every non-success by reason (`connect`, `timeout`, `io`, `hresult 0x…`, `rpc: …`,
    /// `verify: …`).
    pub errors_by_reason: BTreeMap<String, u64>,
    /// The run's exit class (not serialised; the process exit code carries it).
    #[serde(skip)]
    pub exit_class: ExitClass,
}

impl BenchReport {
    /// Build the report of a finished run.
    pub fn new(header: ReportHeader, stats: &BenchStats, elapsed: Duration) -> BenchReport {
        let secs = elapsed.as_secs_f64();
        let throughput = if secs > 0.0 {
            stats.requests as f64 / secs
        } else {
            0.0
        };
        BenchReport {
            kms: header.kms,
            address: header.address,
            mode: header.mode,
            protocol: header.protocol,
            concurrency: header.concurrency,
            clients: header.clients,
            elapsed_secs: (secs * 1000.0).round() / 1000.0,
            requests: stats.requests,
            successes: stats.successes,
            refusals: stats.refusals,
            invalid_responses: stats.invalid_responses,
            connection_errors: stats.connection_errors,
            connections: stats.connections,
            throughput_rps: (throughput * 10.0).round() / 10.0,
            latency_us: LatencySummary::of(&stats.latency_us),
            errors_by_reason: stats.errors_by_reason.clone(),
            exit_class: stats.worst,
        }
    }

    /// Human-readable rendering.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let l = &self.latency_us;
        let _ = writeln!(
            s,
            "bench {}{}: mode {}, protocol {}, concurrency {}, clients {}",
            self.kms,
            if self.address == self.kms {
                String::new()
            } else {
                format!(" ({})", self.address)
            },
            self.mode,
            self.protocol,
            self.concurrency,
            if self.clients == 0 {
                "new CMID per request".to_string()
            } else {
                self.clients.to_string()
            }
        );
        let _ = writeln!(
            s,
            "requests     {} in {:.3} s = {:.1} req/s ({} connections)",
            self.requests, self.elapsed_secs, self.throughput_rps, self.connections
        );
        let _ = writeln!(
            s,
            "successes    {}   refusals {}   invalid {}   connection errors {}",
            self.successes, self.refusals, self.invalid_responses, self.connection_errors
        );
        let _ = writeln!(
            s,
            "latency      p50 {}   p90 {}   p99 {}   max {}   (min {}, mean {}, n {})",
            fmt_us(l.p50),
            fmt_us(l.p90),
            fmt_us(l.p99),
            fmt_us(l.max),
            fmt_us(l.min),
            fmt_us(l.mean.round() as u64),
            l.count
        );
        if self.errors_by_reason.is_empty() {
            let _ = writeln!(s, "errors       none");
        } else {
            let _ = writeln!(s, "errors by reason:");
            for (k, v) in &self.errors_by_reason {
                let _ = writeln!(s, "  {v:>10}  {k}");
            }
        }
        s
    }
}

/// The descriptive part of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportHeader {
    /// The --kms argument as given.
    pub kms: String,
    /// The resolved address.
    pub address: String,
    /// Connection mode.
    pub mode: String,
    /// Protocol choice.
    pub protocol: String,
    /// Workers.
    pub concurrency: u32,
    /// CMID pool size.
    pub clients: u32,
}

/// Format microseconds as µs / ms / s with three significant-ish digits.
pub fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.2} ms", us as f64 / 1_000.0)
    } else {
        format!("{:.3} s", us as f64 / 1_000_000.0)
    }
}
