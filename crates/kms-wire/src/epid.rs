//! Extended PIDs (PROTOCOL.md §8): the `PPPPP-GGGGG-KKK-KKKKKK-03-LCID-BUILD.0000-DDDYYYY`
//! string a KMS host returns in every response.
//!
//! [`Epid`] is the structured form (formatting with [`Display`](fmt::Display), strict parsing
//! with [`FromStr`]); [`Epid::validate_wire`] checks the much weaker constraints that the
//! protocol itself puts on *any* ePID string (§5.6, §8.3), which is all a client verifies.
//! Generating an ePID is just building the struct from values the caller picked (the product
//! catalog lives in `kms-core`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest ePID length in UTF-16 code units that fits the 128-byte wire limit with its NUL.
pub const MAX_WIRE_CHARS: usize = 63;

/// The license channel field of every KMS host ePID (`03` = volume).
pub const VOLUME_CHANNEL: &str = "03";

/// A KMS host extended PID, e.g. `06401-00206-271-298329-03-1033-9600.0000-0452015`.
///
/// Field ranges accepted by [`Epid::validate`] (and therefore by parsing):
/// `platform_id`, `group_id` ≤ 99 999 (5 zero-padded digits); `key_id` ≤ 999 999 999 (written
/// as 3 + 6 zero-padded digits); `lcid` 1 … 99 999 and `build` ≥ 1 (decimal, not padded);
/// `day_of_year` ≤ 366 (3 digits; 0 is allowed because py-kms counts from 0, §13.5);
/// `year` ≤ 9999 (4 digits).
///
/// Serializes as its string form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Epid {
    /// Platform id of the host OS build (`PPPPP`), e.g. 3612 for Windows 10+ hosts.
    pub platform_id: u32,
    /// Product-key group id of the host's CSVLK (`GGGGG`), e.g. 206.
    pub group_id: u32,
    /// Key id (serial) of the CSVLK (`KKK-KKKKKK` = id div 10^6, id mod 10^6).
    pub key_id: u64,
    /// Decimal Windows locale id of the host (1033 = en-US).
    pub lcid: u32,
    /// Host OS build number (written followed by `.0000`).
    pub build: u32,
    /// Day of the year of the host's activation date (`DDD`).
    pub day_of_year: u16,
    /// Year of the host's activation date (`YYYY`).
    pub year: u16,
}

/// Why a string is not an acceptable ePID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EpidError {
    /// Longer than 63 UTF-16 code units: it would not fit the 128-byte wire field (§5.6).
    #[error("ePID is {units} UTF-16 code units long; at most 63 fit on the wire")]
    TooLong {
        /// Length of the offending string in UTF-16 code units.
        units: usize,
    },
    /// Contains a NUL character, which would terminate it early on the wire (§5.6).
    #[error("ePID contains a NUL character")]
    EmbeddedNul,
    /// Not of the form `PPPPP-GGGGG-KKK-KKKKKK-03-LCID-BUILD.0000-DDDYYYY`.
    #[error("ePID does not have the form PPPPP-GGGGG-KKK-KKKKKK-03-LCID-BUILD.0000-DDDYYYY")]
    Format,
    /// One field has the wrong number of digits, a non-digit, or a leading zero where none is
    /// allowed.
    #[error("ePID field {field} is malformed")]
    BadField {
        /// Name of the field (`platform_id`, `group_id`, `key_id`, `channel`, `lcid`,
        /// `build`, `day_of_year`, `year`).
        field: &'static str,
    },
    /// A field value is outside its allowed range (see [`Epid`]).
    #[error("ePID field {field} is out of range")]
    OutOfRange {
        /// Name of the field.
        field: &'static str,
    },
}

impl Epid {
    /// Check the constraints the protocol puts on any ePID string a host sends (§5.6, §8.3):
    /// at most 63 UTF-16 code units (so that it fits 128 bytes with its NUL) and no embedded
    /// NUL. This is all a client verifies; it does not require the structured format.
    pub fn validate_wire(s: &str) -> Result<(), EpidError> {
        if s.contains('\0') {
            return Err(EpidError::EmbeddedNul);
        }
        let units = s.encode_utf16().count();
        if units > MAX_WIRE_CHARS {
            return Err(EpidError::TooLong { units });
        }
        Ok(())
    }

