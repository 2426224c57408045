//! `kmsctl products`: the product catalog compiled into kmsctl (`kms_core::catalog`), offline —
//! editions with their product group, application, required client count N and GVLK (the KMS
//! client setup key), or with `--groups` the product groups (KMS counted ids).
//!
//! Filtering: FILTER matches an edition when the edition name or its product group's name
//! contains it, ignoring case and repeated whitespace. A word written with alternatives in
//! the data (`10/11`, `2019/2021`) also reads as each alternative, so `Windows 11 Enterprise`
//! finds `Windows 10/11 Enterprise`.
//!
//! Order: application (Windows, Office 2010, Office 2013+), then product group, then edition,
//! names compared case-insensitively with digit runs as numbers (`Windows 8` < `Windows 10`).

use std::cmp::Ordering;
use std::io::Write;

use clap::Args;
use kms_core::Pool;
use kms_core::catalog::{self as core_catalog, Application, Product, Sku};
use serde_json::{Value, json};

use crate::admin::render::Table;
use crate::cli::OutputFormat;
use crate::exit::ExitClass;

/// The `after_help` of `kmsctl products`.
pub const PRODUCTS_HELP: &str = "\
Examples:
  kmsctl products \"Windows 11 Enterprise\"          # edition, product group, N, GVLK
  kmsctl products server 2022
  kmsctl products office -o json | jq -r '.[] | select(.gvlk) | \"\\(.edition)\\t\\(.gvlk)\"'
  kmsctl products --groups                         # product groups (KMS counted ids), N

Offline: reads the catalog compiled into kmsctl; no --server is contacted. FILTER (several
words are joined with spaces) matches editions whose edition or product group name contains
it, case-insensitively; a data word like `10/11` or `2019/2021` also reads as each alternative.
With --groups it matches product group names. Without FILTER everything is listed.

GVLK: the KMS client setup key (slmgr /ipk, ospp.vbs /inpkey). Keys published by Microsoft are
shown as is; keys known only from another source (py-kms's database) end in ` *`; `-` means no
key is known (retail editions have none: a KMS host refuses them).

JSON output (-o json): an array, one object per edition:
  {\"edition\", \"sku_id\", \"product_group\", \"kms_counted_id\",
   \"application\": \"windows\"|\"office2010\"|\"office2013plus\", \"application_id\",
   \"required_client_count\": n, \"gvlk\": \"XXXXX-XXXXX-XXXXX-XXXXX-XXXXX\"|null,
   \"gvlk_source\": \"microsoft\"|\"other\"|null, \"note\": \"…\"|null}
  with --groups, one object per product group:
  {\"name\", \"kms_counted_id\", \"application\", \"application_id\", \"required_client_count\": n,
   \"retail\": bool, \"preview\": bool}
  Nothing matched: [] (and exit 1).

Exit codes:
  0   at least one edition (or product group) matched
  1   nothing matched FILTER (like grep); a hint goes to stderr
  64  usage error (bad flag)";

/// `kmsctl products`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ProductsArgs {
    /// Only editions whose edition or product group name contains this (case-insensitive;
    /// several words are joined with spaces) [default: all].
    #[arg(value_name = "FILTER", num_args = 0..)]
    pub filter: Vec<String>,
    /// List product groups (KMS counted ids) instead of editions.
    #[arg(long)]
    pub groups: bool,
}

impl ProductsArgs {
    /// The filter words joined with single spaces (empty: everything).
    pub fn filter_text(&self) -> String {
        self.filter.join(" ")
    }
}

/// Where a GVLK comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GvlkSource {
    /// Published in Microsoft's documentation.
    Microsoft,
    /// Known only from another source (py-kms's database).
    Other,
}

impl GvlkSource {
    /// The JSON value: `microsoft` or `other`.
    pub const fn name(self) -> &'static str {
        match self {
            GvlkSource::Microsoft => "microsoft",
            GvlkSource::Other => "other",
        }
    }
}

