//! Network namespaces for the fault tier ([`crate::fault`]): one namespace per kmsd node, a
//! bridge joining them and the test process, iptables partitions, small tmpfs data dirs.
//!
//! A [`Lab`] is one test's private network:
//!
//! * a "switch" namespace `kf<pid><t>sw` holding the bridge `br0`;
//! * one namespace per host `kf<pid><t>h<i>`, each with a veth into the bridge and the address
//!   `198.18.<o>.<10+i>/24`;
//! * a veth from the root namespace into the bridge with `198.18.<o>.1/24`, so the test process
//!   itself (KMS clients, kmsctl, HTTP) reaches every node.
//!
//! `198.18.0.0/15` is the range set aside for network benchmarks (RFC 2544): never routed on
//! the internet, and a /24 of it is only used when no address or route of the machine already
//! touches it. Nothing is ever sent outside loopback and the lab's own /24.
//!
//! Dropping the lab (also while unwinding from a panic) kills its processes first, then
//! unmounts its tmpfs mounts and deletes its namespaces and veth. Leftovers of a test process
//! that died without unwinding (SIGKILL) are swept by the next lab: names and mount points
//! carry the owning process id, and only those whose process is gone are removed.
//!
//! Needs root, `ip netns` (iproute2) and iptables; [`Lab::new`] returns the reason to skip
//! when any is missing. The clock-skew scenario also needs libfaketime (package `faketime`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{bin, http_get, keep_log, metric_value, stop_child};

/// Fixed ports inside each node's namespace (every node has its own address).
pub const KMS_PORT: u16 = 1688;
/// gRPC (Raft peers, admin API).
pub const GRPC_PORT: u16 = 1689;
/// HTTP (`/metrics`, `/readyz`).
pub const HTTP_PORT: u16 = 1690;

/// Where Debian's libfaketime package puts the preload library.
const FAKETIME_LIBS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
];

/// The libfaketime preload library, if installed.
pub fn faketime_lib() -> Option<PathBuf> {
    FAKETIME_LIBS.iter().map(PathBuf::from).find(|p| p.exists())
}

/// Run a command; its stdout, or a message with its stderr.
pub fn run(argv: &[&str]) -> Result<String, String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", argv.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// [`run`], panicking on failure.
fn must(argv: &[&str]) -> String {
    run(argv).unwrap_or_else(|e| panic!("{e}"))
}

/// Whether this process runs as root (from /proc; the workspace forbids `unsafe`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Whether a process with this id exists.
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The owning pid of a lab object name (`kf<pid><letter>…`) or mount path (`…/kmsf<pid>-…`).
fn owner_pid(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Remove namespaces, veths and tmpfs mounts left by lab owners that no longer run.
fn sweep_stale() {
    for m in std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
    {
        let Some(point) = m.split_whitespace().nth(1) else {
            continue;
        };
        let Some(base) = point.rsplit('/').find(|s| s.starts_with("kmsf")) else {
            continue;
        };
        if let Some(pid) = owner_pid(base, "kmsf")
            && !alive(pid)
        {
            let _ = run(&["umount", "-l", point]);
        }
    }
    for line in run(&["ip", "netns", "list"]).unwrap_or_default().lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some(pid) = owner_pid(name, "kf")
            && !alive(pid)
        {
            let _ = run(&["ip", "netns", "delete", name]);
        }
    }
    for line in run(&["ip", "-o", "link", "show"])
        .unwrap_or_default()
        .lines()
    {
        // "12: kf123ar@if11: <...>"
        let Some(name) = line.split(':').nth(1).map(|s| s.trim()) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        if let Some(pid) = owner_pid(name, "kf")
            && !alive(pid)
        {
            let _ = run(&["ip", "link", "delete", name]);
        }
    }
}

/// Labs created by this process (names and subnets differ per lab).
static LABS: AtomicU32 = AtomicU32::new(0);

/// One test's namespaces, bridge, tmpfs mounts and kmsd processes.
pub struct Lab {
    tag: String,
    octet: u8,
    hosts: Vec<String>,
    switch: String,
    root_veth: String,
    dir: Option<tempfile::TempDir>,
    mounts: Vec<PathBuf>,
    nodes: Vec<NsKmsd>,
}

