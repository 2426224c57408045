//! Regression test for a deadlock of the Raft log store under pipelined appends (found by the
//! end-to-end benchmark, scripts/bench-host.sh): openraft appends the next entries before the
//! previous flush completed; `LogStore::append` writes with `sled::Tree::apply_batch` (which
//! takes sled's global concurrency-control lock exclusively) while earlier `flush_async` calls
//! hold it shared and wait for sled's flusher thread, which then cannot take it shared behind
//! the queued writer — every thread parks forever (sled 0.34.7, iobuf.rs:1012, tree.rs:377,
//! flusher.rs:67). In kmsd the blocked `apply_batch` runs on a runtime worker thread, so with
//! one CPU the whole node, /healthz included, stops answering.
//!
//! Drives the real `LogStore` the way openraft does (append with a completion callback, several
//! appends in flight, entries the size of a 512-client batch) from one runtime thread, and
//! fails if the appends do not all complete within a generous bound.

use std::time::{Duration, Instant};

use kms_core::{Command, FileTime, Guid, Pool, RecordRequest};
use kms_store::openraft::entry::RaftEntry;
use kms_store::openraft::storage::{IOFlushed, RaftLogStorage};
use kms_store::openraft::type_config::TypeConfigExt;
use kms_store::openraft::vote::RaftLeaderIdExt;
use kms_store::types::{Entry, LeaderId, LogId};
use kms_store::{RaftCommand, Store, TypeConfig};

fn entry(index: u64, clients: u64) -> Entry {
    let records = (0..clients)
        .map(|i| {
            let id = index * 10_000 + i;
            let mut g = [0u8; 16];
            g[..8].copy_from_slice(&id.to_le_bytes());
            RecordRequest {
                workstation: format!("WS-{id:08}.corp.example.com"),
                source: "10.1.2.3:49731".into(),
                ..RecordRequest::new(id, Pool::Windows, Guid(g))
            }
        })
        .collect();
    let cmd = Command::Record {
        at: FileTime::from_unix_secs(1_750_000_000),
        node: 1,
        records,
    };
    Entry::new_normal(
        LogId::new(LeaderId::new_committed(1, 1), index),
        RaftCommand::from(cmd),
    )
}

/// Append like openraft under load for `run`: up to 8 appends in flight, each reporting
/// durability through its callback. Returns the number of entries appended.
async fn pipelined_appends(run: Duration) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut log = store.log_store();
    let start = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    let mut index = 0;
    while start.elapsed() < run {
        index += 1;
        let (tx, rx) = TypeConfig::oneshot();
        log.append(vec![entry(index, 1 + index % 64)], IOFlushed::signal(tx))
            .await
            .expect("append failed");
        pending.push_back(rx);
        if pending.len() >= 8
            && let Some(rx) = pending.pop_front()
        {
            rx.await.expect("callback dropped").expect("flush failed");
        }
    }
    for rx in pending {
        rx.await.expect("callback dropped").expect("flush failed");
    }
    index
}

#[test]
fn pipelined_log_appends_all_complete() {
    // One runtime worker thread, like kmsd on a one-CPU machine. A deadlock blocks that thread
    // inside sled, so no tokio timer can fire: a plain thread is the watchdog.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let n = rt.block_on(pipelined_appends(Duration::from_secs(4)));
        let _ = tx.send(n);
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(n) => assert!(n > 0),
        Err(_) => panic!(
            "pipelined Raft log appends deadlocked: LogStore::append's apply_batch waits for \
             sled's concurrency-control write lock while earlier flush_async calls hold it \
             shared and wait for the flusher thread (sled 0.34.7)"
        ),
    }
}
