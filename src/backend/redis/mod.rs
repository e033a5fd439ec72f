//! The Redis backend: pooled multiplexed connections to a master that may move.
//!
//! Every capability talks to Redis through [`RedisBackend::run`], which picks a pooled
//! connection, applies the command deadline, and on failure decides whether the command
//! may be retried (see [`Retry`]), re-resolving the master first when the error says it
//! moved (`READONLY`, connection refused). Blocking commands get connections of their own
//! ([`RedisBackend::dedicated`]) so they never stall the multiplexed ones.

pub mod batch;
mod connect;
mod pool;
mod pubsub;
mod topology;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{ErrorKind, RedisError, ServerErrorKind};
use tokio::sync::watch;
use tokio::time::Instant;

pub use connect::Endpoint;
pub use pool::SPREAD_AT;
pub use pubsub::{Subscription, SubscriptionEvent};
pub use topology::Master;
pub(crate) use topology::sentinel_views;

use self::pool::Pool;
use self::topology::Topology;
use super::BackendError;
use crate::config::RedisConfig;

/// Whether a failed command may be sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Running it twice is harmless (reads, `SET`, scripts that check state first):
    /// retried after any connection-level failure.
    Idempotent,
    /// Retried only when Redis certainly did not run it (could not connect, `READONLY`,
    /// `LOADING`, `MASTERDOWN`, `TRYAGAIN`); a lost reply is returned as an error.
    IfNotRun,
}

/// A handle to Redis; cheap to clone.
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
    /// The overall deadline of one call through this handle: `callTimeout`, or less (see
    /// [`RedisBackend::bounded`]).
    call_timeout: Duration,
}

struct Inner {
    cfg: RedisConfig,
    topology: Topology,
    pool: Pool,
    commands: metrics::Counter,
    errors: metrics::Counter,
    retries: metrics::Counter,
}

impl RedisBackend {
    /// Resolves the master (through Sentinel when configured) and prepares the pool.
    /// Connections open lazily; call [`RedisBackend::ping`] to check reachability.
    ///
    /// # Errors
    /// [`BackendError`] when no Sentinel can name the master.
    pub async fn connect(cfg: RedisConfig) -> Result<Self, BackendError> {
        let topology = Topology::start(&cfg).await?;
        Ok(Self {
            call_timeout: cfg.call_timeout,
            inner: Arc::new(Inner {
                pool: Pool::new(&cfg),
                topology,
                commands: metrics::counter!("blinkchamber_redis_commands_total"),
                errors: metrics::counter!("blinkchamber_redis_errors_total"),
                retries: metrics::counter!("blinkchamber_redis_retries_total"),
                cfg,
            }),
        })
    }

    /// The same connections and master, with every call through the returned handle
    /// bounded by `limit` when that is shorter than `callTimeout` (the cache's
    /// `l2Timeout`). One deadline per call, so no second timer.
    pub fn bounded(&self, limit: Duration) -> Self {
        Self {
            inner: self.inner.clone(),
            call_timeout: self.call_timeout.min(limit),
        }
    }

