//! Which master the Sentinel supervisor follows when the Sentinels disagree: a stand-in
//! Sentinel listed first names a standalone server that answers `ROLE` as a master (a
//! demoted master not yet reconfigured, or one cut off with a lagging Sentinel), while the
//! three real Sentinels agree on the real master. And what it learns when its only
//! Sentinel's connection goes half-open while the master fails over.

mod support;

use std::time::Duration;

use blinkchamber::RedisBackend;
use blinkchamber::config::RedisConfig;
use support::sentinel_standin::SentinelStandIn;
use support::{RedisProc, SentinelGroup, wait_for_async};

fn exists(node: &RedisProc, key: &str) -> bool {
    let n: u32 = redis::cmd("EXISTS")
        .arg(key)
        .query(&mut node.conn())
        .unwrap();
    n == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_sentinel_listed_first_never_moves_the_process_to_a_stale_master() {
    let group = SentinelGroup::start();
    let stale = RedisProc::start();
    let liar = SentinelStandIn::start(stale.port, 0).await;
    let mut nodes = vec![format!("127.0.0.1:{}", liar.port)];
    nodes.extend(group.sentinel_nodes());
    let mut cfg = RedisConfig::sentinel("mymaster", nodes);
    cfg.dial_timeout = Duration::from_millis(500);
    cfg.read_timeout = Duration::from_secs(1);
    let backend = RedisBackend::connect(cfg).await.unwrap();
    let real = group.nodes[0].port;

    // At start: the majority wins, not the first Sentinel listed.
    assert_eq!(backend.master().endpoint.port, real);
    let _: () = backend
        .query(redis::cmd("SET").arg("consensus:1").arg("x"))
        .await
        .unwrap();
    assert!(exists(&group.nodes[0], "consensus:1"));
    assert!(!exists(&stale, "consensus:1"));

    // The liar announces a switch to the stale master. It is asked for its config epoch,
    // which is not newer than the one followed: ignored. A second announcement is handled
    // only after the first, so once it has been checked the first one surely was.
    wait_for_async("the supervisor to subscribe to the stand-in", || async {
        (liar.subscribers() > 0).then_some(())
    })
    .await;
    for _ in 0..2 {
        let asked = liar.asked();
        liar.announce(real, stale.port);
        wait_for_async("the announcement to be checked", || async {
            (liar.asked() > asked).then_some(())
        })
        .await;
    }
    assert_eq!(backend.master().endpoint.port, real);
    assert_eq!(backend.master().epoch, 0, "the master never changed");

    // A re-resolve (as after a connection error) asks every Sentinel and keeps the real
    // master.
    let asked = liar.asked();
    backend.suspect_master();
    wait_for_async("a re-resolve to ask the stand-in", || async {
        (liar.asked() > asked).then_some(())
    })
    .await;
    let _: () = backend
        .query(redis::cmd("SET").arg("consensus:2").arg("x"))
        .await
        .unwrap();
    assert!(exists(&group.nodes[0], "consensus:2"));
    assert!(!exists(&stale, "consensus:2"));
    assert_eq!(backend.master().endpoint.port, real);
}

/// The `blinkchamber_redis_heartbeats_missed_total` counter (0 until first counted).
fn heartbeats_missed(metrics: &metrics_exporter_prometheus::PrometheusHandle) -> u64 {
    metrics
        .render()
        .lines()
        .find(|l| l.starts_with("blinkchamber_redis_heartbeats_missed_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_sentinel_watcher_is_found_and_a_failover_it_missed_is_followed() {
    let metrics = blinkchamber::metrics::install();
    let group = tokio::task::spawn_blocking(SentinelGroup::start)
        .await
        .unwrap();
    let old = group.nodes[0].port;
    // The process knows one Sentinel, through a proxy.
    let proxy = support::proxy::Proxy::start(group.sentinels[0].port).await;
    let mut cfg = RedisConfig::sentinel("mymaster", vec![format!("127.0.0.1:{}", proxy.port)]);
    cfg.dial_timeout = Duration::from_millis(500);
    cfg.read_timeout = Duration::from_millis(500);
    let backend = RedisBackend::connect(cfg).await.unwrap();
    assert_eq!(backend.master().endpoint.port, old);
    // Once the watcher is subscribed (a client of the Sentinel with a subscription)...
    wait_for_async("the watcher to subscribe to +switch-master", || async {
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut group.sentinels[0].conn())
            .unwrap();
        clients.lines().any(|c| c.contains(" sub=1 ")).then_some(())
    })
    .await;

    // ...its path goes silent: its connection stays open and nothing comes back.
    // Meanwhile the master fails over, and the +switch-master on that path is lost.
    let missed = heartbeats_missed(&metrics);
    proxy.set_mode(support::proxy::Mode::SwallowReplies);
    group.failover_through(1);
    let new = wait_for_async("the Sentinels to promote a replica", || async {
        group.sentinel_master_port().filter(|p| *p != old)
    })
    .await;
    // The unanswered PING gives the half-open connection away.
    wait_for_async("the missed heartbeat to be counted", || async {
        (heartbeats_missed(&metrics) > missed).then_some(())
    })
    .await;
    assert_eq!(
        backend.master().endpoint.port,
        old,
        "nothing could be learnt yet"
    );
    // The path comes back: the watcher it re-dialled asks again and follows the failover
    // it never heard announced.
    proxy.set_mode(support::proxy::Mode::Pass);
    wait_for_async("the backend to follow the new master", || async {
        (backend.master().endpoint.port == new).then_some(())
    })
    .await;
    let _: () = backend
        .query(redis::cmd("SET").arg("after-half-open").arg("x"))
        .await
        .unwrap();
    let mut conn = group.nodes[group.index_of(new)].conn();
    let value: Option<String> = redis::cmd("GET")
        .arg("after-half-open")
        .query(&mut conn)
        .unwrap();
    assert_eq!(value.as_deref(), Some("x"));
}
