//! Operating a node: HTTP endpoints, configuration through flags / TOML / `KMSD_*` variables,
//! shutdown on SIGTERM, and clear failures at startup.

use std::time::{Duration, Instant};

use crate::harness::{Kmsd, loopback_flags, metric_value, run_kmsd};
use crate::kms::*;

const RUN: Duration = Duration::from_secs(30);

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_status_page_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let node = Kmsd::start(dir.path(), &[]);
    let win = windows_client();
    let win_machine = machine(&win);
    activate(node.kms_addr(), &win, &win_machine).await;
    let o10 = office2010();
    activate(node.kms_addr(), &o10, &machine(&o10)).await;

    let (code, body) = node.http_get("/healthz");
    assert_eq!(code, 200, "{body}");
    let (code, body) = node.http_get("/readyz");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("in quorum"), "/readyz: {body}");
    let (code, body) = node.http_get("/");
    assert_eq!(code, 200);
    assert!(
        body.contains("kmsd node 1") && body.contains("windows"),
        "{body}"
    );
    // By default the page shows members, counts and thresholds, not who activated.
    assert!(
        body.contains("id=\"pools\"") && body.contains("id=\"members\""),
        "{body}"
    );
    assert!(
        !body.contains("id=\"activations\"")
            && !body.contains(&win_machine.workstation)
            && !body.contains(&win_machine.cmid.to_string()),
        "the default status page lists activations: {body}"
    );
    let (code, _) = node.http_get("/no-such-page");
    assert_eq!(code, 404);

    let m = node.metrics();
    for series in [
        "kmsd_activations_total{pool=\"windows\",protocol=\"6\",result=\"success\"}",
        "kmsd_activations_total{pool=\"office2010\",protocol=\"4\",result=\"success\"}",
        "kmsd_activation_duration_seconds_count{protocol=\"6\"}",
        "kmsd_build_info{node_id=\"1\",version=\"0.1.0\"}",
    ] {
        assert_eq!(metric_value(&m, series), Some(1.0), "{series} in:\n{m}");
    }
    for name in [
        "kmsd_connections_open",
        "kmsd_pool_clients",
        "kmsd_pool_reported_clients",
        "kmsd_pool_threshold",
        "kmsd_raft_term",
        "kmsd_raft_is_leader",
        "kmsd_raft_commit_index",
        "kmsd_raft_applied_index",
        "kmsd_degraded_journal_entries",
        "process_resident_memory_bytes",
    ] {
        assert!(
            m.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{m}"
        );
    }
    assert_eq!(
        node.wait_metric("kmsd_raft_is_leader", Duration::from_secs(5), |v| v == 1.0),
        1.0
    );
    assert_eq!(
        node.wait_metric(
            "kmsd_pool_threshold{pool=\"windows\"}",
            Duration::from_secs(5),
            |v| v == 25.0
        ),
        25.0
    );
    // One line per activation in the log, with the fields of event 12290 (kmsd writes its log
    // in batches a few milliseconds apart: wait for the lines rather than race them).
    let events_in = |node: &Kmsd| -> Vec<serde_json::Value> {
        node.log_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event_id"] == 12290)
            .collect()
    };
    let started = std::time::Instant::now();
    while events_in(&node).len() < 2 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events = events_in(&node);
    assert_eq!(events.len(), 2, "activation events in the log");
    for key in [
        "cmid",
        "workstation",
        "hresult",
        "current_count",
        "sku_id",
        "source",
    ] {
        assert!(
            !events[0][key].is_null(),
            "event field {key}: {}",
            events[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printed_config_is_accepted_by_config() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut args = loopback_flags(data.to_str().unwrap());
    args.extend(
        [
            "--print-config",
            "--name",
            "printed",
            "--idle-timeout-secs",
            "17",
            "--btfn",
            "false",
        ]
        .map(String::from),
    );
    let (st, toml, err) = run_kmsd(&strs(&args), &[], RUN);
    assert!(st.success(), "--print-config failed: {err}");
    for want in [
        "name = \"printed\"",
        "idle-timeout-secs = 17",
        "btfn = false",
    ] {
        assert!(toml.contains(want), "{want} not in:\n{toml}");
    }
    let file = dir.path().join("kmsd.toml");
    std::fs::write(&file, &toml).unwrap();
    let file = file.to_str().unwrap();

    // Printing again from the file gives the same configuration.
    let (st, again, err) = run_kmsd(&["--config", file, "--print-config"], &[], RUN);
    assert!(st.success(), "{err}");
    assert_eq!(again, toml);

    // A node configured only by that file runs with it.
    let node = Kmsd::start_raw(&data, &["--config", file], &[]);
    let (_, page) = node.http_get("/");
    assert!(page.contains("printed"), "node name from the file: {page}");
    let conn = connect(node.kms_addr()).await;
    assert_eq!(
        conn.association().btfn_ack(),
        None,
        "btfn = false from the file"
    );
    let win = windows_client();
    assert_eq!(
        activate(node.kms_addr(), &win, &machine(&win))
            .await
            .response
            .current_count,
        1
    );
}

#[test]
fn bad_configuration_exits_2_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("data-dir = \"/tmp/x\"\nbogus-key = 1\n", "bogus-key"),
        ("idle-timeout-secs = \"soon\"\n", "idle-timeout-secs"),
        ("idle-timeout-secs = 0\n", "idle-timeout-secs"),
        ("node-id = 0\n", "node-id"),
        ("max-pdu-size = 100\n", "max-pdu-size"),
        ("name = \"not a label\"\n", "name"),
        ("allow-client = [\"10.0.0.0/33\"]\n", "allow-client"),
        ("log-level = \"inf0\"\n", "log-level"),
        ("log-level = \"info,openraft=wran\"\n", "log-level"),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let (st, out, err) = run_kmsd(&["--config", file.to_str().unwrap()], &[], RUN);
        assert_eq!(st.code(), Some(2), "{text:?}: {st:?} {err}");
        assert!(out.is_empty(), "{text:?}: nothing on stdout: {out}");
        assert!(
            err.contains(key),
            "{text:?}: the message must name {key}: {err}"
        );
    }
    // A missing file.
    let missing = dir.path().join("missing.toml");
    let (st, _, err) = run_kmsd(&["--config", missing.to_str().unwrap()], &[], RUN);
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(err.contains("missing.toml"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kmsd_environment_variables_configure_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kmsd.toml");
    std::fs::write(&file, "name = \"from-file\"\nidle-timeout-secs = 9\n").unwrap();
    let file = file.to_str().unwrap();

    // Precedence: flag > environment > file > default.
    let (st, toml, err) = run_kmsd(
        &["--config", file, "--print-config"],
        &[("KMSD_NAME", "from-env"), ("KMSD_MAX_PDU_SIZE", "1024")],
        RUN,
    );
    assert!(st.success(), "{err}");
    for want in [
        "name = \"from-env\"",
        "idle-timeout-secs = 9",
        "max-pdu-size = 1024",
    ] {
        assert!(toml.contains(want), "{want} not in:\n{toml}");
    }
    let (_, toml, _) = run_kmsd(
        &["--config", file, "--print-config", "--name", "from-flag"],
        &[("KMSD_NAME", "from-env")],
        RUN,
    );
    assert!(toml.contains("name = \"from-flag\""), "{toml}");
    let (st, _, err) = run_kmsd(&["--print-config"], &[("KMSD_IDLE_TIMEOUT_SECS", "0")], RUN);
    assert_eq!(
        st.code(),
        Some(2),
        "an invalid value from the environment: {err}"
    );

    // A node configured only through the environment.
    let data = dir.path().join("data");
    let node = Kmsd::start_raw(
        &data,
        &[],
        &[
            ("KMSD_DATA_DIR", data.to_str().unwrap()),
            ("KMSD_KMS_LISTEN", "127.0.0.1:0"),
            ("KMSD_HTTP_LISTEN", "127.0.0.1:0"),
            ("KMSD_GRPC_LISTEN", "127.0.0.1:0"),
            ("KMSD_DNS_LISTEN", "127.0.0.1:0"),
            ("KMSD_LOG_FORMAT", "json"),
            ("KMSD_NAME", "env-node"),
            ("KMSD_BTFN", "false"),
            ("KMSD_NDR64", "false"),
        ],
    );
    assert!(
        data.join("store").exists() || data.exists(),
        "data dir from KMSD_DATA_DIR"
    );
    let (_, page) = node.http_get("/");
    assert!(page.contains("env-node"), "{page}");
    let conn = connect(node.kms_addr()).await;
    assert_eq!(conn.association().btfn_ack(), None, "KMSD_BTFN=false");
    assert_eq!(conn.association().ndr64_context(), None, "KMSD_NDR64=false");
    let win = windows_client();
    activate(node.kms_addr(), &win, &machine(&win)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_connections_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let drain = Duration::from_secs(2);
    let mut node = Kmsd::start(
        dir.path(),
        &["--drain-timeout-secs", "2", "--idle-timeout-secs", "60"],
    );
    let addr = node.kms_addr();
    let win = windows_client();
    // An idle connection that has activated, one with nothing sent, one that has bound (a
    // call has started: it owes its REQUEST), and one in the middle of a PDU.
    let mut used = RawConn::connect(addr).await;
    used.bind().await;
    let reply = used
        .activate(&request(&win, &machine(&win), win.default_protocol))
        .await
        .unwrap();
    granted(reply, "before SIGTERM");
    let mut idle = RawConn::connect(addr).await;
    let mut started = RawConn::connect(addr).await;
    started.bind().await;
    let mut partial = RawConn::connect(addr).await;
    partial.bind().await;
    let pdu = request_pdu(2, 0, 0, &ndr32_stub(&[0u8; 260]));
    partial.send(&pdu[..50]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let start = Instant::now();
    node.signal("TERM");
    // Idle connections (nothing started, or their call answered) are closed at once.
    let t = idle.closed_within(Duration::from_secs(2)).await;
    assert!(t.is_some(), "an idle connection stays open after SIGTERM");
    let t = used.closed_within(Duration::from_secs(2)).await;
    assert!(
        t.is_some(),
        "an answered connection stays open after SIGTERM"
    );
    // The bound one is still served: its REQUEST gets a valid answer, then it is closed.
    let who = machine(&win);
    let reply = started
        .activate(&request(&win, &who, win.default_protocol))
        .await
        .unwrap_or_else(|e| panic!("REQUEST after BIND and SIGTERM: {e}\n{}", tail(&node)));
    let r = granted(reply, "a call started before SIGTERM");
    assert_eq!(r.response.client_machine_id, who.cmid);
    assert!(
        started
            .closed_within(Duration::from_secs(2))
            .await
            .is_some(),
        "closed once its call was answered"
    );
    let (status, node) = tokio::task::spawn_blocking(move || {
        let st = node.wait_exit(drain + Duration::from_secs(8));
        (st, node)
    })
    .await
    .unwrap();
    let elapsed = start.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "kmsd still running {elapsed:?} after SIGTERM; log tail:\n{}",
            tail(&node)
        )
    });
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        tail(&node)
    );
    assert!(
        elapsed < drain + Duration::from_secs(4),
        "exit took {elapsed:?} with a drain timeout of {drain:?}"
    );
    assert!(
        partial
            .closed_within(Duration::from_secs(1))
            .await
            .is_some()
    );
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

fn tail(node: &Kmsd) -> String {
    let lines = node.log_lines();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[test]
fn occupied_port_or_data_dir_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();

    for flag in ["--kms-listen", "--http-listen"] {
        let mut args = loopback_flags(dir.path().join(flag).to_str().unwrap());
        let i = args.iter().position(|a| a == flag).unwrap();
        args[i + 1] = taken_addr.clone();
        let (st, _, err) = run_kmsd(&strs(&args), &[], RUN);
        assert!(!st.success(), "{flag} on a port in use: {st:?}");
        assert!(
            err.contains(&taken_addr) && err.to_lowercase().contains("in use"),
            "{flag}: the message must name the address and say it is in use: {err}"
        );
    }

    // A second node on a data directory that a running node uses.
    let data = dir.path().join("shared");
    let _first = Kmsd::start(&data, &[]);
    let args = loopback_flags(data.to_str().unwrap());
    let (st, _, err) = run_kmsd(&strs(&args), &[], RUN);
    assert!(!st.success(), "two nodes on one data directory: {st:?}");
    assert!(!err.trim().is_empty(), "a message is expected");
    drop(taken);
}

/// A product-group seat limit is exported (`kmsd_seat_limit`, `kmsd_seats_used`), warned about
/// at 90 % (event 40030), enforced with 0xC004F042 for new machines, and gone from the metrics
/// when it is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_seat_limits_are_exported_warned_and_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let node = Kmsd::start(dir.path(), &[]);
    let o10 = office2010();
    let group = o10.kms_counted_id;
    let group_name = kms_core::catalog::product(group)
        .expect("Office 2010 is in the catalog")
        .name;
    let server = node.grpc.to_string();
    let key = format!("seat-limit.{group}");
    crate::admin::ctl_ok(&server, &["config", "set", &key, "2"]).await;

    activate(node.kms_addr(), &o10, &machine(&o10)).await;
    activate(node.kms_addr(), &o10, &machine(&o10)).await;
    // The third new machine of the group is refused.
    let mut conn = connect(node.kms_addr()).await;
    let (_, third) = call(
        &mut conn,
        &request(&o10, &machine(&o10), o10.default_protocol),
    )
    .await;
    assert!(
        matches!(third, kmsctl::client::Reply::Refused(h) if h == kms_wire::Hresult::KMS_ID_MISMATCH),
        "{third:?}"
    );

    let labels = format!("{{name=\"{group_name}\",scope=\"group\"}}");
    let used = node.wait_metric(
        &format!("kmsd_seats_used{labels}"),
        Duration::from_secs(5),
        |v| v == 2.0,
    );
    assert_eq!(used, 2.0);
    assert_eq!(node.metric(&format!("kmsd_seat_limit{labels}")), 2.0);
    // 2 of 2 is past 90 %: the node says so once, with its event id.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let warned = node.log_lines().iter().any(|l| {
            l.contains("\"event_id\":40030")
                && l.contains("\"scope\":\"group\"")
                && l.contains("\"used\":2")
        });
        if warned {
            break;
        }
        assert!(Instant::now() < deadline, "no seat-limit warning logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Removing the limit removes the series.
    crate::admin::ctl_ok(&server, &["config", "set", &key, "none"]).await;
    let m = node.metrics();
    assert!(
        !m.lines().any(|l| l.starts_with("kmsd_seat_limit{")),
        "a removed limit is still exported:\n{m}"
    );
}

