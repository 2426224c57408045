//! The cluster CA and the certificates it signs (what `kmsctl cert create-*` writes).
//!
//! Every key is a fresh ECDSA P-256 key (rcgen's default, supported by every TLS stack
//! kmsd talks to), returned as unencrypted PKCS#8 PEM for the caller to store with mode
//! 0600. Validity starts one hour in the past, so that nodes whose clocks lag a little
//! accept a certificate issued a moment ago.
//!
//! | certificate | subject | SANs | extended key usage | role URI |
//! |---|---|---|---|---|
//! | CA | `CN=<name>` | — | — (CA:TRUE, pathlen 0, keyCertSign) | — |
//! | node | `CN=<node name>` | node name, every `--host` (DNS or IP), role URI | serverAuth, clientAuth | `urn:kmsd:role:node` |
//! | client | `CN=<name>` | role URI | clientAuth | `urn:kmsd:role:admin` or `:read` |

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::error::{PemKind, PemSource, TlsError};
use crate::pem;
use crate::role::{ClientRole, Role};

/// The longest validity accepted, in days (100 years).
pub const MAX_VALIDITY_DAYS: u32 = 36_500;

/// How far into the past a new certificate's validity starts (clock skew between nodes).
const BACKDATE: Duration = Duration::from_secs(3600);

/// A new certificate and its private key, both PEM. `Debug` shows the certificate only.
#[derive(Clone, PartialEq, Eq)]
pub struct PemPair {
    /// The certificate, one `CERTIFICATE` block.
    pub cert: String,
    /// The private key, one unencrypted PKCS#8 `PRIVATE KEY` block. Secret.
    pub key: String,
}

impl fmt::Debug for PemPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemPair")
            .field("cert", &self.cert)
            .field("key", &"[secret]")
            .finish()
    }
}