/// One edition with what an operator needs to set a client up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EditionRow {
    /// The edition (SKU).
    pub sku: &'static Sku,
    /// Its product group, if in the catalog.
    pub product: Option<&'static Product>,
}

impl EditionRow {
    /// The application of the edition (by its application id, else its group's).
    pub fn application(&self) -> Option<Application> {
        Application::from_application_id(self.sku.application_id)
            .or(self.product.map(|p| p.application))
    }

    /// The product group's name.
    pub fn group_name(&self) -> &'static str {
        self.product.map_or(self.sku.kms_name, |p| p.name)
    }

    /// The required client count N of the edition's group.
    pub fn required_client_count(&self) -> Option<u32> {
        self.product.map(|p| p.required_client_count)
    }

    /// The best known GVLK and where it comes from.
    pub fn gvlk(&self) -> Option<(&'static str, GvlkSource)> {
        match (self.sku.gvlk, self.sku.gvlk_other_source) {
            (Some(k), _) => Some((k, GvlkSource::Microsoft)),
            (None, Some(k)) => Some((k, GvlkSource::Other)),
            (None, None) => None,
        }
    }

    /// The documented JSON object.
    pub fn to_json(&self) -> Value {
        let app = self.application();
        let gvlk = self.gvlk();
        json!({
            "edition": self.sku.edition,
            "sku_id": self.sku.sku_id.to_string(),
            "product_group": self.group_name(),
            "kms_counted_id": self.sku.kms_counted_id.to_string(),
            "application": app.map(application_json),
            "application_id": self.sku.application_id.to_string(),
            "required_client_count": self.required_client_count(),
            "gvlk": gvlk.map(|(k, _)| k),
            "gvlk_source": gvlk.map(|(_, s)| s.name()),
            "note": self.sku.gvlk_note,
        })
    }
}

/// The JSON name of an application: the pool name (`windows`, `office2010`, `office2013plus`).
pub fn application_json(app: Application) -> &'static str {
    Pool::from(app).name()
}

/// The display name of an application: `Windows`, `Office 2010`, `Office 2013+`.
pub fn application_label(app: Application) -> &'static str {
    match app {
        Application::Windows => "Windows",
        Application::Office2010 => "Office 2010",
        Application::Office2013Plus => "Office 2013+",
    }
}

/// The documented JSON object of a product group.
pub fn group_json(p: &Product) -> Value {
    json!({
        "name": p.name,
        "kms_counted_id": p.kms_counted_id.to_string(),
        "application": application_json(p.application),
        "application_id": p.application_id.to_string(),
        "required_client_count": p.required_client_count,
        "retail": p.is_retail,
        "preview": p.is_preview,
    })
}

/// Whether `name` contains `filter` (see the module doc); an empty filter matches everything.
pub fn name_contains(name: &str, filter: &str) -> bool {
    let f = normalize(filter);
    f.is_empty() || readings(name).iter().any(|r| r.contains(&f))
}

/// At most this many readings of one name are tried (the data has at most four).
const MAX_READINGS: usize = 64;

/// Lower-case, single-spaced readings of `name`: as written, and with each `a/b` word read as
/// each alternative.
fn readings(name: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    for (i, word) in name.split_whitespace().enumerate() {
        let word = word.to_lowercase();
        let alts: Vec<&str> = word.split('/').collect();
        let mut choices = vec![word.as_str()];
        if alts.len() >= 2
            && alts.iter().all(|a| !a.is_empty())
            && out.len() * (alts.len() + 1) <= MAX_READINGS
        {
            choices.extend(alts.iter().copied());
        }
        out = out
            .iter()
            .flat_map(|prefix| {
                choices.iter().map(move |c| {
                    if i == 0 {
                        (*c).to_string()
                    } else {
                        format!("{prefix} {c}")
                    }
                })
            })
            .collect();
    }
    out
}

