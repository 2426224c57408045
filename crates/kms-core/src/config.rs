//! Configuration every node must agree on, replicated through the state machine (DESIGN §4).
//!
//! Per-node settings (addresses, data directory, TLS, DNS weight) are not here; they live in
//! the node's own config file. Changing a [`ReplicatedConfig`] goes through
//! [`Command::SetConfig`](crate::Command::SetConfig), which applies it only if
//! [`ReplicatedConfig::validate`] accepts it.
//!
//! Durations are whole seconds (`*_secs`), intervals sent to clients are minutes
//! (`*_minutes`), as on the wire.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::pool::{PerPool, Pool};
use crate::{KmsCountedId, catalog};

/// Smallest activation/renewal interval accepted, minutes (`slmgr /sai`, `/sri`).
pub const MIN_INTERVAL_MINUTES: u32 = 15;
/// Largest activation/renewal interval accepted, minutes (30 days).
pub const MAX_INTERVAL_MINUTES: u32 = 43_200;
/// Default activation interval (retry of unactivated clients), minutes.
pub const DEFAULT_ACTIVATION_INTERVAL_MINUTES: u32 = 120;
/// Default renewal interval (activated clients), minutes (7 days).
pub const DEFAULT_RENEWAL_INTERVAL_MINUTES: u32 = 10_080;
/// Default count window: a CMID not seen for 30 days stops counting.
pub const DEFAULT_COUNT_WINDOW_SECS: u64 = 30 * 86_400;
/// Default retention of client records: 90 days.
pub const DEFAULT_RETENTION_SECS: u64 = 90 * 86_400;
/// Default largest accepted difference between request time and host time: 4 hours.
pub const DEFAULT_TIME_SKEW_SECS: u64 = 4 * 3600;
/// Default age after which a known client's renewal is written again: 1 hour.
pub const DEFAULT_RENEW_WRITE_AFTER_SECS: u64 = 3600;
/// Largest count window or retention accepted: 10 years.
pub const MAX_WINDOW_SECS: u64 = 3650 * 86_400;

/// Which product groups (KMS counted ids) the cluster activates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServedGroups {
    /// Every volume (non-retail, non-pre-release) group of the catalog, whether or not a CSVLK
    /// of `csvlk.csv` lists it (the default; see [`crate::policy`]).
    #[default]
    AllVolume,
    /// Only volume groups some CSVLK activates — what a genuine Microsoft host does.
    CsvlkCovered,
    /// Exactly these groups. May include retail or pre-release groups (lab use) and ids that are
    /// not in the catalog (served by application id; for products newer than the catalog).
    Only(BTreeSet<KmsCountedId>),
}

impl ServedGroups {
    /// Whether `id` is listed explicitly (only for [`ServedGroups::Only`]).
    pub fn lists(&self, id: &KmsCountedId) -> bool {
        matches!(self, ServedGroups::Only(set) if set.contains(id))
    }
}

/// How the count reported to clients relates to the number of live clients (PROTOCOL §9.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CountReport {
    /// Microsoft's behaviour: min(live, 2 × the largest N among live clients).
    #[default]
    Capped,
    /// The raw number of live clients.
    Exact,
}

/// Optional caps on the number of live clients (beyond Microsoft; DESIGN §4). Past a cap, new
/// clients are refused with 0xC004F042 while live ones keep renewing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatLimits {
    /// Cap per pool; `None` = unlimited.
    pub pools: PerPool<Option<u32>>,
    /// Cap per product group (KMS counted id).
    pub groups: BTreeMap<KmsCountedId, u32>,
}

impl SeatLimits {
    /// The cap of `pool`, if any.
    pub fn pool(&self, pool: Pool) -> Option<u32> {
        *self.pools.get(pool)
    }

    /// The cap of product group `id`, if any.
    pub fn group(&self, id: &KmsCountedId) -> Option<u32> {
        self.groups.get(id).copied()
    }
}

/// Cluster-wide configuration, replicated (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicatedConfig {
    /// Minutes an unactivated client waits before retrying (15 … 43200, default 120).
    pub activation_interval_minutes: u32,
    /// Minutes between renewals of an activated client (15 … 43200, default 10080).
    pub renewal_interval_minutes: u32,
    /// Product groups the cluster activates.
    pub served_groups: ServedGroups,
    /// Optional seat caps.
    pub seat_limits: SeatLimits,
    /// A client counts while seen within this many seconds (default 30 days).
    pub count_window_secs: u64,
    /// Records not seen for this many seconds are pruned (default 90 days, ≥ count window).
    pub retention_secs: u64,
    /// Capped (Microsoft) or exact count reporting.
    pub count_report: CountReport,
    /// Refuse requests whose time differs from the host's by more than this many seconds
    /// (0xC004F06C); `None` disables the check. Default 4 hours.
    pub time_skew_check_secs: Option<u64>,
    /// A known client's renewal is written again once its record is this old (default 1 h);
    /// younger renewals are answered without a write.
    pub renew_write_after_secs: u64,
}

