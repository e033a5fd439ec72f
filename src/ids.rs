//! Random identifiers.

/// 128 random bits as 32 lowercase hex digits: event ids, request ids, lock tokens.
///
/// Written digit by digit rather than through `format!`: ids are made on hot paths (every
/// published event, every request without an id).
pub(crate) fn random_hex128() -> String {
    hex(rand::random::<u128>(), 32)
}

/// As [`random_hex128`], on the stack.
pub(crate) fn random_hex128_bytes() -> [u8; 32] {
    let mut out = [0u8; 32];
    hex_into(rand::random::<u128>(), &mut out);
    out
}

/// 64 random bits as 16 lowercase hex digits: instance, consumer and lease-token ids.
pub(crate) fn random_hex64() -> String {
    hex(u128::from(rand::random::<u64>()), 16)
}

/// The low `digits` hex digits of `bits`, most significant first.
fn hex(bits: u128, digits: u32) -> String {
    let mut out = [0u8; 32];
    let out = &mut out[..digits as usize];
    hex_into(bits, out);
    String::from_utf8(out.to_vec()).expect("hex digits are ASCII")
}

/// Writes the low `out.len()` hex digits of `bits` into `out`, most significant first.
fn hex_into(bits: u128, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, digit) in out.iter_mut().rev().enumerate() {
        *digit = HEX[((bits >> (i * 4)) & 0xf) as usize];
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_32_lowercase_hex_digits_and_differ() {
        let (a, b) = (super::random_hex128(), super::random_hex128());
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
            "{a}"
        );
        assert_ne!(a, b);
        let short = super::random_hex64();
        assert_eq!(short.len(), 16);
        assert!(
            short
                .bytes()
                .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
            "{short}"
        );
        assert_eq!(super::hex(0xab, 4), "00ab");
    }
}