fn normalize(s: &str) -> String {
    s.split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Compare names case-insensitively, digit runs by value (`Windows 8` < `Windows 10`); ties
/// are broken by the exact text.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let mut x = a.chars().peekable();
    let mut y = b.chars().peekable();
    loop {
        match (x.peek().copied(), y.peek().copied()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let n = digit_run(&mut x);
                let m = digit_run(&mut y);
                let (n, m) = (n.trim_start_matches('0'), m.trim_start_matches('0'));
                match n.len().cmp(&m.len()).then_with(|| n.cmp(m)) {
                    Ordering::Equal => {}
                    o => return o,
                }
            }
            (Some(c), Some(d)) => {
                match c.to_lowercase().cmp(d.to_lowercase()) {
                    Ordering::Equal => {}
                    o => return o,
                }
                x.next();
                y.next();
            }
        }
    }
}

fn digit_run(it: &mut std::iter::Peekable<std::str::Chars<'_>>) -> String {
    let mut s = String::new();
    while let Some(c) = it.next_if(char::is_ascii_digit) {
        s.push(c);
    }
    s
}

/// Sort key position of an application (unknown last).
fn app_rank(app: Option<Application>) -> (bool, Option<Application>) {
    (app.is_none(), app)
}

/// The editions matching `filter`, sorted (see the module doc).
pub fn edition_rows(filter: &str) -> Vec<EditionRow> {
    let mut rows: Vec<EditionRow> = core_catalog::skus()
        .iter()
        .map(|sku| EditionRow {
            sku,
            product: sku.product(),
        })
        .filter(|r| name_contains(r.sku.edition, filter) || name_contains(r.group_name(), filter))
        .collect();
    rows.sort_by(|a, b| {
        app_rank(a.application())
            .cmp(&app_rank(b.application()))
            .then_with(|| natural_cmp(a.group_name(), b.group_name()))
            .then_with(|| natural_cmp(a.sku.edition, b.sku.edition))
    });
    rows
}

/// The product groups whose name matches `filter`, sorted like the editions.
pub fn group_rows(filter: &str) -> Vec<&'static Product> {
    let mut rows: Vec<&'static Product> = core_catalog::products()
        .iter()
        .filter(|p| name_contains(p.name, filter))
        .collect();
    rows.sort_by(|a, b| {
        a.application
            .cmp(&b.application)
            .then_with(|| natural_cmp(a.name, b.name))
    });
    rows
}

/// The edition table, with footnotes for the marks used.
pub fn editions_text(rows: &[EditionRow]) -> String {
    let mut t = Table::new(&["EDITION", "PRODUCT GROUP", "APPLICATION", "N", "GVLK"]);
    let (mut other, mut none) = (false, false);
    for r in rows {
        let key = match (r.gvlk(), r.sku.gvlk_note) {
            (Some((k, GvlkSource::Microsoft)), _) => k.to_string(),
            (Some((k, GvlkSource::Other)), _) => {
                other = true;
                format!("{k} *")
            }
            (None, Some(note)) => {
                none = true;
                format!("- ({note})")
            }
            (None, None) => {
                none = true;
                "-".to_string()
            }
        };
        t.row(vec![
            r.sku.edition.to_string(),
            r.group_name().to_string(),
            r.application().map_or("?", application_label).to_string(),
            r.required_client_count()
                .map_or_else(|| "?".to_string(), |n| n.to_string()),
            key,
        ]);
    }
    let mut out = t.render();
    if other || none {
        out.push('\n');
    }
    if other {
        out.push_str("* not published by Microsoft: known from py-kms's database only\n");
    }
    if none {
        out.push_str(
            "- no GVLK in the catalog (a note in parentheses says why; retail editions have \
             none: a KMS host refuses them)\n",
        );
    }
    out
}

/// The product group table.
pub fn groups_text(rows: &[&Product]) -> String {
    let mut t = Table::new(&[
        "PRODUCT GROUP",
        "APPLICATION",
        "N",
        "CHANNEL",
        "EDITIONS",
        "KMS COUNTED ID",
    ]);
    for p in rows {
        let channel = match (p.is_retail, p.is_preview) {
            (true, true) => "retail, preview",
            (true, false) => "retail",
            (false, true) => "preview",
            (false, false) => "volume",
        };
        t.row(vec![
            p.name.to_string(),
            application_label(p.application).to_string(),
            p.required_client_count.to_string(),
            channel.to_string(),
            p.skus().count().to_string(),
            p.kms_counted_id.to_string(),
        ]);
    }
    t.render()
}

