//! `blinkchamber config check|print`: every bad-config case names the key (and the file
//! line when the key is in the file), exits non-zero, and never prints a secret.

mod support;

use std::process::Output;

use support::serve::{run, write};

const SECRET: &str = "hunter2-do-not-print";

/// `config check` on `yaml`; returns (exit success, stderr + stdout).
fn check(yaml: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "bc.yaml", yaml);
    outcome(&run(&["config", "check", file.to_str().unwrap()], env))
}

fn outcome(out: &Output) -> (bool, String) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    (out.status.success(), text)
}

/// Asserts that `yaml` is refused with a message containing every one of `wanted`.
fn refused(yaml: &str, env: &[(&str, &str)], wanted: &[&str]) -> String {
    let (ok, text) = check(yaml, env);
    assert!(!ok, "accepted:\n{yaml}\n{text}");
    for w in wanted {
        assert!(text.contains(w), "expected `{w}` in:\n{text}");
    }
    assert!(!text.contains(SECRET), "secret leaked:\n{text}");
    text
}

const NO_AUTH: &str = "server:\n  auth:\n    enabled: false\n";

#[test]
fn a_valid_file_passes() {
    let (ok, text) = check(&format!("{NO_AUTH}backend: memory\n"), &[]);
    assert!(ok, "{text}");
    assert!(text.contains("bc.yaml: ok"), "{text}");
}

#[test]
fn unknown_key_names_key_and_line() {
    refused(
        "server:\n  listen: 127.0.0.1:8080\n  listne: 127.0.0.1:8081\n",
        &[],
        &["bc.yaml:3", "server.listne", "unknown field", "listen"],
    );
}

#[test]
fn wrong_type_names_key_and_line() {
    refused(
        &format!("{NO_AUTH}redis:\n  host: localhost\n  poolSize: many\n"),
        &[],
        &["bc.yaml:6", "redis.poolSize"],
    );
}

#[test]
fn database_out_of_range_names_key_and_line() {
    refused(
        &format!("{NO_AUTH}backend: redis\ncache:\n  redis:\n    database: 16\n"),
        &[],
        &["bc.yaml:7", "cache.redis.database", "expected 0 to 15"],
    );
}

#[test]
fn pool_size_zero_is_refused() {
    refused(
        &format!("{NO_AUTH}redis:\n  poolSize: 0\n"),
        &[],
        &["bc.yaml:5", "redis.poolSize", "nonzero"],
    );
}

#[test]
fn duration_with_words_is_refused_with_the_expected_form() {
    refused(
        &format!("{NO_AUTH}redis:\n  dialTimeout: 5 seconds\n"),
        &[],
        &["bc.yaml:5", "redis.dialTimeout", "`5 seconds`", "5s"],
    );
}

#[test]
fn missing_secret_file_names_key_and_file() {
    refused(
        &format!(
            "{NO_AUTH}backend: redis\nredis:\n  password:\n    valueFromFile: /nonexistent/redis-pw\n"
        ),
        &[],
        &["bc.yaml:6", "redis.password", "/nonexistent/redis-pw"],
    );
}

#[test]
fn secret_from_unset_variable_names_key_and_variable() {
    refused(
        &format!(
            "{NO_AUTH}backend: redis\nredis:\n  password:\n    valueFromEnv: BC_TEST_UNSET_PASSWORD\n"
        ),
        &[],
        &["redis.password", "BC_TEST_UNSET_PASSWORD"],
    );
}

#[test]
fn unreadable_tls_file_names_key() {
    // A directory cannot be read as a file, even by root.
    let dir = tempfile::tempdir().unwrap();
    refused(
        &format!(
            "{NO_AUTH}backend: redis\nredis:\n  tls:\n    enabled: true\n    caFile: {}\n",
            dir.path().display()
        ),
        &[],
        &["bc.yaml:8", "redis.tls.caFile", "cannot read"],
    );
}

