//! The client side of one DCE/RPC association, as `kmsctl activate` and the load generator use
//! it: build the BIND (NDR32 / NDR64 / BTFN contexts, CONC_MPX), check the BIND_ACK and decide
//! whether an ALTER_CONTEXT for NDR32 is needed (the vlmcs/Windows sequence of PROTOCOL.md
//! §3.3: first request NDR32, later ones on the NDR64 context), build REQUESTs and parse
//! RESPONSEs / FAULTs with the strict checks vlmcs applies (§3.7, §4.3, §4.4).
//!
//! Sequence: [`ClientAssociation::bind_pdu`] → send → [`ClientAssociation::on_bind_ack`] →
//! (optionally send the ALTER_CONTEXT it returns → [`ClientAssociation::on_alter_context_resp`])
//! → for each call [`ClientAssociation::request_pdu`] → send →
//! [`ClientAssociation::on_response`].

use crate::Hresult;

use super::RpcError;
use super::header::{Header, pfc, ptype};
use super::ndr::{ResponseStub, Syntax, encode_request_stub};
use super::pdu::{
    Bind, BindAck, ContextElem, ContextResult, Fault, Request, Response, SyntaxId, result,
};

/// Why a call did not return a KMS response message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The host answered with a RESPONSE carrying a non-zero HRESULT (a KMS-level refusal).
    #[error("KMS host returned {0}")]
    Kms(Hresult),
    /// The host answered with a FAULT.
    #[error("RPC fault 0x{status:08x}")]
    Fault {
        /// NCA status code (see [`crate::rpc::status`]).
        status: u32,
    },
    /// The reply broke the protocol.
    #[error(transparent)]
    Protocol(#[from] RpcError),
}

/// How the client binds and numbers its calls. The default models vlmcs (and so Windows):
/// NDR32 + NDR64 + BTFN(3), CONC_MPX, call id 2 for BIND/ALTER_CONTEXT and the first REQUEST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// Offer NDR64 (context 1).
    pub ndr64: bool,
    /// Offer Bind Time Feature Negotiation (next context id).
    pub btfn: bool,
    /// BTFN feature mask requested (clients send 3).
    pub btfn_mask: u64,
    /// Set PFC_CONC_MPX in BIND / ALTER_CONTEXT.
    pub conc_mpx: bool,
    /// call_id of the BIND and of the ALTER_CONTEXT (vlmcs: 2, py-kms: 1).
    pub bind_call_id: u32,
    /// call_id of the first REQUEST; later ones add 1 each (vlmcs: 2, py-kms: 2).
    pub first_request_call_id: u32,
    /// max_xmit_frag and max_recv_frag to announce (clients send 5840).
    pub max_frag: u16,
    /// When the host accepts NDR64 and refuses NDR32, add NDR32 with an ALTER_CONTEXT so the
    /// first request goes out in NDR32 (vlmcs/Windows). Otherwise every request uses NDR64.
    pub alter_for_ndr32: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            ndr64: true,
            btfn: true,
            btfn_mask: 3,
            conc_mpx: true,
            bind_call_id: 2,
            first_request_call_id: 2,
            max_frag: 5840,
            alter_for_ndr32: true,
        }
    }
}

/// What to do after a BIND_ACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindStep {
    /// Send this ALTER_CONTEXT and pass its answer to
    /// [`ClientAssociation::on_alter_context_resp`].
    SendAlterContext(Vec<u8>),
    /// Requests can be sent.
    Ready,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Fresh,
    AwaitBindAck,
    AwaitAlterResp,
    Ready,
    AwaitResponse {
        call_id: u32,
        p_cont_id: u16,
        syntax: Syntax,
    },
}

/// Context id of the NDR32 context in the BIND (and of the ALTER_CONTEXT).
const NDR32_CTX: u16 = 0;

/// Client-side association state: contexts granted by the host and call ids.
#[derive(Debug, Clone)]
pub struct ClientAssociation {
    opts: ClientOptions,
    state: State,
    ndr32_ctx: Option<u16>,
    ndr64_ctx: Option<u16>,
    btfn_ack: Option<u16>,
    assoc_group_id: u32,
    next_call_id: u32,
    requests_sent: u64,
}

