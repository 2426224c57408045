//! Every message openraft and kms-core put on the wire survives the wire encoding, and the
//! encoding's layout is pinned (a change needs a new wire version).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use kms_cluster::grpc::wire::{decode, encode};
use kms_store::RaftCommand;
use kms_store::openraft::entry::RaftEntry;
use kms_store::openraft::errors::{
    ChangeMembershipError, EmptyMembership, ErrorSource, ForwardReason, InProgress, LearnerNotFound,
};
use kms_store::openraft::impls::BoxedErrorSource;
use kms_store::openraft::raft::{TransferLeaderError, TransferLeaderResponse};
use kms_store::openraft::vote::RaftLeaderIdExt;
use kms_store::types::{
    AppendEntriesRequest, AppendEntriesResponse, ClientWriteError, Entry, Fatal, ForwardToLeader,
    LeaderId, LogId, Membership, NodeInfo, RaftError, SnapshotMeta, SnapshotResponse, StorageError,
    StoredMembership, TransferLeaderRequest, TypeConfig, Vote, VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::harness::record_command;

fn round_trip<T>(what: &'static str, value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let bytes = encode(what, value).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back: T = decode(what, &bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(&back, value, "{what} changed on the way");
    // Truncated input is an error, never a panic.
    for cut in [0, bytes.len() / 2, bytes.len().saturating_sub(1)] {
        if cut < bytes.len() {
            assert!(
                decode::<T>(what, &bytes[..cut]).is_err(),
                "{what} cut at {cut}"
            );
        }
    }
}

/// Like [`round_trip`] for types without `PartialEq`, compared through `Debug`.
fn round_trip_debug<T>(what: &'static str, value: &T)
where
    T: Serialize + DeserializeOwned + Debug,
{
    let bytes = encode(what, value).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back: T = decode(what, &bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(
        format!("{back:?}"),
        format!("{value:?}"),
        "{what} changed on the way"
    );
    assert!(
        decode::<T>(what, &bytes[..bytes.len() - 1]).is_err(),
        "{what} truncated"
    );
}

fn log_id(term: u64, node: u64, index: u64) -> LogId {
    LogId::new(LeaderId::new_committed(term, node), index)
}

fn info(id: u64) -> NodeInfo {
    NodeInfo {
        name: format!("kms{id}"),
        grpc_addr: format!("10.0.0.{id}:1689"),
        kms_addr: format!("10.0.0.{id}:1688"),
    }
}

fn membership() -> Membership {
    Membership::new(
        vec![BTreeSet::from([1, 2, 3])],
        BTreeMap::from([(1, info(1)), (2, info(2)), (3, info(3)), (4, info(4))]),
    )
    .expect("valid membership")
}

fn joint_membership() -> Membership {
    Membership::new(
        vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([2, 3, 4])],
        BTreeMap::from([(1, info(1)), (2, info(2)), (3, info(3)), (4, info(4))]),
    )
    .expect("valid membership")
}

#[test]
fn raft_rpc_messages_round_trip() {
    let vote = Vote::new(7, 2);
    let committed = Vote::new_committed(7, 2);
    round_trip("vote", &vote);
    round_trip("committed vote", &committed);

    round_trip(
        "vote request",
        &VoteRequest::new(vote, Some(log_id(6, 1, 41))),
    );
    let mut transfer_vote = VoteRequest::new(vote, None);
    transfer_vote.leadership_transfer = true;
    round_trip("vote request (leadership transfer)", &transfer_vote);
    round_trip(
        "vote response (granted)",
        &VoteResponse::new(vote, Some(log_id(6, 1, 41)), true),
    );
    round_trip(
        "vote response (refused)",
        &VoteResponse::new(committed, None, false),
    );

    let entries: Vec<Entry> = vec![
        Entry::new_blank(log_id(7, 2, 42)),
        Entry::new_normal(log_id(7, 2, 43), RaftCommand::from(record_command(1, 3))),
        Entry::new_normal(
            log_id(7, 2, 44),
            RaftCommand::from(kms_core::Command::Prune {
                before: kms_core::FileTime::from_unix_secs(1_600_000_000),
            }),
        ),
        Entry::new_membership(log_id(7, 2, 45), membership()),
        Entry::new_membership(log_id(7, 2, 46), joint_membership()),
    ];
    for e in &entries {
        round_trip("entry", e);
    }
    round_trip_debug(
        "append entries request",
        &AppendEntriesRequest {
            vote: committed,
            prev_log_id: Some(log_id(6, 1, 41)),
            entries: entries.clone(),
            leader_commit: Some(log_id(6, 1, 40)),
        },
    );
    round_trip_debug(
        "heartbeat",
        &AppendEntriesRequest {
            vote: committed,
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        },
    );
    for resp in [
        AppendEntriesResponse::Success,
        AppendEntriesResponse::PartialSuccess(Some(log_id(7, 2, 43))),
        AppendEntriesResponse::PartialSuccess(None),
        AppendEntriesResponse::Conflict,
        AppendEntriesResponse::HigherVote(Vote::new(9, 3)),
    ] {
        round_trip("append entries response", &resp);
    }

    round_trip(
        "snapshot meta",
        &SnapshotMeta {
            last_log_id: Some(log_id(7, 2, 46)),
            last_membership: StoredMembership::new(Some(log_id(7, 2, 45)), membership()),
        },
    );
    round_trip("empty snapshot meta", &SnapshotMeta::default());
    round_trip("snapshot response", &SnapshotResponse::new(committed));

    round_trip(
        "transfer leader request",
        &TransferLeaderRequest::new(committed, 3, Some(log_id(7, 2, 46))),
    );
    let ok: TransferLeaderResponse<TypeConfig> = Ok(());
    round_trip("transfer leader response", &ok);
    let changed: TransferLeaderResponse<TypeConfig> = Err(TransferLeaderError::VoteChanged {
        expected: committed,
        actual: Vote::new(8, 3),
    });
    round_trip("transfer leader response (vote changed)", &changed);
    let not_flushed: TransferLeaderResponse<TypeConfig> = Err(TransferLeaderError::LogNotFlushed {
        expected: Some(log_id(7, 2, 46)),
        actual: None,
    });
    round_trip("transfer leader response (not flushed)", &not_flushed);

    round_trip("log id", &log_id(7, 2, 46));
    round_trip("membership", &membership());
    round_trip("joint membership", &joint_membership());
}

#[test]
fn raft_errors_round_trip() {
    let fatal: Vec<RaftError> = vec![
        RaftError::Fatal(Fatal::Stopped),
        RaftError::Fatal(Fatal::Panicked),
        RaftError::Fatal(Fatal::StorageError(StorageError::write_vote(
            BoxedErrorSource::from_string("disk full"),
        ))),
        RaftError::Fatal(Fatal::StorageError(StorageError::read_log_at_index(
            17,
            BoxedErrorSource::from_error(&std::io::Error::other("bad sector")),
        ))),
    ];
    for e in &fatal {
        round_trip("raft error", e);
    }

    let hint = ForwardToLeader::new(2, info(2));
    let write_errors: Vec<RaftError<ClientWriteError>> = vec![
        RaftError::APIError(ClientWriteError::ForwardToLeader(hint.clone())),
        RaftError::APIError(ClientWriteError::ForwardToLeader(
            ForwardToLeader::empty().with_reason(ForwardReason::LeaseExpired),
        )),
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(hint)),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(InProgress {
                committed: Some(log_id(7, 2, 45)),
                membership_log_id: Some(log_id(7, 2, 46)),
            }),
        )),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::EmptyMembership(EmptyMembership {}),
        )),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::LearnerNotFound(LearnerNotFound { node_id: 4 }),
        )),
        RaftError::Fatal(Fatal::Stopped),
    ];
    for e in &write_errors {
        round_trip("client write error", e);
    }
}

