//! Rate limits against real `redis-server` processes and on the memory backend: exact
//! limits under concurrency, GCRA burst and spacing, window resets, several descriptors,
//! the local shed, failure modes with Redis killed and restarted, and the HTTP contract.

mod support;

use std::num::NonZeroU64;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use blinkchamber::RedisBackend;
use blinkchamber::config::types::duration;
use blinkchamber::config::{
    Algorithm, Config, Descriptor, FailureMode, RateLimitConfig, RedisConfig, RuleConfig,
};
use blinkchamber::ratelimit::algorithm::EPOCH_UNIX_SECS;
use blinkchamber::ratelimit::{DecisionSource, RateLimitError, RateLimiter};
use serde_json::{Value, json};
use support::app::{Answer, App, request, with_json};
use support::{RedisProc, wait_for_async};

const DAY: Duration = Duration::from_secs(86_400);
const ALGORITHMS: [Algorithm; 3] = [
    Algorithm::Gcra,
    Algorithm::FixedWindow,
    Algorithm::SlidingWindow,
];

fn rule(name: &str, algorithm: Algorithm, limit: u64, period: Duration) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        descriptor: vec![Descriptor::User],
        algorithm,
        limit: NonZeroU64::new(limit).unwrap(),
        period,
        burst: None,
        failure_mode: FailureMode::Open,
    }
}

/// Rules on a limiter that waits for Redis as long as it takes: on a loaded machine a
/// script call can outlast the default `redisTimeout` (250 ms) without any fault, and the
/// tests that stall Redis on purpose set their own.
fn config(rules: Vec<RuleConfig>) -> RateLimitConfig {
    RateLimitConfig {
        key_prefix: "test:rl:".into(),
        rules,
        redis_timeout: Duration::from_secs(10),
        ..RateLimitConfig::default()
    }
}

async fn backend(redis: &RedisProc) -> RedisBackend {
    RedisBackend::connect(RedisConfig::standalone("127.0.0.1", redis.port))
        .await
        .unwrap()
}

fn name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::Gcra => "gcra",
        Algorithm::FixedWindow => "fixed",
        Algorithm::SlidingWindow => "sliding",
    }
}

fn every_algorithm(limit: u64, period: Duration) -> RateLimitConfig {
    config(
        ALGORITHMS
            .iter()
            .map(|a| rule(name(*a), *a, limit, period))
            .collect(),
    )
}

/// Runs `n` checks of `rule`/`key` from concurrent tasks; returns how many were admitted
/// and every source that answered.
async fn concurrent_checks(
    limiter: &RateLimiter,
    rule: &'static str,
    key: &'static str,
    n: usize,
) -> (usize, Vec<DecisionSource>) {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.check(rule, key, 1).await.unwrap() })
        })
        .collect();
    let mut admitted = 0;
    let mut sources = Vec::new();
    for task in tasks {
        let d = task.await.unwrap();
        admitted += usize::from(d.allowed);
        sources.push(d.source);
    }
    (admitted, sources)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_admits_exactly_the_limit_under_1000_concurrent_checks() {
    let redis = RedisProc::start();
    let limiter = RateLimiter::redis(&every_algorithm(100, DAY), backend(&redis).await);
    for algorithm in ALGORITHMS {
        let (admitted, sources) = concurrent_checks(&limiter, name(algorithm), "k", 1000).await;
        assert_eq!(admitted, 100, "{algorithm:?}");
        assert!(
            sources
                .iter()
                .all(|s| matches!(s, DecisionSource::Redis | DecisionSource::LocalShed)),
            "{algorithm:?}: {sources:?}"
        );
        let after = limiter.check(name(algorithm), "k", 1).await.unwrap();
        assert!(!after.allowed, "{algorithm:?}");
        assert_eq!(after.limit, 100);
        assert!(after.retry_after > Duration::ZERO && after.retry_after <= 2 * DAY);
    }

    // One key per limit, `{prefix}{rule}:{key}` (the one key its script is given, as
    // Redis Cluster requires), and each expires.
    let mut admin = redis.conn();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("test:rl:*")
        .query(&mut admin)
        .unwrap();
    keys.sort();
    assert_eq!(
        keys,
        ["test:rl:fixed:k", "test:rl:gcra:k", "test:rl:sliding:k"],
        "{keys:?}"
    );
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut admin).unwrap();
        assert!(ttl > 0 && ttl <= 2 * DAY.as_millis() as i64, "{key}: {ttl}");
    }
}

/// Redis's clock in microseconds since the limiter's epoch, and the absolute expiry of
/// `key` in the same unit (both read in one transaction).
fn redis_now_and_expiry(admin: &mut redis::Connection, key: &str) -> (f64, f64) {
    let ((secs, micros), pttl): ((i64, i64), i64) = redis::pipe()
        .atomic()
        .cmd("TIME")
        .cmd("PTTL")
        .arg(key)
        .query(admin)
        .unwrap();
    assert!(pttl > 0, "{key} must expire: PTTL {pttl}");
    let now = ((secs - EPOCH_UNIX_SECS) * 1_000_000 + micros) as f64;
    // PTTL counts from Redis's clock in whole milliseconds.
    (
        now,
        ((secs - EPOCH_UNIX_SECS) * 1000 + micros / 1000 + pttl) as f64 * 1000.0,
    )
}

