//! The host side of one DCE/RPC association (one TCP connection): BIND / ALTER_CONTEXT
//! negotiation (PROTOCOL.md §3.3–§3.5), REQUEST dispatch with FAULTs (§3.6, §3.8) and the
//! RESPONSE builder (§3.7, §4.3, §4.4).
//!
//! The state machine is fed whole PDUs (see [`crate::rpc::frame_len`]) and answers with a
//! [`HostAction`]. It does no I/O and keeps only the presentation-context bindings and, between
//! the fragments of a fragmented REQUEST, the stub received so far.
//!
//! Choices where PROTOCOL.md leaves room (all marked \[REC\] there unless said):
//! * A header that breaks the §3.1 host rules, a frame above `max_pdu`, a PTYPE other than
//!   REQUEST/BIND/ALTER_CONTEXT, an unparsable BIND/ALTER_CONTEXT or REQUEST header, any PDU
//!   but BIND before the BIND, and a second BIND all close the connection.
//! * A REQUEST on an unbound context → FAULT `nca_unk_if` (0x1c010003); opnum ≠ 0 → FAULT
//!   `nca_op_rng_error` (0x1c010002); a malformed stub (shorter than the array header, array
//!   count ≠ requestSize or larger than the bytes present) → FAULT 0x000006f7
//!   (RPC_X_BAD_STUB_DATA, the status Windows RPC uses for bad stub data) rather than a
//!   close, so one bad call does not cost a well-behaved client its connection. FAULTs echo
//!   call_id and p_cont_id, carry pfc_flags 0x23, and leave the association usable.
//! * A rejected NDR32 context is *not* usable (vlmcsd's leniency is not reproduced): strict
//!   clients send ALTER_CONTEXT first, as §3.3 says.
//! * A transfer syntax matches NDR32/NDR64 by UUID and version (2 / 1) and the interface by
//!   UUID and version 1.0; BTFN by its first 8 wire bytes only. When a context lists several
//!   transfer syntaxes the first acceptable one wins; if none is, the rejection reason is the
//!   one the first syntax produced.
//! * At most [`MAX_BOUND_CONTEXTS`] distinct context ids are bound per connection; further new
//!   ids are rejected with (provider_rejection, local_limit_exceeded).
//!
//! # Fragmented REQUESTs
//!
//! KMS clients never fragment (PROTOCOL.md §2), but DCE/RPC allows a REQUEST to be split into
//! several REQUEST PDUs, so the association reassembles them, within bounds:
//! * The first fragment has PFC_FIRST_FRAG, middle ones neither flag, the last PFC_LAST_FRAG.
//!   Every fragment must carry the first one's call_id, p_cont_id and opnum; their stubs are
//!   concatenated (alloc_hint is ignored, an object UUID is skipped in each fragment). Non-final
//!   fragments are answered with [`HostAction::Continue`] (nothing to send); the call is handled
//!   exactly like an unfragmented REQUEST once the last fragment arrives, so the context,
//!   opnum and stub checks (and their FAULTs) happen once, for the whole call.
//! * At most [`MAX_REQUEST_STUB`] reassembled stub bytes and [`MAX_REQUEST_FRAGMENTS`]
//!   fragments per call (see [`Association::with_reassembly_limits`]); each fragment is still
//!   subject to `max_pdu`. A KMS request stub is under 300 bytes.
//! * Breaking the sequence closes the connection: a middle or last fragment with no call in
//!   progress or a new first fragment (or whole REQUEST) while one is
//!   ([`RpcError::FragmentSequence`]), a PDU other than a REQUEST mid-call (likewise), a
//!   differing call_id/p_cont_id/opnum ([`RpcError::FragmentMismatch`]), or exceeding a bound
//!   ([`RpcError::ReassemblyLimit`]). A FAULT would not help: the rest of the offending call's
//!   fragments would still be in flight and would each break the sequence again.
//! * BIND and ALTER_CONTEXT are never reassembled (no client fragments them): a fragmented one
//!   closes the connection with [`RpcError::Fragmented`].

use std::borrow::Cow;

use crate::Hresult;

use super::RpcError;
use super::frame::DEFAULT_MAX_PDU;
use super::header::{HEADER_LEN, Header, finish_frag_length, pfc, ptype};
use super::ndr::{RequestStub, Syntax, encode_response_stub};
use super::pdu::{
    Bind, BindAckParts, ContextElem, ContextResult, Fault, Request, SyntaxId, result, status,
    write_bind_ack,
};

/// Most distinct presentation-context ids one connection may bind.
pub const MAX_BOUND_CONTEXTS: usize = 32;

