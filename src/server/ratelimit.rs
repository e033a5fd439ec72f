//! `POST /v1/ratelimit/check`, and the middleware that applies `rateLimit.api` to `/v1`.
//!
//! Answers carry the IETF `RateLimit-Policy` and `RateLimit` fields
//! (draft-ietf-httpapi-ratelimit-headers, structured-field lists with one item per rule):
//! `RateLimit-Policy: "<rule>";q=<quota>;w=<window in s>` (windows: the limit and the
//! period; GCRA: the burst and the time a full burst takes to come back, the units
//! `remaining` counts in) and
//! `RateLimit: "<rule>";r=<remaining>;t=<s until reset, rounded up>`, plus
//! `Retry-After: <s, rounded up>` on `429`. The most restrictive descriptor comes first.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::AppState;
use super::extract::{ApiJson, ApiQuery, whole};
use super::limited_keys::{self, LimitedKeys};
use super::openapi::json_schema;
use super::problem::ApiError;
use crate::config::types::duration;
use crate::ratelimit::{self, Decision, RateLimitError, RateLimiter};

/// Most descriptors one check may carry.
pub const MAX_DESCRIPTORS: usize = 32;

/// `RateLimit-Policy` header name.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` header name.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// `POST /v1/ratelimit/check` body: either `rule` + `key` (+ `cost`), or `descriptors`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckRequest {
    /// Rule name (single form).
    #[serde(default)]
    pub rule: Option<String>,
    /// Key (single form): a string, or an object with exactly the rule's descriptors.
    #[serde(default)]
    pub key: Option<Value>,
    /// Cost units (single form); default 1.
    #[serde(default, deserialize_with = "whole::option")]
    pub cost: Option<u64>,
    /// Several checks at once; limited if any of them is.
    #[serde(default)]
    pub descriptors: Option<Vec<DescriptorCheck>>,
}

/// One check of a multi-descriptor request.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DescriptorCheck {
    /// Rule name.
    pub rule: String,
    /// A string, or an object with exactly the rule's descriptors.
    #[schema(value_type = KeyForm)]
    pub key: Value,
    /// Cost units; default 1.
    #[serde(default, deserialize_with = "whole::option")]
    #[schema(minimum = 1)]
    pub cost: Option<u64>,
}

impl utoipa::PartialSchema for CheckRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        json_schema(serde_json::json!({
            "description": "One check (`rule`, `key`, `cost`) or several (`descriptors`); \
                limited if any of them is. The rule must be one of `rateLimit.rules` (else \
                `400 unknown-rule`), an object key must name exactly the rule's descriptors, \
                and a cost above what the rule admits at once is refused.",
            "oneOf": [
                {
                    "type": "object",
                    "required": ["rule", "key"],
                    "additionalProperties": false,
                    "properties": {
                        "rule": { "type": "string", "description": "rule name" },
                        "key": { "$ref": "#/components/schemas/KeyForm" },
                        "cost": { "type": "integer", "minimum": 1, "description": "default 1" },
                    },
                },
                {
                    "type": "object",
                    "required": ["descriptors"],
                    "additionalProperties": false,
                    "properties": { "descriptors": {
                        "type": "array", "minItems": 1, "maxItems": MAX_DESCRIPTORS,
                        "items": { "$ref": "#/components/schemas/DescriptorCheck" },
                    } },
                },
            ],
        }))
    }
}

impl utoipa::ToSchema for CheckRequest {}

/// A key: used as given when a string; when an object, its fields must be exactly the
/// rule's descriptors (`user`, `org`, `apiKey`, `ip`, `route`) with string values, and
/// the key is `user=u1|route=/x` in the rule's descriptor order (`%`, `|`, `=` in values
/// percent-encoded).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum KeyForm {
    /// The key itself.
    Text(String),
    /// Descriptor values by name.
    Parts(BTreeMap<String, String>),
}

/// The answer of one descriptor.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DescriptorResult<'a> {
    /// Rule name.
    pub rule: &'a str,
    /// Whether this descriptor admitted the cost.
    pub allowed: bool,
    /// The rule's limit per period.
    pub limit: u64,
    /// Units still admissible now.
    pub remaining: u64,
    /// How long until the same cost can pass (`"0s"` when allowed).
    #[serde(with = "duration")]
    #[schema(value_type = String, example = "1s500ms")]
    pub retry_after: Duration,
    /// How long until the key is idle again.
    #[serde(with = "duration")]
    #[schema(value_type = String, example = "1m")]
    pub reset_after: Duration,
}