    /// Check that every field is in the range its text form can represent (see [`Epid`]), so
    /// that the [`Display`](fmt::Display) output parses back to the same value and fits the
    /// wire limit.
    pub fn validate(&self) -> Result<(), EpidError> {
        let check = |ok: bool, field: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(EpidError::OutOfRange { field })
            }
        };
        check(self.platform_id <= 99_999, "platform_id")?;
        check(self.group_id <= 99_999, "group_id")?;
        check(self.key_id <= 999_999_999, "key_id")?;
        check((1..=99_999).contains(&self.lcid), "lcid")?;
        check(self.build >= 1, "build")?;
        check(self.day_of_year <= 366, "day_of_year")?;
        check(self.year <= 9999, "year")?;
        Ok(())
    }
}

impl fmt::Display for Epid {
    /// `PPPPP-GGGGG-KKK-KKKKKK-03-LCID-BUILD.0000-DDDYYYY` (§8.1). Only values that pass
    /// [`Epid::validate`] are guaranteed to produce a string that parses back. Widths are
    /// minimums (zero-padded), as `{:05}` would do; the string is built in one piece (it is
    /// formatted for every activation).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Digits::default();
        out.num(u64::from(self.platform_id), 5);
        out.push(b"-");
        out.num(u64::from(self.group_id), 5);
        out.push(b"-");
        out.num(self.key_id / 1_000_000, 3);
        out.push(b"-");
        out.num(self.key_id % 1_000_000, 6);
        out.push(b"-");
        out.push(VOLUME_CHANNEL.as_bytes());
        out.push(b"-");
        out.num(u64::from(self.lcid), 0);
        out.push(b"-");
        out.num(u64::from(self.build), 0);
        out.push(b".0000-");
        out.num(u64::from(self.day_of_year), 3);
        out.num(u64::from(self.year), 4);
        f.write_str(std::str::from_utf8(&out.buf[..out.len]).map_err(|_| fmt::Error)?)
    }
}

/// A stack buffer of ASCII for [`Epid`]'s `Display` (at most 8 numbers of 20 digits and 30
/// separator bytes).
struct Digits {
    buf: [u8; 192],
    len: usize,
}

impl Default for Digits {
    fn default() -> Digits {
        Digits {
            buf: [0; 192],
            len: 0,
        }
    }
}

impl Digits {
    fn push(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// `n` in decimal, zero-padded to at least `width` digits.
    fn num(&mut self, mut n: u64, width: usize) {
        let mut digits = [b'0'; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let start = i.min(digits.len().saturating_sub(width));
        self.push(&digits[start..]);
    }
}

/// Exactly `n` ASCII digits.
fn fixed_digits(s: &str, n: usize, field: &'static str) -> Result<u64, EpidError> {
    if s.len() != n || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EpidError::BadField { field });
    }
    s.parse().map_err(|_| EpidError::BadField { field })
}

/// 1 … `max_len` ASCII digits without a leading zero.
fn plain_digits(s: &str, max_len: usize, field: &'static str) -> Result<u64, EpidError> {
    if s.is_empty()
        || s.len() > max_len
        || s.starts_with('0')
        || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(EpidError::BadField { field });
    }
    s.parse().map_err(|_| EpidError::BadField { field })
}

fn narrow<T: TryFrom<u64>>(v: u64, field: &'static str) -> Result<T, EpidError> {
    T::try_from(v).map_err(|_| EpidError::OutOfRange { field })
}

impl FromStr for Epid {
    type Err = EpidError;

