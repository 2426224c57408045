//! The client count as real clients see it (PROTOCOL.md §9.2, DESIGN §4): distinct machines
//! per pool, repeats not counted, pools separate, reported count capped at 2 × the largest N.

use std::time::Duration;

use crate::harness::Kmsd;
use crate::kms::*;

/// The count each machine sees when activating on its own connection, in order.
async fn counts(
    addr: std::net::SocketAddr,
    p: &kmsctl::catalog::ProductSelection,
    machines: &[kmsctl::client::ClientIdentity],
) -> Vec<u32> {
    let mut out = Vec::new();
    for m in machines {
        out.push(activate(addr, p, m).await.response.current_count);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_clients_reach_the_threshold_and_the_count_caps_at_50() {
    let dir = tempfile::tempdir().unwrap();
    let node = Kmsd::start(dir.path(), &[]);
    let addr = node.kms_addr();
    let win = windows_client();
    let machines: Vec<_> = (0..55).map(|_| machine(&win)).collect();

    // 24 machines: each sees itself counted, 1…24, all below the threshold N = 25.
    let first = counts(addr, &win, &machines[..24]).await;
    assert_eq!(first, (1..=24).collect::<Vec<u32>>());
    // The 25th reaches the threshold.
    assert_eq!(counts(addr, &win, &machines[24..25]).await, vec![25]);

    // Repeats of known machines do not count, on new connections and on one connection.
    assert_eq!(counts(addr, &win, &machines[..3]).await, vec![25, 25, 25]);
    let mut conn = connect(addr).await;
    for _ in 0..3 {
        let (_, reply) = call(
            &mut conn,
            &request(&win, &machines[24], win.default_protocol),
        )
        .await;
        assert_eq!(granted(reply, "repeat").response.current_count, 25);
    }

    // Office is its own pool (two of them: 2013+ and 2010), and counting Office clients does
    // not move the Windows count.
    let o16 = office2016();
    let o13 = office2013();
    let o10 = office2010();
    let om: Vec<_> = (0..3).map(|_| machine(&o16)).collect();
    assert_eq!(counts(addr, &o16, &om[..2]).await, vec![1, 2]);
    // Office 2013 shares the Office 2013+ pool with 2016 (and uses protocol v5).
    assert_eq!(counts(addr, &o13, &om[2..3]).await, vec![3]);
    // Office 2010 (protocol v4) is separate from both.
    let o10m: Vec<_> = (0..2).map(|_| machine(&o10)).collect();
    assert_eq!(counts(addr, &o10, &o10m).await, vec![1, 2]);
    assert_eq!(counts(addr, &win, &machines[25..26]).await, vec![26]);

    // Beyond 2N = 50 the reported count stays at 50.
    let rest = counts(addr, &win, &machines[26..]).await;
    let want: Vec<u32> = (27..=55).map(|n: u32| n.min(50)).collect();
    assert_eq!(rest, want);
    assert_eq!(counts(addr, &win, &machines[..1]).await, vec![50]);

    // The node knows the real number (the metric is uncapped) and the reported one.
    let live = node.wait_metric(
        "kmsd_pool_clients{pool=\"windows\"}",
        Duration::from_secs(5),
        |v| v == 55.0,
    );
    assert_eq!(live, 55.0);
    assert_eq!(
        node.metric("kmsd_pool_reported_clients{pool=\"windows\"}"),
        50.0
    );
    assert_eq!(
        node.metric("kmsd_pool_clients{pool=\"office2013plus\"}"),
        3.0
    );
    assert_eq!(node.metric("kmsd_pool_clients{pool=\"office2010\"}"), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_alone_cap_at_10_and_office_caps_at_10() {
    let dir = tempfile::tempdir().unwrap();
    let node = Kmsd::start(dir.path(), &[]);
    let addr = node.kms_addr();

    // Only servers (N = 5): 1…10, then 10.
    let srv = windows_server();
    let servers: Vec<_> = (0..12).map(|_| machine(&srv)).collect();
    let seen = counts(addr, &srv, &servers).await;
    let want: Vec<u32> = (1..=12).map(|n: u32| n.min(10)).collect();
    assert_eq!(seen, want, "servers only");
    // The threshold servers wait for is 5, reached long ago.
    assert_eq!(counts(addr, &srv, &servers[..1]).await, vec![10]);

    // Office 2013+ (N = 5) caps at 10 as well, on every protocol its versions use.
    let o16 = office2016();
    let o13 = office2013();
    let office: Vec<_> = (0..12).map(|_| machine(&o16)).collect();
    let mut seen = counts(addr, &o16, &office[..6]).await;
    seen.extend(counts(addr, &o13, &office[6..]).await);
    assert_eq!(seen, want, "office");

    // Office 2010 too.
    let o10 = office2010();
    let o10m: Vec<_> = (0..11).map(|_| machine(&o10)).collect();
    let seen = counts(addr, &o10, &o10m).await;
    assert_eq!(
        seen,
        (1..=11).map(|n: u32| n.min(10)).collect::<Vec<_>>(),
        "office 2010"
    );

    // Once a Windows client (N = 25) appears, the Windows cache grows to 50: the 13th
    // machine of the pool sees 13, not 10. Office stays capped at 10.
    let win = windows_client();
    assert_eq!(counts(addr, &win, &[machine(&win)]).await, vec![13]);
    assert_eq!(counts(addr, &srv, &[machine(&srv)]).await, vec![14]);
    assert_eq!(counts(addr, &o16, &[machine(&o16)]).await, vec![10]);
}