impl Default for ReplicatedConfig {
    fn default() -> Self {
        ReplicatedConfig {
            activation_interval_minutes: DEFAULT_ACTIVATION_INTERVAL_MINUTES,
            renewal_interval_minutes: DEFAULT_RENEWAL_INTERVAL_MINUTES,
            served_groups: ServedGroups::AllVolume,
            seat_limits: SeatLimits::default(),
            count_window_secs: DEFAULT_COUNT_WINDOW_SECS,
            retention_secs: DEFAULT_RETENTION_SECS,
            count_report: CountReport::Capped,
            time_skew_check_secs: Some(DEFAULT_TIME_SKEW_SECS),
            renew_write_after_secs: DEFAULT_RENEW_WRITE_AFTER_SECS,
        }
    }
}

/// Why a [`ReplicatedConfig`] is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ConfigError {
    /// Activation interval outside 15 … 43200 minutes.
    #[error("activation interval {0} min is outside 15 … 43200 min")]
    ActivationInterval(u32),
    /// Renewal interval outside 15 … 43200 minutes.
    #[error("renewal interval {0} min is outside 15 … 43200 min")]
    RenewalInterval(u32),
    /// Count window zero or longer than 10 years.
    #[error("count window {0} s must be between 1 s and 10 years")]
    CountWindow(u64),
    /// Retention shorter than the count window or longer than 10 years.
    #[error(
        "retention {retention} s must be at least the count window ({count_window} s) and at most 10 years"
    )]
    Retention {
        /// Configured retention.
        retention: u64,
        /// Configured count window.
        count_window: u64,
    },
    /// A time-skew limit of zero would refuse nearly every request.
    #[error("time-skew limit must be positive (or disabled)")]
    TimeSkewZero,
    /// `renew_write_after` must be shorter than the count window, or a renewing client could
    /// expire without being written.
    #[error(
        "renew_write_after {renew_write_after} s must be shorter than the count window ({count_window} s)"
    )]
    RenewWriteAfter {
        /// Configured renew_write_after.
        renew_write_after: u64,
        /// Configured count window.
        count_window: u64,
    },
    /// A seat limit of zero (use served groups to stop serving something).
    #[error("seat limit of zero for {scope}; remove the product from the served groups instead")]
    ZeroSeatLimit {
        /// Pool name or product group id.
        scope: String,
    },
    /// An explicit served-group list is empty.
    #[error("the explicit list of served product groups is empty")]
    NoServedGroups,
}

