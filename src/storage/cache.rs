//! [`RecordCache`]: the records every authenticated request reads, kept in memory: users
//! by API-key digest and by id, and instances by id.
//!
//! [`SwitchableStorage`](super::switchable::SwitchableStorage) fills it on reads and
//! empties the entries a write touches once that write is committed and before it
//! returns, so a change is in force for the very next request: a regenerated key, a
//! deactivated or deleted user. A read that raced a write cannot put
//! the old record back: every removal moves a generation counter, and a read stores what
//! it found only when the counter has not moved since it began.
//!
//! Entries also expire after [`TTL`]: a change written by another process sharing the
//! database (MongoDB between machines) is in force here within that time. Instances are
//! kept only while the database is this process's alone (see `switchable.rs`).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use wagate_actors::domain::{Instance, User};

/// Entries of one kind past which that kind starts over (a bound, not a tuning knob: a
/// gateway has far fewer users, and a node rarely serves more instances).
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
    instances_by_id: HashMap<String, Entry<Instance>>,
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

    pub fn instance_by_id(&self, id: &str) -> Option<Instance> {
        self.maps().instances_by_id.get(id).and_then(Entry::fresh)
    }

    /// Keeps an instance read from storage, unless something was removed since `seen`.
    pub fn keep_instance(&self, seen: Seen, instance: &Instance) {
        let mut maps = self.maps();
        if maps.generation != seen.0 {
            return;
        }
        if maps.instances_by_id.len() >= CAPACITY {
            maps.instances_by_id.clear();
        }
        maps.instances_by_id
            .insert(instance.id.clone(), Entry::new(instance));
    }

    /// Drops the instance `id`.
    pub fn forget_instance(&self, id: &str) {
        let mut maps = self.maps();
        maps.generation += 1;
        maps.instances_by_id.remove(id);
    }

    /// Drops every instance of the user `user_id`.
    pub fn forget_instances_of(&self, user_id: &str) {
        let mut maps = self.maps();
        maps.generation += 1;
        maps.instances_by_id
            .retain(|_, i| i.value.user_id != user_id);
    }

    /// Drops everything (an import, a clear, a switch of provider).
    pub fn clear(&self) {
        let mut maps = self.maps();
        maps.generation += 1;
        maps.users_by_key.clear();
        maps.users_by_id.clear();
        maps.instances_by_id.clear();
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use wagate_actors::domain::{EngineKind, Role};

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

    #[test]
    fn an_instance_read_that_raced_a_change_is_not_kept() {
        let cache = RecordCache::default();
        let instance = Instance::new("i1", "u1", "one", EngineKind::Sandbox, Utc::now());
        let before = cache.seen();
        cache.forget_instance("i1");
        cache.keep_instance(before, &instance);
        assert!(cache.instance_by_id("i1").is_none());
        cache.keep_instance(cache.seen(), &instance);
        assert_eq!(
            cache.instance_by_id("i1").map(|i| i.name).as_deref(),
            Some("one")
        );
        cache.forget_instance("i1");
        assert!(cache.instance_by_id("i1").is_none());
    }

    #[test]
    fn forgetting_a_users_instances_keeps_the_others() {
        let cache = RecordCache::default();
        for (id, user) in [("i1", "u1"), ("i2", "u1"), ("i3", "u2")] {
            let instance = Instance::new(id, user, id, EngineKind::Sandbox, Utc::now());
            cache.keep_instance(cache.seen(), &instance);
        }
        cache.forget_instances_of("u1");
        assert!(cache.instance_by_id("i1").is_none());
        assert!(cache.instance_by_id("i2").is_none());
        assert!(cache.instance_by_id("i3").is_some());
    }
}