impl Lab {
    /// A lab with `hosts` host namespaces, or the reason the fault tier cannot run here.
    pub fn new(hosts: usize) -> Result<Lab, String> {
        if !is_root() {
            return Err("not root (network namespaces and iptables need CAP_NET_ADMIN)".into());
        }
        run(&["ip", "netns", "list"]).map_err(|e| format!("`ip netns` unavailable: {e}"))?;
        run(&["iptables", "--version"]).map_err(|e| format!("iptables unavailable: {e}"))?;
        sweep_stale();
        let n = LABS.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let letter = char::from(b'a' + (n % 26) as u8);
        let tag = format!("kf{pid}{letter}");
        let octet = Self::free_octet(pid, n)?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("kmsf{pid}-"))
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let mut lab = Lab {
            switch: format!("{tag}sw"),
            root_veth: format!("{tag}r"),
            tag,
            octet,
            hosts: Vec::new(),
            dir: Some(dir),
            mounts: Vec::new(),
            nodes: Vec::new(),
        };
        // The first namespace tells whether namespaces work at all (a container without
        // CAP_SYS_ADMIN fails here): skip, not fail.
        run(&["ip", "netns", "add", &lab.switch])
            .map_err(|e| format!("cannot create a network namespace: {e}"))?;
        let sw = lab.switch.clone();
        if let Err(e) = run(&["ip", "netns", "exec", &sw, "iptables", "-w", "-L", "-n"]) {
            return Err(format!("iptables does not work in a namespace: {e}"));
        }
        must(&["ip", "-n", &sw, "link", "set", "lo", "up"]);
        must(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"]);
        must(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
        let (r, s) = (lab.root_veth.clone(), format!("{}s", lab.tag));
        must(&["ip", "link", "add", &r, "type", "veth", "peer", "name", &s]);
        must(&["ip", "link", "set", &s, "netns", &sw]);
        must(&["ip", "-n", &sw, "link", "set", &s, "master", "br0", "up"]);
        let _ = run(&[
            "sysctl",
            "-q",
            "-w",
            &format!("net.ipv6.conf.{r}.disable_ipv6=1"),
        ]);
        must(&[
            "ip",
            "addr",
            "add",
            &format!("198.18.{octet}.1/24"),
            "dev",
            &r,
        ]);
        must(&["ip", "link", "set", &r, "up"]);
        for _ in 0..hosts {
            lab.add_host();
        }
        Ok(lab)
    }

    /// A third octet of 198.18.x.0/24 no address or route of this machine touches.
    fn free_octet(pid: u32, n: u32) -> Result<u8, String> {
        let used = format!(
            "{}\n{}",
            run(&["ip", "-o", "-4", "addr", "show"]).unwrap_or_default(),
            run(&["ip", "-4", "route", "show", "table", "all"]).unwrap_or_default()
        );
        for k in 0..200u32 {
            let octet = 20 + ((pid.wrapping_mul(7) + n * 13 + k) % 200) as u8;
            if !used.contains(&format!("198.18.{octet}.")) && !used.contains("198.18.0.0/15") {
                return Ok(octet);
            }
        }
        Err("no free /24 in 198.18.0.0/15 for a lab".into())
    }

    /// Add one more host namespace on the bridge; returns its index.
    pub fn add_host(&mut self) -> usize {
        let i = self.hosts.len();
        let ns = format!("{}h{i}", self.tag);
        let (a, b) = (format!("{}a{i}", self.tag), format!("{}b{i}", self.tag));
        must(&["ip", "netns", "add", &ns]);
        self.hosts.push(ns.clone());
        must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        must(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
        must(&["ip", "link", "set", &b, "netns", &self.switch]);
        must(&[
            "ip",
            "-n",
            &self.switch,
            "link",
            "set",
            &b,
            "master",
            "br0",
            "up",
        ]);
        must(&["ip", "link", "set", &a, "netns", &ns]);
        let addr = format!("{}/24", self.host_ip(i));
        must(&["ip", "-n", &ns, "addr", "add", &addr, "dev", &a]);
        must(&["ip", "-n", &ns, "link", "set", &a, "up"]);
        i
    }

    /// The address of host `i`.
    pub fn host_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.octet, 10 + i as u8)
    }

    /// The namespace name of host `i`.
    pub fn host_ns(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    /// A directory the test owns (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("lab dir").path()
    }

