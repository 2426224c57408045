//! Typed connection-oriented PDUs (PROTOCOL.md §3.2–§3.9) that decode and re-encode byte for
//! byte.
//!
//! Every reserved or alignment byte is kept as received (vlmcsd leaves garbage in the BIND_ACK
//! pad bytes and in FAULTs), so `decode(b)?.encode() == b` for every PDU a decoder accepts.
//! Count fields (`n_context_elem`, `n_transfer_syn`, `n_results`, sec_addr length,
//! `frag_length`) are not stored: they are derived from the collections on encode.
//!
//! REQUEST and RESPONSE borrow their stub from the input buffer (no copy on the hot path).

use crate::Guid;

use super::RpcError;
use super::header::{HEADER_LEN, Header, Reader, finish_frag_length, pfc, ptype};

/// An interface or transfer syntax identifier: UUID plus a 32-bit version
/// (major version in the low 16 bits, minor in the high 16 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SyntaxId {
    /// The syntax UUID.
    pub uuid: Guid,
    /// The version as on the wire (u32 little-endian).
    pub version: u32,
}

/// Wire bytes of the KMS interface UUID 51c82175-844e-4750-b0d8-ec255555bc06.
const KMS_UUID: Guid = match Guid::parse_const("51c82175-844e-4750-b0d8-ec255555bc06") {
    Some(g) => g,
    None => Guid::NIL,
};
const NDR32_UUID: Guid = match Guid::parse_const("8a885d04-1ceb-11c9-9fe8-08002b104860") {
    Some(g) => g,
    None => Guid::NIL,
};
const NDR64_UUID: Guid = match Guid::parse_const("71710533-beba-4937-8319-b5dbef9ccc36") {
    Some(g) => g,
    None => Guid::NIL,
};

/// The first 8 wire bytes of the Bind Time Feature Negotiation pseudo transfer syntax.
pub const BTFN_PREFIX: [u8; 8] = [0x2c, 0x1c, 0xb7, 0x6c, 0x12, 0x98, 0x40, 0x45];

/// BTFN feature bits a host can acknowledge (security-context multiplexing, keep connection
/// on orphan).
pub const BTFN_KNOWN_FEATURES: u64 = 0x0003;

impl SyntaxId {
    /// The KMSServer interface 1.0.
    pub const KMS: SyntaxId = SyntaxId {
        uuid: KMS_UUID,
        version: 1,
    };
    /// NDR (NDR32) transfer syntax, version 2.
    pub const NDR32: SyntaxId = SyntaxId {
        uuid: NDR32_UUID,
        version: 2,
    };
    /// NDR64 transfer syntax, version 1.
    pub const NDR64: SyntaxId = SyntaxId {
        uuid: NDR64_UUID,
        version: 1,
    };
    /// The all-zero syntax that rejected or negotiated results carry.
    pub const NULL: SyntaxId = SyntaxId {
        uuid: Guid::NIL,
        version: 0,
    };

    /// The BTFN pseudo syntax requesting `mask` (clients send 3), version 1.
    pub const fn btfn(mask: u64) -> SyntaxId {
        let m = mask.to_le_bytes();
        let p = BTFN_PREFIX;
        SyntaxId {
            uuid: Guid::from_wire([
                p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], m[0], m[1], m[2], m[3], m[4], m[5],
                m[6], m[7],
            ]),
            version: 1,
        }
    }

    /// If this is the BTFN pseudo syntax (recognised by its first 8 wire bytes only), the
    /// requested feature bitmask (its last 8 wire bytes, little-endian).
    pub fn btfn_mask(&self) -> Option<u64> {
        let w = self.uuid.to_wire();
        let (prefix, mask) = w.split_at(8);
        if prefix != BTFN_PREFIX {
            return None;
        }
        let mut m = [0u8; 8];
        m.copy_from_slice(mask);
        Some(u64::from_le_bytes(m))
    }

    /// Major version (low 16 bits).
    pub const fn major(&self) -> u16 {
        (self.version & 0xFFFF) as u16
    }

    /// Minor version (high 16 bits).
    pub const fn minor(&self) -> u16 {
        (self.version >> 16) as u16
    }

    fn read(r: &mut Reader<'_>) -> Result<SyntaxId, RpcError> {
        let uuid = Guid::from_wire(r.array()?);
        let version = r.u32()?;
        Ok(SyntaxId { uuid, version })
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.uuid.to_wire());
        out.extend_from_slice(&self.version.to_le_bytes());
    }
}

