//! What the per-route annotations leave out, added once to every operation of the
//! document: the answers every `/v1` route shares (authentication, body and parameter
//! problems, the API's own rate limit, switched-off capabilities, backend failures),
//! `application/problem+json` as the content type of every problem, and the links between
//! operations that generated clients and stateful contract tests follow.
//!
//! Each route's annotation lists only the answers that are its own.

use serde_json::{Map, Value, json};

/// The media type of every error answer (RFC 9457).
const PROBLEM_JSON: &str = "application/problem+json";

/// The extension of a placeholder schema whose value is the real schema (see
/// [`super::json_schema`]).
pub const RAW_SCHEMA: &str = "x-blinkchamber-schema";

const PROBLEM_REF: &str = "#/components/schemas/Problem";

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// Adds the shared answers and links to `doc` (the document as JSON).
pub fn finish(doc: &mut Value) {
    put_raw_schemas(doc);
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        for method in METHODS {
            let Some(op) = item.get_mut(method) else {
                continue;
            };
            problems_as_problem_json(op);
            if path.starts_with("/v1/") {
                add_shared_answers(method, op);
            }
        }
    }
    add_links(paths);
}

/// Replaces every placeholder schema by the schema it carries.
fn put_raw_schemas(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(raw) = map.remove(RAW_SCHEMA) {
                *value = raw;
                return;
            }
            map.values_mut().for_each(put_raw_schemas);
        }
        Value::Array(items) => items.iter_mut().for_each(put_raw_schemas),
        _ => {}
    }
}

/// Moves every problem body from `application/json` to `application/problem+json`.
fn problems_as_problem_json(op: &mut Value) {
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
        return;
    };
    for response in responses.values_mut() {
        let Some(content) = response.get_mut("content").and_then(Value::as_object_mut) else {
            continue;
        };
        let is_problem = content
            .get("application/json")
            .and_then(|c| c.pointer("/schema/$ref"))
            .and_then(Value::as_str)
            == Some(PROBLEM_REF);
        if is_problem && let Some(body) = content.remove("application/json") {
            content.insert(PROBLEM_JSON.into(), body);
        }
    }
}

fn add_shared_answers(method: &str, op: &mut Value) {
    let non_empty = |key: &str| {
        op.get(key)
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    };
    let secured = non_empty("security");
    let has_parameters = non_empty("parameters");
    let has_body = op.get("requestBody").is_some();
    let tags: Vec<String> = op
        .get("tags")
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let mut answers: Vec<(&str, &str)> = Vec::new();
    if has_body {
        answers.push((
            "400",
            "`invalid-body`: the body is not the JSON object this operation takes; the detail \
             names the field",
        ));
        answers.push((
            "413",
            "`payload-too-large`: the body is over `server.maxBodyBytes`",
        ));
        answers.push((
            "415",
            "`unsupported-media-type`: a `Content-Type` other than `application/json`",
        ));
    }
    if has_parameters {
        answers.push((
            "400",
            "`bad-request`: a path, query or header parameter out of its schema",
        ));
    }
    if secured {
        answers.push((
            "401",
            "`unauthorized`: no `Authorization: Bearer` token, or one that is not accepted \
             (`WWW-Authenticate: Bearer`)",
        ));
    }
    if secured && method != "get" {
        answers.push((
            "403",
            "`read-only-token`: the token is one of `server.auth.readOnlyTokens`, which may \
             only read",
        ));
    }
    if tags.iter().any(|t| t == "events") {
        answers.push((
            "404",
            "`events-disabled`: this deployment runs without events (`events.enabled: false`)",
        ));
    }
    if tags.iter().any(|t| t == "tokens") {
        answers.push((
            "404",
            "`tokens-disabled`: this half of the token cache is switched off \
             (`tokens.introspection.enabled` / `tokens.jwt.enabled`)",
        ));
    }
    answers.push((
        "429",
        "`rate-limited`: this caller is over the API's own limit (`rateLimit.api`); \
         `Retry-After` says when to come back",
    ));
    answers.push((
        "500",
        "`internal`: the server failed; the cause is in its log under the `requestId`",
    ));
    answers.push((
        "503",
        "`backend-unavailable`: the backend cannot be reached now; retry later",
    ));
    if matches!(method, "post" | "put") {
        answers.push((
            "507",
            "`storage-full`: the memory backend is at `memory.maxBytes`; nothing was changed",
        ));
    }
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
        return;
    };
    for (status, description) in answers {
        add_problem_answer(responses, status, description);
    }
    if let Some(limited) = responses.get_mut("429") {
        add_rate_limit_headers(limited);
    }
}

/// Adds a problem answer to `status`, or the problem content and its description to an
/// answer the route already lists.
fn add_problem_answer(responses: &mut Map<String, Value>, status: &str, description: &str) {
    let response = responses
        .entry(status)
        .or_insert_with(|| json!({ "description": "" }));
    let problem_type = description.split('`').nth(1).unwrap_or(description);
    let known = response
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !known.contains(&format!("`{problem_type}`")) {
        let joined = if known.is_empty() {
            description.to_owned()
        } else {
            format!("{known}; {description}")
        };
        response["description"] = Value::String(joined);
    }
    let content = response
        .as_object_mut()
        .expect("a response is an object")
        .entry("content")
        .or_insert_with(|| json!({}));
    if content.get(PROBLEM_JSON).is_none() {
        content[PROBLEM_JSON] = json!({ "schema": { "$ref": PROBLEM_REF } });
    }
}