impl ReplicatedConfig {
    /// Check every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let interval = MIN_INTERVAL_MINUTES..=MAX_INTERVAL_MINUTES;
        if !interval.contains(&self.activation_interval_minutes) {
            return Err(ConfigError::ActivationInterval(
                self.activation_interval_minutes,
            ));
        }
        if !interval.contains(&self.renewal_interval_minutes) {
            return Err(ConfigError::RenewalInterval(self.renewal_interval_minutes));
        }
        if self.count_window_secs == 0 || self.count_window_secs > MAX_WINDOW_SECS {
            return Err(ConfigError::CountWindow(self.count_window_secs));
        }
        if self.retention_secs < self.count_window_secs || self.retention_secs > MAX_WINDOW_SECS {
            return Err(ConfigError::Retention {
                retention: self.retention_secs,
                count_window: self.count_window_secs,
            });
        }
        if self.time_skew_check_secs == Some(0) {
            return Err(ConfigError::TimeSkewZero);
        }
        if self.renew_write_after_secs >= self.count_window_secs {
            return Err(ConfigError::RenewWriteAfter {
                renew_write_after: self.renew_write_after_secs,
                count_window: self.count_window_secs,
            });
        }
        for (pool, limit) in self.seat_limits.pools.iter() {
            if *limit == Some(0) {
                return Err(ConfigError::ZeroSeatLimit {
                    scope: pool.name().to_string(),
                });
            }
        }
        if let Some((id, _)) = self.seat_limits.groups.iter().find(|(_, l)| **l == 0) {
            return Err(ConfigError::ZeroSeatLimit {
                scope: id.to_string(),
            });
        }
        if matches!(&self.served_groups, ServedGroups::Only(s) if s.is_empty()) {
            return Err(ConfigError::NoServedGroups);
        }
        Ok(())
    }

    /// Whether the configuration serves product group `id` (retail/pre-release rules aside;
    /// see [`crate::policy::decide`]).
    pub fn serves(&self, id: &KmsCountedId) -> bool {
        match &self.served_groups {
            ServedGroups::AllVolume => catalog::product(*id).is_some_and(|p| p.is_volume()),
            ServedGroups::CsvlkCovered => {
                catalog::product(*id).is_some_and(|p| p.is_volume())
                    && catalog::is_csvlk_covered(*id)
            }
            ServedGroups::Only(set) => set.contains(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kms_wire::Guid;

    #[test]
    fn defaults_are_valid_and_documented() {
        let c = ReplicatedConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.activation_interval_minutes, 120);
        assert_eq!(c.renewal_interval_minutes, 10_080);
        assert_eq!(c.count_window_secs, 30 * 86_400);
        assert_eq!(c.retention_secs, 90 * 86_400);
        assert_eq!(c.time_skew_check_secs, Some(4 * 3600));
        assert_eq!(c.renew_write_after_secs, 3600);
        assert_eq!(c.count_report, CountReport::Capped);
    }

    #[test]
    fn validation_errors() {
        let ok = ReplicatedConfig::default();
        let cases: Vec<(ReplicatedConfig, ConfigError)> = vec![
            (
                ReplicatedConfig {
                    activation_interval_minutes: 14,
                    ..ok.clone()
                },
                ConfigError::ActivationInterval(14),
            ),
            (
                ReplicatedConfig {
                    renewal_interval_minutes: 43_201,
                    ..ok.clone()
                },
                ConfigError::RenewalInterval(43_201),
            ),
            (
                ReplicatedConfig {
                    count_window_secs: 0,
                    ..ok.clone()
                },
                ConfigError::CountWindow(0),
            ),
            (
                ReplicatedConfig {
                    retention_secs: 86_400,
                    ..ok.clone()
                },
                ConfigError::Retention {
                    retention: 86_400,
                    count_window: 30 * 86_400,
                },
            ),
            (
                ReplicatedConfig {
                    time_skew_check_secs: Some(0),
                    ..ok.clone()
                },
                ConfigError::TimeSkewZero,
            ),
            (
                ReplicatedConfig {
                    renew_write_after_secs: 30 * 86_400,
                    ..ok.clone()
                },
                ConfigError::RenewWriteAfter {
                    renew_write_after: 30 * 86_400,
                    count_window: 30 * 86_400,
                },
            ),
            (
                ReplicatedConfig {
                    served_groups: ServedGroups::Only(BTreeSet::new()),
                    ..ok.clone()
                },
                ConfigError::NoServedGroups,
            ),
        ];
        for (c, e) in cases {
            assert_eq!(c.validate(), Err(e));
        }
        let mut c = ok.clone();
        c.seat_limits.pools.office2010 = Some(0);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ZeroSeatLimit { .. })
        ));
        let mut c = ok.clone();
        c.seat_limits.groups.insert(Guid::NIL, 0);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ZeroSeatLimit { .. })
        ));
        // Boundaries are inclusive.
        let c = ReplicatedConfig {
            activation_interval_minutes: 15,
            renewal_interval_minutes: 43_200,
            retention_secs: 30 * 86_400,
            time_skew_check_secs: None,
            ..ok
        };
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn partial_json_fills_defaults() {
        let c: ReplicatedConfig =
            serde_json::from_str(r#"{"activation_interval_minutes": 60}"#).unwrap();
        assert_eq!(c.activation_interval_minutes, 60);
        assert_eq!(c.renewal_interval_minutes, 10_080);
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<ReplicatedConfig>(&j).unwrap(), c);
    }

    #[test]
    fn served_groups() {
        let w10: Guid = "58e2134f-8e11-4d17-9cb2-91069c151148".parse().unwrap();
        let retail: Guid = "e1c51358-fe3e-4203-a4a2-3b6b20c9734e".parse().unwrap();
        let s2022: Guid = "b74263e4-0f92-46c6-bcf8-c11d5efe2959".parse().unwrap();
        let c = ReplicatedConfig::default();
        assert!(c.serves(&w10) && c.serves(&s2022) && !c.serves(&retail));
        assert!(!c.serves(&Guid::NIL));
        let c = ReplicatedConfig {
            served_groups: ServedGroups::CsvlkCovered,
            ..Default::default()
        };
        assert!(c.serves(&w10) && !c.serves(&s2022));
        let c = ReplicatedConfig {
            served_groups: ServedGroups::Only([retail].into()),
            ..Default::default()
        };
        assert!(!c.serves(&w10) && c.serves(&retail));
    }
}
