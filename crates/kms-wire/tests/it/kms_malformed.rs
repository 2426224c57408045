//! Malformed KMS messages, one test per class (PROTOCOL.md §7, §6.7): every one is refused
//! with a typed [`KmsError`] whose HRESULT is 0x8007000D, and nothing panics.

use kms_wire::crypto::{V5_CIPHER, V6_CIPHER};
use kms_wire::kms::{
    self, ActivationRequest, KmsError, ProtocolVersion, ResponseFields, ResponseRandomness,
};
use kms_wire::{FileTime, Guid, Hresult};

/// A plausible request of the given version.
pub(crate) fn sample_request(version: ProtocolVersion) -> ActivationRequest {
    let mut r = ActivationRequest {
        version,
        is_client_vm: 0,
        license_status: 2,
        binding_expiration: 43200,
        application_id: "55c92734-d682-4d71-983e-d6ec3f16059f".parse().unwrap(),
        sku_id: "73111121-5638-40f6-bc11-f1d7b0d64300".parse().unwrap(),
        kms_counted_id: "58e2134f-8e11-4d17-9cb2-91069c151148".parse().unwrap(),
        client_machine_id: "5a9c3e7e-1d2b-4c0e-9f11-0123456789ab".parse().unwrap(),
        required_client_count: 25,
        request_time: FileTime(133_486_382_450_000_000),
        previous_client_machine_id: Guid::NIL,
        workstation_name: String::new(),
        workstation_field: [0; 128],
    };
    r.set_workstation_name("kms-test-client.example");
    r
}

pub(crate) const EPID: &str = "03612-00206-568-381813-03-1033-17763.0000-2702018";

pub(crate) fn fields() -> ResponseFields<'static> {
    ResponseFields {
        epid: EPID,
        current_count: 50,
        activation_interval: 120,
        renewal_interval: 10080,
    }
}

pub(crate) const RANDOMNESS: ResponseRandomness = ResponseRandomness {
    random: [0xA5; 16],
    v6_response_iv: [0x5A; 16],
};

const REQUEST_IV: [u8; 16] = [0x11; 16];

fn request_message(version: ProtocolVersion) -> Vec<u8> {
    kms::encode_request(&sample_request(version), REQUEST_IV).0
}

/// Encrypt an arbitrary 240-byte plaintext as a v5/v6 request message.
fn encrypted_request(version: ProtocolVersion, plain: &[u8; 240]) -> Vec<u8> {
    let cipher = match version {
        ProtocolVersion::V5 => &V5_CIPHER,
        _ => &V6_CIPHER,
    };
    let mut body = plain.to_vec();
    cipher.cbc_encrypt(&REQUEST_IV, &mut body).unwrap();
    let mut msg = version.wire_bytes().to_vec();
    msg.extend_from_slice(&REQUEST_IV);
    msg.extend_from_slice(&body);
    msg
}

fn padded_base(version: ProtocolVersion) -> [u8; 240] {
    let mut p = [4u8; 240];
    p[..236].copy_from_slice(&sample_request(version).encode_base());
    p
}

#[track_caller]
fn refused(msg: &[u8]) -> KmsError {
    let err = kms::decode_request(msg).expect_err("must be refused");
    assert_eq!(err.hresult(), Hresult::INVALID_DATA);
    assert_eq!(err.hresult().0, 0x8007_000D);
    err
}

#[test]
fn truncated() {
    assert_eq!(refused(&[]), KmsError::TooShort { len: 0, need: 4 });
    assert_eq!(refused(&[0, 0, 6]), KmsError::TooShort { len: 3, need: 4 });
    for v in ProtocolVersion::ALL {
        let msg = request_message(v);
        assert_eq!(msg.len(), v.request_len());
        for cut in 4..msg.len() {
            assert_eq!(
                refused(&msg[..cut]),
                KmsError::TooShort {
                    len: cut,
                    need: v.request_len()
                },
                "{v} cut at {cut}"
            );
        }
        assert!(kms::decode_request(&msg).is_ok());
    }
}

#[test]
fn bad_version() {
    let good = request_message(ProtocolVersion::V6);
    for (major, minor) in [
        (7u16, 0u16),
        (6, 1),
        (3, 0),
        (0, 0),
        (0xFFFF, 0xFFFF),
        (4, 4),
    ] {
        let mut msg = good.clone();
        msg[0..2].copy_from_slice(&minor.to_le_bytes());
        msg[2..4].copy_from_slice(&major.to_le_bytes());
        assert_eq!(refused(&msg), KmsError::BadVersion { major, minor });
        // The version check comes first, even for a 4-byte message.
        assert_eq!(refused(&msg[..4]), KmsError::BadVersion { major, minor });
    }
}

#[test]
fn bad_mac() {
    let good = request_message(ProtocolVersion::V4);
    for i in [4, 100, 235, 236, 251] {
        let mut msg = good.clone();
        msg[i] ^= 0x01;
        assert_eq!(refused(&msg), KmsError::BadMac, "byte {i}");
    }
}