fn add_rate_limit_headers(response: &mut Value) {
    let headers = response
        .as_object_mut()
        .expect("a response is an object")
        .entry("headers")
        .or_insert_with(|| json!({}));
    for (name, description) in [
        (
            "RateLimit-Policy",
            "`\"<rule>\";q=<quota>;w=<window s>` per rule",
        ),
        (
            "RateLimit",
            "`\"<rule>\";r=<remaining>;t=<s until reset>` per rule",
        ),
        ("Retry-After", "seconds to wait, rounded up"),
    ] {
        if headers.get(name).is_none() {
            headers[name] = json!({ "schema": { "type": "string" }, "description": description });
        }
    }
}

/// A link from an answer of one operation to another operation.
struct Link {
    from: &'static str,
    status: &'static str,
    to: &'static str,
    parameters: Value,
    body: Option<Value>,
}

fn links() -> Vec<Link> {
    let session = json!({ "header.Session-Id": "$response.body#/id" });
    let lock = json!({ "path.name": "$response.body#/name" });
    let lock_token = json!({ "token": "$response.body#/token" });
    let cached = json!({
        "path.namespace": "$request.path.namespace",
        "path.key": "$request.path.key",
    });
    let link = |from, status, to, parameters: &Value, body: Option<&Value>| Link {
        from,
        status,
        to,
        parameters: parameters.clone(),
        body: body.cloned(),
    };
    let mut all = Vec::new();
    for to in [
        "getSession",
        "touchSession",
        "rotateSession",
        "deleteSession",
    ] {
        all.push(link("createSession", "201", to, &session, None));
    }
    all.push(link(
        "createSession",
        "201",
        "listSessions",
        &json!({ "query.userId": "$request.body#/userId" }),
        None,
    ));
    all.push(link(
        "createSession",
        "201",
        "revokeSessionByHandle",
        &json!({ "path.handle": "$response.body#/handle" }),
        None,
    ));
    for to in ["extendLock", "releaseLock"] {
        all.push(link("acquireLock", "201", to, &lock, Some(&lock_token)));
    }
    for to in ["getCache", "deleteCache"] {
        all.push(link("putCache", "204", to, &cached, None));
    }
    all
}

fn add_links(paths: &mut Map<String, Value>) {
    let links = links();
    for op in paths
        .values_mut()
        .flat_map(|item| item.as_object_mut())
        .flat_map(|item| item.iter_mut())
        .filter(|(method, _)| METHODS.contains(&method.as_str()))
        .map(|(_, op)| op)
    {
        let id = op
            .get("operationId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        for link in links.iter().filter(|l| l.from == id) {
            let Some(answer) = op.pointer_mut(&format!("/responses/{}", link.status)) else {
                continue;
            };
            let mut value = json!({ "operationId": link.to, "parameters": link.parameters });
            if let Some(body) = &link.body {
                value["requestBody"] = body.clone();
            }
            let links = answer
                .as_object_mut()
                .expect("a response is an object")
                .entry("links")
                .or_insert_with(|| json!({}));
            links[link.to] = value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
        let mut all = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    all.push((path.clone(), method.to_owned(), op));
                }
            }
        }
        all
    }

    #[test]
    fn every_operation_has_a_unique_id_and_problem_answers() {
        let doc = super::super::document();
        let ops = operations(doc);
        assert!(ops.len() > 30, "{} operations", ops.len());
        let mut ids: Vec<&str> = ops
            .iter()
            .map(|(p, m, op)| {
                op["operationId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{m} {p}: no operationId"))
            })
            .collect();
        ids.sort_unstable();
        let count = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), count, "operation ids are unique");
        for (path, method, op) in &ops {
            for (status, answer) in op["responses"].as_object().unwrap() {
                let content = answer.get("content").and_then(Value::as_object);
                if status.starts_with('4') || status.starts_with('5') {
                    let content = content.unwrap_or_else(|| panic!("{method} {path} {status}"));
                    assert!(
                        content.contains_key(PROBLEM_JSON),
                        "{method} {path} {status}: {content:?}"
                    );
                }
            }
            if path.starts_with("/v1/") {
                for status in ["429", "500", "503"] {
                    assert!(
                        op["responses"].get(status).is_some(),
                        "{method} {path} lacks {status}"
                    );
                }
            }
        }
    }

    #[test]
    fn placeholders_are_replaced() {
        let doc = super::super::document();
        assert!(!doc.to_string().contains(RAW_SCHEMA));
        let invalidate = &doc["components"]["schemas"]["InvalidateRequest"];
        assert_eq!(
            invalidate["oneOf"].as_array().map(Vec::len),
            Some(2),
            "{invalidate}"
        );
    }

    #[test]
    fn links_point_at_operations_that_exist() {
        let doc = super::super::document();
        let ids: Vec<&str> = operations(doc)
            .iter()
            .filter_map(|(_, _, op)| op["operationId"].as_str())
            .collect();
        let mut seen = 0;
        for (_, _, op) in operations(doc) {
            for answer in op["responses"].as_object().unwrap().values() {
                for link in answer
                    .get("links")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flat_map(|l| l.values())
                {
                    seen += 1;
                    let to = link["operationId"].as_str().unwrap();
                    assert!(ids.contains(&to), "link to {to}");
                }
            }
        }
        assert_eq!(seen, links().len());
    }
}
