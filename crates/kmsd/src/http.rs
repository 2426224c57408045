//! HTTP endpoints: `/metrics` (Prometheus text format), `/healthz` (alive), `/readyz` (serving
//! activations — in quorum or degraded — with the state in the body) and `/` (status page:
//! members, counts and thresholds; the recent activations only with
//! `--status-page-activations`).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// What the handlers read.
#[derive(Clone, Debug)]
pub struct HttpState {
    /// The registry.
    pub metrics: Arc<Metrics>,
    /// The node (status, counts).
    pub node: Arc<kms_cluster::Node>,
    /// True while the KMS listener serves.
    pub kms_ready: Arc<AtomicBool>,
    /// Recent activations (status page).
    pub events: crate::events::EventHub,
    /// The status page lists recent activations (`--status-page-activations`); otherwise it
    /// shows members, counts and thresholds only.
    pub show_activations: bool,
    /// Peer calls this node refused as misdirected or from an impostor (the peer service's
    /// counter).
    pub peer_refusals: Arc<std::sync::atomic::AtomicU64>,
}

/// Serve HTTP on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/", get(status_page))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(s): State<HttpState>) -> Response {
    update_gauges(
        &s.metrics,
        &s.node.status(),
        s.kms_ready.load(Ordering::SeqCst),
    );
    let refused = s.peer_refusals.load(Ordering::Relaxed);
    let counted = s.metrics.peer_calls_refused.get();
    s.metrics
        .peer_calls_refused
        .inc_by(refused.saturating_sub(counted));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<HttpState>) -> Response {
    let serving = s.kms_ready.load(Ordering::SeqCst);
    let readiness = s.node.status().readiness();
    let (code, reason) = if !serving {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not serving: KMS listener not running".to_string(),
        )
    } else if !readiness.ready {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}", readiness.reason),
        )
    } else {
        (StatusCode::OK, readiness.reason)
    };
    (code, format!("{reason}\n")).into_response()
}

/// Activations listed on the status page.
const RECENT_ON_PAGE: usize = 20;

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn status_page(State(s): State<HttpState>) -> Html<String> {
    let st = s.node.status();
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>kmsd status</title>\
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
td,th{padding:4px 10px;border-bottom:1px solid #ccc;text-align:left}\
.bar{background:#eee;width:300px;height:14px;display:inline-block}\
.fill{background:#2a7;height:14px;display:block}.under{background:#d93}</style></head><body>",
    );
    html.push_str(&format!(
        "<h1>kmsd node {} ({})</h1><p id=\"leader\">Leader: {} &middot; term {} &middot; {}</p>",
        st.node_id,
        esc(&st.name),
        st.leader_id
            .map(|l| l.to_string())
            .unwrap_or_else(|| "none".into()),
        st.term,
        if st.degraded {
            "<b>DEGRADED</b>"
        } else {
            "in quorum"
        }
    ));
    html.push_str("<h2>Members</h2><table id=\"members\"><tr><th>id</th><th>name</th><th>gRPC</th><th>KMS</th><th>role</th><th>healthy</th></tr>");
    for m in &st.members {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            m.id,
            esc(&m.name),
            esc(&m.grpc_addr),
            esc(&m.kms_addr),
            m.role,
            if m.healthy { "yes" } else { "<b>no</b>" }
        ));
    }
    html.push_str("</table><h2>Pools</h2><table id=\"pools\"><tr><th>pool</th><th>clients</th><th>reported</th><th>threshold</th><th></th></tr>");
    for p in &st.pools {
        let pct = if p.threshold == 0 {
            0
        } else {
            (u64::from(p.reported) * 100 / u64::from(p.threshold)).min(100)
        };
        let class = if p.reported >= p.threshold {
            "fill"
        } else {
            "fill under"
        };
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><span class=\"bar\"><span class=\"{class}\" style=\"width:{pct}%\"></span></span></td></tr>",
            p.pool, p.live, p.reported, p.threshold
        ));
    }
    html.push_str("</table>");
    if s.show_activations {
        recent_activations(&mut html, &s.events);
    }
    html.push_str("</body></html>");
    Html(html)
}

/// The recent-activations table: who activated (workstation, client machine id) — shown only
/// with `--status-page-activations`.
fn recent_activations(html: &mut String, events: &crate::events::EventHub) {
    html.push_str("<h2>Recent activations</h2><table id=\"activations\"><tr><th>time (UTC)</th><th>workstation</th><th>client machine id</th><th>pool</th><th>protocol</th><th>count</th><th>result</th></tr>");
    let recent = events.subscribe(RECENT_ON_PAGE).recent;
    for e in recent.iter().rev() {
        let secs = e.time_unix_ms.div_euclid(1000);
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        html.push_str(&format!(
            "<tr><td>{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}</td><td>{}</td><td>{}</td><td>{}</td><td>v{} {}</td><td>{}</td><td>{}{}</td></tr>",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            esc(&e.workstation),
            esc(&e.client_machine_id),
            esc(&e.pool),
            e.protocol,
            esc(&e.syntax),
            e.current_count,
            esc(&e.result),
            if e.degraded { " (degraded)" } else { "" }
        ));
    }
    if recent.is_empty() {
        html.push_str("<tr><td colspan=\"7\">none since this node started</td></tr>");
    }
    html.push_str("</table>");
}

