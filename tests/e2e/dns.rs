//! The embedded authoritative DNS (DESIGN §6, docs/dns.md) end to end: real kmsd processes on
//! 127.0.0.x, asked over UDP and TCP by raw clients that encode and decode with hickory-proto —
//! always, so this tier never silently tests nothing — and by `dig` (Debian `dnsutils`) when it
//! is installed (otherwise the dig half of a test prints `SKIPPED: dig not installed`).
//!
//! * [`three_nodes_answer_on_every_node_and_follow_health`] — three nodes, each on its own
//!   loopback address with its own priority and weight: SRV, A, SOA and NS on every node over
//!   UDP and TCP with AA; REFUSED outside the zone, NXDOMAIN/NODATA with the SOA inside; AXFR
//!   allowed and refused; `kill -9` of a node removes it from every other node's SRV answers
//!   within 10 s, and a restart brings it back everywhere.
//! * [`bad_packets_and_a_flood_are_dropped_while_other_sources_are_answered`] — garbage,
//!   truncated, oversized and response packets are dropped silently; a flood from 127.0.0.1 is
//!   rate-limited (bare `TC=1` slips, the rest dropped) while 127.0.0.2 keeps being answered;
//!   `/metrics` counts both.
//! * [`without_a_zone_nothing_listens_on_the_dns_port`] — DNS is off unless a zone is named.
//! * [`a_stub_resolver_finds_the_node_through_srv`] — the client side through a resolver
//!   library (hickory-resolver) instead of hand-made packets: SRV, then the target's A record,
//!   over UDP and over TCP; a name outside the zone is an error (REFUSED).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};

use crate::harness::{Kmsd, metric_value};

const ZONE: &str = "kms.test.";
const SRV_NAME: &str = "_vlmcs._tcp.kms.test.";
/// `--dns-ttl` of every node; negative answers carry min(30, TTL).
const TTL: u32 = 20;
/// How long a client waits for an answer that should come.
const ANSWER_WAIT: Duration = Duration::from_secs(2);
/// How long a client waits to conclude that no answer comes.
const SILENCE_WAIT: Duration = Duration::from_millis(300);
/// The bound of DESIGN §6 for a failed node to leave every other node's SRV answers.
const FAILOVER_LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Raw hickory-proto clients

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    Udp,
    Tcp,
}

const BOTH: [Via; 2] = [Via::Udp, Via::Tcp];

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

/// A query for `qname`/`qtype` with EDNS (1232 bytes), as a stub resolver sends it.
fn query(qname: &str, qtype: RecordType) -> Message {
    static NEXT_ID: AtomicU16 = AtomicU16::new(1);
    let mut m = Message::new(
        NEXT_ID.fetch_add(1, Ordering::Relaxed),
        MessageType::Query,
        OpCode::Query,
    );
    m.add_query(Query::query(name(qname), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    m.set_edns(edns);
    m
}

fn udp_socket(from: Ipv4Addr) -> UdpSocket {
    let sock = UdpSocket::bind((from, 0)).expect("bind a UDP client");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    sock
}

/// Send `bytes` to `server` and return the first datagram back from it within `wait` for
/// which `accept` holds (earlier, late answers are skipped).
fn udp_exchange(
    sock: &UdpSocket,
    server: SocketAddr,
    bytes: &[u8],
    wait: Duration,
    accept: impl Fn(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    sock.send_to(bytes, server).expect("send a datagram");
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 65_535];
    while Instant::now() < deadline {
        match sock.recv_from(&mut buf) {
            Ok((n, src)) if src == server && accept(&buf[..n]) => return Some(buf[..n].to_vec()),
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            // ICMP port unreachable from an earlier send: nothing listens.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return None,
            Err(e) => panic!("UDP receive: {e}"),
        }
    }
    None
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// The response id of a datagram, if it is at least a header.
fn id_of(bytes: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]))
}

/// One query over UDP from `from`; `None` when nothing comes back within [`ANSWER_WAIT`].
fn udp_ask_from(server: SocketAddr, from: Ipv4Addr, q: &Message) -> Option<Message> {
    udp_ask_retrying(server, from, q, 1, ANSWER_WAIT).0
}

/// One query over UDP from `from`, sent up to `tries` times `per_try` apart as a stub
/// resolver does; the answer (if any) and how many sends it took.
fn udp_ask_retrying(
    server: SocketAddr,
    from: Ipv4Addr,
    q: &Message,
    tries: u32,
    per_try: Duration,
) -> (Option<Message>, u32) {
    let sock = udp_socket(from);
    let id = q.metadata.id;
    let bytes = q.to_vec().unwrap();
    for attempt in 1..=tries {
        if let Some(reply) = udp_exchange(&sock, server, &bytes, per_try, |b| id_of(b) == Some(id))
        {
            let m = Message::from_vec(&reply).expect("a decodable response");
            return (Some(m), attempt);
        }
    }
    (None, tries)
}

/// `RcvbufErrors` of /proc/net/snmp: UDP datagrams the kernel dropped because a socket's
/// receive buffer was full (0 where unavailable; for diagnostics only).
fn udp_rcvbuf_errors() -> u64 {
    let Ok(snmp) = std::fs::read_to_string("/proc/net/snmp") else {
        return 0;
    };
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// A TCP connection to `server`, from `from` when given (bind before connect).
fn tcp_connect(server: SocketAddr, from: Option<Ipv4Addr>) -> TcpStream {
    let stream = match from {
        None => TcpStream::connect_timeout(&server, ANSWER_WAIT)
            .unwrap_or_else(|e| panic!("TCP connect to {server}: {e}")),
        Some(ip) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let stream = rt.block_on(async {
                let s = tokio::net::TcpSocket::new_v4().unwrap();
                s.bind(SocketAddr::new(IpAddr::V4(ip), 0)).unwrap();
                tokio::time::timeout(ANSWER_WAIT, s.connect(server))
                    .await
                    .expect("TCP connect in time")
                    .unwrap_or_else(|e| panic!("TCP connect to {server} from {ip}: {e}"))
            });
            let std = stream.into_std().unwrap();
            std.set_nonblocking(false).unwrap();
            std
        }
    };
    stream.set_read_timeout(Some(ANSWER_WAIT)).unwrap();
    stream.set_write_timeout(Some(ANSWER_WAIT)).unwrap();
    stream
}

