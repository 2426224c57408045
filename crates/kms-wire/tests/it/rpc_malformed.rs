//! Malformed input, one test per class: the frame decoder, the typed decoders and the host
//! association answer with a typed error (close) or a FAULT, never a panic; the association
//! stays usable after a FAULT; the client rejects replies that break §3.7/§4.3.

use kms_wire::Hresult;
use kms_wire::rpc::{
    Association, Bind, CallError, ClientAssociation, ClientOptions, DEFAULT_MAX_PDU, Fault,
    FrameDecoder, FrameStatus, HostAction, HostConfig, PendingCall, Request, RequestStub, RpcError,
    Syntax, frame_len, parse_call_result, status,
};

use crate::common::unhex;

/// vlmcs default BIND: ctx 0 NDR32, ctx 1 NDR64, ctx 2 BTFN(3), flags 0x13, call_id 2.
const BIND3: &str = "05000b1310000000a000000002000000d016d0160000000003000000000001007521c8514e845047b0d8ec255555bc0601000000045d888aeb1cc9119fe808002b10486002000000010001007521c8514e845047b0d8ec255555bc060100000033057171babe37498319b5dbef9ccc3601000000020001007521c8514e845047b0d8ec255555bc06010000002c1cb76c12984045030000000000000001000000";

fn bind3() -> Vec<u8> {
    unhex(BIND3)
}

/// A fresh association that has answered BIND3 (ctx 1 = NDR64 bound, ctx 0 refused).
fn bound() -> Association {
    let mut a = Association::new(HostConfig::default(), 0x1235);
    assert!(matches!(a.on_pdu(&bind3()), HostAction::Reply(_)));
    a
}

fn set_frag_length(pdu: &mut [u8], len: u16) {
    pdu[8..10].copy_from_slice(&len.to_le_bytes());
}

/// A REQUEST with the given context, opnum and raw stub.
fn request(call_id: u32, ctx: u16, opnum: u16, stub: &[u8]) -> Vec<u8> {
    Request {
        header: kms_wire::rpc::Header::new(0, 0x03, call_id),
        alloc_hint: stub.len() as u32,
        p_cont_id: ctx,
        opnum,
        object: None,
        stub,
    }
    .encode()
}

fn ndr64_stub(msg: &[u8]) -> Vec<u8> {
    let mut s = Vec::new();
    kms_wire::rpc::encode_request_stub(Syntax::Ndr64, msg, &mut s);
    s
}

fn expect_close(a: &mut Association, pdu: &[u8]) -> RpcError {
    match a.on_pdu(pdu) {
        HostAction::Close(e) => e,
        other => panic!("expected close, got {other:?}"),
    }
}

fn expect_fault(a: &mut Association, pdu: &[u8]) -> Fault {
    match a.on_pdu(pdu) {
        HostAction::Reply(r) => Fault::decode(&r).unwrap(),
        other => panic!("expected FAULT, got {other:?}"),
    }
}

fn assert_still_usable(a: &mut Association, call_id: u32) {
    let msg = [0x42u8; 20];
    match a.on_pdu(&request(call_id, 1, 0, &ndr64_stub(&msg))) {
        HostAction::Call(c) => {
            assert_eq!(c.kms_message(), &msg);
            assert_eq!(c.call_id(), call_id);
        }
        other => panic!("association unusable after fault: {other:?}"),
    }
}

#[test]
fn truncated_header() {
    let b = bind3();
    for n in 0..16 {
        assert_eq!(frame_len(&b[..n], DEFAULT_MAX_PDU), Ok(None));
        let e = expect_close(&mut Association::new(HostConfig::default(), 1), &b[..n]);
        assert!(matches!(e, RpcError::Truncated { .. }), "{e}");
        assert!(matches!(
            Bind::decode(&b[..n]),
            Err(RpcError::Truncated { .. })
        ));
    }
}

#[test]
fn lying_frag_length() {
    let mut b = bind3();
    set_frag_length(&mut b, 200); // longer than the bytes present
    assert_eq!(frame_len(&b, DEFAULT_MAX_PDU), Ok(None));
    let e = expect_close(&mut Association::new(HostConfig::default(), 1), &b);
    assert_eq!(
        e,
        RpcError::LyingLength {
            frag_length: 200,
            actual: 160
        }
    );
    assert!(matches!(
        Bind::decode(&b),
        Err(RpcError::LyingLength { .. })
    ));
    // Shorter than the bytes present: the frame ends early, the BIND body is cut.
    set_frag_length(&mut b, 40);
    assert_eq!(frame_len(&b, DEFAULT_MAX_PDU), Ok(Some(40)));
    let e = expect_close(&mut Association::new(HostConfig::default(), 1), &b[..40]);
    assert!(matches!(e, RpcError::BadBind(_)), "{e}");
    let e = expect_close(&mut Association::new(HostConfig::default(), 1), &b);
    assert!(matches!(e, RpcError::LyingLength { .. }), "{e}");
}

