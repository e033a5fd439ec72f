//! The layout of a cache key's value in Redis.
//!
//! Every write carries a version Redis assigns (see `lua/set.lua`), so the stored bytes are
//! built from a head and a tail the client prepares and the version the script puts
//! between them:
//!
//! - a value: `{"version":V,"expiresAt":E,"value":J}` (readable with `redis-cli GET`);
//! - a compressed value: `\0BC2` `V` `:` `E` `:` and the LZ4 block of `J` with its size
//!   prepended;
//! - a removal (tombstone): `{"version":V,"removed":true}`, kept for a short while so a
//!   load that started before the removal cannot write its older value back.
//!
//! `V` is the version (decimal), `E` the expiry in Unix milliseconds, `J` the value's JSON.
//! Values written before versions (`{"expiresAt":E,"value":J}`, or that inside a `\0BC1`
//! frame) and values written by something else read as version 0.

use std::sync::Arc;
use std::time::Duration;

use super::frame::{self, FrameError};
use crate::config::CompressionConfig;

/// Start of a plain stored value or tombstone, before the version.
const PLAIN_HEAD: &[u8] = b"{\"version\":";
/// Start of a compressed stored value, before the version.
const COMPRESSED_HEAD: &[u8] = b"\0BC2";
/// Start of a value stored before versions, before its expiry.
const LEGACY_HEAD: &[u8] = b"{\"expiresAt\":";
/// Between the expiry and the value's JSON.
const VALUE: &[u8] = b",\"value\":";
/// What follows the version in a tombstone.
const REMOVED: &[u8] = b",\"removed\":true}";

/// What a read of a cache key found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Found {
    /// A value: its JSON and how long Redis keeps it (`Duration::MAX` when unknown).
    Value(Arc<[u8]>, Duration),
    /// A recent removal.
    Removed,
}

/// A stored value or tombstone with its version (0: written without one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Read {
    pub version: u64,
    pub found: Found,
}

/// The bytes a write stores before and after its version.
pub(super) fn parts(
    json: &[u8],
    expires_at_ms: u64,
    compression: &CompressionConfig,
) -> (&'static [u8], Vec<u8>) {
    let at = expires_at_ms.to_string();
    if compression.enabled && json.len() > compression.threshold_bytes {
        let compressed = lz4_flex::compress_prepend_size(json);
        if compressed.len() + at.len() + 2 < json.len() + VALUE.len() + LEGACY_HEAD.len() {
            let mut tail = Vec::with_capacity(at.len() + 2 + compressed.len());
            tail.push(b':');
            tail.extend_from_slice(at.as_bytes());
            tail.push(b':');
            tail.extend_from_slice(&compressed);
            return (COMPRESSED_HEAD, tail);
        }
    }
    let mut tail = Vec::with_capacity(at.len() + 24 + json.len());
    tail.extend_from_slice(b",\"expiresAt\":");
    tail.extend_from_slice(at.as_bytes());
    tail.extend_from_slice(VALUE);
    tail.extend_from_slice(json);
    tail.push(b'}');
    (PLAIN_HEAD, tail)
}

/// Reads stored bytes; `now_ms` is the wall clock, `max_value` the largest JSON accepted.
///
/// # Errors
/// A compressed value that does not decompress, or a value larger than `max_value`.
pub(super) fn read(bytes: &[u8], now_ms: u64, max_value: usize) -> Result<Read, FrameError> {
    let left = |at: u64| Duration::from_millis(at.saturating_sub(now_ms));
    let too_large = |len: usize| {
        FrameError(format!(
            "value of {len} bytes, more than cache.maxValueBytes ({max_value})"
        ))
    };
    if let Some(rest) = bytes.strip_prefix(PLAIN_HEAD) {
        let (version, rest) = digits(rest).ok_or_else(|| FrameError("bad version".into()))?;
        if rest == REMOVED {
            return Ok(Read {
                version,
                found: Found::Removed,
            });
        }
        let (at, json) = rest
            .strip_prefix(b",\"expiresAt\":")
            .and_then(digits)
            .and_then(|(at, rest)| Some((at, rest.strip_prefix(VALUE)?.strip_suffix(b"}")?)))
            .ok_or_else(|| FrameError("bad versioned value".into()))?;
        if json.len() > max_value {
            return Err(too_large(json.len()));
        }
        return Ok(Read {
            version,
            found: Found::Value(json.into(), left(at)),
        });
    }
    if let Some(rest) = bytes.strip_prefix(COMPRESSED_HEAD) {
        let (version, at, body) = digits(rest)
            .and_then(|(v, rest)| {
                let (at, body) = digits(rest.strip_prefix(b":")?)?;
                Some((v, at, body.strip_prefix(b":")?))
            })
            .ok_or_else(|| FrameError("bad compressed header".into()))?;
        let json = frame::decompress(body, max_value)?;
        return Ok(Read {
            version,
            found: Found::Value(json.into(), left(at)),
        });
    }
    // Written before versions, or by something else.
    let plain = frame::decode(bytes.to_vec())?;
    if plain.len() > max_value {
        return Err(too_large(plain.len()));
    }
    let legacy = plain
        .strip_prefix(LEGACY_HEAD)
        .and_then(digits)
        .and_then(|(at, rest)| Some((at, rest.strip_prefix(VALUE)?.strip_suffix(b"}")?)));
    let found = match legacy {
        Some((at, json)) => Found::Value(json.into(), left(at)),
        None => Found::Value(plain.into(), Duration::MAX),
    };
    Ok(Read { version: 0, found })
}

