//! A real [`DnsServer`] on 127.0.0.1:0 and small raw UDP/TCP clients built on hickory-proto's
//! message encoding.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use kms_core::{ClusterView, MemberView};
use kms_dns::{DnsConfig, DnsError, DnsObserver, DnsServer, parse_zone};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;

pub const ZONE: &str = "kms.example.com.";
pub const SRV_NAME: &str = "_vlmcs._tcp.kms.example.com.";
/// How long a client waits for an answer that should come.
pub const ANSWER_WAIT: Duration = Duration::from_secs(3);
/// How long a client waits to conclude that no answer comes.
pub const SILENCE_WAIT: Duration = Duration::from_millis(300);

pub fn member(id: u64, name: &str, host: &str, healthy: bool) -> MemberView {
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

pub fn three_nodes() -> ClusterView {
    ClusterView {
        local_id: 1,
        leader_id: Some(1),
        term: 3,
        members: vec![
            member(1, "kms1", "127.0.0.11", true),
            member(2, "kms2", "127.0.0.12", true),
            member(3, "kms3", "::1", true),
        ],
        generation: 1,
    }
}

pub fn cfg() -> DnsConfig {
    DnsConfig {
        zones: vec![parse_zone(ZONE).unwrap()],
        ..DnsConfig::default()
    }
}

/// Counts what the server reports.
#[derive(Debug, Default)]
pub struct Counts {
    pub queries: Mutex<HashMap<(String, String), u64>>,
    pub dropped: Mutex<HashMap<String, u64>>,
}

impl Counts {
    pub fn dropped(&self, reason: &str) -> u64 {
        self.dropped
            .lock()
            .unwrap()
            .get(reason)
            .copied()
            .unwrap_or(0)
    }

    pub fn queries(&self, qtype: &str, rcode: &str) -> u64 {
        self.queries
            .lock()
            .unwrap()
            .get(&(qtype.to_string(), rcode.to_string()))
            .copied()
            .unwrap_or(0)
    }
}

impl DnsObserver for Counts {
    fn query(&self, qtype: &str, rcode: &str) {
        *self
            .queries
            .lock()
            .unwrap()
            .entry((qtype.into(), rcode.into()))
            .or_default() += 1;
    }

    fn dropped(&self, reason: &str) {
        *self
            .dropped
            .lock()
            .unwrap()
            .entry(reason.into())
            .or_default() += 1;
    }
}

pub struct TestServer {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub views: watch::Sender<ClusterView>,
    pub counts: Arc<Counts>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), DnsError>>>,
}

impl TestServer {
    pub async fn start(view: ClusterView, cfg: DnsConfig) -> Self {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (udp_addr, tcp_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        let (views, rx) = watch::channel(view);
        let counts = Arc::new(Counts::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(DnsServer::serve(udp, tcp, rx, cfg, counts.clone(), stopped));
        Self {
            udp: udp_addr,
            tcp: tcp_addr,
            views,
            counts,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Signal shutdown and wait for `serve` to return.
    pub async fn stop(mut self) -> Result<(), DnsError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().unwrap();
        timeout(ANSWER_WAIT, task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task did not panic")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

pub fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

pub fn query(qname: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    m.add_query(Query::query(name(qname), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.edns = Some(e);
    }
    m
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(1000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A UDP client bound to `ip` (a loopback address).
pub async fn udp_client(ip: &str) -> UdpSocket {
    UdpSocket::bind(SocketAddr::new(ip.parse::<IpAddr>().unwrap(), 0))
        .await
        .unwrap()
}

/// Send raw bytes and wait up to `wait` for one datagram back.
pub async fn udp_raw(
    sock: &UdpSocket,
    server: SocketAddr,
    bytes: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    sock.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    match timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

/// One query over UDP from 127.0.0.1; panics if no answer comes.
pub async fn udp_ask(server: SocketAddr, q: &Message) -> Message {
    let sock = udp_client("127.0.0.1").await;
    udp_ask_on(&sock, server, q)
        .await
        .expect("an answer over UDP")
}

/// One query over UDP on `sock`; `None` if nothing comes back.
pub async fn udp_ask_on(sock: &UdpSocket, server: SocketAddr, q: &Message) -> Option<Message> {
    let bytes = udp_raw(sock, server, &q.to_vec().unwrap(), ANSWER_WAIT).await?;
    let m = Message::from_vec(&bytes).expect("a decodable response");
    assert_eq!(m.metadata.id, q.metadata.id, "response id matches");
    Some(m)
}

/// Write one length-prefixed frame.
pub async fn tcp_send(stream: &mut TcpStream, bytes: &[u8]) {
    let mut frame = (bytes.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(bytes);
    stream.write_all(&frame).await.unwrap();
}

/// Read one length-prefixed frame; `None` on EOF, error or timeout.
pub async fn tcp_recv(stream: &mut TcpStream, wait: Duration) -> Option<Message> {
    let mut len = [0u8; 2];
    timeout(wait, stream.read_exact(&mut len))
        .await
        .ok()?
        .ok()?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    timeout(wait, stream.read_exact(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(Message::from_vec(&buf).expect("a decodable response"))
}

/// One query over a fresh TCP connection; panics if no answer comes.
pub async fn tcp_ask(server: SocketAddr, q: &Message) -> Message {
    let mut stream = TcpStream::connect(server).await.unwrap();
    tcp_send(&mut stream, &q.to_vec().unwrap()).await;
    tcp_recv(&mut stream, ANSWER_WAIT)
        .await
        .expect("an answer over TCP")
}

/// A zone transfer over TCP: every message until the closing SOA (or the first error).
pub async fn tcp_transfer(server: SocketAddr, q: &Message) -> Vec<Message> {
    let mut stream = TcpStream::connect(server).await.unwrap();
    tcp_send(&mut stream, &q.to_vec().unwrap()).await;
    let mut out = Vec::new();
    let mut soas = 0;
    while let Some(m) = tcp_recv(&mut stream, ANSWER_WAIT).await {
        soas += m
            .answers
            .iter()
            .filter(|r| r.record_type() == RecordType::SOA)
            .count();
        let failed = m.metadata.response_code != hickory_proto::op::ResponseCode::NoError;
        out.push(m);
        if failed || soas >= 2 || out.len() > 100 {
            break;
        }
    }
    out
}

/// SRV targets in an answer, sorted.
pub fn srv_targets(m: &Message) -> Vec<String> {
    let mut t: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s.target.to_string()),
            _ => None,
        })
        .collect();
    t.sort();
    t
}

/// SOA serial in the answer section.
pub fn soa_serial(m: &Message) -> u32 {
    m.answers
        .iter()
        .find_map(|r| match &r.data {
            RData::SOA(s) => Some(s.serial),
            _ => None,
        })
        .expect("an SOA in the answer")
}
