//! Host side: decode and validate a request message (PROTOCOL.md §7), build the response
//! message (§5.7–§5.9, §6.5).

use subtle::ConstantTimeEq;

use crate::crypto::{self, Aes128, V5_CIPHER, V6_CIPHER};

use super::request::ActivationRequest;
use super::response::{BASE_RESPONSE_FIXED_LEN, epid_units, write_base};
use super::wire::{array, bytes, xor16};
use super::{BASE_REQUEST_LEN, KmsError, ProtocolVersion};

/// The cipher of an encrypted version (v5: standard AES-128, v6: modified AES-128).
pub(crate) fn cipher_for(version: ProtocolVersion) -> &'static Aes128 {
    match version {
        ProtocolVersion::V6 => &V6_CIPHER,
        ProtocolVersion::V4 | ProtocolVersion::V5 => &V5_CIPHER,
    }
}

/// A validated request plus what the host needs to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRequest {
    /// The decoded base request.
    pub request: ActivationRequest,
    /// IV_req (v5/v6; zero for v4).
    iv: [u8; 16],
    /// D_K(IV_req) (v5/v6; zero for v4).
    decrypted_iv: [u8; 16],
}

impl DecodedRequest {
    /// The protocol version of the request (and of the response to build).
    pub fn version(&self) -> ProtocolVersion {
        self.request.version
    }

    /// IV_req, for v5/v6 requests.
    pub fn request_iv(&self) -> Option<[u8; 16]> {
        (self.version() != ProtocolVersion::V4).then_some(self.iv)
    }

    /// D_K(IV_req), the single-block decryption of the request IV, for v5/v6 requests.
    pub fn decrypted_request_iv(&self) -> Option<[u8; 16]> {
        (self.version() != ProtocolVersion::V4).then_some(self.decrypted_iv)
    }
}

/// What the host decided to answer (the rest of the response is echoed from the request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseFields<'a> {
    /// The host ePID string (≤ 63 characters, no NUL).
    pub epid: &'a str,
    /// The activated-client count to report.
    pub current_count: u32,
    /// Activation retry interval in minutes.
    pub activation_interval: u32,
    /// Renewal interval in minutes.
    pub renewal_interval: u32,
}

/// Fresh random values for one response, drawn by the caller from a CSPRNG **in this order**
/// (matching `server-deterministic.json`): `random`, then `v6_response_iv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseRandomness {
    /// R: 16 random bytes for the RandomXor/Hash fields (v5, v6; unused by v4).
    pub random: [u8; 16],
    /// IV_resp for v6 responses (unused by v4/v5, whose response IV is the request IV).
    pub v6_response_iv: [u8; 16],
}

/// Decode a KMS request message (the contents of the NDR byte array), checking in the order
/// of §7: (1) length ≥ 4 and a supported version 4.0/5.0/6.0; (2) length ≥ 252 (v4) or 260
/// (v5/v6), excess bytes ignored; (3) v4: the MAC; v5/v6: CBC decryption, PKCS#7 padding and
/// a plaintext of exactly 236 bytes; (4) the inner version equals the outer one.
pub fn decode_request(msg: &[u8]) -> Result<DecodedRequest, KmsError> {
    let head: [u8; 4] = array(msg, 0)?;
    let raw_version = u32::from_le_bytes(head);
    let version = ProtocolVersion::from_u32(raw_version).ok_or(KmsError::BadVersion {
        major: (raw_version >> 16) as u16,
        minor: raw_version as u16,
    })?;
    let need = version.request_len();
    if msg.len() < need {
        return Err(KmsError::TooShort {
            len: msg.len(),
            need,
        });
    }

    let mut iv = [0u8; 16];
    let mut decrypted_iv = [0u8; 16];
    let mut plain = [0u8; 240];
    let base: &[u8] = match version {
        ProtocolVersion::V4 => {
            let base = bytes(msg, 0, BASE_REQUEST_LEN)?;
            let mac: [u8; 16] = array(msg, BASE_REQUEST_LEN)?;
            if !bool::from(crypto::v4_mac(base).ct_eq(&mac)) {
                return Err(KmsError::BadMac);
            }
            base
        }
        ProtocolVersion::V5 | ProtocolVersion::V6 => {
            let cipher = cipher_for(version);
            iv = array(msg, 4)?;
            plain.copy_from_slice(bytes(msg, 20, 240)?);
            cipher
                .cbc_decrypt(&iv, &mut plain)
                .map_err(|_| KmsError::BadPadding)?;
            let unpadded = crypto::pkcs7_unpad(&plain).map_err(|_| KmsError::BadPadding)?;
            if unpadded.len() != BASE_REQUEST_LEN {
                return Err(KmsError::BadLength {
                    len: unpadded.len(),
                    expected: BASE_REQUEST_LEN,
                });
            }
            decrypted_iv = cipher.decrypt_copy(&iv);
            unpadded
        }
    };

    let inner = u32::from_le_bytes(array(base, 0)?);
    if inner != raw_version {
        return Err(KmsError::VersionMismatch {
            outer: version,
            inner,
        });
    }
    Ok(DecodedRequest {
        request: ActivationRequest::decode_base(base)?,
        iv,
        decrypted_iv,
    })
}

