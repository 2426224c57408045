//! PEM files on disk into tonic's TLS configurations, checked first.
//!
//! tonic only parses PEM when a server starts or a channel connects, and then reports
//! "Error parsing TLS certificate" without saying which file. [`LoadedTls::load`] reads the
//! three files itself and refuses, naming the file, when one is missing or unreadable, holds
//! no PEM of the right kind, the key does not belong to the certificate, the certificate was
//! not signed by the CA file, or it is expired or not yet valid. The configurations it then
//! builds use exactly the bytes it checked.
//!
//! The CA file may hold several CA certificates (a bundle): during a CA rotation nodes trust
//! the old and the new CA at once (see `docs/security.md`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::KeyPair;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use x509_parser::certificate::X509Certificate;

use crate::error::{PemKind, PemSource, TlsError};
use crate::inspect::{CertInfo, format_utc};
use crate::pem;

/// How long a server waits for a client to finish the TLS handshake before dropping it.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// File name of the CA certificate in a directory written by `kmsctl cert`.
pub const CA_CERT_FILE: &str = "ca.crt";
/// File name of the CA key in the CA directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of a node's certificate in its directory.
pub const NODE_CERT_FILE: &str = "node.crt";
/// File name of a node's key in its directory.
pub const NODE_KEY_FILE: &str = "node.key";

/// File name of client `name`'s certificate: `client.<name>.crt`.
pub fn client_cert_file(name: &str) -> String {
    format!("client.{name}.crt")
}

/// File name of client `name`'s key: `client.<name>.key`.
pub fn client_key_file(name: &str) -> String {
    format!("client.{name}.key")
}

/// The three PEM files of a node or client: the cluster CA certificate(s), this party's
/// certificate, and its private key (kmsd `--tls-ca --tls-cert --tls-key`; kmsctl `--ca
/// --cert --key`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsFiles {
    /// The cluster CA certificate, or a bundle of CA certificates.
    pub ca: PathBuf,
    /// This node's or client's certificate (optionally followed by its chain).
    pub cert: PathBuf,
    /// The private key of `cert`.
    pub key: PathBuf,
}

impl TlsFiles {
    /// The three files as given.
    pub fn new(ca: impl Into<PathBuf>, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        TlsFiles {
            ca: ca.into(),
            cert: cert.into(),
            key: key.into(),
        }
    }

    /// `DIR/ca.crt`, `DIR/node.crt`, `DIR/node.key`: what `kmsctl cert create-node --out-dir
    /// DIR` writes.
    pub fn node_dir(dir: &Path) -> Self {
        TlsFiles::new(
            dir.join(CA_CERT_FILE),
            dir.join(NODE_CERT_FILE),
            dir.join(NODE_KEY_FILE),
        )
    }

    /// `DIR/ca.crt`, `DIR/client.NAME.crt`, `DIR/client.NAME.key`: what `kmsctl cert
    /// create-client NAME --out-dir DIR` writes.
    pub fn client_dir(dir: &Path, name: &str) -> Self {
        TlsFiles::new(
            dir.join(CA_CERT_FILE),
            dir.join(client_cert_file(name)),
            dir.join(client_key_file(name)),
        )
    }

    /// The permission bits of the key file when group or others may access it (e.g.
    /// `0o644`), for the caller to warn about; `None` when only the owner may (or on
    /// platforms without Unix permissions). Not enforced by loading, because some secret
    /// stores mount keys group-readable; kmsd should log it loudly.
    pub fn key_too_open(&self) -> Result<Option<u32>, TlsError> {
        let meta = std::fs::metadata(&self.key).map_err(|source| TlsError::Read {
            file: PemSource::file(PemKind::Key, &self.key),
            source,
        })?;
        Ok(loose_mode(&meta))
    }
}

#[cfg(unix)]
fn loose_mode(meta: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn loose_mode(_meta: &std::fs::Metadata) -> Option<u32> {
    None
}

/// TLS material read from [`TlsFiles`] and checked; builds tonic configurations. `Debug`
/// leaves out the key.
#[derive(Clone)]
pub struct LoadedTls {
    files: TlsFiles,
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    leaf: CertInfo,
}

impl fmt::Debug for LoadedTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedTls")
            .field("files", &self.files)
            .field("leaf", &self.leaf)
            .finish_non_exhaustive()
    }
}