#[test]
fn redis_timeouts_that_cannot_work_are_refused() {
    refused(
        &format!("{NO_AUTH}backend: redis\nredis:\n  readTimeout: 0s\n"),
        &[],
        &["redis.readTimeout", "above 0s"],
    );
    refused(
        &format!(
            "{NO_AUTH}backend: redis\nredis:\n  readTimeout: 3s\n  writeTimeout: 3s\n  callTimeout: 5s\n"
        ),
        &[],
        &["redis.callTimeout", "5s", "writeTimeout + readTimeout = 6s"],
    );
    refused(
        &format!("{NO_AUTH}backend: redis\nevents:\n  redis:\n    callTimeout: 1s\n"),
        &[],
        &["events.redis.callTimeout", "1s"],
    );
    refused(
        &format!("{NO_AUTH}memory:\n  maxBytes: 1000\n"),
        &[],
        &["memory.maxBytes", "1000", "at least 1048576"],
    );
    refused(
        &format!("{NO_AUTH}backend: redis\nredis:\n  maxInFlight: 0\n"),
        &[],
        &["redis.maxInFlight", "nonzero"],
    );
}

#[test]
fn sentinel_mode_needs_nodes() {
    refused(
        &format!(
            "{NO_AUTH}backend: redis\nredis:\n  mode: sentinel\n  sentinel:\n    masterName: m\n"
        ),
        &[],
        &["redis.sentinel.nodes", "host:port"],
    );
}

#[test]
fn auth_without_tokens_is_refused() {
    refused(
        "backend: memory\n",
        &[],
        &["server.auth.tokens", "--no-auth"],
    );
}

#[test]
fn auth_disabled_on_a_public_address_is_refused() {
    refused(
        "server:\n  listen: 0.0.0.0:8080\n  auth:\n    enabled: false\n",
        &[],
        &["bc.yaml:4", "server.auth.enabled", "0.0.0.0:8080"],
    );
}

#[test]
fn environment_overrides_are_applied_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "bc.yaml",
        &format!("{NO_AUTH}redis:\n  poolSize: 5\n"),
    );
    let path = file.to_str().unwrap();

    let out = run(
        &["config", "print", "--config", path],
        &[
            ("BLINKCHAMBER_REDIS__POOL_SIZE", "33"),
            ("BLINKCHAMBER_CACHE__REDIS__DATABASE", "4"),
        ],
    );
    let (ok, text) = outcome(&out);
    assert!(ok, "{text}");
    assert!(text.contains("poolSize: 33"), "{text}");
    assert!(text.contains("database: 4"), "{text}");

    let (ok, text) = outcome(&run(
        &["config", "check", path],
        &[("BLINKCHAMBER_REDIS__POOL_SIZE", "lots")],
    ));
    assert!(!ok, "{text}");
    assert!(text.contains("BLINKCHAMBER_REDIS__POOLSIZE"), "{text}");
    assert!(text.contains("redis.poolSize"), "{text}");

    let (ok, text) = outcome(&run(
        &["config", "check", path],
        &[("BLINKCHAMBER_REDIS__PORTT", "1")],
    ));
    assert!(!ok, "{text}");
    assert!(text.contains("redis.portt"), "{text}");
}

#[test]
fn print_redacts_every_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "bc.yaml",
        &format!(
            "{NO_AUTH}backend: redis\nredis:\n  password:\n    value: {SECRET}\n  sentinel:\n    password:\n      valueFromEnv: BC_TEST_SENTINEL_PW\n"
        ),
    );
    let out = run(
        &["config", "print", "--config", file.to_str().unwrap()],
        &[
            ("BC_TEST_SENTINEL_PW", SECRET),
            ("BLINKCHAMBER_EVENTS__REDIS__PASSWORD__VALUE", SECRET),
        ],
    );
    let (ok, text) = outcome(&out);
    assert!(ok, "{text}");
    assert!(!text.contains(SECRET), "secret printed:\n{text}");
    assert!(text.matches("<redacted>").count() >= 2, "{text}");
    assert!(text.contains("valueFromEnv: BC_TEST_SENTINEL_PW"), "{text}");
}

#[test]
fn a_secret_in_the_wrong_place_is_not_repeated_in_the_error() {
    // A plain string where `{value: …}` belongs, in the file and in the environment.
    refused(
        &format!("{NO_AUTH}redis:\n  password: {SECRET}\n"),
        &[],
        &["bc.yaml:5", "redis.password"],
    );
    refused(
        NO_AUTH,
        &[("BLINKCHAMBER_REDIS__PASSWORD", SECRET)],
        &["BLINKCHAMBER_REDIS__PASSWORD", "expected"],
    );
}

