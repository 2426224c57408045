//! Property tests of the RPC layer: encode → decode → encode round trips for every PDU type
//! and both stub syntaxes; the host association, the client and the frame decoder never panic
//! on arbitrary bytes, and chunked framing agrees with whole-buffer framing.

use kms_wire::rpc::{
    Association, Bind, BindAck, BindNak, ContextElem, ContextResult, DEFAULT_MAX_PDU, Fault,
    FrameDecoder, FrameStatus, Header, HostAction, HostConfig, Pdu, Request, RequestStub, Response,
    ResponseStub, RpcError, Syntax, SyntaxId, bind_ack_pad_len, encode_request_stub,
    encode_response_stub, frame_len, parse_call_result,
};
use kms_wire::{Guid, Hresult};
use proptest::collection::vec;
use proptest::prelude::*;

fn header(ptype: u8) -> impl Strategy<Value = Header> {
    (any::<u8>(), any::<[u8; 4]>(), any::<u32>()).prop_map(move |(flags, drep, call_id)| {
        let mut h = Header::new(ptype, flags | 0x03, call_id);
        h.drep = [0x10 | (drep[0] & 0x0f), drep[1], drep[2], drep[3]];
        h
    })
}

fn syntax_id() -> impl Strategy<Value = SyntaxId> {
    prop_oneof![
        Just(SyntaxId::NDR32),
        Just(SyntaxId::NDR64),
        Just(SyntaxId::KMS),
        any::<u64>().prop_map(SyntaxId::btfn),
        (any::<[u8; 16]>(), any::<u32>()).prop_map(|(u, version)| SyntaxId {
            uuid: Guid(u),
            version
        }),
    ]
}

fn context_elem() -> impl Strategy<Value = ContextElem> {
    (
        any::<u16>(),
        any::<u8>(),
        syntax_id(),
        vec(syntax_id(), 0..4),
    )
        .prop_map(
            |(p_cont_id, reserved, abstract_syntax, transfer_syntaxes)| ContextElem {
                p_cont_id,
                reserved,
                abstract_syntax,
                transfer_syntaxes,
            },
        )
}

fn bind() -> impl Strategy<Value = Bind> {
    (
        prop_oneof![header(11), header(14)],
        any::<(u16, u16, u32)>(),
        any::<[u8; 3]>(),
        vec(context_elem(), 0..6),
        vec(any::<u8>(), 0..8),
    )
        .prop_map(|(header, (x, r, g), reserved, contexts, trailing)| Bind {
            header,
            max_xmit_frag: x,
            max_recv_frag: r,
            assoc_group_id: g,
            reserved,
            contexts,
            trailing,
        })
}

fn context_result() -> impl Strategy<Value = ContextResult> {
    (any::<u16>(), any::<u16>(), syntax_id()).prop_map(|(result, reason, transfer_syntax)| {
        ContextResult {
            result,
            reason,
            transfer_syntax,
        }
    })
}

fn bind_ack() -> impl Strategy<Value = BindAck> {
    (
        prop_oneof![header(12), header(15)],
        any::<(u16, u16, u32)>(),
        vec(any::<u8>(), 0..9),
        any::<[u8; 3]>(),
        any::<[u8; 3]>(),
        vec(context_result(), 0..6),
        vec(any::<u8>(), 0..8),
    )
        .prop_map(
            |(header, (x, r, g), sec_addr, mut pad, results_reserved, results, trailing)| {
                // Only the wire pad bytes survive a round trip.
                for b in pad.iter_mut().skip(bind_ack_pad_len(sec_addr.len())) {
                    *b = 0;
                }
                BindAck {
                    header,
                    max_xmit_frag: x,
                    max_recv_frag: r,
                    assoc_group_id: g,
                    sec_addr,
                    pad,
                    results_reserved,
                    results,
                    trailing,
                }
            },
        )
}