/// One presentation context element of a BIND / ALTER_CONTEXT (p_cont_elem_t).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextElem {
    /// Context id the client will use in REQUESTs.
    pub p_cont_id: u16,
    /// Reserved byte after n_transfer_syn, as received.
    pub reserved: u8,
    /// Interface (abstract syntax) requested.
    pub abstract_syntax: SyntaxId,
    /// Transfer syntaxes offered, in preference order (at most 255 are encoded).
    pub transfer_syntaxes: Vec<SyntaxId>,
}

/// A BIND (PTYPE 11) or ALTER_CONTEXT (PTYPE 14) PDU (PROTOCOL.md §3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Common header; `ptype` is 11 or 14.
    pub header: Header,
    /// max_xmit_frag.
    pub max_xmit_frag: u16,
    /// max_recv_frag.
    pub max_recv_frag: u16,
    /// assoc_group_id (0 from every observed client).
    pub assoc_group_id: u32,
    /// The three reserved bytes after n_context_elem, as received.
    pub reserved: [u8; 3],
    /// Presentation contexts (at most 255 are encoded).
    pub contexts: Vec<ContextElem>,
    /// Bytes after the last context element, as received (normally none).
    pub trailing: Vec<u8>,
}

/// ALTER_CONTEXT has the layout of BIND.
pub type AlterContext = Bind;

impl Bind {
    /// Decode a complete BIND or ALTER_CONTEXT PDU. A context list that does not fit the
    /// body (`12 + Σ(24 + 20·n_transfer_syn) > body length`) is [`RpcError::BadBind`].
    pub fn decode(pdu: &[u8]) -> Result<Bind, RpcError> {
        let header = Header::decode_expect(pdu, ptype::BIND, ptype::ALTER_CONTEXT)?;
        let body = pdu.get(HEADER_LEN..).unwrap_or(&[]);
        let mut r = Reader::new(body, "BIND body");
        let fixed = |_| RpcError::BadBind("body shorter than 12 bytes");
        let max_xmit_frag = r.u16().map_err(fixed)?;
        let max_recv_frag = r.u16().map_err(fixed)?;
        let assoc_group_id = r.u32().map_err(fixed)?;
        let n = r.u8().map_err(fixed)?;
        let reserved = r.array::<3>().map_err(fixed)?;
        // Each element needs at least 24 bytes: cap the pre-allocation by what can fit.
        let mut contexts = Vec::with_capacity(usize::from(n).min(r.remaining() / 24));
        for _ in 0..n {
            let short = |_| RpcError::BadBind("context list longer than the PDU");
            let p_cont_id = r.u16().map_err(short)?;
            let n_ts = r.u8().map_err(short)?;
            let reserved = r.u8().map_err(short)?;
            let abstract_syntax = SyntaxId::read(&mut r).map_err(short)?;
            if r.remaining() < usize::from(n_ts) * 20 {
                return Err(RpcError::BadBind(
                    "transfer syntax list longer than the PDU",
                ));
            }
            let mut transfer_syntaxes = Vec::with_capacity(usize::from(n_ts));
            for _ in 0..n_ts {
                transfer_syntaxes.push(SyntaxId::read(&mut r).map_err(short)?);
            }
            contexts.push(ContextElem {
                p_cont_id,
                reserved,
                abstract_syntax,
                transfer_syntaxes,
            });
        }
        Ok(Bind {
            header,
            max_xmit_frag,
            max_recv_frag,
            assoc_group_id,
            reserved,
            contexts,
            trailing: r.rest().to_vec(),
        })
    }

    /// Encode (frag_length recomputed).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 12 + self.contexts.len() * 44);
        self.encode_into(&mut out);
        out
    }

    /// Append the encoded PDU to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        self.header.write(out);
        out.extend_from_slice(&self.max_xmit_frag.to_le_bytes());
        out.extend_from_slice(&self.max_recv_frag.to_le_bytes());
        out.extend_from_slice(&self.assoc_group_id.to_le_bytes());
        let n = self.contexts.len().min(255);
        out.push(n as u8);
        out.extend_from_slice(&self.reserved);
        for c in self.contexts.iter().take(n) {
            out.extend_from_slice(&c.p_cont_id.to_le_bytes());
            let nt = c.transfer_syntaxes.len().min(255);
            out.push(nt as u8);
            out.push(c.reserved);
            c.abstract_syntax.write(out);
            for t in c.transfer_syntaxes.iter().take(nt) {
                t.write(out);
            }
        }
        out.extend_from_slice(&self.trailing);
        finish_frag_length(out, start);
    }
}

