//! The zone as data: [`render`] turns a [`ClusterView`] into a [`Zone`] — a pure function of
//! the view and the configuration — and [`SerialTracker`] gives the SOA a serial that rises
//! whenever the published records change.
//!
//! What a zone `Z` contains:
//!
//! | owner                | type     | one per                                               |
//! |----------------------|----------|-------------------------------------------------------|
//! | `Z`                  | SOA      | zone                                                  |
//! | `Z`                  | NS       | member (healthy or not: any node can answer)          |
//! | `_vlmcs._tcp.Z`      | SRV      | healthy member; every member if none is healthy       |
//! | `<name>.Z`           | A / AAAA | member whose advertised host is an IP literal         |
//!
//! A member whose advertised host is a DNS name (not an IP literal) gets no address record:
//! its SRV and NS targets are that host name itself, which corporate DNS resolves. A member
//! whose name or host cannot be published is left out and reported as a [`RenderProblem`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use kms_core::{ClusterView, MemberView};

use crate::config::{DnsConfig, is_ldh_label, normalize, secs_u32};

/// The label pair that, prefixed to a zone, names the KMS SRV records (`_vlmcs._tcp`).
pub const VLMCS_SRV_PREFIX: &str = "_vlmcs._tcp";

/// One rendered zone: its SOA and every RRset, ready to answer from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone {
    origin: Name,
    soa: Record,
    negative_ttl: u32,
    /// Every RRset except the SOA, by owner (lower-case, absolute) and type.
    rrsets: BTreeMap<Name, BTreeMap<RecordType, Vec<Record>>>,
    problems: Vec<RenderProblem>,
}

/// A member that could not be published, or not fully, and why. The rest of the zone is
/// still served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderProblem {
    /// Member id.
    pub member_id: u64,
    /// Member name as given.
    pub member_name: String,
    /// What is wrong.
    pub kind: RenderProblemKind,
}

/// What prevents a member from being published (or, for [`RenderProblemKind::HostInsideZone`]
/// and [`RenderProblemKind::ZeroPort`], from being published completely).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenderProblemKind {
    /// The name is not a valid DNS host name (letters, digits, inner hyphens; dot-separated
    /// labels of 1..=63 octets) or is too long once the zone is appended.
    InvalidName,
    /// Another member (lower id) already uses this name in the zone.
    DuplicateName,
    /// The advertised host is neither an IP literal nor a valid DNS name.
    InvalidHost(String),
    /// The advertised host is the unspecified address (`0.0.0.0`, `::`): nothing to publish.
    UnspecifiedHost,
    /// The advertised host is a DNS name inside this zone, for which this zone has no address
    /// record. The member is still published with that host as its SRV/NS target: this works
    /// only where another server answers for that name (a conditional forwarder that sends
    /// just `_vlmcs._tcp.<zone>` here), so it is reported.
    HostInsideZone(String),
    /// The KMS port is 0. Address and NS records are still published; no SRV record.
    ZeroPort,
}

impl fmt::Display for RenderProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "member {} ({:?}): ", self.member_id, self.member_name)?;
        match &self.kind {
            RenderProblemKind::InvalidName => f.write_str("name is not a valid DNS host name"),
            RenderProblemKind::DuplicateName => f.write_str("name already used by another member"),
            RenderProblemKind::InvalidHost(h) => {
                write!(f, "host {h:?} is neither an IP address nor a DNS name")
            }
            RenderProblemKind::UnspecifiedHost => {
                f.write_str("host is the unspecified address; advertise a reachable one")
            }
            RenderProblemKind::HostInsideZone(h) => write!(
                f,
                "host {h:?} lies inside the served zone, which has no address for it; it \
                 resolves only if another DNS server answers for that name"
            ),
            RenderProblemKind::ZeroPort => f.write_str("KMS port is 0; no SRV record"),
        }
    }
}

impl Zone {
    /// The zone apex (absolute, lower-case).
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// The SOA record.
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// The SOA serial.
    pub fn serial(&self) -> u32 {
        match &self.soa.data {
            RData::SOA(soa) => soa.serial,
            _ => 0,
        }
    }

    /// Replace the SOA serial (see [`SerialTracker`]).
    pub fn set_serial(&mut self, serial: u32) {
        if let RData::SOA(soa) = &mut self.soa.data {
            soa.serial = serial;
        }
    }

    /// TTL of negative answers: min(SOA TTL, SOA minimum), RFC 2308 §5.
    pub fn negative_ttl(&self) -> u32 {
        self.negative_ttl
    }