#[test]
fn bad_padding() {
    for v in [ProtocolVersion::V5, ProtocolVersion::V6] {
        for last in [[4, 4, 4, 5], [0, 0, 0, 0], [4, 4, 4, 17], [3, 4, 4, 4]] {
            let mut p = padded_base(v);
            p[236..].copy_from_slice(&last);
            assert_eq!(
                refused(&encrypted_request(v, &p)),
                KmsError::BadPadding,
                "{v} {last:?}"
            );
        }
        // Tampering with the last ciphertext block garbles the padding.
        let mut msg = request_message(v);
        msg[259] ^= 0x80;
        assert_eq!(refused(&msg), KmsError::BadPadding, "{v}");
        // A different key (v5 ciphertext sent as v6 and vice versa).
        let other = if v == ProtocolVersion::V5 {
            ProtocolVersion::V6
        } else {
            ProtocolVersion::V5
        };
        let mut msg = request_message(other);
        msg[0..4].copy_from_slice(&v.wire_bytes());
        assert!(
            matches!(
                refused(&msg),
                KmsError::BadPadding | KmsError::BadLength { .. }
            ),
            "{v}"
        );
    }
}

#[test]
fn bad_decrypted_length() {
    for v in [ProtocolVersion::V5, ProtocolVersion::V6] {
        // Valid padding, but 232 or 224 bytes of plaintext instead of 236.
        let mut p = padded_base(v);
        p[232..].copy_from_slice(&[8; 8]);
        assert_eq!(
            refused(&encrypted_request(v, &p)),
            KmsError::BadLength {
                len: 232,
                expected: 236
            }
        );
        p[224..].copy_from_slice(&[16; 16]);
        assert_eq!(
            refused(&encrypted_request(v, &p)),
            KmsError::BadLength {
                len: 224,
                expected: 236
            }
        );
        // One pad byte: 239 bytes.
        p[239] = 1;
        assert_eq!(
            refused(&encrypted_request(v, &p)),
            KmsError::BadLength {
                len: 239,
                expected: 236
            }
        );
    }
}

#[test]
fn wrong_inner_version() {
    // v5/v6: encrypted base whose own version differs from the outer one.
    for (outer, inner) in [
        (ProtocolVersion::V5, 0x0006_0000u32),
        (ProtocolVersion::V6, 0x0005_0000),
        (ProtocolVersion::V6, 0x0007_0000),
        (ProtocolVersion::V5, 0x0005_0001),
    ] {
        let mut p = padded_base(outer);
        p[0..4].copy_from_slice(&inner.to_le_bytes());
        assert_eq!(
            refused(&encrypted_request(outer, &p)),
            KmsError::VersionMismatch { outer, inner }
        );
    }
    // v4 has no separate outer version: the message starts with the plaintext base request,
    // so outer and inner are the same bytes and cannot differ.
}

#[test]
fn excess_bytes_are_ignored() {
    for v in ProtocolVersion::ALL {
        let msg = request_message(v);
        let expected = kms::decode_request(&msg).unwrap();
        for extra in [1usize, 4, 16, 1000, 65536] {
            let mut long = msg.clone();
            long.extend((0..extra).map(|i| i as u8));
            assert_eq!(
                kms::decode_request(&long).unwrap(),
                expected,
                "{v} +{extra}"
            );
        }
    }
}

/// Deterministic xorshift generator for garbage.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn garbage_is_refused_without_panic() {
    let mut st = 0x9E37_79B9_7F4A_7C15u64;
    for round in 0..3000 {
        let len = (xorshift(&mut st) % 300) as usize;
        let mut msg: Vec<u8> = (0..len).map(|_| xorshift(&mut st) as u8).collect();
        // Most rounds carry a valid version so the later checks are reached.
        if len >= 4 && round % 4 != 0 {
            let v = ProtocolVersion::ALL[round % 3];
            msg[0..4].copy_from_slice(&v.wire_bytes());
        }
        match kms::decode_request(&msg) {
            Ok(_) => panic!("garbage accepted: {}", hex::encode(&msg)),
            Err(e) => assert_eq!(e.hresult(), Hresult::INVALID_DATA),
        }
        // The client side must not panic on garbage either.
        for v in ProtocolVersion::ALL {
            let (_, ctx) = kms::encode_request(&sample_request(v), REQUEST_IV);
            assert!(kms::verify_response(&ctx, &msg).is_err());
        }
    }
}

#[test]
fn epid_too_long_or_with_nul() {
    let decoded = kms::decode_request(&request_message(ProtocolVersion::V6)).unwrap();
    let long = "1".repeat(64);
    let f = ResponseFields {
        epid: &long,
        ..fields()
    };
    let err = kms::encode_response(&decoded, &f, [0; 8], &RANDOMNESS).unwrap_err();
    assert_eq!(err, KmsError::EpidTooLong { bytes: 130 });
    assert_eq!(err.hresult(), Hresult::INVALID_DATA);
    let f = ResponseFields {
        epid: "a\0b",
        ..fields()
    };
    assert!(matches!(
        kms::encode_response(&decoded, &f, [0; 8], &RANDOMNESS),
        Err(KmsError::EpidMalformed(_))
    ));
    // 63 characters is the maximum that fits.
    let max = "1".repeat(63);
    let f = ResponseFields {
        epid: &max,
        ..fields()
    };
    assert!(kms::encode_response(&decoded, &f, [0; 8], &RANDOMNESS).is_ok());
}

