//! Bad input on every path of the KMS port, while other clients keep being served (DESIGN §8):
//! malformed bytes close only their own connection, RPC-level mistakes get a FAULT on a
//! connection that stays usable, bad KMS messages get an HRESULT, and the limits (idle and
//! per-PDU timeouts, maximum PDU size, per-source connection cap, client allowlist) hold.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use kms_wire::Hresult;
use kms_wire::kms::{self, ProtocolVersion};
use kms_wire::rpc::{ClientAssociation, ClientOptions, status};
use kmsctl::client::{self, KmsConnection, Reply};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;

use crate::harness::Kmsd;
use crate::kms::*;

/// The node's idle timeout in these tests (`--idle-timeout-secs`).
const IDLE: Duration = Duration::from_secs(2);
/// "At once": well below the idle timeout.
const AT_ONCE: Duration = Duration::from_millis(1500);

fn bind_pdu() -> Vec<u8> {
    ClientAssociation::new(ClientOptions::default())
        .bind_pdu()
        .expect("bind pdu")
}

fn set_frag_length(pdu: &mut [u8], len: u16) {
    pdu[8..10].copy_from_slice(&len.to_le_bytes());
}

/// A valid v6 KMS request message for a new Windows machine.
fn v6_message() -> Vec<u8> {
    let win = windows_client();
    kms::encode_request(
        &request(&win, &machine(&win), ProtocolVersion::V6),
        client::random_iv(),
    )
    .0
}

async fn good_call(c: &mut RawConn, what: &str) {
    let win = windows_client();
    let req = request(&win, &machine(&win), ProtocolVersion::V6);
    match c.activate(&req).await {
        Ok(Reply::Activated(_)) => {}
        other => panic!("{what}: the connection is not usable afterwards: {other:?}"),
    }
}

async fn expect_closed_at_once(c: &mut RawConn, what: &str) {
    let t = c.closed_within(AT_ONCE).await;
    assert!(
        t.is_some(),
        "{what}: connection still open after {AT_ONCE:?}"
    );
}

async fn garbage(addr: SocketAddr) {
    // Random-looking bytes (not even rpc_vers 5).
    let mut c = RawConn::connect(addr).await;
    let junk: Vec<u8> = (0u32..200)
        .map(|i| (i.wrapping_mul(97) ^ 0xde) as u8)
        .collect();
    c.send(&junk).await.unwrap();
    expect_closed_at_once(&mut c, "garbage").await;

    // A well-framed PDU of an unknown type, after a good BIND.
    let mut c = RawConn::connect(addr).await;
    c.bind().await;
    let mut pdu = request_pdu(5, 0, 0, &ndr32_stub(&v6_message()));
    pdu[2] = 99;
    c.send(&pdu).await.unwrap();
    expect_closed_at_once(&mut c, "unknown PTYPE").await;

    // Not little-endian, and a second BIND on a bound connection.
    let mut c = RawConn::connect(addr).await;
    let mut bind = bind_pdu();
    bind[4] = 0x00;
    c.send(&bind).await.unwrap();
    expect_closed_at_once(&mut c, "big-endian drep").await;
    let mut c = RawConn::connect(addr).await;
    c.bind().await;
    c.send(&bind_pdu()).await.unwrap();
    expect_closed_at_once(&mut c, "second BIND").await;

    // frag_length below the header size.
    let mut c = RawConn::connect(addr).await;
    let mut bind = bind_pdu();
    set_frag_length(&mut bind, 10);
    c.send(&bind).await.unwrap();
    expect_closed_at_once(&mut c, "frag_length < 16").await;
}

async fn truncated(addr: SocketAddr) {
    // Half a BIND, then the client closes its side.
    let mut c = RawConn::connect(addr).await;
    let bind = bind_pdu();
    c.send(&bind[..bind.len() / 2]).await.unwrap();
    c.stream.shutdown().await.unwrap();
    expect_closed_at_once(&mut c, "truncated BIND then FIN").await;

    // Half a REQUEST after a good BIND.
    let mut c = RawConn::connect(addr).await;
    c.bind().await;
    let pdu = request_pdu(2, 0, 0, &ndr32_stub(&v6_message()));
    c.send(&pdu[..100]).await.unwrap();
    c.stream.shutdown().await.unwrap();
    expect_closed_at_once(&mut c, "truncated REQUEST then FIN").await;
}

