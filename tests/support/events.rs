//! Event queue fixtures shared by the event test files.

use std::time::Duration;

use blinkchamber::RedisBackend;
use blinkchamber::config::{EventsConfig, RedisConfig};
use blinkchamber::events::Queues;

use super::{RedisProc, Store};

/// Events config with queue names under `prefix` and quick retries and idle waits.
pub fn config(prefix: &str) -> EventsConfig {
    let mut cfg = EventsConfig::default();
    let q = &mut cfg.queues;
    q.high_priority = format!("{prefix}:high");
    q.normal_priority = format!("{prefix}:normal");
    q.low_priority = format!("{prefix}:low");
    q.dead_letter = format!("{prefix}:dead");
    q.state_prefix = format!("{prefix}:state:");
    cfg.consumer.retry_delay = Duration::from_millis(1);
    cfg.consumer.max_retry_delay = Duration::from_millis(5);
    cfg.performance.flush_interval = Duration::from_millis(50);
    cfg
}

/// Queues of `cfg` on `store`, with the `redis-server` behind them when on Redis.
pub async fn queues(store: Store, cfg: &EventsConfig) -> (Queues, Option<RedisProc>) {
    match store {
        Store::Memory => (Queues::memory(cfg), None),
        Store::Redis => {
            let redis = RedisProc::start();
            let backend = RedisBackend::connect(RedisConfig::standalone("127.0.0.1", redis.port))
                .await
                .unwrap();
            (Queues::redis(cfg, backend), Some(redis))
        }
    }
}
