//! Operating a cluster with kmsctl: the admin API of real `kmsd` processes, driven through
//! kmsctl's library (the code behind the `kmsctl` binary) and, for exit codes and stderr, the
//! binary itself.
//!
//! Three nodes (`--initial-cluster`, `--insecure`), every check made at every node:
//! * status, a configuration change honoured by every node, leader transfer, member removal,
//!   growing with `member add` and `--join`;
//! * the client inventory (every activated CMID with its workstation name), the `clients list`
//!   filters (`--pool`, `--product` by name and by KMS counted id, `--since`/`--before`,
//!   `--workstation`, `--duplicates`) and paging (`--limit`, `--cursor`); forgetting a CMID
//!   lowers the count on every node; backup → `kmsd --restore` into a new three-node cluster
//!   gives every new node the same clients, counts, configuration and identity.
//!
//! The `read` certificate role on a three-node TLS cluster is checked in
//! `cluster::tls_cluster_forms_and_counts_and_keeps_plaintext_nodes_out`.
//!
//! Single node: status, the inventory, configuration and identity changes honoured by the next
//! response, backup → `kmsd --restore` into a new data directory (no silent overwrite),
//! activation events, kmsctl's exit codes, and mutual TLS roles (`read`, `admin`, no
//! certificate).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser as _;
use kmsctl::exit::ExitClass;
use serde_json::Value;

use crate::harness::{Kmsd, bin};
use crate::kms::*;

/// Run `kmsctl --server <server> -o json <args>` through the library: the JSON document, or
/// the exit class and message of the failure.
pub(crate) async fn ctl(server: &str, args: &[&str]) -> Result<Value, (ExitClass, String)> {
    let mut argv = vec!["kmsctl", "-o", "json", "--server", server];
    argv.extend_from_slice(args);
    let cli = kmsctl::cli::Cli::try_parse_from(&argv).expect("kmsctl arguments");
    let mut out = Vec::new();
    match kmsctl::execute(&cli, &mut out).await {
        Ok(ExitClass::Success) => Ok(serde_json::from_slice(&out).unwrap_or_else(|e| {
            panic!(
                "kmsctl {args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out)
            )
        })),
        Ok(class) => Err((class, String::from_utf8_lossy(&out).into_owned())),
        Err(e) => Err((e.class(), e.to_string())),
    }
}

/// Like [`ctl`], panicking on failure.
pub(crate) async fn ctl_ok(server: &str, args: &[&str]) -> Value {
    ctl(server, args)
        .await
        .unwrap_or_else(|(c, m)| panic!("kmsctl {args:?} at {server}: {c}: {m}"))
}

/// Several JSON documents, one per line (`kmsctl events -o json`).
async fn ctl_lines(server: &str, args: &[&str]) -> Vec<Value> {
    let mut argv = vec!["kmsctl", "-o", "json", "--server", server];
    argv.extend_from_slice(args);
    let cli = kmsctl::cli::Cli::try_parse_from(&argv).expect("kmsctl arguments");
    let mut out = Vec::new();
    kmsctl::execute(&cli, &mut out)
        .await
        .unwrap_or_else(|e| panic!("kmsctl {args:?}: {e}"));
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

fn grpc(node: &Kmsd) -> String {
    assert_ne!(
        node.grpc.port(),
        0,
        "the harness found no grpc address in the \"kmsd serving\" line"
    );
    node.grpc.to_string()
}

/// Poll `f` every 100 ms until it returns `Some`, for at most `limit`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pool<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["pools"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["pool"] == name))
        .unwrap_or_else(|| panic!("no pool {name} in {doc}"))
}

/// A named machine of product `p`.
fn named(p: &kmsctl::catalog::ProductSelection, name: &str) -> kmsctl::client::ClientIdentity {
    let mut who = machine(p);
    who.workstation = name.to_string();
    who
}

