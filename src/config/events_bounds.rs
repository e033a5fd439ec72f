//! The range of every numeric `events.*` key: what the queues, scripts and workers are
//! built to handle. A value outside is refused at start-up with the key named, so no
//! accepted value can stall a worker, break a script half-way or block Redis.

use std::time::Duration;

use super::EventsConfig;

/// Most events per take (`events.consumer.batchSize`) and per publish round trip
/// (`events.publishing.batchSize`).
pub const MAX_BATCH: usize = 10_000;
/// Shortest lease (`events.consumer.lease`); renewals run every third of it.
pub const MIN_LEASE: Duration = Duration::from_secs(1);
/// Longest lease, retry delay and de-duplication window.
pub const MAX_PERIOD: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most retries (`events.consumer.maxRetries`, `events.publishing.maxRetries`).
pub const MAX_RETRIES: u32 = 100;
/// Most workers per process (`events.performance.workerCount`).
pub const MAX_WORKERS: usize = 1024;
/// Most events handled or published at once (`events.performance.maxConcurrentEvents`).
pub const MAX_CONCURRENT: usize = 100_000;
/// Most events buffered for publishing (`events.performance.eventBufferSize`).
pub const MAX_BUFFER: usize = 1_000_000;
/// Range of `events.performance.flushInterval`.
pub const FLUSH_INTERVAL: (Duration, Duration) =
    (Duration::from_millis(10), Duration::from_secs(60));
/// Most replicas a publish can wait for (`events.publishing.waitReplicas`).
pub const MAX_WAIT_REPLICAS: u32 = 32;

/// The first key out of range and why.
pub(super) fn check(cfg: &EventsConfig) -> Result<(), (String, String)> {
    let c = &cfg.consumer;
    let p = &cfg.publishing;
    let perf = &cfg.performance;
    at_most("events.consumer.batchSize", c.batch_size.get(), MAX_BATCH)?;
    at_most("events.publishing.batchSize", p.batch_size.get(), MAX_BATCH)?;
    if c.lease < MIN_LEASE || c.lease > MAX_PERIOD {
        return Err(out("events.consumer.lease", "between 1s and 30d"));
    }
    for (i, hook) in cfg.sinks.webhooks.iter().enumerate() {
        if hook.timeout >= c.lease {
            return Err((
                "events.consumer.lease".into(),
                format!(
                    "{} is not longer than events.sinks.webhooks[{i}].timeout ({}): a batch \
                     waiting on that webhook would lose its lease and be handled twice",
                    humantime::format_duration(c.lease),
                    humantime::format_duration(hook.timeout)
                ),
            ));
        }
    }
    at_most("events.consumer.maxRetries", c.max_retries, MAX_RETRIES)?;
    at_most("events.publishing.maxRetries", p.max_retries, MAX_RETRIES)?;
    for (key, d) in [
        ("events.consumer.retryDelay", c.retry_delay),
        ("events.consumer.maxRetryDelay", c.max_retry_delay),
        ("events.consumer.dedupWindow", c.dedup_window),
        ("events.publishing.retryDelay", p.retry_delay),
    ] {
        if d > MAX_PERIOD {
            return Err(out(key, "at most 30d"));
        }
    }
    if cfg.zitadel.dedup_window > MAX_PERIOD {
        return Err(out("events.zitadel.dedupWindow", "at most 30d"));
    }
    if p.batch_timeout < Duration::from_millis(1) {
        return Err(out("events.publishing.batchTimeout", "at least 1ms"));
    }
    at_most(
        "events.publishing.waitReplicas",
        p.wait_replicas,
        MAX_WAIT_REPLICAS,
    )?;
    if p.wait_replicas > 0 && p.wait_timeout < Duration::from_millis(1) {
        // WAIT with a zero timeout blocks for ever.
        return Err(out(
            "events.publishing.waitTimeout",
            "at least 1ms when waitReplicas is set",
        ));
    }
    at_most(
        "events.performance.workerCount",
        perf.worker_count.get(),
        MAX_WORKERS,
    )?;
    at_most(
        "events.performance.maxConcurrentEvents",
        perf.max_concurrent_events.get(),
        MAX_CONCURRENT,
    )?;
    at_most(
        "events.performance.eventBufferSize",
        perf.event_buffer_size.get(),
        MAX_BUFFER,
    )?;
    let (lo, hi) = FLUSH_INTERVAL;
    if perf.flush_interval < lo || perf.flush_interval > hi {
        return Err(out(
            "events.performance.flushInterval",
            "between 10ms and 60s",
        ));
    }
    Ok(())
}

fn at_most<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    max: T,
) -> Result<(), (String, String)> {
    if value > max {
        return Err((
            key.into(),
            format!("{value} is too large: expected at most {max}"),
        ));
    }
    Ok(())
}

fn out(key: &str, expected: &str) -> (String, String) {
    (key.into(), format!("expected {expected}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WebhookConfig;

    fn refused(edit: impl FnOnce(&mut EventsConfig)) -> (String, String) {
        let mut cfg = EventsConfig::default();
        edit(&mut cfg);
        check(&cfg).expect_err("refused")
    }

    #[test]
    fn defaults_are_in_range() {
        check(&EventsConfig::default()).unwrap();
    }

    #[test]
    fn every_bound_names_its_key() {
        let (key, message) = refused(|c| c.consumer.batch_size = 10_001.try_into().unwrap());
        assert_eq!(key, "events.consumer.batchSize");
        assert!(message.contains("at most 10000"), "{message}");
        let (key, _) = refused(|c| c.consumer.lease = Duration::ZERO);
        assert_eq!(key, "events.consumer.lease");
        let (key, message) = refused(|c| {
            c.sinks.webhooks.push(WebhookConfig {
                pattern: "*".into(),
                url: "http://127.0.0.1:1/".into(),
                signing_key: None,
                timeout: Duration::from_secs(30),
            })
        });
        assert_eq!(key, "events.consumer.lease");
        assert!(message.contains("webhooks[0].timeout"), "{message}");
        let (key, _) = refused(|c| c.consumer.max_retries = u32::MAX);
        assert_eq!(key, "events.consumer.maxRetries");
        let (key, _) = refused(|c| {
            c.publishing.wait_replicas = 1;
            c.publishing.wait_timeout = Duration::ZERO;
        });
        assert_eq!(key, "events.publishing.waitTimeout");
        let (key, _) = refused(|c| c.performance.flush_interval = Duration::ZERO);
        assert_eq!(key, "events.performance.flushInterval");
        let (key, _) = refused(|c| c.performance.worker_count = 5000.try_into().unwrap());
        assert_eq!(key, "events.performance.workerCount");
    }
}
