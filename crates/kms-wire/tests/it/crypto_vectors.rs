//! `crypto.json`: key schedules, single blocks, V4MAC, HMAC key derivation and the complete
//! deterministic v4/v5/v6 request and response messages, byte for byte.

use kms_wire::crypto::{
    self, Aes128, HMAC_C1, HMAC_C2, HMAC_C3, KEY_V4, KEY_V5, KEY_V6, Rijndael160, V4_CIPHER,
    V5_CIPHER, V6_CIPHER,
};
use kms_wire::kms::{
    self, ActivationRequest, ActivationResponse, ProtocolVersion, ResponseFields,
    ResponseRandomness,
};
use kms_wire::{FileTime, Guid};
use serde_json::Value;

use crate::common::{load_json, unhex};

fn vectors() -> Value {
    load_json("crypto.json")
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("missing string {key}"))
}

fn h(v: &Value, key: &str) -> Vec<u8> {
    unhex(s(v, key))
}

fn h16(v: &Value, key: &str) -> [u8; 16] {
    h(v, key).try_into().unwrap()
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("missing integer {key}"))
}

fn guid(v: &Value, key: &str) -> Guid {
    s(v, key).parse().unwrap()
}

fn version(text: &str) -> ProtocolVersion {
    match text {
        "4.0" => ProtocolVersion::V4,
        "5.0" => ProtocolVersion::V5,
        "6.0" => ProtocolVersion::V6,
        other => panic!("unexpected version {other}"),
    }
}

fn hex_of_round_keys(keys: &[[u8; 16]]) -> Vec<String> {
    keys.iter().map(hex::encode).collect()
}

fn json_strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn keys_and_constants() {
    let v = vectors();
    assert_eq!(hex::encode(KEY_V4), s(&v["keys"], "v4_rijndael160"));
    assert_eq!(hex::encode(KEY_V5), s(&v["keys"], "v5_aes128"));
    assert_eq!(hex::encode(KEY_V6), s(&v["keys"], "v6_aes128_modified"));
    let c = &v["hmac_time_constants"];
    assert_eq!(format!("0x{HMAC_C1:016x}"), s(c, "C1"));
    assert_eq!(format!("0x{HMAC_C2:016x}"), s(c, "C2"));
    assert_eq!(format!("0x{HMAC_C3:016x}"), s(c, "C3"));
}

#[test]
fn aes128_fips197() {
    let v = &vectors()["aes128_fips197_c1"];
    let aes = Aes128::new(&h16(v, "key"));
    let mut b = h16(v, "plaintext");
    aes.encrypt_block(&mut b);
    assert_eq!(b, h16(v, "ciphertext"));
    aes.decrypt_block(&mut b);
    assert_eq!(b, h16(v, "plaintext"));
}

#[test]
fn key_schedules() {
    let v = vectors();
    let ks = &v["key_schedules"];

    assert_eq!(ks["v4"]["rounds"], 11);
    assert_eq!(
        hex_of_round_keys(&V4_CIPHER.round_keys()),
        json_strings(&ks["v4"]["round_keys"])
    );
    assert_eq!(
        V4_CIPHER.round_keys(),
        Rijndael160::new(&KEY_V4).round_keys()
    );

    assert_eq!(ks["v5"]["rounds"], 10);
    assert_eq!(
        hex_of_round_keys(&V5_CIPHER.round_keys()),
        json_strings(&ks["v5"]["round_keys"])
    );

    assert_eq!(ks["v6"]["rounds"], 10);
    assert_eq!(
        hex_of_round_keys(&V6_CIPHER.round_keys()),
        json_strings(&ks["v6"]["round_keys"])
    );
    assert_eq!(
        hex_of_round_keys(&Aes128::new(&KEY_V6).round_keys()),
        json_strings(&ks["v6"]["standard_round_keys_for_comparison"])
    );
    // Runtime expansion equals the compile-time statics.
    assert_eq!(
        Aes128::new_kms_v6(&KEY_V6).round_keys(),
        V6_CIPHER.round_keys()
    );
    assert_eq!(Aes128::new(&KEY_V5).round_keys(), V5_CIPHER.round_keys());
}

