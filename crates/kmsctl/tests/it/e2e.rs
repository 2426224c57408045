//! End-to-end: kmsctl's client against the kms-wire host state machine over real TCP.

use std::time::Duration;

use kms_wire::Hresult;
use kms_wire::kms::ProtocolVersion;
use kms_wire::rpc::Syntax;
use kmsctl::activate::{self, ActivatePlan, ActivateReport, Outcome};
use kmsctl::bench::{self, BenchPlan};
use kmsctl::exit::ExitClass;

use crate::harness::{Behavior, EPID, HWID, HostOptions, TestKms, activate_args, bench_args};

async fn activate(host: &TestKms, extra: &[&str]) -> ActivateReport {
    let kms = host.kms_arg();
    let mut args = vec!["--kms", kms.as_str(), "--timeout", "5"];
    args.extend_from_slice(extra);
    let plan = ActivatePlan::from_args(&activate_args(&args)).expect("plan");
    activate::run(&plan).await
}

fn version(v: &str) -> ProtocolVersion {
    match v {
        "4" => ProtocolVersion::V4,
        "5" => ProtocolVersion::V5,
        _ => ProtocolVersion::V6,
    }
}

/// Every protocol × NDR64 on/off × BTFN on/off × one or three requests per connection.
#[tokio::test]
async fn activate_matrix_against_the_host_state_machine() {
    let host = TestKms::start(HostOptions::default()).await;
    for v in ["4", "5", "6"] {
        for ndr64 in [true, false] {
            for btfn in [true, false] {
                for requests in ["1", "3"] {
                    let mut extra = vec!["--protocol", v, "--requests", requests];
                    extra.push(if ndr64 { "--ndr64" } else { "--no-ndr64" });
                    extra.push(if btfn { "--btfn" } else { "--no-btfn" });
                    let before = host.seen().len();
                    let report = activate(&host, &extra).await;
                    let ctx = format!("v{v} ndr64={ndr64} btfn={btfn} requests={requests}");
                    assert_eq!(
                        report.exit_class(),
                        ExitClass::Success,
                        "{ctx}: {report:#?}"
                    );
                    let n: usize = requests.parse().unwrap();
                    assert_eq!(report.results.len(), n, "{ctx}");
                    for (i, r) in report.results.iter().enumerate() {
                        assert_eq!(r.outcome, Outcome::Activated, "{ctx}");
                        assert_eq!(r.protocol, version(v).major(), "{ctx}");
                        assert_eq!(r.epid.as_deref(), Some(EPID), "{ctx}");
                        assert_eq!(r.hresult.as_deref(), Some("0x00000000"));
                        assert_eq!(r.hresult_name, Some("S_OK"));
                        assert_eq!(r.activation_interval, Some(120));
                        assert_eq!(r.renewal_interval, Some(10080));
                        assert!(r.current_count.unwrap() >= 1);
                        if v == "6" {
                            assert_eq!(r.hwid.as_deref(), Some("3A1C049600B60076"));
                        } else {
                            assert_eq!(r.hwid, None);
                        }
                        // Windows sequence: first request NDR32, later ones NDR64 (§3.3).
                        let want = if ndr64 && i > 0 { "ndr64" } else { "ndr32" };
                        assert_eq!(r.transfer_syntax, Some(want), "{ctx} request {i}");
                    }
                    let seen = &host.seen()[before..];
                    assert_eq!(seen.len(), n, "{ctx}");
                    for (i, s) in seen.iter().enumerate() {
                        assert_eq!(s.version, version(v));
                        let want = if ndr64 && i > 0 {
                            Syntax::Ndr64
                        } else {
                            Syntax::Ndr32
                        };
                        assert_eq!(s.syntax, want, "{ctx}");
                    }
                }
            }
        }
    }
    assert_eq!(HWID.len(), 8);
}

#[tokio::test]
async fn host_without_ndr64_serves_ndr32_only() {
    let host = TestKms::start(HostOptions {
        ndr64: false,
        btfn: false,
        ..HostOptions::default()
    })
    .await;
    let report = activate(&host, &["--requests", "3"]).await;
    assert_eq!(report.exit_class(), ExitClass::Success, "{report:#?}");
    assert!(
        report
            .results
            .iter()
            .all(|r| r.transfer_syntax == Some("ndr32"))
    );
}