/// `POST /v1/ratelimit/check` answer; the top-level fields are those of the most
/// restrictive descriptor.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckResponse<'a> {
    /// `false` if any descriptor is limited.
    pub allowed: bool,
    /// Limit of the most restrictive descriptor.
    pub limit: u64,
    /// Remaining of the most restrictive descriptor.
    pub remaining: u64,
    /// Retry-after of the most restrictive descriptor.
    #[serde(with = "duration")]
    #[schema(value_type = String, example = "1s500ms")]
    pub retry_after: Duration,
    /// Reset-after of the most restrictive descriptor.
    #[serde(with = "duration")]
    #[schema(value_type = String, example = "1m")]
    pub reset_after: Duration,
    /// Every descriptor, in request order.
    pub descriptors: Vec<DescriptorResult<'a>>,
}

/// Check (and consume) rate limits: `200` when allowed, `429` when limited.
#[utoipa::path(post, path = "/v1/ratelimit/check", tag = "rate limits",
    operation_id = "ratelimitCheck",
    security(("bearer" = [])),
    request_body = CheckRequest,
    responses(
        (status = 200, description = "allowed", body = CheckResponse, headers(
            ("RateLimit-Policy" = String, description = "`\"<rule>\";q=<limit>;w=<period s>` per descriptor"),
            ("RateLimit" = String, description = "`\"<rule>\";r=<remaining>;t=<reset s>` per descriptor"))),
        (status = 429, description = "limited", body = CheckResponse, headers(
            ("RateLimit-Policy" = String, description = "as for 200"),
            ("RateLimit" = String, description = "as for 200"),
            ("Retry-After" = String, description = "seconds, rounded up"))),
        (status = 400, description = "`unknown-rule`: no such rule in `rateLimit.rules`; `bad-request`: a key that does not fit the rule, or a cost it can never admit", body = super::problem::Problem)))]
pub async fn check(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CheckRequest>,
) -> Result<Response, ApiError> {
    check_with(state.runtime.limits(), &state.observed.limited, body).await
}

/// The handler's work, on any limiter; denials are noted in `limited`.
async fn check_with(
    limiter: &RateLimiter,
    limited: &LimitedKeys,
    body: CheckRequest,
) -> Result<Response, ApiError> {
    let requested = parse_request(limiter, body)?;
    let checks: Vec<(&str, &str, u64)> = requested
        .iter()
        .map(|(rule, key, cost)| (rule.as_str(), key.as_str(), *cost))
        .collect();
    let decisions = limiter.check_many(&checks).await.map_err(problem)?;
    note_denials(limited, &checks, &decisions);
    let top = ratelimit::most_restrictive(&decisions).unwrap_or(0);
    let results: Vec<DescriptorResult> = checks
        .iter()
        .zip(&decisions)
        .map(|(check, d)| DescriptorResult {
            rule: check.0,
            allowed: d.allowed,
            limit: d.limit,
            remaining: d.remaining,
            retry_after: d.retry_after,
            reset_after: d.reset_after,
        })
        .collect();
    let allowed = decisions.iter().all(|d| d.allowed);
    let main = &decisions[top];
    let body = CheckResponse {
        allowed,
        limit: main.limit,
        remaining: main.remaining,
        retry_after: main.retry_after,
        reset_after: main.reset_after,
        descriptors: results,
    };
    let status = if allowed {
        StatusCode::OK
    } else {
        StatusCode::TOO_MANY_REQUESTS
    };
    let mut response = (status, Json(body)).into_response();
    add_headers(response.headers_mut(), limiter, &checks, &decisions, top);
    Ok(response)
}

/// `(rule, key, cost)` of every check in the body.
fn parse_request(
    limiter: &RateLimiter,
    body: CheckRequest,
) -> Result<Vec<(String, String, u64)>, ApiError> {
    let single = body.rule.is_some() || body.key.is_some() || body.cost.is_some();
    match (single, body.descriptors) {
        (true, Some(_)) => Err(ApiError::bad_request(
            "give either `rule` and `key` (and `cost`) or `descriptors`, not both",
        )),
        (false, None) => Err(ApiError::bad_request(
            "give `rule` and `key` (and optionally `cost`), or `descriptors`",
        )),
        (false, Some(descriptors)) => {
            if descriptors.is_empty() {
                return Err(ApiError::bad_request(
                    "`descriptors` must hold at least one check",
                ));
            }
            if descriptors.len() > MAX_DESCRIPTORS {
                return Err(ApiError::bad_request(format!(
                    "`descriptors` holds {} checks; at most {MAX_DESCRIPTORS} are accepted",
                    descriptors.len()
                )));
            }
            descriptors
                .into_iter()
                .enumerate()
                .map(|(i, d)| {
                    parse_one(
                        limiter,
                        &format!("descriptors[{i}]."),
                        d.rule,
                        d.key,
                        d.cost,
                    )
                })
                .collect()
        }
        (true, None) => {
            let rule = body
                .rule
                .ok_or_else(|| ApiError::bad_request("`rule` is required"))?;
            let key = body
                .key
                .ok_or_else(|| ApiError::bad_request("`key` is required"))?;
            Ok(vec![parse_one(limiter, "", rule, key, body.cost)?])
        }
    }
}

