//! The variable-length plaintext base response (PROTOCOL.md §5.6).

use crate::epid::{Epid, EpidError};
use crate::{FileTime, Guid};

use super::wire::{bytes, guid_at, u32_at, u64_at};
use super::{KmsError, ProtocolVersion};

/// Largest ePID field on the wire in bytes, NUL included (63 characters).
pub const MAX_EPID_BYTES: usize = 128;

/// Fixed part of the base response besides the ePID: version 4 + size 4 + CMID 16 + time 8 +
/// count 4 + two intervals 8.
pub(crate) const BASE_RESPONSE_FIXED_LEN: usize = 44;

/// The decoded base response (§5.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationResponse {
    /// Protocol version (= the request's).
    pub version: ProtocolVersion,
    /// The host's ePID (any string of ≤ 63 characters without NUL; normally an [`Epid`]).
    pub epid: String,
    /// The client machine id (echo of the request's).
    pub client_machine_id: Guid,
    /// The response time (echo of the request time).
    pub response_time: FileTime,
    /// The activated-client count reported to the client.
    pub current_count: u32,
    /// Minutes an un-activated client waits before retrying.
    pub activation_interval: u32,
    /// Minutes between renewal attempts of an activated client.
    pub renewal_interval: u32,
}

/// Check an ePID for the wire and return its length in UTF-16 code units (without NUL).
pub(crate) fn epid_units(epid: &str) -> Result<usize, KmsError> {
    match Epid::validate_wire(epid) {
        Ok(()) => Ok(epid.encode_utf16().count()),
        Err(EpidError::TooLong { units }) => Err(KmsError::EpidTooLong {
            bytes: 2 * (units + 1),
        }),
        Err(_) => Err(KmsError::EpidMalformed("embedded NUL")),
    }
}

/// Append a base response to `out`. `epid` must already have passed [`epid_units`], which
/// returned `units`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_base(
    out: &mut Vec<u8>,
    version: ProtocolVersion,
    epid: &str,
    units: usize,
    cmid: Guid,
    time: FileTime,
    count: u32,
    activation_interval: u32,
    renewal_interval: u32,
) {
    out.extend_from_slice(&version.wire_bytes());
    // units ≤ 63 (checked by epid_units), so the size fits easily.
    let size = 2 * (units + 1);
    out.extend_from_slice(&u32::try_from(size).unwrap_or(u32::MAX).to_le_bytes());
    for u in epid.encode_utf16() {
        out.extend_from_slice(&u.to_le_bytes());
    }
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&cmid.to_wire());
    out.extend_from_slice(&time.0.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&activation_interval.to_le_bytes());
    out.extend_from_slice(&renewal_interval.to_le_bytes());
}

impl ActivationResponse {
    /// Length of the encoded base response: 44 + ePID bytes.
    pub fn encoded_len(&self) -> usize {
        BASE_RESPONSE_FIXED_LEN + 2 * (self.epid.encode_utf16().count() + 1)
    }

    /// Encode the base response. Fails if the ePID is longer than 63 UTF-16 code units or
    /// contains a NUL.
    pub fn encode_base(&self) -> Result<Vec<u8>, KmsError> {
        let units = epid_units(&self.epid)?;
        let mut out = Vec::with_capacity(BASE_RESPONSE_FIXED_LEN + 2 * (units + 1));
        write_base(
            &mut out,
            self.version,
            &self.epid,
            units,
            self.client_machine_id,
            self.response_time,
            self.current_count,
            self.activation_interval,
            self.renewal_interval,
        );
        Ok(out)
    }