impl LoadedTls {
    /// Read the three files and check them (see the module documentation).
    pub fn load(files: &TlsFiles) -> Result<LoadedTls, TlsError> {
        let ca_src = PemSource::file(PemKind::CaCertificate, &files.ca);
        let cert_src = PemSource::file(PemKind::Certificate, &files.cert);
        let key_src = PemSource::file(PemKind::Key, &files.key);
        let ca_pem = read(&files.ca, &ca_src)?;
        let cert_pem = read(&files.cert, &cert_src)?;
        let key_pem = read(&files.key, &key_src)?;

        let ca_ders = pem::certificates(&ca_pem, &ca_src)?;
        let cas = ca_ders
            .iter()
            .map(|der| pem::parse_certificate(der, &ca_src))
            .collect::<Result<Vec<_>, _>>()?;
        if !cas.iter().any(|c| c.is_ca()) {
            return Err(TlsError::NotCa { file: ca_src });
        }
        let cas: Vec<X509Certificate<'_>> = cas.into_iter().filter(|c| c.is_ca()).collect();

        let chain_ders = pem::certificates(&cert_pem, &cert_src)?;
        let chain = chain_ders
            .iter()
            .map(|der| pem::parse_certificate(der, &cert_src))
            .collect::<Result<Vec<_>, _>>()?;
        let leaf = &chain[0];

        let key = pem::private_key(&key_pem, &key_src)?;
        // rcgen (with ring) reads PKCS#8 only; SEC1 and PKCS#1 keys are left to rustls,
        // which checks them when the configuration is used.
        if key.label == pem::PKCS8_KEY {
            let pair = KeyPair::try_from(key.der.as_slice()).map_err(|e| TlsError::BadKey {
                file: key_src.clone(),
                detail: e.to_string(),
            })?;
            if pair.public_key_raw() != leaf.public_key().subject_public_key.data.as_ref() {
                return Err(TlsError::KeyMismatch {
                    cert: cert_src,
                    key: key_src,
                });
            }
        }

        if !chains_to(leaf, &chain[1..], &cas) {
            return Err(TlsError::NotIssuedByCa {
                cert: cert_src,
                issuer: leaf.issuer().to_string(),
                ca: ca_src,
            });
        }

        let info = CertInfo::from_cert(&chain_ders[0], leaf);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        if now > info.not_after {
            return Err(TlsError::Expired {
                file: cert_src,
                not_after: format_utc(info.not_after),
            });
        }
        if now < info.not_before {
            return Err(TlsError::NotYetValid {
                file: cert_src,
                not_before: format_utc(info.not_before),
            });
        }
        Ok(LoadedTls {
            files: files.clone(),
            ca_pem,
            cert_pem,
            key_pem,
            leaf: info,
        })
    }

    /// The files this was read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// What the certificate (the leaf) says: subject, SANs, role, validity.
    pub fn certificate(&self) -> &CertInfo {
        &self.leaf
    }

    /// A server configuration with mutual TLS: this certificate as the server identity,
    /// client certificates required and verified against the CA file, a handshake timeout
    /// of [`HANDSHAKE_TIMEOUT`]. Refuses a certificate without the serverAuth usage.
    pub fn server_config(&self) -> Result<ServerTlsConfig, TlsError> {
        self.require_usage(
            "serverAuth",
            "a client certificate cannot serve; give the node certificate (kmsctl cert create-node)",
        )?;
        Ok(ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(false)
            .timeout(HANDSHAKE_TIMEOUT))
    }

    /// A client configuration: trust only the CA file, present this certificate. The name
    /// checked against the server's certificate is `server_name` when given, else the host
    /// of the URI being dialled (tonic's rule). Refuses a certificate without the clientAuth
    /// usage.
    pub fn client_config(&self, server_name: Option<&str>) -> Result<ClientTlsConfig, TlsError> {
        self.require_usage(
            "clientAuth",
            "servers require client certificates; give a node certificate or one made by \
             `kmsctl cert create-client`",
        )?;
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        Ok(match server_name {
            Some(name) => config.domain_name(name),
            None => config,
        })
    }