#[tokio::test]
async fn new_connection_per_request_binds_every_time() {
    let host = TestKms::start(HostOptions::default()).await;
    let report = activate(&host, &["--requests", "3", "--new-connection"]).await;
    assert_eq!(report.exit_class(), ExitClass::Success);
    assert_eq!(host.connections(), 3);
    assert!(
        report
            .results
            .iter()
            .all(|r| r.transfer_syntax == Some("ndr32"))
    );
}

#[tokio::test]
async fn machines_charge_the_count_like_vlmcs() {
    let host = TestKms::start(HostOptions::default()).await;
    let report = activate(
        &host,
        &[
            "--product",
            "Windows Server 2022 Datacenter",
            "--machines",
            "6",
        ],
    )
    .await;
    assert_eq!(report.exit_class(), ExitClass::Success);
    let counts: Vec<u32> = report
        .results
        .iter()
        .map(|r| r.current_count.unwrap())
        .collect();
    assert_eq!(counts, vec![1, 2, 3, 4, 5, 6]);
    let sufficient: Vec<bool> = report
        .results
        .iter()
        .map(|r| r.count_sufficient.unwrap())
        .collect();
    assert_eq!(sufficient, vec![false, false, false, false, true, true]);
    assert_eq!(host.connections(), 1, "one connection for all machines");
    let seen = host.seen();
    let mut cmids: Vec<_> = seen.iter().map(|s| s.cmid).collect();
    cmids.dedup();
    assert_eq!(cmids.len(), 6);
    assert!(seen.iter().all(|s| s.cmid.is_rfc4122_v4()));
    assert!(
        seen.iter()
            .all(|s| s.workstation.starts_with("WIN-") && s.workstation.len() == 15)
    );
    assert!(seen.iter().all(|s| s.required_count == 5));
    assert!(report.to_text().contains("6 request(s): 6 activated"));
}

#[tokio::test]
async fn request_fields_reach_the_host() {
    let host = TestKms::start(HostOptions::default()).await;
    let report = activate(
        &host,
        &[
            "--product",
            "office professional plus 2019",
            "--cmid",
            "{3F2504E0-4F89-41D3-9A0C-0305E82C3301}",
            "--workstation",
            "pc-17.corp.example",
            "--vm",
            "--license-status",
            "5",
            "--protocol",
            "5",
        ],
    )
    .await;
    assert_eq!(report.exit_class(), ExitClass::Success);
    let s = &host.seen()[0];
    assert_eq!(s.cmid.to_string(), "3f2504e0-4f89-41d3-9a0c-0305e82c3301");
    assert_eq!(s.workstation, "pc-17.corp.example");
    assert_eq!(s.is_vm, 1);
    assert_eq!(s.license_status, 5);
    assert_eq!(s.version, ProtocolVersion::V5);
    assert_eq!(
        s.kms_counted_id.to_string(),
        "617d9eb1-ef36-4f82-86e0-a65ae07b96c6"
    );
    assert_eq!(s.required_count, 5);
}

#[tokio::test]
async fn hresult_refusal_is_exit_class_1() {
    let host = TestKms::start(HostOptions {
        behavior: Behavior::Refuse(Hresult::KMS_ID_MISMATCH),
        ..HostOptions::default()
    })
    .await;
    for v in ["4", "5", "6"] {
        let report = activate(&host, &["--protocol", v, "--requests", "2"]).await;
        assert_eq!(report.exit_class(), ExitClass::Refused, "v{v}");
        assert_eq!(report.exit_class().code(), 1);
        for r in &report.results {
            assert_eq!(r.outcome, Outcome::Refused);
            assert_eq!(r.hresult.as_deref(), Some("0xC004F042"));
            assert_eq!(
                r.hresult_name,
                Some("SL_E_VL_KEY_MANAGEMENT_SERVICE_ID_MISMATCH")
            );
            assert!(r.hresult_meaning.is_some());
            assert_eq!(r.epid, None);
        }
        // A refusal keeps the connection usable: the second request was sent on it.
        assert_eq!(report.results[1].transfer_syntax, Some("ndr64"));
    }
    let text = activate(&host, &[]).await.to_text();
    assert!(text.contains("refused with 0xC004F042 SL_E_VL_KEY_MANAGEMENT_SERVICE_ID_MISMATCH"));
}

