//! The storage seam: every storage trait of the gateway, in one place. The server crate
//! implements them for SQLite (sqlx) and MongoDB, and [`crate::testing`] in memory; all
//! three pass one shared test suite.
//!
//! Every method fails with [`StoreError::Unavailable`] when the backend cannot be reached,
//! and with [`StoreError::Conflict`] where a uniqueness rule is named in its docs.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::waba::{
    AssignedFilter, SendFailure, WabaAccount, WabaChat, WabaChatSummary, WabaMedia, WabaMessage,
};
use crate::domain::{
    ActivityEntry, ActivityQuery, ChatSettings, ChatSummary, Contact, ContactQuery, EventQuery,
    HistoryQuery, Instance, InstanceEvent, InstanceStatus, Label, Message, MessageStatus, Page,
    Reaction, StatusReport, Usage, UsageFilter, UsageKey, User,
};
pub use crate::error::{StoreError, StoreResult};

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Fails with `Conflict` when the email (case-insensitive) is taken.
    async fn create_user(&self, user: &User) -> StoreResult<()>;
    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>>;
    /// Case-insensitive.
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>>;
    async fn user_by_api_key_hash(&self, hash: &str) -> StoreResult<Option<User>>;
    /// Oldest first.
    async fn list_users(&self, limit: u32, skip: u64) -> StoreResult<Page<User>>;
    /// Replaces every field but `id` and `created_at`. Returns false when the user does
    /// not exist. Fails with `Conflict` when the new email is taken.
    async fn update_user(&self, user: &User) -> StoreResult<bool>;
    /// Returns false when the user does not exist.
    async fn delete_user(&self, id: &str) -> StoreResult<bool>;
    async fn count_admins(&self) -> StoreResult<u64>;
}

