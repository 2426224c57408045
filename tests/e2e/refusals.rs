//! KMS-level refusals on a live node (PROTOCOL.md §9.1, §9.5, §9.6): the right HRESULT in a
//! RESPONSE, never a dropped connection, nothing counted, and the connection stays usable.

use std::time::Duration;

use kms_wire::Hresult;
use kms_wire::kms::ProtocolVersion;
use kmsctl::client::build_request;

use crate::harness::Kmsd;
use crate::kms::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_the_right_hresult_and_keep_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let node = Kmsd::start(dir.path(), &[]);
    let addr = node.kms_addr();
    let win = windows_client();
    let o16 = office2016();

    let mut retail = win.clone();
    retail.kms_counted_id = "e1c51358-fe3e-4203-a4a2-3b6b20c9734e".parse().unwrap(); // Windows 10/11 (Retail)
    let mut unknown = win.clone();
    unknown.kms_counted_id = unknown_guid();
    let mut huge_n = win.clone();
    huge_n.required_client_count = 1001;
    let mut zero_n = win.clone();
    zero_n.required_client_count = 0;
    // The Windows product group with Office's application id, and the other way round.
    let mut wrong_app = win.clone();
    wrong_app.application_id = o16.application_id;
    let mut wrong_app_office = o16.clone();
    wrong_app_office.application_id = win.application_id;

    let five_hours = 5 * 3600;
    let cases: Vec<(&str, kms_wire::kms::ActivationRequest, Hresult)> = vec![
        (
            "request time 5 h ahead",
            build_request(ProtocolVersion::V6, &win, &machine(&win), five_hours),
            Hresult::INVALID_TIMESTAMP,
        ),
        (
            "request time 5 h behind",
            build_request(ProtocolVersion::V4, &win, &machine(&win), -five_hours),
            Hresult::INVALID_TIMESTAMP,
        ),
        (
            "retail product group",
            build_request(ProtocolVersion::V6, &retail, &machine(&win), 0),
            Hresult::KMS_ID_MISMATCH,
        ),
        (
            "unknown KMS counted id",
            build_request(ProtocolVersion::V5, &unknown, &machine(&win), 0),
            Hresult::KMS_ID_MISMATCH,
        ),
        (
            "N > 1000",
            build_request(ProtocolVersion::V6, &huge_n, &machine(&win), 0),
            Hresult::INVALID_DATA,
        ),
        (
            "N = 0",
            build_request(ProtocolVersion::V6, &zero_n, &machine(&win), 0),
            Hresult::INVALID_DATA,
        ),
        (
            "Windows group with Office's application id",
            build_request(ProtocolVersion::V6, &wrong_app, &machine(&win), 0),
            Hresult::KMS_ID_MISMATCH,
        ),
        (
            "Office group with Windows' application id",
            build_request(ProtocolVersion::V6, &wrong_app_office, &machine(&o16), 0),
            Hresult::KMS_ID_MISMATCH,
        ),
    ];

    // One connection for everything: after each refusal a good request succeeds on it.
    let mut conn = connect(addr).await;
    let good = machine(&win);
    let (_, reply) = call(&mut conn, &request(&win, &good, ProtocolVersion::V6)).await;
    assert_eq!(
        granted(reply, "first good request").response.current_count,
        1
    );
    for (what, req, want) in &cases {
        let (_, reply) = call(&mut conn, req).await;
        assert_eq!(refused(reply, what), *want, "{what}");
        let (_, reply) = call(&mut conn, &request(&win, &good, ProtocolVersion::V6)).await;
        let r = granted(reply, &format!("good request after: {what}"));
        assert_eq!(
            r.response.current_count, 1,
            "a refusal must not count ({what})"
        );
    }
    // Within the ±4 h window is fine (3 h 50 min off).
    let near = build_request(
        ProtocolVersion::V6,
        &win,
        &machine(&win),
        3 * 3600 + 50 * 60,
    );
    let (_, reply) = call(&mut conn, &near).await;
    assert_eq!(granted(reply, "3 h 50 min skew").response.current_count, 2);

    // Each refusal on a fresh connection as well (a client's first and only call).
    for (what, req, want) in &cases {
        let mut c = connect(addr).await;
        let (_, reply) = call(&mut c, req).await;
        assert_eq!(refused(reply, what), *want, "{what} (fresh connection)");
    }

    // Refusals are visible in the metrics by result.
    let metrics = node.metrics();
    for series in [
        "result=\"time_skew\"",
        "result=\"product_refused\"",
        "result=\"invalid_data\"",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("kmsd_activations_total") && l.contains(series)),
            "no kmsd_activations_total series with {series}:\n{metrics}"
        );
    }
    let live = node.wait_metric(
        "kmsd_pool_clients{pool=\"windows\"}",
        Duration::from_secs(5),
        |v| v == 2.0,
    );
    assert_eq!(live, 2.0, "only the two accepted machines are counted");
    assert_eq!(
        node.metric("kmsd_pool_clients{pool=\"office2013plus\"}"),
        0.0
    );
}