#[tokio::test]
async fn skewed_time_is_refused_with_invalid_timestamp() {
    let host = TestKms::start(HostOptions::default()).await;
    let report = activate(&host, &["--time-offset-secs", "18000"]).await;
    assert_eq!(report.exit_class(), ExitClass::Refused);
    assert_eq!(report.results[0].hresult.as_deref(), Some("0xC004F06C"));
    let report = activate(&host, &["--time-offset-secs", "-18000"]).await;
    assert_eq!(report.results[0].hresult.as_deref(), Some("0xC004F06C"));
    let report = activate(&host, &["--time-offset-secs", "-3600"]).await;
    assert_eq!(report.exit_class(), ExitClass::Success);
}

async fn assert_flip_detected(behavior: Behavior, versions: &[&str]) {
    let host = TestKms::start(HostOptions {
        behavior,
        ..HostOptions::default()
    })
    .await;
    for v in versions {
        let report = activate(&host, &["--protocol", v]).await;
        assert_eq!(report.exit_class(), ExitClass::Invalid, "v{v}: {report:#?}");
        assert_eq!(report.exit_class().code(), 2);
        let r = &report.results[0];
        assert_eq!(r.outcome, Outcome::Invalid);
        let err = r.error.as_deref().unwrap();
        assert!(err.contains("failed verification"), "v{v}: {err}");
        assert_eq!(r.epid, None);
        assert_eq!(r.hresult, None);
    }
}

/// v4 (MAC) and v6 (HMAC) authenticate the whole response: any flipped bit is caught.
#[tokio::test]
async fn flipped_response_byte_is_a_verification_failure() {
    assert_flip_detected(Behavior::FlipByte, &["4", "6"]).await;
}

/// The last block carries the PKCS#7 padding (v5/v6) or the MAC (v4): caught in every
/// version. (v5 has no MAC over the base response, so a bit flipped inside the ePID's
/// ciphertext can only be noticed if it breaks the ePID rules — a protocol property.)
#[tokio::test]
async fn flipped_last_byte_is_a_verification_failure_in_every_version() {
    assert_flip_detected(Behavior::FlipLastByte, &["4", "5", "6"]).await;
}

#[tokio::test]
async fn rpc_violation_is_exit_class_2() {
    let host = TestKms::start(HostOptions {
        behavior: Behavior::WrongCallId,
        ..HostOptions::default()
    })
    .await;
    let report = activate(&host, &[]).await;
    assert_eq!(report.exit_class(), ExitClass::Invalid);
    assert!(
        report.results[0]
            .error
            .as_deref()
            .unwrap()
            .contains("RPC protocol error")
    );
}

#[tokio::test]
async fn unreachable_host_is_exit_class_3_and_stops() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let kms = addr.to_string();
    let plan =
        ActivatePlan::from_args(&activate_args(&["--kms", &kms, "--machines", "5"])).unwrap();
    let report = activate::run(&plan).await;
    assert_eq!(report.exit_class(), ExitClass::Connection);
    assert_eq!(report.exit_class().code(), 3);
    assert_eq!(report.results.len(), 1);
    assert_eq!(report.not_sent, 4);
    assert!(
        report.results[0]
            .error
            .as_deref()
            .unwrap()
            .contains("cannot connect")
    );
    assert!(report.to_text().contains("4 not sent"));
}

#[tokio::test]
async fn host_closing_after_each_call_is_reported_and_reconnected() {
    let host = TestKms::start(HostOptions {
        close_after_calls: Some(1),
        ..HostOptions::default()
    })
    .await;
    let report = activate(&host, &["--requests", "3"]).await;
    let outcomes: Vec<Outcome> = report.results.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        vec![Outcome::Activated, Outcome::Connection, Outcome::Activated]
    );
    assert!(
        report.results[1]
            .error
            .as_deref()
            .unwrap()
            .contains("closed")
    );
    assert_eq!(report.exit_class(), ExitClass::Connection);
    assert_eq!(host.connections(), 2);
}

#[tokio::test]
async fn bench_200_requests_keepalive_mix_has_no_errors() {
    let host = TestKms::start(HostOptions::default()).await;
    let kms = host.kms_arg();
    let args = bench_args(&[
        "--kms",
        &kms,
        "--requests",
        "200",
        "--concurrency",
        "8",
        "--protocol",
        "mix",
    ]);
    let plan = BenchPlan::from_args(&args).unwrap();
    let report = bench::run(&plan).await.unwrap();
    assert_eq!(report.requests, 200, "{report:#?}");
    assert_eq!(report.successes, 200, "{report:#?}");
    assert_eq!(
        report.invalid_responses + report.refusals + report.connection_errors,
        0
    );
    assert!(report.errors_by_reason.is_empty());
    assert_eq!(report.exit_class, ExitClass::Success);
    assert_eq!(report.latency_us.count, 200);
    assert!(report.latency_us.p50 <= report.latency_us.p99);
    assert!(report.latency_us.p99 <= report.latency_us.max);
    assert!(report.connections <= 8);
    assert!(report.throughput_rps > 0.0);
    let seen = host.seen();
    assert_eq!(seen.len(), 200);
    for v in ProtocolVersion::ALL {
        let n = seen.iter().filter(|s| s.version == v).count();
        assert!((66..=67).contains(&n), "{v}: {n}");
    }
    // --clients 0: every request a new CMID.
    let mut cmids: Vec<_> = seen.iter().map(|s| s.cmid).collect();
    cmids.sort();
    cmids.dedup();
    assert_eq!(cmids.len(), 200);
}