#[async_trait]
pub trait InstanceStore: Send + Sync {
    async fn create_instance(&self, instance: &Instance) -> StoreResult<()>;
    async fn instance_by_id(&self, id: &str) -> StoreResult<Option<Instance>>;
    /// Instances of one user, or of everybody when `user_id` is None; oldest first.
    async fn list_instances(&self, user_id: Option<&str>) -> StoreResult<Vec<Instance>>;
    /// The ids of every instance, in `list_instances`' order: what a cluster node's scan
    /// for work reads every few seconds, without the records. The default reads the
    /// records; a provider shared over the network reads the ids alone.
    async fn instance_ids(&self) -> StoreResult<Vec<String>> {
        Ok(self
            .list_instances(None)
            .await?
            .into_iter()
            .map(|i| i.id)
            .collect())
    }
    /// Replaces the user-editable fields (name, description, engine, webhook settings,
    /// limits) and `updated_at`. Returns false when the instance does not exist.
    async fn update_instance(&self, instance: &Instance) -> StoreResult<bool>;
    /// Records a status change (and the linked phone, when known) without touching the
    /// user-editable fields. `at` becomes `last_activity`.
    async fn set_instance_status(
        &self,
        id: &str,
        status: InstanceStatus,
        phone: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Deletes the instance and everything recorded for it (activity, events, messages,
    /// contacts, chat settings, labels).
    /// Returns false when the instance does not exist.
    async fn delete_instance(&self, id: &str) -> StoreResult<bool>;
}

#[async_trait]
pub trait ActivityStore: Send + Sync {
    async fn append_activity(&self, entry: &ActivityEntry) -> StoreResult<()>;
    /// Newest first, filtered and paged as the query says.
    async fn list_activity(
        &self,
        instance_id: &str,
        query: &ActivityQuery,
    ) -> StoreResult<Page<ActivityEntry>>;
}

#[async_trait]
pub trait EventStore: Send + Sync {
    async fn append_event(&self, event: &InstanceEvent) -> StoreResult<()>;
    /// With a cursor (`since` or `after_id`): the first `query.limit` matching events after
    /// it, oldest first. Without one: the latest `query.limit` matching events, still oldest
    /// first. The boolean says whether more events matched beyond the limit.
    async fn list_events(
        &self,
        instance_id: &str,
        query: &EventQuery,
    ) -> StoreResult<(Vec<InstanceEvent>, bool)>;
}

#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Fails with `Conflict` when the instance already has this `message_id`.
    async fn insert_message(&self, message: &Message) -> StoreResult<()>;
    /// Stores a message with what is recorded beside it, as one transaction: the message,
    /// the `contact` upsert (as [`ContactStore::upsert_contact`]) when given, and `event`.
    /// All of them are stored or none. Fails with `Conflict` when the instance already has
    /// this `message_id`; nothing is written then.
    async fn record_message(
        &self,
        message: &Message,
        contact: Option<&Contact>,
        event: &InstanceEvent,
    ) -> StoreResult<()>;
    /// [`record_message`](Self::record_message), pipelined: returns once the write is
    /// queued, and calls `done` with its outcome once it is committed (or failed). The
    /// calls of `done` come in the order the writes were queued, in commit order, from
    /// the storage's writer: `done` must be quick and must not block. A store that does
    /// not queue writes (the default) writes, then calls `done`, before it returns.
    async fn record_message_then(
        &self,
        message: &Message,
        contact: Option<&Contact>,
        event: &InstanceEvent,
        done: Committed,
    ) {
        done(self.record_message(message, contact, event).await);
    }
    async fn message_by_id(
        &self,
        instance_id: &str,
        message_id: &str,
    ) -> StoreResult<Option<Message>>;
    /// Moves the status forward only (see [`MessageStatus::can_become`]) and stores the
    /// `message_status` event reporting it (`report`'s [`StatusReport::event`] of the
    /// message as updated), both or neither. Returns the stored event, or None when the
    /// message is unknown or the move would go backwards: nothing is stored then.
    async fn advance_message_status(
        &self,
        instance_id: &str,
        message_id: &str,
        status: MessageStatus,
        at: DateTime<Utc>,
        report: &StatusReport,
    ) -> StoreResult<Option<InstanceEvent>>;
    /// [`advance_message_status`](Self::advance_message_status), pipelined as
    /// [`record_message_then`](Self::record_message_then) is: `done` is called with
    /// its outcome once it is committed, in the order the writes were queued.
    #[allow(clippy::too_many_arguments)]
    async fn advance_message_status_then(
        &self,
        instance_id: &str,
        message_id: &str,
        status: MessageStatus,
        at: DateTime<Utc>,
        report: &StatusReport,
        done: Committed<Option<InstanceEvent>>,
    ) {
        done(
            self.advance_message_status(instance_id, message_id, status, at, report)
                .await,
        );
    }
    /// Replaces the reactions stored on a message; returns whether it exists.
    async fn set_message_reactions(
        &self,
        instance_id: &str,
        message_id: &str,
        reactions: &[Reaction],
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Stores what changed of a stored message (text, caption, media, `edited_at`,
    /// `revoked`) and the event that reports it, together; returns whether the
    /// message exists (the event is stored either way).
    async fn rewrite_message(&self, message: &Message, event: &InstanceEvent) -> StoreResult<bool>;
    /// Removes a stored message and stores the event that reports it, together;
    /// returns whether it existed.
    async fn forget_message(
        &self,
        instance_id: &str,
        message_id: &str,
        event: &InstanceEvent,
    ) -> StoreResult<bool>;
    /// The WhatsApp ids of the instance's outbound messages still `pending` (its send
    /// queue), oldest first: the order they were queued in.
    async fn pending_sends(&self, instance_id: &str) -> StoreResult<Vec<String>>;
    /// Stores that a queued (`pending`) message went out, with `event`: its status,
    /// status time, timestamp, metadata and secret are taken from `message`. Returns
    /// whether it was still pending (the event is stored only then).
    async fn settle_pending_send(
        &self,
        message: &Message,
        event: &InstanceEvent,
    ) -> StoreResult<bool>;
    /// Newest first.
    async fn chat_history(
        &self,
        instance_id: &str,
        remote_jid: &str,
        query: &HistoryQuery,
    ) -> StoreResult<Page<Message>>;
    /// Chats ordered by their latest message, newest first.
    async fn list_chats(
        &self,
        instance_id: &str,
        limit: u32,
        skip: u64,
    ) -> StoreResult<Page<ChatSummary>>;
    /// Marks the chat's unread inbound messages read; returns their WhatsApp ids (the
    /// read receipts to send).
    async fn mark_chat_read(&self, instance_id: &str, remote_jid: &str)
    -> StoreResult<Vec<String>>;
}

#[async_trait]
pub trait ContactStore: Send + Sync {
    /// Inserts or updates the contact keyed by (instance, remote_jid). Fields that are
    /// None in `contact` keep their stored value; `created_at` and `id` of an existing
    /// contact are kept. Returns the stored contact.
    async fn upsert_contact(&self, contact: &Contact) -> StoreResult<Contact>;
    async fn list_contacts(
        &self,
        instance_id: &str,
        query: &ContactQuery,
    ) -> StoreResult<Page<Contact>>;
}

/// How the account keeps its chats, and its labels.
#[async_trait]
pub trait ChatStore: Send + Sync {
    async fn chat_settings(
        &self,
        instance_id: &str,
        remote_jid: &str,
    ) -> StoreResult<Option<ChatSettings>>;
    /// The settings of those of `remote_jids` that have any.
    async fn chat_settings_of(
        &self,
        instance_id: &str,
        remote_jids: &[String],
    ) -> StoreResult<Vec<ChatSettings>>;
    /// Inserts or replaces the settings keyed by (instance, remote_jid); the `id` of
    /// existing ones is kept.
    async fn put_chat_settings(&self, chat: &ChatSettings) -> StoreResult<()>;
    /// The instance's labels, by label id.
    async fn labels(&self, instance_id: &str) -> StoreResult<Vec<Label>>;
    /// Inserts or replaces the label keyed by (instance, label_id); the `id` and
    /// `created_at` of an existing one are kept.
    async fn put_label(&self, label: &Label) -> StoreResult<()>;
    /// Returns whether it existed. Chats keep the id among their labels.
    async fn delete_label(&self, instance_id: &str, label_id: &str) -> StoreResult<bool>;
}

/// Daily usage buckets in storage.
#[async_trait]
pub trait StatsStore: Send + Sync {
    /// Adds each delta to its bucket (creating it), atomically for the whole batch.
    async fn add_usage(&self, rows: &[(UsageKey, Usage)]) -> StoreResult<()>;
    /// The buckets matching the filter, in no particular order.
    async fn usage(&self, filter: &UsageFilter) -> StoreResult<Vec<(UsageKey, Usage)>>;
}

/// Storage of the operator desk. Implemented by every backend beside the traits of
/// this module; every method fails with `Unavailable` when the backend cannot be
/// reached.
#[async_trait]
pub trait WabaStore: Send + Sync {
    /// Inserts or replaces the account of `account.owner_id`. Fails with `Conflict` when
    /// another owner already has this `phone_number_id`.
    async fn put_waba_account(&self, account: &WabaAccount) -> StoreResult<()>;
    async fn waba_account(&self, owner_id: &str) -> StoreResult<Option<WabaAccount>>;
    async fn waba_account_by_phone_number_id(
        &self,
        phone_number_id: &str,
    ) -> StoreResult<Option<WabaAccount>>;
    async fn waba_account_by_verify_token_hash(
        &self,
        hash: &str,
    ) -> StoreResult<Option<WabaAccount>>;
    /// The chat of (owner, customer), created when missing (`at` becomes its
    /// `created_at`). A given `customer_name` replaces the stored one.
    async fn waba_chat_for_customer(
        &self,
        owner_id: &str,
        customer_phone: &str,
        customer_name: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<WabaChat>;
    async fn waba_chat(&self, id: i64) -> StoreResult<Option<WabaChat>>;
    /// The chat of (owner, customer), without creating it.
    async fn find_waba_chat(
        &self,
        owner_id: &str,
        customer_phone: &str,
    ) -> StoreResult<Option<WabaChat>>;
    /// Chats of one owner (or of everybody when None) that `assigned` keeps, newest
    /// activity first.
    async fn list_waba_chats(
        &self,
        owner_id: Option<&str>,
        assigned: &AssignedFilter,
        limit: u32,
        skip: u64,
    ) -> StoreResult<Page<WabaChatSummary>>;
    /// Stores a message under a new numeric id (`message.id` is ignored) and returns it.
    /// Moves the chat's `last_message_at` (and, for inbound messages,
    /// `last_customer_message_at`) forward to the message's timestamp, never back.
    /// Fails with `Conflict` when the `whatsapp_message_id` is already stored.
    async fn insert_waba_message(&self, message: &WabaMessage) -> StoreResult<WabaMessage>;
    async fn waba_message(&self, id: i64) -> StoreResult<Option<WabaMessage>>;
    /// Moves the status of the chat's message forward only
    /// ([`MessageStatus::can_become`]), atomically. Returns the updated message, or None
    /// when the chat has no such message or the move would go backwards.
    async fn advance_waba_message_status(
        &self,
        chat_id: i64,
        whatsapp_message_id: &str,
        status: MessageStatus,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<WabaMessage>>;
    /// Messages of one chat, newest first.
    async fn waba_chat_messages(
        &self,
        chat_id: i64,
        limit: u32,
        skip: u64,
    ) -> StoreResult<Page<WabaMessage>>;
    /// Marks the chat's unread inbound messages read by the operator; returns how many.
    async fn mark_waba_chat_read(&self, chat_id: i64) -> StoreResult<u64>;
    /// Sets the chat's assignee to `assignee` only if it is `expected` now (None:
    /// unassigned), atomically: of two operators taking a free chat at once, one wins.
    /// Returns the chat after the change; None when there is no such chat or its
    /// assignee is not `expected`.
    async fn assign_waba_chat(
        &self,
        chat_id: i64,
        expected: Option<&str>,
        assignee: Option<&str>,
    ) -> StoreResult<Option<WabaChat>>;
    /// Settles a message: sets its Meta id, status (and `status_updated_at` to `at`) and
    /// error as given, whatever they were. What a send does once Meta has answered, and
    /// a `failed` status with Meta's errors. None when there is no such message.
    async fn settle_waba_message(
        &self,
        message_id: i64,
        whatsapp_message_id: &str,
        status: MessageStatus,
        error: Option<&SendFailure>,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<WabaMessage>>;
    /// Replaces the message's file record (where fetching it stands). Returns the
    /// message after the change; None when there is no such message.
    async fn set_waba_media(
        &self,
        message_id: i64,
        media: &WabaMedia,
    ) -> StoreResult<Option<WabaMessage>>;
}

/// Every stored event of an instance after a given one, oldest first, read `batch` at a
/// time: what a catch-up or a resumed stream walks.
pub struct EventsAfter<'s> {
    store: &'s dyn EventStore,
    instance_id: String,
    cursor: String,
    batch: u32,
    done: bool,
}

impl<'s> EventsAfter<'s> {
    /// The events of `instance_id` after the event `after` (`""`: from the first).
    pub fn new(store: &'s dyn EventStore, instance_id: &str, after: &str, batch: u32) -> Self {
        EventsAfter {
            store,
            instance_id: instance_id.to_owned(),
            cursor: after.to_owned(),
            batch: batch.max(1),
            done: false,
        }
    }

    /// The next events; empty once every event was read.
    ///
    /// Fails when storage does; the walk can go on from where it was.
    pub async fn next_batch(&mut self) -> StoreResult<Vec<InstanceEvent>> {
        if self.done {
            return Ok(Vec::new());
        }
        let query = EventQuery {
            after_id: Some(self.cursor.clone()),
            limit: self.batch,
            ..EventQuery::default()
        };
        let (events, more) = self.store.list_events(&self.instance_id, &query).await?;
        if let Some(last) = events.last() {
            self.cursor.clone_from(&last.id);
        }
        self.done = !more || events.is_empty();
        Ok(events)
    }
}

/// The kinds of stored records, in the order a copy writes them (owners before what
/// they own, so a reader never meets an instance whose user is missing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    Users,
    Instances,
    Activity,
    Events,
    Messages,
    Contacts,
    /// Daily usage buckets of the statistics.
    Usage,
    /// The operator desk's WABA accounts (settings), keyed by owner; secrets stay sealed.
    WabaAccounts,
    /// The operator desk's chats (numeric ids).
    WabaChats,
    /// The operator desk's messages (numeric ids; after their chats).
    WabaMessages,
    /// How the account keeps its chats (archived, pinned, muted, labelled).
    Chats,
    /// The instances' labels.
    Labels,
}

impl RecordKind {
    pub const ALL: [RecordKind; 12] = [
        RecordKind::Users,
        RecordKind::Instances,
        RecordKind::Activity,
        RecordKind::Events,
        RecordKind::Messages,
        RecordKind::Contacts,
        RecordKind::Usage,
        RecordKind::WabaAccounts,
        RecordKind::WabaChats,
        RecordKind::WabaMessages,
        RecordKind::Chats,
        RecordKind::Labels,
    ];

    /// The name used in reports (`copied.messages`) and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Users => "users",
            RecordKind::Instances => "instances",
            RecordKind::Activity => "activity",
            RecordKind::Events => "events",
            RecordKind::Messages => "messages",
            RecordKind::Contacts => "contacts",
            RecordKind::Usage => "usage",
            RecordKind::WabaAccounts => "wabaAccounts",
            RecordKind::WabaChats => "wabaChats",
            RecordKind::WabaMessages => "wabaMessages",
            RecordKind::Chats => "chats",
            RecordKind::Labels => "labels",
        }
    }
}

/// One stored record of any kind, with everything a backend keeps of it, including state
/// the domain types do not carry (whether the account has read an inbound message), so a
/// copy between providers loses nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    User(User),
    Instance(Instance),
    Activity(ActivityEntry),
    Event(InstanceEvent),
    Message {
        /// Boxed: a message is much larger than the other records.
        message: Box<Message>,
        read_by_me: bool,
    },
    Contact(Contact),
    Usage(UsageKey, Usage),
    /// Stored as is: the secret fields hold the sealed values, never opened by a copy.
    WabaAccount(WabaAccount),
    WabaChat(WabaChat),
    WabaMessage(WabaMessage),
    Chat(ChatSettings),
    Label(Label),
}

impl Record {
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::User(_) => RecordKind::Users,
            Record::Instance(_) => RecordKind::Instances,
            Record::Activity(_) => RecordKind::Activity,
            Record::Event(_) => RecordKind::Events,
            Record::Message { .. } => RecordKind::Messages,
            Record::Contact(_) => RecordKind::Contacts,
            Record::Usage(..) => RecordKind::Usage,
            Record::WabaAccount(_) => RecordKind::WabaAccounts,
            Record::WabaChat(_) => RecordKind::WabaChats,
            Record::WabaMessage(_) => RecordKind::WabaMessages,
            Record::Chat(_) => RecordKind::Chats,
            Record::Label(_) => RecordKind::Labels,
        }
    }

    /// The export cursor: the record's id, or `day|user|instance` for a usage bucket
    /// (buckets have no id of their own; the three make them unique), the owner's id for
    /// a WABA account, and [`id_key`] of the numeric id for WABA chats and messages.
    pub fn key(&self) -> String {
        match self {
            Record::User(u) => u.id.clone(),
            Record::Instance(i) => i.id.clone(),
            Record::Activity(a) => a.id.clone(),
            Record::Event(e) => e.id.clone(),
            Record::Message { message, .. } => message.id.clone(),
            Record::Contact(c) => c.id.clone(),
            Record::Usage(k, _) => usage_key(k),
            Record::WabaAccount(a) => a.owner_id.clone(),
            Record::WabaChat(c) => id_key(c.id),
            Record::WabaMessage(m) => id_key(m.id),
            Record::Chat(c) => c.id.clone(),
            Record::Label(l) => l.id.clone(),
        }
    }
}

