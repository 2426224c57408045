//! An async KMS client connection: TCP, the DCE/RPC BIND sequence of a Windows client
//! (PROTOCOL.md §3.3), and verified activation calls.
//!
//! The byte work is kms-wire's: [`kms_wire::rpc::ClientAssociation`] builds the BIND,
//! ALTER_CONTEXT and REQUEST PDUs and checks every reply; [`kms_wire::kms::encode_request`] and
//! [`kms_wire::kms::verify_response`] build the KMS message and perform every client check of
//! §6.7. This module only moves bytes, frames them ([`kms_wire::rpc::frame_len`]), bounds every
//! wait with a timeout and sorts failures into the classes of [`crate::exit::ExitClass`].

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use kms_wire::kms::{self, ActivationRequest, KmsError, ProtocolVersion, VerifiedResponse};
use kms_wire::rpc::{self, BindStep, CallError, ClientAssociation, RpcError, Syntax};
use kms_wire::{FileTime, Guid, Hresult};
use rand::{Rng, RngCore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::catalog::ProductSelection;
use crate::exit::ExitClass;

/// The default KMS port.
pub const DEFAULT_PORT: u16 = 1688;

/// A KMS host address as given on the command line: `host:port`, `[v6addr]:port`, or a host
/// without port (1688). IPv6 addresses always need brackets (`::1:1688` is ambiguous).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KmsAddr {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// The text was not a usable `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid KMS address {input:?}: {reason} (expected host:port or [v6addr]:port)")]
pub struct KmsAddrError {
    input: String,
    reason: &'static str,
}

impl FromStr for KmsAddr {
    type Err = KmsAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| KmsAddrError {
            input: s.to_string(),
            reason,
        };
        let s = s.trim();
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or(err("missing ']'"))?;
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(err("not an IPv6 address inside [ ]"));
            }
            match after {
                "" => (h, None),
                p => (
                    h,
                    Some(p.strip_prefix(':').ok_or(err("expected ':' after ']'"))?),
                ),
            }
        } else if s.matches(':').count() > 1 {
            // "::1:1688" is itself a valid IPv6 address: demand brackets instead of guessing.
            return Err(err("IPv6 addresses need brackets, e.g. [::1]:1688"));
        } else {
            match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        if host.is_empty() {
            return Err(err("empty host"));
        }
        if host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(err("invalid character in host"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(err("port must be 1-65535")),
                Ok(n) => n,
            },
        };
        Ok(KmsAddr {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for KmsAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl KmsAddr {
    /// Resolve to one socket address: the literal IP, or the first address the name
    /// resolves to. Every connection of a run goes to this one address.
    pub async fn resolve(&self) -> Result<SocketAddr, ClientError> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, self.port));
        }
        let resolve_err = |source| ClientError::Resolve {
            addr: self.to_string(),
            source,
        };
        let mut addrs = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(resolve_err)?;
        addrs.next().ok_or_else(|| {
            resolve_err(io::Error::new(
                io::ErrorKind::NotFound,
                "the name has no addresses",
            ))
        })
    }
}

/// Where a connection-level failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// TCP connect.
    Connect,
    /// BIND / ALTER_CONTEXT exchange.
    Bind,
    /// A REQUEST / RESPONSE exchange.
    Call,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Connect => "while connecting",
            Stage::Bind => "during the RPC bind",
            Stage::Call => "waiting for the response",
        })
    }
}

/// Why an activation call produced no verified answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The host name did not resolve.
    #[error("cannot resolve {addr}: {source}")]
    Resolve {
        /// The address as given.
        addr: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// TCP connect failed (refused, unreachable, …).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// No answer within the timeout.
    #[error("timed out {stage} (after {after:?})")]
    Timeout {
        /// Where.
        stage: Stage,
        /// The timeout that expired.
        after: Duration,
    },
    /// The host closed the connection.
    #[error("connection closed by the host {stage}")]
    Closed {
        /// Where.
        stage: Stage,
    },
    /// Reading or writing the socket failed.
    #[error("connection error {stage}: {source}")]
    Io {
        /// Where.
        stage: Stage,
        /// The OS error.
        source: io::Error,
    },
    /// A reply broke the DCE/RPC protocol (§3, §4): bad framing, unexpected PDU, call id or
    /// context not echoed, bad stub, no context accepted, …
    #[error("RPC protocol error: {0}")]
    Protocol(RpcError),
    /// The host answered the REQUEST with a FAULT.
    #[error("RPC fault 0x{status:08x} ({})", fault_name(*.status))]
    Fault {
        /// NCA status code.
        status: u32,
    },
    /// The KMS response failed a client check (§6.7).
    #[error("response failed verification: {0}")]
    Verify(KmsError),
}

