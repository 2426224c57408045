//! RPC-level expectations of testdata/kms-vectors/server-deterministic.json: every
//! BIND_ACK / ALTER_CONTEXT_RESP / FAULT byte-exact, error RESPONSEs byte-exact via
//! `respond(Err(..))`, and success RESPONSEs' framing (header, alloc_hint, context, stub
//! layout) byte-exact via `respond(Ok(message))` with the expected KMS message (the message
//! itself comes from the KMS layer and is checked end to end elsewhere).

use kms_wire::Hresult;
use kms_wire::rpc::{
    Association, HostAction, HostConfig, Pdu, Request, RequestStub, Response, ResponseStub, Syntax,
    ptype,
};
use serde_json::Value;

use crate::common::{load_json, unhex};
use crate::rpc_captured::check_rpc_fields;

/// Per the vectors README: the counter starts at 0x1234 and is incremented before each BIND.
const FIRST_ASSOC_GROUP: u32 = 0x1235;

fn config(case: &Value) -> HostConfig {
    let c = &case["server_config"];
    HostConfig {
        listen_port: c["listen_port"].as_u64().unwrap() as u16,
        ndr64: c["ndr64"].as_bool().unwrap(),
        btfn: c["btfn"].as_bool().unwrap(),
        ..HostConfig::default()
    }
}

#[test]
fn server_deterministic_rpc_expectations() {
    let doc = load_json("server-deterministic.json");
    let mut replies = 0;
    let mut error_responses = 0;
    let mut success_framings = 0;
    for case in doc["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let mut assoc = Association::new(config(case), FIRST_ASSOC_GROUP);
        for (i, ex) in case["exchanges"].as_array().unwrap().iter().enumerate() {
            let ctx = format!("{name} exchange {i}");
            let client = unhex(ex["client_pdu"].as_str().unwrap());
            let expected = unhex(ex["expected_server_pdu"].as_str().unwrap());
            check_rpc_fields(&Pdu::decode(&client).unwrap(), &ex["client_decoded"]);
            check_rpc_fields(&Pdu::decode(&expected).unwrap(), &ex["server_decoded"]);
            match assoc.on_pdu(&client) {
                HostAction::Reply(r) => {
                    assert_ne!(expected[2], ptype::RESPONSE, "{ctx}");
                    assert_eq!(hex::encode(r), hex::encode(&expected), "{ctx}");
                    replies += 1;
                }
                HostAction::Call(call) => {
                    let req = Request::decode(&client).unwrap();
                    let resp = Response::decode(&expected).unwrap();
                    let syntax = call.syntax();
                    assert_eq!(Some(syntax), assoc.context_syntax(req.p_cont_id));
                    let want_syntax = if req.p_cont_id == 1 {
                        Syntax::Ndr64
                    } else {
                        Syntax::Ndr32
                    };
                    assert_eq!(syntax, want_syntax, "{ctx}: context ids of this vector");
                    let req_stub = RequestStub::decode(syntax, req.stub).unwrap();
                    assert_eq!(call.kms_message(), req_stub.message, "{ctx}");
                    // Framing the vector expects.
                    assert_eq!(resp.header.call_id, req.header.call_id, "{ctx}");
                    assert_eq!(resp.header.pfc_flags, 0x03, "{ctx}");
                    assert_eq!(resp.p_cont_id, req.p_cont_id, "{ctx}");
                    assert_eq!(resp.alloc_hint as usize, resp.stub.len(), "{ctx}");
                    let stub = ResponseStub::decode(syntax, resp.stub).unwrap();
                    stub.check_strict().unwrap();
                    let ours = match (stub.message, stub.return_value) {
                        (Some(m), Hresult::S_OK) => {
                            assert_eq!(resp.stub.len(), syntax.response_stub_len(m.len()));
                            success_framings += 1;
                            call.respond(Ok(m))
                        }
                        (None, hr) => {
                            assert_eq!(resp.stub.len(), syntax.error_stub_len());
                            error_responses += 1;
                            call.respond(Err(hr))
                        }
                        other => panic!("{ctx}: unexpected stub {other:?}"),
                    };
                    assert_eq!(hex::encode(ours), hex::encode(&expected), "{ctx}");
                }
                HostAction::Continue => panic!("{ctx}: unfragmented PDU buffered"),
                HostAction::Close(e) => panic!("{ctx}: closed: {e}"),
            }
        }
    }
    // 8 BINDs, 4 ALTER_CONTEXTs, 2 FAULTs in the vector file.
    assert_eq!(replies, 14);
    assert_eq!(error_responses, 4);
    assert_eq!(success_framings, 7);
}