impl ClientAssociation {
    /// A client that has not bound yet.
    pub fn new(opts: ClientOptions) -> ClientAssociation {
        ClientAssociation {
            opts,
            state: State::Fresh,
            ndr32_ctx: None,
            ndr64_ctx: None,
            btfn_ack: None,
            assoc_group_id: 0,
            next_call_id: opts.first_request_call_id,
            requests_sent: 0,
        }
    }

    /// The options.
    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// The context bound to NDR32, once granted.
    pub fn ndr32_context(&self) -> Option<u16> {
        self.ndr32_ctx
    }

    /// The context bound to NDR64, once granted.
    pub fn ndr64_context(&self) -> Option<u16> {
        self.ndr64_ctx
    }

    /// The BTFN features the host acknowledged (None: not offered or refused).
    pub fn btfn_ack(&self) -> Option<u16> {
        self.btfn_ack
    }

    /// The host's assoc_group_id (0 before the BIND_ACK).
    pub fn assoc_group_id(&self) -> u32 {
        self.assoc_group_id
    }

    /// Number of REQUESTs built so far.
    pub fn requests_sent(&self) -> u64 {
        self.requests_sent
    }

    fn flags(&self) -> u8 {
        pfc::FIRST_LAST | if self.opts.conc_mpx { pfc::CONC_MPX } else { 0 }
    }

    fn kms_context(id: u16, syntax: SyntaxId) -> ContextElem {
        ContextElem {
            p_cont_id: id,
            reserved: 0,
            abstract_syntax: SyntaxId::KMS,
            transfer_syntaxes: vec![syntax],
        }
    }

    /// The contexts the BIND offers, in order: 0 NDR32, then NDR64, then BTFN.
    fn bind_contexts(&self) -> Vec<ContextElem> {
        let mut v = vec![Self::kms_context(NDR32_CTX, SyntaxId::NDR32)];
        if self.opts.ndr64 {
            v.push(Self::kms_context(v.len() as u16, SyntaxId::NDR64));
        }
        if self.opts.btfn {
            v.push(Self::kms_context(
                v.len() as u16,
                SyntaxId::btfn(self.opts.btfn_mask),
            ));
        }
        v
    }

    fn bind_like(&self, ptype: u8, contexts: Vec<ContextElem>) -> Vec<u8> {
        Bind {
            header: Header::new(ptype, self.flags(), self.opts.bind_call_id),
            max_xmit_frag: self.opts.max_frag,
            max_recv_frag: self.opts.max_frag,
            assoc_group_id: 0,
            reserved: [0; 3],
            contexts,
            trailing: Vec::new(),
        }
        .encode()
    }

    /// The BIND PDU. Only valid once, first.
    pub fn bind_pdu(&mut self) -> Result<Vec<u8>, RpcError> {
        if self.state != State::Fresh {
            return Err(RpcError::ClientState("BIND already sent"));
        }
        self.state = State::AwaitBindAck;
        Ok(self.bind_like(ptype::BIND, self.bind_contexts()))
    }

    fn check_ack_header(
        &self,
        ack: &BindAck,
        want_ptype: u8,
        want_flags: u8,
    ) -> Result<(), RpcError> {
        if ack.header.ptype != want_ptype {
            return Err(RpcError::WrongPtype {
                expected: want_ptype,
                got: ack.header.ptype,
            });
        }
        if ack.header.call_id != self.opts.bind_call_id {
            return Err(RpcError::CallIdMismatch {
                expected: self.opts.bind_call_id,
                got: ack.header.call_id,
            });
        }
        if ack.header.pfc_flags & pfc::CONC_MPX != want_flags & pfc::CONC_MPX {
            return Err(RpcError::BadBindAck("PFC_CONC_MPX not echoed"));
        }
        Ok(())
    }

