//! Property tests for the replicated state machine (DESIGN §4, PROTOCOL §9.2).

use std::collections::{BTreeMap, BTreeSet};

use kms_core::state::{ClientFilter, RecordOutcome};
use kms_core::{
    Command, CountReport, Epid, FileTime, Guid, HostIdentity, Outcome, Pool, RecordRequest,
    ReplicatedConfig, State,
};
use proptest::prelude::*;

const DAY: u64 = 86_400;
const TICKS: u64 = 10_000_000;

/// Product groups used in generated records, with their pool and N.
const GROUPS: &[(&str, Pool, u32)] = &[
    ("58e2134f-8e11-4d17-9cb2-91069c151148", Pool::Windows, 25),
    ("8449b1fb-f0ea-497a-99ab-66ca96e9a0f5", Pool::Windows, 5),
    (
        "85b5f61b-320b-4be3-814a-b76b2bfafc82",
        Pool::Office2013Plus,
        5,
    ),
    ("e85af946-2e25-47b7-83e1-bebcebeac611", Pool::Office2010, 5),
];

fn base() -> FileTime {
    FileTime::from_unix_secs(1_750_000_000)
}

fn at(secs: u64) -> FileTime {
    FileTime(base().0 + secs * TICKS)
}

fn cmid(n: u8) -> Guid {
    let mut b = [0u8; 16];
    b[0] = n;
    b[6] = 0x40;
    b[8] = 0x80;
    Guid(b)
}

fn record_strategy(cmids: u8) -> impl Strategy<Value = RecordRequest> {
    (
        0..cmids,
        0..GROUPS.len(),
        prop_oneof![Just(None), (1u32..=1000).prop_map(Some)],
        0u64..40,
        0u8..3,
    )
        .prop_map(|(c, gi, n, rid, ws)| {
            let (group, pool, default_n) = GROUPS[gi];
            RecordRequest {
                request_id: rid,
                pool,
                client_machine_id: cmid(c),
                previous_client_machine_id: Guid::NIL,
                kms_counted_id: group.parse().unwrap(),
                sku_id: Guid::NIL,
                workstation: format!("host{ws}"),
                license_status: 2,
                is_vm: false,
                required_count: n.unwrap_or(default_n),
                protocol_version: 6,
                source: "10.0.0.1:1".into(),
                seen_at: None,
            }
        })
}

fn record_command(cmids: u8, max_secs: u64) -> impl Strategy<Value = Command> {
    (
        0..max_secs,
        1u64..4,
        prop::collection::vec(record_strategy(cmids), 1..6),
    )
        .prop_map(|(t, node, records)| Command::Record {
            at: at(t),
            node,
            records,
        })
}

fn identity(key: u64) -> HostIdentity {
    let epid = Epid {
        platform_id: 3612,
        group_id: 206,
        key_id: 551_000_000 + key,
        lcid: 1033,
        build: 17763,
        day_of_year: 100,
        year: 2020,
    };
    HostIdentity {
        epids: [(206, epid)].into(),
        hwid: [key as u8; 8],
    }
}

fn config_strategy() -> impl Strategy<Value = ReplicatedConfig> {
    (
        prop::option::of(1u32..6),
        prop::option::of(1u32..4),
        prop::bool::ANY,
        prop_oneof![Just(30 * DAY), Just(2 * DAY), Just(0)],
    )
        .prop_map(|(pool_cap, group_cap, exact, window)| {
            let mut c = ReplicatedConfig {
                count_window_secs: window,
                count_report: if exact {
                    CountReport::Exact
                } else {
                    CountReport::Capped
                },
                ..Default::default()
            };
            c.seat_limits.pools.windows = pool_cap;
            if let Some(cap) = group_cap {
                c.seat_limits
                    .groups
                    .insert(GROUPS[1].0.parse().unwrap(), cap);
            }
            c
        })
}

fn command_strategy() -> impl Strategy<Value = Command> {
    prop_oneof![
        6 => record_command(12, 60 * DAY),
        1 => (0..60 * DAY).prop_map(|t| Command::Prune { before: at(t) }),
        1 => (0u8..12, 0..3usize).prop_map(|(c, p)| Command::Forget {
            pool: Pool::ALL[p],
            cmid: cmid(c),
        }),
        1 => config_strategy().prop_map(Command::SetConfig),
        1 => (0u64..3).prop_map(|k| Command::InitIdentity(identity(k))),
        1 => (0u64..3).prop_map(|k| Command::SetIdentity(identity(k))),
    ]
}

