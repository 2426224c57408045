//! Fuzz target: the KMS message decoders of `kms_wire::kms` on arbitrary bytes — the host's
//! `decode_request` and the client's `verify_response` for v4, v5 and v6 request contexts.

#![no_main]

use std::sync::OnceLock;

use kms_wire::kms::{
    ActivationRequest, ClientContext, ProtocolVersion, decode_request, encode_request,
    verify_response,
};
use kms_wire::{FileTime, Guid};
use libfuzzer_sys::fuzz_target;

fn request(version: ProtocolVersion) -> ActivationRequest {
    let g = |s: &str| s.parse::<Guid>().unwrap_or_default();
    let mut req = ActivationRequest {
        version,
        is_client_vm: 0,
        license_status: 2,
        binding_expiration: 43200,
        application_id: g("55c92734-d682-4d71-983e-d6ec3f16059f"),
        sku_id: g("73111121-5638-40f6-bc11-f1d7b0d64300"),
        kms_counted_id: g("58e2134f-8e11-4d17-9cb2-91069c151148"),
        client_machine_id: g("d00dfeed-aaaa-4bbb-9ccc-dddddddddddd"),
        required_client_count: 25,
        request_time: FileTime::from_unix_secs(1_704_164_645),
        previous_client_machine_id: Guid::NIL,
        workstation_name: String::new(),
        workstation_field: [0; 128],
    };
    req.set_workstation_name("fuzz");
    req
}

/// One client context per protocol version, built once (key schedules are not free).
fn contexts() -> &'static [ClientContext; 3] {
    static CTX: OnceLock<[ClientContext; 3]> = OnceLock::new();
    CTX.get_or_init(|| {
        [
            ProtocolVersion::V4,
            ProtocolVersion::V5,
            ProtocolVersion::V6,
        ]
        .map(|v| encode_request(&request(v), [0x5a; 16]).1)
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = decode_request(data);
    for ctx in contexts() {
        let _ = verify_response(ctx, data);
    }
});
