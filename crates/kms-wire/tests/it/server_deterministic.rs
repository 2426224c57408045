//! `server-deterministic.json` end to end: every client PDU goes through the host-side
//! association, the KMS decoder and the response encoder with the injected randomness, and the
//! host's PDU must equal the expected one byte for byte — success responses included.

use kms_wire::kms::{ResponseFields, ResponseRandomness, decode_request, encode_response};
use kms_wire::rpc::{Association, HostAction, HostConfig};
use kms_wire::{FileTime, Hresult};

use crate::common::{load_json, unhex};

/// Seconds since the Unix epoch of `YYYY-MM-DDTHH:MM:SSZ`.
fn parse_utc(s: &str) -> i64 {
    let n = |a: usize, b: usize| s[a..b].parse::<i64>().expect("digits");
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    let (hh, mm, ss) = (n(11, 13), n(14, 16), n(17, 19));
    // Days from civil (proleptic Gregorian).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + hh * 3600 + mm * 60 + ss
}

fn hex16(s: &str) -> [u8; 16] {
    unhex(s).try_into().expect("16 bytes")
}

#[test]
fn every_case_is_reproduced_byte_for_byte() {
    let v = load_json("server-deterministic.json");
    let cases = v["cases"].as_array().expect("cases");
    assert!(cases.len() >= 8);
    let mut responses_checked = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let cfg = &case["server_config"];
        let mut assoc = Association::new(
            HostConfig {
                listen_port: cfg["listen_port"].as_u64().unwrap() as u16,
                ndr64: cfg["ndr64"].as_bool().unwrap(),
                btfn: cfg["btfn"].as_bool().unwrap(),
                max_pdu: 4096,
            },
            0x1235,
        );
        let epid = cfg["epid"].as_str().unwrap();
        let hwid: [u8; 8] = unhex(cfg["hwid"].as_str().unwrap()).try_into().unwrap();
        let randomness = ResponseRandomness {
            random: hex16(cfg["random"].as_str().unwrap()),
            v6_response_iv: hex16(cfg["v6_response_iv"].as_str().unwrap()),
        };
        let server_time = FileTime::from_unix_secs(parse_utc(cfg["server_time"].as_str().unwrap()));
        // "0xC004F042 for calls 4 and 5"
        let forced: Vec<u32> = match cfg["forced_hresult"].as_str() {
            Some(text) => text
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|t| t.parse().ok())
                .filter(|n| *n < 100)
                .collect(),
            None => vec![],
        };
        for (i, ex) in case["exchanges"].as_array().unwrap().iter().enumerate() {
            let client = unhex(ex["client_pdu"].as_str().unwrap());
            let expected = unhex(ex["expected_server_pdu"].as_str().unwrap());
            let got = match assoc.on_pdu(&client) {
                HostAction::Reply(bytes) => bytes,
                HostAction::Close(e) => panic!("{name} #{i}: connection closed: {e}"),
                HostAction::Call(call) => {
                    responses_checked += 1;
                    let result: Result<Vec<u8>, Hresult> = match decode_request(call.kms_message())
                    {
                        Err(e) => Err(e.hresult()),
                        Ok(_) if forced.contains(&call.call_id()) => Err(Hresult::KMS_ID_MISMATCH),
                        Ok(req)
                            if req.request.request_time.abs_diff_secs(server_time) > 4 * 3600 =>
                        {
                            Err(Hresult::INVALID_TIMESTAMP)
                        }
                        Ok(req) => {
                            let fields = ResponseFields {
                                epid,
                                current_count: 2 * req.request.required_client_count,
                                activation_interval: cfg["activation_interval"].as_u64().unwrap()
                                    as u32,
                                renewal_interval: cfg["renewal_interval"].as_u64().unwrap() as u32,
                            };
                            Ok(encode_response(&req, &fields, hwid, &randomness).expect("encodes"))
                        }
                    };
                    match &result {
                        Ok(msg) => call.respond(Ok(msg)),
                        Err(h) => call.respond(Err(*h)),
                    }
                }
            };
            assert_eq!(
                hex::encode(&got),
                hex::encode(&expected),
                "{name}: exchange #{i} differs"
            );
        }
    }
    assert!(
        responses_checked >= 10,
        "only {responses_checked} calls checked"
    );
}
