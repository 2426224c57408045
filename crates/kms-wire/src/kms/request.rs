//! The 236-byte plaintext base request (PROTOCOL.md §5.3).

use crate::{FileTime, Guid};

use super::wire::{array, guid_at, u32_at, u64_at};
use super::{BASE_REQUEST_LEN, KmsError, ProtocolVersion};

/// Size of the workstation-name field: 64 UTF-16 code units (63 characters + NUL).
pub const WORKSTATION_FIELD_LEN: usize = 128;

/// The decoded base request (§5.3), as sent by a client.
///
/// `workstation_field` holds the 128 bytes exactly as sent (bytes after the NUL are
/// unspecified on the wire) and is what [`ActivationRequest::encode_base`] writes, so a decoded
/// request re-encodes byte for byte; `workstation_name` is its decoded text (UTF-16LE up to the
/// first NUL, invalid code units replaced by U+FFFD). Use
/// [`ActivationRequest::set_workstation_name`] to change both consistently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationRequest {
    /// Protocol version (the inner version word; equal to the message version).
    pub version: ProtocolVersion,
    /// 0 physical machine, 1 virtual machine (raw value; informative).
    pub is_client_vm: u32,
    /// Client license status 0 … 6 (raw value; informative).
    pub license_status: u32,
    /// Minutes remaining in the current license state (raw value; informative).
    pub binding_expiration: u32,
    /// Application id (Windows, Office 2010, Office 2013+).
    pub application_id: Guid,
    /// SKU (activation) id of the client edition.
    pub sku_id: Guid,
    /// KMS counted id: the product group the client belongs to.
    pub kms_counted_id: Guid,
    /// Client machine id (CMID).
    pub client_machine_id: Guid,
    /// The client's activation threshold N.
    pub required_client_count: u32,
    /// The client's UTC time at the request.
    pub request_time: FileTime,
    /// The previous CMID, or all zero.
    pub previous_client_machine_id: Guid,
    /// Workstation name decoded from `workstation_field` (untrusted text).
    pub workstation_name: String,
    /// The raw 128-byte workstation-name field (UTF-16LE) as sent.
    pub workstation_field: [u8; WORKSTATION_FIELD_LEN],
}

/// Offsets in the base request.
mod off {
    pub const VERSION: usize = 0;
    pub const IS_CLIENT_VM: usize = 4;
    pub const LICENSE_STATUS: usize = 8;
    pub const BINDING_EXPIRATION: usize = 12;
    pub const APPLICATION_ID: usize = 16;
    pub const SKU_ID: usize = 32;
    pub const KMS_COUNTED_ID: usize = 48;
    pub const CMID: usize = 64;
    pub const REQUIRED_CLIENT_COUNT: usize = 80;
    pub const REQUEST_TIME: usize = 84;
    pub const PREVIOUS_CMID: usize = 92;
    pub const WORKSTATION: usize = 108;
}

impl ActivationRequest {
    /// Decode a base request. `base` must be exactly [`BASE_REQUEST_LEN`] bytes and start with
    /// a supported version.
    pub fn decode_base(base: &[u8]) -> Result<ActivationRequest, KmsError> {
        if base.len() != BASE_REQUEST_LEN {
            return Err(KmsError::BadLength {
                len: base.len(),
                expected: BASE_REQUEST_LEN,
            });
        }
        let raw_version = u32_at(base, off::VERSION)?;
        let version = ProtocolVersion::from_u32(raw_version).ok_or(KmsError::BadVersion {
            major: (raw_version >> 16) as u16,
            minor: raw_version as u16,
        })?;
        let workstation_field: [u8; WORKSTATION_FIELD_LEN] = array(base, off::WORKSTATION)?;
        Ok(ActivationRequest {
            version,
            is_client_vm: u32_at(base, off::IS_CLIENT_VM)?,
            license_status: u32_at(base, off::LICENSE_STATUS)?,
            binding_expiration: u32_at(base, off::BINDING_EXPIRATION)?,
            application_id: guid_at(base, off::APPLICATION_ID)?,
            sku_id: guid_at(base, off::SKU_ID)?,
            kms_counted_id: guid_at(base, off::KMS_COUNTED_ID)?,
            client_machine_id: guid_at(base, off::CMID)?,
            required_client_count: u32_at(base, off::REQUIRED_CLIENT_COUNT)?,
            request_time: FileTime(u64_at(base, off::REQUEST_TIME)?),
            previous_client_machine_id: guid_at(base, off::PREVIOUS_CMID)?,
            workstation_name: decode_workstation(&workstation_field),
            workstation_field,
        })
    }