#[test]
fn a_bad_key_next_to_a_secret_does_not_print_the_secret() {
    refused(
        &format!("{NO_AUTH}redis:\n  password:\n    value: {SECRET}\n    vaule: x\n"),
        &[],
        &["redis.password", "vaule"],
    );
}

#[test]
fn algorithms_may_be_written_in_snake_case_too() {
    let yaml = format!(
        "{NO_AUTH}rateLimit:\n  rules:\n    - name: a\n      descriptor: [ip]\n      limit: 5\n      period: 1m\n      algorithm: fixed_window\n    - name: b\n      descriptor: [user, route]\n      limit: 5\n      period: 1d\n      algorithm: slidingWindow\n"
    );
    let (ok, text) = check(&yaml, &[]);
    assert!(ok, "{text}");
    refused(
        &yaml.replace("fixed_window", "fixed-window"),
        &[],
        &["rateLimit.rules[0].algorithm", "fixedWindow"],
    );
}

#[test]
fn rate_limit_rules_are_checked() {
    let rules = |extra: &str| {
        format!(
            "{NO_AUTH}rateLimit:\n  rules:\n    - name: login:v2\n      descriptor: [ip]\n      limit: 5\n      period: 1m\n{extra}"
        )
    };
    refused(&rules(""), &[], &["rateLimit.rules[0].name", "`:`"]);
    refused(
        &format!("{NO_AUTH}rateLimit:\n  api:\n    perIp: nope\n"),
        &[],
        &["rateLimit.api.perIp", "`nope`"],
    );
    refused(
        &format!(
            "{NO_AUTH}rateLimit:\n  rules:\n    - name: a\n      descriptor: [ip]\n      limit: 5\n      period: 1m\n      algorithm: fixedWindow\n      burst: 2\n"
        ),
        &[],
        &["rateLimit.rules[0].burst", "gcra"],
    );
    refused(
        &format!(
            "{NO_AUTH}rateLimit:\n  rules:\n    - name: a\n      descriptor: [ip]\n      limit: 5\n      period: 1 minute\n"
        ),
        &[],
        &["period", "1 minute"],
    );
}

#[test]
fn a_soft_loader_timeout_past_the_hard_one_is_refused() {
    refused(
        &format!("{NO_AUTH}cache:\n  loaderTimeout: 2s\n  loaderSoftTimeout: 5s\n"),
        &[],
        &[
            "cache.loaderSoftTimeout",
            "shorter than cache.loaderTimeout (2s)",
        ],
    );
}

#[test]
fn event_routing_and_zitadel_settings_are_checked() {
    refused(
        &format!(
            "{NO_AUTH}events:\n  routing:\n    - match: auth.*\n      priority: high\n    - match: \"*.viewed\"\n      priority: urgent\n"
        ),
        &[],
        &[
            "bc.yaml:9",
            "events.routing[1].priority",
            "`urgent`",
            "high",
        ],
    );
    refused(
        &format!(
            "{NO_AUTH}events:\n  zitadel:\n    typeMap:\n      user.human.added: user.created\n      user.removed: user.gone\n"
        ),
        &[],
        &[
            "bc.yaml:8",
            "events.zitadel.typeMap.\"user.removed\"",
            "`user.gone` is not an accepted event type",
        ],
    );
    refused(
        &format!("{NO_AUTH}events:\n  queues:\n    normal_priority: zitadel:events:high\n"),
        &[],
        &[
            "bc.yaml:6",
            "events.queues.normal_priority",
            "also events.queues.high_priority",
        ],
    );
    let (ok, text) = check(
        &format!(
            "{NO_AUTH}events:\n  zitadel:\n    typeMap:\n      user.human.added: user.created\n      \"session.*\": auth.logout\n"
        ),
        &[],
    );
    assert!(ok, "{text}");
}

#[test]
fn print_redacts_the_zitadel_signing_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "bc.yaml",
        &format!("{NO_AUTH}events:\n  zitadel:\n    signingKey:\n      value: {SECRET}\n"),
    );
    let (ok, text) = outcome(&run(
        &["config", "print", "--config", file.to_str().unwrap()],
        &[],
    ));
    assert!(ok, "{text}");
    assert!(!text.contains(SECRET), "secret printed:\n{text}");
    assert!(text.contains("value: <redacted>"), "{text}");
    assert!(text.contains("user.human.added: user.created"), "{text}");
}
