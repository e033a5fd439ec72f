//! Just enough DER to walk a certificate or a PKCS#8 key: split off one element.

/// Splits one DER element (tag, length, contents) off `input`: `(tag, contents, rest)`,
/// or `None` when `input` is truncated or uses an indefinite length.
pub(crate) fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = input
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let contents = input.get(header..header + len)?;
    Some((tag, contents, &input[header + len..]))
}
