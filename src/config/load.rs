//! Reading a config file, layering environment variables, and checking the result.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::time::Duration;

use super::{
    Algorithm, BackendKind, Config, EventsConfig, LocksConfig, RateLimitConfig, RedisConfig,
    RedisMode,
};
use crate::events::{Pattern, TypeFilter};

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
        let mut options = serde_saphyr::Options::default();
        options.with_snippet = false;
        let mut key = String::new();
        serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
            serde_path_to_error::deserialize(de).map_err(|e| {
                key = e.path().to_string();
                e.into_inner()
            })
        })
        .map_err(|e| parse_error(path, text, &key, &e))
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
        if self.memory.max_bytes < 1 << 20 {
            return Err(invalid(
                "memory.maxBytes",
                format!(
                    "{} is too small: expected at least 1048576 (1 MiB)",
                    self.memory.max_bytes
                ),
            ));
        }
        validate_cache(&self.cache)?;
        validate_rate_limits(&self.rate_limit)?;
        validate_locks(&self.locks)?;
        validate_events(&self.events)?;
        validate_sessions(&self.sessions)?;
        validate_tokens(&self.tokens)?;
        super::key_spaces::check(self).map_err(|(key, message)| invalid(&key, message))?;
        if self.backend == BackendKind::Redis {
            for (key, redis) in self.redis_blocks() {
                validate_redis(key, &redis)?;
            }
        }
        Ok(())
    }

    /// Every key name in the schema, normalised → spelled as in the file.
    pub(super) fn key_names(&self) -> serde_json::Value {
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
    let max_value = crate::cache::frame::MAX_DECOMPRESSED;
    if cfg.max_value_bytes == 0 || cfg.max_value_bytes > max_value {
        return Err(invalid(
            "cache.maxValueBytes",
            format!("expected 1 to {max_value} (64 MiB)"),
        ));
    }
    if cfg.l1.max_entries > 0 && cfg.l1.max_bytes < 1 << 20 {
        return Err(invalid(
            "cache.l1.maxBytes",
            "expected at least 1048576 (1 MiB) while cache.l1.maxEntries is above 0",
        ));
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

fn validate_events(cfg: &EventsConfig) -> Result<(), ConfigError> {
    for (i, ty) in cfg.types.iter().enumerate() {
        Pattern::new(ty).map_err(|e| invalid(&format!("events.types[{i}]"), e.to_string()))?;
    }
    for (i, rule) in cfg.routing.iter().enumerate() {
        Pattern::new(&rule.pattern)
            .map_err(|e| invalid(&format!("events.routing[{i}].match"), e.to_string()))?;
    }
    let queues = [
        ("high_priority", &cfg.queues.high_priority),
        ("normal_priority", &cfg.queues.normal_priority),
        ("low_priority", &cfg.queues.low_priority),
        ("dead_letter", &cfg.queues.dead_letter),
    ];
    for (i, (key, name)) in queues.iter().enumerate() {
        let key = format!("events.queues.{key}");
        if name.is_empty() {
            return Err(invalid(&key, "must not be empty"));
        }
        if let Some((other, _)) = queues[..i].iter().find(|(_, n)| n == name) {
            return Err(invalid(
                &key,
                format!("`{name}` is also events.queues.{other}; each queue needs its own list"),
            ));
        }
    }
    super::events_bounds::check(cfg).map_err(|(key, message)| invalid(&key, message))?;
    let publishing = &cfg.publishing;
    if publishing.batch_size > cfg.performance.event_buffer_size {
        return Err(invalid(
            "events.publishing.batchSize",
            format!(
                "{} exceeds events.performance.eventBufferSize ({}); a batch must fit in \
                 the buffer",
                publishing.batch_size, cfg.performance.event_buffer_size
            ),
        ));
    }
    let zitadel = &cfg.zitadel;
    if zitadel.tolerance < Duration::from_secs(1) {
        return Err(invalid("events.zitadel.tolerance", "expected at least 1s"));
    }
    if zitadel.source.is_empty() {
        return Err(invalid("events.zitadel.source", "must not be empty"));
    }
    let accepted =
        TypeFilter::new(&cfg.types).map_err(|e| invalid("events.types", e.to_string()))?;
    for (from, to) in &zitadel.type_map {
        let key = format!("events.zitadel.typeMap.{from:?}");
        Pattern::new(from).map_err(|e| invalid(&key, format!("key {e}")))?;
        if !accepted.accepts(to) {
            return Err(invalid(
                &key,
                format!(
                    "`{to}` is not an accepted event type: expected one of events.types ({})",
                    cfg.types.join(", ")
                ),
            ));
        }
    }
    if cfg.enabled
        && let Some(key) = &zitadel.signing_key
    {
        key.read()
            .map_err(|e| invalid("events.zitadel.signingKey", e.to_string()))?;
    }
    for (i, hook) in cfg.sinks.webhooks.iter().enumerate() {
        let key = |field: &str| format!("events.sinks.webhooks[{i}].{field}");
        Pattern::new(&hook.pattern).map_err(|e| invalid(&key("match"), e.to_string()))?;
        crate::events::webhook::parse_url(&hook.url).map_err(|e| invalid(&key("url"), e))?;
        if hook.timeout.is_zero() {
            return Err(invalid(&key("timeout"), "expected more than 0s"));
        }
        if cfg.enabled
            && let Some(secret) = &hook.signing_key
        {
            secret
                .read()
                .map_err(|e| invalid(&key("signingKey"), e.to_string()))?;
        }
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
    if cfg.max_hold < Duration::from_millis(1) {
        return Err(invalid("locks.maxHold", "expected at least 1ms"));
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

fn validate_sessions(cfg: &super::SessionsConfig) -> Result<(), ConfigError> {
    use super::types::duration::format;
    for (kind, t) in [("user", &cfg.user), ("admin", &cfg.admin)] {
        let key = |k: &str| format!("sessions.{kind}.{k}");
        for (k, d) in [
            ("absoluteTimeout", t.absolute_timeout),
            ("idleTimeout", t.idle_timeout),
        ] {
            if d < Duration::from_secs(1) {
                return Err(invalid(&key(k), "expected at least 1s"));
            }
        }
        if t.idle_timeout > t.absolute_timeout {
            return Err(invalid(
                &key("idleTimeout"),
                format!(
                    "must not exceed sessions.{kind}.absoluteTimeout ({})",
                    format(&t.absolute_timeout)
                ),
            ));
        }
    }
    let cookie = &cfg.cookie;
    let separator =
        |c: char| "()<>@,;:\\\"/[]?={} \t".contains(c) || c.is_control() || !c.is_ascii();
    if cookie.name.is_empty() || cookie.name.chars().any(separator) {
        return Err(invalid(
            "sessions.cookie.name",
            "expected a cookie token: letters, digits and `!#$%&'*+-.^_`|~`",
        ));
    }
    if cookie.same_site == super::SameSite::None && !cookie.secure {
        return Err(invalid(
            "sessions.cookie.sameSite",
            "`none` requires sessions.cookie.secure: true (browsers drop such cookies otherwise)",
        ));
    }
    Ok(())
}

fn validate_tokens(cfg: &super::TokensConfig) -> Result<(), ConfigError> {
    let (introspection, jwt) = (&cfg.introspection, &cfg.jwt);
    if introspection.enabled || jwt.enabled || !cfg.issuer.is_empty() {
        check_issuer(&cfg.issuer).map_err(|m| invalid("tokens.issuer", m))?;
    }
    if introspection.enabled {
        if introspection.client_id.is_empty() {
            return Err(invalid(
                "tokens.introspection.clientId",
                "required while tokens.introspection.enabled is true",
            ));
        }
        let Some(secret) = &introspection.client_secret else {
            return Err(invalid(
                "tokens.introspection.clientSecret",
                "required while tokens.introspection.enabled is true",
            ));
        };
        secret
            .read()
            .map_err(|e| invalid("tokens.introspection.clientSecret", e.to_string()))?;
    }
    for (key, value) in [
        ("tokens.introspection.timeout", introspection.timeout),
        ("tokens.introspection.maxTtl", introspection.max_ttl),
        ("tokens.jwt.jwksMaxAge", jwt.jwks_max_age),
        ("tokens.jwt.jwksMaxStale", jwt.jwks_max_stale),
        ("tokens.jwt.timeout", jwt.timeout),
    ] {
        if value.is_zero() {
            return Err(invalid(key, "expected more than 0s"));
        }
    }
    if introspection.max_ttl > crate::cache::MAX_TTL {
        return Err(invalid(
            "tokens.introspection.maxTtl",
            "expected at most 366d",
        ));
    }
    if introspection.key_prefix.is_empty() {
        return Err(invalid(
            "tokens.introspection.keyPrefix",
            "must not be empty",
        ));
    }
    if jwt.enabled && jwt.audiences.is_empty() {
        return Err(invalid(
            "tokens.jwt.audiences",
            "at least one audience is required while tokens.jwt.enabled is true",
        ));
    }
    if let Some(i) = jwt.audiences.iter().position(String::is_empty) {
        return Err(invalid(
            &format!("tokens.jwt.audiences[{i}]"),
            "must not be empty",
        ));
    }
    if jwt.clock_skew > Duration::from_secs(600) {
        return Err(invalid("tokens.jwt.clockSkew", "expected at most 10m"));
    }
    if jwt.algorithms.is_empty() {
        return Err(invalid(
            "tokens.jwt.algorithms",
            "expected at least one algorithm",
        ));
    }
    for (i, alg) in jwt.algorithms.iter().enumerate() {
        if !super::JWT_ALGORITHMS.contains(&alg.as_str()) {
            return Err(invalid(
                &format!("tokens.jwt.algorithms[{i}]"),
                format!(
                    "unsupported algorithm `{alg}`: expected one of {}",
                    super::JWT_ALGORITHMS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// An `http` or `https` URL with a host and nothing after the path.
fn check_issuer(issuer: &str) -> Result<(), String> {
    if issuer.is_empty() {
        return Err("required while tokens.introspection or tokens.jwt is enabled".into());
    }
    let rest = issuer
        .strip_prefix("https://")
        .or_else(|| issuer.strip_prefix("http://"))
        .ok_or_else(|| format!("`{issuer}` is not an http(s) URL"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || rest.contains(['?', '#', ' ']) {
        return Err(format!(
            "`{issuer}` is not a base URL (expected https://host[:port][/path])"
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
    for (k, value) in [
        ("dialTimeout", redis.dial_timeout),
        ("readTimeout", redis.read_timeout),
        ("writeTimeout", redis.write_timeout),
        ("poolTimeout", redis.pool_timeout),
    ] {
        if value.is_zero() {
            return Err(invalid(&key(k), "must be above 0s"));
        }
    }
    let attempt = redis.write_timeout + redis.read_timeout;
    if redis.call_timeout < attempt {
        return Err(invalid(
            &key("callTimeout"),
            format!(
                "{} is shorter than one attempt (writeTimeout + readTimeout = {}): expected at least that",
                humantime::format_duration(redis.call_timeout),
                humantime::format_duration(attempt)
            ),
        ));
    }
    if redis.max_retry_backoff < redis.min_retry_backoff {
        return Err(invalid(
            &key("maxRetryBackoff"),
            "must not be shorter than minRetryBackoff",
        ));
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

/// The 1-based line where the block-style YAML key path is set, if it is. The path is
/// dotted (`a.b.c`); a segment may be quoted (`typeMap."user.human.added"`) and may end in
/// a sequence index (`rules[2].name`). An index that cannot be found (a flow-style list)
/// gives the line of its key.
pub(crate) fn locate_key(text: &str, dotted: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut start = 0;
    let mut min_indent = 0;
    let mut found = None;
    for (name, index) in key_segments(dotted) {
        let (line, indent) = find_key(&lines, start, min_indent, &name)?;
        found = Some(line);
        start = line + 1;
        min_indent = indent + 1;
        if let Some(n) = index {
            let Some((item, item_indent)) = find_item(&lines, line + 1, indent, n) else {
                break;
            };
            found = Some(item);
            // The item's first key is on the item's own line, after `- `.
            start = item;
            min_indent = item_indent + 1;
        }
    }
    found.map(|line| line + 1)
}

/// `a."b.c"[2].d` → `[("a", None), ("b.c", Some(2)), ("d", None)]`.
fn key_segments(dotted: &str) -> Vec<(String, Option<usize>)> {
    let mut out = Vec::new();
    let mut chars = dotted.chars().peekable();
    loop {
        let mut name = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => name.extend(chars.next()),
                    c => name.push(c),
                }
            }
        }
        while let Some(&c) = chars.peek() {
            if c == '.' || c == '[' {
                break;
            }
            name.push(c);
            chars.next();
        }
        let mut index = None;
        while chars.peek() == Some(&'[') {
            chars.next();
            let digits: String = chars.by_ref().take_while(|c| *c != ']').collect();
            index = digits.parse().ok();
        }
        out.push((name, index));
        if chars.next() != Some('.') {
            return out;
        }
    }
}

/// A line's indent and content; a sequence item's `- ` counts as indentation.
fn split_indent(line: &str) -> (usize, &str) {
    let content = line.trim_start();
    let indent = line.len() - content.len();
    match content.strip_prefix("- ") {
        Some(rest) => {
            let rest_trimmed = rest.trim_start();
            (line.len() - rest_trimmed.len(), rest_trimmed)
        }
        None => (indent, content),
    }
}

/// The first line from `start` setting `name` at an indent of at least `min_indent`.
fn find_key(lines: &[&str], start: usize, min_indent: usize, name: &str) -> Option<(usize, usize)> {
    lines
        .iter()
        .enumerate()
        .skip(start)
        .find_map(|(index, line)| {
            let (indent, content) = split_indent(line);
            if content.is_empty() || content.starts_with('#') || indent < min_indent {
                return None;
            }
            let (key, _) = content.split_once(':')?;
            let key = key.trim();
            let key = key
                .strip_prefix('"')
                .and_then(|k| k.strip_suffix('"'))
                .or_else(|| key.strip_prefix('\'').and_then(|k| k.strip_suffix('\'')))
                .unwrap_or(key);
            (key == name).then_some((index, indent))
        })
}

/// The line of item `n` of the block sequence under a key indented `key_indent`, with the
/// indent of its `-`.
fn find_item(lines: &[&str], from: usize, key_indent: usize, n: usize) -> Option<(usize, usize)> {
    let mut item_indent = None;
    let mut count = 0;
    for (index, line) in lines.iter().enumerate().skip(from) {
        let content = line.trim_start();
        let indent = line.len() - content.len();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let is_item = content == "-" || content.starts_with("- ");
        if is_item && item_indent.is_none() && indent >= key_indent {
            item_indent = Some(indent);
        }
        if is_item && item_indent == Some(indent) {
            if count == n {
                return Some((index, indent));
            }
            count += 1;
        } else if indent <= key_indent {
            return None;
        }
    }
    None
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
    fn locates_sequence_items_and_quoted_keys() {
        let text = "events:\n  routing:\n    - match: a\n      priority: high\n    - match: b\n      priority: urgent\n  zitadel:\n    typeMap:\n      user.human.added: user.created\n      \"org.added\": org.created\n  types: [a, b]\nlist:\n- x: 1\n- x: 2\n";
        assert_eq!(locate_key(text, "events.routing[0].match"), Some(3));
        assert_eq!(locate_key(text, "events.routing[1]"), Some(5));
        assert_eq!(locate_key(text, "events.routing[1].priority"), Some(6));
        assert_eq!(locate_key(text, "events.routing[2].match"), Some(2));
        assert_eq!(
            locate_key(text, "events.zitadel.typeMap.\"user.human.added\""),
            Some(9)
        );
        assert_eq!(
            locate_key(text, "events.zitadel.typeMap.\"org.added\""),
            Some(10)
        );
        assert_eq!(locate_key(text, "events.types[1]"), Some(11));
        assert_eq!(locate_key(text, "list[1].x"), Some(14));
        assert_eq!(locate_key(text, "events.queues"), None);
    }

    const NO_AUTH: &str = "server:\n  auth:\n    enabled: false\n";

    /// Loads `yaml` (after the no-auth preamble) from a file named `bc.yaml`.
    fn load(yaml: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bc.yaml");
        std::fs::write(&path, format!("{NO_AUTH}{yaml}")).unwrap();
        Config::load(Some(&path)).map_err(|e| e.to_string())
    }

    #[test]
    fn events_routing_and_type_map_load_from_yaml() {
        let config = load(
            "events:\n  routing:\n    - match: \"billing.*\"\n      priority: high\n    - match: \"*\"\n      priority: normal\n  zitadel:\n    source: zitadel-prod\n    tolerance: 2m\n    typeMap:\n      user.human.added: user.created\n      \"user.human.*.changed\": user.updated\n",
        )
        .unwrap();
        let events = &config.events;
        assert_eq!(
            events.routing,
            [
                super::super::RouteRule::new("billing.*", crate::events::Priority::High),
                super::super::RouteRule::new("*", crate::events::Priority::Normal),
            ]
        );
        assert_eq!(events.zitadel.source, "zitadel-prod");
        assert_eq!(events.zitadel.tolerance, Duration::from_secs(120));
        let map = &events.zitadel.type_map;
        assert_eq!(map.len(), 2, "{map:?}");
        assert_eq!(map["user.human.added"], "user.created");
        assert_eq!(map["user.human.*.changed"], "user.updated");
        let types = crate::events::TypeMap::new(map).unwrap();
        assert_eq!(types.map("user.human.email.changed"), Some("user.updated"));
    }

    #[test]
    fn default_events_config_is_valid() {
        let config = load("").unwrap();
        assert_eq!(config.events.routing.len(), 4);
        assert_eq!(config.events.zitadel.tolerance, Duration::from_secs(300));
        assert!(config.events.zitadel.type_map.len() > 20);
    }

    #[test]
    fn a_bad_routing_priority_names_key_and_line() {
        let err = load(
            "events:\n  routing:\n    - match: auth.*\n      priority: high\n    - match: \"*.viewed\"\n      priority: urgent\n",
        )
        .unwrap_err();
        assert!(err.contains("bc.yaml:9"), "{err}");
        assert!(err.contains("events.routing[1].priority"), "{err}");
        assert!(err.contains("urgent"), "{err}");
    }

    #[test]
    fn a_bad_routing_pattern_names_key_and_line() {
        let err = load(
            "events:\n  routing:\n    - match: auth.*\n      priority: high\n    - match: \"user.[ab]\"\n      priority: low\n",
        )
        .unwrap_err();
        assert!(err.contains(":8: events.routing[1].match"), "{err}");
        assert!(err.contains("only `*`"), "{err}");
        let err = load("events:\n  types: [user.created, \"\"]\n").unwrap_err();
        assert!(
            err.contains(":5: events.types[1]: \"\": must not be empty"),
            "{err}"
        );
    }

    #[test]
    fn a_type_map_value_must_be_an_accepted_type() {
        let err = load(
            "events:\n  types: [user.created, auth.*]\n  zitadel:\n    typeMap:\n      user.human.added: user.created\n      session.terminated: auth.logout\n      user.removed: user.gone\n",
        )
        .unwrap_err();
        assert!(
            err.contains(":10: events.zitadel.typeMap.\"user.removed\": `user.gone` is not an accepted event type"),
            "{err}"
        );
        assert!(err.contains("events.types (user.created, auth.*)"), "{err}");
    }

    #[test]
    fn queue_names_must_be_distinct_and_non_empty() {
        let err = load("events:\n  queues:\n    high_priority: q:main\n    low_priority: q:main\n")
            .unwrap_err();
        assert!(err.contains(":7: events.queues.low_priority"), "{err}");
        assert!(
            err.contains("`q:main` is also events.queues.high_priority"),
            "{err}"
        );
        let err = load("events:\n  queues:\n    dead_letter: \"\"\n").unwrap_err();
        assert!(
            err.contains(":6: events.queues.dead_letter: must not be empty"),
            "{err}"
        );
    }

    #[test]
    fn a_batch_must_fit_in_the_buffer() {
        let err = load(
            "events:\n  publishing:\n    batchSize: 500\n  performance:\n    eventBufferSize: 100\n",
        )
        .unwrap_err();
        assert!(err.contains(":6: events.publishing.batchSize"), "{err}");
        assert!(err.contains("eventBufferSize (100)"), "{err}");
    }

    #[test]
    fn zitadel_settings_are_checked() {
        let err = load("events:\n  zitadel:\n    tolerance: 0s\n").unwrap_err();
        assert!(
            err.contains("events.zitadel.tolerance: expected at least 1s"),
            "{err}"
        );
        let err = load(
            "events:\n  zitadel:\n    signingKey:\n      valueFromFile: /nonexistent/zitadel-key\n",
        )
        .unwrap_err();
        assert!(err.contains(":6: events.zitadel.signingKey"), "{err}");
        assert!(err.contains("/nonexistent/zitadel-key"), "{err}");
    }

    #[test]
    fn the_signing_key_is_redacted() {
        let config =
            load("events:\n  zitadel:\n    signingKey:\n      value: s3cr3t-signing-key\n")
                .unwrap();
        let printed = serde_saphyr::to_string(&config.redacted()).unwrap();
        assert!(!printed.contains("s3cr3t-signing-key"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
        assert!(!format!("{config:?}").contains("s3cr3t-signing-key"));
    }

    #[test]
    fn host_port_is_checked() {
        assert_eq!(parse_host_port("a:1").unwrap(), ("a".into(), 1));
        assert!(parse_host_port("a").is_err());
        assert!(parse_host_port("a:99999").unwrap_err().contains("99999"));
    }
}