/// The export cursor of a numeric id: fixed-width digits whose string order is the
/// numbers' order (`"10" < "9"` would break a keyset walk), for negative ids too.
pub fn id_key(id: i64) -> String {
    format!("{:020}", (id as u64) ^ (1 << 63))
}

/// The id an [`id_key`] cursor stands for; `Corrupt` when `key` is no such cursor.
pub fn id_from_key(key: &str) -> StoreResult<i64> {
    match key.parse::<u64>() {
        Ok(n) if key.len() == 20 => Ok((n ^ (1 << 63)) as i64),
        _ => Err(StoreError::Corrupt(format!(
            "{key:?} is not a cursor of numeric ids"
        ))),
    }
}

/// The key of a usage bucket, as [`Record::key`] and the backends order them.
pub fn usage_key(k: &UsageKey) -> String {
    format!(
        "{}|{}|{}",
        k.day.format("%Y-%m-%d"),
        k.user_id,
        k.instance_id
    )
}

/// How many records of each kind a store holds (the check of a copy, and its report).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecordCounts {
    pub users: u64,
    pub instances: u64,
    pub activity: u64,
    pub events: u64,
    pub messages: u64,
    pub contacts: u64,
    pub usage: u64,
    pub waba_accounts: u64,
    pub waba_chats: u64,
    pub waba_messages: u64,
    pub chats: u64,
    pub labels: u64,
}