/// One result of a BIND_ACK / ALTER_CONTEXT_RESP (p_result_t).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContextResult {
    /// 0 acceptance, 1 user_rejection, 2 provider_rejection, 3 negotiate_ack.
    pub result: u16,
    /// Rejection reason (or the acknowledged BTFN feature bits for negotiate_ack).
    pub reason: u16,
    /// Accepted transfer syntax (all zero when not accepted).
    pub transfer_syntax: SyntaxId,
}

/// Values of [`ContextResult::result`] and [`ContextResult::reason`].
pub mod result {
    /// acceptance.
    pub const ACCEPTANCE: u16 = 0;
    /// user_rejection.
    pub const USER_REJECTION: u16 = 1;
    /// provider_rejection.
    pub const PROVIDER_REJECTION: u16 = 2;
    /// negotiate_ack (BTFN).
    pub const NEGOTIATE_ACK: u16 = 3;
    /// reason: reason_not_specified.
    pub const REASON_NOT_SPECIFIED: u16 = 0;
    /// reason: abstract_syntax_not_supported.
    pub const ABSTRACT_SYNTAX_NOT_SUPPORTED: u16 = 1;
    /// reason: proposed_transfer_syntaxes_not_supported.
    pub const TRANSFER_SYNTAXES_NOT_SUPPORTED: u16 = 2;
    /// reason: local_limit_exceeded.
    pub const LOCAL_LIMIT_EXCEEDED: u16 = 3;
}

impl ContextResult {
    /// An acceptance of `syntax`.
    pub const fn accept(syntax: SyntaxId) -> ContextResult {
        ContextResult {
            result: result::ACCEPTANCE,
            reason: 0,
            transfer_syntax: syntax,
        }
    }

    /// A provider rejection with `reason`.
    pub const fn reject(reason: u16) -> ContextResult {
        ContextResult {
            result: result::PROVIDER_REJECTION,
            reason,
            transfer_syntax: SyntaxId::NULL,
        }
    }

    /// A BTFN negotiate_ack acknowledging `features`.
    pub const fn negotiate_ack(features: u16) -> ContextResult {
        ContextResult {
            result: result::NEGOTIATE_ACK,
            reason: features,
            transfer_syntax: SyntaxId::NULL,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.result.to_le_bytes());
        out.extend_from_slice(&self.reason.to_le_bytes());
        self.transfer_syntax.write(out);
    }
}

/// Number of alignment bytes after a sec_addr of `sec_addr_len` bytes so that the result list
/// starts at a multiple of 4 from the start of the PDU (PROTOCOL.md §3.4).
pub const fn bind_ack_pad_len(sec_addr_len: usize) -> usize {
    (4 - ((26 + sec_addr_len) % 4)) % 4
}

/// A BIND_ACK (PTYPE 12) or ALTER_CONTEXT_RESP (PTYPE 15) PDU (PROTOCOL.md §3.4, §3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindAck {
    /// Common header; `ptype` is 12 or 15.
    pub header: Header,
    /// max_xmit_frag.
    pub max_xmit_frag: u16,
    /// max_recv_frag.
    pub max_recv_frag: u16,
    /// assoc_group_id.
    pub assoc_group_id: u32,
    /// Secondary address bytes including the terminating NUL (its length is the wire `L`);
    /// empty in ALTER_CONTEXT_RESP.
    pub sec_addr: Vec<u8>,
    /// Alignment bytes after sec_addr as received: only the first
    /// [`bind_ack_pad_len`]`(sec_addr.len())` are on the wire, the rest are zero after decode.
    pub pad: [u8; 3],
    /// The three reserved bytes after n_results, as received.
    pub results_reserved: [u8; 3],
    /// One result per presented context (at most 255 are encoded).
    pub results: Vec<ContextResult>,
    /// Bytes after the result list, as received (normally none).
    pub trailing: Vec<u8>,
}

