//! Table tests for the count semantics and the state machine (PROTOCOL §9.2, DESIGN §4).

use super::*;
use crate::config::{CountReport, ServedGroups};
use crate::time::{SECS_PER_DAY, add_secs};
use kms_wire::Guid;

const W10: &str = "58e2134f-8e11-4d17-9cb2-91069c151148";
const S2019: &str = "8449b1fb-f0ea-497a-99ab-66ca96e9a0f5";
const O2016: &str = "85b5f61b-320b-4be3-814a-b76b2bfafc82";

fn g(s: &str) -> Guid {
    s.parse().unwrap()
}

fn t0() -> FileTime {
    FileTime::from_unix_secs(1_750_000_000)
}

fn cmid(n: u32) -> ClientMachineId {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&n.to_be_bytes());
    b[6] = 0x40;
    b[8] = 0x80;
    Guid(b)
}

fn req(n: u32, pool: Pool, group: &str, required: u32) -> RecordRequest {
    RecordRequest {
        request_id: u64::from(n),
        pool,
        client_machine_id: cmid(n),
        previous_client_machine_id: Guid::NIL,
        kms_counted_id: g(group),
        sku_id: Guid::NIL,
        workstation: format!("PC{n}"),
        license_status: 2,
        is_vm: false,
        required_count: required,
        protocol_version: 6,
        source: "192.0.2.1:49152".into(),
        seen_at: None,
    }
}

fn win_client(n: u32) -> RecordRequest {
    req(n, Pool::Windows, W10, 25)
}

fn server(n: u32) -> RecordRequest {
    req(n, Pool::Windows, S2019, 5)
}

fn office(n: u32) -> RecordRequest {
    req(n, Pool::Office2013Plus, O2016, 5)
}

fn record(s: &mut State, at: FileTime, records: Vec<RecordRequest>) -> Vec<RecordOutcome> {
    match s.apply(&Command::Record {
        at,
        node: 1,
        records,
    }) {
        Outcome::Recorded(v) => v,
        o => panic!("unexpected {o:?}"),
    }
}

fn one(s: &mut State, at: FileTime, r: RecordRequest) -> RecordOutcome {
    record(s, at, vec![r]).pop().unwrap()
}

fn reported(o: &RecordOutcome) -> u32 {
    match o {
        RecordOutcome::Accepted { count, .. } => count.reported,
        o => panic!("refused: {o:?}"),
    }
}

#[test]
fn windows_clients_see_1_to_24_then_25() {
    let mut s = State::default();
    for n in 1..=24 {
        let o = one(&mut s, t0(), win_client(n));
        assert_eq!(reported(&o), n);
        match o {
            RecordOutcome::Accepted { count, new_client } => {
                assert!(new_client);
                assert_eq!(count.threshold_hint, 25);
                assert_eq!(count.max_required, 25);
                assert!(count.reported < count.threshold_hint);
            }
            _ => unreachable!(),
        }
    }
    let o = one(&mut s, t0(), win_client(25));
    assert_eq!(reported(&o), 25);
    // The count keeps rising to 2N = 50, then stays there while live keeps counting.
    for n in 26..=60 {
        let o = one(&mut s, t0(), win_client(n));
        assert_eq!(reported(&o), n.min(50));
    }
    let c = s.pool_count(Pool::Windows, t0());
    assert_eq!((c.live, c.reported), (60, 50));
}