impl RecordCounts {
    pub fn get(&self, kind: RecordKind) -> u64 {
        match kind {
            RecordKind::Users => self.users,
            RecordKind::Instances => self.instances,
            RecordKind::Activity => self.activity,
            RecordKind::Events => self.events,
            RecordKind::Messages => self.messages,
            RecordKind::Contacts => self.contacts,
            RecordKind::Usage => self.usage,
            RecordKind::WabaAccounts => self.waba_accounts,
            RecordKind::WabaChats => self.waba_chats,
            RecordKind::WabaMessages => self.waba_messages,
            RecordKind::Chats => self.chats,
            RecordKind::Labels => self.labels,
        }
    }

    pub fn set(&mut self, kind: RecordKind, n: u64) {
        let slot = match kind {
            RecordKind::Users => &mut self.users,
            RecordKind::Instances => &mut self.instances,
            RecordKind::Activity => &mut self.activity,
            RecordKind::Events => &mut self.events,
            RecordKind::Messages => &mut self.messages,
            RecordKind::Contacts => &mut self.contacts,
            RecordKind::Usage => &mut self.usage,
            RecordKind::WabaAccounts => &mut self.waba_accounts,
            RecordKind::WabaChats => &mut self.waba_chats,
            RecordKind::WabaMessages => &mut self.waba_messages,
            RecordKind::Chats => &mut self.chats,
            RecordKind::Labels => &mut self.labels,
        };
        *slot = n;
    }
}

