//! The activation decision (PROTOCOL §7 step 5, §9; DESIGN §3 step 2): given a decoded
//! request, the replicated config and the host's clock, accept it into a [`Pool`] or refuse it
//! with the HRESULT a genuine host returns.
//!
//! Checks, in this order (the first failing one decides):
//!
//! 1. **Protocol version** not 4, 5 or 6 → 0x8007000D (the wire layer normally catches this).
//! 2. **Time window**: `|request_time − now|` above `time_skew_check_secs` (default 4 h) →
//!    0xC004F06C. Disabled when the setting is `None`.
//! 3. **N sanity**: required client count 0 or above 1000 → 0x8007000D. Genuine clients send
//!    25 or 5; vlmcsd refuses N > 1000. A zero N is refused too: it would make the capped
//!    count 0 (2 × 0) and no real client sends it.
//! 4. **Product group** (→ 0xC004F042 for every refusal here):
//!    * a group in the catalog: the application id must be the group's; retail and pre-release
//!      groups are refused unless listed explicitly in [`ServedGroups::Only`](crate::ServedGroups::Only) (lab use); the
//!      group must be served by the config;
//!    * a group not in the catalog: refused, unless listed explicitly in
//!      [`ServedGroups::Only`](crate::ServedGroups::Only) — then it is served in the pool of its application id (an
//!      escape hatch for products newer than the catalog); an unknown application id is
//!      refused.
//!
//! **CSVLK coverage is not required by default.** A genuine host activates only groups its
//! host keys cover (§9.1), and [`ServedGroups::CsvlkCovered`](crate::ServedGroups::CsvlkCovered) gives exactly that. The default,
//! [`ServedGroups::AllVolume`](crate::ServedGroups::AllVolume), serves every volume group of the catalog, because the shipped
//! `csvlk.csv` lists no key for two volume groups real clients send — Windows Server 2022
//! (`b74263e4-…`; the Server 2022 key names `10a7e9fb-…` instead) and Windows 10 Unknown
//! (Volume) — and refusing Server 2022 would be a surprising default. Those groups are answered
//! with the ePID of their application's fallback group ([`crate::catalog::epid_group_for`]).
//!
//! Seat limits are not decided here but when the request is recorded
//! ([`crate::State::apply`]), because only the replicated log orders competing new clients.

use kms_wire::{FileTime, Hresult};
use serde::{Deserialize, Serialize};

use crate::config::ReplicatedConfig;
use crate::pool::Pool;
use crate::state::{RecordRequest, RequestId};
use crate::{ApplicationId, ClientMachineId, KmsCountedId, SkuId, catalog};

/// Largest N a request may carry (vlmcsd's limit).
pub const MAX_REQUIRED_CLIENT_COUNT: u32 = 1000;

/// The fields of a decoded KMS request the host decides and records on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationInput {
    /// Protocol major version (4, 5, 6).
    pub version: u16,
    /// Application id (Windows, Office 2010, Office 2013+).
    pub application_id: ApplicationId,
    /// Edition (informative; hosts do not check it).
    pub sku_id: SkuId,
    /// Product group.
    pub kms_counted_id: KmsCountedId,
    /// The client's CMID.
    pub client_machine_id: ClientMachineId,
    /// The client's previous CMID (all zero if none).
    pub previous_client_machine_id: ClientMachineId,
    /// The client's N policy.
    pub required_client_count: u32,
    /// The client's clock.
    pub request_time: FileTime,
    /// Workstation name (untrusted text).
    pub workstation: String,
    /// Whether the client is a VM.
    pub is_vm: bool,
    /// License status (0 … 6).
    pub license_status: u32,
}

impl ActivationInput {
    /// The [`RecordRequest`] to write for this request once accepted into `pool`.
    pub fn to_record(&self, pool: Pool, request_id: RequestId, source: &str) -> RecordRequest {
        RecordRequest {
            request_id,
            pool,
            client_machine_id: self.client_machine_id,
            previous_client_machine_id: self.previous_client_machine_id,
            kms_counted_id: self.kms_counted_id,
            sku_id: self.sku_id,
            workstation: self.workstation.clone(),
            license_status: self.license_status,
            is_vm: self.is_vm,
            required_count: self.required_client_count,
            protocol_version: self.version,
            source: source.to_string(),
            seen_at: None,
        }
    }