fn fault() -> impl Strategy<Value = Fault> {
    (
        header(3),
        any::<(u32, u16, u8, u8, u32, u32)>(),
        vec(any::<u8>(), 0..8),
    )
        .prop_map(
            |(
                header,
                (alloc_hint, p_cont_id, cancel_count, reserved, status, reserved2),
                trailing,
            )| {
                Fault {
                    header,
                    alloc_hint,
                    p_cont_id,
                    cancel_count,
                    reserved,
                    status,
                    reserved2,
                    trailing,
                }
            },
        )
}

fn bind_nak() -> impl Strategy<Value = BindNak> {
    (
        header(13),
        any::<u16>(),
        vec(any::<(u8, u8)>(), 0..4),
        vec(any::<u8>(), 0..4),
    )
        .prop_map(|(header, reject_reason, versions, trailing)| BindNak {
            header,
            reject_reason,
            versions,
            trailing,
        })
}

fn syntax() -> impl Strategy<Value = Syntax> {
    prop_oneof![Just(Syntax::Ndr32), Just(Syntax::Ndr64)]
}

/// `decode(encode(x)) == x` (with the recomputed frag_length) and `encode(decode(b)) == b`.
fn round_trip<'a, T, D>(x: &T, bytes: &'a [u8], decode: D, frag: impl Fn(&mut T) -> &mut Header)
where
    T: PartialEq + std::fmt::Debug + Clone,
    D: Fn(&'a [u8]) -> Result<T, RpcError>,
{
    let mut want = x.clone();
    frag(&mut want).frag_length = bytes.len() as u16;
    let got = decode(bytes).expect("decodes");
    assert_eq!(got, want);
    let generic = Pdu::decode(bytes).expect("generic decode");
    assert_eq!(generic.encode(), bytes);
}

proptest! {
    #[test]
    fn bind_round_trips(b in bind()) {
        let bytes = b.encode();
        round_trip(&b, &bytes, Bind::decode, |x| &mut x.header);
        prop_assert_eq!(Bind::decode(&bytes).unwrap().encode(), bytes);
    }

    #[test]
    fn bind_ack_round_trips(b in bind_ack()) {
        let bytes = b.encode();
        round_trip(&b, &bytes, BindAck::decode, |x| &mut x.header);
        prop_assert_eq!(BindAck::decode(&bytes).unwrap().encode(), bytes);
    }

    #[test]
    fn request_round_trips(h in header(0), f in any::<(u32, u16, u16)>(), object in proptest::option::of(any::<[u8; 16]>()), stub in vec(any::<u8>(), 0..400)) {
        let mut h = h;
        h.pfc_flags = (h.pfc_flags & !0x80) | if object.is_some() { 0x80 } else { 0 };
        let r = Request { header: h, alloc_hint: f.0, p_cont_id: f.1, opnum: f.2, object: object.map(Guid), stub: &stub };
        let bytes = r.encode();
        round_trip(&r, &bytes, Request::decode, |x| &mut x.header);
        prop_assert_eq!(Request::decode(&bytes).unwrap().encode(), bytes);
    }

    #[test]
    fn response_round_trips(h in header(2), f in any::<(u32, u16, u8, u8)>(), stub in vec(any::<u8>(), 0..400)) {
        let r = Response { header: h, alloc_hint: f.0, p_cont_id: f.1, cancel_count: f.2, reserved: f.3, stub: &stub };
        let bytes = r.encode();
        round_trip(&r, &bytes, Response::decode, |x| &mut x.header);
        prop_assert_eq!(Response::decode(&bytes).unwrap().encode(), bytes);
    }

    #[test]
    fn fault_round_trips(f in fault()) {
        let bytes = f.encode();
        round_trip(&f, &bytes, Fault::decode, |x| &mut x.header);
    }

    #[test]
    fn bind_nak_round_trips(n in bind_nak()) {
        let bytes = n.encode();
        round_trip(&n, &bytes, BindNak::decode, |x| &mut x.header);
    }

    #[test]
    fn request_stub_round_trips(s in syntax(), msg in vec(any::<u8>(), 0..400), trailing in vec(any::<u8>(), 0..8), pad in any::<[u8; 4]>()) {
        let mut stub = Vec::new();
        encode_request_stub(s, &msg, &mut stub);
        prop_assert_eq!(stub.len(), s.request_stub_len(msg.len()));
        if s == Syntax::Ndr64 {
            stub[4..8].copy_from_slice(&pad);
        }
        stub.extend_from_slice(&trailing);
        let d = RequestStub::decode(s, &stub).unwrap();
        prop_assert_eq!(d.message, &msg[..]);
        prop_assert_eq!(d.trailing, &trailing[..]);
        let mut re = Vec::new();
        d.encode_into(&mut re);
        prop_assert_eq!(re, stub);
    }

    #[test]
    fn response_stub_round_trips(s in syntax(), msg in vec(any::<u8>(), 0..400), hr in any::<u32>(), ok in any::<bool>()) {
        let result = if ok { Ok(&msg[..]) } else { Err(Hresult(hr)) };
        let mut stub = Vec::new();
        encode_response_stub(s, result, &mut stub);
        let want_len = if ok { s.response_stub_len(msg.len()) } else { s.error_stub_len() };
        prop_assert_eq!(stub.len(), want_len);
        prop_assert_eq!(stub.len() % 4, 0);
        let d = ResponseStub::decode(s, &stub).unwrap();
        d.check_strict().unwrap();
        if ok {
            prop_assert_eq!(d.message, Some(&msg[..]));
            prop_assert_eq!(d.return_value, Hresult::S_OK);
        } else {
            prop_assert_eq!(d.message, None);
            prop_assert_eq!(d.return_value, Hresult(hr));
        }
        let mut re = Vec::new();
        d.encode_into(&mut re);
        prop_assert_eq!(re, stub);
    }

    #[test]
    fn association_never_panics_on_arbitrary_pdus(pdus in vec(vec(any::<u8>(), 0..300), 0..6), ndr64 in any::<bool>(), btfn in any::<bool>()) {
        let cfg = HostConfig { ndr64, btfn, ..HostConfig::default() };
        let mut fresh = Association::new(cfg, 1);
        for p in &pdus {
            let _ = fresh.on_pdu(p);
        }
        for s in [Syntax::Ndr32, Syntax::Ndr64] {
            for p in &pdus {
                let _ = parse_call_result(p, 2, 0, s);
            }
        }
    }

    #[test]
    fn association_never_panics_on_plausible_pdus(ptype in prop_oneof![Just(0u8), Just(11), Just(14)], body in vec(any::<u8>(), 0..300), bind_first in any::<bool>()) {
        // A valid header so that the body parsers are exercised.
        let mut bytes = vec![5, 0, ptype, 0x03, 0x10, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0];
        bytes.extend_from_slice(&body);
        let fl = bytes.len() as u16;
        bytes[8..10].copy_from_slice(&fl.to_le_bytes());
        let mut a = Association::new(HostConfig::default(), 1);
        if bind_first {
            let bind = kms_wire::rpc::ClientAssociation::new(Default::default()).bind_pdu().unwrap();
            prop_assert!(matches!(a.on_pdu(&bind), HostAction::Reply(_)));
        }
        match a.on_pdu(&bytes) {
            HostAction::Reply(r) => {
                // Every reply is itself a valid PDU.
                prop_assert!(Pdu::decode(&r).is_ok());
            }
            HostAction::Call(c) => {
                let resp = c.respond(Ok(&[1, 2, 3]));
                prop_assert!(Pdu::decode(&resp).is_ok());
            }
            HostAction::Continue | HostAction::Close(_) => {}
        }
    }

    #[test]
    fn random_fragmentations_give_the_same_responses(case in 0usize..64, sizes in vec(0usize..96, 0..24)) {
        // A server-deterministic case with every REQUEST cut at the same random stub sizes
        // (empty fragments included): the host's PDUs are the expected ones byte for byte.
        let cases = crate::rpc_fragments::deterministic_cases();
        let case = &cases[case % cases.len()];
        crate::rpc_fragments::replay_case(case, &|_| sizes.clone());
    }

    #[test]
    fn random_fragmentations_give_the_same_call(s in syntax(), msg in vec(any::<u8>(), 0..400), sizes in vec(0usize..64, 0..24), call_id in any::<u32>(), flags in any::<u8>()) {
        // Any message, any syntax, any fragment boundaries and extra header flags: the
        // reassembled call equals the unfragmented one, and so does its RESPONSE.
        let mut client = kms_wire::rpc::ClientAssociation::new(Default::default());
        let mut a = Association::new(HostConfig::default(), 1);
        let HostAction::Reply(ack) = a.on_pdu(&client.bind_pdu().unwrap()) else { panic!() };
        if let kms_wire::rpc::BindStep::SendAlterContext(alter) = client.on_bind_ack(&ack).unwrap() {
            let HostAction::Reply(resp) = a.on_pdu(&alter) else { panic!() };
            client.on_alter_context_resp(&resp).unwrap();
        }
        let mut whole = client.request_pdu_with(s, &msg).unwrap();
        whole[3] |= flags & 0x54; // PENDING_CANCEL, CONC_MPX, MAYBE
        whole[12..16].copy_from_slice(&call_id.to_le_bytes());
        let reference = a.on_pdu(&whole).into_owned();
        let HostAction::Call(call) = &reference else { panic!("{reference:?}") };
        prop_assert_eq!(call.kms_message(), &msg[..]);
        let frags = crate::rpc_fragments::fragment(&whole, &sizes);
        prop_assert_eq!(frags.len(), sizes.len() + 1);
        let got = crate::rpc_fragments::feed(&mut a, &frags);
        prop_assert_eq!(&got, &reference);
        let HostAction::Call(got) = got else { panic!() };
        let answer: Vec<u8> = msg.iter().rev().copied().collect();
        prop_assert_eq!(got.respond(Ok(&answer)), call.clone().respond(Ok(&answer)));
    }

    #[test]
    fn chunked_framing_agrees_with_whole_buffer(stream in vec(any::<u8>(), 0..600), chunks in vec(1usize..40, 1..40), valid_prefix in any::<bool>()) {
        let mut stream = stream;
        if valid_prefix && stream.len() >= 16 {
            stream[..4].copy_from_slice(&[5, 0, 0, 3]);
            stream[4] = 0x10;
            let fl = 16 + (stream[8] as u16 % 64);
            stream[8..10].copy_from_slice(&fl.to_le_bytes());
            stream[10] = 0;
            stream[11] = 0;
        }
        let whole = split_frames(&stream, &[stream.len().max(1)]);
        let chunked = split_frames(&stream, &chunks);
        prop_assert_eq!((&whole.0, &whole.1), (&chunked.0, &chunked.1));
    }
}

/// Feed `stream` in chunks of the given sizes (cycled); returns the frames found, the error
/// (if any) and how many bytes were fed.
fn split_frames(stream: &[u8], chunks: &[usize]) -> (Vec<Vec<u8>>, Option<RpcError>, usize) {
    let dec = FrameDecoder::new(DEFAULT_MAX_PDU);
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    let mut fed = 0;
    let mut i = 0;
    while fed < stream.len() {
        let n = chunks[i % chunks.len()].min(stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        i += 1;
        loop {
            match dec.check(&buf) {
                Ok(FrameStatus::Ready { len }) => {
                    assert_eq!(frame_len(&buf, DEFAULT_MAX_PDU), Ok(Some(len)));
                    frames.push(buf.drain(..len).collect());
                }
                Ok(FrameStatus::NeedMore { total }) => {
                    assert!(total > buf.len());
                    break;
                }
                Err(e) => return (frames, Some(e), fed),
            }
        }
        if i > 10_000 {
            break;
        }
    }
    (frames, None, fed)
}
