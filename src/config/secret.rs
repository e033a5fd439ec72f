//! Secrets: a value given inline, read from a file, or read from an environment variable.
//!
//! Files are the Vault agent injector pattern (`/vault/secrets/REDIS_PASSWORD`): the agent
//! rewrites the file when the secret rotates, so a secret is read again each time it is
//! needed (a new connection, a changed token file) instead of once at start-up. The value
//! itself never reaches `Debug`, `Display`, serialization for `config print`, or an error.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

/// Where a secret comes from. Exactly one of the three is set.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawSecret", into = "RawSecret")]
pub enum SecretSource {
    /// The secret written inline in the config (discouraged outside development).
    Value(String),
    /// A file holding the secret; surrounding whitespace is trimmed.
    File(PathBuf),
    /// An environment variable holding the secret.
    Env(String),
}

/// Serialized shape of a secret: `{value | valueFromFile | valueFromEnv}`.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSecret {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value_from_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value_from_env: Option<String>,
}

impl TryFrom<RawSecret> for SecretSource {
    type Error = String;

    fn try_from(raw: RawSecret) -> Result<Self, Self::Error> {
        match (raw.value, raw.value_from_file, raw.value_from_env) {
            (Some(v), None, None) => Ok(Self::Value(v)),
            (None, Some(p), None) => Ok(Self::File(p)),
            (None, None, Some(e)) => Ok(Self::Env(e)),
            _ => Err("expected exactly one of `value`, `valueFromFile`, `valueFromEnv`".into()),
        }
    }
}

impl From<SecretSource> for RawSecret {
    fn from(s: SecretSource) -> Self {
        match s {
            SecretSource::Value(v) => Self {
                value: Some(v),
                ..Self::default()
            },
            SecretSource::File(p) => Self {
                value_from_file: Some(p),
                ..Self::default()
            },
            SecretSource::Env(e) => Self {
                value_from_env: Some(e),
                ..Self::default()
            },
        }
    }
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(_) => f.write_str("SecretSource::Value(<redacted>)"),
            Self::File(p) => write!(f, "SecretSource::File({})", p.display()),
            Self::Env(e) => write!(f, "SecretSource::Env({e})"),
        }
    }
}

/// Why a secret could not be read. Names the source, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret file is missing or unreadable.
    #[error("cannot read secret file {path}: {source}")]
    File {
        /// The file that was read.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The environment variable is not set or not UTF-8.
    #[error("environment variable {0} is not set")]
    Env(String),
    /// The secret resolved to an empty string.
    #[error("secret from {0} is empty")]
    Empty(String),
}

impl SecretSource {
    /// A secret read from `path`.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::File(path.into())
    }

    /// An inline secret.
    pub fn value(value: impl Into<String>) -> Self {
        Self::Value(value.into())
    }

    /// Reads the secret now (files and variables are read on every call).
    ///
    /// # Errors
    /// [`SecretError`] when the file or variable cannot be read or the secret is empty.
    pub fn read(&self) -> Result<Secret, SecretError> {
        let value = match self {
            Self::Value(v) => v.clone(),
            Self::File(p) => std::fs::read_to_string(p)
                .map_err(|source| SecretError::File {
                    path: p.clone(),
                    source,
                })?
                .trim()
                .to_owned(),
            Self::Env(e) => std::env::var(e).map_err(|_| SecretError::Env(e.clone()))?,
        };
        if value.is_empty() {
            return Err(SecretError::Empty(self.describe()));
        }
        Ok(Secret(value))
    }

    /// Where the secret comes from, safe to log.
    pub fn describe(&self) -> String {
        match self {
            Self::Value(_) => "an inline value".into(),
            Self::File(p) => format!("file {}", p.display()),
            Self::Env(e) => format!("environment variable {e}"),
        }
    }

    /// The same source with an inline value replaced, for `config print`.
    pub fn redacted(&self) -> Self {
        match self {
            Self::Value(_) => Self::Value("<redacted>".into()),
            other => other.clone(),
        }
    }

    fn file_path(&self) -> Option<&Path> {
        match self {
            Self::File(p) => Some(p),
            _ => None,
        }
    }
}

/// A secret value in memory. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself; callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A secret that is re-read when its file changes, checked at most once per `interval`.
///
/// Used for values consulted on every request (API tokens) where reading the file each
/// time would cost a syscall per request.
pub struct WatchedSecret {
    source: SecretSource,
    interval: Duration,
    state: Mutex<WatchState>,
}

struct WatchState {
    checked: Instant,
    modified: Option<SystemTime>,
    value: Secret,
}

impl WatchedSecret {
    /// Reads the secret once and remembers the file's modification time.
    ///
    /// # Errors
    /// [`SecretError`] when the first read fails.
    pub fn new(source: SecretSource, interval: Duration) -> Result<Self, SecretError> {
        let value = source.read()?;
        let modified = modified(&source);
        Ok(Self {
            source,
            interval,
            state: Mutex::new(WatchState {
                checked: Instant::now(),
                modified,
                value,
            }),
        })
    }

    /// The current value; re-reads the file if it changed since the last check. A file
    /// that became unreadable keeps the last good value (the agent rewrites files in
    /// place, and a reader can catch it mid-write).
    pub fn get(&self) -> Secret {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.checked.elapsed() >= self.interval {
            state.checked = Instant::now();
            let now = modified(&self.source);
            if now != state.modified {
                match self.source.read() {
                    Ok(value) => {
                        state.value = value;
                        state.modified = now;
                        tracing::info!(source = %self.source.describe(), "secret reloaded");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "secret reload failed; keeping the last value")
                    }
                }
            }
        }
        state.value.clone()
    }
}

fn modified(source: &SecretSource) -> Option<SystemTime> {
    source
        .file_path()
        .and_then(|p| std::fs::metadata(p).ok())
        .and_then(|m| m.modified().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_source_is_required() {
        let both: Result<SecretSource, _> =
            serde_json::from_str(r#"{"value":"a","valueFromEnv":"B"}"#);
        assert!(both.unwrap_err().to_string().contains("exactly one"));
        let none: Result<SecretSource, _> = serde_json::from_str("{}");
        assert!(none.is_err());
    }

    #[test]
    fn debug_never_shows_the_value() {
        let s = SecretSource::value("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{:?}", s.read().unwrap()).contains("hunter2"));
        assert!(
            !serde_json::to_string(&s.redacted())
                .unwrap()
                .contains("hunter2")
        );
    }

    #[test]
    fn file_secrets_are_trimmed_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "one\n").unwrap();
        let watched = WatchedSecret::new(SecretSource::file(&path), Duration::ZERO).unwrap();
        assert_eq!(watched.get().expose(), "one");
        // Make the modification time differ even on coarse-grained file systems.
        std::fs::write(&path, "two\n").unwrap();
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(watched.get().expose(), "two");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = SecretSource::file("/nonexistent/secret")
            .read()
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/secret"));
    }
}
