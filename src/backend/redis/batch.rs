//! Coalescing calls of one Lua script, or plain reads, from many concurrent callers.
//!
//! A script written to loop over items (a fixed number of `KEYS` and `ARGV` per item, a
//! fixed number of replies per item, integers unless the batcher says otherwise) can
//! decide many callers' items in one `EVALSHA`. [`ScriptBatcher`] keeps at most
//! [`CALLS_IN_FLIGHT`] calls out; items that arrive meanwhile queue and go out together in
//! the next call (at most [`MAX_ITEMS`] items, or one caller's items if that caller alone
//! has more). The script handles items one after another, so each stays atomic; what they
//! share is the round trip and the script's fixed cost (invocation, `TIME`), which
//! dominate a small script.
//!
//! Keys and arguments that are the same for every item (a counter, a channel) can be sent
//! once per call as a [`Header`], ahead of the items': each argument Redis parses costs it
//! about as much as a third of a `GET`.
//!
//! A script may also read every item's keys up front, in one `MGET`, and answer in one
//! string of packed numbers ([`ScriptBatcher::reading_keys_first`]): a `redis.call` of its
//! own per key, and an integer per reply value, cost Redis more. Such a script is told
//! which items repeat a key of an earlier item in the same call, as the earlier item may
//! have written it.
//!
//! [`GetBatcher`] does the same for plain reads, as one `MGET` of at most [`MAX_READS`]
//! keys (no script): the fixed cost of a command on both sides (its reply, its hand-off to
//! the connection) is shared, so a read costs the client less than a `GET` of its own.
//!
//! An idle batcher sends a lone item at once. There is no batching task: the caller that
//! gets a free call slot sends what is queued, so an item costs one task hand-off at most.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use redis::{FromRedisValue, RedisWrite, Script, ToRedisArgs};
use tokio::sync::{Semaphore, oneshot};

use super::RedisBackend;
use crate::backend::{BackendError, Retry};

/// Script calls in flight at once per batcher.
///
/// Measured with the rate-limit script at 50 callers on 2 cores: two calls in flight gave
/// 116 k checks/s, four 159 k, eight 140 k (88 k without coalescing). Session touches, the
/// cheapest script per call, lost a quarter at two.
pub const CALLS_IN_FLIGHT: usize = 4;

/// Calls in flight for a script whose fixed cost per call is large beside an item's: fewer,
/// fuller calls. The rate-limit script costs Redis about 56 k instructions per call
/// (`TIME`, the `MGET` of every key, its rules, its packed answer) against 15 k per check,
/// so the 25 checks a call carries at 50 callers cost 17.4 k each, against 19.8 k for the
/// 12 four calls carry (`scripts/script-cost.sh ratelimit`). The lease script's calls cost
/// about 28 k each (`INCRBY` of the fence among it): a cycle (acquire, then release) costs
/// 30.6 k at 24 per call against 32.9 k at 12, and at two calls in flight the bench's calls
/// carried 12.5 acquisitions instead of 8.2 (`INFO commandstats`, `INCRBY` per `DEL`).
pub const FULLER_CALLS_IN_FLIGHT: usize = 2;

/// Most items in one script call.
pub const MAX_ITEMS: usize = 256;

/// Most keys in one `MGET` of a [`GetBatcher`]: its callers all wait for the whole reply,
/// and values can be large (a cache value up to `cache.maxValueBytes`).
pub const MAX_READS: usize = 64;

/// One item: its `K` keys and `A` arguments, as the script's layout says.
#[derive(Clone, Debug)]
pub struct Item<const K: usize, const A: usize> {
    /// The item's keys.
    pub keys: [Arg; K],
    /// The item's arguments.
    pub args: [Arg; A],
}