/// ALTER_CONTEXT_RESP has the layout of BIND_ACK.
pub type AlterContextResp = BindAck;

impl BindAck {
    /// Decode a complete BIND_ACK or ALTER_CONTEXT_RESP PDU.
    pub fn decode(pdu: &[u8]) -> Result<BindAck, RpcError> {
        let header = Header::decode_expect(pdu, ptype::BIND_ACK, ptype::ALTER_CONTEXT_RESP)?;
        let body = pdu.get(HEADER_LEN..).unwrap_or(&[]);
        let mut r = Reader::new(body, "BIND_ACK body");
        let max_xmit_frag = r.u16()?;
        let max_recv_frag = r.u16()?;
        let assoc_group_id = r.u32()?;
        let sec_len = usize::from(r.u16()?);
        let sec_addr = r.bytes(sec_len)?.to_vec();
        let mut pad = [0u8; 3];
        let p = bind_ack_pad_len(sec_len);
        if let Some(dst) = pad.get_mut(..p) {
            dst.copy_from_slice(r.bytes(p)?);
        }
        let n = r.u8()?;
        let results_reserved = r.array::<3>()?;
        if r.remaining() < usize::from(n) * 24 {
            return Err(RpcError::BadBindAck("result list longer than the PDU"));
        }
        let mut results = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let result = r.u16()?;
            let reason = r.u16()?;
            let transfer_syntax = SyntaxId::read(&mut r)?;
            results.push(ContextResult {
                result,
                reason,
                transfer_syntax,
            });
        }
        Ok(BindAck {
            header,
            max_xmit_frag,
            max_recv_frag,
            assoc_group_id,
            sec_addr,
            pad,
            results_reserved,
            results,
            trailing: r.rest().to_vec(),
        })
    }

    /// The secondary address as text (bytes before the first NUL; lossy UTF-8).
    pub fn sec_addr_str(&self) -> String {
        let end = self
            .sec_addr
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.sec_addr.len());
        String::from_utf8_lossy(self.sec_addr.get(..end).unwrap_or(&[])).into_owned()
    }

    /// Encode (frag_length recomputed).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(36 + self.sec_addr.len() + 24 * self.results.len());
        self.encode_into(&mut out);
        out
    }

    /// Append the encoded PDU to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let p = bind_ack_pad_len(self.sec_addr.len().min(usize::from(u16::MAX)));
        write_bind_ack(
            out,
            &BindAckParts {
                header: &self.header,
                max_xmit_frag: self.max_xmit_frag,
                max_recv_frag: self.max_recv_frag,
                assoc_group_id: self.assoc_group_id,
                sec_addr: &self.sec_addr,
                pad: self.pad.get(..p).unwrap_or(&[]),
                results_reserved: self.results_reserved,
                trailing: &self.trailing,
            },
            &self.results,
        );
    }
}

/// Borrowed pieces of a BIND_ACK, so the host can build one without intermediate allocations.
pub(crate) struct BindAckParts<'a> {
    pub header: &'a Header,
    pub max_xmit_frag: u16,
    pub max_recv_frag: u16,
    pub assoc_group_id: u32,
    pub sec_addr: &'a [u8],
    pub pad: &'a [u8],
    pub results_reserved: [u8; 3],
    pub trailing: &'a [u8],
}

pub(crate) fn write_bind_ack(out: &mut Vec<u8>, p: &BindAckParts<'_>, results: &[ContextResult]) {
    let start = out.len();
    p.header.write(out);
    out.extend_from_slice(&p.max_xmit_frag.to_le_bytes());
    out.extend_from_slice(&p.max_recv_frag.to_le_bytes());
    out.extend_from_slice(&p.assoc_group_id.to_le_bytes());
    let sec = p
        .sec_addr
        .get(..usize::from(u16::MAX))
        .unwrap_or(p.sec_addr);
    out.extend_from_slice(&(sec.len() as u16).to_le_bytes());
    out.extend_from_slice(sec);
    let need = bind_ack_pad_len(sec.len());
    out.extend_from_slice(p.pad.get(..need).unwrap_or(p.pad));
    for _ in p.pad.len()..need {
        out.push(0);
    }
    let n = results.len().min(255);
    out.push(n as u8);
    out.extend_from_slice(&p.results_reserved);
    for res in results.iter().take(n) {
        res.write(out);
    }
    out.extend_from_slice(p.trailing);
    finish_frag_length(out, start);
}