#[test]
fn repeats_do_not_count() {
    let mut s = State::default();
    for n in 1..=3 {
        one(&mut s, t0(), win_client(n));
    }
    for i in 0..10u64 {
        let mut r = win_client(2);
        r.request_id = 1000 + i;
        let o = one(&mut s, add_secs(t0(), 3600 * i), r);
        assert_eq!(reported(&o), 3);
        assert!(matches!(
            o,
            RecordOutcome::Accepted {
                new_client: false,
                ..
            }
        ));
    }
    let rec = s.client(Pool::Windows, &cmid(2)).unwrap();
    assert_eq!(rec.request_count, 11);
    assert_eq!(rec.first_seen, t0());
    assert_eq!(rec.last_seen, add_secs(t0(), 3600 * 9));
    assert_eq!(rec.recent_request_ids.len(), RECENT_REQUEST_IDS);
    // The same request id again (a journal replay) is not counted again.
    let mut r = win_client(2);
    r.request_id = 1009;
    one(&mut s, add_secs(t0(), 3600 * 9), r);
    assert_eq!(s.client(Pool::Windows, &cmid(2)).unwrap().request_count, 11);
}

#[test]
fn office_has_its_own_pools() {
    let mut s = State::default();
    for n in 1..=4 {
        assert_eq!(reported(&one(&mut s, t0(), win_client(n))), n);
    }
    assert_eq!(reported(&one(&mut s, t0(), office(100))), 1);
    assert_eq!(reported(&one(&mut s, t0(), office(101))), 2);
    let o2010 = req(
        200,
        Pool::Office2010,
        "e85af946-2e25-47b7-83e1-bebcebeac611",
        5,
    );
    assert_eq!(reported(&one(&mut s, t0(), o2010)), 1);
    assert_eq!(s.pool_count(Pool::Windows, t0()).live, 4);
    assert_eq!(s.pool_count(Pool::Office2013Plus, t0()).live, 2);
    assert_eq!(s.pool_count(Pool::Office2010, t0()).live, 1);
    // The same CMID running Windows and Office counts once in each pool.
    let mut o = office(1);
    o.client_machine_id = cmid(1);
    one(&mut s, t0(), o);
    assert_eq!(s.pool_count(Pool::Office2013Plus, t0()).live, 3);
    assert_eq!(s.pool_count(Pool::Windows, t0()).live, 4);
    assert_eq!(s.find_client(&cmid(1)).len(), 2);
}

#[test]
fn caps_are_twice_the_largest_n() {
    let mut s = State::default();
    // Servers only: capped at 10, threshold 5.
    for n in 1..=12 {
        assert_eq!(reported(&one(&mut s, t0(), server(n))), n.min(10));
    }
    let c = s.pool_count(Pool::Windows, t0());
    assert_eq!(
        c,
        PoolCount {
            live: 12,
            reported: 10,
            threshold_hint: 5,
            max_required: 5,
            duplicates: 0,
        }
    );
    // The first Windows client raises the cap to 50 and the threshold to 25.
    assert_eq!(reported(&one(&mut s, t0(), win_client(100))), 13);
    let c = s.pool_count(Pool::Windows, t0());
    assert_eq!((c.threshold_hint, c.max_required), (25, 25));
    // Office: capped at 10.
    for n in 1..=15 {
        assert_eq!(reported(&one(&mut s, t0(), office(1000 + n))), n.min(10));
    }
    let c = s.pool_count(Pool::Office2013Plus, t0());
    assert_eq!((c.live, c.reported, c.threshold_hint), (15, 10, 5));
    // Exact mode reports the raw count.
    let mut cfg = ReplicatedConfig {
        count_report: CountReport::Exact,
        ..Default::default()
    };
    assert_eq!(
        s.apply(&Command::SetConfig(cfg.clone())),
        Outcome::ConfigSet
    );
    assert_eq!(s.pool_count(Pool::Office2013Plus, t0()).reported, 15);
    cfg.count_report = CountReport::Capped;
    s.apply(&Command::SetConfig(cfg));
    assert_eq!(s.pool_count(Pool::Office2013Plus, t0()).reported, 10);
}

#[test]
fn cap_follows_live_clients_when_n_changes() {
    let mut s = State::default();
    for n in 1..=12 {
        one(&mut s, t0(), server(n));
    }
    one(&mut s, t0(), win_client(1)); // CMID 1 now reports N = 25
    assert_eq!(s.pool_count(Pool::Windows, t0()).reported, 12);
    let mut back = server(1);
    back.request_id = 77;
    let o = one(&mut s, add_secs(t0(), 1), back); // and back to N = 5
    assert_eq!(reported(&o), 10);
    assert_eq!(s.pool_count(Pool::Windows, t0()).max_required, 5);
}

