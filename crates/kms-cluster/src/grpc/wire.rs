//! The wire format of `kms.raft.v1`: versions and the encoding of `bytes` payloads.
//!
//! # Encoding (wire version 1)
//!
//! Every `bytes` payload is a bincode 1.3 encoding with bincode's `DefaultOptions` (varint
//! integers, little-endian), of the Rust type named in `proto/kms/raft/v1/raft.proto`. Decoding
//! is bounded by the input (a size limit equal to the payload length caps any allocation a
//! corrupt length prefix asks for) and must consume the whole payload. It never panics.
//!
//! Why bincode and not JSON: it is what kms-store already uses for the Raft log (an entry
//! crosses the wire in its on-disk form), it is compact (record batches are most of the
//! traffic), and every openraft and kms-core type round-trips through it (openraft avoids the
//! serde attributes positional formats cannot express — `tag`, `untagged`, `flatten`,
//! `skip_serializing_if` — in its wire types; the integration tests check every message). The
//! price is that bincode is positional: a field added to any of these types changes the wire
//! format. openraft is pinned to an exact version, and a golden-bytes test catches a layout
//! change on upgrade; such a change needs a new [`WIRE_VERSION`].
//!
//! # Versions and rolling upgrades
//!
//! * New behaviour or layout only comes with a new version; a version's meaning never changes.
//! * A server accepts [`MIN_WIRE_VERSION`]`..=`[`WIRE_VERSION`] (its version N and N-1) and
//!   answers in the request's version; anything else is refused with `FAILED_PRECONDITION`
//!   ([`WireError::UnsupportedVersion`]) and the trailers [`MIN_VERSION_KEY`] /
//!   [`MAX_VERSION_KEY`].
//! * A client speaks [`WIRE_VERSION`] and, refused, retries once with the highest version both
//!   sides accept ([`fallback_version`]).

use bincode::Options;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::metadata::MetadataMap;
use tonic::metadata::MetadataValue;

/// The wire format version this build speaks.
///
/// History:
/// * 1 — bincode 1.3 `DefaultOptions` payloads of openraft 0.10.0-alpha.37 / kms-core types.
pub const WIRE_VERSION: u32 = 1;

/// The oldest wire format version this build still accepts (N-1, but never below 1).
pub const MIN_WIRE_VERSION: u32 = if WIRE_VERSION > 1 {
    WIRE_VERSION - 1
} else {
    1
};

/// Trailer of a version refusal: the oldest version the server accepts.
pub const MIN_VERSION_KEY: &str = "kms-wire-min";
/// Trailer of a version refusal: the newest version the server accepts.
pub const MAX_VERSION_KEY: &str = "kms-wire-max";

/// A problem with a message on the wire. Converted to a [`tonic::Status`] at the server edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The message's wire format version is not one this node accepts.
    #[error(
        "wire format version {found} is not supported: this node accepts versions {min}..={max} \
         (see proto/kms/raft/v1/raft.proto for the rolling-upgrade rule)"
    )]
    UnsupportedVersion {
        /// The version in the message.
        found: u32,
        /// Oldest accepted version.
        min: u32,
        /// Newest accepted version.
        max: u32,
    },
    /// A payload could not be decoded.
    #[error("{what}: cannot decode payload: {detail}")]
    Decode {
        /// Which payload.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// A value could not be encoded (not expected for well-formed values).
    #[error("{what}: cannot encode: {detail}")]
    Encode {
        /// Which value.
        what: &'static str,
        /// The serializer's complaint.
        detail: String,
    },
    /// A required field or message is missing.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// The message is well-formed but not acceptable here (e.g. a snapshot stream out of order).
    #[error("{0}")]
    Invalid(String),
    /// A snapshot is larger than this node accepts.
    #[error("snapshot of {announced} bytes exceeds the limit of {limit} bytes")]
    SnapshotTooLarge {
        /// Size announced by the sender.
        announced: u64,
        /// This node's limit.
        limit: u64,
    },
}

