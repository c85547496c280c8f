//! [`DeskFeed`]: the desk's live feed, with a memory so a client that reconnects misses
//! nothing.
//!
//! Every event gets an id, `<run>-<seq>`: `run` names this start of the server (its
//! start time in milliseconds), `seq` counts the run's events from 1. The last
//! `retention` events are kept in memory; a subscriber that names the last id it saw
//! gets every later kept event before the live ones, in order and without duplicates.
//! An id of another run, or one older than what is kept, cannot be resumed: the
//! subscription says so (`missed`), and the client reloads from storage.
//!
//! One std `Mutex` orders publishing and subscribing: an event is numbered, kept and
//! broadcast under it, and a subscriber copies the backlog and subscribes under it, so
//! no event falls between the backlog and the live ones. It is never held across an
//! await.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;

use super::{EVENT_CAPACITY, WabaEvent};

/// The id of a feed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventId {
    run: u64,
    seq: u64,
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.run, self.seq)
    }
}

impl EventId {
    /// Whether this event came after `other` (of the same run).
    pub fn is_after(&self, other: &EventId) -> bool {
        self.run == other.run && self.seq > other.seq
    }

    /// Parses `<run>-<seq>`; None for anything else.
    pub fn parse(raw: &str) -> Option<EventId> {
        let (run, seq) = raw.trim().split_once('-')?;
        Some(EventId {
            run: run.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

/// One numbered event.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedEntry {
    pub id: EventId,
    pub event: WabaEvent,
}

/// What a subscriber gets: the kept events after the id it named, then the live ones.
pub struct Subscription {
    /// The named id cannot be resumed (another run, or older than what is kept): events
    /// may have been missed.
    pub missed: bool,
    /// The kept events after the named id, oldest first.
    pub backlog: Vec<FeedEntry>,
    /// The id of the newest event published before the live ones (`seq` 0: none yet):
    /// where a subscriber that falls behind catches up from.
    pub position: EventId,
    /// Every event published after the backlog.
    pub live: broadcast::Receiver<FeedEntry>,
}

struct Ring {
    next_seq: u64,
    kept: VecDeque<FeedEntry>,
}

/// The feed. Cheap to clone.
#[derive(Clone)]
pub struct DeskFeed {
    run: u64,
    retention: usize,
    ring: Arc<Mutex<Ring>>,
    live: broadcast::Sender<FeedEntry>,
}

impl DeskFeed {
    /// A feed that keeps the last `retention` events (at least one).
    pub fn new(retention: usize) -> DeskFeed {
        let run = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        let (live, _) = broadcast::channel(EVENT_CAPACITY);
        DeskFeed {
            run,
            retention: retention.max(1),
            ring: Arc::new(Mutex::new(Ring {
                next_seq: 1,
                kept: VecDeque::new(),
            })),
            live,
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Numbers `event`, keeps it and tells the live subscribers.
    pub fn publish(&self, event: WabaEvent) {
        let mut ring = self.ring();
        let entry = FeedEntry {
            id: EventId {
                run: self.run,
                seq: ring.next_seq,
            },
            event,
        };
        ring.next_seq += 1;
        if ring.kept.len() == self.retention {
            ring.kept.pop_front();
        }
        ring.kept.push_back(entry.clone());
        // No subscriber is fine: storage is the record.
        let _ = self.live.send(entry);
    }

    /// Subscribes after `last_seen` (None: only what comes from now on).
    pub fn subscribe(&self, last_seen: Option<EventId>) -> Subscription {
        let ring = self.ring();
        let live = self.live.subscribe();
        let (missed, backlog) = match last_seen {
            None => (false, Vec::new()),
            Some(id) => match self.kept_after(&ring, id) {
                Some(backlog) => (false, backlog),
                None => (true, Vec::new()),
            },
        };
        Subscription {
            missed,
            backlog,
            position: EventId {
                run: self.run,
                seq: ring.next_seq - 1,
            },
            live,
        }
    }

    /// The kept events after `id`, oldest first; None when events after it are no longer
    /// kept (or `id` is of another run, or of the future).
    pub fn since(&self, id: EventId) -> Option<Vec<FeedEntry>> {
        self.kept_after(&self.ring(), id)
    }

    fn kept_after(&self, ring: &Ring, id: EventId) -> Option<Vec<FeedEntry>> {
        if id.run != self.run || id.seq >= ring.next_seq {
            return None;
        }
        let oldest = ring.kept.front().map_or(ring.next_seq, |e| e.id.seq);
        // Everything after `id` must still be kept: the next one is `id.seq + 1`.
        if id.seq + 1 < oldest {
            return None;
        }
        Some(
            ring.kept
                .iter()
                .filter(|e| e.id.seq > id.seq)
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::domain::waba::WabaChat;

    fn assignment(chat: i64) -> WabaEvent {
        WabaEvent::Assignment(WabaChat {
            id: chat,
            owner_id: "owner".into(),
            customer_phone: "1".into(),
            customer_name: None,
            last_customer_message_at: None,
            last_message_at: None,
            assigned_operator_id: None,
            created_at: Utc::now(),
        })
    }

    fn chats(entries: &[FeedEntry]) -> Vec<i64> {
        entries.iter().map(|e| e.event.chat_id()).collect()
    }

    #[test]
    fn ids_round_trip() {
        let id = EventId { run: 17, seq: 4 };
        assert_eq!(EventId::parse(&id.to_string()), Some(id));
        for bad in ["", "17", "a-1", "17-", "-4", "17-4-1"] {
            assert_eq!(EventId::parse(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn a_subscriber_resumes_after_the_last_id_it_saw() {
        let feed = DeskFeed::new(3);
        let mut first = feed.subscribe(None);
        for chat in 1..=2 {
            feed.publish(assignment(chat));
        }
        let seen = first.live.recv().await.expect("event 1");
        assert_eq!(seen.event.chat_id(), 1);

        // Reconnecting after event 1: event 2 from the backlog, then the live ones.
        let mut again = feed.subscribe(Some(seen.id));
        assert!(!again.missed);
        assert_eq!(again.position.seq, 2);
        assert_eq!(chats(&again.backlog), [2]);
        feed.publish(assignment(3));
        assert_eq!(again.live.recv().await.expect("live").event.chat_id(), 3);

        // Up to date: nothing to catch up on.
        let latest = again.backlog[0].id;
        let fresh = feed.subscribe(Some(EventId {
            seq: latest.seq + 1,
            ..latest
        }));
        assert!(!fresh.missed && fresh.backlog.is_empty());

        // Two more: event 1 is no longer kept, so after it something is missing; after
        // event 2 nothing is.
        feed.publish(assignment(4));
        feed.publish(assignment(5));
        assert!(feed.subscribe(Some(seen.id)).missed);
        assert_eq!(chats(&feed.subscribe(Some(latest)).backlog), [3, 4, 5]);
        // Another run's id, or one from the future, cannot be resumed.
        assert!(
            feed.subscribe(Some(EventId {
                run: seen.id.run + 1,
                seq: 1
            }))
            .missed
        );
        assert!(feed.subscribe(Some(EventId { seq: 99, ..seen.id })).missed);
        assert_eq!(feed.since(latest).map(|e| chats(&e)), Some(vec![3, 4, 5]));
    }
}