fn tcp_send(stream: &mut TcpStream, bytes: &[u8]) {
    let mut frame = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(bytes);
    stream.write_all(&frame).expect("TCP write");
}

/// One length-prefixed frame; `None` on EOF, error or timeout.
fn tcp_recv(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).ok()?;
    Some(buf)
}

fn tcp_ask(server: SocketAddr, q: &Message) -> Option<Message> {
    let mut stream = tcp_connect(server, None);
    tcp_send(&mut stream, &q.to_vec().unwrap());
    let bytes = tcp_recv(&mut stream)?;
    Some(Message::from_vec(&bytes).expect("a decodable response"))
}

/// Ask `server`; panics when no answer comes. Checks the id and the echoed question.
fn ask(server: SocketAddr, via: Via, qname: &str, qtype: RecordType) -> Message {
    let q = query(qname, qtype);
    let m = match via {
        Via::Udp => udp_ask_from(server, Ipv4Addr::LOCALHOST, &q),
        Via::Tcp => tcp_ask(server, &q),
    }
    .unwrap_or_else(|| panic!("no answer from {server} over {via:?} to {qtype} {qname}"));
    assert_eq!(m.metadata.id, q.metadata.id);
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert_eq!(m.queries, q.queries, "the question is echoed");
    m
}

/// A zone transfer over TCP from `from`: every message until the closing SOA or an error.
fn axfr(server: SocketAddr, from: Option<Ipv4Addr>) -> Vec<Message> {
    let mut stream = tcp_connect(server, from);
    tcp_send(
        &mut stream,
        &query(ZONE, RecordType::AXFR).to_vec().unwrap(),
    );
    let mut out = Vec::new();
    let mut soas = 0;
    while let Some(bytes) = tcp_recv(&mut stream) {
        let m = Message::from_vec(&bytes).expect("a decodable transfer message");
        soas += m
            .answers
            .iter()
            .filter(|r| r.record_type() == RecordType::SOA)
            .count();
        let failed = m.metadata.response_code != ResponseCode::NoError;
        out.push(m);
        if failed || soas >= 2 || out.len() > 100 {
            break;
        }
    }
    out
}

type Srv = (u16, u16, u16, String);

/// The SRV records among `records` as (priority, weight, port, target), sorted.
fn srv_set(records: &[Record]) -> Vec<Srv> {
    let mut v: Vec<Srv> = records
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some((s.priority, s.weight, s.port, s.target.to_ascii())),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn a_records(records: &[Record]) -> BTreeSet<(String, Ipv4Addr)> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some((r.name.to_ascii(), a.0)),
            _ => None,
        })
        .collect()
}

fn ns_targets(records: &[Record]) -> BTreeSet<String> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::NS(ns) => Some(ns.0.to_ascii()),
            _ => None,
        })
        .collect()
}

