//! Dead letters by event id: list, show, replay and delete, shared by the HTTP routes
//! under `/v1/events/dead-letter` and `blinkchamber events dead-letter`.
//!
//! The dead-letter list holds stored events (each with `lasterror`, `deadat` and its
//! `attempt` count); an id is looked up among the oldest [`SCAN_LIMIT`] entries. Replay
//! keeps the event (id, type, data, extensions) and resets its attempts, routing it again
//! by type.

use super::envelope::{Event, decode, encode};
use super::queues::{QueueError, Queues};
use super::routing::Router;

/// How many dead letters an id lookup reads, oldest first.
pub const SCAN_LIMIT: usize = 10_000;

/// One entry of the dead-letter list as JSON: the event, or `{"unreadable": reason}`.
pub fn entry_json(stored: &[u8]) -> serde_json::Value {
    match decode(stored) {
        Ok(e) => serde_json::to_value(&e).unwrap_or_default(),
        Err(e) => serde_json::json!({ "unreadable": e.to_string() }),
    }
}

impl Queues {
    /// Up to `limit` dead letters, oldest first, as JSON.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<serde_json::Value>, QueueError> {
        let stored = self.peek(None, limit).await?;
        Ok(stored.iter().map(|s| entry_json(s)).collect())
    }

    /// The dead letter with event id `id`: its stored bytes and the event.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn dead_letter(&self, id: &str) -> Result<Option<(Vec<u8>, Event)>, QueueError> {
        let stored = self.peek(None, SCAN_LIMIT).await?;
        Ok(stored
            .into_iter()
            .find_map(|s| decode(&s).ok().filter(|e| e.id == id).map(|e| (s, e))))
    }

    /// Puts the dead letter `id` back in the queue `router` picks, with its attempts
    /// reset and `lasterror` / `deadat` removed; whether it was there.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn replay_dead_letter(
        &self,
        id: &str,
        router: &Router,
        compress: bool,
    ) -> Result<bool, QueueError> {
        match self.dead_letter(id).await? {
            Some((stored, event)) => self.revive(&stored, event, router, compress).await,
            None => Ok(false),
        }
    }

    async fn revive(
        &self,
        stored: &[u8],
        mut event: Event,
        router: &Router,
        compress: bool,
    ) -> Result<bool, QueueError> {
        event.attempt = 0;
        event.extensions.remove("lasterror");
        event.extensions.remove("deadat");
        let priority = router.priority(&event);
        self.replay(stored, priority, &encode(&event, compress))
            .await
    }

    /// Replays every readable dead letter (up to [`SCAN_LIMIT`]); how many went back.
    ///
    /// # Errors
    /// Redis failures (the ones replayed before stay replayed).
    pub async fn replay_all_dead_letters(
        &self,
        router: &Router,
        compress: bool,
    ) -> Result<u64, QueueError> {
        let mut replayed = 0;
        for stored in self.peek(None, SCAN_LIMIT).await? {
            let Ok(event) = decode(&stored) else {
                continue;
            };
            if self.revive(&stored, event, router, compress).await? {
                replayed += 1;
            }
        }
        Ok(replayed)
    }

    /// Deletes the dead letter `id`; whether it was there.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn delete_dead_letter(&self, id: &str) -> Result<bool, QueueError> {
        match self.dead_letter(id).await? {
            Some((stored, _)) => self.remove_dead(&stored).await,
            None => Ok(false),
        }
    }
}
