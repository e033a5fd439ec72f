//! One id per HTTP request: taken from `X-Request-Id` when the caller (or a proxy) sent a
//! usable one, else generated; echoed in the response, carried by the warnings and errors
//! the request causes, by its debug-level span (so with that span on every log line of the
//! request has it) and by problem details (`requestId`).

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use tokio::task::futures::TaskLocalFuture;

/// The header the id travels in, both ways (a name built once: looking a header up by a
/// string parses the string first).
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id accepted from a caller; a longer one is replaced.
const MAX_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: HeaderValue;
}

/// The id of the request being handled on this task, if any.
pub fn current() -> Option<String> {
    CURRENT
        .try_with(|id| id.to_str().ok().map(str::to_owned))
        .ok()
        .flatten()
}

/// `f` with `id` as the current request id. (Not an `async fn`: that would keep `f`
/// twice in its state, as the argument and as the scoped future.)
pub(super) fn scope<F: Future>(id: HeaderValue, f: F) -> TaskLocalFuture<HeaderValue, F> {
    CURRENT.scope(id, f)
}

/// The caller's id when it is 1–128 visible ASCII characters, else a new one (32 hex
/// digits). A header value, so that echoing it in the answer and keeping it for the
/// request's log lines share one buffer.
pub(super) fn of(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(&HEADER)
        .filter(|v| {
            let v = v.as_bytes();
            !v.is_empty() && v.len() <= MAX_LEN && v.iter().all(u8::is_ascii_graphic)
        })
        .cloned()
        .unwrap_or_else(generated)
}

/// 32 random lowercase hex digits.
fn generated() -> HeaderValue {
    HeaderValue::from_bytes(&crate::ids::random_hex128_bytes())
        .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
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
        assert_eq!(with("req-42/a.b"), "req-42/a.b");
        for bad in ["", "has space", &"x".repeat(129)] {
            let id = with(bad);
            assert_eq!(id.len(), 32, "{bad:?} -> {id:?}");
            assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit));
        }
        assert_ne!(of(&HeaderMap::new()), of(&HeaderMap::new()));
    }
}