/// Name of an NCA fault status (PROTOCOL.md §3.8).
pub fn fault_name(status: u32) -> &'static str {
    match status {
        rpc::status::NCA_OP_RNG_ERROR => "nca_op_rng_error",
        rpc::status::NCA_UNK_IF => "nca_unk_if",
        rpc::status::NCA_PROTO_ERROR => "nca_proto_error",
        rpc::status::RPC_X_BAD_STUB_DATA => "rpc_x_bad_stub_data",
        _ => "unknown status",
    }
}

impl From<RpcError> for ClientError {
    fn from(e: RpcError) -> Self {
        ClientError::Protocol(e)
    }
}

impl ClientError {
    /// The exit class: 2 for protocol and verification errors, 3 for everything about
    /// reaching the host.
    pub fn class(&self) -> ExitClass {
        match self {
            ClientError::Resolve { .. }
            | ClientError::Connect { .. }
            | ClientError::Timeout { .. }
            | ClientError::Closed { .. }
            | ClientError::Io { .. } => ExitClass::Connection,
            ClientError::Protocol(_) | ClientError::Fault { .. } | ClientError::Verify(_) => {
                ExitClass::Invalid
            }
        }
    }

    /// A short stable label for statistics: `resolve`, `connect`, `timeout`, `closed`, `io`,
    /// `rpc: <kind>`, `rpc: fault 0x…`, `verify: <kind>` (kinds in snake_case, e.g.
    /// `verify: bad_hmac`, `rpc: call_id_mismatch`).
    pub fn reason(&self) -> String {
        match self {
            ClientError::Resolve { .. } => "resolve".into(),
            ClientError::Connect { .. } => "connect".into(),
            ClientError::Timeout { .. } => "timeout".into(),
            ClientError::Closed { .. } => "closed".into(),
            ClientError::Io { .. } => "io".into(),
            ClientError::Protocol(e) => format!("rpc: {}", variant_label(e)),
            ClientError::Fault { status } => format!("rpc: fault 0x{status:08x}"),
            ClientError::Verify(e) => format!("verify: {}", variant_label(e)),
        }
    }

    fn from_call(e: CallError) -> ClientError {
        match e {
            CallError::Fault { status } => ClientError::Fault { status },
            CallError::Protocol(e) => ClientError::Protocol(e),
            // A refusal during BIND cannot happen; treat it as a protocol error if it does.
            CallError::Kms(_) => {
                ClientError::Protocol(RpcError::BadResponse("HRESULT outside a RESPONSE"))
            }
        }
    }
}

/// The enum variant name of a `Debug` value in snake_case (`BadHmac { .. }` → `bad_hmac`).
pub fn variant_label<T: fmt::Debug>(v: &T) -> String {
    let dbg = format!("{v:?}");
    let name: String = dbg
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// How a connection binds and how long it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionOptions {
    /// BIND shape (NDR64, BTFN, CONC_MPX, call ids); the default models vlmcs / Windows.
    pub rpc: rpc::ClientOptions,
    /// Bound on the TCP connect and on every reply.
    pub timeout: Duration,
    /// Largest PDU accepted from the host.
    pub max_pdu: usize,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            rpc: rpc::ClientOptions::default(),
            timeout: Duration::from_secs(5),
            max_pdu: rpc::DEFAULT_MAX_PDU,
        }
    }
}

