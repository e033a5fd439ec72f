//! Session rows: reads (with and without renewing the idle timeout) beside raw `GET`, and
//! compare-and-set updates beside raw `SET`, over [`SESSIONS`] sessions with ~220 bytes
//! of data.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;

use super::{Raw, RawBaselines, Row};
use crate::backend::RedisBackend;
use crate::config::SessionsConfig;
use crate::session::{SessionKind, Sessions};

/// Sessions the rows spread over.
pub const SESSIONS: usize = 1000;

/// Users the sessions belong to.
const USERS: usize = 100;

/// `get`, `touch` and `update` rows.
pub async fn session_rows(
    backend: RedisBackend,
    raw: &Raw,
    concurrency: usize,
    duration: Duration,
    prefix: &str,
) -> Vec<Row> {
    let cfg = SessionsConfig {
        key_prefix: format!("{prefix}session:"),
        ..SessionsConfig::default()
    };
    let sessions = Sessions::redis(&cfg, backend);
    let data = json!({"roles": ["viewer"], "org": "o-1", "note": "x".repeat(160)});
    let mut ids = Vec::with_capacity(SESSIONS);
    let mut versions = Vec::with_capacity(SESSIONS);
    for i in 0..SESSIONS {
        match sessions
            .create(
                &format!("user-{}", i % USERS),
                SessionKind::User,
                data.clone(),
            )
            .await
        {
            Ok(s) => {
                ids.push(s.id);
                versions.push(AtomicU64::new(s.version));
            }
            Err(e) => {
                eprintln!("session rows skipped: {e}");
                return Vec::new();
            }
        }
    }
    let (ids, versions) = (Arc::new(ids), Arc::new(versions));
    let pick = move |task: usize, seq: u64| (task as u64 * 7919 + seq) as usize % SESSIONS;

    let mut rows = Vec::new();
    for (name, touch) in [("session get", false), ("session touch (renew idle)", true)] {
        let (sessions, ids) = (sessions.clone(), ids.clone());
        rows.extend(
            raw.against(
                RawBaselines::GET,
                name,
                concurrency,
                duration,
                move |task, seq| {
                    let (sessions, id) = (sessions.clone(), ids[pick(task, seq)].clone());
                    async move {
                        let _ = if touch {
                            sessions.touch(&id).await
                        } else {
                            sessions.get(&id).await
                        };
                    }
                },
            )
            .await,
        );
    }
    let ending = sessions.clone();
    // Each task updates only its own sessions (index ≡ task mod concurrency), so it always
    // holds the current version and every update succeeds.
    let tasks = concurrency.max(1);
    rows.extend(
        raw.against(
            RawBaselines::SET,
            "session update (compare-and-set)",
            concurrency,
            duration,
            move |task, seq| {
                let (sessions, ids, versions) = (sessions.clone(), ids.clone(), versions.clone());
                let per_task = SESSIONS.div_ceil(tasks);
                let i = (task + tasks * (seq as usize % per_task)) % SESSIONS;
                let data =
                    json!({"roles": ["viewer"], "org": "o-1", "n": seq, "note": "x".repeat(150)});
                async move {
                    let version = versions[i].load(Ordering::Relaxed);
                    if let Ok(s) = sessions.update(&ids[i], data, version).await {
                        versions[i].store(s.version, Ordering::Relaxed);
                    }
                }
            },
        )
        .await,
    );
    // Ended rather than left to their idle timeout, so a Redis used for many runs does not
    // grow by a thousand sessions each time these rows run.
    for user in 0..USERS {
        let _ = ending.revoke_user(&format!("user-{user}")).await;
    }
    rows
}