#[test]
fn kms_payloads_round_trip() {
    round_trip("command", &RaftCommand::from(record_command(5, 20)));
    round_trip(
        "forget",
        &RaftCommand::from(kms_core::Command::Forget {
            pool: kms_core::Pool::Office2013Plus,
            cmid: kms_core::Guid([7; 16]),
        }),
    );
    let mut state = kms_core::State::default();
    let outcome = state.apply(&record_command(5, 3));
    round_trip("outcome", &outcome);
    round_trip("outcome done", &kms_core::Outcome::Done);
    round_trip("node info", &info(9));
}

/// The encoding of a vote request, byte for byte. If this changes (an openraft upgrade added a
/// field, bincode options changed), peers of the old and new build no longer understand each
/// other: bump `WIRE_VERSION` and keep decoding the old layout for one release.
#[test]
fn wire_layout_is_pinned() {
    let req = VoteRequest::new(Vote::new(7, 2), Some(log_id(6, 1, 41)));
    let bytes = encode("vote request", &req).expect("encode");
    assert_eq!(
        hex(&bytes),
        GOLDEN_VOTE_REQUEST,
        "wire layout of VoteRequest changed"
    );

    let entry = Entry::new_membership(log_id(3, 1, 9), membership());
    let bytes = encode("entry", &entry).expect("encode");
    assert_eq!(
        hex(&bytes),
        GOLDEN_MEMBERSHIP_ENTRY,
        "wire layout of Entry changed"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const GOLDEN_VOTE_REQUEST: &str = "0702000106012900";
const GOLDEN_MEMBERSHIP_ENTRY: &str = concat!(
    "0301090201030102030401046b6d73310d31302e302e302e313a313638390d31302e302e302e313a3136383802",
    "046b6d73320d31302e302e302e323a313638390d31302e302e302e323a3136383803046b6d73330d31302e302e",
    "302e333a313638390d31302e302e302e333a3136383804046b6d73340d31302e302e302e343a313638390d3130",
    "2e302e302e343a31363838",
);