async fn lying_length(addr: SocketAddr) {
    // frag_length promises more than is sent, then silence: closed by the idle/PDU timeout.
    let mut c = RawConn::connect(addr).await;
    let mut bind = bind_pdu();
    let len = bind.len() as u16;
    set_frag_length(&mut bind, len + 100);
    let start = Instant::now();
    c.send(&bind).await.unwrap();
    let t = c.closed_within(IDLE * 4).await;
    let elapsed = start.elapsed();
    assert!(
        t.is_some(),
        "lying frag_length: still open after {elapsed:?}"
    );
    assert!(
        elapsed >= IDLE - Duration::from_millis(300),
        "lying frag_length: closed after {elapsed:?}, before the {IDLE:?} timeout"
    );
}

async fn too_large(addr: SocketAddr) {
    // frag_length above the maximum PDU size: closed as soon as the header is read.
    let mut c = RawConn::connect(addr).await;
    let mut bind = bind_pdu();
    set_frag_length(&mut bind, 5000);
    c.send(&bind[..16]).await.unwrap();
    expect_closed_at_once(&mut c, "frag_length 5000 > 4096").await;

    let mut c = RawConn::connect(addr).await;
    c.bind().await;
    let mut header = request_pdu(3, 0, 0, &[])[..16].to_vec();
    set_frag_length(&mut header, u16::MAX);
    c.send(&header).await.unwrap();
    expect_closed_at_once(&mut c, "REQUEST with frag_length 65535").await;
}

async fn faults(addr: SocketAddr) {
    let mut c = RawConn::connect(addr).await;
    c.bind().await;
    let stub = ndr32_stub(&v6_message());

    // Unbound contexts: 7 was never offered; 2 is the BTFN context (negotiated, not bound).
    for (call_id, ctx) in [(41, 7u16), (42, 2)] {
        let reply = c
            .round_trip(&request_pdu(call_id, ctx, 0, &stub))
            .await
            .unwrap();
        assert_eq!(
            fault_status(&reply),
            (call_id, status::NCA_UNK_IF),
            "REQUEST on unbound context {ctx}"
        );
        good_call(&mut c, &format!("after FAULT for context {ctx}")).await;
    }

    // opnum 1.
    let reply = c.round_trip(&request_pdu(43, 0, 1, &stub)).await.unwrap();
    assert_eq!(
        fault_status(&reply),
        (43, status::NCA_OP_RNG_ERROR),
        "opnum 1"
    );
    good_call(&mut c, "after FAULT for opnum 1").await;

    // Malformed stubs: max_count ≠ requestSize, a count beyond the bytes present, empty.
    let mut lying_count = stub.clone();
    lying_count[4..8].copy_from_slice(&0xffffu32.to_le_bytes());
    let mut too_long = stub.clone();
    too_long[0..4].copy_from_slice(&4000u32.to_le_bytes());
    too_long[4..8].copy_from_slice(&4000u32.to_le_bytes());
    for (call_id, bad, what) in [
        (44, lying_count, "max_count != requestSize"),
        (45, too_long, "array longer than the stub"),
        (46, Vec::new(), "empty stub"),
        (47, vec![1, 2, 3], "3-byte stub"),
    ] {
        let reply = c
            .round_trip(&request_pdu(call_id, 0, 0, &bad))
            .await
            .unwrap();
        assert_eq!(
            fault_status(&reply),
            (call_id, status::RPC_X_BAD_STUB_DATA),
            "malformed stub: {what}"
        );
        good_call(&mut c, &format!("after FAULT for {what}")).await;
    }
}

async fn bad_kms_messages(addr: SocketAddr) {
    let mut c = RawConn::connect(addr).await;
    c.bind().await;
    let mut v7 = v6_message();
    v7[0..4].copy_from_slice(&[0, 0, 7, 0]); // version 7.0
    let mut v6_1 = v6_message();
    v6_1[0..4].copy_from_slice(&[1, 0, 6, 0]); // version 6.1
    let mut flipped = v6_message();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x55; // breaks the CBC padding / decryption
    for (what, msg) in [
        ("KMS version 7.0", v7),
        ("KMS version 6.1", v6_1),
        ("short KMS message", v6_message()[..40].to_vec()),
        ("empty KMS message", Vec::new()),
        ("corrupted ciphertext", flipped),
    ] {
        let r = c
            .call_raw(&msg)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(r, Err(Hresult::INVALID_DATA), "{what}");
        good_call(&mut c, &format!("after {what}")).await;
    }
}