    /// The SOA as it goes into the authority section of a negative answer (RFC 2308 TTL).
    pub fn negative_soa(&self) -> Record {
        let mut soa = self.soa.clone();
        soa.ttl = self.negative_ttl;
        soa
    }

    /// Members that could not be published.
    pub fn problems(&self) -> &[RenderProblem] {
        &self.problems
    }

    /// Whether `name` lies in this zone (at or below the apex).
    pub fn contains(&self, name: &Name) -> bool {
        self.origin.zone_of(name)
    }

    /// The RRset of `rtype` at `name` (case-insensitive), SOA included.
    pub fn lookup(&self, name: &Name, rtype: RecordType) -> Option<&[Record]> {
        if rtype == RecordType::SOA {
            return (*name == self.origin).then(|| std::slice::from_ref(&self.soa));
        }
        self.rrsets
            .get(name)
            .and_then(|types| types.get(&rtype))
            .map(Vec::as_slice)
    }

    /// Every RRset at `name`, SOA first at the apex, then by type.
    pub fn rrsets_at(&self, name: &Name) -> Vec<&[Record]> {
        let mut out = Vec::new();
        if *name == self.origin {
            out.push(std::slice::from_ref(&self.soa));
        }
        if let Some(types) = self.rrsets.get(name) {
            out.extend(types.values().map(Vec::as_slice));
        }
        out
    }

    /// Whether `name` exists: it owns records, or records exist below it (an empty
    /// non-terminal such as `_tcp.<zone>`, RFC 8020).
    pub fn name_exists(&self, name: &Name) -> bool {
        *name == self.origin || self.rrsets.keys().any(|owner| name.zone_of(owner))
    }

    /// Every record except the SOA, owners in canonical order, for zone transfers.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.rrsets
            .values()
            .flat_map(|types| types.values().flatten())
    }

    /// Whether the published records (everything but the SOA serial) are the same.
    pub fn same_records(&self, other: &Self) -> bool {
        let mut a = self.soa.clone();
        let mut b = other.soa.clone();
        if let (RData::SOA(x), RData::SOA(y)) = (&mut a.data, &mut b.data) {
            x.serial = 0;
            y.serial = 0;
        }
        self.origin == other.origin
            && a == b
            && self.negative_ttl == other.negative_ttl
            && self.rrsets == other.rrsets
    }

    fn insert(&mut self, record: Record) {
        let rtype = record.record_type();
        self.rrsets
            .entry(record.name.clone())
            .or_default()
            .entry(rtype)
            .or_default()
            .push(record);
    }
}

/// Whether `name` is publishable as a node name: dot-separated host labels (letters, digits,
/// inner hyphens, 1..=63 octets each). kmsd can use this to reject a bad node name at startup.
pub fn is_valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && !name.ends_with('.')
        && name.split('.').all(|label| is_ldh_label(label.as_bytes()))
}

/// A member as it will be published.
struct Published<'a> {
    member: &'a MemberView,
    /// SRV and NS target: `<name>.<zone>` for IP hosts, the host name otherwise.
    target: Name,
    /// `<name>.<zone>` and its address, for IP hosts.
    address: Option<(Name, IpAddr)>,
}

