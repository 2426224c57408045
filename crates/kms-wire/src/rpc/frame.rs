//! Incremental framing of the DCE/RPC byte stream (PROTOCOL.md §2): given the bytes received
//! so far, say whether a complete PDU is at the front of the buffer and how long it is.
//!
//! The decoder never copies or consumes: a reader appends to its own buffer (e.g. a
//! `BytesMut` or `Vec<u8>`), calls [`frame_len`], hands `&buf[..n]` to the association once a
//! PDU of `n` bytes is ready, then drops those `n` bytes from the front.
//!
//! ```
//! use kms_wire::rpc::{frame_len, DEFAULT_MAX_PDU};
//! let pdu = [5u8, 0, 11, 3, 0x10, 0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0];
//! assert_eq!(frame_len(&pdu[..10], DEFAULT_MAX_PDU), Ok(None)); // need more bytes
//! assert_eq!(frame_len(&pdu, DEFAULT_MAX_PDU), Ok(Some(16))); // one PDU ready
//! ```

use super::RpcError;
use super::header::{HEADER_LEN, Header};

/// Default maximum PDU size a host accepts (PROTOCOL.md §2).
pub const DEFAULT_MAX_PDU: usize = 4096;

/// What the front of a receive buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameStatus {
    /// Not a whole PDU yet: at least `total` bytes must be buffered before asking again
    /// (16 until the header is complete, then the PDU's frag_length).
    NeedMore {
        /// Buffer length at which the next call can make progress.
        total: usize,
    },
    /// `buf[..len]` is one complete PDU with a valid header.
    Ready {
        /// frag_length of the PDU.
        len: usize,
    },
}

/// Stateless frame decoder with a configured maximum PDU size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameDecoder {
    max_pdu: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_PDU)
    }
}

impl FrameDecoder {
    /// A decoder rejecting PDUs longer than `max_pdu` bytes.
    pub const fn new(max_pdu: usize) -> FrameDecoder {
        FrameDecoder { max_pdu }
    }

    /// The configured maximum.
    pub const fn max_pdu(&self) -> usize {
        self.max_pdu
    }

    /// Inspect the front of `buf`. Once 16 bytes are present the header is validated
    /// ([`Header::validate`]: version 5.0, little-endian, auth_length 0, frag_length ≥ 16,
    /// not fragmented unless it is a REQUEST or RESPONSE) and frag_length is checked against
    /// the maximum; any violation is an error after which the connection should be closed.
    /// Each fragment of a fragmented call is its own frame; reassembly is done by the
    /// association.
    pub fn check(&self, buf: &[u8]) -> Result<FrameStatus, RpcError> {
        if buf.len() < HEADER_LEN {
            return Ok(FrameStatus::NeedMore { total: HEADER_LEN });
        }
        let h = Header::parse_raw(buf)?;
        h.validate()?;
        let len = usize::from(h.frag_length);
        if len > self.max_pdu {
            return Err(RpcError::FrameTooLarge {
                len,
                max: self.max_pdu,
            });
        }
        if buf.len() < len {
            Ok(FrameStatus::NeedMore { total: len })
        } else {
            Ok(FrameStatus::Ready { len })
        }
    }
}

/// `Ok(Some(n))` when `buf[..n]` is a complete PDU with a valid header, `Ok(None)` when more
/// bytes are needed, `Err` when the stream is malformed (close the connection).
/// See [`FrameDecoder::check`].
pub fn frame_len(buf: &[u8], max_pdu: usize) -> Result<Option<usize>, RpcError> {
    match FrameDecoder::new(max_pdu).check(buf)? {
        FrameStatus::Ready { len } => Ok(Some(len)),
        FrameStatus::NeedMore { .. } => Ok(None),
    }
}