/// Without TLS the admin API stays on loopback: a non-loopback `--grpc-listen` is refused at
/// startup (exit 2, saying what to do), as is one from a `KMSD_*` variable; `--insecure` lets
/// it start, with a loud warning in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_text_grpc_off_loopback_needs_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = loopback_flags(dir.path().join("data").to_str().unwrap());
    let i = args.iter().position(|a| a == "--grpc-listen").unwrap();
    args[i + 1] = "0.0.0.0:0".into();
    let (st, out, err) = run_kmsd(&strs(&args), &[], RUN);
    assert_eq!(st.code(), Some(2), "{st:?}: {err}");
    assert!(out.is_empty(), "{out}");
    for want in [
        "grpc-listen",
        "0.0.0.0:0",
        "loopback",
        "--tls-ca",
        "--insecure",
    ] {
        assert!(err.contains(want), "the message must name {want}: {err}");
    }
    assert!(
        !dir.path().join("data").exists(),
        "refused before anything was created"
    );
    // The same from the environment.
    let mut env_args = loopback_flags(dir.path().join("data").to_str().unwrap());
    env_args.drain(i..i + 2);
    let (st, _, err) = run_kmsd(&strs(&env_args), &[("KMSD_GRPC_LISTEN", "[::]:0")], RUN);
    assert_eq!(st.code(), Some(2), "KMSD_GRPC_LISTEN=[::]:0: {st:?}: {err}");
    assert!(err.contains("grpc-listen"), "{err}");

    // --insecure: it starts, warns, and the admin API answers on a non-loopback listener.
    args.push("--insecure".into());
    let mut node = Kmsd::start_raw(&dir.path().join("data"), &strs(&args), &[]);
    assert!(node.grpc.ip().is_unspecified(), "gRPC on {}", node.grpc);
    let warning = node
        .log_lines()
        .into_iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .find(|v| {
            v["level"] == "WARN"
                && v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("--insecure"))
        });
    let warning = warning.unwrap_or_else(|| panic!("no --insecure warning:\n{}", tail(&node)));
    let message = warning["message"].as_str().unwrap();
    assert!(
        message.contains("backup") && message.contains("WITHOUT TLS"),
        "{message}"
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", node.grpc.port()))
            .await
            .is_ok()
    );
    assert!(node.stop().success());
}

