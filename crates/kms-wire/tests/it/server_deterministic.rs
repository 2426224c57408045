//! `server-deterministic.json` end to end: every client PDU goes through the host-side
//! association, the KMS decoder and the response encoder with the injected randomness, and the
//! host's PDU must equal the expected one byte for byte — success responses included.

use kms_wire::kms::{ResponseFields, ResponseRandomness, decode_request, encode_response};
use kms_wire::rpc::{Association, HostAction, HostConfig, PendingCall};
use kms_wire::{FileTime, Hresult};

use serde_json::Value;

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

/// The deterministic KMS host of one `server-deterministic.json` case: its RPC configuration
/// and the KMS answer (with the injected randomness) to any call. Shared with the
/// fragmentation tests, which must get the very same PDUs.
pub(crate) struct CaseHost {
    pub(crate) config: HostConfig,
    epid: String,
    hwid: [u8; 8],
    randomness: ResponseRandomness,
    server_time: FileTime,
    activation_interval: u32,
    renewal_interval: u32,
    /// call ids answered with KMS_ID_MISMATCH ("0xC004F042 for calls 4 and 5").
    forced: Vec<u32>,
}

impl CaseHost {
    pub(crate) fn new(case: &Value) -> CaseHost {
        let cfg = &case["server_config"];
        let forced = match cfg["forced_hresult"].as_str() {
            Some(text) => text
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|t| t.parse().ok())
                .filter(|n| *n < 100)
                .collect(),
            None => vec![],
        };
        CaseHost {
            config: HostConfig {
                listen_port: cfg["listen_port"].as_u64().unwrap() as u16,
                ndr64: cfg["ndr64"].as_bool().unwrap(),
                btfn: cfg["btfn"].as_bool().unwrap(),
                max_pdu: 4096,
            },
            epid: cfg["epid"].as_str().unwrap().to_owned(),
            hwid: unhex(cfg["hwid"].as_str().unwrap()).try_into().unwrap(),
            randomness: ResponseRandomness {
                random: hex16(cfg["random"].as_str().unwrap()),
                v6_response_iv: hex16(cfg["v6_response_iv"].as_str().unwrap()),
            },
            server_time: FileTime::from_unix_secs(parse_utc(cfg["server_time"].as_str().unwrap())),
            activation_interval: cfg["activation_interval"].as_u64().unwrap() as u32,
            renewal_interval: cfg["renewal_interval"].as_u64().unwrap() as u32,
            forced,
        }
    }

    /// A fresh association with the case's configuration and the vectors' assoc_group_id.
    pub(crate) fn association(&self) -> Association {
        Association::new(self.config, 0x1235)
    }

    /// The RESPONSE PDU for a call.
    pub(crate) fn answer(&self, call: PendingCall<'_>) -> Vec<u8> {
        let result: Result<Vec<u8>, Hresult> = match decode_request(call.kms_message()) {
            Err(e) => Err(e.hresult()),
            Ok(_) if self.forced.contains(&call.call_id()) => Err(Hresult::KMS_ID_MISMATCH),
            Ok(req) if req.request.request_time.abs_diff_secs(self.server_time) > 4 * 3600 => {
                Err(Hresult::INVALID_TIMESTAMP)
            }
            Ok(req) => {
                let fields = ResponseFields {
                    epid: &self.epid,
                    current_count: 2 * req.request.required_client_count,
                    activation_interval: self.activation_interval,
                    renewal_interval: self.renewal_interval,
                };
                Ok(encode_response(&req, &fields, self.hwid, &self.randomness).expect("encodes"))
            }
        };
        match &result {
            Ok(msg) => call.respond(Ok(msg)),
            Err(h) => call.respond(Err(*h)),
        }
    }
}

#[test]
fn every_case_is_reproduced_byte_for_byte() {
    let v = load_json("server-deterministic.json");
    let cases = v["cases"].as_array().expect("cases");
    assert!(cases.len() >= 8);
    let mut responses_checked = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let host = CaseHost::new(case);
        let mut assoc = host.association();
        for (i, ex) in case["exchanges"].as_array().unwrap().iter().enumerate() {
            let client = unhex(ex["client_pdu"].as_str().unwrap());
            let expected = unhex(ex["expected_server_pdu"].as_str().unwrap());
            let got = match assoc.on_pdu(&client) {
                HostAction::Reply(bytes) => bytes,
                HostAction::Close(e) => panic!("{name} #{i}: connection closed: {e}"),
                HostAction::Continue => panic!("{name} #{i}: unfragmented PDU buffered"),
                HostAction::Call(call) => {
                    responses_checked += 1;
                    host.answer(call)
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
