//! Session ids: 256 bits from the operating system's CSPRNG, base64url without padding;
//! and handles: the SHA-256 of an id, same format.
//!
//! The id is the only credential a session has, so it is never chosen by a client and
//! never derived from anything a client knows. 256 bits (twice the usual 128-bit floor)
//! leaves guessing hopeless even with billions of live sessions. The stores keep only the
//! handle: an RDB dump, a replica, `MONITOR` or `SLOWLOG` shows handles, and a handle
//! presented as an id is hashed again and finds nothing. Handles name sessions in lists
//! and revoke them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRngCore;
use rand::rngs::OsRng;

/// Random bytes in an id.
pub const ID_BYTES: usize = 32;

/// Length of an id in characters (43 for 32 bytes).
pub const ID_LEN: usize = ID_BYTES.div_ceil(3) * 4 - (3 - ID_BYTES % 3) % 3;

/// A fresh id.
///
/// # Panics
/// When the operating system's random source fails, which leaves no safe way to go on.
pub fn new_id() -> String {
    let mut bytes = [0u8; ID_BYTES];
    OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system's random source failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The handle of `id`: base64url SHA-256, 43 characters.
pub fn handle(id: &str) -> String {
    use sha2::Digest;
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(id.as_bytes()))
}

/// Whether `id` could have come from [`new_id`] (or a handle from [`handle`]); anything else is unknown without a
/// round trip to the store.
pub fn is_well_formed(id: &str) -> bool {
    id.len() == ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_43_url_safe_characters_and_distinct() {
        let a = new_id();
        let b = new_id();
        assert_eq!(ID_LEN, 43);
        assert_eq!(a.len(), ID_LEN);
        assert!(is_well_formed(&a), "{a}");
        assert_ne!(a, b);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), ID_BYTES);
        let h = handle(&a);
        assert!(is_well_formed(&h), "{h}");
        assert_ne!(h, a);
        assert_eq!(h, handle(&a));
        assert_ne!(handle(&h), h);
    }

    #[test]
    fn malformed_ids_are_recognised() {
        for id in [
            "",
            "short",
            &"a".repeat(44),
            &format!("{}=", "a".repeat(42)),
            &"+".repeat(43),
        ] {
            assert!(!is_well_formed(id), "{id}");
        }
    }
}