#[test]
fn thirty_day_window() {
    let mut s = State::default();
    one(&mut s, t0(), win_client(1));
    let later = add_secs(t0(), 10 * SECS_PER_DAY);
    one(&mut s, later, win_client(2));
    let window = 30 * SECS_PER_DAY;
    assert_eq!(s.pool_count(Pool::Windows, add_secs(t0(), window)).live, 2);
    assert_eq!(
        s.pool_count(Pool::Windows, add_secs(t0(), window + 1)).live,
        1
    );
    let c = s.pool_count(Pool::Windows, add_secs(later, window + 1));
    assert_eq!(
        c,
        PoolCount {
            live: 0,
            reported: 0,
            threshold_hint: 5,
            max_required: 0,
            duplicates: 0,
        }
    );
    // An expired client coming back is a new seat again and counts from 1.
    let o = one(&mut s, add_secs(later, window + 1), win_client(1));
    assert!(matches!(
        o,
        RecordOutcome::Accepted {
            new_client: true,
            ..
        }
    ));
    assert_eq!(reported(&o), 1);
    // The record kept its history.
    assert_eq!(s.client(Pool::Windows, &cmid(1)).unwrap().first_seen, t0());
}

#[test]
fn late_records_never_move_last_seen_backwards() {
    let mut s = State::default();
    let t2 = add_secs(t0(), 7200);
    let mut newer = win_client(1);
    newer.workstation = "PC1".into();
    newer.license_status = 1;
    one(&mut s, t2, newer);
    let mut older = win_client(1);
    older.request_id = 2;
    older.license_status = 5;
    older.source = "198.51.100.7:1".into();
    let mut s2 = s.clone();
    record(&mut s2, t0(), vec![older]);
    let r = s2.client(Pool::Windows, &cmid(1)).unwrap();
    assert_eq!((r.first_seen, r.last_seen), (t0(), t2));
    assert_eq!(r.license_status, 1);
    assert_eq!(r.last_source, "192.0.2.1:49152");
    assert_eq!(r.request_count, 2);
}

#[test]
fn duplicate_cmids_are_flagged() {
    let mut s = State::default();
    let mut a = win_client(1);
    a.workstation = "PC1".into();
    one(&mut s, t0(), a.clone());
    // Same machine, FQDN and other case: not a duplicate.
    a.workstation = "pc1.corp.example".into();
    a.request_id = 2;
    one(&mut s, add_secs(t0(), 1), a.clone());
    assert!(!s.client(Pool::Windows, &cmid(1)).unwrap().duplicate);
    // Another workstation with the same CMID: flagged, both names known, still one seat.
    a.workstation = "PC2".into();
    a.request_id = 3;
    let o = one(&mut s, add_secs(t0(), 2), a.clone());
    assert_eq!(reported(&o), 1);
    let r = s.client(Pool::Windows, &cmid(1)).unwrap();
    assert!(r.duplicate);
    assert_eq!(s.pool_count(Pool::Windows, t0()).duplicates, 1);
    assert_eq!(r.workstation, "PC2");
    assert_eq!(r.duplicate_workstation.as_deref(), Some("pc1.corp.example"));
    // needs_write_for notices a different workstation even for a fresh record.
    let now = add_secs(t0(), 3);
    assert!(!s.needs_write(Pool::Windows, &cmid(1), now));
    assert!(!s.needs_write_for(Pool::Windows, &cmid(1), "pc2", &g(W10), now));
    assert!(s.needs_write_for(Pool::Windows, &cmid(1), "PC3", &g(W10), now));
    assert!(s.needs_write_for(Pool::Windows, &cmid(1), "PC2", &g(S2019), now));
    // Listing duplicates only.
    one(&mut s, t0(), win_client(5));
    let page = s.clients(&ClientFilter {
        duplicates_only: true,
        ..Default::default()
    });
    assert_eq!(page.clients.len(), 1);
    assert_eq!(page.clients[0].client_machine_id, cmid(1));
    // Empty names are not evidence of cloning.
    let mut e = win_client(9);
    e.workstation = String::new();
    one(&mut s, t0(), e.clone());
    e.workstation = "X".into();
    e.request_id = 99;
    one(&mut s, t0(), e);
    assert!(!s.client(Pool::Windows, &cmid(9)).unwrap().duplicate);
}