impl ConnectionOptions {
    /// Options with NDR64 and BTFN offered or not, everything else as Windows does.
    pub fn new(ndr64: bool, btfn: bool, timeout: Duration) -> ConnectionOptions {
        let mut o = ConnectionOptions {
            timeout,
            ..ConnectionOptions::default()
        };
        o.rpc.ndr64 = ndr64;
        o.rpc.btfn = btfn;
        o
    }
}

/// A verified answer of the KMS host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Success: the response passed every client check.
    Activated(VerifiedResponse),
    /// The host refused with this HRESULT (a RESPONSE with a NULL array, §4.4).
    Refused(Hresult),
}

/// One completed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutcome {
    /// The transfer syntax the REQUEST used.
    pub syntax: Syntax,
    /// The answer.
    pub reply: Reply,
}

/// One TCP connection to a KMS host, bound and ready for activation calls.
///
/// After an error the connection's state is unknown: drop it and connect again.
#[derive(Debug)]
pub struct KmsConnection {
    stream: TcpStream,
    assoc: ClientAssociation,
    buf: Vec<u8>,
    peer: SocketAddr,
    opts: ConnectionOptions,
}

impl KmsConnection {
    /// Connect to `addr` and BIND like a Windows client: BIND with NDR32 (+ NDR64, + BTFN as
    /// configured), then an ALTER_CONTEXT for NDR32 if the host refused NDR32 in favour of
    /// NDR64, so the first request goes out in NDR32 and later ones in NDR64.
    pub async fn connect(
        addr: SocketAddr,
        opts: ConnectionOptions,
    ) -> Result<KmsConnection, ClientError> {
        let stream = tokio::time::timeout(opts.timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout {
                stage: Stage::Connect,
                after: opts.timeout,
            })?
            .map_err(|source| ClientError::Connect { addr, source })?;
        let _ = stream.set_nodelay(true);
        let mut conn = KmsConnection {
            stream,
            assoc: ClientAssociation::new(opts.rpc),
            buf: Vec::with_capacity(512),
            peer: addr,
            opts,
        };
        let bind = conn.assoc.bind_pdu()?;
        let ack = conn.round_trip(&bind, Stage::Bind).await?;
        match conn
            .assoc
            .on_bind_ack(&ack)
            .map_err(ClientError::from_call)?
        {
            BindStep::SendAlterContext(alter) => {
                let resp = conn.round_trip(&alter, Stage::Bind).await?;
                conn.assoc
                    .on_alter_context_resp(&resp)
                    .map_err(ClientError::from_call)?;
            }
            BindStep::Ready => {}
        }
        Ok(conn)
    }

    /// The host's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The client association (granted contexts, BTFN acknowledgement, call count).
    pub fn association(&self) -> &ClientAssociation {
        &self.assoc
    }

    /// The transfer syntax the next REQUEST will use.
    pub fn next_syntax(&self) -> Option<Syntax> {
        self.assoc.next_syntax()
    }

    /// Send one request and verify the answer (every check of §6.7). A fresh random IV is
    /// drawn for v5/v6.
    pub async fn activate(&mut self, req: &ActivationRequest) -> Result<CallOutcome, ClientError> {
        let (message, ctx) = kms::encode_request(req, random_iv());
        let (syntax, result) = self.call(&message).await?;
        let reply = match result {
            Ok(bytes) => {
                Reply::Activated(kms::verify_response(&ctx, &bytes).map_err(ClientError::Verify)?)
            }
            Err(h) => Reply::Refused(h),
        };
        Ok(CallOutcome { syntax, reply })
    }

    /// One RequestActivation call with raw KMS message bytes: the response message, or the
    /// HRESULT the host refused with. The RPC layer is checked strictly; the KMS message is
    /// not verified.
    pub async fn call(
        &mut self,
        kms_message: &[u8],
    ) -> Result<(Syntax, Result<Vec<u8>, Hresult>), ClientError> {
        let syntax = self
            .assoc
            .next_syntax()
            .ok_or(RpcError::ClientState("no context bound"))?;
        let pdu = self.assoc.request_pdu(kms_message)?;
        let reply = self.round_trip(&pdu, Stage::Call).await?;
        match self.assoc.on_response(&reply) {
            Ok(message) => Ok((syntax, Ok(message))),
            Err(CallError::Kms(h)) => Ok((syntax, Err(h))),
            Err(e) => Err(ClientError::from_call(e)),
        }
    }

