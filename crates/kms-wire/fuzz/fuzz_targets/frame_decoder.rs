//! Fuzz target: the DCE/RPC frame decoder and the host association, fed arbitrary bytes in
//! arbitrary chunks, plus the client-side response parser and every typed PDU decoder.
//!
//! Input layout: byte 0 selects the host configuration and chunking, the rest is the TCP
//! byte stream. Optionally a valid BIND is injected first so that REQUEST handling is reached.

#![no_main]

use kms_wire::rpc::{
    Association, ClientAssociation, ClientOptions, FrameDecoder, FrameStatus, HostAction,
    HostConfig, Pdu, Syntax, parse_call_result,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, stream)) = data.split_first() else {
        return;
    };
    let config = HostConfig {
        ndr64: sel & 1 != 0,
        btfn: sel & 2 != 0,
        listen_port: 1688,
        max_pdu: if sel & 4 != 0 { 4096 } else { 300 },
    };
    let chunk = usize::from(sel >> 4) + 1;
    let mut assoc = Association::new(config, 0x1235);
    if sel & 8 != 0 {
        let bind = ClientAssociation::new(ClientOptions::default())
            .bind_pdu()
            .unwrap_or_default();
        let _ = assoc.on_pdu(&bind);
    }
    let dec = FrameDecoder::new(config.max_pdu);
    let mut buf: Vec<u8> = Vec::new();
    'outer: for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match dec.check(&buf) {
                Ok(FrameStatus::Ready { len }) => {
                    let pdu = &buf[..len];
                    // Every typed decoder must return, and re-encode what it accepted exactly.
                    if let Ok(p) = Pdu::decode(pdu) {
                        assert_eq!(p.encode(), pdu, "round trip");
                    }
                    let _ = parse_call_result(pdu, 2, 0, Syntax::Ndr32);
                    let _ = parse_call_result(pdu, 2, 1, Syntax::Ndr64);
                    match assoc.on_pdu(pdu) {
                        HostAction::Reply(r) => {
                            assert!(Pdu::decode(&r).is_ok(), "host reply must be a valid PDU");
                        }
                        HostAction::Call(call) => {
                            let msg = call.kms_message().to_vec();
                            let ok = call.clone().respond(Ok(&msg));
                            assert!(Pdu::decode(&ok).is_ok());
                            let err = call.respond(Err(kms_wire::Hresult::INVALID_DATA));
                            assert!(Pdu::decode(&err).is_ok());
                        }
                        HostAction::Continue => {}
                        HostAction::Close(_) => break 'outer,
                    }
                    buf.drain(..len);
                }
                Ok(FrameStatus::NeedMore { total }) => {
                    assert!(total > buf.len());
                    break;
                }
                Err(_) => break 'outer,
            }
        }
    }
});