/// Why nothing was printed, with close names when there are some.
pub fn no_match_message(filter: &str, groups: bool) -> String {
    let what = if groups {
        "no product group"
    } else {
        "no edition or product group"
    };
    let mut suggestions = crate::catalog::suggestions(filter);
    if groups {
        suggestions.retain(|s| core_catalog::products().iter().any(|p| p.name == s));
    }
    let hint = if suggestions.is_empty() {
        String::new()
    } else {
        format!("; did you mean: {}", suggestions.join(", "))
    };
    format!("{what} matches {filter:?}{hint}")
}

/// Run `kmsctl products`: the table or JSON on `out`, a no-match hint on `err`. Exit class
/// `Success` when something matched, `Refused` (1) otherwise.
pub fn run(
    args: &ProductsArgs,
    format: OutputFormat,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<ExitClass> {
    let filter = args.filter_text();
    let (json, text, count) = if args.groups {
        let rows = group_rows(&filter);
        (
            Value::Array(rows.iter().map(|p| group_json(p)).collect()),
            groups_text(&rows),
            rows.len(),
        )
    } else {
        let rows = edition_rows(&filter);
        (
            Value::Array(rows.iter().map(EditionRow::to_json).collect()),
            editions_text(&rows),
            rows.len(),
        )
    };
    match format {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &json).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        OutputFormat::Text if count > 0 => out.write_all(text.as_bytes())?,
        OutputFormat::Text => {}
    }
    if count == 0 {
        writeln!(err, "kmsctl: {}", no_match_message(&filter, args.groups))?;
        return Ok(ExitClass::Refused);
    }
    Ok(ExitClass::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_expand_alternatives() {
        assert_eq!(
            readings("Windows 10/11  Enterprise"),
            vec![
                "windows 10/11 enterprise",
                "windows 10 enterprise",
                "windows 11 enterprise"
            ]
        );
        // A lone `/` or an empty alternative is not expanded.
        assert_eq!(readings("Office 2013 / 2016"), vec!["office 2013 / 2016"]);
        assert_eq!(readings("a/ b"), vec!["a/ b"]);
        assert_eq!(readings("LTSC 2019/2021 N").len(), 3);
        // Bounded however many alternatives a name has.
        let many = "a/b/c ".repeat(10);
        assert!(readings(&many).len() <= MAX_READINGS);
    }

    #[test]
    fn contains_ignores_case_and_spacing() {
        assert!(name_contains(
            "Windows 10/11 Enterprise",
            "windows 11 ENTERPRISE"
        ));
        assert!(name_contains("Windows 10/11 Enterprise", "  10/11   enter"));
        assert!(name_contains(
            "Windows 10 Enterprise LTSC 2019/2021",
            "LTSC 2021"
        ));
        assert!(name_contains("Anything", ""));
        assert!(!name_contains("Windows 10/11 Enterprise", "Windows 12"));
        assert!(!name_contains(
            "Windows 10/11 Enterprise",
            "Windows 10/11/12"
        ));
    }

    #[test]
    fn natural_order() {
        let mut v = vec![
            "Windows 10 Pro",
            "Windows 8.1",
            "Windows 8",
            "windows 7",
            "Windows Server 2012 R2",
            "Windows Server 2012",
            "Windows 10/11 Pro",
            "Windows 010 Pro",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            vec![
                "windows 7",
                "Windows 8",
                "Windows 8.1",
                "Windows 010 Pro",
                "Windows 10 Pro",
                "Windows 10/11 Pro",
                "Windows Server 2012",
                "Windows Server 2012 R2",
            ]
        );
        assert_eq!(natural_cmp("a", "a"), Ordering::Equal);
        assert_eq!(natural_cmp("A", "a"), Ordering::Less);
    }
}