/// `--status-page-activations` (or `status-page-activations = true`, or
/// `KMSD_STATUS_PAGE_ACTIVATIONS=true`) adds the recent-activations table to the status page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_lists_activations_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let win = windows_client();
    let who = machine(&win);
    let file = dir.path().join("kmsd.toml");
    std::fs::write(&file, "status-page-activations = true\n").unwrap();
    let via_flag = ["--status-page-activations"];
    let via_file = ["--config", file.to_str().unwrap()];
    let flag_false = ["--status-page-activations=false"];
    for (i, (extra, envs, shown)) in [
        (&via_flag[..], &[][..], true),
        (&via_file[..], &[][..], true),
        (
            &[][..],
            &[("KMSD_STATUS_PAGE_ACTIVATIONS", "true")][..],
            true,
        ),
        (
            &flag_false[..],
            &[("KMSD_STATUS_PAGE_ACTIVATIONS", "true")][..],
            false,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let node = Kmsd::start_with_env(&dir.path().join(format!("n{i}")), extra, envs);
        activate(node.kms_addr(), &win, &who).await;
        let (code, body) = node.http_get("/");
        assert_eq!(code, 200);
        let listed = body.contains("id=\"activations\"")
            && body.contains(&who.workstation)
            && body.contains(&who.cmid.to_string());
        assert_eq!(listed, shown, "{extra:?} {envs:?}: {body}");
        assert!(body.contains("id=\"pools\""), "{body}");
    }
}

