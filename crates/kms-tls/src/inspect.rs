//! What a certificate says, for `kmsctl cert show` and for error messages.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::error::{PemKind, PemSource, TlsError};
use crate::pem;
use crate::role::{Role, role_of_cert};

/// The facts about one certificate an operator needs to check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject distinguished name, e.g. `CN=kms1`.
    pub subject: String,
    /// Issuer distinguished name, e.g. `CN=kmsd CA`.
    pub issuer: String,
    /// Serial number, colon-separated hex.
    pub serial: String,
    /// SHA-256 of the DER certificate, colon-separated upper-case hex (what
    /// `openssl x509 -fingerprint -sha256` prints).
    pub sha256_fingerprint: String,
    /// Whether it is a CA certificate (basicConstraints CA:TRUE).
    pub is_ca: bool,
    /// The kmsd role it carries, if any.
    pub role: Option<Role>,
    /// Subject alternative names: `DNS:name`, `IP:address`, `URI:uri`, `email:address`,
    /// or `other:…`.
    pub sans: Vec<String>,
    /// Extended key usages: `serverAuth`, `clientAuth`, … (empty when the extension is
    /// absent, which means any usage).
    pub extended_key_usage: Vec<String>,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
}

impl CertInfo {
    /// Start of validity as `YYYY-MM-DD HH:MM:SS UTC`.
    pub fn not_before_utc(&self) -> String {
        format_utc(self.not_before)
    }

    /// End of validity as `YYYY-MM-DD HH:MM:SS UTC`.
    pub fn not_after_utc(&self) -> String {
        format_utc(self.not_after)
    }

    /// Whether the certificate is valid at `unix_secs`.
    pub fn is_valid_at(&self, unix_secs: i64) -> bool {
        self.not_before <= unix_secs && unix_secs <= self.not_after
    }

    pub(crate) fn from_cert(der: &[u8], cert: &X509Certificate<'_>) -> CertInfo {
        let sans = match cert.subject_alternative_name() {
            Ok(Some(ext)) => ext.value.general_names.iter().map(san_text).collect(),
            _ => Vec::new(),
        };
        let extended_key_usage = match cert.extended_key_usage() {
            Ok(Some(ext)) => {
                let eku = ext.value;
                let mut v: Vec<String> = [
                    (eku.any, "any"),
                    (eku.server_auth, "serverAuth"),
                    (eku.client_auth, "clientAuth"),
                    (eku.code_signing, "codeSigning"),
                    (eku.email_protection, "emailProtection"),
                    (eku.time_stamping, "timeStamping"),
                    (eku.ocsp_signing, "OCSPSigning"),
                ]
                .into_iter()
                .filter(|(present, _)| *present)
                .map(|(_, name)| name.to_owned())
                .collect();
                v.extend(eku.other.iter().map(|oid| oid.to_id_string()));
                v
            }
            _ => Vec::new(),
        };
        let fingerprint: Vec<String> = Sha256::digest(der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        CertInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: cert.raw_serial_as_string(),
            sha256_fingerprint: fingerprint.join(":"),
            is_ca: cert.is_ca(),
            role: role_of_cert(cert),
            sans,
            extended_key_usage,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        }
    }
}

/// Every certificate in PEM text (a certificate file, a chain or a CA bundle), in order.
pub fn inspect_pem(text: &[u8]) -> Result<Vec<CertInfo>, TlsError> {
    let file = PemSource::text(PemKind::Certificate);
    let ders = pem::certificates(text, &file)?;
    ders.iter()
        .map(|der| {
            let cert = pem::parse_certificate(der, &file)?;
            Ok(CertInfo::from_cert(der, &cert))
        })
        .collect()
}

fn san_text(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::DNSName(n) => format!("DNS:{n}"),
        GeneralName::URI(u) => format!("URI:{u}"),
        GeneralName::RFC822Name(e) => format!("email:{e}"),
        GeneralName::IPAddress(bytes) => match ip_from_bytes(bytes) {
            Some(ip) => format!("IP:{ip}"),
            None => format!("IP:<{} bytes>", bytes.len()),
        },
        other => format!("other:{other:?}"),
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(b) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::V4(Ipv4Addr::from(b)));
    }
    if let Ok(b) = <[u8; 16]>::try_from(bytes) {
        return Some(IpAddr::V6(Ipv6Addr::from(b)));
    }
    None
}

/// Seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC` (proleptic Gregorian).
pub fn format_utc(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(format_utc(-1), "1969-12-31 23:59:59 UTC");
        assert_eq!(format_utc(4_102_444_800), "2100-01-01 00:00:00 UTC");
    }

    #[test]
    fn not_a_certificate() {
        let err = inspect_pem(b"hello").unwrap_err();
        assert!(matches!(err, TlsError::NotPem { .. }), "{err}");
    }
}
