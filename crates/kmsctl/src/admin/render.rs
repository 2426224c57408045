//! Output of the admin subcommands: aligned text tables, UTC timestamps, and the stable JSON
//! shapes documented in `docs/admin.md` (built here, in one place, so that the documentation
//! and the code can be compared line by line).

use kms_api::admin::v1 as pb;
use kms_core::time::{civil_from_unix_days, unix_days_from_civil};
use serde_json::{Value, json};

/// A text table: a header row and rows of cells, columns separated by two spaces and padded
/// to the widest cell (by characters); the last column is not padded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Append a row (missing cells are empty, extra cells are dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rendered table, one line per row, each ending in `\n`.
    pub fn render(&self) -> String {
        let cols = self.headers.len();
        let mut width = vec![0usize; cols];
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            for (i, cell) in row.iter().enumerate() {
                width[i] = width[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let clean: String = cell
                    .chars()
                    .map(|c| if c.is_control() { '?' } else { c })
                    .collect();
                line.push_str(&clean);
                if i + 1 < cols {
                    let pad = width[i] - clean.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_unix_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Parse a point in time for `--since`/`--before`, relative to `now` (Unix seconds):
/// `7d`, `12h`, `30m`, `90s` ago; `2025-01-31` (midnight UTC); `2025-01-31T12:00:00Z` (the
/// `Z` optional, UTC either way); `@1738281600` (Unix seconds).
pub fn parse_time(s: &str, now: i64) -> Result<i64, String> {
    let t = s.trim();
    let bad = || {
        format!(
            "`{s}` is not a time: use 7d, 12h, 30m, 90s (ago), 2025-01-31, \
             2025-01-31T12:00:00Z or @UNIX_SECONDS"
        )
    };
    if let Some(unix) = t.strip_prefix('@') {
        return unix.parse::<i64>().map_err(|_| bad());
    }
    if let Some(unit) = t.chars().last().filter(|c| "smhdw".contains(*c)) {
        let digits = &t[..t.len() - 1];
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            let n: i64 = digits.parse().map_err(|_| bad())?;
            let factor = match unit {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                _ => 7 * 86_400,
            };
            return n
                .checked_mul(factor)
                .and_then(|d| now.checked_sub(d))
                .ok_or_else(bad);
        }
    }
    let (date, time) = match t.split_once(['T', ' ']) {
        Some((d, tm)) => (d, Some(tm.trim_end_matches('Z'))),
        None => (t, None),
    };
    let num = |x: &str| -> Result<i64, String> {
        if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        x.parse::<i64>().map_err(|_| bad())
    };
    let parts: Vec<&str> = date.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(bad());
    };
    let (y, m, d) = (num(y)?, num(m)?, num(d)?);
    if !(1601..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    let days = unix_days_from_civil(y, m as u32, d as u32);
    if civil_from_unix_days(days) != (y, m as u32, d as u32) {
        return Err(bad());
    }
    let mut secs = days * 86_400;
    if let Some(tm) = time {
        let hms: Vec<&str> = tm.split(':').collect();
        let (h, mi, se) = match hms.as_slice() {
            [h, mi] => (num(h)?, num(mi)?, 0),
            [h, mi, se] => (num(h)?, num(mi)?, num(se)?),
            _ => return Err(bad()),
        };
        if h > 23 || mi > 59 || se > 60 {
            return Err(bad());
        }
        secs += h * 3600 + mi * 60 + se;
    }
    Ok(secs)
}

/// `yes`/`no`.
pub fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

/// A member's role as a word.
pub fn role_name(role: i32) -> &'static str {
    match pb::MemberRole::try_from(role) {
        Ok(pb::MemberRole::Leader) => "leader",
        Ok(pb::MemberRole::Follower) => "follower",
        Ok(pb::MemberRole::Learner) => "learner",
        _ => "unknown",
    }
}

/// JSON of a member.
pub fn member_json(m: &pb::MemberStatus) -> Value {
    json!({
        "id": m.id,
        "name": m.name,
        "grpc_address": m.grpc_address,
        "kms_address": m.kms_address,
        "role": role_name(m.role),
        "voter": m.voter,
        "healthy": m.healthy,
        "matched_index": m.matched_index,
        "lag": m.lag,
        "last_contact_seconds": m.last_contact_seconds,
        "stalled": m.stalled,
    })
}

/// Text table of members.
pub fn members_table(members: &[pb::MemberStatus]) -> String {
    let mut t = Table::new(&[
        "ID", "NAME", "ROLE", "HEALTHY", "GRPC", "KMS", "MATCHED", "LAG", "CONTACT",
    ]);
    for m in members {
        let lag = match (m.lag, m.stalled) {
            (Some(l), true) => format!("{l} (stalled)"),
            (Some(l), false) => l.to_string(),
            (None, _) => "-".into(),
        };
        t.row(vec![
            m.id.to_string(),
            m.name.clone(),
            role_name(m.role).to_string(),
            yes_no(m.healthy),
            m.grpc_address.clone(),
            dash(&m.kms_address),
            m.matched_index.map_or("-".into(), |i| i.to_string()),
            lag,
            m.last_contact_seconds
                .map_or("-".into(), |s| format!("{s:.1}s ago")),
        ]);
    }
    t.render()
}

/// JSON of `kmsctl status`.
pub fn status_json(s: &pb::StatusResponse) -> Value {
    json!({
        "node_id": s.node_id,
        "node_name": s.node_name,
        "server_version": s.server_version,
        "leader_id": s.leader_id,
        "term": s.term,
        "commit_index": s.commit_index,
        "applied_index": s.applied_index,
        "degraded": s.degraded,
        "journal_entries": s.journal_entries,
        "members": s.members.iter().map(member_json).collect::<Vec<_>>(),
        "pools": s.pools.iter().map(|p| json!({
            "pool": p.pool,
            "live": p.live,
            "reported": p.reported,
            "threshold": p.threshold,
            "threshold_met": p.reported >= p.threshold,
            "seat_limit": p.seat_limit,
            "duplicates": p.duplicates,
        })).collect::<Vec<_>>(),
    })
}

/// Text of `kmsctl status`.
pub fn status_text(s: &pb::StatusResponse) -> String {
    let leader = s
        .leader_id
        .map_or_else(|| "none".to_string(), |l| l.to_string());
    let mut out = format!(
        "node {} ({}), kmsd {}: leader {leader}, term {}, commit {}, applied {}\n",
        s.node_id, s.node_name, s.server_version, s.term, s.commit_index, s.applied_index
    );
    if s.degraded {
        out.push_str(&format!(
            "state: DEGRADED (no reachable leader; {} record(s) journaled locally)\n",
            s.journal_entries
        ));
    } else {
        out.push_str("state: in quorum\n");
    }
    out.push('\n');
    out.push_str(&members_table(&s.members));
    out.push('\n');
    let mut t = Table::new(&[
        "POOL",
        "LIVE",
        "REPORTED",
        "THRESHOLD",
        "MET",
        "SEAT LIMIT",
        "DUPLICATES",
    ]);
    for p in &s.pools {
        t.row(vec![
            p.pool.clone(),
            p.live.to_string(),
            p.reported.to_string(),
            p.threshold.to_string(),
            yes_no(p.reported >= p.threshold),
            p.seat_limit.map_or("-".into(), |l| l.to_string()),
            p.duplicates.to_string(),
        ]);
    }
    out.push_str(&t.render());
    out
}

/// JSON of `kmsctl counts`.
pub fn counts_json(c: &pb::CountsResponse) -> Value {
    json!({
        "now": utc(c.now_unix),
        "count_window_days": c.count_window_days,
        "pools": c.pools.iter().map(|p| json!({
            "pool": p.pool,
            "live": p.live,
            "reported": p.reported,
            "threshold": p.threshold,
            "threshold_met": p.threshold_met,
            "max_required": p.max_required,
            "waiting": p.waiting,
            "seat_limit": p.seat_limit,
            "seats_used": p.seats_used,
            "duplicates": p.duplicates,
            "stored": p.stored,
        })).collect::<Vec<_>>(),
        "group_seats": c.group_seats.iter().map(|g| json!({
            "kms_counted_id": g.kms_counted_id,
            "name": g.name,
            "limit": g.limit,
            "used": g.used,
        })).collect::<Vec<_>>(),
    })
}

/// Text of `kmsctl counts`.
pub fn counts_text(c: &pb::CountsResponse) -> String {
    let mut t = Table::new(&[
        "POOL",
        "LIVE",
        "REPORTED",
        "THRESHOLD",
        "MET",
        "MAX N",
        "WAITING",
        "SEATS",
        "DUPLICATES",
        "STORED",
    ]);
    for p in &c.pools {
        t.row(vec![
            p.pool.clone(),
            p.live.to_string(),
            p.reported.to_string(),
            p.threshold.to_string(),
            yes_no(p.threshold_met),
            p.max_required.to_string(),
            p.waiting.to_string(),
            p.seat_limit
                .map_or("-".into(), |l| format!("{}/{l}", p.seats_used)),
            p.duplicates.to_string(),
            p.stored.to_string(),
        ]);
    }
    let mut out = t.render();
    if !c.group_seats.is_empty() {
        let mut g = Table::new(&["PRODUCT GROUP", "NAME", "SEATS"]);
        for s in &c.group_seats {
            g.row(vec![
                s.kms_counted_id.clone(),
                dash(&s.name),
                format!("{}/{}", s.used, s.limit),
            ]);
        }
        out.push('\n');
        out.push_str(&g.render());
    }
    out.push_str(&format!(
        "\ncount window {} days, at {}\n",
        c.count_window_days,
        utc(c.now_unix)
    ));
    out
}

/// JSON of a client record.
pub fn client_json(c: &pb::Client) -> Value {
    json!({
        "pool": c.pool,
        "cmid": c.client_machine_id,
        "workstation": c.workstation,
        "first_seen": utc(c.first_seen_unix),
        "last_seen": utc(c.last_seen_unix),
        "live": c.live,
        "kms_counted_id": c.kms_counted_id,
        "product_group": none_if_empty(&c.product_group),
        "sku_id": c.sku_id,
        "edition": none_if_empty(&c.edition),
        "previous_cmid": c.previous_client_machine_id,
        "license_status": c.license_status,
        "is_vm": c.is_vm,
        "required_count": c.required_count,
        "protocol": c.protocol_version,
        "last_node": c.last_node,
        "last_source": c.last_source,
        "request_count": c.request_count,
        "duplicate": c.duplicate,
        "duplicate_workstation": none_if_empty(&c.duplicate_workstation),
    })
}

/// Text table of clients.
pub fn clients_table(clients: &[pb::Client]) -> String {
    let mut t = Table::new(&[
        "POOL",
        "CMID",
        "WORKSTATION",
        "LAST SEEN",
        "LIVE",
        "N",
        "REQUESTS",
        "DUPLICATE",
        "PRODUCT",
    ]);
    for c in clients {
        t.row(vec![
            c.pool.clone(),
            c.client_machine_id.clone(),
            dash(&c.workstation),
            utc(c.last_seen_unix),
            yes_no(c.live),
            c.required_count.to_string(),
            c.request_count.to_string(),
            if c.duplicate {
                format!("yes ({})", c.duplicate_workstation)
            } else {
                "no".into()
            },
            if c.product_group.is_empty() {
                c.kms_counted_id.clone()
            } else {
                c.product_group.clone()
            },
        ]);
    }
    t.render()
}

/// One record as `key: value` lines.
pub fn client_text(c: &pb::Client) -> String {
    let fields: Vec<(&str, String)> = vec![
        ("pool", c.pool.clone()),
        ("cmid", c.client_machine_id.clone()),
        ("workstation", dash(&c.workstation)),
        ("first seen", utc(c.first_seen_unix)),
        ("last seen", utc(c.last_seen_unix)),
        ("live (counts)", yes_no(c.live)),
        (
            "product group",
            format!("{} {}", c.kms_counted_id, paren(&c.product_group)),
        ),
        ("edition", format!("{} {}", c.sku_id, paren(&c.edition))),
        ("previous cmid", c.previous_client_machine_id.clone()),
        ("license status", c.license_status.to_string()),
        ("vm", yes_no(c.is_vm)),
        ("required count (N)", c.required_count.to_string()),
        ("protocol", format!("v{}", c.protocol_version)),
        ("last node", c.last_node.to_string()),
        ("last source", dash(&c.last_source)),
        ("requests", c.request_count.to_string()),
        (
            "duplicate",
            if c.duplicate {
                format!("yes (also seen as {})", c.duplicate_workstation)
            } else {
                "no".into()
            },
        ),
    ];
    let mut out = String::new();
    for (k, v) in fields {
        out.push_str(&format!("{:<20}{}\n", format!("{k}:"), v.trim_end()));
    }
    out
}

/// JSON of a configuration entry.
pub fn config_entry_json(e: &pb::ConfigEntry) -> Value {
    json!({
        "key": e.key,
        "value": e.value,
        "default": e.default_value,
        "description": e.description,
    })
}

/// Text table of configuration entries.
pub fn config_table(entries: &[pb::ConfigEntry]) -> String {
    let mut t = Table::new(&["KEY", "VALUE", "DEFAULT", "DESCRIPTION"]);
    for e in entries {
        t.row(vec![
            e.key.clone(),
            e.value.clone(),
            e.default_value.clone(),
            e.description.clone(),
        ]);
    }
    t.render()
}

/// JSON of the identity.
pub fn identity_json(i: &pb::IdentityResponse) -> Value {
    json!({
        "initialized": i.initialized,
        "hwid": none_if_empty(&i.hwid),
        "epids": i.epids.iter().map(|e| json!({
            "group": e.group,
            "epid": e.epid,
            "build": e.build,
            "lcid": e.lcid,
            "date": e.date,
        })).collect::<Vec<_>>(),
    })
}

/// Text of the identity.
pub fn identity_text(i: &pb::IdentityResponse) -> String {
    if !i.initialized {
        return "no host identity yet (generated once the cluster first has a leader)\n".into();
    }
    let mut t = Table::new(&["GROUP", "EPID", "BUILD", "LCID", "DATE"]);
    for e in &i.epids {
        t.row(vec![
            e.group.to_string(),
            e.epid.clone(),
            e.build.to_string(),
            e.lcid.to_string(),
            e.date.clone(),
        ]);
    }
    format!("{}\nHwId: {}\n", t.render(), i.hwid)
}

/// JSON of an activation event (one line of `kmsctl events -o json`).
pub fn event_json(e: &pb::ActivationEvent, missed: u64) -> Value {
    json!({
        "time": utc(e.time_unix_ms.div_euclid(1000)),
        "time_unix_ms": e.time_unix_ms,
        "sequence": e.sequence,
        "node_id": e.node_id,
        "event_id": e.event_id,
        "result": e.result,
        "hresult": format!("0x{:08X}", e.hresult),
        "pool": none_if_empty(&e.pool),
        "cmid": e.client_machine_id,
        "workstation": e.workstation,
        "current_count": e.current_count,
        "required_client_count": e.required_client_count,
        "protocol": e.protocol,
        "syntax": e.syntax,
        "license_status": e.license_status,
        "binding_expiration": e.binding_expiration,
        "is_vm": e.is_vm,
        "client_time": e.client_time,
        "sku_id": e.sku_id,
        "kms_counted_id": e.kms_counted_id,
        "application_id": e.application_id,
        "source": e.source,
        "reason": none_if_empty(&e.reason),
        "degraded": e.degraded,
        "duration_us": e.duration_us,
        "missed": missed,
    })
}

/// One line of `kmsctl events`.
pub fn event_text(e: &pb::ActivationEvent, missed: u64) -> String {
    let mut line = String::new();
    if missed > 0 {
        line.push_str(&format!(
            "… {missed} event(s) missed (reading too slowly)\n"
        ));
    }
    line.push_str(&format!(
        "{}  node {}  #{}  {}  {}  {}  {}  count {}/{}  v{} {}  {}",
        utc(e.time_unix_ms.div_euclid(1000)),
        e.node_id,
        e.sequence,
        if e.hresult == 0 {
            e.result.clone()
        } else {
            format!("{} 0x{:08X}", e.result, e.hresult)
        },
        dash(&e.pool),
        dash(&sanitize(&e.workstation)),
        e.client_machine_id,
        e.current_count,
        e.required_client_count,
        e.protocol,
        e.syntax,
        e.source,
    ));
    if e.degraded {
        line.push_str("  degraded");
    }
    if !e.reason.is_empty() {
        line.push_str(&format!("  ({})", sanitize(&e.reason)));
    }
    line.push('\n');
    line
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.into() }
}

fn paren(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("({s})")
    }
}