fn parse_one(
    limiter: &RateLimiter,
    at: &str,
    rule: String,
    key: Value,
    cost: Option<u64>,
) -> Result<(String, String, u64), ApiError> {
    let Some(cfg) = limiter.rule(&rule) else {
        return Err(problem(RateLimitError::UnknownRule(rule)));
    };
    let api = &limiter.config().api;
    if [&api.per_token, &api.per_ip]
        .into_iter()
        .flatten()
        .any(|r| *r == rule)
    {
        // Checking it here would let any client use up another client's API quota.
        return Err(ApiError::bad_request(format!(
            "`{at}rule`: `{rule}` limits this API itself (rateLimit.api) and cannot be checked \
             through it"
        )));
    }
    let key = match key {
        Value::String(s) if s.is_empty() => {
            return Err(ApiError::bad_request(format!(
                "`{at}key` must not be empty"
            )));
        }
        Value::String(s) => s,
        Value::Object(fields) => {
            let expected = || {
                cfg.descriptor
                    .iter()
                    .map(|d| d.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            for (name, value) in &fields {
                if !cfg.descriptor.iter().any(|d| d.as_str() == name) {
                    return Err(ApiError::bad_request(format!(
                        "`{at}key.{name}` is not a descriptor of rule `{rule}` (expected {})",
                        expected()
                    )));
                }
                if !value.is_string() {
                    return Err(ApiError::bad_request(format!(
                        "`{at}key.{name}` must be a string"
                    )));
                }
            }
            ratelimit::compose_key(cfg, |d| fields.get(d.as_str()).and_then(Value::as_str))
                .map_err(|missing| {
                    ApiError::bad_request(format!(
                        "`{at}key.{}` is missing: rule `{rule}` is keyed by {}",
                        missing.as_str(),
                        expected()
                    ))
                })?
        }
        _ => {
            return Err(ApiError::bad_request(format!(
                "`{at}key` must be a string or an object of descriptor values"
            )));
        }
    };
    Ok((rule, key, cost.unwrap_or(1)))
}

/// The problem answered for a check that cannot be made.
fn problem(e: RateLimitError) -> ApiError {
    match e {
        RateLimitError::UnknownRule(_) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown-rule",
            "Unknown rate-limit rule",
            e.to_string(),
        ),
        RateLimitError::StoreFull(full) => full.into(),
        e => ApiError::bad_request(e.to_string()),
    }
}

/// Seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Writes `rule` as a structured-field string (printable ASCII, `"` and `\\` escaped).
fn write_sf_string(out: &mut String, rule: &str) {
    out.reserve(rule.len() + 2);
    out.push('"');
    for c in rule.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
}

/// The `q` and `w` of a rule's `RateLimit-Policy` item, in the units its `remaining`
/// counts: for GCRA the quota is the burst and the window the time a full burst takes to
/// come back (`burst × period / limit`); for windows, the limit (as enforced now: an
/// instance failing open enforces its share) and the period.
fn policy_of(rule: Option<&crate::config::RuleConfig>, limit: u64) -> (u64, u64) {
    let Some(rule) = rule else {
        return (limit, 1);
    };
    match rule.algorithm {
        crate::config::Algorithm::Gcra => {
            let full = rule.limit.get();
            let burst = rule.burst.map_or(full, |b| b.get());
            // The burst of what is enforced now, scaled like the limit.
            let burst = if limit < full {
                (burst * limit / full).max(1)
            } else {
                burst
            };
            let refill = rule.period.as_secs_f64() * burst as f64 / full as f64;
            (burst, (refill.ceil() as u64).max(1))
        }
        _ => (limit, ceil_secs(rule.period).max(1)),
    }
}

/// Sets `RateLimit-Policy`, `RateLimit` and, when limited, `Retry-After`; `top` first.
/// Each header is written in one string; a policy item already written is not repeated.
fn add_headers(
    headers: &mut HeaderMap,
    limiter: &RateLimiter,
    checks: &[(&str, &str, u64)],
    decisions: &[Decision],
    top: usize,
) {
    let order = std::iter::once(top).chain((0..decisions.len()).filter(|&i| i != top));
    let capacity = 48 * decisions.len();
    let (mut policies, mut states) = (
        String::with_capacity(capacity),
        String::with_capacity(capacity),
    );
    let mut written: Vec<(&str, u64, u64)> = Vec::with_capacity(decisions.len());
    for i in order {
        let (rule, d) = (checks[i].0, &decisions[i]);
        let (quota, window) = policy_of(limiter.rule(rule), d.limit);
        if !written.contains(&(rule, quota, window)) {
            if !written.is_empty() {
                policies.push_str(", ");
            }
            written.push((rule, quota, window));
            write_sf_string(&mut policies, rule);
            let _ = write!(policies, ";q={quota};w={window}");
        }
        if !states.is_empty() {
            states.push_str(", ");
        }
        write_sf_string(&mut states, rule);
        let _ = write!(states, ";r={};t={}", d.remaining, ceil_secs(d.reset_after));
    }
    let mut set = |name: HeaderName, value: String| {
        if let Ok(v) = HeaderValue::try_from(value) {
            headers.insert(name, v);
        }
    };
    set(RATELIMIT_POLICY, policies);
    set(RATELIMIT, states);
    let top = &decisions[top];
    if !top.allowed {
        set(header::RETRY_AFTER, ceil_secs(top.retry_after).to_string());
    }
}

/// The API's own limit, for `/v1` requests: applies `rateLimit.api.perToken` (keyed
/// `apiKey=<hex SHA-256 of the bearer token>`, never the token) and `rateLimit.api.perIp`
/// (keyed `ip=<address>`, the address from `rateLimit.api.clientIpHeader` when set and
/// present, else the peer address); `token_accepted` says whether the request's bearer
/// token is one the server accepts. A limited request's answer is `429` problem
/// `rate-limited` with the rate-limit headers; `None` lets the request go on. Nothing to do
/// when neither limit is configured.
pub async fn api_limit(
    state: &AppState,
    request: &Parts,
    token_accepted: bool,
) -> Option<Response> {
    let limiter = state.runtime.limits();
    let api = &limiter.config().api;
    if api.per_token.is_none() && api.per_ip.is_none() {
        return None;
    }
    let mut checks: Vec<(&str, String)> = Vec::with_capacity(2);
    if let Some(rule) = &api.per_token
        // Only real tokens get a bucket: random ones would each get a fresh one. Requests
        // with a wrong token are counted per IP and then refused by the token check.
        && token_accepted
        && let Some(token) = bearer(&request.headers)
    {
        checks.push((rule, format!("apiKey={}", hex_digest(token))));
    }
    if let Some(rule) = &api.per_ip
        && let Some(ip) = client_ip(request, api.client_ip_header.as_deref())
    {
        checks.push((rule, format!("ip={ip}")));
    }
    if checks.is_empty() {
        return None;
    }
    let refs: Vec<(&str, &str, u64)> = checks.iter().map(|(r, k)| (*r, k.as_str(), 1)).collect();
    let decisions = match limiter.check_many(&refs).await {
        Ok(d) => d,
        Err(RateLimitError::StoreFull(full)) => return Some(ApiError::from(full).into_response()),
        Err(e) => return Some(ApiError::internal(&e).into_response()),
    };
    if decisions.iter().all(|d| d.allowed) {
        return None;
    }
    note_denials(&state.observed.limited, &refs, &decisions);
    let top = ratelimit::most_restrictive(&decisions).unwrap_or(0);
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "Too many requests",
        format!(
            "rate limit `{}` exceeded; retry after {}",
            refs[top].0,
            duration::display(&decisions[top].retry_after)
        ),
    )
    .into_response();
    add_headers(response.headers_mut(), limiter, &refs, &decisions, top);
    Some(response)
}

