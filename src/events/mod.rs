//! Event streaming: CloudEvents in priority queues on the memory store or Redis, with
//! leases, retries and a dead-letter list. [`Events`] holds what one process shares.
//!
//! - [`envelope`] — [`Event`], a CloudEvents 1.0 event in structured-mode JSON with the
//!   payload kept unparsed; [`Event::validate`]; [`encode`] / [`decode`] to and from the
//!   stored form (plain JSON, or an LZ4 frame above 1024 bytes when compression is on).
//! - [`routing`] — [`Priority`], the [`Router`] that picks a priority from the event type
//!   (`events.routing`), and the [`TypeFilter`] of accepted types (`events.types`); both
//!   use one glob matcher ([`Pattern`]).
//! - [`zitadel`] — ZITADEL Actions v2 event executions: the body ([`ActionsEvent`]), the
//!   `ZITADEL-Signature` header ([`verify`], [`sign`]) and the type table ([`TypeMap`],
//!   `events.zitadel.typeMap`).
//! - [`publisher`] — [`Publisher`]: batches published events into the queues, retrying
//!   writes that certainly did not run.
//! - [`queues`] — [`Queues`]: the store (memory or Redis, its scripts in `queues/lua/`):
//!   enqueue, take under a lease, renew, settle, retry, reap, dead letters, stats.
//! - [`worker`] — [`Workers`]: take batches, hand each event to a [`Handler`], settle.
//! - [`webhook`] — [`Sinks`]: the log and signed webhooks of `events.sinks`.
//! - [`dead_letter`] — the dead-letter list's entries as JSON.
//!
//! A producer's path: build or parse an [`Event`], [`Event::validate`] it against the
//! [`TypeFilter`], ask the [`Router`] for its [`Priority`] (which names the queue in
//! `events.queues`), and store [`encode`]'s bytes; a consumer [`decode`]s them.

mod capability;
pub mod dead_letter;
pub mod envelope;
pub mod publisher;
pub mod queues;
pub mod routing;
pub mod webhook;
pub mod worker;
pub mod zitadel;

pub use capability::{Events, EventsError};
pub use envelope::{
    COMPRESS_ABOVE, Event, EventError, KNOWN_ATTRIBUTES, SPEC_VERSION, TraceContext, decode,
    encode, new_id,
};
pub use publisher::{PublishError, Publisher};
pub use queues::{QueueError, QueueStats, Queues, SettleOutcome, Stats};
pub use routing::{Pattern, PatternError, Priority, Router, TypeFilter};
pub use webhook::{Sinks, WEBHOOK_SIGNATURE_HEADER};
pub use worker::{Handler, LogSink, Workers};
pub use zitadel::{
    ActionsEvent, ActionsEventError, DEFAULT_TOLERANCE, SIGNATURE_HEADER, SignatureError, TypeMap,
    sign, verify,
};
