//! The node's Prometheus registry and the KMS listener's observer that feeds it.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use kms_core::Pool;
use kms_host::{ActivationEvent, HostObserver};

/// Every metric the node exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// kmsd_activations_total{pool,protocol,result}
    pub activations: IntCounterVec,
    /// kmsd_activation_duration_seconds{protocol}
    pub activation_duration: HistogramVec,
    /// kmsd_connections_open
    pub connections_open: IntGauge,
    /// kmsd_connections_rejected_total{reason}
    pub connections_rejected: IntCounterVec,
    /// kmsd_protocol_errors_total{reason}
    pub protocol_errors: IntCounterVec,
    /// kmsd_pool_clients{pool}
    pub pool_clients: IntGaugeVec,
    /// kmsd_pool_reported_clients{pool}
    pub pool_reported: IntGaugeVec,
    /// kmsd_pool_threshold{pool}
    pub pool_threshold: IntGaugeVec,
    /// kmsd_pool_seat_limit{pool}
    pub pool_seat_limit: IntGaugeVec,
    /// kmsd_duplicate_cmids{pool}
    pub duplicate_cmids: IntGaugeVec,
    /// kmsd_seat_limit{scope,name}: every configured seat limit, pools and product groups
    pub seat_limit: IntGaugeVec,
    /// kmsd_seats_used{scope,name}: live clients counted against each seat limit
    pub seats_used: IntGaugeVec,
    /// kmsd_raft_term
    pub raft_term: IntGauge,
    /// kmsd_raft_is_leader
    pub raft_is_leader: IntGauge,
    /// kmsd_raft_commit_index
    pub raft_commit_index: IntGauge,
    /// kmsd_raft_applied_index
    pub raft_applied_index: IntGauge,
    /// kmsd_degraded_journal_entries
    pub degraded_journal_entries: IntGauge,
    /// kmsd_degraded
    pub degraded: IntGauge,
    /// kmsd_dns_queries_total{qtype,rcode}
    pub dns_queries: IntCounterVec,
    /// kmsd_dns_dropped_total{reason}
    pub dns_dropped: IntCounterVec,
    /// kmsd_raft_replication_lag{peer}
    pub raft_replication_lag: IntGaugeVec,
    /// kmsd_peer_up{peer}
    pub peer_up: IntGaugeVec,
    /// kmsd_peer_last_contact_seconds{peer}
    pub peer_last_contact: prometheus::GaugeVec,
    /// kmsd_raft_replication_stalled{peer}
    pub replication_stalled: IntGaugeVec,
    /// kmsd_ready
    pub ready: IntGauge,
    /// kmsd_peer_calls_refused_total
    pub peer_calls_refused: prometheus::IntCounter,
    /// kmsd_storage_ok
    pub storage_ok: IntGauge,
    /// kmsd_raft_leader_changes_total
    pub raft_leader_changes: prometheus::IntCounter,
    /// The activation series already looked up (see [`ActivationSeries`]).
    series: std::sync::Arc<ActivationSeries>,
}

/// Protocol label values, in [`ActivationSeries`] order.
const PROTOCOL_LABELS: [&str; 4] = ["4", "5", "6", "other"];
/// Result label values (see [`result_label`]), in [`ActivationSeries`] order.
const RESULT_LABELS: [&str; 6] = [
    "success",
    "invalid_data",
    "product_refused",
    "time_skew",
    "not_activated",
    "other_error",
];

/// The per-activation series, each looked up in its vector once (on first use, so a series
/// appears in `/metrics` only once it has counted something) instead of hashing its labels
/// for every activation. Pools in [`Pool::ALL`] order, then "none".
#[derive(Debug, Default)]
struct ActivationSeries {
    counters: [[[std::sync::OnceLock<prometheus::IntCounter>; RESULT_LABELS.len()];
        PROTOCOL_LABELS.len()]; Pool::ALL.len() + 1],
    durations: [std::sync::OnceLock<prometheus::Histogram>; PROTOCOL_LABELS.len()],
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static; an error here is a programming error caught by tests.
    r.expect("static metric definition")
}