fn soa_of(records: &[Record]) -> Option<(&Record, &hickory_proto::rr::rdata::SOA)> {
    records.iter().find_map(|r| match &r.data {
        RData::SOA(s) => Some((r, s)),
        _ => None,
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Poll `f` every `every` until it returns `Ok`; panics with the last observation after
/// `limit`. Returns the value and how long it took.
fn eventually<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> (T, Duration) {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return (v, start.elapsed()),
            Err(last) if start.elapsed() > limit => {
                panic!("{what}: not within {limit:?}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(every),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// dig

fn dig_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new("dig")
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// True (after printing why) when the dig half of `test` cannot run.
fn skip_dig(test: &str) -> bool {
    if dig_available() {
        return false;
    }
    eprintln!(
        "SKIPPED: dig not installed — the dig checks of dns::{test} did not run (Debian: \
         apt-get install dnsutils, or scripts/install-test-deps.sh); the same checks ran with \
         hickory-proto over raw UDP/TCP sockets"
    );
    true
}

/// What dig printed, split up.
#[derive(Debug)]
struct Dig {
    /// `status:` of the header (`NOERROR`, `REFUSED`, …); empty when dig printed none.
    status: String,
    /// Header flags (`qr`, `aa`, …).
    flags: Vec<String>,
    answer: Vec<Vec<String>>,
    authority: Vec<Vec<String>>,
    additional: Vec<Vec<String>>,
    /// Record lines outside any section (an AXFR prints no sections).
    bare: Vec<Vec<String>>,
    raw: String,
}

impl Dig {
    fn records<'a>(section: &'a [Vec<String>], rtype: &str) -> Vec<&'a [String]> {
        section
            .iter()
            .filter(|r| r.get(3).is_some_and(|t| t == rtype))
            .map(|r| &r[..])
            .collect()
    }
}

/// Run `dig @server -p port [+tcp] [-b from] args…` (bounded: 2 s, one try).
fn dig(server: SocketAddr, via: Via, from: Option<Ipv4Addr>, args: &[&str]) -> Dig {
    let mut cmd = Command::new("dig");
    cmd.arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(["+time=2", "+tries=1"]);
    if via == Via::Tcp {
        cmd.arg("+tcp");
    }
    if let Some(ip) = from {
        cmd.args(["-b", &ip.to_string()]);
    }
    let out = cmd.args(args).output().expect("run dig");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut d = Dig {
        status: String::new(),
        flags: Vec::new(),
        answer: Vec::new(),
        authority: Vec::new(),
        additional: Vec::new(),
        bare: Vec::new(),
        raw: raw.clone(),
    };
    let mut section: Option<&str> = None;
    for line in raw.lines() {
        let line = line.trim();
        if let Some(rest) = line.split_once("status: ").map(|x| x.1) {
            d.status = rest.split(',').next().unwrap_or("").trim().to_string();
        }
        if let Some(rest) = line.strip_prefix(";; flags:") {
            let flags = rest.split(';').next().unwrap_or("");
            d.flags = flags.split_whitespace().map(str::to_string).collect();
        }
        if line.is_empty() {
            section = None;
            continue;
        }
        if let Some(name) = line
            .strip_prefix(";; ")
            .and_then(|l| l.strip_suffix(" SECTION:"))
        {
            section = Some(match name {
                "ANSWER" => "answer",
                "AUTHORITY" => "authority",
                "ADDITIONAL" => "additional",
                _ => "other",
            });
            continue;
        }
        if line.starts_with(';') {
            continue;
        }
        let fields: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        match section {
            Some("answer") => d.answer.push(fields),
            Some("authority") => d.authority.push(fields),
            Some("additional") => d.additional.push(fields),
            Some(_) => {}
            None => d.bare.push(fields),
        }
    }
    d
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A port on `ip` free for both TCP and UDP right now and not in `taken`. The listeners of a
/// cluster member must be known before it starts (`--initial-cluster` names the gRPC ports)
/// and must stay the same across a restart, so they are picked here rather than by the node.
fn free_port(ip: Ipv4Addr, taken: &[u16]) -> u16 {
    for _ in 0..200 {
        let tcp = TcpListener::bind((ip, 0)).expect("bind a probe listener");
        let port = tcp.local_addr().unwrap().port();
        if !taken.contains(&port) && UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both TCP and UDP on {ip}");
}

/// The DNS listener from the node's "DNS serving" log line (field `listen`).
/// A node named `name` in zone `kms.test` on loopback ports, and its DNS listen address.
fn start_in_zone(dir: &std::path::Path, name: &str) -> (Kmsd, SocketAddr) {
    let mut args = crate::harness::loopback_flags(dir.to_str().unwrap());
    args.extend(["--name", name, "--dns-zone", "kms.test"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Kmsd::start_raw(dir, &args, &[]);
    let server = dns_listen(&node).expect("a \"DNS serving\" log line with `listen`");
    (node, server)
}

fn dns_listen(node: &Kmsd) -> Option<SocketAddr> {
    node.log_lines().iter().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["message"] == "DNS serving").then(|| v["listen"].as_str()?.parse().ok())?
    })
}

/// One member of the test cluster: its own loopback address (so its A record is its own) and
/// fixed ports.
#[derive(Debug, Clone)]
struct Member {
    id: u64,
    ip: Ipv4Addr,
    name: String,
    grpc: u16,
    kms: u16,
    dns: u16,
    priority: u16,
    weight: u16,
    axfr_allow: bool,
}

impl Member {
    fn dns_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), self.dns)
    }

    fn fqdn(&self) -> String {
        format!("{}.{ZONE}", self.name)
    }

    fn srv(&self) -> Srv {
        (self.priority, self.weight, self.kms, self.fqdn())
    }

    fn args(&self, data_dir: &Path, initial: &str) -> Vec<String> {
        let at = |port: u16| format!("{}:{port}", self.ip);
        let mut a: Vec<String> = [
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--node-id",
            &self.id.to_string(),
            "--name",
            &self.name,
            "--kms-listen",
            &at(self.kms),
            "--http-listen",
            &at(0),
            "--grpc-listen",
            &at(self.grpc),
            "--dns-listen",
            &at(self.dns),
            "--log-format",
            "json",
            "--initial-cluster",
            initial,
            "--insecure",
            "--dns-zone",
            "kms.test",
            "--dns-ttl",
            &TTL.to_string(),
            "--dns-priority",
            &self.priority.to_string(),
            "--dns-weight",
            &self.weight.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if self.axfr_allow {
            a.extend(["--dns-axfr-allow".to_string(), "127.0.0.1/32".to_string()]);
        }
        a
    }
}

struct DnsCluster {
    members: Vec<Member>,
    nodes: Vec<Kmsd>,
    _dirs: Vec<tempfile::TempDir>,
}

impl DnsCluster {
    /// Three members on 127.0.0.11–13: kms1 (priority 0, weight 70, AXFR allowed from
    /// 127.0.0.1), kms2 (0, 30), kms3 (10, 100).
    fn start() -> DnsCluster {
        let specs = [(0u16, 70u16, true), (0, 30, false), (10, 100, false)];
        let members: Vec<Member> = specs
            .iter()
            .enumerate()
            .map(|(i, &(priority, weight, axfr_allow))| {
                let ip = Ipv4Addr::new(127, 0, 0, 11 + i as u8);
                let grpc = free_port(ip, &[]);
                let kms = free_port(ip, &[grpc]);
                let dns = free_port(ip, &[grpc, kms]);
                Member {
                    id: i as u64 + 1,
                    ip,
                    name: format!("kms{}", i + 1),
                    grpc,
                    kms,
                    dns,
                    priority,
                    weight,
                    axfr_allow,
                }
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}={}:{}", m.id, m.ip, m.grpc))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for m in &members {
            let dir = tempfile::tempdir().unwrap();
            let args = m.args(dir.path(), &initial);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let node = Kmsd::start_raw(dir.path(), &args, &[]);
            assert_eq!(
                dns_listen(&node),
                Some(m.dns_addr()),
                "the \"DNS serving\" log line names the DNS listener"
            );
            nodes.push(node);
            dirs.push(dir);
        }
        DnsCluster {
            members,
            nodes,
            _dirs: dirs,
        }
    }

    fn expected_srv(&self, ids: &[u64]) -> Vec<Srv> {
        let mut v: Vec<Srv> = self
            .members
            .iter()
            .filter(|m| ids.contains(&m.id))
            .map(Member::srv)
            .collect();
        v.sort();
        v
    }

    /// Wait until every node in `askers` answers SRV (over UDP) with exactly the members
    /// `ids`; returns how long it took.
    fn wait_srv(&self, askers: &[u64], ids: &[u64], limit: Duration) -> Duration {
        let want = self.expected_srv(ids);
        let what = format!("SRV on nodes {askers:?} lists exactly nodes {ids:?}");
        eventually(&what, limit, Duration::from_millis(200), || {
            for m in self.members.iter().filter(|m| askers.contains(&m.id)) {
                let q = query(SRV_NAME, RecordType::SRV);
                let got = udp_ask_from(m.dns_addr(), Ipv4Addr::LOCALHOST, &q)
                    .map(|r| srv_set(&r.answers))
                    .ok_or_else(|| format!("no answer from node {}", m.id))?;
                if got != want {
                    return Err(format!("node {}: {got:?}", m.id));
                }
            }
            Ok(())
        })
        .1
    }
}

// ---------------------------------------------------------------------------------------------
// Checks, once with hickory-proto and once with dig

/// SRV, A, SOA and NS on `server` over `via`, with the members in `healthy` in the SRV set.
fn check_zone(c: &DnsCluster, server: SocketAddr, via: Via, healthy: &[u64]) {
    let ctx = format!("{server} over {via:?}");
    // SRV: one per healthy member, with its priority, weight, KMS port and target; the
    // targets' addresses in the additional section.
    let m = ask(server, via, SRV_NAME, RecordType::SRV);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{ctx}");
    assert!(m.metadata.authoritative, "AA on SRV from {ctx}");
    assert!(!m.metadata.truncation, "{ctx}");
    assert_eq!(
        srv_set(&m.answers),
        c.expected_srv(healthy),
        "SRV from {ctx}"
    );
    for r in &m.answers {
        assert_eq!(r.name.to_ascii(), SRV_NAME, "{ctx}");
        assert_eq!(r.ttl, TTL, "SRV TTL from {ctx}");
    }
    let glue: BTreeSet<(String, Ipv4Addr)> = c
        .members
        .iter()
        .filter(|m| healthy.contains(&m.id))
        .map(|m| (m.fqdn(), m.ip))
        .collect();
    assert_eq!(
        a_records(&m.additionals),
        glue,
        "SRV additionals from {ctx}"
    );

    // A for every member, healthy or not.
    for member in &c.members {
        let m = ask(server, via, &member.fqdn(), RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{ctx}");
        assert!(m.metadata.authoritative, "AA on A from {ctx}");
        assert_eq!(
            a_records(&m.answers),
            BTreeSet::from([(member.fqdn(), member.ip)]),
            "A {} from {ctx}",
            member.fqdn()
        );
    }

    // SOA: primary = the lowest id's name, hostmaster.<zone>, the documented timers, and a
    // serial that is the Unix time of the last change.
    let m = ask(server, via, ZONE, RecordType::SOA);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{ctx}");
    assert!(m.metadata.authoritative, "AA on SOA from {ctx}");
    assert_eq!(m.answers.len(), 1, "one SOA from {ctx}");
    let (rec, soa) = soa_of(&m.answers).expect("an SOA");
    assert_eq!(rec.name.to_ascii(), ZONE);
    assert_eq!(soa.mname.to_ascii(), "kms1.kms.test.", "{ctx}");
    assert_eq!(soa.rname.to_ascii(), "hostmaster.kms.test.", "{ctx}");
    assert_eq!(
        (soa.refresh, soa.retry, soa.expire, soa.minimum),
        (60, 30, 86_400, TTL.min(30)),
        "SOA timers from {ctx} (minimum: min(30 s, dns-ttl))"
    );
    let serial = u64::from(soa.serial);
    assert!(
        serial > 1_600_000_000 && serial <= unix_now() + 5,
        "SOA serial {serial} is a recent Unix time ({ctx})"
    );

    // NS: every member.
    let m = ask(server, via, ZONE, RecordType::NS);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{ctx}");
    assert!(m.metadata.authoritative, "AA on NS from {ctx}");
    let all: BTreeSet<String> = c.members.iter().map(Member::fqdn).collect();
    assert_eq!(ns_targets(&m.answers), all, "NS from {ctx}");
}

/// REFUSED outside the zone; NXDOMAIN and NODATA with the SOA (negative TTL) inside.
fn check_negative(server: SocketAddr, via: Via) {
    let ctx = format!("{server} over {via:?}");
    for (qname, qtype) in [
        ("www.example.org.", RecordType::A),
        ("test.", RecordType::SOA),
        ("kms.test.example.", RecordType::SRV),
        ("_vlmcs._tcp.example.com.", RecordType::SRV),
    ] {
        let m = ask(server, via, qname, qtype);
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::Refused,
            "{qtype} {qname} from {ctx}"
        );
        assert!(
            m.answers.is_empty() && m.authorities.is_empty(),
            "{qname}: {m:?}"
        );
        assert!(!m.metadata.authoritative, "no AA outside the zone ({ctx})");
    }
    for (qname, qtype, rcode) in [
        ("nope.kms.test.", RecordType::A, ResponseCode::NXDomain),
        (
            "_vlmcs._udp.kms.test.",
            RecordType::SRV,
            ResponseCode::NXDomain,
        ),
        ("kms1.kms.test.", RecordType::AAAA, ResponseCode::NoError),
        (SRV_NAME, RecordType::TXT, ResponseCode::NoError),
    ] {
        let m = ask(server, via, qname, qtype);
        let what = format!("{qtype} {qname} from {ctx}");
        assert_eq!(m.metadata.response_code, rcode, "{what}");
        assert!(m.metadata.authoritative, "AA on {what}");
        assert!(m.answers.is_empty(), "{what}: {m:?}");
        let (rec, _) = soa_of(&m.authorities).unwrap_or_else(|| panic!("SOA in {what}"));
        assert_eq!(rec.name.to_ascii(), ZONE, "{what}");
        assert_eq!(rec.ttl, TTL.min(30), "negative TTL of {what}");
    }
}

/// AXFR: the whole zone, SOA first and last, from a node that allows 127.0.0.1; REFUSED from
/// one that does not, over UDP, and to a source outside the allowlist.
fn check_axfr(c: &DnsCluster) {
    let allowed = &c.members[0];
    assert!(allowed.axfr_allow);
    let messages = axfr(allowed.dns_addr(), None);
    assert!(
        messages
            .iter()
            .all(|m| m.metadata.response_code == ResponseCode::NoError),
        "AXFR from node 1: {messages:?}"
    );
    let records: Vec<Record> = messages.iter().flat_map(|m| m.answers.clone()).collect();
    assert!(records.len() >= 2, "{records:?}");
    assert_eq!(records.first().unwrap().record_type(), RecordType::SOA);
    assert_eq!(records.last().unwrap().record_type(), RecordType::SOA);
    let srv = srv_set(&records);
    assert_eq!(srv, c.expected_srv(&[1, 2, 3]), "SRV in the AXFR");
    let addrs: BTreeSet<(String, Ipv4Addr)> = c.members.iter().map(|m| (m.fqdn(), m.ip)).collect();
    assert_eq!(a_records(&records), addrs, "A in the AXFR");
    let all: BTreeSet<String> = c.members.iter().map(Member::fqdn).collect();
    assert_eq!(ns_targets(&records), all, "NS in the AXFR");

    // Over UDP: always refused.
    let m = ask(allowed.dns_addr(), Via::Udp, ZONE, RecordType::AXFR);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused, "AXFR/UDP");
    // From 127.0.0.2, outside 127.0.0.1/32.
    let refused = axfr(allowed.dns_addr(), Some(Ipv4Addr::new(127, 0, 0, 2)));
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].metadata.response_code, ResponseCode::Refused);
    assert!(refused[0].answers.is_empty());
    // A node without --dns-axfr-allow.
    for other in &c.members[1..] {
        let refused = axfr(other.dns_addr(), None);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(
            refused[0].metadata.response_code,
            ResponseCode::Refused,
            "AXFR from node {} (no --dns-axfr-allow)",
            other.id
        );
        assert!(refused[0].answers.is_empty());
    }
}

