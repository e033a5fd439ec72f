//! Every capability's keys live under its own prefix (or, for the event queues, its own
//! key names). Two prefixes in the same Redis database where one starts with the other
//! would let one capability reach the other's keys: the cache routes could read,
//! overwrite or clear sessions, locks or tokens. Such a config is refused at start-up.

use super::Config;

/// The first pair of capabilities whose keys overlap: the key to change and why.
pub(super) fn check(config: &Config) -> Result<(), (String, String)> {
    let default_db = config.redis.database.get();
    let cache_db = config.cache_redis().database.get();
    let events_db = config.events_redis().database.get();
    let q = &config.events.queues;
    let mut spaces: Vec<(&str, &str, i64)> = vec![
        ("cache.keyPrefix", &config.cache.key_prefix, cache_db),
        (
            "sessions.keyPrefix",
            &config.sessions.key_prefix,
            default_db,
        ),
        ("locks.keyPrefix", &config.locks.key_prefix, default_db),
        (
            "rateLimit.keyPrefix",
            &config.rate_limit.key_prefix,
            default_db,
        ),
        // Cached introspections live in the cache's database.
        (
            "tokens.introspection.keyPrefix",
            &config.tokens.introspection.key_prefix,
            cache_db,
        ),
    ];
    if config.events.enabled {
        spaces.extend([
            (
                "events.queues.state_prefix",
                q.state_prefix.as_str(),
                events_db,
            ),
            (
                "events.queues.high_priority",
                q.high_priority.as_str(),
                events_db,
            ),
            (
                "events.queues.normal_priority",
                q.normal_priority.as_str(),
                events_db,
            ),
            (
                "events.queues.low_priority",
                q.low_priority.as_str(),
                events_db,
            ),
            (
                "events.queues.dead_letter",
                q.dead_letter.as_str(),
                events_db,
            ),
        ]);
    }
    for (key, prefix, _) in &spaces[..5] {
        if prefix.is_empty() {
            return Err(((*key).into(), "must not be empty: every key of the capability would share the database with every other".into()));
        }
    }
    for (i, (key, prefix, db)) in spaces.iter().enumerate() {
        for (other, other_prefix, other_db) in &spaces[..i] {
            // Queue names of one capability may share a stem (`zitadel:events:high` and
            // `zitadel:events:state:`); only different capabilities must be disjoint.
            let same_capability = key.starts_with("events.") && other.starts_with("events.");
            if db == other_db
                && !same_capability
                && (prefix.starts_with(*other_prefix) || other_prefix.starts_with(*prefix))
            {
                return Err((
                    (*key).into(),
                    format!(
                        "`{prefix}` overlaps {other} (`{other_prefix}`) in Redis database \
                         {db}: one capability could read and overwrite the other's keys; give \
                         each its own prefix or database"
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_do_not_overlap() {
        check(&Config::default()).unwrap();
    }

    #[test]
    fn an_empty_or_overlapping_cache_prefix_is_refused() {
        let mut config = Config::default();
        config.cache.key_prefix = String::new();
        assert_eq!(check(&config).unwrap_err().0, "cache.keyPrefix");
        config.cache.key_prefix = "blinkchamber:".into();
        let (key, message) = check(&config).unwrap_err();
        assert_eq!(key, "sessions.keyPrefix");
        assert!(message.contains("cache.keyPrefix"), "{message}");
        // In another database it cannot reach them (the token cache moves along with the
        // cache, so it needs a prefix of its own there).
        config.cache.redis.database = Some(crate::config::DbIndex::new(2).unwrap());
        config.tokens.introspection.key_prefix = "tokens:".into();
        check(&config).unwrap();
    }

    #[test]
    fn the_token_cache_is_checked_in_the_cache_database() {
        let mut config = Config::default();
        config.cache.redis.database = Some(crate::config::DbIndex::new(3).unwrap());
        config.tokens.introspection.key_prefix = config.cache.key_prefix.clone() + "tokens:";
        let (key, message) = check(&config).unwrap_err();
        assert_eq!(key, "tokens.introspection.keyPrefix");
        assert!(message.contains("cache.keyPrefix") && message.contains("database 3"));
        // Beside the sessions' prefix it is fine: those live in database 0.
        config.tokens.introspection.key_prefix = config.sessions.key_prefix.clone() + "t:";
        check(&config).unwrap();
    }
}
