//! Bounds-checked little-endian field readers shared by the KMS message codecs.

use crate::Guid;

use super::KmsError;

/// `len` bytes at `off`, or [`KmsError::TooShort`].
pub(crate) fn bytes(b: &[u8], off: usize, len: usize) -> Result<&[u8], KmsError> {
    let end = off.checked_add(len).ok_or(KmsError::TooShort {
        len: b.len(),
        need: usize::MAX,
    })?;
    b.get(off..end).ok_or(KmsError::TooShort {
        len: b.len(),
        need: end,
    })
}

/// A fixed-size array at `off`.
pub(crate) fn array<const N: usize>(b: &[u8], off: usize) -> Result<[u8; N], KmsError> {
    let s = bytes(b, off, N)?;
    let mut out = [0u8; N];
    out.copy_from_slice(s);
    Ok(out)
}

pub(crate) fn u32_at(b: &[u8], off: usize) -> Result<u32, KmsError> {
    array::<4>(b, off).map(u32::from_le_bytes)
}

pub(crate) fn u64_at(b: &[u8], off: usize) -> Result<u64, KmsError> {
    array::<8>(b, off).map(u64::from_le_bytes)
}

pub(crate) fn guid_at(b: &[u8], off: usize) -> Result<Guid, KmsError> {
    array::<16>(b, off).map(Guid::from_wire)
}

/// XOR of two blocks.
pub(crate) fn xor16(a: &[u8; 16], b: &[u8; 16]) -> [u8; 16] {
    let mut out = *a;
    for (o, x) in out.iter_mut().zip(b) {
        *o ^= x;
    }
    out
}