/// A REQUEST (PTYPE 0) PDU (PROTOCOL.md §3.6), borrowing its stub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Common header. On encode, PFC_OBJECT_UUID is set exactly when `object` is present.
    pub header: Header,
    /// alloc_hint (clients send the stub length; hosts must not rely on it).
    pub alloc_hint: u32,
    /// Presentation context id.
    pub p_cont_id: u16,
    /// Operation number (0 = RequestActivation).
    pub opnum: u16,
    /// Object UUID, present when pfc_flags has PFC_OBJECT_UUID (never sent by KMS clients).
    pub object: Option<Guid>,
    /// Stub data: everything after the request header up to frag_length.
    pub stub: &'a [u8],
}

impl<'a> Request<'a> {
    /// Decode a complete REQUEST PDU: a whole call, or one fragment of a fragmented call
    /// (check `header.pfc_flags`; [`crate::rpc::Association`] reassembles fragments).
    pub fn decode(pdu: &'a [u8]) -> Result<Request<'a>, RpcError> {
        let header = Header::decode_expect(pdu, ptype::REQUEST, ptype::REQUEST)?;
        let body = pdu.get(HEADER_LEN..).unwrap_or(&[]);
        let mut r = Reader::new(body, "REQUEST header");
        let alloc_hint = r.u32()?;
        let p_cont_id = r.u16()?;
        let opnum = r.u16()?;
        let object = if header.pfc_flags & pfc::OBJECT_UUID != 0 {
            Some(Guid::from_wire(r.array()?))
        } else {
            None
        };
        Ok(Request {
            header,
            alloc_hint,
            p_cont_id,
            opnum,
            object,
            stub: r.rest(),
        })
    }

    /// Encode (frag_length recomputed).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40 + self.stub.len());
        self.encode_into(&mut out);
        out
    }

    /// Append the encoded PDU to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let mut h = self.header;
        h.pfc_flags = match self.object {
            Some(_) => h.pfc_flags | pfc::OBJECT_UUID,
            None => h.pfc_flags & !pfc::OBJECT_UUID,
        };
        h.write(out);
        out.extend_from_slice(&self.alloc_hint.to_le_bytes());
        out.extend_from_slice(&self.p_cont_id.to_le_bytes());
        out.extend_from_slice(&self.opnum.to_le_bytes());
        if let Some(o) = &self.object {
            out.extend_from_slice(&o.to_wire());
        }
        out.extend_from_slice(self.stub);
        finish_frag_length(out, start);
    }
}

/// A RESPONSE (PTYPE 2) PDU (PROTOCOL.md §3.7), borrowing its stub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// Common header.
    pub header: Header,
    /// alloc_hint (= stub length from a conforming host).
    pub alloc_hint: u32,
    /// Presentation context id (echo of the REQUEST's).
    pub p_cont_id: u16,
    /// cancel_count (0).
    pub cancel_count: u8,
    /// Reserved byte.
    pub reserved: u8,
    /// Stub data: everything after byte 24 up to frag_length.
    pub stub: &'a [u8],
}

impl<'a> Response<'a> {
    /// Decode a complete RESPONSE PDU (a whole call or one fragment; check `header.pfc_flags`).
    pub fn decode(pdu: &'a [u8]) -> Result<Response<'a>, RpcError> {
        let header = Header::decode_expect(pdu, ptype::RESPONSE, ptype::RESPONSE)?;
        let body = pdu.get(HEADER_LEN..).unwrap_or(&[]);
        let mut r = Reader::new(body, "RESPONSE header");
        Ok(Response {
            header,
            alloc_hint: r.u32()?,
            p_cont_id: r.u16()?,
            cancel_count: r.u8()?,
            reserved: r.u8()?,
            stub: r.rest(),
        })
    }

    /// Encode (frag_length recomputed).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.stub.len());
        self.encode_into(&mut out);
        out
    }

    /// Append the encoded PDU to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        self.header.write(out);
        out.extend_from_slice(&self.alloc_hint.to_le_bytes());
        out.extend_from_slice(&self.p_cont_id.to_le_bytes());
        out.push(self.cancel_count);
        out.push(self.reserved);
        out.extend_from_slice(self.stub);
        finish_frag_length(out, start);
    }
}

