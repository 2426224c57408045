//! Encoding of stored keys and values, and the on-disk format header.
//!
//! * **Header.** The `meta` tree holds [`HEADER_KEY`] = [`MAGIC`] followed by the store format
//!   version as a big-endian `u32` ([`FORMAT_VERSION`]). It says how the trees are laid out.
//! * **Values.** Every stored value (and every snapshot shipped to a peer) is one version byte
//!   followed by the payload. Version [`VALUE_V1`] is bincode 1.3 with its `DefaultOptions`
//!   (varint integers, little-endian). A later build that changes an encoding adds a version and
//!   keeps decoding the old one, so data can be migrated on open or read lazily.
//! * **Keys.** Log indexes and journal sequence numbers are big-endian `u64`, so sled's byte
//!   order is numeric order.
//!
//! Decoding never panics: bincode reads from a slice and checks lengths against what is left,
//! and a size limit equal to the input length bounds any allocation a corrupt length could ask
//! for.

use bincode::Options;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StoreError;

/// Magic at the start of the header value: "kmsd store".
pub const MAGIC: [u8; 8] = *b"KMSDSTOR";

/// The newest store format this build reads and writes.
///
/// History:
/// * 1 — trees `meta`, `log`, `sm`, `snapshot`, `journal`; values in [`VALUE_V1`]; the
///   snapshot data in 4 MiB `chunk/<n>` values of the `snapshot` tree.
/// * 2 — the snapshot data in a file of the `checkpoints` directory, named by the manifest,
///   which also holds its length and CRC-32 (sled kept every chunk it read or wrote in memory:
///   ≈ 100 MB more per node at a million clients). A format-1 store is migrated on open.
pub const FORMAT_VERSION: u32 = 2;

/// Key of the format header in the `meta` tree.
pub const HEADER_KEY: &[u8] = b"format";

/// Value encoding version 1: bincode 1.3 `DefaultOptions` (varint, little-endian).
pub const VALUE_V1: u8 = 1;

fn options() -> impl Options {
    bincode::DefaultOptions::new()
}

/// Encode `value` as `[VALUE_V1] ++ bincode(value)`.
pub fn encode<T: Serialize + ?Sized>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    let size = options()
        .serialized_size(value)
        .map_err(|e| StoreError::Encode {
            what,
            detail: e.to_string(),
        })?;
    let mut out = Vec::with_capacity(1 + usize::try_from(size).unwrap_or(0));
    out.push(VALUE_V1);
    options()
        .serialize_into(&mut out, value)
        .map_err(|e| StoreError::Encode {
            what,
            detail: e.to_string(),
        })?;
    Ok(out)
}

/// Decode a value written by [`encode`]; the whole input must be consumed.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    let payload = payload(what, bytes)?;
    options()
        .with_limit(payload.len() as u64)
        .deserialize(payload)
        .map_err(|e| StoreError::corrupt(what, e))
}

/// Decode a value written by [`encode`] from `reader`, which yields exactly `len` bytes: the
/// large-value form of [`decode`] (the snapshot at start-up), which never holds the whole
/// encoding in memory. The whole input must be consumed.
pub fn decode_reader<T: DeserializeOwned, R: std::io::Read>(
    what: &'static str,
    mut reader: R,
    len: u64,
) -> Result<T, StoreError> {
    let mut version = [0u8; 1];
    reader
        .read_exact(&mut version)
        .map_err(|e| StoreError::corrupt(what, e))?;
    // The version byte alone: the same check as for an in-memory value.
    payload(what, &version)?;
    let mut counted = CountingReader {
        inner: reader,
        read: 0,
    };
    let payload_len = len.saturating_sub(1);
    let value = options()
        .with_limit(payload_len)
        .deserialize_from(&mut counted)
        .map_err(|e| StoreError::corrupt(what, e))?;
    let mut rest = [0u8; 1];
    let trailing = counted
        .inner
        .read(&mut rest)
        .map_err(|e| StoreError::corrupt(what, e))?;
    if counted.read != payload_len || trailing != 0 {
        return Err(StoreError::corrupt(
            what,
            format!(
                "{} trailing bytes",
                payload_len.saturating_sub(counted.read)
            ),
        ));
    }
    Ok(value)
}

/// A reader that counts the bytes it hands out.
struct CountingReader<R> {
    inner: R,
    read: u64,
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Decode only the first field(s) of a value written by [`encode`], ignoring the rest.
///
/// bincode writes struct fields in order, so a struct's leading field can be read on its own
/// (used to read a log entry's id without decoding its payload).
pub fn decode_prefix<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    let payload = payload(what, bytes)?;
    options()
        .with_limit(payload.len() as u64)
        .allow_trailing_bytes()
        .deserialize(payload)
        .map_err(|e| StoreError::corrupt(what, e))
}

