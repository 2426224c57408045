//! The product catalog, compiled from `data/*.csv` by `build.rs` (PROTOCOL §9.1, §8).
//!
//! * [`products`] — KMS counted ids (product groups) from `products.csv`.
//! * [`skus`] — editions (activation ids) from `products-sku.csv`, each pointing at its group.
//! * [`csvlks`] — KMS host keys from `csvlk.csv`: ePID group id, key-id range, and which
//!   product groups each activates.
//! * [`host_builds`] — host OS builds from `hostbuilds.csv` (ePID platform id, NDR64 usage).
//! * [`vlmcsd_groups`] — vlmcsd's six ePID groups from `vlmcsd-csvlk-groups.csv`.
//!
//! Tables are `static` slices in file order; every GUID is parsed at compile time from the CSV
//! text. Lookups are linear scans (the tables hold a few hundred rows).
//!
//! ## Which ePID group answers a product group
//!
//! [`epid_group_for`] picks the CSVLK a genuine host would most plausibly use for a product
//! group: among the CSVLKs activating it, prefer production keys over lab keys, released over
//! pre-release, keys with a group id, then the newest release date; ties go to the first row.
//! Product groups that no CSVLK lists (in the shipped data: Windows Server 2022
//! `b74263e4-…` — `csvlk.csv` names a different counted id for that key —, Windows 10 Unknown
//! (Volume) and Office 2013 Pre-release) and unknown ids fall back, like vlmcsd, to the vlmcsd
//! group of their application (Windows → `Windows`, Office 2010 → `Office2010`, Office 2013+ →
//! `Office2013`), and to the vlmcsd `Windows` group when the application is unknown too.
//!
//! ## Name lookup
//!
//! [`find_by_name`] matches SKU edition names first, then product group names, ignoring ASCII
//! case and repeated whitespace. A word written with alternatives in the data (`10/11`,
//! `2019/2021`) matches each alternative, so `Windows 11 Enterprise` finds the edition
//! `Windows 10/11 Enterprise`.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::LazyLock;

use kms_wire::{FileTime, Guid};
use serde::{Deserialize, Serialize};

use crate::{ApplicationId, KmsCountedId, SkuId};

/// Compile-time GUID constructor used by the generated tables.
const fn guid(s: &str) -> Guid {
    match Guid::parse_const(s) {
        Some(g) => g,
        None => panic!("catalog: malformed GUID (build.rs validates these)"),
    }
}

include!(concat!(env!("OUT_DIR"), "/catalog_data.rs"));

/// Application id of Windows (client and server).
pub const WINDOWS_APPLICATION_ID: ApplicationId = guid("55c92734-d682-4d71-983e-d6ec3f16059f");
/// Application id of Office 2010.
pub const OFFICE2010_APPLICATION_ID: ApplicationId = guid("59a52881-a989-479d-af46-f275c6370663");
/// Application id of Office 2013 and later.
pub const OFFICE2013_APPLICATION_ID: ApplicationId = guid("0ff1ce15-a989-479d-af46-f275c6370663");

/// The application a product group belongs to (one per application id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Application {
    /// Windows client and server.
    Windows,
    /// Office 2010 ("Office 14").
    Office2010,
    /// Office 2013, 2016, 2019, LTSC 2021, LTSC 2024.
    Office2013Plus,
}

impl Application {
    /// The application id requests of this application carry.
    pub const fn application_id(self) -> ApplicationId {
        match self {
            Application::Windows => WINDOWS_APPLICATION_ID,
            Application::Office2010 => OFFICE2010_APPLICATION_ID,
            Application::Office2013Plus => OFFICE2013_APPLICATION_ID,
        }
    }

    /// The application of an application id, `None` if unknown.
    pub fn from_application_id(id: ApplicationId) -> Option<Application> {
        [
            Application::Windows,
            Application::Office2010,
            Application::Office2013Plus,
        ]
        .into_iter()
        .find(|a| a.application_id() == id)
    }

    /// The vlmcsd ePID group (`ini_name`) that answers unlisted product groups of this
    /// application.
    const fn vlmcsd_fallback(self) -> &'static str {
        match self {
            Application::Windows => "Windows",
            Application::Office2010 => "Office2010",
            Application::Office2013Plus => "Office2013",
        }
    }
}