#[test]
fn needs_write_after_renew_write_after() {
    let mut s = State::default();
    assert!(s.needs_write(Pool::Windows, &cmid(1), t0()));
    one(&mut s, t0(), win_client(1));
    assert!(!s.needs_write(Pool::Windows, &cmid(1), t0()));
    assert!(!s.needs_write(Pool::Windows, &cmid(1), add_secs(t0(), 3599)));
    assert!(s.needs_write(Pool::Windows, &cmid(1), add_secs(t0(), 3600)));
    // Known in Windows, unknown in Office.
    assert!(s.needs_write(Pool::Office2013Plus, &cmid(1), t0()));
}

#[test]
fn seat_limits_refuse_new_clients_but_let_known_ones_renew() {
    let mut s = State::default();
    let mut cfg = ReplicatedConfig::default();
    cfg.seat_limits.pools.windows = Some(3);
    cfg.seat_limits.groups.insert(g(S2019), 1);
    assert_eq!(s.apply(&Command::SetConfig(cfg)), Outcome::ConfigSet);
    let outs = record(
        &mut s,
        t0(),
        vec![
            win_client(1),
            win_client(2),
            server(3),
            server(4),
            win_client(5),
        ],
    );
    assert_eq!(reported(&outs[0]), 1);
    assert_eq!(reported(&outs[1]), 2);
    assert_eq!(reported(&outs[2]), 3);
    let refused_group = RecordOutcome::Refused {
        hresult: Hresult::KMS_ID_MISMATCH,
        reason: RecordRefusal::GroupSeatLimit {
            kms_counted_id: g(S2019),
            limit: 1,
        },
    };
    let refused_pool = RecordOutcome::Refused {
        hresult: Hresult::KMS_ID_MISMATCH,
        reason: RecordRefusal::PoolSeatLimit {
            pool: Pool::Windows,
            limit: 3,
        },
    };
    // Server 4 hits the pool cap first (it is checked first).
    assert_eq!(outs[3], refused_pool);
    assert_eq!(outs[4], refused_pool);
    assert!(s.client(Pool::Windows, &cmid(5)).is_none());
    // Known clients renew.
    let mut r = win_client(1);
    r.request_id = 50;
    assert_eq!(reported(&one(&mut s, add_secs(t0(), 60), r)), 3);
    // Client 1 switching to the full Server 2019 group needs a group seat: refused.
    let mut sw = server(1);
    sw.request_id = 51;
    assert_eq!(one(&mut s, add_secs(t0(), 61), sw), refused_group);
    // Office is not limited.
    assert_eq!(reported(&one(&mut s, t0(), office(9))), 1);
    // Usage and warning level.
    let usage = s.seat_usage(add_secs(t0(), 61));
    assert_eq!(usage.len(), 2);
    assert_eq!(usage[0].scope, SeatScope::Pool(Pool::Windows));
    assert_eq!((usage[0].used, usage[0].limit), (3, 3));
    assert!(usage[0].is_warning());
    assert_eq!((usage[1].used, usage[1].limit), (1, 1));
    // Once client 2 expires (client 1 renewed at t0+60), a new client gets its seat.
    let later = add_secs(t0(), 30 * SECS_PER_DAY + 30);
    let o = one(&mut s, later, win_client(5));
    assert_eq!(reported(&o), 2);
}

