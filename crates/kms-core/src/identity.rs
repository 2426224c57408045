//! The cluster's host identity: one ePID per ePID group and one HwId (PROTOCOL §8, DESIGN §4).
//!
//! ## Which ePIDs
//!
//! One ePID per ePID group that [`catalog::epid_group_for`] can select
//! ([`catalog::epid_groups`]: with the shipped data 96, 152, 168, 172, 206, 3858, 4918). This
//! follows DESIGN §4 ("one ePID per ePID group") rather than vlmcsd's six fixed groups: it
//! gives Windows Server 2025, Server 2008/2008 R2, Windows 7/Vista and China Government clients
//! the group id their real host key has, while Windows 8 … 11, Server 2012 … 2019 and Office
//! 2013+ share group 206 as they do on a genuine host. Lab-only, Azure-only and pre-release
//! keys never answer a product group that a production key also activates, so they get none.
//!
//! ## How one is generated ([`HostIdentity::generate`], after vlmcsd's `-r1` mode, §8.2)
//!
//! * **Key range** of a group: the CSVLK chosen by [`catalog::csvlk_for_group`] (production
//!   key activating the most groups, then newest).
//! * **One host build for all groups**, uniformly among `hostbuilds.csv` rows with
//!   `use_for_epid = 1`, `uses_ndr64` equal to the host's NDR64 setting (NDR64 ↔ build ≥ 9200)
//!   and released by `now`, restricted to builds no selected CSVLK lists in
//!   `invalid_winbuild_indexes`. Without NDR64 only 6002/7601 remain and almost every modern
//!   CSVLK rules them out; then consistency with the RPC behaviour wins and the CSVLK
//!   restriction is dropped (as vlmcsd does).
//! * **Platform id** from the build; **one LCID** for all groups from [`LCIDS`].
//! * **Key id** uniformly in the CSVLK's range.
//! * **Activation date** uniformly (to the second) between max(CSVLK release, build release)
//!   and `now` (just `now` if that bound lies in the future); the ePID carries its year and
//!   1-based day of year (vlmcsd's convention; py-kms counts from 0, §13.5).
//! * **HwId**: 8 random bytes.
//!
//! Randomness comes only from the `entropy` callback, so the same bytes give the same identity.
//! Draws use a 128-bit multiply-shift (no rejection loop), so even a constant entropy source
//! terminates.

use std::collections::BTreeMap;

use kms_wire::{Epid, EpidError, FileTime};
use serde::{Deserialize, Serialize};

use crate::catalog::{self, Application, HostBuild};
use crate::time::year_and_day_of_year;
use crate::{KmsCountedId, time};

/// Real Windows locale ids a generated identity picks from (decimal, as in the ePID).
pub const LCIDS: &[u32] = &[
    1025, 1026, 1027, 1028, 1029, 1030, 1031, 1032, 1033, 1035, 1036, 1037, 1038, 1040, 1041, 1042,
    1043, 1044, 1045, 1046, 1048, 1049, 1050, 1051, 1053, 1054, 1055, 1057, 1058, 1060, 1061, 1062,
    1063, 1066, 1081, 1086, 2052, 2057, 2070, 3076, 3081, 3082, 3084, 4105, 5130, 6153,
];

/// The identity every node of the cluster answers with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostIdentity {
    /// ePID per ePID group id (`GGGGG`); each ePID's `group_id` equals its key.
    pub epids: BTreeMap<u32, Epid>,
    /// HwId sent in v6 responses (PROTOCOL §8.4).
    pub hwid: [u8; 8],
}

/// Why a [`HostIdentity`] is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum IdentityError {
    /// No ePID at all.
    #[error("host identity has no ePID")]
    NoEpid,
    /// An ePID is stored under a group id different from its own.
    #[error("ePID of group {actual} stored under group {key}")]
    GroupMismatch {
        /// Map key.
        key: u32,
        /// The ePID's own group id.
        actual: u32,
    },
    /// An ePID field is out of range or its text form does not fit the wire.
    #[error("ePID for group {group} is invalid: {reason}")]
    InvalidEpid {
        /// Group id.
        group: u32,
        /// What is wrong.
        reason: String,
    },
}

