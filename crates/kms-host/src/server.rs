//! Accept loops and the per-connection protocol loop.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Instant, SystemTime};

use kms_core::ActivationInput;
use kms_wire::FileTime;
use kms_wire::kms::{self as msg, ActivationRequest, ResponseFields, ResponseRandomness};
use kms_wire::rpc::{self, Association, HostAction, PendingCall};
use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::config::HostSettings;
use crate::ledger::{ActivationEvent, Denial, HostObserver, Ledger, RequestMeta};
use crate::limits::SourceCounter;

/// Event id of Microsoft's "KMS activation request processed" event.
pub const EVENT_ACTIVATION: u32 = 12290;

struct Shared<L, O> {
    settings: HostSettings,
    ledger: Arc<L>,
    observer: Arc<O>,
    sources: SourceCounter,
    slots: Arc<Semaphore>,
    assoc_counter: AtomicU32,
}

/// Serve KMS clients on already-bound `listeners` until `shutdown` resolves, then stop
/// accepting, close connections with nothing started, let started calls (a BIND answered, a
/// partial PDU) finish (up to `drain_timeout`) and return.
pub async fn serve<L, O>(
    listeners: Vec<TcpListener>,
    settings: HostSettings,
    ledger: Arc<L>,
    observer: Arc<O>,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()>
where
    L: Ledger,
    O: HostObserver,
{
    let seed = rand::rng().next_u32() & 0x00ff_ffff;
    let shared = Arc::new(Shared {
        slots: Arc::new(Semaphore::new(settings.max_connections.max(1))),
        assoc_counter: AtomicU32::new(seed),
        settings,
        ledger,
        observer,
        sources: SourceCounter::default(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut accept_loops = JoinSet::new();
    for listener in listeners {
        let shared = shared.clone();
        let stop = stop_rx.clone();
        accept_loops.spawn(accept_loop(listener, shared, stop));
    }
    shutdown.await;
    info!("kms listener: shutting down, draining connections");
    let _ = stop_tx.send(true);
    let drain = shared.settings.drain_timeout;
    let wait_all = async {
        while let Some(res) = accept_loops.join_next().await {
            if let Err(e) = res {
                warn!(error = %e, "accept loop ended abnormally");
            }
        }
    };
    if tokio::time::timeout(drain, wait_all).await.is_err() {
        warn!("kms listener: drain timeout reached, closing remaining connections");
        accept_loops.abort_all();
    }
    Ok(())
}

async fn accept_loop<L: Ledger, O: HostObserver>(
    listener: TcpListener,
    shared: Arc<Shared<L, O>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    // Every accepted socket has the listener's port (asked once, not per connection).
    let listen_port = listener.local_addr().map(|a| a.port()).unwrap_or(1688);
    // Whether accepted sockets already have TCP_NODELAY from the listener (Linux copies it;
    // kmsd sets it on its listeners): asked of the first connection, then trusted.
    let mut nodelay_inherited: Option<bool> = None;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let inherited =
                    *nodelay_inherited.get_or_insert_with(|| stream.nodelay().unwrap_or(false));
                if !inherited {
                    let _ = stream.set_nodelay(true);
                }
                if let Some(task) = admit(&shared, stream, peer, listen_port, stop.clone()) {
                    conns.spawn(task);
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    // Drain: connections see the stop signal themselves; wait for them.
    while conns.join_next().await.is_some() {}
}

/// Apply the admission limits; returns the connection task when the client is served.
fn admit<L: Ledger, O: HostObserver>(
    shared: &Arc<Shared<L, O>>,
    stream: TcpStream,
    peer: SocketAddr,
    listen_port: u16,
    stop: watch::Receiver<bool>,
) -> Option<impl Future<Output = ()> + Send + 'static> {
    // An IPv4 client of a dual-stack listener arrives as an IPv4-mapped IPv6 address; it is
    // admitted, logged and recorded as the IPv4 address it is.
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    let ip = peer.ip();
    let s = &shared.settings;
    if !s.allow_clients.is_empty() && !s.allow_clients.iter().any(|n| n.contains(&ip)) {
        debug!(%peer, "client not in allowlist; closing");
        shared.observer.connection_rejected("allowlist");
        return None;
    }
    let Ok(permit) = shared.slots.clone().try_acquire_owned() else {
        warn!(%peer, "max_connections reached; closing");
        shared.observer.connection_rejected("max_connections");
        return None;
    };
    let Some(slot) = shared.sources.try_acquire(ip, s.max_connections_per_source) else {
        debug!(%peer, "per-source connection cap reached; closing");
        shared.observer.connection_rejected("per_source");
        return None;
    };
    let shared = shared.clone();
    Some(async move {
        shared.observer.connection_opened();
        let reason = connection(&shared, stream, peer, listen_port, stop).await;
        if let Some(r) = reason {
            shared.observer.protocol_error(r);
        }
        shared.observer.connection_closed();
        drop(slot);
        drop(permit);
    })
}

fn next_assoc_group(shared: &Shared<impl Ledger, impl HostObserver>) -> u32 {
    let n = shared.assoc_counter.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
    let id = ((shared.settings.node_id as u32 & 0xff) << 24) | n;
    if id == 0 { 1 } else { id }
}

/// Serve one connection. Returns the protocol-error reason when it was closed for one.
async fn connection<L: Ledger, O: HostObserver>(
    shared: &Shared<L, O>,
    mut stream: TcpStream,
    peer: SocketAddr,
    listen_port: u16,
    mut stop: watch::Receiver<bool>,
) -> Option<&'static str> {
    let s = &shared.settings;
    let mut assoc = Association::new(
        rpc::HostConfig {
            listen_port,
            ndr64: s.ndr64,
            btfn: s.btfn,
            max_pdu: s.max_pdu_size,
        },
        next_assoc_group(shared),
    );
    // Reads go straight into `buf`'s spare room (no 4 KiB array in this future, which tokio
    // would copy around when spawning the connection task, and no second copy per read).
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    // Start of the current partial PDU or fragmented REQUEST (or of idleness between calls).
    let mut since = Instant::now();
    // A BIND (or ALTER_CONTEXT) was answered and no REQUEST since: the client has started a
    // call, and a drain lets it finish (a Windows client binds, then sends its one REQUEST).
    let mut call_started = false;
    loop {
        // Serve every complete PDU already buffered.
        loop {
            let len = match rpc::frame_len(&buf, s.max_pdu_size) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => {
                    debug!(%peer, error = %e, "bad frame; closing");
                    return Some("bad_frame");
                }
            };
            // `frame_len` saw a whole header, so the PTYPE byte is there.
            let ptype = buf[2];
            let reply = match assoc.on_pdu(&buf[..len]) {
                HostAction::Reply(bytes) => {
                    if ptype == rpc::ptype::BIND || ptype == rpc::ptype::ALTER_CONTEXT {
                        call_started = assoc.is_bound();
                    }
                    bytes
                }
                HostAction::Call(call) => {
                    call_started = false;
                    activate(shared, call, peer).await
                }
                HostAction::Continue => {
                    // A REQUEST fragment: nothing to send. `since` is left alone so the whole
                    // fragmented call must arrive within one idle timeout.
                    buf.drain(..len);
                    continue;
                }
                HostAction::Close(e) => {
                    debug!(%peer, error = %e, "protocol violation; closing");
                    return Some("protocol_violation");
                }
            };
            buf.drain(..len);
            if let Err(e) = stream.write_all(&reply).await {
                debug!(%peer, error = %e, "write failed");
                return None;
            }
            since = Instant::now();
        }
        // Mid-call means a partial PDU or a fragmented REQUEST not yet complete.
        let mid_call = !buf.is_empty() || assoc.is_reassembling();
        if *stop.borrow() && !mid_call && !call_started {
            // Drain: a connection with nothing started closes at once; one that is bound and
            // owes its REQUEST, or is in the middle of a PDU, may finish within drain_timeout.
            return None;
        }
        let deadline = tokio::time::Instant::from_std(since + s.idle_timeout);
        tokio::select! {
            r = tokio::time::timeout_at(deadline, read_more(&mut stream, &mut buf)) => match r {
                Err(_) => {
                    debug!(%peer, partial = buf.len(), "idle or slow connection timed out");
                    return Some(if mid_call { "slow_pdu" } else { "idle_timeout" });
                }
                Ok(Ok(0)) => return None,
                Ok(Ok(_)) => {
                    if !mid_call {
                        since = Instant::now();
                    }
                }
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "read failed");
                    return None;
                }
            },
            _ = stop.changed(), if !*stop.borrow() => {}
        }
    }
}

