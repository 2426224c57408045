//! The answers as `dig` (BIND's client) sees them — skipped, saying so, when dig is absent.

use std::process::Command;

use crate::harness::*;

fn dig_available() -> bool {
    Command::new("dig")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn dig(args: Vec<String>) -> String {
    let out = tokio::task::spawn_blocking(move || {
        Command::new("dig").args(&args).output().expect("dig runs")
    })
    .await
    .unwrap();
    assert!(out.status.success(), "dig failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn dig_short_srv_over_udp_and_tcp() {
    if !dig_available() {
        eprintln!(
            "SKIPPED dig_short_srv_over_udp_and_tcp: `dig` is not installed \
             (Debian: apt-get install dnsutils)"
        );
        return;
    }
    let server = TestServer::start(three_nodes(), cfg()).await;
    let port = server.udp.port().to_string();
    let tcp_port = server.tcp.port().to_string();
    let base = |port: &str, extra: &[&str]| {
        let mut a: Vec<String> = vec![
            "@127.0.0.1".into(),
            "-p".into(),
            port.into(),
            "+time=2".into(),
            "+tries=1".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let out = dig(base(&port, &["+short", "SRV", SRV_NAME])).await;
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "0 100 1688 kms1.kms.example.com.",
            "0 100 1688 kms2.kms.example.com.",
            "0 100 1688 kms3.kms.example.com.",
        ],
        "dig output: {out}"
    );
    let out = dig(base(&port, &["+short", "A", "kms1.kms.example.com"])).await;
    assert_eq!(out.trim(), "127.0.0.11");
    // The full answer shows the aa flag.
    let out = dig(base(&port, &["SRV", SRV_NAME])).await;
    assert!(out.contains(" aa"), "aa flag in: {out}");
    // A refused name.
    let out = dig(base(&port, &["A", "www.example.org"])).await;
    assert!(out.contains("status: REFUSED"), "{out}");
    // Over TCP (the listener has its own port in tests).
    let out = dig(base(&tcp_port, &["+tcp", "+short", "SOA", ZONE])).await;
    assert!(
        out.starts_with("kms1.kms.example.com. hostmaster.kms.example.com. "),
        "{out}"
    );
    server.stop().await.unwrap();
}