    /// The settings this backend was built with.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.cfg
    }

    /// The master now.
    pub fn master(&self) -> Master {
        self.inner.topology.current()
    }

    /// A receiver that changes whenever the master does; long-lived connections
    /// (blocking consumers, subscribers) reconnect when it fires.
    pub fn master_watch(&self) -> watch::Receiver<Master> {
        self.inner.topology.watch()
    }

    /// Runs `op` on a pooled connection, retrying as `retry` allows, up to `maxRetries`
    /// times with exponential backoff, all within `callTimeout`.
    ///
    /// Each attempt waits for its reply until the command deadline (`writeTimeout +
    /// readTimeout`) or the call's deadline, whichever is first. In Sentinel mode an
    /// attempt still waiting when the master changes is abandoned at once, as a lost
    /// reply: a frozen master never holds a call past the failover.
    ///
    /// # Errors
    /// The last error once retries are exhausted, the call's deadline has passed, or the
    /// error is not retryable.
    pub async fn run<T, F, Fut>(&self, retry: Retry, op: F) -> Result<T, BackendError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        self.run_as(retry, false, op).await
    }

    /// As [`RedisBackend::run`], for a call that blocks its connection in Redis until it
    /// returns (`WAIT`): Redis answers nothing else sent on that connection meanwhile, so
    /// the call gets a connection with nothing in flight (opening one, up to `poolSize`,
    /// when none is idle) and other calls keep off it until it returns.
    ///
    /// # Errors
    /// As [`RedisBackend::run`].
    pub async fn run_blocking<T, F, Fut>(&self, retry: Retry, op: F) -> Result<T, BackendError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        self.run_as(retry, true, op).await
    }

    async fn run_as<T, F, Fut>(&self, retry: Retry, blocks: bool, op: F) -> Result<T, BackendError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let inner = &*self.inner;
        let mut now = Instant::now();
        let deadline = now + self.call_timeout;
        let mut attempt = 0u32;
        loop {
            inner.commands.increment(1);
            // Only the epoch: the address is read when a connection has to be opened.
            let epoch = inner.topology.epoch();
            let lease =
                match inner
                    .pool
                    .get(&inner.cfg, &inner.topology, epoch, blocks, now, deadline)
                {
                    Ok(ready) => Ok(ready),
                    Err(wait) => Box::pin(self.unless_moved(epoch, wait)).await,
                };
            let (error, ran) = match lease {
                Ok(mut lease) => {
                    let command_by = now + connect::command_timeout(&inner.cfg);
                    let reply_by = deadline.min(command_by);
                    let reply = tokio::time::timeout_at(reply_by, op(lease.take_conn()));
                    let reply = async {
                        reply.await.unwrap_or_else(|_| {
                            Err(lost_reply(if reply_by < command_by {
                                "no reply within the call's deadline"
                            } else {
                                "no reply within the command deadline"
                            }))
                        })
                    };
                    // The master watch's future is boxed, so that standalone calls do
                    // not carry (and move) it.
                    let reply = match inner.cfg.mode {
                        crate::config::RedisMode::Sentinel => {
                            Box::pin(self.unless_moved(epoch, reply)).await
                        }
                        _ => reply.await,
                    };
                    match reply {
                        Ok(value) => return Ok(value),
                        Err(e) => {
                            let ran = maybe_ran(&e);
                            if e.is_io_error()
                                || e.is_connection_dropped()
                                || e.is_timeout()
                                || moved(&e)
                            {
                                inner.pool.retire(&lease);
                            }
                            (BackendError::from(e), ran)
                        }
                    }
                }
                Err(e) => (e, false),
            };
            inner.errors.increment(1);
            tracing::debug!(%error, attempt, epoch, "redis: an attempt failed");
            let moved = error.master_moved();
            if moved || error.is_connection() {
                inner.topology.suspect();
            }
            now = Instant::now();
            let left = deadline.saturating_duration_since(now);
            let retryable = error.is_transient() && (!ran || retry == Retry::Idempotent);
            if !retryable || attempt >= inner.cfg.max_retries || left.is_zero() {
                return Err(error);
            }
            let backoff = backoff(&inner.cfg, attempt).min(left);
            if moved && inner.cfg.mode == crate::config::RedisMode::Sentinel {
                // Do not retry against the same demoted node: wait for the new master.
                // (A standalone address never moves: waiting would only add dialTimeout.)
                let wait = backoff.max(inner.cfg.dial_timeout).min(left);
                Box::pin(inner.topology.wait_past(epoch, wait)).await;
            } else {
                Box::pin(tokio::time::sleep(backoff)).await;
            }
            now = Instant::now();
            inner.retries.increment(1);
            attempt += 1;
        }
    }

    /// `step` (getting a connection, or awaiting a reply), given up in Sentinel mode when
    /// the master moves on from master epoch `epoch` meanwhile: a dial to, or a reply
    /// from, a node that froze never holds a call past the failover.
    async fn unless_moved<T, E: MovedOn>(
        &self,
        epoch: u64,
        step: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        if self.inner.cfg.mode != crate::config::RedisMode::Sentinel {
            return step.await;
        }
        let mut masters = self.master_watch();
        tokio::select! {
            biased;
            outcome = step => outcome,
            _ = masters.wait_for(|m| m.epoch > epoch) => Err(E::moved_on()),
        }
    }

    /// Runs a pipeline (or `MULTI` transaction) in one round trip, as [`RedisBackend::run`]
    /// with `retry`.
    ///
    /// # Errors
    /// As [`RedisBackend::run`].
    pub async fn pipeline<T: redis::FromRedisValue + Send>(
        &self,
        retry: Retry,
        pipe: &redis::Pipeline,
    ) -> Result<T, BackendError> {
        self.run(retry, |mut c| async move { pipe.query_async(&mut c).await })
            .await
    }

    /// Runs `pipe`, which calls `script` by `EVALSHA`, as [`RedisBackend::pipeline`] with
    /// [`Retry::Idempotent`]; where Redis answers `NOSCRIPT` (a new or restarted server),
    /// loads `script` on that connection and sends `pipe` once more. For pipelines whose
    /// every command may be sent twice.
    ///
    /// # Errors
    /// As [`RedisBackend::run`].
    pub async fn pipeline_with_script<T: redis::FromRedisValue + Send>(
        &self,
        pipe: &redis::Pipeline,
        script: &redis::Script,
    ) -> Result<T, BackendError> {
        self.run(Retry::Idempotent, |mut c| async move {
            match pipe.query_async(&mut c).await {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    let _: String = script.load_async(&mut c).await?;
                    pipe.query_async(&mut c).await
                }
                answer => answer,
            }
        })
        .await
    }

    /// Runs `cmd`, an `EVALSHA` of `script`, as [`RedisBackend::run`] with `retry`; where
    /// Redis answers `NOSCRIPT` (a new or restarted server: the script did not run), loads
    /// `script` on that connection and sends `cmd` once more.
    ///
    /// # Errors
    /// As [`RedisBackend::run`].
    pub async fn query_with_script<T: redis::FromRedisValue + Send>(
        &self,
        retry: Retry,
        cmd: &redis::Cmd,
        script: &redis::Script,
    ) -> Result<T, BackendError> {
        self.run(retry, |mut c| async move {
            match cmd.query_async(&mut c).await {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    let _: String = script.load_async(&mut c).await?;
                    cmd.query_async(&mut c).await
                }
                answer => answer,
            }
        })
        .await
    }

    /// Runs one command with [`Retry::Idempotent`].
    ///
    /// # Errors
    /// As [`RedisBackend::run`].
    pub async fn query<T: redis::FromRedisValue + Send>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, BackendError> {
        self.run(Retry::Idempotent, |mut c| async move {
            cmd.query_async(&mut c).await
        })
        .await
    }

    /// `PING` through the pool.
    ///
    /// # Errors
    /// When Redis cannot be reached.
    pub async fn ping(&self) -> Result<(), BackendError> {
        let _: String = self.query(&redis::cmd("PING")).await?;
        Ok(())
    }

    /// A connection of its own to the current master, without a response timeout, for
    /// blocking commands (`BLMOVE`, `BLMPOP`). The caller reconnects when
    /// [`RedisBackend::master_watch`] changes or the connection fails.
    ///
    /// # Errors
    /// When the master cannot be reached.
    pub async fn dedicated(&self) -> Result<(MultiplexedConnection, Master), BackendError> {
        let master = self.master();
        let conn =
            connect::multiplexed(&self.inner.cfg, &master.endpoint, connect::Role::Data, None)
                .await?;
        Ok((conn, master))
    }

    /// Subscribes to `channels` on the master, re-subscribing after disconnects and
    /// failovers; see [`Subscription`].
    pub fn subscribe(&self, channels: Vec<String>) -> Subscription {
        pubsub::spawn(self.clone(), channels)
    }

    /// Closes every pooled connection; the next commands reconnect.
    pub fn reset_connections(&self) {
        self.inner.pool.clear();
    }

    /// Asks the Sentinel supervisor to re-resolve the master now, as a `READONLY` reply or
    /// a lost connection does (nothing in standalone mode).
    pub fn suspect_master(&self) {
        self.inner.topology.suspect();
    }
}

