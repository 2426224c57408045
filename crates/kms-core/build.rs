//! Compiles the product catalog (`data/*.csv`) into Rust tables in `OUT_DIR/catalog_data.rs`.
//!
//! Every CSV starts with one `#` comment line, then a header row. Columns are looked up by
//! header name, so column order does not matter; a missing column, a malformed GUID, number,
//! date or flag aborts the build with a message naming the file, row and column. GUIDs are
//! emitted as `guid("…")` calls that are evaluated at compile time (`Guid::parse_const`), so a
//! GUID is never typed by hand.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const FILES: [&str; 5] = [
    "products.csv",
    "products-sku.csv",
    "csvlk.csv",
    "hostbuilds.csv",
    "vlmcsd-csvlk-groups.csv",
];

struct Table {
    file: &'static str,
    header: HashMap<String, usize>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn load(dir: &Path, file: &'static str) -> Table {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let body = match text.strip_prefix('#') {
            Some(rest) => rest.split_once('\n').map(|(_, b)| b).unwrap_or(""),
            None => panic!("{file}: expected a leading '#' comment line"),
        };
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(body.as_bytes());
        let header = rdr
            .headers()
            .unwrap_or_else(|e| panic!("{file}: bad header: {e}"))
            .iter()
            .enumerate()
            .map(|(i, h)| (h.trim().to_string(), i))
            .collect();
        let rows = rdr
            .records()
            .map(|r| {
                r.unwrap_or_else(|e| panic!("{file}: bad row: {e}"))
                    .iter()
                    .map(|s| s.trim().to_string())
                    .collect()
            })
            .collect();
        Table { file, header, rows }
    }

    fn get<'a>(&self, row: &'a [String], n: usize, col: &str) -> &'a str {
        let i = *self
            .header
            .get(col)
            .unwrap_or_else(|| panic!("{}: no column {col}", self.file));
        row.get(i)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{} row {n}: missing column {col}", self.file))
    }

    fn fail(&self, n: usize, col: &str, v: &str, what: &str) -> ! {
        panic!(
            "{} data row {n}: column {col} = {v:?} is not {what}",
            self.file
        )
    }

    fn guid(&self, row: &[String], n: usize, col: &str) -> String {
        let v = self.get(row, n, col);
        if !is_guid(v) {
            self.fail(n, col, v, "a GUID");
        }
        format!("guid({:?})", v.to_ascii_lowercase())
    }

    fn guids(&self, row: &[String], n: usize, col: &str) -> String {
        let v = self.get(row, n, col);
        let mut out = String::from("&[");
        for g in v.split_whitespace() {
            if !is_guid(g) {
                self.fail(n, col, v, "a space-separated GUID list");
            }
            write!(out, "guid({:?}), ", g.to_ascii_lowercase()).unwrap();
        }
        out.push(']');
        out
    }

    fn num<T: std::str::FromStr + std::fmt::Display>(
        &self,
        row: &[String],
        n: usize,
        col: &str,
    ) -> String {
        let v = self.get(row, n, col);
        match v.parse::<T>() {
            Ok(x) => x.to_string(),
            Err(_) => self.fail(n, col, v, "a number"),
        }
    }

    fn opt_num<T: std::str::FromStr + std::fmt::Display>(
        &self,
        row: &[String],
        n: usize,
        col: &str,
    ) -> String {
        if self.get(row, n, col).is_empty() {
            "None".into()
        } else {
            format!("Some({})", self.num::<T>(row, n, col))
        }
    }

    fn flag(&self, row: &[String], n: usize, col: &str) -> &'static str {
        match self.get(row, n, col) {
            "0" => "false",
            "1" => "true",
            v => self.fail(n, col, v, "0 or 1"),
        }
    }

    fn text(&self, row: &[String], n: usize, col: &str) -> String {
        format!("{:?}", self.get(row, n, col))
    }

    fn opt_text(&self, row: &[String], n: usize, col: &str) -> String {
        let v = self.get(row, n, col);
        if v.is_empty() {
            "None".into()
        } else {
            format!("Some({v:?})")
        }
    }

    fn date(&self, row: &[String], n: usize, col: &str) -> String {
        let v = self.get(row, n, col);
        match parse_date(v) {
            Some(secs) => format!("FileTime::from_unix_secs({secs})"),
            None => self.fail(n, col, v, "a date YYYY-MM-DDT00:00:00Z"),
        }
    }

    fn opt_date(&self, row: &[String], n: usize, col: &str) -> String {
        if self.get(row, n, col).is_empty() {
            "None".into()
        } else {
            format!("Some({})", self.date(row, n, col))
        }
    }

    /// `[0,1,2]`, `[]` or empty → a byte-slice literal.
    fn index_list(&self, row: &[String], n: usize, col: &str) -> String {
        let v = self.get(row, n, col);
        let inner = if v.is_empty() {
            ""
        } else {
            v.strip_prefix('[')
                .and_then(|s| s.strip_suffix(']'))
                .unwrap_or_else(|| self.fail(n, col, v, "a list like [0,1]"))
        };
        let mut out = String::from("&[");
        for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let x: u8 = part
                .parse()
                .unwrap_or_else(|_| self.fail(n, col, v, "a list of small numbers"));
            write!(out, "{x}, ").unwrap();
        }
        out.push(']');
        out
    }
}

fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// `YYYY-MM-DDT00:00:00Z` (time part optional, must be midnight) → Unix seconds.
fn parse_date(s: &str) -> Option<i64> {
    let date = s.strip_suffix("T00:00:00Z").unwrap_or(s);
    let mut it = date.split('-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1601 {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400)
}

fn application(t: &Table, row: &[String], n: usize, id_col: &str) -> &'static str {
    match t.get(row, n, id_col).to_ascii_lowercase().as_str() {
        "55c92734-d682-4d71-983e-d6ec3f16059f" => "Application::Windows",
        "59a52881-a989-479d-af46-f275c6370663" => "Application::Office2010",
        "0ff1ce15-a989-479d-af46-f275c6370663" => "Application::Office2013Plus",
        v => t.fail(n, id_col, v, "a known application id"),
    }
}

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"))
        .join("data");
    println!("cargo:rerun-if-changed=build.rs");
    for f in FILES {
        println!("cargo:rerun-if-changed=data/{f}");
    }
    let mut out = String::new();
    out.push_str("// @generated by build.rs from data/*.csv. Do not edit.\n\n");

    // products.csv
    let t = Table::load(&dir, "products.csv");
    out.push_str(
        "/// Every row of `products.csv`, in file order.\npub static PRODUCTS: &[Product] = &[\n",
    );
    for (n, r) in t.rows.iter().enumerate() {
        let proto = t.get(r, n, "default_protocol");
        let major = match proto.split_once('.') {
            Some((maj, "0")) => maj.parse::<u16>().ok(),
            _ => None,
        }
        .filter(|v| (4..=6).contains(v))
        .unwrap_or_else(|| t.fail(n, "default_protocol", proto, "4.0, 5.0 or 6.0"));
        writeln!(
            out,
            "    Product {{ kms_counted_id: {}, name: {}, application_id: {}, application: {}, \
             application_name: {}, required_client_count: {}, default_protocol: {major}, \
             is_retail: {}, is_preview: {}, in_vlmcsd_data: {}, vlmcsd_name: {} }},",
            t.guid(r, n, "kms_counted_id"),
            t.text(r, n, "name"),
            t.guid(r, n, "application_id"),
            application(&t, r, n, "application_id"),
            t.text(r, n, "application"),
            t.num::<u32>(r, n, "required_client_count"),
            t.flag(r, n, "is_retail"),
            t.flag(r, n, "is_preview"),
            t.flag(r, n, "in_vlmcsd_data"),
            t.opt_text(r, n, "vlmcsd_name"),
        )
        .unwrap();
    }
    out.push_str("];\n\n");

    // products-sku.csv
    let t = Table::load(&dir, "products-sku.csv");
    out.push_str(
        "/// Every row of `products-sku.csv`, in file order.\npub static SKUS: &[Sku] = &[\n",
    );
    for (n, r) in t.rows.iter().enumerate() {
        writeln!(
            out,
            "    Sku {{ sku_id: {}, edition: {}, kms_counted_id: {}, kms_name: {}, \
             application_id: {}, gvlk: {}, gvlk_other_source: {}, gvlk_note: {}, \
             in_vlmcsd_data: {} }},",
            t.guid(r, n, "sku_id"),
            t.text(r, n, "edition"),
            t.guid(r, n, "kms_counted_id"),
            t.text(r, n, "kms_name"),
            t.guid(r, n, "application_id"),
            t.opt_text(r, n, "gvlk"),
            t.opt_text(r, n, "gvlk_other_source"),
            t.opt_text(r, n, "gvlk_note"),
            t.flag(r, n, "in_vlmcsd_data"),
        )
        .unwrap();
    }
    out.push_str("];\n\n");

    // csvlk.csv
    let t = Table::load(&dir, "csvlk.csv");
    out.push_str(
        "/// Every row of `csvlk.csv`, in file order.\npub static CSVLKS: &[Csvlk] = &[\n",
    );
    for (n, r) in t.rows.iter().enumerate() {
        writeln!(
            out,
            "    Csvlk {{ csvlk_sku_id: {}, name: {}, group_id: {}, min_key_id: {}, \
             max_key_id: {}, release_date: {}, is_lab: {}, is_preview: {}, ini_name: {}, \
             vlmcsd_index: {}, invalid_winbuild_indexes: {}, activates: {} }},",
            t.guid(r, n, "csvlk_sku_id"),
            t.text(r, n, "name"),
            t.opt_num::<u32>(r, n, "group_id"),
            t.opt_num::<u64>(r, n, "min_key_id"),
            t.opt_num::<u64>(r, n, "max_key_id"),
            t.opt_date(r, n, "release_date"),
            t.flag(r, n, "is_lab"),
            t.flag(r, n, "is_preview"),
            t.text(r, n, "ini_name"),
            t.opt_num::<u8>(r, n, "vlmcsd_index"),
            t.index_list(r, n, "invalid_winbuild_indexes"),
            t.guids(r, n, "activates_kms_counted_ids"),
        )
        .unwrap();
    }
    out.push_str("];\n\n");

    // hostbuilds.csv
    let t = Table::load(&dir, "hostbuilds.csv");
    out.push_str(
        "/// Every row of `hostbuilds.csv`, in file order.\npub static HOST_BUILDS: &[HostBuild] = &[\n",
    );
    for (n, r) in t.rows.iter().enumerate() {
        writeln!(
            out,
            "    HostBuild {{ epid_build_index: {}, build: {}, platform_id: {}, release_date: {}, \
             name: {}, use_for_epid: {}, may_be_server: {}, uses_ndr64: {} }},",
            t.opt_num::<u8>(r, n, "epid_build_index"),
            t.num::<u32>(r, n, "build"),
            t.num::<u32>(r, n, "platform_id"),
            t.date(r, n, "release_date"),
            t.text(r, n, "name"),
            t.flag(r, n, "use_for_epid"),
            t.flag(r, n, "may_be_server"),
            t.flag(r, n, "uses_ndr64"),
        )
        .unwrap();
    }
    out.push_str("];\n\n");

    // vlmcsd-csvlk-groups.csv
    let t = Table::load(&dir, "vlmcsd-csvlk-groups.csv");
    out.push_str(
        "/// Every row of `vlmcsd-csvlk-groups.csv`, in file order.\n\
         pub static VLMCSD_GROUPS: &[VlmcsdGroup] = &[\n",
    );
    for (n, r) in t.rows.iter().enumerate() {
        writeln!(
            out,
            "    VlmcsdGroup {{ vlmcsd_index: {}, ini_name: {}, group_id: {}, min_key_id: {}, \
             max_key_id: {}, default_epid: {} }},",
            t.num::<u8>(r, n, "vlmcsd_index"),
            t.text(r, n, "ini_name"),
            t.num::<u32>(r, n, "group_id"),
            t.num::<u64>(r, n, "min_key_id"),
            t.num::<u64>(r, n, "max_key_id"),
            t.text(r, n, "default_epid"),
        )
        .unwrap();
    }
    out.push_str("];\n");

    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("catalog_data.rs");
    std::fs::write(&dest, out).unwrap_or_else(|e| panic!("cannot write {}: {e}", dest.display()));
}