#[test]
fn oversize_frame() {
    let mut b = bind3();
    set_frag_length(&mut b, 4097);
    assert_eq!(
        frame_len(&b, DEFAULT_MAX_PDU),
        Err(RpcError::FrameTooLarge {
            len: 4097,
            max: 4096
        })
    );
    let small = FrameDecoder::new(100);
    assert!(matches!(
        small.check(&bind3()),
        Err(RpcError::FrameTooLarge { len: 160, max: 100 })
    ));
    let cfg = HostConfig {
        max_pdu: 100,
        ..HostConfig::default()
    };
    let e = expect_close(&mut Association::new(cfg, 1), &bind3());
    assert_eq!(e, RpcError::FrameTooLarge { len: 160, max: 100 });
}

#[test]
fn frag_length_below_header() {
    for fl in [0u16, 1, 15] {
        let mut b = bind3();
        set_frag_length(&mut b, fl);
        assert_eq!(
            frame_len(&b, DEFAULT_MAX_PDU),
            Err(RpcError::FrameTooSmall(fl))
        );
        assert_eq!(
            expect_close(&mut Association::new(HostConfig::default(), 1), &b),
            RpcError::FrameTooSmall(fl)
        );
    }
}

#[test]
fn wrong_rpc_version() {
    for (maj, min) in [(4u8, 0u8), (5, 1), (6, 0), (0, 0)] {
        let mut b = bind3();
        b[0] = maj;
        b[1] = min;
        let want = RpcError::BadVersion {
            major: maj,
            minor: min,
        };
        assert_eq!(frame_len(&b, DEFAULT_MAX_PDU), Err(want.clone()));
        assert_eq!(
            expect_close(&mut Association::new(HostConfig::default(), 1), &b),
            want
        );
        assert_eq!(Bind::decode(&b), Err(want));
    }
}

#[test]
fn big_endian_drep() {
    let mut b = bind3();
    b[4] = 0x00; // big-endian integers, ASCII
    assert_eq!(
        frame_len(&b, DEFAULT_MAX_PDU),
        Err(RpcError::BadDrep([0, 0, 0, 0]))
    );
    let e = expect_close(&mut Association::new(HostConfig::default(), 1), &b);
    assert!(matches!(e, RpcError::BadDrep(_)));
    // Other nibbles (character / float representation) are not checked.
    let mut ok = bind3();
    ok[4] = 0x11;
    ok[5] = 0x01;
    assert!(matches!(
        Association::new(HostConfig::default(), 1).on_pdu(&ok),
        HostAction::Reply(_)
    ));
}

#[test]
fn nonzero_auth_length() {
    let mut b = bind3();
    b[10] = 8;
    assert_eq!(
        frame_len(&b, DEFAULT_MAX_PDU),
        Err(RpcError::AuthNotSupported(8))
    );
    assert_eq!(
        expect_close(&mut Association::new(HostConfig::default(), 1), &b),
        RpcError::AuthNotSupported(8)
    );
}

#[test]
fn fragmented_flags() {
    // BIND and ALTER_CONTEXT are never reassembled: refused by the frame decoder as soon as
    // the header is in, and by the association.
    for flags in [0x00u8, 0x01, 0x02, 0x11, 0x12] {
        let mut b = bind3();
        b[3] = flags;
        assert_eq!(
            frame_len(&b, DEFAULT_MAX_PDU),
            Err(RpcError::Fragmented(flags))
        );
        assert_eq!(
            expect_close(&mut Association::new(HostConfig::default(), 1), &b),
            RpcError::Fragmented(flags)
        );
        assert_eq!(Bind::decode(&b), Err(RpcError::Fragmented(flags)));
        let mut alter = b.clone();
        alter[2] = 14;
        assert_eq!(
            expect_close(&mut bound(), &alter),
            RpcError::Fragmented(flags)
        );
    }
    // A REQUEST fragment is framed and buffered; the call is served once the last one arrives
    // (rpc_fragments.rs has the full coverage).
    let mut a = bound();
    let stub = ndr64_stub(&[1, 2, 3]);
    let (head, tail) = stub.split_at(5);
    let mut first = request(3, 1, 0, head);
    first[3] = 0x01;
    let mut last = request(3, 1, 0, tail);
    last[3] = 0x02;
    assert_eq!(frame_len(&first, DEFAULT_MAX_PDU), Ok(Some(first.len())));
    assert_eq!(a.on_pdu(&first), HostAction::Continue);
    assert!(a.is_reassembling());
    match a.on_pdu(&last) {
        HostAction::Call(c) => assert_eq!((c.kms_message(), c.call_id()), (&[1, 2, 3][..], 3)),
        other => panic!("{other:?}"),
    }
    assert!(!a.is_reassembling());
    // A middle or last fragment with nothing in progress closes the connection.
    for flags in [0x00u8, 0x02] {
        let mut r = request(4, 1, 0, &stub);
        r[3] = flags;
        assert!(matches!(
            expect_close(&mut bound(), &r),
            RpcError::FragmentSequence(_)
        ));
    }
}

