//! BlinkChamber: the Redis-backed building blocks every service around an identity
//! platform needs, as one library and one binary.
//!
//! # Layout
//!
//! - [`runtime`] — [`Runtime`]: the backend and every capability built from one
//!   [`Config`], with one shutdown; where the binary and embedding services start.
//! - [`config`] — the YAML/env configuration tree, secrets (`valueFromFile`), validation.
//! - [`backend`] — the memory backend and the Redis layer: pooled multiplexed
//!   connections, our Sentinel supervisor, dedicated connections for blocking commands,
//!   resilient pub/sub.
//! - [`cache`] — the two-level cache: L1 in process (moka), L2 in Redis, kept coherent
//!   across instances by a pub/sub backplane, tags, and single-flight loads.
//! - [`ratelimit`] — rate limits (GCRA, fixed and sliding windows) on memory or Redis.
//! - [`lock`] — distributed locks with fencing tokens and lease renewal.
//! - [`session`] — server-side sessions (random ids, absolute and idle timeouts, CAS
//!   updates, rotation, per-user revoke) and a cookie layer for axum.
//! - [`token`] — ZITADEL token introspection with a cache keyed by the token's hash, and
//!   local JWT verification against the issuer's JWKS.
//! - [`events`] — the CloudEvents envelope, priority routing, accepted types, and ZITADEL
//!   Actions v2 bodies and signatures, the queues (memory and Redis), the publisher, the
//!   workers and their sinks; [`events::Events`] holds the parts one process shares.
//! - [`telemetry`] — OpenTelemetry export and trace-context continuation (feature `otel`).
//! - [`doctor`] — read-only health checks of the backend (`blinkchamber doctor`).
//! - [`server`] — the axum HTTP API (`/v1`, health, OpenAPI, problem details, auth).
//! - [`metrics`] — the Prometheus recorder behind `/metrics`.
//! - `bench` (feature `cli`) — the benchmark harness (`blinkchamber bench`): capability rows side by
//!   side with raw Redis commands measured in the same run.
//! - `cli` (feature `cli`, on by default) — one file per subcommand of the
//!   `blinkchamber` binary.
//!
//! # Features
//!
//! - `cli` (default) — the binary, its benchmark, logging setup and allocator.
//!   `default-features = false` builds the library alone.
//! - `otel` — OpenTelemetry: spans exported over OTLP/gRPC (see [`telemetry`]).
//!
//! `ARCHITECTURE.md` at the repository root explains how data flows between these.

pub mod backend;
mod backoff;
#[cfg(feature = "cli")]
pub mod bench;
pub mod cache;
#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
mod der;
pub mod doctor;
pub mod events;
mod http_client;
mod ids;
pub mod lock;
pub mod metrics;
pub mod ratelimit;
pub mod runtime;
pub mod server;
pub mod session;
pub mod telemetry;
pub mod token;

pub use backend::{Backend, BackendError, RedisBackend, Retry};
pub use config::Config;
pub use runtime::{Capability, Runtime, RuntimeError};
