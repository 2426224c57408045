//! Product lookup through kms-core's catalog, defaults and close matches.

use kms_wire::kms::ProtocolVersion;
use kmsctl::catalog::{self, CatalogError, MAX_SUGGESTIONS};
use kmsctl::cli::ProductArgs;

fn by_name(name: &str) -> ProductArgs {
    ProductArgs {
        product: Some(name.to_string()),
        ..ProductArgs::default()
    }
}

#[test]
fn names_resolve_case_insensitively() {
    let w = catalog::resolve(&by_name("windows 11 ENTERPRISE")).unwrap();
    assert_eq!(w.name, "Windows 10/11 Enterprise");
    assert_eq!(
        w.kms_counted_id.to_string(),
        "58e2134f-8e11-4d17-9cb2-91069c151148"
    );
    assert_eq!(
        w.application_id.to_string(),
        "55c92734-d682-4d71-983e-d6ec3f16059f"
    );
    assert_eq!(w.sku_id.to_string(), "73111121-5638-40f6-bc11-f1d7b0d64300");
    assert_eq!(w.required_client_count, 25);
    assert_eq!(w.default_protocol, ProtocolVersion::V6);
    assert!(!w.is_server);

    let o = catalog::resolve(&by_name("Office Professional Plus 2019")).unwrap();
    assert_eq!(
        o.application_id.to_string(),
        "0ff1ce15-a989-479d-af46-f275c6370663"
    );
    assert_eq!(
        o.kms_counted_id.to_string(),
        "617d9eb1-ef36-4f82-86e0-a65ae07b96c6"
    );
    assert_eq!(o.required_client_count, 5);
    assert_eq!(o.group.as_deref(), Some("Office 2019"));

    let s = catalog::resolve(&by_name("Windows Server 2022 Datacenter")).unwrap();
    assert_eq!(
        s.kms_counted_id.to_string(),
        "b74263e4-0f92-46c6-bcf8-c11d5efe2959"
    );
    assert_eq!(s.required_client_count, 5);
    assert!(s.is_server);

    let old = catalog::resolve(&by_name("Windows 7")).unwrap();
    assert_eq!(old.default_protocol, ProtocolVersion::V4);
    let o13 = catalog::resolve(&by_name("office 2013")).unwrap();
    assert_eq!(o13.default_protocol, ProtocolVersion::V5);
}

#[test]
fn default_product_and_required_count_override() {
    let d = catalog::resolve(&ProductArgs::default()).unwrap();
    assert_eq!(d.name, "Windows 10/11 Enterprise");
    let mut args = by_name("Windows Server 2022 Datacenter");
    args.required_count = Some(1001);
    assert_eq!(catalog::resolve(&args).unwrap().required_client_count, 1001);
}

#[test]
fn raw_ids() {
    let known = ProductArgs {
        app_id: Some("55c92734-d682-4d71-983e-d6ec3f16059f".parse().unwrap()),
        kms_id: Some("b74263e4-0f92-46c6-bcf8-c11d5efe2959".parse().unwrap()),
        ..ProductArgs::default()
    };
    let s = catalog::resolve(&known).unwrap();
    assert_eq!(s.name, "custom ids");
    assert_eq!(s.group.as_deref(), Some("Windows Server 2022"));
    assert_eq!(
        s.required_client_count, 5,
        "taken from the known product group"
    );
    assert!(s.sku_id.is_nil());

    let unknown = ProductArgs {
        app_id: Some("55c92734-d682-4d71-983e-d6ec3f16059f".parse().unwrap()),
        kms_id: Some("11111111-2222-4333-8444-555555555555".parse().unwrap()),
        sku_id: Some("ef6cfc9f-8c5d-44ac-9aad-de6a2ea0ae03".parse().unwrap()),
        required_count: None,
        product: None,
    };
    let s = catalog::resolve(&unknown).unwrap();
    assert_eq!(s.group, None);
    assert_eq!(s.required_client_count, catalog::DEFAULT_RAW_REQUIRED_COUNT);
    assert_eq!(s.default_protocol, ProtocolVersion::V6);
    assert_eq!(s.sku_id.to_string(), "ef6cfc9f-8c5d-44ac-9aad-de6a2ea0ae03");
}

#[test]
fn unknown_names_list_close_matches() {
    let err = catalog::resolve(&by_name("Windows 11 Enterprize")).unwrap_err();
    let CatalogError::UnknownProduct { query, suggestions } = &err;
    assert_eq!(query, "Windows 11 Enterprize");
    assert!(!suggestions.is_empty() && suggestions.len() <= MAX_SUGGESTIONS);
    assert_eq!(
        suggestions[0], "Windows 10/11 Enterprise",
        "{suggestions:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("unknown product") && msg.contains("did you mean: Windows 10/11 Enterprise")
    );

    let err = catalog::resolve(&by_name("office profesional plus 2019")).unwrap_err();
    let CatalogError::UnknownProduct { suggestions, .. } = &err;
    assert!(
        suggestions
            .iter()
            .any(|s| s == "Office Professional Plus 2019"),
        "{suggestions:?}"
    );

    let err = catalog::resolve(&by_name("Server 2022 Datacenter")).unwrap_err();
    let CatalogError::UnknownProduct { suggestions, .. } = &err;
    assert!(
        suggestions
            .iter()
            .any(|s| s == "Windows Server 2022 Datacenter"),
        "{suggestions:?}"
    );

    let err = catalog::resolve(&by_name("zzzz qqqq")).unwrap_err();
    let CatalogError::UnknownProduct { suggestions, .. } = &err;
    assert!(suggestions.is_empty());
    assert!(err.to_string().contains("no similar names"));
}

#[test]
fn every_catalog_name_resolves() {
    let mut n = 0;
    for name in catalog::names() {
        let sel = catalog::lookup(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!sel.kms_counted_id.is_nil(), "{name}");
        n += 1;
    }
    assert!(n > 250);
}
