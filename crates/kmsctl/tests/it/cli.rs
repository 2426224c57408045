//! Command-line parsing: every flag, defaults, conflicts, help examples, exit codes.

use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use kmsctl::bench::Limit;
use kmsctl::cli::{BenchMode, BenchProtocol, Cli, Command, OutputFormat, Protocol};
use kmsctl::client::KmsAddr;

use crate::harness::{activate_args, bench_args};

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("kmsctl").chain(args.iter().copied()))
}

fn err_kind(args: &[&str]) -> ErrorKind {
    parse(args).expect_err("must be rejected").kind()
}

#[test]
fn activate_defaults() {
    let a = activate_args(&[]);
    assert_eq!(a.kms.to_string(), "127.0.0.1:1688");
    assert_eq!(a.product.product, None);
    assert_eq!(a.product.app_id, None);
    assert_eq!(a.protocol, None);
    assert_eq!(a.cmid, None);
    assert_eq!(a.workstation, None);
    assert!(!a.vm);
    assert_eq!(a.license_status, 2);
    assert_eq!(a.binding_expiration, 43200);
    assert_eq!(a.machines, 1);
    assert_eq!(a.requests, 1);
    assert!(a.rpc.ndr64_enabled());
    assert!(a.rpc.btfn_enabled());
    assert!(!a.new_connection);
    assert_eq!(a.time_offset_secs, 0);
    assert_eq!(a.timeout, Duration::from_secs(5));
    assert_eq!(parse(&["activate"]).unwrap().output, OutputFormat::Text);
}

#[test]
fn activate_every_flag() {
    let a = activate_args(&[
        "--kms",
        "[::1]:11688",
        "--product",
        "Windows Server 2022 Datacenter",
        "--required-count",
        "7",
        "--protocol",
        "5",
        "--cmid",
        "3f2504e0-4f89-41d3-9a0c-0305e82c3301",
        "--workstation",
        "ws01",
        "--vm",
        "--license-status",
        "1",
        "--binding-expiration",
        "0",
        "--requests",
        "4",
        "--no-ndr64",
        "--no-btfn",
        "--new-connection",
        "--time-offset-secs",
        "-18000",
        "--timeout",
        "0.5",
    ]);
    assert_eq!(
        a.kms,
        KmsAddr {
            host: "::1".into(),
            port: 11688
        }
    );
    assert_eq!(
        a.product.product.as_deref(),
        Some("Windows Server 2022 Datacenter")
    );
    assert_eq!(a.product.required_count, Some(7));
    assert_eq!(a.protocol, Some(Protocol::V5));
    assert_eq!(
        a.cmid.unwrap().to_string(),
        "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
    );
    assert_eq!(a.workstation.as_deref(), Some("ws01"));
    assert!(a.vm);
    assert_eq!(a.license_status, 1);
    assert_eq!(a.binding_expiration, 0);
    assert_eq!(a.requests, 4);
    assert!(!a.rpc.ndr64_enabled());
    assert!(!a.rpc.btfn_enabled());
    assert!(a.new_connection);
    assert_eq!(a.time_offset_secs, -18000);
    assert_eq!(a.timeout, Duration::from_millis(500));

    let a = activate_args(&[
        "--app-id",
        "55c92734-d682-4d71-983e-d6ec3f16059f",
        "--kms-id",
        "b74263e4-0f92-46c6-bcf8-c11d5efe2959",
        "--sku-id",
        "ef6cfc9f-8c5d-44ac-9aad-de6a2ea0ae03",
        "--machines",
        "25",
        "--protocol",
        "4",
    ]);
    assert_eq!(
        a.product.app_id.unwrap().to_string(),
        "55c92734-d682-4d71-983e-d6ec3f16059f"
    );
    assert_eq!(
        a.product.kms_id.unwrap().to_string(),
        "b74263e4-0f92-46c6-bcf8-c11d5efe2959"
    );
    assert!(a.product.sku_id.is_some());
    assert_eq!(a.machines, 25);
    assert_eq!(a.protocol, Some(Protocol::V4));
    assert_eq!(
        activate_args(&["--protocol", "6"]).protocol,
        Some(Protocol::V6)
    );
}