/// An IPv4 client of the dual-stack `[::]` listener is recorded and logged with its IPv4
/// address, not as `::ffff:a.b.c.d`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_clients_of_a_dual_stack_listener_are_recorded_as_ipv4() {
    let dir = tempfile::tempdir().unwrap();
    let node = Kmsd::start(dir.path(), &["--kms-listen", "[::]:0"]);
    let Some(wildcard) = node.kms.iter().find(|a| a.is_ipv6()) else {
        // The host has no IPv6: kmsd fell back to 0.0.0.0, nothing is mapped.
        return;
    };
    let via_v4: SocketAddr = ([127, 0, 0, 1], wildcard.port()).into();
    let win = windows_client();
    let who = named(&win, "DUAL-STACK-PC");
    activate(via_v4, &win, &who).await;
    let shown = ctl_ok(&grpc(&node), &["clients", "show", &who.cmid.to_string()]).await;
    let source = shown["records"][0]["last_source"]
        .as_str()
        .unwrap_or_default();
    assert!(source.starts_with("127.0.0.1:"), "{shown}");
    let logged = node
        .log_lines()
        .into_iter()
        .find(|l| l.contains("DUAL-STACK-PC"))
        .expect("the activation log line");
    assert!(logged.contains("\"source\":\"127.0.0.1:"), "{logged}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_inventory_forget_and_config_on_one_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = Kmsd::start(dir.path(), &[]);
    let server = grpc(&node);
    let win = windows_client();
    let mut machines = Vec::new();
    for n in 1..=3 {
        let who = named(&win, &format!("ADMIN-PC-{n}"));
        activate(node.kms_addr(), &win, &who).await;
        machines.push(who);
    }
    let o10 = office2010();
    let office = named(&o10, "ADMIN-OFFICE");
    activate(node.kms_addr(), &o10, &office).await;

    // Status.
    let st = ctl_ok(&server, &["status"]).await;
    assert_eq!(st["leader_id"], 1, "{st}");
    assert!(st["term"].as_u64().unwrap() >= 1);
    let m = &st["members"][0];
    assert_eq!(m["id"], 1);
    assert_eq!(m["role"], "leader");
    assert_eq!(m["healthy"], true);
    assert!(m["name"].is_string() && m["grpc_address"].is_string() && m["kms_address"].is_string());
    assert_eq!(pool(&st, "windows")["live"], 3);
    assert_eq!(pool(&st, "office2010")["live"], 1);
    let health = ctl_ok(&server, &["health"]).await;
    assert_eq!(health["ok"], true, "{health}");

    // Every activated CMID with its workstation name.
    let list = ctl_ok(&server, &["clients", "list", "--limit", "0"]).await;
    let clients: BTreeMap<String, String> = list["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["cmid"].as_str().unwrap().to_string(),
                c["workstation"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for who in machines.iter().chain([&office]) {
        assert_eq!(
            clients.get(&who.cmid.to_string()),
            Some(&who.workstation),
            "{list}"
        );
    }
    assert_eq!(clients.len(), 4);
    let only = ctl_ok(
        &server,
        &[
            "clients",
            "list",
            "--pool",
            "windows",
            "--workstation",
            "pc-2",
        ],
    )
    .await;
    assert_eq!(only["clients"].as_array().unwrap().len(), 1);
    let shown = ctl_ok(&server, &["clients", "show", &office.cmid.to_string()]).await;
    assert_eq!(shown["records"][0]["pool"], "office2010");
    assert_eq!(shown["records"][0]["workstation"], "ADMIN-OFFICE");

    // Counts; forget lowers them.
    let counts = ctl_ok(&server, &["counts"]).await;
    assert_eq!(pool(&counts, "windows")["live"], 3);
    assert_eq!(pool(&counts, "windows")["waiting"], 3);
    let forgotten = ctl_ok(
        &server,
        &["clients", "forget", &machines[0].cmid.to_string()],
    )
    .await;
    assert_eq!(forgotten["forgotten"][0]["workstation"], "ADMIN-PC-1");
    let counts = ctl_ok(&server, &["counts"]).await;
    assert_eq!(pool(&counts, "windows")["live"], 2, "{counts}");
    let gone = ctl(&server, &["clients", "show", &machines[0].cmid.to_string()]).await;
    assert_eq!(gone.unwrap_err().0, ExitClass::Refused);

    // A configuration change is honoured by the next response.
    let before = activate(node.kms_addr(), &win, &machines[1]).await;
    assert_eq!(before.response.renewal_interval, 10_080);
    let set = ctl_ok(&server, &["config", "set", "renewal-interval", "60"]).await;
    assert_eq!(
        (set["old_value"].as_str(), set["new_value"].as_str()),
        (Some("10080"), Some("60"))
    );
    let after = activate(node.kms_addr(), &win, &machines[1]).await;
    assert_eq!(after.response.renewal_interval, 60);
    ctl_ok(&server, &["config", "set", "activation-interval", "2h"]).await;
    let fresh = activate(node.kms_addr(), &win, &machine(&win)).await;
    assert_eq!(fresh.response.activation_interval, 120);
    let got = ctl_ok(&server, &["config", "get", "renewal-interval"]).await;
    assert_eq!(got["value"], "60");
    // Refused values and unknown keys are usage errors; nothing changes.
    for (k, v) in [
        ("renewal-interval", "5"),
        ("renewal-intervall", "60"),
        ("count-report", "x"),
    ] {
        let (class, msg) = ctl(&server, &["config", "set", k, v]).await.unwrap_err();
        assert_eq!(class, ExitClass::Usage, "{k}={v}: {msg}");
    }
    assert_eq!(
        ctl_ok(&server, &["config", "get", "renewal-interval"]).await["value"],
        "60"
    );

    // Identity: a set HwId is what the next v6 response carries.
    ctl_ok(&server, &["identity", "set", "hwid", "0102030405060708"]).await;
    let v6 = activate(node.kms_addr(), &win, &machines[1]).await;
    assert_eq!(v6.hwid, Some([1, 2, 3, 4, 5, 6, 7, 8]));
    let rotated = ctl_ok(&server, &["identity", "rotate"]).await;
    let v6 = activate(node.kms_addr(), &win, &machines[1]).await;
    assert_ne!(v6.hwid, Some([1, 2, 3, 4, 5, 6, 7, 8]));
    let epid_206 = rotated["epids"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["group"] == 206)
        .unwrap()["epid"]
        .clone();
    assert_eq!(v6.response.epid, epid_206.as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_shows_an_activation() {
    let dir = tempfile::tempdir().unwrap();
    let node = Kmsd::start(dir.path(), &[]);
    let server = grpc(&node);
    let win = windows_client();
    let who = named(&win, "EVENTS-PC");
    activate(node.kms_addr(), &win, &who).await;
    let events = ctl_lines(&server, &["events", "--recent", "10"]).await;
    let e = events
        .iter()
        .find(|e| e["cmid"] == who.cmid.to_string())
        .unwrap_or_else(|| panic!("no event for {}: {events:?}", who.cmid));
    assert_eq!(e["workstation"], "EVENTS-PC");
    assert_eq!(e["event_id"], 12290);
    assert_eq!(e["result"], "success");
    assert_eq!(e["pool"], "windows");
    assert_eq!(e["node_id"], 1);
    assert_eq!(e["current_count"], 1);

    // Following: an activation after subscribing arrives on the stream.
    let mut child = std::process::Command::new(bin("kmsctl"))
        .args([
            "--server", &server, "-o", "json", "events", "--follow", "--recent", "1",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn kmsctl events --follow");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The first line is the recent event; then activate and wait for it.
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a recent event");
    assert!(first.contains("EVENTS-PC"), "{first}");
    let live = named(&win, "FOLLOWED-PC");
    activate(node.kms_addr(), &win, &live).await;
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the live event");
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["workstation"], "FOLLOWED-PC");
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_then_restore_gives_the_same_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Kmsd::start(dir.path(), &[]);
    let server = grpc(&node);
    let win = windows_client();
    for n in 0..30 {
        activate(node.kms_addr(), &win, &named(&win, &format!("BK-{n}"))).await;
    }
    let o16 = office2016();
    for n in 0..3 {
        activate(
            node.kms_addr(),
            &o16,
            &named(&o16, &format!("BK-OFFICE-{n}")),
        )
        .await;
    }
    ctl_ok(&server, &["config", "set", "renewal-interval", "1440"]).await;
    ctl_ok(
        &server,
        &["config", "set", "seat-limit.office2013plus", "50"],
    )
    .await;
    let clients = ctl_ok(&server, &["clients", "list", "--limit", "0"]).await;
    let config = ctl_ok(&server, &["config", "get"]).await;
    let identity = ctl_ok(&server, &["identity", "show"]).await;
    let counts = ctl_ok(&server, &["counts"]).await;

    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("cluster.kmsbak");
    let file_s = file.to_str().unwrap();
    let b = ctl_ok(&server, &["backup", file_s]).await;
    assert_eq!(b["clients"], 33, "{b}");
    assert!(file.exists());
    // No silent overwrite.
    let (class, _) = ctl(&server, &["backup", file_s]).await.unwrap_err();
    assert_eq!(class, ExitClass::Usage);
    node.stop();

    // A new node on an empty data directory, restored from the file.
    let dir2 = tempfile::tempdir().unwrap();
    let restored = Kmsd::start(dir2.path(), &["--restore", file_s]);
    let server2 = grpc(&restored);
    let same_identity = eventually("the restored identity", Duration::from_secs(30), || {
        let server2 = server2.clone();
        let identity = identity.clone();
        async move {
            let now = ctl_ok(&server2, &["identity", "show"]).await;
            (now == identity).then_some(now)
        }
    })
    .await;
    assert_eq!(same_identity, identity);
    assert_eq!(
        ctl_ok(&server2, &["clients", "list", "--limit", "0"]).await,
        clients
    );
    assert_eq!(ctl_ok(&server2, &["config", "get"]).await, config);
    let counts2 = ctl_ok(&server2, &["counts"]).await;
    assert_eq!(counts2["pools"], counts["pools"]);
    // Clients see the same host: ePID and count continue where they were.
    let again = activate(restored.kms_addr(), &win, &named(&win, "BK-NEW")).await;
    assert_eq!(again.response.current_count, 31);
    assert_eq!(again.response.renewal_interval, 1440);
    let epid_206 = identity["epids"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["group"] == 206)
        .unwrap()["epid"]
        .clone();
    assert_eq!(again.response.epid, epid_206.as_str().unwrap());
    drop(dir);
}

/// The kmsctl binary: exit codes, and the warning an unauthenticated change prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kmsctl_exit_codes_and_insecure_warning() {
    let dir = tempfile::tempdir().unwrap();
    let node = Kmsd::start(dir.path(), &[]);
    let server = grpc(&node);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin("kmsctl"))
            .args(args)
            .output()
            .expect("run kmsctl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = run(&["--server", &server, "status"]);
    assert_eq!(code, 0);
    assert!(out.contains("leader 1"), "{out}");
    let (code, _, err) = run(&[
        "--server",
        &server,
        "config",
        "set",
        "renewal-interval",
        "1440",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning") && err.contains("without TLS"),
        "{err}"
    );
    let (code, _, err) = run(&[
        "--server",
        &server,
        "config",
        "set",
        "renewal-interval",
        "1",
    ]);
    assert_eq!(code, 64, "{err}");
    let (code, _, _) = run(&[
        "--server",
        &server,
        "clients",
        "forget",
        "3f2504e0-4f89-41d3-9a0c-0305e82c3301",
    ]);
    assert_eq!(code, 1);
    // The first endpoint is down: the next one answers the status, and every endpoint given
    // is checked — the dead one makes the exit code non-zero and is named in the table.
    let dead = dead_address();
    let both = format!("{dead},{server}");
    let (code, out, err) = run(&["--server", &both, "status"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        out.contains("Endpoints") && out.contains(&dead.to_string()) && out.contains(&server),
        "{out}"
    );
    let (code, out, err) = run(&["--server", &both, "health"]);
    assert_eq!(code, 3, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&dead.to_string()) && l.contains(" no "))
            && lines
                .iter()
                .any(|l| l.contains(&server) && l.contains(" yes ")),
        "{out}"
    );
    let (code, out, err) = run(&[
        "--server",
        &format!("{server},{server}"),
        "-o",
        "json",
        "health",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{out}");
    assert!(v[0]["ok"].as_bool().unwrap_or(false), "{out}");
    let (code, _, err) = run(&["--server", &dead.to_string(), "status"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&dead.to_string()), "{err}");
    let (code, _, _) = run(&["--server", &server, "config", "frobnicate"]);
    assert_eq!(code, 64);
    let (code, out, _) = run(&["status", "--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("Examples:") && out.contains("\"leader_id\""),
        "{out}"
    );
}

/// With mutual TLS, the certificate's role decides: `read` looks, `admin` changes, and a
/// caller without a certificate does not get in. Certificates come from `kmsctl cert`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_roles_through_kmsctl() {
    let certs = tempfile::tempdir().unwrap();
    let d = |sub: &str| certs.path().join(sub).to_str().unwrap().to_string();
    let cert = |args: &[&str]| {
        let mut argv = vec!["kmsctl", "cert"];
        argv.extend_from_slice(args);
        let cli = kmsctl::cli::Cli::try_parse_from(&argv).expect("cert arguments");
        futures::executor::block_on(kmsctl::execute(&cli, &mut Vec::new()))
            .unwrap_or_else(|e| panic!("kmsctl cert {args:?}: {e}"));
    };
    cert(&["create-ca", "--out-dir", &d("ca")]);
    cert(&[
        "create-node",
        "kms1",
        "--host",
        "127.0.0.1",
        "--ca-dir",
        &d("ca"),
        "--out-dir",
        &d("node"),
    ]);
    cert(&[
        "create-client",
        "ops",
        "--role",
        "admin",
        "--ca-dir",
        &d("ca"),
        "--out-dir",
        &d("ops"),
    ]);
    cert(&[
        "create-client",
        "viewer",
        "--role",
        "read",
        "--ca-dir",
        &d("ca"),
        "--out-dir",
        &d("viewer"),
    ]);

    let dir = tempfile::tempdir().unwrap();
    let node = Kmsd::start(
        dir.path(),
        &[
            "--tls-ca",
            &format!("{}/ca.crt", d("node")),
            "--tls-cert",
            &format!("{}/node.crt", d("node")),
            "--tls-key",
            &format!("{}/node.key", d("node")),
        ],
    );
    let server = grpc(&node);
    let as_client = |name: &str| -> Vec<String> {
        let dir = d(name);
        vec![
            "--ca".into(),
            format!("{dir}/ca.crt"),
            "--cert".into(),
            format!("{dir}/client.{name}.crt"),
            "--key".into(),
            format!("{dir}/client.{name}.key"),
        ]
    };
    let run = |who: Option<&str>, args: &[&str]| {
        let mut argv: Vec<String> = vec!["--server".into(), server.clone()];
        if let Some(w) = who {
            argv.extend(as_client(w));
        }
        argv.extend(args.iter().map(|s| s.to_string()));
        let out = std::process::Command::new(bin("kmsctl"))
            .args(&argv)
            .output()
            .expect("run kmsctl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(Some("viewer"), &["status"]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = run(Some("viewer"), &["config", "set", "renewal-interval", "60"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("may not change the cluster"), "{err}");
    let (code, err) = run(Some("viewer"), &["backup", &d("x.kmsbak")]);
    assert_eq!(code, 4, "{err}");
    let (code, err) = run(Some("ops"), &["config", "set", "renewal-interval", "60"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !err.contains("warning"),
        "no insecure warning with TLS: {err}"
    );
    let (code, err) = run(None, &["status"]);
    assert_eq!(code, 3, "a caller without a certificate gets in: {err}");
    let win = windows_client();
    let r = activate(node.kms_addr(), &win, &machine(&win)).await;
    assert_eq!(r.response.renewal_interval, 60);
}

/// An address nothing listens on.
fn dead_address() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Three nodes

/// A three-node cluster on 127.0.0.1 (`--initial-cluster`, `--insecure`).
struct Cluster {
    nodes: BTreeMap<u64, Kmsd>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    fn start(n: u64) -> Cluster {
        Self::start_with(n, |_| Vec::new())
    }

    /// Start nodes `1..=n` in order, node `id` with the extra flags `extra(id)`.
    fn start_with(n: u64, extra: impl Fn(u64) -> Vec<String>) -> Cluster {
        // Fixed gRPC ports: every node must know every address up front.
        let ports = crate::harness::free_ports(n as usize);
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = BTreeMap::new();
        let mut dirs = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let id = i as u64 + 1;
            let dir = tempfile::tempdir().unwrap();
            let flags = extra(id);
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            let node = start_member(dir.path(), id, *port, &initial, &flags);
            nodes.insert(id, node);
            dirs.push(dir);
        }
        Cluster { nodes, _dirs: dirs }
    }

    fn server(&self, id: u64) -> String {
        grpc(&self.nodes[&id])
    }

    fn all_servers(&self) -> String {
        self.nodes.values().map(grpc).collect::<Vec<_>>().join(",")
    }

    /// Wait until every node reports the same leader and `members` members; returns it.
    async fn settled(&self, members: usize) -> u64 {
        let servers: Vec<String> = self.nodes.values().map(grpc).collect();
        eventually("a settled cluster", Duration::from_secs(60), || {
            let servers = servers.clone();
            async move {
                let mut leaders = Vec::new();
                for server in &servers {
                    let st = ctl(server, &["status"]).await.ok()?;
                    if st["members"].as_array()?.len() != members {
                        return None;
                    }
                    leaders.push(st["leader_id"].as_u64()?);
                }
                leaders.dedup();
                (leaders.len() == 1).then(|| leaders[0])
            }
        })
        .await
    }
}

fn start_member(dir: &Path, id: u64, grpc_port: u16, initial: &str, extra: &[&str]) -> Kmsd {
    let data = dir.to_str().unwrap().to_string();
    let id_s = id.to_string();
    let grpc_listen = format!("127.0.0.1:{grpc_port}");
    let mut args = vec![
        "--data-dir",
        &data,
        "--node-id",
        &id_s,
        "--kms-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--grpc-listen",
        &grpc_listen,
        "--dns-listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--initial-cluster",
        initial,
        "--insecure",
    ];
    args.extend_from_slice(extra);
    Kmsd::start_raw(dir, &args, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_status_config_transfer_and_removal() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.settled(3).await;

    // Status from every node: same leader and term, every member healthy with its addresses.
    let mut terms = Vec::new();
    for id in [1, 2, 3] {
        let st = ctl_ok(&cluster.server(id), &["status"]).await;
        assert_eq!(st["node_id"], id);
        assert_eq!(st["leader_id"], leader);
        terms.push(st["term"].clone());
        let members = st["members"].as_array().unwrap();
        assert_eq!(members.len(), 3, "{st}");
        for m in members {
            let mid = m["id"].as_u64().unwrap();
            let expected_role = if mid == leader { "leader" } else { "follower" };
            assert_eq!(m["role"], expected_role, "{st}");
            assert_eq!(m["grpc_address"], cluster.server(mid));
            assert!(m["voter"].as_bool().unwrap());
        }
        for p in ["windows", "office2010", "office2013plus"] {
            pool(&st, p);
        }
    }
    terms.dedup();
    assert_eq!(terms.len(), 1);

    // A configuration change through a follower is honoured by every node's next response.
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    ctl_ok(
        &cluster.server(follower),
        &["config", "set", "renewal-interval", "90"],
    )
    .await;
    let win = windows_client();
    for id in [1u64, 2, 3] {
        let server = cluster.server(id);
        eventually(
            "the new renewal interval applied",
            Duration::from_secs(10),
            || {
                let server = server.clone();
                async move {
                    let v = ctl_ok(&server, &["config", "get", "renewal-interval"]).await;
                    (v["value"] == "90").then_some(())
                }
            },
        )
        .await;
        let r = activate(cluster.nodes[&id].kms_addr(), &win, &machine(&win)).await;
        assert_eq!(r.response.renewal_interval, 90, "node {id}");
    }

    // Leadership moves where asked, whichever node is asked (kmsctl follows the hint).
    let target = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let t = ctl_ok(
        &cluster.server(target),
        &["leader", "transfer", &target.to_string()],
    )
    .await;
    assert_eq!(t["leader_id"], target);
    let new_leader = cluster.settled(3).await;
    assert_eq!(new_leader, target);

    // Remove a follower; the rest see two members, and the cluster still takes writes.
    let victim = [1, 2, 3].into_iter().find(|id| *id != target).unwrap();
    let removed = ctl_ok(
        &cluster.all_servers(),
        &["member", "remove", &victim.to_string()],
    )
    .await;
    let ids: Vec<u64> = removed["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert!(!ids.contains(&victim), "{removed}");
    let mut gone = cluster.nodes.remove(&victim).unwrap();
    gone.stop();
    assert_eq!(cluster.settled(2).await, target);
    let remaining: Vec<u64> = cluster.nodes.keys().copied().collect();
    ctl_ok(
        &cluster.server(remaining[0]),
        &["config", "set", "renewal-interval", "120"],
    )
    .await;
    for id in remaining {
        let st = ctl_ok(&cluster.server(id), &["member", "list"]).await;
        assert_eq!(st["members"].as_array().unwrap().len(), 2, "{st}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_with_member_add_and_join() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.settled(3).await;
    let port = dead_address().port();
    let addr = format!("127.0.0.1:{port}");

    // Added as a learner first (whichever node is asked).
    let added = ctl_ok(&cluster.all_servers(), &["member", "add", "4", &addr]).await;
    let m4 = added["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == 4)
        .unwrap_or_else(|| panic!("{added}"))
        .clone();
    assert_eq!(m4["role"], "learner");
    assert_eq!(m4["voter"], false);
    // The same id at another address is refused.
    let (class, msg) = ctl(
        &cluster.all_servers(),
        &["member", "add", "4", "127.0.0.1:1"],
    )
    .await
    .unwrap_err();
    assert_eq!(class, ExitClass::Refused, "{msg}");

    // The node starts with --join, catches up and becomes a voter.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let join = cluster.server(leader);
    let node4 = Kmsd::start_raw(
        dir.path(),
        &[
            "--data-dir",
            &data,
            "--node-id",
            "4",
            "--kms-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            &addr,
            "--dns-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--join",
            &join,
            "--insecure",
        ],
        &[],
    );
    cluster.nodes.insert(4, node4);
    cluster._dirs.push(dir);
    assert_eq!(cluster.settled(4).await, leader);
    // The leader promotes the learner once it has caught up: node 4 sees itself a voter.
    let server4 = cluster.server(4);
    eventually("node 4 promoted to voter", Duration::from_secs(60), || {
        let server4 = server4.clone();
        async move {
            let st = ctl(&server4, &["status"]).await.ok()?;
            let m4 = st["members"].as_array()?.iter().find(|m| m["id"] == 4)?;
            (m4["role"] == "follower" && m4["voter"] == true).then_some(())
        }
    })
    .await;
    // The new member answers clients with the cluster's identity and counts.
    let win = windows_client();
    let a = activate(cluster.nodes[&1].kms_addr(), &win, &machine(&win)).await;
    let b = activate(cluster.nodes[&4].kms_addr(), &win, &machine(&win)).await;
    assert_eq!(a.response.epid, b.response.epid);
    assert_eq!(b.response.current_count, 2);
}

/// CMID → workstation of every client in a `clients list` document.
fn inventory(list: &Value) -> BTreeMap<String, String> {
    list["clients"]
        .as_array()
        .unwrap_or_else(|| panic!("no clients in {list}"))
        .iter()
        .map(|c| {
            (
                c["cmid"].as_str().unwrap().to_string(),
                c["workstation"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The workstation names a `kmsctl clients list <filters>` at `server` returns (in order).
async fn listed(server: &str, filters: &[&str]) -> Vec<String> {
    let mut args = vec!["clients", "list"];
    args.extend_from_slice(filters);
    let doc = ctl_ok(server, &args).await;
    doc["clients"]
        .as_array()
        .unwrap_or_else(|| panic!("no clients in {doc}"))
        .iter()
        .map(|c| c["workstation"].as_str().unwrap().to_string())
        .collect()
}

/// Sorted copies of `names`, for comparing listings as sets.
fn sorted(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

fn sorted_owned(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Wait until every node of `cluster` lists exactly `expected` (CMID → workstation).
async fn wait_inventory(cluster: &Cluster, expected: &BTreeMap<String, String>) {
    for id in cluster.nodes.keys().copied() {
        let server = cluster.server(id);
        let last = eventually(
            &format!("node {id} to list the {} clients", expected.len()),
            Duration::from_secs(20),
            || {
                let server = server.clone();
                async move {
                    let list = ctl_ok(&server, &["clients", "list", "--limit", "0"]).await;
                    (inventory(&list) == *expected).then_some(list)
                }
            },
        )
        .await;
        assert_eq!(inventory(&last), *expected, "node {id}");
    }
}

/// Issue 6 on three nodes: the inventory (every CMID with its workstation, on every node), the
/// `clients list` filters and paging through kmsctl, forgetting a CMID (lower count on every
/// node), then backup → `kmsd --restore` into a new three-node cluster, whose every node has
/// the same clients, counts, configuration and identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_inventory_filters_forget_backup_and_restore() {
    let cluster = Cluster::start(3);
    let leader = cluster.settled(3).await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let kms = |id: u64| cluster.nodes[&id].kms_addr();
    let (win, srv, o16, o10) = (
        windows_client(),
        windows_server(),
        office2016(),
        office2010(),
    );

    // Early machines, spread over the three nodes.
    let mut expected = BTreeMap::new();
    let mut by_name = BTreeMap::new();
    let early = [
        (1, &win, "INV-DESK-1"),
        (2, &win, "INV-DESK-2"),
        (3, &win, "INV-DESK-3"),
        (1, &srv, "INV-SRV-1"),
        (2, &o16, "INV-OFFICE16"),
        (3, &o10, "INV-OFFICE10"),
    ];
    for (id, p, name) in early {
        let who = named(p, name);
        activate(kms(id), p, &who).await;
        expected.insert(who.cmid.to_string(), name.to_string());
        by_name.insert(name, who.cmid.to_string());
    }
    // A cut (whole seconds) after every early `last_seen`, passed before the late machines:
    // every early machine is listed, so it was recorded before now (kmsd stamps records with
    // the same clock).
    wait_inventory(&cluster, &expected).await;
    let cut = unix_now() + 1;
    while unix_now() < cut {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (id, name) in [(2, "LATE-DESK-1"), (3, "LATE-DESK-2")] {
        let who = named(&win, name);
        activate(kms(id), &win, &who).await;
        expected.insert(who.cmid.to_string(), name.to_string());
        by_name.insert(name, who.cmid.to_string());
    }
    // A cloned image: one CMID under two names, at two nodes.
    let clone_a = named(&win, "CLONE-A");
    activate(kms(1), &win, &clone_a).await;
    let mut clone_b = clone_a.clone();
    clone_b.workstation = "CLONE-B".into();
    activate(kms(3), &win, &clone_b).await;
    expected.insert(clone_a.cmid.to_string(), "CLONE-B".into());

    // (1) Every node lists every CMID with its workstation name.
    wait_inventory(&cluster, &expected).await;
    let early_names = [
        "INV-DESK-1",
        "INV-DESK-2",
        "INV-DESK-3",
        "INV-SRV-1",
        "INV-OFFICE16",
        "INV-OFFICE10",
    ];
    let late_names = ["LATE-DESK-1", "LATE-DESK-2", "CLONE-B"];
    let cut_s = format!("@{cut}");
    let srv_group = srv
        .group
        .clone()
        .expect("the server edition's product group");
    let o16_id = o16.kms_counted_id.to_string();
    for id in [1u64, 2, 3] {
        let s = cluster.server(id);
        let s = s.as_str();
        // Filters, each checked against the names it must return.
        let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
            (
                vec!["--pool", "windows"],
                vec![
                    "INV-DESK-1",
                    "INV-DESK-2",
                    "INV-DESK-3",
                    "INV-SRV-1",
                    "LATE-DESK-1",
                    "LATE-DESK-2",
                    "CLONE-B",
                ],
            ),
            (vec!["--pool", "office2013plus"], vec!["INV-OFFICE16"]),
            (vec!["--pool", "office2010"], vec!["INV-OFFICE10"]),
            (vec!["--product", &srv_group], vec!["INV-SRV-1"]),
            (vec!["--product", &o16_id], vec!["INV-OFFICE16"]),
            (vec!["--since", &cut_s], late_names.to_vec()),
            (vec!["--before", &cut_s], early_names.to_vec()),
            (
                vec!["--since", &cut_s, "--workstation", "late-desk"],
                vec!["LATE-DESK-1", "LATE-DESK-2"],
            ),
            (
                vec!["--pool", "windows", "--workstation", "inv-"],
                vec!["INV-DESK-1", "INV-DESK-2", "INV-DESK-3", "INV-SRV-1"],
            ),
            (
                vec!["--workstation", "Inv-Desk"],
                vec!["INV-DESK-1", "INV-DESK-2", "INV-DESK-3"],
            ),
            (vec!["--duplicates"], vec!["CLONE-B"]),
            (vec!["--since", "1h", "--limit", "0"], {
                let mut v = early_names.to_vec();
                v.extend(late_names);
                v
            }),
            (vec!["--before", "1h"], vec![]),
        ];
        for (filters, names) in cases {
            assert_eq!(
                sorted_owned(listed(s, &filters).await),
                sorted(&names),
                "node {id}: clients list {filters:?}"
            );
        }
        let dup = ctl_ok(s, &["clients", "list", "--duplicates"]).await;
        let d = &dup["clients"][0];
        assert_eq!(d["cmid"], clone_a.cmid.to_string(), "{dup}");
        assert_eq!(d["duplicate"], true, "{dup}");
        assert_eq!(d["duplicate_workstation"], "CLONE-A", "{dup}");
        let g = ctl_ok(s, &["clients", "list", "--product", &srv_group]).await;
        assert_eq!(g["clients"][0]["product_group"], srv_group.as_str(), "{g}");
        let (class, msg) = ctl(s, &["clients", "list", "--product", "Windows 95"])
            .await
            .unwrap_err();
        assert_eq!(class, ExitClass::Usage, "{msg}");

        // Paging: a page of 4 and a cursor for the rest give the whole list once, in order.
        let full = listed(s, &["--limit", "0"]).await;
        assert_eq!(full.len(), 9);
        let first = ctl_ok(s, &["clients", "list", "--limit", "4"]).await;
        let cursor = first["next_cursor"]
            .as_str()
            .unwrap_or_else(|| panic!("no next_cursor after 4 of 9: {first}"))
            .to_string();
        let rest = ctl_ok(s, &["clients", "list", "--limit", "0", "--cursor", &cursor]).await;
        assert_eq!(rest["next_cursor"], Value::Null, "{rest}");
        let paged: Vec<String> = [&first, &rest]
            .iter()
            .flat_map(|d| d["clients"].as_array().unwrap().iter())
            .map(|c| c["workstation"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(paged, full, "node {id}");
        // A filtered listing pages within the filter.
        let w1 = ctl_ok(s, &["clients", "list", "--pool", "windows", "--limit", "3"]).await;
        let c1 = w1["next_cursor"].as_str().expect("more windows clients");
        let w2 = listed(s, &["--pool", "windows", "--limit", "0", "--cursor", c1]).await;
        assert_eq!(w1["clients"].as_array().unwrap().len(), 3);
        assert_eq!(w2.len(), 4, "{w2:?}");
        assert!(w2.iter().all(|n| !n.starts_with("INV-OFFICE")), "{w2:?}");

        let counts = ctl_ok(s, &["counts"]).await;
        assert_eq!(pool(&counts, "windows")["live"], 7, "node {id}: {counts}");
        assert_eq!(pool(&counts, "office2013plus")["live"], 1, "node {id}");
        assert_eq!(pool(&counts, "office2010")["live"], 1, "node {id}");
    }

    // (2) Forgetting a CMID (asked at a follower) lowers the count on every node.
    let gone = by_name["LATE-DESK-1"].clone();
    let forgotten = ctl_ok(&cluster.server(follower), &["clients", "forget", &gone]).await;
    assert_eq!(forgotten["forgotten"][0]["workstation"], "LATE-DESK-1");
    expected.remove(&gone);
    for id in [1u64, 2, 3] {
        let s = cluster.server(id);
        let live = eventually(
            &format!("node {id} to count 6 Windows clients"),
            Duration::from_secs(20),
            || {
                let s = s.clone();
                async move {
                    let counts = ctl_ok(&s, &["counts"]).await;
                    let live = pool(&counts, "windows")["live"].clone();
                    (live == 6).then_some(live)
                }
            },
        )
        .await;
        assert_eq!(live, 6);
        let (class, _) = ctl(&s, &["clients", "show", &gone]).await.unwrap_err();
        assert_eq!(class, ExitClass::Refused, "node {id} still shows {gone}");
    }
    wait_inventory(&cluster, &expected).await;

    // (3) Backup of a changed configuration and identity, restored into a new cluster.
    ctl_ok(
        &cluster.server(follower),
        &["config", "set", "renewal-interval", "1440"],
    )
    .await;
    ctl_ok(
        &cluster.server(leader),
        &["config", "set", "seat-limit.office2013plus", "50"],
    )
    .await;
    ctl_ok(
        &cluster.server(follower),
        &["identity", "set", "hwid", "0102030405060708"],
    )
    .await;
    let reference = cluster.server(leader);
    let config = ctl_ok(&reference, &["config", "get"]).await;
    let identity = ctl_ok(&reference, &["identity", "show"]).await;
    assert_eq!(identity["hwid"], "0102030405060708", "{identity}");
    // Every node of the old cluster agrees before the backup.
    for id in [1u64, 2, 3] {
        let s = cluster.server(id);
        let (config, identity) = (&config, &identity);
        eventually(
            &format!("node {id} to apply the configuration and identity"),
            Duration::from_secs(20),
            || {
                let s = s.clone();
                async move {
                    let c = ctl_ok(&s, &["config", "get"]).await;
                    let i = ctl_ok(&s, &["identity", "show"]).await;
                    (c == *config && i == *identity).then_some(())
                }
            },
        )
        .await;
    }
    let clients = ctl_ok(&reference, &["clients", "list", "--limit", "0"]).await;
    assert_eq!(inventory(&clients), expected);
    let counts = ctl_ok(&reference, &["counts"]).await;
    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("three.kmsbak");
    let file_s = file.to_str().unwrap().to_string();
    let b = ctl_ok(&cluster.all_servers(), &["backup", &file_s]).await;
    assert_eq!(b["clients"], 8, "{b}");
    drop(cluster);

    // The last node started restores (`--restore` needs the quorum the first two make).
    let restored = Cluster::start_with(3, |id| {
        if id == 3 {
            vec!["--restore".into(), file_s.clone()]
        } else {
            Vec::new()
        }
    });
    restored.settled(3).await;
    for id in [1u64, 2, 3] {
        let s = restored.server(id);
        let identity = &identity;
        eventually(
            &format!("node {id} of the new cluster to have the restored identity"),
            Duration::from_secs(30),
            || {
                let s = s.clone();
                async move { (ctl_ok(&s, &["identity", "show"]).await == *identity).then_some(()) }
            },
        )
        .await;
    }
    wait_inventory(&restored, &expected).await;
    for id in [1u64, 2, 3] {
        let s = restored.server(id);
        assert_eq!(
            ctl_ok(&s, &["clients", "list", "--limit", "0"]).await,
            clients,
            "node {id}"
        );
        assert_eq!(ctl_ok(&s, &["config", "get"]).await, config, "node {id}");
        assert_eq!(
            ctl_ok(&s, &["identity", "show"]).await,
            identity,
            "node {id}"
        );
        let c = ctl_ok(&s, &["counts"]).await;
        assert_eq!(c["pools"], counts["pools"], "node {id}");
        assert_eq!(
            listed(&s, &["--duplicates"]).await,
            vec!["CLONE-B".to_string()],
            "node {id}"
        );
    }
    // Clients see the same host at every node: ePID, HwId, interval and count carry on.
    let epid_206 = identity["epids"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["group"] == 206)
        .unwrap()["epid"]
        .as_str()
        .unwrap()
        .to_string();
    for (n, id) in [1u64, 2, 3].into_iter().enumerate() {
        let r = activate(restored.nodes[&id].kms_addr(), &win, &machine(&win)).await;
        assert_eq!(r.response.current_count, 7 + n as u32, "node {id}");
        assert_eq!(r.response.renewal_interval, 1440, "node {id}");
        assert_eq!(r.response.epid, epid_206, "node {id}");
        assert_eq!(r.hwid, Some([1, 2, 3, 4, 5, 6, 7, 8]), "node {id}");
    }
}
