//! The Redis backend against real `redis-server` processes: databases, credentials,
//! password rotation, TLS, reconnects and resubscription.

mod support;

use blinkchamber::backend::redis::SubscriptionEvent;
use blinkchamber::config::{Config, DbIndex, RedisConfig, SecretSource, TlsConfig};
use blinkchamber::{Backend, RedisBackend};
use support::{RedisProc, tls::Pki, wait_for_async};

fn set(key: &str, value: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value);
    cmd
}

fn get(key: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("GET");
    cmd.arg(key);
    cmd
}

#[tokio::test]
async fn commands_run_on_the_configured_database_per_capability() {
    let redis = RedisProc::start();
    let mut config = Config::default();
    config.backend = blinkchamber::config::BackendKind::Redis;
    config.redis = RedisConfig::standalone("127.0.0.1", redis.port);
    config.cache.redis.database = Some(DbIndex::new(3).unwrap());
    config.events.redis.database = Some(DbIndex::new(4).unwrap());
    let Backend::Redis(backends) = Backend::from_config(&config).await.unwrap() else {
        panic!("expected the Redis backend");
    };
    let _: () = backends.cache.query(&set("k", "cache")).await.unwrap();
    let _: () = backends.events.query(&set("k", "events")).await.unwrap();
    let _: () = backends.default.query(&set("k", "default")).await.unwrap();

    let mut admin = redis.conn();
    for (db, expected) in [(0, "default"), (3, "cache"), (4, "events")] {
        let _: () = redis::cmd("SELECT").arg(db).query(&mut admin).unwrap();
        let value: String = redis::cmd("GET").arg("k").query(&mut admin).unwrap();
        assert_eq!(value, expected, "database {db}");
    }
}

#[tokio::test]
async fn a_rotated_password_file_is_used_by_new_connections() {
    let mut redis = RedisProc::start_with(&["--requirepass", "first-secret"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("REDIS_PASSWORD");
    std::fs::write(&file, "first-secret\n").unwrap();
    let backend = RedisBackend::connect(
        RedisConfig::standalone("127.0.0.1", redis.port).with_password(SecretSource::file(&file)),
    )
    .await
    .unwrap();
    let _: () = backend.query(&set("rotation", "before")).await.unwrap();

    // The Vault agent rewrites the file, then the operator changes the password in Redis
    // and existing connections are dropped (as a restart or `CLIENT KILL` would).
    std::fs::write(&file, "second-secret\n").unwrap();
    let mut admin = redis.conn();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("second-secret")
        .query(&mut admin)
        .unwrap();
    redis.set_password("second-secret");
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query(&mut admin)
        .unwrap();
    assert!(killed >= 1, "the backend's connection was killed");

    // The next command reconnects with the new secret, transparently.
    let value: String = backend.query(&get("rotation")).await.unwrap();
    assert_eq!(value, "before");
    let _: () = backend.query(&set("rotation", "after")).await.unwrap();
    let value: String = redis::cmd("GET")
        .arg("rotation")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(value, "after");
}

#[tokio::test]
async fn a_wrong_password_is_an_error_that_does_not_leak_it() {
    let redis = RedisProc::start_with(&["--requirepass", "right"]);
    let backend = RedisBackend::connect(
        RedisConfig::standalone("127.0.0.1", redis.port)
            .with_password(SecretSource::value("wrong-and-secret"))
            .with_max_retries(0),
    )
    .await
    .unwrap();
    let err = backend.ping().await.unwrap_err().to_string();
    assert!(!err.contains("wrong-and-secret"), "{err}");
    assert!(!format!("{:?}", backend.config()).contains("wrong-and-secret"));
}

#[tokio::test]
async fn mutual_tls_with_a_private_ca() {
    let pki = Pki::generate();
    let redis = RedisProc::start_tls(&pki);
    let mut cfg = RedisConfig::standalone("127.0.0.1", redis.port);
    cfg.tls = TlsConfig {
        enabled: true,
        ca_file: Some(pki.ca_cert.clone()),
        cert_file: Some(pki.client_cert.clone()),
        key_file: Some(pki.client_key.clone()),
    };
    let backend = RedisBackend::connect(cfg.clone()).await.unwrap();
    let _: () = backend.query(&set("tls", "yes")).await.unwrap();
    let value: String = backend.query(&get("tls")).await.unwrap();
    assert_eq!(value, "yes");

    // Without the client certificate the server refuses the handshake.
    cfg.tls.cert_file = None;
    cfg.tls.key_file = None;
    let refused = RedisBackend::connect(cfg.with_max_retries(0))
        .await
        .unwrap();
    assert!(refused.ping().await.is_err());
}

#[tokio::test]
async fn commands_recover_after_redis_restarts() {
    let mut redis = RedisProc::start();
    let backend = RedisBackend::connect(RedisConfig::standalone("127.0.0.1", redis.port))
        .await
        .unwrap();
    backend.ping().await.unwrap();
    redis.kill();
    assert!(backend.ping().await.is_err(), "no server, no answer");
    redis.restart();
    wait_for_async("the backend to reconnect", || async {
        backend.ping().await.ok()
    })
    .await;
}

#[tokio::test]
async fn subscriptions_resubscribe_after_a_restart() {
    let mut redis = RedisProc::start();
    let backend = RedisBackend::connect(RedisConfig::standalone("127.0.0.1", redis.port))
        .await
        .unwrap();
    let mut sub = backend.subscribe(vec!["news".into()]);
    assert_eq!(sub.recv().await, Some(SubscriptionEvent::Subscribed(0)));
    let _: i64 = redis::cmd("PUBLISH")
        .arg("news")
        .arg("one")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(
        sub.recv().await,
        Some(SubscriptionEvent::Message {
            channel: "news".into(),
            payload: b"one".to_vec()
        })
    );

    redis.restart();
    // The loss is announced at once, and the resubscription after it, so a cache can stop
    // trusting, then flush, what it may have missed.
    assert_eq!(sub.recv().await, Some(SubscriptionEvent::Interrupted));
    assert_eq!(sub.recv().await, Some(SubscriptionEvent::Subscribed(1)));
    let _: i64 = redis::cmd("PUBLISH")
        .arg("news")
        .arg("two")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(
        sub.recv().await,
        Some(SubscriptionEvent::Message {
            channel: "news".into(),
            payload: b"two".to_vec()
        })
    );
}

/// Connections the server sees, other than the one asking.
fn client_count(redis: &RedisProc) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut redis.conn())
        .unwrap();
    list.lines()
        .filter(|l| !l.contains("cmd=client|list"))
        .count()
}