    /// Oddities worth logging but not refusing (PROTOCOL §9.4, "pedantic" checks).
    pub fn anomalies(&self) -> Vec<Anomaly> {
        let mut out = Vec::new();
        if !self.client_machine_id.is_rfc4122_v4() {
            out.push(Anomaly::NotVersion4Guid {
                field: "client_machine_id",
            });
        }
        if self.license_status > 6 {
            out.push(Anomaly::LicenseStatus(self.license_status));
        }
        if let Some(p) = catalog::product(self.kms_counted_id)
            && p.required_client_count != self.required_client_count
        {
            out.push(Anomaly::UnexpectedRequiredCount {
                expected: p.required_client_count,
                got: self.required_client_count,
            });
        }
        if let Some(s) = catalog::sku(self.sku_id)
            && s.kms_counted_id != self.kms_counted_id
        {
            out.push(Anomaly::SkuOfOtherGroup {
                sku_group: s.kms_counted_id,
            });
        }
        out
    }
}

/// Request oddities that are logged, never refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Anomaly {
    /// The CMID is not an RFC 4122 version-4 GUID (clients generate random ones).
    NotVersion4Guid {
        /// Field name.
        field: &'static str,
    },
    /// License status above 6.
    LicenseStatus(u32),
    /// N differs from the catalog's N for the product group.
    UnexpectedRequiredCount {
        /// The catalog's N.
        expected: u32,
        /// The request's N.
        got: u32,
    },
    /// The SKU id belongs to another product group.
    SkuOfOtherGroup {
        /// The SKU's product group.
        sku_group: KmsCountedId,
    },
}

/// Why a request is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RefusalReason {
    /// Protocol version not 4, 5 or 6.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
    /// Request time too far from the host's clock.
    #[error("request time differs from host time by {skew_secs} s (limit {limit_secs} s)")]
    TimeSkew {
        /// Absolute difference, seconds.
        skew_secs: u64,
        /// Configured limit, seconds.
        limit_secs: u64,
    },
    /// Required client count of zero.
    #[error("required client count is 0")]
    RequiredCountZero,
    /// Required client count above 1000.
    #[error("required client count {0} exceeds 1000")]
    RequiredCountTooLarge(u32),
    /// Product group not in the catalog (and not listed explicitly).
    #[error("unknown product group {0}")]
    UnknownProductGroup(KmsCountedId),
    /// Explicitly served unknown group, but the application id is unknown too.
    #[error("unknown application id {0}")]
    UnknownApplication(ApplicationId),
    /// Application id is not the product group's.
    #[error(
        "application id {got} does not match product group {kms_counted_id} (expects {expected})"
    )]
    ApplicationMismatch {
        /// Product group.
        kms_counted_id: KmsCountedId,
        /// The group's application id.
        expected: ApplicationId,
        /// The request's application id.
        got: ApplicationId,
    },
    /// Retail product group.
    #[error("product group {0} is retail")]
    Retail(KmsCountedId),
    /// Pre-release product group.
    #[error("product group {0} is a pre-release")]
    Preview(KmsCountedId),
    /// The configuration does not serve the group.
    #[error("product group {0} is not served by this cluster")]
    NotServed(KmsCountedId),
}

impl RefusalReason {
    /// The HRESULT a host answers with for this reason (PROTOCOL §9.6).
    pub fn hresult(&self) -> Hresult {
        match self {
            RefusalReason::UnsupportedVersion(_)
            | RefusalReason::RequiredCountZero
            | RefusalReason::RequiredCountTooLarge(_) => Hresult::INVALID_DATA,
            RefusalReason::TimeSkew { .. } => Hresult::INVALID_TIMESTAMP,
            RefusalReason::UnknownProductGroup(_)
            | RefusalReason::UnknownApplication(_)
            | RefusalReason::ApplicationMismatch { .. }
            | RefusalReason::Retail(_)
            | RefusalReason::Preview(_)
            | RefusalReason::NotServed(_) => Hresult::KMS_ID_MISMATCH,
        }
    }

