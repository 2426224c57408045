//! Client side of the end-to-end tests: products, machine identities, verified activation
//! calls through kmsctl's client, a raw DCE/RPC connection for malformed input, and the
//! failover clients and background load of the multi-node tiers (cluster, fault).
//!
//! Everything here verifies responses exactly as a Windows client would (kms-wire's
//! `verify_response`, every check of PROTOCOL.md §6.7), and every wait is bounded.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kms_wire::kms::{self, ActivationRequest, ProtocolVersion, VerifiedResponse};
use kms_wire::rpc::{self, BindStep, CallError, ClientAssociation, ClientOptions, Syntax};
use kms_wire::{Guid, Hresult};
use kmsctl::catalog::{self, ProductSelection};
use kmsctl::client::{self, ClientError, ClientIdentity, ConnectionOptions, KmsConnection, Reply};
use kmsctl::exit::ExitClass;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

/// Bound on every connect and every reply in these tests (generous: debug builds, 2 cores,
/// many nodes at once).
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A product from the catalog (edition or product group name).
pub fn product(name: &str) -> ProductSelection {
    catalog::lookup(name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Windows 11 Enterprise: Windows pool, N = 25, protocol v6.
pub fn windows_client() -> ProductSelection {
    let p = product("Windows 11 Enterprise");
    assert_eq!(p.required_client_count, 25);
    p
}

/// Windows Server 2022 Standard: Windows pool, N = 5, protocol v6.
pub fn windows_server() -> ProductSelection {
    let p = product("Windows Server 2022 Standard");
    assert_eq!(p.required_client_count, 5);
    p
}

/// Office 2016 (product group): Office 2013+ pool, N = 5, protocol v6.
pub fn office2016() -> ProductSelection {
    product("Office 2016")
}

/// Office 2013 (product group): Office 2013+ pool, N = 5, protocol v5.
pub fn office2013() -> ProductSelection {
    product("Office 2013")
}

/// Office 2010 (product group): its own pool, N = 5, protocol v4.
pub fn office2010() -> ProductSelection {
    product("Office 2010")
}

/// A new machine: random CMID, plausible workstation name.
pub fn machine(p: &ProductSelection) -> ClientIdentity {
    ClientIdentity {
        cmid: client::random_cmid(),
        workstation: client::random_workstation(p.is_server),
        is_vm: false,
        license_status: 2,
        binding_expiration: 43200,
    }
}

/// The request `who` sends for `p` in protocol `v` with the current time.
pub fn request(
    p: &ProductSelection,
    who: &ClientIdentity,
    v: ProtocolVersion,
) -> ActivationRequest {
    client::build_request(v, p, who, 0)
}

/// Connection options: NDR64/BTFN offered or not, Windows call sequence.
pub fn options(ndr64: bool, btfn: bool) -> ConnectionOptions {
    ConnectionOptions::new(ndr64, btfn, TIMEOUT)
}

/// Connect and bind like Windows (NDR32 + NDR64 + BTFN).
pub async fn connect(addr: SocketAddr) -> KmsConnection {
    KmsConnection::connect(addr, options(true, true))
        .await
        .unwrap_or_else(|e| panic!("connect/bind {addr}: {e}"))
}

/// Send `req` on `conn`; panics on anything but a verified answer.
pub async fn call(conn: &mut KmsConnection, req: &ActivationRequest) -> (Syntax, Reply) {
    let out = conn
        .activate(req)
        .await
        .unwrap_or_else(|e| panic!("activation call failed: {e}"));
    (out.syntax, out.reply)
}

/// The verified success response, or a panic naming `what`.
pub fn granted(reply: Reply, what: &str) -> VerifiedResponse {
    match reply {
        Reply::Activated(v) => v,
        Reply::Refused(h) => panic!("{what}: refused with {h}"),
    }
}

/// The refusal's HRESULT, or a panic naming `what`.
pub fn refused(reply: Reply, what: &str) -> Hresult {
    match reply {
        Reply::Refused(h) => h,
        Reply::Activated(v) => panic!(
            "{what}: activated (count {}) but a refusal was expected",
            v.response.current_count
        ),
    }
}

/// One machine activating on its own new connection with its product's default protocol
/// (what a real client does); returns the verified response.
pub async fn activate(
    addr: SocketAddr,
    p: &ProductSelection,
    who: &ClientIdentity,
) -> VerifiedResponse {
    activate_v(addr, p, who, p.default_protocol).await
}

/// Like [`activate`] with an explicit protocol version.
pub async fn activate_v(
    addr: SocketAddr,
    p: &ProductSelection,
    who: &ClientIdentity,
    v: ProtocolVersion,
) -> VerifiedResponse {
    let mut conn = connect(addr).await;
    let (_, reply) = call(&mut conn, &request(p, who, v)).await;
    let r = granted(reply, &format!("{} {}", p.name, who.cmid));
    assert_eq!(r.response.client_machine_id, who.cmid, "CMID echoed");
    assert_eq!(r.response.version, v, "version echoed");
    r
}

/// How a read on a raw connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// A complete PDU.
    Pdu(Vec<u8>),
    /// The host closed the connection (FIN or RST).
    Closed,
    /// Nothing complete arrived in time.
    TimedOut,
}

/// A TCP connection to the KMS port driven byte by byte: valid BIND/REQUEST sequences from
/// kms-wire's client association, or anything else the test writes.
#[derive(Debug)]
pub struct RawConn {
    /// The socket.
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// The client association (contexts, call ids) used by [`RawConn::bind`] and
    /// [`RawConn::activate`].
    pub assoc: ClientAssociation,
}

impl RawConn {
    /// TCP connect (no BIND).
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Self::from_stream(stream)
    }

    /// TCP connect from a given local address (e.g. 127.0.0.2, another loopback source).
    pub async fn connect_from(local: IpAddr, addr: SocketAddr) -> std::io::Result<RawConn> {
        let sock = if local.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        sock.bind(SocketAddr::new(local, 0))?;
        let stream = tokio::time::timeout(TIMEOUT, sock.connect(addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect"))??;
        Ok(Self::from_stream(stream))
    }

    fn from_stream(stream: TcpStream) -> RawConn {
        let _ = stream.set_nodelay(true);
        RawConn {
            stream,
            buf: Vec::new(),
            assoc: ClientAssociation::new(ClientOptions::default()),
        }
    }

    /// BIND (and ALTER_CONTEXT) like Windows with `opts`.
    pub async fn bind_with(&mut self, opts: ClientOptions) -> Result<(), String> {
        self.assoc = ClientAssociation::new(opts);
        let bind = self.assoc.bind_pdu().map_err(|e| e.to_string())?;
        let ack = self.round_trip(&bind).await?;
        match self.assoc.on_bind_ack(&ack).map_err(|e| e.to_string())? {
            BindStep::SendAlterContext(alter) => {
                let resp = self.round_trip(&alter).await?;
                self.assoc
                    .on_alter_context_resp(&resp)
                    .map_err(|e| e.to_string())?;
            }
            BindStep::Ready => {}
        }
        Ok(())
    }

    /// BIND like Windows (NDR32 + NDR64 + BTFN, then ALTER_CONTEXT for NDR32).
    pub async fn bind(&mut self) {
        self.bind_with(ClientOptions::default())
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
    }

    /// Write bytes.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Read one PDU (framed by its header), or see the connection end, within `timeout`.
    pub async fn read_pdu(&mut self, timeout: Duration) -> ReadEnd {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut chunk = [0u8; 4096];
        loop {
            match rpc::frame_len(&self.buf, 65535) {
                Ok(Some(n)) => return ReadEnd::Pdu(self.buf.drain(..n).collect()),
                Ok(None) => {}
                Err(e) => panic!("host sent an unframeable reply: {e}"),
            }
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return ReadEnd::TimedOut,
                Ok(Ok(0)) | Ok(Err(_)) => return ReadEnd::Closed,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Write `pdu` and read the reply PDU.
    pub async fn round_trip(&mut self, pdu: &[u8]) -> Result<Vec<u8>, String> {
        self.send(pdu).await.map_err(|e| format!("write: {e}"))?;
        match self.read_pdu(TIMEOUT).await {
            ReadEnd::Pdu(p) => Ok(p),
            other => Err(format!("no reply: {other:?}")),
        }
    }

    /// One verified activation call through the association.
    pub async fn activate(&mut self, req: &ActivationRequest) -> Result<Reply, String> {
        let (msg, ctx) = kms::encode_request(req, client::random_iv());
        let pdu = self.assoc.request_pdu(&msg).map_err(|e| e.to_string())?;
        let reply = self.round_trip(&pdu).await?;
        match self.assoc.on_response(&reply) {
            Ok(m) => kms::verify_response(&ctx, &m)
                .map(Reply::Activated)
                .map_err(|e| format!("verify: {e}")),
            Err(CallError::Kms(h)) => Ok(Reply::Refused(h)),
            Err(e) => Err(e.to_string()),
        }
    }

    /// One call with raw KMS message bytes through the association: the response message or
    /// the HRESULT of a refusal (RPC layer checked strictly, KMS message not verified).
    pub async fn call_raw(&mut self, message: &[u8]) -> Result<Result<Vec<u8>, Hresult>, String> {
        let pdu = self.assoc.request_pdu(message).map_err(|e| e.to_string())?;
        let reply = self.round_trip(&pdu).await?;
        match self.assoc.on_response(&reply) {
            Ok(m) => Ok(Ok(m)),
            Err(CallError::Kms(h)) => Ok(Err(h)),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Wait up to `within` for the host to close the connection; returns how long it took, or
    /// None if it is still open (any PDU received meanwhile is a test failure).
    pub async fn closed_within(&mut self, within: Duration) -> Option<Duration> {
        let start = Instant::now();
        match self.read_pdu(within).await {
            ReadEnd::Closed => Some(start.elapsed()),
            ReadEnd::TimedOut => None,
            ReadEnd::Pdu(p) => panic!("expected the connection to close, got a PDU {p:02x?}"),
        }
    }
}

/// A REQUEST PDU with arbitrary context, opnum and stub.
pub fn request_pdu(call_id: u32, p_cont_id: u16, opnum: u16, stub: &[u8]) -> Vec<u8> {
    rpc::Request {
        header: rpc::Header::new(rpc::ptype::REQUEST, rpc::pfc::FIRST_LAST, call_id),
        alloc_hint: u32::try_from(stub.len()).unwrap_or(u32::MAX),
        p_cont_id,
        opnum,
        object: None,
        stub,
    }
    .encode()
}

/// A valid NDR32 request stub carrying `message`.
pub fn ndr32_stub(message: &[u8]) -> Vec<u8> {
    let mut stub = Vec::new();
    rpc::encode_request_stub(Syntax::Ndr32, message, &mut stub);
    stub
}

/// Decode a FAULT: (call_id, status). Panics if `pdu` is not a FAULT.
pub fn fault_status(pdu: &[u8]) -> (u32, u32) {
    let f = rpc::Fault::decode(pdu).unwrap_or_else(|e| panic!("expected a FAULT: {e} {pdu:02x?}"));
    (f.header.call_id, f.status)
}

/// A well-behaved client running in the background while a test attacks the node: every
/// `every` it opens a new connection (from `source`, if given), activates a new machine and
/// renews an earlier one, verifying both.
#[derive(Debug)]
pub struct GoodClient {
    stop: Arc<AtomicBool>,
    results: Arc<Mutex<(u64, Vec<String>)>>,
    task: tokio::task::JoinHandle<()>,
}

impl GoodClient {
    /// Start it.
    pub fn spawn(addr: SocketAddr, source: Option<IpAddr>, every: Duration) -> GoodClient {
        let stop = Arc::new(AtomicBool::new(false));
        let results = Arc::new(Mutex::new((0u64, Vec::new())));
        let (stop2, results2) = (stop.clone(), results.clone());
        let task = tokio::spawn(async move {
            let p = windows_client();
            let first = machine(&p);
            let mut i = 0u64;
            while !stop2.load(Ordering::SeqCst) {
                i += 1;
                let outcome = async {
                    let mut c = match source {
                        Some(ip) => RawConn::connect_from(ip, addr)
                            .await
                            .map_err(|e| format!("connect: {e}"))?,
                        None => RawConn::connect(addr).await,
                    };
                    c.bind_with(ClientOptions::default()).await?;
                    let who = if i.is_multiple_of(2) {
                        first.clone()
                    } else {
                        machine(&p)
                    };
                    for _ in 0..2 {
                        match c.activate(&request(&p, &who, p.default_protocol)).await? {
                            Reply::Activated(_) => {}
                            Reply::Refused(h) => return Err(format!("refused {h}")),
                        }
                    }
                    Ok::<(), String>(())
                };
                let r = tokio::time::timeout(TIMEOUT, outcome)
                    .await
                    .unwrap_or_else(|_| Err("timed out".into()));
                {
                    let mut g = results2.lock().unwrap();
                    match r {
                        Ok(()) => g.0 += 1,
                        Err(e) => g.1.push(e),
                    }
                }
                tokio::time::sleep(every).await;
            }
        });
        GoodClient {
            stop,
            results,
            task,
        }
    }

    /// Stop it and assert it was served every time, at least `min_rounds` times.
    pub async fn finish(self, min_rounds: u64) {
        self.stop.store(true, Ordering::SeqCst);
        tokio::time::timeout(TIMEOUT * 2, self.task)
            .await
            .expect("good client did not stop")
            .expect("good client panicked");
        let (ok, errors) = self.results.lock().unwrap().clone();
        assert!(
            errors.is_empty(),
            "the good client failed {} time(s) ({ok} ok): {errors:?}",
            errors.len()
        );
        assert!(ok >= min_rounds, "the good client ran only {ok} rounds");
    }
}

/// A GUID that is in no catalog.
pub fn unknown_guid() -> Guid {
    client::random_cmid()
}

// ---------------------------------------------------------------------------------------------
// Clients of a multi-node cluster (cluster and fault tiers): failover like Windows, and
// background load

/// Bound on one activation (connect, BIND, reply). Longer than the 2 s commit timeout after
/// which a node answers in degraded mode, so a live node always answers within it.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How one activation attempt at one address ended.
#[derive(Debug)]
pub enum Attempt {
    /// A verified success response for this machine.
    Granted(Box<VerifiedResponse>),
    /// The address could not be used (connection refused, reset, closed or timed out): a
    /// Windows client tries the next KMS host.
    Unreachable(String),
    /// An HRESULT refusal or an invalid response: a failed activation.
    Failed(String),
}

/// One machine activating on a new connection to `addr`, verified like Windows does.
pub async fn attempt(addr: SocketAddr, p: &ProductSelection, who: &ClientIdentity) -> Attempt {
    let classify = |e: ClientError| match e.class() {
        ExitClass::Connection => Attempt::Unreachable(format!("{addr}: {e}")),
        _ => Attempt::Failed(format!("{addr}: {e}")),
    };
    let opts = ConnectionOptions::new(true, true, CALL_TIMEOUT);
    let mut conn = match KmsConnection::connect(addr, opts).await {
        Ok(c) => c,
        Err(e) => return classify(e),
    };
    match conn.activate(&request(p, who, p.default_protocol)).await {
        Ok(out) => match out.reply {
            Reply::Activated(v) if v.response.client_machine_id == who.cmid => {
                Attempt::Granted(Box::new(v))
            }
            Reply::Activated(v) => Attempt::Failed(format!(
                "{addr}: CMID {} not echoed (got {})",
                who.cmid, v.response.client_machine_id
            )),
            Reply::Refused(h) => Attempt::Failed(format!("{addr}: refused with {h}")),
        },
        Err(e) => classify(e),
    }
}

/// Like a Windows client with several SRV records: try `addrs` in turn starting at `first`,
/// moving on only when an address is unreachable. Returns the index of the address that
/// answered and the response, plus how many addresses were skipped.
pub async fn activate_failover(
    addrs: &[SocketAddr],
    first: usize,
    p: &ProductSelection,
    who: &ClientIdentity,
) -> (Result<(usize, VerifiedResponse), String>, u64) {
    let mut unreachable = Vec::new();
    for k in 0..addrs.len() {
        let i = (first + k) % addrs.len();
        match attempt(addrs[i], p, who).await {
            Attempt::Granted(v) => return (Ok((i, *v)), k as u64),
            Attempt::Failed(e) => return (Err(e), k as u64),
            Attempt::Unreachable(e) => unreachable.push(e),
        }
    }
    (
        Err(format!("every KMS address failed: {unreachable:?}")),
        addrs.len() as u64,
    )
}

/// Background load: `workers` clients, each activating a new machine (Windows 11 Enterprise)
/// on a new connection every `pause`, through [`activate_failover`] over `addrs`. Worker `w`
/// starts at address `w`; with `rotate` each next activation starts one address further.
/// Bounded by `limit` whatever the test does.
pub struct Load {
    stop: Arc<AtomicBool>,
    /// Acknowledged machines and the index of the address that answered.
    acked: Arc<Mutex<Vec<(Guid, usize)>>>,
    failures: Arc<Mutex<Vec<String>>>,
    skipped: Arc<AtomicU64>,
    tasks: JoinSet<()>,
}

/// What a finished [`Load`] saw.
#[derive(Debug)]
pub struct LoadResult {
    /// Acknowledged machines and the index of the address that answered.
    pub acked: Vec<(Guid, usize)>,
    /// Refused or unanswered activations.
    pub failures: Vec<String>,
    /// Unreachable addresses a client moved on from.
    pub skipped: u64,
}

impl LoadResult {
    /// The acknowledged CMIDs, in order.
    pub fn cmids(&self) -> Vec<Guid> {
        self.acked.iter().map(|(g, _)| *g).collect()
    }

    /// Distinct acknowledged machines.
    pub fn distinct(&self) -> usize {
        self.cmids().into_iter().collect::<BTreeSet<_>>().len()
    }
}

impl Load {
    pub fn spawn(
        addrs: Vec<SocketAddr>,
        workers: usize,
        pause: Duration,
        rotate: bool,
        limit: Duration,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<Mutex<Vec<(Guid, usize)>>> = Arc::default();
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let skipped = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for w in 0..workers {
            let (stop, acked, failures, skipped, addrs) = (
                stop.clone(),
                acked.clone(),
                failures.clone(),
                skipped.clone(),
                addrs.clone(),
            );
            tasks.spawn(async move {
                let p = windows_client();
                let start = Instant::now();
                let mut i = w;
                while !stop.load(Ordering::SeqCst) && start.elapsed() < limit {
                    let who = machine(&p);
                    let (r, s) = activate_failover(&addrs, i, &p, &who).await;
                    skipped.fetch_add(s, Ordering::Relaxed);
                    match r {
                        Ok((n, _)) => acked.lock().unwrap().push((who.cmid, n)),
                        Err(e) => failures.lock().unwrap().push(format!("{}: {e}", who.cmid)),
                    }
                    if rotate {
                        i += 1;
                    }
                    tokio::time::sleep(pause).await;
                }
            });
        }
        Load {
            stop,
            acked,
            failures,
            skipped,
            tasks,
        }
    }

    /// Activations acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Wait until `n` activations were acknowledged in all (at most `limit`).
    pub async fn wait_acked(&self, n: usize, limit: Duration) {
        let start = Instant::now();
        while self.acked() < n && start.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until `more` further activations were acknowledged (at most `limit`).
    pub async fn wait_more(&self, more: usize, limit: Duration) {
        self.wait_acked(self.acked() + more, limit).await;
    }

    /// Stop the workers (panics if they do not stop within a few call timeouts).
    pub async fn finish(mut self) -> LoadResult {
        self.stop.store(true, Ordering::SeqCst);
        let drained = tokio::time::timeout(CALL_TIMEOUT * 4, async {
            while let Some(r) = self.tasks.join_next().await {
                r.expect("load worker panicked");
            }
        })
        .await;
        assert!(drained.is_ok(), "the load workers did not stop");
        LoadResult {
            acked: self.acked.lock().unwrap().clone(),
            failures: self.failures.lock().unwrap().clone(),
            skipped: self.skipped.load(Ordering::Relaxed),
        }
    }
}