#[tokio::test]
async fn the_pool_opens_connections_only_under_load_and_at_most_pool_size() {
    let redis = RedisProc::start();
    let cfg = RedisConfig::standalone("127.0.0.1", redis.port)
        .with_pool_size(std::num::NonZeroU32::new(2).unwrap());
    let backend = RedisBackend::connect(cfg).await.unwrap();
    for i in 0..20 {
        backend
            .query::<()>(&set(&format!("k{i}"), "v"))
            .await
            .unwrap();
    }
    assert_eq!(
        client_count(&redis),
        1,
        "sequential commands share one connection"
    );

    // Hold every reply for a moment so far more commands are in flight at once than one
    // connection is given before the pool spreads.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1000)
        .arg("ALL")
        .query(&mut redis.conn())
        .unwrap();
    let in_flight = blinkchamber::backend::redis::SPREAD_AT * 3;
    let tasks: Vec<_> = (0..in_flight)
        .map(|i| {
            let backend = backend.clone();
            tokio::spawn(async move {
                backend
                    .query::<Option<String>>(&get(&format!("k{i}")))
                    .await
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let expected = (i < 20).then(|| "v".to_owned());
        assert_eq!(task.await.unwrap().unwrap(), expected);
    }
    assert_eq!(
        client_count(&redis),
        2,
        "poolSize is the most connections opened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_script_calls_answer_each_caller_once_even_when_some_are_cancelled() {
    use blinkchamber::backend::redis::batch::{Arg, Item, ScriptBatcher};
    const SCRIPT: &str = r"
        local out = {}
        for i = 1, #KEYS do out[#out + 1] = redis.call('INCRBY', KEYS[i], ARGV[i]) end
        return out";
    let redis = RedisProc::start();
    let backend = RedisBackend::connect(RedisConfig::standalone("127.0.0.1", redis.port))
        .await
        .unwrap();
    let batcher: ScriptBatcher<1, 1> =
        ScriptBatcher::new(backend, SCRIPT, 1, blinkchamber::Retry::IfNotRun);
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let batcher = batcher.clone();
            tokio::spawn(async move {
                let item = |k: &str| Item {
                    keys: [Arg::Text(format!("{k}{i}"))],
                    args: [Arg::Int(1)],
                };
                batcher.call(vec![item("a"), item("b")]).await
            })
        })
        .collect();
    // Cancel every third caller wherever it is: queued, leading a call, or waiting.
    for task in tasks.iter().step_by(3) {
        task.abort();
    }
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await {
            Ok(replies) => assert_eq!(replies.unwrap(), vec![1, 1], "caller {i}"),
            Err(e) => assert!(e.is_cancelled() && i % 3 == 0, "caller {i}: {e}"),
        }
    }
    let mut conn = redis.conn();
    for i in 0..400 {
        for k in ["a", "b"] {
            let n: Option<i64> = redis::cmd("GET")
                .arg(format!("{k}{i}"))
                .query(&mut conn)
                .unwrap();
            assert!(matches!(n, None | Some(1)), "{k}{i} applied {n:?} times");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_of_a_script_reading_keys_first_see_earlier_items_writes() {
    use blinkchamber::backend::redis::batch::{Arg, Item, ScriptBatcher};
    use std::collections::HashMap;
    // Each item adds its argument to its key's number, read up front in one MGET, or read
    // again when the batcher says an earlier item of the call has the same key; it answers
    // the old number and the new one, packed.
    const SCRIPT: &str = r"
        local again = {}
        for j = 1, #ARGV[1], 4 do again[struct.unpack('<I4', ARGV[1], j)] = true end
        local values = redis.call('MGET', unpack(KEYS))
        local out = {}
        for i = 1, #KEYS do
          local old = values[i]
          if again[i] then old = redis.call('GET', KEYS[i]) end
          old = tonumber(old) or 0
          local new = old + tonumber(ARGV[i + 1])
          redis.call('SET', KEYS[i], new)
          out[#out + 1], out[#out + 2] = old, new
        end
        return struct.pack('<' .. string.rep('d', #out), unpack(out))";
    let redis = RedisProc::start();
    let backend = RedisBackend::connect(RedisConfig::standalone("127.0.0.1", redis.port))
        .await
        .unwrap();
    let batcher: ScriptBatcher<1, 1, f64> = ScriptBatcher::reading_keys_first(
        backend.clone(),
        SCRIPT,
        2,
        blinkchamber::backend::redis::batch::FULLER_CALLS_IN_FLIGHT,
        blinkchamber::Retry::IfNotRun,
    );
    // Five keys shared by 300 callers of one item or two (of the same key), so that most
    // calls repeat keys.
    let tasks: Vec<_> = (0..300u64)
        .map(|i| {
            let batcher = batcher.clone();
            tokio::spawn(async move {
                let key = format!("k{}", i % 5);
                let item = || Item {
                    keys: [Arg::Text(key.clone())],
                    args: [Arg::Int(1)],
                };
                let items = if i % 2 == 0 {
                    vec![item()]
                } else {
                    vec![item(), item()]
                };
                (key, batcher.call(items).await.unwrap())
            })
        })
        .collect();
    let mut olds: HashMap<String, Vec<f64>> = HashMap::new();
    for task in tasks {
        let (key, replies) = task.await.unwrap();
        assert!(matches!(replies.len(), 2 | 4), "{replies:?}");
        for pair in replies.chunks(2) {
            assert_eq!(pair[1], pair[0] + 1.0, "{key}: {replies:?}");
            olds.entry(key.clone()).or_default().push(pair[0]);
        }
    }
    // Every addition saw the one before it: each key's old numbers are 0, 1, 2, … with
    // none read twice, and the key holds their count.
    for (key, mut seen) in olds {
        seen.sort_by(f64::total_cmp);
        let expected: Vec<f64> = (0..seen.len()).map(|n| n as f64).collect();
        assert_eq!(seen, expected, "{key}");
        let stored: u64 = backend.query(redis::cmd("GET").arg(&key)).await.unwrap();
        assert_eq!(stored, seen.len() as u64, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_reads_answer_each_caller_its_own_key_and_share_a_frozen_redis_error() {
    use blinkchamber::backend::redis::batch::GetBatcher;
    let mut redis = RedisProc::start();
    let mut cfg = RedisConfig::standalone("127.0.0.1", redis.port);
    cfg.max_retries = 0;
    let backend = RedisBackend::connect(cfg).await.unwrap();
    let mut conn = redis.conn();
    // Values with every byte, absent keys, and a key of another type (which `MGET`
    // answers as nil, like an absent one).
    for i in 0..300u32 {
        if i % 3 != 0 {
            let value: Vec<u8> = (0..=255u8).chain(i.to_le_bytes()).collect();
            let _: () = redis::cmd("SET")
                .arg(format!("k{i}"))
                .arg(value)
                .query(&mut conn)
                .unwrap();
        }
    }
    let _: () = redis::cmd("HSET")
        .arg("k0")
        .arg("f")
        .arg("v")
        .query(&mut conn)
        .unwrap();
    let reads = GetBatcher::new(backend);
    let tasks: Vec<_> = (0..300u32)
        .map(|i| {
            let reads = reads.clone();
            tokio::spawn(async move { reads.get(format!("k{i}")).await })
        })
        .collect();
    for (i, task) in (0u32..).zip(tasks) {
        let expected = (i % 3 != 0).then(|| (0..=255u8).chain(i.to_le_bytes()).collect::<Vec<_>>());
        assert_eq!(task.await.unwrap().unwrap(), expected, "k{i}");
    }
    // A frozen Redis: every waiting caller gets an error (the response timeout), none hangs.
    redis.pause();
    let tasks: Vec<_> = (0..50u32)
        .map(|i| {
            let reads = reads.clone();
            tokio::spawn(async move { reads.get(format!("k{i}")).await })
        })
        .collect();
    for task in tasks {
        assert!(
            task.await.unwrap().is_err(),
            "a read of a frozen Redis answered"
        );
    }
    redis.resume();
    let value = reads.get("k1".into()).await.unwrap().unwrap();
    assert_eq!(&value[256..], 1u32.to_le_bytes());
}

#[tokio::test]
async fn refusals_that_did_not_run_are_classified_as_not_run() {
    // NOREPLICAS: a master that requires a replica it does not have refuses writes.
    let master = RedisProc::start_with(&["--min-replicas-to-write", "1"]);
    let mut cfg = RedisConfig::standalone("127.0.0.1", master.port);
    cfg.max_retries = 0;
    let backend = RedisBackend::connect(cfg).await.unwrap();
    let err = backend.query::<()>(&set("guarded", "x")).await.unwrap_err();
    assert!(err.to_string().contains("NOREPLICAS"), "{err}");
    assert!(err.certainly_not_run(), "NOREPLICAS did not run: {err}");

    // EXECABORT: a transaction sent to a replica (a demoted master) is discarded whole.
    let plain = RedisProc::start();
    let replica = RedisProc::start();
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(plain.port)
        .query(&mut replica.conn())
        .unwrap();
    let mut cfg = RedisConfig::standalone("127.0.0.1", replica.port);
    cfg.max_retries = 0;
    let backend = RedisBackend::connect(cfg).await.unwrap();
    let mut tx = redis::pipe();
    tx.atomic()
        .cmd("SET")
        .arg("a")
        .arg(1)
        .cmd("SET")
        .arg("b")
        .arg(2);
    let err = backend
        .pipeline::<()>(blinkchamber::Retry::IfNotRun, &tx)
        .await
        .unwrap_err();
    assert!(
        err.certainly_not_run(),
        "a discarded transaction did not run: {err}"
    );
    let a: Option<String> = redis::cmd("GET").arg("a").query(&mut plain.conn()).unwrap();
    assert_eq!(a, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_blocked_in_wait_holds_up_no_other_call() {
    let master = RedisProc::start();
    let mut replica =
        RedisProc::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    support::wait_for("the replica to be in sync", || {
        (replica
            .info_field("replication", "master_link_status")
            .as_deref()
            == Some("up"))
        .then_some(())
    });
    let mut cfg = RedisConfig::standalone("127.0.0.1", master.port)
        .with_pool_size(std::num::NonZeroU32::new(4).unwrap());
    cfg.read_timeout = std::time::Duration::from_secs(20);
    cfg.call_timeout = std::time::Duration::from_secs(60);
    let backend = RedisBackend::connect(cfg).await.unwrap();
    let _: () = backend.query(&set("k", "v")).await.unwrap();

    // A write the frozen replica cannot acknowledge, then WAIT without a timeout: Redis
    // answers nothing else sent on that connection until the replica is back.
    replica.pause();
    let waiting = {
        let backend = backend.clone();
        tokio::spawn(async move {
            backend
                .run_blocking(blinkchamber::backend::Retry::IfNotRun, |mut c| async move {
                    redis::pipe()
                        .cmd("SET")
                        .arg("w")
                        .arg("1")
                        .ignore()
                        .cmd("WAIT")
                        .arg(1)
                        .arg(0)
                        .query_async::<(i64,)>(&mut c)
                        .await
                })
                .await
        })
    };
    support::wait_for("WAIT to block in Redis", || {
        master
            .info_field("clients", "blocked_clients")
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| *n >= 1)
    });
    for _ in 0..20 {
        let value: Option<String> = backend.query(&get("k")).await.unwrap();
        assert_eq!(value.as_deref(), Some("v"));
    }
    assert!(
        !waiting.is_finished(),
        "the reads were answered while WAIT still waited"
    );
    replica.resume();
    let (acked,) = waiting.await.unwrap().unwrap();
    assert_eq!(acked, 1, "the replica acknowledged once it ran again");
}
