//! Durability under load: a client that got a success response is recorded, even if the node
//! is killed with SIGKILL a moment later (DESIGN §3: the answer follows the durable record).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser as _;
use kmsctl::client::{ClientIdentity, ConnectionOptions, KmsConnection, Reply};
use tokio::task::JoinSet;

use crate::harness::Kmsd;
use crate::kms::*;

const WINDOWS_LIVE: &str = "kmsd_pool_clients{pool=\"windows\"}";

/// Run `kmsctl <args>` through the library with JSON output; returns the document.
pub async fn kmsctl_json(args: &[&str]) -> serde_json::Value {
    let mut argv = vec!["kmsctl", "-o", "json"];
    argv.extend_from_slice(args);
    let cli = kmsctl::cli::Cli::try_parse_from(&argv).expect("kmsctl arguments");
    let mut out = Vec::new();
    kmsctl::execute(&cli, &mut out).await.expect("kmsctl run");
    serde_json::from_slice(&out).expect("kmsctl JSON output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_client() {
    const WORKERS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let mut node = Kmsd::start(dir.path(), &[]);
    let addr = node.kms_addr();
    let acked: Arc<Mutex<Vec<ClientIdentity>>> = Arc::default();
    let refusals: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let opts = ConnectionOptions::new(true, true, Duration::from_secs(3));

    // Every request a new machine, on kept-alive connections; a broken connection is
    // replaced until told to stop.
    let mut workers = JoinSet::new();
    for _ in 0..WORKERS {
        let (acked, refusals, stop) = (acked.clone(), refusals.clone(), stop.clone());
        workers.spawn(async move {
            let p = windows_client();
            let mut conn: Option<KmsConnection> = None;
            while !stop.load(Ordering::SeqCst) {
                if conn.is_none() {
                    match KmsConnection::connect(addr, opts).await {
                        Ok(c) => conn = Some(c),
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    }
                }
                let Some(c) = conn.as_mut() else { continue };
                let who = machine(&p);
                match c.activate(&request(&p, &who, p.default_protocol)).await {
                    Ok(out) => match out.reply {
                        Reply::Activated(v) => {
                            assert_eq!(v.response.client_machine_id, who.cmid);
                            acked.lock().unwrap().push(who);
                        }
                        Reply::Refused(h) => refusals.lock().unwrap().push(h.to_string()),
                    },
                    Err(_) => conn = None,
                }
            }
        });
    }

    // Let the load run, then kill the node in the middle of it.
    let start = Instant::now();
    while acked.lock().unwrap().len() < 400 && start.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let at_kill = acked.lock().unwrap().len();
    node.kill9();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    while let Some(r) = workers.join_next().await {
        r.expect("load worker panicked");
    }
    let acked = acked.lock().unwrap().clone();
    let refusals = refusals.lock().unwrap().clone();
    assert!(refusals.is_empty(), "refusals under load: {refusals:?}");
    assert!(
        acked.len() >= 20,
        "only {} activations acknowledged before the kill (at kill: {at_kill})",
        acked.len()
    );

    node.restart();
    let addr = node.kms_addr();
    // The node counts at least every acknowledged machine (the gauge is the uncapped live
    // count, refreshed every second)…
    let live = node.wait_metric(WINDOWS_LIVE, Duration::from_secs(5), |v| {
        v >= acked.len() as f64
    });
    assert!(
        live >= acked.len() as f64,
        "{} acknowledged machines, but only {live} known after kill -9 and restart",
        acked.len()
    );
    // …and knows each of them: re-activating all of them adds nobody.
    let chunks: Vec<Vec<ClientIdentity>> = acked
        .chunks(acked.len().div_ceil(4))
        .map(<[ClientIdentity]>::to_vec)
        .collect();
    let mut renewals = JoinSet::new();
    for chunk in chunks {
        renewals.spawn(async move {
            let p = windows_client();
            let mut conn = connect(addr).await;
            for who in &chunk {
                let (_, reply) = call(&mut conn, &request(&p, who, p.default_protocol)).await;
                granted(reply, "renewal of an acknowledged machine");
            }
        });
    }
    while let Some(r) = renewals.join_next().await {
        r.expect("renewal worker panicked");
    }
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let after = node.metric(WINDOWS_LIVE);
    assert_eq!(
        after,
        live,
        "re-activating the {} acknowledged machines changed the count: some were lost",
        acked.len()
    );
    // The node still takes new machines after the crash.
    let p = windows_client();
    activate(addr, &p, &machine(&p)).await;
}

/// Sustained concurrent new activations (kmsctl bench, every request a new CMID) are all
/// served, and the node still stops cleanly afterwards. The node runs one runtime worker
/// thread, as it does on a one-CPU machine or container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_concurrent_new_activations_are_all_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Kmsd::start_with_env(dir.path(), &[], &[("TOKIO_WORKER_THREADS", "1")]);
    let kms = node.kms_addr().to_string();
    let index_before = node.metric("kmsd_raft_commit_index");
    let report = kmsctl_json(&[
        "bench",
        "--kms",
        &kms,
        "--clients",
        "0",
        "--concurrency",
        "32",
        "--duration",
        "5",
        "--timeout",
        "5",
    ])
    .await;
    let successes = report["successes"].as_u64().unwrap();
    let requests = report["requests"].as_u64().unwrap();
    assert!(
        successes == requests && successes >= 200,
        "bench: {successes} of {requests} requests succeeded: {report:#}"
    );
    // Every acknowledged machine is counted.
    let live = node.wait_metric(WINDOWS_LIVE, Duration::from_secs(5), |v| {
        v >= successes as f64
    });
    assert!(live >= successes as f64, "{live} < {successes}");
    // The batcher coalesces concurrent new machines: far fewer Raft entries than records
    // (32 clients at once; one proposal in flight while the next batch fills).
    let entries = node.metric("kmsd_raft_commit_index") - index_before;
    assert!(
        entries > 0.0 && entries * 2.0 <= successes as f64,
        "{successes} new machines took {entries} Raft entries: not batched"
    );
    eprintln!("{successes} new machines in {entries} Raft entries");
    // A healthy single node never had to fall back to its degraded-mode journal.
    let degraded = node
        .log_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event_id"] == 12290 && v["degraded"] == true)
        .count();
    assert_eq!(
        degraded, 0,
        "activations answered in degraded mode under load"
    );
    assert_eq!(node.metric("kmsd_degraded_journal_entries"), 0.0);
    let (code, ready) = node.http_get("/readyz");
    assert!(
        code == 200 && ready.contains("in quorum"),
        "/readyz after load: {ready}"
    );
    // A clean stop right after heavy load.
    node.signal("TERM");
    let status = node.wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "kmsd did not exit cleanly within 15 s of SIGTERM after load: {status:?}"
    );
}
