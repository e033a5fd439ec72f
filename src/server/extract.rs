//! Request extractors whose every rejection is a problem (RFC 9457) naming what was wrong:
//! JSON bodies ([`ApiJson`]), query strings ([`ApiQuery`]) and path segments
//! ([`ApiPath`]), plus the field types the request schemas share ([`ApiDuration`],
//! [`whole`]).
//!
//! The rules are the same on every route, so the OpenAPI document can state them once:
//! - a body is read as JSON when `Content-Type` is absent or a JSON type
//!   (`application/json`, `application/*+json`); any other type is `415
//!   unsupported-media-type`;
//! - a body that is not the expected JSON object is `400 invalid-body` naming the field;
//! - a bad query parameter or path segment is `400 bad-request`.

use std::borrow::Cow;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::{self, DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{RefOr, schema};

use super::problem::ApiError;

/// A JSON object body as `T`.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = json_body(req, state).await?;
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(invalid_body("expected a JSON object".into()));
        }
        parse(&body).map(Self)
    }
}

/// The bytes of a body that may be read as JSON (see the module docs).
///
/// # Errors
/// `415` for a non-JSON `Content-Type`, `413` over `server.maxBodyBytes`, `400` when the
/// body cannot be read.
pub async fn json_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    check_content_type(req.headers())?;
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
                rejection.body_text(),
            )
        } else {
            invalid_body(rejection.body_text())
        }
    })
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    let json = essence.as_deref().is_some_and(|t| {
        t == "application/json" || (t.starts_with("application/") && t.ends_with("+json"))
    });
    if json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "expected `Content-Type: application/json`",
        ))
    }
}

/// `body` as `T`, or a `400 invalid-body` naming the field that failed.
///
/// # Errors
/// When `body` is not JSON, not a `T`, or has anything after the value.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // Tracking the path costs allocations on every field, so only a body that fails is
    // read again to say where.
    let first = match serde_json::from_slice(body) {
        Ok(value) => return Ok(value),
        Err(e) => e,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let tracked: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    Err(match tracked {
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                invalid_body(inner.to_string())
            } else {
                invalid_body(format!("`{path}`: {inner}"))
            }
        }
        // The value itself was fine: what failed came after it.
        Ok(_) => invalid_body(first.to_string()),
    })
}

/// `400 invalid-body`.
pub fn invalid_body(detail: String) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid-body",
        "Invalid request body",
        detail,
    )
}

/// Query parameters as `T`; a bad one is `400 bad-request`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| Self(q))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// Path parameters as `T`; a bad one is `400 bad-request`.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| Self(p))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// The grammar of a duration in a request: one or more `<1-9 digits><unit>` with the
/// units `ns`, `us`, `ms`, `s`, `m`, `h`, `d` (`500ms`, `30s`, `1h30m`).
pub const DURATION_PATTERN: &str = "^([0-9]{1,9}(ns|us|ms|s|m|h|d))+$";

/// A duration in a request body, written as [`DURATION_PATTERN`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiDuration(pub Duration);

impl ApiDuration {
    /// Reads `text`, or says what was expected.
    ///
    /// # Errors
    /// When `text` does not follow [`DURATION_PATTERN`].
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid duration `{text}`: expected numbers with units ns, us, ms, s, m, h \
                 or d, like 500ms, 30s, 1h30m"
            )
        };
        let mut total = Duration::ZERO;
        let mut rest = text;
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if !(1..=9).contains(&digits) {
                return Err(bad());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let (unit, len) = [
                ("ns", Duration::from_nanos(1)),
                ("us", Duration::from_micros(1)),
                ("ms", Duration::from_millis(1)),
                ("s", Duration::from_secs(1)),
                ("m", Duration::from_secs(60)),
                ("h", Duration::from_secs(3600)),
                ("d", Duration::from_secs(86_400)),
            ]
            .into_iter()
            // `ms` is tried before `m`, so `5ms` is never read as minutes.
            .find(|(unit, _)| rest.starts_with(unit))
            .ok_or_else(bad)?;
            rest = &rest[unit.len()..];
            let n = u32::try_from(n).map_err(|_| bad())?;
            total = len
                .checked_mul(n)
                .and_then(|part| total.checked_add(part))
                .ok_or_else(bad)?;
        }
        Ok(Self(total))
    }
}

impl<'de> Deserialize<'de> for ApiDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(d)?;
        Self::parse(&text).map_err(de::Error::custom)
    }
}

impl Serialize for ApiDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&crate::config::types::duration::display(&self.0))
    }
}

impl utoipa::PartialSchema for ApiDuration {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(schema::SchemaType::Type(Type::String))
            .pattern(Some(DURATION_PATTERN))
            .examples(["30s"])
            .description(Some(
                "A duration: numbers with units ns, us, ms, s, m, h or d (`500ms`, `30s`, \
                 `1h30m`).",
            ))
            .into()
    }
}

impl utoipa::ToSchema for ApiDuration {}

/// A whole number that may be written `11` or `11.0` (JSON has one number type, and
/// JSON Schema's `integer` admits both). `serde(deserialize_with = "whole::u64")`.
pub mod whole {
    use super::*;

    /// A `u64`; `11.0` is read as 11, `11.5` and negative numbers are refused.
    ///
    /// # Errors
    /// When the value is not a whole number from 0 to 2^64 - 1.
    pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(Whole)
    }

    /// The same for an optional field.
    ///
    /// # Errors
    /// As [`u64()`].
    pub fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(deserialize_with = "u64")] u64);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(n)| n))
    }

    struct Whole;

    impl de::Visitor<'_> for Whole {
        type Value = u64;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a whole number from 0")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
            // 2^64 as f64; every whole f64 below it converts exactly.
            if v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Ok(v as u64)
            } else {
                Err(E::invalid_value(de::Unexpected::Float(v), &self))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_the_documented_grammar() {
        let ok = |t: &str| ApiDuration::parse(t).unwrap().0;
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("1s500ms"), Duration::from_millis(1500));
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("1d"), Duration::from_secs(86_400));
        for bad in [
            "",
            "5",
            "s",
            "5 s",
            "1week",
            "1M",
            "1.5s",
            "-1s",
            "1234567890s",
            "5sec",
            "5S",
        ] {
            let e = ApiDuration::parse(bad).unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{bad}: {e}");
        }
    }

    #[test]
    fn whole_numbers_may_be_written_as_floats() {
        #[derive(Deserialize)]
        struct V {
            #[serde(deserialize_with = "whole::u64")]
            n: u64,
            #[serde(default, deserialize_with = "whole::option")]
            o: Option<u64>,
        }
        let v: V = serde_json::from_str(r#"{"n": 11.0, "o": 3}"#).unwrap();
        assert_eq!((v.n, v.o), (11, Some(3)));
        let v: V = serde_json::from_str(r#"{"n": 7, "o": null}"#).unwrap();
        assert_eq!((v.n, v.o), (7, None));
        for bad in [
            r#"{"n": 1.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": "1"}"#,
            r#"{"n": 1e30}"#,
        ] {
            assert!(serde_json::from_str::<V>(bad).is_err(), "{bad}");
        }
    }
}