/// NCA status codes a KMS host puts in FAULTs (PROTOCOL.md §3.8).
pub mod status {
    /// nca_op_rng_error: opnum out of range.
    pub const NCA_OP_RNG_ERROR: u32 = 0x1c01_0002;
    /// nca_unk_if: unknown interface / unbound presentation context.
    pub const NCA_UNK_IF: u32 = 0x1c01_0003;
    /// nca_proto_error: protocol violation.
    pub const NCA_PROTO_ERROR: u32 = 0x1c01_000b;
    /// RPC_X_BAD_STUB_DATA (Windows RPC status for malformed stub data).
    pub const RPC_X_BAD_STUB_DATA: u32 = 0x0000_06f7;
}

/// A FAULT (PTYPE 3) PDU (PROTOCOL.md §3.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Common header (pfc_flags 0x23 from a conforming host).
    pub header: Header,
    /// alloc_hint (32 from every observed host).
    pub alloc_hint: u32,
    /// Presentation context id.
    pub p_cont_id: u16,
    /// cancel_count (vlmcsd sends garbage).
    pub cancel_count: u8,
    /// Reserved byte (vlmcsd sends garbage).
    pub reserved: u8,
    /// NCA status, see [`status`].
    pub status: u32,
    /// Reserved u32 after the status.
    pub reserved2: u32,
    /// Bytes after the 32-byte FAULT, as received (normally none).
    pub trailing: Vec<u8>,
}

impl Fault {
    /// Size of a FAULT without trailing bytes.
    pub const LEN: usize = 32;

    /// The FAULT a conforming host sends for a REQUEST with `call_id` on `p_cont_id`:
    /// pfc_flags 0x23, alloc_hint 32, cancel_count 0.
    pub const fn for_call(call_id: u32, p_cont_id: u16, status: u32) -> Fault {
        Fault {
            header: Header::new(
                ptype::FAULT,
                pfc::FIRST_LAST | pfc::DID_NOT_EXECUTE,
                call_id,
            ),
            alloc_hint: Fault::LEN as u32,
            p_cont_id,
            cancel_count: 0,
            reserved: 0,
            status,
            reserved2: 0,
            trailing: Vec::new(),
        }
    }

    /// Decode a complete FAULT PDU.
    pub fn decode(pdu: &[u8]) -> Result<Fault, RpcError> {
        let header = Header::decode_expect(pdu, ptype::FAULT, ptype::FAULT)?;
        let body = pdu.get(HEADER_LEN..).unwrap_or(&[]);
        let mut r = Reader::new(body, "FAULT body");
        Ok(Fault {
            header,
            alloc_hint: r.u32()?,
            p_cont_id: r.u16()?,
            cancel_count: r.u8()?,
            reserved: r.u8()?,
            status: r.u32()?,
            reserved2: r.u32()?,
            trailing: r.rest().to_vec(),
        })
    }

    /// Encode (frag_length recomputed).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Fault::LEN + self.trailing.len());
        self.encode_into(&mut out);
        out
    }

    /// Append the encoded PDU to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        self.header.write(out);
        out.extend_from_slice(&self.alloc_hint.to_le_bytes());
        out.extend_from_slice(&self.p_cont_id.to_le_bytes());
        out.push(self.cancel_count);
        out.push(self.reserved);
        out.extend_from_slice(&self.status.to_le_bytes());
        out.extend_from_slice(&self.reserved2.to_le_bytes());
        out.extend_from_slice(&self.trailing);
        finish_frag_length(out, start);
    }
}

/// A BIND_NAK (PTYPE 13) PDU (PROTOCOL.md §3.9). Not sent by the host in this crate (a bad
/// BIND closes the connection); provided for completeness and for clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindNak {
    /// Common header.
    pub header: Header,
    /// provider_reject_reason (4 = protocol version not supported).
    pub reject_reason: u16,
    /// Supported protocol versions as (major, minor) (at most 255 are encoded).
    pub versions: Vec<(u8, u8)>,
    /// Bytes after the version list (alignment padding), as received.
    pub trailing: Vec<u8>,
}

impl BindNak {
    /// provider_reject_reason: protocol version not supported.
    pub const REASON_PROTOCOL_VERSION_NOT_SUPPORTED: u16 = 4;

