//! Human units in the config file: byte sizes ("512MiB", "64KiB", 1048576) and durations
//! ("500ms", "2s", "1m").
//!
//! Both parse while deserializing, so a bad value is reported by `toml` with its span (line)
//! like any other type error. Binary units (KiB, MiB, GiB, TiB) are powers of 1024, decimal
//! ones (KB, MB, GB, TB) powers of 1000, as in IEC 80000-13; bare letters ("8M") are refused
//! because they are ambiguous. Decimal fractions are accepted ("1.5GiB", "0.5s") and rounded
//! down to a whole byte / nanosecond.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// Units a size may carry, with their multipliers; matched case-insensitively.
const SIZE_UNITS: &[(&str, u128)] = &[
    ("b", 1),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
];

/// Units a duration may carry, in nanoseconds.
const DURATION_UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

const SIZE_HINT: &str = "a size like \"512MiB\", \"64KiB\", \"1GiB\" or a plain number of bytes";
const DURATION_HINT: &str = "a duration like \"500ms\", \"2s\" or \"1m\"";

/// Parse a byte size: a plain number is bytes, otherwise `<number><unit>` with an optional
/// space between them.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let value = parse_scaled(text, SIZE_UNITS, Some(1))
        .ok_or_else(|| format!("invalid size {text:?}: expected {SIZE_HINT}"))?;
    u64::try_from(value).map_err(|_| format!("size {text:?} is too large"))
}

/// Parse a duration `<number><unit>`; a unit is required (except for "0") because a bare
/// number is ambiguous between seconds and milliseconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    let nanos = parse_scaled(text, DURATION_UNITS, None)
        .ok_or_else(|| format!("invalid duration {text:?}: expected {DURATION_HINT}"))?;
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| format!("duration {text:?} is too large"))?;
    let sub = u32::try_from(nanos % 1_000_000_000).map_err(|_| format!("duration {text:?} is too large"))?;
    Ok(Duration::new(secs, sub))
}

/// `number [unit]` → `floor(number * unit)`; `bare` is the multiplier of a unitless number
/// (None: a unit is required).
fn parse_scaled(text: &str, units: &[(&str, u128)], bare: Option<u128>) -> Option<u128> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.trim_start().to_ascii_lowercase();
    let scale = if unit.is_empty() {
        bare?
    } else {
        units.iter().find(|(name, _)| *name == unit)?.1
    };
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    let mut value = if int_part.is_empty() {
        0
    } else {
        int_part.parse::<u128>().ok()?.checked_mul(scale)?
    };
    // Fraction digits beyond what the scale can resolve cannot change the floor; 30 digits
    // also keeps 10^len inside u128.
    let frac_digits = &frac_part[..frac_part.len().min(30)];
    if !frac_digits.is_empty() {
        if !frac_digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let numerator = frac_digits.parse::<u128>().ok()?;
        let denominator = 10u128.checked_pow(u32::try_from(frac_digits.len()).ok()?)?;
        value = value.checked_add(numerator.checked_mul(scale)? / denominator)?;
    }
    Some(value)
}

/// A byte count read from the config file (string with unit or plain integer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteSize(pub(crate) u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(SIZE_HINT)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("size must not be negative (got {v})")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse_size(v).map(ByteSize).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// A duration read from the config file (string with unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DurationValue(pub(crate) Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = DurationValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(DURATION_HINT)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationValue, E> {
                if v == 0 {
                    return Ok(DurationValue(Duration::ZERO));
                }
                Err(E::custom(format!(
                    "a duration needs a unit: write \"{v}s\" or \"{v}ms\" instead of {v}"
                )))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationValue, E> {
                i64::try_from(v)
                    .map_err(|_| E::custom("duration is too large"))
                    .and_then(|v| self.visit_i64(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationValue, E> {
                parse_duration(v).map(DurationValue).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("0", 0)]
    #[test_case("4096", 4096)]
    #[test_case("1B", 1)]
    #[test_case("64KiB", 64 * 1024)]
    #[test_case("512MiB", 512 * 1024 * 1024)]
    #[test_case("1GiB", 1 << 30)]
    #[test_case("10GiB", 10 << 30)]
    #[test_case("2TiB", 2 << 40)]
    #[test_case("8 MiB", 8 << 20)]
    #[test_case("8mib", 8 << 20)]
    #[test_case("1.5GiB", 3 << 29)]
    #[test_case("0.5KiB", 512)]
    #[test_case("1MB", 1_000_000)]
    #[test_case("3kb", 3_000)]
    fn sizes(text: &str, bytes: u64) {
        assert_eq!(parse_size(text), Ok(bytes));
    }

    #[test_case(""; "empty")]
    #[test_case("MiB"; "unit only")]
    #[test_case("8M"; "ambiguous letter")]
    #[test_case("8 megs"; "unknown unit")]
    #[test_case("-1MiB"; "negative")]
    #[test_case("1.2.3MiB"; "two dots")]
    #[test_case("99999999999TiB"; "overflow")]
    fn bad_sizes(text: &str) {
        let err = parse_size(text).expect_err(text);
        assert!(err.contains(text) || err.contains("too large"), "{err}");
    }

    #[test_case("500ms", Duration::from_millis(500))]
    #[test_case("2s", Duration::from_secs(2))]
    #[test_case("1m", Duration::from_secs(60))]
    #[test_case("1h", Duration::from_secs(3600))]
    #[test_case("0.25s", Duration::from_millis(250))]
    #[test_case("10us", Duration::from_micros(10))]
    #[test_case("0", Duration::ZERO)]
    fn durations(text: &str, expected: Duration) {
        assert_eq!(parse_duration(text), Ok(expected));
    }

    #[test_case("2"; "no unit")]
    #[test_case("2 days"; "unknown unit")]
    #[test_case("s"; "unit only")]
    fn bad_durations(text: &str) {
        assert!(parse_duration(text).expect_err(text).contains("expected a duration"));
    }

    #[derive(Debug, serde::Deserialize)]
    struct Probe {
        size: ByteSize,
        time: Option<DurationValue>,
    }

    #[test]
    fn deserialize_from_toml() {
        let p: Probe = toml::from_str("size = \"1MiB\"\ntime = \"2s\"").unwrap();
        assert_eq!(p.size, ByteSize(1 << 20));
        assert_eq!(p.time, Some(DurationValue(Duration::from_secs(2))));
        let p: Probe = toml::from_str("size = 123").unwrap();
        assert_eq!(p.size, ByteSize(123));
        assert_eq!(p.time, None);
    }

    #[test]
    fn deserialize_errors_carry_a_span() {
        let err = toml::from_str::<Probe>("size = 1\ntime = 5").unwrap_err();
        assert!(err.message().contains("\"5s\""), "{}", err.message());
        assert!(err.span().is_some());
        let err = toml::from_str::<Probe>("size = -4").unwrap_err();
        assert!(err.message().contains("negative"), "{}", err.message());
    }
}