impl From<(u32, EpidError)> for IdentityError {
    fn from((group, e): (u32, EpidError)) -> Self {
        IdentityError::InvalidEpid {
            group,
            reason: e.to_string(),
        }
    }
}

impl HostIdentity {
    /// Check that there is at least one ePID, each stored under its own group id, each
    /// valid and short enough for the wire.
    pub fn validate(&self) -> Result<(), IdentityError> {
        if self.epids.is_empty() {
            return Err(IdentityError::NoEpid);
        }
        for (key, e) in &self.epids {
            if *key != e.group_id {
                return Err(IdentityError::GroupMismatch {
                    key: *key,
                    actual: e.group_id,
                });
            }
            e.validate().map_err(|err| (*key, err))?;
            Epid::validate_wire(&e.to_string()).map_err(|err| (*key, err))?;
        }
        Ok(())
    }

    /// The ePID answering product group `id`: the one of [`catalog::epid_group_for`]`(id)`;
    /// if the identity lacks that group (an operator-set partial identity), the one of the
    /// Windows fallback group, else the one with the smallest group id. `None` only if there
    /// is no ePID at all.
    pub fn epid_for(&self, id: KmsCountedId) -> Option<&Epid> {
        self.epids
            .get(&catalog::epid_group_for(id))
            .or_else(|| {
                self.epids
                    .get(&catalog::fallback_epid_group(Application::Windows))
            })
            .or_else(|| self.epids.values().next())
    }

    /// Generate a fresh identity (see the module doc). `entropy` fills a buffer with random
    /// bytes; `now` is the current time; `ndr64` whether the host's RPC layer offers NDR64.
    pub fn generate(
        entropy: &mut dyn FnMut(&mut [u8]),
        now: FileTime,
        ndr64: bool,
    ) -> HostIdentity {
        let groups: Vec<(u32, KeySource)> = catalog::epid_groups()
            .into_iter()
            .map(|g| (g, KeySource::for_group(g)))
            .collect();

        let build = choose_build(entropy, now, ndr64, &groups);
        let lcid = LCIDS[uniform_index(entropy, LCIDS.len())];
        let mut epids = BTreeMap::new();
        for (group_id, src) in &groups {
            let key_id = uniform(entropy, src.min_key_id, src.max_key_id);
            let lower = src
                .release
                .map_or(build.release_date, |r| r.max(build.release_date));
            let lower_secs = lower.unix_secs();
            let now_secs = now.unix_secs();
            let date = if lower_secs >= now_secs {
                now
            } else {
                let span = (now_secs - lower_secs) as u64;
                time::add_secs(lower, uniform(entropy, 0, span))
            };
            let (year, day) = year_and_day_of_year(date);
            let epid = Epid {
                platform_id: build.platform_id,
                group_id: *group_id,
                key_id: key_id.min(999_999_999),
                lcid,
                build: build.build,
                day_of_year: day as u16,
                year: year.clamp(0, 9999) as u16,
            };
            epids.insert(*group_id, epid);
        }
        let mut hwid = [0u8; 8];
        entropy(&mut hwid);
        HostIdentity { epids, hwid }
    }
}

/// Key range, release date and build restrictions an ePID of one group is generated from.
struct KeySource {
    min_key_id: u64,
    max_key_id: u64,
    release: Option<FileTime>,
    invalid_winbuild_indexes: &'static [u8],
}

impl KeySource {
    fn for_group(group: u32) -> KeySource {
        if let Some(c) = catalog::csvlk_for_group(group)
            && let Some(r) = c.key_id_range()
        {
            return KeySource {
                min_key_id: *r.start(),
                max_key_id: *r.end(),
                release: c.release_date,
                invalid_winbuild_indexes: c.invalid_winbuild_indexes,
            };
        }
        match catalog::vlmcsd_group_by_id(group) {
            Some(v) if v.min_key_id <= v.max_key_id => KeySource {
                min_key_id: v.min_key_id,
                max_key_id: v.max_key_id,
                release: None,
                invalid_winbuild_indexes: &[],
            },
            _ => KeySource {
                min_key_id: 0,
                max_key_id: 999_999,
                release: None,
                invalid_winbuild_indexes: &[],
            },
        }
    }