#[test]
fn prune_and_forget() {
    let mut s = State::default();
    one(&mut s, t0(), win_client(1));
    one(&mut s, add_secs(t0(), 100), win_client(2));
    one(&mut s, add_secs(t0(), 200), office(3));
    let now = add_secs(t0(), 90 * SECS_PER_DAY + 150);
    let cmd = s.prune_command(now);
    assert_eq!(
        cmd,
        Command::Prune {
            before: add_secs(t0(), 150)
        }
    );
    assert_eq!(s.apply(&cmd), Outcome::Pruned { removed: 2 });
    assert_eq!(s.stored_clients(Pool::Windows), 0);
    assert_eq!(s.stored_clients(Pool::Office2013Plus), 1);
    let forgotten = s.apply(&Command::Forget {
        pool: Pool::Office2013Plus,
        cmid: cmid(3),
    });
    assert!(matches!(forgotten, Outcome::Forgotten(Some(r)) if r.workstation == "PC3"));
    assert_eq!(
        s.apply(&Command::Forget {
            pool: Pool::Office2013Plus,
            cmid: cmid(3),
        }),
        Outcome::Forgotten(None)
    );
    assert_eq!(s, State::default());
}

#[test]
fn config_and_identity_commands() {
    let mut s = State::default();
    let bad = ReplicatedConfig {
        activation_interval_minutes: 1,
        ..Default::default()
    };
    assert_eq!(
        s.apply(&Command::SetConfig(bad)),
        Outcome::ConfigRejected(ConfigError::ActivationInterval(1))
    );
    assert_eq!(s.config(), &ReplicatedConfig::default());
    let only = ReplicatedConfig {
        served_groups: ServedGroups::Only([g(W10)].into()),
        ..Default::default()
    };
    assert_eq!(
        s.apply(&Command::SetConfig(only.clone())),
        Outcome::ConfigSet
    );
    assert_eq!(s.config(), &only);

    let mut entropy_a = |b: &mut [u8]| b.fill(1);
    let mut entropy_b = |b: &mut [u8]| b.fill(2);
    let a = HostIdentity::generate(&mut entropy_a, t0(), true);
    let b = HostIdentity::generate(&mut entropy_b, t0(), true);
    assert_ne!(a, b);
    assert!(s.identity_for(g(W10)).is_none());
    assert_eq!(
        s.apply(&Command::InitIdentity(a.clone())),
        Outcome::IdentitySet
    );
    // The second initialiser loses the race: everyone keeps the first identity.
    assert_eq!(
        s.apply(&Command::InitIdentity(b.clone())),
        Outcome::IdentityAlreadySet
    );
    assert_eq!(s.identity(), Some(&a));
    assert_eq!(s.identity_for(g(W10)).unwrap().group_id, 206);
    // Operators may replace it.
    assert_eq!(
        s.apply(&Command::SetIdentity(b.clone())),
        Outcome::IdentitySet
    );
    assert_eq!(s.identity(), Some(&b));
    let mut broken = b;
    broken.epids.clear();
    assert_eq!(
        s.apply(&Command::SetIdentity(broken.clone())),
        Outcome::IdentityRejected(IdentityError::NoEpid)
    );
    let mut fresh = State::default();
    assert_eq!(
        fresh.apply(&Command::InitIdentity(broken)),
        Outcome::IdentityRejected(IdentityError::NoEpid)
    );
    assert!(fresh.identity().is_none());
}

