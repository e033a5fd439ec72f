//! A service embedding BlinkChamber as a library: one [`Runtime`] from a config gives it
//! the two-level cache, rate limits and the event queues, with its own event handler.
//!
//! It needs a Redis server; by default it uses `127.0.0.1:6379`:
//!
//! ```text
//! redis-server --port 6399 --save '' &
//! REDIS_PORT=6399 cargo run --example embedded_service
//! ```
//!
//! It loads a profile through the cache (the second read is a hit), spends a rate limit
//! until it is denied, publishes events and waits until its handler has seen each one,
//! then shuts down. It exits non-zero when any of that does not happen.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use blinkchamber::events::{Event, Handler};
use blinkchamber::{Config, Runtime};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// How many events the example publishes.
const EVENTS: usize = 100;

/// What the service caches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Profile {
    id: u64,
    name: String,
}

/// The service's own event handler: counts `user.created` events.
#[derive(Default)]
struct CountUsers {
    seen: AtomicUsize,
}

impl Handler for CountUsers {
    fn handle<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if event.ty == "user.created" {
                self.seen.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = std::env::var("REDIS_PORT").unwrap_or_else(|_| "6379".into());
    // Each run uses its own key prefixes, so runs never see each other's data.
    let run = format!("{:08x}", rand::random::<u32>());
    let yaml = format!(
        r#"
backend: redis
# This service serves no BlinkChamber HTTP API, so no API tokens either.
server:
  auth:
    enabled: false
redis:
  host: 127.0.0.1
  port: {port}
cache:
  keyPrefix: "example:{run}:cache:"
rateLimit:
  keyPrefix: "example:{run}:rl:"
  rules:
    - name: signup
      descriptor: [ip]
      algorithm: fixedWindow
      limit: 3
      period: 1m
events:
  enabled: true
  queues:
    high_priority: "example:{run}:events:high"
    normal_priority: "example:{run}:events:normal"
    low_priority: "example:{run}:events:low"
    dead_letter: "example:{run}:events:dead"
    state_prefix: "example:{run}:events:"
  routing:
    - match: "user.*"
      priority: high
"#
    );
    let config = Config::from_yaml(&yaml, Path::new("example.yaml"))?;
    config.validate()?;
    let runtime = Runtime::from_config(&config).await?;

    // Cache: the loader runs once; the second read is served from the cache.
    let loads = Arc::new(AtomicUsize::new(0));
    for _ in 0..2 {
        let loads = loads.clone();
        let profile: Profile = runtime
            .cache()
            .get_or_load("profiles", "42", None, move || async move {
                loads.fetch_add(1, Ordering::Relaxed);
                Ok::<_, std::convert::Infallible>(Profile {
                    id: 42,
                    name: "Ada".into(),
                })
            })
            .await?;
        assert_eq!(profile.name, "Ada");
    }
    println!("cache: 2 reads, {} load", loads.load(Ordering::Relaxed));

    // Rate limit: three sign-ups a minute from one address, the fourth is denied.
    let mut allowed = 0;
    for _ in 0..4 {
        if runtime
            .limits()
            .check("signup", "203.0.113.9", 1)
            .await?
            .allowed
        {
            allowed += 1;
        }
    }
    println!("rate limit: {allowed} of 4 sign-ups allowed");

    // Events: our handler behind the runtime's workers.
    let handler = Arc::new(CountUsers::default());
    runtime.start_workers_with(handler.clone())?;
    let events = runtime.events().ok_or("events are enabled above")?;
    for i in 0..EVENTS {
        let data = serde_json::value::to_raw_value(&serde_json::json!({ "userId": i }))?;
        events
            .publisher()
            .publish(Event::new("user.created", "/example", Some(data)))
            .await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while handler.seen.load(Ordering::Relaxed) < EVENTS && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = handler.seen.load(Ordering::Relaxed);
    println!("events: {EVENTS} published, {seen} handled");
    runtime.shutdown().await;

    if loads.load(Ordering::Relaxed) != 1 || allowed != 3 || seen != EVENTS {
        return Err("the example did not behave as described".into());
    }
    Ok(())
}