    fn allows(&self, b: &HostBuild) -> bool {
        b.epid_build_index
            .is_none_or(|i| !self.invalid_winbuild_indexes.contains(&i))
    }
}

fn choose_build(
    entropy: &mut dyn FnMut(&mut [u8]),
    now: FileTime,
    ndr64: bool,
    groups: &[(u32, KeySource)],
) -> &'static HostBuild {
    let epid_builds = || catalog::host_builds().iter().filter(|b| b.use_for_epid);
    let mut candidates: Vec<&'static HostBuild> = epid_builds()
        .filter(|b| b.uses_ndr64 == ndr64 && b.release_date <= now)
        .collect();
    if candidates.is_empty() {
        candidates = epid_builds().filter(|b| b.uses_ndr64 == ndr64).collect();
    }
    if candidates.is_empty() {
        candidates = epid_builds().collect();
    }
    let allowed: Vec<&'static HostBuild> = candidates
        .iter()
        .copied()
        .filter(|b| groups.iter().all(|(_, s)| s.allows(b)))
        .collect();
    let pick = if allowed.is_empty() {
        &candidates
    } else {
        &allowed
    };
    // The catalog test guarantees at least one ePID build exists.
    pick.get(uniform_index(entropy, pick.len()))
        .copied()
        .unwrap_or(&FALLBACK_BUILD)
}

/// Used only if `hostbuilds.csv` had no ePID build at all (prevented by tests).
static FALLBACK_BUILD: HostBuild = HostBuild {
    epid_build_index: None,
    build: 17763,
    platform_id: 3612,
    release_date: FileTime::from_unix_secs(1_538_438_400),
    name: "Windows 10 1809 / Server 2019",
    use_for_epid: true,
    may_be_server: true,
    uses_ndr64: true,
};

fn next_u64(entropy: &mut dyn FnMut(&mut [u8])) -> u64 {
    let mut b = [0u8; 8];
    entropy(&mut b);
    u64::from_le_bytes(b)
}

/// Uniform in `lo ..= hi` (`lo` if `hi < lo`), bias ≤ 2⁻⁶⁴, no loop.
fn uniform(entropy: &mut dyn FnMut(&mut [u8]), lo: u64, hi: u64) -> u64 {
    if hi <= lo {
        return lo;
    }
    let span = u128::from(hi - lo) + 1;
    let x = u128::from(next_u64(entropy));
    lo + ((x * span) >> 64) as u64
}

