//! Which queue an event goes to, and which event types are accepted.
//!
//! Both are decided by event type with the same patterns: an exact name
//! (`user.created`) or a glob where `*` matches any run of characters, dots included
//! (`auth.*`, `*.deleted`, `*`). Patterns are split at `*` once, when built, so matching is
//! a prefix, suffix and substring search without allocation or regular expressions.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::envelope::Event;
use crate::config::{EventsConfig, RouteRule};

/// Priority of an event, which picks its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// `events.queues.high_priority` (default for `auth.*`).
    High,
    /// `events.queues.normal_priority` (default for `*.created|updated|deleted`).
    Normal,
    /// `events.queues.low_priority` (everything else).
    Low,
}

impl Priority {
    /// Every priority, highest first (the order strict-priority consumers read queues in).
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// The lowercase name used in JSON and config (`high`, `normal`, `low`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pattern that is not usable, with the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{pattern:?}: {reason}")]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong and what was expected.
    pub reason: &'static str,
}

/// An event-type pattern: an exact name, or a glob whose `*` matches any run of
/// characters (also none, also across dots).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    text: Box<str>,
    /// The text split at `*`: one part for an exact name, otherwise the literal text
    /// before the first `*`, between stars, and after the last `*`.
    parts: Box<[Box<str>]>,
    /// Sum of the parts' lengths: the shortest text that can match.
    min_len: usize,
}