#[test]
fn listing_filters_and_paging() {
    let mut s = State::default();
    for n in 0..25 {
        one(&mut s, add_secs(t0(), u64::from(n)), win_client(n));
    }
    for n in 100..105 {
        one(&mut s, t0(), server(n));
    }
    for n in 200..210 {
        one(&mut s, t0(), office(n));
    }
    // Page through everything, 7 at a time.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s.clients(&ClientFilter {
            after,
            limit: 7,
            ..Default::default()
        });
        assert!(page.clients.len() <= 7);
        seen.extend(page.clients.iter().map(|e| (e.pool, e.client_machine_id)));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.len(), 40);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen);
    let count = |f: ClientFilter| s.clients(&f).clients.len();
    assert_eq!(
        count(ClientFilter {
            pool: Some(Pool::Office2013Plus),
            ..Default::default()
        }),
        10
    );
    assert_eq!(
        count(ClientFilter {
            kms_counted_id: Some(g(S2019)),
            ..Default::default()
        }),
        5
    );
    assert_eq!(
        count(ClientFilter {
            seen_since: Some(add_secs(t0(), 20)),
            ..Default::default()
        }),
        5
    );
    assert_eq!(
        count(ClientFilter {
            seen_before: Some(add_secs(t0(), 1)),
            ..Default::default()
        }),
        16
    );
    assert_eq!(
        count(ClientFilter {
            workstation_contains: Some("pc10".into()),
            ..Default::default()
        }),
        6 // PC10, PC100 … PC104
    );
    // A page exactly full has no next page only if nothing follows.
    let page = s.clients(&ClientFilter {
        pool: Some(Pool::Office2013Plus),
        limit: 10,
        ..Default::default()
    });
    assert_eq!((page.clients.len(), page.next), (10, None));
}

#[test]
fn untrusted_text_is_bounded() {
    let mut s = State::default();
    let mut r = win_client(1);
    r.workstation = "x".repeat(10_000);
    r.source = "y".repeat(10_000);
    one(&mut s, t0(), r);
    let rec = s.client(Pool::Windows, &cmid(1)).unwrap();
    assert_eq!(rec.workstation.chars().count(), MAX_TEXT_CHARS);
    assert_eq!(rec.last_source.chars().count(), MAX_TEXT_CHARS);
}

#[test]
fn extreme_times_do_not_panic() {
    let mut s = State::default();
    one(&mut s, FileTime(0), win_client(1));
    one(&mut s, FileTime(u64::MAX), win_client(2));
    assert_eq!(s.pool_count(Pool::Windows, FileTime(u64::MAX)).live, 1);
    assert_eq!(s.pool_count(Pool::Windows, FileTime(0)).live, 2);
    assert!(!s.needs_write(Pool::Windows, &cmid(2), FileTime(u64::MAX)));
    s.apply(&Command::Prune {
        before: FileTime(u64::MAX),
    });
    assert_eq!(s.stored_clients(Pool::Windows), 1);
}

#[test]
fn serde_round_trips() {
    let mut s = State::default();
    for n in 1..=5 {
        one(&mut s, t0(), win_client(n));
        one(&mut s, t0(), office(n));
    }
    let mut e = |b: &mut [u8]| b.fill(7);
    s.apply(&Command::InitIdentity(HostIdentity::generate(
        &mut e,
        t0(),
        true,
    )));
    let mut cfg = ReplicatedConfig::default();
    cfg.seat_limits.groups.insert(g(W10), 10);
    cfg.seat_limits.pools.office2010 = Some(4);
    cfg.served_groups = ServedGroups::Only([g(W10)].into());
    s.apply(&Command::SetConfig(cfg));
    let j = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<State>(&j).unwrap(), s);
    let b = bincode::serialize(&s).unwrap();
    assert_eq!(bincode::deserialize::<State>(&b).unwrap(), s);
    // Commands and outcomes travel through the Raft log / responses.
    let cmd = Command::Record {
        at: t0(),
        node: 3,
        records: vec![win_client(1), office(2)],
    };
    let b = bincode::serialize(&cmd).unwrap();
    assert_eq!(bincode::deserialize::<Command>(&b).unwrap(), cmd);
    let out = s.clone().apply(&cmd);
    let b = bincode::serialize(&out).unwrap();
    assert_eq!(bincode::deserialize::<Outcome>(&b).unwrap(), out);
    let j = serde_json::to_string(&out).unwrap();
    assert_eq!(serde_json::from_str::<Outcome>(&j).unwrap(), out);
}