/// A KMS counted id (product group), one row of `products.csv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Product {
    /// The KMS counted id clients send (`kmsCountedId`).
    pub kms_counted_id: KmsCountedId,
    /// Group name, e.g. `Windows 10/11 2015 (Volume)`.
    pub name: &'static str,
    /// Application id requests for this group must carry.
    pub application_id: ApplicationId,
    /// The application (and therefore count pool) of the group.
    pub application: Application,
    /// The `application` column as written in the CSV.
    pub application_name: &'static str,
    /// N policy clients of this group send: 25 Windows client, 5 server and Office.
    pub required_client_count: u32,
    /// Protocol major version clients of this group use (4, 5 or 6).
    pub default_protocol: u16,
    /// Retail group: a genuine host never activates it.
    pub is_retail: bool,
    /// Pre-release group: a genuine host never activates it.
    pub is_preview: bool,
    /// Present in vlmcsd's KMD data.
    pub in_vlmcsd_data: bool,
    /// vlmcsd's name for the group, if it has one.
    pub vlmcsd_name: Option<&'static str>,
}

impl Product {
    /// A volume group: neither retail nor pre-release.
    pub const fn is_volume(&self) -> bool {
        !self.is_retail && !self.is_preview
    }

    /// The count pool of this group.
    pub fn pool(&self) -> crate::Pool {
        self.application.into()
    }

    /// The editions (SKUs) of this group.
    pub fn skus(&self) -> impl Iterator<Item = &'static Sku> + use<> {
        let id = self.kms_counted_id;
        SKUS.iter().filter(move |s| s.kms_counted_id == id)
    }

    /// The CSVLKs that activate this group.
    pub fn csvlks(&self) -> impl Iterator<Item = &'static Csvlk> + use<> {
        csvlks_activating(self.kms_counted_id)
    }
}

/// An edition (activation id / SKU id), one row of `products-sku.csv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sku {
    /// The SKU id (activation id) clients send (`skuId`).
    pub sku_id: SkuId,
    /// Edition name, e.g. `Windows 10/11 Enterprise`.
    pub edition: &'static str,
    /// Product group of the edition.
    pub kms_counted_id: KmsCountedId,
    /// Name of the product group as written in this CSV.
    pub kms_name: &'static str,
    /// Application id of the edition.
    pub application_id: ApplicationId,
    /// GVLK published in Microsoft's documentation.
    pub gvlk: Option<&'static str>,
    /// GVLK known only from py-kms's database.
    pub gvlk_other_source: Option<&'static str>,
    /// Why there is no key, if there is a note.
    pub gvlk_note: Option<&'static str>,
    /// Present in vlmcsd's KMD data.
    pub in_vlmcsd_data: bool,
}

impl Sku {
    /// The product group of this edition.
    pub fn product(&self) -> Option<&'static Product> {
        product(self.kms_counted_id)
    }

    /// The best known GVLK: Microsoft's, else the other source's.
    pub fn any_gvlk(&self) -> Option<&'static str> {
        self.gvlk.or(self.gvlk_other_source)
    }
}

/// A KMS host key (CSVLK), one row of `csvlk.csv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Csvlk {
    /// SKU id of the host key (not unique in the data: one key id is listed twice).
    pub csvlk_sku_id: Guid,
    /// Name, e.g. `Windows Server 2019`.
    pub name: &'static str,
    /// ePID group id (`GGGGG`), if known.
    pub group_id: Option<u32>,
    /// Smallest key id of the key range, if known.
    pub min_key_id: Option<u64>,
    /// Largest key id of the key range, if known.
    pub max_key_id: Option<u64>,
    /// Release date of the key, if known.
    pub release_date: Option<FileTime>,
    /// A Microsoft-internal lab key.
    pub is_lab: bool,
    /// A pre-release key.
    pub is_preview: bool,
    /// vlmcsd ini section name of the key's group.
    pub ini_name: &'static str,
    /// vlmcsd group index, if the key is vlmcsd's choice for its group.
    pub vlmcsd_index: Option<u8>,
    /// [`HostBuild::epid_build_index`] values that are not plausible host builds for this key
    /// (empty: no restriction known).
    pub invalid_winbuild_indexes: &'static [u8],
    /// KMS counted ids this key activates.
    pub activates: &'static [KmsCountedId],
}

