//! Starting, stopping and killing real `kmsd` processes.

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
        "{} not built; run the tests with `cargo test --workspace` (scripts/test.sh)",
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
    extra: Vec<String>,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Kmsd {
    /// Start kmsd on ephemeral loopback ports with `data_dir` and extra flags.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Kmsd {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Self::spawn(data_dir.to_path_buf(), extra)
    }

    fn spawn(data_dir: PathBuf, extra: Vec<String>) -> Kmsd {
        let mut cmd = Command::new(bin("kmsd"));
        cmd.arg("--data-dir")
            .arg(&data_dir)
            .args(["--kms-listen", "127.0.0.1:0"])
            .args(["--http-listen", "127.0.0.1:0"])
            .args(["--grpc-listen", "127.0.0.1:0"])
            .args(["--dns-listen", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .args(&extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn kmsd");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<(Vec<SocketAddr>, SocketAddr)>();
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
                    if let Some(http) = http {
                        let _ = t.send((kms, http));
                        tx = None;
                    }
                }
                log2.lock().unwrap().push(line);
            }
        });
        let deadline = Duration::from_secs(60);
        let (kms, http) = match rx.recv_timeout(deadline) {
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
            extra,
            log,
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
        let mut child = self.child.take().expect("running");
        send_signal(child.id(), "TERM");
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().expect("wait") {
                return st;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("kmsd did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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
        let again = Self::spawn(self.data_dir.clone(), self.extra.clone());
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
        let body = buf.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("").to_string();
        (status, body)
    }
}

impl Drop for Kmsd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
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