// ---- client side: tampered responses ----

fn exchange(v: ProtocolVersion) -> (kms::ClientContext, Vec<u8>) {
    let (msg, ctx) = kms::encode_request(&sample_request(v), REQUEST_IV);
    let decoded = kms::decode_request(&msg).unwrap();
    let resp = kms::encode_response(&decoded, &fields(), [7; 8], &RANDOMNESS).unwrap();
    (ctx, resp)
}

/// Every single-bit change of a v4 (MAC) or v6 (HMAC) response is detected. v5 has no
/// integrity protection over the base response (the hash covers only R), so a flip inside the
/// ePID text can go unnoticed by any client; there only the version, IV, CMID/time and the
/// trailer (RandomXor, Hash, padding) are covered, and nothing may panic.
#[test]
fn client_rejects_bit_flips_and_truncation() {
    for v in ProtocolVersion::ALL {
        let (ctx, good) = exchange(v);
        assert!(kms::verify_response(&ctx, &good).is_ok());
        for i in 0..good.len() {
            let must_detect = match v {
                ProtocolVersion::V5 => i < 20 || i >= good.len() - 64,
                _ => true,
            };
            for bit in [0x01u8, 0x80] {
                let mut bad = good.clone();
                bad[i] ^= bit;
                let result = kms::verify_response(&ctx, &bad);
                if must_detect {
                    let err = result.expect_err(&format!("{v}: flip {bit:#x} at {i} accepted"));
                    assert_eq!(err.hresult(), Hresult::INVALID_DATA);
                }
            }
        }
        for cut in 0..good.len() {
            assert!(
                kms::verify_response(&ctx, &good[..cut]).is_err(),
                "{v} {cut}"
            );
        }
        let mut long = good.clone();
        long.push(0);
        assert!(kms::verify_response(&ctx, &long).is_err(), "{v} excess");
        long.extend_from_slice(&[0; 15]);
        assert!(
            kms::verify_response(&ctx, &long).is_err(),
            "{v} excess block"
        );
    }
}

#[test]
fn client_specific_checks() {
    // Version echo.
    let (ctx5, resp5) = exchange(ProtocolVersion::V5);
    let (ctx6, resp6) = exchange(ProtocolVersion::V6);
    assert!(matches!(
        kms::verify_response(&ctx5, &resp6),
        Err(KmsError::VersionEcho { .. })
    ));

    // v5: the response IV must be the request IV.
    let mut bad = resp5.clone();
    bad[4] ^= 1;
    assert_eq!(
        kms::verify_response(&ctx5, &bad),
        Err(KmsError::IvNotEchoed)
    );

    // v6: a response IV equal to the request IV is refused.
    let mut bad = resp6.clone();
    bad[4..20].copy_from_slice(&REQUEST_IV);
    assert_eq!(kms::verify_response(&ctx6, &bad), Err(KmsError::IvReused));

    // CMID / time echo: a valid response to a different request with the same IV.
    for v in [
        ProtocolVersion::V4,
        ProtocolVersion::V5,
        ProtocolVersion::V6,
    ] {
        let (_, ctx) = kms::encode_request(&sample_request(v), REQUEST_IV);
        let mut other = sample_request(v);
        other.client_machine_id = Guid([0x42; 16]);
        let decoded = kms::decode_request(&kms::encode_request(&other, REQUEST_IV).0).unwrap();
        let resp = kms::encode_response(&decoded, &fields(), [0; 8], &RANDOMNESS).unwrap();
        assert_eq!(
            kms::verify_response(&ctx, &resp),
            Err(KmsError::CmidEcho),
            "{v}"
        );

        let mut other = sample_request(v);
        other.request_time = FileTime(other.request_time.0 + 1);
        let decoded = kms::decode_request(&kms::encode_request(&other, REQUEST_IV).0).unwrap();
        let resp = kms::encode_response(&decoded, &fields(), [0; 8], &RANDOMNESS).unwrap();
        assert_eq!(
            kms::verify_response(&ctx, &resp),
            Err(KmsError::TimeEcho),
            "{v}"
        );
    }

    // v5/v6: a response answering a request with another IV fails the hash check.
    for v in [ProtocolVersion::V5, ProtocolVersion::V6] {
        let (_, ctx) = kms::encode_request(&sample_request(v), [0x22; 16]);
        let (_, resp) = exchange(v);
        let err = kms::verify_response(&ctx, &resp).unwrap_err();
        let expected = if v == ProtocolVersion::V5 {
            KmsError::IvNotEchoed
        } else {
            KmsError::BadHash
        };
        assert_eq!(err, expected, "{v}");
    }
}