/// Uniform index into a collection of `len` (> 0) elements; 0 if `len` is 0.
fn uniform_index(entropy: &mut dyn FnMut(&mut [u8]), len: usize) -> usize {
    uniform(entropy, 0, (len as u64).saturating_sub(1)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use kms_wire::Guid;

    /// Deterministic xorshift entropy for tests.
    fn xorshift(seed: u64) -> impl FnMut(&mut [u8]) {
        let mut s = seed | 1;
        move |buf: &mut [u8]| {
            for b in buf {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                *b = s as u8;
            }
        }
    }

    fn now() -> FileTime {
        // 2025-06-15T12:00:00Z
        FileTime::from_unix_secs(crate::time::unix_days_from_civil(2025, 6, 15) * 86_400 + 43_200)
    }

    #[test]
    fn generated_identity_is_plausible() {
        for seed in 0..200 {
            for ndr64 in [true, false] {
                let id = HostIdentity::generate(&mut xorshift(seed), now(), ndr64);
                assert_eq!(id.validate(), Ok(()));
                let groups: Vec<u32> = id.epids.keys().copied().collect();
                assert_eq!(groups, catalog::epid_groups());
                let first = id.epids.values().next().unwrap();
                let build = catalog::host_build(first.build).unwrap();
                assert!(build.use_for_epid);
                assert_eq!(build.uses_ndr64, ndr64);
                assert_eq!(ndr64, first.build >= 9200);
                for (g, e) in &id.epids {
                    // One build, platform and LCID for all groups.
                    assert_eq!(
                        (e.build, e.platform_id, e.lcid),
                        (first.build, build.platform_id, first.lcid)
                    );
                    assert!(LCIDS.contains(&e.lcid));
                    let c = catalog::csvlk_for_group(*g).unwrap();
                    assert!(c.key_id_range().unwrap().contains(&e.key_id), "{e}");
                    if ndr64 {
                        assert!(c.allows_build(build), "{e} {c:?}");
                    }
                    // Date between max(release dates) and now.
                    let lower = c
                        .release_date
                        .map_or(build.release_date, |r| r.max(build.release_date));
                    let (ly, ld) = year_and_day_of_year(lower);
                    let (ny, nd) = year_and_day_of_year(now());
                    let d = (i64::from(e.year), u32::from(e.day_of_year));
                    assert!(d >= (ly, ld) && d <= (ny, nd), "{e}");
                    // Text form round-trips and fits.
                    let s = e.to_string();
                    assert_eq!(s.parse::<Epid>().unwrap(), *e);
                    assert!((48..=50).contains(&s.len()), "{s}");
                }
            }
        }
    }

    #[test]
    fn generation_is_deterministic_and_varied() {
        let a = HostIdentity::generate(&mut xorshift(7), now(), true);
        let b = HostIdentity::generate(&mut xorshift(7), now(), true);
        let c = HostIdentity::generate(&mut xorshift(8), now(), true);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Constant entropy terminates too.
        for byte in [0x00, 0xff] {
            let id = HostIdentity::generate(&mut |buf: &mut [u8]| buf.fill(byte), now(), true);
            assert_eq!(id.validate(), Ok(()));
        }
        // A clock before every release date still gives valid ePIDs dated `now`.
        let early = FileTime::from_unix_secs(0);
        let id = HostIdentity::generate(&mut xorshift(1), early, true);
        assert_eq!(id.validate(), Ok(()));
        assert!(
            id.epids
                .values()
                .all(|e| e.year == 1970 && e.day_of_year == 1)
        );
    }

    #[test]
    fn epid_for_maps_products_and_falls_back() {
        let id = HostIdentity::generate(&mut xorshift(3), now(), true);
        let w10: Guid = "58e2134f-8e11-4d17-9cb2-91069c151148".parse().unwrap();
        let s2025: Guid = "4b83307d-7788-50ff-8d1f-1861915bdb9d".parse().unwrap();
        let o2010: Guid = "e85af946-2e25-47b7-83e1-bebcebeac611".parse().unwrap();
        assert_eq!(id.epid_for(w10).unwrap().group_id, 206);
        assert_eq!(id.epid_for(s2025).unwrap().group_id, 4918);
        assert_eq!(id.epid_for(o2010).unwrap().group_id, 96);
        assert_eq!(id.epid_for(Guid::NIL).unwrap().group_id, 206);
        // Partial identity: missing group falls back to 206, then to anything.
        let mut partial = id.clone();
        partial.epids.retain(|g, _| *g == 206);
        assert_eq!(partial.epid_for(s2025).unwrap().group_id, 206);
        partial.epids = [(96, id.epids[&96].clone())].into();
        assert_eq!(partial.epid_for(s2025).unwrap().group_id, 96);
        partial.epids.clear();
        assert!(partial.epid_for(s2025).is_none());
    }

    #[test]
    fn validation() {
        let id = HostIdentity::generate(&mut xorshift(5), now(), true);
        let mut bad = id.clone();
        bad.epids.clear();
        assert_eq!(bad.validate(), Err(IdentityError::NoEpid));
        let mut bad = id.clone();
        let e = bad.epids.remove(&96).unwrap();
        bad.epids.insert(97, e);
        assert!(matches!(
            bad.validate(),
            Err(IdentityError::GroupMismatch {
                key: 97,
                actual: 96
            })
        ));
        let mut bad = id;
        bad.epids.get_mut(&206).unwrap().lcid = 0;
        assert!(matches!(
            bad.validate(),
            Err(IdentityError::InvalidEpid { group: 206, .. })
        ));
    }

    #[test]
    fn serde_round_trip() {
        let id = HostIdentity::generate(&mut xorshift(9), now(), true);
        let j = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<HostIdentity>(&j).unwrap(), id);
        let b = bincode::serialize(&id).unwrap();
        assert_eq!(bincode::deserialize::<HostIdentity>(&b).unwrap(), id);
    }
}