/// Default bound on the stub of a fragmented REQUEST once reassembled, in bytes (64 KiB; a KMS
/// request stub is under 300 bytes).
pub const MAX_REQUEST_STUB: usize = 64 * 1024;

/// Default bound on the number of fragments of one REQUEST, first and last included. Memory is
/// bounded by [`MAX_REQUEST_STUB`]; this stops an endless run of (possibly empty) fragments.
pub const MAX_REQUEST_FRAGMENTS: usize = 1024;

/// Host-side RPC configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostConfig {
    /// TCP port the client connected to, announced as the BIND_ACK secondary address.
    pub listen_port: u16,
    /// Accept NDR64 (and then refuse NDR32 in a BIND that also offers NDR64, §3.3).
    pub ndr64: bool,
    /// Acknowledge Bind Time Feature Negotiation.
    pub btfn: bool,
    /// Largest PDU accepted, in bytes (PROTOCOL.md §2 recommends 4096).
    pub max_pdu: usize,
}

impl Default for HostConfig {
    /// Port 1688, NDR64 and BTFN enabled, 4096-byte PDUs.
    fn default() -> Self {
        HostConfig {
            listen_port: 1688,
            ndr64: true,
            btfn: true,
            max_pdu: DEFAULT_MAX_PDU,
        }
    }
}

/// What the connection handler must do after a PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostAction<'a> {
    /// Send these bytes (a BIND_ACK, ALTER_CONTEXT_RESP or FAULT) and keep reading. A FAULT
    /// can be told apart by its PTYPE byte (`reply[2] == 3`) or with
    /// [`Fault::decode`](crate::rpc::Fault::decode).
    Reply(Vec<u8>),
    /// A well-formed RequestActivation call: run the KMS logic on
    /// [`PendingCall::kms_message`] and send [`PendingCall::respond`]'s bytes.
    Call(PendingCall<'a>),
    /// A non-final fragment of a fragmented REQUEST was buffered: send nothing, keep reading.
    Continue,
    /// Close the connection without answering.
    Close(RpcError),
}

impl HostAction<'_> {
    /// Detach from the PDU buffer (copies a [`PendingCall`]'s KMS message).
    pub fn into_owned(self) -> HostAction<'static> {
        match self {
            HostAction::Reply(r) => HostAction::Reply(r),
            HostAction::Call(c) => HostAction::Call(c.into_owned()),
            HostAction::Continue => HostAction::Continue,
            HostAction::Close(e) => HostAction::Close(e),
        }
    }
}

/// A fragmented REQUEST being put back together.
#[derive(Debug, Clone)]
struct Reassembly {
    call_id: u32,
    p_cont_id: u16,
    opnum: u16,
    fragments: usize,
    stub: Vec<u8>,
}

/// The RPC state of one connection on the host.
#[derive(Debug, Clone)]
pub struct Association {
    config: HostConfig,
    assoc_group_id: u32,
    bound: bool,
    contexts: Vec<(u16, Syntax)>,
    max_request_stub: usize,
    max_request_fragments: usize,
    reassembly: Option<Reassembly>,
}

impl Association {
    /// A fresh association that will announce `assoc_group_id` in its BIND_ACK and
    /// ALTER_CONTEXT_RESPs.
    ///
    /// The server allocates one non-zero id per connection (PROTOCOL.md §3.4.1, e.g. node id
    /// in the high bits and a counter in the low bits). A caller that prefers to echo a
    /// client's non-zero assoc_group_id may peek at the BIND first
    /// ([`Bind::decode`](crate::rpc::Bind::decode)) and pass that value instead.
    pub fn new(config: HostConfig, assoc_group_id: u32) -> Association {
        Association {
            config,
            assoc_group_id,
            bound: false,
            contexts: Vec::new(),
            max_request_stub: MAX_REQUEST_STUB,
            max_request_fragments: MAX_REQUEST_FRAGMENTS,
            reassembly: None,
        }
    }

    /// Replace the reassembly bounds of fragmented REQUESTs (defaults [`MAX_REQUEST_STUB`]
    /// and [`MAX_REQUEST_FRAGMENTS`]). `max_fragments` counts the first and last fragments;
    /// below 2, every fragmented REQUEST fails. Unfragmented REQUESTs are bounded by
    /// `max_pdu` alone.
    pub fn with_reassembly_limits(mut self, max_stub: usize, max_fragments: usize) -> Self {
        self.max_request_stub = max_stub;
        self.max_request_fragments = max_fragments;
        self
    }