/// Notes every denied check in `limited`.
fn note_denials(limited: &LimitedKeys, checks: &[(&str, &str, u64)], decisions: &[Decision]) {
    let mut now = None;
    for ((rule, key, _), d) in checks.iter().zip(decisions) {
        if !d.allowed {
            let at = *now.get_or_insert_with(SystemTime::now);
            limited.record(rule, key, at);
        }
    }
}

/// One rule of `rateLimit.rules`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleView {
    /// Its name, as checks give it.
    pub name: String,
    /// What its key is made of (`user`, `org`, `apiKey`, `ip`, `route`), in key order.
    pub descriptor: Vec<&'static str>,
    /// `gcra`, `fixedWindow` or `slidingWindow`.
    #[schema(example = "gcra")]
    pub algorithm: String,
    /// Admitted per `period`.
    pub limit: u64,
    /// The period.
    #[schema(example = "1m")]
    pub period: String,
    /// GCRA's burst (`null`: the limit).
    pub burst: Option<u64>,
    /// `open` (keep limiting locally) or `closed` (refuse) while Redis cannot be reached.
    #[schema(example = "open")]
    pub failure_mode: String,
}

/// `GET /v1/ratelimit/rules` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Rules {
    /// The rules, in configuration order.
    pub rules: Vec<RuleView>,
}