#[test]
fn unsupported_ptypes_close_the_connection() {
    // RESPONSE, FAULT, BIND_ACK, BIND_NAK, ALTER_CONTEXT_RESP, AUTH3, SHUTDOWN, CO_CANCEL,
    // ORPHANED and unknown values from a client.
    for pt in [1u8, 2, 3, 12, 13, 15, 16, 17, 18, 19, 20, 255] {
        let mut b = bind3();
        b[2] = pt;
        assert_eq!(
            expect_close(&mut Association::new(HostConfig::default(), 1), &b),
            RpcError::UnsupportedPtype(pt),
            "ptype {pt}"
        );
        let mut a = bound();
        assert_eq!(expect_close(&mut a, &b), RpcError::UnsupportedPtype(pt));
    }
}

#[test]
fn bind_with_lying_context_counts() {
    // n_context_elem 4 but only 3 elements present.
    let mut b = bind3();
    b[24] = 4;
    let e = expect_close(&mut Association::new(HostConfig::default(), 1), &b);
    assert!(matches!(e, RpcError::BadBind(_)), "{e}");
    // n_context_elem 255.
    b[24] = 255;
    assert!(matches!(Bind::decode(&b), Err(RpcError::BadBind(_))));
    // n_transfer_syn of the last element 200.
    let mut b = bind3();
    b[28 + 44 + 44 + 2] = 200;
    let e = expect_close(&mut Association::new(HostConfig::default(), 1), &b);
    assert!(matches!(e, RpcError::BadBind(_)), "{e}");
    // A body shorter than the 12 fixed bytes.
    let mut short = b[..20].to_vec();
    set_frag_length(&mut short, 20);
    let e = expect_close(&mut Association::new(HostConfig::default(), 1), &short);
    assert!(matches!(e, RpcError::BadBind(_)), "{e}");
    // Trailing bytes after the context list are tolerated (§3.2 "≤ body length").
    let mut t = bind3();
    t.extend_from_slice(&[0; 4]);
    set_frag_length(&mut t, 164);
    assert!(matches!(
        Association::new(HostConfig::default(), 1).on_pdu(&t),
        HostAction::Reply(_)
    ));
    assert_eq!(Bind::decode(&t).unwrap().encode(), t);
}

#[test]
fn pdus_out_of_sequence_close_the_connection() {
    let req = request(2, 0, 0, &[0; 8]);
    assert_eq!(
        expect_close(&mut Association::new(HostConfig::default(), 1), &req),
        RpcError::NotBound(0)
    );
    let mut alter = bind3();
    alter[2] = 14;
    assert_eq!(
        expect_close(&mut Association::new(HostConfig::default(), 1), &alter),
        RpcError::NotBound(14)
    );
    assert_eq!(expect_close(&mut bound(), &bind3()), RpcError::AlreadyBound);
}

#[test]
fn request_shorter_than_its_header_closes() {
    let mut a = bound();
    let mut r = request(3, 1, 0, &[]);
    r.truncate(20);
    set_frag_length(&mut r, 20);
    assert!(matches!(
        expect_close(&mut a, &r),
        RpcError::Truncated { .. }
    ));
    // OBJECT_UUID flag without the 16 bytes.
    let mut r = request(3, 1, 0, &[1, 2, 3]);
    r[3] |= 0x80;
    assert!(matches!(
        expect_close(&mut bound(), &r),
        RpcError::Truncated { .. }
    ));
}