    /// True while a fragmented REQUEST has been started but its last fragment has not arrived
    /// (the connection is in the middle of a call even if its receive buffer is empty).
    pub fn is_reassembling(&self) -> bool {
        self.reassembly.is_some()
    }

    /// The configuration.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// The association group id announced to the client.
    pub fn assoc_group_id(&self) -> u32 {
        self.assoc_group_id
    }

    /// True once a BIND has been answered.
    pub fn is_bound(&self) -> bool {
        self.bound
    }

    /// The syntax a context id is bound to, if any.
    pub fn context_syntax(&self, p_cont_id: u16) -> Option<Syntax> {
        self.contexts
            .iter()
            .find(|(id, _)| *id == p_cont_id)
            .map(|&(_, s)| s)
    }

    /// Process one complete PDU (`pdu.len()` must be its frag_length, as
    /// [`crate::rpc::frame_len`] delivers it).
    pub fn on_pdu<'a>(&mut self, pdu: &'a [u8]) -> HostAction<'a> {
        match self.dispatch(pdu) {
            Ok(action) => action,
            Err(e) => {
                self.reassembly = None;
                HostAction::Close(e)
            }
        }
    }

    fn dispatch<'a>(&mut self, pdu: &'a [u8]) -> Result<HostAction<'a>, RpcError> {
        let h = Header::parse_raw(pdu)?;
        h.validate()?;
        let len = usize::from(h.frag_length);
        if len > self.config.max_pdu {
            return Err(RpcError::FrameTooLarge {
                len,
                max: self.config.max_pdu,
            });
        }
        if len != pdu.len() {
            return Err(RpcError::LyingLength {
                frag_length: h.frag_length,
                actual: pdu.len(),
            });
        }
        if self.reassembly.is_some() && h.ptype != ptype::REQUEST {
            return Err(RpcError::FragmentSequence(
                "PDU other than a REQUEST fragment in the middle of a fragmented REQUEST",
            ));
        }
        match (h.ptype, self.bound) {
            (ptype::BIND, false) | (ptype::ALTER_CONTEXT, true) => {
                self.on_bind(pdu).map(HostAction::Reply)
            }
            (ptype::BIND, true) => Err(RpcError::AlreadyBound),
            (ptype::REQUEST, true) => self.on_request(pdu),
            (p @ (ptype::REQUEST | ptype::ALTER_CONTEXT), false) => Err(RpcError::NotBound(p)),
            (p, _) => Err(RpcError::UnsupportedPtype(p)),
        }
    }

    fn on_bind(&mut self, pdu: &[u8]) -> Result<Vec<u8>, RpcError> {
        let bind = Bind::decode(pdu)?;
        let is_bind = bind.header.ptype == ptype::BIND;
        let ndr64_possible = self.config.ndr64
            && bind.contexts.iter().any(|c| {
                c.abstract_syntax == SyntaxId::KMS && c.transfer_syntaxes.contains(&SyntaxId::NDR64)
            });
        let mut results = Vec::with_capacity(bind.contexts.len());
        for c in &bind.contexts {
            results.push(self.negotiate(c, ndr64_possible));
        }
        self.bound = true;

        let (reply_ptype, flags) = if is_bind {
            (
                ptype::BIND_ACK,
                pfc::FIRST_LAST | (bind.header.pfc_flags & pfc::CONC_MPX),
            )
        } else {
            (ptype::ALTER_CONTEXT_RESP, pfc::FIRST_LAST)
        };
        let (port_buf, port_len) = port_sec_addr(self.config.listen_port);
        let sec_addr = if is_bind {
            port_buf.get(..port_len).unwrap_or(&[])
        } else {
            &[]
        };
        let mut out = Vec::with_capacity(36 + 24 * results.len());
        write_bind_ack(
            &mut out,
            &BindAckParts {
                header: &Header::new(reply_ptype, flags, bind.header.call_id),
                max_xmit_frag: bind.max_xmit_frag,
                max_recv_frag: bind.max_recv_frag,
                assoc_group_id: self.assoc_group_id,
                sec_addr,
                pad: &[],
                results_reserved: [0; 3],
                trailing: &[],
            },
            &results,
        );
        Ok(out)
    }

    /// §3.3 for one presented context; records accepted bindings.
    fn negotiate(&mut self, c: &ContextElem, ndr64_possible: bool) -> ContextResult {
        let kms = c.abstract_syntax == SyntaxId::KMS;
        let mut first_reason = if kms {
            result::TRANSFER_SYNTAXES_NOT_SUPPORTED
        } else {
            result::ABSTRACT_SYNTAX_NOT_SUPPORTED
        };
        for (i, ts) in c.transfer_syntaxes.iter().enumerate() {
            let reason = if let Some(mask) = ts.btfn_mask() {
                if self.config.btfn {
                    return ContextResult::negotiate_ack(
                        (mask & super::BTFN_KNOWN_FEATURES) as u16,
                    );
                }
                result::TRANSFER_SYNTAXES_NOT_SUPPORTED
            } else if !kms {
                result::ABSTRACT_SYNTAX_NOT_SUPPORTED
            } else {
                let accepted = if *ts == SyntaxId::NDR32 && !ndr64_possible {
                    Some(Syntax::Ndr32)
                } else if *ts == SyntaxId::NDR64 && self.config.ndr64 {
                    Some(Syntax::Ndr64)
                } else {
                    None
                };
                if let Some(s) = accepted {
                    return if self.bind_context(c.p_cont_id, s) {
                        ContextResult::accept(s.syntax_id())
                    } else {
                        ContextResult::reject(result::LOCAL_LIMIT_EXCEEDED)
                    };
                }
                result::TRANSFER_SYNTAXES_NOT_SUPPORTED
            };
            if i == 0 {
                first_reason = reason;
            }
        }
        ContextResult::reject(first_reason)
    }

    fn bind_context(&mut self, id: u16, syntax: Syntax) -> bool {
        if let Some(slot) = self.contexts.iter_mut().find(|(i, _)| *i == id) {
            slot.1 = syntax;
            true
        } else if self.contexts.len() < MAX_BOUND_CONTEXTS {
            self.contexts.push((id, syntax));
            true
        } else {
            false
        }
    }

    fn on_request<'a>(&mut self, pdu: &'a [u8]) -> Result<HostAction<'a>, RpcError> {
        let req = Request::decode(pdu)?;
        let h = req.header;
        match (h.is_first_frag(), h.is_last_frag(), self.reassembly.take()) {
            (true, true, None) => Ok(self.call(h.call_id, req.p_cont_id, req.opnum, req.stub)),
            (true, false, None) => {
                self.check_reassembly_limits(1, req.stub.len())?;
                self.reassembly = Some(Reassembly {
                    call_id: h.call_id,
                    p_cont_id: req.p_cont_id,
                    opnum: req.opnum,
                    fragments: 1,
                    stub: req.stub.to_vec(),
                });
                Ok(HostAction::Continue)
            }
            (false, last, Some(mut r)) => {
                for (field, expected, got) in [
                    ("call_id", r.call_id, h.call_id),
                    (
                        "p_cont_id",
                        u32::from(r.p_cont_id),
                        u32::from(req.p_cont_id),
                    ),
                    ("opnum", u32::from(r.opnum), u32::from(req.opnum)),
                ] {
                    if expected != got {
                        return Err(RpcError::FragmentMismatch {
                            field,
                            expected,
                            got,
                        });
                    }
                }
                let fragments = r.fragments.saturating_add(1);
                self.check_reassembly_limits(
                    fragments,
                    r.stub.len().saturating_add(req.stub.len()),
                )?;
                r.fragments = fragments;
                r.stub.extend_from_slice(req.stub);
                if last {
                    Ok(self
                        .call(r.call_id, r.p_cont_id, r.opnum, &r.stub)
                        .into_owned())
                } else {
                    self.reassembly = Some(r);
                    Ok(HostAction::Continue)
                }
            }
            (false, _, None) => Err(RpcError::FragmentSequence(
                "REQUEST fragment without PFC_FIRST_FRAG and no fragmented REQUEST in progress",
            )),
            (true, _, Some(_)) => Err(RpcError::FragmentSequence(
                "new REQUEST while a fragmented REQUEST is in progress",
            )),
        }
    }

    fn check_reassembly_limits(&self, fragments: usize, stub_len: usize) -> Result<(), RpcError> {
        if fragments > self.max_request_fragments {
            return Err(RpcError::ReassemblyLimit {
                what: "fragments",
                max: self.max_request_fragments,
            });
        }
        if stub_len > self.max_request_stub {
            return Err(RpcError::ReassemblyLimit {
                what: "stub bytes",
                max: self.max_request_stub,
            });
        }
        Ok(())
    }

    /// §3.6 for a whole call (unfragmented or reassembled): FAULT or a [`PendingCall`].
    fn call<'s>(&self, call_id: u32, p_cont_id: u16, opnum: u16, stub: &'s [u8]) -> HostAction<'s> {
        let fault =
            |status| HostAction::Reply(Fault::for_call(call_id, p_cont_id, status).encode());
        let Some(syntax) = self.context_syntax(p_cont_id) else {
            return fault(status::NCA_UNK_IF);
        };
        if opnum != 0 {
            return fault(status::NCA_OP_RNG_ERROR);
        }
        match RequestStub::decode(syntax, stub) {
            Ok(stub) => {
                HostAction::Call(PendingCall::new(call_id, p_cont_id, syntax, stub.message))
            }
            Err(_) => fault(status::RPC_X_BAD_STUB_DATA),
        }
    }
}

