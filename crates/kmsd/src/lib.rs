//! # kmsd — one node of the highly available KMS host
//!
//! Wiring only: configuration ([`config`]), logging, the replicated store and Raft node
//! (`kms-cluster`), the KMS listener (`kms-host`), HTTP (`/metrics`, `/healthz`, `/readyz`, `/`)
//! and signal handling. [`run`] starts a whole node on already-validated settings and returns
//! when `shutdown` resolves and everything has drained, so tests can run nodes in-process.

pub mod admin;
pub mod config;
pub mod events;
mod grpc_auth;
pub mod http;
mod json_log;
pub mod logging;
pub mod metrics;
pub mod sd_notify;
mod text_log;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Settings;

/// Bind a TCP listener; `[::]:port` is dual-stack (IPv4 clients arrive as mapped addresses).
/// On a host without IPv6 the wildcard `[::]` falls back to `0.0.0.0` with a warning, so the
/// embedded default (`[::]:1688`) starts everywhere.
pub fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    with_ipv4_fallback(addr, bind_tcp_exact)
}

fn bind_tcp_exact(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // Dual-stack unless the address is a specific IPv6 one that cannot carry IPv4 anyway.
        let _ = socket.set_only_v6(false);
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    // Every listener here serves request/response protocols. Linux gives accepted sockets
    // the listener's TCP_NODELAY, so the KMS listener need not set it per connection.
    let _ = socket.set_tcp_nodelay(true);
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// True when `e` says the host has no usable IPv6 (module not loaded, disabled by sysctl).
fn ipv6_unavailable(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT | libc::EADDRNOTAVAIL)
    )
}

/// Bind `addr` with `bind`; when `addr` is the IPv6 wildcard and the host has no IPv6, bind the
/// IPv4 wildcard on the same port instead.
fn with_ipv4_fallback<T>(
    addr: SocketAddr,
    bind: impl Fn(SocketAddr) -> std::io::Result<T>,
) -> std::io::Result<T> {
    match bind(addr) {
        Err(e) if addr.ip() == std::net::Ipv6Addr::UNSPECIFIED && ipv6_unavailable(&e) => {
            let v4 = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), addr.port());
            warn!(requested = %addr, bound = %v4, error = %e, "no IPv6 on this host; listening on IPv4 only");
            bind(v4)
        }
        other => other,
    }
}

/// `host` as it goes in front of `:port` (IPv6 literals in brackets).
fn advertised_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Bind a UDP socket; `[::]:port` is dual-stack, with the same IPv4 fallback as [`bind_tcp`].
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    with_ipv4_fallback(addr, bind_udp_exact)
}

fn bind_udp_exact(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    // A flood should be dropped by the rate limiter, not by a full kernel buffer that also
    // drops legitimate queries (best effort: the kernel caps it at net.core.rmem_max).
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

/// Bind DNS on UDP and TCP. With port 0 both get the same OS-chosen port (the one logged),
/// retried a few times when that port is taken on TCP (the OS picks it for UDP only).
fn bind_dns(addr: SocketAddr) -> anyhow::Result<(tokio::net::UdpSocket, TcpListener)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp = bind_udp(addr).with_context(|| format!("binding DNS (UDP) {addr}"))?;
        let port = udp.local_addr()?;
        match bind_tcp(port) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e)
                if addr.port() == 0
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && attempt < 10 =>
            {
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("binding DNS (TCP) {port}")),
        }
    }
}

/// The DNS server configuration from node settings; `None` when no zone is configured.
fn dns_config(s: &config::DnsSettings) -> anyhow::Result<Option<kms_dns::DnsConfig>> {
    if s.zones.is_empty() {
        return Ok(None);
    }
    let zones = s
        .zones
        .iter()
        .map(|z| kms_dns::parse_zone(z))
        .collect::<Result<Vec<_>, _>>()?;
    let cfg = kms_dns::DnsConfig {
        zones,
        ttl: std::time::Duration::from_secs(u64::from(s.ttl)),
        axfr_allow: s.axfr_allow.clone(),
        rate_limit: kms_dns::RateLimitConfig {
            responses_per_second: s.rate_limit,
            burst: s.rate_limit.saturating_mul(2),
            ..kms_dns::RateLimitConfig::default()
        },
        ..kms_dns::DnsConfig::default()
    };
    cfg.validate()?;
    Ok(Some(cfg))
}