/// A duration as Redis `PX` / `PEXPIRE` milliseconds: at least 1 (0 is an error there).
pub fn px(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn backoff(cfg: &RedisConfig, attempt: u32) -> Duration {
    crate::backoff::exponential(cfg.min_retry_backoff, attempt, cfg.max_retry_backoff)
}

/// The error of a step abandoned because the master changed.
trait MovedOn {
    fn moved_on() -> Self;
}

/// A reply abandoned: Redis may or may not have run the command.
impl MovedOn for RedisError {
    fn moved_on() -> Self {
        lost_reply("the master changed while the reply was awaited")
    }
}

/// A connection abandoned before anything was sent on it: nothing ran.
impl MovedOn for BackendError {
    fn moved_on() -> Self {
        Self::Unavailable("the master changed while connecting".into())
    }
}

/// A reply that did not come: Redis may or may not have run the command.
fn lost_reply(why: &'static str) -> RedisError {
    RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, why))
}

/// Whether Redis may have executed the command before the error.
fn maybe_ran(e: &RedisError) -> bool {
    !(e.is_connection_refusal() || not_run_server_error(e))
}

/// Refusals that say the command did not run: `READONLY`, `LOADING`, `MASTERDOWN`,
/// `TRYAGAIN`, `EXECABORT` (a transaction discarded, as on a demoted master), `NOREPLICAS`
/// (`min-replicas-to-write` not met) and `UNBLOCKED` (a blocking command released because
/// the node became a replica).
fn not_run_server_error(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Server(
            ServerErrorKind::ReadOnly
                | ServerErrorKind::BusyLoading
                | ServerErrorKind::MasterDown
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ExecAbort
        )
    ) || e
        .code()
        .is_some_and(|code| matches!(code, "NOREPLICAS" | "UNBLOCKED"))
}

