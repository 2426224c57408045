//! `kmsctl backup FILE`: receive a backup stream into `FILE.partial`, check it, then move it
//! into place.
//!
//! The check follows the file format of `docs/admin.md` (kmsd writes it; this is an
//! independent reader of the documented format, not of kmsd's code): the first line is a JSON
//! object whose `kmsd_backup` is a format version this kmsctl knows, the last line is
//! `{"end":{"records":N,"sha256":H}}`, `H` is the SHA-256 of every byte before that line and
//! `N` the number of `{"client":…}` lines.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use kms_api::admin::v1 as pb;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::connect::{CALL_TIMEOUT, Connector};
use super::{API_VERSION, AdminError, BackupArgs, emit, render};

/// Newest backup format this kmsctl checks.
pub const BACKUP_FORMAT_VERSION: u64 = 1;

/// What a checked backup file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// Its header line.
    pub header: Value,
    /// Client records.
    pub clients: u64,
    /// SHA-256 of the content (as in the end line).
    pub sha256: String,
    /// File size.
    pub bytes: u64,
}

/// Check a backup read from `input` (see the module doc).
pub fn check(input: impl BufRead) -> Result<BackupSummary, String> {
    let mut hasher = Sha256::new();
    let mut header: Option<Value> = None;
    let mut clients = 0u64;
    let mut bytes = 0u64;
    for (n, line) in input.split(b'\n').enumerate() {
        let line = line.map_err(|e| format!("cannot read: {e}"))?;
        bytes += line.len() as u64 + 1;
        if header.is_none() {
            let h: Value = serde_json::from_slice(&line)
                .map_err(|_| "not a kmsd backup (no header line)".to_string())?;
            let version = h
                .get("kmsd_backup")
                .and_then(Value::as_u64)
                .ok_or("not a kmsd backup (no kmsd_backup in the header)")?;
            if version == 0 || version > BACKUP_FORMAT_VERSION {
                return Err(format!(
                    "backup format version {version} is newer than this kmsctl knows"
                ));
            }
            header = Some(h);
        } else if line.starts_with(b"{\"end\":") {
            let end: Value = serde_json::from_slice(&line)
                .map_err(|e| format!("line {}: bad end line: {e}", n + 1))?;
            let sha = end["end"]["sha256"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let records = end["end"]["records"].as_u64();
            let actual = hex::encode(hasher.finalize());
            if !actual.eq_ignore_ascii_case(&sha) {
                return Err(format!(
                    "checksum mismatch: content SHA-256 {actual}, end line says {sha}"
                ));
            }
            if records != Some(clients) {
                return Err(format!(
                    "{clients} client lines, the end line says {records:?}"
                ));
            }
            return Ok(BackupSummary {
                header: header.unwrap_or(Value::Null),
                clients,
                sha256: actual,
                bytes,
            });
        } else if line.starts_with(b"{\"client\":") {
            clients += 1;
        }
        hasher.update(&line);
        hasher.update(b"\n");
    }
    Err("truncated: no end line".into())
}

fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    file.with_file_name(name)
}

