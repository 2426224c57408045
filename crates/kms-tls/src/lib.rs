//! # kms-tls — TLS for kmsd's gRPC port
//!
//! What this crate is for: everything kmsd and kmsctl need to secure the gRPC port (1689),
//! which carries both Raft traffic between nodes and the operators' admin API.
//!
//! * [`generate`] — the cluster CA and the certificates it signs, like CockroachDB's
//!   `cert create-ca|create-node|create-client`: ECDSA P-256 keys, node certificates for
//!   TLS servers *and* clients (nodes dial each other), client certificates for operators.
//! * [`load`] — PEM files on disk ([`TlsFiles`]) into tonic's [`ServerTlsConfig`] (mutual TLS:
//!   every caller must present a certificate signed by the cluster CA) and
//!   [`ClientTlsConfig`], checked first so that a wrong, missing, expired or mismatched file
//!   is reported by name instead of as a failed handshake later.
//! * [`role`] — who a caller is: the [`Role`] written into its certificate (a SAN URI
//!   `urn:kmsd:role:node|admin|read`), read back from tonic's `Request::peer_certs()`, and
//!   [`authorize`] which says *why* a call is refused.
//! * [`inspect`] — what `kmsctl cert show` prints about a certificate.
//!
//! The role is trusted because the CA signed it: anyone holding the CA key can mint any role,
//! so the CA key belongs offline (see `docs/security.md`).
//!
//! What this crate must never do: accept a peer without verifying its chain to the cluster
//! CA (no "dangerous" verifiers, no optional client authentication), grant a role that is
//! not written in a verified certificate, fall back to clear text, write key material
//! anywhere (files are kmsctl's job; this crate returns PEM text), or put private key bytes
//! into an error message or a `Debug` output.
//!
//! [`ServerTlsConfig`]: tonic::transport::ServerTlsConfig
//! [`ClientTlsConfig`]: tonic::transport::ClientTlsConfig

pub mod error;
pub mod generate;
pub mod inspect;
pub mod load;
mod pem;
pub mod role;

pub use error::{PemKind, PemSource, TlsError};
pub use generate::{
    MAX_VALIDITY_DAYS, PemPair, check_client_name, create_ca, create_client, create_node,
};
pub use inspect::{CertInfo, format_utc, inspect_pem};
pub use load::{
    CA_CERT_FILE, CA_KEY_FILE, HANDSHAKE_TIMEOUT, LoadedTls, NODE_CERT_FILE, NODE_KEY_FILE,
    TlsFiles, client_cert_file, client_config, client_key_file, server_config,
};
pub use role::{Action, ClientRole, ROLE_URI_PREFIX, Role, authorize, request_role, role_of};
