//! Dead letters by event id: list, show, replay and delete, shared by the HTTP routes
//! under `/v1/events/dead-letter` and `blinkchamber events dead-letter`.
//!
//! The dead-letter list holds stored events (each with `lasterror`, `deadat` and its
//! `attempt` count), newest first; an index by event id (see the Redis store's layout)
//! finds any one of them without reading the list. Replay keeps the event (id, type,
//! data, extensions) and resets its attempts, routing it again by type; it removes the
//! dead letter and enqueues the event in one step.

use std::collections::HashSet;

use super::envelope::{Event, decode, encode};
use super::queues::{QueueError, Queues};
use super::routing::Router;

/// How many dead letters replay-all reads per round.
pub const REPLAY_CHUNK: usize = 500;

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
        let Some(stored) = self.dead_get(id).await? else {
            return Ok(None);
        };
        Ok(decode(&stored).ok().map(|e| (stored, e)))
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
        let id = event.id.clone();
        self.dead_remove(&id, stored, Some((priority, &encode(&event, compress))))
            .await
    }

    /// Replays every readable dead letter, oldest first, [`REPLAY_CHUNK`] at a time, until
    /// none is left that can be replayed; how many went back. Unreadable entries stay.
    ///
    /// # Errors
    /// Redis failures (the ones replayed before stay replayed).
    pub async fn replay_all_dead_letters(
        &self,
        router: &Router,
        compress: bool,
    ) -> Result<u64, QueueError> {
        let mut replayed = 0;
        // Entries that stay where they are (unreadable, or not replayable by id): read
        // past them. Each round either replays something or adds to this set, so it ends.
        let mut stays: HashSet<Vec<u8>> = HashSet::new();
        loop {
            let limit = stays.len() + REPLAY_CHUNK;
            let chunk = self.peek(None, limit).await?;
            let mut tried = false;
            let mut progressed = false;
            for stored in &chunk {
                if stays.contains(stored) {
                    continue;
                }
                let Ok(event) = decode(stored) else {
                    stays.insert(stored.clone());
                    continue;
                };
                tried = true;
                if self.revive(stored, event, router, compress).await? {
                    replayed += 1;
                    progressed = true;
                } else {
                    stays.insert(stored.clone());
                }
            }
            if !tried || (!progressed && chunk.len() < limit) {
                return Ok(replayed);
            }
        }
    }

    /// Deletes the dead letter `id`; whether it was there.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn delete_dead_letter(&self, id: &str) -> Result<bool, QueueError> {
        match self.dead_get(id).await? {
            Some(stored) => self.dead_remove(id, &stored, None).await,
            None => Ok(false),
        }
    }
}