/// `kmsctl backup`.
pub(super) async fn run(
    c: &Connector,
    args: &BackupArgs,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    if args.file.as_os_str().is_empty() {
        return Err(AdminError::Usage("no backup file given".into()));
    }
    if args.file.exists() && !args.force {
        return Err(AdminError::Usage(format!(
            "{} exists; give --force to replace it",
            args.file.display()
        )));
    }
    let answer = c
        .call(
            pb::BackupRequest {
                version: API_VERSION,
            },
            CALL_TIMEOUT,
            |mut a, r| async move { a.backup(r).await },
        )
        .await?;
    let partial = partial_path(&args.file);
    let io = |what: &str, e: std::io::Error| AdminError::Io(format!("{what}: {e}"));
    // The backup holds the host identity and the client inventory: owner only (0600), also
    // when a partial file of an earlier attempt is reused.
    let file = {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .and_then(|f| {
                f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                Ok(f)
            })
    }
    .map_err(|e| io(&format!("cannot create {}", partial.display()), e))?;
    let mut w = std::io::BufWriter::new(file);
    let mut stream = answer.message;
    let received = loop {
        match stream.message().await {
            Ok(Some(chunk)) => {
                if let Err(e) = w.write_all(&chunk.data) {
                    let _ = std::fs::remove_file(&partial);
                    return Err(io(&format!("cannot write {}", partial.display()), e));
                }
            }
            Ok(None) => break Ok(()),
            Err(status) => break Err(AdminError::from_status(answer.endpoint.clone(), status)),
        }
    };
    let flushed = w
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all());
    if let Err(e) = received {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    if let Err(e) = flushed {
        let _ = std::fs::remove_file(&partial);
        return Err(io(&format!("cannot write {}", partial.display()), e));
    }
    let checked = std::fs::File::open(&partial)
        .map_err(|e| e.to_string())
        .and_then(|f| check(std::io::BufReader::new(f)));
    let summary = match checked {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(AdminError::Refused(format!(
                "the backup received from {} is unusable: {e}",
                answer.endpoint
            )));
        }
    };
    std::fs::rename(&partial, &args.file).map_err(|e| {
        io(
            &format!("cannot move the backup to {}", args.file.display()),
            e,
        )
    })?;
    let created = summary.header["created_unix"].as_i64().unwrap_or(0);
    let node_id = summary.header["node_id"].as_u64().unwrap_or(0);
    emit(
        out,
        json,
        json!({
            "file": args.file.display().to_string(),
            "bytes": summary.bytes,
            "clients": summary.clients,
            "sha256": summary.sha256,
            "created": render::utc(created),
            "node_id": node_id,
        }),
        || {
            format!(
                "backup of node {node_id} at {} written to {}: {} client record(s), {} bytes, \
                 sha256 {}\n",
                render::utc(created),
                args.file.display(),
                summary.clients,
                summary.bytes,
                summary.sha256
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(lines: &[&str]) -> Vec<u8> {
        let mut body = String::new();
        for l in lines {
            body.push_str(l);
            body.push('\n');
        }
        let sha = hex::encode(Sha256::digest(body.as_bytes()));
        let clients = lines
            .iter()
            .filter(|l| l.starts_with("{\"client\":"))
            .count();
        body.push_str(&format!(
            "{{\"end\":{{\"records\":{clients},\"sha256\":\"{sha}\"}}}}\n"
        ));
        body.into_bytes()
    }

    #[test]
    fn checks_the_documented_format() {
        let good = file(&[
            r#"{"kmsd_backup":1,"created_unix":1750000000,"node_id":2}"#,
            r#"{"config":{}}"#,
            r#"{"identity":null}"#,
            r#"{"client":{"pool":"windows"}}"#,
            r#"{"client":{"pool":"office2010"}}"#,
        ]);
        let s = check(&good[..]).unwrap();
        assert_eq!(s.clients, 2);
        assert_eq!(s.bytes, good.len() as u64);
        assert_eq!(s.header["node_id"], 2);

        let mut bad = good.clone();
        let i = bad.iter().position(|b| *b == b'w').unwrap();
        bad[i] = b'W';
        assert!(check(&bad[..]).unwrap_err().contains("checksum"));
        assert!(check(&good[..good.len() - 30]).is_err());
        let cut = good.len()
            - (good.len()
                - good[..good.len() - 1]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .unwrap()
                - 1);
        assert_eq!(check(&good[..cut]).unwrap_err(), "truncated: no end line");
        assert!(
            check(&b"garbage\n"[..])
                .unwrap_err()
                .contains("not a kmsd backup")
        );
        let newer = file(&[r#"{"kmsd_backup":2}"#]);
        assert!(check(&newer[..]).unwrap_err().contains("version 2"));
    }

    #[test]
    fn partial_names() {
        assert_eq!(
            partial_path(Path::new("/tmp/x.kmsbak")),
            PathBuf::from("/tmp/x.kmsbak.partial")
        );
        assert_eq!(partial_path(Path::new("b")), PathBuf::from("b.partial"));
    }
}
