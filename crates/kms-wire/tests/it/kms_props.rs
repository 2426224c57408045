//! Property tests: request encode → host decode and response encode → client verify round
//! trips for arbitrary field values, ePID format round trips, and "never panics" on arbitrary
//! bytes.

use kms_wire::kms::{self, ActivationRequest, ProtocolVersion, ResponseFields, ResponseRandomness};
use kms_wire::{Epid, FileTime, Guid};
use proptest::prelude::*;

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![
        Just(ProtocolVersion::V4),
        Just(ProtocolVersion::V5),
        Just(ProtocolVersion::V6),
    ]
}

fn guid() -> impl Strategy<Value = Guid> {
    any::<[u8; 16]>().prop_map(Guid)
}

prop_compose! {
    fn request()(
        version in version(),
        is_client_vm in any::<u32>(),
        license_status in any::<u32>(),
        binding_expiration in any::<u32>(),
        application_id in guid(),
        sku_id in guid(),
        kms_counted_id in guid(),
        client_machine_id in guid(),
        required_client_count in any::<u32>(),
        request_time in any::<u64>(),
        previous_client_machine_id in guid(),
        field in proptest::collection::vec(any::<u8>(), 128),
        name in proptest::option::of("[a-zA-Z0-9.\\-\u{e9}\u{4e2d}\u{1F600}]{0,70}"),
    ) -> ActivationRequest {
        let mut r = ActivationRequest {
            version,
            is_client_vm,
            license_status,
            binding_expiration,
            application_id,
            sku_id,
            kms_counted_id,
            client_machine_id,
            required_client_count,
            request_time: FileTime(request_time),
            previous_client_machine_id,
            workstation_name: String::new(),
            workstation_field: field.try_into().unwrap(),
        };
        match name {
            // A clean name, as a well-behaved client sends it.
            Some(n) => r.set_workstation_name(&n),
            // Arbitrary field bytes (garbage after the NUL, unpaired surrogates, no NUL):
            // the decoded name is whatever the field says.
            None => r = ActivationRequest::decode_base(&r.encode_base()).unwrap(),
        }
        r
    }
}

/// ePID-like text: up to 31 arbitrary non-NUL characters (≤ 62 UTF-16 units) or up to 63
/// ASCII characters.
fn epid_text() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 0..=31)
            .prop_map(|v| v.into_iter().collect::<String>()),
        "[ -~]{0,63}",
    ]
}

prop_compose! {
    fn epid()(
        platform_id in 0u32..=99_999,
        group_id in 0u32..=99_999,
        key_id in 0u64..=999_999_999,
        lcid in 1u32..=99_999,
        build in 1u32..,
        day_of_year in 0u16..=366,
        year in 0u16..=9999,
    ) -> Epid {
        Epid { platform_id, group_id, key_id, lcid, build, day_of_year, year }
    }
}

proptest! {
    #[test]
    fn request_round_trip(req in request(), iv in any::<[u8; 16]>()) {
        let (msg, ctx) = kms::encode_request(&req, iv);
        prop_assert_eq!(msg.len(), req.version.request_len());
        prop_assert_eq!(ctx.version(), req.version);
        let decoded = kms::decode_request(&msg).unwrap();
        prop_assert_eq!(&decoded.request, &req);
        prop_assert_eq!(decoded.request_iv(), ctx.request_iv());
        // Re-encoding the decoded request gives the same bytes.
        prop_assert_eq!(kms::encode_request(&decoded.request, iv).0, msg);
    }

    #[test]
    fn response_round_trip(
        req in request(),
        iv in any::<[u8; 16]>(),
        epid in epid_text(),
        current_count in any::<u32>(),
        activation_interval in any::<u32>(),
        renewal_interval in any::<u32>(),
        hwid in any::<[u8; 8]>(),
        random in any::<[u8; 16]>(),
        v6_response_iv in any::<[u8; 16]>(),
        reuse_iv in any::<bool>(),
    ) {
        let (msg, ctx) = kms::encode_request(&req, iv);
        let decoded = kms::decode_request(&msg).unwrap();
        let fields = ResponseFields { epid: &epid, current_count, activation_interval, renewal_interval };
        // Also exercise the "response IV equals request IV" correction.
        let v6_response_iv = if reuse_iv { iv } else { v6_response_iv };
        let randomness = ResponseRandomness { random, v6_response_iv };
        let resp = kms::encode_response(&decoded, &fields, hwid, &randomness).unwrap();
        let verified = kms::verify_response(&ctx, &resp).unwrap();
        let r = &verified.response;
        prop_assert_eq!(r.version, req.version);
        prop_assert_eq!(&r.epid, &epid);
        prop_assert_eq!(r.client_machine_id, req.client_machine_id);
        prop_assert_eq!(r.response_time, req.request_time);
        prop_assert_eq!(r.current_count, current_count);
        prop_assert_eq!(r.activation_interval, activation_interval);
        prop_assert_eq!(r.renewal_interval, renewal_interval);
        match req.version {
            ProtocolVersion::V4 => {
                prop_assert_eq!(verified.hwid, None);
                prop_assert_eq!(resp.len(), 60 + 2 * (epid.encode_utf16().count() + 1));
            }
            ProtocolVersion::V5 => {
                prop_assert_eq!(verified.hwid, None);
                prop_assert_eq!(verified.random, Some(random));
                prop_assert_eq!(&resp[4..20], &iv[..]);
            }
            ProtocolVersion::V6 => {
                prop_assert_eq!(verified.hwid, Some(hwid));
                prop_assert_eq!(verified.random, Some(random));
                prop_assert_ne!(&resp[4..20], &iv[..]);
            }
        }
    }

    #[test]
    fn decode_request_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = kms::decode_request(&bytes);
    }

    #[test]
    fn decode_request_with_valid_version_never_panics(
        v in version(),
        rest in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut bytes = v.wire_bytes().to_vec();
        bytes.extend_from_slice(&rest);
        if let Err(e) = kms::decode_request(&bytes) {
            prop_assert_eq!(e.hresult().0, 0x8007_000D);
        }
    }

    #[test]
    fn verify_response_never_panics(
        req in request(),
        iv in any::<[u8; 16]>(),
        rest in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let (_, ctx) = kms::encode_request(&req, iv);
        let mut bytes = req.version.wire_bytes().to_vec();
        bytes.extend_from_slice(&rest);
        prop_assert!(kms::verify_response(&ctx, &bytes).is_err());
        let _ = kms::verify_response(&ctx, &rest);
    }

    #[test]
    fn epid_display_parse_round_trip(e in epid()) {
        prop_assert!(e.validate().is_ok());
        let s = e.to_string();
        prop_assert!(Epid::validate_wire(&s).is_ok());
        prop_assert_eq!(s.parse::<Epid>().unwrap(), e);
    }

    #[test]
    fn epid_parse_never_panics(s in "\\PC{0,80}") {
        if let Ok(e) = s.parse::<Epid>() {
            prop_assert_eq!(e.to_string(), s);
        }
    }
}
