//! Builds a kmsd data directory holding many live Windows clients, written through the real
//! store (kms-store: Raft log append with fsync, kms-core apply, snapshot, log purge) the way a
//! running single node leaves it — far faster than activating a million clients over TCP.
//! `scripts/bench-host.sh` then starts a real `kmsd` on it to measure restart time and RSS.
//!
//! ```text
//! KMSD_FILL_DIR=/tmp/kmsd-1m KMSD_FILL_CLIENTS=1000000 \
//!   cargo test --release -p kmsd-e2e --test fill_store -- --ignored --nocapture
//! ```
//!
//! Modelled on kms-store's `restart_bench` (tests/it/restart_bench.rs), with records a real
//! node would write: current time (so every client is live and counted), the Windows 10/11
//! product group and an Enterprise SKU, N = 25, a 28-character workstation name, a source
//! address; the membership names node 1 as kmsd bootstraps it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Instant, SystemTime};

use futures::stream;
use kms_core::{Command, FileTime, Guid, Pool, RecordRequest};
use kms_store::openraft::entry::RaftEntry;
use kms_store::openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use kms_store::openraft::vote::RaftLeaderIdExt;
use kms_store::types::{Entry, LeaderId, LogId, Membership, NodeInfo, Vote};
use kms_store::{RaftCommand, Store};

const BATCH: u64 = 512;

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(LeaderId::new_committed(term, 1), index)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn records(first: u64, n: u64, at: FileTime) -> Command {
    let group: Guid = "58e2134f-8e11-4d17-9cb2-91069c151148".parse().unwrap(); // Windows 10/11
    let sku: Guid = "73111121-5638-40f6-bc11-f1d7b0d64300".parse().unwrap(); // Enterprise
    let records = (first..first + n)
        .map(|id| {
            // A version-4-looking CMID, distinct per id.
            let mut g = [0u8; 16];
            g[..8].copy_from_slice(&id.to_le_bytes());
            g[8..16].copy_from_slice(&(id.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes());
            g[7] = (g[7] & 0x0f) | 0x40;
            g[8] = (g[8] & 0x3f) | 0x80;
            RecordRequest {
                kms_counted_id: group,
                sku_id: sku,
                workstation: format!("WS-{id:08}.corp.example.com"),
                license_status: 2,
                source: format!(
                    "10.{}.{}.{}:49731",
                    (id >> 16) & 0xff,
                    (id >> 8) & 0xff,
                    id & 0xff
                ),
                ..RecordRequest::new(id, Pool::Windows, Guid(g))
            }
        })
        .collect();
    Command::Record {
        at,
        node: 1,
        records,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "generator for scripts/bench-host.sh; run explicitly with --release"]
async fn fill_store() {
    let dir = std::env::var("KMSD_FILL_DIR").expect("set KMSD_FILL_DIR to the kmsd --data-dir");
    let clients = env_u64("KMSD_FILL_CLIENTS", 1_000_000);
    let store_dir = std::path::Path::new(&dir).join("store");
    assert!(
        !store_dir.exists(),
        "{} exists already",
        store_dir.display()
    );
    let at = FileTime::from_system_time(SystemTime::now());
    let t = Instant::now();
    {
        let store = Store::open(&store_dir).unwrap();
        let mut log = store.log_store();
        let mut sm = store.state_machine();
        log.save_vote(&Vote::new_committed(1, 1)).await.unwrap();

        let voters: BTreeSet<u64> = [1].into();
        let nodes: BTreeMap<u64, NodeInfo> = [(
            1,
            NodeInfo {
                name: "kmsd-1".into(),
                grpc_addr: "127.0.0.1:1689".into(),
                kms_addr: "127.0.0.1:1688".into(),
            },
        )]
        .into();
        let membership = Membership::new(vec![voters], nodes).unwrap();
        let mut entries = vec![Entry::new_membership(log_id(0, 0), membership)];
        let mut index = 0;
        let mut next_id = 1;
        let batches = clients.div_ceil(BATCH);
        for b in 0..batches {
            let n = BATCH.min(clients - b * BATCH);
            index += 1;
            entries.push(Entry::new_normal(
                log_id(1, index),
                RaftCommand::from(records(next_id, n, at)),
            ));
            next_id += n;
            // Append (fsync) and apply in groups, as Raft would.
            if entries.len() >= 64 || b + 1 == batches {
                let chunk = std::mem::take(&mut entries);
                log.blocking_append(chunk.clone()).await.unwrap();
                let items = chunk.into_iter().map(|e| Ok((e, None)));
                sm.apply(stream::iter(items)).await.unwrap();
            }
        }
        let snap = sm.snapshot_now().await.unwrap();
        log.purge(snap.meta.last_log_id.unwrap()).await.unwrap();
        log.save_committed(Some(log_id(1, index))).await.unwrap();
        store.flush().await.unwrap();
        let stored = sm.read(|s| s.stored_clients(Pool::Windows));
        assert_eq!(stored as u64, clients);
        println!(
            "fill_store: {clients} clients in {batches} entries of up to {BATCH} written to {} \
             in {:.2?}; snapshot {} bytes; on disk {} bytes",
            store_dir.display(),
            t.elapsed(),
            snap.snapshot.len(),
            store.size_on_disk().unwrap()
        );
    }
}
