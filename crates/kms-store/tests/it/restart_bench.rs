//! Restart time with a large state — a benchmark, not a test: run with
//! `cargo test -p kms-store --release --test it -- --ignored --nocapture restart_bench`
//! (set `KMS_STORE_BENCH_CLIENTS` to change the number of clients, default 1 000 000).
//! Results go to docs/performance.md.

use std::time::Instant;

use kms_store::Store;
use kms_store::openraft::storage::RaftLogStorage;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly with --release"]
async fn restart_bench() {
    let clients: u64 = std::env::var("KMS_STORE_BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    const BATCH: u64 = 512;
    // Entries after the last snapshot that a restart must replay (a snapshot policy of
    // `LogsSinceLast(N)` bounds this to N).
    let tail_entries: u64 = std::env::var("KMS_STORE_BENCH_TAIL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);

    let dir = tempfile::tempdir().unwrap();
    let batches = clients.div_ceil(BATCH);
    {
        let store = Store::open(dir.path()).unwrap();
        let mut log = store.log_store();
        let mut sm = store.state_machine();

        let t = Instant::now();
        let mut index = 1;
        append(&mut log, vec![membership_entry(1, index, &[1])]).await;
        apply(&mut sm, vec![membership_entry(1, index, &[1])]).await;
        for _ in 0..batches {
            index += 1;
            let e = record_entry(1, index, BATCH);
            append(&mut log, vec![e.clone()]).await;
            apply(&mut sm, vec![e]).await;
        }
        let fill = t.elapsed();

        let t = Instant::now();
        let snap = sm.snapshot_now().await.unwrap();
        let snap_time = t.elapsed();
        log.purge(snap.meta.last_log_id.unwrap()).await.unwrap();

        // A tail of small batches after the snapshot (renewals: 8 clients each).
        let t = Instant::now();
        for _ in 0..tail_entries {
            index += 1;
            let e = record_entry(1, index, 8);
            append(&mut log, vec![e.clone()]).await;
            apply(&mut sm, vec![e]).await;
        }
        let tail_time = t.elapsed();
        log.save_committed(Some(log_id(1, index))).await.unwrap();
        store.flush().await.unwrap();
        println!(
            "restart_bench: {clients} clients in {batches} entries of {BATCH}: fill {:.2?} \
             ({:.0} entries/s incl. fsync); snapshot {} bytes built+stored in {snap_time:.2?}; \
             tail {tail_entries} entries in {tail_time:.2?}; on disk {} bytes",
            fill,
            batches as f64 / fill.as_secs_f64(),
            snap.snapshot.len(),
            store.size_on_disk().unwrap(),
        );
    }

    let t = Instant::now();
    let store = Store::open(dir.path()).unwrap();
    let open_time = t.elapsed();
    let sm = store.state_machine();
    let applied = sm.last_applied();
    let stored = sm.read(|s| s.stored_clients(kms_core::Pool::Windows));
    println!(
        "restart_bench: reopen (decode checkpoint + replay {tail_entries} entries) took \
         {open_time:.2?}; last applied {applied:?}; {stored} clients stored"
    );
    assert_eq!(stored as u64, batches * BATCH + tail_entries * 8);
}
