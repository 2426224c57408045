//! `kmsctl products`: the offline catalog listing (editions with GVLKs, product groups), its
//! filter, its JSON shapes and its exit codes. Expected ids and counts are read from
//! `kms_core::catalog`, not typed in.

use std::process::Output;

use clap::Parser;
use kms_core::catalog::{self as core_catalog, Application};
use kmsctl::cli::{Cli, Command};
use kmsctl::exit::ExitClass;
use kmsctl::products::{self, ProductsArgs};
use serde_json::Value;

const EDITION_KEYS: &[&str] = &[
    "application",
    "application_id",
    "edition",
    "gvlk",
    "gvlk_source",
    "kms_counted_id",
    "note",
    "product_group",
    "required_client_count",
    "sku_id",
];

const GROUP_KEYS: &[&str] = &[
    "application",
    "application_id",
    "kms_counted_id",
    "name",
    "preview",
    "required_client_count",
    "retail",
];

/// Run `kmsctl <args>` in-process: (exit class, stdout, stderr).
fn run(args: &[&str]) -> (ExitClass, String, String) {
    let cli = Cli::try_parse_from(std::iter::once("kmsctl").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let Command::Products(p) = &cli.command else {
        panic!("not products: {:?}", cli.command);
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let class = products::run(p, cli.output, &mut out, &mut err).unwrap();
    (
        class,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

/// Run `kmsctl <args> -o json` in-process: (exit class, the parsed array).
fn run_json(args: &[&str]) -> (ExitClass, Vec<Value>) {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let (class, out, _) = run(&all);
    let v: Value = serde_json::from_str(&out).expect("stdout is one JSON document");
    (class, v.as_array().expect("a JSON array").clone())
}

fn binary(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kmsctl"))
        .args(args)
        .output()
        .unwrap()
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

/// `XXXXX-XXXXX-XXXXX-XXXXX-XXXXX`, upper-case letters and digits.
fn is_5x5(key: &str) -> bool {
    let parts: Vec<&str> = key.split('-').collect();
    parts.len() == 5
        && parts.iter().all(|p| {
            p.len() == 5
                && p.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        })
}

#[test]
fn windows_11_enterprise_prints_its_gvlk() {
    let sku = core_catalog::find_sku_by_name("Windows 11 Enterprise").unwrap();
    assert_eq!(sku.gvlk, Some("NPPR9-FWDCX-D2C8J-H872K-2YT43"));

    let out = binary(&["products", "Windows 11 Enterprise"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("NPPR9-FWDCX-D2C8J-H872K-2YT43"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.starts_with("Windows 10/11 Enterprise "), "{line}");
    assert!(line.contains(sku.product().unwrap().name), "{line}");
    assert!(
        line.contains(" Windows ") && line.contains(" 25 "),
        "{line}"
    );
    assert!(
        !line.ends_with('*'),
        "a Microsoft key is not marked: {line}"
    );
    let header = text.lines().next().unwrap();
    for col in ["EDITION", "PRODUCT GROUP", "APPLICATION", "N", "GVLK"] {
        assert!(header.contains(col), "{header}");
    }

    // Unquoted words are joined; case does not matter.
    let (class, out, _) = run(&["products", "windows", "11", "ENTERPRISE"]);
    assert_eq!(class, ExitClass::Success);
    assert!(out.contains("NPPR9-FWDCX-D2C8J-H872K-2YT43"), "{out}");
}

#[test]
fn json_lists_every_edition_with_documented_fields() {
    let (class, rows) = run_json(&["products"]);
    assert_eq!(class, ExitClass::Success);
    assert_eq!(rows.len(), core_catalog::skus().len());
    let mut microsoft = 0;
    for row in &rows {
        assert_eq!(keys(row), EDITION_KEYS, "{row}");
        let sku_id: kms_wire::Guid = row["sku_id"].as_str().unwrap().parse().unwrap();
        let sku = core_catalog::sku(sku_id).expect("sku_id is in the catalog");
        let group = sku.product().unwrap();
        assert_eq!(row["edition"], sku.edition);
        assert_eq!(row["product_group"], group.name);
        assert_eq!(row["kms_counted_id"], group.kms_counted_id.to_string());
        assert_eq!(row["application_id"], sku.application_id.to_string());
        assert_eq!(row["required_client_count"], group.required_client_count);
        let app = match group.application {
            Application::Windows => "windows",
            Application::Office2010 => "office2010",
            Application::Office2013Plus => "office2013plus",
        };
        assert_eq!(row["application"], app);
        assert_eq!(row["note"].as_str(), sku.gvlk_note);
        match row["gvlk_source"].as_str() {
            Some("microsoft") => {
                microsoft += 1;
                let key = row["gvlk"].as_str().unwrap();
                assert!(is_5x5(key), "{row}");
                assert_eq!(Some(key), sku.gvlk);
            }
            Some("other") => {
                assert!(sku.gvlk.is_none());
                let key = row["gvlk"].as_str().unwrap();
                assert!(is_5x5(key), "{row}");
                assert_eq!(Some(key), sku.gvlk_other_source);
            }
            None => {
                assert!(
                    row["gvlk"].is_null() && row["gvlk_source"].is_null(),
                    "{row}"
                );
                assert_eq!(sku.any_gvlk(), None);
            }
            Some(other) => panic!("gvlk_source {other:?}"),
        }
    }
    assert_eq!(
        microsoft,
        core_catalog::skus()
            .iter()
            .filter(|s| s.gvlk.is_some())
            .count()
    );
    assert!(microsoft > 50);

    // Sorted: applications in order (Windows, Office 2010, Office 2013+).
    let order: Vec<&str> = rows
        .iter()
        .map(|r| r["application"].as_str().unwrap())
        .collect();
    let first = |a: &str| order.iter().position(|x| *x == a).unwrap();
    let last = |a: &str| order.iter().rposition(|x| *x == a).unwrap();
    assert!(last("windows") < first("office2010"));
    assert!(last("office2010") < first("office2013plus"));
}

#[test]
fn filter_matches_edition_or_group_names() {
    let (class, rows) = run_json(&["products", "office 2019"]);
    assert_eq!(class, ExitClass::Success);
    let o2019 = core_catalog::find_product_by_name("Office 2019").unwrap();
    // Every edition of the group, and nothing that names neither.
    for sku in o2019.skus() {
        assert!(
            rows.iter().any(|r| r["sku_id"] == sku.sku_id.to_string()),
            "{} missing",
            sku.edition
        );
    }
    for r in &rows {
        let edition = r["edition"].as_str().unwrap();
        let group = r["product_group"].as_str().unwrap();
        assert!(
            products::name_contains(edition, "office 2019")
                || products::name_contains(group, "office 2019"),
            "{r}"
        );
    }
    let pro_plus = core_catalog::find_sku_by_name("Office Professional Plus 2019").unwrap();
    let row = rows
        .iter()
        .find(|r| r["edition"] == pro_plus.edition)
        .unwrap();
    assert_eq!(row["gvlk"].as_str(), pro_plus.any_gvlk());
    assert_eq!(row["required_client_count"], 5);

    // `2019/2021` in the data reads as 2021 too.
    let (_, rows) = run_json(&["products", "Enterprise LTSC 2021"]);
    let ltsc = core_catalog::find_sku_by_name("Windows 10 Enterprise LTSC 2021").unwrap();
    assert!(rows.iter().any(|r| r["edition"] == ltsc.edition));
}

#[test]
fn other_source_keys_are_marked_and_explained() {
    let sku = core_catalog::skus()
        .iter()
        .find(|s| s.gvlk.is_none() && s.gvlk_other_source.is_some())
        .expect("the catalog has keys from another source");
    let key = sku.gvlk_other_source.unwrap();
    let (class, out, _) = run(&["products", sku.edition]);
    assert_eq!(class, ExitClass::Success);
    let line = out.lines().find(|l| l.contains(key)).unwrap();
    assert!(line.ends_with(&format!("{key} *")), "{line}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("* ") && l.contains("not published by Microsoft")),
        "{out}"
    );

    // No footnote when every key shown is Microsoft's.
    let filter = "Windows 10/11 Pro Education";
    let (_, rows) = run_json(&["products", filter]);
    assert!(!rows.is_empty());
    assert!(
        rows.iter().all(|r| r["gvlk_source"] == "microsoft"),
        "{rows:?}"
    );
    let (_, out, _) = run(&["products", filter]);
    assert!(
        !out.contains('*') && !out.contains("not published"),
        "{out}"
    );
    assert_eq!(
        out.lines().count(),
        rows.len() + 1,
        "header and rows only: {out}"
    );
}

#[test]
fn groups_list_counted_ids_with_n() {
    let (class, out, _) = run(&["products", "--groups"]);
    assert_eq!(class, ExitClass::Success);
    let w = core_catalog::find_product_by_name("Windows 10/11 2015 (Volume)").unwrap();
    let line = out.lines().find(|l| l.starts_with(w.name)).unwrap();
    assert!(line.contains(" 25 "), "{line}");
    assert!(line.contains(&w.kms_counted_id.to_string()), "{line}");
    assert!(line.contains("volume"), "{line}");
    let o = core_catalog::find_product_by_name("Office 2019").unwrap();
    let line = out.lines().find(|l| l.starts_with("Office 2019 ")).unwrap();
    assert!(
        line.contains(" 5 ") && line.contains("Office 2013+"),
        "{line}"
    );
    assert!(line.contains(&o.kms_counted_id.to_string()), "{line}");
    // Editions are not listed.
    assert!(!out.contains("NPPR9-FWDCX-D2C8J-H872K-2YT43"));

    let (class, rows) = run_json(&["products", "--groups"]);
    assert_eq!(class, ExitClass::Success);
    assert_eq!(rows.len(), core_catalog::products().len());
    for row in &rows {
        assert_eq!(keys(row), GROUP_KEYS, "{row}");
        let id: kms_wire::Guid = row["kms_counted_id"].as_str().unwrap().parse().unwrap();
        let p = core_catalog::product(id).expect("kms_counted_id is in the catalog");
        assert_eq!(row["name"], p.name);
        assert_eq!(row["application_id"], p.application_id.to_string());
        assert_eq!(row["required_client_count"], p.required_client_count);
        assert_eq!(row["retail"], p.is_retail);
        assert_eq!(row["preview"], p.is_preview);
        if p.application != Application::Windows {
            assert_eq!(row["required_client_count"], 5, "Office: {row}");
        }
    }
    let w = rows.iter().find(|r| r["name"] == w.name).unwrap();
    assert_eq!(w["required_client_count"], 25);
    assert_eq!(w["application"], "windows");
    assert_eq!(
        (w["retail"].as_bool(), w["preview"].as_bool()),
        (Some(false), Some(false))
    );
    assert!(rows.iter().any(|r| r["retail"] == true));
    assert!(rows.iter().any(|r| r["preview"] == true));

    // The filter applies to group names.
    let (_, rows) = run_json(&["products", "--groups", "office"]);
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r["application"] != "windows"));
    assert_eq!(
        rows.len(),
        core_catalog::products()
            .iter()
            .filter(|p| p.name.starts_with("Office"))
            .count()
    );
}

#[test]
fn no_match_exits_1_with_a_hint() {
    let (class, out, err) = run(&["products", "Windows 12 Enterprise"]);
    assert_eq!(class, ExitClass::Refused);
    assert_eq!(class.code(), 1);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("no edition or product group matches \"Windows 12 Enterprise\""),
        "{err}"
    );
    assert!(
        err.contains("Windows 10/11 Enterprise"),
        "close names: {err}"
    );

    let (class, rows) = run_json(&["products", "no such product"]);
    assert_eq!(class, ExitClass::Refused);
    assert!(rows.is_empty(), "JSON stays parseable: []");
    let (class, _, err) = run(&["products", "--groups", "Windows 12"]);
    assert_eq!(class, ExitClass::Refused);
    assert!(err.contains("no product group matches"), "{err}");

    // The binary: exit 1, nothing on stdout, the hint on stderr.
    let out = binary(&["products", "Windows 12 Enterprise"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("kmsctl: no edition"));
    let out = binary(&["products", "-o", "json", "zzz"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    // A bad flag is a usage error, as everywhere.
    assert_eq!(binary(&["products", "--bogus"]).status.code(), Some(64));
}

#[test]
fn products_runs_through_execute_without_a_server() {
    // `execute` routes `products` offline: --server points nowhere and is never dialled.
    let cli = Cli::try_parse_from([
        "kmsctl",
        "--server",
        "192.0.2.1:1",
        "products",
        "Windows Server 2025 Datacenter",
    ])
    .unwrap();
    let mut out = Vec::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let class = rt.block_on(kmsctl::execute(&cli, &mut out)).unwrap();
    assert_eq!(class, ExitClass::Success);
    let s = core_catalog::find_sku_by_name("Windows Server 2025 Datacenter").unwrap();
    assert!(String::from_utf8(out).unwrap().contains(s.gvlk.unwrap()));
}

#[test]
fn args_parse() {
    let cli = Cli::try_parse_from(["kmsctl", "products"]).unwrap();
    let Command::Products(p) = cli.command else {
        panic!()
    };
    assert_eq!(
        p,
        ProductsArgs {
            filter: vec![],
            groups: false
        }
    );
    let cli = Cli::try_parse_from(["kmsctl", "products", "--groups", "Windows", "10"]).unwrap();
    let Command::Products(p) = cli.command else {
        panic!()
    };
    assert!(p.groups);
    assert_eq!(p.filter_text(), "Windows 10");
}
