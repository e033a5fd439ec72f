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
        if d.is_zero() {
            return "0s".into();
        }
        humantime::format_duration(*d).to_string().replace(' ', "")
    }

    /// `serde(with = ...)` serializer.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(d))
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