/// Copy a node status into the gauges. Called by every `/metrics` scrape, so a scrape right
/// after a change (an activation, a degraded journal entry) already shows it.
fn update_gauges(metrics: &Metrics, st: &kms_cluster::NodeStatus, serving: bool) {
    metrics
        .ready
        .set(i64::from(serving && st.readiness().ready));
    metrics.storage_ok.set(i64::from(st.raft_stopped.is_none()));
    metrics.peer_up.reset();
    metrics.peer_last_contact.reset();
    metrics.replication_stalled.reset();
    for m in &st.members {
        let Some(c) = m.contact else { continue };
        let peer = m.id.to_string();
        metrics
            .peer_up
            .with_label_values(&[&peer])
            .set(i64::from(c.up));
        if let Some(since) = c.since_contact {
            metrics
                .peer_last_contact
                .with_label_values(&[&peer])
                .set(since.as_secs_f64());
        }
        if st.leader_id == Some(st.node_id) {
            metrics
                .replication_stalled
                .with_label_values(&[&peer])
                .set(i64::from(c.stalled));
        }
    }
    metrics.raft_replication_lag.reset();
    for (peer, lag) in &st.replication_lag {
        metrics
            .raft_replication_lag
            .with_label_values(&[&peer.to_string()])
            .set(*lag as i64);
    }
    metrics.raft_term.set(st.term as i64);
    metrics
        .raft_is_leader
        .set(i64::from(st.leader_id == Some(st.node_id)));
    metrics.raft_commit_index.set(st.commit_index as i64);
    metrics.raft_applied_index.set(st.applied_index as i64);
    metrics
        .degraded_journal_entries
        .set(st.journal_entries as i64);
    metrics.degraded.set(i64::from(st.degraded));
    metrics.seat_limit.reset();
    metrics.seats_used.reset();
    for u in &st.seats {
        let (scope, name) = seat_scope(u.scope);
        let labels = [scope, name.as_str()];
        metrics
            .seat_limit
            .with_label_values(&labels)
            .set(i64::from(u.limit));
        metrics
            .seats_used
            .with_label_values(&labels)
            .set(i64::from(u.used));
    }
    for p in &st.pools {
        for (gauge, value) in [
            (&metrics.pool_clients, i64::from(p.live)),
            (&metrics.pool_reported, i64::from(p.reported)),
            (&metrics.pool_threshold, i64::from(p.threshold)),
            (
                &metrics.pool_seat_limit,
                p.seat_limit.map(i64::from).unwrap_or(0),
            ),
            (&metrics.duplicate_cmids, i64::from(p.duplicates)),
        ] {
            gauge.with_label_values(&[p.pool]).set(value);
        }
    }
}

/// The `scope` and `name` labels of a seat limit: the pool name, or the product group's
/// catalog name (its KMS counted id when the catalog does not know it).
fn seat_scope(scope: kms_core::state::SeatScope) -> (&'static str, String) {
    match scope {
        kms_core::state::SeatScope::Pool(p) => ("pool", p.name().to_string()),
        kms_core::state::SeatScope::Group(id) => (
            "group",
            kms_core::catalog::product(id)
                .map(|p| p.name.to_string())
                .unwrap_or_else(|| id.to_string()),
        ),
    }
}

/// Log when a seat limit reaches 90 % (DESIGN §4's warning level) and when it drops below.
fn log_seat_warnings(
    seats: &[kms_core::state::SeatUsage],
    warned: &mut std::collections::BTreeSet<(&'static str, String)>,
) {
    let mut now_warned = std::collections::BTreeSet::new();
    for u in seats.iter().filter(|u| u.is_warning()) {
        let key = seat_scope(u.scope);
        if !warned.contains(&key) {
            tracing::warn!(
                event_id = EVENT_SEAT_LIMIT_NEAR,
                scope = key.0,
                name = %key.1,
                used = u.used,
                limit = u.limit,
                "seat limit at 90 % or more: new machines are refused once it is reached"
            );
        }
        now_warned.insert(key);
    }
    for (scope, name) in warned.difference(&now_warned) {
        tracing::info!(
            event_id = EVENT_SEAT_LIMIT_NEAR,
            scope,
            name = %name,
            "seat limit back below 90 %"
        );
    }
    *warned = now_warned;
}

/// Event id of seat-limit warnings (logged by every node that sees the usage cross 90 %).
pub const EVENT_SEAT_LIMIT_NEAR: u32 = 40030;

/// Once a second until `shutdown`: log (and count) Raft leader changes, and seat limits that
/// cross 90 %. The gauges themselves are filled at scrape time ([`update_gauges`]).
pub async fn watch_cluster_events(
    node: Arc<kms_cluster::Node>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let tick = async {
        let mut iv = tokio::time::interval(Duration::from_secs(1));
        let mut last_leader = None;
        let mut warned = std::collections::BTreeSet::new();
        loop {
            iv.tick().await;
            let st = node.status();
            log_seat_warnings(&st.seats, &mut warned);
            if st.leader_id != last_leader {
                if last_leader.is_some() || st.leader_id.is_some() {
                    metrics.raft_leader_changes.inc();
                    tracing::info!(
                        event_id = kms_cluster::EVENT_LEADER_CHANGE,
                        leader = st.leader_id,
                        previous = last_leader,
                        term = st.term,
                        "raft leader changed"
                    );
                }
                last_leader = st.leader_id;
            }
        }
    };
    tokio::select! {
        _ = tick => {}
        _ = shutdown => {}
    }
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_724), (2024, 1, 2));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