#[test]
fn request_with_object_uuid_is_served() {
    let mut a = bound();
    let msg = [7u8; 12];
    let stub = ndr64_stub(&msg);
    let r = Request {
        header: kms_wire::rpc::Header::new(0, 0x03, 9),
        alloc_hint: 0,
        p_cont_id: 1,
        opnum: 0,
        object: Some("01234567-89ab-cdef-0123-456789abcdef".parse().unwrap()),
        stub: &stub,
    }
    .encode();
    assert_eq!(r[3], 0x83);
    match a.on_pdu(&r) {
        HostAction::Call(c) => assert_eq!(c.kms_message(), &msg),
        other => panic!("{other:?}"),
    }
}

#[test]
fn request_on_unknown_context_faults_and_connection_survives() {
    let mut a = bound();
    for (call_id, ctx) in [(3u32, 0u16), (4, 2), (5, 9), (6, 0xffff)] {
        let f = expect_fault(&mut a, &request(call_id, ctx, 0, &ndr64_stub(&[1; 8])));
        assert_eq!(f.status, status::NCA_UNK_IF);
        assert_eq!(f.header.call_id, call_id);
        assert_eq!(f.header.pfc_flags, 0x23);
        assert_eq!(f.p_cont_id, ctx);
        assert_eq!((f.alloc_hint, f.cancel_count, f.reserved), (32, 0, 0));
        assert_eq!(f.encode().len(), 32);
    }
    assert_still_usable(&mut a, 7);
}

#[test]
fn opnum_other_than_zero_faults() {
    let mut a = bound();
    for op in [1u16, 2, 0xffff] {
        let f = expect_fault(&mut a, &request(3, 1, op, &ndr64_stub(&[1; 8])));
        assert_eq!(f.status, status::NCA_OP_RNG_ERROR);
        assert_eq!((f.header.call_id, f.p_cont_id), (3, 1));
    }
    assert_still_usable(&mut a, 4);
}

