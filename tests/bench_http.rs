//! `blinkchamber bench --only http` against a real Redis: every HTTP row and its library
//! row are measured, every answer is the expected one, and nothing is left in Redis.

mod support;

use std::process::Command;

use support::{RedisProc, binary};

#[test]
fn http_rows_measure_serve_beside_the_library_and_clean_up() {
    let redis = RedisProc::start();
    let out = Command::new(binary())
        .args([
            "bench",
            "--redis",
            &format!("redis://127.0.0.1:{}", redis.port),
            "--only",
            "http",
            "--rounds",
            "1",
            "--duration",
            "200ms",
            "--concurrency",
            "4",
        ])
        .output()
        .expect("bench runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for row in [
        "| HTTP GET /healthz |",
        "| HTTP cache get, L1 hit |",
        "| HTTP cache get, L2 hit (L1 off) |",
        "| HTTP rate-limit check |",
        "| HTTP session get |",
        "| HTTP event publish (one event) |",
        "× library session get",
        "HTTP cache get, L1 hit / HTTP GET /healthz:",
    ] {
        assert!(stdout.contains(row), "{row} missing:\n{stdout}");
    }
    assert!(!stderr.contains("answers were not"), "{stderr}");
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("blinkchamber:bench:*")
        .query(&mut redis.conn())
        .expect("KEYS");
    assert!(left.is_empty(), "keys left behind: {left:?}");
}