/// The decimal port string plus NUL (at most "65535\0" = 6 bytes) and its length.
fn port_sec_addr(port: u16) -> ([u8; 6], usize) {
    let mut digits = [0u8; 5];
    let mut n = 0;
    let mut p = port;
    loop {
        if let Some(d) = digits.get_mut(n) {
            *d = b'0' + (p % 10) as u8;
        }
        n += 1;
        p /= 10;
        if p == 0 || n >= digits.len() {
            break;
        }
    }
    let mut out = [0u8; 6];
    for (dst, src) in out.iter_mut().zip(digits.iter().take(n).rev()) {
        *dst = *src;
    }
    (out, n + 1)
}

/// A RequestActivation call accepted by [`Association::on_pdu`], waiting for the KMS layer's
/// answer. Borrows the KMS message from the PDU buffer (a reassembled call owns it);
/// [`PendingCall::into_owned`] detaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCall<'a> {
    call_id: u32,
    context_id: u16,
    syntax: Syntax,
    message: Cow<'a, [u8]>,
}

impl<'a> PendingCall<'a> {
    /// A call as if it had arrived on `context_id` (bound to `syntax`) with `call_id`.
    pub fn new(call_id: u32, context_id: u16, syntax: Syntax, message: &'a [u8]) -> Self {
        PendingCall {
            call_id,
            context_id,
            syntax,
            message: Cow::Borrowed(message),
        }
    }

