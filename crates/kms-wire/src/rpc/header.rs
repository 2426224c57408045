//! The 16-byte common header of every connection-oriented DCE/RPC PDU (PROTOCOL.md §3.1),
//! its validation rules, and the little-endian byte helpers the other codecs share.

use super::RpcError;

/// Size of the common header.
pub const HEADER_LEN: usize = 16;

/// PTYPE values (PROTOCOL.md §3.1).
pub mod ptype {
    /// REQUEST (client → host).
    pub const REQUEST: u8 = 0;
    /// RESPONSE (host → client).
    pub const RESPONSE: u8 = 2;
    /// FAULT (host → client).
    pub const FAULT: u8 = 3;
    /// BIND (client → host).
    pub const BIND: u8 = 11;
    /// BIND_ACK (host → client).
    pub const BIND_ACK: u8 = 12;
    /// BIND_NAK (host → client).
    pub const BIND_NAK: u8 = 13;
    /// ALTER_CONTEXT (client → host).
    pub const ALTER_CONTEXT: u8 = 14;
    /// ALTER_CONTEXT_RESP (host → client).
    pub const ALTER_CONTEXT_RESP: u8 = 15;
}

/// pfc_flags bits (PROTOCOL.md §3.1).
pub mod pfc {
    /// First fragment.
    pub const FIRST_FRAG: u8 = 0x01;
    /// Last fragment.
    pub const LAST_FRAG: u8 = 0x02;
    /// Cancel pending.
    pub const PENDING_CANCEL: u8 = 0x04;
    /// Concurrent multiplexing (echoed in BIND_ACK).
    pub const CONC_MPX: u8 = 0x10;
    /// The call did not execute (set in FAULTs).
    pub const DID_NOT_EXECUTE: u8 = 0x20;
    /// `maybe` call semantics.
    pub const MAYBE: u8 = 0x40;
    /// An object UUID follows the REQUEST header.
    pub const OBJECT_UUID: u8 = 0x80;
    /// FIRST_FRAG | LAST_FRAG: an unfragmented PDU.
    pub const FIRST_LAST: u8 = FIRST_FRAG | LAST_FRAG;
}

/// The data representation every host PDU carries: little-endian, ASCII, IEEE floats.
pub const DREP_LE: [u8; 4] = [0x10, 0, 0, 0];

/// The common header, field by field as on the wire.
///
/// Decoding validates it (rpc_vers 5.0, little-endian drep, auth_length 0, FIRST+LAST set
/// except on REQUEST/RESPONSE fragments, see [`Header::validate`]); encoding writes every field
/// as stored except `frag_length`, which is always recomputed from the encoded PDU (a decoded
/// header always agrees with its PDU's length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// rpc_vers (5).
    pub rpc_vers: u8,
    /// rpc_vers_minor (0).
    pub rpc_vers_minor: u8,
    /// PTYPE, see [`ptype`].
    pub ptype: u8,
    /// pfc_flags, see [`pfc`].
    pub pfc_flags: u8,
    /// packed_drep, kept raw (only the integer-representation nibble is checked).
    pub drep: [u8; 4],
    /// Total PDU length including this header, as received (recomputed on encode).
    pub frag_length: u16,
    /// auth_length (always 0).
    pub auth_length: u16,
    /// Call identifier chosen by the client and echoed by the host.
    pub call_id: u32,
}

impl Header {
    /// A header as this crate sends it: v5.0, little-endian drep, auth_length 0.
    /// `frag_length` is filled in on encode.
    pub const fn new(ptype: u8, pfc_flags: u8, call_id: u32) -> Header {
        Header {
            rpc_vers: 5,
            rpc_vers_minor: 0,
            ptype,
            pfc_flags,
            drep: DREP_LE,
            frag_length: 0,
            auth_length: 0,
            call_id,
        }
    }