async fn slow_loris(addr: SocketAddr) {
    // One byte every 500 ms: the PDU deadline (the idle timeout, counted from its first byte)
    // closes the connection long before the PDU is complete.
    let mut c = RawConn::connect(addr).await;
    let bind = bind_pdu();
    let start = Instant::now();
    let mut sent = 0;
    let closed = loop {
        if sent < bind.len() {
            if c.send(&bind[sent..=sent]).await.is_err() {
                break true;
            }
            sent += 1;
        }
        match c.read_pdu(Duration::from_millis(500)).await {
            ReadEnd::Closed => break true,
            ReadEnd::TimedOut if start.elapsed() < IDLE * 4 => {}
            ReadEnd::TimedOut => break false,
            ReadEnd::Pdu(p) => panic!("slow loris got a reply {p:02x?}"),
        }
    };
    let elapsed = start.elapsed();
    assert!(closed, "slow loris: still open after {elapsed:?}");
    assert!(sent < bind.len(), "slow loris: the whole PDU got through");
    assert!(
        elapsed >= IDLE - Duration::from_millis(300),
        "slow loris: closed after {elapsed:?}, before the deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_every_path_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let node = Kmsd::start(dir.path(), &["--idle-timeout-secs", "2"]);
    let addr = node.kms_addr();
    let good = GoodClient::spawn(addr, None, Duration::from_millis(50));

    tokio::join!(
        garbage(addr),
        truncated(addr),
        lying_length(addr),
        too_large(addr),
        faults(addr),
        bad_kms_messages(addr),
        slow_loris(addr),
    );

    // An idle, bound connection is closed by the idle timeout too.
    let mut idle = RawConn::connect(addr).await;
    idle.bind().await;
    let t = idle.closed_within(IDLE * 4).await;
    assert!(
        t.is_some_and(|t| t >= IDLE - Duration::from_millis(300)),
        "idle: {t:?}"
    );

    good.finish(5).await;
    let metrics = tokio::task::spawn_blocking(move || node.metrics())
        .await
        .unwrap();
    for reason in [
        "bad_frame",
        "protocol_violation",
        "slow_pdu",
        "idle_timeout",
    ] {
        let series = format!("kmsd_protocol_errors_total{{reason=\"{reason}\"}}");
        assert!(
            crate::harness::metric_value(&metrics, &series).is_some_and(|v| v >= 1.0),
            "{series} missing:\n{metrics}"
        );
    }
}

/// Wait (at most [`AT_ONCE`] each, all at once) to see which of `conns` the host closes:
/// (the ones still open, how many were closed).
async fn split_closed(conns: Vec<RawConn>) -> (Vec<RawConn>, usize) {
    let mut set = JoinSet::new();
    for mut c in conns {
        set.spawn(async move {
            let closed = c.closed_within(AT_ONCE).await.is_some();
            (c, closed)
        });
    }
    let mut open = Vec::new();
    let mut closed = 0;
    while let Some(r) = set.join_next().await {
        let (c, was_closed) = r.unwrap();
        if was_closed {
            closed += 1;
        } else {
            open.push(c);
        }
    }
    (open, closed)
}

/// After connections holding a cap's slots closed: within 5 s a new connection from
/// `connect` binds and is served (`what` names it in failures).
async fn served_once_released<F, Fut>(connect: F, what: &str)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = RawConn>,
{
    let start = Instant::now();
    loop {
        let mut c = connect().await;
        if c.bind_with(ClientOptions::default()).await.is_ok() {
            good_call(&mut c, what).await;
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "slots never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_source_cap_closes_the_excess_while_others_are_served() {
    const CAP: usize = 100;
    const OPEN: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let node = Kmsd::start(dir.path(), &["--max-connections-per-source", "100"]);
    let addr = node.kms_addr();
    // The good client comes from another source address (127.0.0.2, also loopback).
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let good = GoodClient::spawn(addr, Some(other), Duration::from_millis(50));

    let mut conns = Vec::new();
    for _ in 0..OPEN {
        conns.push(RawConn::connect(addr).await);
    }
    let (open, closed) = split_closed(conns).await;
    assert_eq!(
        (open.len(), closed),
        (CAP, OPEN - CAP),
        "of {OPEN} idle connections from one source, {CAP} should stay open"
    );
    // While the cap is reached: another source is served, this source is refused at once.
    let mut c = RawConn::connect_from(other, addr).await.unwrap();
    c.bind().await;
    good_call(&mut c, "another source while the cap is reached").await;
    let mut c = RawConn::connect(addr).await;
    expect_closed_at_once(&mut c, "one more from the capped source").await;
    // The slots are released when the connections close.
    drop(open);
    served_once_released(
        || RawConn::connect(addr),
        "the capped source after its connections closed",
    )
    .await;
    good.finish(5).await;
    let rejected = tokio::task::spawn_blocking(move || {
        node.metric("kmsd_connections_rejected_total{reason=\"per_source\"}")
    })
    .await
    .unwrap();
    assert!(rejected >= (OPEN - CAP + 1) as f64, "rejected {rejected}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlist_refuses_clients_outside_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = Kmsd::start(
        dir.path(),
        &[
            "--allow-client",
            "10.0.0.0/8",
            "--allow-client",
            "127.0.0.2/32",
        ],
    );
    let addr = node.kms_addr();
    // 127.0.0.1 is outside: closed at once, and a real client cannot bind.
    let mut c = RawConn::connect(addr).await;
    c.send(&bind_pdu()).await.ok();
    expect_closed_at_once(&mut c, "client outside the allowlist").await;
    let err = KmsConnection::connect(addr, options(true, true))
        .await
        .expect_err("127.0.0.1 must not be served");
    assert_eq!(err.class(), kmsctl::exit::ExitClass::Connection, "{err}");
    // 127.0.0.2 is inside.
    let mut c = RawConn::connect_from("127.0.0.2".parse().unwrap(), addr)
        .await
        .unwrap();
    c.bind().await;
    good_call(&mut c, "client inside the allowlist").await;
    let rejected = tokio::task::spawn_blocking(move || {
        node.metric("kmsd_connections_rejected_total{reason=\"allowlist\"}")
    })
    .await
    .unwrap();
    assert!(rejected >= 2.0, "rejected {rejected}");
}

/// `pdu` (one whole REQUEST) cut into REQUEST fragments whose stubs have the given sizes (the
/// last takes the rest), with the first fragment's flags, call id, context and opnum.
fn fragments(pdu: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
    use kms_wire::rpc::{self, pfc, ptype};
    let whole = rpc::Request::decode(pdu).expect("a REQUEST");
    let mut parts = Vec::new();
    let mut rest = whole.stub;
    for &n in sizes {
        let (part, tail) = rest.split_at(n.min(rest.len()));
        parts.push(part);
        rest = tail;
    }
    parts.push(rest);
    let last = parts.len() - 1;
    parts
        .iter()
        .enumerate()
        .map(|(i, stub)| {
            let mut flags = 0;
            if i == 0 {
                flags |= pfc::FIRST_FRAG;
            }
            if i == last {
                flags |= pfc::LAST_FRAG;
            }
            rpc::Request {
                header: rpc::Header::new(ptype::REQUEST, flags, whole.header.call_id),
                alloc_hint: whole.alloc_hint,
                stub,
                ..whole
            }
            .encode()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_requests_are_reassembled_and_bad_sequences_close_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let node = Kmsd::start(dir.path(), &["--idle-timeout-secs", "2"]);
    let addr = node.kms_addr();
    let good = GoodClient::spawn(addr, None, Duration::from_millis(50));
    let win = windows_client();

    // A v6 request in 2, 3 and one-byte-stub fragments, each fragment its own TCP write (a
    // small pause between them): answered once, with a response that verifies.
    for sizes in [vec![40], vec![17, 100], vec![1; 64]] {
        let mut c = RawConn::connect(addr).await;
        c.bind().await;
        for round in 0..2 {
            let req = request(&win, &machine(&win), ProtocolVersion::V6);
            let (msg, ctx) = kms::encode_request(&req, client::random_iv());
            let pdu = c.assoc.request_pdu(&msg).unwrap();
            let frags = fragments(&pdu, &sizes);
            assert_eq!(frags.len(), sizes.len() + 1);
            for f in &frags {
                c.send(f).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let reply = match c.read_pdu(Duration::from_secs(5)).await {
                ReadEnd::Pdu(p) => p,
                other => panic!("{} fragments, call {round}: {other:?}", frags.len()),
            };
            let message = c.assoc.on_response(&reply).expect("a RESPONSE");
            kms::verify_response(&ctx, &message).expect("a response that verifies");
        }
        // Nothing else was sent back for the non-final fragments.
        assert!(matches!(
            c.read_pdu(Duration::from_millis(200)).await,
            ReadEnd::TimedOut
        ));
    }

    // Broken sequences close that one connection.
    let req = request(&win, &machine(&win), ProtocolVersion::V6);
    let (msg, _) = kms::encode_request(&req, client::random_iv());
    // A middle fragment with another call id.
    let mut c = RawConn::connect(addr).await;
    c.bind().await;
    let pdu = c.assoc.request_pdu(&msg).unwrap();
    let mut frags = fragments(&pdu, &[10, 10]);
    frags[1][12..16].copy_from_slice(&777u32.to_le_bytes());
    for f in &frags {
        let _ = c.send(f).await;
    }
    expect_closed_at_once(&mut c, "a fragment of another call").await;
    // A last fragment without a first.
    let mut c = RawConn::connect(addr).await;
    c.bind().await;
    let pdu = c.assoc.request_pdu(&msg).unwrap();
    let frags = fragments(&pdu, &[10]);
    c.send(&frags[1]).await.unwrap();
    expect_closed_at_once(&mut c, "a last fragment without a first").await;
    // More than the reassembly bound (64 KiB of stub): closed before it is all sent.
    let mut c = RawConn::connect(addr).await;
    c.bind().await;
    let big = vec![0u8; 4000];
    let first = request_pdu(1, 0, 0, &big);
    let mut first = first.clone();
    first[3] = kms_wire::rpc::pfc::FIRST_FRAG;
    let mut middle = first.clone();
    middle[3] = 0;
    c.send(&first).await.unwrap();
    let mut sent = big.len();
    while sent <= 70_000 && c.send(&middle).await.is_ok() {
        sent += big.len();
    }
    expect_closed_at_once(&mut c, "a fragmented call over the bound").await;
    // A first fragment and then silence: closed by the idle timeout like a slow PDU.
    let mut c = RawConn::connect(addr).await;
    c.bind().await;
    let pdu = c.assoc.request_pdu(&msg).unwrap();
    c.send(&fragments(&pdu, &[10])[0]).await.unwrap();
    let t = c.closed_within(IDLE * 4).await;
    assert!(t.is_some(), "a call left unfinished stays open");

    good.finish(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_connection_cap_closes_the_excess_and_frees_its_slots() {
    const CAP: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let node = Kmsd::start(dir.path(), &["--max-connections", "20"]);
    let addr = node.kms_addr();
    let mut conns = Vec::new();
    for _ in 0..=CAP {
        conns.push(RawConn::connect(addr).await);
    }
    let (mut open, closed) = split_closed(conns).await;
    assert_eq!(
        (open.len(), closed),
        (CAP, 1),
        "of {} idle connections, {CAP} should stay open",
        CAP + 1
    );
    // The cap is global: another source address is refused too while it is reached.
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let mut c = RawConn::connect_from(other, addr).await.unwrap();
    expect_closed_at_once(&mut c, "another source while the global cap is reached").await;
    // The connections that stayed open are served.
    let mut first = open.pop().unwrap();
    first.bind().await;
    good_call(&mut first, "a connection within the cap").await;
    // Slots are released when connections close.
    drop(open);
    drop(first);
    served_once_released(
        || async move { RawConn::connect_from(other, addr).await.unwrap() },
        "a client after the connections closed",
    )
    .await;
    let rejected = tokio::task::spawn_blocking(move || {
        node.metric("kmsd_connections_rejected_total{reason=\"max_connections\"}")
    })
    .await
    .unwrap();
    assert!(rejected >= 2.0, "rejected {rejected}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_ack_names_the_port_the_client_connected_to() {
    let dir = tempfile::tempdir().unwrap();
    // Two KMS listeners: each BIND_ACK carries the port of the listener that took the call.
    let node = Kmsd::start(
        dir.path(),
        &["--kms-listen", "127.0.0.1:0", "--kms-listen", "127.0.0.1:0"],
    );
    let addrs = node.kms.clone();
    assert!(addrs.len() >= 2, "{addrs:?}");
    for addr in addrs {
        let mut c = RawConn::connect(addr).await;
        let ack = c.round_trip(&bind_pdu()).await.expect("a BIND_ACK");
        let ack = kms_wire::rpc::BindAck::decode(&ack).expect("a BIND_ACK");
        assert_eq!(
            ack.sec_addr,
            format!("{}\0", addr.port()).into_bytes(),
            "secondary address of the BIND_ACK from {addr}"
        );
    }
}