impl Metrics {
    /// Create and register every metric.
    pub fn new(node_id: u64) -> Metrics {
        let registry = Registry::new();
        let activations = must(IntCounterVec::new(
            Opts::new(
                "kmsd_activations_total",
                "KMS activation requests answered, by pool, protocol version and result.",
            ),
            &["pool", "protocol", "result"],
        ));
        let activation_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "kmsd_activation_duration_seconds",
                "Time from a decoded KMS request to its encoded response (decision and durable record).",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0,
            ]),
            &["protocol"],
        ));
        let connections_open = must(IntGauge::new(
            "kmsd_connections_open",
            "Open KMS client connections.",
        ));
        let connections_rejected = must(IntCounterVec::new(
            Opts::new(
                "kmsd_connections_rejected_total",
                "KMS connections closed at once by an admission limit.",
            ),
            &["reason"],
        ));
        let protocol_errors = must(IntCounterVec::new(
            Opts::new(
                "kmsd_protocol_errors_total",
                "KMS connections closed or requests refused for malformed input or timeouts.",
            ),
            &["reason"],
        ));
        let pool =
            |name: &str, help: &str| must(IntGaugeVec::new(Opts::new(name, help), &["pool"]));
        let pool_clients = pool(
            "kmsd_pool_clients",
            "Distinct client machines seen in the count window, per pool.",
        );
        let pool_reported = pool(
            "kmsd_pool_reported_clients",
            "Count reported to clients (capped at twice the largest threshold), per pool.",
        );
        let pool_threshold = pool(
            "kmsd_pool_threshold",
            "Activation threshold of the pool (25 once a Windows client is seen, else 5).",
        );
        let pool_seat_limit = pool(
            "kmsd_pool_seat_limit",
            "Configured seat limit of the pool (0 = none).",
        );
        let duplicate_cmids = pool(
            "kmsd_duplicate_cmids",
            "Client machine ids seen from more than one workstation name (un-generalized images).",
        );
        let seat = |name: &str, help: &str| {
            must(IntGaugeVec::new(Opts::new(name, help), &["scope", "name"]))
        };
        let seat_limit = seat(
            "kmsd_seat_limit",
            "Configured seat limit, per scope (pool or product group) and name; only limits that are set.",
        );
        let seats_used = seat(
            "kmsd_seats_used",
            "Live client machines counted against each configured seat limit.",
        );
        let gauge = |name: &str, help: &str| must(IntGauge::new(name, help));
        let raft_term = gauge("kmsd_raft_term", "Current Raft term.");
        let raft_is_leader = gauge("kmsd_raft_is_leader", "1 if this node is the Raft leader.");
        let raft_commit_index = gauge("kmsd_raft_commit_index", "Last committed Raft log index.");
        let raft_applied_index = gauge(
            "kmsd_raft_applied_index",
            "Last Raft log index applied to the state machine.",
        );
        let degraded_journal_entries = gauge(
            "kmsd_degraded_journal_entries",
            "Activations recorded in the local journal while no leader was reachable.",
        );
        let dns_queries = must(IntCounterVec::new(
            Opts::new(
                "kmsd_dns_queries_total",
                "DNS queries answered, by query type and response code.",
            ),
            &["qtype", "rcode"],
        ));
        let dns_dropped = must(IntCounterVec::new(
            Opts::new(
                "kmsd_dns_dropped_total",
                "DNS packets dropped or truncated without an answer, by reason.",
            ),
            &["reason"],
        ));
        let raft_replication_lag = must(IntGaugeVec::new(
            Opts::new(
                "kmsd_raft_replication_lag",
                "Log entries a peer is behind the leader (exported by the leader only).",
            ),
            &["peer"],
        ));
        let peer_vec =
            |name: &str, help: &str| must(IntGaugeVec::new(Opts::new(name, help), &["peer"]));
        let peer_up = peer_vec(
            "kmsd_peer_up",
            "1 while the peer answers this node's health probes (within 5 s), else 0.",
        );
        let peer_last_contact = must(prometheus::GaugeVec::new(
            Opts::new(
                "kmsd_peer_last_contact_seconds",
                "Seconds since the peer last answered this node's health probes (absent until it first answers).",
            ),
            &["peer"],
        ));
        let replication_stalled = peer_vec(
            "kmsd_raft_replication_stalled",
            "1 while replication to a reachable peer has made no progress for 10 s (exported by the leader only).",
        );
        let ready = gauge(
            "kmsd_ready",
            "1 while the node is ready (what /readyz answers with 200), else 0.",
        );
        let storage_ok = gauge(
            "kmsd_storage_ok",
            "1 while the node's Raft core and store accept writes, 0 after a storage error stopped them.",
        );
        let peer_calls_refused = must(prometheus::IntCounter::new(
            "kmsd_peer_calls_refused_total",
            "Peer calls refused because they were addressed to another node id (the sender's membership lists this address for another node).",
        ));
        let raft_leader_changes = must(prometheus::IntCounter::new(
            "kmsd_raft_leader_changes_total",
            "Times this node saw the Raft leader change.",
        ));
        let degraded = gauge(
            "kmsd_degraded",
            "1 while the node answers without a reachable leader (degraded mode), else 0.",
        );
        let build_info = must(IntGaugeVec::new(
            Opts::new(
                "kmsd_build_info",
                "Build information; the value is always 1.",
            ),
            &["version", "node_id"],
        ));
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), &node_id.to_string()])
            .set(1);
        for c in [
            Box::new(activations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(activation_duration.clone()),
            Box::new(connections_open.clone()),
            Box::new(connections_rejected.clone()),
            Box::new(protocol_errors.clone()),
            Box::new(pool_clients.clone()),
            Box::new(pool_reported.clone()),
            Box::new(pool_threshold.clone()),
            Box::new(pool_seat_limit.clone()),
            Box::new(duplicate_cmids.clone()),
            Box::new(seat_limit.clone()),
            Box::new(seats_used.clone()),
            Box::new(raft_term.clone()),
            Box::new(raft_is_leader.clone()),
            Box::new(raft_commit_index.clone()),
            Box::new(raft_applied_index.clone()),
            Box::new(degraded_journal_entries.clone()),
            Box::new(degraded.clone()),
            Box::new(dns_queries.clone()),
            Box::new(dns_dropped.clone()),
            Box::new(raft_replication_lag.clone()),
            Box::new(peer_up.clone()),
            Box::new(peer_last_contact.clone()),
            Box::new(replication_stalled.clone()),
            Box::new(ready.clone()),
            Box::new(peer_calls_refused.clone()),
            Box::new(storage_ok.clone()),
            Box::new(raft_leader_changes.clone()),
            Box::new(build_info),
        ] {
            must(registry.register(c));
        }
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            must(registry.register(Box::new(pc)));
        }
        Metrics {
            registry,
            activations,
            activation_duration,
            connections_open,
            connections_rejected,
            protocol_errors,
            pool_clients,
            pool_reported,
            pool_threshold,
            pool_seat_limit,
            duplicate_cmids,
            seat_limit,
            seats_used,
            raft_term,
            raft_is_leader,
            raft_commit_index,
            raft_applied_index,
            degraded_journal_entries,
            degraded,
            dns_queries,
            dns_dropped,
            raft_replication_lag,
            peer_up,
            peer_last_contact,
            replication_stalled,
            ready,
            peer_calls_refused,
            storage_ok,
            raft_leader_changes,
            series: Default::default(),
        }
    }

    /// Render the text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        if let Err(e) = enc.encode(&self.registry.gather(), &mut buf) {
            return format!("# encoding error: {e}\n");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl HostObserver for Metrics {
    fn connection_opened(&self) {
        self.connections_open.inc();
    }
    fn connection_closed(&self) {
        self.connections_open.dec();
    }
    fn connection_rejected(&self, reason: &'static str) {
        self.connections_rejected.with_label_values(&[reason]).inc();
    }
    fn protocol_error(&self, reason: &'static str) {
        self.protocol_errors.with_label_values(&[reason]).inc();
    }
    fn activation(&self, e: &ActivationEvent) {
        let protocol = match e.protocol {
            4 => 0,
            5 => 1,
            6 => 2,
            _ => 3,
        };
        let result = result_index(e.hresult);
        let pool = e.pool.unwrap_or("none");
        let pool_slot = match e.pool {
            None => Some(Pool::ALL.len()),
            Some(name) => Pool::ALL.iter().position(|p| p.name() == name),
        };
        let slot = pool_slot.map(|p| &self.series.counters[p][protocol][result]);
        let result = RESULT_LABELS[result];
        match slot {
            Some(c) => c
                .get_or_init(|| {
                    self.activations
                        .with_label_values(&[pool, PROTOCOL_LABELS[protocol], result])
                })
                .inc(),
            // A pool name this table does not know: look the series up every time.
            None => self
                .activations
                .with_label_values(&[pool, PROTOCOL_LABELS[protocol], result])
                .inc(),
        }
        self.series.durations[protocol]
            .get_or_init(|| {
                self.activation_duration
                    .with_label_values(&[PROTOCOL_LABELS[protocol]])
            })
            .observe(e.duration.as_secs_f64());
    }
}