#[test]
fn malformed_stubs_fault_with_bad_stub_data() {
    let mut a = bound();
    let msg = [9u8; 32];
    let good = ndr64_stub(&msg);
    let mut lying_count = good.clone();
    lying_count[0..4].copy_from_slice(&100u32.to_le_bytes());
    lying_count[8..16].copy_from_slice(&100u64.to_le_bytes());
    let mut size_mismatch = good.clone();
    size_mismatch[0..4].copy_from_slice(&31u32.to_le_bytes());
    let mut huge = good.clone();
    huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    huge[8..16].copy_from_slice(&u64::from(u32::MAX).to_le_bytes());
    let mut high_bits = good.clone();
    high_bits[8..16].copy_from_slice(&(32u64 | 1 << 40).to_le_bytes());
    for (i, stub) in [
        lying_count,
        size_mismatch,
        huge,
        high_bits,
        good[..15].to_vec(),
        Vec::new(),
    ]
    .iter()
    .enumerate()
    {
        let f = expect_fault(&mut a, &request(10 + i as u32, 1, 0, stub));
        assert_eq!(f.status, status::RPC_X_BAD_STUB_DATA, "case {i}");
        assert_eq!(f.header.call_id, 10 + i as u32);
        assert_eq!(f.p_cont_id, 1);
    }
    assert_still_usable(&mut a, 20);

    // Direct decoder checks, NDR32 too.
    assert!(matches!(
        RequestStub::decode(Syntax::Ndr32, &[4, 0, 0, 0, 5, 0, 0, 0, 1, 2, 3, 4]),
        Err(RpcError::BadStub(_))
    ));
    assert!(matches!(
        RequestStub::decode(Syntax::Ndr32, &[5, 0, 0, 0, 5, 0, 0, 0, 1, 2, 3, 4]),
        Err(RpcError::BadStub(_))
    ));
    assert!(matches!(
        RequestStub::decode(Syntax::Ndr32, &[0; 7]),
        Err(RpcError::BadStub(_))
    ));
    // Trailing bytes, alloc_hint and NDR64 pad values are ignored.
    let s = RequestStub::decode(
        Syntax::Ndr32,
        &[4, 0, 0, 0, 4, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0],
    )
    .unwrap();
    assert_eq!(
        (s.message, s.trailing),
        (&[1, 2, 3, 4][..], &[0, 0, 0, 0][..])
    );
    let mut padded = ndr64_stub(&msg);
    padded[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    let mut r = request(30, 1, 0, &padded);
    r[16..20].copy_from_slice(&9999u32.to_le_bytes());
    match a.on_pdu(&r) {
        HostAction::Call(c) => assert_eq!(c.kms_message(), &msg),
        other => panic!("{other:?}"),
    }
}

/// A tiny deterministic generator (no RNG dependency in tests).
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn random_garbage_never_panics() {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..20_000 {
        let len = (xorshift(&mut s) % 200) as usize;
        let mut buf: Vec<u8> = (0..len).map(|_| xorshift(&mut s) as u8).collect();
        // Make about half of them pass the header checks so the bodies get exercised.
        if round % 2 == 0 && buf.len() >= 16 {
            buf[0] = 5;
            buf[1] = 0;
            buf[2] = [0u8, 11, 14][round % 3];
            buf[3] |= 0x03;
            buf[4] = 0x10;
            let fl = buf.len() as u16;
            buf[8..10].copy_from_slice(&fl.to_le_bytes());
            buf[10] = 0;
            buf[11] = 0;
        }
        let _ = frame_len(&buf, DEFAULT_MAX_PDU);
        let _ = kms_wire::rpc::Pdu::decode(&buf);
        let mut fresh = Association::new(HostConfig::default(), 1);
        let _ = fresh.on_pdu(&buf);
        let mut a = bound();
        let _ = a.on_pdu(&buf);
        let _ = parse_call_result(&buf, 2, 0, Syntax::Ndr32);
        let _ = parse_call_result(&buf, 2, 1, Syntax::Ndr64);
    }
    // Pure garbage with no valid header always closes.
    let e = expect_close(
        &mut Association::new(HostConfig::default(), 1),
        b"GET / HTTP/1.1\r\n\r\n",
    );
    assert!(matches!(e, RpcError::BadVersion { .. }));
}

#[test]
fn frame_decoder_byte_at_a_time() {
    // A whole captured client stream, delivered one byte per read.
    let file = crate::common::load_json("captured/v6-win10-ndr64.json");
    let pdus: Vec<Vec<u8>> = file["connections"][0]["pdus"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["dir"] == "c2s")
        .map(|p| unhex(p["hex"].as_str().unwrap()))
        .collect();
    let stream: Vec<u8> = pdus.concat();
    let dec = FrameDecoder::default();
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    let mut a = Association::new(HostConfig::default(), 0x1235);
    let mut actions = 0;
    for &byte in &stream {
        buf.push(byte);
        loop {
            match dec.check(&buf).unwrap() {
                FrameStatus::NeedMore { total } => {
                    assert!(total > buf.len());
                    break;
                }
                FrameStatus::Ready { len } => {
                    assert!(!matches!(a.on_pdu(&buf[..len]), HostAction::Close(_)));
                    actions += 1;
                    frames.push(buf.drain(..len).collect::<Vec<u8>>());
                }
            }
        }
    }
    assert!(buf.is_empty());
    assert_eq!(frames, pdus);
    assert_eq!(actions, 4);

    // Two PDUs in one read are split correctly.
    let two = [pdus[0].clone(), pdus[1].clone()].concat();
    assert_eq!(frame_len(&two, DEFAULT_MAX_PDU), Ok(Some(pdus[0].len())));
    // A bad header is reported as soon as 16 bytes are present, before the body arrives.
    let mut bad = pdus[0].clone();
    bad[0] = 4;
    assert_eq!(
        dec.check(&bad[..15]),
        Ok(FrameStatus::NeedMore { total: 16 })
    );
    assert!(dec.check(&bad[..16]).is_err());
}

/// A RESPONSE for call 2 on ctx 0 (NDR32) carrying `msg`, as our host builds it.
fn good_response(msg: &[u8]) -> Vec<u8> {
    PendingCall::new(2, 0, Syntax::Ndr32, msg).respond(Ok(msg))
}

#[test]
fn client_rejects_responses_that_break_the_strict_checks() {
    let msg = [0x55u8; 158]; // m ≡ 2 (mod 4): two pad bytes
    let good = good_response(&msg);
    assert_eq!(parse_call_result(&good, 2, 0, Syntax::Ndr32), Ok(&msg[..]));

    let expect_protocol = |pdu: &[u8]| match parse_call_result(pdu, 2, 0, Syntax::Ndr32) {
        Err(CallError::Protocol(e)) => e,
        other => panic!("expected a protocol error, got {other:?}"),
    };
    // call_id not echoed
    let mut b = good.clone();
    b[12] = 3;
    assert_eq!(
        expect_protocol(&b),
        RpcError::CallIdMismatch {
            expected: 2,
            got: 3
        }
    );
    // p_cont_id not echoed
    let mut b = good.clone();
    b[20] = 1;
    assert!(matches!(expect_protocol(&b), RpcError::BadResponse(_)));
    // cancel_count
    let mut b = good.clone();
    b[22] = 1;
    assert!(matches!(expect_protocol(&b), RpcError::BadResponse(_)));
    // alloc_hint
    let mut b = good.clone();
    b[16] ^= 4;
    assert!(matches!(expect_protocol(&b), RpcError::BadResponse(_)));
    // responseSize != max_count
    let mut b = good.clone();
    b[24] = 157;
    assert!(matches!(expect_protocol(&b), RpcError::BadStub(_)));
    // non-zero padding before the return value
    let mut b = good.clone();
    let pad_at = 24 + 12 + 158;
    b[pad_at] = 0xcc;
    assert!(matches!(expect_protocol(&b), RpcError::BadStub(_)));
    // max_count larger than the stub
    let mut b = good.clone();
    b[24..28].copy_from_slice(&1000u32.to_le_bytes());
    b[32..36].copy_from_slice(&1000u32.to_le_bytes());
    assert!(matches!(expect_protocol(&b), RpcError::BadStub(_)));
    // trailing bytes after the return value
    let mut b = good.clone();
    b.extend_from_slice(&[0; 4]);
    let fl = b.len() as u16;
    b[8..10].copy_from_slice(&fl.to_le_bytes());
    b[16..20].copy_from_slice(&((fl - 24) as u32).to_le_bytes());
    assert!(matches!(expect_protocol(&b), RpcError::BadStub(_)));
    // NULL array with S_OK
    let null_ok = PendingCall::new(2, 0, Syntax::Ndr32, &[]).respond(Err(Hresult::S_OK));
    assert!(matches!(
        expect_protocol(&null_ok),
        RpcError::BadResponse(_)
    ));
    // wrong syntax expectation
    assert!(parse_call_result(&good, 2, 0, Syntax::Ndr64).is_err());
    // error HRESULT and FAULT
    let err = PendingCall::new(2, 0, Syntax::Ndr32, &[]).respond(Err(Hresult::KMS_ID_MISMATCH));
    assert_eq!(
        parse_call_result(&err, 2, 0, Syntax::Ndr32),
        Err(CallError::Kms(Hresult::KMS_ID_MISMATCH))
    );
    let fault = Fault::for_call(2, 0, status::NCA_UNK_IF).encode();
    assert_eq!(
        parse_call_result(&fault, 2, 0, Syntax::Ndr32),
        Err(CallError::Fault {
            status: status::NCA_UNK_IF
        })
    );
}

#[test]
fn client_rejects_bad_bind_acks_and_misuse() {
    let mut c = ClientAssociation::new(ClientOptions::default());
    assert!(c.request_pdu(&[1, 2, 3]).is_err(), "request before bind");
    let bind = c.bind_pdu().unwrap();
    assert!(c.bind_pdu().is_err(), "second bind");
    let HostAction::Reply(ack) = Association::new(HostConfig::default(), 7).on_pdu(&bind) else {
        panic!()
    };
    // call_id not echoed
    let mut b = ack.clone();
    b[12] = 9;
    assert!(matches!(
        c.clone().on_bind_ack(&b),
        Err(CallError::Protocol(RpcError::CallIdMismatch { .. }))
    ));
    // CONC_MPX not echoed
    let mut b = ack.clone();
    b[3] = 0x03;
    assert!(matches!(
        c.clone().on_bind_ack(&b),
        Err(CallError::Protocol(RpcError::BadBindAck(_)))
    ));
    // Everything refused
    let cfg = HostConfig {
        ndr64: false,
        ..HostConfig::default()
    };
    let mut other_if = bind.clone();
    other_if[32] ^= 0xff; // abstract syntax of ctx 0
    other_if[32 + 44] ^= 0xff; // and of ctx 1
    let HostAction::Reply(nak) = Association::new(cfg, 7).on_pdu(&other_if) else {
        panic!()
    };
    assert_eq!(
        c.clone().on_bind_ack(&nak),
        Err(CallError::Protocol(RpcError::NoContextAccepted))
    );
    // Garbage
    assert!(c.clone().on_bind_ack(&[0; 10]).is_err());
    // A valid one is fine; responses without a request are refused.
    assert!(c.on_bind_ack(&ack).is_ok());
    assert!(c.on_response(&good_response(&[1])).is_err());
}
