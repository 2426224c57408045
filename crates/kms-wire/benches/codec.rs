//! Codec + crypto cost of one KMS exchange, using the deterministic messages of
//! `testdata/kms-vectors/crypto.json`:
//!
//! * `host/v4|v5|v6`: `decode_request` → `encode_response` (what a host does per request);
//! * `client/v6_verify`: `verify_response` of the v6 response (what a client does);
//! * `primitives/*`: single blocks, V4MAC over a base request, the v6 HMAC key.
//!
//! Run: `cargo bench -p kms-wire --bench codec -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use kms_wire::crypto::{self, V5_CIPHER, V6_CIPHER};
use kms_wire::kms::{self, ProtocolVersion, ResponseFields, ResponseRandomness};
use serde_json::Value;

fn vectors() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/kms-vectors/crypto.json");
    let text = std::fs::read_to_string(&path).expect("reading crypto.json");
    serde_json::from_str(&text).expect("parsing crypto.json")
}

fn hex_field(v: &Value, key: &str) -> Vec<u8> {
    hex::decode(v[key].as_str().expect(key)).expect(key)
}

fn block(v: &Value, key: &str) -> [u8; 16] {
    hex_field(v, key).try_into().expect(key)
}

fn bench_host(c: &mut Criterion) {
    let v = vectors();
    let mut group = c.benchmark_group("host");
    for name in ["v4", "v5", "v6"] {
        let m = &v["kms_messages"][name];
        let request = hex_field(m, "request_message");
        let epid = m["response_base_fields"]["epid"]
            .as_str()
            .unwrap()
            .to_owned();
        let (randomness, hwid) = if name == "v4" {
            (
                ResponseRandomness {
                    random: [0; 16],
                    v6_response_iv: [0; 16],
                },
                [0u8; 8],
            )
        } else {
            let hwid = if name == "v6" {
                hex_field(m, "hwid").try_into().unwrap()
            } else {
                [0u8; 8]
            };
            (
                ResponseRandomness {
                    random: block(m, "random"),
                    v6_response_iv: block(m, "response_iv"),
                },
                hwid,
            )
        };
        let expected = hex_field(m, "response_message");
        let fields = ResponseFields {
            epid: &epid,
            current_count: 50,
            activation_interval: 120,
            renewal_interval: 10080,
        };
        // Sanity: the benchmarked path produces the vector.
        let decoded = kms::decode_request(&request).unwrap();
        assert_eq!(
            kms::encode_response(&decoded, &fields, hwid, &randomness).unwrap(),
            expected
        );
        group.bench_function(name, |b| {
            b.iter(|| {
                let decoded = kms::decode_request(black_box(&request)).unwrap();
                kms::encode_response(&decoded, black_box(&fields), hwid, &randomness).unwrap()
            })
        });
    }
    group.finish();
}

fn bench_client(c: &mut Criterion) {
    let v = vectors();
    let m = &v["kms_messages"]["v6"];
    let request = hex_field(m, "request_message");
    let response = hex_field(m, "response_message");
    let decoded = kms::decode_request(&request).unwrap();
    assert_eq!(decoded.version(), ProtocolVersion::V6);
    let (_, ctx) = kms::encode_request(&decoded.request, block(m, "request_iv"));
    kms::verify_response(&ctx, &response).unwrap();
    let mut group = c.benchmark_group("client");
    group.bench_function("v6_encode_request", |b| {
        b.iter(|| kms::encode_request(black_box(&decoded.request), [7; 16]))
    });
    group.bench_function("v6_verify", |b| {
        b.iter(|| kms::verify_response(black_box(&ctx), black_box(&response)).unwrap())
    });
    group.finish();
}

fn bench_primitives(c: &mut Criterion) {
    let mut group = c.benchmark_group("primitives");
    let mut blk = [0x5Au8; 16];
    group.bench_function("aes128_encrypt_block", |b| {
        b.iter(|| V5_CIPHER.encrypt_block(black_box(&mut blk)))
    });
    group.bench_function("aes128_v6_decrypt_block", |b| {
        b.iter(|| V6_CIPHER.decrypt_block(black_box(&mut blk)))
    });
    // CBC over a request-sized buffer: on the AES instructions where the CPU has them.
    let mut buf = [0x3Cu8; 256];
    group.bench_function("aes128_v6_cbc_encrypt_256_bytes", |b| {
        b.iter(|| V6_CIPHER.cbc_encrypt(&[7; 16], black_box(&mut buf)))
    });
    group.bench_function("aes128_v6_cbc_decrypt_256_bytes", |b| {
        b.iter(|| V6_CIPHER.cbc_decrypt(&[7; 16], black_box(&mut buf)))
    });
    let base = [0x33u8; 236];
    group.bench_function("v4_mac_236_bytes", |b| {
        b.iter(|| crypto::v4_mac(black_box(&base)))
    });
    group.bench_function("v6_hmac_key", |b| {
        b.iter(|| crypto::v6_hmac_key(black_box(133_486_382_450_000_000)))
    });
    group.finish();
}

criterion_group!(benches, bench_host, bench_client, bench_primitives);
criterion_main!(benches);
