//! [`SwitchableStorage`]: the one storage object the whole server shares, delegating to
//! the provider currently in use, which a live switch (`POST /api/db/switch`) replaces.
//!
//! Everything that stores (accounts, the actor runtime, the event hub, the webhook queue,
//! the statistics counter) holds a clone of one `Arc` taken at start, so the switch has to
//! happen behind that object rather than by handing out a new one.
//!
//! # Writes during a switch
//! Every write method holds the *write gate* shared for its duration; a switch takes it
//! exclusively while it copies the data and swaps the provider. So a write that arrives
//! during the copy waits (it is held, not refused) and then goes to the new provider; a
//! write already running when the switch starts finishes first and is part of the copy.
//! Reads never touch the gate: during the copy they keep being answered by the old
//! provider, whose data the copy does not change.
//!
//! A write loads the provider only after it holds the gate; loading it before would let
//! a write that waited through a switch land in the old provider and be lost.

use std::future::Future;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use thiserror::Error;
use wagate_actors::domain::waba::{
    AssignedFilter, SendFailure, WabaAccount, WabaChat, WabaChatSummary, WabaMedia, WabaMessage,
};
use wagate_actors::domain::{
    ActivityEntry, ActivityQuery, EventQuery, Instance, InstanceEvent, InstanceStatus, Page,
    StatusReport, User,
};
use wagate_actors::domain::{ChatSettings, Label};
use wagate_actors::domain::{
    ChatSummary, Contact, ContactQuery, HistoryQuery, Message, MessageStatus, Reaction,
};
use wagate_actors::domain::{Usage, UsageFilter, UsageKey};
use wagate_actors::store::StatsStore;
use wagate_actors::store::WabaStore;
use wagate_actors::store::{
    ActivityStore, Committed, DynStorage, EventStore, InstanceStore, Record, RecordCounts,
    RecordKind, Storage, StoreResult, TransferStore, UserStore,
};
use wagate_actors::store::{ChatStore, ContactStore, MessageStore};

use super::cache::{RecordCache, Seen};
use super::copy::{CopyError, copy_all};

/// Storage whose provider can be replaced while the server runs. See the module docs.
pub struct SwitchableStorage {
    /// The provider in use. A std lock rather than a tokio one or `arc-swap`: it is held
    /// only to clone the `Arc` out (never across an `.await`), so it costs an uncontended
    /// atomic per call, needs no extra dependency, and cannot deadlock with the gate.
    active: RwLock<DynStorage>,
    /// The write gate: shared by each write for its duration, exclusive during a switch.
    /// tokio's lock is fair (first come, first served), so once a switch waits for it,
    /// later writes queue behind the switch and a steady stream of writes cannot starve it.
    writes: Arc<tokio::sync::RwLock<()>>,
    /// One switch at a time: a second waits for the first, then sees its outcome.
    switching: tokio::sync::Mutex<()>,
    /// Told how long every call to the provider took (metrics); set once at start.
    observer: OnceLock<StorageObserver>,
    /// Users and instances as the request path reads them (cache.rs).
    cache: RecordCache,
}