    fn require_usage(&self, usage: &'static str, hint: &'static str) -> Result<(), TlsError> {
        let eku = &self.leaf.extended_key_usage;
        // No extension means any usage (RFC 5280 §4.2.1.12).
        if eku.is_empty() || eku.iter().any(|u| u == usage || u == "any") {
            return Ok(());
        }
        Err(TlsError::MissingUsage {
            file: PemSource::file(PemKind::Certificate, &self.files.cert),
            usage,
            hint,
        })
    }
}

/// Read and check `files` (see [`LoadedTls::load`]) and build a mutual-TLS server
/// configuration (see [`LoadedTls::server_config`]).
pub fn server_config(files: &TlsFiles) -> Result<ServerTlsConfig, TlsError> {
    LoadedTls::load(files)?.server_config()
}

/// Read and check `files` (see [`LoadedTls::load`]) and build a client configuration
/// presenting the certificate (see [`LoadedTls::client_config`]).
pub fn client_config(
    files: &TlsFiles,
    server_name: Option<&str>,
) -> Result<ClientTlsConfig, TlsError> {
    LoadedTls::load(files)?.client_config(server_name)
}

fn read(path: &Path, file: &PemSource) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        file: file.clone(),
        source,
    })
}

/// Whether `cert` was signed by one of `cas`, directly or through the intermediates that
/// followed it in its file (at most four steps).
fn chains_to(
    cert: &X509Certificate<'_>,
    intermediates: &[X509Certificate<'_>],
    cas: &[X509Certificate<'_>],
) -> bool {
    let signed_by = |child: &X509Certificate<'_>, parent: &X509Certificate<'_>| {
        child.issuer() == parent.subject()
            && child.verify_signature(Some(parent.public_key())).is_ok()
    };
    let mut current = cert;
    for _ in 0..4 {
        if cas.iter().any(|ca| signed_by(current, ca)) {
            return true;
        }
        match intermediates.iter().find(|i| signed_by(current, i)) {
            Some(next) if !std::ptr::eq(next, current) => current = next,
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{PemPair, create_ca, create_client, create_node};
    use crate::role::{ClientRole, Role};

    struct Dir {
        dir: tempfile::TempDir,
    }

    impl Dir {
        fn new() -> Dir {
            Dir {
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
        fn files(&self, ca: &PemPair, leaf: &PemPair) -> TlsFiles {
            TlsFiles::new(
                self.write("ca.crt", &ca.cert),
                self.write("leaf.crt", &leaf.cert),
                self.write("leaf.key", &leaf.key),
            )
        }
    }

    fn ca() -> PemPair {
        create_ca("kmsd test CA", 10).unwrap()
    }

    #[test]
    fn node_files_make_server_and_client_configs() {
        let ca = ca();
        let node = create_node(&ca.cert, &ca.key, "kms1", &["127.0.0.1".into()], 10).unwrap();
        let dir = Dir::new();
        let files = dir.files(&ca, &node);
        server_config(&files).unwrap();
        client_config(&files, None).unwrap();
        client_config(&files, Some("kms2")).unwrap();
        let loaded = LoadedTls::load(&files).unwrap();
        assert_eq!(loaded.certificate().role, Some(Role::Node));
        assert!(!format!("{loaded:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn client_files_make_client_configs_only() {
        let ca = ca();
        let client = create_client(&ca.cert, &ca.key, "ops", ClientRole::Admin, 10).unwrap();
        let dir = Dir::new();
        let files = dir.files(&ca, &client);
        client_config(&files, Some("kms1")).unwrap();
        let err = server_config(&files).unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::MissingUsage {
                    usage: "serverAuth",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("leaf.crt"), "{err}");
    }

    #[test]
    fn a_bundle_of_two_cas_trusts_both() {
        let old = ca();
        let new = create_ca("kmsd CA 2", 10).unwrap();
        let node = create_node(&old.cert, &old.key, "kms1", &[], 10).unwrap();
        let dir = Dir::new();
        let mut files = dir.files(&old, &node);
        files.ca = dir.write("bundle.crt", &format!("{}{}", new.cert, old.cert));
        server_config(&files).unwrap();
    }

    #[test]
    fn a_certificate_from_another_ca_is_refused() {
        let ca = ca();
        let other = create_ca("other CA", 10).unwrap();
        let node = create_node(&other.cert, &other.key, "kms1", &[], 10).unwrap();
        let dir = Dir::new();
        let files = dir.files(&ca, &node);
        let err = server_config(&files).unwrap_err();
        assert!(matches!(err, TlsError::NotIssuedByCa { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("leaf.crt") && text.contains("ca.crt"),
            "{text}"
        );
        assert!(text.contains("issuer \"CN=other CA\""), "{text}");
    }

    #[test]
    fn mismatched_key_is_refused() {
        let ca = ca();
        let a = create_node(&ca.cert, &ca.key, "kms1", &[], 10).unwrap();
        let b = create_node(&ca.cert, &ca.key, "kms1", &[], 10).unwrap();
        let dir = Dir::new();
        let mut files = dir.files(&ca, &a);
        files.key = dir.write("b.key", &b.key);
        let err = server_config(&files).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        assert!(err.to_string().contains("b.key"), "{err}");
    }

    #[test]
    fn missing_swapped_and_wrong_files_are_named() {
        let ca = ca();
        let node = create_node(&ca.cert, &ca.key, "kms1", &[], 10).unwrap();
        let dir = Dir::new();
        let good = dir.files(&ca, &node);

        let mut files = good.clone();
        files.ca = dir.dir.path().join("nope.crt");
        let err = server_config(&files).unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("cannot read the CA certificate file"),
            "{err}"
        );
        assert!(err.to_string().contains("nope.crt"), "{err}");

        let mut files = good.clone();
        std::mem::swap(&mut files.cert, &mut files.key);
        let err = server_config(&files).unwrap_err();
        assert!(matches!(err, TlsError::NotPem { .. }), "{err}");
        assert!(err.to_string().contains("this is a key file"), "{err}");

        let mut files = good.clone();
        files.key = dir.write("garbage.key", "not pem at all\n");
        let err = server_config(&files).unwrap_err();
        assert!(err.to_string().contains("garbage.key"), "{err}");
        assert!(err.to_string().contains("PRIVATE KEY"), "{err}");

        // A node certificate where the CA belongs.
        let mut files = good.clone();
        files.ca = good.cert.clone();
        let err = server_config(&files).unwrap_err();
        assert!(matches!(err, TlsError::NotCa { .. }), "{err}");

        let mut files = good;
        files.key = dir.write(
            "enc.key",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        let err = server_config(&files).unwrap_err();
        assert!(err.to_string().contains("encrypted"), "{err}");
    }

    #[test]
    fn expired_certificate_is_refused() {
        use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair};
        let ca = ca();
        let ca_key = KeyPair::from_pem(&ca.key).unwrap();
        let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key).unwrap();
        let mut params = CertificateParams::new(vec!["kms1".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let leaf = PemPair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        };
        let dir = Dir::new();
        let err = server_config(&dir.files(&ca, &leaf)).unwrap_err();
        assert!(matches!(err, TlsError::Expired { .. }), "{err}");
        assert!(err.to_string().contains("2021-01-01 00:00:00 UTC"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn loose_key_permissions_are_reported() {
        use std::os::unix::fs::PermissionsExt;
        let ca = ca();
        let node = create_node(&ca.cert, &ca.key, "kms1", &[], 10).unwrap();
        let dir = Dir::new();
        let files = dir.files(&ca, &node);
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(files.key_too_open().unwrap(), Some(0o644));
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(files.key_too_open().unwrap(), None);
    }

    #[test]
    fn directory_layouts() {
        let d = Path::new("/etc/kmsd/certs");
        let node = TlsFiles::node_dir(d);
        assert_eq!(node.ca, d.join("ca.crt"));
        assert_eq!(node.cert, d.join("node.crt"));
        assert_eq!(node.key, d.join("node.key"));
        let client = TlsFiles::client_dir(d, "alice");
        assert_eq!(client.cert, d.join("client.alice.crt"));
        assert_eq!(client.key, d.join("client.alice.key"));
    }
}
