//! Bounded reassembly of fragmented REQUESTs by the host association: requests from the
//! vectors split into 2 and into many fragments (also fed one byte at a time through the frame
//! decoder) get byte-for-byte the responses of the unfragmented requests; every sequence
//! violation and every exceeded bound closes the connection with a typed error, never a panic.

use kms_wire::rpc::{
    Association, CallError, DEFAULT_MAX_PDU, Fault, FrameDecoder, FrameStatus, Header, HostAction,
    HostConfig, MAX_REQUEST_FRAGMENTS, MAX_REQUEST_STUB, PendingCall, Request, RpcError, Syntax,
    encode_request_stub, frame_len, parse_call_result, pfc, ptype, status,
};
use std::sync::OnceLock;

use serde_json::Value;

use crate::common::{captured, load_json, unhex};
use crate::server_deterministic::CaseHost;

/// Split a whole REQUEST PDU into fragments whose stubs have the given sizes (a size beyond
/// the stub left is cut short; whatever is left after the listed sizes goes into the last
/// fragment). Every fragment keeps the header, context, opnum, alloc_hint and object UUID.
pub(crate) fn fragment(pdu: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
    let req = Request::decode(pdu).expect("a REQUEST");
    let mut pieces = Vec::new();
    let mut rest = req.stub;
    for &n in sizes {
        let (piece, tail) = rest.split_at(n.min(rest.len()));
        pieces.push(piece);
        rest = tail;
    }
    pieces.push(rest);
    let n = pieces.len();
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let mut header = req.header;
            header.pfc_flags &= !pfc::FIRST_LAST;
            if i == 0 {
                header.pfc_flags |= pfc::FIRST_FRAG;
            }
            if i + 1 == n {
                header.pfc_flags |= pfc::LAST_FRAG;
            }
            Request {
                header,
                stub: piece,
                ..req
            }
            .encode()
        })
        .collect()
}

/// Stub sizes for `parts` fragments of roughly equal size.
fn even_split(stub_len: usize, parts: usize) -> Vec<usize> {
    let each = stub_len.div_ceil(parts);
    vec![each; parts - 1]
}

fn stub_len(pdu: &[u8]) -> usize {
    Request::decode(pdu).unwrap().stub.len()
}

/// The ways each vector REQUEST is cut: 2 fragments, 3, 1-byte fragments (about 280), 7-byte
/// fragments, and cuts with empty first / middle fragments.
fn splits(stub_len: usize) -> Vec<(&'static str, Vec<usize>)> {
    vec![
        ("halves", even_split(stub_len, 2)),
        ("thirds", even_split(stub_len, 3)),
        ("bytes", vec![1; stub_len - 1]),
        ("7-byte", vec![7; stub_len / 7]),
        ("empty first and middle", vec![0, 10, 0, 0, 100]),
    ]
}

/// Feed all fragments but the last (each must be buffered), then the last.
pub(crate) fn feed<'a>(a: &mut Association, frags: &'a [Vec<u8>]) -> HostAction<'a> {
    let (last, init) = frags.split_last().unwrap();
    for (i, f) in init.iter().enumerate() {
        assert_eq!(a.on_pdu(f), HostAction::Continue, "fragment {i}");
        assert!(a.is_reassembling());
    }
    let action = a.on_pdu(last);
    assert!(!a.is_reassembling());
    action
}

/// The cases of server-deterministic.json (parsed once).
pub(crate) fn deterministic_cases() -> &'static [Value] {
    static CASES: OnceLock<Vec<Value>> = OnceLock::new();
    CASES.get_or_init(|| {
        load_json("server-deterministic.json")["cases"]
            .as_array()
            .unwrap()
            .clone()
    })
}

/// Replay one server-deterministic case with each REQUEST cut by `split` (stub length → stub
/// sizes for [`fragment`]); every host PDU must equal the expected one. Returns the number of
/// fragmented calls.
pub(crate) fn replay_case(case: &Value, split: &dyn Fn(usize) -> Vec<usize>) -> usize {
    let mut calls = 0;
    let name = case["name"].as_str().unwrap();
    let host = CaseHost::new(case);
    let mut assoc = host.association();
    for (i, ex) in case["exchanges"].as_array().unwrap().iter().enumerate() {
        let client = unhex(ex["client_pdu"].as_str().unwrap());
        let expected = unhex(ex["expected_server_pdu"].as_str().unwrap());
        let frags = if client[2] == ptype::REQUEST {
            calls += 1;
            fragment(&client, &split(stub_len(&client)))
        } else {
            vec![client]
        };
        let got = match feed(&mut assoc, &frags) {
            HostAction::Reply(r) => r,
            HostAction::Call(call) => host.answer(call),
            other => panic!("{name} #{i}: {other:?}"),
        };
        assert_eq!(hex::encode(got), hex::encode(expected), "{name} #{i}");
    }
    calls
}

