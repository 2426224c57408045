//! Certificate roles and the authorization rule of the gRPC port.
//!
//! **Encoding.** A certificate's role is a subject alternative name of type URI:
//! `urn:kmsd:role:node`, `urn:kmsd:role:admin` or `urn:kmsd:role:read` ([`ROLE_URI_PREFIX`]
//! followed by the role). A SAN URI rather than the subject's OU because it cannot be mistaken
//! for a host name or an organisational label another tool put there, it is namespaced to
//! kmsd, and TLS libraries carry SANs through untouched. A certificate with no role URI, an
//! unknown role or two different roles has no role and is refused.
//!
//! **Rule.** `node` may do everything (Raft peer calls, and admin calls because nodes forward
//! operators' writes to the leader); `admin` may read and change the cluster; `read` may only
//! read. See [`Role::allows`].

use std::fmt;
use std::str::FromStr;

use tonic::transport::CertificateDer;
use x509_parser::extensions::GeneralName;

/// The prefix of the SAN URI that carries a certificate's role.
pub const ROLE_URI_PREFIX: &str = "urn:kmsd:role:";

/// Who a verified caller is, as written in its certificate by the cluster CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A cluster member (`kmsctl cert create-node`): Raft peer calls and everything an admin
    /// may do.
    Node,
    /// An operator who may change the cluster (`kmsctl cert create-client --role admin`).
    Admin,
    /// An operator or monitor who may only read (`kmsctl cert create-client --role read`).
    Read,
}

impl Role {
    /// All roles, most powerful first.
    pub const ALL: [Role; 3] = [Role::Node, Role::Admin, Role::Read];