#[test]
fn ndr64_and_btfn_switches_last_one_wins() {
    assert!(
        activate_args(&["--no-ndr64", "--ndr64"])
            .rpc
            .ndr64_enabled()
    );
    assert!(
        !activate_args(&["--ndr64", "--no-ndr64"])
            .rpc
            .ndr64_enabled()
    );
    assert!(activate_args(&["--no-btfn", "--btfn"]).rpc.btfn_enabled());
    assert!(!activate_args(&["--btfn", "--no-btfn"]).rpc.btfn_enabled());
}

#[test]
fn output_is_global() {
    assert_eq!(
        parse(&["-o", "json", "activate"]).unwrap().output,
        OutputFormat::Json
    );
    assert_eq!(
        parse(&["activate", "-o", "json"]).unwrap().output,
        OutputFormat::Json
    );
    assert_eq!(
        parse(&["bench", "--output", "json"]).unwrap().output,
        OutputFormat::Json
    );
    assert_eq!(
        parse(&["bench", "--output", "text"]).unwrap().output,
        OutputFormat::Text
    );
    assert_eq!(
        err_kind(&["-o", "yaml", "activate"]),
        ErrorKind::InvalidValue
    );
}

#[test]
fn activate_rejects_bad_usage() {
    use ErrorKind::*;
    let cases: &[(&[&str], ErrorKind)] = &[
        (
            &[
                "activate",
                "--product",
                "x",
                "--kms-id",
                "b74263e4-0f92-46c6-bcf8-c11d5efe2959",
            ],
            ArgumentConflict,
        ),
        (
            &[
                "activate",
                "--kms-id",
                "b74263e4-0f92-46c6-bcf8-c11d5efe2959",
            ],
            MissingRequiredArgument,
        ),
        (
            &[
                "activate",
                "--app-id",
                "55c92734-d682-4d71-983e-d6ec3f16059f",
            ],
            MissingRequiredArgument,
        ),
        (
            &[
                "activate",
                "--cmid",
                "3f2504e0-4f89-41d3-9a0c-0305e82c3301",
                "--machines",
                "2",
            ],
            ArgumentConflict,
        ),
        (&["activate", "--cmid", "not-a-guid"], ValueValidation),
        (&["activate", "--protocol", "7"], InvalidValue),
        (&["activate", "--protocol", "mix"], InvalidValue),
        (&["activate", "--machines", "0"], ValueValidation),
        (&["activate", "--requests", "0"], ValueValidation),
        (&["activate", "--kms", "::1:1688"], ValueValidation),
        (&["activate", "--kms", "host:0"], ValueValidation),
        (&["activate", "--kms", "host:99999"], ValueValidation),
        (&["activate", "--kms", ""], ValueValidation),
        (&["activate", "--timeout", "0"], ValueValidation),
        (&["activate", "--timeout", "soon"], ValueValidation),
        (&["activate", "--license-status", "-1"], UnknownArgument),
        (&["activate", "--bogus"], UnknownArgument),
        (&["frobnicate"], InvalidSubcommand),
    ];
    for (args, kind) in cases {
        assert_eq!(err_kind(args), *kind, "{args:?}");
    }
    let long = "x".repeat(64);
    assert_eq!(
        err_kind(&["activate", "--workstation", &long]),
        ValueValidation
    );
    assert!(parse(&["activate", "--workstation", &"x".repeat(63)]).is_ok());
}