    /// Parse the first 16 bytes of `buf` without validating anything.
    pub fn parse_raw(buf: &[u8]) -> Result<Header, RpcError> {
        let h: &[u8; HEADER_LEN] = buf
            .get(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(RpcError::Truncated {
                what: "common header",
                need: HEADER_LEN,
                have: buf.len(),
            })?;
        Ok(Header {
            rpc_vers: h[0],
            rpc_vers_minor: h[1],
            ptype: h[2],
            pfc_flags: h[3],
            drep: [h[4], h[5], h[6], h[7]],
            frag_length: u16::from_le_bytes([h[8], h[9]]),
            auth_length: u16::from_le_bytes([h[10], h[11]]),
            call_id: u32::from_le_bytes([h[12], h[13], h[14], h[15]]),
        })
    }

    /// True when PFC_FIRST_FRAG is set (the first or only fragment of a call).
    pub const fn is_first_frag(&self) -> bool {
        self.pfc_flags & pfc::FIRST_FRAG != 0
    }

    /// True when PFC_LAST_FRAG is set (the last or only fragment of a call).
    pub const fn is_last_frag(&self) -> bool {
        self.pfc_flags & pfc::LAST_FRAG != 0
    }

    /// True when both PFC_FIRST_FRAG and PFC_LAST_FRAG are set: the PDU is a whole call.
    pub const fn is_unfragmented(&self) -> bool {
        self.pfc_flags & pfc::FIRST_LAST == pfc::FIRST_LAST
    }

    /// True for the PTYPEs whose calls may span several fragments: REQUEST and RESPONSE.
    /// Every other PDU (BIND, ALTER_CONTEXT, their answers, FAULT, …) must be unfragmented.
    pub const fn may_fragment(&self) -> bool {
        matches!(self.ptype, ptype::REQUEST | ptype::RESPONSE)
    }

    /// The §3.1 host rules every PDU must satisfy: rpc_vers 5.0, little-endian integers,
    /// auth_length 0, frag_length ≥ 16, and FIRST_FRAG and LAST_FRAG both set — except on
    /// REQUEST and RESPONSE PDUs ([`Header::may_fragment`]), which may be one fragment of a
    /// larger call. Putting REQUEST fragments back together is the host association's job
    /// ([`crate::rpc::Association`], bounded); a fragmented PDU of any other type is
    /// [`RpcError::Fragmented`].
    pub fn validate(&self) -> Result<(), RpcError> {
        if self.rpc_vers != 5 || self.rpc_vers_minor != 0 {
            return Err(RpcError::BadVersion {
                major: self.rpc_vers,
                minor: self.rpc_vers_minor,
            });
        }
        if self.drep[0] & 0xF0 != 0x10 {
            return Err(RpcError::BadDrep(self.drep));
        }
        if self.auth_length != 0 {
            return Err(RpcError::AuthNotSupported(self.auth_length));
        }
        if !self.is_unfragmented() && !self.may_fragment() {
            return Err(RpcError::Fragmented(self.pfc_flags));
        }
        if usize::from(self.frag_length) < HEADER_LEN {
            return Err(RpcError::FrameTooSmall(self.frag_length));
        }
        Ok(())
    }

    /// Parse and validate the header of a complete PDU: [`Header::validate`] plus
    /// `frag_length == pdu.len()`.
    pub fn decode(pdu: &[u8]) -> Result<Header, RpcError> {
        let h = Header::parse_raw(pdu)?;
        h.validate()?;
        if usize::from(h.frag_length) != pdu.len() {
            return Err(RpcError::LyingLength {
                frag_length: h.frag_length,
                actual: pdu.len(),
            });
        }
        Ok(h)
    }

    /// Decode a complete PDU's header and require one of the given PTYPEs.
    pub(crate) fn decode_expect(pdu: &[u8], a: u8, b: u8) -> Result<Header, RpcError> {
        let h = Header::decode(pdu)?;
        if h.ptype != a && h.ptype != b {
            return Err(RpcError::WrongPtype {
                expected: a,
                got: h.ptype,
            });
        }
        Ok(h)
    }

    /// Append the 16 header bytes with a zero frag_length placeholder; call
    /// [`finish_frag_length`] once the PDU is complete.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[
            self.rpc_vers,
            self.rpc_vers_minor,
            self.ptype,
            self.pfc_flags,
        ]);
        out.extend_from_slice(&self.drep);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.auth_length.to_le_bytes());
        out.extend_from_slice(&self.call_id.to_le_bytes());
    }
}

/// Patch the frag_length of the PDU that starts at `start` in `out` to its actual length.
/// A PDU longer than 65535 bytes (never produced by this crate's builders) gets 65535.
pub(crate) fn finish_frag_length(out: &mut [u8], start: usize) {
    let len = out.len().saturating_sub(start);
    let fl = u16::try_from(len).unwrap_or(u16::MAX).to_le_bytes();
    if let Some(slot) = out.get_mut(start + 8..start + 10) {
        slot.copy_from_slice(&fl);
    }
}

/// A bounds-checked little-endian cursor over untrusted bytes.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Read `buf` from its start; `what` names the structure in truncation errors.
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { buf, pos: 0, what }
    }

    /// Bytes left.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], RpcError> {
        let end = self.pos.checked_add(n);
        match end.and_then(|e| self.buf.get(self.pos..e)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(RpcError::Truncated {
                what: self.what,
                need: self.pos.saturating_add(n),
                have: self.buf.len(),
            }),
        }
    }

    /// The next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], RpcError> {
        let s = self.bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// Everything that is left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let s = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        s
    }

    pub(crate) fn u8(&mut self) -> Result<u8, RpcError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, RpcError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, RpcError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, RpcError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}