#[test]
fn worked_example_of_protocol_section_11() {
    let doc = load_json("server-deterministic.json");
    let case = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "v6-bind3-alter-ndr32-ndr64")
        .unwrap();
    let ex = case["exchanges"].as_array().unwrap();
    let mut assoc = Association::new(HostConfig::default(), 0x1235);
    let bind = unhex(ex[0]["client_pdu"].as_str().unwrap());
    let HostAction::Reply(ack) = assoc.on_pdu(&bind) else {
        panic!("no BIND_ACK")
    };
    assert_eq!(
        hex::encode(&ack),
        "05000c13100000006c00000002000000d016d01635120000050031363838000003000000\
         0200020000000000000000000000000000000000000000000000000033057171babe37498319b5dbef9ccc3601000000\
         030003000000000000000000000000000000000000000000"
    );
    assert_eq!(assoc.context_syntax(0), None);
    assert_eq!(assoc.context_syntax(1), Some(Syntax::Ndr64));
    assert_eq!(assoc.context_syntax(2), None);
    let alter = unhex(ex[1]["client_pdu"].as_str().unwrap());
    let HostAction::Reply(resp) = assoc.on_pdu(&alter) else {
        panic!("no ALTER_CONTEXT_RESP")
    };
    assert_eq!(
        hex::encode(&resp),
        "05000f03100000003800000002000000d016d01635120000000000000100000000000000\
         045d888aeb1cc9119fe808002b10486002000000"
    );
    assert_eq!(assoc.context_syntax(0), Some(Syntax::Ndr32));
    assert_eq!(assoc.context_syntax(1), Some(Syntax::Ndr64));
}

/// Our client against our host for every option combination: the negotiated syntaxes follow
/// §3.3, the Windows sequence (NDR32 first, then NDR64) is produced, KMS messages and
/// HRESULTs travel intact, and FAULTs leave both sides usable.
#[test]
fn client_and_host_interoperate_in_every_mode() {
    use kms_wire::rpc::{BindStep, CallError, ClientAssociation, ClientOptions};
    let mut combos = 0;
    for bits in 0..64u32 {
        let bit = |n: u32| bits & (1 << n) != 0;
        let opts = ClientOptions {
            ndr64: bit(0),
            btfn: bit(1),
            conc_mpx: bit(2),
            alter_for_ndr32: bit(3),
            ..ClientOptions::default()
        };
        let cfg = HostConfig {
            ndr64: bit(4),
            btfn: bit(5),
            listen_port: 11688,
            ..HostConfig::default()
        };
        let ctx = format!("{opts:?} {cfg:?}");
        let mut host = Association::new(cfg, 0xabcd_0001);
        let mut client = ClientAssociation::new(opts);
        let HostAction::Reply(ack) = host.on_pdu(&client.bind_pdu().unwrap()) else {
            panic!("{ctx}")
        };
        assert_eq!(ack[3] & 0x10 != 0, opts.conc_mpx, "{ctx}");
        match client.on_bind_ack(&ack).unwrap() {
            BindStep::SendAlterContext(alter) => {
                assert!(opts.ndr64 && cfg.ndr64 && opts.alter_for_ndr32, "{ctx}");
                let HostAction::Reply(resp) = host.on_pdu(&alter) else {
                    panic!("{ctx}")
                };
                assert_eq!(resp[3], 0x03);
                client.on_alter_context_resp(&resp).unwrap();
            }
            BindStep::Ready => assert!(!(opts.ndr64 && cfg.ndr64 && opts.alter_for_ndr32)),
        }
        assert_eq!(client.assoc_group_id(), 0xabcd_0001);
        assert_eq!(
            client.btfn_ack(),
            (opts.btfn && cfg.btfn).then_some(3),
            "{ctx}"
        );
        let ndr64_used = opts.ndr64 && cfg.ndr64;
        for n in 0..3u8 {
            let want = if ndr64_used && (n > 0 || !opts.alter_for_ndr32) {
                Syntax::Ndr64
            } else {
                Syntax::Ndr32
            };
            assert_eq!(client.next_syntax(), Some(want), "{ctx} call {n}");
            let msg: Vec<u8> = (0..(250 + n as usize)).map(|i| i as u8 ^ n).collect();
            let req = client.request_pdu(&msg).unwrap();
            let HostAction::Call(call) = host.on_pdu(&req) else {
                panic!("{ctx}")
            };
            assert_eq!(call.syntax(), want);
            assert_eq!(call.kms_message(), &msg[..]);
            let answer: Vec<u8> = msg.iter().rev().copied().collect();
            let resp = if n == 1 {
                call.respond(Err(Hresult::INVALID_TIMESTAMP))
            } else {
                call.respond(Ok(&answer))
            };
            let got = client.on_response(&resp);
            if n == 1 {
                assert_eq!(got, Err(CallError::Kms(Hresult::INVALID_TIMESTAMP)));
            } else {
                assert_eq!(got.unwrap(), answer);
            }
        }
        // A FAULT (bad opnum) keeps both sides usable.
        let mut req = client.request_pdu(&[1, 2, 3]).unwrap();
        req[22] = 5;
        let HostAction::Reply(fault) = host.on_pdu(&req) else {
            panic!("{ctx}")
        };
        assert_eq!(
            client.on_response(&fault),
            Err(CallError::Fault {
                status: kms_wire::rpc::status::NCA_OP_RNG_ERROR
            })
        );
        let req = client.request_pdu(&[4, 5, 6]).unwrap();
        assert!(matches!(host.on_pdu(&req), HostAction::Call(_)), "{ctx}");
        combos += 1;
    }
    assert_eq!(combos, 64);
}

