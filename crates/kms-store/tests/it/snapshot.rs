//! Snapshots: build on one store, install on a fresh one, compare states.

use kms_store::Store;
use kms_store::StoreError;
use kms_store::openraft::RaftSnapshotBuilder;
use kms_store::openraft::storage::RaftStateMachine;
use kms_store::types::SnapshotMeta;

use crate::common::*;

#[tokio::test]
async fn build_then_install_on_fresh_store_gives_equal_state() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let entries: Vec<_> = std::iter::once(membership_entry(1, 1, &[1, 2]))
        .chain((2..=30).map(|i| record_entry(1, i, 10)))
        .collect();

    let leader = Store::open(leader_dir.path()).unwrap();
    let mut sm_l = leader.state_machine();
    apply(&mut sm_l, entries.clone()).await;

    let mut builder = sm_l.try_create_snapshot_builder(true).await.unwrap();
    let snap = builder.build_snapshot().await.unwrap();
    assert_eq!(snap.meta.last_log_id, Some(log_id(1, 30)));
    assert_eq!(snap.meta.last_membership.log_id(), &Some(log_id(1, 1)));
    let current = sm_l
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("current snapshot");
    assert_eq!(current.meta, snap.meta);
    assert_eq!(current.snapshot, snap.snapshot);

    let follower = Store::open(follower_dir.path()).unwrap();
    let mut sm_f = follower.state_machine();
    sm_f.install_snapshot(&snap.meta, snap.snapshot.clone())
        .await
        .unwrap();
    assert_eq!(
        sm_f.applied_state().await.unwrap(),
        sm_l.applied_state().await.unwrap()
    );
    let leader_state = sm_l.read(|s| s.clone());
    assert!(sm_f.read(|s| *s == leader_state));
    assert_eq!(leader_state, reference_state(&entries));
    assert_eq!(leader_state.stored_clients(kms_core::Pool::Windows), 290);

    // The installed snapshot is the follower's current one, and survives a reopen.
    drop((sm_f, follower));
    let follower = Store::open(follower_dir.path()).unwrap();
    let mut sm_f = follower.state_machine();
    let current = sm_f
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("installed snapshot");
    assert_eq!(current.meta, snap.meta);
    assert!(sm_f.read(|s| *s == leader_state));
}

#[tokio::test]
async fn older_build_does_not_replace_newer_install() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let entries: Vec<_> = (1..=10).map(|i| record_entry(1, i, 2)).collect();

    // A newer snapshot, made elsewhere.
    let other = Store::open(b.path()).unwrap();
    let mut sm_other = other.state_machine();
    apply(&mut sm_other, entries.clone()).await;
    let newer = sm_other.snapshot_now().await.unwrap();

    let store = Store::open(a.path()).unwrap();
    let mut sm = store.state_machine();
    apply(&mut sm, entries[..3].to_vec()).await;
    // Capture an old view, then install the newer snapshot before the build finishes.
    let mut builder = sm.try_create_snapshot_builder(false).await.unwrap();
    sm.install_snapshot(&newer.meta, newer.snapshot.clone())
        .await
        .unwrap();
    let old = builder.build_snapshot().await.unwrap();
    assert_eq!(old.meta.last_log_id, Some(log_id(1, 3)));

    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, newer.meta);
    assert_eq!(sm.last_applied(), Some(log_id(1, 10)));
}

#[tokio::test]
async fn unreadable_snapshot_is_refused_and_state_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut sm = store.state_machine();
    apply(&mut sm, vec![record_entry(1, 1, 3)]).await;
    let before = sm.read(|s| s.clone());

    let meta = SnapshotMeta {
        last_log_id: Some(log_id(5, 50)),
        last_membership: Default::default(),
    };
    let err = sm.install(&meta, vec![200, 1, 2, 3]).await.unwrap_err();
    assert!(matches!(
        err,
        StoreError::UnsupportedValueVersion { version: 200, .. }
    ));
    let err = sm.install(&meta, vec![1, 0xFF, 0xFF]).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }));

    assert_eq!(sm.last_applied(), Some(log_id(1, 1)));
    assert!(sm.read(|s| *s == before));
    assert!(sm.get_current_snapshot().await.unwrap().is_none());
}

/// Regression: a snapshot read for a peer (`get_current_snapshot`) while a newer snapshot was
/// being stored could pair the old manifest with the new data ("corrupt stored data: N bytes,
/// manifest says M"), which stopped the node's Raft core. Reads and stores now exclude each
/// other, so every read is one whole snapshot. The snapshots span several 4 MiB chunks, as the
/// ones that showed the bug did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_current_snapshot_while_newer_ones_are_stored_is_consistent() {
    const FIRST: u64 = 40_000;
    const MORE: u64 = 2_000;
    let clients = |index: u64| (FIRST + MORE * (index - 1)) as usize;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut sm = store.state_machine();
    apply(&mut sm, vec![record_entry(1, 1, FIRST)]).await;
    let first = sm.snapshot_now().await.unwrap();
    assert!(
        first.snapshot.len() > 4 << 20,
        "one chunk only: {} bytes",
        first.snapshot.len()
    );

    let mut built = std::collections::BTreeMap::new();
    built.insert(1, first.snapshot.len());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let mut sm = store.state_machine();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let snap = sm
                    .get_current_snapshot()
                    .await
                    .expect("a consistent current snapshot")
                    .expect("a snapshot exists");
                let index = snap.meta.last_log_id.expect("log id").index;
                seen.push((index, snap.snapshot.len()));
            }
            seen
        })
    };
    for i in 2..=12 {
        apply(&mut sm, vec![record_entry(1, i, MORE)]).await;
        let snap = sm.snapshot_now().await.unwrap();
        built.insert(i, snap.snapshot.len());
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.await.expect("the reader saw only whole snapshots");
    assert!(!seen.is_empty());
    // Each read is exactly the snapshot its manifest names.
    for (index, len) in &seen {
        assert_eq!(
            Some(len),
            built.get(index),
            "read of the snapshot at {index}"
        );
    }
    let last = sm.get_current_snapshot().await.unwrap().unwrap();
    let state: kms_core::State = kms_store::codec::decode("snapshot data", &last.snapshot).unwrap();
    assert_eq!(state.stored_clients(kms_core::Pool::Windows), clients(12));
}