/// [`replay_case`] for every case.
fn replay_deterministic(split: impl Fn(usize) -> Vec<usize>) -> usize {
    deterministic_cases()
        .iter()
        .map(|case| replay_case(case, &split))
        .sum()
}

#[test]
fn fragmented_vector_requests_get_identical_responses() {
    let stub_sizes: Vec<usize> = deterministic_cases()
        .iter()
        .flat_map(|c| c["exchanges"].as_array().unwrap())
        .map(|ex| unhex(ex["client_pdu"].as_str().unwrap()))
        .filter(|p| p[2] == ptype::REQUEST)
        .map(|p| stub_len(&p))
        .collect();
    assert!(stub_sizes.len() >= 10);
    for (label, _) in splits(300) {
        let calls = replay_deterministic(|len| {
            splits(len)
                .into_iter()
                .find(|(l, _)| *l == label)
                .unwrap()
                .1
        });
        assert_eq!(calls, stub_sizes.len(), "{label}");
    }
    // The byte-sized split really produced one fragment per stub byte.
    let client = unhex(
        deterministic_cases()[0]["exchanges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|ex| ex["client_pdu"].as_str().unwrap())
            .find(|h| unhex(h)[2] == ptype::REQUEST)
            .unwrap(),
    );
    let n = stub_len(&client);
    assert!(n > 250);
    assert_eq!(fragment(&client, &vec![1; n - 1]).len(), n);
}

#[test]
fn fragmented_vector_requests_byte_at_a_time_through_the_frame_decoder() {
    let dec = FrameDecoder::new(DEFAULT_MAX_PDU);
    for parts in [2usize, 5, 40] {
        for case in deterministic_cases() {
            let name = case["name"].as_str().unwrap();
            let host = CaseHost::new(case);
            let mut assoc = host.association();
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            for ex in case["exchanges"].as_array().unwrap() {
                let client = unhex(ex["client_pdu"].as_str().unwrap());
                if client[2] == ptype::REQUEST {
                    let sizes = even_split(stub_len(&client), parts);
                    stream.extend(fragment(&client, &sizes).concat());
                } else {
                    stream.extend(client);
                }
                expected.extend(unhex(ex["expected_server_pdu"].as_str().unwrap()));
            }
            let mut buf = Vec::new();
            let mut out = Vec::new();
            for &byte in &stream {
                buf.push(byte);
                while let FrameStatus::Ready { len } = dec.check(&buf).unwrap() {
                    match assoc.on_pdu(&buf[..len]) {
                        HostAction::Reply(r) => out.extend(r),
                        HostAction::Call(call) => out.extend(host.answer(call)),
                        HostAction::Continue => {}
                        HostAction::Close(e) => panic!("{name}: closed: {e}"),
                    }
                    buf.drain(..len);
                }
            }
            assert!(buf.is_empty() && !assoc.is_reassembling(), "{name}");
            assert_eq!(hex::encode(out), hex::encode(expected), "{name} in {parts}");
        }
    }
}

#[test]
fn fragmented_captured_requests_become_the_same_calls() {
    let mut calls = 0;
    for (name, file) in captured() {
        for conn in file["connections"].as_array().unwrap() {
            let mut whole = Association::new(HostConfig::default(), 0x1235);
            let mut split = whole.clone();
            let pdus = conn["pdus"].as_array().unwrap();
            for (i, p) in pdus.iter().enumerate().filter(|(_, p)| p["dir"] == "c2s") {
                let pdu = unhex(p["hex"].as_str().unwrap());
                let reference = whole.on_pdu(&pdu);
                if pdu[2] != ptype::REQUEST {
                    assert_eq!(split.on_pdu(&pdu), reference, "{name} pdu {i}");
                    continue;
                }
                for sizes in [even_split(stub_len(&pdu), 2), vec![3; 100]] {
                    let frags = fragment(&pdu, &sizes);
                    assert_eq!(feed(&mut split, &frags), reference, "{name} pdu {i}");
                }
                // With the captured host's KMS answer, the RESPONSE is the captured one.
                if let (HostAction::Call(call), Some(reply)) = (&reference, pdus.get(i + 1)) {
                    let frags = fragment(&pdu, &even_split(stub_len(&pdu), 4));
                    let HostAction::Call(fcall) = feed(&mut split.clone(), &frags) else {
                        panic!("{name} pdu {i}")
                    };
                    let answer = |c: PendingCall<'_>| match reply.get("kms_message_hex") {
                        Some(m) => c.respond(Ok(&unhex(m.as_str().unwrap()))),
                        None => c.respond(Err(kms_wire::Hresult(
                            u32::from_str_radix(
                                reply["stub"]["return_value"]
                                    .as_str()
                                    .unwrap()
                                    .trim_start_matches("0x"),
                                16,
                            )
                            .unwrap(),
                        ))),
                    };
                    let sbytes = unhex(reply["hex"].as_str().unwrap());
                    assert_eq!(answer(fcall), sbytes, "{name} pdu {i}");
                    assert_eq!(answer(call.clone()), sbytes, "{name} pdu {i}");
                    calls += 1;
                }
            }
        }
    }
    assert!(calls >= 40, "{calls} calls");
}