    /// The KMS request message (contents of the NDR byte array).
    pub fn kms_message(&self) -> &[u8] {
        &self.message
    }

    /// The REQUEST's call_id (echoed in the RESPONSE).
    pub fn call_id(&self) -> u32 {
        self.call_id
    }

    /// The REQUEST's p_cont_id (echoed in the RESPONSE).
    pub fn context_id(&self) -> u16 {
        self.context_id
    }

    /// The transfer syntax of the call's context (and of the response stub).
    pub fn syntax(&self) -> Syntax {
        self.syntax
    }

    /// Detach from the PDU buffer (copies the KMS message).
    pub fn into_owned(self) -> PendingCall<'static> {
        PendingCall {
            call_id: self.call_id,
            context_id: self.context_id,
            syntax: self.syntax,
            message: Cow::Owned(self.message.into_owned()),
        }
    }

    /// The RESPONSE PDU: `Ok(kms_response)` returns the array (§4.3), `Err(hresult)` the
    /// NULL array with that return value (§4.4). alloc_hint = stub length, p_cont_id and
    /// call_id echoed, cancel_count 0, pfc_flags 0x03.
    pub fn respond(self, result: Result<&[u8], Hresult>) -> Vec<u8> {
        let mut out = Vec::new();
        self.respond_into(result, &mut out);
        out
    }

    /// Like [`PendingCall::respond`], appending to `out` (lets a writer reuse its buffer).
    pub fn respond_into(&self, result: Result<&[u8], Hresult>, out: &mut Vec<u8>) {
        let stub_len = match result {
            Ok(m) => self.syntax.response_stub_len(m.len()),
            Err(_) => self.syntax.error_stub_len(),
        };
        out.reserve(HEADER_LEN + 8 + stub_len);
        let start = out.len();
        Header::new(ptype::RESPONSE, pfc::FIRST_LAST, self.call_id).write(out);
        out.extend_from_slice(&u32::try_from(stub_len).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&self.context_id.to_le_bytes());
        out.extend_from_slice(&[0, 0]); // cancel_count, reserved
        encode_response_stub(self.syntax, result, out);
        finish_frag_length(out, start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_strings() {
        for (port, s) in [
            (0u16, "0"),
            (7, "7"),
            (1688, "1688"),
            (11688, "11688"),
            (65535, "65535"),
        ] {
            let (b, n) = port_sec_addr(port);
            let mut want = s.as_bytes().to_vec();
            want.push(0);
            assert_eq!(&b[..n], &want[..], "{port}");
        }
    }
}
