//! Messages, chats and contacts on MongoDB.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::ClientSession;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{Binary, Bson, Document, doc};
use mongodb::options::ReturnDocument;
use wagate_actors::domain::{
    ChatSummary, Contact, ContactQuery, HistoryQuery, InstanceEvent, Message, MessageStatus,
    Reaction, StatusReport,
};
use wagate_actors::domain::{Page, new_id};
use wagate_actors::error::StoreError;
use wagate_actors::store::{Committed, StoreResult};
use wagate_actors::store::{ContactStore, MessageStore};

use super::commits::{Job, Write};
use super::tx::{TxError, in_session, in_transaction};
use super::{
    CONTACTS, EVENTS, Fields, MESSAGES, MongoStorage, clamp_i64, corrupt, date, date_range,
    event_doc, find_page, forward_only_status, is_duplicate_key, map_err, to_bson,
};
use crate::storage::StatusChange;

fn bson_of(v: &impl serde::Serialize) -> StoreResult<Bson> {
    mongodb::bson::to_bson(v).map_err(corrupt)
}

/// A message's secret as stored: binary.
fn secret_bson(secret: Option<&[u8]>) -> Option<Binary> {
    secret.map(|s| Binary {
        subtype: BinarySubtype::Generic,
        bytes: s.to_vec(),
    })
}

pub(super) fn message_doc(m: &Message) -> StoreResult<Document> {
    Ok(doc! {
        "_id": &m.id,
        "instanceId": &m.instance_id,
        "messageId": &m.message_id,
        "remoteJid": &m.remote_jid,
        "fromMe": m.from_me,
        "messageType": &m.message_type,
        "content": m.content.as_deref(),
        "hasMedia": m.has_media,
        "mediaUrl": m.media_url.as_deref(),
        "caption": m.caption.as_deref(),
        "mimeType": m.mime_type.as_deref(),
        "fileName": m.file_name.as_deref(),
        "mediaPath": m.media_path.as_deref(),
        "mediaSize": m.media_size.map(clamp_i64),
        "status": m.status.as_str(),
        "pushName": m.push_name.as_deref(),
        "metadata": to_bson(&m.metadata)?,
        "ts": date(m.timestamp),
        "createdAt": date(m.created_at),
        "updatedAt": date(m.updated_at),
        "statusUpdatedAt": m.status_updated_at.map(date),
        "quotedMessageId": m.quoted_message_id.as_deref(),
        "mentions": bson_of(&m.mentions)?,
        "reactions": bson_of(&m.reactions)?,
        "editedAt": m.edited_at.map(date),
        "revoked": m.revoked,
        "typed": bson_of(&m.typed)?,
        "messageSecret": secret_bson(m.message_secret.as_deref()),
        // Inbound messages the account has read (drives chats' unreadCount).
        "readByMe": false,
    })
}

pub(super) fn message_from_doc(d: &Document) -> StoreResult<Message> {
    let f = Fields(d);
    Ok(Message {
        id: f.string("_id")?,
        instance_id: f.string("instanceId")?,
        message_id: f.string("messageId")?,
        remote_jid: f.string("remoteJid")?,
        from_me: f.bool("fromMe")?,
        message_type: f.string("messageType")?,
        content: f.opt_string("content")?,
        has_media: f.bool("hasMedia")?,
        media_url: f.opt_string("mediaUrl")?,
        caption: f.opt_string("caption")?,
        mime_type: f.opt_string("mimeType")?,
        file_name: f.opt_string("fileName")?,
        media_path: f.opt_string("mediaPath")?,
        media_size: f.opt_i64("mediaSize")?.map(|s| s.max(0) as u64),
        status: f.parsed("status")?,
        push_name: f.opt_string("pushName")?,
        metadata: f.json("metadata")?,
        timestamp: f.time("ts")?,
        created_at: f.time("createdAt")?,
        updated_at: f.time("updatedAt")?,
        status_updated_at: f.opt_time("statusUpdatedAt")?,
        quoted_message_id: f.opt_string("quotedMessageId")?,
        mentions: f.list("mentions")?,
        reactions: f.list("reactions")?,
        edited_at: f.opt_time("editedAt")?,
        // Absent from messages stored before deletions were kept.
        revoked: d.get_bool("revoked").unwrap_or(false),
        typed: match d.get("typed") {
            None | Some(Bson::Null) => Default::default(),
            Some(b) => mongodb::bson::from_bson(b.clone()).map_err(corrupt)?,
        },
        message_secret: d.get_binary_generic("messageSecret").ok().cloned(),
    })
}