// ---------------------------------------------------------------------------------------------
// Violations

/// A client-built BIND/ALTER_CONTEXT sequence: ctx 0 = NDR32, ctx 1 = NDR64.
fn bound() -> Association {
    let mut client = kms_wire::rpc::ClientAssociation::new(Default::default());
    let mut a = Association::new(HostConfig::default(), 0x1235);
    let HostAction::Reply(ack) = a.on_pdu(&client.bind_pdu().unwrap()) else {
        panic!("no BIND_ACK")
    };
    if let kms_wire::rpc::BindStep::SendAlterContext(alter) = client.on_bind_ack(&ack).unwrap() {
        assert!(matches!(a.on_pdu(&alter), HostAction::Reply(_)));
    }
    assert_eq!(a.context_syntax(0), Some(Syntax::Ndr32));
    assert_eq!(a.context_syntax(1), Some(Syntax::Ndr64));
    a
}

/// One REQUEST PDU with explicit fragment flags.
fn frag(flags: u8, call_id: u32, ctx: u16, opnum: u16, stub: &[u8]) -> Vec<u8> {
    Request {
        header: Header::new(ptype::REQUEST, flags, call_id),
        alloc_hint: 0,
        p_cont_id: ctx,
        opnum,
        object: None,
        stub,
    }
    .encode()
}

const FIRST: u8 = pfc::FIRST_FRAG;
const MIDDLE: u8 = 0;
const LAST: u8 = pfc::LAST_FRAG;

fn ndr64_stub(msg: &[u8]) -> Vec<u8> {
    let mut s = Vec::new();
    encode_request_stub(Syntax::Ndr64, msg, &mut s);
    s
}

fn expect_close(a: &mut Association, pdu: &[u8]) -> RpcError {
    match a.on_pdu(pdu) {
        HostAction::Close(e) => {
            assert!(!a.is_reassembling(), "state dropped on close");
            e
        }
        other => panic!("expected close, got {other:?}"),
    }
}

fn expect_fault(a: &mut Association, pdu: &[u8]) -> Fault {
    match a.on_pdu(pdu) {
        HostAction::Reply(r) => Fault::decode(&r).unwrap(),
        other => panic!("expected FAULT, got {other:?}"),
    }
}

fn assert_continue(a: &mut Association, pdu: &[u8]) {
    assert_eq!(a.on_pdu(pdu), HostAction::Continue);
}

#[test]
fn middle_or_last_fragment_without_a_first_closes() {
    for flags in [
        MIDDLE,
        LAST,
        MIDDLE | pfc::CONC_MPX,
        LAST | pfc::OBJECT_UUID,
    ] {
        let mut r = frag(flags, 3, 1, 0, &[0; 24]);
        if flags & pfc::OBJECT_UUID != 0 {
            // Request::encode adds the flag only with an object; put 16 bytes in by hand.
            r = Request {
                object: Some(kms_wire::Guid([7; 16])),
                ..Request::decode(&r).unwrap()
            }
            .encode();
        }
        let e = expect_close(&mut bound(), &r);
        assert!(
            matches!(e, RpcError::FragmentSequence(_)),
            "{flags:#x}: {e}"
        );
    }
    // Also right after a completed fragmented call.
    let mut a = bound();
    let stub = ndr64_stub(&[5; 30]);
    assert_continue(&mut a, &frag(FIRST, 3, 1, 0, &stub[..10]));
    assert!(matches!(
        a.on_pdu(&frag(LAST, 3, 1, 0, &stub[10..])),
        HostAction::Call(_)
    ));
    let e = expect_close(&mut a, &frag(LAST, 3, 1, 0, &stub[10..]));
    assert!(matches!(e, RpcError::FragmentSequence(_)), "{e}");
}