    /// A short stable label for metrics (`unknown_product`, `time_skew`, …).
    pub fn label(&self) -> &'static str {
        match self {
            RefusalReason::UnsupportedVersion(_) => "unsupported_version",
            RefusalReason::TimeSkew { .. } => "time_skew",
            RefusalReason::RequiredCountZero => "required_count_zero",
            RefusalReason::RequiredCountTooLarge(_) => "required_count_too_large",
            RefusalReason::UnknownProductGroup(_) => "unknown_product",
            RefusalReason::UnknownApplication(_) => "unknown_application",
            RefusalReason::ApplicationMismatch { .. } => "application_mismatch",
            RefusalReason::Retail(_) => "retail",
            RefusalReason::Preview(_) => "preview",
            RefusalReason::NotServed(_) => "not_served",
        }
    }
}

/// A refused request: the HRESULT to answer with and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("refused with {hresult}: {reason}")]
pub struct Refusal {
    /// HRESULT for the response stub.
    pub hresult: Hresult,
    /// Why.
    pub reason: RefusalReason,
}

impl From<RefusalReason> for Refusal {
    fn from(reason: RefusalReason) -> Self {
        Refusal {
            hresult: reason.hresult(),
            reason,
        }
    }
}

/// Decide a request (see the module doc). `now` is the host's clock.
pub fn decide(
    config: &ReplicatedConfig,
    input: &ActivationInput,
    now: FileTime,
) -> Result<Pool, Refusal> {
    if !(4..=6).contains(&input.version) {
        return Err(RefusalReason::UnsupportedVersion(input.version).into());
    }
    if let Some(limit) = config.time_skew_check_secs {
        let skew = input.request_time.abs_diff_secs(now);
        if skew > limit {
            return Err(RefusalReason::TimeSkew {
                skew_secs: skew,
                limit_secs: limit,
            }
            .into());
        }
    }
    match input.required_client_count {
        0 => return Err(RefusalReason::RequiredCountZero.into()),
        n if n > MAX_REQUIRED_CLIENT_COUNT => {
            return Err(RefusalReason::RequiredCountTooLarge(n).into());
        }
        _ => {}
    }
    let id = input.kms_counted_id;
    let explicit = config.served_groups.lists(&id);
    let Some(product) = catalog::product(id) else {
        if !explicit {
            return Err(RefusalReason::UnknownProductGroup(id).into());
        }
        return Pool::from_application_id(input.application_id)
            .ok_or_else(|| RefusalReason::UnknownApplication(input.application_id).into());
    };
    if product.application_id != input.application_id {
        return Err(RefusalReason::ApplicationMismatch {
            kms_counted_id: id,
            expected: product.application_id,
            got: input.application_id,
        }
        .into());
    }
    if product.is_retail && !explicit {
        return Err(RefusalReason::Retail(id).into());
    }
    if product.is_preview && !explicit {
        return Err(RefusalReason::Preview(id).into());
    }
    if !config.serves(&id) {
        return Err(RefusalReason::NotServed(id).into());
    }
    Ok(product.pool())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServedGroups;
    use crate::time::add_secs;
    use kms_wire::Guid;

    fn g(s: &str) -> Guid {
        s.parse().unwrap()
    }

    const W10: &str = "58e2134f-8e11-4d17-9cb2-91069c151148";
    const WIN: &str = "55c92734-d682-4d71-983e-d6ec3f16059f";
    const O13: &str = "0ff1ce15-a989-479d-af46-f275c6370663";

    fn now() -> FileTime {
        FileTime::from_unix_secs(1_750_000_000)
    }

    fn input() -> ActivationInput {
        ActivationInput {
            version: 6,
            application_id: g(WIN),
            sku_id: g("73111121-5638-40f6-bc11-f1d7b0d64300"),
            kms_counted_id: g(W10),
            client_machine_id: g("6e78f4b1-2b8c-4e7e-9a3f-0c7e1d2b3a4c"),
            previous_client_machine_id: Guid::NIL,
            required_client_count: 25,
            request_time: now(),
            workstation: "PC1.corp.example".into(),
            is_vm: false,
            license_status: 2,
        }
    }

    fn refused(c: &ReplicatedConfig, i: &ActivationInput) -> (Hresult, &'static str) {
        let r = decide(c, i, now()).unwrap_err();
        assert_eq!(r.hresult, r.reason.hresult());
        (r.hresult, r.reason.label())
    }

    #[test]
    fn accepts_volume_products_into_their_pools() {
        let c = ReplicatedConfig::default();
        assert_eq!(decide(&c, &input(), now()), Ok(Pool::Windows));
        for p in catalog::products().iter().filter(|p| p.is_volume()) {
            let i = ActivationInput {
                application_id: p.application_id,
                kms_counted_id: p.kms_counted_id,
                required_client_count: p.required_client_count,
                version: p.default_protocol,
                ..input()
            };
            assert_eq!(decide(&c, &i, now()), Ok(p.pool()), "{}", p.name);
        }
        let o2016 = ActivationInput {
            application_id: g(O13),
            kms_counted_id: g("85b5f61b-320b-4be3-814a-b76b2bfafc82"),
            required_client_count: 5,
            ..input()
        };
        assert_eq!(decide(&c, &o2016, now()), Ok(Pool::Office2013Plus));
    }

    #[test]
    fn refusals() {
        let c = ReplicatedConfig::default();
        let mismatch = Hresult::KMS_ID_MISMATCH;
        let cases: Vec<(ActivationInput, Hresult, &str)> = vec![
            (
                ActivationInput {
                    version: 3,
                    ..input()
                },
                Hresult::INVALID_DATA,
                "unsupported_version",
            ),
            (
                ActivationInput {
                    kms_counted_id: g("00000000-0000-4000-8000-000000000001"),
                    ..input()
                },
                mismatch,
                "unknown_product",
            ),
            (
                ActivationInput {
                    kms_counted_id: g("e1c51358-fe3e-4203-a4a2-3b6b20c9734e"),
                    ..input()
                },
                mismatch,
                "retail",
            ),
            (
                ActivationInput {
                    kms_counted_id: g("5f94a0bb-d5a0-4081-a685-5819418b2fe0"),
                    ..input()
                },
                mismatch,
                "preview",
            ),
            (
                ActivationInput {
                    application_id: g(O13),
                    ..input()
                },
                mismatch,
                "application_mismatch",
            ),
            (
                ActivationInput {
                    required_client_count: 1001,
                    ..input()
                },
                Hresult::INVALID_DATA,
                "required_count_too_large",
            ),
            (
                ActivationInput {
                    required_client_count: 0,
                    ..input()
                },
                Hresult::INVALID_DATA,
                "required_count_zero",
            ),
            (
                ActivationInput {
                    request_time: add_secs(now(), 4 * 3600 + 1),
                    ..input()
                },
                Hresult::INVALID_TIMESTAMP,
                "time_skew",
            ),
            (
                ActivationInput {
                    request_time: crate::time::sub_secs(now(), 4 * 3600 + 1),
                    ..input()
                },
                Hresult::INVALID_TIMESTAMP,
                "time_skew",
            ),
        ];
        for (i, h, label) in cases {
            assert_eq!(refused(&c, &i), (h, label), "{i:?}");
        }
        assert_eq!(Hresult::KMS_ID_MISMATCH.0, 0xC004_F042);
        assert_eq!(Hresult::INVALID_TIMESTAMP.0, 0xC004_F06C);
        assert_eq!(Hresult::INVALID_DATA.0, 0x8007_000D);
    }

    #[test]
    fn boundaries_and_time_skew_settings() {
        let c = ReplicatedConfig::default();
        for t in [
            add_secs(now(), 4 * 3600),
            crate::time::sub_secs(now(), 4 * 3600),
        ] {
            let i = ActivationInput {
                request_time: t,
                ..input()
            };
            assert_eq!(decide(&c, &i, now()), Ok(Pool::Windows));
        }
        let i = ActivationInput {
            required_client_count: 1000,
            request_time: FileTime(0),
            ..input()
        };
        assert!(decide(&c, &i, now()).is_err());
        let off = ReplicatedConfig {
            time_skew_check_secs: None,
            ..Default::default()
        };
        assert_eq!(decide(&off, &i, now()), Ok(Pool::Windows));
        let tight = ReplicatedConfig {
            time_skew_check_secs: Some(60),
            ..Default::default()
        };
        let i = ActivationInput {
            request_time: add_secs(now(), 61),
            ..input()
        };
        assert_eq!(refused(&tight, &i).1, "time_skew");
    }

    #[test]
    fn served_groups_policy() {
        let s2022 = g("b74263e4-0f92-46c6-bcf8-c11d5efe2959");
        let i = ActivationInput {
            kms_counted_id: s2022,
            required_client_count: 5,
            ..input()
        };
        // Default serves Server 2022 although no CSVLK lists it.
        assert_eq!(
            decide(&ReplicatedConfig::default(), &i, now()),
            Ok(Pool::Windows)
        );
        let covered = ReplicatedConfig {
            served_groups: ServedGroups::CsvlkCovered,
            ..Default::default()
        };
        assert_eq!(refused(&covered, &i).1, "not_served");
        assert_eq!(decide(&covered, &input(), now()), Ok(Pool::Windows));

        // Explicit list: only the listed groups; retail and unknown ids allowed when listed.
        let retail = g("e1c51358-fe3e-4203-a4a2-3b6b20c9734e");
        let future = g("12345678-1234-4234-8234-123456789abc");
        let only = ReplicatedConfig {
            served_groups: ServedGroups::Only([retail, future].into()),
            ..Default::default()
        };
        assert_eq!(refused(&only, &input()).1, "not_served");
        let r = ActivationInput {
            kms_counted_id: retail,
            ..input()
        };
        assert_eq!(decide(&only, &r, now()), Ok(Pool::Windows));
        let f = ActivationInput {
            kms_counted_id: future,
            application_id: g(O13),
            ..input()
        };
        assert_eq!(decide(&only, &f, now()), Ok(Pool::Office2013Plus));
        let f = ActivationInput {
            application_id: Guid::NIL,
            ..f
        };
        assert_eq!(refused(&only, &f).1, "unknown_application");
        // Listing does not bypass the application check of known groups.
        let r = ActivationInput {
            application_id: g(O13),
            ..r
        };
        assert_eq!(refused(&only, &r).1, "application_mismatch");
    }

    #[test]
    fn record_and_anomalies() {
        let i = input();
        let r = i.to_record(Pool::Windows, 42, "10.0.0.1:50000");
        assert_eq!(r.client_machine_id, i.client_machine_id);
        assert_eq!(r.required_count, 25);
        assert_eq!(r.protocol_version, 6);
        assert_eq!(r.request_id, 42);
        assert_eq!(r.source, "10.0.0.1:50000");
        assert!(i.anomalies().is_empty(), "{:?}", i.anomalies());
        let odd = ActivationInput {
            client_machine_id: g("6e78f4b1-2b8c-1e7e-9a3f-0c7e1d2b3a4c"),
            license_status: 9,
            required_client_count: 5,
            ..input()
        };
        assert_eq!(
            odd.anomalies(),
            vec![
                Anomaly::NotVersion4Guid {
                    field: "client_machine_id"
                },
                Anomaly::LicenseStatus(9),
                Anomaly::UnexpectedRequiredCount {
                    expected: 25,
                    got: 5
                },
            ]
        );
    }
}