impl Pattern {
    /// Parses `text`.
    ///
    /// # Errors
    /// [`PatternError`] when the text is empty, contains whitespace or control characters,
    /// or uses glob syntax other than `*` (`?`, `[…]`, `{…}`).
    pub fn new(text: &str) -> Result<Self, PatternError> {
        let bad = |reason| {
            Err(PatternError {
                pattern: text.to_owned(),
                reason,
            })
        };
        if text.is_empty() {
            return bad("must not be empty");
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("must not contain whitespace or control characters");
        }
        if text.contains(['?', '[', ']', '{', '}']) {
            return bad("only `*` is a wildcard (`?`, `[…]` and `{…}` are not supported)");
        }
        let parts: Box<[Box<str>]> = text.split('*').map(Box::from).collect();
        let min_len = parts.iter().map(|p| p.len()).sum();
        Ok(Self {
            text: text.into(),
            parts,
            min_len,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern has a `*`.
    pub fn is_glob(&self) -> bool {
        self.parts.len() > 1
    }

    /// Literal characters in the pattern (its specificity: longer is more specific).
    pub fn literal_len(&self) -> usize {
        self.min_len
    }

    /// Whether `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        glob_match(&self.parts, self.min_len, text)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The one glob matcher: `parts` is the pattern split at `*`, `min_len` the sum of their
/// lengths. A leftmost match of each middle part is enough because `*` matches anything.
fn glob_match(parts: &[Box<str>], min_len: usize, text: &str) -> bool {
    let [first, rest @ ..] = parts else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return text == &**first;
    };
    if text.len() < min_len || !text.starts_with(&**first) || !text.ends_with(&**last) {
        return false;
    }
    // `min_len` ≥ first + last, so the two ends do not overlap and the slice is in range
    // (both ends are whole `str`s that the text starts / ends with, so on char boundaries).
    let mut between = &text[first.len()..text.len() - last.len()];
    for part in middle {
        match between.find(&**part) {
            Some(at) => between = &between[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Which event types are accepted (`events.types`): exact names and globs. An empty list
/// accepts every type.
#[derive(Clone, Debug, Default)]
pub struct TypeFilter {
    exact: HashSet<Box<str>>,
    globs: Vec<Pattern>,
    any: bool,
}

impl TypeFilter {
    /// A filter from the `events.types` list.
    ///
    /// # Errors
    /// [`PatternError`] for the first entry that is not a valid pattern.
    pub fn new<S: AsRef<str>>(types: &[S]) -> Result<Self, PatternError> {
        let mut filter = Self {
            any: types.is_empty(),
            ..Self::default()
        };
        for t in types {
            let pattern = Pattern::new(t.as_ref())?;
            if pattern.is_glob() {
                filter.globs.push(pattern);
            } else {
                filter.exact.insert(pattern.text);
            }
        }
        Ok(filter)
    }

    /// A filter that accepts every type.
    pub fn any() -> Self {
        Self {
            any: true,
            ..Self::default()
        }
    }

    /// Whether events of type `ty` are accepted.
    pub fn accepts(&self, ty: &str) -> bool {
        self.any || self.exact.contains(ty) || self.globs.iter().any(|g| g.matches(ty))
    }
}

/// Decides the priority of an event from its type: an ordered rule list, the first
/// matching rule wins, and a type no rule matches is [`Priority::Low`]. An event's own
/// `priority` attribute overrides routing (see [`Router::priority`]); the publisher keeps
/// the attribute only with `events.publishing.honourPriority`.
#[derive(Clone, Debug)]
pub struct Router {
    rules: Vec<(Pattern, Priority)>,
}

impl Router {
    /// Priority of a type that no rule matches. A last rule `match: "*"` changes it.
    pub const FALLBACK: Priority = Priority::Low;

    /// A router from the `events.routing` rules, in order.
    ///
    /// # Errors
    /// [`PatternError`] for the first rule whose `match` is not a valid pattern.
    pub fn new(rules: &[RouteRule]) -> Result<Self, PatternError> {
        let rules = rules
            .iter()
            .map(|r| Ok((Pattern::new(&r.pattern)?, r.priority)))
            .collect::<Result<_, PatternError>>()?;
        Ok(Self { rules })
    }

    /// The priority routing gives to type `ty` (ignoring any explicit priority).
    pub fn route(&self, ty: &str) -> Priority {
        self.rules
            .iter()
            .find(|(p, _)| p.matches(ty))
            .map_or(Self::FALLBACK, |(_, priority)| *priority)
    }

    /// The priority of `event`: its own `priority` attribute when set, else [`route`]
    /// of its type.
    ///
    /// [`route`]: Router::route
    pub fn priority(&self, event: &Event) -> Priority {
        event.priority.unwrap_or_else(|| self.route(&event.ty))
    }
}

impl Default for Router {
    /// The default rules: `auth.*` → high; `*.created`, `*.updated`, `*.deleted` → normal;
    /// anything else → low.
    fn default() -> Self {
        Self::new(&EventsConfig::default().routing).expect("default routing rules are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Pattern {
        Pattern::new(text).unwrap()
    }

    #[test]
    fn exact_patterns_match_only_themselves() {
        let pat = p("user.created");
        assert!(!pat.is_glob());
        assert!(pat.matches("user.created"));
        assert!(!pat.matches("user.created2"));
        assert!(!pat.matches("user.create"));
        assert!(!pat.matches(""));
    }

    #[test]
    fn stars_match_any_run_of_characters() {
        let cases: &[(&str, &str, bool)] = &[
            ("auth.*", "auth.login", true),
            ("auth.*", "auth.", true),
            ("auth.*", "auth.mfa.otp.checked", true),
            ("auth.*", "auth", false),
            ("auth.*", "oauth.login", false),
            ("*.created", "user.created", true),
            ("*.created", "project.application.created", true),
            ("*.created", ".created", true),
            ("*.created", "created", false),
            ("*.created", "user.created.later", false),
            ("*", "", true),
            ("*", "anything.at.all", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "acb", false),
            ("a*b*c", "abcbc", true),
            ("ab*ba", "aba", false),
            ("ab*ba", "abba", true),
            ("user.*.changed", "user.human.profile.changed", true),
            ("user.*.changed", "user.changed", false),
            ("**", "x", true),
            ("é*ü", "éü", true),
            ("é*ü", "é.ü", true),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(p(pattern).matches(text), *want, "{pattern} vs {text}");
        }
    }

    #[test]
    fn malformed_patterns_are_rejected_with_a_reason() {
        for (text, reason) in [
            ("", "must not be empty"),
            ("user created", "whitespace"),
            ("user.\tcreated", "whitespace"),
            ("user.?", "only `*`"),
            ("user.[ab]", "only `*`"),
            ("user.{a,b}", "only `*`"),
        ] {
            let err = Pattern::new(text).unwrap_err();
            assert!(err.to_string().contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn default_routing_follows_the_design() {
        let router = Router::default();
        for (ty, want) in [
            ("auth.login", Priority::High),
            ("auth.logout", Priority::High),
            ("auth.failed", Priority::High),
            ("user.created", Priority::Normal),
            ("org.updated", Priority::Normal),
            ("role.deleted", Priority::Normal),
            ("user.profile_viewed", Priority::Low),
            ("analytics.page_viewed", Priority::Low),
            ("something.unknown", Priority::Low),
            ("authz.check", Priority::Low),
        ] {
            assert_eq!(router.route(ty), want, "{ty}");
        }
    }

    #[test]
    fn first_matching_rule_wins_and_explicit_priority_overrides() {
        let rules = vec![
            RouteRule {
                pattern: "user.deleted".into(),
                priority: Priority::High,
            },
            RouteRule {
                pattern: "*.deleted".into(),
                priority: Priority::Low,
            },
            RouteRule {
                pattern: "*".into(),
                priority: Priority::Normal,
            },
        ];
        let router = Router::new(&rules).unwrap();
        assert_eq!(router.route("user.deleted"), Priority::High);
        assert_eq!(router.route("org.deleted"), Priority::Low);
        assert_eq!(router.route("auth.login"), Priority::Normal);

        let mut event = Event::new("org.deleted", "test", None);
        assert_eq!(router.priority(&event), Priority::Low);
        event.priority = Some(Priority::High);
        assert_eq!(router.priority(&event), Priority::High);
    }

    #[test]
    fn router_rejects_a_bad_pattern() {
        let err = Router::new(&[RouteRule {
            pattern: String::new(),
            priority: Priority::High,
        }])
        .unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn type_filter_takes_exact_names_and_globs() {
        let filter = TypeFilter::new(&["user.created", "auth.*"]).unwrap();
        assert!(filter.accepts("user.created"));
        assert!(filter.accepts("auth.login"));
        assert!(!filter.accepts("user.updated"));
        assert!(!filter.accepts("auth"));

        let empty: [&str; 0] = [];
        assert!(TypeFilter::new(&empty).unwrap().accepts("whatever.type"));
        assert!(TypeFilter::any().accepts("x"));
        assert!(TypeFilter::new(&["ok", "bad one"]).is_err());
    }

    #[test]
    fn priorities_read_and_print_in_lowercase() {
        assert_eq!(
            Priority::ALL,
            [Priority::High, Priority::Normal, Priority::Low]
        );
        for p in Priority::ALL {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{p}\""));
            assert_eq!(serde_json::from_str::<Priority>(&json).unwrap(), p);
        }
        assert!(serde_json::from_str::<Priority>("\"urgent\"").is_err());
    }
}
