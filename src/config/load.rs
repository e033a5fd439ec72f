//! Reading a config file, layering environment variables, and checking the result.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Serialized};

use std::time::Duration;

use super::{Algorithm, BackendKind, Config, LocksConfig, RateLimitConfig, RedisConfig, RedisMode};

/// Prefix of environment overrides: `BLINKCHAMBER_REDIS__POOL_SIZE=20` sets `redis.poolSize`.
pub const ENV_PREFIX: &str = "BLINKCHAMBER_";

/// Variables with the prefix that are not config keys.
const ENV_NOT_KEYS: &[&str] = &["config", "log"];

/// A configuration that cannot be used. Every variant names the key (and file line when
/// there is one); none carries a secret value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML does not fit the schema (unknown key, wrong type, bad value).
    #[error("{path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// An environment override does not fit the schema.
    #[error("environment override: {0}")]
    Env(String),
    /// A value is well-formed but unusable (missing secret, unreadable TLS file, …).
    #[error("{}{key}: {message}", location.as_deref().map(|l| format!("{l}: ")).unwrap_or_default())]
    Invalid {
        /// `file:line` of the key, when it was set in the file.
        location: Option<String>,
        /// Dotted key path.
        key: String,
        /// What is wrong and what was expected.
        message: String,
    },
}