/// A key or argument of an item, written straight into the script call (a number is
/// never turned into a string of its own).
#[derive(Clone, Debug)]
pub enum Arg {
    /// Text the item owns.
    Text(String),
    /// Text shared by many items (a counter's key, a channel).
    Shared(Arc<str>),
    /// Bytes shared by many items, or packed for one (a rate-limit rule).
    Bytes(Arc<[u8]>),
    /// Text fixed in the program.
    Static(&'static str),
    /// A whole number.
    Int(u64),
}

impl ToRedisArgs for Arg {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        match self {
            Arg::Text(text) => text.write_redis_args(out),
            Arg::Shared(text) => text.as_bytes().write_redis_args(out),
            Arg::Bytes(bytes) => bytes.write_redis_args(out),
            Arg::Static(text) => text.write_redis_args(out),
            Arg::Int(n) => n.write_redis_args(out),
        }
    }
}

impl Arg {
    /// The bytes Redis receives for this argument.
    fn bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        match self {
            Arg::Text(text) => text.as_bytes().into(),
            Arg::Shared(text) => text.as_bytes().into(),
            Arg::Bytes(bytes) => bytes[..].into(),
            Arg::Static(text) => text.as_bytes().into(),
            Arg::Int(n) => n.to_string().into_bytes().into(),
        }
    }

    /// Bytes this argument takes at most once written (the capacity of a call's buffer).
    fn len(&self) -> usize {
        match self {
            Arg::Text(text) => text.len(),
            Arg::Shared(text) => text.len(),
            Arg::Bytes(bytes) => bytes.len(),
            Arg::Static(text) => text.len(),
            Arg::Int(_) => 20,
        }
    }
}

/// Keys and arguments sent once per call, ahead of every item's: the script finds them at
/// `KEYS[1..=keys.len()]` and `ARGV[1..=args.len()]`, and the items' after them.
#[derive(Clone, Debug, Default)]
pub struct Header {
    /// Keys ahead of the items' keys.
    pub keys: Vec<Arg>,
    /// Arguments ahead of the items' arguments.
    pub args: Vec<Arg>,
}

/// Reads the values of a call answered as one string: `None` when the string is not
/// whole values.
type Unpack<R> = fn(&[u8]) -> Option<Vec<R>>;

/// How a call's replies come back: each item's number of them, and whether they come as
/// one string of packed numbers.
struct Replies<R> {
    /// Replies per item.
    each: usize,
    /// Reads the values of a call answered as one string; none when the call answers an
    /// array of values.
    unpack: Option<Unpack<R>>,
}

impl<R> Replies<R> {
    /// `each` replies per item, as an array.
    fn each(each: usize) -> Self {
        Self { each, unpack: None }
    }
}

struct Pending<const K: usize, const A: usize, R> {
    items: Vec<Item<K, A>>,
    reply: oneshot::Sender<Result<Vec<R>, BackendError>>,
}

struct Shared<const K: usize, const A: usize, R> {
    backend: RedisBackend,
    /// The script called, or none for `MGET` of the items' keys.
    script: Option<Script>,
    header: Header,
    retry: Retry,
    replies: Replies<R>,
    /// Whether the script is told which items repeat a key of an earlier item of the call
    /// ([`ScriptBatcher::reading_keys_first`]).
    tell_repeats: bool,
    /// Most items in one call.
    max_items: usize,
    queue: Mutex<VecDeque<Pending<K, A, R>>>,
    /// Free call slots: at most this many calls out at once.
    slots: Arc<Semaphore>,
}

/// A script whose concurrent calls are coalesced, answering replies of type `R` (integers
/// by default). Cheap to clone.
///
/// There is no batching task: a caller queues its items, and whichever waiting caller gets
/// a free call slot first sends everything queued (its own items or not) and hands each
/// caller its replies. A caller whose items were taken by another simply waits for them.
pub struct ScriptBatcher<const K: usize, const A: usize, R = i64> {
    shared: Arc<Shared<K, A, R>>,
}

