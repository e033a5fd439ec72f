//! Sessions in Redis: one hash per session, one sorted set per user, one Lua script per
//! operation (`lua/*.lua`, each prefixed with `lua/common.lua`).
//!
//! Keys (`{prefix}` is `sessions.keyPrefix`; `{handle}` is the SHA-256 of the id, see
//! [`super::id::handle`] — the id itself never reaches Redis):
//! - `{prefix}s:{handle}` — hash `user`, `kind`, `data` (JSON), `version`, `created`,
//!   `expires` (absolute end, unix ms), `idle` (idle timeout, ms), `deadline` (idle
//!   deadline, unix ms); its PTTL ends at the deadline, capped by the absolute end, so
//!   Redis itself drops a session that ends.
//! - `{prefix}u:{userId}` — sorted set handle → absolute end, pruned on create, delete and
//!   list, expiring with its longest-lived member; at most `sessions.maxPerUser` members.
//!
//! Every function here takes and answers handles where the scripts say "id".
//!
//! A plain read is one `HMGET` (the hash carries its idle deadline), no script; a touch is
//! the renewing script followed by that `HMGET` in one round trip, and an update answers
//! no data: session data never passes back through Lua, whose conversions cost Redis
//! more than the commands themselves.
//! Every script reads Redis's clock (`TIME`), so instances with skewed clocks agree on
//! expiry. A script touches only the keys it is given in `KEYS`. The keys found through
//! data (a session's index from its stored user: delete, rotate; an index's sessions: list,
//! revoke, and create at the limit) are checked against `KEYS` before anything is written;
//! when one is missing the script writes nothing and names it (`need`), and
//! [`RedisSessions::call`] calls again with it added. The id alone must find the session,
//! so a session and its index cannot share a Cluster hash tag: Redis Cluster would also
//! need them in one slot (see ARCHITECTURE.md).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Script;
use serde_json::Value;

use super::{
    Rotated, Session, SessionError, SessionKind, Updated, millis, record_evicted, record_expired,
};
use crate::backend::{BackendError, RedisBackend, Retry};
use crate::config::SessionTimeouts;

const COMMON: &str = include_str!("lua/common.lua");

fn script(body: &str) -> Script {
    Script::new(&format!("{COMMON}\n{body}"))
}

/// Strings per session in a script's answer.
const FIELDS: usize = 8;

/// Calls of one script, each adding the keys the previous one said it needed (an index
/// whose members change between calls needs more than two).
const DECLARE_ROUNDS: usize = 5;

/// The Redis store.
pub(super) struct RedisSessions {
    backend: RedisBackend,
    prefix: String,
    create: Script,
    touch: Script,
    update: Script,
    rotate: Script,
    delete: Script,
    list: Script,
    revoke: Script,
}

impl RedisSessions {
    pub(super) fn new(backend: RedisBackend, prefix: &str) -> Self {
        Self {
            backend,
            prefix: prefix.to_owned(),
            create: script(include_str!("lua/create.lua")),
            touch: script(include_str!("lua/touch.lua")),
            update: script(include_str!("lua/update.lua")),
            rotate: script(include_str!("lua/rotate.lua")),
            delete: script(include_str!("lua/delete.lua")),
            list: script(include_str!("lua/list.lua")),
            revoke: script(include_str!("lua/revoke.lua")),
        }
    }

    fn session_key(&self, id: &str) -> String {
        format!("{}s:{id}", self.prefix)
    }

    fn index_key(&self, user: &str) -> String {
        format!("{}u:{user}", self.prefix)
    }

    /// Runs `script` with `keys` and `args`, answering its strings; when the script names
    /// keys it needs but was not given (`need`: it wrote nothing), calls again with them,
    /// up to [`DECLARE_ROUNDS`] times.
    async fn call(
        &self,
        script: &Script,
        retry: Retry,
        keys: &[String],
        args: &[String],
    ) -> Result<Vec<String>, BackendError> {
        let mut keys = keys.to_vec();
        for _ in 0..DECLARE_ROUNDS {
            let answer = self.call_once(script, retry, &keys, args).await?;
            if answer.first().map(String::as_str) != Some("need") {
                return Ok(answer);
            }
            keys.extend(answer.into_iter().skip(1));
        }
        Err(BackendError::Unavailable(format!(
            "the sessions of `{}` kept changing while a script gathered their keys; try again",
            keys.first().map_or("", String::as_str)
        )))
    }

