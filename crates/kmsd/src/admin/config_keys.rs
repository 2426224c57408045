//! The replicated configuration as kebab-case keys and text values (`kmsctl config get|set`).
//!
//! Each [`ConfigKey`] reads its value out of a [`ReplicatedConfig`] in exactly the form
//! [`ConfigKey::set`] accepts, so `config get` output can be pasted into `config set`. Parsing
//! is total (every input gives a value or a [`ConfigKeyError`], nothing panics). Range checks
//! are [`ReplicatedConfig::validate`]'s: [`apply`] runs it on the changed configuration, so the
//! admin API refuses a bad value before anything is proposed, with the state machine's own
//! reason.
//!
//! | key | value |
//! |---|---|
//! | `activation-interval` | minutes, 15 … 43200 (`120`, `90m`, `2h`, `1d`) |
//! | `renewal-interval` | minutes, 15 … 43200 |
//! | `served-groups` | `all-volume`, `csvlk-covered`, or a comma list of product group ids or names |
//! | `seat-limit.<pool>` | `windows`, `office2010`, `office2013plus`: a positive number or `none` |
//! | `seat-limit.<group-id>` | a product group (KMS counted id): a positive number or `none` |
//! | `count-window-days` | whole days, 1 … 3650 |
//! | `retention-days` | whole days, ≥ count window, ≤ 3650 |
//! | `count-report` | `capped` (Microsoft) or `exact` |
//! | `time-skew-check` | `off` or whole hours (`4`, `4h`) |
//! | `renew-write-after-minutes` | whole minutes, shorter than the count window |

use std::collections::BTreeSet;
use std::fmt;

use kms_core::catalog;
use kms_core::config::{
    CountReport, DEFAULT_ACTIVATION_INTERVAL_MINUTES, DEFAULT_COUNT_WINDOW_SECS,
    DEFAULT_RENEW_WRITE_AFTER_SECS, DEFAULT_RENEWAL_INTERVAL_MINUTES, DEFAULT_RETENTION_SECS,
    DEFAULT_TIME_SKEW_SECS, ReplicatedConfig, ServedGroups,
};
use kms_core::{ConfigError, KmsCountedId, Pool};

const SECS_PER_DAY: u64 = 86_400;

/// One configuration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKey {
    /// `activation-interval`.
    ActivationInterval,
    /// `renewal-interval`.
    RenewalInterval,
    /// `served-groups`.
    ServedGroups,
    /// `seat-limit.<pool>`.
    PoolSeatLimit(Pool),
    /// `seat-limit.<group-id>`.
    GroupSeatLimit(KmsCountedId),
    /// `count-window-days`.
    CountWindowDays,
    /// `retention-days`.
    RetentionDays,
    /// `count-report`.
    CountReport,
    /// `time-skew-check`.
    TimeSkewCheck,
    /// `renew-write-after-minutes`.
    RenewWriteAfterMinutes,
}

/// Why a key or value was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigKeyError {
    /// No such key.
    #[error("unknown configuration key `{key}`; known keys: {known}")]
    UnknownKey {
        /// The key as given.
        key: String,
        /// The known keys, comma-separated.
        known: String,
    },
    /// The value does not parse for the key.
    #[error("invalid value `{value}` for {key}: expected {expected}")]
    BadValue {
        /// The key.
        key: String,
        /// The value as given.
        value: String,
        /// What the key accepts.
        expected: String,
    },
    /// The value parses but the resulting configuration is refused.
    #[error("{key} = {value} refused: {reason}")]
    Rejected {
        /// The key.
        key: String,
        /// The value as given.
        value: String,
        /// The state machine's reason.
        reason: ConfigError,
    },
}

/// The fixed keys, in the order `config get` lists them (pool seat limits follow
/// `served-groups`, group seat limits come after them).
const FIXED: [ConfigKey; 8] = [
    ConfigKey::ActivationInterval,
    ConfigKey::RenewalInterval,
    ConfigKey::CountWindowDays,
    ConfigKey::RetentionDays,
    ConfigKey::CountReport,
    ConfigKey::TimeSkewCheck,
    ConfigKey::RenewWriteAfterMinutes,
    ConfigKey::ServedGroups,
];