#[test]
fn context_negotiation_table_of_section_3_3() {
    use kms_wire::rpc::{Bind, BindAck, ContextElem, ContextResult, Header, SyntaxId};
    let other_if = SyntaxId {
        uuid: "12345678-1234-1234-1234-123456789abc".parse().unwrap(),
        version: 1,
    };
    let kms_v2 = SyntaxId {
        version: 2,
        ..SyntaxId::KMS
    };
    let ndr32_v1 = SyntaxId {
        version: 1,
        ..SyntaxId::NDR32
    };
    let ctx = |id: u16, abs: SyntaxId, ts: &[SyntaxId]| ContextElem {
        p_cont_id: id,
        reserved: 0,
        abstract_syntax: abs,
        transfer_syntaxes: ts.to_vec(),
    };
    let run = |cfg: HostConfig, contexts: Vec<ContextElem>| -> (Vec<ContextResult>, Association) {
        let bind = Bind {
            header: Header::new(11, 0x13, 2),
            max_xmit_frag: 5840,
            max_recv_frag: 5840,
            assoc_group_id: 0,
            reserved: [0; 3],
            contexts,
            trailing: vec![],
        };
        let mut a = Association::new(cfg, 1);
        let HostAction::Reply(r) = a.on_pdu(&bind.encode()) else {
            panic!()
        };
        (BindAck::decode(&r).unwrap().results, a)
    };
    let on = HostConfig::default();
    let off = HostConfig {
        ndr64: false,
        btfn: false,
        ..HostConfig::default()
    };
    let acc32 = ContextResult::accept(SyntaxId::NDR32);
    let acc64 = ContextResult::accept(SyntaxId::NDR64);
    let rej = |r| ContextResult::reject(r);

    // NDR32 alone: accepted whether NDR64 is enabled or not.
    assert_eq!(
        run(on, vec![ctx(0, SyntaxId::KMS, &[SyntaxId::NDR32])]).0,
        [acc32]
    );
    // NDR32 + NDR64 in separate contexts.
    let both = vec![
        ctx(0, SyntaxId::KMS, &[SyntaxId::NDR32]),
        ctx(1, SyntaxId::KMS, &[SyntaxId::NDR64]),
    ];
    assert_eq!(run(on, both.clone()).0, [rej(2), acc64]);
    assert_eq!(run(off, both).0, [acc32, rej(2)]);
    // Several transfer syntaxes in one context: first acceptable wins.
    let multi = vec![ctx(4, SyntaxId::KMS, &[SyntaxId::NDR32, SyntaxId::NDR64])];
    let (r, a) = run(on, multi.clone());
    assert_eq!(
        (r.as_slice(), a.context_syntax(4)),
        (&[acc64][..], Some(Syntax::Ndr64))
    );
    let (r, a) = run(off, multi);
    assert_eq!(
        (r.as_slice(), a.context_syntax(4)),
        (&[acc32][..], Some(Syntax::Ndr32))
    );
    // BTFN: acked with mask & 3 (any interface), or refused (2,2).
    let btfn = |m| vec![ctx(2, other_if, &[SyntaxId::btfn(m)])];
    assert_eq!(run(on, btfn(3)).0, [ContextResult::negotiate_ack(3)]);
    assert_eq!(run(on, btfn(0xff)).0, [ContextResult::negotiate_ack(3)]);
    assert_eq!(run(on, btfn(1)).0, [ContextResult::negotiate_ack(1)]);
    assert_eq!(run(off, btfn(3)).0, [rej(2)]);
    // Other interface, other interface version: abstract syntax not supported.
    assert_eq!(
        run(on, vec![ctx(0, other_if, &[SyntaxId::NDR32])]).0,
        [rej(1)]
    );
    assert_eq!(
        run(on, vec![ctx(0, kms_v2, &[SyntaxId::NDR32])]).0,
        [rej(1)]
    );
    // KMS with an unknown transfer syntax (or NDR version), or none at all.
    assert_eq!(
        run(on, vec![ctx(0, SyntaxId::KMS, &[ndr32_v1])]).0,
        [rej(2)]
    );
    assert_eq!(run(on, vec![ctx(0, SyntaxId::KMS, &[])]).0, [rej(2)]);
    assert_eq!(run(on, vec![ctx(0, other_if, &[])]).0, [rej(1)]);
    // An NDR64 offer for another interface does not make NDR64 "possible".
    let r = run(
        on,
        vec![
            ctx(0, SyntaxId::KMS, &[SyntaxId::NDR32]),
            ctx(1, other_if, &[SyntaxId::NDR64]),
        ],
    )
    .0;
    assert_eq!(r, [acc32, rej(1)]);
    // Bindings are capped per connection.
    let many: Vec<_> = (0..40)
        .map(|i| ctx(i, SyntaxId::KMS, &[SyntaxId::NDR32]))
        .collect();
    let (r, a) = run(off, many);
    assert_eq!(
        r.iter().filter(|x| **x == acc32).count(),
        kms_wire::rpc::MAX_BOUND_CONTEXTS
    );
    assert_eq!(r[39], rej(3));
    assert_eq!(a.context_syntax(39), None);
}