impl<const K: usize, const A: usize, R> Clone for ScriptBatcher<K, A, R> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<const K: usize, const A: usize, R> ScriptBatcher<K, A, R>
where
    R: FromRedisValue + Send + 'static,
{
    /// Batches calls of `source`, which answers `replies_per_item` replies per item, in
    /// item order. `retry` applies to a whole call.
    pub fn new(backend: RedisBackend, source: &str, replies_per_item: usize, retry: Retry) -> Self {
        let header = Header::default();
        Self::with_header(
            backend,
            source,
            header,
            replies_per_item,
            CALLS_IN_FLIGHT,
            retry,
        )
    }

    /// Like [`ScriptBatcher::new`], with `header` sent once per call ahead of the items, and
    /// at most `calls_in_flight` calls out at once ([`CALLS_IN_FLIGHT`], or
    /// [`FULLER_CALLS_IN_FLIGHT`] for a script with a large fixed cost per call).
    pub fn with_header(
        backend: RedisBackend,
        source: &str,
        header: Header,
        replies_per_item: usize,
        calls_in_flight: usize,
        retry: Retry,
    ) -> Self {
        let script = Some(Script::new(source));
        let replies = Replies::each(replies_per_item);
        let limits = (MAX_ITEMS, calls_in_flight.max(1));
        Self::calling(backend, script, header, replies, limits, false, retry)
    }

    /// `limits`: the most items in one call, and the most calls out at once.
    /// `tell_repeats`: whether the script is told which items repeat an earlier item's key
    /// ([`ScriptBatcher::reading_keys_first`]).
    fn calling(
        backend: RedisBackend,
        script: Option<Script>,
        header: Header,
        replies: Replies<R>,
        (max_items, calls_in_flight): (usize, usize),
        tell_repeats: bool,
        retry: Retry,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                backend,
                script,
                header,
                retry,
                tell_repeats,
                replies,
                max_items,
                queue: Mutex::new(VecDeque::new()),
                slots: Arc::new(Semaphore::new(calls_in_flight)),
            }),
        }
    }

    /// Runs `items` (possibly in one call with other callers' items) and returns their
    /// replies, in item order.
    ///
    /// # Errors
    /// The backend's error for the whole call (every caller of the call gets a copy).
    pub async fn call(&self, items: Vec<Item<K, A>>) -> Result<Vec<R>, BackendError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let shared = &*self.shared;
        let (reply, mut answer) = oneshot::channel();
        shared.queue().push_back(Pending { items, reply });
        loop {
            tokio::select! {
                biased;
                replies = &mut answer => return received(replies),
                permit = shared.slots.clone().acquire_owned() => {
                    let Ok(permit) = permit else {
                        return received(answer.await);
                    };
                    let batch = shared.take_batch();
                    if batch.is_empty() {
                        // Our items are in another caller's call: give the slot back for
                        // the next batch before waiting for it.
                        drop(permit);
                        return received(answer.await);
                    }
                    let shared = self.shared.clone();
                    FinishOnDrop(Some(Box::pin(async move {
                        let result = run(&shared, &batch).await;
                        // The slot stays taken until the call is over, even if the caller
                        // that sent it was cancelled.
                        drop(permit);
                        deliver(batch, result, &shared.replies);
                    })))
                    .await;
                }
            }
        }
    }
}

impl<const K: usize, const A: usize> ScriptBatcher<K, A, f64> {
    /// Batches calls of `source`, a script that reads every item's keys up front (one
    /// `MGET`) and answers one string: `per_item` little-endian doubles per item, in item
    /// order. At most `calls_in_flight` calls are out at once ([`CALLS_IN_FLIGHT`], or
    /// [`FULLER_CALLS_IN_FLIGHT`] for a script with a large fixed cost per call).
    ///
    /// The script's first argument (after the header's, of which there are none here) is
    /// the 1-based indices, as little-endian u32s, of the items one of whose keys an
    /// earlier item of the same call also has: those must read their keys again, as the
    /// earlier item may have written them since the `MGET`. Its items' arguments follow.
    pub fn reading_keys_first(
        backend: RedisBackend,
        source: &str,
        per_item: usize,
        calls_in_flight: usize,
        retry: Retry,
    ) -> Self {
        let script = Some(Script::new(source));
        let replies = Replies {
            each: per_item,
            unpack: Some(unpack_doubles),
        };
        let limits = (MAX_ITEMS, calls_in_flight.max(1));
        let header = Header::default();
        Self::calling(backend, script, header, replies, limits, true, retry)
    }
}