impl Config {
    /// Reads `path` (or the defaults when `None`), applies `BLINKCHAMBER_…` overrides from
    /// the process environment and validates the result.
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending key.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_adjusted(path, |_| {})
    }

    /// As [`Config::load`], with `adjust` applied before validation (command-line flags).
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending key.
    pub fn load_adjusted(
        path: Option<&Path>,
        adjust: impl FnOnce(&mut Self),
    ) -> Result<Self, ConfigError> {
        let (config, text) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                (Self::from_yaml(&text, p)?, Some(text))
            }
            None => (Self::default(), None),
        };
        let mut config = config.with_env_overrides()?;
        adjust(&mut config);
        config
            .validate()
            .map_err(|e| e.located(path.zip(text.as_deref())))?;
        Ok(config)
    }

    /// Parses YAML text; `path` is only used in error messages.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] naming the dotted key and its line (`file:line: key: …`).
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let options = serde_saphyr::Options {
            with_snippet: false,
            ..serde_saphyr::Options::default()
        };
        let mut key = String::new();
        serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
            serde_path_to_error::deserialize(de).map_err(|e| {
                key = e.path().to_string();
                e.into_inner()
            })
        })
        .map_err(|e| parse_error(path, text, &key, &e))
    }

    /// Applies `BLINKCHAMBER_SECTION__KEY=value` variables. Key segments match config keys
    /// case-insensitively and ignoring `_`, so `POOL_SIZE` and `POOLSIZE` both mean `poolSize`.
    ///
    /// # Errors
    /// [`ConfigError::Env`] naming the variable's key when it is unknown or mistyped.
    pub fn with_env_overrides(self) -> Result<Self, ConfigError> {
        let env = Env::prefixed(ENV_PREFIX).ignore(ENV_NOT_KEYS);
        if env.iter().next().is_none() {
            return Ok(self);
        }
        let names = known_key_names(&self);
        // `map` resets figment's lowercasing, so `lowercase(false)` must come after it.
        let env = env
            .map(move |key| {
                key.as_str()
                    .split("__")
                    .map(|segment| {
                        let norm = normalise(segment);
                        names
                            .get(&norm)
                            .cloned()
                            .unwrap_or_else(|| segment.to_ascii_lowercase())
                    })
                    .collect::<Vec<_>>()
                    .join(".")
                    .into()
            })
            .lowercase(false);
        Figment::from(Serialized::defaults(&self))
            .merge(env)
            .extract()
            .map_err(|e| {
                let key = e.path.join(".");
                let var = format!("{ENV_PREFIX}{}", e.path.join("__").to_ascii_uppercase());
                ConfigError::Env(format!("{var} ({key}): {}", without_value(&e.kind)))
            })
    }

    /// Checks that span several keys or touch the file system.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for the first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let server = &self.server;
        if server.auth.enabled && server.auth.tokens.is_none() {
            return Err(invalid(
                "server.auth.tokens",
                "required while server.auth.enabled is true (set a token file, or disable \
                 auth explicitly with `server.auth.enabled: false` / `--no-auth` on a loopback \
                 address)",
            ));
        }
        if !server.auth.enabled && !server.listen.ip().is_loopback() {
            return Err(invalid(
                "server.auth.enabled",
                format!(
                    "auth cannot be disabled while listening on non-loopback address {}",
                    server.listen
                ),
            ));
        }
        if server.max_body_bytes == 0 {
            return Err(invalid("server.maxBodyBytes", "expected at least 1 byte"));
        }
        if server.auth.enabled
            && let Some(tokens) = &server.auth.tokens
        {
            tokens
                .read()
                .map_err(|e| invalid("server.auth.tokens", e.to_string()))?;
        }
        validate_cache(&self.cache)?;
        validate_rate_limits(&self.rate_limit)?;
        validate_locks(&self.locks)?;
        if self.backend == BackendKind::Redis {
            for (key, redis) in self.redis_blocks() {
                validate_redis(key, &redis)?;
            }
        }
        Ok(())
    }

    /// Every key name in the schema, normalised → spelled as in the file.
    fn key_names(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

fn validate_rate_limits(cfg: &RateLimitConfig) -> Result<(), ConfigError> {
    validate_rate_limit_timeout(cfg)?;
    let mut seen = std::collections::HashSet::new();
    for (i, rule) in cfg.rules.iter().enumerate() {
        let key = |k: &str| format!("rateLimit.rules[{i}].{k}");
        if rule.name.is_empty() {
            return Err(invalid(&key("name"), "must not be empty"));
        }
        if rule.name.contains(':') {
            return Err(invalid(
                &key("name"),
                format!(
                    "`{}` contains `:`, which separates rule and key in Redis",
                    rule.name
                ),
            ));
        }
        if rule.limit.get() > 1 << 53 {
            return Err(invalid(&key("limit"), "expected at most 2^53"));
        }
        if !seen.insert(rule.name.as_str()) {
            return Err(invalid(
                &key("name"),
                format!(
                    "`{}` is defined twice; rule names must be unique",
                    rule.name
                ),
            ));
        }
        if rule.descriptor.is_empty() {
            return Err(invalid(
                &key("descriptor"),
                "expected at least one of user, org, apiKey, ip, route",
            ));
        }
        let distinct: std::collections::HashSet<_> = rule.descriptor.iter().collect();
        if distinct.len() != rule.descriptor.len() {
            return Err(invalid(&key("descriptor"), "lists a part twice"));
        }
        if rule.period < Duration::from_millis(1) {
            return Err(invalid(&key("period"), "expected at least 1ms"));
        }
        if rule.burst.is_some() && rule.algorithm != Algorithm::Gcra {
            return Err(invalid(
                &key("burst"),
                "only the gcra algorithm has a burst",
            ));
        }
    }
    for (k, name) in [("perToken", &cfg.api.per_token), ("perIp", &cfg.api.per_ip)] {
        if let Some(name) = name
            && !seen.contains(name.as_str())
        {
            return Err(invalid(
                &format!("rateLimit.api.{k}"),
                format!("no rule named `{name}` in rateLimit.rules"),
            ));
        }
    }
    Ok(())
}

fn validate_cache(cfg: &super::CacheConfig) -> Result<(), ConfigError> {
    let at_least_1ms = |key: &str, d: Duration| {
        if d < Duration::from_millis(1) {
            Err(invalid(key, "expected at least 1ms"))
        } else {
            Ok(())
        }
    };
    at_least_1ms("cache.ttl.default", cfg.ttl.default)?;
    for (name, ttl) in &cfg.ttl.categories {
        at_least_1ms(&format!("cache.ttl.categories.{name}"), *ttl)?;
    }
    at_least_1ms("cache.l1.maxTtl", cfg.l1.max_ttl)?;
    at_least_1ms("cache.l2Timeout", cfg.l2_timeout)?;
    if cfg.jitter_percent > 100 {
        return Err(invalid("cache.jitterPercent", "expected 0 to 100"));
    }
    let soft = cfg.loader_soft_timeout;
    if !soft.is_zero() && !cfg.loader_timeout.is_zero() && soft >= cfg.loader_timeout {
        return Err(invalid(
            "cache.loaderSoftTimeout",
            format!(
                "must be shorter than cache.loaderTimeout ({}), or 0s",
                super::types::duration::format(&cfg.loader_timeout)
            ),
        ));
    }
    if cfg.distributed_load.enabled {
        at_least_1ms(
            "cache.distributedLoad.lockTtl",
            cfg.distributed_load.lock_ttl,
        )?;
    }
    Ok(())
}

fn validate_rate_limit_timeout(cfg: &RateLimitConfig) -> Result<(), ConfigError> {
    if cfg.redis_timeout < Duration::from_millis(1) {
        return Err(invalid("rateLimit.redisTimeout", "expected at least 1ms"));
    }
    Ok(())
}

fn validate_locks(cfg: &LocksConfig) -> Result<(), ConfigError> {
    if cfg.default_ttl < Duration::from_millis(1) {
        return Err(invalid("locks.defaultTtl", "expected at least 1ms"));
    }
    if cfg.default_ttl > cfg.max_ttl {
        return Err(invalid(
            "locks.defaultTtl",
            format!(
                "must not exceed locks.maxTtl ({})",
                super::types::duration::format(&cfg.max_ttl)
            ),
        ));
    }
    Ok(())
}

fn validate_redis(prefix: &str, redis: &RedisConfig) -> Result<(), ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    if redis.mode == RedisMode::Sentinel {
        if redis.sentinel.nodes.is_empty() {
            return Err(invalid(
                &key("sentinel.nodes"),
                "at least one `host:port` is required when mode is sentinel",
            ));
        }
        for node in &redis.sentinel.nodes {
            parse_host_port(node)
                .map_err(|m| invalid(&key("sentinel.nodes"), format!("`{node}`: {m}")))?;
        }
        if redis.sentinel.master_name.is_empty() {
            return Err(invalid(&key("sentinel.masterName"), "must not be empty"));
        }
    } else if redis.host.is_empty() {
        return Err(invalid(&key("host"), "must not be empty"));
    }
    for (k, secret) in redis.clone().secrets_mut() {
        secret.read().map_err(|e| invalid(&key(k), e.to_string()))?;
    }
    let tls = &redis.tls;
    if tls.enabled {
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return Err(invalid(
                &key("tls.certFile"),
                "certFile and keyFile must be set together for mutual TLS",
            ));
        }
        for (k, file) in [
            ("tls.caFile", &tls.ca_file),
            ("tls.certFile", &tls.cert_file),
            ("tls.keyFile", &tls.key_file),
        ] {
            if let Some(file) = file {
                std::fs::read(file).map_err(|e| {
                    invalid(&key(k), format!("cannot read {}: {e}", file.display()))
                })?;
            }
        }
    }
    Ok(())
}