    /// Encode the 236-byte base request (the workstation name is taken from
    /// `workstation_field`).
    pub fn encode_base(&self) -> [u8; BASE_REQUEST_LEN] {
        let mut b = [0u8; BASE_REQUEST_LEN];
        let mut put = |off: usize, bytes: &[u8]| {
            if let Some(dst) = b.get_mut(off..off + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        };
        put(off::VERSION, &self.version.wire_bytes());
        put(off::IS_CLIENT_VM, &self.is_client_vm.to_le_bytes());
        put(off::LICENSE_STATUS, &self.license_status.to_le_bytes());
        put(
            off::BINDING_EXPIRATION,
            &self.binding_expiration.to_le_bytes(),
        );
        put(off::APPLICATION_ID, &self.application_id.to_wire());
        put(off::SKU_ID, &self.sku_id.to_wire());
        put(off::KMS_COUNTED_ID, &self.kms_counted_id.to_wire());
        put(off::CMID, &self.client_machine_id.to_wire());
        put(
            off::REQUIRED_CLIENT_COUNT,
            &self.required_client_count.to_le_bytes(),
        );
        put(off::REQUEST_TIME, &self.request_time.0.to_le_bytes());
        put(
            off::PREVIOUS_CMID,
            &self.previous_client_machine_id.to_wire(),
        );
        put(off::WORKSTATION, &self.workstation_field);
        b
    }

    /// Set `workstation_name` and `workstation_field` together: the name is truncated to 63
    /// UTF-16 code units (never splitting a surrogate pair), NUL-terminated and zero-filled.
    pub fn set_workstation_name(&mut self, name: &str) {
        self.workstation_field = workstation_field_from_name(name);
        self.workstation_name = decode_workstation(&self.workstation_field);
    }
}

/// Encode a workstation name as the 128-byte field (see
/// [`ActivationRequest::set_workstation_name`]).
fn workstation_field_from_name(name: &str) -> [u8; WORKSTATION_FIELD_LEN] {
    let mut field = [0u8; WORKSTATION_FIELD_LEN];
    let max_units = WORKSTATION_FIELD_LEN / 2 - 1;
    let mut used = 0;
    let mut buf = [0u16; 2];
    for c in name.chars() {
        let units = c.encode_utf16(&mut buf);
        if c == '\0' || used + units.len() > max_units {
            break;
        }
        for u in units.iter() {
            if let Some(dst) = field.get_mut(2 * used..2 * used + 2) {
                dst.copy_from_slice(&u.to_le_bytes());
            }
            used += 1;
        }
    }
    field
}

/// UTF-16LE up to the first NUL code unit (or the whole field), lossy.
fn decode_workstation(field: &[u8; WORKSTATION_FIELD_LEN]) -> String {
    let units = field
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0);
    char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ActivationRequest {
        let mut r = ActivationRequest {
            version: ProtocolVersion::V6,
            is_client_vm: 1,
            license_status: 2,
            binding_expiration: 43200,
            application_id: "55c92734-d682-4d71-983e-d6ec3f16059f".parse().unwrap(),
            sku_id: Guid([1; 16]),
            kms_counted_id: Guid([2; 16]),
            client_machine_id: Guid([3; 16]),
            required_client_count: 25,
            request_time: FileTime(133_486_382_450_000_000),
            previous_client_machine_id: Guid::NIL,
            workstation_name: String::new(),
            workstation_field: [0; WORKSTATION_FIELD_LEN],
        };
        r.set_workstation_name("host.example");
        r
    }

    #[test]
    fn base_round_trip() {
        let r = sample();
        let b = r.encode_base();
        assert_eq!(&b[0..4], &[0, 0, 6, 0]);
        assert_eq!(ActivationRequest::decode_base(&b).unwrap(), r);
        assert_eq!(r.workstation_name, "host.example");
    }

    #[test]
    fn workstation_truncation_and_garbage() {
        let mut r = sample();
        r.set_workstation_name(&"é".repeat(100));
        assert_eq!(r.workstation_name.chars().count(), 63);
        assert_eq!(&r.workstation_field[126..], &[0, 0]);
        // A pair that would straddle the limit is dropped entirely.
        r.set_workstation_name(&format!("{}\u{1F600}", "a".repeat(62)));
        assert_eq!(r.workstation_name, "a".repeat(62));
        // No NUL at all and an unpaired surrogate: decoded lossily, kept raw.
        let mut b = r.encode_base();
        for x in b[108..].iter_mut() {
            *x = 0xD8;
        }
        let d = ActivationRequest::decode_base(&b).unwrap();
        assert_eq!(d.workstation_field, [0xD8; 128]);
        assert!(d.workstation_name.contains('\u{FFFD}'));
        assert_eq!(d.encode_base(), b);
    }

    #[test]
    fn rejects_wrong_length_and_version() {
        let b = sample().encode_base();
        assert!(matches!(
            ActivationRequest::decode_base(&b[..235]),
            Err(KmsError::BadLength { .. })
        ));
        let mut b2 = b;
        b2[2] = 7;
        assert_eq!(
            ActivationRequest::decode_base(&b2),
            Err(KmsError::BadVersion { major: 7, minor: 0 })
        );
    }
}
