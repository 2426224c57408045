//! GUIDs in the Microsoft mixed-endian wire layout (PROTOCOL.md §5.1).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A GUID, stored as the 16 bytes of its canonical text form read left to right
/// (`AABBCCDD-EEFF-GGHH-IIJJ-KKLLMMNNOOPP` → `AA BB CC DD EE FF GG HH II JJ KK …`).
///
/// On the wire the first three groups are little-endian; use [`Guid::from_wire`] and
/// [`Guid::to_wire`] to convert.
///
/// Ordered by its 16 bytes, lexicographically (compared as one big-endian 128-bit number,
/// which is the same order and cheaper: client records are keyed by GUIDs).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid(pub [u8; 16]);

impl Ord for Guid {
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        u128::from_be_bytes(self.0).cmp(&u128::from_be_bytes(other.0))
    }
}

impl PartialOrd for Guid {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The text form was not a GUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a GUID: expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx")]
pub struct GuidParseError;

impl Guid {
    /// The all-zero GUID.
    pub const NIL: Guid = Guid([0; 16]);

    /// Build from the 16 wire bytes (mixed-endian layout).
    pub const fn from_wire(w: [u8; 16]) -> Guid {
        Guid([
            w[3], w[2], w[1], w[0], w[5], w[4], w[7], w[6], w[8], w[9], w[10], w[11], w[12], w[13],
            w[14], w[15],
        ])
    }

    /// Build from the first 16 bytes of `bytes`, in wire layout. `None` if too short.
    pub fn from_wire_slice(bytes: &[u8]) -> Option<Guid> {
        let w: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
        Some(Guid::from_wire(w))
    }

    /// The 16 wire bytes (mixed-endian layout).
    pub const fn to_wire(&self) -> [u8; 16] {
        let b = self.0;
        [
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
            b[14], b[15],
        ]
    }

    /// Parse the canonical text form at compile time or run time. Panics are impossible:
    /// returns `None` for anything that is not exactly `8-4-4-4-12` hex digits.
    pub const fn parse_const(s: &str) -> Option<Guid> {
        let s = s.as_bytes();
        if s.len() != 36 || s[8] != b'-' || s[13] != b'-' || s[18] != b'-' || s[23] != b'-' {
            return None;
        }
        let mut out = [0u8; 16];
        let mut i = 0; // index into s
        let mut o = 0; // index into out
        while o < 16 {
            if s[i] == b'-' {
                i += 1;
                continue;
            }
            let hi = match hex_val(s[i]) {
                Some(v) => v,
                None => return None,
            };
            let lo = match hex_val(s[i + 1]) {
                Some(v) => v,
                None => return None,
            };
            out[o] = (hi << 4) | lo;
            o += 1;
            i += 2;
        }
        Some(Guid(out))
    }

    /// True for RFC 4122 version-4 (random) GUIDs, which is what clients generate for CMIDs.
    pub const fn is_rfc4122_v4(&self) -> bool {
        (self.0[6] >> 4) == 4 && (self.0[8] & 0xC0) == 0x80
    }

    /// True for the all-zero GUID.
    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }
}

const fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Guid {
    /// The 36-character form: the 16 bytes in order as lowercase hex, with dashes after bytes
    /// 4, 6, 8 and 10. Written in one piece (formatting sixteen `{:02x}` arguments showed up
    /// in the per-activation profile).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 36];
        let mut o = 0;
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                out[o] = b'-';
                o += 1;
            }
            out[o] = HEX[usize::from(byte >> 4)];
            out[o + 1] = HEX[usize::from(byte & 0x0f)];
            o += 2;
        }
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

impl FromStr for Guid {
    type Err = GuidParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().trim_start_matches('{').trim_end_matches('}');
        Guid::parse_const(t).ok_or(GuidParseError)
    }
}

impl Serialize for Guid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Guid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            Ok(Guid(<[u8; 16]>::deserialize(d)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The one-piece formatter writes what sixteen `{:02x}` would, and parses back.
        #[test]
        fn display_matches_hex_formatting_and_parses_back(b in proptest::prelude::any::<[u8; 16]>()) {
            let hex: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
            let want = format!(
                "{}-{}-{}-{}-{}",
                hex[0..4].concat(),
                hex[4..6].concat(),
                hex[6..8].concat(),
                hex[8..10].concat(),
                hex[10..16].concat()
            );
            let g = Guid(b);
            proptest::prop_assert_eq!(g.to_string(), want.clone());
            proptest::prop_assert_eq!(want.parse::<Guid>().unwrap(), g);
        }

        /// GUIDs order as their bytes do (stored client records depend on this order).
        #[test]
        fn order_is_the_byte_order(
            a in proptest::prelude::any::<[u8; 16]>(),
            b in proptest::prelude::any::<[u8; 16]>(),
            same_prefix in 0usize..16,
        ) {
            let mut b = b;
            b[..same_prefix].copy_from_slice(&a[..same_prefix]);
            proptest::prop_assert_eq!(Guid(a).cmp(&Guid(b)), a.cmp(&b));
            proptest::prop_assert_eq!(Guid(a).partial_cmp(&Guid(b)), Some(a.cmp(&b)));
        }
    }

    #[test]
    fn wire_layout_matches_protocol_example() {
        let g: Guid = "55c92734-d682-4d71-983e-d6ec3f16059f".parse().unwrap();
        assert_eq!(
            g.to_wire(),
            [
                0x34, 0x27, 0xc9, 0x55, 0x82, 0xd6, 0x71, 0x4d, 0x98, 0x3e, 0xd6, 0xec, 0x3f, 0x16,
                0x05, 0x9f
            ]
        );
        assert_eq!(Guid::from_wire(g.to_wire()), g);
        assert_eq!(g.to_string(), "55c92734-d682-4d71-983e-d6ec3f16059f");
    }

    #[test]
    fn rejects_malformed_text() {
        for s in [
            "",
            "55c92734d6824d71983ed6ec3f16059f",
            "55c92734-d682-4d71-983e-d6ec3f16059g",
            "55c92734-d682-4d71-983e-d6ec3f16059",
        ] {
            assert!(s.parse::<Guid>().is_err(), "{s}");
        }
        assert!(
            "{55C92734-D682-4D71-983E-D6EC3F16059F}"
                .parse::<Guid>()
                .is_ok()
        );
    }
}
