//! Client side: build a request message (PROTOCOL.md §5.4, §5.5) and verify the host's
//! response with every check a Windows/vlmcs client makes (§6.7).

use subtle::ConstantTimeEq;

use crate::crypto::{self, v6_hmac_key_for_slot, v6_hmac_slot};
use crate::{FileTime, Guid};

use super::host::cipher_for;
use super::request::ActivationRequest;
use super::response::ActivationResponse;
use super::wire::{array, bytes, xor16};
use super::{KmsError, ProtocolVersion};

/// What the client must remember between sending a request and verifying the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientContext {
    version: ProtocolVersion,
    iv: [u8; 16],
    decrypted_iv: [u8; 16],
    client_machine_id: Guid,
    request_time: FileTime,
}

impl ClientContext {
    /// The request's protocol version.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// IV_req (v5/v6).
    pub fn request_iv(&self) -> Option<[u8; 16]> {
        (self.version != ProtocolVersion::V4).then_some(self.iv)
    }

    /// The request's client machine id.
    pub fn client_machine_id(&self) -> Guid {
        self.client_machine_id
    }

    /// The request's time.
    pub fn request_time(&self) -> FileTime {
        self.request_time
    }
}

/// A response that passed every client check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedResponse {
    /// The decoded base response.
    pub response: ActivationResponse,
    /// The host's hardware id (v6 only).
    pub hwid: Option<[u8; 8]>,
    /// The host's random value R recovered as RandomXor ⊕ D_K(IV_req) (v5/v6 only).
    pub random: Option<[u8; 16]>,
}

/// Encode a request message for `req.version`: v4 = base ‖ V4MAC(base); v5/v6 =
/// version ‖ `iv` ‖ CBC-encrypt(K, `iv`, base ‖ `04 04 04 04`). `iv` is ignored for v4 and
/// should be fresh random bytes otherwise.
pub fn encode_request(req: &ActivationRequest, iv: [u8; 16]) -> (Vec<u8>, ClientContext) {
    let version = req.version;
    let base = req.encode_base();
    let mut ctx = ClientContext {
        version,
        iv: [0; 16],
        decrypted_iv: [0; 16],
        client_machine_id: req.client_machine_id,
        request_time: req.request_time,
    };
    let mut out = Vec::with_capacity(version.request_len());
    match version {
        ProtocolVersion::V4 => {
            out.extend_from_slice(&base);
            out.extend_from_slice(&crypto::v4_mac(&base));
        }
        ProtocolVersion::V5 | ProtocolVersion::V6 => {
            let cipher = cipher_for(version);
            out.extend_from_slice(&version.wire_bytes());
            out.extend_from_slice(&iv);
            out.extend_from_slice(&base);
            out.extend_from_slice(&[4, 4, 4, 4]);
            if let Some(body) = out.get_mut(20..) {
                // 240 bytes: always block-aligned.
                let _ = cipher.cbc_encrypt(&iv, body);
            }
            ctx.iv = iv;
            ctx.decrypted_iv = cipher.decrypt_copy(&iv);
        }
    }
    (out, ctx)
}

/// Verify a response message against the request it answers (§6.7): outer and inner version
/// echo; v4 MAC; v5/v6 PKCS#7 padding, exact length and SHA-256(RandomXor ⊕ D_K(IV_req)) ==
/// Hash; v5 response IV == request IV; v6 response IV ≠ request IV, XorIVs == D_K(IV_req) and
/// the HMAC (time-slot offsets 0, −1, +1); ePID size/termination rules; CMID and time echo.
pub fn verify_response(ctx: &ClientContext, msg: &[u8]) -> Result<VerifiedResponse, KmsError> {
    let outer = u32::from_le_bytes(array(msg, 0)?);
    if outer != ctx.version.to_u32() {
        return Err(KmsError::VersionEcho {
            expected: ctx.version,
            found: outer,
        });
    }

    let (response, hwid, random) = match ctx.version {
        ProtocolVersion::V4 => {
            let (response, used) = ActivationResponse::decode_base(msg)?;
            let expected = used + 16;
            if msg.len() != expected {
                return Err(KmsError::BadLength {
                    len: msg.len(),
                    expected,
                });
            }
            let mac: [u8; 16] = array(msg, used)?;
            let base = bytes(msg, 0, used)?;
            if !bool::from(crypto::v4_mac(base).ct_eq(&mac)) {
                return Err(KmsError::BadMac);
            }
            (response, None, None)
        }
        ProtocolVersion::V5 | ProtocolVersion::V6 => verify_encrypted(ctx, msg)?,
    };

    if response.version != ctx.version {
        return Err(KmsError::VersionEcho {
            expected: ctx.version,
            found: response.version.to_u32(),
        });
    }
    if response.client_machine_id != ctx.client_machine_id {
        return Err(KmsError::CmidEcho);
    }
    if response.response_time != ctx.request_time {
        return Err(KmsError::TimeEcho);
    }
    Ok(VerifiedResponse {
        response,
        hwid,
        random,
    })
}

type Verified = (ActivationResponse, Option<[u8; 8]>, Option<[u8; 16]>);

fn verify_encrypted(ctx: &ClientContext, msg: &[u8]) -> Result<Verified, KmsError> {
    let v6 = ctx.version == ProtocolVersion::V6;
    let cipher = cipher_for(ctx.version);
    let response_iv: [u8; 16] = array(msg, 4)?;
    if v6 {
        if response_iv == ctx.iv {
            return Err(KmsError::IvReused);
        }
    } else if response_iv != ctx.iv {
        return Err(KmsError::IvNotEchoed);
    }

    let encrypted = msg.get(20..).unwrap_or_default();
    if encrypted.is_empty() || !encrypted.len().is_multiple_of(16) {
        return Err(KmsError::BadPadding);
    }
    let mut plain = encrypted.to_vec();
    cipher
        .cbc_decrypt(&response_iv, &mut plain)
        .map_err(|_| KmsError::BadPadding)?;
    let body = crypto::pkcs7_unpad(&plain).map_err(|_| KmsError::BadPadding)?;

    let (response, used) = ActivationResponse::decode_base(body)?;
    let trailer = if v6 { 88 } else { 48 };
    let expected = used + trailer;
    if body.len() != expected {
        return Err(KmsError::BadLength {
            len: body.len(),
            expected,
        });
    }

    let random_xor: [u8; 16] = array(body, used)?;
    let hash: [u8; 32] = array(body, used + 16)?;
    let random = xor16(&random_xor, &ctx.decrypted_iv);
    if !bool::from(crypto::sha256(&random).ct_eq(&hash)) {
        return Err(KmsError::BadHash);
    }
    if !v6 {
        return Ok((response, None, Some(random)));
    }

    let hwid: [u8; 8] = array(body, used + 48)?;
    let xor_ivs: [u8; 16] = array(body, used + 56)?;
    if !bool::from(xor_ivs.ct_eq(&ctx.decrypted_iv)) {
        return Err(KmsError::XorIvsMismatch);
    }
    let hmac: [u8; 16] = array(body, used + 72)?;
    let hmac_input = bytes(body, 0, used + 72)?;
    let first_block = cipher.decrypt_copy(&response_iv);
    let t = response.response_time.0;
    let ok = [0i64, -1, 1].iter().any(|&offset| {
        let key = v6_hmac_key_for_slot(v6_hmac_slot(t, offset));
        bool::from(crypto::v6_hmac(&key, &[&first_block, hmac_input]).ct_eq(&hmac))
    });
    if !ok {
        return Err(KmsError::BadHmac);
    }
    Ok((response, Some(hwid), Some(random)))
}
