//! Every KMS message of the 25 captured conversations (`captured/*.json`): requests decoded
//! and checked field by field, then re-encoded byte-exact from their fields and IV; success
//! responses re-encoded byte-exact from their plaintext fields plus the recovered random,
//! response IV and HwId, and accepted by the client-side verifier.

use kms_wire::kms::{
    self, ActivationRequest, ClientContext, DecodedRequest, KmsError, ProtocolVersion,
    ResponseFields, ResponseRandomness,
};
use kms_wire::{FileTime, Guid, Hresult};
use serde_json::Value;

use crate::common::{captured, unhex};

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("missing string {key} in {v}"))
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("missing integer {key} in {v}"))
}

fn h16(v: &Value, key: &str) -> [u8; 16] {
    unhex(s(v, key)).try_into().unwrap()
}

fn guid(v: &Value, key: &str) -> Guid {
    s(v, key).parse().unwrap()
}

fn check_request_fields(r: &ActivationRequest, j: &Value, ctx: &str) {
    assert_eq!(r.version.to_string(), s(j, "version"), "{ctx}");
    assert_eq!(u64::from(r.version.major()), u(j, "major"), "{ctx}");
    assert_eq!(u(j, "minor"), 0, "{ctx}");
    assert_eq!(u64::from(r.is_client_vm), u(j, "is_client_vm"), "{ctx}");
    assert_eq!(u64::from(r.license_status), u(j, "license_status"), "{ctx}");
    assert_eq!(
        u64::from(r.binding_expiration),
        u(j, "binding_expiration_min"),
        "{ctx}"
    );
    assert_eq!(r.application_id, guid(j, "application_id"), "{ctx}");
    assert_eq!(r.sku_id, guid(j, "sku_id"), "{ctx}");
    assert_eq!(r.kms_counted_id, guid(j, "kms_counted_id"), "{ctx}");
    assert_eq!(r.client_machine_id, guid(j, "cmid"), "{ctx}");
    assert_eq!(
        u64::from(r.required_client_count),
        u(j, "required_client_count"),
        "{ctx}"
    );
    assert_eq!(
        r.request_time,
        FileTime(u(j, "request_time_filetime")),
        "{ctx}"
    );
    assert_eq!(
        r.previous_client_machine_id,
        guid(j, "previous_cmid"),
        "{ctx}"
    );
    assert_eq!(r.workstation_name, s(j, "workstation_name"), "{ctx}");
    assert_eq!(
        hex::encode(r.workstation_field),
        s(j, "workstation_name_field_hex"),
        "{ctx}"
    );
}

/// Counters of what one conversation exercised.
#[derive(Default)]
struct Seen {
    requests: usize,
    refused_by_version: usize,
    responses: usize,
}

fn check_request(
    p: &Value,
    msg: &[u8],
    ctx: &str,
    seen: &mut Seen,
) -> Option<(DecodedRequest, ClientContext)> {
    let kr = &p["kms_request"];
    let jreq = &kr["request"];
    assert_eq!(msg.len() as u64, u(kr, "message_len"), "{ctx}");

    let decoded = kms::decode_request(msg);
    if ![4, 5, 6].contains(&u(jreq, "major")) {
        // err-bad-version: 7.0 is refused with 0x8007000D.
        let err = decoded.expect_err(ctx);
        assert_eq!(
            err,
            KmsError::BadVersion {
                major: u(jreq, "major") as u16,
                minor: 0
            },
            "{ctx}"
        );
        assert_eq!(err.hresult(), Hresult::INVALID_DATA);
        seen.refused_by_version += 1;
        return None;
    }
    let decoded = decoded.unwrap_or_else(|e| panic!("{ctx}: {e}"));
    seen.requests += 1;
    let req = &decoded.request;
    check_request_fields(req, jreq, ctx);
    assert_eq!(
        hex::encode(req.encode_base()),
        s(kr, "plain_base_hex"),
        "{ctx}"
    );

    // Re-encode from the decoded fields (+ IV): byte-exact.
    let iv = match req.version {
        ProtocolVersion::V4 => {
            assert_eq!(decoded.request_iv(), None);
            assert_eq!(hex::encode(&msg[236..252]), s(kr, "v4_mac"), "{ctx}");
            assert_eq!(kr["v4_mac_ok"], true);
            [0; 16]
        }
        _ => {
            let iv = h16(kr, "iv");
            assert_eq!(decoded.request_iv(), Some(iv), "{ctx}");
            assert_eq!(
                decoded.decrypted_request_iv(),
                Some(h16(kr, "iv_decrypted")),
                "{ctx}"
            );
            iv
        }
    };
    let (again, client_ctx) = kms::encode_request(req, iv);
    assert_eq!(
        hex::encode(again),
        hex::encode(msg),
        "{ctx}: re-encoded request"
    );
    Some((decoded, client_ctx))
}