/// A new self-signed cluster CA named `common_name`, valid for `validity_days` days. It may
/// sign leaf certificates only (path length 0).
pub fn create_ca(common_name: &str, validity_days: u32) -> Result<PemPair, TlsError> {
    check_common_name("CA name", common_name)?;
    let mut params = base_params(common_name, validity_days)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(PemPair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A node certificate for `node_name`, signed by the CA: usable as TLS server and client,
/// with SANs for the node name and every entry of `hosts` (DNS names and IP addresses, in
/// order, duplicates dropped) and the role `node`.
///
/// Peers and kmsctl check the name they dial against these SANs, so `hosts` must hold every
/// name and address the node is reached by (its `--advertise` host, the hosts in
/// `--initial-cluster`, a load balancer name, `127.0.0.1` for a local kmsctl).
pub fn create_node(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    node_name: &str,
    hosts: &[String],
    validity_days: u32,
) -> Result<PemPair, TlsError> {
    let node_san = host_san("node name", node_name)?;
    let mut sans = vec![node_san];
    for host in hosts {
        let san = host_san("host", host)?;
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    sans.push(role_san(Role::Node)?);
    let mut params = base_params(node_name, validity_days)?;
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    sign_leaf(ca_cert_pem, ca_key_pem, params)
}

/// A client (operator) certificate named `name` with `role`, signed by the CA, usable as a
/// TLS client only.
pub fn create_client(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    name: &str,
    role: ClientRole,
    validity_days: u32,
) -> Result<PemPair, TlsError> {
    check_client_name(name)?;
    let mut params = base_params(name, validity_days)?;
    params.subject_alt_names = vec![role_san(Role::from(role))?];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    sign_leaf(ca_cert_pem, ca_key_pem, params)
}

/// Client names become file names (`client.<NAME>.crt`): letters, digits, `.`, `_`, `-`,
/// not starting with `.` or `-`, at most 64 characters.
pub fn check_client_name(name: &str) -> Result<(), TlsError> {
    let invalid = |reason: &str| TlsError::InvalidInput {
        field: "client name",
        value: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.is_empty() || name.len() > 64 {
        return Err(invalid("must be 1 to 64 characters"));
    }
    if name.starts_with(['.', '-']) {
        return Err(invalid("must not start with `.` or `-`"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(invalid(
            "only letters, digits, `.`, `_` and `-` are allowed",
        ));
    }
    Ok(())
}

/// A subject common name: 1 to 64 characters (the X.520 upper bound), no control characters.
fn check_common_name(field: &'static str, name: &str) -> Result<(), TlsError> {
    let invalid = |reason: &str| TlsError::InvalidInput {
        field,
        value: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.trim().is_empty() || name.chars().count() > 64 {
        return Err(invalid("must be 1 to 64 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid("must not contain control characters"));
    }
    Ok(())
}

/// A host for a SAN: an IP address, or a DNS name of letters, digits, `-` and `.` labels
/// (a leading `*.` wildcard label allowed). Catches the common `host:port` mistake.
fn host_san(field: &'static str, host: &str) -> Result<SanType, TlsError> {
    let invalid = |reason: String| TlsError::InvalidInput {
        field,
        value: host.to_owned(),
        reason,
    };
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    if let Some((name, port)) = host.rsplit_once(':')
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(invalid(format!(
            "looks like HOST:PORT; give the host only (`{name}`) — certificates name hosts, \
             not ports"
        )));
    }
    if host.is_empty() || host.len() > 253 {
        return Err(invalid("a DNS name is 1 to 253 characters".to_owned()));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let labels: Vec<&str> = name.split('.').collect();
    for (i, label) in labels.iter().enumerate() {
        let wildcard = i == 0 && *label == "*" && labels.len() > 2;
        let ok = wildcard
            || (!label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        if !ok {
            return Err(invalid(format!(
                "not an IP address or a DNS name (label `{label}`: letters, digits and `-`, \
                 1 to 63 characters)"
            )));
        }
    }
    let ia5 = name
        .to_ascii_lowercase()
        .try_into()
        .map_err(|e: rcgen::Error| invalid(e.to_string()))?;
    Ok(SanType::DnsName(ia5))
}

/// The SAN URI carrying `role`.
fn role_san(role: Role) -> Result<SanType, TlsError> {
    Ok(SanType::URI(role.uri().try_into()?))
}

/// Parameters every certificate shares: `CN=common_name`, validity from an hour ago for
/// `validity_days` days. The serial number is left to rcgen: 20 bytes of the SHA-256 of the
/// new (fresh, random) public key, so no two certificates share one.
fn base_params(common_name: &str, validity_days: u32) -> Result<CertificateParams, TlsError> {
    check_common_name("name", common_name)?;
    if validity_days == 0 || validity_days > MAX_VALIDITY_DAYS {
        return Err(TlsError::InvalidInput {
            field: "validity days",
            value: validity_days.to_string(),
            reason: format!("must be 1 to {MAX_VALIDITY_DAYS}"),
        });
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.not_before = epoch + now.saturating_sub(BACKDATE);
    params.not_after = epoch + now + Duration::from_secs(u64::from(validity_days) * 86_400);
    Ok(params)
}

/// Sign a leaf certificate with the CA: checks that the CA text is a CA certificate and
/// that the key is its key, so a mixed-up CA directory fails here and not at the first
/// handshake.
fn sign_leaf(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    mut params: CertificateParams,
) -> Result<PemPair, TlsError> {
    let ca_source = PemSource::text(PemKind::CaCertificate);
    let key_source = PemSource::text(PemKind::CaKey);
    let ca_ders = pem::certificates(ca_cert_pem.as_bytes(), &ca_source)?;
    let ca_der = &ca_ders[0];
    let ca = pem::parse_certificate(ca_der, &ca_source)?;
    if !ca.is_ca() {
        return Err(TlsError::NotCa { file: ca_source });
    }
    let key_block = pem::private_key(ca_key_pem.as_bytes(), &key_source)?;
    let ca_key = KeyPair::try_from(key_block.der.as_slice()).map_err(|e| TlsError::BadKey {
        file: key_source.clone(),
        detail: format!(
            "{e} (an unencrypted PKCS#8 key as written by `kmsctl cert create-ca` is needed)"
        ),
    })?;
    if ca_key.public_key_raw() != ca.public_key().subject_public_key.data.as_ref() {
        return Err(TlsError::KeyMismatch {
            cert: ca_source,
            key: key_source,
        });
    }
    let issuer = Issuer::from_ca_cert_der(&ca_der.as_slice().into(), ca_key)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(PemPair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::inspect_pem;

    fn ca() -> PemPair {
        create_ca("kmsd test CA", 30).unwrap()
    }

    #[test]
    fn ca_is_a_ca() {
        let ca = ca();
        let info = &inspect_pem(ca.cert.as_bytes()).unwrap()[0];
        assert!(info.is_ca);
        assert_eq!(info.subject, "CN=kmsd test CA");
        assert_eq!(info.subject, info.issuer);
        assert!(info.role.is_none());
        assert!(ca.key.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
        let days = (info.not_after - info.not_before) / 86_400;
        assert_eq!(days, 30, "30 days plus the one-hour backdate");
    }

    #[test]
    fn node_has_sans_both_usages_and_role() {
        let ca = ca();
        let hosts = [
            "KMS1.example.net".to_owned(),
            "10.0.0.1".to_owned(),
            "[::1]".to_owned(),
            "kms1".to_owned(),
        ];
        let node = create_node(&ca.cert, &ca.key, "kms1", &hosts, 365).unwrap();
        let info = &inspect_pem(node.cert.as_bytes()).unwrap()[0];
        assert_eq!(info.subject, "CN=kms1");
        assert_eq!(info.issuer, "CN=kmsd test CA");
        assert!(!info.is_ca);
        assert_eq!(info.role, Some(Role::Node));
        assert_eq!(
            info.sans,
            [
                "DNS:kms1",
                "DNS:kms1.example.net",
                "IP:10.0.0.1",
                "IP:::1",
                "URI:urn:kmsd:role:node"
            ]
        );
        assert_eq!(info.extended_key_usage, ["serverAuth", "clientAuth"]);
    }

    #[test]
    fn client_roles() {
        let ca = ca();
        for (role, expected) in [
            (ClientRole::Admin, Role::Admin),
            (ClientRole::Read, Role::Read),
        ] {
            let client = create_client(&ca.cert, &ca.key, "alice", role, 90).unwrap();
            let info = &inspect_pem(client.cert.as_bytes()).unwrap()[0];
            assert_eq!(info.subject, "CN=alice");
            assert_eq!(info.role, Some(expected));
            assert_eq!(info.extended_key_usage, ["clientAuth"]);
            assert_eq!(info.sans, [format!("URI:urn:kmsd:role:{expected}")]);
        }
    }

    #[test]
    fn bad_inputs_are_refused_with_reasons() {
        let ca = ca();
        let err = create_node(&ca.cert, &ca.key, "kms1", &["kms1:1689".to_owned()], 1).unwrap_err();
        assert!(err.to_string().contains("looks like HOST:PORT"), "{err}");
        let err = create_node(&ca.cert, &ca.key, "bad name", &[], 1).unwrap_err();
        assert!(
            err.to_string().contains("invalid node name `bad name`"),
            "{err}"
        );
        let err = create_node(&ca.cert, &ca.key, "kms1", &[], 0).unwrap_err();
        assert!(err.to_string().contains("validity days"), "{err}");
        let err = create_client(&ca.cert, &ca.key, "../etc", ClientRole::Admin, 1).unwrap_err();
        assert!(err.to_string().contains("client name"), "{err}");
        assert!(create_ca("", 1).is_err());
    }

    #[test]
    fn signing_needs_the_ca_and_its_own_key() {
        let ca = ca();
        let other = ca_other();
        // The key of another CA.
        let err = create_node(&ca.cert, &other.key, "kms1", &[], 1).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        // A leaf is not a CA.
        let node = create_node(&ca.cert, &ca.key, "kms1", &[], 1).unwrap();
        let err = create_node(&node.cert, &node.key, "kms2", &[], 1).unwrap_err();
        assert!(matches!(err, TlsError::NotCa { .. }), "{err}");
        // Key and certificate swapped.
        let err = create_node(&ca.key, &ca.cert, "kms1", &[], 1).unwrap_err();
        assert!(matches!(err, TlsError::NotPem { .. }), "{err}");
        assert!(err.to_string().contains("this is a key file"), "{err}");
    }

    fn ca_other() -> PemPair {
        create_ca("another CA", 30).unwrap()
    }

    #[test]
    fn serials_differ() {
        let ca = ca();
        let a = create_client(&ca.cert, &ca.key, "a", ClientRole::Read, 1).unwrap();
        let b = create_client(&ca.cert, &ca.key, "a", ClientRole::Read, 1).unwrap();
        let a = &inspect_pem(a.cert.as_bytes()).unwrap()[0];
        let b = &inspect_pem(b.cert.as_bytes()).unwrap()[0];
        assert_ne!(a.serial, b.serial);
    }
}
