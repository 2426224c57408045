//! Windows FILETIME: 100-ns intervals since 1601-01-01T00:00:00Z (PROTOCOL.md §5.2).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// FILETIME ticks per second.
pub const TICKS_PER_SECOND: u64 = 10_000_000;
/// Seconds between 1601-01-01 and 1970-01-01.
pub const UNIX_EPOCH_OFFSET_SECS: u64 = 11_644_473_600;

/// A FILETIME value as carried in KMS requests and responses.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FileTime(pub u64);

impl FileTime {
    /// From whole seconds since the Unix epoch (negative times clamp to the Unix epoch).
    pub const fn from_unix_secs(secs: i64) -> FileTime {
        let s = if secs < 0 { 0 } else { secs as u64 };
        FileTime((s + UNIX_EPOCH_OFFSET_SECS) * TICKS_PER_SECOND)
    }

    /// Seconds since the Unix epoch (may be negative for times before 1970).
    pub const fn unix_secs(self) -> i64 {
        (self.0 / TICKS_PER_SECOND) as i64 - UNIX_EPOCH_OFFSET_SECS as i64
    }

    /// From a [`SystemTime`]; times before 1970 clamp to the Unix epoch.
    pub fn from_system_time(t: SystemTime) -> FileTime {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        FileTime(
            (d.as_secs() + UNIX_EPOCH_OFFSET_SECS) * TICKS_PER_SECOND
                + u64::from(d.subsec_nanos()) / 100,
        )
    }

    /// As a [`SystemTime`]; times before 1970 clamp to the Unix epoch.
    pub fn to_system_time(self) -> SystemTime {
        let unix_ticks = self
            .0
            .saturating_sub(UNIX_EPOCH_OFFSET_SECS * TICKS_PER_SECOND);
        UNIX_EPOCH
            + Duration::from_secs(unix_ticks / TICKS_PER_SECOND)
            + Duration::from_nanos((unix_ticks % TICKS_PER_SECOND) * 100)
    }

    /// Absolute difference in whole seconds.
    pub fn abs_diff_secs(self, other: FileTime) -> u64 {
        self.0.abs_diff(other.0) / TICKS_PER_SECOND
    }
}

impl fmt::Debug for FileTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileTime({} = unix {})", self.0, self.unix_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_example_time() {
        // PROTOCOL.md §6.6: 133486382450000000 = 2024-01-02T03:04:05Z
        let t = FileTime(133_486_382_450_000_000);
        assert_eq!(t.unix_secs(), 1_704_164_645);
        assert_eq!(FileTime::from_unix_secs(1_704_164_645), t);
        assert_eq!(FileTime::from_system_time(t.to_system_time()), t);
    }
}
