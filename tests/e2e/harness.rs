//! Starting, stopping and killing real `kmsd` processes, and the bounded async helpers (HTTP
//! GET, polling) the multi-node tiers share.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Path of a binary built by this workspace (`cargo test --workspace` builds them all).
pub fn bin(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().expect("test exe path");
    dir.pop(); // deps/
    if dir.ends_with("deps") {
        dir.pop();
    }
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built; run the tests with scripts/test.sh (it runs `cargo build --workspace --bins` first)",
        p.display()
    );
    p
}

/// A running kmsd process with its bound addresses and captured log.
#[derive(Debug)]
pub struct Kmsd {
    child: Option<Child>,
    /// Data directory (kept across restarts).
    pub data_dir: PathBuf,
    /// KMS listener(s).
    pub kms: Vec<SocketAddr>,
    /// HTTP listener.
    pub http: SocketAddr,
    /// gRPC listener (Raft peers and the admin API), from the `grpc` field of "kmsd serving".
    pub grpc: SocketAddr,
    extra: Vec<String>,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    raw: Option<RawLaunch>,
}

/// How a node was launched beyond the standard flags (so `restart` repeats it).
#[derive(Debug, Clone, Default)]
struct RawLaunch {
    /// Exactly these arguments and no standard flags (so a test can configure a node only
    /// through `--config` or `KMSD_*` variables).
    args: Option<Vec<String>>,
    /// Extra environment variables.
    envs: Vec<(String, String)>,
}

impl Kmsd {
    /// Start kmsd on ephemeral loopback ports with `data_dir` and extra flags.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Kmsd {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Self::spawn(data_dir.to_path_buf(), extra)
    }

    /// Start kmsd with exactly `args` and the environment variables `envs` (nothing added; the
    /// node must log JSON, e.g. `--log-format json` or `KMSD_LOG_FORMAT=json`, and should
    /// listen on port 0). `data_dir` is only remembered for the caller.
    pub fn start_raw(data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Kmsd {
        let raw = RawLaunch {
            args: Some(args.iter().map(|s| s.to_string()).collect()),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        Self::spawn_with(data_dir.to_path_buf(), Vec::new(), Some(raw))
    }

    /// Like [`Kmsd::start`] with extra environment variables (e.g. `TOKIO_WORKER_THREADS=1`
    /// to run the node like on a one-CPU machine).
    pub fn start_with_env(data_dir: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Kmsd {
        let raw = RawLaunch {
            args: None,
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let extra = extra.iter().map(|s| s.to_string()).collect();
        Self::spawn_with(data_dir.to_path_buf(), extra, Some(raw))
    }

    fn spawn(data_dir: PathBuf, extra: Vec<String>) -> Kmsd {
        Self::spawn_with(data_dir, extra, None)
    }

    fn spawn_with(data_dir: PathBuf, extra: Vec<String>, raw: Option<RawLaunch>) -> Kmsd {
        let mut cmd = Command::new(bin("kmsd"));
        match raw.as_ref().and_then(|r| r.args.as_ref()) {
            None => {
                cmd.arg("--data-dir")
                    .arg(&data_dir)
                    .args(["--kms-listen", "127.0.0.1:0"])
                    .args(["--http-listen", "127.0.0.1:0"])
                    .args(["--grpc-listen", "127.0.0.1:0"])
                    .args(["--dns-listen", "127.0.0.1:0"])
                    .args(["--log-format", "json"])
                    .args(&extra);
            }
            Some(args) => {
                cmd.args(args);
            }
        }
        if let Some(r) = &raw {
            cmd.envs(r.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn kmsd");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<(Vec<SocketAddr>, SocketAddr, SocketAddr)>();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(t) = tx.as_ref()
                    && let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["message"] == "kmsd serving"
                {
                    let kms = v["kms"]
                        .as_str()
                        .unwrap_or("")
                        .split(',')
                        .filter_map(|s| s.parse().ok())
                        .collect();
                    let http = v["http"].as_str().and_then(|s| s.parse().ok());
                    let grpc = v["grpc"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                    if let Some(http) = http {
                        let _ = t.send((kms, http, grpc));
                        tx = None;
                    }
                }
                log2.lock().unwrap().push(line);
            }
        });
        // Generous: a node restoring a large backup (`--restore`) reports only when done.
        let deadline = Duration::from_secs(180);
        let (kms, http, grpc) = match rx.recv_timeout(deadline) {
            Ok(x) => x,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "kmsd did not report its listeners within {deadline:?}; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Kmsd {
            child: Some(child),
            data_dir,
            kms,
            http,
            grpc,
            extra,
            log,
            raw,
        }
    }

    /// The first KMS address.
    pub fn kms_addr(&self) -> SocketAddr {
        self.kms[0]
    }

    /// Captured log lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let child = self.child.take().expect("running");
        stop_child(child)
    }

    /// Send `sig` (e.g. "TERM") without waiting.
    pub fn signal(&self, sig: &str) {
        send_signal(self.pid(), sig);
    }

    /// Wait up to `timeout` for the process to exit; `None` if it is still running (it is then
    /// left running, and killed on drop).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            let child = self.child.as_mut().expect("running");
            if let Some(st) = child.try_wait().expect("wait") {
                self.child = None;
                return Some(st);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        let (status, body) = self.http_get("/metrics");
        assert_eq!(status, 200, "/metrics: {body}");
        body
    }

    /// The value of one series of `/metrics`, e.g. `kmsd_pool_clients{pool="windows"}`
    /// (0 when the series is absent).
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics(), series).unwrap_or(0.0)
    }

    /// Poll `/metrics` until `series` satisfies `pred` (gauges refresh once a second); returns
    /// the last value seen, satisfying or not, after at most `timeout`.
    pub fn wait_metric(&self, series: &str, timeout: Duration, pred: impl Fn(f64) -> bool) -> f64 {
        let start = Instant::now();
        loop {
            let v = self.metric(series);
            if pred(v) || start.elapsed() > timeout {
                return v;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Resident set size of the process in bytes (from /proc), 0 if unknown.
    pub fn rss_bytes(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    }

    /// SIGKILL (kill -9): no chance to flush anything.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        let _ = child.wait();
    }

    /// Start again on the same data directory with the same flags (new ephemeral ports).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill first");
        let again = Self::spawn_with(self.data_dir.clone(), self.extra.clone(), self.raw.clone());
        *self = again;
    }

    /// GET a path on the HTTP port; returns (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.http).expect("connect http");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        let status = buf
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = buf
            .split_once("\r\n\r\n")
            .map(|x| x.1)
            .unwrap_or("")
            .to_string();
        (status, body)
    }
}