/// Whole-store access, for copying every record from one provider to another
/// (`POST /api/db/switch`). Not for request paths: these walk everything.
#[async_trait]
pub trait TransferStore: Send + Sync {
    /// Up to `limit` records of `kind` whose [`Record::key`] is greater than `after`, in
    /// key order: the pages of a full export, resumable from the last key seen.
    async fn export_records(
        &self,
        kind: RecordKind,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<Record>>;
    /// Stores the records exactly as given: ids, timestamps, counters and read marks are
    /// kept (a usage bucket is set, not added to). Fails with `Conflict` when a record's
    /// key (or a unique field: email, API key, message id) is already stored.
    ///
    /// Numeric ids (WABA chats and messages) are kept too, and the id sequences move
    /// past them: ids assigned afterwards are greater than every imported one.
    async fn import_records(&self, records: &[Record]) -> StoreResult<()>;
    async fn count_records(&self) -> StoreResult<RecordCounts>;
    /// Deletes every record of every kind (the schema and indexes stay).
    async fn clear_all(&self) -> StoreResult<()>;
}

/// Everything the gateway stores, behind one object.
#[async_trait]
pub trait Storage:
    UserStore
    + InstanceStore
    + ActivityStore
    + EventStore
    + MessageStore
    + ContactStore
    + ChatStore
    + StatsStore
    + TransferStore
    + WabaStore
{
    /// `sqlite` or `mongodb`.
    fn provider(&self) -> &'static str;
    /// Whether the database is this process's alone: embedded, written by no other
    /// process, and out of reach only when this process is. Records read from it may then
    /// be kept in memory until this process changes them. A database server is not:
    /// other processes (cluster nodes) change what it holds, and its outage must be seen
    /// at the next read.
    fn embedded(&self) -> bool {
        false
    }
    /// Succeeds when the backend answers a trivial query.
    async fn ping(&self) -> StoreResult<()>;
    /// Flushes and closes connections; later calls fail with `Unavailable`.
    async fn close(&self);
}

pub type DynStorage = Arc<dyn Storage>;

/// Told how a pipelined write ended, once it is committed or failed (see
/// [`MessageStore::record_message_then`]).
pub type Committed<T = ()> = Box<dyn FnOnce(StoreResult<T>) + Send>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_keys_order_as_the_numbers_and_round_trip() {
        let ids = [
            i64::MIN,
            -10,
            -9,
            -1,
            0,
            1,
            9,
            10,
            99,
            100,
            1_000_000,
            i64::MAX,
        ];
        let keys: Vec<String> = ids.iter().map(|id| id_key(*id)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        for (id, key) in ids.iter().zip(&keys) {
            assert_eq!(id_from_key(key).ok(), Some(*id));
        }
        for bad in [
            "",
            "9",
            "abc",
            "-0000000000000000001",
            "99999999999999999999",
        ] {
            assert!(
                matches!(id_from_key(bad), Err(StoreError::Corrupt(_))),
                "{bad:?}"
            );
        }
    }
}

/// Why a session write was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VaultError {
    /// This node no longer holds the instance's lease at the epoch it started with.
    #[error("fenced: this node no longer holds the lease of the instance")]
    Fenced,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Cluster mode: shared storage of session key material, so a session survives a change
/// of node (the lease manager of `crate::cluster` decides which node may write).
#[async_trait]
pub trait SessionVault: Send + Sync {
    /// The stored session files of `instance_id`: name → bytes.
    async fn load(
        &self,
        instance_id: &str,
    ) -> StoreResult<std::collections::BTreeMap<String, Vec<u8>>>;
    /// Replaces them (empty: the session is gone), in one transaction that checks this
    /// node still holds the lease at the epoch it holds now.
    async fn save(
        &self,
        instance_id: &str,
        files: std::collections::BTreeMap<String, Vec<u8>>,
    ) -> Result<(), VaultError>;
    /// Every stored key row of a real session (`engine::wacore::keys`); none when it
    /// has not linked, or was logged out.
    async fn load_keys(&self, instance_id: &str) -> StoreResult<Vec<KeyRecord>>;
    /// Applies `batch` (the clear first, then the writes in order) in one transaction
    /// that checks this node still holds the lease at the epoch it holds now.
    async fn write_keys(&self, instance_id: &str, batch: KeyBatch) -> Result<(), VaultError>;
}

/// One stored row of a real session's key material: `table` names its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub table: String,
    pub key: String,
    pub value: Vec<u8>,
}

/// One change of a real session's key material: `value` None deletes the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyWrite {
    pub table: &'static str,
    pub key: String,
    pub value: Option<Vec<u8>>,
}

/// Applies `batch` to one session's rows, `(table, key)` → value (in-memory vaults).
pub fn apply_key_batch(
    rows: &mut std::collections::BTreeMap<(String, String), Vec<u8>>,
    batch: KeyBatch,
) {
    if batch.clear {
        rows.clear();
    }
    for write in batch.writes {
        let key = (write.table.to_owned(), write.key);
        match write.value {
            Some(value) => {
                rows.insert(key, value);
            }
            None => {
                rows.remove(&key);
            }
        }
    }
}

/// One session's rows as [`KeyRecord`]s (in-memory vaults).
pub fn key_records(
    rows: Option<&std::collections::BTreeMap<(String, String), Vec<u8>>>,
) -> Vec<KeyRecord> {
    rows.into_iter()
        .flatten()
        .map(|((table, key), value)| KeyRecord {
            table: table.clone(),
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

/// The changes of one key-store call, written together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyBatch {
    /// Drop every row of the session first (a logout).
    pub clear: bool,
    pub writes: Vec<KeyWrite>,
}
