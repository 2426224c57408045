//! Captured vlmcs / py-kms ↔ vlmcsd conversations (testdata/kms-vectors/captured): every PDU
//! decodes to the fields the JSON lists and re-encodes byte for byte; replaying the client
//! PDUs through [`Association`] reproduces the server PDUs except vlmcsd's known artefacts
//! (PROTOCOL.md §10: BIND_ACK pad bytes, assoc_group_id value, FAULT call_id / cancel_count /
//! reserved / p_cont_id).

use kms_wire::Hresult;
use kms_wire::rpc::{
    Association, BindAck, ContextElem, ContextResult, Fault, HostAction, HostConfig, Pdu,
    RequestStub, ResponseStub, Syntax, SyntaxId,
};
use serde_json::Value;

use crate::common::{captured, unhex};

fn hexnum(v: &Value) -> u64 {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("expected hex string, got {v}"));
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
}

fn num(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("expected number, got {v}"))
}

fn syntax_name(s: &SyntaxId) -> String {
    if *s == SyntaxId::NDR32 {
        "NDR32".into()
    } else if *s == SyntaxId::NDR64 {
        "NDR64".into()
    } else if let Some(m) = s.btfn_mask() {
        format!("BTFN(0x{m:04x})")
    } else if s.uuid.is_nil() {
        "null".into()
    } else {
        s.uuid.to_string()
    }
}

fn check_contexts(contexts: &[ContextElem], j: &Value) {
    let arr = j.as_array().unwrap();
    assert_eq!(contexts.len(), arr.len());
    for (c, jc) in contexts.iter().zip(arr) {
        assert_eq!(u64::from(c.p_cont_id), num(&jc["p_cont_id"]));
        assert_eq!(c.abstract_syntax.uuid.to_string(), jc["abstract_syntax"]);
        assert_eq!(
            format!(
                "{}.{}",
                c.abstract_syntax.major(),
                c.abstract_syntax.minor()
            ),
            jc["if_version"]
        );
        let ts = jc["transfer_syntaxes"].as_array().unwrap();
        assert_eq!(c.transfer_syntaxes.len(), ts.len());
        for (t, jt) in c.transfer_syntaxes.iter().zip(ts) {
            assert_eq!(syntax_name(t), jt["syntax"]);
            assert_eq!(t.uuid.to_string(), jt["uuid"]);
            assert_eq!(u64::from(t.version), num(&jt["version"]));
        }
    }
}

fn check_results(results: &[ContextResult], j: &Value) {
    let arr = j.as_array().unwrap();
    assert_eq!(results.len(), arr.len());
    for (r, jr) in results.iter().zip(arr) {
        assert_eq!(u64::from(r.result), num(&jr["result"]));
        assert_eq!(u64::from(r.reason), num(&jr["reason"]));
        assert_eq!(syntax_name(&r.transfer_syntax), jr["transfer_syntax"]);
        assert_eq!(
            r.transfer_syntax.uuid.to_string(),
            jr["transfer_syntax_uuid"]
        );
        assert_eq!(
            u64::from(r.transfer_syntax.version),
            num(&jr["syntax_version"])
        );
    }
}

