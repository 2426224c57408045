//! PEM reading shared by loading, generation and inspection: blocks by label, with errors
//! that say what was found instead of what was expected.

use x509_parser::certificate::X509Certificate;
use x509_parser::pem::Pem;

use crate::error::{PemSource, TlsError};

/// The label of certificate blocks.
pub(crate) const CERTIFICATE: &str = "CERTIFICATE";
/// The label of unencrypted PKCS#8 key blocks (what rcgen writes).
pub(crate) const PKCS8_KEY: &str = "PRIVATE KEY";

/// All blocks of `text`, or the damage that stopped the reading.
fn blocks(text: &[u8], file: &PemSource, expected: &'static str) -> Result<Vec<Pem>, TlsError> {
    Pem::iter_from_buffer(text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NotPem {
            file: file.clone(),
            expected,
            detail: format!("damaged PEM block ({e})"),
        })
}

/// What the labels of `blocks` say, for "found … instead" messages.
fn found_instead(blocks: &[Pem]) -> String {
    if blocks.is_empty() {
        return "no `-----BEGIN …-----` line at all (DER/binary files are not supported; \
                convert with `openssl x509 -outform pem` or `openssl pkey`)"
            .to_owned();
    }
    let labels: Vec<String> = blocks.iter().map(|b| format!("`{}`", b.label)).collect();
    format!("found only {}", labels.join(", "))
}

/// The DER of every CERTIFICATE block of `text`, in order, each checked to parse as X.509;
/// at least one.
pub(crate) fn certificates(text: &[u8], file: &PemSource) -> Result<Vec<Vec<u8>>, TlsError> {
    let all = blocks(text, file, CERTIFICATE)?;
    let ders: Vec<Vec<u8>> = all
        .iter()
        .filter(|b| b.label == CERTIFICATE)
        .map(|b| b.contents.clone())
        .collect();
    if ders.is_empty() {
        let mut detail = found_instead(&all);
        if all.iter().any(|b| b.label.ends_with("PRIVATE KEY")) {
            detail.push_str(" — this is a key file; give the matching .crt file");
        }
        return Err(TlsError::NotPem {
            file: file.clone(),
            expected: CERTIFICATE,
            detail,
        });
    }
    for der in &ders {
        parse_certificate(der, file)?;
    }
    Ok(ders)
}

/// Parse one DER certificate.
pub(crate) fn parse_certificate<'a>(
    der: &'a [u8],
    file: &PemSource,
) -> Result<X509Certificate<'a>, TlsError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok((rest, _)) => Err(TlsError::BadCertificate {
            file: file.clone(),
            detail: format!(
                "{} bytes of trailing data after the certificate",
                rest.len()
            ),
        }),
        Err(e) => Err(TlsError::BadCertificate {
            file: file.clone(),
            detail: e.to_string(),
        }),
    }
}

/// A private key block: its label (which says its format) and DER contents. Deliberately
/// without `Debug`.
pub(crate) struct KeyBlock {
    /// `PRIVATE KEY` (PKCS#8), `EC PRIVATE KEY` (SEC1) or `RSA PRIVATE KEY` (PKCS#1).
    pub(crate) label: String,
    /// The DER contents (secret).
    pub(crate) der: Vec<u8>,
}

/// The first private key block of `text`. Encrypted keys are refused (kmsd starts
/// unattended and has no passphrase to give).
pub(crate) fn private_key(text: &[u8], file: &PemSource) -> Result<KeyBlock, TlsError> {
    let all = blocks(text, file, PKCS8_KEY)?;
    let Some(block) = all.iter().find(|b| b.label.ends_with("PRIVATE KEY")) else {
        let mut detail = found_instead(&all);
        if all.iter().any(|b| b.label == CERTIFICATE) {
            detail.push_str(" — this is a certificate; give the matching .key file");
        }
        return Err(TlsError::NotPem {
            file: file.clone(),
            expected: PKCS8_KEY,
            detail,
        });
    };
    match block.label.as_str() {
        "PRIVATE KEY" | "EC PRIVATE KEY" | "RSA PRIVATE KEY" => Ok(KeyBlock {
            label: block.label.clone(),
            der: block.contents.clone(),
        }),
        "ENCRYPTED PRIVATE KEY" => Err(TlsError::BadKey {
            file: file.clone(),
            detail: "the key is encrypted; kmsd starts unattended and needs a plain key \
                     protected by file permissions (decrypt it with `openssl pkey`)"
                .to_owned(),
        }),
        other => Err(TlsError::BadKey {
            file: file.clone(),
            detail: format!("unsupported key block `{other}`"),
        }),
    }
}