fn run(cmds: &[Command]) -> (State, Vec<Outcome>) {
    let mut s = State::default();
    let outs = cmds.iter().map(|c| s.apply(c)).collect();
    (s, outs)
}

/// All stored records as (pool, cmid) → last_seen.
fn inventory(s: &State) -> BTreeMap<(Pool, Guid), FileTime> {
    s.clients(&ClientFilter {
        limit: 10_000,
        ..Default::default()
    })
    .clients
    .iter()
    .map(|e| ((e.pool, e.client_machine_id), e.record.last_seen))
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Same commands → equal states and outcomes; serde round trips preserve the state.
    #[test]
    fn apply_is_deterministic(cmds in prop::collection::vec(command_strategy(), 0..40)) {
        let (a, oa) = run(&cmds);
        let (b, ob) = run(&cmds);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(oa, ob);
        let bin = bincode::serialize(&a).unwrap();
        prop_assert_eq!(&bincode::deserialize::<State>(&bin).unwrap(), &a);
        prop_assert_eq!(bincode::serialize(&b).unwrap(), bin);
        let json = serde_json::to_string(&a).unwrap();
        prop_assert_eq!(&serde_json::from_str::<State>(&json).unwrap(), &a);
        // Commands survive the log encoding.
        for c in &cmds {
            let enc = bincode::serialize(c).unwrap();
            prop_assert_eq!(&bincode::deserialize::<Command>(&enc).unwrap(), c);
        }
    }

    /// Capped counts never exceed 2 × max N nor the live count; exact counts equal live.
    #[test]
    fn counts_respect_the_cap(
        cmds in prop::collection::vec(command_strategy(), 0..40),
        probes in prop::collection::vec(0..70 * DAY, 1..5),
    ) {
        let mut s = State::default();
        for c in &cmds {
            let out = s.apply(c);
            let exact = s.config().count_report == CountReport::Exact;
            if let Outcome::Recorded(v) = out {
                for o in v {
                    if let RecordOutcome::Accepted { count, .. } = o {
                        prop_assert!(count.live >= 1);
                        prop_assert!(count.reported <= count.live);
                        if exact {
                            prop_assert_eq!(count.reported, count.live);
                        } else {
                            prop_assert!(count.reported <= 2 * count.max_required);
                        }
                    }
                }
            }
            for p in &probes {
                for pool in Pool::ALL {
                    let c = s.pool_count(pool, at(*p));
                    prop_assert!(c.reported <= c.live);
                    prop_assert!(c.duplicates <= c.live);
                    if !exact {
                        prop_assert!(c.reported <= 2 * c.max_required);
                    }
                    prop_assert!(c.threshold_hint == 5 || c.threshold_hint == 25);
                    prop_assert_eq!(c.threshold_hint == 25, pool == Pool::Windows && c.max_required >= 25);
                }
            }
        }
    }

    /// A CMID is counted once however often it re-requests.
    #[test]
    fn a_cmid_counts_once(cmds in prop::collection::vec(record_command(1, 10 * DAY), 1..30)) {
        let (s, outs) = run(&cmds);
        for pool in Pool::ALL {
            prop_assert!(s.pool_count(pool, at(10 * DAY)).live <= 1);
            prop_assert!(s.stored_clients(pool) <= 1);
        }
        for o in outs {
            if let Outcome::Recorded(v) = o {
                for r in v {
                    if let RecordOutcome::Accepted { count, .. } = r {
                        prop_assert_eq!(count.live, 1);
                    }
                }
            }
        }
    }

    /// Replaying a batch (a degraded-mode journal entry already committed) changes nothing.
    ///
    /// Unless the first application refused one of its records: a seat-limit refusal depends
    /// on the state, which the batch itself may change (a later record of the batch moves a
    /// machine out of the full product group, freeing the seat), so the replay may accept what
    /// the first application refused. A journal only carries records its node accepted, so a
    /// record accepted late is one its client was already told was activated.
    #[test]
    fn replaying_a_batch_changes_nothing(
        cmds in prop::collection::vec(command_strategy(), 0..30),
        batch in record_command(12, 60 * DAY),
        probe in 0..70 * DAY,
    ) {
        let (mut s, _) = run(&cmds);
        let first = s.apply(&batch);
        if matches!(&first, Outcome::Recorded(v)
            if v.iter().any(|r| matches!(r, RecordOutcome::Refused { .. })))
        {
            return Ok(());
        }
        let once = s.clone();
        let counts: Vec<_> = Pool::ALL.iter().map(|p| s.pool_count(*p, at(probe))).collect();
        s.apply(&batch);
        let again: Vec<_> = Pool::ALL.iter().map(|p| s.pool_count(*p, at(probe))).collect();
        prop_assert_eq!(counts, again);
        prop_assert_eq!(s, once);
    }

    /// Prune removes exactly the records last seen before the cutoff.
    #[test]
    fn prune_removes_exactly_the_old_records(
        cmds in prop::collection::vec(command_strategy(), 0..40),
        before in 0..70 * DAY,
    ) {
        let (mut s, _) = run(&cmds);
        let inv = inventory(&s);
        let cutoff = at(before);
        let out = s.apply(&Command::Prune { before: cutoff });
        let kept = inventory(&s);
        let want: BTreeMap<_, _> = inv.iter().filter(|(_, t)| **t >= cutoff).map(|(k, v)| (*k, *v)).collect();
        let removed = (inv.len() - want.len()) as u64;
        prop_assert_eq!(kept, want);
        prop_assert_eq!(out, Outcome::Pruned { removed });
    }

    /// With seat limits set and time moving forward, live clients never exceed a cap, and no
    /// refused client is stored; with any time order, a new seat is only granted below the cap.
    #[test]
    fn seat_limits_are_never_exceeded(
        pool_cap in 1u32..6,
        group_cap in 1u32..4,
        mut batches in prop::collection::vec(record_command(16, 60 * DAY), 1..30),
        monotonic in prop::bool::ANY,
    ) {
        let server_group: Guid = GROUPS[1].0.parse().unwrap();
        let mut cfg = ReplicatedConfig::default();
        cfg.seat_limits.pools.windows = Some(pool_cap);
        cfg.seat_limits.groups.insert(server_group, group_cap);
        let mut s = State::default();
        prop_assert_eq!(s.apply(&Command::SetConfig(cfg)), Outcome::ConfigSet);
        if monotonic {
            batches.sort_by_key(|c| match c { Command::Record { at, .. } => *at, _ => FileTime(0) });
        }
        for b in &batches {
            let Command::Record { at: t, records, .. } = b else { unreachable!() };
            let before: BTreeSet<(Pool, Guid)> = inventory(&s).into_keys().collect();
            let Outcome::Recorded(outs) = s.apply(b) else { unreachable!() };
            for (r, o) in records.iter().zip(&outs) {
                match o {
                    RecordOutcome::Accepted { count, new_client } => {
                        if *new_client && r.pool == Pool::Windows {
                            prop_assert!(count.live <= pool_cap);
                        }
                    }
                    RecordOutcome::Refused { hresult, .. } => {
                        prop_assert_eq!(hresult.0, 0xC004_F042);
                        // A refused new CMID is stored only if another request of the same
                        // batch for it was accepted.
                        let accepted_elsewhere = records.iter().zip(&outs).any(|(r2, o2)| {
                            r2.client_machine_id == r.client_machine_id
                                && r2.pool == r.pool
                                && matches!(o2, RecordOutcome::Accepted { .. })
                        });
                        if !before.contains(&(r.pool, r.client_machine_id)) && !accepted_elsewhere {
                            prop_assert!(s.client(r.pool, &r.client_machine_id).is_none());
                        }
                    }
                }
            }
            if monotonic {
                let live = s.pool_count(Pool::Windows, *t).live;
                prop_assert!(live <= pool_cap, "live {} > cap {}", live, pool_cap);
                let in_group = s.clients(&ClientFilter {
                    kms_counted_id: Some(server_group),
                    seen_since: Some(FileTime(t.0.saturating_sub(30 * DAY * TICKS))),
                    limit: 10_000,
                    ..Default::default()
                }).clients.len() as u32;
                prop_assert!(in_group <= group_cap, "group {} > cap {}", in_group, group_cap);
            }
        }
    }
}
