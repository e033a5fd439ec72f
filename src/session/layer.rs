//! Sessions for axum applications: a tower layer that finds the session named by a
//! cookie, and an extractor that hands it to handlers.
//!
//! [`SessionLayer`] reads the cookie `sessions.cookie.name` on every request and touches
//! the session (renewing its idle timeout), so an active user stays signed in until the
//! absolute end. Handlers take [`CurrentSession`] (answers `401` when there is no live
//! session) or `Option<CurrentSession>`. A request whose cookie names an ended session gets
//! the cookie removed in the response, unless the handler sets cookies itself. When the
//! store cannot be reached the extractor answers `503` and the cookie is left alone, so a
//! Redis outage does not sign anybody out.
//!
//! Signing in and rotating are the application's calls ([`Sessions::create`],
//! [`Sessions::rotate`]); [`SessionCookie`] writes the matching `Set-Cookie` values
//! (`HttpOnly`, `Secure` and `SameSite=Lax` by default).
//!
//! # Examples
//!
//! ```
//! use axum::{Router, routing::get, http::header::SET_COOKIE};
//! use blinkchamber::config::SessionsConfig;
//! use blinkchamber::session::{CurrentSession, SessionCookie, SessionKind, SessionLayer, Sessions};
//!
//! let sessions = Sessions::memory(&SessionsConfig::default());
//! let cookie = SessionCookie::new(sessions.config().cookie.clone());
//! let login = {
//!     let sessions = sessions.clone();
//!     move || async move {
//!         let s = sessions.create("user-1", SessionKind::User, serde_json::json!({})).await.unwrap();
//!         [(SET_COOKIE, cookie.set(&s))]
//!     }
//! };
//! let app: Router = Router::new()
//!     .route("/me", get(|CurrentSession(s): CurrentSession| async move { s.user_id }))
//!     .route("/login", get(login))
//!     .layer(SessionLayer::new(sessions));
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Request};
use axum::response::Response;
use cookie::Cookie;
use tower_layer::Layer;
use tower_service::Service;

use super::{Session, SessionError, Sessions};
use crate::config::{CookieConfig, SameSite};
use crate::server::problem::ApiError;

/// Writes and reads the session cookie as `sessions.cookie` says.
#[derive(Clone, Debug)]
pub struct SessionCookie {
    cfg: CookieConfig,
}

impl SessionCookie {
    /// A cookie writer for these settings.
    pub fn new(cfg: CookieConfig) -> Self {
        Self { cfg }
    }

    /// The cookie name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    fn build(&self, value: String) -> cookie::CookieBuilder<'static> {
        let same_site = match self.cfg.same_site {
            SameSite::Strict => cookie::SameSite::Strict,
            SameSite::Lax => cookie::SameSite::Lax,
            SameSite::None => cookie::SameSite::None,
        };
        let mut builder = Cookie::build((self.cfg.name.clone(), value))
            .http_only(true)
            .secure(self.cfg.secure)
            .same_site(same_site)
            .path(self.cfg.path.clone());
        if let Some(domain) = &self.cfg.domain {
            builder = builder.domain(domain.clone());
        }
        builder
    }

    /// The `Set-Cookie` value handing `session` to the browser; the browser drops it at
    /// the session's absolute end (`Max-Age`).
    pub fn set(&self, session: &Session) -> HeaderValue {
        let left = session
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let max_age = cookie::time::Duration::seconds(i64::try_from(left.as_secs()).unwrap_or(0));
        header_value(self.build(session.id.clone()).max_age(max_age).build())
    }

    /// The `Set-Cookie` value removing the cookie (after logout or on an ended session).
    pub fn clear(&self) -> HeaderValue {
        let mut cookie = self.build(String::new()).build();
        cookie.make_removal();
        header_value(cookie)
    }

    /// The session id in a request's `Cookie` headers, if any.
    pub fn find(&self, headers: &HeaderMap) -> Option<String> {
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(Cookie::split_parse)
            .filter_map(Result::ok)
            .find(|c| c.name() == self.cfg.name)
            .map(|c| c.value().to_owned())
    }
}

fn header_value(cookie: Cookie<'_>) -> HeaderValue {
    // Names are checked at config load and ids are base64url, so this always parses.
    HeaderValue::from_str(&cookie.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A tower layer that loads the session named by the request's cookie (see the module
/// documentation).
#[derive(Clone)]
pub struct SessionLayer {
    sessions: Sessions,
    cookie: SessionCookie,
}

impl SessionLayer {
    /// A layer over `sessions`, with the cookie settings of their config.
    pub fn new(sessions: Sessions) -> Self {
        let cookie = SessionCookie::new(sessions.config().cookie.clone());
        Self { sessions, cookie }
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`SessionLayer`] wraps around an application.
#[derive(Clone)]
pub struct SessionService<S> {
    inner: S,
    layer: SessionLayer,
}

/// What the layer found, kept in the request's extensions.
#[derive(Clone)]
enum Loaded {
    Live(Box<Session>),
    Absent,
    Unavailable,
}

impl<S, B> Service<Request<B>> for SessionService<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone is not ready; the instance that was polled ready serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let id = layer.cookie.find(request.headers());
            let loaded = match &id {
                None => Loaded::Absent,
                Some(id) => match layer.sessions.touch(id).await {
                    Ok(session) => Loaded::Live(Box::new(session)),
                    Err(SessionError::NotFound) => Loaded::Absent,
                    Err(e) => {
                        tracing::warn!(error = %e, "session lookup failed");
                        Loaded::Unavailable
                    }
                },
            };
            let stale = id.is_some() && matches!(loaded, Loaded::Absent);
            request.extensions_mut().insert(loaded);
            let mut response = inner.call(request).await?;
            if stale && !response.headers().contains_key(SET_COOKIE) {
                response
                    .headers_mut()
                    .append(SET_COOKIE, layer.cookie.clear());
            }
            Ok(response)
        })
    }
}

/// The live session of the request, as found by [`SessionLayer`].
///
/// As an extractor it answers `401 unauthorized` when there is none (and `503` when the
/// store is unreachable); take `Option<CurrentSession>` to serve anonymous requests too.
#[derive(Clone, Debug)]
pub struct CurrentSession(pub Session);

impl<S: Send + Sync> FromRequestParts<S> for CurrentSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        <Self as OptionalFromRequestParts<S>>::from_request_parts(parts, state)
            .await?
            .ok_or_else(|| ApiError::unauthorized("no live session"))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for CurrentSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, ApiError> {
        match parts.extensions.get::<Loaded>() {
            Some(Loaded::Live(session)) => Ok(Some(Self((**session).clone()))),
            Some(Loaded::Absent) => Ok(None),
            Some(Loaded::Unavailable) => Err(ApiError::unavailable(&"session store")),
            None => Err(ApiError::internal(
                &"CurrentSession used on a route without SessionLayer",
            )),
        }
    }
}
