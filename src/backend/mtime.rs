//! The text form of a stored modification time.
//!
//! rclone and s3fs store a file's mtime in S3 user metadata `x-amz-meta-mtime` as seconds
//! since the Unix epoch: rclone with a fraction (`1700000000.123456789`), s3fs as a plain
//! integer. We write the rclone form and read both, so buckets written by either tool (or by
//! us) show the same times. Times before the epoch are written with a leading `-`, the
//! whole value being negative (`-1.5` is 1.5 s before the epoch).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The user-metadata name (without the `x-amz-meta-` prefix) holding the mtime.
pub(crate) const MTIME_METADATA_KEY: &str = "mtime";

/// `t` as seconds since the epoch with nine fractional digits.
pub(crate) fn format_mtime(t: SystemTime) -> String {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => format!("{}.{:09}", d.as_secs(), d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            format!("-{}.{:09}", d.as_secs(), d.subsec_nanos())
        }
    }
}

/// Parse seconds since the epoch, with an optional fraction (digits past nanoseconds are
/// ignored). `None` for anything else, so a foreign or corrupt value is simply not used.
pub(crate) fn parse_mtime(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (negative, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = match body.split_once('.') {
        Some((a, b)) => (a, b),
        None => (body, ""),
    };
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: u64 = secs.parse().ok()?;
    let mut nanos: u32 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        let digit = u32::from(b - b'0');
        let exp = u32::try_from(8 - i).ok()?;
        nanos += digit * 10u32.pow(exp);
    }
    let d = Duration::new(secs, nanos);
    if negative {
        UNIX_EPOCH.checked_sub(d)
    } else {
        UNIX_EPOCH.checked_add(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("1700000000.123456789", 1_700_000_000, 123_456_789)]
    #[test_case("1700000000", 1_700_000_000, 0; "integer seconds as s3fs writes them")]
    #[test_case("1700000000.5", 1_700_000_000, 500_000_000; "short fraction")]
    #[test_case("1700000000.1234567891234", 1_700_000_000, 123_456_789; "extra digits ignored")]
    #[test_case(" 12.000000001 ", 12, 1; "surrounding space")]
    fn parses(s: &str, secs: u64, nanos: u32) {
        assert_eq!(parse_mtime(s), Some(UNIX_EPOCH + Duration::new(secs, nanos)));
    }

    #[test_case(""; "empty")]
    #[test_case("abc")]
    #[test_case("1.2.3")]
    #[test_case(".5"; "no integer part")]
    #[test_case("1e9")]
    #[test_case("2023-11-14T22:13:20Z"; "rfc3339 is not this format")]
    #[test_case("99999999999999999999999"; "overflow")]
    fn rejects(s: &str) {
        assert_eq!(parse_mtime(s), None);
    }

    #[test]
    fn round_trips_including_before_the_epoch() {
        for t in [
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::new(981_158_400, 0),
            UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
            UNIX_EPOCH - Duration::new(1, 500_000_000),
        ] {
            assert_eq!(parse_mtime(&format_mtime(t)), Some(t), "{}", format_mtime(t));
        }
        assert_eq!(
            format_mtime(UNIX_EPOCH + Duration::new(1_700_000_000, 5)),
            "1700000000.000000005"
        );
        assert_eq!(format_mtime(UNIX_EPOCH - Duration::from_millis(1500)), "-1.500000000");
    }
}