fn check_response(
    p: &Value,
    msg: &[u8],
    decoded: &DecodedRequest,
    client_ctx: &ClientContext,
    ctx: &str,
) {
    let kr = &p["kms_response"];
    let jr = &kr["response"];
    assert_eq!(msg.len() as u64, u(kr, "message_len"), "{ctx}");
    let version = decoded.version();
    assert_eq!(version.to_string(), s(jr, "version"), "{ctx}");

    let (randomness, hwid) = match version {
        ProtocolVersion::V4 => (
            ResponseRandomness {
                random: [0; 16],
                v6_response_iv: [0; 16],
            },
            [0; 8],
        ),
        ProtocolVersion::V5 => (
            ResponseRandomness {
                random: h16(kr, "random_recovered"),
                v6_response_iv: [0; 16],
            },
            [0; 8],
        ),
        ProtocolVersion::V6 => (
            ResponseRandomness {
                random: h16(kr, "random_recovered"),
                v6_response_iv: h16(kr, "iv"),
            },
            unhex(s(kr, "hwid")).try_into().unwrap(),
        ),
    };
    let fields = ResponseFields {
        epid: s(jr, "epid"),
        current_count: u(jr, "current_count") as u32,
        activation_interval: u(jr, "activation_interval_min") as u32,
        renewal_interval: u(jr, "renewal_interval_min") as u32,
    };
    let encoded = kms::encode_response(decoded, &fields, hwid, &randomness)
        .unwrap_or_else(|e| panic!("{ctx}: {e}"));
    assert_eq!(
        hex::encode(&encoded),
        hex::encode(msg),
        "{ctx}: re-encoded response"
    );

    // The client-side verifier accepts the captured response.
    let verified =
        kms::verify_response(client_ctx, msg).unwrap_or_else(|e| panic!("{ctx}: verify: {e}"));
    let r = &verified.response;
    assert_eq!(r.version, version);
    assert_eq!(r.epid, s(jr, "epid"), "{ctx}");
    assert_eq!(
        (r.epid.encode_utf16().count() as u64 + 1) * 2,
        u(jr, "epid_size_bytes")
    );
    assert_eq!(r.client_machine_id, guid(jr, "cmid"), "{ctx}");
    assert_eq!(r.response_time.0, u(jr, "response_time_filetime"), "{ctx}");
    assert_eq!(u64::from(r.current_count), u(jr, "current_count"), "{ctx}");
    assert_eq!(
        u64::from(r.activation_interval),
        u(jr, "activation_interval_min")
    );
    assert_eq!(u64::from(r.renewal_interval), u(jr, "renewal_interval_min"));
    assert_eq!(
        hex::encode(r.encode_base().unwrap()),
        s(kr, "plain_base_hex"),
        "{ctx}"
    );
    match version {
        ProtocolVersion::V4 => {
            assert_eq!(hex::encode(&msg[msg.len() - 16..]), s(kr, "v4_mac"));
            assert_eq!(verified.random, None);
            assert_eq!(verified.hwid, None);
        }
        ProtocolVersion::V5 => {
            assert_eq!(verified.random, Some(randomness.random));
            assert_eq!(verified.hwid, None);
            assert_eq!(h16(kr, "iv"), decoded.request_iv().unwrap());
        }
        ProtocolVersion::V6 => {
            assert_eq!(verified.random, Some(randomness.random));
            assert_eq!(verified.hwid, Some(hwid));
        }
    }
    for (k, v) in kr["checks"].as_object().unwrap() {
        assert_eq!(v, true, "{ctx}: check {k}");
    }
}

#[test]
fn every_captured_kms_message() {
    let mut total = Seen::default();
    let mut files = 0;
    for (name, doc) in captured() {
        files += 1;
        let mut seen = Seen::default();
        for (ci, conn) in doc["connections"].as_array().unwrap().iter().enumerate() {
            let mut pending: Option<(DecodedRequest, ClientContext)> = None;
            for p in conn["pdus"].as_array().unwrap() {
                let ptype = s(&p["rpc"], "ptype_name");
                let ctx = format!("{name} conn {ci} pdu {}", p["index"]);
                let Some(hex_msg) = p["kms_message_hex"].as_str() else {
                    if ptype == "response" {
                        // Error responses carry a NULL array, no KMS message.
                        assert_ne!(s(&p["stub"], "return_value"), "0x00000000", "{ctx}");
                        pending = None;
                    }
                    continue;
                };
                let msg = unhex(hex_msg);
                match ptype {
                    "request" => pending = check_request(p, &msg, &ctx, &mut seen),
                    "response" => {
                        let (decoded, client_ctx) = pending
                            .take()
                            .unwrap_or_else(|| panic!("{ctx}: response without request"));
                        check_response(p, &msg, &decoded, &client_ctx, &ctx);
                        seen.responses += 1;
                    }
                    other => panic!("{ctx}: KMS message in a {other} PDU"),
                }
            }
        }
        assert!(
            seen.requests + seen.refused_by_version > 0,
            "{name}: no KMS request"
        );
        total.requests += seen.requests;
        total.refused_by_version += seen.refused_by_version;
        total.responses += seen.responses;
    }
    assert_eq!(files, 25);
    assert_eq!(total.refused_by_version, 2);
    // Exact totals, so a silently skipped message shows up: 79 KMS messages in all.
    assert_eq!(total.requests, 41);
    assert_eq!(total.responses, 36);
    eprintln!(
        "captured: {} requests decoded, {} refused by version, {} responses re-encoded and verified",
        total.requests, total.refused_by_version, total.responses
    );
}