    async fn round_trip(&mut self, pdu: &[u8], stage: Stage) -> Result<Vec<u8>, ClientError> {
        let timeout = self.opts.timeout;
        let timed_out = || ClientError::Timeout {
            stage,
            after: timeout,
        };
        tokio::time::timeout(timeout, self.stream.write_all(pdu))
            .await
            .map_err(|_| timed_out())?
            .map_err(|source| ClientError::Io { stage, source })?;
        tokio::time::timeout(timeout, self.read_pdu(stage))
            .await
            .map_err(|_| timed_out())?
    }

    async fn read_pdu(&mut self, stage: Stage) -> Result<Vec<u8>, ClientError> {
        let mut chunk = [0u8; 2048];
        loop {
            if let Some(n) = rpc::frame_len(&self.buf, self.opts.max_pdu)? {
                let pdu: Vec<u8> = self.buf.drain(..n).collect();
                return Ok(pdu);
            }
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|source| ClientError::Io { stage, source })?;
            if n == 0 {
                return Err(ClientError::Closed { stage });
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The per-client fields of a request (everything else comes from the product).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// Client machine id.
    pub cmid: Guid,
    /// Workstation name (≤ 63 UTF-16 units; longer names are truncated).
    pub workstation: String,
    /// Virtual machine flag.
    pub is_vm: bool,
    /// License status (0…6).
    pub license_status: u32,
    /// Binding expiration in minutes.
    pub binding_expiration: u32,
}

/// Build a base request for `product` as `client`, stamped with the current time shifted by
/// `time_offset_secs`.
pub fn build_request(
    version: ProtocolVersion,
    product: &ProductSelection,
    client: &ClientIdentity,
    time_offset_secs: i64,
) -> ActivationRequest {
    let mut req = ActivationRequest {
        version,
        is_client_vm: u32::from(client.is_vm),
        license_status: client.license_status,
        binding_expiration: client.binding_expiration,
        application_id: product.application_id,
        sku_id: product.sku_id,
        kms_counted_id: product.kms_counted_id,
        client_machine_id: client.cmid,
        required_client_count: product.required_client_count,
        request_time: request_time(SystemTime::now(), time_offset_secs),
        previous_client_machine_id: Guid::NIL,
        workstation_name: String::new(),
        workstation_field: [0; kms::WORKSTATION_FIELD_LEN],
    };
    req.set_workstation_name(&client.workstation);
    req
}

/// `now` as a FILETIME shifted by `offset_secs` (saturating at the FILETIME range).
pub fn request_time(now: SystemTime, offset_secs: i64) -> FileTime {
    let base = FileTime::from_system_time(now).0;
    let delta = i128::from(offset_secs) * i128::from(kms_wire::filetime::TICKS_PER_SECOND);
    let t = (i128::from(base) + delta).clamp(0, i128::from(u64::MAX));
    FileTime(u64::try_from(t).unwrap_or(u64::MAX))
}

/// A random RFC 4122 version-4 CMID, as Windows generates.
pub fn random_cmid() -> Guid {
    Guid(*uuid::Uuid::new_v4().as_bytes())
}

/// Sixteen random bytes for a request IV.
pub fn random_iv() -> [u8; 16] {
    let mut iv = [0u8; 16];
    rand::rng().fill_bytes(&mut iv);
    iv
}

/// A plausible random computer name: `WIN-` + 11 characters (the Windows Server setup
/// default) or `DESKTOP-` + 7 characters (the Windows 10/11 default).
pub fn random_workstation(server: bool) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let (prefix, n) = if server {
        ("WIN-", 11)
    } else {
        ("DESKTOP-", 7)
    };
    let mut rng = rand::rng();
    let mut s = String::from(prefix);
    for _ in 0..n {
        s.push(char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]));
    }
    s
}
