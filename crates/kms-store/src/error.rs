//! Typed errors of the storage layer.
//!
//! Every failure of this crate is a [`StoreError`]. At the openraft trait boundary it becomes an
//! [`std::io::Error`] (kind `Other`) that still carries the `StoreError` as its inner error, so
//! callers can `downcast_ref::<StoreError>()` it back; openraft itself wraps that into its
//! `StorageError` and stops the node (storage errors are fatal for Raft, by design).

use std::fmt;
use std::io;

/// An error of the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The embedded database (sled) failed: I/O error, corruption it detected itself, or the data
    /// directory is locked by another process.
    #[error("database error: {0}")]
    Database(#[from] DatabaseError),

    /// The directory holds a sled database that was not written by kmsd (its `meta` tree has a
    /// different magic), or a kmsd store whose header is missing while data is present.
    #[error("not a kmsd store: {detail}")]
    NotAKmsdStore {
        /// What was found instead.
        detail: String,
    },

    /// The store was written by a newer kmsd with an on-disk format this build does not know.
    /// Nothing was modified; run the newer kmsd (or restore a backup).
    #[error(
        "on-disk format version {found} is newer than this build supports ({supported}); refusing to open"
    )]
    UnsupportedFormat {
        /// The format version in the store's header.
        found: u32,
        /// The newest format version this build reads and writes.
        supported: u32,
    },

    /// A stored value starts with a value-encoding version this build does not know.
    #[error("{what}: unknown value encoding version {version}")]
    UnsupportedValueVersion {
        /// Which value (e.g. `"log entry"`).
        what: &'static str,
        /// The version byte found.
        version: u8,
    },

    /// A stored value or key could not be decoded.
    #[error("{what}: corrupt stored data: {detail}")]
    Corrupt {
        /// Which value or key.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },

    /// A value could not be encoded (a serializer error; not expected for well-formed types).
    #[error("{what}: cannot encode: {detail}")]
    Encode {
        /// Which value.
        what: &'static str,
        /// The serializer's message.
        detail: String,
    },

    /// Reading or writing a checkpoint file failed.
    #[error("{what}: {source}")]
    File {
        /// Which file (e.g. `"checkpoint"`).
        what: &'static str,
        /// The I/O error.
        #[source]
        source: io::Error,
    },

    /// Restoring the state machine needs a log entry that is not in the log.
    #[error("log entry {index} is missing but needed to restore the state machine")]
    MissingLogEntry {
        /// The missing index.
        index: u64,
    },

    /// A background task (blocking I/O worker) failed to complete.
    #[error("storage task failed: {0}")]
    Task(String),
}

/// The error of the embedded database, kept opaque so that no caller depends on sled.
#[derive(Debug)]
pub struct DatabaseError(sled::Error);

impl fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for DatabaseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            sled::Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Database(DatabaseError(e))
    }
}

impl From<sled::transaction::TransactionError<StoreError>> for StoreError {
    fn from(e: sled::transaction::TransactionError<StoreError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => e.into(),
        }
    }
}

impl From<StoreError> for io::Error {
    fn from(e: StoreError) -> Self {
        io::Error::other(e)
    }
}

impl StoreError {
    pub(crate) fn corrupt(what: &'static str, detail: impl fmt::Display) -> Self {
        StoreError::Corrupt {
            what,
            detail: detail.to_string(),
        }
    }
}
