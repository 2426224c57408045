//! NDR32 and NDR64 stubs of `RequestActivation` (PROTOCOL.md §4): the request stub
//! (`requestSize` + conformant byte array) and the response stub (`responseSize` + unique
//! pointer to a conformant byte array + HRESULT return value, or a NULL pointer + HRESULT).
//!
//! Decoders borrow from the stub and never allocate; encoders append to a caller-provided
//! buffer.

use crate::Hresult;

use super::RpcError;
use super::header::Reader;
use super::pdu::SyntaxId;

/// The transfer syntax a presentation context was bound with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Syntax {
    /// NDR 2.0 (32-bit).
    Ndr32,
    /// NDR64 1.0.
    Ndr64,
}

impl Syntax {
    /// The transfer syntax identifier (UUID + version) of this syntax.
    pub const fn syntax_id(self) -> SyntaxId {
        match self {
            Syntax::Ndr32 => SyntaxId::NDR32,
            Syntax::Ndr64 => SyntaxId::NDR64,
        }
    }

    /// Size of the request stub for a KMS message of `n` bytes (§4.1, §4.2).
    pub const fn request_stub_len(self, n: usize) -> usize {
        match self {
            Syntax::Ndr32 => 8 + n,
            Syntax::Ndr64 => 16 + n,
        }
    }

    /// Size of the success response stub for a KMS message of `m` bytes (§4.3).
    pub const fn response_stub_len(self, m: usize) -> usize {
        let q = pad4(m);
        match self {
            Syntax::Ndr32 => 16 + m + q,
            Syntax::Ndr64 => 28 + m + q,
        }
    }

    /// Size of the error response stub (§4.4): 12 (NDR32) or 20 (NDR64).
    pub const fn error_stub_len(self) -> usize {
        match self {
            Syntax::Ndr32 => 12,
            Syntax::Ndr64 => 20,
        }
    }
}

impl std::fmt::Display for Syntax {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Syntax::Ndr32 => "NDR32",
            Syntax::Ndr64 => "NDR64",
        })
    }
}

/// The referent id a conforming host uses for the response array's unique pointer.
pub const REFERENT_ID: u32 = 0x0002_0000;

/// Zero bytes needed after `m` bytes to reach a multiple of 4.
pub const fn pad4(m: usize) -> usize {
    (4 - (m % 4)) % 4
}

/// A decoded request stub. `decode` applies the host rules of §4.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestStub<'a> {
    /// Encoding of the stub.
    pub syntax: Syntax,
    /// The `requestSize` parameter.
    pub request_size: u32,
    /// NDR64 only: the 4 alignment bytes after `requestSize`, as received (values ignored).
    pub pad_after_size: [u8; 4],
    /// The conformant array's max_count (u32 in NDR32, u64 in NDR64).
    pub max_count: u64,
    /// The KMS request message (the array contents).
    pub message: &'a [u8],
    /// Bytes after the array, as received (ignored; py-kms's v4 client sends 4 zeros).
    pub trailing: &'a [u8],
}

impl<'a> RequestStub<'a> {
    /// Decode a request stub: `max_count` must equal `requestSize` and fit in the stub;
    /// trailing bytes and NDR64 pad values are ignored (kept in the struct).
    pub fn decode(syntax: Syntax, stub: &'a [u8]) -> Result<RequestStub<'a>, RpcError> {
        let mut r = Reader::new(stub, "request stub");
        let short = |_| RpcError::BadStub("stub shorter than the array header");
        let request_size = r.u32().map_err(short)?;
        let (pad_after_size, max_count) = match syntax {
            Syntax::Ndr32 => ([0; 4], u64::from(r.u32().map_err(short)?)),
            Syntax::Ndr64 => (r.array::<4>().map_err(short)?, r.u64().map_err(short)?),
        };
        if max_count != u64::from(request_size) {
            return Err(RpcError::BadStub(
                "array max_count differs from requestSize",
            ));
        }
        let n = usize::try_from(max_count)
            .ok()
            .filter(|&n| n <= r.remaining())
            .ok_or(RpcError::BadStub("array longer than the stub"))?;
        let message = r.bytes(n)?;
        Ok(RequestStub {
            syntax,
            request_size,
            pad_after_size,
            max_count,
            message,
            trailing: r.rest(),
        })
    }

    /// Append this stub as stored (raw pad and trailing bytes included).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.request_size.to_le_bytes());
        match self.syntax {
            Syntax::Ndr32 => out.extend_from_slice(&(self.max_count as u32).to_le_bytes()),
            Syntax::Ndr64 => {
                out.extend_from_slice(&self.pad_after_size);
                out.extend_from_slice(&self.max_count.to_le_bytes());
            }
        }
        out.extend_from_slice(self.message);
        out.extend_from_slice(self.trailing);
    }
}

/// Append the canonical request stub for `message` in `syntax` (§4.1, §4.2).
pub fn encode_request_stub(syntax: Syntax, message: &[u8], out: &mut Vec<u8>) {
    let n = u32::try_from(message.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&n.to_le_bytes());
    match syntax {
        Syntax::Ndr32 => out.extend_from_slice(&n.to_le_bytes()),
        Syntax::Ndr64 => {
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(&u64::from(n).to_le_bytes());
        }
    }
    out.extend_from_slice(message);
}

