//! An in-memory [`Storage`] for tests of the actors (and, with the `testing` feature, of
//! other crates): no database, no files, and everything inspectable.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{
    ActivityEntry, ActivityQuery, ChatSettings, ChatSummary, Contact, ContactQuery, EventQuery,
    HistoryQuery, Instance, InstanceEvent, InstanceStatus, Label, Message, MessageStatus, Page,
    Role, StatusReport, User,
};
use crate::error::StoreError;
use crate::store::{
    ActivityStore, ChatStore, Committed, ContactStore, EventStore, InstanceStore, MessageStore,
    Record, RecordCounts, RecordKind, Storage, StoreResult, TransferStore, UserStore,
};

#[derive(Default)]
pub struct MemoryStorage {
    data: Mutex<Data>,
    /// The operator desk's records (see `testing/waba.rs`).
    waba: Mutex<waba::WabaData>,
    closed: std::sync::atomic::AtomicBool,
    /// Pipelined message writes held back, in the order queued (see
    /// [`MemoryStorage::hold_writes`]).
    held: Mutex<Option<Vec<HeldWrite>>>,
}

/// A pipelined write waiting for [`MemoryStorage::release_writes`].
type HeldWrite = Box<dyn FnOnce(&MemoryStorage) + Send>;

#[derive(Default)]
struct Data {
    users: Vec<User>,
    instances: Vec<Instance>,
    activity: Vec<ActivityEntry>,
    events: Vec<InstanceEvent>,
    messages: Vec<Message>,
    /// (instance, message id) of inbound messages the account has read.
    read: std::collections::HashSet<(String, String)>,
    contacts: Vec<Contact>,
    usage: HashMap<crate::domain::UsageKey, crate::domain::Usage>,
    chats: Vec<ChatSettings>,
    labels: Vec<Label>,
}

impl MemoryStorage {
    /// The records, unless the store was closed (then `Unavailable`, like a closed
    /// database).
    fn open(&self) -> StoreResult<MutexGuard<'_, Data>> {
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the storage is closed".into()));
        }
        Ok(self.data())
    }

    fn data(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// [`MessageStore::record_message`]: one lock for the three, so nobody sees a part.
    fn record(
        &self,
        message: &Message,
        contact: Option<&Contact>,
        event: &InstanceEvent,
    ) -> StoreResult<()> {
        let mut data = self.open()?;
        if data.events.iter().any(|e| e.id == event.id) {
            return Err(StoreError::Conflict(format!("event {} exists", event.id)));
        }
        insert_message(&mut data, message)?;
        if let Some(contact) = contact {
            upsert_contact(&mut data, contact);
        }
        data.events.push(event.clone());
        Ok(())
    }

    /// Every activity entry of one instance, oldest first.
    pub fn activity_of(&self, instance_id: &str) -> Vec<ActivityEntry> {
        self.data()
            .activity
            .iter()
            .filter(|e| e.instance_id == instance_id)
            .cloned()
            .collect()
    }

    /// From now on, pipelined message writes (`record_message_then`) wait, uncommitted,
    /// as they would in a busy writer's queue, until [`release_writes`](Self::release_writes).
    pub fn hold_writes(&self) {
        self.held().get_or_insert_with(Vec::new);
    }

    /// How many pipelined writes wait.
    pub fn held_writes(&self) -> usize {
        self.held().as_ref().map_or(0, Vec::len)
    }

    /// Commits the waiting writes in the order queued, telling each caller, and stops
    /// holding.
    pub fn release_writes(&self) {
        let waiting = self.held().take().unwrap_or_default();
        for write in waiting {
            write(self);
        }
    }

    fn held(&self) -> MutexGuard<'_, Option<Vec<HeldWrite>>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every event of one instance, oldest first.
    pub fn events_of(&self, instance_id: &str) -> Vec<InstanceEvent> {
        self.data()
            .events
            .iter()
            .filter(|e| e.instance_id == instance_id)
            .cloned()
            .collect()
    }
}