    async fn call_once(
        &self,
        script: &Script,
        retry: Retry,
        keys: &[String],
        args: &[String],
    ) -> Result<Vec<String>, BackendError> {
        self.backend
            .run(retry, |mut c| {
                let mut call = script.prepare_invoke();
                for k in keys {
                    call.key(k);
                }
                for a in args {
                    call.arg(a);
                }
                async move { call.invoke_async(&mut c).await }
            })
            .await
    }

    /// `None` when `id` (a handle) is taken.
    pub(super) async fn create(
        &self,
        id: &str,
        user: &str,
        kind: SessionKind,
        data: &Value,
        t: SessionTimeouts,
        max_per_user: u32,
    ) -> Result<Option<Session>, SessionError> {
        let data = data.to_string();
        {
            let keys = [self.session_key(id), self.index_key(user)];
            let args = [
                id.to_owned(),
                user.to_owned(),
                kind.as_str().to_owned(),
                data.clone(),
                millis(t.absolute_timeout).to_string(),
                millis(t.idle_timeout).to_string(),
                self.prefix.clone(),
                max_per_user.to_string(),
            ];
            // Not idempotent (a resend after a lost reply would answer `exists`).
            let answer = self
                .call(&self.create, Retry::IfNotRun, &keys, &args)
                .await?;
            // `exists`: a 256-bit collision, which does not happen; the caller tries a
            // fresh id.
            if answer[0] != "ok" {
                return Ok(None);
            }
            record_evicted(number(answer.get(2))?);
            let mut rest = answer;
            rest.remove(2);
            one(&rest).map(Some)
        }
    }

    pub(super) async fn read(
        &self,
        id: &str,
        touch: bool,
    ) -> Result<Option<Session>, SessionError> {
        let key = self.session_key(id);
        let fields = if touch {
            self.touch_then_read(&key).await?
        } else {
            self.backend.query(&read_fields(&key)).await?
        };
        let Some(fields) = fields.into_iter().collect::<Option<Vec<String>>>() else {
            return Ok(None);
        };
        let Ok([user, kind, data, version, created, expires, deadline]) =
            <[String; FIELDS - 1]>::try_from(fields)
        else {
            return Err(SessionError::Decode("truncated session fields".into()));
        };
        let data = serde_json::from_str(&data)
            .map_err(|e| SessionError::Decode(format!("data is not JSON: {e}")))?;
        let stored = [version, created, expires, deadline];
        session(id.to_owned(), user, &kind, data, &stored).map(Some)
    }

    /// The touch script, then the session's fields by `HMGET`, in one round trip (loading
    /// the script first where Redis does not have it). Repeating both is harmless, so the
    /// call is idempotent. A `None` field when the script found no live session.
    async fn touch_then_read(&self, key: &str) -> Result<Vec<Option<String>>, BackendError> {
        let mut pipe = redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(self.touch.get_hash())
            .arg(1)
            .arg(key)
            .add_command(read_fields(key));
        let (deadline, fields): (u64, Vec<Option<String>>) = self
            .backend
            .pipeline_with_script(&pipe, &self.touch)
            .await?;
        Ok(if deadline == 0 { vec![None] } else { fields })
    }

    pub(super) async fn update(
        &self,
        id: &str,
        data: Value,
        version: u64,
    ) -> Result<Updated, SessionError> {
        let keys = [self.session_key(id)];
        let args = [data.to_string(), version.to_string()];
        // Not idempotent: a resend after a lost reply would see its own write as a
        // conflict.
        let answer = self
            .call(&self.update, Retry::IfNotRun, &keys, &args)
            .await?;
        Ok(match answer[0].as_str() {
            "missing" => Updated::Missing,
            "conflict" => Updated::Conflict(number(answer.get(1))?),
            _ => match answer.get(1..) {
                Some([user, kind, version, created, expires, deadline]) => {
                    let numbers = [version, created, expires, deadline];
                    Updated::Done(session(id.to_owned(), user.clone(), kind, data, &numbers)?)
                }
                _ => {
                    return Err(SessionError::Decode(format!(
                        "expected 6 fields in an update's answer, got {}",
                        answer.len() - 1
                    )));
                }
            },
        })
    }