/// Check a decoded PDU against a vector's `rpc` object (schema in vectors/README.md).
pub(crate) fn check_rpc_fields(pdu: &Pdu<'_>, rpc: &Value) {
    let h = pdu.header();
    assert_eq!(
        format!("{}.{}", h.rpc_vers, h.rpc_vers_minor),
        rpc["rpc_vers"]
    );
    assert_eq!(u64::from(h.ptype), num(&rpc["ptype"]));
    assert_eq!(u64::from(h.pfc_flags), hexnum(&rpc["pfc_flags"]));
    assert_eq!(hex::encode(h.drep), rpc["drep"]);
    assert_eq!(u64::from(h.frag_length), num(&rpc["frag_length"]));
    assert_eq!(u64::from(h.auth_length), num(&rpc["auth_length"]));
    assert_eq!(u64::from(h.call_id), num(&rpc["call_id"]));
    match pdu {
        Pdu::Bind(b) | Pdu::AlterContext(b) => {
            assert_eq!(u64::from(b.max_xmit_frag), num(&rpc["max_xmit_frag"]));
            assert_eq!(u64::from(b.max_recv_frag), num(&rpc["max_recv_frag"]));
            assert_eq!(u64::from(b.assoc_group_id), hexnum(&rpc["assoc_group_id"]));
            assert_eq!(b.contexts.len() as u64, num(&rpc["n_context_elem"]));
            check_contexts(&b.contexts, &rpc["context_elems"]);
            assert!(b.trailing.is_empty());
        }
        Pdu::BindAck(a) | Pdu::AlterContextResp(a) => {
            assert_eq!(u64::from(a.max_xmit_frag), num(&rpc["max_xmit_frag"]));
            assert_eq!(u64::from(a.max_recv_frag), num(&rpc["max_recv_frag"]));
            assert_eq!(u64::from(a.assoc_group_id), hexnum(&rpc["assoc_group_id"]));
            assert_eq!(a.sec_addr.len() as u64, num(&rpc["sec_addr_len"]));
            assert_eq!(a.sec_addr_str(), rpc["sec_addr"]);
            assert_eq!(hex::encode(&a.sec_addr), rpc["sec_addr_hex"]);
            let p = kms_wire::rpc::bind_ack_pad_len(a.sec_addr.len());
            assert_eq!(hex::encode(&a.pad[..p]), rpc["pad_hex"]);
            assert_eq!(a.results.len() as u64, num(&rpc["n_results"]));
            assert_eq!(hex::encode(a.results_reserved), rpc["results_reserved_hex"]);
            check_results(&a.results, &rpc["results"]);
            assert!(a.trailing.is_empty());
        }
        Pdu::Request(r) => {
            assert_eq!(u64::from(r.alloc_hint), num(&rpc["alloc_hint"]));
            assert_eq!(u64::from(r.p_cont_id), num(&rpc["p_cont_id"]));
            assert_eq!(u64::from(r.opnum), num(&rpc["opnum"]));
            assert_eq!(r.object, None);
            assert_eq!(hex::encode(r.stub), rpc["stub_hex"]);
            assert_eq!(r.stub.len() as u64, num(&rpc["stub_len"]));
        }
        Pdu::Response(r) => {
            assert_eq!(u64::from(r.alloc_hint), num(&rpc["alloc_hint"]));
            assert_eq!(u64::from(r.p_cont_id), num(&rpc["p_cont_id"]));
            assert_eq!(u64::from(r.cancel_count), num(&rpc["cancel_count"]));
            assert_eq!(u64::from(r.reserved), num(&rpc["reserved"]));
            assert_eq!(hex::encode(r.stub), rpc["stub_hex"]);
            assert_eq!(r.stub.len() as u64, num(&rpc["stub_len"]));
        }
        Pdu::Fault(f) => {
            assert_eq!(u64::from(f.alloc_hint), num(&rpc["alloc_hint"]));
            assert_eq!(u64::from(f.p_cont_id), num(&rpc["p_cont_id"]));
            assert_eq!(u64::from(f.cancel_count), num(&rpc["cancel_count"]));
            assert_eq!(u64::from(f.reserved), num(&rpc["reserved"]));
            assert_eq!(u64::from(f.status), hexnum(&rpc["status"]));
            assert_eq!(u64::from(f.reserved2), num(&rpc["reserved2"]));
            assert!(f.trailing.is_empty());
        }
        Pdu::BindNak(_) => panic!("no BIND_NAK in the vectors"),
    }
}

fn syntax_of(stub: &Value) -> Syntax {
    match stub["encoding"].as_str() {
        Some("NDR32") => Syntax::Ndr32,
        Some("NDR64") => Syntax::Ndr64,
        other => panic!("unknown encoding {other:?}"),
    }
}