fn none_if_empty(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_by_characters() {
        let mut t = Table::new(&["ID", "NAME", "ROLE"]);
        t.row(vec!["1".into(), "kmsd-1".into(), "leader".into()]);
        t.row(vec!["12".into(), "ünï".into()]);
        t.row(vec![
            "3".into(),
            "a\tb".into(),
            "learner".into(),
            "extra".into(),
        ]);
        assert_eq!(
            t.render(),
            "ID  NAME    ROLE\n\
             1   kmsd-1  leader\n\
             12  ünï\n\
             3   a?b     learner\n"
        );
        assert!(!t.is_empty());
        assert_eq!(Table::new(&["A"]).render(), "A\n");
    }

    #[test]
    fn timestamps() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_750_000_000), "2025-06-15T15:06:40Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59Z");
        let now = 1_750_000_000;
        assert_eq!(parse_time("7d", now), Ok(now - 7 * 86_400));
        assert_eq!(parse_time("90s", now), Ok(now - 90));
        assert_eq!(parse_time("2w", now), Ok(now - 14 * 86_400));
        assert_eq!(parse_time("@123", now), Ok(123));
        assert_eq!(parse_time("2025-06-15", now), Ok(1_749_945_600));
        assert_eq!(parse_time("2025-06-15T15:06:40Z", now), Ok(1_750_000_000));
        assert_eq!(parse_time("2025-06-15 15:06", now), Ok(1_749_999_960));
        for bad in [
            "",
            "d",
            "yesterday",
            "2025-02-30",
            "2025-13-01",
            "2025-06-15T25:00",
            "-5d",
            "1.5h",
        ] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_shapes() {
        let s = pb::StatusResponse {
            version: 1,
            node_id: 1,
            node_name: "kmsd-1".into(),
            leader_id: Some(1),
            term: 2,
            members: vec![pb::MemberStatus {
                id: 1,
                name: "kmsd-1".into(),
                grpc_address: "127.0.0.1:1689".into(),
                kms_address: "127.0.0.1:1688".into(),
                role: pb::MemberRole::Leader as i32,
                healthy: true,
                voter: true,
                matched_index: Some(9),
                lag: Some(0),
                last_contact_seconds: None,
                stalled: false,
            }],
            pools: vec![pb::PoolStatus {
                pool: "windows".into(),
                live: 26,
                reported: 26,
                threshold: 25,
                seat_limit: None,
                duplicates: 0,
            }],
            commit_index: 9,
            applied_index: 9,
            degraded: false,
            journal_entries: 0,
            server_version: "0.1.0".into(),
        };
        let j = status_json(&s);
        assert_eq!(j["leader_id"], 1);
        assert_eq!(j["members"][0]["role"], "leader");
        assert_eq!(j["members"][0]["grpc_address"], "127.0.0.1:1689");
        assert_eq!(j["pools"][0]["threshold_met"], true);
        assert_eq!(j["pools"][0]["seat_limit"], Value::Null);
        let text = status_text(&s);
        assert!(text.contains("leader 1, term 2"), "{text}");
        assert!(
            text.contains("1   kmsd-1  leader  yes      127.0.0.1:1689  127.0.0.1:1688  9"),
            "{text}"
        );
        assert!(
            text.contains("windows  26    26        25         yes"),
            "{text}"
        );
    }
}
