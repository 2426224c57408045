//! `kmsctl cert`: files and their modes, refusing to overwrite, `show` output, help examples,
//! and that what it writes loads with kms-tls into tonic configurations.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use clap::{CommandFactory, Parser};
use kmsctl::CommandError;
use kmsctl::cert::CertError;
use kmsctl::cli::Cli;
use kmsctl::exit::ExitClass;
use serde_json::Value;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "kmsctl-cert-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run kmsctl in-process; stdout and the result.
async fn run(args: &[&str]) -> (Result<ExitClass, CommandError>, String) {
    let cli = Cli::try_parse_from(std::iter::once("kmsctl").chain(args.iter().copied()))
        .expect("arguments parse");
    let mut out = Vec::new();
    let result = kmsctl::execute(&cli, &mut out).await;
    (result, String::from_utf8(out).unwrap())
}

async fn ok(args: &[&str]) -> String {
    let (result, out) = run(args).await;
    match result {
        Ok(ExitClass::Success) => out,
        other => panic!("kmsctl {args:?}: {other:?}"),
    }
}

async fn refused(args: &[&str]) -> CertError {
    match run(args).await.0 {
        Err(e) => {
            assert_eq!(e.class(), ExitClass::Usage, "{e}");
            match e {
                CommandError::Cert(e) => e,
                other => panic!("not a cert error: {other}"),
            }
        }
        Ok(class) => panic!("kmsctl {args:?} succeeded ({class:?})"),
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// A CA in `dir/ca`.
async fn make_ca(dir: &TempDir) {
    ok(&["cert", "create-ca", "--out-dir", &dir.arg("ca")]).await;
}

#[tokio::test]
async fn create_ca_writes_cert_and_private_key() {
    let dir = TempDir::new();
    let out = ok(&[
        "cert",
        "create-ca",
        "--out-dir",
        &dir.arg("ca"),
        "--name",
        "Contoso kmsd CA",
        "--days",
        "100",
    ])
    .await;
    let (crt, key) = (dir.join("ca/ca.crt"), dir.join("ca/ca.key"));
    assert!(read(&crt).starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(read(&key).starts_with("-----BEGIN PRIVATE KEY-----"));
    #[cfg(unix)]
    {
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&crt), 0o644);
        assert_eq!(mode(&dir.join("ca")), 0o700);
    }
    assert!(out.contains("ca.key (private key, mode 0600)"), "{out}");
    assert!(out.contains("subject:        CN=Contoso kmsd CA"), "{out}");
    assert!(out.contains("CA:             yes"), "{out}");
    assert!(out.contains("expires in 100 days"), "{out}");
    assert!(out.contains("keep ca.key offline"), "{out}");
    // No leftovers of the write-then-rename.
    let names: Vec<String> = std::fs::read_dir(dir.join("ca"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[tokio::test]
async fn existing_files_are_not_overwritten_without_force() {
    let dir = TempDir::new();
    make_ca(&dir).await;
    let before = read(&dir.join("ca/ca.key"));
    let err = refused(&["cert", "create-ca", "--out-dir", &dir.arg("ca")]).await;
    assert!(matches!(err, CertError::Exists(_)), "{err}");
    assert!(err.to_string().contains("pass --force"), "{err}");
    assert_eq!(read(&dir.join("ca/ca.key")), before);

    // --force replaces, and the key ends up 0600 even if it had been opened up.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = dir.join("ca/ca.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    ok(&["cert", "create-ca", "--out-dir", &dir.arg("ca"), "--force"]).await;
    assert_ne!(read(&dir.join("ca/ca.key")), before);
    #[cfg(unix)]
    assert_eq!(mode(&dir.join("ca/ca.key")), 0o600);

    // Node files too.
    let node = [
        "cert",
        "create-node",
        "kms1",
        "--ca-dir",
        &dir.arg("ca"),
        "--out-dir",
        &dir.arg("kms1"),
    ];
    ok(&node).await;
    let err = refused(&node).await;
    assert!(matches!(err, CertError::Exists(p) if p.ends_with("node.crt")));
}

#[tokio::test]
async fn create_node_writes_a_complete_node_directory() {
    let dir = TempDir::new();
    make_ca(&dir).await;
    let out = ok(&[
        "cert",
        "create-node",
        "kms1.example.net",
        "--host",
        "10.0.0.11",
        "--host",
        "kms1,localhost",
        "--ca-dir",
        &dir.arg("ca"),
        "--out-dir",
        &dir.arg("kms1"),
    ])
    .await;
    for name in ["ca.crt", "node.crt", "node.key"] {
        assert!(dir.join("kms1").join(name).exists(), "{name}");
    }
    assert_eq!(read(&dir.join("kms1/ca.crt")), read(&dir.join("ca/ca.crt")));
    assert!(
        !dir.join("kms1/ca.key").exists(),
        "the CA key never leaves the CA directory"
    );
    #[cfg(unix)]
    assert_eq!(mode(&dir.join("kms1/node.key")), 0o600);
    assert!(
        out.contains("role:           node (urn:kmsd:role:node)"),
        "{out}"
    );
    assert!(
        out.contains(
            "SANs:           DNS:kms1.example.net, IP:10.0.0.11, DNS:kms1, DNS:localhost, \
             URI:urn:kmsd:role:node"
        ),
        "{out}"
    );
    assert!(
        out.contains("ext. key usage: serverAuth, clientAuth"),
        "{out}"
    );

    // What kmsd will load with --tls-ca/--tls-cert/--tls-key.
    let files = kms_tls::TlsFiles::node_dir(&dir.join("kms1"));
    kms_tls::server_config(&files).unwrap();
    kms_tls::client_config(&files, None).unwrap();
    assert_eq!(files.key_too_open().unwrap(), None);
}

#[tokio::test]
async fn create_node_refuses_ports_and_a_foreign_ca_copy() {
    let dir = TempDir::new();
    make_ca(&dir).await;
    let err = refused(&[
        "cert",
        "create-node",
        "kms1",
        "--host",
        "kms1.example.net:1689",
        "--ca-dir",
        &dir.arg("ca"),
        "--out-dir",
        &dir.arg("kms1"),
    ])
    .await;
    assert!(err.to_string().contains("looks like HOST:PORT"), "{err}");
    assert!(!dir.join("kms1/node.key").exists());

    // The out dir holds another cluster's ca.crt: refused, then replaced with --force.
    let other = TempDir::new();
    make_ca(&other).await;
    std::fs::create_dir_all(dir.join("kms1")).unwrap();
    std::fs::copy(other.join("ca/ca.crt"), dir.join("kms1/ca.crt")).unwrap();
    let args = [
        "cert",
        "create-node",
        "kms1",
        "--ca-dir",
        &dir.arg("ca"),
        "--out-dir",
        &dir.arg("kms1"),
    ];
    let err = refused(&args).await;
    assert!(matches!(err, CertError::OtherCa(_)), "{err}");
    let mut forced = args.to_vec();
    forced.push("--force");
    ok(&forced).await;
    assert_eq!(read(&dir.join("kms1/ca.crt")), read(&dir.join("ca/ca.crt")));

    // A rotation bundle that contains the signing CA is left alone.
    let bundle = format!(
        "{}{}",
        read(&other.join("ca/ca.crt")),
        read(&dir.join("ca/ca.crt"))
    );
    std::fs::write(dir.join("kms2-ca.crt"), &bundle).unwrap();
    std::fs::create_dir_all(dir.join("kms2")).unwrap();
    std::fs::write(dir.join("kms2/ca.crt"), &bundle).unwrap();
    ok(&[
        "cert",
        "create-node",
        "kms2",
        "--ca-dir",
        &dir.arg("ca"),
        "--out-dir",
        &dir.arg("kms2"),
    ])
    .await;
    assert_eq!(read(&dir.join("kms2/ca.crt")), bundle);
    kms_tls::server_config(&kms_tls::TlsFiles::node_dir(&dir.join("kms2"))).unwrap();

    // A CA directory without the CA key.
    let err = refused(&[
        "cert",
        "create-node",
        "kms3",
        "--ca-dir",
        &dir.arg("kms1"),
        "--out-dir",
        &dir.arg("kms3"),
    ])
    .await;
    assert!(
        matches!(err, CertError::Read { ref path, .. } if path.ends_with("ca.key")),
        "{err}"
    );
    // A CA directory whose "CA" is a node certificate.
    std::fs::copy(dir.join("kms1/node.crt"), dir.join("kms1/ca.crt")).unwrap();
    std::fs::copy(dir.join("kms1/node.key"), dir.join("kms1/ca.key")).unwrap();
    let err = refused(&[
        "cert",
        "create-node",
        "kms3",
        "--ca-dir",
        &dir.arg("kms1"),
        "--out-dir",
        &dir.arg("kms3"),
    ])
    .await;
    assert!(err.to_string().contains("holds no CA certificate"), "{err}");
    assert!(err.to_string().contains("kms1"), "{err}");
}

#[tokio::test]
async fn create_client_roles_and_file_names() {
    let dir = TempDir::new();
    make_ca(&dir).await;
    let ops = dir.arg("ops");
    let ca = dir.arg("ca");
    let out = ok(&[
        "cert",
        "create-client",
        "alice",
        "--role",
        "admin",
        "--ca-dir",
        &ca,
        "--out-dir",
        &ops,
    ])
    .await;
    assert!(
        out.contains("role:           admin (urn:kmsd:role:admin)"),
        "{out}"
    );
    assert!(out.contains("ext. key usage: clientAuth\n"), "{out}");
    // The default role is read; both clients share the directory and its ca.crt.
    let out = ok(&[
        "cert",
        "create-client",
        "grafana",
        "--ca-dir",
        &ca,
        "--out-dir",
        &ops,
    ])
    .await;
    assert!(
        out.contains("role:           read (urn:kmsd:role:read)"),
        "{out}"
    );
    for name in [
        "ca.crt",
        "client.alice.crt",
        "client.alice.key",
        "client.grafana.crt",
        "client.grafana.key",
    ] {
        assert!(dir.join("ops").join(name).exists(), "{name}");
    }
    #[cfg(unix)]
    assert_eq!(mode(&dir.join("ops/client.alice.key")), 0o600);

    let files = kms_tls::TlsFiles::client_dir(&dir.join("ops"), "alice");
    kms_tls::client_config(&files, Some("kms1")).unwrap();
    assert!(
        kms_tls::server_config(&files).is_err(),
        "a client certificate cannot serve"
    );

    let err = refused(&[
        "cert",
        "create-client",
        "../alice",
        "--ca-dir",
        &ca,
        "--out-dir",
        &ops,
    ])
    .await;
    assert!(err.to_string().contains("invalid client name"), "{err}");
    assert!(
        Cli::try_parse_from([
            "kmsctl",
            "cert",
            "create-client",
            "x",
            "--role",
            "node",
            "--ca-dir",
            "a",
            "--out-dir",
            "b"
        ])
        .is_err()
    );
}

#[tokio::test]
async fn show_prints_subject_sans_role_and_validity() {
    let dir = TempDir::new();
    make_ca(&dir).await;
    ok(&[
        "cert",
        "create-node",
        "kms1",
        "--host",
        "10.0.0.11",
        "--ca-dir",
        &dir.arg("ca"),
        "--out-dir",
        &dir.arg("kms1"),
        "--days",
        "30",
    ])
    .await;
    let node = dir.arg("kms1/node.crt");
    let out = ok(&["cert", "show", &node]).await;
    assert!(
        out.starts_with(&format!("{node} — certificate 1 of 1\n")),
        "{out}"
    );
    for needle in [
        "subject:        CN=kms1\n",
        "issuer:         CN=kmsd CA\n",
        "role:           node (urn:kmsd:role:node)\n",
        "CA:             no\n",
        "SANs:           DNS:kms1, IP:10.0.0.11, URI:urn:kmsd:role:node\n",
        "(valid, expires in 30 days)\n",
        "sha256:         ",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }

    let (result, json) = run(&["cert", "show", &node, "-o", "json"]).await;
    result.unwrap();
    let v: Value = serde_json::from_str(&json).unwrap();
    let cert = &v.as_array().unwrap()[0];
    assert_eq!(cert["subject"], "CN=kms1");
    assert_eq!(cert["role"], "node");
    assert_eq!(cert["is_ca"], false);
    assert_eq!(cert["valid_now"], true);
    assert_eq!(cert["sans"][1], "IP:10.0.0.11");
    assert_eq!(
        cert["extended_key_usage"],
        serde_json::json!(["serverAuth", "clientAuth"])
    );
    let secs = cert["not_after_unix"].as_i64().unwrap() - cert["not_before_unix"].as_i64().unwrap();
    assert_eq!(secs, 30 * 86_400 + 3600);

    // A bundle shows each certificate.
    let bundle = dir.join("bundle.crt");
    std::fs::write(
        &bundle,
        format!(
            "{}{}",
            read(&dir.join("kms1/node.crt")),
            read(&dir.join("ca/ca.crt"))
        ),
    )
    .unwrap();
    let out = ok(&["cert", "show", &bundle.display().to_string()]).await;
    assert!(out.contains("certificate 2 of 2"), "{out}");
    assert!(out.contains("role:           (none)"), "{out}");

    // A key or a missing file is refused, naming the file.
    let err = refused(&["cert", "show", &dir.arg("kms1/node.key")]).await;
    assert!(err.to_string().contains("node.key"), "{err}");
    assert!(err.to_string().contains("this is a key file"), "{err}");
    let err = refused(&["cert", "show", &dir.arg("missing.crt")]).await;
    assert!(matches!(err, CertError::Read { .. }), "{err}");
}

#[test]
fn every_cert_help_has_examples() {
    let cmd = Cli::command();
    let cert = cmd.find_subcommand("cert").expect("cert subcommand");
    let help = cert
        .get_after_help()
        .map(|s| s.to_string())
        .unwrap_or_default();
    assert!(help.contains("Examples"), "{help}");
    for sub in ["create-ca", "create-node", "create-client", "show"] {
        let sc = cert.find_subcommand(sub).unwrap_or_else(|| panic!("{sub}"));
        let help = sc
            .get_after_help()
            .map(|s| s.to_string())
            .unwrap_or_default();
        assert!(
            help.contains(&format!("kmsctl cert {sub} ")),
            "{sub}: {help}"
        );
    }
}

#[test]
fn refusals_exit_64_from_the_binary() {
    let dir = TempDir::new();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kmsctl"))
            .args(args)
            .output()
            .unwrap()
    };
    let first = run(&["cert", "create-ca", "--out-dir", &dir.arg("ca")]);
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    let second = run(&["cert", "create-ca", "--out-dir", &dir.arg("ca")]);
    assert_eq!(second.status.code(), Some(64), "{second:?}");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("refusing to overwrite") && stderr.contains("ca.crt"),
        "{stderr}"
    );
}