/// Create the data directory with mode 0700, or make an existing one (and everything in it)
/// private to kmsd's user: it holds the client inventory and the host identity. Logs one WARN
/// when it had to take permissions away.
fn private_data_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut tightened = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        } else if !meta.is_file() {
            continue; // symlinks and sockets keep their own modes
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7700))?;
            tightened.push(format!("{} ({mode:o})", path.display()));
        }
    }
    if !tightened.is_empty() {
        warn!(
            data_dir = %dir.display(),
            count = tightened.len(),
            paths = %tightened[..tightened.len().min(5)].join(", "),
            "the data directory was readable by group or others; made it private to kmsd's \
             user (directories 0700, files 0600)"
        );
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => info!("SIGTERM received"),
                    _ = int.recv() => info!("SIGINT received"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Addresses a running node actually bound (useful when configured with port 0).
#[derive(Debug, Clone)]
pub struct BoundAddrs {
    /// KMS listeners.
    pub kms: Vec<SocketAddr>,
    /// HTTP listener.
    pub http: SocketAddr,
    /// gRPC listener.
    pub grpc: SocketAddr,
}

/// Run a node until `shutdown` resolves.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    run_with(settings, shutdown, |_| {}).await
}

/// Like [`run`], calling `on_bound` once every listener is bound.
pub async fn run_with(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
    on_bound: impl FnOnce(BoundAddrs),
) -> anyhow::Result<()> {
    info!(
        node_id = settings.node_id,
        name = %settings.name,
        data_dir = %settings.data_dir.display(),
        version = env!("CARGO_PKG_VERSION"),
        "kmsd starting"
    );
    private_data_dir(&settings.data_dir)
        .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;

    let mut kms_listeners = Vec::new();
    let mut kms_addrs = Vec::new();
    for addr in &settings.kms_listen {
        let l = bind_tcp(*addr).with_context(|| format!("binding KMS listener {addr}"))?;
        kms_addrs.push(l.local_addr()?);
        kms_listeners.push(l);
    }
    let http_listener = bind_tcp(settings.http_listen)
        .with_context(|| format!("binding HTTP listener {}", settings.http_listen))?;
    let http_addr = http_listener.local_addr()?;

    let multi_node = !settings.initial_cluster.is_empty() || settings.join.is_some();
    let tls = match &settings.tls {
        Some(files) => {
            let loaded = kms_tls::LoadedTls::load(files).context("loading TLS files")?;
            if let Ok(Some(mode)) = files.key_too_open() {
                warn!(
                    key = %files.key.display(),
                    mode = format_args!("{mode:o}"),
                    "the TLS key file is readable by group or others"
                );
            }
            info!(ca = %files.ca.display(), cert = %files.cert.display(), "peer and admin gRPC use mutual TLS");
            Some(loaded)
        }
        None => None,
    };
    if multi_node && tls.is_none() && !settings.insecure {
        anyhow::bail!(config::clear_text_refusal(
            "a multi-node cluster (--initial-cluster/--join) must use TLS for peer and admin \
             traffic"
        ));
    }
    if tls.is_none() && settings.insecure {
        warn!(
            grpc = %settings.grpc_listen,
            "--insecure: gRPC runs WITHOUT TLS and WITHOUT authentication: anyone who reaches \
             the gRPC port can change the configuration, rotate the host identity, take a full \
             backup (identity included) and join the cluster; give --tls-ca, --tls-cert and \
             --tls-key (see `kmsctl cert`) instead"
        );
    }
    let grpc_listener = bind_tcp(settings.grpc_listen)
        .with_context(|| format!("binding gRPC listener {}", settings.grpc_listen))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let host = advertised_host(&settings.advertise);
    let kms_port = kms_addrs.first().map(|a| a.port()).unwrap_or(1688);
    let client_tls = match &tls {
        Some(t) => Some(t.client_config(None).context("TLS client configuration")?),
        None => None,
    };
    let net = kms_cluster::PeerNetwork::new(
        settings.node_id,
        kms_cluster::PeerNetworkConfig::default(),
        client_tls,
    );
    let node = kms_cluster::Node::start_with(
        kms_cluster::NodeSettings {
            node_id: settings.node_id,
            name: settings.name.clone(),
            data_dir: settings.data_dir.clone(),
            grpc_addr: format!("{host}:{}", grpc_addr.port()),
            kms_addr: format!("{host}:{kms_port}"),
            ndr64: settings.host.ndr64,
            initial_cluster: settings.initial_cluster.clone(),
            join: settings.join.clone(),
            commit_timeout: settings.commit_timeout,
            snapshot_every: settings.snapshot_every,
            snapshot_keep_logs: settings.snapshot_keep_logs,
            dns_priority: settings.dns.priority,
            dns_weight: settings.dns.weight,
            ..kms_cluster::NodeSettings::default()
        },
        net.clone(),
        Arc::new(net.clone()),
        Arc::new(net.clone()),
    )
    .await
    .context("starting the replicated store")?;
    // The flags are not the whole story: a node restarted without --initial-cluster/--join is
    // still a member of the cluster its data directory records.
    let members = node.status().members.len();
    if members > 1 && tls.is_none() && !settings.insecure {
        node.shutdown().await;
        anyhow::bail!(config::clear_text_refusal(&format!(
            "the data directory holds a cluster of {members} members: peer and admin traffic \
             must use TLS"
        )));
    }
    let node = Arc::new(node);

    let metrics = Arc::new(metrics::Metrics::new(settings.node_id));
    let (stop_tx, stop_rx) = watch::channel(false);

    // gRPC: Raft peers (and the admin API) on one port.
    let server_tls = match &tls {
        Some(t) => Some(t.server_config().context("TLS server configuration")?),
        None => None,
    };
    // True while the KMS listener serves (/readyz, admin Health, probes from peers).
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readiness: kms_cluster::grpc::ReadinessFn = {
        let (node, serving) = (node.clone(), ready.clone());
        Arc::new(move || {
            let r = node.status().readiness();
            if serving.load(std::sync::atomic::Ordering::SeqCst) {
                r
            } else {
                kms_cluster::Readiness {
                    ready: false,
                    reason: "not serving: KMS listener not running".into(),
                }
            }
        })
    };
    let peer = kms_cluster::grpc::RaftPeerService::new(node.raft().clone(), node.id(), node.info())
        .with_initial_cluster(&settings.initial_cluster)
        .with_readiness(readiness)
        .with_closing(stop_rx.clone());
    let peer_refusals = peer.refusals();
    let events = events::EventHub::new(settings.node_id);
    let security = if tls.is_some() {
        admin::AdminSecurity::MutualTls
    } else if settings.insecure {
        admin::AdminSecurity::Insecure
    } else {
        admin::AdminSecurity::LocalOnly
    };
    let router = kms_cluster::grpc::server(server_tls)?
        .add_service(grpc_auth::peer_service(peer, security))
        .add_service(admin::admin_service(
            node.clone(),
            events.clone(),
            security,
            ready.clone(),
        ));
    let grpc_task = tokio::spawn(kms_cluster::grpc::serve(
        grpc_listener,
        router,
        wait_stop(stop_rx.clone()),
    ));
    if let Some(addr) = settings.join.clone() {
        tokio::spawn(join_cluster(
            node.clone(),
            net.clone(),
            addr,
            stop_rx.clone(),
        ));
    }

    let http_task = tokio::spawn(http::serve(
        http_listener,
        http::HttpState {
            metrics: metrics.clone(),
            node: node.clone(),
            kms_ready: ready.clone(),
            events: events.clone(),
            show_activations: settings.status_page_activations,
            peer_refusals,
        },
        wait_stop(stop_rx.clone()),
    ));
    tokio::spawn(sd_notify::watch_readiness(
        node.clone(),
        ready.clone(),
        stop_rx.clone(),
    ));
    let metrics_task = tokio::spawn(http::watch_cluster_events(
        node.clone(),
        metrics.clone(),
        wait_stop(stop_rx.clone()),
    ));

    // DNS: only when zones are configured (there is nothing to answer otherwise).
    let dns_task = match dns_config(&settings.dns).context("DNS configuration")? {
        Some(cfg) => {
            let (udp, tcp) = bind_dns(settings.dns_listen)?;
            let dns_addr = udp.local_addr()?;
            info!(listen = %dns_addr, zones = %settings.dns.zones.join(","), "DNS serving");
            let views = node.view();
            let observer: Arc<dyn kms_dns::DnsObserver> = metrics.clone();
            Some(tokio::spawn(kms_dns::DnsServer::serve(
                udp,
                tcp,
                views,
                cfg,
                observer,
                wait_stop(stop_rx.clone()),
            )))
        }
        None => {
            info!("DNS disabled: no --dns-zone configured");
            None
        }
    };

    if let Some(file) = &settings.restore {
        admin::restore(&node, file)
            .await
            .with_context(|| format!("restoring {}", file.display()))?;
    }
    on_bound(BoundAddrs {
        kms: kms_addrs.clone(),
        http: http_addr,
        grpc: grpc_addr,
    });
    let kms_list = kms_addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    info!(kms = %kms_list, http = %http_addr, grpc = %grpc_addr, "kmsd serving");
    ready.store(true, std::sync::atomic::Ordering::SeqCst);

    let (restart_tx, restart_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(storage_watchdog(
        node.clone(),
        settings.data_dir.clone(),
        restart_tx,
        stop_rx.clone(),
    ));
    let shutdown = async move {
        tokio::select! {
            _ = shutdown => {}
            Ok(()) = restart_rx => {}
        }
    };
    let kms_result = kms_host::serve(
        kms_listeners,
        settings.host.clone(),
        Arc::new(node.ledger()),
        Arc::new(events::WithEvents::new(metrics.clone(), events.clone())),
        shutdown,
    )
    .await;
    ready.store(false, std::sync::atomic::Ordering::SeqCst);
    let _ = stop_tx.send(true);
    if let Err(e) = http_task.await {
        warn!(error = %e, "HTTP task failed");
    }
    let _ = metrics_task.await;
    match grpc_task.await {
        Ok(Err(e)) => warn!(error = %e, "gRPC server stopped with an error"),
        Err(e) => warn!(error = %e, "gRPC task failed"),
        Ok(Ok(())) => {}
    }
    if let Some(t) = dns_task {
        match t.await {
            Ok(Err(e)) => warn!(error = %e, "DNS server stopped with an error"),
            Err(e) => warn!(error = %e, "DNS task failed"),
            Ok(Ok(())) => {}
        }
    }
    node.shutdown().await;
    info!("kmsd stopped");
    kms_result.context("KMS listener")
}

/// Set when the node stopped to restart in place (its storage failed and is writable again);
/// `main` then executes itself again with the same arguments (same process id, so systemd's
/// `Type=notify` tracking and a container's pid 1 stay the same).
static RESTART_REQUESTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether [`run`] returned because the node should restart in place.
pub fn restart_requested() -> bool {
    RESTART_REQUESTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Bytes the storage watchdog writes (and syncs) to decide the data directory takes writes
/// again: room for sled to write a few segments and the Raft core to resume.
const SPACE_PROBE_BYTES: usize = 8 << 20;

/// While the node's Raft core runs, nothing. Once it stopped (a storage error: a full disk, an
/// I/O error), check every 2 s whether the data directory takes writes again — write and sync
/// [`SPACE_PROBE_BYTES`], then delete them — and when it does, stop the node so that `main`
/// restarts it in place: openraft cannot resume a stopped core, but a restarted node reopens
/// its store and is caught up by the leader. No operator action needed.
async fn storage_watchdog(
    node: Arc<kms_cluster::Node>,
    data_dir: std::path::PathBuf,
    restart: tokio::sync::oneshot::Sender<()>,
    mut stop: watch::Receiver<bool>,
) {
    let probe = data_dir.join(".kmsd-space-probe");
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
            _ = stop.changed() => return,
        }
        if node.status().raft_stopped.is_none() {
            continue;
        }
        let path = probe.clone();
        let writable = tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            let result = std::fs::File::create(&path).and_then(|mut f| {
                f.write_all(&vec![0u8; SPACE_PROBE_BYTES])?;
                f.sync_all()
            });
            let _ = std::fs::remove_file(&path);
            result
        })
        .await;
        if let Ok(Ok(())) = writable {
            info!(
                event_id = kms_cluster::EVENT_STORAGE_FAILED,
                "the data directory takes writes again: restarting the node in place"
            );
            RESTART_REQUESTED.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = restart.send(());
            return;
        }
    }
}