    /// Check the BIND_ACK and record the granted contexts.
    pub fn on_bind_ack(&mut self, pdu: &[u8]) -> Result<BindStep, CallError> {
        if self.state != State::AwaitBindAck {
            return Err(RpcError::ClientState("no BIND outstanding").into());
        }
        if Header::parse_raw(pdu)?.ptype == ptype::BIND_NAK {
            return Err(RpcError::BadBindAck("host sent BIND_NAK").into());
        }
        let ack = BindAck::decode(pdu)?;
        self.check_ack_header(&ack, ptype::BIND_ACK, self.flags())?;
        let offered = self.bind_contexts();
        if ack.results.len() != offered.len() {
            return Err(RpcError::BadBindAck("n_results differs from n_context_elem").into());
        }
        for (ctx, res) in offered.iter().zip(&ack.results) {
            let Some(&offer) = ctx.transfer_syntaxes.first() else {
                continue;
            };
            match classify_result(offer, res)? {
                Granted::Syntax(Syntax::Ndr32) => self.ndr32_ctx = Some(ctx.p_cont_id),
                Granted::Syntax(Syntax::Ndr64) => self.ndr64_ctx = Some(ctx.p_cont_id),
                Granted::Btfn(f) => self.btfn_ack = Some(f),
                Granted::Refused => {}
            }
        }
        self.assoc_group_id = ack.assoc_group_id;
        match (self.ndr32_ctx, self.ndr64_ctx) {
            (None, None) => Err(RpcError::NoContextAccepted.into()),
            (None, Some(_)) if self.opts.alter_for_ndr32 => {
                self.state = State::AwaitAlterResp;
                let alter = self.bind_like(
                    ptype::ALTER_CONTEXT,
                    vec![Self::kms_context(NDR32_CTX, SyntaxId::NDR32)],
                );
                Ok(BindStep::SendAlterContext(alter))
            }
            _ => {
                self.state = State::Ready;
                Ok(BindStep::Ready)
            }
        }
    }

    /// Check the ALTER_CONTEXT_RESP (flags 0x03, one result) and record NDR32 if granted. A
    /// refusal is not an error: requests then use NDR64.
    pub fn on_alter_context_resp(&mut self, pdu: &[u8]) -> Result<(), CallError> {
        if self.state != State::AwaitAlterResp {
            return Err(RpcError::ClientState("no ALTER_CONTEXT outstanding").into());
        }
        let ack = BindAck::decode(pdu)?;
        self.check_ack_header(&ack, ptype::ALTER_CONTEXT_RESP, pfc::FIRST_LAST)?;
        let [res] = ack.results.as_slice() else {
            return Err(RpcError::BadBindAck("ALTER_CONTEXT_RESP must have one result").into());
        };
        if classify_result(SyntaxId::NDR32, res)? == Granted::Syntax(Syntax::Ndr32) {
            self.ndr32_ctx = Some(NDR32_CTX);
        }
        self.state = State::Ready;
        Ok(())
    }

    /// The syntax the next REQUEST will use: the first one NDR32 when granted, later ones
    /// NDR64 when granted (Windows behaviour), otherwise whatever is granted.
    pub fn next_syntax(&self) -> Option<Syntax> {
        match (self.ndr32_ctx, self.ndr64_ctx) {
            (Some(_), _) if self.requests_sent == 0 => Some(Syntax::Ndr32),
            (_, Some(_)) => Some(Syntax::Ndr64),
            (Some(_), None) => Some(Syntax::Ndr32),
            (None, None) => None,
        }
    }

    /// Build the REQUEST carrying `kms_message` on the context chosen by
    /// [`ClientAssociation::next_syntax`].
    pub fn request_pdu(&mut self, kms_message: &[u8]) -> Result<Vec<u8>, RpcError> {
        let syntax = self
            .next_syntax()
            .ok_or(RpcError::ClientState("no context bound"))?;
        self.request_pdu_with(syntax, kms_message)
    }

    /// Build a REQUEST in a specific syntax (which must have been granted).
    pub fn request_pdu_with(
        &mut self,
        syntax: Syntax,
        kms_message: &[u8],
    ) -> Result<Vec<u8>, RpcError> {
        if self.state != State::Ready {
            return Err(RpcError::ClientState("not ready for a REQUEST"));
        }
        let p_cont_id = match syntax {
            Syntax::Ndr32 => self.ndr32_ctx,
            Syntax::Ndr64 => self.ndr64_ctx,
        }
        .ok_or(RpcError::ClientState("syntax not granted by the host"))?;
        let call_id = self.next_call_id;
        let mut stub = Vec::with_capacity(syntax.request_stub_len(kms_message.len()));
        encode_request_stub(syntax, kms_message, &mut stub);
        let pdu = Request {
            header: Header::new(ptype::REQUEST, pfc::FIRST_LAST, call_id),
            alloc_hint: u32::try_from(stub.len()).unwrap_or(u32::MAX),
            p_cont_id,
            opnum: 0,
            object: None,
            stub: &stub,
        }
        .encode();
        self.next_call_id = call_id.wrapping_add(1);
        self.requests_sent += 1;
        self.state = State::AwaitResponse {
            call_id,
            p_cont_id,
            syntax,
        };
        Ok(pdu)
    }