#[test]
fn new_request_while_one_is_in_progress_closes() {
    let stub = ndr64_stub(&[5; 30]);
    for flags in [FIRST, FIRST | LAST] {
        for call_id in [3u32, 4] {
            let mut a = bound();
            assert_continue(&mut a, &frag(FIRST, 3, 1, 0, &stub[..10]));
            assert_continue(&mut a, &frag(MIDDLE, 3, 1, 0, &stub[10..20]));
            let e = expect_close(&mut a, &frag(flags, call_id, 1, 0, &stub));
            assert!(matches!(e, RpcError::FragmentSequence(_)), "{e}");
        }
    }
}

#[test]
fn other_pdus_in_the_middle_of_a_fragmented_request_close() {
    let stub = ndr64_stub(&[5; 30]);
    let client_bind = kms_wire::rpc::ClientAssociation::new(Default::default())
        .bind_pdu()
        .unwrap();
    let mut alter = client_bind.clone();
    alter[2] = ptype::ALTER_CONTEXT;
    for pdu in [client_bind, alter] {
        let mut a = bound();
        assert_continue(&mut a, &frag(FIRST, 3, 1, 0, &stub[..10]));
        let e = expect_close(&mut a, &pdu);
        assert!(matches!(e, RpcError::FragmentSequence(_)), "{e}");
    }
}

#[test]
fn fragments_of_another_call_context_or_opnum_close() {
    let stub = ndr64_stub(&[5; 30]);
    for (flags, call_id, ctx, opnum, field, expected, got) in [
        (MIDDLE, 4u32, 1u16, 0u16, "call_id", 3u32, 4u32),
        (LAST, 2, 1, 0, "call_id", 3, 2),
        (MIDDLE, 3, 0, 0, "p_cont_id", 1, 0),
        (LAST, 3, 7, 0, "p_cont_id", 1, 7),
        (MIDDLE, 3, 1, 1, "opnum", 0, 1),
        (LAST, 3, 1, 0xffff, "opnum", 0, 0xffff),
    ] {
        let mut a = bound();
        assert_continue(&mut a, &frag(FIRST, 3, 1, 0, &stub[..10]));
        assert_continue(&mut a, &frag(MIDDLE, 3, 1, 0, &stub[10..20]));
        assert_eq!(
            expect_close(&mut a, &frag(flags, call_id, ctx, opnum, &stub[20..])),
            RpcError::FragmentMismatch {
                field,
                expected,
                got
            }
        );
    }
}

