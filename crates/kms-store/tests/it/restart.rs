//! Reopening a store: vote, log, committed id and applied state survive; the format header is
//! checked.

use kms_store::Store;
use kms_store::StoreError;
use kms_store::codec;
use kms_store::openraft::RaftLogReader;
use kms_store::openraft::storage::RaftLogStorage;
use kms_store::openraft::storage::RaftStateMachine;
use kms_store::types::Vote;

use crate::common::*;

#[tokio::test]
async fn vote_log_and_applied_state_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    // openraft writes the initial membership at index 0.
    let entries = vec![
        membership_entry(0, 0, &[1, 2, 3]),
        record_entry(1, 1, 2),
        record_entry(1, 2, 5),
        record_entry(1, 3, 7),
        record_entry(2, 4, 1),
        record_entry(2, 5, 3),
    ];
    let vote = Vote::new_committed(2, 1);
    {
        let store = Store::open(dir.path()).unwrap();
        let mut log = store.log_store();
        let mut sm = store.state_machine();
        log.save_vote(&vote).await.unwrap();
        append(&mut log, entries.clone()).await;
        // Entries 0..=4 are committed; only 0..=3 were applied before the "crash".
        log.save_committed(Some(log_id(2, 4))).await.unwrap();
        apply(&mut sm, entries[..4].to_vec()).await;
        assert_eq!(sm.last_applied(), Some(log_id(1, 3)));
        store.flush().await.unwrap();
    }

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.format_version(), codec::FORMAT_VERSION);
    let mut log = store.log_store();
    let mut sm = store.state_machine();

    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.try_get_log_entries(..).await.unwrap(), entries);
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(2, 4)));
    let st = log.get_log_state().await.unwrap();
    assert_eq!(st.last_log_id, Some(log_id(2, 5)));
    assert_eq!(st.last_purged_log_id, None);

    // Open replays the log up to the saved committed id: entry 4 is applied, 5 is not.
    let (applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(2, 4)));
    assert_eq!(membership.log_id(), &Some(log_id(0, 0)));
    assert_eq!(membership.voter_ids().collect::<Vec<_>>(), vec![1, 2, 3]);
    let expected = reference_state(&entries[..5]);
    assert!(sm.read(|s| *s == expected));
    assert_eq!(
        sm.read(|s| s.stored_clients(kms_core::Pool::Windows)),
        2 + 5 + 7 + 1
    );
}

#[tokio::test]
async fn restart_after_snapshot_and_purge_restores_checkpoint_plus_log() {
    let dir = tempfile::tempdir().unwrap();
    let entries: Vec<_> = std::iter::once(membership_entry(1, 1, &[1]))
        .chain((2..=20).map(|i| record_entry(1, i, 4)))
        .collect();
    {
        let store = Store::open(dir.path()).unwrap();
        let mut log = store.log_store();
        let mut sm = store.state_machine();
        append(&mut log, entries.clone()).await;
        apply(&mut sm, entries[..10].to_vec()).await;
        let snap = sm.snapshot_now().await.unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(1, 10)));
        log.purge(log_id(1, 10)).await.unwrap();
        apply(&mut sm, entries[10..].to_vec()).await;
        log.save_committed(Some(log_id(1, 20))).await.unwrap();
        store.flush().await.unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let mut log = store.log_store();
    let sm = store.state_machine();
    assert_eq!(sm.last_applied(), Some(log_id(1, 20)));
    let expected = reference_state(&entries);
    assert!(sm.read(|s| *s == expected));
    assert_eq!(
        sm.read(|s| s.stored_clients(kms_core::Pool::Windows)),
        19 * 4
    );
    let st = log.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(log_id(1, 10)));
    assert_eq!(st.last_log_id, Some(log_id(1, 20)));
    assert_eq!(
        log.try_get_log_entries(..).await.unwrap(),
        entries[10..].to_vec()
    );
}

