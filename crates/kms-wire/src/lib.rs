//! # kms-wire — the KMS volume-activation wire protocol, byte for byte
//!
//! Everything a KMS host and a KMS client put on TCP port 1688, as pure functions over byte
//! slices (see `shared/kms/PROTOCOL.md`; section numbers below refer to it):
//!
//! * [`rpc`] — DCE/RPC connection-oriented PDUs (§3), the NDR32/NDR64 stubs of
//!   `RequestActivation` (§4), an incremental frame decoder and the host-side association state
//!   machine (context negotiation, BTFN, faults), plus the client side.
//! * [`kms`] — KMS v4/v5/v6 request and response messages (§5, §7) for both sides.
//! * [`crypto`] — AES-128, the v6 modified AES, the 160-bit-key Rijndael and V4MAC, the v6
//!   HMAC key derivation (§6).
//! * [`epid`] — extended PID strings (§8).
//! * [`Guid`], [`FileTime`], [`Hresult`] — the shared value types.
//!
//! What this crate must never do: touch a socket, read a clock, draw from a global random
//! number generator, spawn, block, or panic on untrusted input. Time and randomness are
//! parameters; every decoder returns a typed error instead of panicking.

pub mod crypto;
pub mod epid;
pub mod filetime;
pub mod guid;
pub mod hresult;
pub mod kms;
pub mod rpc;

pub use epid::{Epid, EpidError};
pub use filetime::FileTime;
pub use guid::Guid;
pub use hresult::Hresult;
pub use kms::{KmsError, ProtocolVersion};