/// The configured rules.
#[utoipa::path(get, path = "/v1/ratelimit/rules", tag = "rate limits",
    operation_id = "listRateLimitRules", security(("bearer" = [])),
    responses((status = 200, description = "the rules", body = Rules)))]
pub async fn rules(State(state): State<AppState>) -> Json<Rules> {
    let name_of = |v: serde_json::Result<Value>| {
        v.ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let rules = state
        .runtime
        .limits()
        .config()
        .rules
        .iter()
        .map(|r| RuleView {
            name: r.name.clone(),
            descriptor: r.descriptor.iter().map(|d| d.as_str()).collect(),
            algorithm: name_of(serde_json::to_value(r.algorithm)),
            limit: r.limit.get(),
            period: duration::format(&r.period),
            burst: r.burst.map(std::num::NonZeroU64::get),
            failure_mode: name_of(serde_json::to_value(r.failure_mode)),
        })
        .collect();
    Json(Rules { rules })
}

/// `GET /v1/ratelimit/top` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TopQuery {
    /// How far back to look: whole minutes from `1m` to `15m` (default `5m`).
    #[param(value_type = Option<String>, pattern = "^([1-9]|1[0-5])m$", example = "5m")]
    pub window: Option<String>,
}

/// `GET /v1/ratelimit/top` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Top {
    /// The window looked at.
    #[schema(example = "5m")]
    pub window: String,
    /// The most-denied keys first (at most 20).
    pub keys: Vec<LimitedKey>,
}

/// A key denied within the window.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitedKey {
    /// The rule that denied it.
    pub rule: String,
    /// The key as checked (`rateLimit.api` keys: `apiKey=<token digest>`, `ip=<address>`).
    pub key: String,
    /// Denials within the window.
    pub denied: u64,
    /// The latest denial (RFC 3339).
    pub last_denied_at: String,
}

/// The keys this instance's API denied most over the last minutes (checks through
/// `POST /v1/ratelimit/check` and the API's own `rateLimit.api` limit).
#[utoipa::path(get, path = "/v1/ratelimit/top", tag = "rate limits",
    operation_id = "topLimitedKeys", security(("bearer" = [])),
    params(TopQuery),
    responses((status = 200, description = "the most-denied keys", body = Top)))]
pub async fn top(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<TopQuery>,
) -> Result<Json<Top>, ApiError> {
    let window = query.window.unwrap_or_else(|| "5m".into());
    let minutes = window
        .strip_suffix('m')
        .filter(|n| !n.starts_with('0'))
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| (1..=limited_keys::MINUTES).contains(n))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "`window`: `{window}` is not a whole number of minutes from 1m to 15m"
            ))
        })?;
    let keys = state
        .observed
        .limited
        .top(Duration::from_secs(minutes * 60), SystemTime::now())
        .into_iter()
        .map(|l| LimitedKey {
            rule: l.rule,
            key: l.key,
            denied: l.denied,
            last_denied_at: humantime::format_rfc3339_millis(l.last_denied).to_string(),
        })
        .collect();
    Ok(Json(Top { window, keys }))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?
        .trim();
    (!token.is_empty()).then_some(token)
}

fn hex_digest(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The client address: the last entry of `header` (the one the nearest proxy wrote) when
/// it holds an IP address, else the peer address of the connection.
fn client_ip(request: &Parts, header: Option<&str>) -> Option<IpAddr> {
    let from_header = header
        .and_then(|name| request.headers.get_all(name).iter().next_back())
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse::<IpAddr>().ok());
    from_header.or_else(|| {
        request
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_structured_field_strings_and_rounded_seconds() {
        let sf_string = |rule: &str| {
            let mut out = String::new();
            write_sf_string(&mut out, rule);
            out
        };
        assert_eq!(sf_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(sf_string("é"), "\"?\"");
        assert_eq!(ceil_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
        assert_eq!(ceil_secs(Duration::ZERO), 0);
    }

    #[test]
    fn token_digests_are_hex_sha256() {
        assert_eq!(
            hex_digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