/// The doubles of a packed state (`check.lua`): tag byte, then little-endian doubles.
fn packed(admin: &mut redis::Connection, key: &str) -> (u8, Vec<f64>) {
    let value: Vec<u8> = redis::cmd("GET").arg(key).query(admin).unwrap();
    let numbers = value[1..]
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (value[0], numbers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_state_lives_as_long_as_it_matters_and_earlier_layouts_are_read() {
    let redis = RedisProc::start();
    let mut cfg = every_algorithm(10, DAY);
    cfg.local_shed = false;
    let limiter = RateLimiter::redis(&cfg, backend(&redis).await);
    let mut admin = redis.conn();
    let hour = 3.6e9;

    // GCRA, 10 a day: each admitted check moves the arrival time on by 2.4 h, and the key
    // must not expire before it (an expired key would admit a fresh burst).
    let key = "test:rl:gcra:k";
    for _ in 0..10 {
        assert!(limiter.check("gcra", "k", 1).await.unwrap().allowed);
        let (tag, state) = packed(&mut admin, key);
        let (now, expiry) = redis_now_and_expiry(&mut admin, key);
        assert_eq!((tag, state.len()), (b'G', 2));
        assert!(state[0] > now && expiry >= state[0], "{state:?} {expiry}");
        assert!(
            expiry >= state[1] - 1000.0,
            "the stored expiry is never later than the key's"
        );
    }
    assert!(!limiter.check("gcra", "k", 1).await.unwrap().allowed);

    // A stored expiry about to be passed: the next check moves the key's expiry beyond the
    // new arrival time.
    let (now, _) = redis_now_and_expiry(&mut admin, key);
    let mut value = vec![b'G'];
    value.extend(now.to_le_bytes());
    value.extend((now + 1000.0).to_le_bytes());
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(&value)
        .arg("PX")
        .arg(60_000)
        .query(&mut admin)
        .unwrap();
    assert!(limiter.check("gcra", "k", 1).await.unwrap().allowed);
    let (_, state) = packed(&mut admin, key);
    let (_, expiry) = redis_now_and_expiry(&mut admin, key);
    assert!(
        state[0] >= now + 2.4 * hour && expiry >= state[0],
        "{state:?} {expiry}"
    );

    // Text values written by earlier releases still count: a GCRA arrival time a day
    // ahead, and full windows.
    let (now, _) = redis_now_and_expiry(&mut admin, key);
    let window = (now / DAY.as_micros() as f64).floor();
    for (rule, text) in [
        ("gcra", format!("{}", now + 24.0 * hour)),
        ("fixed", format!("{window} 10")),
        ("sliding", format!("{window} 10 0")),
    ] {
        let key = format!("test:rl:{rule}:old");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(&text)
            .arg("PX")
            .arg(DAY.as_millis() as u64)
            .query(&mut admin)
            .unwrap();
        let denied = limiter.check(rule, "old", 1).await.unwrap();
        assert!(!denied.allowed, "{rule}: {text}");
    }
    // A window counted in the layout of earlier releases goes on counting.
    let _: () = redis::cmd("SET")
        .arg("test:rl:fixed:half")
        .arg(format!("{window} 5"))
        .arg("PX")
        .arg(DAY.as_millis() as u64)
        .query(&mut admin)
        .unwrap();
    let next = limiter.check("fixed", "half", 1).await.unwrap();
    assert!(next.allowed);
    assert_eq!(next.remaining, 4);
    let (tag, state) = packed(&mut admin, "test:rl:fixed:half");
    assert_eq!((tag, state), (b'F', vec![window, 6.0]));

    // State another algorithm wrote (a rule changed its algorithm) counts as empty.
    let _: () = redis::cmd("RENAME")
        .arg("test:rl:fixed:half")
        .arg("test:rl:sliding:half")
        .query(&mut admin)
        .unwrap();
    let reread = limiter.check("sliding", "half", 1).await.unwrap();
    assert!(reread.allowed);
    assert_eq!(
        reread.remaining, 9,
        "the fixed window's count was not read as a sliding one"
    );

    // A key of another type under the prefix is an error in Redis, as a `GET` would make
    // it (the check then fails closed: Redis answered), and is left as it is: the script
    // reads keys with one `MGET`, which answers such a key as empty.
    for rule in ["gcra", "fixed", "sliding"] {
        let key = format!("test:rl:{rule}:hash");
        let _: () = redis::cmd("HSET")
            .arg(&key)
            .arg("field")
            .arg("value")
            .query(&mut admin)
            .unwrap();
        let refused = limiter.check(rule, "hash", 1).await.unwrap();
        assert!(!refused.allowed, "{rule}: {refused:?}");
        assert_eq!(refused.source, DecisionSource::FailClosed, "{rule}");
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut admin).unwrap();
        assert_eq!(kind, "hash", "{rule}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_sharing_a_script_call_each_get_their_own_answer() {
    // Callers that arrive together are decided in one script call; each must get the
    // answer for its own key and cost, not a neighbour's.
    let redis = RedisProc::start();
    let limiter = RateLimiter::redis(
        &config(vec![rule(
            "own",
            Algorithm::FixedWindow,
            10,
            Duration::from_secs(86_400),
        )]),
        backend(&redis).await,
    );
    let tasks: Vec<_> = (0..500u64)
        .map(|i| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let cost = i % 7 + 1;
                let first = limiter.check("own", &format!("k{i}"), cost).await.unwrap();
                let second = limiter.check("own", &format!("k{i}"), cost).await.unwrap();
                (cost, first, second)
            })
        })
        .collect();
    for task in tasks {
        let (cost, first, second) = task.await.unwrap();
        assert!(first.allowed);
        assert_eq!(first.remaining, 10 - cost, "{first:?}");
        assert_eq!(second.allowed, 2 * cost <= 10, "cost {cost}: {second:?}");
        if second.allowed {
            assert_eq!(second.remaining, 10 - 2 * cost);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_admits_exactly_the_limit_under_1000_concurrent_checks() {
    let limiter = RateLimiter::memory(&every_algorithm(100, DAY));
    for algorithm in ALGORITHMS {
        let (admitted, sources) = concurrent_checks(&limiter, name(algorithm), "k", 1000).await;
        assert_eq!(admitted, 100, "{algorithm:?}");
        assert!(sources.iter().all(|s| *s == DecisionSource::Memory));
    }
}

/// `(allowed, remaining)` of a fixed sequence of costs on a fresh key of every algorithm.
async fn cost_sequence(limiter: &RateLimiter) -> Vec<(Algorithm, Vec<(bool, u64)>)> {
    let mut out = Vec::new();
    for algorithm in ALGORITHMS {
        let mut answers = Vec::new();
        for cost in [1, 2, 4, 1, 3, 1, 1, 1, 1, 2, 1] {
            let d = limiter.check(name(algorithm), "seq", cost).await.unwrap();
            answers.push((d.allowed, d.remaining));
        }
        out.push((algorithm, answers));
    }
    out
}

#[tokio::test]
async fn redis_and_memory_give_the_same_answers_to_the_same_checks() {
    let redis = RedisProc::start();
    let mut cfg = every_algorithm(10, DAY);
    cfg.rules[0].burst = NonZeroU64::new(4);
    cfg.local_shed = false;
    let on_redis = cost_sequence(&RateLimiter::redis(&cfg, backend(&redis).await)).await;
    let on_memory = cost_sequence(&RateLimiter::memory(&cfg)).await;
    assert_eq!(on_redis, on_memory);
    // And what they agree on is the definition: GCRA burst 4 out of 10 per day; windows
    // 10 per day.
    let gcra: Vec<bool> = on_memory[0].1.iter().map(|a| a.0).collect();
    assert_eq!(
        gcra,
        [
            true, true, false, true, false, false, false, false, false, false, false
        ]
    );
    assert_eq!(on_memory[0].1[1], (true, 1));
    assert_eq!(on_memory[0].1[2], (false, 1), "cost 4 does not fit in 1");
    let fixed: Vec<(bool, u64)> = on_memory[1].1.clone();
    assert_eq!(
        fixed,
        [
            (true, 9),
            (true, 7),
            (true, 3),
            (true, 2),
            (false, 2),
            (true, 1),
            (true, 0),
            (false, 0),
            (false, 0),
            (false, 0),
            (false, 0)
        ]
    );
}

/// Several descriptors: limited if any is; the ones that pass are still counted.
async fn several_descriptors(limiter: &RateLimiter) {
    let both = [("tight", "u1", 1), ("loose", "u1", 1)];
    let first = limiter.check_many(&both).await.unwrap();
    assert!(first.iter().all(|d| d.allowed), "{first:?}");
    assert_eq!(first[1].remaining, 4);

    let second = limiter.check_many(&both).await.unwrap();
    assert!(!second[0].allowed, "the tight rule is over its limit");
    assert!(second[1].allowed, "the loose rule still admits");
    assert_eq!(
        second[1].remaining, 3,
        "and counts the request (as Envoy does)"
    );

    let third = limiter.check("loose", "u1", 1).await.unwrap();
    assert_eq!(third.remaining, 2);
    let other = limiter.check_many(&[("tight", "u2", 1)]).await.unwrap();
    assert!(other[0].allowed, "keys are independent");
}

fn descriptor_rules() -> RateLimitConfig {
    config(vec![
        rule("tight", Algorithm::FixedWindow, 1, DAY),
        rule("loose", Algorithm::Gcra, 5, DAY),
    ])
}

#[tokio::test]
async fn several_descriptors_are_limited_if_any_is_on_memory() {
    several_descriptors(&RateLimiter::memory(&descriptor_rules())).await;
}

#[tokio::test]
async fn several_descriptors_are_limited_if_any_is_on_redis() {
    let redis = RedisProc::start();
    several_descriptors(&RateLimiter::redis(
        &descriptor_rules(),
        backend(&redis).await,
    ))
    .await;
}

#[tokio::test]
async fn impossible_checks_are_errors_naming_the_rule() {
    let mut gcra = rule("bursty", Algorithm::Gcra, 10, DAY);
    gcra.burst = NonZeroU64::new(3);
    let limiter = RateLimiter::memory(&config(vec![
        gcra,
        rule("window", Algorithm::FixedWindow, 5, DAY),
    ]));
    match limiter.check("bursty", "k", 4).await {
        Err(e @ RateLimitError::CostAboveBurst { .. }) => {
            let text = e.to_string();
            assert!(text.contains("`bursty`") && text.contains('3'), "{text}");
        }
        other => panic!("expected CostAboveBurst, got {other:?}"),
    }
    assert!(limiter.check("bursty", "k", 3).await.unwrap().allowed);
    assert!(matches!(
        limiter.check("window", "k", 6).await,
        Err(RateLimitError::CostAboveBurst { max: 5, .. })
    ));
    assert!(matches!(
        limiter.check("window", "k", 0).await,
        Err(RateLimitError::ZeroCost)
    ));
    match limiter.check("missing", "k", 1).await {
        Err(e @ RateLimitError::UnknownRule(_)) => assert!(e.to_string().contains("`missing`")),
        other => panic!("expected UnknownRule, got {other:?}"),
    }
}

#[tokio::test]
async fn overlong_keys_are_refused() {
    let limiter = RateLimiter::memory(&config(vec![rule("r", Algorithm::Gcra, 5, DAY)]));
    assert!(limiter.check("r", &"k".repeat(512), 1).await.is_ok());
    match limiter.check("r", &"k".repeat(513), 1).await {
        Err(e @ RateLimitError::KeyTooLong { len: 513, .. }) => {
            assert!(e.to_string().contains("`r`"), "{e}");
        }
        other => panic!("expected KeyTooLong, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_never_lets_two_instances_over_admit() {
    // Two instances share a fail-open limit of 100 a day (burst 100), used up beforehand
    // (through a third instance that waits for Redis as long as it takes: on a loaded
    // machine a check can outlast 100 ms without any fault); then Redis stalls (CLIENT
    // PAUSE, far longer than rateLimit.redisTimeout: connections stay open, nothing is
    // answered) while 100 checks go to each instance.
    let redis = RedisProc::start();
    let mut cfg = config(vec![rule("open", Algorithm::Gcra, 100, DAY)]);
    cfg.instances = std::num::NonZeroU32::new(2).unwrap();
    cfg.local_shed = false;
    let setup = RateLimiter::redis(&cfg, backend(&redis).await);
    let mut admitted = 0;
    for _ in 0..100 {
        admitted += u32::from(setup.check("open", "k", 1).await.unwrap().allowed);
    }
    assert_eq!(admitted, 100);
    cfg.redis_timeout = Duration::from_millis(100);
    let a = RateLimiter::redis(&cfg, backend(&redis).await);
    let b = RateLimiter::redis(&cfg, backend(&redis).await);
    // Redis CLIENT UNPAUSE waits behind the pause itself, so the pause has a fixed length:
    // long enough for all 200 checks to reach Redis while it lasts.
    let _: () = ::redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(5_000)
        .arg("ALL")
        .query(&mut redis.conn())
        .unwrap();
    let stalled = futures_util::future::join_all((0..200).map(|i| {
        let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move { limiter.check("open", "k", 1).await.unwrap() }
    }))
    .await;
    let over: Vec<_> = stalled.iter().filter(|d| d.allowed).collect();
    assert!(
        over.is_empty(),
        "admitted past the limit during the stall: {over:?}"
    );
    assert!(
        stalled
            .iter()
            .all(|d| d.source == DecisionSource::FailClosed
                && d.retry_after == Duration::from_secs(1)),
        "a slow Redis is not an unreachable one: {:?}",
        stalled[0]
    );
    // Once Redis answers again, it still says the window is used up.
    let d = wait_for_async("checks to come from Redis again", || async {
        let d = b.check("open", "k", 1).await.unwrap();
        (d.source == DecisionSource::Redis).then_some(d)
    })
    .await;
    assert!(!d.allowed);
}

/// After Redis died, waits until checks know it is unreachable: the check that was in
/// flight on the lost connection may have run, so it is denied, not failed open.
async fn wait_until_unreachable(limiter: &RateLimiter, rule: &str) {
    wait_for_async("checks to see Redis unreachable", || async {
        let d = limiter.check(rule, "probe", 1).await.unwrap();
        (d.source == DecisionSource::Insurance).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_redis_fails_open_to_each_instances_share() {
    let mut redis = RedisProc::start();
    let mut cfg = config(vec![rule("open", Algorithm::Gcra, 10, DAY)]);
    cfg.instances = std::num::NonZeroU32::new(2).unwrap();
    let limiter = RateLimiter::redis(&cfg, backend(&redis).await);
    assert!(limiter.check("open", "warm", 1).await.unwrap().allowed);
    redis.kill();
    wait_until_unreachable(&limiter, "open").await;
    let mut answers = Vec::new();
    for _ in 0..8 {
        answers.push(limiter.check("open", "k", 1).await.unwrap());
    }
    assert!(
        answers
            .iter()
            .all(|d| d.source == DecisionSource::Insurance),
        "{answers:?}"
    );
    let admitted = answers.iter().filter(|d| d.allowed).count();
    assert_eq!(admitted, 5, "half of 10 for each of 2 instances");
}

#[tokio::test]
async fn redis_down_fails_open_to_the_insurance_limiter_or_closed_then_recovers() {
    let mut redis = RedisProc::start();
    let mut closed = rule("closed", Algorithm::Gcra, 3, DAY);
    closed.failure_mode = FailureMode::Closed;
    let cfg = config(vec![rule("open", Algorithm::Gcra, 3, DAY), closed]);
    let limiter = RateLimiter::redis(&cfg, backend(&redis).await);
    for rule in ["open", "closed"] {
        let d = limiter.check(rule, "k", 1).await.unwrap();
        assert_eq!(
            (d.allowed, d.source),
            (true, DecisionSource::Redis),
            "{rule}"
        );
    }

    redis.kill();
    wait_until_unreachable(&limiter, "open").await;
    // Failing open, the rule still holds at its limit, from this instance's memory.
    let answers: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(limiter.check("open", "k", 1).await.unwrap());
        }
        v
    };
    assert!(
        answers
            .iter()
            .all(|d| d.source == DecisionSource::Insurance),
        "{answers:?}"
    );
    let admitted: Vec<bool> = answers.iter().map(|d| d.allowed).collect();
    assert_eq!(admitted, [true, true, true, false, false]);
    // Failing closed, everything is denied.
    let d = limiter.check("closed", "other", 1).await.unwrap();
    assert_eq!((d.allowed, d.source), (false, DecisionSource::FailClosed));
    assert_eq!(d.retry_after, Duration::from_secs(1));

    redis.restart();
    let d = wait_for_async("checks to be answered by Redis again", || {
        let limiter = limiter.clone();
        async move {
            let d = limiter.check("closed", "again", 1).await.unwrap();
            (d.source == DecisionSource::Redis).then_some(d)
        }
    })
    .await;
    assert!(d.allowed);
    let d = limiter.check("open", "fresh", 1).await.unwrap();
    assert_eq!((d.allowed, d.source), (true, DecisionSource::Redis));
}

#[tokio::test]
async fn the_local_shed_answers_limited_keys_without_redis() {
    let mut redis = RedisProc::start();
    let cfg = config(vec![rule("one", Algorithm::Gcra, 1, DAY)]);
    let limiter = RateLimiter::redis(&cfg, backend(&redis).await);
    let sources = async |key: &str| {
        let d = limiter.check("one", key, 1).await.unwrap();
        (d.allowed, d.source)
    };
    assert_eq!(sources("k").await, (true, DecisionSource::Redis));
    assert_eq!(sources("k").await, (false, DecisionSource::Redis));
    let shed = limiter.check("one", "k", 1).await.unwrap();
    assert_eq!(
        (shed.allowed, shed.source),
        (false, DecisionSource::LocalShed)
    );
    assert!(shed.retry_after > Duration::ZERO && shed.retry_after <= DAY);

    // With Redis gone, the limited key is still answered by the shed, not by the
    // insurance limiter (which only a Redis failure reaches).
    redis.kill();
    assert_eq!(sources("k").await, (false, DecisionSource::LocalShed));
    wait_until_unreachable(&limiter, "one").await;
    assert_eq!(sources("other").await, (true, DecisionSource::Insurance));

    // Without the shed, limited answers keep coming from Redis.
    redis.restart();
    let no_shed = RateLimiter::redis(
        &RateLimitConfig {
            local_shed: false,
            ..cfg.clone()
        },
        backend(&redis).await,
    );
    for expected in [true, false, false] {
        let d = no_shed.check("one", "n", 1).await.unwrap();
        assert_eq!((d.allowed, d.source), (expected, DecisionSource::Redis));
    }
}

/// Tests on tokio's paused clock: time moves only by `tokio::time::advance`.
mod paused_clock {
    use super::*;
    use tokio::time::advance;

    const US: Duration = Duration::from_micros(1);

    #[tokio::test(start_paused = true)]
    async fn gcra_admits_the_burst_at_once_then_one_every_period_over_limit() {
        // 10 per second (one every 100 ms), burst 3.
        let mut r = rule("g", Algorithm::Gcra, 10, Duration::from_secs(1));
        r.burst = NonZeroU64::new(3);
        let limiter = RateLimiter::memory(&config(vec![r]));
        for left in [2, 1, 0] {
            let d = limiter.check("g", "k", 1).await.unwrap();
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
        }
        let d = limiter.check("g", "k", 1).await.unwrap();
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Duration::from_millis(100));

        advance(Duration::from_millis(100) - US).await;
        assert!(
            !limiter.check("g", "k", 1).await.unwrap().allowed,
            "too early"
        );
        advance(US).await;
        assert!(limiter.check("g", "k", 1).await.unwrap().allowed, "on time");
        assert!(!limiter.check("g", "k", 1).await.unwrap().allowed);
        advance(Duration::from_millis(100)).await;
        assert!(limiter.check("g", "k", 1).await.unwrap().allowed);

        // Idle for a whole burst span: the full burst is back.
        advance(Duration::from_millis(300)).await;
        let admitted = {
            let mut n = 0;
            while limiter.check("g", "k", 1).await.unwrap().allowed {
                n += 1;
            }
            n
        };
        assert_eq!(admitted, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fixed_window_resets_when_the_window_ends() {
        let limiter = RateLimiter::memory(&config(vec![rule(
            "f",
            Algorithm::FixedWindow,
            2,
            Duration::from_secs(1),
        )]));
        assert!(limiter.check("f", "k", 1).await.unwrap().allowed);
        assert!(limiter.check("f", "k", 1).await.unwrap().allowed);
        let d = limiter.check("f", "k", 1).await.unwrap();
        assert!(!d.allowed);
        assert!(d.retry_after > Duration::ZERO && d.retry_after <= Duration::from_secs(1));
        assert_eq!(d.retry_after, d.reset_after);

        advance(d.retry_after - US).await;
        assert!(
            !limiter.check("f", "k", 1).await.unwrap().allowed,
            "same window"
        );
        advance(US).await;
        let next = limiter.check("f", "k", 1).await.unwrap();
        assert!(next.allowed, "a new window");
        assert_eq!(next.remaining, 1);
        assert_eq!(next.reset_after, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_sliding_window_admits_again_as_the_previous_window_decays() {
        let limiter = RateLimiter::memory(&config(vec![rule(
            "s",
            Algorithm::SlidingWindow,
            4,
            Duration::from_secs(1),
        )]));
        for _ in 0..4 {
            assert!(limiter.check("s", "k", 1).await.unwrap().allowed);
        }
        let d = limiter.check("s", "k", 1).await.unwrap();
        assert!(!d.allowed);
        // The 4 fill this window; in the next one they weigh 4 × overlap, which must fall
        // to 3: a quarter of a second into it, plus the remainder of this window.
        assert!(d.retry_after > Duration::from_millis(250));
        assert!(d.retry_after <= Duration::from_millis(1250) + US);

        advance(d.retry_after - 2 * US).await;
        assert!(
            !limiter.check("s", "k", 1).await.unwrap().allowed,
            "too early"
        );
        advance(2 * US).await;
        assert!(limiter.check("s", "k", 1).await.unwrap().allowed);
        assert!(!limiter.check("s", "k", 1).await.unwrap().allowed);
    }
}

// ---------------------------------------------------------------------------------------
// HTTP: `POST /v1/ratelimit/check` and the `/v1` protection, through the router in process (every layer
// `serve` runs).

struct Server {
    app: App,
}

impl Server {
    async fn start(rate_limit: RateLimitConfig) -> Self {
        Self::start_with_tokens(rate_limit, None).await
    }

    /// With `tokens` (one per line), `/v1` requires one of them.
    async fn start_with_tokens(rate_limit: RateLimitConfig, tokens: Option<&str>) -> Self {
        let mut config = Config::default();
        match tokens {
            Some(t) => {
                config.server.auth.tokens =
                    Some(blinkchamber::config::SecretSource::value(t.to_owned()));
            }
            None => config.server.auth.enabled = false,
        }
        config.rate_limit = rate_limit;
        Self {
            app: App::new(config).await,
        }
    }

    async fn check(&self, body: Value) -> Answer {
        self.app.post_json("/v1/ratelimit/check", &body).await
    }
}

fn header<'a>(response: &'a Answer, name: &str) -> &'a str {
    response.header(name)
}

/// `"<rule>";k1=v1;k2=v2` → (rule, [(k, v)…]) for one structured-field list item.
fn sf_item(item: &str) -> (String, Vec<(String, u64)>) {
    let mut parts = item.trim().split(';');
    let name = parts.next().unwrap();
    assert!(name.starts_with('"') && name.ends_with('"'), "{item}");
    let params = parts
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or_else(|| panic!("{item}"));
            (k.to_owned(), v.parse().unwrap_or_else(|_| panic!("{item}")))
        })
        .collect();
    (name.trim_matches('"').to_owned(), params)
}

/// Status and body of a problem-details answer (content type, `status`, `type` and
/// `title` checked).
async fn problem(response: Answer) -> (StatusCode, Value) {
    let body = response.problem();
    (response.status, body)
}

fn http_rules() -> RateLimitConfig {
    let mut composite = rule("composite", Algorithm::Gcra, 1, DAY);
    composite.descriptor = vec![Descriptor::User, Descriptor::Route];
    config(vec![
        // A day-long window: no window boundary falls between a test's requests.
        rule("api", Algorithm::FixedWindow, 2, DAY),
        rule("wide", Algorithm::Gcra, 100, Duration::from_secs(60)),
        RuleConfig {
            burst: NonZeroU64::new(5),
            ..rule("bursty", Algorithm::Gcra, 10, Duration::from_secs(60))
        },
        composite,
    ])
}

#[tokio::test]
async fn http_gcra_policy_counts_in_the_units_of_remaining() {
    let server = Server::start(http_rules()).await;
    let response = server.check(json!({"rule": "bursty", "key": "k"})).await;
    assert_eq!(response.status, StatusCode::OK);
    let policy = sf_item(header(&response, "ratelimit-policy"));
    // q is the burst (what remaining counts down from), w the time it takes to refill.
    assert_eq!(policy.1, [("q".to_owned(), 5), ("w".to_owned(), 30)]);
    let state = sf_item(header(&response, "ratelimit"));
    assert_eq!(state.1[0], ("r".to_owned(), 4));
}

#[tokio::test]
async fn http_check_answers_ratelimit_headers_and_429_with_retry_after() {
    let server = Server::start(http_rules()).await;
    for left in [1, 0] {
        let response = server.check(json!({"rule": "api", "key": "k"})).await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(header(&response, "ratelimit-policy"), "\"api\";q=2;w=86400");
        let (rule, params) = sf_item(header(&response, "ratelimit"));
        assert_eq!(rule, "api");
        assert_eq!(params[0], ("r".to_owned(), left));
        assert_eq!(params[1].0, "t");
        assert!((1..=86_400).contains(&params[1].1), "{params:?}");
        assert!(response.headers.get("retry-after").is_none());
        let body: Value = response.json();
        assert_eq!(body["allowed"], true);
        assert_eq!(body["limit"], 2);
        assert_eq!(body["remaining"], left);
        assert_eq!(body["retryAfter"], "0s");
        assert!(duration::parse(body["resetAfter"].as_str().unwrap()).is_ok());
    }

    let response = server
        .check(json!({"rule": "api", "key": "k", "cost": 1}))
        .await;
    assert_eq!(response.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = header(&response, "retry-after").parse().unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
    let body: Value = response.json();
    assert_eq!(body["allowed"], false);
    let retry_after = duration::parse(body["retryAfter"].as_str().unwrap()).unwrap();
    assert_eq!(retry_after.as_secs_f64().ceil() as u64, retry);
    assert_eq!(body["descriptors"][0]["rule"], "api");

    // Several descriptors: one limited makes the answer 429, and the top-level fields
    // and the first header items are the limited one's.
    let response = server
        .check(json!({"descriptors": [
            {"rule": "wide", "key": "k"},
            {"rule": "api", "key": "k"}
        ]}))
        .await;
    assert_eq!(response.status, StatusCode::TOO_MANY_REQUESTS);
    let policies: Vec<_> = header(&response, "ratelimit-policy")
        .split(", ")
        .map(sf_item)
        .collect();
    assert_eq!(policies[0].0, "api");
    assert_eq!(policies[1].0, "wide");
    assert_eq!(policies[1].1, [("q".to_owned(), 100), ("w".to_owned(), 60)]);
    let body: Value = response.json();
    assert_eq!(body["limit"], 2);
    assert_eq!(body["descriptors"][0]["allowed"], true);
    assert_eq!(body["descriptors"][0]["remaining"], 99);
    assert_eq!(body["descriptors"][1]["allowed"], false);
}

#[tokio::test]
async fn http_key_objects_compose_in_the_rules_descriptor_order() {
    let server = Server::start(http_rules()).await;
    let response = server
        .check(json!({"rule": "composite", "key": {"route": "/x", "user": "u1"}}))
        .await;
    assert_eq!(response.status, StatusCode::OK);
    // The same key written out is the same limit.
    let response = server
        .check(json!({"rule": "composite", "key": "user=u1|route=/x"}))
        .await;
    assert_eq!(response.status, StatusCode::TOO_MANY_REQUESTS);

    let (status, body) = problem(
        server
            .check(json!({"rule": "composite", "key": {"user": "u1"}}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["detail"].as_str().unwrap().contains("key.route"),
        "{body}"
    );

    let (status, body) = problem(
        server
            .check(json!({"rule": "composite", "key": {"user": "u1", "route": "/", "org": "o"}}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["detail"].as_str().unwrap().contains("key.org"),
        "{body}"
    );
}

#[tokio::test]
async fn http_bad_checks_are_problems() {
    let server = Server::start(http_rules()).await;
    let (status, body) = problem(server.check(json!({"rule": "nope", "key": "k"})).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["type"], "unknown-rule");
    assert!(body["detail"].as_str().unwrap().contains("nope"), "{body}");

    let (status, body) = problem(
        server
            .check(
                json!({"descriptors": [{"rule": "api", "key": "k"}, {"rule": "gone", "key": "k"}]}),
            )
            .await,
    )
    .await;
    assert_eq!(
        (status, body["type"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unknown-rule"))
    );

    for (body, says) in [
        (
            json!({"rule": "api", "key": "k", "descriptors": []}),
            "not both",
        ),
        (json!({}), "descriptors"),
        (json!({"rule": "api"}), "`key`"),
        (json!({"rule": "api", "key": "k", "cost": 0}), "cost"),
        (json!({"rule": "api", "key": "k", "cost": 3}), "`api`"),
        (json!({"rule": "api", "key": 7}), "string"),
        (json!({"descriptors": []}), "at least one"),
    ] {
        let (status, problem) = problem(server.check(body.clone()).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{body}: {detail}");
    }

    let response = server
        .app
        .send(
            request(Method::POST, "/v1/ratelimit/check")
                .header("content-type", "application/json")
                .body(Body::from("{not json"))
                .unwrap(),
        )
        .await;
    let (status, body) = problem(response).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid-body"))
    );

    // Nothing was consumed by the rejected checks.
    let response = server.check(json!({"rule": "api", "key": "k"})).await;
    let body: Value = response.json();
    assert_eq!(body["remaining"], 1);
}

#[tokio::test]
async fn the_v1_api_is_limited_per_client_ip_and_per_token() {
    let mut cfg = http_rules();
    cfg.rules
        .push(rule("per-ip", Algorithm::FixedWindow, 2, DAY));
    cfg.rules
        .push(rule("per-token", Algorithm::FixedWindow, 3, DAY));
    cfg.api.per_ip = Some("per-ip".into());
    cfg.api.per_token = Some("per-token".into());
    cfg.api.client_ip_header = Some("X-Real-IP".into());
    let server = Server::start_with_tokens(cfg, Some("token-a\ntoken-b\ntoken-c\n")).await;
    let status = |ip: &'static str, token: Option<&'static str>| {
        let mut builder = request(Method::GET, "/v1/status").header("x-real-ip", ip);
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        server.app.send(builder.body(Body::empty()).unwrap())
    };

    // Per IP, before the token check: requests without a valid token count too.
    for _ in 0..2 {
        assert_eq!(
            status("10.0.0.1", Some("guessed")).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let limited = status("10.0.0.1", Some("guessed")).await;
    assert!(header(&limited, "retry-after").parse::<u64>().unwrap() >= 1);
    assert!(header(&limited, "ratelimit-policy").starts_with("\"per-ip\";q=2;w=86400"));
    assert!(header(&limited, "ratelimit").starts_with("\"per-ip\";r=0;t="));
    let (code, body) = problem(limited).await;
    assert_eq!(
        (code, body["type"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate-limited"))
    );
    assert_eq!(
        status("10.0.0.2", Some("token-b")).await.status,
        StatusCode::OK
    );
    // The client IP is the last value of the header (the nearest proxy's line).
    let spoofed = server
        .app
        .send(
            request(Method::GET, "/v1/status")
                .header("x-real-ip", "10.0.0.9")
                .header("x-real-ip", "10.0.0.1")
                .header("authorization", "Bearer token-b")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(spoofed.status, StatusCode::TOO_MANY_REQUESTS);

    // Per token: three requests from different addresses, the fourth is limited.
    for ip in ["10.1.0.1", "10.1.0.2", "10.1.0.3"] {
        let response = status(ip, Some("token-a")).await;
        assert_eq!(response.status, StatusCode::OK, "{ip}");
    }
    let limited = status("10.1.0.4", Some("token-a")).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(header(&limited, "ratelimit-policy").starts_with("\"per-token\""));
    let (_, body) = problem(limited).await;
    assert!(
        !body.to_string().contains("token-a"),
        "the token never shows: {body}"
    );
    assert_eq!(
        status("10.1.0.5", Some("token-b")).await.status,
        StatusCode::OK
    );
    // The API's own rules cannot be checked (and used up) through the check endpoint.
    let (code, body) = problem(
        server
            .app
            .send(with_json(
                request(Method::POST, "/v1/ratelimit/check")
                    .header("x-real-ip", "10.3.0.1")
                    .header("authorization", "Bearer token-c"),
                &json!({"rule": "per-ip", "key": "ip=10.0.0.2", "cost": 2}),
            ))
            .await,
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("rateLimit.api"),
        "{body}"
    );
}
