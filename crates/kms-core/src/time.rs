//! Small, total date arithmetic on [`FileTime`] (no clock reads, no chrono).
//!
//! Civil-date conversion uses Howard Hinnant's `days_from_civil` / `civil_from_days`
//! algorithms on the proleptic Gregorian calendar. All operations saturate instead of
//! overflowing.

use kms_wire::FileTime;
use kms_wire::filetime::TICKS_PER_SECOND;

/// Seconds per day.
pub const SECS_PER_DAY: u64 = 86_400;

/// `t + secs`, saturating at the largest FILETIME.
pub fn add_secs(t: FileTime, secs: u64) -> FileTime {
    FileTime(t.0.saturating_add(secs.saturating_mul(TICKS_PER_SECOND)))
}

/// `t − secs`, saturating at FILETIME 0 (1601-01-01).
pub fn sub_secs(t: FileTime, secs: u64) -> FileTime {
    FileTime(t.0.saturating_sub(secs.saturating_mul(TICKS_PER_SECOND)))
}

/// Days since 1970-01-01 of the civil date `y-m-d` (`m` 1…12, `d` 1…31).
pub fn unix_days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let (m, d) = (i64::from(m), i64::from(d));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date `(year, month 1…12, day 1…31)` of a day count since 1970-01-01.
pub fn civil_from_unix_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `(year, day of year 1…366)` of a FILETIME (UTC).
pub fn year_and_day_of_year(t: FileTime) -> (i64, u32) {
    // FILETIME 0 is 1601-01-01; whole days since then, shifted to the Unix epoch.
    let days_since_1601 = (t.0 / TICKS_PER_SECOND / SECS_PER_DAY) as i64;
    let unix_days = days_since_1601 - 134_774; // 1601-01-01 .. 1970-01-01
    let (y, _, _) = civil_from_unix_days(unix_days);
    let jan1 = unix_days_from_civil(y, 1, 1);
    (y, (unix_days - jan1 + 1) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(unix_days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_unix_days(0), (1970, 1, 1));
        assert_eq!(unix_days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(unix_days_from_civil(1601, 1, 1), -134_774);
        // 2015-02-14 is day 45 (the example ePID in PROTOCOL §8.1 ends in 0452015).
        let t = FileTime::from_unix_secs(unix_days_from_civil(2015, 2, 14) * 86_400 + 3600);
        assert_eq!(year_and_day_of_year(t), (2015, 45));
        let t = FileTime::from_unix_secs(unix_days_from_civil(2024, 12, 31) * 86_400);
        assert_eq!(year_and_day_of_year(t), (2024, 366));
        let t = FileTime::from_unix_secs(unix_days_from_civil(2023, 12, 31) * 86_400 + 86_399);
        assert_eq!(year_and_day_of_year(t), (2023, 365));
        assert_eq!(year_and_day_of_year(FileTime(0)), (1601, 1));
        assert_eq!(year_and_day_of_year(FileTime(u64::MAX)).0, 60_056);
    }

    #[test]
    fn round_trip_every_day_for_a_few_centuries() {
        for z in -150_000..150_000i64 {
            let (y, m, d) = civil_from_unix_days(z);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            assert_eq!(unix_days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn saturating_arithmetic() {
        assert_eq!(sub_secs(FileTime(5), 1), FileTime(0));
        assert_eq!(add_secs(FileTime(u64::MAX - 1), 1), FileTime(u64::MAX));
        assert_eq!(add_secs(FileTime(0), u64::MAX), FileTime(u64::MAX));
        assert_eq!(add_secs(FileTime(0), 2), FileTime(20_000_000));
    }
}