impl Csvlk {
    /// The key-id range, if both ends are known and ordered.
    pub fn key_id_range(&self) -> Option<RangeInclusive<u64>> {
        match (self.min_key_id, self.max_key_id) {
            (Some(lo), Some(hi)) if lo <= hi => Some(lo..=hi),
            _ => None,
        }
    }

    /// Whether the key activates `id`.
    pub fn activates(&self, id: KmsCountedId) -> bool {
        self.activates.contains(&id)
    }

    /// Whether `build` is a plausible host build for this key (not listed as invalid).
    pub fn allows_build(&self, build: &HostBuild) -> bool {
        match build.epid_build_index {
            Some(i) => !self.invalid_winbuild_indexes.contains(&i),
            None => true,
        }
    }

    /// Preference order for [`preferred_csvlk`]: production, released, with group id, newest.
    fn preference(&self) -> (bool, bool, bool, Option<FileTime>) {
        (
            !self.is_lab,
            !self.is_preview,
            self.group_id.is_some(),
            self.release_date,
        )
    }
}

/// A host OS build usable in ePIDs, one row of `hostbuilds.csv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostBuild {
    /// Index referenced by [`Csvlk::invalid_winbuild_indexes`] (only for ePID builds).
    pub epid_build_index: Option<u8>,
    /// Build number, e.g. 17763.
    pub build: u32,
    /// ePID platform id (`PPPPP`) of the build.
    pub platform_id: u32,
    /// Release date of the build.
    pub release_date: FileTime,
    /// Name, e.g. `Windows 10 1809 / Server 2019`.
    pub name: &'static str,
    /// Whether reference hosts use the build for generated ePIDs.
    pub use_for_epid: bool,
    /// Whether the build exists as a server OS.
    pub may_be_server: bool,
    /// Whether genuine hosts of this build speak NDR64.
    pub uses_ndr64: bool,
}

/// One of vlmcsd's six ePID groups, one row of `vlmcsd-csvlk-groups.csv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlmcsdGroup {
    /// vlmcsd's index (0 … 5).
    pub vlmcsd_index: u8,
    /// vlmcsd ini section name (`Windows`, `Office2010`, …).
    pub ini_name: &'static str,
    /// ePID group id.
    pub group_id: u32,
    /// Smallest key id.
    pub min_key_id: u64,
    /// Largest key id.
    pub max_key_id: u64,
    /// vlmcsd's built-in ePID (well known: never use it as a real identity).
    pub default_epid: &'static str,
}

/// All product groups.
pub fn products() -> &'static [Product] {
    PRODUCTS
}

/// All editions.
pub fn skus() -> &'static [Sku] {
    SKUS
}

/// All host keys.
pub fn csvlks() -> &'static [Csvlk] {
    CSVLKS
}

/// All host builds.
pub fn host_builds() -> &'static [HostBuild] {
    HOST_BUILDS
}

/// vlmcsd's ePID groups.
pub fn vlmcsd_groups() -> &'static [VlmcsdGroup] {
    VLMCSD_GROUPS
}

/// Lookups by id, built on first use: every activation looks up its product group, edition
/// and ePID group, and a scan of the 262 editions cost more than the rest of the decision.
struct Index {
    products: HashMap<KmsCountedId, &'static Product>,
    skus: HashMap<SkuId, &'static Sku>,
    /// [`epid_group_for`] of every catalog product group.
    epid_groups: HashMap<KmsCountedId, u32>,
}

static INDEX: LazyLock<Index> = LazyLock::new(|| {
    let mut products = HashMap::with_capacity(PRODUCTS.len());
    for p in PRODUCTS {
        // The first row wins, as a scan in file order would find it.
        products.entry(p.kms_counted_id).or_insert(p);
    }
    let mut skus = HashMap::with_capacity(SKUS.len());
    for s in SKUS {
        skus.entry(s.sku_id).or_insert(s);
    }
    let epid_groups = PRODUCTS
        .iter()
        .map(|p| (p.kms_counted_id, epid_group_scan(p.kms_counted_id)))
        .collect();
    Index {
        products,
        skus,
        epid_groups,
    }
});

/// The product group with this KMS counted id.
pub fn product(id: KmsCountedId) -> Option<&'static Product> {
    INDEX.products.get(&id).copied()
}

/// The edition with this SKU id.
pub fn sku(id: SkuId) -> Option<&'static Sku> {
    INDEX.skus.get(&id).copied()
}

