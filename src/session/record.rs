//! The stored form of a session in Redis: one string, a header then the data.
//!
//! ```text
//! s1 <version:20> <created:13> <expires:13> <idle:13> <deadline:13> <kind> <userId>\n<data>
//! ```
//!
//! Numbers are zero-padded decimals at fixed offsets (times in unix milliseconds, `idle`
//! the idle timeout in milliseconds, `deadline` the idle deadline), so a script reads them
//! with `string.sub` and moves the deadline in place with `SETRANGE`; the data is the
//! session's JSON, unchanged. A plain read is one `GET` and one parse. The scripts write
//! the value (`lua/common.lua`); this module reads it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Session, SessionError, SessionKind};

/// The tag of the layout, first in every value.
const TAG: &[u8] = b"s1 ";
/// Bytes before `<kind>`: the tag and five numbers, each followed by a space.
const FIXED: usize = 80;
/// `(offset, width)` of each number, in header order.
const VERSION: (usize, usize) = (3, 20);
const CREATED: (usize, usize) = (24, 13);
const EXPIRES: (usize, usize) = (38, 13);
const DEADLINE: (usize, usize) = (66, 13);

/// A value's header, borrowed from it.
pub(super) struct Header<'a> {
    pub version: u64,
    pub created: u64,
    pub expires: u64,
    pub deadline: u64,
    pub kind: SessionKind,
    pub user: &'a str,
}

impl<'a> Header<'a> {
    /// The header of `value` and the bytes after it (the data).
    pub(super) fn split(value: &'a [u8]) -> Result<(Self, &'a [u8]), SessionError> {
        if value.len() <= FIXED || !value.starts_with(TAG) {
            return Err(bad("not a session value (expected the `s1` layout)"));
        }
        let end = memchr(b'\n', &value[FIXED..])
            .map(|i| FIXED + i)
            .ok_or_else(|| bad("the header has no end"))?;
        let text = std::str::from_utf8(&value[FIXED..end]).map_err(|_| bad("not UTF-8"))?;
        let (kind, user) = text
            .split_once(' ')
            .ok_or_else(|| bad("no user after the kind"))?;
        let kind = SessionKind::parse(kind)
            .ok_or_else(|| SessionError::Decode(format!("unknown kind `{kind}`")))?;
        let header = Header {
            version: number(value, VERSION)?,
            created: number(value, CREATED)?,
            expires: number(value, EXPIRES)?,
            deadline: number(value, DEADLINE)?,
            kind,
            user,
        };
        Ok((header, &value[end + 1..]))
    }

    /// The session named `id` with this header and `data`.
    pub(super) fn session(&self, id: String, data: serde_json::Value) -> Session {
        Session {
            id,
            handle: String::new(),
            user_id: self.user.to_owned(),
            kind: self.kind,
            data,
            version: self.version,
            created_at: time(self.created),
            expires_at: time(self.expires),
            idle_expires_at: time(self.deadline),
        }
    }
}

/// How a value starts at `version`: the tag and the version as stored (`update.lua`
/// compares and replaces this text).
pub(super) fn version_field(version: u64) -> String {
    format!("s1 {version:020}")
}

/// The session named `id` stored as `value`.
pub(super) fn decode(id: String, value: &[u8]) -> Result<Session, SessionError> {
    let (header, data) = Header::split(value)?;
    let data = serde_json::from_slice(data)
        .map_err(|e| SessionError::Decode(format!("data is not JSON: {e}")))?;
    Ok(header.session(id, data))
}

fn number(value: &[u8], (at, width): (usize, usize)) -> Result<u64, SessionError> {
    let digits = &value[at..at + width];
    if value[at + width] != b' ' || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad("a number of the header is malformed"));
    }
    digits
        .iter()
        .try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or_else(|| bad("a number of the header is out of range"))
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn bad(what: &str) -> SessionError {
    SessionError::Decode(format!("stored session: {what}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn value(user: &str, data: &str) -> Vec<u8> {
        format!(
            "s1 {:020} {:013} {:013} {:013} {:013} admin {user}\n{data}",
            7, 1_700_000_000_000u64, 1_700_086_400_000u64, 1_800_000, 1_700_001_800_000u64
        )
        .into_bytes()
    }

    #[test]
    fn reads_every_field() {
        let s = decode("h".into(), &value("ann lee", r#"{"a":[1]}"#)).unwrap();
        assert_eq!(s.user_id, "ann lee");
        assert_eq!(s.kind, SessionKind::Admin);
        assert_eq!(s.version, 7);
        assert_eq!(s.data, json!({"a": [1]}));
        assert_eq!(s.created_at, time(1_700_000_000_000));
        assert_eq!(s.expires_at, time(1_700_086_400_000));
        assert_eq!(s.idle_expires_at, time(1_700_001_800_000));
    }

    #[test]
    fn the_version_field_is_the_start_of_a_value() {
        let v = value("u", "{}");
        assert_eq!(version_field(7).as_bytes(), &v[..VERSION.0 + VERSION.1]);
        assert_eq!(version_field(u64::MAX), "s1 18446744073709551615");
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let good = value("u", "{}");
        let mut digit = good.clone();
        digit[10] = b'x';
        let mut too_large = good.clone();
        too_large[3..23].copy_from_slice(b"99999999999999999999");
        let mut no_end = good.clone();
        no_end.truncate(good.len() - 3);
        for bad in [
            &b""[..],
            b"s1 1",
            &good[..60],
            &digit,
            &too_large,
            &no_end,
            &value("u", "{")[..],
        ] {
            assert!(
                matches!(decode("h".into(), bad), Err(SessionError::Decode(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