/// `--join`: ask the cluster (through `addr`, following leader hints) to add this node as a
/// voter, retrying until it is one. A node with data that is a voter in the membership it knows
/// does nothing. Any other node asks: one with data may be a learner — added with `kmsctl member
/// add` before it started (the leader then replicates to it at once, often before this task
/// runs, and the membership may not have reached it yet) or stopped before its promotion. The
/// leader's join handler is idempotent: it waits for the learner to catch up and promotes it.
async fn join_cluster(
    node: Arc<kms_cluster::Node>,
    net: kms_cluster::PeerNetwork,
    addr: String,
    mut stop: watch::Receiver<bool>,
) {
    if node.raft().is_initialized().await.unwrap_or(false) {
        use kms_store::openraft::async_runtime::watch::WatchReceiver;
        let voter = node
            .raft()
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == node.id());
        if voter {
            return;
        }
        info!("--join: this node has data but is not a voter; asking the cluster to promote it");
    }
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        info!(%addr, "asking the cluster to add this node (--join)");
        match net.join(&addr, node.id(), node.info()).await {
            Ok(_) => {
                info!("joined the cluster");
                return;
            }
            Err(e) => warn!(error = %e, "join failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(5));
    }
}

async fn wait_stop(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    /// The premise of the KMS listener not setting TCP_NODELAY per connection: accepted
    /// sockets inherit it from kmsd's listeners (where they do not, kms-host sets it itself).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let l = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = l.local_addr().unwrap().port();
        let _client = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (accepted, _) = l.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap());
    }

    #[tokio::test]
    async fn wildcard_ipv6_listener_takes_ipv4_and_ipv6_clients() {
        let l = bind_tcp("[::]:0".parse().unwrap()).unwrap();
        let port = l.local_addr().unwrap().port();
        let v4 = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
        assert!(v4.is_ok(), "IPv4 client refused by [::]: {v4:?}");
        let (_, peer) = l.accept().await.unwrap();
        assert!(
            peer.ip().to_canonical().is_ipv4(),
            "IPv4 client arrived as {peer}"
        );
        if l.local_addr().unwrap().is_ipv6() {
            // The host has IPv6 (else the wildcard fell back to 0.0.0.0): ::1 is served too.
            tokio::net::TcpStream::connect(("::1", port)).await.unwrap();
            let (_, peer) = l.accept().await.unwrap();
            assert!(peer.ip().is_ipv6(), "IPv6 client arrived as {peer}");
        }
        let u = bind_udp("[::]:0".parse().unwrap()).unwrap();
        let c = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        c.send_to(b"x", ("127.0.0.1", u.local_addr().unwrap().port()))
            .await
            .unwrap();
        let mut buf = [0u8; 4];
        let (n, _) = u.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"x");
    }

    #[test]
    fn the_ipv6_wildcard_falls_back_to_ipv4_when_the_host_has_no_ipv6() {
        let tried = std::sync::Mutex::new(Vec::new());
        let bind = |a: SocketAddr| {
            tried.lock().unwrap().push(a);
            if a.is_ipv6() {
                Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT))
            } else {
                Ok(a)
            }
        };
        let got = with_ipv4_fallback("[::]:1688".parse().unwrap(), bind).unwrap();
        assert_eq!(got, "0.0.0.0:1688".parse().unwrap());
        assert_eq!(tried.lock().unwrap().len(), 2);

        // A specific IPv6 address, or another error (port in use), is not papered over.
        let err = with_ipv4_fallback("[::1]:1688".parse().unwrap(), bind).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EAFNOSUPPORT));
        let in_use = |_: SocketAddr| -> io::Result<()> {
            Err(io::Error::from_raw_os_error(libc::EADDRINUSE))
        };
        let err = with_ipv4_fallback("[::]:1688".parse().unwrap(), in_use).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));
    }
}
