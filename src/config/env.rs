//! `BLINKCHAMBER_…` environment overrides layered over a parsed config.
//!
//! `BLINKCHAMBER_REDIS__POOL_SIZE=20` sets `redis.poolSize`: `__` separates key segments,
//! and each segment matches a config key case-insensitively and ignoring `_`. The config
//! is turned into a JSON tree, each variable is written into it, and the tree is read
//! back with the same types and checks as a file. A value is read as the type the key
//! holds now (a number for `poolSize`, text for `host`), so a numeric password stays
//! text; where the key holds nothing yet, `true`/`false`, numbers and `[a, b]` lists are
//! recognised.

use std::collections::HashMap;

use serde_json::Value;

use super::{Config, ConfigError};

/// Prefix of environment overrides: `BLINKCHAMBER_REDIS__POOL_SIZE=20` sets `redis.poolSize`.
pub const ENV_PREFIX: &str = "BLINKCHAMBER_";

/// Variables with the prefix that are not config keys (`BLINKCHAMBER_CONFIG`, `…_LOG`).
const NOT_KEYS: &[&str] = &["config", "log", "log_format"];

/// One override: the key path a variable names, and its value.
struct Override {
    path: Vec<String>,
    raw: String,
    /// Written as text even where the key holds nothing yet (after a failed guess).
    as_text: bool,
}

