//! The time a write is stamped with: the gateway's, one for every executor and for every
//! replay of the write, so a service that stamps what it stores keeps replicas that agree.

use std::time::{SystemTime, UNIX_EPOCH};

/// The request header that carries it; a client's own is never passed on.
pub const TIME_HEADER: &[u8] = b"x-endosec-time";

/// ``at`` in RFC 3339, UTC, to the microsecond: ``2026-12-06T15:04:05.123456Z``.
pub fn rfc3339_micros(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX / 2);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to a civil date (proleptic Gregorian), after Howard Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
            rest / 3600, rest % 3600 / 60, rest % 60, since.subsec_micros())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(secs: u64, micros: u32) -> String {
        rfc3339_micros(UNIX_EPOCH + Duration::new(secs, micros * 1000))
    }

    #[test]
    fn dates_are_civil_ones() {
        // from Python: datetime.fromtimestamp(s, UTC)
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(1_796_569_445, 123_456), "2026-12-06T15:04:05.123456Z");
        assert_eq!(at(4_107_542_399, 999_999), "2100-02-28T23:59:59.999999Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
    }
}