/// Splits `host:port`.
///
/// # Errors
/// A message saying what was expected.
pub(crate) fn parse_host_port(text: &str) -> Result<(String, u16), String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok((addr.ip().to_string(), addr.port()));
    }
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| "expected host:port".to_owned())?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("invalid port `{port}`: expected 1-65535"))?;
    if host.is_empty() {
        return Err("expected host:port".into());
    }
    Ok((host.to_owned(), port))
}

/// `file:line: key: message`, the line taken from the key path when it can be found (the
/// parser's own position for custom errors is the enclosing mapping, not the key).
fn parse_error(path: &Path, text: &str, key: &str, e: &serde_saphyr::Error) -> ConfigError {
    let key = if key == "." || key == "?" { "" } else { key };
    let line =
        locate_key(text, key).or_else(|| e.location().and_then(|l| usize::try_from(l.line()).ok()));
    let message = match e {
        serde_saphyr::Error::Message { msg, .. } => msg.clone(),
        other => other.to_string(),
    };
    let location = match line {
        Some(line) => format!("{}:{line}", path.display()),
        None => path.display().to_string(),
    };
    ConfigError::Parse {
        path: location.into(),
        message: if key.is_empty() {
            message
        } else {
            format!("{key}: {message}")
        },
    }
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        location: None,
        key: key.to_owned(),
        message: message.into(),
    }
}

impl ConfigError {
    /// Adds `file:line` to an [`ConfigError::Invalid`] whose key is set in the file.
    fn located(self, file: Option<(&Path, &str)>) -> Self {
        match (self, file) {
            (Self::Invalid { key, message, .. }, Some((path, text))) => Self::Invalid {
                location: locate_key(text, &key).map(|line| format!("{}:{line}", path.display())),
                key,
                message,
            },
            (other, _) => other,
        }
    }
}

/// The 1-based line where the block-style YAML key path `a.b.c` is set, if it is.
pub(crate) fn locate_key(text: &str, dotted: &str) -> Option<usize> {
    let mut wanted = dotted.split('.').peekable();
    let mut target = wanted.next()?;
    let mut min_indent = 0usize;
    for (index, line) in text.lines().enumerate() {
        let content = line.trim_start();
        let indent = line.len() - content.len();
        if content.is_empty() || content.starts_with('#') || indent < min_indent {
            continue;
        }
        let Some((key, _)) = content.split_once(':') else {
            continue;
        };
        if key.trim().trim_matches('"') == target {
            match wanted.next() {
                Some(next) => {
                    target = next;
                    min_indent = indent + 1;
                }
                None => return Some(index + 1),
            }
        }
    }
    None
}

/// figment's message without the variable's value, which may be a secret
/// (`BLINKCHAMBER_REDIS__PASSWORD=…` instead of `…__PASSWORD__VALUE=…`).
fn without_value(kind: &figment::error::Kind) -> String {
    use figment::error::{Actual, Kind};
    match kind {
        Kind::InvalidType(Actual::Str(_), expected) => {
            format!("invalid type: found a string, expected {expected}")
        }
        Kind::InvalidValue(Actual::Str(_), expected) => {
            format!("invalid value: found a string, expected {expected}")
        }
        other => other.to_string(),
    }
}

fn normalise(segment: &str) -> String {
    segment.replace('_', "").to_ascii_lowercase()
}

fn known_key_names(config: &Config) -> HashMap<String, String> {
    fn walk(value: &serde_json::Value, out: &mut HashMap<String, String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    out.insert(normalise(k), k.clone());
                    walk(v, out);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
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

    #[test]
    fn locates_nested_keys() {
        let text = "server:\n  listen: x\nredis:\n  # c\n  sentinel:\n    nodes: []\n";
        assert_eq!(locate_key(text, "redis.sentinel.nodes"), Some(6));
        assert_eq!(locate_key(text, "server.listen"), Some(2));
        assert_eq!(locate_key(text, "redis.host"), None);
    }

    #[test]
    fn host_port_is_checked() {
        assert_eq!(parse_host_port("a:1").unwrap(), ("a".into(), 1));
        assert!(parse_host_port("a").is_err());
        assert!(parse_host_port("a:99999").unwrap_err().contains("99999"));
    }
}
