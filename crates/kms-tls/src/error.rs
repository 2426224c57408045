//! Typed errors: every variant names the file (or the PEM text) it is about, and says what
//! to do where there is something to do.

use std::fmt;
use std::path::PathBuf;

/// What a piece of PEM text is supposed to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PemKind {
    /// The cluster CA certificate (or a bundle of CA certificates).
    CaCertificate,
    /// The cluster CA's private key.
    CaKey,
    /// A node or client certificate (optionally followed by its chain).
    Certificate,
    /// The private key of a node or client certificate.
    Key,
}

impl fmt::Display for PemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PemKind::CaCertificate => "CA certificate",
            PemKind::CaKey => "CA key",
            PemKind::Certificate => "certificate",
            PemKind::Key => "private key",
        })
    }
}

/// Where PEM text came from: its kind and, when it was read from disk, the file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PemSource {
    /// What the text should hold.
    pub kind: PemKind,
    /// The file it was read from; `None` for text handed over in memory.
    pub path: Option<PathBuf>,
}

impl PemSource {
    /// Text read from `path`.
    pub fn file(kind: PemKind, path: impl Into<PathBuf>) -> PemSource {
        PemSource {
            kind,
            path: Some(path.into()),
        }
    }

    /// Text handed over in memory.
    pub fn text(kind: PemKind) -> PemSource {
        PemSource { kind, path: None }
    }
}

impl fmt::Display for PemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{} file {}", self.kind, path.display()),
            None => write!(f, "{}", self.kind),
        }
    }
}

/// Everything that can go wrong while generating, loading or inspecting certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read (missing, a directory, no permission…).
    #[error("cannot read the {file}: {source}")]
    Read {
        /// The file.
        file: PemSource,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text holds no PEM block of the expected label, or a block is damaged.
    #[error("the {file} holds no usable PEM {expected} block: {detail}")]
    NotPem {
        /// The text.
        file: PemSource,
        /// The expected label, e.g. `CERTIFICATE` or `PRIVATE KEY`.
        expected: &'static str,
        /// What was found instead.
        detail: String,
    },
    /// A CERTIFICATE block is not a valid X.509 certificate.
    #[error("the {file} is not a valid X.509 certificate: {detail}")]
    BadCertificate {
        /// The text.
        file: PemSource,
        /// The parser's complaint.
        detail: String,
    },
    /// A private key cannot be used.
    #[error("the {file} is not a usable private key: {detail}")]
    BadKey {
        /// The text.
        file: PemSource,
        /// Why.
        detail: String,
    },
    /// The CA file holds no certificate with `basicConstraints CA:TRUE`.
    #[error(
        "the {file} holds no CA certificate (basicConstraints CA:TRUE); give the cluster CA's \
         ca.crt made by `kmsctl cert create-ca`, not a node or client certificate"
    )]
    NotCa {
        /// The text.
        file: PemSource,
    },
    /// A key does not belong to the certificate it was paired with.
    #[error(
        "the {key} does not belong to the {cert} (their public keys differ); use the key \
         written together with that certificate"
    )]
    KeyMismatch {
        /// The certificate.
        cert: PemSource,
        /// The key.
        key: PemSource,
    },
    /// A certificate was not signed by (any certificate of) the CA file.
    #[error(
        "the {cert} (issuer \"{issuer}\") was not signed by the cluster CA in the {ca}; \
         every node and client certificate must come from the same `kmsctl cert create-ca`"
    )]
    NotIssuedByCa {
        /// The certificate.
        cert: PemSource,
        /// Its issuer name.
        issuer: String,
        /// The CA file.
        ca: PemSource,
    },
    /// A certificate's validity period ended.
    #[error("the {file} expired at {not_after}; issue a new one with `kmsctl cert`")]
    Expired {
        /// The certificate.
        file: PemSource,
        /// End of validity, `YYYY-MM-DD HH:MM:SS UTC`.
        not_after: String,
    },
    /// A certificate's validity period has not begun (or the clock is wrong).
    #[error("the {file} is not valid before {not_before}; check this machine's clock")]
    NotYetValid {
        /// The certificate.
        file: PemSource,
        /// Start of validity, `YYYY-MM-DD HH:MM:SS UTC`.
        not_before: String,
    },
    /// A certificate's extended key usage does not allow what it is used for.
    #[error("the {file} lacks the {usage} extended key usage; {hint}")]
    MissingUsage {
        /// The certificate.
        file: PemSource,
        /// `serverAuth` or `clientAuth`.
        usage: &'static str,
        /// Which certificate to use instead.
        hint: &'static str,
    },
    /// A name, host or number given for a new certificate is not acceptable.
    #[error("invalid {field} `{value}`: {reason}")]
    InvalidInput {
        /// Which input, e.g. `host`.
        field: &'static str,
        /// The value as given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// rcgen could not build or sign a certificate.
    #[error("cannot generate the certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

impl TlsError {
    /// Name the file behind in-memory text of `kind`: every [`PemSource`] of that kind
    /// without a path gets `path`. For callers that read a file themselves and hand its text
    /// to [`create_node`](crate::create_node), [`inspect_pem`](crate::inspect_pem), ….
    #[must_use]
    pub fn locate(mut self, kind: PemKind, path: &std::path::Path) -> TlsError {
        for source in self.sources_mut() {
            if source.kind == kind && source.path.is_none() {
                source.path = Some(path.to_owned());
            }
        }
        self
    }

    fn sources_mut(&mut self) -> Vec<&mut PemSource> {
        match self {
            TlsError::Read { file, .. }
            | TlsError::NotPem { file, .. }
            | TlsError::BadCertificate { file, .. }
            | TlsError::BadKey { file, .. }
            | TlsError::NotCa { file }
            | TlsError::Expired { file, .. }
            | TlsError::NotYetValid { file, .. }
            | TlsError::MissingUsage { file, .. } => vec![file],
            TlsError::KeyMismatch { cert, key } => vec![cert, key],
            TlsError::NotIssuedByCa { cert, ca, .. } => vec![cert, ca],
            TlsError::InvalidInput { .. } | TlsError::Generate(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_names_the_file() {
        let e = TlsError::KeyMismatch {
            cert: PemSource::text(PemKind::CaCertificate),
            key: PemSource::text(PemKind::CaKey),
        }
        .locate(PemKind::CaCertificate, std::path::Path::new("/ca/ca.crt"))
        .locate(PemKind::CaKey, std::path::Path::new("/ca/ca.key"));
        assert_eq!(
            e.to_string(),
            "the CA key file /ca/ca.key does not belong to the CA certificate file /ca/ca.crt \
             (their public keys differ); use the key written together with that certificate"
        );
    }
}
