//! Statistics: the log-bucket histogram's percentile math and the bench counters.

use std::time::Duration;

use kmsctl::bench::histogram::SUB_BUCKET_BITS;
use kmsctl::bench::{BenchReport, BenchStats, Histogram, LatencySummary, ReportHeader, Sample};
use kmsctl::exit::ExitClass;
use rand::Rng;

/// Nearest-rank percentile over exact sorted samples.
fn exact(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

#[test]
fn empty_histogram_is_all_zero() {
    let h = Histogram::new();
    assert!(h.is_empty());
    assert_eq!(
        (h.count(), h.min(), h.max(), h.percentile(50.0)),
        (0, 0, 0, 0)
    );
    assert_eq!(h.mean(), 0.0);
    let s = LatencySummary::of(&h);
    assert_eq!((s.count, s.p50, s.p99, s.max), (0, 0, 0, 0));
}

#[test]
fn small_values_are_exact() {
    let mut h = Histogram::new();
    for v in 1..=100 {
        h.record(v);
    }
    assert_eq!(h.count(), 100);
    assert_eq!(h.percentile(50.0), 50);
    assert_eq!(h.percentile(90.0), 90);
    assert_eq!(h.percentile(99.0), 99);
    assert_eq!(h.percentile(100.0), 100);
    assert_eq!(h.percentile(0.0), 1);
    assert_eq!(h.percentile(0.5), 1);
    assert_eq!(h.percentile(1.0), 1);
    assert_eq!(h.percentile(1.5), 2);
    assert_eq!(h.min(), 1);
    assert_eq!(h.max(), 100);
    assert_eq!(h.mean(), 50.5);
    // Out-of-range percentiles clamp.
    assert_eq!(h.percentile(150.0), 100);
    assert_eq!(h.percentile(-3.0), 1);
}

#[test]
fn single_sample() {
    let mut h = Histogram::new();
    h.record(123_456);
    for p in [0.0, 50.0, 99.9, 100.0] {
        assert_eq!(h.percentile(p), 123_456, "clamped to the exact min/max");
    }
}

#[test]
fn large_values_within_bucket_precision_and_never_below() {
    let mut rng = rand::rng();
    let mut h = Histogram::new();
    let mut samples = Vec::new();
    for _ in 0..20_000 {
        // Log-uniform from 1 µs to ~100 s.
        let v = 10f64.powf(rng.random_range(0.0..8.0)) as u64;
        h.record(v);
        samples.push(v);
    }
    samples.sort_unstable();
    let tolerance = 1.0 / f64::from(1u32 << SUB_BUCKET_BITS);
    for p in [1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 99.0, 99.9, 100.0] {
        let want = exact(&samples, p);
        let got = h.percentile(p);
        assert!(got >= want, "p{p}: {got} < {want}");
        assert!(
            (got - want) as f64 <= want as f64 * tolerance,
            "p{p}: {got} vs {want}"
        );
    }
    assert_eq!(h.max(), *samples.last().unwrap());
    assert_eq!(h.min(), samples[0]);
    let mean = samples.iter().map(|&v| v as f64).sum::<f64>() / samples.len() as f64;
    assert!((h.mean() - mean).abs() < 1e-6 * mean);
}

#[test]
fn extreme_values() {
    let mut h = Histogram::new();
    h.record(0);
    h.record(u64::MAX);
    assert_eq!(h.percentile(50.0), 0);
    assert_eq!(h.percentile(100.0), u64::MAX);
}

#[test]
fn merge_equals_recording_everything_in_one() {
    let mut all = Histogram::new();
    let mut parts = vec![Histogram::new(), Histogram::new(), Histogram::new()];
    for v in 0..3000u64 {
        let x = v * v % 100_003;
        all.record(x);
        parts[(v % 3) as usize].record(x);
    }
    let mut merged = Histogram::new();
    for p in &parts {
        merged.merge(p);
    }
    assert_eq!(merged, all);
    assert_eq!(merged.percentile(99.0), all.percentile(99.0));
    // Merging an empty histogram changes nothing (min stays exact).
    merged.merge(&Histogram::new());
    assert_eq!(merged.min(), all.min());
}

#[test]
fn bench_stats_count_and_merge() {
    let mut a = BenchStats::default();
    a.record(&Sample::Success, Some(Duration::from_micros(100)));
    a.record(&Sample::Success, Some(Duration::from_micros(300)));
    a.record(
        &Sample::Refused(0xC004_F042),
        Some(Duration::from_micros(200)),
    );
    a.connections = 1;
    let mut b = BenchStats::default();
    b.record(
        &Sample::Invalid {
            reason: "verify: bad_hmac".into(),
        },
        Some(Duration::from_micros(400)),
    );
    b.record(
        &Sample::Connection {
            reason: "connect".into(),
        },
        None,
    );
    b.record(
        &Sample::Connection {
            reason: "connect".into(),
        },
        None,
    );
    b.connections = 2;
    assert_eq!(a.worst, ExitClass::Refused);
    assert_eq!(b.worst, ExitClass::Connection);
    a.merge(&b);
    assert_eq!(a.requests, 6);
    assert_eq!(a.successes, 2);
    assert_eq!(a.refusals, 1);
    assert_eq!(a.invalid_responses, 1);
    assert_eq!(a.connection_errors, 2);
    assert_eq!(a.errors(), 4);
    assert_eq!(a.connections, 3);
    assert_eq!(a.worst, ExitClass::Connection);
    assert_eq!(
        a.latency_us.count(),
        4,
        "no latency for requests without a reply"
    );
    let reasons: Vec<(&str, u64)> = a
        .errors_by_reason
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("connect", 2),
            ("hresult 0xC004F042", 1),
            ("verify: bad_hmac", 1)
        ]
    );

    let report = BenchReport::new(
        ReportHeader {
            kms: "kms:1688".into(),
            address: "10.0.0.1:1688".into(),
            mode: "keepalive".into(),
            protocol: "mix".into(),
            concurrency: 4,
            clients: 0,
        },
        &a,
        Duration::from_secs(2),
    );
    assert_eq!(report.throughput_rps, 3.0);
    assert_eq!(report.elapsed_secs, 2.0);
    assert_eq!(report.latency_us.min, 100);
    assert_eq!(report.latency_us.max, 400);
    assert_eq!(report.latency_us.p50, 200);
    assert_eq!(report.latency_us.mean, 250.0);
    assert_eq!(report.exit_class, ExitClass::Connection);
    let text = report.to_text();
    assert!(text.contains("3.0 req/s"), "{text}");
    assert!(text.contains("hresult 0xC004F042"), "{text}");
    assert!(text.contains("p99 400 µs"), "{text}");
}

#[test]
fn exit_class_order_and_codes() {
    assert_eq!(ExitClass::worst([]), ExitClass::Success);
    assert_eq!(
        ExitClass::worst([ExitClass::Refused, ExitClass::Success, ExitClass::Invalid]),
        ExitClass::Invalid
    );
    assert_eq!(
        ExitClass::worst([ExitClass::Invalid, ExitClass::Connection]),
        ExitClass::Connection
    );
    let codes: Vec<u8> = [
        ExitClass::Success,
        ExitClass::Refused,
        ExitClass::Invalid,
        ExitClass::Connection,
        ExitClass::Usage,
    ]
    .iter()
    .map(|c| c.code())
    .collect();
    assert_eq!(codes, vec![0, 1, 2, 3, 64]);
}