#[tokio::test]
async fn header_is_written_and_future_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());

    // The header is there, with the current version.
    {
        let db = open_sled_retrying(dir.path());
        let meta = db.open_tree("meta").unwrap();
        let header = meta.get(codec::HEADER_KEY).unwrap().expect("header");
        assert_eq!(codec::parse_header(&header).unwrap(), codec::FORMAT_VERSION);
        // Pretend a newer kmsd wrote this store.
        meta.insert(
            codec::HEADER_KEY,
            codec::header_value(codec::FORMAT_VERSION + 98),
        )
        .unwrap();
        db.flush().unwrap();
    }

    match Store::open(dir.path()) {
        Err(StoreError::UnsupportedFormat { found, supported }) => {
            assert_eq!(found, codec::FORMAT_VERSION + 98);
            assert_eq!(supported, codec::FORMAT_VERSION);
        }
        other => panic!("expected UnsupportedFormat, got {other:?}"),
    }

    // Refusing did not rewrite the header. (sled's background threads may hold the directory
    // lock for a moment after a failed open; retry briefly.)
    let db = open_sled_retrying(dir.path());
    let header = db
        .open_tree("meta")
        .unwrap()
        .get(codec::HEADER_KEY)
        .unwrap()
        .unwrap();
    assert_eq!(
        codec::parse_header(&header).unwrap(),
        codec::FORMAT_VERSION + 98
    );
}

#[tokio::test]
async fn foreign_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open_sled_retrying(dir.path());
        db.open_tree("somebody-else")
            .unwrap()
            .insert("k", "v")
            .unwrap();
        db.flush().unwrap();
    }
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::NotAKmsdStore { .. })
    ));
}

#[tokio::test]
async fn corrupt_values_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let mut log = store.log_store();
        append(&mut log, vec![record_entry(1, 1, 2)]).await;
        store.flush().await.unwrap();
    }
    {
        let db = open_sled_retrying(dir.path());
        let log = db.open_tree("log").unwrap();
        log.insert(1u64.to_be_bytes(), &[codec::VALUE_V1, 0xFF, 0xFF, 0xFF][..])
            .unwrap();
        log.insert(2u64.to_be_bytes(), &[77u8, 1, 2][..]).unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let mut log = store.log_store();
    let err = log.try_get_log_entries(1..2).await.unwrap_err();
    assert!(matches!(
        err.get_ref().and_then(|e| e.downcast_ref::<StoreError>()),
        Some(StoreError::Corrupt { .. })
    ));
    let err = log.try_get_log_entries(2..3).await.unwrap_err();
    assert!(matches!(
        err.get_ref().and_then(|e| e.downcast_ref::<StoreError>()),
        Some(StoreError::UnsupportedValueVersion { version: 77, .. })
    ));
}

/// The checkpoint file is decoded while it is read; a file cut short, grown, garbled or
/// missing stops the open with a typed error (never a panic, never a partial state).
#[tokio::test]
async fn damaged_checkpoint_files_are_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let entries: Vec<_> = std::iter::once(membership_entry(1, 1, &[1]))
        .chain((2..=6).map(|i| record_entry(1, i, 3)))
        .collect();
    {
        let store = Store::open(dir.path()).unwrap();
        let mut log = store.log_store();
        let mut sm = store.state_machine();
        append(&mut log, entries.clone()).await;
        apply(&mut sm, entries.clone()).await;
        sm.snapshot_now().await.unwrap();
        // A second snapshot replaces the first file.
        sm.snapshot_now().await.unwrap();
        store.flush().await.unwrap();
    }
    let files: Vec<_> = std::fs::read_dir(dir.path().join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "one checkpoint file: {files:?}");
    let file = files[0].clone();
    let original = std::fs::read(&file).unwrap();
    let mut garbled = original.clone();
    let middle = garbled.len() / 2;
    garbled[middle] ^= 0x55;
    let damages: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("cut short", Some(original[..original.len() - 1].to_vec())),
        ("grown", Some([&original[..], &[0u8][..]].concat())),
        ("garbled", Some(garbled)),
        ("missing", None),
    ];
    for (what, damaged) in damages {
        match damaged {
            Some(v) => std::fs::write(&file, v).unwrap(),
            None => std::fs::remove_file(&file).unwrap(),
        }
        match Store::open(dir.path()) {
            Err(StoreError::Corrupt { .. }) if what != "missing" => {}
            Err(StoreError::File { .. }) if what == "missing" => {}
            other => panic!(
                "{what}: expected a typed error, got {:?}",
                other.map(|_| ())
            ),
        }
        // sled's background threads may hold the directory lock for a moment after a failed
        // open.
        drop(open_sled_retrying(dir.path()));
    }
    // Repaired, it opens with the state it had.
    std::fs::write(&file, &original).unwrap();
    let store = Store::open(dir.path()).unwrap();
    let expected = reference_state(&entries);
    assert!(store.state_machine().read(|s| *s == expected));
}

fn open_sled_retrying(path: &std::path::Path) -> sled::Db {
    let mut last = None;
    for _ in 0..100 {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("sled::open kept failing: {last:?}");
}