impl From<WireError> for tonic::Status {
    fn from(e: WireError) -> tonic::Status {
        match &e {
            WireError::UnsupportedVersion { min, max, .. } => {
                let mut md = MetadataMap::new();
                md.insert(MIN_VERSION_KEY, MetadataValue::from(*min));
                md.insert(MAX_VERSION_KEY, MetadataValue::from(*max));
                tonic::Status::with_metadata(tonic::Code::FailedPrecondition, e.to_string(), md)
            }
            WireError::Decode { .. } | WireError::Missing(_) | WireError::Invalid(_) => {
                tonic::Status::invalid_argument(e.to_string())
            }
            WireError::SnapshotTooLarge { .. } => tonic::Status::resource_exhausted(e.to_string()),
            WireError::Encode { .. } => tonic::Status::internal(e.to_string()),
        }
    }
}

/// Check a received message's version; returns it (the version to answer in).
pub fn check_version(found: u32) -> Result<u32, WireError> {
    if (MIN_WIRE_VERSION..=WIRE_VERSION).contains(&found) {
        Ok(found)
    } else {
        Err(WireError::UnsupportedVersion {
            found,
            min: MIN_WIRE_VERSION,
            max: WIRE_VERSION,
        })
    }
}

/// The version to retry with after `status` refused a request sent in `sent`: the highest
/// version both this build and the server accept, if it is lower than `sent`.
pub fn fallback_version(status: &tonic::Status, sent: u32) -> Option<u32> {
    if status.code() != tonic::Code::FailedPrecondition {
        return None;
    }
    let read = |key: &str| -> Option<u32> {
        status
            .metadata()
            .get(key)?
            .to_str()
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let (min, max) = (read(MIN_VERSION_KEY)?, read(MAX_VERSION_KEY)?);
    let v = max.min(WIRE_VERSION);
    (v >= min && v >= MIN_WIRE_VERSION && v < sent).then_some(v)
}

fn options() -> impl Options {
    bincode::DefaultOptions::new()
}

/// Encode a payload (wire version 1).
pub fn encode<T: Serialize + ?Sized>(what: &'static str, value: &T) -> Result<Vec<u8>, WireError> {
    options().serialize(value).map_err(|e| WireError::Encode {
        what,
        detail: e.to_string(),
    })
}

/// Decode a payload written by [`encode`]; the whole input must be consumed.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, WireError> {
    options()
        .with_limit(bytes.len() as u64)
        .deserialize(bytes)
        .map_err(|e| WireError::Decode {
            what,
            detail: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_checked() {
        assert_eq!(check_version(WIRE_VERSION), Ok(WIRE_VERSION));
        assert!(matches!(
            check_version(0),
            Err(WireError::UnsupportedVersion { found: 0, .. })
        ));
        assert!(check_version(WIRE_VERSION + 1).is_err());
    }

    #[test]
    fn refusal_carries_the_accepted_range() {
        let status: tonic::Status = check_version(99).unwrap_err().into();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(status.message().contains("99"));
        // This build's own version is never a fallback from itself.
        assert_eq!(fallback_version(&status, WIRE_VERSION), None);
        // A client on a newer version falls back to ours.
        assert_eq!(
            fallback_version(&status, WIRE_VERSION + 1),
            Some(WIRE_VERSION)
        );
        let other = tonic::Status::invalid_argument("x");
        assert_eq!(fallback_version(&other, WIRE_VERSION + 1), None);
    }

    #[test]
    fn decode_rejects_trailing_bytes_and_garbage() {
        let mut bytes = encode("n", &7u64).unwrap();
        assert_eq!(decode::<u64>("n", &bytes), Ok(7));
        bytes.push(0);
        assert!(decode::<u64>("n", &bytes).is_err());
        // A huge length prefix does not allocate.
        assert!(
            decode::<Vec<u8>>("v", &[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f])
                .is_err()
        );
    }
}