    /// A tmpfs of `megabytes` mounted at `<lab dir>/<name>` (unmounted on drop).
    pub fn tmpfs(&mut self, name: &str, megabytes: u32) -> PathBuf {
        let p = self.dir().join(name);
        std::fs::create_dir_all(&p).expect("mount point");
        let p_str = p.to_string_lossy().into_owned();
        must(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &format!("size={megabytes}m,mode=0700"),
            "tmpfs",
            &p_str,
        ]);
        self.mounts.push(p.clone());
        p
    }

    /// Start kmsd on host `host` with `args` (after the listen flags the lab adds), the
    /// environment `envs`, and the clock offset `faketime` (libfaketime's `FAKETIME`, e.g.
    /// `+2h`) if any. Returns the node's index in the lab; the process is not waited for.
    pub fn spawn(
        &mut self,
        host: usize,
        data_dir: &Path,
        args: &[String],
        faketime: Option<&str>,
    ) -> usize {
        let node = NsKmsd {
            child: None,
            ns: self.hosts[host].clone(),
            host,
            ip: self.host_ip(host),
            data_dir: data_dir.to_path_buf(),
            args: args.to_vec(),
            faketime: faketime.map(str::to_string),
            log: Arc::default(),
            run_mark: 0,
        };
        self.nodes.push(node);
        let k = self.nodes.len() - 1;
        self.nodes[k].start();
        k
    }

    /// Node `k` (an index [`Lab::spawn`] returned).
    pub fn node(&self, k: usize) -> &NsKmsd {
        &self.nodes[k]
    }

    /// Node `k`, mutable.
    pub fn node_mut(&mut self, k: usize) -> &mut NsKmsd {
        &mut self.nodes[k]
    }

    /// `iptables -w <args>` in host `host`'s namespace.
    fn iptables(&self, host: usize, args: &[&str]) -> Result<String, String> {
        let mut argv = vec!["ip", "netns", "exec", &self.hosts[host], "iptables", "-w"];
        argv.extend_from_slice(args);
        run(&argv)
    }

    /// Cut host `host` off from the hosts `peers` (iptables DROP in its namespace, INPUT
    /// from and OUTPUT to each peer's address). The test process still reaches it.
    pub fn cut(&self, host: usize, peers: &[usize]) {
        for &p in peers {
            let ip = self.host_ip(p).to_string();
            for (chain, dir) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
                self.iptables(host, &["-I", chain, dir, &ip, "-j", "DROP"])
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }

    /// Remove every rule [`Lab::cut`] added on host `host`.
    pub fn heal(&self, host: usize) {
        for chain in ["INPUT", "OUTPUT"] {
            self.iptables(host, &["-F", chain])
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// The DROP rules on host `host` (for diagnostics).
    pub fn rules(&self, host: usize) -> String {
        self.iptables(host, &["-S"]).unwrap_or_else(|e| e)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Processes first: a namespace or mount in use cannot go.
        for n in &mut self.nodes {
            n.kill9_quiet();
        }
        if std::thread::panicking() {
            for n in &self.nodes {
                n.keep_log();
            }
        }
        for m in self.mounts.drain(..).rev() {
            let p = m.to_string_lossy().into_owned();
            if run(&["umount", &p]).is_err() {
                let _ = run(&["umount", "-l", &p]);
            }
        }
        for ns in self.hosts.drain(..) {
            let _ = run(&["ip", "netns", "delete", &ns]);
        }
        let _ = run(&["ip", "netns", "delete", &self.switch]);
        // Deleting the switch namespace destroys the peer, and with it this end; in case not:
        let _ = run(&["ip", "link", "delete", &self.root_veth]);
        drop(self.dir.take());
    }
}

/// One kmsd process in a host namespace. Its log is kept across restarts (one capture, lines
/// appended), so a test can count the lines written between two moments.
#[derive(Debug)]
pub struct NsKmsd {
    child: Option<Child>,
    ns: String,
    /// Host index in the lab.
    pub host: usize,
    /// The host's address.
    pub ip: Ipv4Addr,
    /// Data directory (kept across restarts).
    pub data_dir: PathBuf,
    args: Vec<String>,
    faketime: Option<String>,
    log: Arc<Mutex<Vec<String>>>,
    /// Log length when the current run started.
    run_mark: usize,
}

impl NsKmsd {
    fn start(&mut self) {
        assert!(self.child.is_none(), "node already running");
        self.run_mark = self.log_len();
        let ip = self.ip;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]);
        // `env` execs kmsd in place (as `ip netns exec` does), so the child's pid is kmsd's own
        // and kill -9 reaches it; the `faketime` wrapper would fork and leave kmsd behind it.
        cmd.arg("env");
        if let Some(offset) = &self.faketime {
            let lib = faketime_lib().expect("libfaketime (package faketime) not installed");
            cmd.arg(format!("LD_PRELOAD={}", lib.display()))
                .arg(format!("FAKETIME={offset}"))
                .arg("FAKETIME_DONT_RESET=1");
        }
        cmd.arg(bin("kmsd"))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--kms-listen", &format!("{ip}:{KMS_PORT}")])
            .args(["--grpc-listen", &format!("{ip}:{GRPC_PORT}")])
            .args(["--http-listen", &format!("{ip}:{HTTP_PORT}")])
            .args(["--dns-listen", "127.0.0.1:0"])
            .args(["--advertise", &ip.to_string()])
            .args(["--log-format", "json"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ip netns exec kmsd");
        let stderr = child.stderr.take().expect("stderr");
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        self.child = Some(child);
    }

    /// The gRPC address (Raft peers, kmsctl `--server`).
    pub fn grpc(&self) -> SocketAddr {
        SocketAddr::from((self.ip, GRPC_PORT))
    }

    /// The KMS address.
    pub fn kms(&self) -> SocketAddr {
        SocketAddr::from((self.ip, KMS_PORT))
    }

    /// The HTTP address.
    pub fn http(&self) -> SocketAddr {
        SocketAddr::from((self.ip, HTTP_PORT))
    }

    /// The process id (0 when not running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Whether the process runs (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// Every captured log line (all runs).
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many lines were captured so far.
    pub fn log_len(&self) -> usize {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Lines captured since `mark` (a [`NsKmsd::log_len`]).
    pub fn log_since(&self, mark: usize) -> Vec<String> {
        let l = self.log.lock().unwrap_or_else(|e| e.into_inner());
        l.get(mark..).map(|s| s.to_vec()).unwrap_or_default()
    }

    /// User + system CPU time in clock ticks (from /proc/PID/stat), 0 if unknown.
    pub fn cpu_ticks(&self) -> u64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())) else {
            return 0;
        };
        // Fields after "pid (comm) ": state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let get = |i: usize| {
            f.get(i - 3)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
        };
        get(14) + get(15)
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let mut c = self.child.take().expect("node not running");
        c.kill().expect("kill -9");
        let _ = c.wait();
    }

    fn kill9_quiet(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (up to 30 s) for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        stop_child(self.child.take().expect("node not running"))
    }

    /// Start again with the same data directory, flags and namespace.
    pub fn restart(&mut self) {
        self.start();
    }

    /// Wait until this run logged "kmsd serving" (at most `limit`); false if it did not (or
    /// the process exited).
    pub async fn wait_listening(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        loop {
            // The lines of earlier runs do not count.
            if self
                .log_since(self.run_mark)
                .iter()
                .any(|l| l.contains("\"kmsd serving\""))
            {
                return true;
            }
            if !self.is_running() || start.elapsed() > limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Copy the log next to the build (target/test-artifacts/e2e/<test>), for post-mortems.
    fn keep_log(&self) {
        keep_log(&self.ns, &self.log_lines());
    }
}

// ---------------------------------------------------------------------------------------------
// Talking to the nodes from the test process (over the bridge)

/// One series of `/metrics` at `http` (0 when absent), `None` if the node does not answer.
pub async fn metric(http: SocketAddr, series: &str) -> Option<f64> {
    match http_get(http, "/metrics").await? {
        (200, body) => Some(metric_value(&body, series).unwrap_or(0.0)),
        _ => None,
    }
}

/// Run the kmsctl binary with `args` (at most 60 s): (exit code, stdout, stderr).
pub async fn kmsctl(args: &[&str]) -> (i32, String, String) {
    let fut = tokio::process::Command::new(bin("kmsctl"))
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(60), fut).await {
        Ok(Ok(out)) => (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        Ok(Err(e)) => (-1, String::new(), format!("spawn kmsctl: {e}")),
        Err(_) => (-1, String::new(), "kmsctl ran longer than 60 s".into()),
    }
}

/// Every CMID in `kmsctl -o json --server <grpc> clients list --limit 0`, with how many times
/// it is listed; `Err` with kmsctl's message if it failed.
pub async fn listed_cmids(grpc: SocketAddr) -> Result<BTreeMap<String, usize>, String> {
    let server = grpc.to_string();
    let (code, out, err) = kmsctl(&[
        "-o", "json", "--server", &server, "clients", "list", "--limit", "0",
    ])
    .await;
    if code != 0 {
        return Err(format!(
            "kmsctl clients list at {server}: exit {code}: {err}"
        ));
    }
    let doc: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| format!("kmsctl output: {e}: {out}"))?;
    let mut seen = BTreeMap::new();
    for c in doc["clients"]
        .as_array()
        .ok_or_else(|| format!("no clients array: {doc}"))?
    {
        let cmid = c["cmid"].as_str().unwrap_or("").to_ascii_lowercase();
        *seen.entry(cmid).or_insert(0) += 1;
    }
    Ok(seen)
}
