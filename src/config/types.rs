//! Small value types whose parsing is itself validation, so a bad value is reported by the
//! YAML parser with its file line, not later by a separate check.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Durations written as in the seeds' Helm values: `100ms`, `5s`, `30m`, `24h`, `1h30m`.
pub mod duration {
    use super::*;

    /// Parses `text` as a compact duration.
    ///
    /// # Errors
    /// A message naming the text and the expected form.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let bad = || {
            format!(
                "invalid duration `{text}`: expected a number and a unit without spaces, \
                 like 100ms, 5s, 30m, 24h"
            )
        };
        if text.is_empty() || text.chars().any(char::is_whitespace) {
            return Err(bad());
        }
        humantime::parse_duration(text).map_err(|_| bad())
    }

    /// Formats a duration the way [`parse`] reads it.
    pub fn format(d: &Duration) -> String {
        display(d).to_string()
    }

    /// `d` as [`format`] writes it, without allocating: humantime's units (a year is
    /// 365.25 days, a month 30.44 days) with no spaces, `0s` for zero.
    pub fn display(d: &Duration) -> impl fmt::Display + '_ {
        Compact(d)
    }

    struct Compact<'a>(&'a Duration);

    impl fmt::Display for Compact<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            const YEAR: u64 = 31_557_600;
            const MONTH: u64 = 2_630_016;
            let (secs, nanos) = (self.0.as_secs(), u64::from(self.0.subsec_nanos()));
            if secs == 0 && nanos == 0 {
                return f.write_str("0s");
            }
            let plural = |n: u64| if n > 1 { "s" } else { "" };
            let (years, months) = (secs / YEAR, secs % YEAR / MONTH);
            let days = secs % YEAR % MONTH / 86_400;
            for (n, unit) in [(years, "year"), (months, "month"), (days, "day")] {
                if n > 0 {
                    write!(f, "{n}{unit}{}", plural(n))?;
                }
            }
            let day_secs = secs % YEAR % MONTH % 86_400;
            let units = [
                (day_secs / 3600, "h"),
                (day_secs % 3600 / 60, "m"),
                (day_secs % 60, "s"),
                (nanos / 1_000_000, "ms"),
                (nanos / 1000 % 1000, "us"),
                (nanos % 1000, "ns"),
            ];
            for (n, unit) in units {
                if n > 0 {
                    write!(f, "{n}{unit}")?;
                }
            }
            Ok(())
        }
    }

    /// `serde(with = ...)` serializer.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&display(d))
    }

    /// `serde(with = ...)` deserializer.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    /// The same for `Option<Duration>`.
    pub mod option {
        use super::*;

        /// `serde(with = ...)` serializer.
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_some(&format(d)),
                None => s.serialize_none(),
            }
        }

        /// `serde(with = ...)` deserializer.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|t| parse(&t).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

/// A Redis logical database index, 0–15 (the default `databases 16`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct DbIndex(u8);

impl DbIndex {
    /// The highest index a default Redis accepts.
    pub const MAX: u8 = 15;

    /// A database index.
    ///
    /// # Errors
    /// When `index` is above 15.
    pub fn new(index: i64) -> Result<Self, String> {
        u8::try_from(index)
            .ok()
            .filter(|i| *i <= Self::MAX)
            .map(Self)
            .ok_or_else(|| format!("invalid database {index}: expected 0 to {}", Self::MAX))
    }

    /// The index as Redis takes it.
    pub fn get(self) -> i64 {
        i64::from(self.0)
    }
}

impl<'de> Deserialize<'de> for DbIndex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(i64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for DbIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip_in_compact_form() {
        for text in ["100ms", "5s", "30m", "24h", "1h30m", "0s"] {
            let d = duration::parse(text).unwrap();
            assert_eq!(duration::parse(&duration::format(&d)).unwrap(), d, "{text}");
        }
        assert_eq!(duration::format(&Duration::from_millis(1500)), "1s500ms");
    }

    #[test]
    fn durations_format_as_humantime_without_spaces() {
        let mut cases = vec![
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_secs(1),
            Duration::from_secs(86_400),
            Duration::from_secs(2 * 31_557_600 + 2_630_016 + 86_400 + 3661),
            Duration::new(59, 999_999_999),
            Duration::MAX,
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(Duration::new(
                x % 400_000_000,
                (x >> 32) as u32 % 1_000_000_000,
            ));
        }
        for d in cases {
            let expected = humantime::format_duration(d).to_string().replace(' ', "");
            assert_eq!(duration::format(&d), expected, "{d:?}");
        }
    }

    #[test]
    fn durations_with_spaces_or_no_unit_are_rejected() {
        for text in ["5 seconds", "5", "", "five s", "-1s"] {
            let err = duration::parse(text).unwrap_err();
            assert!(
                err.contains("expected a number and a unit"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn database_index_is_bounded() {
        assert_eq!(DbIndex::new(15).unwrap().get(), 15);
        assert!(DbIndex::new(16).unwrap_err().contains("expected 0 to 15"));
        assert!(DbIndex::new(-1).is_err());
    }
}