impl kms_dns::DnsObserver for Metrics {
    fn query(&self, qtype: &str, rcode: &str) {
        self.dns_queries.with_label_values(&[qtype, rcode]).inc();
    }
    fn dropped(&self, reason: &str) {
        self.dns_dropped.with_label_values(&[reason]).inc();
    }
}

/// A bounded set of result labels (HRESULTs are not free-form label values).
pub fn result_label(hresult: u32) -> &'static str {
    RESULT_LABELS[result_index(hresult)]
}

/// The position of `hresult`'s label in [`RESULT_LABELS`].
fn result_index(hresult: u32) -> usize {
    match hresult {
        0 => 0,
        0x8007_000D => 1,
        0xC004_F042 => 2,
        0xC004_F06C => 3,
        0xC004_F041 => 4,
        _ => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_renders_required_families() {
        let m = Metrics::new(1);
        m.activations
            .with_label_values(&["windows", "6", "success"])
            .inc();
        let text = m.render();
        for name in [
            "kmsd_activations_total",
            "kmsd_connections_open",
            "kmsd_build_info",
            "kmsd_raft_term",
            "kmsd_degraded_journal_entries",
        ] {
            assert!(text.contains(name), "missing {name}");
        }
    }

    #[test]
    fn activation_events_count_in_their_series() {
        let m = Metrics::new(1);
        let event = |pool: Option<&'static str>, protocol: u16, hresult: u32| ActivationEvent {
            pool,
            protocol,
            ..crate::events::sample_event("PC", hresult)
        };
        for _ in 0..3 {
            m.activation(&event(Some("windows"), 6, 0));
        }
        m.activation(&event(Some("office2013plus"), 5, 0xC004_F06C));
        m.activation(&event(None, 9, 0x8007_000D));
        m.activation(&event(Some("elsewhere"), 4, 0x1234));
        let count = |labels: &[&str]| m.activations.with_label_values(labels).get();
        assert_eq!(count(&["windows", "6", "success"]), 3);
        assert_eq!(count(&["office2013plus", "5", "time_skew"]), 1);
        // Every pool's series is kept after its first use (the unknown name is not).
        assert!(m.series.counters[0][2][0].get().is_some());
        assert!(m.series.counters[2][1][3].get().is_some());
        assert!(m.series.counters[3][3][1].get().is_some());
        assert_eq!(count(&["none", "other", "invalid_data"]), 1);
        assert_eq!(count(&["elsewhere", "4", "other_error"]), 1);
        assert_eq!(count(&["windows", "5", "success"]), 0);
        let observed = |p: &str| {
            m.activation_duration
                .with_label_values(&[p])
                .get_sample_count()
        };
        assert_eq!(observed("6"), 3);
        assert_eq!(observed("5"), 1);
        assert_eq!(observed("other"), 1);
        assert_eq!(observed("4"), 1);
        // Result labels and the table agree.
        for h in [0, 0x8007_000D, 0xC004_F042, 0xC004_F06C, 0xC004_F041, 1] {
            assert!(RESULT_LABELS.contains(&result_label(h)));
        }
    }
}