/// The host build with this build number.
pub fn host_build(build: u32) -> Option<&'static HostBuild> {
    HOST_BUILDS.iter().find(|b| b.build == build)
}

/// The CSVLKs that activate `id`, in file order.
pub fn csvlks_activating(id: KmsCountedId) -> impl Iterator<Item = &'static Csvlk> + use<> {
    CSVLKS.iter().filter(move |c| c.activates(id))
}

/// The CSVLK a host would most plausibly answer `id` with (see the module doc), `None` if no
/// CSVLK lists `id`.
pub fn preferred_csvlk(id: KmsCountedId) -> Option<&'static Csvlk> {
    let mut best: Option<&'static Csvlk> = None;
    for c in csvlks_activating(id) {
        if best.is_none_or(|b| c.preference() > b.preference()) {
            best = Some(c);
        }
    }
    best
}

/// Whether some CSVLK activates `id` (what a genuine host requires, PROTOCOL §9.1).
pub fn is_csvlk_covered(id: KmsCountedId) -> bool {
    csvlks_activating(id).next().is_some()
}

fn vlmcsd_group(ini_name: &str) -> Option<&'static VlmcsdGroup> {
    VLMCSD_GROUPS.iter().find(|g| g.ini_name == ini_name)
}

/// The ePID group id a host answers requests for `id` with (see the module doc).
pub fn epid_group_for(id: KmsCountedId) -> u32 {
    match INDEX.epid_groups.get(&id) {
        Some(&g) => g,
        None => epid_group_scan(id),
    }
}

/// [`epid_group_for`] from the tables themselves.
fn epid_group_scan(id: KmsCountedId) -> u32 {
    if let Some(g) = preferred_csvlk(id).and_then(|c| c.group_id) {
        return g;
    }
    // A scan, not `product`: this runs while the index is being built.
    let app = PRODUCTS
        .iter()
        .find(|p| p.kms_counted_id == id)
        .map_or(Application::Windows, |p| p.application);
    fallback_epid_group(app)
}

/// The ePID group for product groups of `app` that no CSVLK lists.
pub fn fallback_epid_group(app: Application) -> u32 {
    vlmcsd_group(app.vlmcsd_fallback())
        .or_else(|| VLMCSD_GROUPS.first())
        .map_or(206, |g| g.group_id)
}

/// Every ePID group [`epid_group_for`] can return (for catalog products, unknown ids and the
/// per-application fallbacks), ascending. A generated host identity has one ePID for each.
pub fn epid_groups() -> Vec<u32> {
    let mut out: Vec<u32> = PRODUCTS
        .iter()
        .map(|p| epid_group_for(p.kms_counted_id))
        .chain(
            [
                Application::Windows,
                Application::Office2010,
                Application::Office2013Plus,
            ]
            .map(fallback_epid_group),
        )
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The CSVLK whose key range and constraints an ePID of `group_id` is generated from: among
/// production, released keys of that group with a key range, the one activating the most
/// product groups, then the newest, then the first row. Falls back to the vlmcsd group row
/// (key range only) when no CSVLK qualifies.
pub fn csvlk_for_group(group_id: u32) -> Option<&'static Csvlk> {
    let mut best: Option<&'static Csvlk> = None;
    let key = |c: &Csvlk| (!c.is_lab, !c.is_preview, c.activates.len(), c.release_date);
    for c in CSVLKS
        .iter()
        .filter(|c| c.group_id == Some(group_id) && c.key_id_range().is_some())
    {
        if best.is_none_or(|b| key(c) > key(b)) {
            best = Some(c);
        }
    }
    best
}

/// The vlmcsd group row with this group id (first match).
pub fn vlmcsd_group_by_id(group_id: u32) -> Option<&'static VlmcsdGroup> {
    VLMCSD_GROUPS.iter().find(|g| g.group_id == group_id)
}

/// A catalog entry found by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamedEntry {
    /// An edition matched.
    Sku(&'static Sku),
    /// A product group matched.
    Product(&'static Product),
}

impl NamedEntry {
    /// The product group of the entry.
    pub fn product(&self) -> Option<&'static Product> {
        match self {
            NamedEntry::Sku(s) => s.product(),
            NamedEntry::Product(p) => Some(p),
        }
    }

    /// The edition: the matched one, or for a product group its first edition.
    pub fn sku(&self) -> Option<&'static Sku> {
        match self {
            NamedEntry::Sku(s) => Some(s),
            NamedEntry::Product(p) => p.skus().next(),
        }
    }
}