fn opt_hex(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

/// Check a REQUEST's or RESPONSE's stub against the vector's `stub` object and
/// `kms_message_hex`, and that it re-encodes to the same bytes.
pub(crate) fn check_stub(
    stub_bytes: &[u8],
    stub: &Value,
    kms_hex: Option<&Value>,
    is_request: bool,
) {
    let syntax = syntax_of(stub);
    let mut re = Vec::new();
    if is_request {
        let s = RequestStub::decode(syntax, stub_bytes).unwrap();
        assert_eq!(u64::from(s.request_size), num(&stub["request_size"]));
        assert_eq!(s.max_count, num(&stub["max_count"]));
        if syntax == Syntax::Ndr64 {
            assert_eq!(hex::encode(s.pad_after_size), stub["pad_after_size_hex"]);
        }
        assert_eq!(hex::encode(s.trailing), opt_hex(&stub["trailing_hex"]));
        assert_eq!(hex::encode(s.message), kms_hex.unwrap().as_str().unwrap());
        s.encode_into(&mut re);
    } else {
        let s = ResponseStub::decode(syntax, stub_bytes).unwrap();
        s.check_strict().unwrap();
        assert_eq!(u64::from(s.response_size), num(&stub["response_size"]));
        assert_eq!(s.referent_id, hexnum(&stub["referent_id"]));
        assert_eq!(s.max_count, stub.get("max_count").map(num));
        if syntax == Syntax::Ndr64 {
            assert_eq!(hex::encode(s.pad_after_size), stub["pad_after_size_hex"]);
        }
        assert_eq!(
            hex::encode(s.pad_before_return),
            opt_hex(&stub["pad_before_return_hex"])
        );
        assert_eq!(u64::from(s.return_value.0), hexnum(&stub["return_value"]));
        assert_eq!(hex::encode(s.trailing), opt_hex(&stub["trailing_hex"]));
        assert_eq!(stub_bytes.len() as u64, num(&stub["stub_len"]));
        match kms_hex {
            Some(k) => assert_eq!(hex::encode(s.message.unwrap()), k.as_str().unwrap()),
            None => assert_eq!(s.message, None),
        }
        s.encode_into(&mut re);
    }
    assert_eq!(re, stub_bytes, "stub re-encoding");
}

#[test]
fn every_captured_pdu_decodes_and_reencodes_byte_for_byte() {
    let mut n = 0;
    for (name, file) in captured() {
        for conn in file["connections"].as_array().unwrap() {
            for p in conn["pdus"].as_array().unwrap() {
                let bytes = unhex(p["hex"].as_str().unwrap());
                let pdu = Pdu::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
                check_rpc_fields(&pdu, &p["rpc"]);
                assert_eq!(pdu.encode(), bytes, "{name} pdu {}", p["index"]);
                if let Some(stub) = p.get("stub") {
                    let stub_bytes = unhex(p["rpc"]["stub_hex"].as_str().unwrap());
                    let is_request = matches!(pdu, Pdu::Request(_));
                    check_stub(&stub_bytes, stub, p.get("kms_message_hex"), is_request);
                }
                n += 1;
            }
        }
    }
    assert!(n > 100, "only {n} PDUs");
}

fn host_config(file: &Value) -> HostConfig {
    let cmd = file["capture"]["server_cmd"].as_str().unwrap();
    HostConfig {
        listen_port: num(&file["server_port"]) as u16,
        ndr64: !cmd.split_whitespace().any(|a| a == "-N0"),
        btfn: !cmd.split_whitespace().any(|a| a == "-B0"),
        ..HostConfig::default()
    }
}

/// Compare our BIND_ACK / ALTER_CONTEXT_RESP with vlmcsd's, ignoring pad bytes and the
/// assoc_group_id value.
fn same_bind_ack(ours: &[u8], theirs: &[u8], group: u32, ctx: &str) {
    let mut o = BindAck::decode(ours).unwrap();
    let t = BindAck::decode(theirs).unwrap();
    assert_eq!(o.pad, [0; 3], "{ctx}: we send zero pad bytes");
    assert_eq!(o.assoc_group_id, group, "{ctx}");
    o.pad = t.pad;
    o.assoc_group_id = t.assoc_group_id;
    assert_eq!(o, t, "{ctx}");
    assert_eq!(o.encode(), theirs, "{ctx}");
}

/// Compare our FAULT with vlmcsd's, which has call_id 2, garbage cancel_count / reserved and
/// p_cont_id 0.
fn same_fault(ours: &[u8], theirs: &[u8], call_id: u32, p_cont_id: u16, ctx: &str) {
    let mut o = Fault::decode(ours).unwrap();
    let t = Fault::decode(theirs).unwrap();
    assert_eq!(
        (o.header.call_id, o.p_cont_id, o.cancel_count, o.reserved),
        (call_id, p_cont_id, 0, 0),
        "{ctx}"
    );
    o.header.call_id = t.header.call_id;
    o.p_cont_id = t.p_cont_id;
    o.cancel_count = t.cancel_count;
    o.reserved = t.reserved;
    assert_eq!(o, t, "{ctx}");
}

#[test]
fn replaying_captured_clients_through_the_host_reproduces_vlmcsd() {
    let mut calls = 0;
    let mut faults = 0;
    for (name, file) in captured() {
        let config = host_config(&file);
        for (ci, conn) in file["connections"].as_array().unwrap().iter().enumerate() {
            let group = 0x1235 + ci as u32;
            let mut assoc = Association::new(config, group);
            let pdus = conn["pdus"].as_array().unwrap();
            let mut i = 0;
            while i < pdus.len() {
                let c = &pdus[i];
                assert_eq!(c["dir"], "c2s", "{name}: pdu {i}");
                let s = pdus
                    .get(i + 1)
                    .unwrap_or_else(|| panic!("{name}: no reply to {i}"));
                assert_eq!(s["dir"], "s2c");
                let ctx = format!("{name} conn {ci} pdu {i}");
                let cbytes = unhex(c["hex"].as_str().unwrap());
                let sbytes = unhex(s["hex"].as_str().unwrap());
                match assoc.on_pdu(&cbytes) {
                    HostAction::Reply(r) if r[2] == 3 => {
                        let req = kms_wire::rpc::Request::decode(&cbytes).unwrap();
                        same_fault(&r, &sbytes, req.header.call_id, req.p_cont_id, &ctx);
                        faults += 1;
                    }
                    HostAction::Reply(r) => same_bind_ack(&r, &sbytes, group, &ctx),
                    HostAction::Call(call) => {
                        let req_msg = unhex(c["kms_message_hex"].as_str().unwrap());
                        assert_eq!(call.kms_message(), &req_msg[..], "{ctx}");
                        assert_eq!(u64::from(call.context_id()), num(&c["rpc"]["p_cont_id"]));
                        assert_eq!(u64::from(call.call_id()), num(&c["rpc"]["call_id"]));
                        assert_eq!(call.syntax(), syntax_of(&c["stub"]), "{ctx}");
                        assert_eq!(call.syntax(), syntax_of(&s["stub"]), "{ctx}");
                        let hr = Hresult(hexnum(&s["stub"]["return_value"]) as u32);
                        let resp_msg = s.get("kms_message_hex").map(|h| unhex(h.as_str().unwrap()));
                        let ours = match (&resp_msg, hr) {
                            (Some(m), Hresult::S_OK) => call.respond(Ok(m)),
                            (None, hr) => call.respond(Err(hr)),
                            other => panic!("{ctx}: unexpected {other:?}"),
                        };
                        assert_eq!(hex::encode(ours), hex::encode(&sbytes), "{ctx}");
                        calls += 1;
                    }
                    HostAction::Continue => panic!("{ctx}: unfragmented PDU buffered"),
                    HostAction::Close(e) => panic!("{ctx}: closed: {e}"),
                }
                i += 2;
            }
        }
    }
    assert!(calls >= 40, "{calls} calls");
    assert_eq!(faults, 1);
}

/// Client options reproducing a captured client's command line, or None for the hand-built
/// client.
fn client_options(cmd: &str) -> Option<kms_wire::rpc::ClientOptions> {
    let args: Vec<&str> = cmd.split_whitespace().collect();
    let mut o = kms_wire::rpc::ClientOptions::default();
    if args.first() == Some(&"vlmcs") {
        o.ndr64 = !args.contains(&"-N0");
        o.btfn = !args.contains(&"-B0");
        o.conc_mpx = !args.contains(&"-p");
        Some(o)
    } else if cmd.contains("pykms_Client.py") {
        o.ndr64 = false;
        o.bind_call_id = 1;
        o.first_request_call_id = 2;
        Some(o)
    } else {
        None
    }
}

#[test]
fn client_side_rebuilds_captured_client_pdus_and_accepts_vlmcsd_replies() {
    use kms_wire::rpc::{BindStep, CallError, ClientAssociation};
    let mut conversations = 0;
    let mut calls = 0;
    for (name, file) in captured() {
        let cmds = file["capture"]["client_cmds"].as_array().unwrap();
        for (ci, conn) in file["connections"].as_array().unwrap().iter().enumerate() {
            let cmd = cmds[ci.min(cmds.len() - 1)].as_str().unwrap();
            let Some(opts) = client_options(cmd) else {
                continue;
            };
            let ctx = format!("{name} conn {ci}");
            let pdus = conn["pdus"].as_array().unwrap();
            let hex_of = |i: usize| pdus[i]["hex"].as_str().unwrap().to_string();
            let mut client = ClientAssociation::new(opts);
            assert_eq!(
                hex::encode(client.bind_pdu().unwrap()),
                hex_of(0),
                "{ctx}: BIND"
            );
            let mut i = 2;
            match client.on_bind_ack(&unhex(&hex_of(1))).unwrap() {
                BindStep::SendAlterContext(alter) => {
                    assert_eq!(hex::encode(alter), hex_of(2), "{ctx}: ALTER_CONTEXT");
                    client.on_alter_context_resp(&unhex(&hex_of(3))).unwrap();
                    i = 4;
                }
                BindStep::Ready => {}
            }
            while i + 1 < pdus.len() {
                let req = &pdus[i];
                let resp = &pdus[i + 1];
                let msg = unhex(req["kms_message_hex"].as_str().unwrap());
                let ours = client.request_pdu(&msg).unwrap();
                let theirs = unhex(&hex_of(i));
                let trailing = opt_hex(&req["stub"]["trailing_hex"]);
                if trailing.is_empty() {
                    assert_eq!(hex::encode(ours), hex_of(i), "{ctx} pdu {i}");
                } else {
                    // py-kms's v4 client appends 4 zero bytes to the stub (PROTOCOL.md §10):
                    // compare with those (and the lengths they inflate) removed.
                    let mut t = kms_wire::rpc::Request::decode(&theirs).unwrap();
                    let cut = t.stub.len() - trailing.len() / 2;
                    t.stub = &t.stub[..cut];
                    t.alloc_hint = cut as u32;
                    assert_eq!(hex::encode(ours), hex::encode(t.encode()), "{ctx} pdu {i}");
                }
                let got = client.on_response(&unhex(&hex_of(i + 1)));
                match resp.get("kms_message_hex") {
                    Some(h) => assert_eq!(hex::encode(got.unwrap()), h.as_str().unwrap()),
                    None => {
                        let hr = hexnum(&resp["stub"]["return_value"]) as u32;
                        assert_eq!(got, Err(CallError::Kms(Hresult(hr))), "{ctx}");
                    }
                }
                calls += 1;
                i += 2;
            }
            conversations += 1;
        }
    }
    assert_eq!(conversations, 25, "every vlmcs / py-kms connection");
    assert!(calls >= 35, "{calls}");
}