#[tokio::test]
async fn bench_per_connection_with_a_client_pool() {
    let host = TestKms::start(HostOptions::default()).await;
    let kms = host.kms_arg();
    let args = bench_args(&[
        "--kms",
        &kms,
        "--requests",
        "60",
        "-c",
        "4",
        "--mode",
        "per-connection",
        "--clients",
        "10",
    ]);
    let report = bench::run(&BenchPlan::from_args(&args).unwrap())
        .await
        .unwrap();
    assert_eq!(report.successes, 60, "{report:#?}");
    assert_eq!(report.connections, 60);
    assert_eq!(host.connections(), 60);
    let mut cmids: Vec<_> = host.seen().iter().map(|s| s.cmid).collect();
    cmids.sort();
    cmids.dedup();
    assert_eq!(cmids.len(), 10, "a pool of 10 CMIDs cycled");
}

#[tokio::test]
async fn bench_duration_stops_by_itself() {
    let host = TestKms::start(HostOptions::default()).await;
    let kms = host.kms_arg();
    let args = bench_args(&["--kms", &kms, "--duration", "0.3", "-c", "2"]);
    let started = std::time::Instant::now();
    let report = bench::run(&BenchPlan::from_args(&args).unwrap())
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(report.requests > 0);
    assert_eq!(report.successes, report.requests);
}

#[tokio::test]
async fn bench_counts_errors_by_reason() {
    let refusing = TestKms::start(HostOptions {
        behavior: Behavior::Refuse(Hresult::KMS_ID_MISMATCH),
        ..HostOptions::default()
    })
    .await;
    let kms = refusing.kms_arg();
    let report = bench::run(
        &BenchPlan::from_args(&bench_args(&["--kms", &kms, "--requests", "20"])).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(report.refusals, 20);
    assert_eq!(report.errors_by_reason.get("hresult 0xC004F042"), Some(&20));
    assert_eq!(report.exit_class, ExitClass::Refused);

    let flipping = TestKms::start(HostOptions {
        behavior: Behavior::FlipByte,
        ..HostOptions::default()
    })
    .await;
    let kms = flipping.kms_arg();
    let report = bench::run(
        &BenchPlan::from_args(&bench_args(&[
            "--kms",
            &kms,
            "--requests",
            "20",
            "--protocol",
            "4",
        ]))
        .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(report.invalid_responses, 20, "{report:#?}");
    assert_eq!(report.errors_by_reason.get("verify: bad_mac"), Some(&20));
    assert_eq!(report.exit_class, ExitClass::Invalid);

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let kms = listener.local_addr().unwrap().to_string();
    drop(listener);
    let report = bench::run(
        &BenchPlan::from_args(&bench_args(&["--kms", &kms, "--requests", "5", "-c", "1"])).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(report.connection_errors, 5);
    assert_eq!(report.errors_by_reason.get("connect"), Some(&5));
    assert_eq!(report.latency_us.count, 0);
    assert_eq!(report.exit_class, ExitClass::Connection);
}

/// The real binary: exit codes 0, 1, 2 against live hosts.
#[tokio::test]
async fn binary_exit_codes() {
    let ok = TestKms::start(HostOptions::default()).await;
    let refusing = TestKms::start(HostOptions {
        behavior: Behavior::Refuse(Hresult::KMS_ID_MISMATCH),
        ..HostOptions::default()
    })
    .await;
    let flipping = TestKms::start(HostOptions {
        behavior: Behavior::FlipByte,
        ..HostOptions::default()
    })
    .await;
    for (host, code) in [(&ok, 0), (&refusing, 1), (&flipping, 2)] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kmsctl"))
            .args(["activate", "--kms", &host.kms_arg(), "-o", "json"])
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 1);
    }
}
