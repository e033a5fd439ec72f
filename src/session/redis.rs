//! Sessions in Redis: one string per session, one sorted set per user, one Lua script per
//! operation that writes (`lua/*.lua`, each prefixed with `lua/common.lua` but for the hot
//! `touch.lua` and `update.lua`, which stand alone).
//!
//! Keys (`{prefix}` is `sessions.keyPrefix`; `{handle}` is the SHA-256 of the id, see
//! [`super::id::handle`] — the id itself never reaches Redis):
//! - `{prefix}s:{handle}` — the session as one string ([`super::record`]: version,
//!   created, absolute end, idle timeout and idle deadline at fixed offsets, kind, user,
//!   then the data); its PTTL ends at the idle deadline, capped by the absolute end, so
//!   Redis itself drops a session that ends.
//! - `{prefix}u:{userId}` — sorted set handle → absolute end, pruned on create, delete and
//!   list, expiring with its longest-lived member; at most `sessions.maxPerUser` members.
//!
//! Every function here takes and answers handles where the scripts say "id".
//!
//! A plain read is one `GET` (the value carries its idle deadline; concurrent reads share
//! an `MGET`), no script; a touch is one script that writes the value with its new
//! deadline and PTTL in one `SET` (unless the stored deadline is within the renewal step,
//! see `lua/touch.lua`) and answers it; an update reads only the header, writes the new
//! version and data in place, and answers what it read (the header). Concurrent
//! touches, and concurrent updates, share script calls. A session stored by an earlier
//! release as a hash is rewritten in the string layout by the first operation that meets
//! it (`upgrade` in `lua/common.lua`; the client calls `lua/upgrade.lua` when a `GET`
//! answers `WRONGTYPE` or the touch or update script reports a hash).
//! Every script that needs the time reads Redis's clock (`TIME`), so instances with skewed
//! clocks agree on expiry. A script touches only the keys it is given in `KEYS`. The keys
//! found through data (a session's index from its stored user: delete, rotate; an index's
//! sessions: list, revoke, and create at the limit) are checked against `KEYS` before
//! anything is written; when one is missing the script writes nothing and names it
//! (`need`), and [`RedisSessions::call`] calls again with it added. The id alone must find
//! the session, so a session and its index cannot share a Cluster hash tag: Redis Cluster
//! would also need them in one slot (see ARCHITECTURE.md).

use redis::Script;
use serde_json::Value;

use crate::backend::redis::batch::{Arg, GetBatcher, Item, ScriptBatcher};

use super::record::{self, Header, decode};
use super::{
    Rotated, Session, SessionError, SessionKind, Updated, millis, record_evicted, record_expired,
};
use crate::backend::{BackendError, RedisBackend, Retry};
use crate::config::SessionTimeouts;

const COMMON: &str = include_str!("lua/common.lua");

fn script(body: &str) -> Script {
    Script::new(&format!("{COMMON}\n{body}"))
}

/// Whether `e` is Redis refusing a command on a key of another type: a session an earlier
/// release stored as a hash (Redis before 7.0 wraps a script's error, hence the search).
fn wrong_type(e: &BackendError) -> bool {
    matches!(e, BackendError::Redis(e)
        if e.code() == Some("WRONGTYPE") || e.to_string().contains("WRONGTYPE"))
}

/// What the touch and update scripts answer for a session still stored as a hash by an
/// earlier release.
const HASH: redis::Value = redis::Value::Int(-1);

/// Strings per session in a script's answer: its id and its value.
const FIELDS: usize = 2;

/// Calls of one script, each adding the keys the previous one said it needed (an index
/// whose members change between calls needs more than two).
const DECLARE_ROUNDS: usize = 5;

/// The Redis store.
pub(super) struct RedisSessions {
    backend: RedisBackend,
    prefix: String,
    create: Script,
    /// Concurrent touches share script calls: one key per touch, one reply.
    touch: ScriptBatcher<1, 0, redis::Value>,
    /// Concurrent plain reads share `MGET`s.
    reads: GetBatcher,
    /// Concurrent updates share script calls: one key and three arguments per update.
    update: ScriptBatcher<1, 3, redis::Value>,
    rotate: Script,
    delete: Script,
    list: Script,
    revoke: Script,
    upgrade: Script,
}

impl RedisSessions {
    pub(super) fn new(backend: RedisBackend, prefix: &str) -> Self {
        Self {
            backend: backend.clone(),
            prefix: prefix.to_owned(),
            create: script(include_str!("lua/create.lua")),
            reads: GetBatcher::new(backend.clone()),
            touch: ScriptBatcher::new(
                backend.clone(),
                include_str!("lua/touch.lua"),
                1,
                Retry::Idempotent,
            ),
            update: ScriptBatcher::new(backend, include_str!("lua/update.lua"), 1, Retry::IfNotRun),
            rotate: script(include_str!("lua/rotate.lua")),
            delete: script(include_str!("lua/delete.lua")),
            list: script(include_str!("lua/list.lua")),
            revoke: script(include_str!("lua/revoke.lua")),
            upgrade: script(include_str!("lua/upgrade.lua")),
        }
    }

