//! What survives a clean restart (SIGTERM, then start again on the same data directory): the
//! counts, the known machines, and the host identity clients see (ePID, HwId).

use kms_wire::kms::ProtocolVersion;

use crate::harness::Kmsd;
use crate::kms::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_and_identity_survive_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Kmsd::start(dir.path(), &[]);
    let win = windows_client();
    let o16 = office2016();
    let o10 = office2010();
    let wm: Vec<_> = (0..4).map(|_| machine(&win)).collect();
    let om: Vec<_> = (0..3).map(|_| machine(&o16)).collect();
    let o10m = machine(&o10);

    let addr = node.kms_addr();
    let mut before = Vec::new();
    for (i, m) in wm[..3].iter().enumerate() {
        let r = activate(addr, &win, m).await;
        assert_eq!(r.response.current_count, i as u32 + 1);
        before.push(r);
    }
    for (i, m) in om[..2].iter().enumerate() {
        assert_eq!(
            activate(addr, &o16, m).await.response.current_count,
            i as u32 + 1
        );
    }
    let o10_before = activate(addr, &o10, &o10m).await;
    assert_eq!(o10_before.response.current_count, 1);
    let o16_before = activate(addr, &o16, &om[0]).await;
    let win_v4_before = activate_v(addr, &win, &wm[0], ProtocolVersion::V4).await;

    let status = node.stop();
    assert!(
        status.success(),
        "SIGTERM must end kmsd cleanly: {status:?}"
    );
    node.restart();
    let addr = node.kms_addr();

    // A known machine still sees the same count (it is not counted twice)…
    let again = activate(addr, &win, &wm[0]).await;
    assert_eq!(
        again.response.current_count, 3,
        "known machine after restart"
    );
    // …and the next new one sees previous + 1.
    let next = activate(addr, &win, &wm[3]).await;
    assert_eq!(next.response.current_count, 4, "new machine after restart");
    assert_eq!(activate(addr, &o16, &om[2]).await.response.current_count, 3);
    assert_eq!(activate(addr, &o10, &o10m).await.response.current_count, 1);

    // Same host identity: ePID per product group and the HwId (v6).
    assert_eq!(again.response.epid, before[0].response.epid, "Windows ePID");
    assert!(before[0].hwid.is_some(), "v6 responses carry the HwId");
    assert_eq!(again.hwid, before[0].hwid, "HwId");
    assert_eq!(next.hwid, before[0].hwid, "HwId");
    let o16_after = activate(addr, &o16, &om[0]).await;
    assert_eq!(
        o16_after.response.epid, o16_before.response.epid,
        "Office ePID"
    );
    assert_eq!(o16_after.hwid, o16_before.hwid, "HwId (Office)");
    let o10_after = activate(addr, &o10, &o10m).await;
    assert_eq!(
        o10_after.response.epid, o10_before.response.epid,
        "Office 2010 ePID"
    );
    let win_v4_after = activate_v(addr, &win, &wm[0], ProtocolVersion::V4).await;
    assert_eq!(win_v4_after.response.epid, win_v4_before.response.epid);
    // Intervals are replicated configuration: unchanged as well.
    assert_eq!(
        (
            again.response.activation_interval,
            again.response.renewal_interval
        ),
        (
            before[0].response.activation_interval,
            before[0].response.renewal_interval
        )
    );

    // And once more, to be sure a restart does not drift anything.
    assert!(node.stop().success());
    node.restart();
    let r = activate(node.kms_addr(), &win, &wm[1]).await;
    assert_eq!(r.response.current_count, 4);
    assert_eq!(r.hwid, before[0].hwid);
    assert_eq!(r.response.epid, before[0].response.epid);
}