    pub(super) async fn rotate(&self, id: &str, new_id: &str) -> Result<Rotated, SessionError> {
        let keys = [self.session_key(id), self.session_key(new_id)];
        let args = [id.to_owned(), new_id.to_owned(), self.prefix.clone()];
        let answer = self
            .call(&self.rotate, Retry::IfNotRun, &keys, &args)
            .await?;
        Ok(match answer[0].as_str() {
            "missing" => Rotated::Missing,
            "ok" => Rotated::Done(Box::new(one(&answer)?)),
            _ => Rotated::Taken,
        })
    }

    pub(super) async fn delete(&self, id: &str) -> Result<bool, SessionError> {
        let keys = [self.session_key(id)];
        let args = [id.to_owned(), self.prefix.clone()];
        let answer = self
            .call(&self.delete, Retry::IfNotRun, &keys, &args)
            .await?;
        Ok(answer[0] == "ok")
    }

    pub(super) async fn list(&self, user: &str) -> Result<Vec<Session>, SessionError> {
        let keys = [self.index_key(user)];
        let args = [self.prefix.clone()];
        let answer = self
            .call(&self.list, Retry::Idempotent, &keys, &args)
            .await?;
        record_expired(number(answer.get(1))?);
        answer[2..].chunks(FIELDS).map(parse).collect()
    }

    pub(super) async fn revoke_user(&self, user: &str) -> Result<usize, SessionError> {
        let keys = [self.index_key(user)];
        let args = [self.prefix.clone()];
        let answer = self
            .call(&self.revoke, Retry::IfNotRun, &keys, &args)
            .await?;
        Ok(usize::try_from(number(answer.get(1))?).unwrap_or(usize::MAX))
    }
}

/// The one session in an `ok` answer.
fn one(answer: &[String]) -> Result<Session, SessionError> {
    record_expired(number(answer.get(1))?);
    match answer.get(2..) {
        Some(fields) if fields.len() == FIELDS => parse(fields),
        _ => Err(SessionError::Decode(format!(
            "expected {FIELDS} session fields, got {}",
            answer.len().saturating_sub(2)
        ))),
    }
}

fn parse(f: &[String]) -> Result<Session, SessionError> {
    let [id, user, kind, data, version, created, expires, deadline] = f else {
        return Err(SessionError::Decode("truncated session list".into()));
    };
    let data = serde_json::from_str(data)
        .map_err(|e| SessionError::Decode(format!("data is not JSON: {e}")))?;
    let stored = [version, created, expires, deadline].map(String::as_str);
    session(id.clone(), user.clone(), kind, data, &stored)
}

/// A session from its handle, user, kind, data and its numbers as stored: version,
/// created, expires and idle deadline (milliseconds since the epoch).
fn session(
    id: String,
    user: String,
    kind: &str,
    data: Value,
    numbers: &[impl AsRef<str>; 4],
) -> Result<Session, SessionError> {
    let kind = SessionKind::parse(kind)
        .ok_or_else(|| SessionError::Decode(format!("unknown kind `{kind}`")))?;
    let [version, created, expires, deadline] = numbers.each_ref().map(|n| n.as_ref());
    Ok(Session {
        id,
        handle: String::new(),
        user_id: user,
        kind,
        data,
        version: parse_number(version)?,
        created_at: time(created)?,
        expires_at: time(expires)?,
        idle_expires_at: time(deadline)?,
    })
}

/// `HMGET` of a session's fields, in the order [`parse`] takes them after the id.
fn read_fields(key: &str) -> redis::Cmd {
    const NAMES: [&str; FIELDS - 1] = [
        "user", "kind", "data", "version", "created", "expires", "deadline",
    ];
    let data = 5 + key.len() + NAMES.iter().map(|n| n.len()).sum::<usize>();
    let mut cmd = redis::Cmd::with_capacity(FIELDS + 1, data);
    cmd.arg("HMGET").arg(key).arg(&NAMES);
    cmd
}

/// A number of a script's answer, which may be missing.
fn number(text: Option<&String>) -> Result<u64, SessionError> {
    match text {
        Some(text) => parse_number(text),
        None => Err(SessionError::Decode(
            "expected a number, got nothing".into(),
        )),
    }
}

fn parse_number(text: &str) -> Result<u64, SessionError> {
    text.parse()
        .map_err(|_| SessionError::Decode(format!("expected a number, got {text:?}")))
}

fn time(ms: &str) -> Result<SystemTime, SessionError> {
    Ok(UNIX_EPOCH + Duration::from_millis(parse_number(ms)?))
}