/// How much room a read gets at least (a KMS PDU is a few hundred bytes).
const READ_CHUNK: usize = 4096;

/// Append what the socket has (up to [`READ_CHUNK`] bytes or the room `buf` already has) to
/// `buf`; 0 at end of stream.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.reserve(READ_CHUNK);
    stream.read_buf(buf).await
}

/// Decode, decide, record, encode. Always produces a RESPONSE PDU.
async fn activate<L: Ledger, O: HostObserver>(
    shared: &Shared<L, O>,
    call: PendingCall<'_>,
    peer: SocketAddr,
) -> Vec<u8> {
    let started = Instant::now();
    let syntax = match call.syntax() {
        rpc::Syntax::Ndr32 => "ndr32",
        rpc::Syntax::Ndr64 => "ndr64",
    };
    let mut decoded = match msg::decode_request(call.kms_message()) {
        Ok(d) => d,
        Err(e) => {
            let h = e.hresult();
            debug!(%peer, error = %e, hresult = %h, "undecodable KMS request");
            shared.observer.protocol_error("bad_kms_message");
            return call.respond(Err(h));
        }
    };
    let now = FileTime::from_system_time(SystemTime::now());
    let input = activation_input(&decoded.request);
    // The event takes the name (the response does not need it).
    let workstation = std::mem::take(&mut decoded.request.workstation_name);
    let req: &ActivationRequest = &decoded.request;
    let meta = RequestMeta {
        source: peer,
        received_at: now,
    };
    let result = shared.ledger.activate(input, meta).await;
    let mut event = ActivationEvent {
        event_id: EVENT_ACTIVATION,
        hresult: 0,
        protocol: req.version.major(),
        syntax,
        required_client_count: req.required_client_count,
        current_count: 0,
        workstation,
        client_machine_id: req.client_machine_id,
        client_time: req.request_time.0,
        is_vm: req.is_client_vm != 0,
        license_status: req.license_status,
        binding_expiration: req.binding_expiration,
        sku_id: req.sku_id,
        kms_counted_id: req.kms_counted_id,
        application_id: req.application_id,
        pool: None,
        source: peer,
        reason: None,
        degraded: false,
        duration: Default::default(),
    };
    let reply = match result {
        Ok(grant) => {
            let fields = ResponseFields {
                epid: &grant.epid,
                current_count: grant.current_count,
                activation_interval: grant.activation_interval,
                renewal_interval: grant.renewal_interval,
            };
            let mut randomness = ResponseRandomness {
                random: [0; 16],
                v6_response_iv: [0; 16],
            };
            let mut rng = rand::rng();
            rng.fill_bytes(&mut randomness.random);
            rng.fill_bytes(&mut randomness.v6_response_iv);
            event.pool = Some(grant.pool);
            event.current_count = grant.current_count;
            event.degraded = grant.degraded;
            match msg::encode_response(&decoded, &fields, grant.hwid, &randomness) {
                Ok(bytes) => call.respond(Ok(&bytes)),
                Err(e) => {
                    warn!(error = %e, "cannot encode response (bad host identity?)");
                    event.hresult = e.hresult().0;
                    event.reason = Some(format!("{}: {e}", crate::ledger::ENCODE_FAILED));
                    call.respond(Err(e.hresult()))
                }
            }
        }
        Err(Denial {
            hresult,
            reason,
            pool,
        }) => {
            event.hresult = hresult.0;
            event.reason = Some(reason);
            event.pool = pool;
            call.respond(Err(hresult))
        }
    };
    event.duration = started.elapsed();
    log_event(&event);
    shared.observer.activation(&event);
    reply
}