/// Build the response message for a decoded request (§5.7–§5.9, §6.5).
///
/// The version, client machine id and response time (= request time) are echoed from `req`;
/// `hwid` is used by v6 only; `randomness.random` by v5/v6 and `randomness.v6_response_iv`
/// by v6 only.
///
/// v6 response IV: it must differ from the request IV (§5.9). With a real CSPRNG equality has
/// probability 2⁻¹²⁸, so it only happens with broken or misused randomness; in that case the
/// lowest bit of the last byte of the given IV is flipped, so the response stays valid and
/// deterministic for a given input.
///
/// Fails only if `resp.epid` is longer than 63 UTF-16 code units or contains a NUL.
pub fn encode_response(
    req: &DecodedRequest,
    resp: &ResponseFields<'_>,
    hwid: [u8; 8],
    randomness: &ResponseRandomness,
) -> Result<Vec<u8>, KmsError> {
    let version = req.version();
    let units = epid_units(resp.epid)?;
    let base_len = BASE_RESPONSE_FIXED_LEN + 2 * (units + 1);
    let r = &req.request;

    // Worst case v6: 20 header + base + 88 trailer + 16 padding.
    let mut out = Vec::with_capacity(20 + base_len + 88 + 16);
    if version != ProtocolVersion::V4 {
        out.extend_from_slice(&version.wire_bytes());
        out.extend_from_slice(&[0u8; 16]); // IV, filled below
    }
    write_base(
        &mut out,
        version,
        resp.epid,
        units,
        r.client_machine_id,
        r.request_time,
        resp.current_count,
        resp.activation_interval,
        resp.renewal_interval,
    );

    match version {
        ProtocolVersion::V4 => {
            let mac = crypto::v4_mac(&out);
            out.extend_from_slice(&mac);
            return Ok(out);
        }
        ProtocolVersion::V5 | ProtocolVersion::V6 => {}
    }

    let cipher = cipher_for(version);
    let random_xor = xor16(&randomness.random, &req.decrypted_iv);
    out.extend_from_slice(&random_xor);
    out.extend_from_slice(&crypto::sha256(&randomness.random));

    let response_iv = if version == ProtocolVersion::V6 {
        let mut iv = randomness.v6_response_iv;
        if iv == req.iv {
            iv[15] ^= 1;
        }
        out.extend_from_slice(&hwid);
        out.extend_from_slice(&req.decrypted_iv);
        let key = crypto::v6_hmac_key(r.request_time.0);
        let first_block = cipher.decrypt_copy(&iv);
        let hmac = crypto::v6_hmac(&key, &[&first_block, out.get(20..).unwrap_or_default()]);
        out.extend_from_slice(&hmac);
        iv
    } else {
        req.iv
    };

    if let Some(dst) = out.get_mut(4..20) {
        dst.copy_from_slice(&response_iv);
    }
    let body_len = out.len() - 20;
    let pad = crypto::pkcs7_pad_len(body_len);
    out.resize(out.len() + pad, pad as u8);
    if let Some(body) = out.get_mut(20..) {
        cipher
            .cbc_encrypt(&response_iv, body)
            .map_err(|_| KmsError::BadPadding)?;
    }
    Ok(out)
}