#[async_trait]
impl UserStore for MemoryStorage {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let mut data = self.open()?;
        if data
            .users
            .iter()
            .any(|u| u.email.eq_ignore_ascii_case(&user.email))
        {
            return Err(StoreError::Conflict(format!(
                "email {} is taken",
                user.email
            )));
        }
        data.users.push(user.clone());
        Ok(())
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        Ok(self.open()?.users.iter().find(|u| u.id == id).cloned())
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        Ok(self
            .data()
            .users
            .iter()
            .find(|u| u.email.eq_ignore_ascii_case(email))
            .cloned())
    }

    async fn user_by_api_key_hash(&self, hash: &str) -> StoreResult<Option<User>> {
        Ok(self
            .data()
            .users
            .iter()
            .find(|u| u.api_key_hash == hash)
            .cloned())
    }

    async fn list_users(&self, limit: u32, skip: u64) -> StoreResult<Page<User>> {
        let data = self.open()?;
        Ok(Page {
            items: data
                .users
                .iter()
                .skip(skip as usize)
                .take(limit as usize)
                .cloned()
                .collect(),
            total: data.users.len() as u64,
        })
    }

    async fn update_user(&self, user: &User) -> StoreResult<bool> {
        let mut data = self.open()?;
        match data.users.iter_mut().find(|u| u.id == user.id) {
            Some(existing) => {
                let created_at = existing.created_at;
                *existing = User {
                    created_at,
                    ..user.clone()
                };
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        let mut data = self.open()?;
        let before = data.users.len();
        data.users.retain(|u| u.id != id);
        Ok(data.users.len() != before)
    }

    async fn count_admins(&self) -> StoreResult<u64> {
        Ok(self
            .data()
            .users
            .iter()
            .filter(|u| u.role == Role::Admin)
            .count() as u64)
    }
}

#[async_trait]
impl InstanceStore for MemoryStorage {
    async fn create_instance(&self, instance: &Instance) -> StoreResult<()> {
        self.open()?.instances.push(instance.clone());
        Ok(())
    }

    async fn instance_by_id(&self, id: &str) -> StoreResult<Option<Instance>> {
        Ok(self.open()?.instances.iter().find(|i| i.id == id).cloned())
    }

    async fn list_instances(&self, user_id: Option<&str>) -> StoreResult<Vec<Instance>> {
        Ok(self
            .data()
            .instances
            .iter()
            .filter(|i| user_id.is_none_or(|u| i.user_id == u))
            .cloned()
            .collect())
    }

    async fn update_instance(&self, instance: &Instance) -> StoreResult<bool> {
        let mut data = self.open()?;
        match data.instances.iter_mut().find(|i| i.id == instance.id) {
            Some(existing) => {
                existing.name = instance.name.clone();
                existing.description = instance.description.clone();
                existing.engine = instance.engine;
                existing.webhook_url = instance.webhook_url.clone();
                existing.webhook_enabled = instance.webhook_enabled;
                existing.webhook = instance.webhook.clone();
                existing.limits = instance.limits.clone();
                existing.updated_at = instance.updated_at;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn set_instance_status(
        &self,
        id: &str,
        status: InstanceStatus,
        phone: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        if let Some(instance) = self.open()?.instances.iter_mut().find(|i| i.id == id) {
            instance.status = status;
            if let Some(phone) = phone {
                instance.phone = Some(phone.to_owned());
            }
            instance.last_activity = Some(at);
        }
        Ok(())
    }

    async fn delete_instance(&self, id: &str) -> StoreResult<bool> {
        let mut data = self.open()?;
        let before = data.instances.len();
        data.instances.retain(|i| i.id != id);
        data.activity.retain(|e| e.instance_id != id);
        data.events.retain(|e| e.instance_id != id);
        data.messages.retain(|m| m.instance_id != id);
        data.contacts.retain(|c| c.instance_id != id);
        data.chats.retain(|c| c.instance_id != id);
        data.labels.retain(|l| l.instance_id != id);
        Ok(data.instances.len() != before)
    }
}

#[async_trait]
impl ActivityStore for MemoryStorage {
    async fn append_activity(&self, entry: &ActivityEntry) -> StoreResult<()> {
        self.open()?.activity.push(entry.clone());
        Ok(())
    }

    async fn list_activity(
        &self,
        instance_id: &str,
        query: &ActivityQuery,
    ) -> StoreResult<Page<ActivityEntry>> {
        let data = self.open()?;
        let matching: Vec<_> = data
            .activity
            .iter()
            .rev()
            .filter(|e| e.instance_id == instance_id)
            .filter(|e| query.actions.is_empty() || query.actions.contains(&e.action))
            .filter(|e| query.start.is_none_or(|s| e.created_at >= s))
            .filter(|e| query.end.is_none_or(|end| e.created_at <= end))
            .cloned()
            .collect();
        Ok(Page {
            total: matching.len() as u64,
            items: matching
                .into_iter()
                .skip(query.skip as usize)
                .take(query.limit as usize)
                .collect(),
        })
    }
}

#[async_trait]
impl EventStore for MemoryStorage {
    async fn append_event(&self, event: &InstanceEvent) -> StoreResult<()> {
        self.open()?.events.push(event.clone());
        Ok(())
    }

    async fn list_events(
        &self,
        instance_id: &str,
        query: &EventQuery,
    ) -> StoreResult<(Vec<InstanceEvent>, bool)> {
        let data = self.open()?;
        let matching: Vec<_> = data
            .events
            .iter()
            .filter(|e| e.instance_id == instance_id)
            .filter(|e| {
                query.types.is_empty() || query.types.iter().any(|t| t == e.kind().as_str())
            })
            .filter(|e| query.since.is_none_or(|s| e.timestamp > s))
            .filter(|e| query.after_id.as_ref().is_none_or(|id| e.id > *id))
            .cloned()
            .collect();
        let limit = query.limit as usize;
        let more = matching.len() > limit;
        let page = if query.since.is_some() || query.after_id.is_some() {
            matching.into_iter().take(limit).collect()
        } else {
            let skip = matching.len().saturating_sub(limit);
            matching.into_iter().skip(skip).collect()
        };
        Ok((page, more))
    }
}

fn page<T>(items: Vec<T>, limit: u32, skip: u64) -> Page<T> {
    Page {
        total: items.len() as u64,
        items: items
            .into_iter()
            .skip(skip as usize)
            .take(limit as usize)
            .collect(),
    }
}

#[async_trait]
impl MessageStore for MemoryStorage {
    async fn insert_message(&self, message: &Message) -> StoreResult<()> {
        insert_message(&mut *self.open()?, message)
    }

    async fn record_message(
        &self,
        message: &Message,
        contact: Option<&Contact>,
        event: &InstanceEvent,
    ) -> StoreResult<()> {
        self.record(message, contact, event)
    }

    async fn record_message_then(
        &self,
        message: &Message,
        contact: Option<&Contact>,
        event: &InstanceEvent,
        done: Committed,
    ) {
        if let Some(waiting) = self.held().as_mut() {
            let (message, contact, event) = (message.clone(), contact.cloned(), event.clone());
            waiting.push(Box::new(move |store: &MemoryStorage| {
                done(store.record(&message, contact.as_ref(), &event))
            }));
            return;
        }
        done(self.record(message, contact, event));
    }

    async fn message_by_id(
        &self,
        instance_id: &str,
        message_id: &str,
    ) -> StoreResult<Option<Message>> {
        Ok(self
            .data()
            .messages
            .iter()
            .find(|m| m.instance_id == instance_id && m.message_id == message_id)
            .cloned())
    }

    async fn set_message_reactions(
        &self,
        instance_id: &str,
        message_id: &str,
        reactions: &[crate::domain::Reaction],
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut data = self.open()?;
        let Some(message) = data
            .messages
            .iter_mut()
            .find(|m| m.instance_id == instance_id && m.message_id == message_id)
        else {
            return Ok(false);
        };
        message.reactions = reactions.to_vec();
        message.updated_at = at;
        Ok(true)
    }

    async fn rewrite_message(&self, changed: &Message, event: &InstanceEvent) -> StoreResult<bool> {
        let mut data = self.open()?;
        let found =
            match data.messages.iter_mut().find(|m| {
                m.instance_id == changed.instance_id && m.message_id == changed.message_id
            }) {
                Some(m) => {
                    m.content = changed.content.clone();
                    m.caption = changed.caption.clone();
                    m.has_media = changed.has_media;
                    m.media_url = changed.media_url.clone();
                    m.media_path = changed.media_path.clone();
                    m.media_size = changed.media_size;
                    m.edited_at = changed.edited_at;
                    m.revoked = changed.revoked;
                    m.typed = changed.typed.clone();
                    m.updated_at = changed.updated_at;
                    true
                }
                None => false,
            };
        data.events.push(event.clone());
        Ok(found)
    }

    async fn pending_sends(&self, instance_id: &str) -> StoreResult<Vec<String>> {
        // Kept in insertion order: the order they were queued in.
        Ok(self
            .data()
            .messages
            .iter()
            .filter(|m| {
                m.instance_id == instance_id && m.from_me && m.status == MessageStatus::Pending
            })
            .map(|m| m.message_id.clone())
            .collect())
    }

    async fn settle_pending_send(
        &self,
        sent: &Message,
        event: &InstanceEvent,
    ) -> StoreResult<bool> {
        let mut data = self.open()?;
        let Some(m) = data.messages.iter_mut().find(|m| {
            m.instance_id == sent.instance_id
                && m.message_id == sent.message_id
                && m.status == MessageStatus::Pending
        }) else {
            return Ok(false);
        };
        m.status = sent.status;
        m.status_updated_at = sent.status_updated_at;
        m.timestamp = sent.timestamp;
        m.metadata = sent.metadata.clone();
        m.message_secret = sent.message_secret.clone();
        m.updated_at = sent.updated_at;
        data.events.push(event.clone());
        Ok(true)
    }

    async fn forget_message(
        &self,
        instance_id: &str,
        message_id: &str,
        event: &InstanceEvent,
    ) -> StoreResult<bool> {
        let mut data = self.open()?;
        let before = data.messages.len();
        data.messages
            .retain(|m| !(m.instance_id == instance_id && m.message_id == message_id));
        let found = data.messages.len() < before;
        data.events.push(event.clone());
        Ok(found)
    }

    async fn advance_message_status(
        &self,
        instance_id: &str,
        message_id: &str,
        status: MessageStatus,
        at: DateTime<Utc>,
        report: &StatusReport,
    ) -> StoreResult<Option<InstanceEvent>> {
        let mut data = self.open()?;
        let Some(message) = data
            .messages
            .iter_mut()
            .find(|m| m.instance_id == instance_id && m.message_id == message_id)
        else {
            return Ok(None);
        };
        if !message.status.can_become(status) {
            return Ok(None);
        }
        message.status = status;
        message.status_updated_at = Some(at);
        message.updated_at = at;
        let event = report.event(message);
        data.events.push(event.clone());
        Ok(Some(event))
    }

    async fn chat_history(
        &self,
        instance_id: &str,
        remote_jid: &str,
        query: &HistoryQuery,
    ) -> StoreResult<Page<Message>> {
        let mut matching: Vec<_> = self
            .data()
            .messages
            .iter()
            .filter(|m| m.instance_id == instance_id && m.remote_jid == remote_jid)
            .filter(|m| query.start.is_none_or(|s| m.timestamp >= s))
            .filter(|m| query.end.is_none_or(|e| m.timestamp <= e))
            .cloned()
            .collect();
        matching.sort_by_key(|m| std::cmp::Reverse(m.timestamp));
        Ok(page(matching, query.limit, query.skip))
    }

    async fn list_chats(
        &self,
        instance_id: &str,
        limit: u32,
        skip: u64,
    ) -> StoreResult<Page<ChatSummary>> {
        let data = self.open()?;
        let mut chats: HashMap<&str, ChatSummary> = HashMap::new();
        for m in data
            .messages
            .iter()
            .filter(|m| m.instance_id == instance_id)
        {
            let unread = u64::from(
                !m.from_me
                    && !data
                        .read
                        .contains(&(m.instance_id.clone(), m.message_id.clone())),
            );
            chats
                .entry(&m.remote_jid)
                .and_modify(|chat| {
                    chat.message_count += 1;
                    chat.unread_count += unread;
                    if m.timestamp >= chat.last_message.timestamp {
                        chat.last_message = m.clone();
                    }
                })
                .or_insert_with(|| ChatSummary {
                    remote_jid: m.remote_jid.clone(),
                    last_message: m.clone(),
                    unread_count: unread,
                    message_count: 1,
                });
        }
        let mut chats: Vec<_> = chats.into_values().collect();
        chats.sort_by_key(|c| std::cmp::Reverse(c.last_message.timestamp));
        Ok(page(chats, limit, skip))
    }

    async fn mark_chat_read(
        &self,
        instance_id: &str,
        remote_jid: &str,
    ) -> StoreResult<Vec<String>> {
        let mut data = self.open()?;
        let ids: Vec<String> = data
            .messages
            .iter()
            .filter(|m| m.instance_id == instance_id && m.remote_jid == remote_jid && !m.from_me)
            .map(|m| m.message_id.clone())
            .collect();
        let mut marked = Vec::new();
        for id in ids {
            if data.read.insert((instance_id.to_owned(), id.clone())) {
                marked.push(id);
            }
        }
        Ok(marked)
    }
}

#[async_trait]
impl crate::store::StatsStore for MemoryStorage {
    async fn add_usage(
        &self,
        rows: &[(crate::domain::UsageKey, crate::domain::Usage)],
    ) -> StoreResult<()> {
        let mut data = self.open()?;
        for (k, u) in rows {
            data.usage.entry(k.clone()).or_default().add(u);
        }
        Ok(())
    }

    async fn usage(
        &self,
        filter: &crate::domain::UsageFilter,
    ) -> StoreResult<Vec<(crate::domain::UsageKey, crate::domain::Usage)>> {
        Ok(self
            .data()
            .usage
            .iter()
            .filter(|(k, _)| filter.matches(k))
            .map(|(k, u)| (k.clone(), *u))
            .collect())
    }
}

#[async_trait]
impl ContactStore for MemoryStorage {
    async fn upsert_contact(&self, contact: &Contact) -> StoreResult<Contact> {
        Ok(upsert_contact(&mut *self.open()?, contact))
    }

    async fn list_contacts(
        &self,
        instance_id: &str,
        query: &ContactQuery,
    ) -> StoreResult<Page<Contact>> {
        let needle = query.search.as_ref().map(|s| s.to_lowercase());
        let matching: Vec<_> = self
            .data()
            .contacts
            .iter()
            .filter(|c| c.instance_id == instance_id)
            .filter(|c| !query.only_groups || c.is_group)
            .filter(|c| {
                needle.as_ref().is_none_or(|n| {
                    [
                        c.name.as_deref(),
                        c.push_name.as_deref(),
                        Some(c.number.as_str()),
                    ]
                    .into_iter()
                    .flatten()
                    .any(|v| v.to_lowercase().contains(n))
                })
            })
            .cloned()
            .collect();
        Ok(page(matching, query.limit, query.skip))
    }
}

fn insert_message(data: &mut Data, message: &Message) -> StoreResult<()> {
    if data
        .messages
        .iter()
        .any(|m| m.instance_id == message.instance_id && m.message_id == message.message_id)
    {
        return Err(StoreError::Conflict(format!(
            "message {} exists",
            message.message_id
        )));
    }
    data.messages.push(message.clone());
    Ok(())
}

fn upsert_contact(data: &mut Data, contact: &Contact) -> Contact {
    if let Some(existing) = data
        .contacts
        .iter_mut()
        .find(|c| c.instance_id == contact.instance_id && c.remote_jid == contact.remote_jid)
    {
        existing.number = contact.number.clone();
        existing.is_group = contact.is_group;
        existing.updated_at = contact.updated_at;
        for (field, value) in [
            (&mut existing.name, &contact.name),
            (&mut existing.push_name, &contact.push_name),
            (&mut existing.profile_picture, &contact.profile_picture),
            (&mut existing.about, &contact.about),
        ] {
            if value.is_some() {
                field.clone_from(value);
            }
        }
        if contact.last_activity > existing.last_activity {
            existing.last_activity = contact.last_activity;
        }
        return existing.clone();
    }
    data.contacts.push(contact.clone());
    contact.clone()
}

#[async_trait]
impl ChatStore for MemoryStorage {
    async fn chat_settings(
        &self,
        instance_id: &str,
        remote_jid: &str,
    ) -> StoreResult<Option<ChatSettings>> {
        Ok(self
            .open()?
            .chats
            .iter()
            .find(|c| c.instance_id == instance_id && c.remote_jid == remote_jid)
            .cloned())
    }

    async fn chat_settings_of(
        &self,
        instance_id: &str,
        remote_jids: &[String],
    ) -> StoreResult<Vec<ChatSettings>> {
        Ok(self
            .open()?
            .chats
            .iter()
            .filter(|c| c.instance_id == instance_id && remote_jids.contains(&c.remote_jid))
            .cloned()
            .collect())
    }

    async fn put_chat_settings(&self, chat: &ChatSettings) -> StoreResult<()> {
        let mut data = self.open()?;
        match data
            .chats
            .iter_mut()
            .find(|c| c.instance_id == chat.instance_id && c.remote_jid == chat.remote_jid)
        {
            Some(known) => {
                let id = known.id.clone();
                *known = ChatSettings { id, ..chat.clone() };
            }
            None => data.chats.push(chat.clone()),
        }
        Ok(())
    }

    async fn labels(&self, instance_id: &str) -> StoreResult<Vec<Label>> {
        let mut labels: Vec<Label> = self
            .open()?
            .labels
            .iter()
            .filter(|l| l.instance_id == instance_id)
            .cloned()
            .collect();
        crate::domain::chat::sort_labels(&mut labels);
        Ok(labels)
    }

    async fn put_label(&self, label: &Label) -> StoreResult<()> {
        let mut data = self.open()?;
        match data
            .labels
            .iter_mut()
            .find(|l| l.instance_id == label.instance_id && l.label_id == label.label_id)
        {
            Some(known) => {
                let (id, created_at) = (known.id.clone(), known.created_at);
                *known = Label {
                    id,
                    created_at,
                    ..label.clone()
                };
            }
            None => data.labels.push(label.clone()),
        }
        Ok(())
    }

    async fn delete_label(&self, instance_id: &str, label_id: &str) -> StoreResult<bool> {
        let mut data = self.open()?;
        let before = data.labels.len();
        data.labels
            .retain(|l| !(l.instance_id == instance_id && l.label_id == label_id));
        Ok(data.labels.len() != before)
    }
}

#[async_trait]
impl TransferStore for MemoryStorage {
    async fn export_records(
        &self,
        kind: RecordKind,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<Record>> {
        let data = self.open()?;
        let mut records: Vec<Record> = match kind {
            RecordKind::Users => data.users.iter().cloned().map(Record::User).collect(),
            RecordKind::Instances => data
                .instances
                .iter()
                .cloned()
                .map(Record::Instance)
                .collect(),
            RecordKind::Activity => data
                .activity
                .iter()
                .cloned()
                .map(Record::Activity)
                .collect(),
            RecordKind::Events => data.events.iter().cloned().map(Record::Event).collect(),
            RecordKind::Messages => data
                .messages
                .iter()
                .map(|m| Record::Message {
                    read_by_me: data
                        .read
                        .contains(&(m.instance_id.clone(), m.message_id.clone())),
                    message: Box::new(m.clone()),
                })
                .collect(),
            RecordKind::Contacts => data.contacts.iter().cloned().map(Record::Contact).collect(),
            RecordKind::Usage => data
                .usage
                .iter()
                .map(|(k, u)| Record::Usage(k.clone(), *u))
                .collect(),
            RecordKind::Chats => data.chats.iter().cloned().map(Record::Chat).collect(),
            RecordKind::Labels => data.labels.iter().cloned().map(Record::Label).collect(),
            RecordKind::WabaAccounts | RecordKind::WabaChats | RecordKind::WabaMessages => {
                self.export_waba(kind)
            }
        };
        records.retain(|r| after.is_none_or(|a| r.key().as_str() > a));
        records.sort_by_key(Record::key);
        records.truncate(limit as usize);
        Ok(records)
    }

    async fn import_records(&self, records: &[Record]) -> StoreResult<()> {
        let mut data = self.open()?;
        for record in records {
            match record.clone() {
                Record::User(u) => {
                    if data
                        .users
                        .iter()
                        .any(|known| known.id == u.id || known.email == u.email)
                    {
                        return Err(StoreError::Conflict(format!("user {} exists", u.id)));
                    }
                    data.users.push(u)
                }
                Record::Instance(i) => {
                    if data.instances.iter().any(|known| known.id == i.id) {
                        return Err(StoreError::Conflict(format!("instance {} exists", i.id)));
                    }
                    data.instances.push(i)
                }
                Record::Activity(a) => data.activity.push(a),
                Record::Event(e) => data.events.push(e),
                Record::Message {
                    message,
                    read_by_me,
                } => {
                    if read_by_me {
                        data.read
                            .insert((message.instance_id.clone(), message.message_id.clone()));
                    }
                    data.messages.push(*message);
                }
                Record::Contact(c) => data.contacts.push(c),
                Record::Usage(k, u) => {
                    if data.usage.contains_key(&k) {
                        return Err(StoreError::Conflict("usage bucket exists".into()));
                    }
                    data.usage.insert(k, u);
                }
                Record::Chat(c) => {
                    if data.chats.iter().any(|known| {
                        known.id == c.id
                            || (known.instance_id == c.instance_id
                                && known.remote_jid == c.remote_jid)
                    }) {
                        return Err(StoreError::Conflict(format!("chat {} exists", c.id)));
                    }
                    data.chats.push(c)
                }
                Record::Label(l) => {
                    if data.labels.iter().any(|known| {
                        known.id == l.id
                            || (known.instance_id == l.instance_id && known.label_id == l.label_id)
                    }) {
                        return Err(StoreError::Conflict(format!("label {} exists", l.id)));
                    }
                    data.labels.push(l)
                }
                waba @ (Record::WabaAccount(_) | Record::WabaChat(_) | Record::WabaMessage(_)) => {
                    self.import_waba(waba)?
                }
            }
        }
        Ok(())
    }

    async fn count_records(&self) -> StoreResult<RecordCounts> {
        let (waba_accounts, waba_chats, waba_messages) = self.waba_counts();
        let data = self.open()?;
        Ok(RecordCounts {
            users: data.users.len() as u64,
            instances: data.instances.len() as u64,
            activity: data.activity.len() as u64,
            events: data.events.len() as u64,
            messages: data.messages.len() as u64,
            contacts: data.contacts.len() as u64,
            usage: data.usage.len() as u64,
            waba_accounts,
            waba_chats,
            waba_messages,
            chats: data.chats.len() as u64,
            labels: data.labels.len() as u64,
        })
    }

    async fn clear_all(&self) -> StoreResult<()> {
        *self.open()? = Data::default();
        self.clear_waba();
        Ok(())
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    fn provider(&self) -> &'static str {
        "memory"
    }

    fn embedded(&self) -> bool {
        true
    }

    async fn ping(&self) -> StoreResult<()> {
        self.open().map(|_| ())
    }

    async fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

pub mod keys;
mod waba;