/// A leading decimal number and what follows it.
fn digits(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let n = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 {
        return None;
    }
    let value = bytes[..n].iter().try_fold(0u64, |v, d| {
        v.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })?;
    Some((value, &bytes[n..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(json: &[u8], at: u64, version: u64, compression: &CompressionConfig) -> Vec<u8> {
        let (head, tail) = parts(json, at, compression);
        [head, version.to_string().as_bytes(), &tail].concat()
    }

    #[test]
    fn values_round_trip_plain_and_compressed_with_their_version() {
        let off = CompressionConfig {
            enabled: false,
            threshold_bytes: 0,
        };
        let on = CompressionConfig {
            enabled: true,
            threshold_bytes: 10,
        };
        let plain = stored(br#"{"a":[1,2]}"#, 2_000, 17, &off);
        assert_eq!(
            plain,
            br#"{"version":17,"expiresAt":2000,"value":{"a":[1,2]}}"#.to_vec()
        );
        let json = format!("\"{}\"", "x".repeat(3000));
        for (bytes, compressed) in [
            (plain.clone(), false),
            (
                stored(json.as_bytes(), 2_000, 1_764_532_000_123_456, &on),
                true,
            ),
        ] {
            assert_eq!(bytes.starts_with(COMPRESSED_HEAD), compressed);
            let read = read(&bytes, 1_500, 1 << 20).unwrap();
            let Found::Value(_, left) = &read.found else {
                panic!("not a value")
            };
            assert_eq!(*left, Duration::from_millis(500));
        }
        let big = read(&stored(json.as_bytes(), 2_000, 9, &on), 0, 1 << 20).unwrap();
        assert_eq!(big.version, 9);
        assert_eq!(
            big.found,
            Found::Value(json.as_bytes().into(), Duration::from_millis(2000))
        );
    }

    #[test]
    fn tombstones_legacy_and_foreign_values_read() {
        let tomb = read(br#"{"version":42,"removed":true}"#, 0, 100).unwrap();
        assert_eq!((tomb.version, tomb.found), (42, Found::Removed));
        let legacy = read(br#"{"expiresAt":1000,"value":[1]}"#, 400, 100).unwrap();
        assert_eq!(
            (legacy.version, legacy.found),
            (
                0,
                Found::Value(b"[1]".as_slice().into(), Duration::from_millis(600))
            )
        );
        let foreign = read(b"[1]", 0, 100).unwrap();
        assert_eq!(
            foreign.found,
            Found::Value(b"[1]".as_slice().into(), Duration::MAX)
        );
    }

    #[test]
    fn digits_read_a_leading_number_and_refuse_none_or_overflow() {
        assert_eq!(digits(b"42,x"), Some((42, b",x".as_slice())));
        assert_eq!(
            digits(b"18446744073709551615"),
            Some((u64::MAX, b"".as_slice()))
        );
        assert_eq!(digits(b"18446744073709551616"), None);
        assert_eq!(digits(b",1"), None);
    }

    #[test]
    fn oversized_and_corrupt_values_are_errors() {
        let off = CompressionConfig::default();
        assert!(read(&stored(b"[1,2,3]", 1, 1, &off), 0, 3).is_err());
        assert!(read(b"{\"version\":x", 0, 100).is_err());
        assert!(read(b"\0BC2:1:junk", 0, 100).is_err());
        let on = CompressionConfig {
            enabled: true,
            threshold_bytes: 1,
        };
        let big = stored("y".repeat(5000).as_bytes(), 1, 1, &on);
        assert!(read(&big, 0, 4000).is_err());
    }
}
