//! Restart time with a large state — a benchmark, not a test: run with
//! `cargo test -p kms-store --release --test it -- --ignored --nocapture restart_bench`.
//! `KMS_STORE_BENCH_CLIENTS` sets the number of clients (default 1 000 000),
//! `KMS_STORE_BENCH_TAIL` the number of log entries after the last snapshot that the restart
//! must replay (default 1 000; a snapshot policy of `LogsSinceLast(N)` bounds it to N).
//! Results go to docs/performance.md.

use std::time::Duration;
use std::time::Instant;

use kms_store::Store;
use kms_store::openraft::storage::RaftLogStorage;

use crate::common::*;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Default)]
struct Timings {
    append: Duration,
    apply: Duration,
}

impl Timings {
    async fn step(
        &mut self,
        log: &mut kms_store::LogStore,
        sm: &mut kms_store::StateMachineStore,
        e: kms_store::types::Entry,
    ) {
        let t = Instant::now();
        append(log, vec![e.clone()]).await;
        self.append += t.elapsed();
        let t = Instant::now();
        apply(sm, vec![e]).await;
        self.apply += t.elapsed();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly with --release"]
async fn restart_bench() {
    let clients = env_u64("KMS_STORE_BENCH_CLIENTS", 1_000_000);
    let tail_entries = env_u64("KMS_STORE_BENCH_TAIL", 1_000);
    const BATCH: u64 = 512;
    const TAIL_BATCH: u64 = 8;

    let dir = tempfile::tempdir().unwrap();
    let batches = clients.div_ceil(BATCH);
    {
        let store = Store::open(dir.path()).unwrap();
        let mut log = store.log_store();
        let mut sm = store.state_machine();

        let mut fill = Timings::default();
        let mut index = 0;
        fill.step(&mut log, &mut sm, membership_entry(0, index, &[1]))
            .await;
        for _ in 0..batches {
            index += 1;
            fill.step(&mut log, &mut sm, record_entry(1, index, BATCH))
                .await;
        }

        let t = Instant::now();
        let snap = sm.snapshot_now().await.unwrap();
        let snap_time = t.elapsed();
        log.purge(snap.meta.last_log_id.unwrap()).await.unwrap();

        // A tail of small batches after the snapshot (e.g. renewals).
        let mut tail = Timings::default();
        for _ in 0..tail_entries {
            index += 1;
            tail.step(&mut log, &mut sm, record_entry(1, index, TAIL_BATCH))
                .await;
        }
        log.save_committed(Some(log_id(1, index))).await.unwrap();
        store.flush().await.unwrap();
        let n = (batches + 1) as f64;
        println!(
            "restart_bench: fill {clients} clients in {batches} entries of {BATCH}: append+fsync \
             {:.2?} total ({:.2} ms/entry), kms-core apply {:.2?} total ({:.2} ms/entry)",
            fill.append,
            fill.append.as_secs_f64() * 1e3 / n,
            fill.apply,
            fill.apply.as_secs_f64() * 1e3 / n,
        );
        println!(
            "restart_bench: snapshot of {} bytes encoded and stored in {snap_time:.2?}",
            snap.snapshot.len()
        );
        if tail_entries > 0 {
            let n = tail_entries as f64;
            println!(
                "restart_bench: tail {tail_entries} entries of {TAIL_BATCH} at full size: \
                 append+fsync {:.2} ms/entry, kms-core apply {:.2} ms/entry",
                tail.append.as_secs_f64() * 1e3 / n,
                tail.apply.as_secs_f64() * 1e3 / n,
            );
        }
        println!(
            "restart_bench: on disk {} bytes",
            store.size_on_disk().unwrap()
        );
    }

    let t = Instant::now();
    let store = Store::open(dir.path()).unwrap();
    let open_time = t.elapsed();
    let report = store.restore_report().clone();
    let sm = store.state_machine();
    let stored = sm.read(|s| s.stored_clients(kms_core::Pool::Windows));
    println!(
        "restart_bench: reopen took {open_time:.2?}: checkpoint of {} bytes read+decoded in \
         {:.2?}, {} entries replayed in {:.2?}; {stored} clients stored",
        report.checkpoint_bytes, report.checkpoint_load, report.replayed_entries, report.replay,
    );
    assert_eq!(stored as u64, batches * BATCH + tail_entries * TAIL_BATCH);

    // What openraft does at startup on top of `Store::open`: read the current snapshot once.
    let t = Instant::now();
    let current = sm.current_snapshot().await.unwrap().unwrap();
    println!(
        "restart_bench: get_current_snapshot ({} bytes) took {:.2?}",
        current.snapshot.len(),
        t.elapsed()
    );
}