/// Little-endian doubles, or `None` when `bytes` is not a whole number of them.
fn unpack_doubles(bytes: &[u8]) -> Option<Vec<f64>> {
    let doubles = bytes.chunks_exact(8);
    if !doubles.remainder().is_empty() {
        return None;
    }
    Some(
        doubles
            .map(|d| f64::from_le_bytes(d.try_into().unwrap_or_default()))
            .collect(),
    )
}

/// The 1-based indices of the items one of whose keys an earlier item also has, as
/// little-endian u32s ([`ScriptBatcher::reading_keys_first`]).
fn repeated_items<'a, const K: usize, const A: usize>(
    items: impl Iterator<Item = &'a Item<K, A>>,
) -> Vec<u8> {
    let mut seen = std::collections::HashSet::new();
    let mut repeats = Vec::new();
    for (i, item) in items.enumerate() {
        let mut repeated = false;
        for key in &item.keys {
            repeated |= !seen.insert(key.bytes());
        }
        if repeated {
            repeats.extend_from_slice(&(i as u32 + 1).to_le_bytes());
        }
    }
    repeats
}

/// A call led by one caller on behalf of others: if that caller is cancelled mid-call,
/// the rest of the call moves to a task of its own, so the other callers still get their
/// replies (and nothing is sent twice).
struct FinishOnDrop(Option<Pin<Box<dyn Future<Output = ()> + Send>>>);

impl Future for FinishOnDrop {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(call) = self.0.as_mut() else {
            return Poll::Ready(());
        };
        let done = call.as_mut().poll(cx);
        if done.is_ready() {
            self.0 = None;
        }
        done
    }
}

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        if let Some(call) = self.0.take() {
            tokio::spawn(call);
        }
    }
}

fn received<R>(
    replies: Result<Result<Vec<R>, BackendError>, oneshot::error::RecvError>,
) -> Result<Vec<R>, BackendError> {
    replies.map_err(|_| BackendError::MaybeRan("script call abandoned".into()))?
}

impl<const K: usize, const A: usize, R> Shared<K, A, R> {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending<K, A, R>>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queued callers, oldest first, up to the batcher's most items (at least one caller).
    /// Items of callers that gave up waiting are dropped unsent: a cancelled request must
    /// not take a lock or use up a rate limit.
    fn take_batch(&self) -> Vec<Pending<K, A, R>> {
        let mut queue = self.queue();
        queue.retain(|p| !p.reply.is_closed());
        let mut batch = Vec::new();
        let mut count = 0;
        while let Some(next) = queue.front() {
            if !batch.is_empty() && count + next.items.len() > self.max_items {
                break;
            }
            count += next.items.len();
            batch.extend(queue.pop_front());
        }
        batch
    }
}

async fn run<const K: usize, const A: usize, R: FromRedisValue + Send>(
    shared: &Shared<K, A, R>,
    batch: &[Pending<K, A, R>],
) -> Result<Vec<R>, BackendError> {
    let items = || batch.iter().flat_map(|p| &p.items);
    let total = items().count();
    let Some(script) = &shared.script else {
        let mut call = redis::Cmd::with_capacity(1 + total, 8 + total * 64);
        call.arg("MGET");
        for key in items().flat_map(|i| &i.keys) {
            call.arg(key);
        }
        let values: Vec<R> = shared.backend.query(&call).await?;
        return check_count(values, &shared.replies, total);
    };
    // `EVALSHA sha numkeys`, the header's keys, every item's keys, the header's arguments,
    // the repeated items if the script is told them, every item's arguments: one buffer,
    // written once.
    let header = &shared.header;
    let repeats = shared
        .tell_repeats
        .then(|| Arg::Bytes(repeated_items(items()).into()));
    let keys = || header.keys.iter().chain(items().flat_map(|i| &i.keys));
    let args = || (header.args.iter().chain(&repeats)).chain(items().flat_map(|i| &i.args));
    let bytes: usize = keys().chain(args()).map(Arg::len).sum();
    let numkeys = header.keys.len() + total * K;
    let mut call =
        redis::Cmd::with_capacity(3 + numkeys + 1 + header.args.len() + total * A, 64 + bytes);
    call.arg("EVALSHA").arg(script.get_hash()).arg(numkeys);
    for key in keys() {
        call.arg(key);
    }
    for arg in args() {
        call.arg(arg);
    }
    let backend = &shared.backend;
    let values: Vec<R> = match shared.replies.unpack {
        None => {
            backend
                .query_with_script(shared.retry, &call, script)
                .await?
        }
        Some(unpack) => {
            let packed: Vec<u8> = backend
                .query_with_script(shared.retry, &call, script)
                .await?;
            unpack(&packed).ok_or_else(|| {
                BackendError::MaybeRan(format!(
                    "Redis answered {} bytes, not a whole number of values",
                    packed.len()
                ))
            })?
        }
    };
    check_count(values, &shared.replies, total)
}