impl Config {
    /// Applies `BLINKCHAMBER_SECTION__KEY=value` variables. Key segments match config keys
    /// case-insensitively and ignoring `_`, so `POOL_SIZE` and `POOLSIZE` both mean
    /// `poolSize`.
    ///
    /// # Errors
    /// [`ConfigError::Env`] naming the variable's key when it is unknown or mistyped; the
    /// message never repeats the value, which may be a secret.
    pub fn with_env_overrides(self) -> Result<Self, ConfigError> {
        self.with_overrides(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// [`with_env_overrides`](Self::with_env_overrides) for the given variables.
    fn with_overrides(
        self,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let names = known_key_names(&self);
        let mut overrides: Vec<Override> = vars
            .filter_map(|(var, raw)| {
                let rest = var
                    .get(..ENV_PREFIX.len())?
                    .eq_ignore_ascii_case(ENV_PREFIX);
                let key = var[ENV_PREFIX.len()..].to_ascii_lowercase();
                if !rest || key.is_empty() || NOT_KEYS.contains(&key.as_str()) {
                    return None;
                }
                let path = key
                    .split("__")
                    .map(|segment| {
                        names
                            .get(&normalise(segment))
                            .cloned()
                            .unwrap_or_else(|| segment.to_owned())
                    })
                    .collect();
                Some(Override {
                    path,
                    raw,
                    as_text: false,
                })
            })
            .collect();
        if overrides.is_empty() {
            return Ok(self);
        }
        // Sorted, so a variable for a whole block comes before those for its keys.
        overrides.sort_by(|a, b| a.path.cmp(&b.path));
        let base = serde_json::to_value(&self).expect("a config serialises to JSON");
        loop {
            let mut tree = base.clone();
            for o in &overrides {
                set(&mut tree, &o.path, |now| value_for(now, &o.raw, o.as_text));
            }
            let error = match serde_path_to_error::deserialize::<_, Config>(tree) {
                Ok(config) => return Ok(config),
                Err(e) => e,
            };
            let path: Vec<String> = error
                .path()
                .iter()
                .map(|s| s.to_string())
                .filter(|s| s != "?")
                .collect();
            // A guessed number or flag where text belongs: read that variable as text.
            if let Some(o) = overrides
                .iter_mut()
                .find(|o| o.path == path && !o.as_text && !is_text(&o.raw))
            {
                o.as_text = true;
                continue;
            }
            let var = format!("{ENV_PREFIX}{}", path.join("__").to_ascii_uppercase());
            let message = without_value(&error.into_inner().to_string());
            return Err(ConfigError::Env(format!(
                "{var} ({}): {message}",
                path.join(".")
            )));
        }
    }
}

/// Writes into `tree` at `path`, creating blocks on the way; `value` gets what is there.
fn set(tree: &mut Value, path: &[String], value: impl FnOnce(Option<&Value>) -> Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = tree;
    for segment in parents {
        if !node.is_object() {
            *node = Value::Object(serde_json::Map::new());
        }
        node = node
            .as_object_mut()
            .expect("made an object above")
            .entry(segment.clone())
            .or_insert(Value::Null);
    }
    if !node.is_object() {
        *node = Value::Object(serde_json::Map::new());
    }
    let map = node.as_object_mut().expect("made an object above");
    let new = value(map.get(last));
    map.insert(last.clone(), new);
}

/// `raw` as the type `now` has; a guess where there is nothing (or `as_text`: text).
fn value_for(now: Option<&Value>, raw: &str, as_text: bool) -> Value {
    match now {
        Some(Value::String(_)) => Value::String(raw.to_owned()),
        Some(Value::Bool(_)) => raw
            .to_ascii_lowercase()
            .parse::<bool>()
            .map_or_else(|_| Value::String(raw.to_owned()), Value::Bool),
        Some(Value::Number(_)) => number(raw).unwrap_or_else(|| Value::String(raw.to_owned())),
        Some(Value::Array(_)) => list(raw),
        _ if as_text => Value::String(raw.to_owned()),
        _ => guess(raw),
    }
}

/// `true`/`false`, a number, a `[a, b]` list, or text.
fn guess(raw: &str) -> Value {
    let trimmed = raw.trim();
    if let Ok(b) = trimmed.to_ascii_lowercase().parse::<bool>() {
        return Value::Bool(b);
    }
    if let Some(n) = number(trimmed) {
        return n;
    }
    if trimmed.starts_with('[') && trimmed.ends_with(']') {
        return list(trimmed);
    }
    Value::String(raw.to_owned())
}

/// Whether `raw` would be guessed as text anyway.
fn is_text(raw: &str) -> bool {
    matches!(guess(raw), Value::String(_))
}

fn number(raw: &str) -> Option<Value> {
    let raw = raw.trim();
    if let Ok(n) = raw.parse::<u64>() {
        return Some(n.into());
    }
    if let Ok(n) = raw.parse::<i64>() {
        return Some(n.into());
    }
    raw.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
}

/// `[a, b]` or `a,b`: each item guessed; `[]` is empty.
fn list(raw: &str) -> Value {
    let inner = raw.trim();
    let inner = inner
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(inner);
    if inner.trim().is_empty() {
        return Value::Array(Vec::new());
    }
    Value::Array(
        inner
            .split(',')
            .map(|item| {
                let item = item.trim().trim_matches('"');
                guess(item)
            })
            .collect(),
    )
}

/// serde's message with the offending string taken out: `invalid type: string "…",
/// expected u16` becomes `invalid type: found a string, expected u16`.
fn without_value(message: &str) -> String {
    for kind in ["invalid type", "invalid value"] {
        let prefix = format!("{kind}: string ");
        if message.starts_with(&prefix)
            && let Some(at) = message.rfind(", expected ")
        {
            return format!("{kind}: found a string{}", &message[at..]);
        }
    }
    message.to_owned()
}

fn normalise(segment: &str) -> String {
    segment.replace('_', "").to_ascii_lowercase()
}

/// Every key name the config has, by its normalised form.
fn known_key_names(config: &Config) -> HashMap<String, String> {
    fn walk(value: &Value, out: &mut HashMap<String, String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    out.insert(normalise(k), k.clone());
                    walk(v, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = HashMap::new();
    walk(&config.key_names(), &mut out);
    walk(&Config::default().key_names(), &mut out);
    for k in [
        "value",
        "valueFromFile",
        "valueFromEnv",
        "caFile",
        "certFile",
        "keyFile",
    ] {
        out.insert(normalise(k), k.to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::default()
            .with_overrides(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
    }

    #[test]
    fn segments_match_keys_ignoring_case_and_underscores() {
        let c = apply(&[
            ("BLINKCHAMBER_REDIS__POOL_SIZE", "33"),
            ("BLINKCHAMBER_redis__host", "10.0.0.7"),
            ("BLINKCHAMBER_CACHE__REDIS__DATABASE", "4"),
            ("BLINKCHAMBER_CONFIG", "/etc/x.yaml"),
            ("OTHER_REDIS__PORT", "1"),
        ])
        .unwrap();
        assert_eq!(c.redis.pool_size.get(), 33);
        assert_eq!(c.redis.host, "10.0.0.7");
        assert_eq!(c.cache.redis.database.map(|d| d.get()), Some(4));
    }

    #[test]
    fn values_take_the_type_the_key_holds() {
        let c = apply(&[
            ("BLINKCHAMBER_REDIS__HOST", "1234"),
            ("BLINKCHAMBER_REDIS__SENTINEL__NODES", "[a:26379, b:26379]"),
            ("BLINKCHAMBER_REDIS__USERNAME", "007"),
        ])
        .unwrap();
        assert_eq!(c.redis.host, "1234");
        assert_eq!(c.redis.sentinel.nodes, ["a:26379", "b:26379"]);
        assert_eq!(c.redis.username.as_deref(), Some("007"));
    }

    #[test]
    fn errors_name_the_variable_and_key_never_the_value() {
        let e = apply(&[("BLINKCHAMBER_REDIS__POOL_SIZE", "s3cr3t-lots")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("BLINKCHAMBER_REDIS__POOLSIZE (redis.poolSize)"),
            "{e}"
        );
        assert!(!e.contains("s3cr3t"), "{e}");
        let e = apply(&[("BLINKCHAMBER_REDIS__PASSWORD", "s3cr3t")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("redis.password") && e.contains("expected"),
            "{e}"
        );
        assert!(!e.contains("s3cr3t"), "{e}");
        let e = apply(&[("BLINKCHAMBER_REDIS__PORTT", "1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("portt"), "{e}");
    }
}