/// Called with the method name and duration of every storage call.
pub type StorageObserver = Arc<dyn Fn(&'static str, Duration) + Send + Sync>;

/// Why a switch did not happen. In every case the old provider stays in use.
#[derive(Debug, Error)]
pub enum SwitchError {
    #[error("{0} is already the active database provider")]
    AlreadyActive(&'static str),
    #[error("copy failed: {0}")]
    Copy(#[from] CopyError),
    #[error("{0}")]
    Commit(String),
}

impl SwitchableStorage {
    pub fn new(initial: DynStorage) -> SwitchableStorage {
        SwitchableStorage {
            active: RwLock::new(initial),
            writes: Arc::new(tokio::sync::RwLock::new(())),
            switching: tokio::sync::Mutex::new(()),
            observer: OnceLock::new(),
            cache: RecordCache::default(),
        }
    }

    /// Reports the duration of every storage call from now on to `observe`. Only the
    /// first call takes effect.
    pub fn set_observer(&self, observe: StorageObserver) {
        if self.observer.set(observe).is_err() {
            tracing::warn!("the storage observer was already set");
        }
    }

    /// Times one call to the provider for the observer, if any.
    async fn timed<T>(&self, name: &'static str, call: impl Future<Output = T>) -> T {
        let Some(observe) = self.observer.get() else {
            return call.await;
        };
        let started = Instant::now();
        let out = call.await;
        observe(name, started.elapsed());
        out
    }

    /// A read through the request-path cache: `cached` when it has the record, else
    /// `read` from storage, whose record `keep` puts in the cache unless a removal
    /// happened since the read began (so a raced read never puts an old record back).
    async fn read_through<T, F, Fut>(
        &self,
        cached: Option<T>,
        read: F,
        keep: impl FnOnce(&RecordCache, Seen, &T),
    ) -> StoreResult<Option<T>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = StoreResult<Option<T>>>,
    {
        if cached.is_some() {
            return Ok(cached);
        }
        let seen = self.cache.seen();
        let found = read().await?;
        if let Some(record) = &found {
            keep(&self.cache, seen, record);
        }
        Ok(found)
    }

    /// Whether instances may be answered from the cache: only while the database is
    /// embedded (see the comment above `impl UserStore`).
    fn instances_cached(&self) -> bool {
        self.active().embedded()
    }

    /// The provider in use now.
    pub fn active(&self) -> DynStorage {
        self.active
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Copies everything into `target` while holding writes, runs `commit` (which records
    /// the choice; it runs before the swap, so a failure to record it leaves nothing
    /// half-done), then makes `target` the provider in use and releases the writes.
    /// Returns the number of records of each kind copied.
    ///
    /// Fails with `AlreadyActive` when `target` is the provider in use, with `Copy` when the
    /// copy or its count check fails, with `Commit` when `commit` fails; `target` is then
    /// closed and the old provider stays in use. The old provider is released after a
    /// success: reads still running on it finish, and it closes when the last one drops it.
    pub async fn switch_to(
        &self,
        target: DynStorage,
        commit: impl FnOnce() -> Result<(), String> + Send,
    ) -> Result<RecordCounts, SwitchError> {
        let _one_at_a_time = self.switching.lock().await;
        let source = self.active();
        if source.provider() == target.provider() {
            target.close().await;
            return Err(SwitchError::AlreadyActive(source.provider()));
        }
        let held = self.writes.write().await;
        tracing::info!(
            from = source.provider(),
            to = target.provider(),
            "switching the database provider: writes are held while the data is copied"
        );
        let outcome = match copy_all(source.as_ref(), target.as_ref()).await {
            Ok(copied) => commit().map(|()| copied).map_err(SwitchError::Commit),
            Err(e) => Err(SwitchError::Copy(e)),
        };
        match outcome {
            Ok(copied) => {
                *self.active.write().unwrap_or_else(PoisonError::into_inner) = target;
                self.cache.clear();
                drop(held);
                tracing::info!(
                    provider = source.provider(),
                    ?copied,
                    "database provider switched; writes resumed on the new provider"
                );
                Ok(copied)
            }
            Err(e) => {
                drop(held);
                tracing::warn!(error = %e, provider = source.provider(), "database switch failed; the provider is unchanged");
                target.close().await;
                Err(e)
            }
        }
    }
}

/// Implements a storage trait by forwarding every method to the active provider; `write`
/// methods hold the write gate while they run, `read` methods do not.
macro_rules! forward {
    // Methods written out in full may follow the list.
    ($trait:ident { $($mode:ident fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)* } $($own:tt)*) => {
        #[async_trait]
        impl $trait for SwitchableStorage {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    forward!(@$mode self, $name($($arg),*))
                }
            )*
            $($own)*
        }
    };
    (@read $self:ident, $name:ident($($arg:ident),*)) => {
        $self.timed(stringify!($name), $self.active().$name($($arg),*)).await
    };
    (@write $self:ident, $name:ident($($arg:ident),*)) => {{
        let _gate = $self.writes.read().await;
        $self.timed(stringify!($name), $self.active().$name($($arg),*)).await
    }};
}

// Users and instances go through the request-path cache (cache.rs): reads by key digest
// and id are kept, and every write empties what it touched once committed, before it
// returns (also when it failed: it may have committed before the failure was seen).
// Instances are cached only while the database is this process's alone
// (`Storage::embedded`: SQLite, memory): on MongoDB other nodes move an instance's owner
// and status, and a request for an instance whose database is down must fail at its
// lookup, fast, rather than reach the instance actor and wait there for a write that
// cannot happen.

#[async_trait]
impl UserStore for SwitchableStorage {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        forward!(@write self, create_user(user))
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        self.read_through(
            self.cache.user_by_id(id),
            || async move { forward!(@read self, user_by_id(id)) },
            RecordCache::keep_user,
        )
        .await
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        forward!(@read self, user_by_email(email))
    }

    async fn user_by_api_key_hash(&self, hash: &str) -> StoreResult<Option<User>> {
        self.read_through(
            self.cache.user_by_key(hash),
            || async move { forward!(@read self, user_by_api_key_hash(hash)) },
            RecordCache::keep_user,
        )
        .await
    }

    async fn list_users(&self, limit: u32, skip: u64) -> StoreResult<Page<User>> {
        forward!(@read self, list_users(limit, skip))
    }

    async fn update_user(&self, user: &User) -> StoreResult<bool> {
        let done = forward!(@write self, update_user(user));
        self.cache.forget_user(&user.id);
        done
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        let done = forward!(@write self, delete_user(id));
        self.cache.forget_user(id);
        self.cache.forget_instances_of(id);
        done
    }

    async fn count_admins(&self) -> StoreResult<u64> {
        forward!(@read self, count_admins())
    }
}

#[async_trait]
impl InstanceStore for SwitchableStorage {
    async fn create_instance(&self, instance: &Instance) -> StoreResult<()> {
        forward!(@write self, create_instance(instance))
    }

    async fn instance_by_id(&self, id: &str) -> StoreResult<Option<Instance>> {
        if !self.instances_cached() {
            return forward!(@read self, instance_by_id(id));
        }
        self.read_through(
            self.cache.instance_by_id(id),
            || async move { forward!(@read self, instance_by_id(id)) },
            RecordCache::keep_instance,
        )
        .await
    }

    async fn list_instances(&self, user_id: Option<&str>) -> StoreResult<Vec<Instance>> {
        forward!(@read self, list_instances(user_id))
    }

    async fn instance_ids(&self) -> StoreResult<Vec<String>> {
        forward!(@read self, instance_ids())
    }

    async fn update_instance(&self, instance: &Instance) -> StoreResult<bool> {
        let done = forward!(@write self, update_instance(instance));
        self.cache.forget_instance(&instance.id);
        done
    }

    async fn set_instance_status(
        &self,
        id: &str,
        status: InstanceStatus,
        phone: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let done = forward!(@write self, set_instance_status(id, status, phone, at));
        self.cache.forget_instance(id);
        done
    }

    async fn delete_instance(&self, id: &str) -> StoreResult<bool> {
        let done = forward!(@write self, delete_instance(id));
        self.cache.forget_instance(id);
        done
    }
}

forward!(ActivityStore {
    write fn append_activity(&self, entry: &ActivityEntry) -> StoreResult<()>;
    read fn list_activity(
        &self,
        instance_id: &str,
        query: &ActivityQuery
    ) -> StoreResult<Page<ActivityEntry>>;
});

forward!(EventStore {
    write fn append_event(&self, event: &InstanceEvent) -> StoreResult<()>;
    read fn list_events(
        &self,
        instance_id: &str,
        query: &EventQuery
    ) -> StoreResult<(Vec<InstanceEvent>, bool)>;
});

forward!(MessageStore {
    write fn insert_message(&self, message: &Message) -> StoreResult<()>;
    write fn record_message(
        &self,
        message: &Message,
        contact: Option<&Contact>,
        event: &InstanceEvent
    ) -> StoreResult<()>;
    read fn message_by_id(&self, instance_id: &str, message_id: &str) -> StoreResult<Option<Message>>;
    write fn set_message_reactions(
        &self,
        instance_id: &str,
        message_id: &str,
        reactions: &[Reaction],
        at: DateTime<Utc>
    ) -> StoreResult<bool>;
    write fn rewrite_message(&self, message: &Message, event: &InstanceEvent) -> StoreResult<bool>;
    write fn forget_message(
        &self,
        instance_id: &str,
        message_id: &str,
        event: &InstanceEvent
    ) -> StoreResult<bool>;
    write fn advance_message_status(
        &self,
        instance_id: &str,
        message_id: &str,
        status: MessageStatus,
        at: DateTime<Utc>,
        report: &StatusReport
    ) -> StoreResult<Option<InstanceEvent>>;
    read fn pending_sends(&self, instance_id: &str) -> StoreResult<Vec<String>>;
    write fn settle_pending_send(&self, message: &Message, event: &InstanceEvent) -> StoreResult<bool>;
    read fn chat_history(
        &self,
        instance_id: &str,
        remote_jid: &str,
        query: &HistoryQuery
    ) -> StoreResult<Page<Message>>;
    read fn list_chats(&self, instance_id: &str, limit: u32, skip: u64) -> StoreResult<Page<ChatSummary>>;
    write fn mark_chat_read(&self, instance_id: &str, remote_jid: &str) -> StoreResult<Vec<String>>;
}
    // The write holds the gate until it is committed, not only until it is queued: a
    // switch must copy it.
    async fn record_message_then(
        &self,
        message: &Message,
        contact: Option<&Contact>,
        event: &InstanceEvent,
        done: Committed,
    ) {
        let gate = self.writes.clone().read_owned().await;
        let done: Committed = Box::new(move |outcome| {
            drop(gate);
            done(outcome);
        });
        self.timed(
            "record_message_then",
            self.active()
                .record_message_then(message, contact, event, done),
        )
        .await
    }

    async fn advance_message_status_then(
        &self,
        instance_id: &str,
        message_id: &str,
        status: MessageStatus,
        at: DateTime<Utc>,
        report: &StatusReport,
        done: Committed<Option<InstanceEvent>>,
    ) {
        let gate = self.writes.clone().read_owned().await;
        let done: Committed<Option<InstanceEvent>> = Box::new(move |outcome| {
            drop(gate);
            done(outcome);
        });
        self.timed(
            "advance_message_status_then",
            self.active()
                .advance_message_status_then(instance_id, message_id, status, at, report, done),
        )
        .await
    }
);

forward!(ContactStore {
    write fn upsert_contact(&self, contact: &Contact) -> StoreResult<Contact>;
    read fn list_contacts(&self, instance_id: &str, query: &ContactQuery) -> StoreResult<Page<Contact>>;
});

forward!(ChatStore {
    read fn chat_settings(&self, instance_id: &str, remote_jid: &str) -> StoreResult<Option<ChatSettings>>;
    read fn chat_settings_of(&self, instance_id: &str, remote_jids: &[String]) -> StoreResult<Vec<ChatSettings>>;
    write fn put_chat_settings(&self, chat: &ChatSettings) -> StoreResult<()>;
    read fn labels(&self, instance_id: &str) -> StoreResult<Vec<Label>>;
    write fn put_label(&self, label: &Label) -> StoreResult<()>;
    write fn delete_label(&self, instance_id: &str, label_id: &str) -> StoreResult<bool>;
});

forward!(StatsStore {
    write fn add_usage(&self, rows: &[(UsageKey, Usage)]) -> StoreResult<()>;
    read fn usage(&self, filter: &UsageFilter) -> StoreResult<Vec<(UsageKey, Usage)>>;
});

#[async_trait]
impl TransferStore for SwitchableStorage {
    async fn export_records(
        &self,
        kind: RecordKind,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<Record>> {
        forward!(@read self, export_records(kind, after, limit))
    }

    async fn import_records(&self, records: &[Record]) -> StoreResult<()> {
        let done = forward!(@write self, import_records(records));
        self.cache.clear();
        done
    }

    async fn count_records(&self) -> StoreResult<RecordCounts> {
        forward!(@read self, count_records())
    }

    async fn clear_all(&self) -> StoreResult<()> {
        let done = forward!(@write self, clear_all());
        self.cache.clear();
        done
    }
}

forward!(WabaStore {
    write fn put_waba_account(&self, account: &WabaAccount) -> StoreResult<()>;
    read fn waba_account(&self, owner_id: &str) -> StoreResult<Option<WabaAccount>>;
    read fn waba_account_by_phone_number_id(&self, phone_number_id: &str) -> StoreResult<Option<WabaAccount>>;
    read fn waba_account_by_verify_token_hash(&self, hash: &str) -> StoreResult<Option<WabaAccount>>;
    write fn waba_chat_for_customer(
        &self,
        owner_id: &str,
        customer_phone: &str,
        customer_name: Option<&str>,
        at: DateTime<Utc>
    ) -> StoreResult<WabaChat>;
    read fn waba_chat(&self, id: i64) -> StoreResult<Option<WabaChat>>;
    read fn find_waba_chat(&self, owner_id: &str, customer_phone: &str) -> StoreResult<Option<WabaChat>>;
    read fn list_waba_chats(
        &self,
        owner_id: Option<&str>,
        assigned: &AssignedFilter,
        limit: u32,
        skip: u64
    ) -> StoreResult<Page<WabaChatSummary>>;
    write fn insert_waba_message(&self, message: &WabaMessage) -> StoreResult<WabaMessage>;
    read fn waba_message(&self, id: i64) -> StoreResult<Option<WabaMessage>>;
    write fn advance_waba_message_status(
        &self,
        chat_id: i64,
        whatsapp_message_id: &str,
        status: MessageStatus,
        at: DateTime<Utc>
    ) -> StoreResult<Option<WabaMessage>>;
    read fn waba_chat_messages(&self, chat_id: i64, limit: u32, skip: u64) -> StoreResult<Page<WabaMessage>>;
    write fn mark_waba_chat_read(&self, chat_id: i64) -> StoreResult<u64>;
    write fn assign_waba_chat(
        &self,
        chat_id: i64,
        expected: Option<&str>,
        assignee: Option<&str>
    ) -> StoreResult<Option<WabaChat>>;
    write fn settle_waba_message(
        &self,
        message_id: i64,
        whatsapp_message_id: &str,
        status: MessageStatus,
        error: Option<&SendFailure>,
        at: DateTime<Utc>
    ) -> StoreResult<Option<WabaMessage>>;
    write fn set_waba_media(&self, message_id: i64, media: &WabaMedia) -> StoreResult<Option<WabaMessage>>;
});

#[async_trait]
impl Storage for SwitchableStorage {
    /// The active provider's name.
    fn provider(&self) -> &'static str {
        self.active().provider()
    }

    fn embedded(&self) -> bool {
        self.active().embedded()
    }

    async fn ping(&self) -> StoreResult<()> {
        self.active().ping().await
    }

    /// Closes the active provider, after any switch in progress has finished (closing
    /// mid-copy would fail the copy for no reason).
    async fn close(&self) {
        let _no_switch = self.switching.lock().await;
        self.active().close().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use wagate_actors::domain::Role;
    use wagate_actors::testing::MemoryStorage;

    use super::*;

    fn user(email: &str) -> User {
        let now = Utc::now();
        User {
            id: wagate_actors::domain::new_id(),
            email: email.to_owned(),
            password_hash: "h".into(),
            first_name: "F".into(),
            last_name: "L".into(),
            role: Role::User,
            owner_id: None,
            active: true,
            api_key_hash: format!("k-{email}"),
            api_key_sealed: "s".into(),
            created_at: now,
            updated_at: now,
        }
    }

    #[tokio::test]
    async fn writes_wait_for_the_gate_and_reads_do_not() {
        let storage = Arc::new(SwitchableStorage::new(Arc::new(MemoryStorage::default())));
        let held = storage.writes.write().await;
        let writer = {
            let storage = storage.clone();
            tokio::spawn(async move { storage.create_user(&user("a@example.com")).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !writer.is_finished(),
            "a write waits while the gate is held"
        );
        assert_eq!(
            storage.count_admins().await.expect("a read goes through"),
            0
        );
        drop(held);
        writer.await.expect("join").expect("the write completes");
        assert!(
            storage
                .user_by_email("a@example.com")
                .await
                .expect("read")
                .is_some()
        );
    }

    #[tokio::test]
    async fn switching_to_the_active_provider_is_refused() {
        let storage = SwitchableStorage::new(Arc::new(MemoryStorage::default()));
        let err = storage
            .switch_to(Arc::new(MemoryStorage::default()), || Ok(()))
            .await
            .expect_err("same provider");
        assert!(matches!(err, SwitchError::AlreadyActive("memory")), "{err}");
    }
}
