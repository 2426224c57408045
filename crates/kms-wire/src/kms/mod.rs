//! KMS v4/v5/v6 messages (PROTOCOL.md §5, §6.5–§6.7, §7) for both sides of the wire.
//!
//! * Host side ([`host`]): [`decode_request`] validates and decrypts a request message in the
//!   order of §7 and keeps what the response needs; [`encode_response`] builds the v4 (MAC),
//!   v5 or v6 (encrypted, hashed, HMACed) response from the caller's decision and randomness.
//! * Client side ([`client`]): [`encode_request`] builds a request message and a
//!   [`ClientContext`]; [`verify_response`] performs every client check of §6.7.
//! * The plaintext structures: [`ActivationRequest`] (the 236-byte base request, §5.3) and
//!   [`ActivationResponse`] (the variable-length base response, §5.6).
//!
//! Every decoder returns a [`KmsError`] instead of panicking; every such error is answered by
//! a host with HRESULT 0x8007000D ([`KmsError::hresult`]).

pub mod client;
pub mod host;
mod request;
mod response;
mod wire;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Hresult;

pub use client::{ClientContext, VerifiedResponse, encode_request, verify_response};
pub use host::{
    DecodedRequest, ResponseFields, ResponseRandomness, decode_request, encode_response,
};
pub use request::{ActivationRequest, WORKSTATION_FIELD_LEN};
pub use response::{ActivationResponse, MAX_EPID_BYTES};

/// Length of the plaintext base request (§5.3).
pub const BASE_REQUEST_LEN: usize = 236;
/// Length of a v4 request message: base request + 16-byte MAC (§5.4).
pub const V4_REQUEST_LEN: usize = 252;
/// Length of a v5/v6 request message: version + IV + 240 encrypted bytes (§5.5).
pub const V5_V6_REQUEST_LEN: usize = 260;

/// A KMS protocol version (the major version; the minor version is always 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ProtocolVersion {
    /// 4.0: plaintext + v4 MAC (Vista, 7, Server 2008/R2, Office 2010).
    V4,
    /// 5.0: AES-128-CBC (8, Server 2012, Office 2013).
    V5,
    /// 6.0: modified AES-128-CBC + HMAC (8.1 and later, Office 2016 and later).
    V6,
}

impl ProtocolVersion {
    /// All versions, oldest first.
    pub const ALL: [ProtocolVersion; 3] = [
        ProtocolVersion::V4,
        ProtocolVersion::V5,
        ProtocolVersion::V6,
    ];

    /// The major version number (4, 5 or 6).
    pub const fn major(self) -> u16 {
        match self {
            ProtocolVersion::V4 => 4,
            ProtocolVersion::V5 => 5,
            ProtocolVersion::V6 => 6,
        }
    }

    /// The version for a major/minor pair; only 4.0, 5.0 and 6.0 exist.
    pub const fn from_major_minor(major: u16, minor: u16) -> Option<ProtocolVersion> {
        match (major, minor) {
            (4, 0) => Some(ProtocolVersion::V4),
            (5, 0) => Some(ProtocolVersion::V5),
            (6, 0) => Some(ProtocolVersion::V6),
            _ => None,
        }
    }

    /// The version as the little-endian u32 at the start of every message
    /// (`major << 16 | minor`, e.g. 0x00060000).
    pub const fn to_u32(self) -> u32 {
        (self.major() as u32) << 16
    }

    /// Parse the u32 version word (`major << 16 | minor`).
    pub const fn from_u32(v: u32) -> Option<ProtocolVersion> {
        ProtocolVersion::from_major_minor((v >> 16) as u16, v as u16)
    }

    /// The four wire bytes: minor (u16 LE) then major (u16 LE).
    pub const fn wire_bytes(self) -> [u8; 4] {
        self.to_u32().to_le_bytes()
    }

    /// Minimum length of a request message of this version (252 for v4, 260 for v5/v6).
    pub const fn request_len(self) -> usize {
        match self {
            ProtocolVersion::V4 => V4_REQUEST_LEN,
            ProtocolVersion::V5 | ProtocolVersion::V6 => V5_V6_REQUEST_LEN,
        }
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.0", self.major())
    }
}