    /// Strict parse: exact field widths, the literal `03` channel and `.0000` suffix, no
    /// surrounding whitespace, and [`Epid::validate`] ranges. Formatting the result gives back
    /// the input exactly.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Epid::validate_wire(s)?;
        let mut parts = s.split('-');
        let mut next = || parts.next().ok_or(EpidError::Format);
        let platform = next()?;
        let group = next()?;
        let key_hi = next()?;
        let key_lo = next()?;
        let channel = next()?;
        let lcid = next()?;
        let build = next()?;
        let date = next()?;
        if parts.next().is_some() {
            return Err(EpidError::Format);
        }
        if channel != VOLUME_CHANNEL {
            return Err(EpidError::BadField { field: "channel" });
        }
        let build = build
            .strip_suffix(".0000")
            .ok_or(EpidError::BadField { field: "build" })?;
        let (day, year) = match (date.get(..3), date.get(3..)) {
            (Some(d), Some(y)) if date.len() == 7 => (d, y),
            _ => {
                return Err(EpidError::BadField {
                    field: "day_of_year",
                });
            }
        };
        let epid = Epid {
            platform_id: narrow(fixed_digits(platform, 5, "platform_id")?, "platform_id")?,
            group_id: narrow(fixed_digits(group, 5, "group_id")?, "group_id")?,
            key_id: fixed_digits(key_hi, 3, "key_id")? * 1_000_000
                + fixed_digits(key_lo, 6, "key_id")?,
            lcid: narrow(plain_digits(lcid, 5, "lcid")?, "lcid")?,
            build: narrow(plain_digits(build, 10, "build")?, "build")?,
            day_of_year: narrow(fixed_digits(day, 3, "day_of_year")?, "day_of_year")?,
            year: narrow(fixed_digits(year, 4, "year")?, "year")?,
        };
        epid.validate()?;
        Ok(epid)
    }
}