/// The same as [`check_zone`] and [`check_negative`], as dig sees it.
fn dig_zone(c: &DnsCluster, server: SocketAddr, via: Via, healthy: &[u64]) {
    let ctx = format!("dig {server} over {via:?}");
    let d = dig(server, via, None, &["SRV", SRV_NAME]);
    assert_eq!(d.status, "NOERROR", "{ctx}: {}", d.raw);
    assert!(d.flags.iter().any(|f| f == "aa"), "aa in {}", d.raw);
    let mut srv: Vec<Srv> = Dig::records(&d.answer, "SRV")
        .iter()
        .map(|r| {
            assert_eq!(r[0], SRV_NAME);
            assert_eq!(r[1], TTL.to_string());
            (
                r[4].parse().unwrap(),
                r[5].parse().unwrap(),
                r[6].parse().unwrap(),
                r[7].clone(),
            )
        })
        .collect();
    srv.sort();
    assert_eq!(srv, c.expected_srv(healthy), "{ctx}: {}", d.raw);

    for member in &c.members {
        let d = dig(server, via, None, &["A", &member.fqdn()]);
        assert_eq!(d.status, "NOERROR", "{}", d.raw);
        assert!(d.flags.iter().any(|f| f == "aa"), "aa in {}", d.raw);
        let a: Vec<String> = Dig::records(&d.answer, "A")
            .iter()
            .map(|r| r[4].clone())
            .collect();
        assert_eq!(a, vec![member.ip.to_string()], "{ctx}: {}", d.raw);
    }

    let d = dig(server, via, None, &["SOA", ZONE]);
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert!(d.flags.iter().any(|f| f == "aa"), "aa in {}", d.raw);
    let soa = Dig::records(&d.answer, "SOA");
    assert_eq!(soa.len(), 1, "{}", d.raw);
    assert_eq!(
        soa[0][4..],
        [
            "kms1.kms.test.".to_string(),
            "hostmaster.kms.test.".to_string(),
            soa[0][6].clone(),
            "60".into(),
            "30".into(),
            "86400".into(),
            TTL.min(30).to_string()
        ],
        "{}",
        d.raw
    );

    let d = dig(server, via, None, &["NS", ZONE]);
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert!(d.flags.iter().any(|f| f == "aa"), "aa in {}", d.raw);
    let ns: BTreeSet<String> = Dig::records(&d.answer, "NS")
        .iter()
        .map(|r| r[4].clone())
        .collect();
    let all: BTreeSet<String> = c.members.iter().map(Member::fqdn).collect();
    assert_eq!(ns, all, "{}", d.raw);

    let d = dig(server, via, None, &["A", "www.example.org"]);
    assert_eq!(d.status, "REFUSED", "{}", d.raw);
    assert!(d.answer.is_empty() && d.authority.is_empty(), "{}", d.raw);
    let d = dig(server, via, None, &["A", "nope.kms.test"]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    assert!(d.flags.iter().any(|f| f == "aa"), "aa in {}", d.raw);
    assert_eq!(Dig::records(&d.authority, "SOA").len(), 1, "{}", d.raw);
}

/// AXFR as dig sees it.
fn dig_axfr(c: &DnsCluster) {
    let d = dig(c.members[0].dns_addr(), Via::Tcp, None, &["AXFR", ZONE]);
    let types: Vec<&str> = d
        .bare
        .iter()
        .filter_map(|r| r.get(3))
        .map(|s| s.as_str())
        .collect();
    assert_eq!(types.first(), Some(&"SOA"), "{}", d.raw);
    assert_eq!(types.last(), Some(&"SOA"), "{}", d.raw);
    for (rtype, n) in [("SRV", 3), ("A", 3), ("NS", 3), ("SOA", 2)] {
        assert_eq!(
            types.iter().filter(|t| **t == rtype).count(),
            n,
            "{rtype} in {}",
            d.raw
        );
    }
    let refused = [
        dig(c.members[1].dns_addr(), Via::Tcp, None, &["AXFR", ZONE]),
        dig(
            c.members[0].dns_addr(),
            Via::Tcp,
            Some(Ipv4Addr::new(127, 0, 0, 2)),
            &["AXFR", ZONE],
        ),
    ];
    for d in refused {
        assert!(d.raw.contains("Transfer failed"), "{}", d.raw);
        assert!(d.bare.is_empty(), "{}", d.raw);
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn three_nodes_answer_on_every_node_and_follow_health() {
    let started = Instant::now();
    let use_dig = !skip_dig("three_nodes_answer_on_every_node_and_follow_health");
    let mut c = DnsCluster::start();
    let all = [1, 2, 3];

    // 1. Every node lists every node, with its own priority, weight and KMS port.
    let took = c.wait_srv(&all, &all, Duration::from_secs(60));
    eprintln!("dns: all three nodes in every node's SRV answers after {took:?}");
    for m in &c.members {
        for via in BOTH {
            check_zone(&c, m.dns_addr(), via, &all);
            // 3. REFUSED outside, NXDOMAIN/NODATA with the SOA inside.
            check_negative(m.dns_addr(), via);
            if use_dig {
                dig_zone(&c, m.dns_addr(), via, &all);
            }
        }
    }
    // 4. Zone transfers.
    check_axfr(&c);
    if use_dig {
        dig_axfr(&c);
    }

    // 2. kill -9 of node 3: it leaves every other node's SRV answers within 10 s, while its
    // NS and A records stay (it is still a member); the SOA serial rises.
    let soa_serial = |server| {
        let m = ask(server, Via::Udp, ZONE, RecordType::SOA);
        soa_of(&m.answers).unwrap().1.serial
    };
    let before = soa_serial(c.members[0].dns_addr());
    std::thread::sleep(Duration::from_millis(1100)); // a change in a later second
    c.nodes[2].kill9();
    let took = c.wait_srv(&[1, 2], &[1, 2], FAILOVER_LIMIT);
    eprintln!("dns: killed node left the other nodes' SRV answers after {took:?}");
    assert!(took <= FAILOVER_LIMIT);
    for m in &c.members[..2] {
        for via in BOTH {
            check_zone(&c, m.dns_addr(), via, &[1, 2]);
        }
        if use_dig {
            dig_zone(&c, m.dns_addr(), Via::Udp, &[1, 2]);
        }
    }
    let after = soa_serial(c.members[0].dns_addr());
    assert!(after > before, "SOA serial rose: {before} → {after}");

    // Restarted with the same data directory and flags: back in every node's answers.
    c.nodes[2].restart();
    assert_eq!(dns_listen(&c.nodes[2]), Some(c.members[2].dns_addr()));
    let took = c.wait_srv(&all, &all, Duration::from_secs(30));
    eprintln!("dns: restarted node back in every node's SRV answers after {took:?}");
    for m in &c.members {
        for via in BOTH {
            check_zone(&c, m.dns_addr(), via, &all);
        }
        if use_dig {
            dig_zone(&c, m.dns_addr(), Via::Tcp, &all);
        }
    }
    eprintln!("dns: three-node test took {:?}", started.elapsed());
}

/// Deterministic filler bytes (xorshift), so a failure reproduces.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn bad_packets_and_a_flood_are_dropped_while_other_sources_are_answered() {
    let use_dig = !skip_dig("bad_packets_and_a_flood_are_dropped_while_other_sources_are_answered");
    let dir = tempfile::tempdir().unwrap();
    let (node, server) = start_in_zone(dir.path(), "solo");
    let kms_port = node.kms_addr().port();
    let good_ip = Ipv4Addr::new(127, 0, 0, 2);
    let flood_ip = Ipv4Addr::LOCALHOST;
    let want = vec![(0u16, 100u16, kms_port, "solo.kms.test.".to_string())];
    // A real query from 127.0.0.2: fully answered.
    let good = |what: &str| {
        let q = query(SRV_NAME, RecordType::SRV);
        let m = udp_ask_from(server, good_ip, &q)
            .unwrap_or_else(|| panic!("127.0.0.2 not answered ({what})"));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{what}");
        assert!(!m.metadata.truncation, "{what}");
        assert_eq!(srv_set(&m.answers), want, "{what}");
    };
    eventually(
        "the single node lists itself",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let m = udp_ask_from(server, good_ip, &query(SRV_NAME, RecordType::SRV))
                .ok_or_else(|| "no answer".to_string())?;
            let got = srv_set(&m.answers);
            if got == want {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        },
    );
    let metric = |series: &str| metric_value(&node.metrics(), series).unwrap_or(0.0);
    let dropped = |reason: &str| metric(&format!("kmsd_dns_dropped_total{{reason=\"{reason}\"}}"));
    let srv_noerror = || metric("kmsd_dns_queries_total{qtype=\"SRV\",rcode=\"NOERROR\"}");
    let (malformed0, oversized0, not_query0) = (
        dropped("malformed"),
        dropped("oversized"),
        dropped("not_a_query"),
    );

    // Garbage and truncated datagrams: silence, and the good source is still answered.
    let valid = query(SRV_NAME, RecordType::SRV).to_vec().unwrap();
    let mut header_only = valid[..12].to_vec(); // QDCOUNT=1, no question
    header_only[11] = 0;
    let malformed: Vec<(&str, Vec<u8>)> = vec![
        ("empty datagram", Vec::new()),
        ("5 bytes", noise(5, 1)),
        ("header claiming a question", header_only),
        (
            "query cut inside the name",
            valid[..valid.len() - 20].to_vec(),
        ),
        ("200 random bytes", noise(200, 2)),
        ("1000 random bytes", noise(1000, 3)),
    ];
    let bad = udp_socket(flood_ip);
    for (what, bytes) in &malformed {
        let reply = udp_exchange(&bad, server, bytes, SILENCE_WAIT, |_| true);
        assert!(reply.is_none(), "{what} was answered: {reply:?}");
        good(what);
    }
    // A response (QR=1): never answered (no reflection loops).
    let mut response = query(SRV_NAME, RecordType::SRV);
    response.metadata.message_type = MessageType::Response;
    let reply = udp_exchange(
        &bad,
        server,
        &response.to_vec().unwrap(),
        SILENCE_WAIT,
        |_| true,
    );
    assert!(reply.is_none(), "a response packet was answered");
    // Oversized: a valid query padded past 1232 bytes, and a 4000-byte one.
    for size in [1233, 1300, 4000] {
        let mut big = valid.clone();
        big.resize(size, 0);
        let reply = udp_exchange(&bad, server, &big, SILENCE_WAIT, |_| true);
        assert!(reply.is_none(), "a {size}-byte query was answered");
        good("after an oversized query");
    }
    // TCP: garbage is skipped and the connection still answers; an oversized frame closes it;
    // a connection stuck mid-frame does not block others.
    let mut stream = tcp_connect(server, None);
    tcp_send(&mut stream, &noise(100, 4));
    let q = query(SRV_NAME, RecordType::SRV);
    tcp_send(&mut stream, &q.to_vec().unwrap());
    let m = Message::from_vec(&tcp_recv(&mut stream).expect("answer after garbage")).unwrap();
    assert_eq!(
        m.metadata.id, q.metadata.id,
        "the garbage frame got no answer"
    );
    assert_eq!(srv_set(&m.answers), want);
    let mut stream = tcp_connect(server, None);
    stream.write_all(&2000u16.to_be_bytes()).unwrap();
    stream.write_all(&noise(2000, 5)).unwrap();
    let mut rest = Vec::new();
    let closed = stream.read_to_end(&mut rest);
    assert!(
        matches!(closed, Ok(0))
            || matches!(&closed, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "an oversized TCP frame closes the connection: {closed:?} {rest:?}"
    );
    let mut stuck = tcp_connect(server, None);
    stuck.write_all(&[0, 100, 1, 2, 3]).unwrap();
    let m = tcp_ask(server, &query(SRV_NAME, RecordType::SRV)).expect("answer beside a stuck one");
    assert_eq!(srv_set(&m.answers), want);
    drop(stuck);

    let wait_count = |what: &str, series: &str, at_least: f64| {
        let v = node.wait_metric(series, Duration::from_secs(5), |v| v >= at_least);
        assert!(v >= at_least, "{what}: {series} = {v}, want ≥ {at_least}");
    };
    wait_count(
        "garbage",
        "kmsd_dns_dropped_total{reason=\"malformed\"}",
        malformed0 + malformed.len() as f64 + 1.0,
    );
    wait_count(
        "oversized",
        "kmsd_dns_dropped_total{reason=\"oversized\"}",
        oversized0 + 4.0,
    );
    wait_count(
        "responses",
        "kmsd_dns_dropped_total{reason=\"not_a_query\"}",
        not_query0 + 1.0,
    );

    // A flood: 2000 queries as fast as possible from 127.0.0.1, while 127.0.0.2 keeps asking.
    let srv0 = srv_noerror();
    let limited0 = dropped("rate_limited");
    let qlen = valid.len();
    let flood = Arc::new(udp_socket(flood_ip));
    let flooding = Arc::new(AtomicBool::new(true));
    let receiver = {
        let flood = flood.clone();
        let flooding = flooding.clone();
        std::thread::spawn(move || {
            let (mut full, mut slips, mut other) = (0u32, 0u32, 0u32);
            let mut buf = vec![0u8; 65_535];
            let mut quiet_since = Instant::now();
            let mut last_reply = None;
            let hard_stop = Instant::now() + Duration::from_secs(30);
            while Instant::now() < hard_stop {
                match flood.recv_from(&mut buf) {
                    Ok((n, _)) => {
                        quiet_since = Instant::now();
                        last_reply = Some(quiet_since);
                        let m = Message::from_vec(&buf[..n]).expect("decodable");
                        if m.metadata.truncation {
                            assert!(m.answers.is_empty(), "a slip carries no records");
                            assert!(
                                n <= qlen,
                                "a slip is no larger than the query: {n} > {qlen}"
                            );
                            slips += 1;
                        } else if srv_set(&m.answers).len() == 1 {
                            full += 1;
                        } else {
                            other += 1;
                        }
                    }
                    Err(e) if is_timeout(&e) => {
                        if !flooding.load(Ordering::SeqCst)
                            && quiet_since.elapsed() > Duration::from_millis(500)
                        {
                            break;
                        }
                    }
                    Err(e) => panic!("flood receive: {e}"),
                }
            }
            (full, slips, other, last_reply)
        })
    };
    let good_during = {
        let flooding = flooding.clone();
        std::thread::spawn(move || {
            let (mut asked, mut answered, mut resent) = (0u32, 0u32, 0u32);
            while flooding.load(Ordering::SeqCst) && asked < 100 {
                asked += 1;
                let q = query(SRV_NAME, RecordType::SRV);
                // Retried like a stub resolver: a flood that outruns the server overflows its
                // socket buffer, and the kernel drops datagrams of every source alike.
                let (reply, sends) =
                    udp_ask_retrying(server, good_ip, &q, 3, Duration::from_millis(700));
                resent += sends - 1;
                if reply.is_some_and(|m| !m.metadata.truncation && m.answers.len() == 1) {
                    answered += 1;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (asked, answered, resent)
        })
    };
    let rcvbuf_errors0 = udp_rcvbuf_errors();
    let flood_start = Instant::now();
    let mut sent = 0u32;
    for _ in 0..2000 {
        let q = query(SRV_NAME, RecordType::SRV).to_vec().unwrap();
        if flood.send_to(&q, server).is_ok() {
            sent += 1;
        }
    }
    let flood_time = flood_start.elapsed();
    // Keep the good source asking a little past the flood's end.
    std::thread::sleep(Duration::from_millis(200));
    flooding.store(false, Ordering::SeqCst);
    let (full, slips, other, last_reply) = receiver.join().expect("receiver");
    let (asked, answered, resent) = good_during.join().expect("good client");
    eprintln!(
        "dns flood: sent {sent} in {flood_time:?}: {full} answered, {slips} TC slips, {other} \
         other; good source {answered}/{asked} answered ({resent} resends); kernel UDP \
         receive-buffer drops (whole host) {}",
        udp_rcvbuf_errors().saturating_sub(rcvbuf_errors0)
    );
    assert!(sent >= 1900, "the flood was sent ({sent})");
    assert_eq!(other, 0);
    assert!(
        asked >= 1 && answered == asked,
        "good source: {answered}/{asked}"
    );
    // Burst 100 plus 50/s from the first query sent to the last reply received (the server may
    // still work through its socket buffer after the last send), plus a little slack.
    let answering = last_reply.map_or(flood_time, |t| t.duration_since(flood_start));
    let allowed = 100.0 + 50.0 * answering.as_secs_f64() + 5.0;
    assert!(
        f64::from(full) <= allowed,
        "the flood got {full} answers, more than the rate limit allows ({allowed})"
    );
    assert!(
        full >= 50,
        "the first queries of the flood were answered ({full})"
    );
    assert!(
        slips >= 100,
        "every second limited query slips a TC=1 ({slips})"
    );
    good("after the flood");

    let limited = dropped("rate_limited") - limited0;
    // Every second limited query slips, so at least twice as many were limited.
    assert!(
        limited >= f64::from(2 * slips),
        "kmsd_dns_dropped_total{{reason=\"rate_limited\"}} rose by {limited} for {slips} slips"
    );
    let srv = srv_noerror() - srv0;
    assert!(
        srv >= f64::from(full + answered),
        "kmsd_dns_queries_total{{qtype=\"SRV\",rcode=\"NOERROR\"}} rose by {srv}, \
         want ≥ {full} + {answered}"
    );
    // Rate-limited, not banned: the flood source is answered again once its bucket refills.
    std::thread::sleep(Duration::from_millis(500));
    let m = udp_ask_from(server, flood_ip, &query(SRV_NAME, RecordType::SRV))
        .expect("the flood source is answered again");
    assert_eq!(srv_set(&m.answers), want);
    if use_dig {
        let d = dig(server, Via::Udp, Some(good_ip), &["SRV", SRV_NAME]);
        assert_eq!(d.status, "NOERROR", "{}", d.raw);
        assert_eq!(Dig::records(&d.answer, "SRV").len(), 1, "{}", d.raw);
    }
}

#[test]
fn without_a_zone_nothing_listens_on_the_dns_port() {
    let ip = Ipv4Addr::LOCALHOST;
    let port = free_port(ip, &[]);
    let dns = SocketAddr::new(IpAddr::V4(ip), port);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let dns_listen_arg = dns.to_string();
    let node = Kmsd::start_raw(
        dir.path(),
        &[
            "--data-dir",
            data,
            "--kms-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--dns-listen",
            &dns_listen_arg,
            "--log-format",
            "json",
        ],
        &[],
    );
    let messages: Vec<String> = node
        .log_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["message"].as_str().map(str::to_string))
        .collect();
    assert!(
        messages.iter().any(|m| m.starts_with("DNS disabled")),
        "a \"DNS disabled\" log line: {messages:?}"
    );
    assert!(dns_listen(&node).is_none(), "no \"DNS serving\" line");
    // Nothing answers on the port, over UDP or TCP…
    let sock = udp_socket(ip);
    let reply = udp_exchange(
        &sock,
        dns,
        &query(SRV_NAME, RecordType::SRV).to_vec().unwrap(),
        SILENCE_WAIT,
        |_| true,
    );
    assert!(reply.is_none(), "something answered on {dns}");
    let connect = TcpStream::connect_timeout(&dns, ANSWER_WAIT);
    assert!(connect.is_err(), "something accepts TCP on {dns}");
    // …because nothing holds it: both can be bound while kmsd runs.
    UdpSocket::bind(dns).expect("the DNS port is free (UDP)");
    TcpListener::bind(dns).expect("the DNS port is free (TCP)");
}

/// A hickory resolver whose only name server is `server`, reached over `protocols` in that order
/// (UDP first, TCP on truncation, as a stub resolver does), never the hosts file.
fn stub_resolver(server: SocketAddr, protocols: &[ProtocolConfig]) -> TokioResolver {
    let connections = protocols
        .iter()
        .map(|p| {
            let mut c = ConnectionConfig::new(p.clone());
            c.port = server.port();
            c
        })
        .collect();
    let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
        server.ip(),
        true,
        connections,
    )]);
    let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
    let opts = builder.options_mut();
    opts.use_hosts_file = ResolveHosts::Never;
    opts.timeout = ANSWER_WAIT;
    builder.build().expect("a resolver")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stub_resolver_finds_the_node_through_srv() {
    let dir = tempfile::tempdir().unwrap();
    let (node, server) = start_in_zone(dir.path(), "resolved");
    let target = "resolved.kms.test.";
    // The SRV target is <name>.<zone> on the KMS port; its address is the advertised one (by
    // default the gRPC listen address, 127.0.0.1 here).
    let want_srv = vec![(0u16, 100u16, node.kms_addr().port(), target.to_string())];
    let want_a = BTreeSet::from([(target.to_string(), Ipv4Addr::LOCALHOST)]);
    for (how, protocols) in [
        (
            "UDP and TCP",
            &[ProtocolConfig::Udp, ProtocolConfig::Tcp][..],
        ),
        ("TCP only", &[ProtocolConfig::Tcp][..]),
    ] {
        let resolver = stub_resolver(server, protocols);
        // A node lists itself once it counts itself healthy: ask again until then, without the
        // resolver's cached negative answer.
        let deadline = Instant::now() + Duration::from_secs(30);
        let srv = loop {
            let last = match resolver.srv_lookup(SRV_NAME).await {
                Ok(l) if !srv_set(l.answers()).is_empty() => break srv_set(l.answers()),
                Ok(l) => format!("{:?}", l.answers()),
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "{how}: no SRV record for {SRV_NAME} within 30 s; last: {last}"
            );
            resolver.clear_cache();
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(srv, want_srv, "{how}: SRV {SRV_NAME}");
        let a = resolver
            .ipv4_lookup(srv[0].3.as_str())
            .await
            .unwrap_or_else(|e| panic!("{how}: A {target}: {e}"));
        assert_eq!(a_records(a.answers()), want_a, "{how}: A {target}");
        let ips: Vec<IpAddr> = resolver
            .lookup_ip(target)
            .await
            .unwrap_or_else(|e| panic!("{how}: lookup_ip {target}: {e}"))
            .iter()
            .collect();
        assert_eq!(
            ips,
            [IpAddr::V4(Ipv4Addr::LOCALHOST)],
            "{how}: lookup_ip {target}"
        );

        // kmsd is no resolver: a name outside its zone is refused, and the library says so.
        let outside = "_vlmcs._tcp.example.org.";
        match resolver.srv_lookup(outside).await {
            Err(NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused))) => {}
            other => panic!("{how}: SRV {outside}: want REFUSED, got {other:?}"),
        }
    }
}