#[test]
fn reassembled_stub_above_the_bound_closes() {
    // Fragments as large as max_pdu allows: 4096 - 24 = 4072 stub bytes each.
    let chunk = vec![0xa5u8; DEFAULT_MAX_PDU - 24];
    let full = frag(MIDDLE, 3, 1, 0, &chunk);
    assert_eq!(full.len(), DEFAULT_MAX_PDU);
    assert_eq!(frame_len(&full, DEFAULT_MAX_PDU), Ok(Some(DEFAULT_MAX_PDU)));
    let fits = MAX_REQUEST_STUB / chunk.len(); // 16 fragments = 65152 bytes
    for last_flags in [MIDDLE, LAST] {
        let mut a = bound();
        assert_continue(&mut a, &frag(FIRST, 3, 1, 0, &chunk));
        for _ in 1..fits {
            assert_continue(&mut a, &full);
        }
        assert_eq!(
            expect_close(&mut a, &frag(last_flags, 3, 1, 0, &chunk)),
            RpcError::ReassemblyLimit {
                what: "stub bytes",
                max: MAX_REQUEST_STUB
            }
        );
    }
    // Exactly at the bound is fine (and then a bad stub, so a FAULT, not a close).
    let mut a = bound().with_reassembly_limits(100, 8);
    assert_continue(&mut a, &frag(FIRST, 3, 1, 0, &[0xff; 60]));
    let f = expect_fault(&mut a, &frag(LAST, 3, 1, 0, &[0xff; 40]));
    assert_eq!(f.status, status::RPC_X_BAD_STUB_DATA);
    // One byte over, in the first fragment or later.
    let mut a = bound().with_reassembly_limits(100, 8);
    assert_eq!(
        expect_close(&mut a, &frag(FIRST, 3, 1, 0, &[0; 101])),
        RpcError::ReassemblyLimit {
            what: "stub bytes",
            max: 100
        }
    );
    let mut a = bound().with_reassembly_limits(100, 8);
    assert_continue(&mut a, &frag(FIRST, 3, 1, 0, &[0; 60]));
    assert!(matches!(
        expect_close(&mut a, &frag(LAST, 3, 1, 0, &[0; 41])),
        RpcError::ReassemblyLimit { .. }
    ));
    // Unfragmented REQUESTs are bounded by max_pdu only.
    let mut a = bound().with_reassembly_limits(10, 8);
    let msg = [9u8; 200];
    assert!(matches!(
        a.on_pdu(&frag(FIRST | LAST, 3, 1, 0, &ndr64_stub(&msg))),
        HostAction::Call(_)
    ));
}

#[test]
fn too_many_fragments_close() {
    let mut a = bound();
    assert_continue(&mut a, &frag(FIRST, 3, 1, 0, &[]));
    let empty = frag(MIDDLE, 3, 1, 0, &[]);
    for _ in 2..=MAX_REQUEST_FRAGMENTS {
        assert_continue(&mut a, &empty);
    }
    assert_eq!(
        expect_close(&mut a, &frag(LAST, 3, 1, 0, &[])),
        RpcError::ReassemblyLimit {
            what: "fragments",
            max: MAX_REQUEST_FRAGMENTS
        }
    );
    // The last fragment counts: 3 allowed, 4 refused.
    let stub = ndr64_stub(&[1; 8]);
    let mut a = bound().with_reassembly_limits(MAX_REQUEST_STUB, 3);
    assert_continue(&mut a, &frag(FIRST, 3, 1, 0, &stub[..4]));
    assert_continue(&mut a, &frag(MIDDLE, 3, 1, 0, &stub[4..8]));
    assert!(matches!(
        a.on_pdu(&frag(LAST, 3, 1, 0, &stub[8..])),
        HostAction::Call(_)
    ));
    assert_continue(&mut a, &frag(FIRST, 4, 1, 0, &stub[..4]));
    assert_continue(&mut a, &frag(MIDDLE, 4, 1, 0, &stub[4..8]));
    assert_continue(&mut a, &frag(MIDDLE, 4, 1, 0, &stub[8..12]));
    assert!(matches!(
        expect_close(&mut a, &frag(LAST, 4, 1, 0, &stub[12..])),
        RpcError::ReassemblyLimit {
            what: "fragments",
            max: 3
        }
    ));
    // A limit below 2 refuses fragmentation altogether.
    let mut a = bound().with_reassembly_limits(MAX_REQUEST_STUB, 1);
    assert_continue(&mut a, &frag(FIRST, 3, 1, 0, &stub[..4]));
    assert!(matches!(
        expect_close(&mut a, &frag(LAST, 3, 1, 0, &stub[4..])),
        RpcError::ReassemblyLimit { .. }
    ));
}

#[test]
fn a_fragment_above_max_pdu_still_closes() {
    let big = frag(FIRST, 3, 1, 0, &vec![0; DEFAULT_MAX_PDU - 23]);
    assert_eq!(
        frame_len(&big, DEFAULT_MAX_PDU),
        Err(RpcError::FrameTooLarge {
            len: DEFAULT_MAX_PDU + 1,
            max: DEFAULT_MAX_PDU
        })
    );
    assert!(matches!(
        expect_close(&mut bound(), &big),
        RpcError::FrameTooLarge { .. }
    ));
}