fn activation_input(req: &ActivationRequest) -> ActivationInput {
    ActivationInput {
        version: req.version.major(),
        application_id: req.application_id,
        sku_id: req.sku_id,
        kms_counted_id: req.kms_counted_id,
        client_machine_id: req.client_machine_id,
        previous_client_machine_id: req.previous_client_machine_id,
        required_client_count: req.required_client_count,
        request_time: req.request_time,
        workstation: req.workstation_name.clone(),
        is_vm: req.is_client_vm != 0,
        license_status: req.license_status,
    }
}

/// A FILETIME as RFC 3339 UTC with the client's 100 ns precision trimmed to microseconds
/// (`2025-06-15T12:00:01.123456Z`); `None` outside the years 1601…9999 RFC 3339 can write.
struct Rfc3339(FileTime);

impl Rfc3339 {
    fn of(t: FileTime) -> Option<Rfc3339> {
        (kms_core::time::year_and_day_of_year(t).0 <= 9999).then_some(Rfc3339(t))
    }
}

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.0.unix_secs();
        let micros = self.0.0 % kms_wire::filetime::TICKS_PER_SECOND / 10;
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = kms_core::time::civil_from_unix_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}

fn log_event(e: &ActivationEvent) {
    let client_time = FileTime(e.client_time);
    let detail = e.reason_detail();
    info!(
        event_id = e.event_id,
        hresult = format_args!("0x{:08X}", e.hresult),
        protocol = e.protocol,
        syntax = e.syntax,
        required_client_count = e.required_client_count,
        current_count = e.current_count,
        workstation = e.workstation.as_str(),
        cmid = %e.client_machine_id,
        client_time = Rfc3339::of(client_time).map(tracing::field::display),
        client_filetime = Rfc3339::of(client_time).is_none().then_some(e.client_time),
        is_vm = e.is_vm,
        license_status = e.license_status,
        binding_expiration = e.binding_expiration,
        sku_id = %e.sku_id,
        kms_counted_id = %e.kms_counted_id,
        pool = e.pool,
        source = %e.source,
        reason = e.reason_token(),
        detail = detail.as_deref(),
        degraded = e.degraded,
        micros = e.duration.as_micros() as u64,
        "activation request processed"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_times_are_rfc3339_utc() {
        let t = |unix: i64, ticks: u64| {
            let ft = FileTime(FileTime::from_unix_secs(unix).0 + ticks);
            Rfc3339::of(ft).map(|r| r.to_string())
        };
        assert_eq!(t(0, 0).as_deref(), Some("1970-01-01T00:00:00.000000Z"));
        assert_eq!(
            t(1_749_988_801, 1_234_567).as_deref(),
            Some("2025-06-15T12:00:01.123456Z")
        );
        assert_eq!(
            Rfc3339::of(FileTime(0)).map(|r| r.to_string()).as_deref(),
            Some("1601-01-01T00:00:00.000000Z")
        );
        assert!(Rfc3339::of(FileTime(u64::MAX)).is_none(), "year 60056");
    }
}