pub(super) fn contact_from_doc(d: &Document) -> StoreResult<Contact> {
    let f = Fields(d);
    Ok(Contact {
        id: f.string("_id")?,
        instance_id: f.string("instanceId")?,
        remote_jid: f.string("remoteJid")?,
        number: f.string("number")?,
        name: f.opt_string("name")?,
        push_name: f.opt_string("pushName")?,
        is_group: f.bool("isGroup")?,
        profile_picture: f.opt_string("profilePicture")?,
        about: f.opt_string("about")?,
        last_activity: f.opt_time("lastActivity")?,
        created_at: f.time("createdAt")?,
        updated_at: f.time("updatedAt")?,
    })
}

fn history_filter(instance_id: &str, remote_jid: &str, q: &HistoryQuery) -> Document {
    let mut filter = doc! {"instanceId": instance_id, "remoteJid": remote_jid};
    if let Some(range) = date_range(q.start, q.end) {
        filter.insert("ts", range);
    }
    filter
}

/// A count from an aggregation (`$sum` answers Int32 or Int64, as the server likes).
fn count_of(d: &Document, key: &str) -> StoreResult<u64> {
    Ok(Fields(d).opt_i64(key)?.unwrap_or(0).max(0) as u64)
}

impl Write {
    /// A message to record with its contact and event, as documents.
    pub(super) fn of(
        m: &Message,
        contact: Option<&Contact>,
        event: &InstanceEvent,
    ) -> StoreResult<Self> {
        Ok(Write {
            message: message_doc(m)?,
            contact: contact.cloned(),
            event: event_doc(event)?,
        })
    }
}