impl ConfigKey {
    /// Parse a key: ASCII case-insensitive, `_` accepted for `-`.
    pub fn parse(key: &str) -> Result<ConfigKey, ConfigKeyError> {
        let norm = key.trim().to_ascii_lowercase().replace('_', "-");
        if let Some(k) = FIXED.iter().find(|k| k.name() == norm) {
            return Ok(*k);
        }
        if let Some(scope) = norm.strip_prefix("seat-limit.") {
            if let Some(pool) = Pool::from_name(scope) {
                return Ok(ConfigKey::PoolSeatLimit(pool));
            }
            if let Ok(id) = scope.parse::<KmsCountedId>() {
                return Ok(ConfigKey::GroupSeatLimit(id));
            }
        }
        Err(ConfigKeyError::UnknownKey {
            key: key.to_string(),
            known: known_keys(),
        })
    }

    /// The canonical key.
    pub fn name(&self) -> String {
        match self {
            ConfigKey::ActivationInterval => "activation-interval".into(),
            ConfigKey::RenewalInterval => "renewal-interval".into(),
            ConfigKey::ServedGroups => "served-groups".into(),
            ConfigKey::PoolSeatLimit(p) => format!("seat-limit.{}", p.name()),
            ConfigKey::GroupSeatLimit(id) => format!("seat-limit.{id}"),
            ConfigKey::CountWindowDays => "count-window-days".into(),
            ConfigKey::RetentionDays => "retention-days".into(),
            ConfigKey::CountReport => "count-report".into(),
            ConfigKey::TimeSkewCheck => "time-skew-check".into(),
            ConfigKey::RenewWriteAfterMinutes => "renew-write-after-minutes".into(),
        }
    }

    /// What the key means, with unit and range.
    pub fn description(&self) -> String {
        match self {
            ConfigKey::ActivationInterval => {
                "minutes an unactivated client waits before retrying (15 … 43200)".into()
            }
            ConfigKey::RenewalInterval => {
                "minutes between renewals of an activated client (15 … 43200)".into()
            }
            ConfigKey::ServedGroups => "product groups activated: all-volume, csvlk-covered, or \
                 a comma list of product group ids or names"
                .into(),
            ConfigKey::PoolSeatLimit(p) => {
                format!("most live clients in the {p} pool (a number, or none)")
            }
            ConfigKey::GroupSeatLimit(id) => {
                let name = catalog::product(*id).map_or("this product group", |p| p.name);
                format!("most live clients of {name} (a number, or none)")
            }
            ConfigKey::CountWindowDays => {
                "days a client counts after its last request (1 … 3650)".into()
            }
            ConfigKey::RetentionDays => {
                "days a client record is kept after its last request (≥ count window)".into()
            }
            ConfigKey::CountReport => {
                "capped (Microsoft: at most 2 × the largest N) or exact".into()
            }
            ConfigKey::TimeSkewCheck => {
                "refuse requests whose clock differs by more than this many hours, or off".into()
            }
            ConfigKey::RenewWriteAfterMinutes => {
                "a known client's renewal is written again once its record is this many \
                 minutes old (shorter than the count window)"
                    .into()
            }
        }
    }