    /// Parse the answer to the outstanding REQUEST: the KMS response message, or why there is
    /// none. The association is ready for the next REQUEST afterwards (also after a FAULT).
    pub fn on_response(&mut self, pdu: &[u8]) -> Result<Vec<u8>, CallError> {
        let State::AwaitResponse {
            call_id,
            p_cont_id,
            syntax,
        } = self.state
        else {
            return Err(RpcError::ClientState("no REQUEST outstanding").into());
        };
        self.state = State::Ready;
        parse_call_result(pdu, call_id, p_cont_id, syntax).map(<[u8]>::to_vec)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Granted {
    Syntax(Syntax),
    Btfn(u16),
    Refused,
}

/// Interpret one BIND_ACK result for a context that offered `offer`.
fn classify_result(offer: SyntaxId, res: &ContextResult) -> Result<Granted, RpcError> {
    match res.result {
        result::ACCEPTANCE => {
            if res.transfer_syntax != offer {
                return Err(RpcError::BadBindAck(
                    "accepted syntax was not the one offered",
                ));
            }
            if offer == SyntaxId::NDR32 {
                Ok(Granted::Syntax(Syntax::Ndr32))
            } else if offer == SyntaxId::NDR64 {
                Ok(Granted::Syntax(Syntax::Ndr64))
            } else {
                Err(RpcError::BadBindAck("acceptance of a non-NDR syntax"))
            }
        }
        result::NEGOTIATE_ACK => match offer.btfn_mask() {
            Some(mask) if u64::from(res.reason) & !mask == 0 => Ok(Granted::Btfn(res.reason)),
            Some(_) => Err(RpcError::BadBindAck("BTFN ack of features not requested")),
            None => Err(RpcError::BadBindAck("negotiate_ack for a non-BTFN context")),
        },
        result::PROVIDER_REJECTION | result::USER_REJECTION => Ok(Granted::Refused),
        _ => Err(RpcError::BadBindAck("unknown result code")),
    }
}

/// Parse a RESPONSE or FAULT answering the REQUEST (`call_id`, `p_cont_id`, `syntax`) with
/// vlmcs's strictness: call_id and p_cont_id echoed, cancel_count 0, alloc_hint equal to the
/// stub length, exact stub size, zero padding, responseSize == max_count. Returns the KMS
/// response message borrowed from `pdu`.
///
/// A FAULT's call_id is not checked: vlmcsd always sends 2 there (PROTOCOL.md §10).
///
/// A fragmented RESPONSE (PFC_FIRST_FRAG and PFC_LAST_FRAG not both set) is refused with
/// [`RpcError::Fragmented`]: the client does not reassemble. A KMS response stub is at most a
/// few hundred bytes, far below the 5840-byte max_recv_frag the client announces, so no host
/// fragments it; reassembly would turn this one-PDU parser into a stateful one for no gain.
pub fn parse_call_result(
    pdu: &[u8],
    call_id: u32,
    p_cont_id: u16,
    syntax: Syntax,
) -> Result<&[u8], CallError> {
    let h = Header::decode(pdu)?;
    if h.ptype == ptype::FAULT {
        let f = Fault::decode(pdu)?;
        return Err(CallError::Fault { status: f.status });
    }
    if !h.is_unfragmented() {
        return Err(RpcError::Fragmented(h.pfc_flags).into());
    }
    let resp = Response::decode(pdu)?;
    if h.call_id != call_id {
        return Err(RpcError::CallIdMismatch {
            expected: call_id,
            got: h.call_id,
        }
        .into());
    }
    if resp.p_cont_id != p_cont_id {
        return Err(RpcError::BadResponse("p_cont_id not echoed").into());
    }
    if resp.cancel_count != 0 {
        return Err(RpcError::BadResponse("cancel_count is not 0").into());
    }
    if usize::try_from(resp.alloc_hint).ok() != Some(resp.stub.len()) {
        return Err(RpcError::BadResponse("alloc_hint differs from the stub length").into());
    }
    let stub = ResponseStub::decode(syntax, resp.stub)?;
    stub.check_strict()?;
    match (stub.message, stub.return_value) {
        (Some(m), Hresult::S_OK) => Ok(m),
        (None, Hresult::S_OK) => Err(RpcError::BadResponse("NULL response array with S_OK").into()),
        (_, hr) => Err(CallError::Kms(hr)),
    }
}