#[async_trait]
impl MessageStore for MongoStorage {
    async fn insert_message(&self, m: &Message) -> StoreResult<()> {
        self.coll(MESSAGES)?
            .insert_one(message_doc(m)?)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    /// One transaction (see [`Tx`]).
    async fn record_message(
        &self,
        m: &Message,
        contact: Option<&Contact>,
        event: &InstanceEvent,
    ) -> StoreResult<()> {
        self.record_docs(&message_doc(m)?, contact, &event_doc(event)?)
            .await
    }

    /// Queued for the [`CommitQueue`], which writes what gathered in one transaction.
    async fn record_message_then(
        &self,
        m: &Message,
        contact: Option<&Contact>,
        event: &InstanceEvent,
        done: Committed,
    ) {
        let Some(queue) = &self.commits else {
            return done(self.record_message(m, contact, event).await);
        };
        match Write::of(m, contact, event) {
            Ok(write) => {
                let write = Box::new(write);
                queue.enqueue(Job::Record { write, done }).await
            }
            Err(e) => done(Err(e)),
        }
    }

    /// Queued for the [`CommitQueue`], behind the messages queued before it.
    async fn advance_message_status_then(
        &self,
        instance_id: &str,
        message_id: &str,
        status: MessageStatus,
        at: DateTime<Utc>,
        report: &StatusReport,
        done: Committed<Option<InstanceEvent>>,
    ) {
        let Some(queue) = &self.commits else {
            return done(
                self.advance_message_status(instance_id, message_id, status, at, report)
                    .await,
            );
        };
        let change = StatusChange::new(instance_id, message_id, status, at, report);
        queue.enqueue(Job::Status { change, done }).await;
    }

    async fn message_by_id(
        &self,
        instance_id: &str,
        message_id: &str,
    ) -> StoreResult<Option<Message>> {
        self.coll(MESSAGES)?
            .find_one(doc! {"instanceId": instance_id, "messageId": message_id})
            .await
            .map_err(map_err)?
            .as_ref()
            .map(message_from_doc)
            .transpose()
    }

    async fn set_message_reactions(
        &self,
        instance_id: &str,
        message_id: &str,
        reactions: &[Reaction],
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = self
            .coll(MESSAGES)?
            .update_one(
                doc! {"instanceId": instance_id, "messageId": message_id},
                doc! {"$set": {"reactions": bson_of(&reactions)?, "updatedAt": date(at)}},
            )
            .await
            .map_err(map_err)?;
        Ok(done.matched_count > 0)
    }

    /// One transaction (see [`Tx`]).
    async fn rewrite_message(&self, m: &Message, event: &InstanceEvent) -> StoreResult<bool> {
        let filter = doc! {"instanceId": &m.instance_id, "messageId": &m.message_id};
        let update = doc! {"$set": {
            "content": m.content.as_deref(),
            "caption": m.caption.as_deref(),
            "hasMedia": m.has_media,
            "mediaUrl": m.media_url.as_deref(),
            "mediaPath": m.media_path.as_deref(),
            "mediaSize": m.media_size.map(clamp_i64),
            "editedAt": m.edited_at.map(date),
            "revoked": m.revoked,
            "typed": bson_of(&m.typed)?,
            "updatedAt": date(m.updated_at),
        }};
        let event = event_doc(event)?;
        let (messages, events) = (self.coll(MESSAGES)?, self.coll(EVENTS)?);
        in_transaction!(&self.client, |session| async {
            let done = in_session!(
                session.as_deref_mut(),
                messages.update_one(filter.clone(), update.clone())
            )?;
            in_session!(session, events.insert_one(&event))?;
            Ok(done.matched_count > 0)
        }
        .await)
        .await
    }

    async fn pending_sends(&self, instance_id: &str) -> StoreResult<Vec<String>> {
        // `_id` is time-ordered: with `createdAt`, the order they were queued in.
        let pending: Vec<Document> = self
            .coll(MESSAGES)?
            .find(doc! {"instanceId": instance_id, "fromMe": true, "status": "pending"})
            .sort(doc! {"createdAt": 1, "_id": 1})
            .projection(doc! {"messageId": 1})
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        pending
            .iter()
            .map(|d| Fields(d).string("messageId"))
            .collect()
    }

    /// One transaction (see [`Tx`]).
    async fn settle_pending_send(&self, m: &Message, event: &InstanceEvent) -> StoreResult<bool> {
        let filter =
            doc! {"instanceId": &m.instance_id, "messageId": &m.message_id, "status": "pending"};
        let update = doc! {"$set": {
            "status": m.status.as_str(),
            "statusUpdatedAt": m.status_updated_at.map(date),
            "ts": date(m.timestamp),
            "metadata": to_bson(&m.metadata)?,
            "messageSecret": secret_bson(m.message_secret.as_deref()),
            "updatedAt": date(m.updated_at),
        }};
        let event = event_doc(event)?;
        let (messages, events) = (self.coll(MESSAGES)?, self.coll(EVENTS)?);
        in_transaction!(&self.client, |session| async {
            let done = in_session!(
                session.as_deref_mut(),
                messages.update_one(filter.clone(), update.clone())
            )?;
            let settled = done.matched_count > 0;
            if settled {
                in_session!(session, events.insert_one(&event))?;
            }
            Ok(settled)
        }
        .await)
        .await
    }

    /// One transaction (see [`Tx`]).
    async fn forget_message(
        &self,
        instance_id: &str,
        message_id: &str,
        event: &InstanceEvent,
    ) -> StoreResult<bool> {
        let filter = doc! {"instanceId": instance_id, "messageId": message_id};
        let event = event_doc(event)?;
        let (messages, events) = (self.coll(MESSAGES)?, self.coll(EVENTS)?);
        in_transaction!(&self.client, |session| async {
            let done = in_session!(session.as_deref_mut(), messages.delete_one(filter.clone()))?;
            in_session!(session, events.insert_one(&event))?;
            Ok(done.deleted_count > 0)
        }
        .await)
        .await
    }

    /// One transaction (see [`Tx`]).
    async fn advance_message_status(
        &self,
        instance_id: &str,
        message_id: &str,
        status: MessageStatus,
        at: DateTime<Utc>,
        report: &StatusReport,
    ) -> StoreResult<Option<InstanceEvent>> {
        self.advance(&StatusChange::new(
            instance_id,
            message_id,
            status,
            at,
            report,
        ))
        .await
    }

    async fn chat_history(
        &self,
        instance_id: &str,
        remote_jid: &str,
        q: &HistoryQuery,
    ) -> StoreResult<Page<Message>> {
        let messages = self.coll(MESSAGES)?;
        let filter = history_filter(instance_id, remote_jid, q);
        find_page(
            &messages,
            filter,
            doc! {"ts": -1, "_id": -1},
            q.limit,
            q.skip,
            message_from_doc,
        )
        .await
    }

    async fn list_chats(
        &self,
        instance_id: &str,
        limit: u32,
        skip: u64,
    ) -> StoreResult<Page<ChatSummary>> {
        let messages = self.coll(MESSAGES)?;
        let totals: Vec<Document> = messages
            .aggregate([
                doc! {"$match": {"instanceId": instance_id}},
                doc! {"$group": {"_id": "$remoteJid"}},
                doc! {"$count": "chats"},
            ])
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        let total = totals
            .first()
            .map(|d| count_of(d, "chats"))
            .transpose()?
            .unwrap_or(0);
        if limit == 0 {
            return Ok(Page {
                items: Vec::new(),
                total,
            });
        }
        // Newest message first, so `$first` of each chat is its latest message.
        let chats: Vec<Document> = messages
            .aggregate([
                doc! {"$match": {"instanceId": instance_id}},
                doc! {"$sort": {"ts": -1, "_id": -1}},
                doc! {"$group": {
                    "_id": "$remoteJid",
                    "last": {"$first": "$$ROOT"},
                    "lastTs": {"$first": "$ts"},
                    "messageCount": {"$sum": 1},
                    "unread": {"$sum": {"$cond": [
                        {"$and": [{"$eq": ["$fromMe", false]}, {"$eq": ["$readByMe", false]}]},
                        1,
                        0,
                    ]}},
                }},
                doc! {"$sort": {"lastTs": -1, "_id": 1}},
                doc! {"$skip": clamp_i64(skip)},
                doc! {"$limit": i64::from(limit)},
            ])
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        let mut items = Vec::with_capacity(chats.len());
        for chat in &chats {
            let last = chat.get_document("last").map_err(corrupt)?;
            items.push(ChatSummary {
                remote_jid: Fields(chat).string("_id")?,
                last_message: message_from_doc(last)?,
                unread_count: count_of(chat, "unread")?,
                message_count: count_of(chat, "messageCount")?,
            });
        }
        Ok(Page { items, total })
    }

    async fn mark_chat_read(
        &self,
        instance_id: &str,
        remote_jid: &str,
    ) -> StoreResult<Vec<String>> {
        let messages = self.coll(MESSAGES)?;
        // Tag what this call marks, then read the tags back: each message is marked by
        // exactly one call (its update is atomic), so two concurrent calls never both
        // report the same message, as with SQLite's UPDATE … RETURNING.
        let mark = new_id();
        messages
            .update_many(
                doc! {
                    "instanceId": instance_id,
                    "remoteJid": remote_jid,
                    "fromMe": false,
                    "readByMe": false,
                },
                doc! {"$set": {"readByMe": true, "readMark": &mark}},
            )
            .await
            .map_err(map_err)?;
        let marked: Vec<Document> = messages
            .find(doc! {"instanceId": instance_id, "remoteJid": remote_jid, "readMark": &mark})
            .projection(doc! {"messageId": 1})
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        marked
            .iter()
            .map(|d| Fields(d).string("messageId"))
            .collect()
    }
}

/// What contact search matches against, case-folded for every script (MongoDB's `i`
/// regex flag folds only what the server's regex engine knows).
fn search_text(c: &Contact) -> String {
    [
        c.name.as_deref(),
        c.push_name.as_deref(),
        Some(c.number.as_str()),
    ]
    .into_iter()
    .flatten()
    .map(str::to_lowercase)
    .collect::<Vec<_>>()
    .join("\n")
}

/// A whole contact document, as an import stores it (the upsert builds its own).
pub(super) fn contact_doc(c: &Contact) -> Document {
    doc! {
        "_id": &c.id,
        "instanceId": &c.instance_id,
        "remoteJid": &c.remote_jid,
        "number": &c.number,
        "name": c.name.as_deref(),
        "pushName": c.push_name.as_deref(),
        "isGroup": c.is_group,
        "profilePicture": c.profile_picture.as_deref(),
        "about": c.about.as_deref(),
        "lastActivity": c.last_activity.map(date),
        "createdAt": date(c.created_at),
        "updatedAt": date(c.updated_at),
        "searchText": search_text(c),
        "sortKey": sort_key(c),
    }
}

/// The display order of contacts: name, else push name, else number, case-folded.
fn sort_key(c: &Contact) -> String {
    c.name
        .as_deref()
        .or(c.push_name.as_deref())
        .unwrap_or(&c.number)
        .to_lowercase()
}

/// A regex matching `text` literally: ASCII punctuation is escaped (a backslash before a
/// non-alphanumeric character is a literal in every regex dialect MongoDB servers use).
fn literal_regex(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for ch in text.chars() {
        if ch.is_ascii_punctuation() || ch == ' ' {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

fn contact_filter(instance_id: &str, q: &ContactQuery) -> Document {
    let mut filter = doc! {"instanceId": instance_id};
    if q.only_groups {
        filter.insert("isGroup", true);
    }
    if let Some(search) = q.search.as_deref().filter(|s| !s.is_empty()) {
        filter.insert(
            "searchText",
            doc! {"$regex": literal_regex(&search.to_lowercase())},
        );
    }
    filter
}

impl MongoStorage {
    /// Inserts many messages in one round trip (copies between providers, imports, test
    /// fixtures). Fails with `Conflict` when a `message_id` is already taken in its
    /// instance; the messages before it are inserted.
    pub async fn insert_messages(&self, messages: &[Message]) -> StoreResult<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let docs = messages
            .iter()
            .map(message_doc)
            .collect::<StoreResult<Vec<_>>>()?;
        self.coll(MESSAGES)?
            .insert_many(docs)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    /// The upsert itself: one atomic `findOneAndUpdate`. Fields given in `c` are set;
    /// those that are None are only written (as null) when the contact is new, so stored
    /// names survive; `lastActivity` only moves forward (`$max`). Then the derived search
    /// fields, only when they changed. Inside `session`'s transaction when one is given.
    pub(super) async fn upsert_contact_once(
        &self,
        c: &Contact,
        mut session: Option<&mut ClientSession>,
    ) -> Result<Contact, TxError> {
        let mut set = doc! {"isGroup": c.is_group, "updatedAt": date(c.updated_at)};
        let mut on_insert = doc! {
            "_id": &c.id,
            "number": &c.number,
            "createdAt": date(c.created_at),
        };
        for (key, value) in [
            ("name", &c.name),
            ("pushName", &c.push_name),
            ("profilePicture", &c.profile_picture),
            ("about", &c.about),
        ] {
            match value {
                Some(v) => set.insert(key, v),
                None => on_insert.insert(key, Bson::Null),
            };
        }
        let mut update = doc! {"$set": set, "$setOnInsert": on_insert};
        match c.last_activity {
            // `$max` against a missing or null field sets it: null sorts below dates.
            Some(at) => update.insert("$max", doc! {"lastActivity": date(at)}),
            None => update
                .get_document_mut("$setOnInsert")
                .map_err(corrupt)?
                .insert("lastActivity", Bson::Null),
        };
        let contacts = self.coll(CONTACTS)?;
        let upsert = contacts
            .find_one_and_update(
                doc! {"instanceId": &c.instance_id, "remoteJid": &c.remote_jid},
                update,
            )
            .upsert(true)
            .return_document(ReturnDocument::After);
        let found = in_session!(session.as_deref_mut(), upsert)?;
        let found = found.ok_or_else(|| corrupt("upsert returned no contact"))?;
        let stored = contact_from_doc(&found)?;
        let derived = doc! {"searchText": search_text(&stored), "sortKey": sort_key(&stored)};
        let unchanged = derived
            .iter()
            .all(|(key, value)| found.get(key) == Some(value));
        if !unchanged {
            let set = contacts.update_one(doc! {"_id": &stored.id}, doc! {"$set": derived});
            in_session!(session, set)?;
        }
        Ok(stored)
    }

    /// [`MessageStore::advance_message_status`] of a change: one transaction (see [`Tx`]).
    pub(super) async fn advance(
        &self,
        change: &StatusChange,
    ) -> StoreResult<Option<InstanceEvent>> {
        let events = self.coll(EVENTS)?;
        in_transaction!(&self.client, |session| async {
            let Some(event) = self.advance_in(change, session.as_deref_mut()).await? else {
                return Ok(None);
            };
            in_session!(session, events.insert_one(event_doc(&event)?))?;
            Ok(Some(event))
        }
        .await)
        .await
    }

    /// The status move of [`MessageStore::advance_message_status`], in `session`'s
    /// transaction when one is given: the event reporting it, to be stored with it, or
    /// None when it changed nothing.
    pub(super) async fn advance_in(
        &self,
        change: &StatusChange,
        session: Option<&mut ClientSession>,
    ) -> Result<Option<InstanceEvent>, TxError> {
        let Some(filter) = forward_only_status(
            doc! {"instanceId": &change.instance_id, "messageId": &change.message_id},
            change.status,
        ) else {
            return Ok(None);
        };
        let update = doc! {"$set": {
            "status": change.status.as_str(),
            "statusUpdatedAt": date(change.at),
            "updatedAt": date(change.at),
        }};
        let messages = self.coll(MESSAGES)?;
        let advance = messages
            .find_one_and_update(filter, update)
            .return_document(ReturnDocument::After);
        let Some(found) = in_session!(session, advance)? else {
            return Ok(None);
        };
        let message = message_from_doc(&found)?;
        Ok(Some(change.report.event(&message)))
    }

    /// [`MessageStore::record_message`] of documents: one transaction (see [`Tx`]).
    pub(super) async fn record_docs(
        &self,
        message: &Document,
        contact: Option<&Contact>,
        event: &Document,
    ) -> StoreResult<()> {
        in_transaction!(&self.client, |session| self
            .record_writes(session, message, contact, event)
            .await)
        .await
    }

    /// The writes of [`MessageStore::record_message`], in `session`'s transaction when one
    /// is given.
    async fn record_writes(
        &self,
        mut session: Option<&mut ClientSession>,
        message: &Document,
        contact: Option<&Contact>,
        event: &Document,
    ) -> Result<(), TxError> {
        let messages = self.coll(MESSAGES)?;
        in_session!(session.as_deref_mut(), messages.insert_one(message))?;
        if let Some(c) = contact {
            match self.upsert_contact_once(c, session.as_deref_mut()).await {
                // A new contact raced by another writer hits the unique index: not a
                // duplicate message. In a transaction (aborted by the error) the whole
                // of it is tried again; without one the retry updates the winner's
                // document, as `upsert_contact` does.
                Err(TxError::Mongo(e)) if is_duplicate_key(&e) => match session.as_deref_mut() {
                    Some(_) => return Err(TxError::ContactRace),
                    None => {
                        self.upsert_contact_once(c, None).await?;
                    }
                },
                other => {
                    other?;
                }
            }
        }
        let events = self.coll(EVENTS)?;
        in_session!(session, events.insert_one(event))?;
        Ok(())
    }
}

#[async_trait]
impl ContactStore for MongoStorage {
    async fn upsert_contact(&self, c: &Contact) -> StoreResult<Contact> {
        // Two concurrent upserts of a new contact may both try to insert; the loser hits
        // the unique index and, retried, finds the winner's document to update.
        match self
            .upsert_contact_once(c, None)
            .await
            .map_err(StoreError::from)
        {
            Err(StoreError::Conflict(_)) => Ok(self.upsert_contact_once(c, None).await?),
            other => other,
        }
    }

    async fn list_contacts(
        &self,
        instance_id: &str,
        q: &ContactQuery,
    ) -> StoreResult<Page<Contact>> {
        let contacts = self.coll(CONTACTS)?;
        let filter = contact_filter(instance_id, q);
        find_page(
            &contacts,
            filter,
            doc! {"sortKey": 1, "_id": 1},
            q.limit,
            q.skip,
            contact_from_doc,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::literal_regex;

    #[test]
    fn search_text_is_matched_literally() {
        assert_eq!(literal_regex("100%"), "100\\%");
        assert_eq!(literal_regex("a.b*c"), "a\\.b\\*c");
        assert_eq!(literal_regex("ваня"), "ваня");
        assert_eq!(literal_regex("(x) [y]"), "\\(x\\)\\ \\[y\\]");
    }
}