/// Render `zone` from `view`: SOA, NS, `_vlmcs._tcp` SRV and A/AAAA records (see the module
/// docs). Pure: the same view and configuration give the same zone on every node.
///
/// SRV records list the healthy members; if no member is healthy, every member is listed
/// (an empty SRV set would stop every client, a stale one only slows some). The view producer
/// always marks the local node healthy, so a node cut off from its peers still publishes
/// itself. The SOA serial is `view.generation` (truncated to 32 bits); a long-running server
/// replaces it with one from [`SerialTracker`].
pub fn render(view: &ClusterView, cfg: &DnsConfig, zone: &Name) -> Zone {
    let origin = normalize(zone);
    let ttl = cfg.ttl_secs();
    let mut problems = Vec::new();

    let mut members: Vec<&MemberView> = view.members.iter().collect();
    members.sort_by_key(|m| m.id);

    let mut published: Vec<Published<'_>> = Vec::new();
    for member in members {
        let problem = |kind| RenderProblem {
            member_id: member.id,
            member_name: member.name.clone(),
            kind,
        };
        let Some(owner) = node_owner(&member.name, &origin) else {
            problems.push(problem(RenderProblemKind::InvalidName));
            continue;
        };
        if published.iter().any(|p| {
            p.address.as_ref().is_some_and(|(n, _)| *n == owner)
                || p.member.name.eq_ignore_ascii_case(&member.name)
        }) {
            problems.push(problem(RenderProblemKind::DuplicateName));
            continue;
        }
        match classify_host(&member.host, &origin) {
            Ok(Host::Ip(ip)) => published.push(Published {
                member,
                target: owner.clone(),
                address: Some((owner, ip)),
            }),
            Ok(Host::Name(target)) => published.push(Published {
                member,
                target,
                address: None,
            }),
            Ok(Host::NameInsideZone(target)) => {
                problems.push(problem(RenderProblemKind::HostInsideZone(
                    member.host.clone(),
                )));
                published.push(Published {
                    member,
                    target,
                    address: None,
                });
            }
            Err(kind) => problems.push(problem(kind)),
        }
    }

    let mname = cfg
        .soa
        .mname
        .as_ref()
        .map(normalize)
        .or_else(|| published.first().map(|p| p.target.clone()))
        .unwrap_or_else(|| origin.clone());
    let rname = cfg.soa.rname.as_ref().map(normalize).unwrap_or_else(|| {
        Name::from_ascii("hostmaster")
            .and_then(|n| n.append_domain(&origin))
            .unwrap_or_else(|_| origin.clone())
    });
    let minimum = secs_u32(cfg.negative_ttl());
    let soa = Record::from_rdata(
        origin.clone(),
        ttl,
        RData::SOA(SOA::new(
            mname,
            rname,
            view.generation as u32,
            timer(cfg.soa.refresh),
            timer(cfg.soa.retry),
            timer(cfg.soa.expire),
            minimum,
        )),
    );

    let mut out = Zone {
        origin: origin.clone(),
        soa,
        negative_ttl: ttl.min(minimum),
        rrsets: BTreeMap::new(),
        problems,
    };

    for p in &published {
        out.insert(Record::from_rdata(
            origin.clone(),
            ttl,
            RData::NS(NS(p.target.clone())),
        ));
        if let Some((owner, ip)) = &p.address {
            let data = match ip {
                IpAddr::V4(v4) => RData::A(A(*v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
            };
            out.insert(Record::from_rdata(owner.clone(), ttl, data));
        }
    }

    if let Ok(srv_owner) = Name::from_ascii(VLMCS_SRV_PREFIX).and_then(|n| n.append_domain(&origin))
    {
        let any_healthy = published.iter().any(|p| p.member.healthy);
        for p in &published {
            if any_healthy && !p.member.healthy {
                continue;
            }
            if p.member.kms_port == 0 {
                out.problems.push(RenderProblem {
                    member_id: p.member.id,
                    member_name: p.member.name.clone(),
                    kind: RenderProblemKind::ZeroPort,
                });
                continue;
            }
            out.insert(Record::from_rdata(
                srv_owner.clone(),
                ttl,
                RData::SRV(SRV::new(
                    p.member.dns_priority,
                    p.member.dns_weight,
                    p.member.kms_port,
                    p.target.clone(),
                )),
            ));
        }
    }
    out
}

/// SOA timer field: seconds as i32 (validated to fit).
fn timer(d: std::time::Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

/// `<name>.<zone>`, lower-case, if `name` is a valid node name and the result fits.
fn node_owner(name: &str, origin: &Name) -> Option<Name> {
    if !is_valid_node_name(name) {
        return None;
    }
    let relative = Name::from_ascii(name.to_ascii_lowercase()).ok()?;
    relative.append_domain(origin).ok().map(|n| normalize(&n))
}

enum Host {
    Ip(IpAddr),
    Name(Name),
    NameInsideZone(Name),
}

fn classify_host(host: &str, origin: &Name) -> Result<Host, RenderProblemKind> {
    let bare = host.trim().trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        let ip = ip.to_canonical();
        if ip.is_unspecified() {
            return Err(RenderProblemKind::UnspecifiedHost);
        }
        return Ok(Host::Ip(ip));
    }
    let trimmed = bare.trim_end_matches('.');
    if !is_valid_node_name(trimmed) {
        return Err(RenderProblemKind::InvalidHost(host.to_string()));
    }
    let name = Name::from_ascii(trimmed)
        .map(|n| normalize(&n))
        .map_err(|_| RenderProblemKind::InvalidHost(host.to_string()))?;
    if origin.zone_of(&name) {
        return Ok(Host::NameInsideZone(name));
    }
    Ok(Host::Name(name))
}

/// Gives each rendered zone an SOA serial that rises whenever its records change.
///
/// Unchanged records keep the previous serial. Changed records get
/// `max(previous + 1, now)` in RFC 1982 serial arithmetic, where `now` is the Unix time in
/// seconds: the serial is the time of the last change (as CoreDNS does), so it also rises
/// across restarts of the process, and nodes that apply the same change in the same second
/// publish the same serial. Monotonic within a process even if the clock steps back.
#[derive(Clone, Debug, Default)]
pub struct SerialTracker {
    last: Option<Zone>,
}

impl SerialTracker {
    /// A tracker that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set `zone`'s serial (see the type docs) and return it. `now_unix` is seconds since the
    /// Unix epoch.
    pub fn stamp(&mut self, zone: &mut Zone, now_unix: u64) -> u32 {
        let now = now_unix as u32; // serials are 32-bit; RFC 1982 arithmetic handles the wrap
        let serial = match &self.last {
            Some(prev) if prev.same_records(zone) => prev.serial(),
            Some(prev) => {
                let next = prev.serial().wrapping_add(1);
                if serial_gt(now, next) { now } else { next }
            }
            None => now,
        };
        zone.set_serial(serial);
        self.last = Some(zone.clone());
        serial
    }
}

/// `a > b` in RFC 1982 serial number arithmetic (32-bit).
pub fn serial_gt(a: u32, b: u32) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < (1 << 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_zone;

    pub(crate) fn member(id: u64, name: &str, host: &str, healthy: bool) -> MemberView {
        MemberView {
            id,
            name: name.into(),
            host: host.into(),
            kms_port: 1688,
            grpc_addr: format!("{host}:1689"),
            dns_priority: 0,
            dns_weight: 100,
            voter: true,
            healthy,
        }
    }

    fn view(members: Vec<MemberView>) -> ClusterView {
        ClusterView {
            local_id: 1,
            leader_id: Some(1),
            term: 1,
            members,
            generation: 7,
        }
    }

    fn cfg() -> DnsConfig {
        DnsConfig {
            zones: vec![parse_zone("kms.example.com").unwrap()],
            ..DnsConfig::default()
        }
    }

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn srv_targets(z: &Zone) -> Vec<(u16, u16, u16, String)> {
        z.lookup(&n("_vlmcs._tcp.kms.example.com."), RecordType::SRV)
            .unwrap_or_default()
            .iter()
            .map(|r| match &r.data {
                RData::SRV(s) => (s.priority, s.weight, s.port, s.target.to_string()),
                other => panic!("not SRV: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn srv_lists_only_healthy_members_with_priority_weight_and_port() {
        let mut a = member(1, "kms1", "10.0.0.1", true);
        a.dns_priority = 10;
        a.dns_weight = 60;
        let mut b = member(2, "kms2", "10.0.0.2", false);
        b.dns_priority = 10;
        let mut c = member(3, "kms3", "10.0.0.3", true);
        c.dns_priority = 20;
        c.dns_weight = 5;
        c.kms_port = 11688;
        let z = render(&view(vec![c, b, a]), &cfg(), &cfg().zones[0]);
        assert_eq!(
            srv_targets(&z),
            vec![
                (10, 60, 1688, "kms1.kms.example.com.".into()),
                (20, 5, 11688, "kms3.kms.example.com.".into()),
            ]
        );
        assert!(z.problems().is_empty());
    }

    #[test]
    fn no_healthy_member_publishes_all() {
        let z = render(
            &view(vec![
                member(1, "kms1", "10.0.0.1", false),
                member(2, "kms2", "10.0.0.2", false),
            ]),
            &cfg(),
            &cfg().zones[0],
        );
        assert_eq!(srv_targets(&z).len(), 2);
    }

    #[test]
    fn lone_local_node_publishes_itself() {
        // The producer marks the local node healthy even when every peer is unreachable.
        let z = render(
            &view(vec![
                member(1, "kms1", "10.0.0.1", true),
                member(2, "kms2", "10.0.0.2", false),
                member(3, "kms3", "10.0.0.3", false),
            ]),
            &cfg(),
            &cfg().zones[0],
        );
        assert_eq!(srv_targets(&z).len(), 1);
        assert_eq!(srv_targets(&z)[0].3, "kms1.kms.example.com.");
    }

    #[test]
    fn address_records_table() {
        let cases: Vec<(&str, Option<RecordType>, Option<RenderProblemKind>)> = vec![
            ("10.0.0.1", Some(RecordType::A), None),
            ("2001:db8::1", Some(RecordType::AAAA), None),
            ("[2001:db8::2]", Some(RecordType::AAAA), None),
            ("::ffff:10.0.0.9", Some(RecordType::A), None),
            ("kms1.corp.example.com", None, None),
            ("0.0.0.0", None, Some(RenderProblemKind::UnspecifiedHost)),
            (
                "bad host!",
                None,
                Some(RenderProblemKind::InvalidHost("bad host!".into())),
            ),
            (
                "x.kms.example.com",
                None,
                Some(RenderProblemKind::HostInsideZone(
                    "x.kms.example.com".into(),
                )),
            ),
        ];
        for (host, want_type, want_problem) in cases {
            let z = render(
                &view(vec![member(1, "kms1", host, true)]),
                &cfg(),
                &cfg().zones[0],
            );
            let owner = n("kms1.kms.example.com.");
            let a = z.lookup(&owner, RecordType::A).is_some();
            let aaaa = z.lookup(&owner, RecordType::AAAA).is_some();
            assert_eq!(a, want_type == Some(RecordType::A), "{host}");
            assert_eq!(aaaa, want_type == Some(RecordType::AAAA), "{host}");
            assert_eq!(
                z.problems().first().map(|p| p.kind.clone()),
                want_problem,
                "{host}"
            );
        }
    }

    #[test]
    fn host_inside_the_zone_is_published_and_reported() {
        let z = render(
            &view(vec![member(1, "kms1", "kms1.sub.kms.example.com", true)]),
            &cfg(),
            &cfg().zones[0],
        );
        assert_eq!(srv_targets(&z)[0].3, "kms1.sub.kms.example.com.");
        assert_eq!(z.problems().len(), 1);
    }

    #[test]
    fn dns_name_host_is_the_srv_and_ns_target() {
        let z = render(
            &view(vec![member(1, "kms1", "KMS1.Corp.Example.com", true)]),
            &cfg(),
            &cfg().zones[0],
        );
        assert_eq!(srv_targets(&z)[0].3, "kms1.corp.example.com.");
        let ns = z.lookup(&n("kms.example.com."), RecordType::NS).unwrap();
        assert_eq!(ns[0].data, RData::NS(NS(n("kms1.corp.example.com."))));
        assert!(!z.name_exists(&n("kms1.kms.example.com.")));
    }

    #[test]
    fn ns_lists_every_member_and_soa_defaults() {
        let z = render(
            &view(vec![
                member(2, "kms2", "10.0.0.2", false),
                member(1, "kms1", "10.0.0.1", true),
            ]),
            &cfg(),
            &cfg().zones[0],
        );
        let ns: Vec<String> = z
            .lookup(&n("kms.example.com."), RecordType::NS)
            .unwrap()
            .iter()
            .map(|r| r.data.to_string())
            .collect();
        assert_eq!(ns, vec!["kms1.kms.example.com.", "kms2.kms.example.com."]);
        let RData::SOA(soa) = &z.soa().data else {
            panic!("no SOA")
        };
        assert_eq!(soa.mname, n("kms1.kms.example.com."));
        assert_eq!(soa.rname, n("hostmaster.kms.example.com."));
        assert_eq!(soa.serial, 7);
        assert_eq!(soa.minimum, 30);
        assert_eq!(z.soa().ttl, 60);
        assert_eq!(z.negative_ttl(), 30);
        assert_eq!(z.negative_soa().ttl, 30);
    }

    #[test]
    fn names_are_lowercase_and_lookup_is_case_insensitive() {
        let z = render(
            &view(vec![member(1, "KMS1", "10.0.0.1", true)]),
            &cfg(),
            &n("KMS.Example.COM"),
        );
        assert_eq!(z.origin().to_string(), "kms.example.com.");
        assert!(
            z.lookup(&n("Kms1.KMS.example.com."), RecordType::A)
                .is_some()
        );
        assert_eq!(srv_targets(&z)[0].3, "kms1.kms.example.com.");
    }

    #[test]
    fn bad_and_duplicate_names_are_reported_not_published() {
        let z = render(
            &view(vec![
                member(1, "kms1", "10.0.0.1", true),
                member(2, "KMS1", "10.0.0.2", true),
                member(3, "under_score", "10.0.0.3", true),
                member(4, "", "10.0.0.4", true),
                member(5, "ok", "10.0.0.5", true),
            ]),
            &cfg(),
            &cfg().zones[0],
        );
        let kinds: Vec<(u64, RenderProblemKind)> = z
            .problems()
            .iter()
            .map(|p| (p.member_id, p.kind.clone()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (2, RenderProblemKind::DuplicateName),
                (3, RenderProblemKind::InvalidName),
                (4, RenderProblemKind::InvalidName),
            ]
        );
        assert_eq!(srv_targets(&z).len(), 2);
    }

    #[test]
    fn zero_port_keeps_address_but_no_srv() {
        let mut m = member(1, "kms1", "10.0.0.1", true);
        m.kms_port = 0;
        let z = render(&view(vec![m]), &cfg(), &cfg().zones[0]);
        assert!(srv_targets(&z).is_empty());
        assert!(
            z.lookup(&n("kms1.kms.example.com."), RecordType::A)
                .is_some()
        );
        assert_eq!(z.problems()[0].kind, RenderProblemKind::ZeroPort);
    }

    #[test]
    fn empty_view_has_soa_only() {
        let z = render(&ClusterView::default(), &cfg(), &cfg().zones[0]);
        assert_eq!(z.records().count(), 0);
        let RData::SOA(soa) = &z.soa().data else {
            panic!("no SOA")
        };
        assert_eq!(soa.mname, n("kms.example.com."));
    }

    #[test]
    fn existence_includes_empty_non_terminals() {
        let z = render(
            &view(vec![member(1, "kms1", "10.0.0.1", true)]),
            &cfg(),
            &cfg().zones[0],
        );
        for (name, exists) in [
            ("kms.example.com.", true),
            ("_tcp.kms.example.com.", true),
            ("_vlmcs._tcp.kms.example.com.", true),
            ("kms1.kms.example.com.", true),
            ("kms2.kms.example.com.", false),
            ("x.kms1.kms.example.com.", false),
        ] {
            assert_eq!(z.name_exists(&n(name)), exists, "{name}");
        }
    }

    #[test]
    fn render_serial_follows_generation_and_tracker_rises_on_change() {
        let c = cfg();
        let mut v = view(vec![member(1, "kms1", "10.0.0.1", true)]);
        let first = render(&v, &c, &c.zones[0]);
        v.generation += 1;
        v.members.push(member(2, "kms2", "10.0.0.2", true));
        let second = render(&v, &c, &c.zones[0]);
        assert!(serial_gt(second.serial(), first.serial()));

        let mut t = SerialTracker::new();
        let mut z1 = first.clone();
        assert_eq!(t.stamp(&mut z1, 1_700_000_000), 1_700_000_000);
        // Same records, later: the serial stays.
        let mut z1b = first.clone();
        assert_eq!(t.stamp(&mut z1b, 1_700_000_100), 1_700_000_000);
        // Changed records: the time of the change.
        let mut z2 = second.clone();
        assert_eq!(t.stamp(&mut z2, 1_700_000_200), 1_700_000_200);
        // Two changes within one second, and a clock that steps back: still rising.
        let mut z3 = first.clone();
        assert_eq!(t.stamp(&mut z3, 1_700_000_200), 1_700_000_201);
        let mut z4 = second;
        assert_eq!(t.stamp(&mut z4, 1_600_000_000), 1_700_000_202);
        assert_eq!(z4.serial(), 1_700_000_202);
    }

    #[test]
    fn serial_arithmetic_wraps() {
        assert!(serial_gt(1, 0));
        assert!(serial_gt(0, u32::MAX));
        assert!(!serial_gt(5, 5));
        assert!(!serial_gt(0, 1));
        let mut t = SerialTracker::new();
        let c = cfg();
        let mut z = render(&view(vec![]), &c, &c.zones[0]);
        t.stamp(&mut z, u64::from(u32::MAX));
        let mut z2 = render(
            &view(vec![member(1, "a", "10.0.0.1", true)]),
            &c,
            &c.zones[0],
        );
        assert_eq!(t.stamp(&mut z2, u64::from(u32::MAX)), 0);
    }

    #[test]
    fn node_name_validation() {
        for (name, ok) in [
            ("kms1", true),
            ("kms-1", true),
            ("kms1.dc1", true),
            ("-kms", false),
            ("kms_1", false),
            ("", false),
            ("kms.", false),
            ("a b", false),
            (&"x".repeat(64), false),
        ] {
            assert_eq!(is_valid_node_name(name), ok, "{name:?}");
        }
    }
}
