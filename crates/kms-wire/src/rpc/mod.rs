//! DCE/RPC connection-oriented PDUs and the NDR stubs of `RequestActivation`
//! (PROTOCOL.md §2–§4), for both ends of a KMS connection.
//!
//! * [`header`] — the 16-byte common header and its validation (§3.1).
//! * [`pdu`] — typed PDUs (BIND, ALTER_CONTEXT, BIND_ACK, ALTER_CONTEXT_RESP, REQUEST,
//!   RESPONSE, FAULT, BIND_NAK) that re-encode byte for byte, pad bytes included.
//! * [`ndr`] — NDR32/NDR64 request and response stubs (§4).
//! * [`frame`] — incremental framing of the TCP byte stream ([`frame_len`]).
//! * [`host`] — the per-connection host state machine ([`Association`]), including the
//!   bounded reassembly of fragmented REQUESTs.
//! * [`client`] — the client side ([`ClientAssociation`]).
//!
//! A host connection loop looks like this (I/O elided):
//!
//! ```
//! use kms_wire::rpc::{frame_len, Association, HostAction, HostConfig};
//! # fn run(buf: &mut Vec<u8>) -> Result<(), kms_wire::rpc::RpcError> {
//! let config = HostConfig::default();
//! let mut assoc = Association::new(config, 0x1235);
//! while let Some(n) = frame_len(buf, config.max_pdu)? {
//!     match assoc.on_pdu(&buf[..n]) {
//!         HostAction::Reply(bytes) => { /* write bytes */ }
//!         HostAction::Call(call) => {
//!             let answer = Err(kms_wire::Hresult::INVALID_DATA); // run the KMS logic here
//!             let bytes = call.respond(answer);
//!             /* write bytes */
//!         }
//!         HostAction::Continue => {} // a REQUEST fragment was buffered; nothing to send
//!         HostAction::Close(e) => return Err(e),
//!     }
//!     buf.drain(..n);
//! }
//! # Ok(()) }
//! ```

mod error;

pub mod client;
pub mod frame;
pub mod header;
pub mod host;
pub mod ndr;
pub mod pdu;

pub use client::{BindStep, CallError, ClientAssociation, ClientOptions, parse_call_result};
pub use error::RpcError;
pub use frame::{DEFAULT_MAX_PDU, FrameDecoder, FrameStatus, frame_len};
pub use header::{DREP_LE, HEADER_LEN, Header, pfc, ptype};
pub use host::{
    Association, HostAction, HostConfig, MAX_BOUND_CONTEXTS, MAX_REQUEST_FRAGMENTS,
    MAX_REQUEST_STUB, PendingCall,
};
pub use ndr::{
    REFERENT_ID, RequestStub, ResponseStub, Syntax, encode_request_stub, encode_response_stub,
};
pub use pdu::{
    AlterContext, AlterContextResp, BTFN_KNOWN_FEATURES, BTFN_PREFIX, Bind, BindAck, BindNak,
    ContextElem, ContextResult, Fault, Pdu, Request, Response, SyntaxId, bind_ack_pad_len, result,
    status,
};