    /// The role's name: `node`, `admin` or `read`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Admin => "admin",
            Role::Read => "read",
        }
    }

    /// The SAN URI that carries the role, e.g. `urn:kmsd:role:admin`.
    pub fn uri(self) -> String {
        format!("{ROLE_URI_PREFIX}{}", self.as_str())
    }

    /// Whether the role may perform `action`.
    pub const fn allows(self, action: Action) -> bool {
        matches!(
            (self, action),
            (Role::Node, _)
                | (Role::Admin, Action::Read | Action::Mutate)
                | (Role::Read, Action::Read)
        )
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}` (expected node, admin or read)"))
    }
}

/// The roles a client (operator) certificate may carry; `node` is only given by
/// `create_node`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ClientRole {
    /// May read and change the cluster.
    Admin,
    /// May only read (status, counts, inventory). The default: least privilege.
    #[default]
    Read,
}

impl From<ClientRole> for Role {
    fn from(role: ClientRole) -> Role {
        match role {
            ClientRole::Admin => Role::Admin,
            ClientRole::Read => Role::Read,
        }
    }
}

/// What a gRPC call does, as far as authorization is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Look without changing anything: status, counts, configuration, inventory.
    Read,
    /// Change the cluster: membership, replicated configuration, identity, pruning.
    Mutate,
    /// Raft and node-to-node calls: votes, entries, snapshots, forwarded writes, joins.
    Peer,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Read => "read",
            Action::Mutate => "change the cluster",
            Action::Peer => "make Raft peer calls",
        })
    }
}

/// The role written in the leaf (first) certificate of a verified peer chain, as tonic's
/// `Request::peer_certs()` returns it. `None` when there is no certificate, it does not
/// parse, it has no `urn:kmsd:role:` URI, names an unknown role, or names two different
/// roles.
///
/// This reads the certificate only; the chain must already have been verified against the
/// cluster CA — which tonic's server does when it was built with
/// [`server_config`](crate::server_config).
pub fn role_of(peer_certs: &[CertificateDer<'_>]) -> Option<Role> {
    let leaf = peer_certs.first()?;
    role_of_der(leaf.as_ref())
}

/// The role of one DER certificate (see [`role_of`]).
pub(crate) fn role_of_der(der: &[u8]) -> Option<Role> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    role_of_cert(&cert)
}

/// The role of a parsed certificate (see [`role_of`]).
pub(crate) fn role_of_cert(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<Role> {
    let san = cert.subject_alternative_name().ok()??;
    let mut found: Option<Role> = None;
    for name in &san.value.general_names {
        let GeneralName::URI(uri) = name else {
            continue;
        };
        let Some(rest) = uri.strip_prefix(ROLE_URI_PREFIX) else {
            continue;
        };
        let role = rest.parse::<Role>().ok()?;
        match found {
            Some(previous) if previous != role => return None,
            _ => found = Some(role),
        }
    }
    found
}

/// Allow or refuse `action` for a caller with `role`; a refusal is `PERMISSION_DENIED` with
/// a message that says why and what to use instead.
pub fn authorize(role: Role, action: Action) -> Result<(), tonic::Status> {
    if role.allows(action) {
        return Ok(());
    }
    let message = match action {
        Action::Mutate => format!(
            "certificate role '{role}' may not change the cluster; use an admin certificate \
             (kmsctl cert create-client NAME --role admin)"
        ),
        Action::Peer => format!(
            "certificate role '{role}' may not make Raft peer calls; only node certificates \
             (kmsctl cert create-node) may"
        ),
        // Every role may read; kept for completeness should a role without reads appear.
        Action::Read => format!("certificate role '{role}' may not read cluster state"),
    };
    Err(tonic::Status::permission_denied(message))
}

/// The role of the caller of a request on a TLS server: `UNAUTHENTICATED` when the
/// connection carries no client certificate (a clear-text connection, or a server built
/// without [`server_config`](crate::server_config)), `PERMISSION_DENIED` when the certificate
/// carries no kmsd role.
///
/// Call this only when TLS is on; with `--insecure` there is no caller identity to check.
pub fn request_role<T>(request: &tonic::Request<T>) -> Result<Role, tonic::Status> {
    let certs = request.peer_certs().unwrap_or_default();
    if certs.is_empty() {
        return Err(tonic::Status::unauthenticated(
            "no client certificate: this kmsd requires mutual TLS on its gRPC port; give \
             the cluster CA and a certificate signed by it (kmsctl: --ca, --cert, --key)",
        ));
    }
    role_of(&certs).ok_or_else(|| {
        tonic::Status::permission_denied(format!(
            "the client certificate carries no kmsd role (one SAN URI \
             {ROLE_URI_PREFIX}node|admin|read); issue it with `kmsctl cert create-client` \
             or `kmsctl cert create-node`"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_table() {
        use Action::*;
        let table = [
            (Role::Node, [true, true, true]),
            (Role::Admin, [true, true, false]),
            (Role::Read, [true, false, false]),
        ];
        for (role, expected) in table {
            for (action, allowed) in [Read, Mutate, Peer].into_iter().zip(expected) {
                assert_eq!(role.allows(action), allowed, "{role} {action}");
                assert_eq!(authorize(role, action).is_ok(), allowed, "{role} {action}");
            }
        }
    }

    #[test]
    fn refusals_say_why() {
        let status = authorize(Role::Read, Action::Mutate).unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(
            status.message().starts_with(
                "certificate role 'read' may not change the cluster; use an admin certificate"
            ),
            "{}",
            status.message()
        );
        let status = authorize(Role::Admin, Action::Peer).unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(
            status
                .message()
                .contains("'admin' may not make Raft peer calls")
        );
    }

    #[test]
    fn names_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(role.uri(), format!("urn:kmsd:role:{role}"));
        }
        assert!("root".parse::<Role>().is_err());
        assert_eq!(Role::from(ClientRole::Admin), Role::Admin);
        assert_eq!(Role::from(ClientRole::default()), Role::Read);
    }

    #[test]
    fn no_certificate_no_role() {
        assert_eq!(role_of(&[]), None);
        assert_eq!(
            role_of(&[CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00])]),
            None
        );
    }

    #[test]
    fn request_without_certificate_is_unauthenticated() {
        let status = request_role(&tonic::Request::new(())).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }
}

#[cfg(test)]
mod generated {
    use super::*;
    use crate::generate::{create_ca, create_client, create_node};

    fn der(pem: &str) -> CertificateDer<'static> {
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        CertificateDer::from(block.contents)
    }

    #[test]
    fn roles_of_generated_certificates() {
        let ca = create_ca("CA", 1).unwrap();
        let node = create_node(&ca.cert, &ca.key, "kms1", &[], 1).unwrap();
        let admin = create_client(&ca.cert, &ca.key, "ops", ClientRole::Admin, 1).unwrap();
        let read = create_client(&ca.cert, &ca.key, "grafana", ClientRole::Read, 1).unwrap();
        assert_eq!(role_of(&[der(&node.cert), der(&ca.cert)]), Some(Role::Node));
        assert_eq!(role_of(&[der(&admin.cert)]), Some(Role::Admin));
        assert_eq!(role_of(&[der(&read.cert)]), Some(Role::Read));
        // The CA carries no role; only the leaf (first) certificate counts.
        assert_eq!(role_of(&[der(&ca.cert), der(&admin.cert)]), None);
    }

    #[test]
    fn ambiguous_or_unknown_roles_are_no_role() {
        use rcgen::{CertificateParams, KeyPair, SanType};
        let cert_with = |uris: &[&str]| {
            let mut params = CertificateParams::default();
            params.subject_alt_names = uris
                .iter()
                .map(|u| SanType::URI((*u).try_into().unwrap()))
                .collect();
            let key = KeyPair::generate().unwrap();
            params.self_signed(&key).unwrap().der().clone()
        };
        assert_eq!(
            role_of(&[cert_with(&["urn:kmsd:role:admin", "urn:kmsd:role:read"])]),
            None
        );
        assert_eq!(role_of(&[cert_with(&["urn:kmsd:role:root"])]), None);
        assert_eq!(role_of(&[cert_with(&["https://example.net/"])]), None);
        assert_eq!(
            role_of(&[cert_with(&[
                "https://example.net/",
                "urn:kmsd:role:read",
                "urn:kmsd:role:read"
            ])]),
            Some(Role::Read)
        );
    }
}