#[test]
fn replayed_requests_keep_their_own_time() {
    let mut s = State::default();
    let early = FileTime::from_unix_secs(1_700_000_000);
    let late = FileTime::from_unix_secs(1_700_003_600);
    let mut r = win_client(1);
    r.seen_at = Some(early);
    s.apply(&Command::Record {
        at: late,
        node: 1,
        records: vec![r],
    });
    let rec = s.client(Pool::Windows, &cmid(1)).unwrap();
    assert_eq!(rec.first_seen, early);
    assert_eq!(rec.last_seen, early);
}

mod incremental_tally {
    //! The cached, incrementally moved tallies must always equal a full scan.
    use super::*;
    use proptest::prelude::*;

    fn full_scan(s: &State, pool: Pool, now: FileTime) -> PoolCount {
        let cutoff = sub_secs(now, s.config.count_window_secs);
        Tally::build(s.pools.get(pool).values(), cutoff).count(pool, s.config.count_report)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Record { day: u64, cmid: u32, n: u32 },
        Prune { day: u64 },
        Forget { cmid: u32 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0u64..120, 0u32..40, prop_oneof![Just(5u32), Just(25u32)])
                .prop_map(|(day, cmid, n)| Op::Record { day, cmid, n }),
            1 => (0u64..120).prop_map(|day| Op::Prune { day }),
            1 => (0u32..40).prop_map(|cmid| Op::Forget { cmid }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn cached_counts_equal_a_full_scan(ops in proptest::collection::vec(op(), 1..60),
                                           probes in proptest::collection::vec(0u64..150, 1..6)) {
            let mut s = State::default();
            for op in ops {
                match op {
                    Op::Record { day, cmid: c, n } => {
                        let mut r = win_client(c);
                        r.required_count = n;
                        s.apply(&Command::Record {
                            at: add_secs(t0(), day * SECS_PER_DAY),
                            node: 1,
                            records: vec![r],
                        });
                    }
                    Op::Prune { day } => {
                        s.apply(&Command::Prune { before: add_secs(t0(), day * SECS_PER_DAY) });
                    }
                    Op::Forget { cmid: c } => {
                        s.apply(&Command::Forget { pool: Pool::Windows, cmid: cmid(c) });
                    }
                }
                let reloaded: State = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
                for day in &probes {
                    let now = add_secs(t0(), day * SECS_PER_DAY);
                    let want = full_scan(&s, Pool::Windows, now);
                    prop_assert_eq!(s.pool_count(Pool::Windows, now), want);
                    prop_assert_eq!(reloaded.pool_count(Pool::Windows, now), want);
                }
            }
        }
    }
}

#[test]
fn compacting_keeps_records_counts_and_behaviour() {
    let mut s = State::default();
    // Inserted out of key order, over time, with some expiring from the window.
    for round in 0..5u32 {
        let at = add_secs(t0(), u64::from(round) * 10 * SECS_PER_DAY);
        let batch = (0..200).map(|i| win_client(i * 7 % 1000 + round)).collect();
        record(&mut s, at, batch);
        record(&mut s, at, vec![office(round)]);
    }
    let now = add_secs(t0(), 45 * SECS_PER_DAY);
    let before = s.clone();
    s.compact();
    assert_eq!(s, before);
    for pool in Pool::ALL {
        assert_eq!(s.pool_count(pool, now), before.pool_count(pool, now));
        assert_eq!(
            s.waiting_clients(pool, now),
            before.waiting_clients(pool, now)
        );
    }
    // The compacted state goes on like the original.
    let (mut a, mut b) = (s, before);
    for st in [&mut a, &mut b] {
        record(st, now, (990..1010).map(win_client).collect());
        st.apply(&Command::Prune {
            before: add_secs(t0(), 15 * SECS_PER_DAY),
        });
    }
    assert_eq!(a, b);
    assert_eq!(
        a.pool_count(Pool::Windows, now),
        b.pool_count(Pool::Windows, now)
    );
}