#[test]
fn block_encrypt() {
    let v = vectors();
    let cases = v["block_encrypt"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for c in cases {
        let pt = h16(c, "plaintext");
        let ct = h16(c, "ciphertext");
        let mut b = pt;
        match s(c, "cipher") {
            "v4" => V4_CIPHER.encrypt_block(&mut b),
            "v5" => V5_CIPHER.encrypt_block(&mut b),
            "v6" => V6_CIPHER.encrypt_block(&mut b),
            other => panic!("unknown cipher {other}"),
        }
        assert_eq!(b, ct, "{c}");
        match s(c, "cipher") {
            "v5" => V5_CIPHER.decrypt_block(&mut b),
            "v6" => V6_CIPHER.decrypt_block(&mut b),
            _ => continue,
        }
        assert_eq!(b, pt, "decrypt {c}");
    }
}

#[test]
fn v4_mac_cases() {
    let v = vectors();
    let cases = v["v4_mac"]["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 8);
    for c in cases {
        let msg = h(c, "message");
        assert_eq!(msg.len() as u64, u(c, "length"));
        assert_eq!(crypto::v4_mac(&msg), h16(c, "mac"), "length {}", msg.len());
    }
}

#[test]
fn v6_hmac_key_derivation() {
    let v = vectors();
    let cases = v["v6_hmac_key_derivation"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    for c in cases {
        let t = u(c, "filetime");
        assert_eq!(hex::encode(t.to_le_bytes()), s(c, "filetime_hex_le"));
        let slot = crypto::v6_hmac_slot(t, 0);
        assert_eq!(format!("0x{slot:016x}"), s(c, "slot"), "t={t}");
        assert_eq!(hex::encode(slot.to_le_bytes()), s(c, "slot_le_bytes"));
        assert_eq!(
            hex::encode(crypto::sha256(&slot.to_le_bytes())),
            s(c, "sha256_of_slot")
        );
        assert_eq!(crypto::v6_hmac_key(t), h16(c, "hmac_key"), "t={t}");
    }
}

fn request_from_fields(f: &Value, workstation_field: &[u8]) -> ActivationRequest {
    let mut r = ActivationRequest {
        version: version(s(f, "version")),
        is_client_vm: u(f, "is_client_vm") as u32,
        license_status: u(f, "license_status") as u32,
        binding_expiration: u(f, "binding_expiration_min") as u32,
        application_id: guid(f, "application_id"),
        sku_id: guid(f, "sku_id"),
        kms_counted_id: guid(f, "kms_counted_id"),
        client_machine_id: guid(f, "cmid"),
        required_client_count: u(f, "required_client_count") as u32,
        request_time: FileTime(u(f, "request_time_filetime")),
        previous_client_machine_id: guid(f, "previous_cmid"),
        workstation_name: String::new(),
        workstation_field: [0; 128],
    };
    r.set_workstation_name(s(f, "workstation_name"));
    assert_eq!(&r.workstation_field[..], workstation_field);
    r
}

fn response_from_fields(f: &Value) -> ActivationResponse {
    ActivationResponse {
        version: version(s(f, "version")),
        epid: s(f, "epid").to_owned(),
        client_machine_id: guid(f, "cmid"),
        response_time: FileTime(u(f, "response_time_filetime")),
        current_count: u(f, "current_count") as u32,
        activation_interval: u(f, "activation_interval_min") as u32,
        renewal_interval: u(f, "renewal_interval_min") as u32,
    }
}

/// Full messages for one version: plaintext structures, client encode, host decode, host
/// encode, client verify.
fn check_message_vector(name: &str) {
    let v = vectors();
    let m = &v["kms_messages"][name];
    let base_plain = h(m, "request_base_plain");
    let req = request_from_fields(&m["request_base_fields"], &base_plain[108..]);
    assert_eq!(req.encode_base().to_vec(), base_plain);
    assert_eq!(ActivationRequest::decode_base(&base_plain).unwrap(), req);

    let resp = response_from_fields(&m["response_base_fields"]);
    let resp_plain = h(m, "response_base_plain");
    assert_eq!(resp.encode_base().unwrap(), resp_plain);
    assert_eq!(
        resp_plain.len() as u64,
        44 + u(&m["response_base_fields"], "epid_size_bytes")
    );
    assert_eq!(
        ActivationResponse::decode_base(&resp_plain).unwrap(),
        (resp.clone(), resp_plain.len())
    );

    // Client side: request message byte-exact.
    let iv = if req.version == ProtocolVersion::V4 {
        [0xEE; 16] // ignored
    } else {
        h16(m, "request_iv")
    };
    let (request_msg, ctx) = kms::encode_request(&req, iv);
    assert_eq!(hex::encode(&request_msg), s(m, "request_message"));

    // Host side: decode.
    let decoded = kms::decode_request(&request_msg).unwrap();
    assert_eq!(decoded.request, req);
    assert_eq!(decoded.version(), req.version);

    let (random, response_iv, hwid) = match req.version {
        ProtocolVersion::V4 => {
            assert_eq!(hex::encode(&request_msg[236..]), s(m, "request_mac"));
            assert_eq!(decoded.request_iv(), None);
            ([0u8; 16], [0u8; 16], [0u8; 8])
        }
        _ => {
            assert_eq!(decoded.request_iv(), Some(iv));
            assert_eq!(
                decoded.decrypted_request_iv(),
                Some(h16(m, "request_iv_decrypted"))
            );
            let hwid: [u8; 8] = if req.version == ProtocolVersion::V6 {
                h(m, "hwid").try_into().unwrap()
            } else {
                [0xAB; 8] // ignored by v5
            };
            (h16(m, "random"), h16(m, "response_iv"), hwid)
        }
    };

    // Host side: encode the response byte-exact.
    let fields = ResponseFields {
        epid: &resp.epid,
        current_count: resp.current_count,
        activation_interval: resp.activation_interval,
        renewal_interval: resp.renewal_interval,
    };
    let randomness = ResponseRandomness {
        random,
        v6_response_iv: response_iv,
    };
    let response_msg = kms::encode_response(&decoded, &fields, hwid, &randomness).unwrap();
    assert_eq!(
        hex::encode(&response_msg),
        s(m, "response_message"),
        "{name}"
    );

    // Intermediate values for v5/v6.
    if req.version != ProtocolVersion::V4 {
        assert_eq!(
            crypto::sha256(&random).to_vec(),
            h(m, "random_sha256"),
            "{name}"
        );
        let mut body = response_msg[20..].to_vec();
        let cipher = if req.version == ProtocolVersion::V6 {
            &V6_CIPHER
        } else {
            &V5_CIPHER
        };
        cipher.cbc_decrypt(&response_iv, &mut body).unwrap();
        assert_eq!(hex::encode(&body), s(m, "response_plain_padded"));
        let unpadded = crypto::pkcs7_unpad(&body).unwrap();
        assert_eq!(hex::encode(unpadded), s(m, "response_plain_unpadded"));
    } else {
        assert_eq!(
            hex::encode(&response_msg[response_msg.len() - 16..]),
            s(m, "response_mac")
        );
    }
    if req.version == ProtocolVersion::V6 {
        let key = h16(m, "hmac_key");
        assert_eq!(crypto::v6_hmac_key(req.request_time.0), key);
        assert_eq!(
            V6_CIPHER.decrypt_copy(&response_iv),
            h16(m, "response_iv_decrypted")
        );
        let input = h(m, "hmac_input");
        assert_eq!(
            crypto::v6_hmac_full(&key, &[&input]).to_vec(),
            h(m, "hmac_sha256_full")
        );
        assert_eq!(crypto::v6_hmac(&key, &[&input]), h16(m, "hmac_field"));
    }

    // Client side: verify.
    let verified = kms::verify_response(&ctx, &response_msg).unwrap();
    assert_eq!(verified.response, resp);
    match req.version {
        ProtocolVersion::V4 => {
            assert_eq!(verified.hwid, None);
            assert_eq!(verified.random, None);
        }
        ProtocolVersion::V5 => {
            assert_eq!(verified.hwid, None);
            assert_eq!(verified.random, Some(random));
        }
        ProtocolVersion::V6 => {
            assert_eq!(verified.hwid, Some(hwid));
            assert_eq!(verified.random, Some(random));
        }
    }
}

#[test]
fn kms_message_v4() {
    check_message_vector("v4");
}

#[test]
fn kms_message_v5() {
    check_message_vector("v5");
}

#[test]
fn kms_message_v6() {
    check_message_vector("v6");
}

/// A v6 response IV equal to the request IV is corrected (one bit flipped), never sent.
#[test]
fn v6_equal_response_iv_is_corrected() {
    let v = vectors();
    let m = &v["kms_messages"]["v6"];
    let msg = h(m, "request_message");
    let decoded = kms::decode_request(&msg).unwrap();
    let iv = decoded.request_iv().unwrap();
    let epid = s(&m["response_base_fields"], "epid");
    let fields = ResponseFields {
        epid,
        current_count: 50,
        activation_interval: 120,
        renewal_interval: 10080,
    };
    let randomness = ResponseRandomness {
        random: [1; 16],
        v6_response_iv: iv,
    };
    let out = kms::encode_response(&decoded, &fields, [0; 8], &randomness).unwrap();
    let mut expected_iv = iv;
    expected_iv[15] ^= 1;
    assert_eq!(&out[4..20], &expected_iv);
    // And the client accepts it.
    let req = decoded.request.clone();
    let (_, ctx) = kms::encode_request(&req, iv);
    kms::verify_response(&ctx, &out).unwrap();
}

/// Extract the KMS message from a REQUEST/RESPONSE stub (NDR32 or NDR64), `None` for an error
/// stub (NULL array).
fn message_from_stub(stub: &[u8], response: bool) -> Option<Vec<u8>> {
    let size = u32::from_le_bytes(stub[0..4].try_into().unwrap()) as usize;
    if size == 0 {
        return None;
    }
    let second = u32::from_le_bytes(stub[4..8].try_into().unwrap());
    let start = match (response, second) {
        (false, x) if x as usize == size => 8, // NDR32 request: size, max_count
        (false, _) => 16,                      // NDR64 request: size, pad, u64 max_count
        (true, 0x0002_0000) => 12,             // NDR32 response: size, referent, max_count
        (true, _) => 24,                       // NDR64 response: size, pad, u64 referent, u64 count
    };
    Some(stub[start..start + size].to_vec())
}

/// `server-deterministic.json`: every KMS response a conforming server sends with the injected
/// randomness (consumed as `random`, then `v6_response_iv`) is reproduced byte for byte.
#[test]
fn server_deterministic_kms_messages() {
    let v = load_json("server-deterministic.json");
    let mut responses = 0;
    for case in v["cases"].as_array().unwrap() {
        let cfg = &case["server_config"];
        let hwid: [u8; 8] = h(cfg, "hwid").try_into().unwrap();
        let randomness = ResponseRandomness {
            random: h16(cfg, "random"),
            v6_response_iv: h16(cfg, "v6_response_iv"),
        };
        for ex in case["exchanges"].as_array().unwrap() {
            let cd = &ex["client_decoded"];
            let sd = &ex["server_decoded"];
            if cd["ptype_name"] != "request" || sd["ptype_name"] != "response" {
                continue;
            }
            let req_msg = message_from_stub(&h(cd, "stub_hex"), false).unwrap();
            let decoded = kms::decode_request(&req_msg);
            let stub = h(sd, "stub_hex");
            let Some(expected) = message_from_stub(&stub, true) else {
                let hr = u32::from_le_bytes(stub[stub.len() - 4..].try_into().unwrap());
                if hr == 0x8007_000D {
                    let err = decoded.expect_err("host must refuse");
                    assert_eq!(err.hresult().0, hr);
                } else {
                    decoded.expect("policy refusal of a well-formed request");
                }
                continue;
            };
            let decoded = decoded.unwrap();
            let fields = ResponseFields {
                epid: s(cfg, "epid"),
                current_count: 2 * decoded.request.required_client_count,
                activation_interval: u(cfg, "activation_interval") as u32,
                renewal_interval: u(cfg, "renewal_interval") as u32,
            };
            let out = kms::encode_response(&decoded, &fields, hwid, &randomness).unwrap();
            assert_eq!(hex::encode(out), hex::encode(expected), "{}", case["name"]);
            responses += 1;
        }
    }
    assert!(responses >= 6, "only {responses} responses checked");
}
