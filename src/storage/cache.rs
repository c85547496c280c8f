//! [`RecordCache`]: the record every authenticated request reads, kept in memory: users
//! by API-key digest and by id.
//!
//! [`SwitchableStorage`](super::switchable::SwitchableStorage) fills it on reads and
//! empties the entries a write touches once that write is committed and before it
//! returns, so a change is in force for the very next request: a regenerated key, a
//! deactivated or deleted user. A read that raced a write cannot put
//! the old record back: every removal moves a generation counter, and a read stores what
//! it found only when the counter has not moved since it began.
//!
//! Entries also expire after [`TTL`]: a change written by another process sharing the
//! database (MongoDB between machines) is in force here within that time.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use wagate_actors::domain::User;

/// Entries of one kind past which the cache starts over (a bound, not a tuning knob: a
/// gateway has far fewer users).
const CAPACITY: usize = 10_000;
/// How long an entry is trusted without a write seen here.
pub const TTL: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct RecordCache {
    maps: Mutex<Maps>,
}

#[derive(Default)]
struct Maps {
    /// Moved by every removal.
    generation: u64,
    users_by_key: HashMap<String, Entry<User>>,
    users_by_id: HashMap<String, Entry<User>>,
}

struct Entry<T> {
    value: T,
    kept_at: Instant,
}

impl<T: Clone> Entry<T> {
    fn new(value: &T) -> Self {
        Entry {
            value: value.clone(),
            kept_at: Instant::now(),
        }
    }

    fn fresh(&self) -> Option<T> {
        (self.kept_at.elapsed() < TTL).then(|| self.value.clone())
    }
}

/// Where the cache stood when a read began; see [`RecordCache::keep_user`].
#[derive(Debug, Clone, Copy)]
pub struct Seen(u64);

impl RecordCache {
    fn maps(&self) -> MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Taken before reading storage, handed to `keep_*` with what was read.
    pub fn seen(&self) -> Seen {
        Seen(self.maps().generation)
    }

    pub fn user_by_key(&self, hash: &str) -> Option<User> {
        self.maps().users_by_key.get(hash).and_then(Entry::fresh)
    }

    pub fn user_by_id(&self, id: &str) -> Option<User> {
        self.maps().users_by_id.get(id).and_then(Entry::fresh)
    }

    /// Keeps a user read from storage, unless something was removed since `seen`.
    pub fn keep_user(&self, seen: Seen, user: &User) {
        let mut maps = self.maps();
        if maps.generation != seen.0 {
            return;
        }
        if maps.users_by_id.len() >= CAPACITY {
            maps.users_by_id.clear();
            maps.users_by_key.clear();
        }
        maps.users_by_key
            .insert(user.api_key_hash.clone(), Entry::new(user));
        maps.users_by_id.insert(user.id.clone(), Entry::new(user));
    }

    /// Drops the user `id`, under every API key it had.
    pub fn forget_user(&self, id: &str) {
        let mut maps = self.maps();
        maps.generation += 1;
        maps.users_by_id.remove(id);
        maps.users_by_key.retain(|_, u| u.value.id != id);
    }

    /// Drops everything (an import, a clear, a switch of provider).
    pub fn clear(&self) {
        let mut maps = self.maps();
        maps.generation += 1;
        maps.users_by_key.clear();
        maps.users_by_id.clear();
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use wagate_actors::domain::Role;

    use super::*;

    fn user(id: &str, hash: &str) -> User {
        let now = Utc::now();
        User {
            id: id.into(),
            email: format!("{id}@example.com"),
            password_hash: String::new(),
            first_name: String::new(),
            last_name: String::new(),
            role: Role::User,
            owner_id: None,
            active: true,
            api_key_hash: hash.into(),
            api_key_sealed: String::new(),
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn a_read_that_raced_a_removal_is_not_kept() {
        let cache = RecordCache::default();
        let before = cache.seen();
        cache.forget_user("u1");
        cache.keep_user(before, &user("u1", "old"));
        assert!(cache.user_by_key("old").is_none());
        cache.keep_user(cache.seen(), &user("u1", "new"));
        assert_eq!(
            cache.user_by_key("new").map(|u| u.id).as_deref(),
            Some("u1")
        );
    }

    #[test]
    fn forgetting_a_user_drops_it_under_every_key() {
        let cache = RecordCache::default();
        cache.keep_user(cache.seen(), &user("u1", "k1"));
        cache.keep_user(cache.seen(), &user("u2", "k2"));
        cache.forget_user("u1");
        assert!(cache.user_by_key("k1").is_none());
        assert!(cache.user_by_id("u1").is_none());
        assert!(cache.user_by_key("k2").is_some());
    }
}