/// Append the canonical response stub (§4.3 for `Ok`, §4.4 for `Err`).
///
/// `Ok(message)` produces `responseSize`, referent id 0x00020000, max_count, the message,
/// zero padding to a multiple of 4 and the return value 0. `Err(hr)` produces the NULL-array
/// form carrying `hr`. (An `Err(Hresult::S_OK)` still yields the NULL-array form.)
pub fn encode_response_stub(syntax: Syntax, result: Result<&[u8], Hresult>, out: &mut Vec<u8>) {
    match result {
        Ok(message) => {
            let m = u32::try_from(message.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&m.to_le_bytes());
            match syntax {
                Syntax::Ndr32 => {
                    out.extend_from_slice(&REFERENT_ID.to_le_bytes());
                    out.extend_from_slice(&m.to_le_bytes());
                }
                Syntax::Ndr64 => {
                    out.extend_from_slice(&[0; 4]);
                    out.extend_from_slice(&u64::from(REFERENT_ID).to_le_bytes());
                    out.extend_from_slice(&u64::from(m).to_le_bytes());
                }
            }
            out.extend_from_slice(message);
            out.extend_from_slice(&[0u8; 3][..pad4(message.len())]);
            out.extend_from_slice(&Hresult::S_OK.0.to_le_bytes());
        }
        Err(hr) => {
            out.extend_from_slice(&0u32.to_le_bytes());
            match syntax {
                Syntax::Ndr32 => out.extend_from_slice(&0u32.to_le_bytes()),
                Syntax::Ndr64 => out.extend_from_slice(&[0; 12]),
            }
            out.extend_from_slice(&hr.0.to_le_bytes());
        }
    }
}

/// A decoded response stub, every byte kept (used by the client and by tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseStub<'a> {
    /// Encoding of the stub.
    pub syntax: Syntax,
    /// The `responseSize` out parameter.
    pub response_size: u32,
    /// NDR64 only: the 4 alignment bytes after `responseSize`, as received.
    pub pad_after_size: [u8; 4],
    /// Referent id of the unique pointer (0 = NULL: no array follows).
    pub referent_id: u64,
    /// The array's max_count (absent for a NULL pointer).
    pub max_count: Option<u64>,
    /// The KMS response message (absent for a NULL pointer).
    pub message: Option<&'a [u8]>,
    /// Alignment bytes between the array and the return value, as received.
    pub pad_before_return: &'a [u8],
    /// The function's return value.
    pub return_value: Hresult,
    /// Bytes after the return value, as received.
    pub trailing: &'a [u8],
}

impl<'a> ResponseStub<'a> {
    /// Decode a response stub structurally (no strictness beyond what the layout needs;
    /// [`ResponseStub::check_strict`] adds the vlmcs checks of §4.3).
    pub fn decode(syntax: Syntax, stub: &'a [u8]) -> Result<ResponseStub<'a>, RpcError> {
        let mut r = Reader::new(stub, "response stub");
        let short = |_| RpcError::BadStub("response stub truncated");
        let response_size = r.u32().map_err(short)?;
        let (pad_after_size, referent_id) = match syntax {
            Syntax::Ndr32 => ([0; 4], u64::from(r.u32().map_err(short)?)),
            Syntax::Ndr64 => (r.array::<4>().map_err(short)?, r.u64().map_err(short)?),
        };
        let (max_count, message, pad_before_return) = if referent_id == 0 {
            (None, None, &[][..])
        } else {
            let mc = match syntax {
                Syntax::Ndr32 => u64::from(r.u32().map_err(short)?),
                Syntax::Ndr64 => r.u64().map_err(short)?,
            };
            let m = usize::try_from(mc)
                .ok()
                .filter(|&m| m <= r.remaining())
                .ok_or(RpcError::BadStub("array longer than the stub"))?;
            let msg = r.bytes(m)?;
            let pad = r.bytes(pad4(m)).map_err(short)?;
            (Some(mc), Some(msg), pad)
        };
        let return_value = Hresult(r.u32().map_err(short)?);
        Ok(ResponseStub {
            syntax,
            response_size,
            pad_after_size,
            referent_id,
            max_count,
            message,
            pad_before_return,
            return_value,
            trailing: r.rest(),
        })
    }

    /// The checks a strict client (vlmcs) applies (§4.3, §4.4): exact stub length, no
    /// trailing bytes, zero padding, `responseSize == max_count` for a returned array,
    /// `responseSize == 0` for a NULL one.
    pub fn check_strict(&self) -> Result<(), RpcError> {
        if !self.trailing.is_empty() {
            return Err(RpcError::BadStub("bytes after the return value"));
        }
        if self.pad_after_size != [0; 4] || self.pad_before_return.iter().any(|&b| b != 0) {
            return Err(RpcError::BadStub("non-zero NDR padding"));
        }
        match self.max_count {
            Some(mc) if mc != u64::from(self.response_size) => {
                Err(RpcError::BadStub("responseSize differs from max_count"))
            }
            None if self.response_size != 0 => {
                Err(RpcError::BadStub("NULL array with non-zero responseSize"))
            }
            _ => Ok(()),
        }
    }

    /// Append this stub as stored (raw pad and trailing bytes included).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.response_size.to_le_bytes());
        match self.syntax {
            Syntax::Ndr32 => out.extend_from_slice(&(self.referent_id as u32).to_le_bytes()),
            Syntax::Ndr64 => {
                out.extend_from_slice(&self.pad_after_size);
                out.extend_from_slice(&self.referent_id.to_le_bytes());
            }
        }
        if self.referent_id != 0 {
            let mc = self.max_count.unwrap_or(0);
            match self.syntax {
                Syntax::Ndr32 => out.extend_from_slice(&(mc as u32).to_le_bytes()),
                Syntax::Ndr64 => out.extend_from_slice(&mc.to_le_bytes()),
            }
            out.extend_from_slice(self.message.unwrap_or(&[]));
            out.extend_from_slice(self.pad_before_return);
        }
        out.extend_from_slice(&self.return_value.0.to_le_bytes());
        out.extend_from_slice(self.trailing);
    }
}