#[test]
fn kms_addresses() {
    let ok = [
        ("127.0.0.1:1688", "127.0.0.1", 1688),
        ("kms.example.net:11688", "kms.example.net", 11688),
        ("kms.example.net", "kms.example.net", 1688),
        ("[::1]:1688", "::1", 1688),
        ("[fe80::1]", "fe80::1", 1688),
        ("10.0.0.1", "10.0.0.1", 1688),
    ];
    for (text, host, port) in ok {
        let a: KmsAddr = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!((a.host.as_str(), a.port), (host, port), "{text}");
    }
    assert_eq!(
        "[::1]:1688".parse::<KmsAddr>().unwrap().to_string(),
        "[::1]:1688"
    );
    for bad in [
        "",
        ":1688",
        "[::1",
        "[nothost]:1688",
        "[::1]1688",
        "a:b",
        "::1:1688",
        "::1",
        "h:65536",
        "a b:1",
    ] {
        assert!(bad.parse::<KmsAddr>().is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn ipv6_loopback_resolves_without_dns() {
    let a: KmsAddr = "[::1]:1688".parse().unwrap();
    assert_eq!(a.resolve().await.unwrap().to_string(), "[::1]:1688");
}

#[test]
fn bench_defaults() {
    let b = bench_args(&[]);
    assert_eq!(b.kms.to_string(), "127.0.0.1:1688");
    assert_eq!(b.concurrency, 16);
    assert_eq!(b.limit(), Limit::Duration(Duration::from_secs(10)));
    assert_eq!(b.protocol, None);
    assert_eq!(b.mode, BenchMode::Keepalive);
    assert_eq!(b.clients, 0);
    assert_eq!(b.product.product, None);
    assert!(b.rpc.ndr64_enabled());
    assert_eq!(b.timeout, Duration::from_secs(5));
}

#[test]
fn bench_every_flag() {
    let b = bench_args(&[
        "--kms",
        "kms1:1688",
        "--concurrency",
        "32",
        "--duration",
        "2.5",
        "--protocol",
        "mix",
        "--mode",
        "per-connection",
        "--clients",
        "500",
        "--product",
        "Office Professional Plus 2019",
        "--required-count",
        "3",
        "--no-ndr64",
        "--no-btfn",
        "--timeout",
        "1",
    ]);
    assert_eq!(b.kms.to_string(), "kms1:1688");
    assert_eq!(b.concurrency, 32);
    assert_eq!(b.limit(), Limit::Duration(Duration::from_millis(2500)));
    assert_eq!(b.protocol, Some(BenchProtocol::Mix));
    assert_eq!(b.mode, BenchMode::PerConnection);
    assert_eq!(b.clients, 500);
    assert_eq!(
        b.product.product.as_deref(),
        Some("Office Professional Plus 2019")
    );
    assert_eq!(b.product.required_count, Some(3));
    assert!(!b.rpc.ndr64_enabled());
    assert!(!b.rpc.btfn_enabled());
    assert_eq!(b.timeout, Duration::from_secs(1));

    let b = bench_args(&[
        "--requests",
        "1000",
        "-c",
        "2",
        "--protocol",
        "4",
        "--mode",
        "keepalive",
    ]);
    assert_eq!(b.limit(), Limit::Requests(1000));
    assert_eq!(b.concurrency, 2);
    assert_eq!(b.protocol, Some(BenchProtocol::V4));
    for (p, want) in [("5", BenchProtocol::V5), ("6", BenchProtocol::V6)] {
        assert_eq!(bench_args(&["--protocol", p]).protocol, Some(want));
    }
    let b = bench_args(&[
        "--app-id",
        "55c92734-d682-4d71-983e-d6ec3f16059f",
        "--kms-id",
        "b74263e4-0f92-46c6-bcf8-c11d5efe2959",
        "--sku-id",
        "ef6cfc9f-8c5d-44ac-9aad-de6a2ea0ae03",
    ]);
    assert!(b.product.kms_id.is_some() && b.product.sku_id.is_some());
}

#[test]
fn bench_rejects_bad_usage() {
    use ErrorKind::*;
    let cases: &[(&[&str], ErrorKind)] = &[
        (
            &["bench", "--duration", "5", "--requests", "10"],
            ArgumentConflict,
        ),
        (&["bench", "--concurrency", "0"], ValueValidation),
        (&["bench", "--concurrency", "5000"], ValueValidation),
        (&["bench", "--requests", "0"], ValueValidation),
        (&["bench", "--duration", "-1"], UnknownArgument),
        (&["bench", "--duration", "0"], ValueValidation),
        (&["bench", "--mode", "pipelined"], InvalidValue),
        (&["bench", "--protocol", "3"], InvalidValue),
        (&["bench", "--clients", "2000000"], ValueValidation),
    ];
    for (args, kind) in cases {
        assert_eq!(err_kind(args), *kind, "{args:?}");
    }
}

#[test]
fn completions_subcommand() {
    let cli = parse(&["completions", "bash"]).unwrap();
    assert!(matches!(cli.command, Command::Completions { .. }));
    assert_eq!(
        err_kind(&["completions", "cmd.exe"]),
        ErrorKind::InvalidValue
    );
}

/// Every top-level subcommand (see `every_subcommand_is_covered`).
const SUBCOMMANDS: &[&str] = &[
    "activate",
    "bench",
    "cert",
    "products",
    "status",
    "health",
    "member",
    "leader",
    "counts",
    "clients",
    "config",
    "identity",
    "backup",
    "events",
    "completions",
];

#[test]
fn every_subcommand_is_covered() {
    let cmd = Cli::command();
    let mut names: Vec<&str> = cmd
        .get_subcommands()
        .map(|c| c.get_name())
        .filter(|n| *n != "help")
        .collect();
    names.sort_unstable();
    let mut listed = SUBCOMMANDS.to_vec();
    listed.sort_unstable();
    assert_eq!(names, listed, "add new subcommands to SUBCOMMANDS");
}

/// The long help of `kmsctl <path…>`.
fn long_help(path: &[&str]) -> String {
    let mut cmd = Cli::command();
    cmd.build();
    let mut c = &mut cmd;
    for name in path {
        c = c
            .find_subcommand_mut(name)
            .unwrap_or_else(|| panic!("no subcommand {path:?}"));
    }
    c.render_long_help().to_string()
}

#[test]
fn every_help_has_an_example() {
    let top = long_help(&[]);
    assert!(
        top.contains("Examples:") && top.contains("kmsctl activate"),
        "{top}"
    );
    assert!(top.contains("kmsctl products "), "{top}");
    for sub in SUBCOMMANDS {
        let help = long_help(&[sub]);
        assert!(help.contains("Example"), "{sub}: {help}");
        assert!(help.contains(&format!("kmsctl {sub} ")), "{sub}: {help}");
        if *sub != "completions" {
            assert!(help.contains("Exit codes:"), "{sub}: {help}");
            assert!(help.contains("64"), "{sub}: {help}");
        }
    }
    // Nested subcommands (member add, cert show, …) have their own examples.
    let cmd = Cli::command();
    for group in cmd.get_subcommands().filter(|c| c.has_subcommands()) {
        for leaf in group.get_subcommands().filter(|c| c.get_name() != "help") {
            let path = [group.get_name(), leaf.get_name()];
            let help = long_help(&path);
            assert!(help.contains("Example"), "{path:?}: {help}");
            assert!(
                help.contains(&format!("kmsctl {} {} ", path[0], path[1]))
                    || help.contains(&format!("kmsctl {} {}\n", path[0], path[1])),
                "{path:?}: {help}"
            );
        }
    }
    for sub in ["activate", "bench", "products"] {
        let help = long_help(&[sub]);
        assert!(help.contains("JSON output"), "{sub}");
    }
    let products = long_help(&["products"]);
    assert!(
        products.contains("1   nothing matched FILTER"),
        "the no-match exit code is documented: {products}"
    );
    Cli::command().debug_assert();
}

/// The binary maps usage errors to 64 (not clap's 2, which means "invalid response" here) and
/// help to 0.
#[test]
fn binary_usage_exit_codes() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kmsctl"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["activate", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Examples:"));
    assert_eq!(run(&["--version"]).status.code(), Some(0));
    assert_eq!(run(&["activate", "--bogus"]).status.code(), Some(64));
    assert_eq!(run(&[]).status.code(), Some(64));
    let out = run(&["activate", "--product", "Windows 11 Enterprize"]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown product") && err.contains("Windows 10/11 Enterprise"),
        "{err}"
    );
    let out = run(&["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("kmsctl"));
}