/// Every directory and file under `root` (itself included) with its permission bits.
fn modes_under(root: &std::path::Path) -> Vec<(std::path::PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(p) = pending.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                pending.push(e.unwrap().path());
            }
        }
        out.push((p, meta.permissions().mode() & 0o7777));
    }
    out
}

/// Run `bin` with `args` under `umask 000` (through `sh`), stderr into `log`.
fn under_umask_000(bin: &str, args: &[&str], log: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("umask 000; exec \"$@\"")
        .arg("sh")
        .arg(crate::harness::bin(bin))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap());
    cmd
}

/// Wait for the "kmsd serving" line of a kmsd writing its log (text or JSON) to `log`.
async fn serving_line(child: &mut std::process::Child, log: &std::path::Path) -> String {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("kmsd serving")) {
            return line.to_string();
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "kmsd exited during start-up:\n{text}"
        );
        assert!(started.elapsed() < RUN, "kmsd did not start:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Seconds into the UTC day of an RFC 3339 timestamp `YYYY-MM-DDTHH:MM:SS.ffffffZ`, after
/// checking its shape.
fn rfc3339_second_of_day(t: &str) -> i64 {
    let b = t.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    assert!(
        b.len() == 27
            && digits(0..4)
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && b[19] == b'.'
            && digits(20..26)
            && b[26] == b'Z',
        "not RFC 3339 UTC: {t:?}"
    );
    let n = |r: std::ops::Range<usize>| t[r].parse::<i64>().unwrap();
    n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

/// The fields of the 12290 event in kmsd's log, text and JSON, for a granted and a refused
/// request: numbers as numbers, `reason` the documented token and omitted with `detail` on
/// success, `pool` omitted when unknown, the client's time as RFC 3339, no Rust debug forms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_log_fields_are_plain_values_in_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let win = windows_client();
    for format in ["json", "text"] {
        let data = dir.path().join(format);
        let log = dir.path().join(format!("{format}.log"));
        let port = crate::harness::free_ports(1)[0];
        let kms_listen = format!("127.0.0.1:{port}");
        let mut args = loopback_flags(data.to_str().unwrap());
        let at = |args: &[String], flag: &str| args.iter().position(|a| a == flag).unwrap() + 1;
        let i = at(&args, "--log-format");
        args[i] = format.into();
        let i = at(&args, "--kms-listen");
        args[i] = kms_listen.clone();
        let mut child = std::process::Command::new(crate::harness::bin("kmsd"))
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        serving_line(&mut child, &log).await;
        let addr: std::net::SocketAddr = kms_listen.parse().unwrap();
        activate(addr, &win, &machine(&win)).await;
        let mut conn = connect(addr).await;
        let skewed =
            kmsctl::client::build_request(win.default_protocol, &win, &machine(&win), 6 * 3600);
        let (_, reply) = call(&mut conn, &skewed).await;
        assert_eq!(refused(reply, "6 h ahead"), kms_wire::Hresult(0xC004_F06C));

        let started = Instant::now();
        let lines = loop {
            let text = std::fs::read_to_string(&log).unwrap();
            let lines: Vec<String> = text
                .lines()
                .filter(|l| l.contains("activation request processed"))
                .map(str::to_string)
                .collect();
            if lines.len() >= 2 || started.elapsed() > RUN {
                break lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        crate::harness::send_signal(child.id(), "TERM");
        assert_eq!(lines.len(), 2, "{format}: {lines:#?}");
        for line in &lines {
            for debug_form in ["Some(", "None", "[", "{1", "\"-\"", "pool=-"] {
                let body = if format == "json" {
                    line.replace("{\"", "")
                } else {
                    line.clone()
                };
                assert!(
                    !body.contains(debug_form),
                    "{format}: {debug_form} in {line}"
                );
            }
        }
        let (ok, no) = (&lines[0], &lines[1]);
        let times = if format == "json" {
            let ok: serde_json::Value = serde_json::from_str(ok).unwrap();
            let no: serde_json::Value = serde_json::from_str(no).unwrap();
            assert_eq!(ok["event_id"], 12290);
            assert_eq!(ok["hresult"], "0x00000000");
            assert!(
                ok["current_count"].is_u64() && ok["protocol"].is_u64(),
                "{ok}"
            );
            assert_eq!(ok["pool"], "windows");
            assert!(
                ok.get("reason").is_none() && ok.get("detail").is_none(),
                "{ok}"
            );
            assert_eq!(no["hresult"], "0xC004F06C");
            assert_eq!(no["reason"], "time_skew", "{no}");
            assert!(
                no["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("request time differs")),
                "{no}"
            );
            assert_eq!(no["current_count"], 0);
            [ok, no].map(|v| v["client_time"].as_str().unwrap().to_string())
        } else {
            assert!(
                ok.contains(" event_id=12290 ") && ok.contains(" pool=\"windows\" "),
                "{ok}"
            );
            assert!(!ok.contains("reason=") && !ok.contains("detail="), "{ok}");
            assert!(no.contains(" reason=\"time_skew\" "), "{no}");
            assert!(no.contains(" detail=\"request time differs"), "{no}");
            let time = |l: &str| {
                l.split_once(" client_time=")
                    .unwrap_or_else(|| panic!("no client_time: {l}"))
                    .1
                    .split(' ')
                    .next()
                    .unwrap()
                    .to_string()
            };
            [time(ok), time(no)]
        };
        // The times the clients sent: now, and six hours ahead.
        let d = (rfc3339_second_of_day(&times[1]) - rfc3339_second_of_day(&times[0]))
            .rem_euclid(86_400);
        assert!((d - 6 * 3600).abs() < 120, "{format}: {times:?}");
        let _ = child.wait();
    }
}

/// kmsd started with `umask 000` still keeps its data private: the data directory 0700 and
/// every file in it 0600 (sub-directories 0700), while serving and after a clean stop; a wider
/// existing data directory is tightened with one WARN; `kmsctl backup` writes 0600.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_files_and_backups_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // An existing data directory left open to everyone, with a stray world-readable file.
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stray = data.join("notes.txt");
    std::fs::write(&stray, "x").unwrap();
    std::fs::set_permissions(&stray, std::fs::Permissions::from_mode(0o666)).unwrap();

    let log = dir.path().join("kmsd.log");
    let args = loopback_flags(data.to_str().unwrap());
    let mut child = under_umask_000("kmsd", &strs(&args), &log).spawn().unwrap();
    let up = serving_line(&mut child, &log).await;
    let up: serde_json::Value = serde_json::from_str(&up).unwrap();
    let kms: std::net::SocketAddr = up["kms"].as_str().unwrap().parse().unwrap();
    let grpc = up["grpc"].as_str().unwrap().to_string();
    let win = windows_client();
    activate(kms, &win, &machine(&win)).await;

    let check = |when: &str| {
        let modes = modes_under(&data);
        assert!(
            modes.len() > 2,
            "{when}: the store is in {}",
            data.display()
        );
        for (path, mode) in modes {
            let is_dir = path.is_dir();
            let want = if is_dir { 0o700 } else { 0o600 };
            assert!(
                mode == want,
                "{when}: {} has mode {mode:o}, expected {want:o}",
                path.display()
            );
        }
    };
    check("while serving");
    let text = std::fs::read_to_string(&log).unwrap();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("the data directory was readable by group or others"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one WARN for the tightened directory:\n{text}"
    );
    assert!(warnings[0].contains("\"WARN\""), "{}", warnings[0]);

    // kmsctl backup, also under umask 000.
    let backup = dir.path().join("node.kmsbak");
    let ctl_log = dir.path().join("kmsctl.log");
    let out = under_umask_000(
        "kmsctl",
        &["--server", &grpc, "backup", backup.to_str().unwrap()],
        &ctl_log,
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "kmsctl backup: {}",
        std::fs::read_to_string(&ctl_log).unwrap_or_default()
    );
    let mode = std::fs::metadata(&backup).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "backup file mode {mode:o}");

    crate::harness::send_signal(child.id(), "TERM");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < RUN, "kmsd did not stop after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check("after a clean stop");
}

/// A misspelt `--log-level` is a start-up error naming the valid levels (it used to give no
/// log at all); per-target filters stay valid, from the flag and from `KMSD_LOG_LEVEL`.
#[test]
fn log_level_typos_exit_2_naming_the_levels() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut args = loopback_flags(data.to_str().unwrap());
    args.extend(["--log-level".to_string(), "inf0".to_string()]);
    let (st, out, err) = run_kmsd(&strs(&args), &[], RUN);
    assert_eq!(st.code(), Some(2), "{st:?}: {err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("log-level")
            && err.contains("inf0")
            && err.contains("trace, debug, info, warn, error, off"),
        "{err}"
    );
    assert!(!data.exists(), "refused before anything was created");
    let (st, _, err) = run_kmsd(
        &["--print-config"],
        &[("KMSD_LOG_LEVEL", "debug,openraft=loud")],
        RUN,
    );
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(err.contains("'loud'"), "{err}");
    for good in [
        "info,openraft=warn",
        "warn",
        "debug,kms_host=trace,openraft=off",
    ] {
        let (st, toml, err) = run_kmsd(&["--print-config", "--log-level", good], &[], RUN);
        assert!(st.success(), "{good}: {err}");
        assert!(toml.contains(&format!("log-level = \"{good}\"")), "{toml}");
    }
}
