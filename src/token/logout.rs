//! Dropping cached introspection results when a user or a session logs out.
//!
//! An `auth.logout` event names who logged out. ZITADEL's `user.human.signed.out` is a
//! user aggregate (its subject is the user id, a token's `sub`); `session.terminated` is
//! a session aggregate (its subject is the session id, a token's `sid`). The aggregate
//! type travels in the `zitadelaggregatetype` extension; without it the subject is tried
//! as both. Producers other than ZITADEL may name `sub` / `userId` and `sid` /
//! `sessionId` in the event data instead.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::Value;

use super::introspect::{IntrospectError, Introspector};
use crate::events::{Event, Handler};

/// Our event type for a logout.
pub const LOGOUT_EVENT: &str = "auth.logout";

/// Who an event logs out: user ids (`sub`) and session ids (`sid`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LoggedOut {
    /// User ids.
    pub users: Vec<String>,
    /// ZITADEL session ids.
    pub sessions: Vec<String>,
}

/// Who `event` logs out; empty unless it is an `auth.logout` event.
pub fn logged_out(event: &Event) -> LoggedOut {
    let mut out = LoggedOut::default();
    if event.ty != LOGOUT_EVENT {
        return out;
    }
    let push = |list: &mut Vec<String>, id: &str| {
        if !id.is_empty() && !list.iter().any(|known| known == id) {
            list.push(id.to_owned());
        }
    };
    if let Some(subject) = event.subject.as_deref() {
        let aggregate = event
            .extensions
            .get("zitadelaggregatetype")
            .and_then(Value::as_str);
        match aggregate {
            Some("user") => push(&mut out.users, subject),
            Some("session") => push(&mut out.sessions, subject),
            _ => {
                push(&mut out.users, subject);
                push(&mut out.sessions, subject);
            }
        }
    }
    let data: Option<Value> = event
        .data_json()
        .and_then(|json| serde_json::from_str(json).ok());
    if let Some(Value::Object(data)) = data {
        for field in ["sub", "userId", "userID"] {
            if let Some(id) = data.get(field).and_then(Value::as_str) {
                push(&mut out.users, id);
            }
        }
        for field in ["sid", "sessionId", "sessionID"] {
            if let Some(id) = data.get(field).and_then(Value::as_str) {
                push(&mut out.sessions, id);
            }
        }
    }
    out
}

impl Introspector {
    /// Drops the cached results of whoever `event` logs out (see [`logged_out`]); returns
    /// how many were dropped. Other events drop nothing.
    ///
    /// # Errors
    /// [`IntrospectError::Cache`].
    pub async fn evict_for_event(&self, event: &Event) -> Result<u64, IntrospectError> {
        let who = logged_out(event);
        let mut removed = 0;
        for user in &who.users {
            removed += self.evict_subject(user).await?;
        }
        for session in &who.sessions {
            removed += self.evict_session(session).await?;
        }
        Ok(removed)
    }
}

/// A [`Handler`] that drops cached introspection results on `auth.logout` events, then
/// passes every event on to the handler it wraps. A failed eviction fails the event, so
/// the worker retries it.
///
/// # Examples
/// ```no_run
/// # use std::sync::Arc;
/// # use blinkchamber::events::{LogSink, Workers};
/// # use blinkchamber::token::{EvictOnLogout, Introspector};
/// # fn wire(introspector: Introspector, cfg: &blinkchamber::config::EventsConfig,
/// #         queues: blinkchamber::events::Queues) -> Workers {
/// let handler = EvictOnLogout::new(introspector, Arc::new(LogSink));
/// Workers::start(cfg, queues, Arc::new(handler))
/// # }
/// ```
pub struct EvictOnLogout {
    introspector: Introspector,
    next: Arc<dyn Handler>,
}

impl EvictOnLogout {
    /// Evicts with `introspector`, then hands each event to `next`.
    pub fn new(introspector: Introspector, next: Arc<dyn Handler>) -> Self {
        Self { introspector, next }
    }
}

impl Handler for EvictOnLogout {
    fn handle<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if event.ty == LOGOUT_EVENT {
                let removed = self
                    .introspector
                    .evict_for_event(event)
                    .await
                    .map_err(|e| format!("token cache eviction failed: {e}"))?;
                tracing::debug!(id = %event.id, removed, "tokens: logout evicted cached introspections");
            }
            self.next.handle(event).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(subject: Option<&str>, aggregate: Option<&str>, data: Option<&str>) -> Event {
        let mut e: Event = serde_json::from_value(serde_json::json!({
            "specversion": "1.0", "id": "1", "source": "test", "type": LOGOUT_EVENT,
        }))
        .unwrap();
        e.subject = subject.map(str::to_owned);
        if let Some(a) = aggregate {
            e.extensions
                .insert("zitadelaggregatetype".into(), Value::from(a));
        }
        e.data = data.map(|d| serde_json::value::RawValue::from_string(d.to_owned()).unwrap());
        e
    }

    #[test]
    fn zitadel_aggregates_name_a_user_or_a_session() {
        let who = logged_out(&event(Some("42"), Some("user"), None));
        assert_eq!((who.users, who.sessions.len()), (vec!["42".to_owned()], 0));
        let who = logged_out(&event(Some("7"), Some("session"), None));
        assert_eq!((who.users.len(), who.sessions), (0, vec!["7".to_owned()]));
        let who = logged_out(&event(Some("9"), None, None));
        assert_eq!(
            (who.users, who.sessions),
            (vec!["9".into()], vec!["9".into()])
        );
    }

    #[test]
    fn data_fields_add_ids_and_other_types_name_nobody() {
        let who = logged_out(&event(None, None, Some(r#"{"userId":"u","sid":"s"}"#)));
        assert_eq!(
            (who.users, who.sessions),
            (vec!["u".into()], vec!["s".into()])
        );
        let mut other = event(Some("42"), None, None);
        other.ty = "auth.login".into();
        assert_eq!(logged_out(&other), LoggedOut::default());
    }
}