    /// Decode a base response from the start of `b`; returns it and the number of bytes it
    /// occupies (44 + P). Trailing bytes are left to the caller. Checks the ePID rules of
    /// §5.6: size ≤ 128, even, non-zero, NUL-terminated, no embedded NUL. The ePID text is
    /// decoded lossily (unpaired surrogates become U+FFFD).
    pub fn decode_base(b: &[u8]) -> Result<(ActivationResponse, usize), KmsError> {
        let raw_version = u32_at(b, 0)?;
        let version = ProtocolVersion::from_u32(raw_version).ok_or(KmsError::BadVersion {
            major: (raw_version >> 16) as u16,
            minor: raw_version as u16,
        })?;
        let size = usize::try_from(u32_at(b, 4)?).unwrap_or(usize::MAX);
        if size > MAX_EPID_BYTES {
            return Err(KmsError::EpidTooLong { bytes: size });
        }
        if size == 0 || !size.is_multiple_of(2) {
            return Err(KmsError::EpidMalformed("size is zero or odd"));
        }
        let total = BASE_RESPONSE_FIXED_LEN + size;
        if b.len() < total {
            return Err(KmsError::TooShort {
                len: b.len(),
                need: total,
            });
        }
        let raw = bytes(b, 8, size)?;
        let mut units = raw
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]));
        let n = size / 2 - 1;
        let text: Vec<u16> = units.by_ref().take(n).collect();
        if units.next() != Some(0) {
            return Err(KmsError::EpidMalformed("not NUL-terminated"));
        }
        if text.contains(&0) {
            return Err(KmsError::EpidMalformed("embedded NUL"));
        }
        let epid = char::decode_utf16(text)
            .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect();
        let p = 8 + size;
        Ok((
            ActivationResponse {
                version,
                epid,
                client_machine_id: guid_at(b, p)?,
                response_time: FileTime(u64_at(b, p + 16)?),
                current_count: u32_at(b, p + 24)?,
                activation_interval: u32_at(b, p + 28)?,
                renewal_interval: u32_at(b, p + 32)?,
            },
            total,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ActivationResponse {
        ActivationResponse {
            version: ProtocolVersion::V5,
            epid: "03612-00206-568-381813-03-1033-17763.0000-2702018".into(),
            client_machine_id: Guid([9; 16]),
            response_time: FileTime(1),
            current_count: 50,
            activation_interval: 120,
            renewal_interval: 10080,
        }
    }

    #[test]
    fn round_trip() {
        let r = sample();
        let mut b = r.encode_base().unwrap();
        assert_eq!(b.len(), 144);
        assert_eq!(r.encoded_len(), 144);
        b.extend_from_slice(&[1, 2, 3]);
        assert_eq!(ActivationResponse::decode_base(&b).unwrap(), (r, 144));
    }

    #[test]
    fn epid_rules() {
        let mut r = sample();
        r.epid = "x".repeat(64);
        assert_eq!(r.encode_base(), Err(KmsError::EpidTooLong { bytes: 130 }));
        r.epid = "a\0b".into();
        assert!(matches!(r.encode_base(), Err(KmsError::EpidMalformed(_))));
        r.epid = String::new();
        let b = r.encode_base().unwrap();
        assert_eq!(ActivationResponse::decode_base(&b).unwrap().0, r);

        let good = sample().encode_base().unwrap();
        let mut bad = good.clone();
        bad[4] = 101; // odd
        assert!(matches!(
            ActivationResponse::decode_base(&bad),
            Err(KmsError::EpidMalformed(_))
        ));
        bad[4] = 130;
        assert!(matches!(
            ActivationResponse::decode_base(&bad),
            Err(KmsError::EpidTooLong { .. })
        ));
        let mut bad = good.clone();
        bad[8 + 98] = b'x'; // overwrite the terminating NUL
        assert!(matches!(
            ActivationResponse::decode_base(&bad),
            Err(KmsError::EpidMalformed(_))
        ));
        let mut bad = good.clone();
        bad[8 + 10] = 0;
        bad[8 + 11] = 0;
        assert!(matches!(
            ActivationResponse::decode_base(&bad),
            Err(KmsError::EpidMalformed(_))
        ));
        assert!(matches!(
            ActivationResponse::decode_base(&good[..good.len() - 1]),
            Err(KmsError::TooShort { .. })
        ));
    }
}