/// Errors that say this node is not (or no longer) the master.
fn moved(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Server(
            ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown | ServerErrorKind::ExecAbort
        )
    ) || e.code() == Some("UNBLOCKED")
}

impl BackendError {
    fn master_moved(&self) -> bool {
        matches!(self, Self::Redis(e) if moved(e))
    }

    fn is_connection(&self) -> bool {
        match self {
            Self::Redis(e) => {
                e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()
            }
            Self::Unavailable(_) => true,
            _ => false,
        }
    }

    /// Whether Redis certainly did not run the command: the connection was refused, no
    /// connection or master could be had, or Redis refused it before running it
    /// (`READONLY`, `LOADING`, `MASTERDOWN`, `TRYAGAIN`). A timeout or a connection lost
    /// after the command was sent is not: it may have run.
    pub fn certainly_not_run(&self) -> bool {
        match self {
            Self::Redis(e) => e.is_connection_refusal() || not_run_server_error(e),
            Self::Unavailable(_) | Self::Config(_) => true,
            Self::MaybeRan(_) => false,
        }
    }

    /// Whether Redis could not be reached or did not answer (as opposed to answering with
    /// an error): what a circuit breaker should count.
    pub fn is_unreachable(&self) -> bool {
        self.is_transient()
    }

    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Self::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || not_run_server_error(e)
            }
            Self::Unavailable(_) | Self::MaybeRan(_) => true,
            _ => false,
        }
    }
}