fn check_count<R>(
    values: Vec<R>,
    replies: &Replies<R>,
    items: usize,
) -> Result<Vec<R>, BackendError> {
    if values.len() != items * replies.each {
        return Err(BackendError::MaybeRan(format!(
            "Redis answered {} values for {items} items",
            values.len()
        )));
    }
    Ok(values)
}

/// Plain reads of concurrent callers coalesced into `MGET`s (see the module docs). Cheap to
/// clone.
#[derive(Clone)]
pub struct GetBatcher {
    batcher: ScriptBatcher<1, 0, Option<Vec<u8>>>,
}

impl GetBatcher {
    /// Reads through `backend`.
    pub fn new(backend: RedisBackend) -> Self {
        Self {
            batcher: ScriptBatcher::calling(
                backend,
                None,
                Header::default(),
                Replies::each(1),
                (MAX_READS, CALLS_IN_FLIGHT),
                false,
                Retry::Idempotent,
            ),
        }
    }

    /// The value at `key`, as a `GET` would answer it.
    ///
    /// # Errors
    /// The backend's error for the whole `MGET` (every caller of it gets a copy).
    pub async fn get(&self, key: String) -> Result<Option<Vec<u8>>, BackendError> {
        let item = Item {
            keys: [Arg::Text(key)],
            args: [],
        };
        let mut values = self.batcher.call(vec![item]).await?;
        Ok(values.pop().flatten())
    }
}

/// Hands every caller its slice of the replies, or the error.
fn deliver<const K: usize, const A: usize, R>(
    batch: Vec<Pending<K, A, R>>,
    result: Result<Vec<R>, BackendError>,
    replies: &Replies<R>,
) {
    match result {
        Ok(values) => {
            let mut rest = values.into_iter();
            for pending in batch {
                let mine = rest.by_ref().take(pending.items.len() * replies.each);
                let _ = pending.reply.send(Ok(mine.collect()));
            }
        }
        Err(e) => {
            // Every caller gets the error itself: whether the call may have run, a
            // timeout and an unreachable Redis stay what they are.
            for pending in batch {
                let _ = pending.reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_repeating_an_earlier_items_key_are_told_by_their_one_based_index() {
        let item = |key: &str| Item {
            keys: [Arg::Text(key.into())],
            args: [Arg::Int(1)],
        };
        let items = ["a", "b", "a", "c", "b", "a"].map(item);
        let told: Vec<u32> = repeated_items(items.iter())
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(told, [3, 5, 6]);
        // Keys are compared as Redis receives them, whatever their kind.
        let mixed = [
            Item {
                keys: [Arg::Int(7)],
                args: [],
            },
            Item {
                keys: [Arg::Static("7")],
                args: [],
            },
        ];
        assert_eq!(repeated_items(mixed.iter()), 2u32.to_le_bytes());
    }

    #[test]
    fn packed_answers_are_whole_little_endian_doubles() {
        let bytes: Vec<u8> = [1.5f64, -2.0]
            .iter()
            .flat_map(|d| d.to_le_bytes())
            .collect();
        assert_eq!(unpack_doubles(&bytes), Some(vec![1.5, -2.0]));
        assert_eq!(unpack_doubles(&bytes[..12]), None);
        assert_eq!(unpack_doubles(&[]), Some(vec![]));
    }
}
