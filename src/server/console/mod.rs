//! The operator console: three static files compiled into the binary and served at
//! `/ui` when `server.console.enabled` is on. The pages call the documented `/v1` routes
//! with the operator's token (kept in the browser tab's session storage), so the console
//! needs nothing the API does not already offer and checks nothing itself: a read-only
//! token is refused by the API, and the console only hides the buttons it could not use.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

/// The content security policy of every console file: nothing but these files and `/v1`,
/// no inline script or style, no framing.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
    form-action 'self'";

/// `/ui`, `/ui/`, `/ui/app.js` and `/ui/app.css` when `enabled`; no routes otherwise (they
/// answer `404` like any unknown path).
pub fn routes(enabled: bool) -> Router<AppState> {
    if !enabled {
        return Router::new();
    }
    Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route(
            "/ui/app.js",
            get(|| async { file(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/app.css",
            get(|| async { file(STYLE, "text/css; charset=utf-8") }),
        )
}

async fn index() -> Response {
    file(INDEX, "text/html; charset=utf-8")
}

fn file(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            // The files change with the binary only; a restart with a new version must
            // not leave a browser on the old script.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                HeaderName::from_static("cross-origin-opener-policy"),
                HeaderValue::from_static("same-origin"),
            ),
        ],
        body,
    )
        .into_response()
}

/// Bytes the console adds to the binary (its three files).
pub const SIZE: usize = INDEX.len() + SCRIPT.len() + STYLE.len();

// The console must stay small: a build fails rather than ship a bloated one.
const _: () = assert!(SIZE < 500 * 1024, "the console files exceed 500 KiB");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_stays_small_and_loads_only_its_own_files() {
        assert!(INDEX.contains("app.js") && INDEX.contains("app.css"));
        assert!(!INDEX.contains("http://") && !INDEX.contains("https://"));
    }
}
