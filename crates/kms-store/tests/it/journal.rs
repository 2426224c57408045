//! The degraded-mode journal: durable, ordered, sequence numbers never reused.

use kms_store::Store;
use serde::Deserialize;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Pending {
    cmid: [u8; 16],
    note: String,
}

fn pending(i: u8) -> Pending {
    Pending {
        cmid: [i; 16],
        note: format!("client {i}"),
    }
}

#[tokio::test]
async fn append_reopen_pending_remove_through() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let journal = store.journal::<Pending>();
        assert!(journal.is_empty());
        for i in 1..=5u8 {
            let seq = journal.append(&pending(i)).await.unwrap();
            assert_eq!(seq, u64::from(i));
        }
        assert_eq!(journal.len(), 5);
    }

    let store = Store::open(dir.path()).unwrap();
    let journal = store.journal::<Pending>();
    assert_eq!(journal.len(), 5);
    let got = journal.pending().unwrap();
    assert_eq!(
        got,
        (1..=5u8)
            .map(|i| (u64::from(i), pending(i)))
            .collect::<Vec<_>>()
    );

    journal.remove_through(3).await.unwrap();
    assert_eq!(journal.len(), 2);
    assert_eq!(
        journal.pending().unwrap(),
        vec![(4, pending(4)), (5, pending(5))]
    );
    assert_eq!(journal.append(&pending(6)).await.unwrap(), 6);

    // Emptied and reopened: numbering continues, never reuses.
    journal.remove_through(u64::MAX).await.unwrap();
    assert!(journal.is_empty());
    drop((journal, store));
    let store = Store::open(dir.path()).unwrap();
    let journal = store.journal::<Pending>();
    assert!(journal.pending().unwrap().is_empty());
    assert_eq!(journal.append(&pending(7)).await.unwrap(), 7);
}

#[tokio::test]
async fn journal_is_independent_of_raft_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let journal = store.journal::<Pending>();
    journal.append(&pending(1)).await.unwrap();
    assert_eq!(store.state_machine().last_applied(), None);
    let clone = journal.clone();
    assert_eq!(clone.len(), 1);
}
