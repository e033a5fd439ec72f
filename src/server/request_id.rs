//! One id per HTTP request: taken from `X-Request-Id` when the caller (or a proxy) sent a
//! usable one, else generated; echoed in the response, carried by the warnings and errors
//! the request causes, by its debug-level span (so with that span on every log line of the
//! request has it) and by problem details (`requestId`).

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};

/// The header the id travels in, both ways.
pub const HEADER: &str = "x-request-id";

/// Longest id accepted from a caller; a longer one is replaced.
const MAX_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: Arc<str>;
}

/// The id of the request being handled on this task, if any.
pub fn current() -> Option<Arc<str>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Runs `f` with `id` as the current request id.
pub(super) async fn scope<F: Future>(id: Arc<str>, f: F) -> F::Output {
    CURRENT.scope(id, f).await
}

/// The caller's id when it is 1–128 visible ASCII characters, else a new one (32 hex
/// digits).
pub(super) fn of(headers: &HeaderMap) -> Arc<str> {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= MAX_LEN && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(generated, Into::into)
}

/// 32 random lowercase hex digits.
fn generated() -> Arc<str> {
    crate::ids::random_hex128().into()
}

/// `id` as a header value (always valid: visible ASCII).
pub(super) fn header_value(id: &str) -> HeaderValue {
    HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usable_id_is_kept_anything_else_replaced() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(HEADER, HeaderValue::from_str(v).unwrap());
            of(&h)
        };
        assert_eq!(&*with("req-42/a.b"), "req-42/a.b");
        for bad in ["", "has space", &"x".repeat(129)] {
            let id = with(bad);
            assert_eq!(id.len(), 32, "{bad:?} -> {id}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_ne!(of(&HeaderMap::new()), of(&HeaderMap::new()));
    }
}
