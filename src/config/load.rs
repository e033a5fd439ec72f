//! Reading a config file: YAML parsing with each error's key and line, environment
//! overrides, the checks; and the error every check reports.

use std::path::{Path, PathBuf};

use super::Config;
use super::locate::locate_key;

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

/// A [`ConfigError::Invalid`] for `key`, located later by [`ConfigError::located`].
pub(super) fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
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