    fn session_key(&self, id: &str) -> String {
        // Not `format!`: this runs on every read, and the formatting machinery cost more
        // than the copy.
        [self.prefix.as_str(), "s:", id].concat()
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
        let value = if touch {
            // Repeating a touch is harmless, so the batcher may resend it.
            let answer = self
                .upgrading(id, |key| {
                    let item = Item {
                        keys: [Arg::Text(key)],
                        args: [],
                    };
                    self.touch.call(vec![item])
                })
                .await?;
            match answer {
                Some(redis::Value::BulkString(value)) => Some(value),
                Some(redis::Value::Nil | redis::Value::Boolean(false)) => None,
                other => {
                    return Err(SessionError::Decode(format!(
                        "unexpected answer to a touch: {other:?}"
                    )));
                }
            }
        } else {
            match self.reads.get(self.session_key(id)).await? {
                Some(value) => Some(value),
                // `MGET` answers nil for a key of another type too: a plain `GET` tells a
                // session stored as a hash by an earlier release (`WRONGTYPE`) from none.
                None => {
                    let key = self.session_key(id);
                    match self.get_value(&key).await {
                        Err(e) if wrong_type(&e) => {
                            self.upgrade(&key).await?;
                            self.get_value(&key).await?
                        }
                        answer => answer?,
                    }
                }
            }
        };
        value.map(|v| decode(id.to_owned(), &v)).transpose()
    }

    /// The value at `key`, one `GET`.
    async fn get_value(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let mut get = redis::Cmd::with_capacity(2, 3 + key.len());
        get.arg("GET").arg(key);
        self.backend.query(&get).await
    }

    /// Runs `call` (a batched script) on the key of session `id` and answers its reply;
    /// when the script reports [`HASH`], rewrites the session in the current layout and
    /// runs `call` once more.
    async fn upgrading<F, Fut>(
        &self,
        id: &str,
        call: F,
    ) -> Result<Option<redis::Value>, BackendError>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<Vec<redis::Value>, BackendError>>,
    {
        let mut answer = call(self.session_key(id)).await?.pop();
        if answer == Some(HASH) {
            self.upgrade(&self.session_key(id)).await?;
            answer = call(self.session_key(id)).await?.pop();
        }
        Ok(answer)
    }

    /// Rewrites a session stored as a hash (by a release before the string layout) in the
    /// current layout, in place.
    async fn upgrade(&self, key: &str) -> Result<(), BackendError> {
        let call = evalsha(&self.upgrade, key, 0);
        let _: Option<Vec<u8>> = self
            .backend
            .query_with_script(Retry::Idempotent, &call, &self.upgrade)
            .await?;
        Ok(())
    }

    pub(super) async fn update(
        &self,
        id: &str,
        data: Value,
        version: u64,
    ) -> Result<Updated, SessionError> {
        let text = data.to_string();
        let expected = record::version_field(version);
        let next = record::version_field(version.saturating_add(1));
        // Not idempotent (the batcher sends it only if it cannot have run): a resend after
        // a lost reply would see its own write as a conflict.
        let answer = self.upgrading(id, |key| {
            let item = Item {
                keys: [Arg::Text(key)],
                args: [
                    Arg::Text(text.clone()),
                    Arg::Text(expected.clone()),
                    Arg::Text(next.clone()),
                ],
            };
            self.update.call(vec![item])
        });
        let Some(answer) = answer.await? else {
            return Err(SessionError::Decode("no answer to an update".into()));
        };
        Ok(match answer {
            redis::Value::Nil | redis::Value::Boolean(false) => Updated::Missing,
            redis::Value::Int(current) if current >= 0 => Updated::Conflict(current as u64),
            // What the script read of the value at the old version: its header is the new
            // one once the new version replaces the old (the two are the same length).
            redis::Value::BulkString(read) if read.len() > next.len() => {
                let mut head = next.into_bytes();
                head.extend_from_slice(&read[head.len()..]);
                let (header, _) = Header::split(&head)?;
                Updated::Done(header.session(id.to_owned(), data))
            }
            other => {
                return Err(SessionError::Decode(format!(
                    "unexpected answer to an update: {other:?}"
                )));
            }
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

/// The one session in an `ok` answer: status, expired count, id, value.
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
    let [id, value] = f else {
        return Err(SessionError::Decode("truncated session list".into()));
    };
    decode(id.clone(), value.as_bytes())
}

/// `EVALSHA` of `script` on `key`, with room for `args` more bytes of arguments.
fn evalsha(script: &Script, key: &str, args: usize) -> redis::Cmd {
    let mut cmd = redis::Cmd::with_capacity(6, 60 + key.len() + args);
    cmd.arg("EVALSHA").arg(script.get_hash()).arg(1).arg(key);
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
