//! Dead letters by event id: list, show, replay and delete, shared by the HTTP routes
//! under `/v1/events/dead-letter` and `blinkchamber events dead-letter`.
//!
//! The dead-letter list holds stored events (each with `lasterror`, `deadat` and its
//! `attempt` count), newest first; an index by event id (see the Redis store's layout)
//! finds any one of them without reading the list. Replay keeps the event (id, type,
//! data, extensions) and resets its attempts, routing it again by type; it removes the
//! dead letter and enqueues the event in one step.

use super::envelope::{Event, decode, encode};
use super::queues::{QueueError, Queues};
use super::routing::Router;

/// How many dead letters bulk replay and delete read at once.
pub const REPLAY_CHUNK: usize = 500;

/// Passes of a bulk replay or delete over the list (see `remove_matching`).
pub const MAX_PASSES: usize = 5;

/// Most entries one page of a filtered listing looks at.
pub const SCAN_BUDGET: usize = 10_000;

/// Which dead letters a listing or a bulk operation applies to; the default matches all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    /// Only events of exactly this type.
    pub event_type: Option<String>,
    /// Only events whose `lasterror` contains this text (ignoring case).
    pub error_contains: Option<String>,
}

impl DeadLetterFilter {
    /// Whether it matches every entry.
    pub fn is_empty(&self) -> bool {
        self.event_type.is_none() && self.error_contains.is_none()
    }

    /// Whether `event` matches.
    pub fn matches(&self, event: &Event) -> bool {
        if self.event_type.as_ref().is_some_and(|t| *t != event.ty) {
            return false;
        }
        match &self.error_contains {
            None => true,
            Some(text) => event
                .extensions
                .get("lasterror")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|e| e.to_lowercase().contains(&text.to_lowercase())),
        }
    }
}

/// One page of [`Queues::dead_letter_page`].
#[derive(Debug)]
pub struct DeadLetterPage {
    /// The entries, as [`entry_json`] shows them.
    pub entries: Vec<serde_json::Value>,
    /// Where the next page starts, when more may follow.
    pub next: Option<usize>,
}

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

    /// Replays every readable dead letter, oldest first, until none is left that can be
    /// replayed; how many went back. Unreadable entries stay.
    ///
    /// # Errors
    /// Redis failures (the ones replayed before stay replayed).
    pub async fn replay_all_dead_letters(
        &self,
        router: &Router,
        compress: bool,
    ) -> Result<u64, QueueError> {
        self.replay_dead_letters(&DeadLetterFilter::default(), router, compress)
            .await
    }

    /// Replays the readable dead letters `filter` matches (see
    /// [`Queues::replay_all_dead_letters`]); how many went back.
    ///
    /// # Errors
    /// Redis failures (the ones replayed before stay replayed).
    pub async fn replay_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        router: &Router,
        compress: bool,
    ) -> Result<u64, QueueError> {
        self.remove_matching(filter, Some((router, compress))).await
    }

    /// Deletes the readable dead letters `filter` matches; how many. (Everything, unreadable
    /// entries included, is [`Queues::purge_dead`].)
    ///
    /// # Errors
    /// Redis failures (the ones deleted before stay deleted).
    pub async fn delete_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64, QueueError> {
        self.remove_matching(filter, None).await
    }

    /// Reads the list in chunks of [`REPLAY_CHUNK`], oldest first, and removes (replaying
    /// them with `replay`) the entries `filter` matches, each by id and only if it is still
    /// the entry read. Removing an entry moves others (the oldest fills the gap), so a pass
    /// can step over an entry: passes repeat until one removes nothing, at most
    /// [`MAX_PASSES`] times.
    async fn remove_matching(
        &self,
        filter: &DeadLetterFilter,
        replay: Option<(&Router, bool)>,
    ) -> Result<u64, QueueError> {
        let mut removed = 0;
        for _ in 0..MAX_PASSES {
            let mut removed_in_pass = 0;
            let mut skip = 0;
            loop {
                let chunk = self.peek_from(None, skip, REPLAY_CHUNK).await?;
                let mut removed_in_chunk = 0;
                for stored in &chunk {
                    let Ok(event) = decode(stored) else { continue };
                    if !filter.matches(&event) {
                        continue;
                    }
                    let done = match replay {
                        Some((router, compress)) => {
                            self.revive(stored, event, router, compress).await?
                        }
                        None => {
                            let id = event.id.clone();
                            self.dead_remove(&id, stored, None).await?
                        }
                    };
                    if done {
                        removed_in_chunk += 1;
                    }
                }
                removed_in_pass += removed_in_chunk;
                if chunk.len() < REPLAY_CHUNK {
                    break;
                }
                skip += chunk.len() - removed_in_chunk;
            }
            removed += removed_in_pass;
            if removed_in_pass == 0 {
                break;
            }
        }
        Ok(removed as u64)
    }

    /// A page of the dead letters `filter` matches, oldest first: up to `limit` of them,
    /// looking at no more than [`SCAN_BUDGET`] entries from position `offset` (counted in
    /// the whole list). `next` is the position to continue from when more may follow.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn dead_letter_page(
        &self,
        filter: &DeadLetterFilter,
        offset: usize,
        limit: usize,
    ) -> Result<DeadLetterPage, QueueError> {
        let mut entries = Vec::new();
        let mut position = offset;
        let chunk_size = if filter.is_empty() {
            limit.max(1)
        } else {
            REPLAY_CHUNK
        };
        while position - offset < SCAN_BUDGET {
            let want = chunk_size.min(SCAN_BUDGET - (position - offset));
            let chunk = self.peek_from(None, position, want).await?;
            let full = chunk.len() == want;
            for stored in &chunk {
                position += 1;
                let matched = match decode(stored) {
                    Ok(event) => filter.matches(&event),
                    Err(_) => filter.is_empty(),
                };
                if matched {
                    entries.push(entry_json(stored));
                    if entries.len() == limit {
                        let more = !self.peek_from(None, position, 1).await?.is_empty();
                        return Ok(DeadLetterPage {
                            entries,
                            next: more.then_some(position),
                        });
                    }
                }
            }
            if !full {
                return Ok(DeadLetterPage {
                    entries,
                    next: None,
                });
            }
        }
        Ok(DeadLetterPage {
            entries,
            next: Some(position),
        })
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
