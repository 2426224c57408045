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