fn payload<'a>(what: &'static str, bytes: &'a [u8]) -> Result<&'a [u8], StoreError> {
    match bytes.split_first() {
        None => Err(StoreError::corrupt(what, "empty value")),
        Some((&VALUE_V1, rest)) => Ok(rest),
        Some((&version, _)) => Err(StoreError::UnsupportedValueVersion { what, version }),
    }
}

/// A `u64` as a big-endian key.
pub fn u64_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Parse a big-endian `u64` key.
pub fn parse_u64_key(what: &'static str, key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::corrupt(what, format!("key of {} bytes, want 8", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

/// The header value for [`FORMAT_VERSION`].
pub fn header_value(version: u32) -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&version.to_be_bytes());
    v
}

/// Parse a header value and return its format version.
pub fn parse_header(bytes: &[u8]) -> Result<u32, StoreError> {
    let Some((magic, version)) = bytes.split_first_chunk::<8>() else {
        return Err(StoreError::NotAKmsdStore {
            detail: format!("header of {} bytes", bytes.len()),
        });
    };
    if *magic != MAGIC {
        return Err(StoreError::NotAKmsdStore {
            detail: "header magic mismatch".to_string(),
        });
    }
    let version: [u8; 4] = version.try_into().map_err(|_| StoreError::NotAKmsdStore {
        detail: format!("header of {} bytes", bytes.len()),
    })?;
    Ok(u32::from_be_bytes(version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_round_trip_and_version_byte() {
        let bytes = encode("t", &(7u64, "x".to_string())).unwrap();
        assert_eq!(bytes[0], VALUE_V1);
        let back: (u64, String) = decode("t", &bytes).unwrap();
        assert_eq!(back, (7, "x".to_string()));
    }

    #[test]
    fn unknown_value_version_is_typed() {
        let mut bytes = encode("t", &1u32).unwrap();
        bytes[0] = 9;
        assert!(matches!(
            decode::<u32>("t", &bytes),
            Err(StoreError::UnsupportedValueVersion { version: 9, .. })
        ));
    }

    /// Hands out at most `step` bytes per read, as a chunked source may.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn reader_decode_matches_slice_decode_and_checks_the_length() {
        let value: Vec<(u64, String)> = (0..500).map(|i| (i, format!("name-{i}"))).collect();
        let bytes = encode("t", &value).unwrap();
        let len = bytes.len() as u64;
        for step in [1, 3, 4096, usize::MAX] {
            let back: Vec<(u64, String)> =
                decode_reader("t", Trickle { data: &bytes, step }, len).unwrap();
            assert_eq!(back, value);
        }
        // Cut short, trailing bytes, a length that disagrees, another version: errors.
        let short = &bytes[..bytes.len() - 1];
        assert!(decode_reader::<Vec<(u64, String)>, _>("t", short, len).is_err());
        let long = [&bytes[..], &[0u8][..]].concat();
        assert!(decode_reader::<Vec<(u64, String)>, _>("t", &long[..], len).is_err());
        assert!(decode_reader::<Vec<(u64, String)>, _>("t", &bytes[..], len + 1).is_err());
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(matches!(
            decode_reader::<Vec<(u64, String)>, _>("t", &other[..], len),
            Err(StoreError::UnsupportedValueVersion { version: 9, .. })
        ));
        // A huge length prefix must not allocate.
        let mut huge = vec![VALUE_V1, 0xFF];
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_reader::<Vec<u64>, _>("t", &huge[..], huge.len() as u64).is_err());
        assert!(decode_reader::<u8, _>("t", &[][..], 0).is_err());
    }

    #[test]
    fn corrupt_values_are_errors_not_panics() {
        assert!(decode::<u32>("t", &[]).is_err());
        // A huge length prefix must not allocate.
        let mut bytes = vec![VALUE_V1, 0xFF];
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode::<Vec<u64>>("t", &bytes).is_err());
        assert!(decode::<String>("t", &bytes).is_err());
        // Trailing bytes are refused by the full decoder, accepted by the prefix decoder.
        let mut bytes = encode("t", &5u8).unwrap();
        bytes.push(0);
        assert!(decode::<u8>("t", &bytes).is_err());
        assert_eq!(decode_prefix::<u8>("t", &bytes).unwrap(), 5);
    }

    #[test]
    fn header_round_trip() {
        assert_eq!(parse_header(&header_value(3)).unwrap(), 3);
        assert!(matches!(
            parse_header(b"short"),
            Err(StoreError::NotAKmsdStore { .. })
        ));
        assert!(matches!(
            parse_header(b"XXXXXXXX\0\0\0\x01"),
            Err(StoreError::NotAKmsdStore { .. })
        ));
    }
}