impl Serialize for Epid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Epid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The one-piece formatter writes what the format string would, for any field values
        /// (valid or not: widths are minimums).
        #[test]
        fn display_matches_the_format_string(
            platform_id in proptest::prelude::any::<u32>(),
            group_id in proptest::prelude::any::<u32>(),
            key_id in proptest::prelude::any::<u64>(),
            lcid in proptest::prelude::any::<u32>(),
            build in proptest::prelude::any::<u32>(),
            day_of_year in proptest::prelude::any::<u16>(),
            year in proptest::prelude::any::<u16>(),
        ) {
            let e = Epid { platform_id, group_id, key_id, lcid, build, day_of_year, year };
            let want = format!(
                "{:05}-{:05}-{:03}-{:06}-{VOLUME_CHANNEL}-{}-{}.0000-{:03}{:04}",
                platform_id,
                group_id,
                key_id / 1_000_000,
                key_id % 1_000_000,
                lcid,
                build,
                day_of_year,
                year
            );
            proptest::prop_assert_eq!(e.to_string(), want);
        }
    }

    /// Every ePID string that occurs in `testdata/kms-vectors` (captured/, crypto.json,
    /// server-deterministic.json), plus the PROTOCOL.md §8.1 example.
    const VECTOR_EPIDS: &[&str] = &[
        "06401-00206-271-298329-03-1033-9600.0000-0452015",
        "03612-00096-207-975790-03-1095-17763.0000-3272018",
        "03612-00206-245-226287-03-1097-14393.0000-2082022",
        "03612-00206-254-092305-03-11273-14393.0000-1742024",
        "03612-00206-554-776710-03-3073-17763.0000-3092023",
        "03612-00206-554-937708-03-1031-17763.0000-1892020",
        "03612-00206-557-878720-03-18442-14393.0000-3162023",
        "03612-00206-559-778209-03-1082-17763.0000-0162026",
        "03612-00206-561-739112-03-1071-14393.0000-0922024",
        "03612-00206-562-762965-03-2064-14393.0000-1402024",
        "03612-00206-565-038730-03-1037-14393.0000-0372023",
        "03612-00206-567-779635-03-1029-14393.0000-0112022",
        "03612-00206-568-381813-03-1033-17763.0000-2702018",
        "03612-00206-674-774717-03-3073-17763.0000-2852020",
        "03612-00206-684-165761-03-11265-14393.0000-2782020",
        "05426-00206-562-454994-03-1087-9200.0000-3452023",
        "05426-00206-562-967623-03-1092-9200.0000-0642023",
        "05426-00206-567-331610-03-1080-9200.0000-2852024",
        "06401-00206-471-111111-03-1033-9600.0000-2822018",
        "06401-00206-553-789588-03-1092-9600.0000-3072022",
        "06401-00206-556-212291-03-1051-9600.0000-1412026",
        "06401-00206-563-820692-03-1074-9600.0000-2242020",
        "06401-00206-564-541353-03-1065-9600.0000-0452023",
        "55041-00206-568-369902-03-3073-7601.0000-1022022",
    ];

    #[test]
    fn every_vector_epid_round_trips() {
        for s in VECTOR_EPIDS {
            let e: Epid = s.parse().unwrap_or_else(|err| panic!("{s}: {err}"));
            assert_eq!(e.to_string(), *s);
            assert!(Epid::validate_wire(s).is_ok());
        }
    }

    #[test]
    fn fields_of_protocol_example() {
        let e: Epid = "06401-00206-271-298329-03-1033-9600.0000-0452015"
            .parse()
            .unwrap();
        assert_eq!(
            e,
            Epid {
                platform_id: 6401,
                group_id: 206,
                key_id: 271_298_329,
                lcid: 1033,
                build: 9600,
                day_of_year: 45,
                year: 2015,
            }
        );
    }

    #[test]
    fn rejects_malformed() {
        let bad = [
            "",
            "06401-00206-271-298329-03-1033-9600.0000",
            "06401-00206-271-298329-03-1033-9600.0000-0452015-1",
            "6401-00206-271-298329-03-1033-9600.0000-0452015",
            "06401-00206-271-298329-04-1033-9600.0000-0452015",
            "06401-00206-271-298329-03-01033-9600.0000-0452015",
            "06401-00206-271-298329-03-1033-9600.0001-0452015",
            "06401-00206-271-298329-03-1033-9600-0452015",
            "06401-00206-271-298329-03-1033-09600.0000-0452015",
            "06401-00206-271-298329-03-1033-9600.0000-045201",
            "06401-00206-271-298329-03-1033-9600.0000-3672015",
            "06401-00206-27a-298329-03-1033-9600.0000-0452015",
            "06401-00206-271-298329-03-+1033-9600.0000-0452015",
            "06401-00206-271-298329-03-0-9600.0000-0452015",
            " 06401-00206-271-298329-03-1033-9600.0000-0452015",
            "06401-00206-271-298329-03-1033-99999999999.0000-0452015",
            "06401-00206-271-298329-03-1033-9600.0000-045\u{e9}015",
            "06401-00206-271-298329-03-1033-9600.0000-0452015\0",
        ];
        for s in bad {
            assert!(s.parse::<Epid>().is_err(), "{s:?} should not parse");
        }
    }

    #[test]
    fn wire_constraints() {
        assert_eq!(Epid::validate_wire(&"x".repeat(63)), Ok(()));
        assert_eq!(
            Epid::validate_wire(&"x".repeat(64)),
            Err(EpidError::TooLong { units: 64 })
        );
        assert_eq!(Epid::validate_wire("a\0b"), Err(EpidError::EmbeddedNul));
        assert_eq!(Epid::validate_wire(""), Ok(()));
        // A non-BMP character counts as two UTF-16 code units.
        assert!(Epid::validate_wire(&"\u{1F600}".repeat(32)).is_err());
    }

    #[test]
    fn validate_ranges() {
        let mut e: Epid = VECTOR_EPIDS[0].parse().unwrap();
        assert_eq!(e.validate(), Ok(()));
        e.key_id = 1_000_000_000;
        assert_eq!(e.validate(), Err(EpidError::OutOfRange { field: "key_id" }));
        e.key_id = 0;
        e.build = u32::MAX;
        assert_eq!(e.validate(), Ok(()));
        let s = e.to_string();
        assert!(Epid::validate_wire(&s).is_ok());
        assert_eq!(s.parse::<Epid>(), Ok(e));
    }

    #[test]
    fn serde_as_string() {
        let e: Epid = VECTOR_EPIDS[1].parse().unwrap();
        let j = serde_json::to_string(&e).unwrap();
        assert_eq!(j, format!("\"{}\"", VECTOR_EPIDS[1]));
        let back: Epid = serde_json::from_str(&j).unwrap();
        assert_eq!(back, e);
        assert!(serde_json::from_str::<Epid>("\"nope\"").is_err());
    }
}