impl Drop for Kmsd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // A failed test leaves each node's log next to the build (target/test-artifacts/e2e),
        // for the post-mortem CI prints nothing else of.
        if std::thread::panicking() {
            let name = self
                .data_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "kmsd".into());
            keep_log(&name, &self.log.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }
}

/// Copy a node's log `lines` to target/test-artifacts/e2e/<test>/<name>-<pid>.log, for the
/// post-mortem of a failed test.
pub fn keep_log(name: &str, lines: &[String]) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-artifacts/e2e")
        .join(
            std::thread::current()
                .name()
                .unwrap_or("test")
                .replace("::", "-"),
        );
    if std::fs::create_dir_all(&dir).is_ok() {
        let file = dir.join(format!("{name}-{}.log", std::process::id()));
        let _ = std::fs::write(&file, lines.join("\n"));
        eprintln!("kmsd log kept in {}", file.display());
    }
}

/// SIGTERM `child` and wait (up to 30 s) for its exit status; kills it and panics if it is
/// still running then.
pub fn stop_child(mut child: Child) -> std::process::ExitStatus {
    send_signal(child.id(), "TERM");
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kmsd did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Send a signal with kill(1) (the workspace forbids `unsafe`, so no libc call).
pub fn send_signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{sig} {pid} failed");
}

/// The value of `series` (metric name plus its exact label set as rendered, e.g.
/// `kmsd_pool_clients{pool="windows"}`) in Prometheus text `text`.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Run kmsd to completion (for invocations that exit by themselves: `--print-config`,
/// configuration errors, occupied ports). Returns (exit status, stdout, stderr); panics if it
/// is still running after `timeout`.
pub fn run_kmsd(
    args: &[&str],
    envs: &[(&str, &str)],
    timeout: Duration,
) -> (std::process::ExitStatus, String, String) {
    use std::io::Read;
    let mut child = Command::new(bin("kmsd"))
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kmsd");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kmsd {args:?} still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (
        status,
        out_t.join().unwrap_or_default(),
        err_t.join().unwrap_or_default(),
    )
}

