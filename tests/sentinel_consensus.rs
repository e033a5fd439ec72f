//! Which master the Sentinel supervisor follows when the Sentinels disagree: a stand-in
//! Sentinel listed first names a standalone server that answers `ROLE` as a master (a
//! demoted master not yet reconfigured, or one cut off with a lagging Sentinel), while the
//! three real Sentinels agree on the real master.

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