/// Whether `query` names `name` (see the module doc): same number of words, each query word
/// equal (ASCII case-insensitive) to the data word or to one of its `/`-separated alternatives.
pub fn name_matches(name: &str, query: &str) -> bool {
    let mut a = name.split_whitespace();
    let mut b = query.split_whitespace();
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(w), Some(q)) => {
                if w.eq_ignore_ascii_case(q) {
                    continue;
                }
                let alts: Vec<&str> = w.split('/').collect();
                let expandable = alts.len() >= 2 && alts.iter().all(|s| !s.is_empty());
                if !(expandable && alts.iter().any(|s| s.eq_ignore_ascii_case(q))) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// The first edition whose name matches `query`.
pub fn find_sku_by_name(query: &str) -> Option<&'static Sku> {
    SKUS.iter().find(|s| name_matches(s.edition, query))
}

/// The first product group whose name (or vlmcsd name) matches `query`.
pub fn find_product_by_name(query: &str) -> Option<&'static Product> {
    PRODUCTS.iter().find(|p| {
        name_matches(p.name, query) || p.vlmcsd_name.is_some_and(|v| name_matches(v, query))
    })
}

/// An edition or, failing that, a product group named `query`.
pub fn find_by_name(query: &str) -> Option<NamedEntry> {
    find_sku_by_name(query)
        .map(NamedEntry::Sku)
        .or_else(|| find_product_by_name(query).map(NamedEntry::Product))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(s: &str) -> Guid {
        s.parse().unwrap()
    }

    /// Data lines of a CSV file: without the `#` comment and the header.
    fn data_lines(text: &str) -> Vec<&str> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        assert!(lines.next().unwrap().starts_with('#'));
        lines.next().unwrap(); // header
        lines.collect()
    }

    /// Minimal CSV field splitter for these files (quotes only around fields, no embedded
    /// quotes or newlines).
    fn fields(line: &str) -> Vec<String> {
        let mut out = vec![String::new()];
        let mut quoted = false;
        for c in line.chars() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => out.push(String::new()),
                c => out.last_mut().unwrap().push(c),
            }
        }
        out
    }

    fn opt<T: ToString>(v: Option<T>) -> String {
        v.map_or(String::new(), |x| x.to_string())
    }

    fn flag(b: bool) -> String {
        if b { "1" } else { "0" }.into()
    }

    fn date(t: FileTime) -> String {
        let (y, m, d) = crate::time::civil_from_unix_days(t.unix_secs().div_euclid(86_400));
        format!("{y:04}-{m:02}-{d:02}T00:00:00Z")
    }

    #[test]
    fn every_product_row_is_compiled_field_by_field() {
        let lines = data_lines(include_str!("../data/products.csv"));
        assert_eq!(lines.len(), PRODUCTS.len());
        assert_eq!(PRODUCTS.len(), 34);
        for (line, p) in lines.iter().zip(PRODUCTS) {
            let f = fields(line);
            let want = vec![
                p.kms_counted_id.to_string(),
                p.name.to_string(),
                p.application_id.to_string(),
                p.application_name.to_string(),
                p.required_client_count.to_string(),
                format!("{}.0", p.default_protocol),
                flag(p.is_retail),
                flag(p.is_preview),
                flag(p.in_vlmcsd_data),
                opt(p.vlmcsd_name),
            ];
            assert_eq!(f, want, "{line}");
            assert_eq!(p.application.application_id(), p.application_id);
        }
    }

    #[test]
    fn every_sku_row_is_compiled_field_by_field() {
        let lines = data_lines(include_str!("../data/products-sku.csv"));
        assert_eq!(lines.len(), SKUS.len());
        assert_eq!(SKUS.len(), 262);
        for (line, s) in lines.iter().zip(SKUS) {
            let want = vec![
                s.sku_id.to_string(),
                s.edition.to_string(),
                s.kms_counted_id.to_string(),
                s.kms_name.to_string(),
                s.application_id.to_string(),
                opt(s.gvlk),
                opt(s.gvlk_other_source),
                opt(s.gvlk_note),
                flag(s.in_vlmcsd_data),
            ];
            assert_eq!(fields(line), want, "{line}");
            // Every SKU points at a catalog product group of the same application.
            let p = s.product().expect("SKU's product group is in products.csv");
            assert_eq!(p.application_id, s.application_id, "{line}");
        }
    }

    #[test]
    fn every_csvlk_row_is_compiled_field_by_field() {
        let lines = data_lines(include_str!("../data/csvlk.csv"));
        assert_eq!(lines.len(), CSVLKS.len());
        assert_eq!(CSVLKS.len(), 46);
        for (line, c) in lines.iter().zip(CSVLKS) {
            let f = fields(line);
            let idx: Vec<String> = c
                .invalid_winbuild_indexes
                .iter()
                .map(u8::to_string)
                .collect();
            let acts: Vec<String> = c.activates.iter().map(Guid::to_string).collect();
            let want = vec![
                c.csvlk_sku_id.to_string(),
                c.name.to_string(),
                opt(c.group_id),
                opt(c.min_key_id),
                opt(c.max_key_id),
                opt(c.release_date.map(date)),
                flag(c.is_lab),
                flag(c.is_preview),
                c.ini_name.to_string(),
                opt(c.vlmcsd_index),
                // An empty field and `[]` both mean "no restriction".
                if f[10].is_empty() {
                    String::new()
                } else {
                    format!("[{}]", idx.join(","))
                },
                acts.join(" "),
            ];
            assert_eq!(f, want, "{line}");
        }
    }

    #[test]
    fn every_host_build_row_is_compiled_field_by_field() {
        let lines = data_lines(include_str!("../data/hostbuilds.csv"));
        assert_eq!(lines.len(), HOST_BUILDS.len());
        assert_eq!(HOST_BUILDS.len(), 30);
        for (line, b) in lines.iter().zip(HOST_BUILDS) {
            let want = vec![
                opt(b.epid_build_index),
                b.build.to_string(),
                b.platform_id.to_string(),
                date(b.release_date),
                b.name.to_string(),
                flag(b.use_for_epid),
                flag(b.may_be_server),
                flag(b.uses_ndr64),
            ];
            assert_eq!(fields(line), want, "{line}");
        }
    }

    #[test]
    fn every_vlmcsd_group_row_is_compiled_field_by_field() {
        let lines = data_lines(include_str!("../data/vlmcsd-csvlk-groups.csv"));
        assert_eq!(lines.len(), VLMCSD_GROUPS.len());
        assert_eq!(VLMCSD_GROUPS.len(), 6);
        for (line, v) in lines.iter().zip(VLMCSD_GROUPS) {
            let want = vec![
                v.vlmcsd_index.to_string(),
                v.ini_name.to_string(),
                v.group_id.to_string(),
                v.min_key_id.to_string(),
                v.max_key_id.to_string(),
                v.default_epid.to_string(),
            ];
            assert_eq!(fields(line), want, "{line}");
            // vlmcsd's default ePIDs are well-formed (and well known).
            let e: kms_wire::Epid = v.default_epid.parse().unwrap();
            assert_eq!(e.group_id, v.group_id);
        }
    }

    #[test]
    fn spot_checks() {
        let w11 = product(g("58e2134f-8e11-4d17-9cb2-91069c151148")).unwrap();
        assert_eq!(w11.name, "Windows 10/11 2015 (Volume)");
        assert_eq!(w11.required_client_count, 25);
        assert_eq!(w11.default_protocol, 6);
        assert_eq!(w11.application, Application::Windows);
        assert!(w11.is_volume());

        let retail = product(g("e1c51358-fe3e-4203-a4a2-3b6b20c9734e")).unwrap();
        assert!(retail.is_retail && !retail.is_volume());

        let o2010 = product(g("e85af946-2e25-47b7-83e1-bebcebeac611")).unwrap();
        assert_eq!(o2010.application, Application::Office2010);
        assert_eq!(o2010.default_protocol, 4);

        let s = sku(g("c052f164-cdf6-409a-a0cb-853ba0f0f55a")).unwrap();
        assert_eq!(s.edition, "Windows Server 2025 Datacenter");
        assert_eq!(s.gvlk, Some("D764K-2NDRG-47T6Q-P8T8W-YP6DF"));
        assert_eq!(s.product().unwrap().name, "Windows Server 2025");

        let c = csvlks()
            .iter()
            .find(|c| c.name == "Windows Server 2025")
            .unwrap();
        assert_eq!(c.group_id, Some(4918));
        assert_eq!(c.key_id_range(), Some(30000..=20029999));
        assert_eq!(c.invalid_winbuild_indexes, &[0, 1, 2]);
        assert_eq!(
            c.release_date,
            Some(FileTime::from_unix_secs(1_730_419_200))
        );

        let b = host_build(17763).unwrap();
        assert_eq!(
            (b.epid_build_index, b.platform_id, b.uses_ndr64),
            (Some(5), 3612, true)
        );
        assert_eq!(host_build(9200).unwrap().platform_id, 5426);
    }

    #[test]
    fn csvlk_coverage_and_epid_groups() {
        let w10 = g("58e2134f-8e11-4d17-9cb2-91069c151148");
        assert!(csvlks_activating(w10).count() >= 4);
        assert_eq!(preferred_csvlk(w10).unwrap().name, "Windows 10 2019");
        assert_eq!(epid_group_for(w10), 206);
        // Server 2025 → its own group, not the Azure-only one.
        assert_eq!(
            epid_group_for(g("4b83307d-7788-50ff-8d1f-1861915bdb9d")),
            4918
        );
        // Windows 7 and Vista → the Windows 7 key (newest activating both).
        assert_eq!(
            epid_group_for(g("212a64dc-43b1-4d3d-a30c-2fc69d2095c6")),
            172
        );
        assert_eq!(
            epid_group_for(g("e85af946-2e25-47b7-83e1-bebcebeac611")),
            96
        );
        assert_eq!(
            epid_group_for(g("7ba0bf23-d0f5-4072-91d9-d55af5a481b6")),
            3858
        );
        // Server 2022's counted id is not listed by any CSVLK: Windows fallback group.
        let s2022 = g("b74263e4-0f92-46c6-bcf8-c11d5efe2959");
        assert!(!is_csvlk_covered(s2022));
        assert_eq!(epid_group_for(s2022), 206);
        // Unknown id → Windows group.
        assert_eq!(epid_group_for(Guid::NIL), 206);
        let groups = epid_groups();
        assert!(groups.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(groups, vec![96, 152, 168, 172, 206, 3858, 4918]);
        for gid in &groups {
            let c = csvlk_for_group(*gid).expect("every ePID group has a key range");
            assert!(c.key_id_range().is_some());
        }
    }

    #[test]
    fn name_lookup() {
        let e = find_by_name("Windows 11 Enterprise").unwrap();
        assert_eq!(e.sku().unwrap().edition, "Windows 10/11 Enterprise");
        assert_eq!(e.product().unwrap().required_client_count, 25);
        assert_eq!(
            find_by_name("  windows   10 pro ")
                .unwrap()
                .sku()
                .unwrap()
                .edition,
            "Windows 10/11 Pro"
        );
        assert_eq!(
            find_sku_by_name("Windows 10 Enterprise LTSC 2021")
                .unwrap()
                .edition,
            "Windows 10 Enterprise LTSC 2019/2021"
        );
        let p = find_by_name("office 2019").unwrap();
        assert!(matches!(p, NamedEntry::Product(_)));
        assert_eq!(p.product().unwrap().name, "Office 2019");
        assert!(p.sku().is_some());
        assert_eq!(
            find_product_by_name("Windows Server 2022").unwrap().name,
            "Windows Server 2022"
        );
        assert!(find_by_name("Windows 12 Enterprise").is_none());
        assert!(find_by_name("").is_none());
        assert!(!name_matches("Office 2013 / 2016", "Office 2013 2016"));
    }

    #[test]
    fn indexed_lookups_agree_with_scans_of_the_tables() {
        for p in PRODUCTS {
            let scanned = PRODUCTS
                .iter()
                .find(|q| q.kms_counted_id == p.kms_counted_id);
            assert_eq!(product(p.kms_counted_id), scanned);
            assert_eq!(
                epid_group_for(p.kms_counted_id),
                epid_group_scan(p.kms_counted_id)
            );
        }
        for s in SKUS {
            assert_eq!(sku(s.sku_id), SKUS.iter().find(|t| t.sku_id == s.sku_id));
        }
        let unknown = Guid([0xEE; 16]);
        assert_eq!(product(unknown), None);
        assert_eq!(sku(unknown), None);
        assert_eq!(epid_group_for(unknown), epid_group_scan(unknown));
    }
}
