//! How a cached value is stored in Redis: plain JSON, or a self-identifying compressed
//! frame above the threshold.
//!
//! JSON text never starts with a NUL byte, so a value starting with [`MAGIC`] is a frame:
//! `MAGIC`, then the LZ4 block with its uncompressed size prepended (`lz4_flex`'s
//! size-prepended format). Small values stay readable with `redis-cli GET`.

use crate::config::CompressionConfig;

/// First bytes of a compressed frame: NUL, `B`, `C`, format version `1`.
pub const MAGIC: &[u8; 4] = b"\0BC1";

/// Largest uncompressed value a frame may declare (64 MiB), so a corrupt or hostile frame
/// cannot make a reader allocate without bound.
pub const MAX_DECOMPRESSED: usize = 64 << 20;

/// Why stored bytes could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("stored value is not a valid cache frame: {0}")]
pub struct FrameError(pub(crate) String);

/// JSON bytes as stored: compressed when enabled, above the threshold and smaller for it.
pub fn encode(json: &[u8], cfg: &CompressionConfig) -> Vec<u8> {
    if cfg.enabled && json.len() > cfg.threshold_bytes {
        let compressed = lz4_flex::compress_prepend_size(json);
        if compressed.len() + MAGIC.len() < json.len() {
            let mut out = Vec::with_capacity(MAGIC.len() + compressed.len());
            out.extend_from_slice(MAGIC);
            out.extend_from_slice(&compressed);
            return out;
        }
    }
    json.to_vec()
}

/// The JSON bytes of a stored value (plain values are returned as they are, uncopied).
///
/// # Errors
/// A frame that does not decompress, or declares more than [`MAX_DECOMPRESSED`] bytes.
pub fn decode(stored: Vec<u8>) -> Result<Vec<u8>, FrameError> {
    let Some(body) = stored.strip_prefix(MAGIC.as_slice()) else {
        return Ok(stored);
    };
    decompress(body, MAX_DECOMPRESSED)
}

/// An LZ4 block with its uncompressed size prepended, refused when it declares more than
/// `max` bytes.
///
/// # Errors
/// A block that does not decompress, or declares more than `max` bytes.
pub fn decompress(body: &[u8], max: usize) -> Result<Vec<u8>, FrameError> {
    let declared = body
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| FrameError("truncated header".into()))?;
    if declared > max {
        return Err(FrameError(format!(
            "declares {declared} bytes, more than {max}"
        )));
    }
    lz4_flex::decompress_size_prepended(body).map_err(|e| FrameError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(threshold: usize) -> CompressionConfig {
        CompressionConfig {
            enabled: true,
            threshold_bytes: threshold,
        }
    }

    #[test]
    fn values_round_trip_around_the_threshold() {
        let json = format!("{{\"v\":\"{}\"}}", "a".repeat(2000));
        for threshold in [0, json.len() - 1, json.len(), json.len() + 1, 10_000] {
            let stored = encode(json.as_bytes(), &cfg(threshold));
            let compressed = stored.starts_with(MAGIC);
            assert_eq!(compressed, json.len() > threshold, "threshold {threshold}");
            assert_eq!(decode(stored).unwrap(), json.as_bytes());
        }
    }

    #[test]
    fn incompressible_or_disabled_values_stay_plain() {
        let json = br#""short""#;
        assert_eq!(encode(json, &cfg(0)), json.to_vec());
        let off = CompressionConfig {
            enabled: false,
            threshold_bytes: 0,
        };
        let big = "x".repeat(5000);
        assert_eq!(encode(big.as_bytes(), &off), big.as_bytes());
    }

    #[test]
    fn corrupt_frames_are_errors() {
        assert!(decode(b"\0BC1\x01".to_vec()).is_err());
        assert!(
            decode(b"\0BC1\xff\xff\xff\xff rest".to_vec())
                .unwrap_err()
                .to_string()
                .contains("declares")
        );
        let mut frame = encode("y".repeat(3000).as_bytes(), &cfg(10));
        frame.truncate(frame.len() - 3);
        assert!(decode(frame).is_err());
    }
}