/// Why a KMS message was refused. On the host side every variant is answered with HRESULT
/// 0x8007000D (§7, §9.6); on the client side it means the response must be discarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KmsError {
    /// Fewer bytes than the message (or the part being read) needs.
    #[error("KMS message too short: {len} bytes, need at least {need}")]
    TooShort {
        /// Bytes present.
        len: usize,
        /// Bytes required.
        need: usize,
    },
    /// Protocol version other than 4.0, 5.0 or 6.0 (§7 step 1).
    #[error("unsupported KMS protocol version {major}.{minor}")]
    BadVersion {
        /// Major version found.
        major: u16,
        /// Minor version found.
        minor: u16,
    },
    /// The v4 MAC does not match (§6.2).
    #[error("v4 MAC mismatch")]
    BadMac,
    /// Invalid PKCS#7 padding after decryption, or ciphertext not a multiple of 16 bytes.
    #[error("invalid PKCS#7 padding")]
    BadPadding,
    /// A length that must be exact is not (decrypted request ≠ 236 bytes, response with
    /// missing or extra bytes).
    #[error("bad KMS message length {len}, expected {expected}")]
    BadLength {
        /// Length found.
        len: usize,
        /// Length required.
        expected: usize,
    },
    /// The version inside the decrypted/plaintext base request differs from the outer one
    /// (§7 step 4).
    #[error("inner version 0x{inner:08x} differs from outer version {outer}")]
    VersionMismatch {
        /// The outer (message) version.
        outer: ProtocolVersion,
        /// The raw inner version word.
        inner: u32,
    },
    /// The ePID does not fit: more than 128 bytes with its NUL (more than 63 characters).
    #[error("ePID takes {bytes} bytes on the wire, at most 128 allowed")]
    EpidTooLong {
        /// Wire size in bytes including the NUL.
        bytes: usize,
    },
    /// The ePID field is malformed: odd or zero size, missing terminating NUL or an embedded
    /// NUL.
    #[error("malformed ePID field: {0}")]
    EpidMalformed(&'static str),
    /// Client: the response version (outer or inner) is not the request's version.
    #[error("response version 0x{found:08x} does not echo the request version {expected}")]
    VersionEcho {
        /// The request's version.
        expected: ProtocolVersion,
        /// The raw version word found.
        found: u32,
    },
    /// Client: SHA-256(RandomXor ⊕ D_K(IV_req)) ≠ Hash (§6.7).
    #[error("response hash mismatch")]
    BadHash,
    /// Client, v5: the response IV is not the request IV.
    #[error("v5 response IV differs from the request IV")]
    IvNotEchoed,
    /// Client, v6: the response IV equals the request IV (an emulator tell).
    #[error("v6 response IV equals the request IV")]
    IvReused,
    /// Client, v6: XorIVs ≠ D_K(IV_req).
    #[error("v6 XorIVs field mismatch")]
    XorIvsMismatch,
    /// Client, v6: the HMAC is wrong for every tolerated time slot.
    #[error("v6 HMAC mismatch")]
    BadHmac,
    /// Client: the response does not echo the request's client machine id.
    #[error("response does not echo the client machine id")]
    CmidEcho,
    /// Client: the response time does not echo the request time.
    #[error("response time does not echo the request time")]
    TimeEcho,
}

impl KmsError {
    /// The HRESULT a host returns for this error: always 0x8007000D
    /// (HRESULT_FROM_WIN32(ERROR_INVALID_DATA), §7, §9.6).
    pub fn hresult(&self) -> Hresult {
        Hresult::INVALID_DATA
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_words() {
        assert_eq!(ProtocolVersion::V6.to_u32(), 0x0006_0000);
        assert_eq!(ProtocolVersion::V4.wire_bytes(), [0, 0, 4, 0]);
        assert_eq!(
            ProtocolVersion::from_u32(0x0005_0000),
            Some(ProtocolVersion::V5)
        );
        assert_eq!(ProtocolVersion::from_u32(0x0006_0001), None);
        assert_eq!(ProtocolVersion::from_u32(0x0007_0000), None);
        assert_eq!(ProtocolVersion::V5.to_string(), "5.0");
    }
}