// ---------------------------------------------------------------------------------------------
// Fixed ports, for multi-process clusters (`--initial-cluster` must name every peer's gRPC
// address up front, and a restarted node must come back on the addresses its clients and
// peers know).

/// The loopback ports of one node that keep their numbers across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePorts {
    /// KMS listener.
    pub kms: u16,
    /// gRPC listener (Raft peers and the admin API).
    pub grpc: u16,
    /// HTTP listener.
    pub http: u16,
}

impl NodePorts {
    /// Three free ports (see [`free_ports`]).
    pub fn pick() -> NodePorts {
        let p = free_ports(3);
        NodePorts {
            kms: p[0],
            grpc: p[1],
            http: p[2],
        }
    }
}

/// `n` distinct TCP ports free on 127.0.0.1 right now, never handed out before by this process.
///
/// Each candidate is checked by binding it and releasing it again. Candidates are drawn below
/// the kernel's ephemeral range (32768–60999), so the `127.0.0.1:0` listeners and outgoing
/// connections of other tests cannot take a port between the check and kmsd's bind (or while
/// a node is down between a kill and its restart); when that fails, `127.0.0.1:0` is used.
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::{Mutex, OnceLock};
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed = HANDED_OUT.get_or_init(Default::default);
    let mut handed = handed.lock().unwrap_or_else(|e| e.into_inner());
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    let mut out = Vec::with_capacity(n);
    let mut tries = 0u32;
    while out.len() < n {
        tries += 1;
        let port = if tries <= 10_000 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(tries);
            h.write_u32(std::process::id());
            20_000 + (h.finish() % 12_000) as u16
        } else {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            l.local_addr().expect("local addr").port()
        };
        if !handed.contains(&port) && free(port) {
            handed.insert(port);
            out.push(port);
        }
        assert!(tries < 20_000, "no free loopback ports found");
    }
    out
}

impl Kmsd {
    /// Start kmsd on the fixed loopback `ports` (KMS, gRPC, HTTP; DNS on port 0) with
    /// `data_dir`, JSON logs and the `extra` flags. [`Kmsd::restart`] reuses the same ports and
    /// flags, as an operator's unit file would.
    pub fn start_with_ports(data_dir: &Path, ports: NodePorts, extra: &[&str]) -> Kmsd {
        let data = data_dir.to_string_lossy().into_owned();
        let kms = format!("127.0.0.1:{}", ports.kms);
        let grpc = format!("127.0.0.1:{}", ports.grpc);
        let http = format!("127.0.0.1:{}", ports.http);
        let mut args = vec![
            "--data-dir",
            data.as_str(),
            "--kms-listen",
            kms.as_str(),
            "--grpc-listen",
            grpc.as_str(),
            "--http-listen",
            http.as_str(),
            "--dns-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ];
        args.extend_from_slice(extra);
        Self::start_raw(data_dir, &args, &[])
    }

    /// Whether this handle has a process (started and not yet stopped, killed or seen to exit).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// Flags that keep a node on loopback ephemeral ports with JSON logs.
pub fn loopback_flags(data_dir: &str) -> Vec<String> {
    [
        "--data-dir",
        data_dir,
        "--kms-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--grpc-listen",
        "127.0.0.1:0",
        "--dns-listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

// ---------------------------------------------------------------------------------------------
// Async helpers shared by the multi-node tiers (cluster, fault)

/// GET `path` from `addr`: (status, body), or `None` when nothing answers within 5 s.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
        Some((status, body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// Call `f` every `every` until it returns `Ok`, for at most `limit`; `f`'s last error
/// otherwise.
pub async fn poll_every<T, F, Fut>(every: Duration, limit: Duration, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        let last = match f().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if start.elapsed() >= limit {
            return Err(last);
        }
        tokio::time::sleep(every).await;
    }
}

/// Poll `f` every 100 ms until it returns `Ok`, for at most `limit`; panics with `what` (and
/// the last diagnostic `f` returned) on timeout.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    poll_every(Duration::from_millis(100), limit, f)
        .await
        .unwrap_or_else(|last| {
            panic!("timed out after {limit:?} waiting for {what}; last seen: {last}")
        })
}
