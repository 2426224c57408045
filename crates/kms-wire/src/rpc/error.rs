//! The error type of the DCE/RPC layer: one variant per class of malformed or unexpected input.
//!
//! Every decoder in [`crate::rpc`] returns [`RpcError`] instead of panicking. The host turns
//! most of them into "close the connection" ([`crate::rpc::HostAction::Close`]); a few classes
//! (unbound context, bad opnum, bad stub) become a FAULT instead and never reach the caller as
//! an error.

/// Why a PDU, a stub or a frame was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// Fewer bytes than the structure needs.
    #[error("truncated: {what} needs {need} bytes, only {have} present")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// `rpc_vers`/`rpc_vers_minor` is not 5.0 (PROTOCOL.md §3.1).
    #[error("unsupported RPC version {major}.{minor} (only 5.0)")]
    BadVersion {
        /// rpc_vers.
        major: u8,
        /// rpc_vers_minor.
        minor: u8,
    },
    /// The data representation is not little-endian integers.
    #[error("unsupported data representation {0:02x?} (only little-endian)")]
    BadDrep([u8; 4]),
    /// `auth_length` is not zero: KMS never authenticates at the RPC layer.
    #[error("authentication not supported (auth_length {0})")]
    AuthNotSupported(u16),
    /// PFC_FIRST_FRAG and PFC_LAST_FRAG are not both set on a PDU that must not be fragmented:
    /// anything but a REQUEST on the host (BIND / ALTER_CONTEXT never fragment in practice and
    /// are refused), and a RESPONSE on the client (a KMS response is far below any fragment
    /// size, so the client does not reassemble).
    #[error("fragmented PDUs of this type are not supported (pfc_flags 0x{0:02x})")]
    Fragmented(u8),
    /// A REQUEST fragment out of sequence: a middle or last fragment with no call being
    /// reassembled, a new first fragment (or whole REQUEST) while one is, or a PDU other than
    /// a REQUEST in the middle of a fragmented call.
    #[error("REQUEST fragment out of sequence: {0}")]
    FragmentSequence(&'static str),
    /// A REQUEST fragment whose call_id, p_cont_id or opnum differs from the first fragment's.
    #[error("REQUEST fragment {field} {got} differs from the first fragment's {expected}")]
    FragmentMismatch {
        /// "call_id", "p_cont_id" or "opnum".
        field: &'static str,
        /// Value in the first fragment.
        expected: u32,
        /// Value in this fragment.
        got: u32,
    },
    /// A fragmented REQUEST exceeds a reassembly bound.
    #[error("fragmented REQUEST exceeds the limit of {max} {what}")]
    ReassemblyLimit {
        /// "stub bytes" or "fragments".
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// `frag_length` is above the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// Announced frag_length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// `frag_length` is below the 16-byte common header.
    #[error("frag_length {0} is smaller than the 16-byte header")]
    FrameTooSmall(u16),
    /// `frag_length` disagrees with the number of bytes handed to a PDU decoder.
    #[error("frag_length {frag_length} but the PDU has {actual} bytes")]
    LyingLength {
        /// Announced frag_length.
        frag_length: u16,
        /// Bytes actually given.
        actual: usize,
    },
    /// A PTYPE this side does not accept (host: anything but REQUEST, BIND, ALTER_CONTEXT).
    #[error("unsupported PTYPE {0}")]
    UnsupportedPtype(u8),
    /// A typed decoder was given a PDU of another type.
    #[error("expected PTYPE {expected}, got {got}")]
    WrongPtype {
        /// PTYPE the decoder handles (the first one, for decoders that accept two).
        expected: u8,
        /// PTYPE found.
        got: u8,
    },
    /// A BIND / ALTER_CONTEXT body that cannot be parsed (e.g. a lying `n_context_elem`).
    #[error("malformed BIND/ALTER_CONTEXT: {0}")]
    BadBind(&'static str),
    /// A BIND_ACK / ALTER_CONTEXT_RESP / BIND_NAK that cannot be parsed or fails a client check.
    #[error("malformed or unexpected BIND_ACK/ALTER_CONTEXT_RESP: {0}")]
    BadBindAck(&'static str),
    /// NDR stub data that violates §4 (lying array count, too short, wrong sizes, …).
    #[error("malformed stub data: {0}")]
    BadStub(&'static str),
    /// A RESPONSE / FAULT that fails a client check (§3.7, §4.3).
    #[error("malformed or unexpected RESPONSE: {0}")]
    BadResponse(&'static str),
    /// A reply's call_id is not the one of the PDU it answers.
    #[error("call_id {got} does not echo {expected}")]
    CallIdMismatch {
        /// call_id sent.
        expected: u32,
        /// call_id received.
        got: u32,
    },
    /// A PDU other than BIND arrived before the association was established.
    #[error("PTYPE {0} before BIND")]
    NotBound(u8),
    /// A second BIND on an established association.
    #[error("BIND on an already bound association")]
    AlreadyBound,
    /// The client side was asked to do something its state does not allow.
    #[error("client association state: {0}")]
    ClientState(&'static str),
    /// The host accepted none of the presentation contexts offered by the client.
    #[error("no presentation context was accepted")]
    NoContextAccepted,
}