#[test]
fn faults_of_a_fragmented_call_come_once_after_its_last_fragment() {
    let mut a = bound();
    let msg = [0x42u8; 40];
    let stub = ndr64_stub(&msg);
    let mut bad_stub = stub.clone();
    bad_stub[0..4].copy_from_slice(&1000u32.to_le_bytes());
    for (call_id, ctx, opnum, stub, want) in [
        (10u32, 9u16, 0u16, &stub, status::NCA_UNK_IF),
        (11, 1, 5, &stub, status::NCA_OP_RNG_ERROR),
        (12, 1, 0, &bad_stub, status::RPC_X_BAD_STUB_DATA),
    ] {
        assert_continue(&mut a, &frag(FIRST, call_id, ctx, opnum, &stub[..7]));
        assert_continue(&mut a, &frag(MIDDLE, call_id, ctx, opnum, &stub[7..20]));
        let f = expect_fault(&mut a, &frag(LAST, call_id, ctx, opnum, &stub[20..]));
        assert_eq!(
            (f.status, f.header.call_id, f.p_cont_id),
            (want, call_id, ctx)
        );
        assert_eq!(f.header.pfc_flags, 0x23);
    }
    // The association is still usable, fragmented or not.
    for frags in [
        fragment(&frag(FIRST | LAST, 13, 1, 0, &stub), &[30]),
        vec![frag(FIRST | LAST, 14, 1, 0, &stub)],
    ] {
        match feed(&mut a, &frags) {
            HostAction::Call(c) => assert_eq!(c.kms_message(), &msg),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_fragmented_call_keeps_its_own_flags_and_object_uuid() {
    // CONC_MPX / PENDING_CANCEL bits and an object UUID in every fragment are tolerated.
    let mut a = bound();
    let msg = [3u8; 17];
    let stub = ndr64_stub(&msg);
    let whole = Request {
        header: Header::new(ptype::REQUEST, 0x17, 21),
        alloc_hint: 999,
        p_cont_id: 1,
        opnum: 0,
        object: Some(kms_wire::Guid([1; 16])),
        stub: &stub,
    }
    .encode();
    let frags = fragment(&whole, &[1, 2, 3]);
    assert_eq!(frags.len(), 4);
    assert_eq!(
        frags.iter().map(|f| f[3]).collect::<Vec<_>>(),
        [0x95, 0x94, 0x94, 0x96]
    );
    match feed(&mut a, &frags) {
        HostAction::Call(c) => {
            assert_eq!(
                (c.kms_message(), c.call_id(), c.context_id()),
                (&msg[..], 21, 1)
            );
            let resp = c.respond(Ok(&msg));
            assert_eq!(
                resp,
                PendingCall::new(21, 1, Syntax::Ndr64, &msg).respond(Ok(&msg))
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_client_refuses_fragmented_responses() {
    let msg = [0x55u8; 40];
    let good = PendingCall::new(2, 0, Syntax::Ndr32, &msg).respond(Ok(&msg));
    assert_eq!(parse_call_result(&good, 2, 0, Syntax::Ndr32), Ok(&msg[..]));
    for flags in [0x01u8, 0x02, 0x00] {
        let mut b = good.clone();
        b[3] = flags;
        // Framed like any RESPONSE fragment, but not reassembled by the client.
        assert_eq!(frame_len(&b, DEFAULT_MAX_PDU), Ok(Some(b.len())));
        assert_eq!(
            parse_call_result(&b, 2, 0, Syntax::Ndr32),
            Err(CallError::Protocol(RpcError::Fragmented(flags)))
        );
    }
}

#[test]
fn random_fragment_streams_never_panic() {
    // Deterministic pseudo-random flag / id / size mixes on a bound association.
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let stub = ndr64_stub(&[0x11; 64]);
    for _ in 0..500 {
        let mut a = bound().with_reassembly_limits(200, 6);
        for _ in 0..12 {
            let r = next();
            let flags = (r & 0x03) as u8 | if r & 0x40 != 0 { pfc::CONC_MPX } else { 0 };
            let call_id = 3 + ((r >> 8) & 1) as u32;
            let ctx = ((r >> 9) & 1) as u16 ^ 1;
            let opnum = u16::from((r >> 10) & 7 == 0);
            let start = (r >> 16) as usize % stub.len();
            let end = (start + (r >> 24) as usize % 90).min(stub.len());
            match a.on_pdu(&frag(flags, call_id, ctx, opnum, &stub[start..end])) {
                HostAction::Close(_) => break,
                HostAction::Reply(r) => assert!(Fault::decode(&r).is_ok()),
                HostAction::Call(c) => assert!(!c.respond(Ok(&[1])).is_empty()),
                HostAction::Continue => assert!(a.is_reassembling()),
            }
        }
    }
}
