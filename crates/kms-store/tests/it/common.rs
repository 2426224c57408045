//! Shared helpers: entries, commands, applying through the openraft traits.

use std::collections::BTreeSet;

use futures::stream;
use kms_store::LogStore;
use kms_store::RaftCommand;
use kms_store::StateMachineStore;
use kms_store::openraft::entry::RaftEntry;
use kms_store::openraft::storage::RaftLogStorageExt;
use kms_store::openraft::storage::RaftStateMachine;
use kms_store::openraft::vote::RaftLeaderIdExt;
use kms_store::types::Entry;
use kms_store::types::LeaderId;
use kms_store::types::LogId;
use kms_store::types::Membership;
use kms_store::types::NodeInfo;

/// A log id of node 1.
pub fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(LeaderId::new_committed(term, 1), index)
}

/// A kms-core command that records `n` clients, distinct for each `seed`, with realistic
/// field sizes (workstation name, source address, product group and SKU).
pub fn record_command(seed: u64, n: u64) -> kms_core::Command {
    use kms_core::FileTime;
    use kms_core::Guid;
    use kms_core::RecordRequest;
    let records = (0..n)
        .map(|i| {
            let id = seed * 1_000_000 + i;
            let mut g = [0u8; 16];
            g[..8].copy_from_slice(&id.to_le_bytes());
            g[8] = 0x42;
            RecordRequest {
                kms_counted_id: Guid([0x11; 16]),
                sku_id: Guid([0x22; 16]),
                workstation: format!("WS-{id:08}.corp.example.com"),
                source: "10.20.30.40:49731".to_string(),
                ..RecordRequest::new(id, kms_core::Pool::Windows, Guid(g))
            }
        })
        .collect();
    kms_core::Command::Record {
        at: FileTime::from_unix_secs(1_700_000_000 + seed as i64),
        node: 1,
        records,
    }
}

/// A normal entry recording `n` clients.
pub fn record_entry(term: u64, index: u64, n: u64) -> Entry {
    Entry::new_normal(
        log_id(term, index),
        RaftCommand::from(record_command(index, n)),
    )
}

/// A membership entry for voters `ids`.
pub fn membership_entry(term: u64, index: u64, ids: &[u64]) -> Entry {
    let voters: BTreeSet<u64> = ids.iter().copied().collect();
    let nodes = ids.iter().map(|&id| {
        (
            id,
            NodeInfo {
                name: format!("kms{id}"),
                grpc_addr: format!("10.0.0.{id}:1689"),
                kms_addr: format!("10.0.0.{id}:1688"),
            },
        )
    });
    let membership = Membership::new(
        vec![voters],
        nodes.collect::<std::collections::BTreeMap<_, _>>(),
    )
    .expect("valid membership");
    Entry::new_membership(log_id(term, index), membership)
}

/// Append and wait until openraft would consider the entries durable.
pub async fn append(log: &mut LogStore, entries: Vec<Entry>) {
    log.blocking_append(entries).await.expect("append");
}

/// Apply entries as openraft's state machine worker would (without responders).
pub async fn apply(sm: &mut StateMachineStore, entries: Vec<Entry>) {
    let items = entries.into_iter().map(|e| Ok((e, None)));
    sm.apply(stream::iter(items)).await.expect("apply");
}

/// The state obtained by applying `entries` to a fresh `kms_core::State`.
pub fn reference_state(entries: &[Entry]) -> kms_core::State {
    use kms_store::types::EntryPayload;
    let mut state = kms_core::State::default();
    for e in entries {
        if let EntryPayload::Normal(cmd) = &e.payload {
            state.apply(cmd);
        }
    }
    state
}