    /// The key's value in `cfg`, in the form [`ConfigKey::set`] accepts.
    pub fn get(&self, cfg: &ReplicatedConfig) -> String {
        match self {
            ConfigKey::ActivationInterval => cfg.activation_interval_minutes.to_string(),
            ConfigKey::RenewalInterval => cfg.renewal_interval_minutes.to_string(),
            ConfigKey::ServedGroups => match &cfg.served_groups {
                ServedGroups::AllVolume => "all-volume".into(),
                ServedGroups::CsvlkCovered => "csvlk-covered".into(),
                ServedGroups::Only(set) => set
                    .iter()
                    .map(|g| g.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            },
            ConfigKey::PoolSeatLimit(p) => limit_text(cfg.seat_limits.pool(*p)),
            ConfigKey::GroupSeatLimit(id) => limit_text(cfg.seat_limits.group(id)),
            ConfigKey::CountWindowDays => units(cfg.count_window_secs, SECS_PER_DAY),
            ConfigKey::RetentionDays => units(cfg.retention_secs, SECS_PER_DAY),
            ConfigKey::CountReport => match cfg.count_report {
                CountReport::Capped => "capped".into(),
                CountReport::Exact => "exact".into(),
            },
            ConfigKey::TimeSkewCheck => match cfg.time_skew_check_secs {
                None => "off".into(),
                Some(s) => units(s, 3600),
            },
            ConfigKey::RenewWriteAfterMinutes => units(cfg.renew_write_after_secs, 60),
        }
    }

    /// The built-in default, in the form [`ConfigKey::get`] shows.
    pub fn default_value(&self) -> String {
        match self {
            ConfigKey::ActivationInterval => DEFAULT_ACTIVATION_INTERVAL_MINUTES.to_string(),
            ConfigKey::RenewalInterval => DEFAULT_RENEWAL_INTERVAL_MINUTES.to_string(),
            ConfigKey::ServedGroups => "all-volume".into(),
            ConfigKey::PoolSeatLimit(_) | ConfigKey::GroupSeatLimit(_) => "none".into(),
            ConfigKey::CountWindowDays => units(DEFAULT_COUNT_WINDOW_SECS, SECS_PER_DAY),
            ConfigKey::RetentionDays => units(DEFAULT_RETENTION_SECS, SECS_PER_DAY),
            ConfigKey::CountReport => "capped".into(),
            ConfigKey::TimeSkewCheck => units(DEFAULT_TIME_SKEW_SECS, 3600),
            ConfigKey::RenewWriteAfterMinutes => units(DEFAULT_RENEW_WRITE_AFTER_SECS, 60),
        }
    }

    /// Set the key in `cfg` from `value` (syntax only; see [`apply`] for the range checks).
    pub fn set(&self, cfg: &mut ReplicatedConfig, value: &str) -> Result<(), ConfigKeyError> {
        let v = value.trim();
        let bad = |expected: &str| ConfigKeyError::BadValue {
            key: self.name(),
            value: value.to_string(),
            expected: expected.to_string(),
        };
        match self {
            ConfigKey::ActivationInterval | ConfigKey::RenewalInterval => {
                let minutes = parse_minutes(v)
                    .ok_or_else(|| bad("minutes, e.g. 120, 90m, 2h or 7d (15 … 43200)"))?;
                let minutes = u32::try_from(minutes).map_err(|_| bad("at most 43200 minutes"))?;
                if *self == ConfigKey::ActivationInterval {
                    cfg.activation_interval_minutes = minutes;
                } else {
                    cfg.renewal_interval_minutes = minutes;
                }
            }
            ConfigKey::ServedGroups => {
                cfg.served_groups = parse_served_groups(v).map_err(|e| bad(&e))?;
            }
            ConfigKey::PoolSeatLimit(p) => {
                *cfg.seat_limits.pools.get_mut(*p) =
                    parse_limit(v).ok_or_else(|| bad("a positive number or none"))?;
            }
            ConfigKey::GroupSeatLimit(id) => {
                match parse_limit(v).ok_or_else(|| bad("a positive number or none"))? {
                    Some(n) => cfg.seat_limits.groups.insert(*id, n),
                    None => cfg.seat_limits.groups.remove(id),
                };
            }
            ConfigKey::CountWindowDays | ConfigKey::RetentionDays => {
                let days =
                    parse_whole(v, &["d", "days"]).ok_or_else(|| bad("whole days, e.g. 30"))?;
                let secs = days
                    .checked_mul(SECS_PER_DAY)
                    .ok_or_else(|| bad("at most 3650 days"))?;
                if *self == ConfigKey::CountWindowDays {
                    cfg.count_window_secs = secs;
                } else {
                    cfg.retention_secs = secs;
                }
            }
            ConfigKey::CountReport => {
                cfg.count_report = match v.to_ascii_lowercase().as_str() {
                    "capped" => CountReport::Capped,
                    "exact" => CountReport::Exact,
                    _ => return Err(bad("capped or exact")),
                };
            }
            ConfigKey::TimeSkewCheck => {
                cfg.time_skew_check_secs = if is_off(v) {
                    None
                } else {
                    let hours = parse_whole(v, &["h", "hours"])
                        .ok_or_else(|| bad("off or whole hours, e.g. 4"))?;
                    Some(hours.checked_mul(3600).ok_or_else(|| bad("fewer hours"))?)
                };
            }
            ConfigKey::RenewWriteAfterMinutes => {
                let minutes = parse_whole(v, &["m", "min", "minutes"])
                    .ok_or_else(|| bad("whole minutes, e.g. 60"))?;
                cfg.renew_write_after_secs = minutes
                    .checked_mul(60)
                    .ok_or_else(|| bad("fewer minutes"))?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Every key with a value in `cfg`: the fixed keys, a seat limit per pool, and one per
/// configured product-group seat limit.
pub fn keys(cfg: &ReplicatedConfig) -> Vec<ConfigKey> {
    let mut out: Vec<ConfigKey> = FIXED.to_vec();
    out.extend(Pool::ALL.map(ConfigKey::PoolSeatLimit));
    out.extend(
        cfg.seat_limits
            .groups
            .keys()
            .map(|id| ConfigKey::GroupSeatLimit(*id)),
    );
    out
}

/// `cfg` with `key` set to `value`, validated as the state machine will: the canonical key
/// and the new configuration, or why not.
pub fn apply(
    cfg: &ReplicatedConfig,
    key: &str,
    value: &str,
) -> Result<(ConfigKey, ReplicatedConfig), ConfigKeyError> {
    let k = ConfigKey::parse(key)?;
    let mut new = cfg.clone();
    k.set(&mut new, value)?;
    new.validate().map_err(|reason| ConfigKeyError::Rejected {
        key: k.name(),
        value: value.to_string(),
        reason,
    })?;
    Ok((k, new))
}

fn known_keys() -> String {
    let mut names: Vec<String> = FIXED.iter().map(|k| k.name()).collect();
    names.push("seat-limit.<windows|office2010|office2013plus|group-id>".into());
    names.join(", ")
}

fn limit_text(limit: Option<u32>) -> String {
    limit.map_or_else(|| "none".into(), |n| n.to_string())
}

/// `secs` in `unit`s: a whole number when it divides, else with up to three decimals.
fn units(secs: u64, unit: u64) -> String {
    if secs.is_multiple_of(unit) {
        (secs / unit).to_string()
    } else {
        let s = format!("{:.3}", secs as f64 / unit as f64);
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn is_off(v: &str) -> bool {
    matches!(
        v.to_ascii_lowercase().as_str(),
        "off" | "none" | "disabled" | "false" | "no"
    )
}

/// A non-negative whole number, optionally followed by one of `suffixes`.
fn parse_whole(v: &str, suffixes: &[&str]) -> Option<u64> {
    let lower = v.trim().to_ascii_lowercase();
    let digits = suffixes
        .iter()
        .find_map(|s| lower.strip_suffix(s))
        .unwrap_or(&lower)
        .trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Minutes, with an optional unit: `m` (default), `h`, `d`.
fn parse_minutes(v: &str) -> Option<u64> {
    let lower = v.trim().to_ascii_lowercase();
    let (digits, factor) = if let Some(d) = lower.strip_suffix('d') {
        (d, 1440)
    } else if let Some(h) = lower.strip_suffix('h') {
        (h, 60)
    } else if let Some(m) = lower.strip_suffix("min") {
        (m, 1)
    } else if let Some(m) = lower.strip_suffix('m') {
        (m, 1)
    } else {
        (lower.as_str(), 1)
    };
    let digits = digits.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(factor)
}

/// A seat limit: a positive number, or `none` (no limit). `0` is passed through so that
/// validation can explain why it is refused.
fn parse_limit(v: &str) -> Option<Option<u32>> {
    if is_off(v) || v.eq_ignore_ascii_case("unlimited") {
        return Some(None);
    }
    parse_whole(v, &[])
        .and_then(|n| u32::try_from(n).ok())
        .map(Some)
}

fn parse_served_groups(v: &str) -> Result<ServedGroups, String> {
    match v.to_ascii_lowercase().as_str() {
        "all-volume" | "all" => return Ok(ServedGroups::AllVolume),
        "csvlk-covered" => return Ok(ServedGroups::CsvlkCovered),
        _ => {}
    }
    let mut set = BTreeSet::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let id = match item.parse::<KmsCountedId>() {
            Ok(id) => id,
            Err(_) => catalog::find_product_by_name(item)
                .map(|p| p.kms_counted_id)
                .ok_or_else(|| {
                    format!(
                        "all-volume, csvlk-covered, or product group ids or names \
                         (`{item}` is neither a GUID nor a product group of the catalog)"
                    )
                })?,
        };
        set.insert(id);
    }
    if set.is_empty() {
        return Err("all-volume, csvlk-covered, or at least one product group".into());
    }
    Ok(ServedGroups::Only(set))
}

#[cfg(test)]
mod tests {
    use super::*;

    const W10: &str = "58e2134f-8e11-4d17-9cb2-91069c151148";

    #[test]
    fn keys_parse_case_insensitively_and_round_trip() {
        let cfg = ReplicatedConfig::default();
        for k in keys(&cfg) {
            assert_eq!(ConfigKey::parse(&k.name()), Ok(k));
            assert_eq!(ConfigKey::parse(&k.name().to_uppercase()), Ok(k));
        }
        assert_eq!(
            ConfigKey::parse("renewal_interval"),
            Ok(ConfigKey::RenewalInterval)
        );
        assert_eq!(
            ConfigKey::parse("seat-limit.Office2010"),
            Ok(ConfigKey::PoolSeatLimit(Pool::Office2010))
        );
        assert_eq!(
            ConfigKey::parse(&format!("seat-limit.{}", W10.to_uppercase())),
            Ok(ConfigKey::GroupSeatLimit(W10.parse().unwrap()))
        );
        for bad in [
            "",
            "renewal",
            "seat-limit.",
            "seat-limit.linux",
            "renewal-interval.x",
        ] {
            let e = ConfigKey::parse(bad).unwrap_err();
            assert!(matches!(e, ConfigKeyError::UnknownKey { .. }), "{bad}");
            assert!(e.to_string().contains("renewal-interval"), "{e}");
        }
    }

    #[test]
    fn every_value_get_shows_is_accepted_by_set() {
        let mut cfg = ReplicatedConfig::default();
        cfg.seat_limits.pools.windows = Some(100);
        cfg.seat_limits.groups.insert(W10.parse().unwrap(), 7);
        cfg.served_groups = ServedGroups::Only([W10.parse().unwrap()].into());
        cfg.time_skew_check_secs = None;
        for k in keys(&cfg) {
            let v = k.get(&cfg);
            let (k2, new) = apply(&cfg, &k.name(), &v).unwrap_or_else(|e| panic!("{k}={v}: {e}"));
            assert_eq!(k2, k);
            assert_eq!(new, cfg, "{k}={v}");
            // Defaults parse too.
            let d = k.default_value();
            let mut c = ReplicatedConfig::default();
            k.set(&mut c, &d)
                .unwrap_or_else(|e| panic!("{k} default {d}: {e}"));
        }
    }

    #[test]
    fn values_and_units() {
        let cfg = ReplicatedConfig::default();
        let set = |k: &str, v: &str| apply(&cfg, k, v).map(|(_, c)| c);
        assert_eq!(
            set("renewal-interval", "60")
                .unwrap()
                .renewal_interval_minutes,
            60
        );
        assert_eq!(
            set("renewal-interval", "2h")
                .unwrap()
                .renewal_interval_minutes,
            120
        );
        assert_eq!(
            set("renewal-interval", "7d")
                .unwrap()
                .renewal_interval_minutes,
            10_080
        );
        assert_eq!(
            set("activation-interval", " 15m ")
                .unwrap()
                .activation_interval_minutes,
            15
        );
        assert_eq!(
            set("count-window-days", "10").unwrap().count_window_secs,
            10 * 86_400
        );
        assert_eq!(
            set("retention-days", "365d").unwrap().retention_secs,
            365 * 86_400
        );
        assert_eq!(
            set("count-report", "EXACT").unwrap().count_report,
            CountReport::Exact
        );
        assert_eq!(
            set("time-skew-check", "off").unwrap().time_skew_check_secs,
            None
        );
        assert_eq!(
            set("time-skew-check", "2h").unwrap().time_skew_check_secs,
            Some(7200)
        );
        assert_eq!(
            set("renew-write-after-minutes", "0")
                .unwrap()
                .renew_write_after_secs,
            0
        );
        assert_eq!(
            set("seat-limit.windows", "500")
                .unwrap()
                .seat_limits
                .pools
                .windows,
            Some(500)
        );
        let c = set("seat-limit.windows", "none").unwrap();
        assert_eq!(c.seat_limits.pools.windows, None);
        let c = set(
            "served-groups",
            "Windows 10/11 2015 (Volume), csvlk-covered",
        )
        .err();
        assert!(matches!(c, Some(ConfigKeyError::BadValue { .. })), "{c:?}");
        let c = set("served-groups", &format!("{W10}, {W10}")).unwrap();
        assert_eq!(
            c.served_groups,
            ServedGroups::Only([W10.parse().unwrap()].into())
        );
        assert_eq!(
            set("served-groups", "csvlk-covered").unwrap().served_groups,
            ServedGroups::CsvlkCovered
        );
        let c = set(&format!("seat-limit.{W10}"), "none").unwrap();
        assert!(c.seat_limits.groups.is_empty());
    }

    #[test]
    fn bad_syntax_and_refused_values_say_why() {
        let cfg = ReplicatedConfig::default();
        let err = |k: &str, v: &str| apply(&cfg, k, v).unwrap_err();
        for (k, v) in [
            ("renewal-interval", "soon"),
            ("renewal-interval", "-5"),
            ("renewal-interval", "1.5h"),
            ("renewal-interval", "99999999999999999999"),
            ("count-window-days", "1.5"),
            ("count-report", "fuzzy"),
            ("time-skew-check", "a while"),
            ("seat-limit.windows", "-1"),
            ("served-groups", ","),
            ("served-groups", "Windows 95"),
        ] {
            assert!(
                matches!(err(k, v), ConfigKeyError::BadValue { .. }),
                "{k}={v}"
            );
        }
        let e = err("renewal-interval", "10");
        assert!(matches!(
            e,
            ConfigKeyError::Rejected {
                reason: ConfigError::RenewalInterval(10),
                ..
            }
        ));
        assert!(e.to_string().contains("15 … 43200"), "{e}");
        assert!(matches!(
            err("renewal-interval", "43201"),
            ConfigKeyError::Rejected { .. }
        ));
        assert!(matches!(
            err("retention-days", "7"),
            ConfigKeyError::Rejected {
                reason: ConfigError::Retention { .. },
                ..
            }
        ));
        assert!(matches!(
            err("seat-limit.office2010", "0"),
            ConfigKeyError::Rejected {
                reason: ConfigError::ZeroSeatLimit { .. },
                ..
            }
        ));
        assert!(matches!(
            err("time-skew-check", "0"),
            ConfigKeyError::Rejected {
                reason: ConfigError::TimeSkewZero,
                ..
            }
        ));
        assert!(matches!(
            err("renew-write-after-minutes", "43200"),
            ConfigKeyError::Rejected { .. }
        ));
    }

    #[test]
    fn display_of_odd_durations() {
        assert_eq!(units(86_400 * 30, 86_400), "30");
        assert_eq!(units(43_200, 86_400), "0.5");
        assert_eq!(units(90, 60), "1.5");
        assert_eq!(units(1, 3600), "0");
    }
}