    /// The BIND_NAK answering an unsupported rpc_vers: reason 4, versions [5.0], padded to 4.
    pub fn version_not_supported(call_id: u32) -> BindNak {
        BindNak {
            header: Header::new(ptype::BIND_NAK, pfc::FIRST_LAST, call_id),
            reject_reason: BindNak::REASON_PROTOCOL_VERSION_NOT_SUPPORTED,
            versions: vec![(5, 0)],
            trailing: vec![0, 0, 0],
        }
    }

    /// Decode a complete BIND_NAK PDU.
    pub fn decode(pdu: &[u8]) -> Result<BindNak, RpcError> {
        let header = Header::decode_expect(pdu, ptype::BIND_NAK, ptype::BIND_NAK)?;
        let body = pdu.get(HEADER_LEN..).unwrap_or(&[]);
        let mut r = Reader::new(body, "BIND_NAK body");
        let reject_reason = r.u16()?;
        let n = r.u8()?;
        let mut versions = Vec::with_capacity(usize::from(n).min(r.remaining() / 2));
        for _ in 0..n {
            let v = r.array::<2>()?;
            versions.push((v[0], v[1]));
        }
        Ok(BindNak {
            header,
            reject_reason,
            versions,
            trailing: r.rest().to_vec(),
        })
    }

    /// Encode (frag_length recomputed).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        let start = out.len();
        self.header.write(&mut out);
        out.extend_from_slice(&self.reject_reason.to_le_bytes());
        let n = self.versions.len().min(255);
        out.push(n as u8);
        for (a, b) in self.versions.iter().take(n) {
            out.push(*a);
            out.push(*b);
        }
        out.extend_from_slice(&self.trailing);
        finish_frag_length(&mut out, start);
        out
    }
}

/// Any connection-oriented PDU this crate knows, dispatched on PTYPE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pdu<'a> {
    /// PTYPE 0.
    Request(Request<'a>),
    /// PTYPE 2.
    Response(Response<'a>),
    /// PTYPE 3.
    Fault(Fault),
    /// PTYPE 11.
    Bind(Bind),
    /// PTYPE 12.
    BindAck(BindAck),
    /// PTYPE 13.
    BindNak(BindNak),
    /// PTYPE 14.
    AlterContext(Bind),
    /// PTYPE 15.
    AlterContextResp(BindAck),
}

impl<'a> Pdu<'a> {
    /// Decode a complete PDU of any known type.
    pub fn decode(pdu: &'a [u8]) -> Result<Pdu<'a>, RpcError> {
        let h = Header::decode(pdu)?;
        Ok(match h.ptype {
            ptype::REQUEST => Pdu::Request(Request::decode(pdu)?),
            ptype::RESPONSE => Pdu::Response(Response::decode(pdu)?),
            ptype::FAULT => Pdu::Fault(Fault::decode(pdu)?),
            ptype::BIND => Pdu::Bind(Bind::decode(pdu)?),
            ptype::BIND_ACK => Pdu::BindAck(BindAck::decode(pdu)?),
            ptype::BIND_NAK => Pdu::BindNak(BindNak::decode(pdu)?),
            ptype::ALTER_CONTEXT => Pdu::AlterContext(Bind::decode(pdu)?),
            ptype::ALTER_CONTEXT_RESP => Pdu::AlterContextResp(BindAck::decode(pdu)?),
            other => return Err(RpcError::UnsupportedPtype(other)),
        })
    }

    /// The common header.
    pub fn header(&self) -> &Header {
        match self {
            Pdu::Request(p) => &p.header,
            Pdu::Response(p) => &p.header,
            Pdu::Fault(p) => &p.header,
            Pdu::Bind(p) | Pdu::AlterContext(p) => &p.header,
            Pdu::BindAck(p) | Pdu::AlterContextResp(p) => &p.header,
            Pdu::BindNak(p) => &p.header,
        }
    }

    /// Encode (frag_length recomputed).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Pdu::Request(p) => p.encode(),
            Pdu::Response(p) => p.encode(),
            Pdu::Fault(p) => p.encode(),
            Pdu::Bind(p) | Pdu::AlterContext(p) => p.encode(),
            Pdu::BindAck(p) | Pdu::AlterContextResp(p) => p.encode(),
            Pdu::BindNak(p) => p.encode(),
        }
    }
}
