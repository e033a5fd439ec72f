//! The programs in `examples/` run against a real Redis and do what they say.

mod support;

use std::process::Command;

use support::RedisProc;

/// `cargo test` builds the examples next to the test binaries: `target/<profile>/examples`.
fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    profile_dir.join("examples").join(name)
}

#[test]
fn embedded_service_caches_limits_and_handles_every_event() {
    let redis = RedisProc::start();
    let output = Command::new(example("embedded_service"))
        .env("REDIS_PORT", redis.port.to_string())
        .output()
        .expect("run examples/embedded_service");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    for line in [
        "cache: 2 reads, 1 load",
        "rate limit: 3 of 4 sign-ups allowed",
        "events: 100 published, 100 handled",
    ] {
        assert!(stdout.contains(line), "missing `{line}` in:\n{stdout}");
    }
}
