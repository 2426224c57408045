//! Which product the client claims to be: `--product NAME` looked up in kms-core's catalog,
//! or explicit ids. Adds what the CLI needs on top of [`kms_core::catalog`]: defaults, and
//! close matches for a name the catalog does not know.

use kms_core::catalog::{self as core_catalog, NamedEntry};
use kms_wire::Guid;
use kms_wire::kms::ProtocolVersion;

use crate::cli::ProductArgs;

/// The product used when neither `--product` nor `--kms-id` is given.
pub const DEFAULT_PRODUCT: &str = "Windows 11 Enterprise";

/// Required client count sent with raw ids when `--required-count` is not given.
pub const DEFAULT_RAW_REQUIRED_COUNT: u32 = 25;

/// The identity a client request carries, resolved from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductSelection {
    /// Display name: the catalog edition or product group, or `custom ids`.
    pub name: String,
    /// The product group's name, when known.
    pub group: Option<String>,
    /// Application id.
    pub application_id: Guid,
    /// KMS counted id (product group).
    pub kms_counted_id: Guid,
    /// SKU (activation) id.
    pub sku_id: Guid,
    /// Required client count N.
    pub required_client_count: u32,
    /// The protocol version the product's clients use.
    pub default_protocol: ProtocolVersion,
    /// Whether the product is a Windows Server edition (for plausible workstation names).
    pub is_server: bool,
}

/// Why a product selection failed (a usage error: exit code 64).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// The name is not in the catalog.
    #[error("unknown product {query:?}{}", suggestion_text(.suggestions))]
    UnknownProduct {
        /// The name asked for.
        query: String,
        /// Close matches, best first (at most [`MAX_SUGGESTIONS`]).
        suggestions: Vec<String>,
    },
}

fn suggestion_text(s: &[String]) -> String {
    if s.is_empty() {
        "; no similar names in the catalog".to_string()
    } else {
        format!("; did you mean: {}", s.join(", "))
    }
}

/// At most this many close matches are suggested.
pub const MAX_SUGGESTIONS: usize = 6;

/// Resolve the product flags into a [`ProductSelection`].
pub fn resolve(args: &ProductArgs) -> Result<ProductSelection, CatalogError> {
    if let (Some(app), Some(kms)) = (args.app_id, args.kms_id) {
        let known = core_catalog::product(kms);
        return Ok(ProductSelection {
            name: "custom ids".to_string(),
            group: known.map(|p| p.name.to_string()),
            application_id: app,
            kms_counted_id: kms,
            sku_id: args.sku_id.unwrap_or(Guid::NIL),
            required_client_count: args
                .required_count
                .or(known.map(|p| p.required_client_count))
                .unwrap_or(DEFAULT_RAW_REQUIRED_COUNT),
            default_protocol: known
                .and_then(|p| protocol_from_major(p.default_protocol))
                .unwrap_or(ProtocolVersion::V6),
            is_server: known.is_some_and(|p| p.name.contains("Server")),
        });
    }
    let query = args.product.as_deref().unwrap_or(DEFAULT_PRODUCT);
    let mut sel = lookup(query)?;
    if let Some(n) = args.required_count {
        sel.required_client_count = n;
    }
    Ok(sel)
}

fn protocol_from_major(major: u16) -> Option<ProtocolVersion> {
    ProtocolVersion::from_major_minor(major, 0)
}

/// Look a product up by name (edition first, then product group; case-insensitive).
pub fn lookup(query: &str) -> Result<ProductSelection, CatalogError> {
    let entry = core_catalog::find_by_name(query).ok_or_else(|| CatalogError::UnknownProduct {
        query: query.to_string(),
        suggestions: suggestions(query),
    })?;
    let product = entry.product();
    let (name, sku_id, application_id, kms_counted_id) = match entry {
        NamedEntry::Sku(s) => (s.edition, s.sku_id, s.application_id, s.kms_counted_id),
        NamedEntry::Product(p) => (
            p.name,
            entry.sku().map_or(Guid::NIL, |s| s.sku_id),
            p.application_id,
            p.kms_counted_id,
        ),
    };
    Ok(ProductSelection {
        name: name.to_string(),
        group: product.map(|p| p.name.to_string()),
        application_id,
        kms_counted_id,
        sku_id,
        required_client_count: product
            .map_or(DEFAULT_RAW_REQUIRED_COUNT, |p| p.required_client_count),
        default_protocol: product
            .and_then(|p| protocol_from_major(p.default_protocol))
            .unwrap_or(ProtocolVersion::V6),
        is_server: name.contains("Server") || product.is_some_and(|p| p.name.contains("Server")),
    })
}

/// Every name `--product` accepts: editions, then product groups.
pub fn names() -> impl Iterator<Item = &'static str> {
    core_catalog::skus()
        .iter()
        .map(|s| s.edition)
        .chain(core_catalog::products().iter().map(|p| p.name))
}

/// Catalog names close to `query`, best first: names sharing the most words with the query
/// (a `10/11`-style word counts for each alternative), then the smallest edit distance.
pub fn suggestions(query: &str) -> Vec<String> {
    let q = normalize(query);
    let q_words: Vec<&str> = q.split(' ').filter(|w| !w.is_empty()).collect();
    if q_words.is_empty() {
        return Vec::new();
    }
    let mut scored: Vec<(usize, usize, &'static str)> = Vec::new();
    for name in names() {
        let n = normalize(name);
        let shared = q_words
            .iter()
            .filter(|qw| {
                n.split(' ')
                    .any(|nw| nw == **qw || nw.split('/').any(|alt| alt == **qw))
            })
            .count();
        let dist = levenshtein(&q, &n);
        let close = dist <= (q.chars().count() / 4).max(2);
        // Require most of the query's words, or a near-identical spelling.
        if close || shared * 2 > q_words.len() {
            scored.push((shared, dist, name));
        }
    }
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(b.2)));
    let mut out: Vec<String> = Vec::new();
    for (_, _, name) in scored {
        if !out.iter().any(|o| o == name) {
            out.push(name.to_string());
        }
        if out.len() == MAX_SUGGESTIONS {
            break;
        }
    }
    out
}

fn normalize(s: &str) -> String {
    s.split_whitespace()
        .map(|w| w.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Levenshtein distance over characters.
fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("same", "same"), 0);
    }
}
