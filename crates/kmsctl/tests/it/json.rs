//! The documented JSON shapes of `activate -o json` and `bench -o json`.

use clap::Parser;
use kmsctl::cli::Cli;
use kmsctl::exit::ExitClass;
use serde_json::Value;

use crate::harness::{Behavior, HostOptions, TestKms};

const ACTIVATE_KEYS: &[&str] = &[
    "activation_interval",
    "cmid",
    "count_sufficient",
    "current_count",
    "epid",
    "error",
    "hresult",
    "hresult_meaning",
    "hresult_name",
    "hwid",
    "machine",
    "outcome",
    "protocol",
    "renewal_interval",
    "request",
    "required_count",
    "transfer_syntax",
    "workstation",
];

const BENCH_KEYS: &[&str] = &[
    "address",
    "clients",
    "concurrency",
    "connection_errors",
    "connections",
    "elapsed_secs",
    "errors_by_reason",
    "invalid_responses",
    "kms",
    "latency_us",
    "mode",
    "protocol",
    "refusals",
    "requests",
    "successes",
    "throughput_rps",
];

async fn run(args: &[&str]) -> (ExitClass, Value) {
    let cli = Cli::try_parse_from(std::iter::once("kmsctl").chain(args.iter().copied())).unwrap();
    let mut out = Vec::new();
    let class = kmsctl::execute(&cli, &mut out).await.unwrap();
    (
        class,
        serde_json::from_slice(&out).expect("stdout is one JSON document"),
    )
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

#[tokio::test]
async fn activate_json_shape() {
    let host = TestKms::start(HostOptions::default()).await;
    let kms = host.kms_arg();
    let (class, v) = run(&[
        "activate",
        "--kms",
        &kms,
        "-o",
        "json",
        "--requests",
        "2",
        "--protocol",
        "6",
    ])
    .await;
    assert_eq!(class, ExitClass::Success);
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    for (i, r) in arr.iter().enumerate() {
        assert_eq!(keys(r), ACTIVATE_KEYS);
        assert_eq!(r["request"], i + 1);
        assert_eq!(r["machine"], 1);
        assert_eq!(r["outcome"], "activated");
        assert_eq!(r["protocol"], 6);
        assert_eq!(r["hresult"], "0x00000000");
        assert_eq!(r["hresult_name"], "S_OK");
        assert_eq!(r["hwid"], "3A1C049600B60076");
        assert_eq!(r["required_count"], 25);
        assert_eq!(r["activation_interval"], 120);
        assert_eq!(r["renewal_interval"], 10080);
        assert!(r["epid"].is_string());
        assert!(r["current_count"].is_u64());
        assert!(r["count_sufficient"].is_boolean());
        assert!(r["error"].is_null());
        assert_eq!(r["cmid"].as_str().unwrap().len(), 36);
    }
    assert_eq!(arr[0]["transfer_syntax"], "ndr32");
    assert_eq!(arr[1]["transfer_syntax"], "ndr64");
    assert_eq!(arr[0]["cmid"], arr[1]["cmid"]);
}

#[tokio::test]
async fn activate_json_shape_of_failures() {
    let refusing = TestKms::start(HostOptions {
        behavior: Behavior::Refuse(kms_wire::Hresult::INVALID_TIMESTAMP),
        ..HostOptions::default()
    })
    .await;
    let kms = refusing.kms_arg();
    let (class, v) = run(&["activate", "--kms", &kms, "-o", "json", "--protocol", "4"]).await;
    assert_eq!(class, ExitClass::Refused);
    let r = &v[0];
    assert_eq!(keys(r), ACTIVATE_KEYS);
    assert_eq!(r["outcome"], "refused");
    assert_eq!(r["hresult"], "0xC004F06C");
    assert_eq!(r["hresult_name"], "SL_E_VL_INVALID_TIMESTAMP");
    assert!(r["hresult_meaning"].is_string());
    for k in [
        "epid",
        "hwid",
        "current_count",
        "count_sufficient",
        "activation_interval",
        "renewal_interval",
        "error",
    ] {
        assert!(r[k].is_null(), "{k}");
    }

    let flipping = TestKms::start(HostOptions {
        behavior: Behavior::FlipByte,
        ..HostOptions::default()
    })
    .await;
    let kms = flipping.kms_arg();
    let (class, v) = run(&["activate", "--kms", &kms, "-o", "json"]).await;
    assert_eq!(class, ExitClass::Invalid);
    assert_eq!(keys(&v[0]), ACTIVATE_KEYS);
    assert_eq!(v[0]["outcome"], "invalid");
    assert!(v[0]["hresult"].is_null());
    assert!(v[0]["error"].as_str().unwrap().contains("verification"));
}

#[tokio::test]
async fn bench_json_shape() {
    let host = TestKms::start(HostOptions::default()).await;
    let kms = host.kms_arg();
    let (class, v) = run(&[
        "bench",
        "--kms",
        &kms,
        "-o",
        "json",
        "--requests",
        "30",
        "-c",
        "3",
        "--clients",
        "5",
    ])
    .await;
    assert_eq!(class, ExitClass::Success);
    assert_eq!(keys(&v), BENCH_KEYS);
    assert_eq!(v["requests"], 30);
    assert_eq!(v["successes"], 30);
    assert_eq!(v["clients"], 5);
    assert_eq!(v["concurrency"], 3);
    assert_eq!(v["mode"], "keepalive");
    assert_eq!(v["protocol"], "6");
    assert_eq!(v["errors_by_reason"], serde_json::json!({}));
    let mut lat: Vec<&str> = v["latency_us"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    lat.sort_unstable();
    assert_eq!(lat, ["count", "max", "mean", "min", "p50", "p90", "p99"]);
    assert!(v["throughput_rps"].is_f64());
    assert!(v["elapsed_secs"].is_f64());
}

#[tokio::test]
async fn text_output_of_activate() {
    let host = TestKms::start(HostOptions::default()).await;
    let kms = host.kms_arg();
    let cli =
        Cli::try_parse_from(["kmsctl", "activate", "--kms", &kms, "--protocol", "6"]).unwrap();
    let mut out = Vec::new();
    kmsctl::execute(&cli, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    for want in [
        "activated",
        "ePID",
        "HwId",
        "3A1C049600B60076",
        "current count",
        "renewal interval     10080 min",
        "1 request(s): 1 activated",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
}
