//! Shared helpers: locating and loading the vector files.

#![allow(dead_code)]

use std::path::PathBuf;

/// `testdata/kms-vectors` at the workspace root (a copy of `shared/kms/vectors`).
pub fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/kms-vectors")
}

/// Parse a JSON vector file relative to [`vectors_dir`].
pub fn load_json(rel: &str) -> serde_json::Value {
    let path = vectors_dir().join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// Every file in `captured/`, sorted, as (stem, parsed JSON).
pub fn captured() -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    let dir = vectors_dir().join("captured");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    entries.sort();
    for p in entries {
        let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
        let rel = format!("captured/{stem}.json");
        out.push((stem, load_json(&rel)));
    }
    assert_eq!(out.len(), 25, "expected the 25 captured conversations");
    out
}

/// Decode lowercase hex.
pub fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex in vector: {e}"))
}
