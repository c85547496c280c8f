//! MongoDB storage on the official `mongodb` driver: one database (named by
//! `DATABASE_URL`), one collection per kind of record, indexes created idempotently at
//! connect.
//!
//! - this file: connection, error mapping, document helpers; users, instances, activity,
//!   events;
//! - [`messaging`]: messages, chats and contacts.
//! - [`stats`]: daily usage buckets.
//! - [`outbox`]: the webhook outbox a cluster's nodes share; [`feed`]: the events
//!   other nodes store, to this node's live streams.
//! - [`media`]: the media files a cluster's nodes share (GridFS).
//! - [`transfer`]: whole-store export, import, counts and clearing (provider switches).
//!
//! Conventions, so every collection reads alike:
//! - `_id` is the domain id (a time-ordered UUID v7 string), so sorting by `_id` is
//!   creation order, as `ORDER BY id` is on SQLite;
//! - field names are camelCase;
//! - instants are BSON dates (millisecond precision, the precision every backend keeps);
//! - free-form JSON (activity details, event data, message metadata) is stored as native
//!   BSON, so it can be inspected and queried with ordinary MongoDB tools;
//! - multi-document transactions only where a message is recorded with its contact and
//!   event ([`MessageStore::record_message`](wagate_actors::store::MessageStore)), and only
//!   on a deployment that has them (a replica set; a standalone `mongod` has none, and
//!   there those writes run in order, unprotected against a crash between them).
//!   Cascading deletes remove the dependents first, so an interrupted delete leaves the
//!   instance in place and a retry finishes it.

mod chats;
pub mod cluster;
mod commits;
pub mod feed;
pub mod media;
mod messaging;
pub mod outbox;
mod stats;
mod transfer;
mod tx;
mod waba;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::error::{Error as MongoError, ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use wagate_actors::domain::{
    ActivityEntry, ActivityQuery, EventQuery, Instance, InstanceEvent, InstanceStatus, LimitPeriod,
    Limits, MessageStatus, Page, Role, User, WebhookOrdering, WebhookSettings,
};
use wagate_actors::error::StoreError;
use wagate_actors::store::{
    ActivityStore, EventStore, InstanceStore, Storage, StoreResult, UserStore,
};

use self::commits::CommitQueue;
use super::from_millis;

/// How long an operation waits for a reachable server before failing with `Unavailable`
/// (then 503), unless `DATABASE_URL` sets `serverSelectionTimeoutMS`. The driver's default
/// is 30 s; a dead database should answer quickly, so health checks and requests fail
/// fast instead of hanging.
pub const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// How long opening one TCP connection (and its handshake) may take, unless
/// `DATABASE_URL` sets `connectTimeoutMS`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// MongoDB's error code for a unique index violation.
pub(crate) const DUPLICATE_KEY: i32 = 11000;

const USERS: &str = "users";
const INSTANCES: &str = "instances";
const ACTIVITY: &str = "activity";
const EVENTS: &str = "events";
const MESSAGES: &str = "messages";
const CONTACTS: &str = "contacts";

/// MongoDB implementation of every storage trait. Cheap to clone (client handles).
#[derive(Clone, Debug)]
pub struct MongoStorage {
    client: Client,
    db: Database,
    /// Set by [`Storage::close`]: later calls fail with `Unavailable` instead of reaching a
    /// driver that has been shut down.
    closed: Arc<AtomicBool>,
    /// Where pipelined messages and receipts are queued to be written in batches, one
    /// transaction each. None on a deployment without transactions (each is written on
    /// its own there), and in the copy the queue's own task writes through (so the task
    /// ends with the last handle).
    commits: Option<CommitQueue>,
}

impl MongoStorage {
    /// Connects to `url` (`mongodb://user:pass@host:port/database`), checks that the server
    /// answers and creates the indexes (idempotently).
    ///
    /// Fails with `Unavailable` when the URL is invalid or names no database, or the server
    /// cannot be reached within [`SERVER_SELECTION_TIMEOUT`].
    pub async fn connect(url: &str) -> Result<MongoStorage, StoreError> {
        let (options, name) = client_options(url).await?;
        let client = Client::with_options(options).map_err(map_err)?;
        let mut storage = MongoStorage {
            db: client.database(&name),
            client,
            closed: Arc::new(AtomicBool::new(false)),
            commits: None,
        };
        storage.ping().await?;
        storage.create_indexes().await?;
        if storage.has_transactions().await {
            storage.commits = Some(CommitQueue::start(storage.clone()));
        }
        Ok(storage)
    }

    /// Stores one event document.
    async fn insert_event_doc(&self, event: &Document) -> StoreResult<()> {
        self.coll(EVENTS)?
            .insert_one(event)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    /// Whether the deployment has multi-document transactions: a replica set (`setName`
    /// in `hello`) or a sharded cluster's router. A standalone server has none; nor, to
    /// be safe, does one that cannot say.
    async fn has_transactions(&self) -> bool {
        match self
            .client
            .database("admin")
            .run_command(doc! {"hello": 1})
            .await
        {
            Ok(hello) => hello.contains_key("setName") || hello.get_str("msg") == Ok("isdbgrid"),
            Err(err) => {
                tracing::warn!(%err, "cannot ask MongoDB whether it has transactions");
                false
            }
        }
    }

    /// The database this storage lives in (for tools and tests).
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// A collection handle, or `Unavailable` once the storage is closed.
    fn coll(&self, name: &str) -> StoreResult<Collection<Document>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable("storage is closed".into()));
        }
        Ok(self.db.collection(name))
    }

    /// Every index the queries rely on. `createIndexes` with an identical definition is a
    /// no-op, so this runs at every start. Keys are ascending: newest-first listings walk
    /// them backwards.
    async fn create_indexes(&self) -> StoreResult<()> {
        let index = |keys: Document, name: &str, unique: bool| {
            IndexModel::builder()
                .keys(keys)
                .options(
                    IndexOptions::builder()
                        .name(name.to_owned())
                        .unique(unique.then_some(true))
                        .build(),
                )
                .build()
        };
        let plan: [(&str, Vec<IndexModel>); 6] = [
            (
                USERS,
                vec![
                    // Emails are unique case-insensitively: the lower-cased copy carries
                    // the rule (a collation would fold differently on each server).
                    index(doc! {"emailLower": 1}, "users_email_lower", true),
                    index(doc! {"apiKeyHash": 1}, "users_api_key_hash", true),
                    index(doc! {"createdAt": 1, "_id": 1}, "users_by_creation", false),
                ],
            ),
            (
                INSTANCES,
                vec![index(
                    doc! {"userId": 1, "_id": 1},
                    "instances_by_user",
                    false,
                )],
            ),
            (
                ACTIVITY,
                vec![index(
                    doc! {"instanceId": 1, "createdAt": 1, "_id": 1},
                    "activity_by_instance",
                    false,
                )],
            ),
            (
                EVENTS,
                vec![
                    index(
                        doc! {"instanceId": 1, "_id": 1},
                        "events_by_instance",
                        false,
                    ),
                    index(
                        doc! {"instanceId": 1, "ts": 1},
                        "events_by_instance_ts",
                        false,
                    ),
                ],
            ),
            (
                MESSAGES,
                vec![
                    index(
                        doc! {"instanceId": 1, "messageId": 1},
                        "messages_by_wa_id",
                        true,
                    ),
                    // History of one chat, newest first, optionally within a date range.
                    index(
                        doc! {"instanceId": 1, "remoteJid": 1, "ts": 1, "_id": 1},
                        "messages_by_chat",
                        false,
                    ),
                    // The send queue of a paced instance: its pending outbound messages.
                    index(
                        doc! {"instanceId": 1, "status": 1, "createdAt": 1, "_id": 1},
                        "messages_by_status",
                        false,
                    ),
                ],
            ),
            (
                CONTACTS,
                vec![
                    index(
                        doc! {"instanceId": 1, "remoteJid": 1},
                        "contacts_by_jid",
                        true,
                    ),
                    index(
                        doc! {"instanceId": 1, "sortKey": 1, "_id": 1},
                        "contacts_by_name",
                        false,
                    ),
                ],
            ),
        ];
        for (collection, indexes) in plan {
            self.coll(collection)?
                .create_indexes(indexes)
                .await
                .map_err(map_err)?;
        }
        waba::create_indexes(self).await?;
        chats::create_indexes(self).await
    }
}

/// The driver's options for `url` and the database it names. Our short timeouts apply
/// where the URL sets none (`serverSelectionTimeoutMS`, `connectTimeoutMS` win).
///
/// Fails with `Unavailable` when the URL is invalid or names no database.
pub(crate) async fn client_options(url: &str) -> Result<(ClientOptions, String), StoreError> {
    let mut options = ClientOptions::parse(url)
        .await
        .map_err(|e| StoreError::Unavailable(format!("invalid DATABASE_URL: {e}")))?;
    let Some(name) = options.default_database.clone().filter(|n| !n.is_empty()) else {
        return Err(StoreError::Unavailable(
            "DATABASE_URL names no database: use mongodb://user:pass@host:port/database".into(),
        ));
    };
    options
        .server_selection_timeout
        .get_or_insert(SERVER_SELECTION_TIMEOUT);
    options.connect_timeout.get_or_insert(CONNECT_TIMEOUT);
    options.app_name.get_or_insert_with(|| "wagate".to_owned());
    Ok((options, name))
}

/// Maps driver errors onto the seam's three kinds.
pub(crate) fn map_err(e: MongoError) -> StoreError {
    if is_duplicate_key(&e) {
        return StoreError::Conflict(e.to_string());
    }
    match e.kind.as_ref() {
        // Stored documents that do not decode, or values that do not encode: a bug or
        // corrupted data, not something a retry fixes.
        ErrorKind::BsonDeserialization(_) | ErrorKind::BsonSerialization(_) => {
            StoreError::Corrupt(e.to_string())
        }
        _ => StoreError::Unavailable(e.to_string()),
    }
}

pub(crate) fn is_duplicate_key(e: &MongoError) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(m) => m
            .write_errors
            .iter()
            .flatten()
            .any(|w| w.code == DUPLICATE_KEY),
        _ => false,
    }
}

pub(crate) fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// An instant as a BSON date (milliseconds, like every backend).
/// `filter` narrowed to the statuses that may become `status` (the forward-only rule of
/// `MessageStatus::predecessors`), for one conditional update that concurrent receipts
/// cannot move backwards. None when nothing may become `status`.
pub(crate) fn forward_only_status(mut filter: Document, status: MessageStatus) -> Option<Document> {
    let allowed: Vec<&str> = status
        .predecessors()
        .into_iter()
        .map(MessageStatus::as_str)
        .collect();
    if allowed.is_empty() {
        return None;
    }
    filter.insert("status", doc! {"$in": allowed});
    Some(filter)
}

pub(crate) fn date(t: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(t.timestamp_millis())
}

/// An inclusive range of instants, as the filter of a date field: `$gte start` and
/// `$lt end + 1 ms`. The same set (dates are whole milliseconds), written in the form whose
/// index bounds every server gets right: SecantusDB, the test server, drops the documents
/// equal to an inclusive upper bound when the field is followed by others in a compound
/// index. None when neither end is given.
pub(crate) fn date_range(
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
) -> Option<Document> {
    let mut range = Document::new();
    if let Some(start) = start {
        range.insert("$gte", date(start));
    }
    if let Some(end) = end {
        range.insert(
            "$lt",
            bson::DateTime::from_millis(end.timestamp_millis().saturating_add(1)),
        );
    }
    (!range.is_empty()).then_some(range)
}

/// Free-form JSON as native BSON.
pub(crate) fn to_bson(v: &serde_json::Value) -> StoreResult<Bson> {
    bson::to_bson(v).map_err(corrupt)
}

/// Limits and offsets from the API are unsigned; MongoDB counts in i64.
pub(crate) fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One page of the documents matching `filter`, in `sort` order, and the number of all
/// matches. MongoDB reads limit 0 as "no limit"; the seam means "nothing", so that is an
/// empty page without a query.
pub(crate) async fn find_page<T>(
    coll: &Collection<Document>,
    filter: Document,
    sort: Document,
    limit: u32,
    skip: u64,
    decode: fn(&Document) -> StoreResult<T>,
) -> StoreResult<Page<T>> {
    let total = coll
        .count_documents(filter.clone())
        .await
        .map_err(map_err)?;
    if limit == 0 {
        return Ok(Page {
            items: Vec::new(),
            total,
        });
    }
    let cursor = coll
        .find(filter)
        .sort(sort)
        .skip(skip)
        .limit(i64::from(limit))
        .await
        .map_err(map_err)?;
    Ok(Page {
        items: collect(cursor, decode).await?,
        total,
    })
}

/// Collects a cursor of documents, decoding each with `decode`.
pub(crate) async fn collect<T>(
    cursor: mongodb::Cursor<Document>,
    decode: fn(&Document) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let docs: Vec<Document> = cursor.try_collect().await.map_err(map_err)?;
    docs.iter().map(decode).collect()
}

/// Typed reads of a stored document; anything missing or of the wrong type is `Corrupt`.
/// Optional fields may be absent or null.
pub(crate) struct Fields<'a>(pub &'a Document);

impl Fields<'_> {
    fn get(&self, key: &str) -> Option<&Bson> {
        self.0.get(key).filter(|b| !matches!(b, Bson::Null))
    }

    fn wrong(&self, key: &str) -> StoreError {
        StoreError::Corrupt(format!(
            "field '{key}' missing or of the wrong type in {}",
            self.0.get_str("_id").unwrap_or("a document")
        ))
    }

    pub fn string(&self, key: &str) -> StoreResult<String> {
        self.opt_string(key)?.ok_or_else(|| self.wrong(key))
    }

    pub fn opt_string(&self, key: &str) -> StoreResult<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Bson::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.wrong(key)),
        }
    }

    pub fn bool(&self, key: &str) -> StoreResult<bool> {
        match self.get(key) {
            Some(Bson::Boolean(b)) => Ok(*b),
            _ => Err(self.wrong(key)),
        }
    }

    pub fn opt_i64(&self, key: &str) -> StoreResult<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Bson::Int64(n)) => Ok(Some(*n)),
            Some(Bson::Int32(n)) => Ok(Some(i64::from(*n))),
            Some(_) => Err(self.wrong(key)),
        }
    }

    pub fn time(&self, key: &str) -> StoreResult<DateTime<Utc>> {
        self.opt_time(key)?.ok_or_else(|| self.wrong(key))
    }

    pub fn opt_time(&self, key: &str) -> StoreResult<Option<DateTime<Utc>>> {
        match self.get(key) {
            None | Some(Bson::Null) => Ok(None),
            Some(Bson::DateTime(d)) => from_millis(d.timestamp_millis()).map(Some),
            Some(_) => Err(self.wrong(key)),
        }
    }

    /// Free-form JSON; absent or null reads as JSON null.
    pub fn json(&self, key: &str) -> StoreResult<serde_json::Value> {
        match self.get(key) {
            None => Ok(serde_json::Value::Null),
            Some(b) => bson::from_bson(b.clone()).map_err(corrupt),
        }
    }

    /// A list of typed values; absent or null (documents stored before the field
    /// existed) reads as empty.
    pub fn list<T: serde::de::DeserializeOwned>(&self, key: &str) -> StoreResult<Vec<T>> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(b) => bson::from_bson(b.clone()).map_err(corrupt),
        }
    }

    pub fn parsed<T: std::str::FromStr<Err = String>>(&self, key: &str) -> StoreResult<T> {
        self.string(key)?.parse().map_err(StoreError::Corrupt)
    }

    fn document(&self, key: &str) -> StoreResult<Option<Fields<'_>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Bson::Document(d)) => Ok(Some(Fields(d))),
            Some(_) => Err(self.wrong(key)),
        }
    }
}

fn user_doc(u: &User) -> Document {
    doc! {
        "_id": &u.id,
        "email": &u.email,
        "emailLower": u.email.to_lowercase(),
        "passwordHash": &u.password_hash,
        "firstName": &u.first_name,
        "lastName": &u.last_name,
        "role": u.role.as_str(),
        "ownerId": u.owner_id.as_deref(),
        "active": u.active,
        "apiKeyHash": &u.api_key_hash,
        "apiKeySealed": &u.api_key_sealed,
        "createdAt": date(u.created_at),
        "updatedAt": date(u.updated_at),
    }
}

fn user_from_doc(d: &Document) -> StoreResult<User> {
    let f = Fields(d);
    Ok(User {
        id: f.string("_id")?,
        email: f.string("email")?,
        password_hash: f.string("passwordHash")?,
        first_name: f.string("firstName")?,
        last_name: f.string("lastName")?,
        role: f.parsed::<Role>("role")?,
        owner_id: f.opt_string("ownerId")?,
        active: f.bool("active")?,
        api_key_hash: f.string("apiKeyHash")?,
        api_key_sealed: f.string("apiKeySealed")?,
        created_at: f.time("createdAt")?,
        updated_at: f.time("updatedAt")?,
    })
}

/// Webhook settings as a sub-document. Custom headers are a list of `{name, value}`
/// rather than a map: header names may contain `.` and `$`, which field names should not.
fn webhook_doc(w: &WebhookSettings) -> Document {
    let headers: Vec<Bson> = w
        .headers
        .iter()
        .map(|(name, value)| Bson::Document(doc! {"name": name, "value": value}))
        .collect();
    doc! {
        "notifyReceived": w.notify_received,
        "notifySent": w.notify_sent,
        "notifyDelivery": w.notify_delivery,
        "notifyRead": w.notify_read,
        "notifyPresence": w.notify_presence,
        "rejectCalls": w.reject_calls,
        "rejectCallsMessage": w.reject_calls_message.as_deref(),
        "sendRate": w.send_rate.map(i64::from),
        "maxRetries": i64::from(w.max_retries),
        "retryIntervalMs": clamp_i64(w.retry_interval_ms),
        "secret": w.secret.as_deref(),
        "headers": headers,
        "previousSecret": w.previous_secret.as_deref(),
        "previousSecretUntil": w.previous_secret_until.map(date),
        "paused": w.paused,
        "resumedAt": w.resumed_at.map(date),
        "ordering": w.ordering.as_str(),
    }
}

fn webhook_from_doc(f: &Fields<'_>) -> StoreResult<WebhookSettings> {
    let count = |key: &str| -> StoreResult<i64> { f.opt_i64(key)?.ok_or_else(|| f.wrong(key)) };
    let mut headers = std::collections::BTreeMap::new();
    for h in f.0.get_array("headers").map_err(corrupt)? {
        let Bson::Document(h) = h else {
            return Err(f.wrong("headers"));
        };
        let h = Fields(h);
        headers.insert(h.string("name")?, h.string("value")?);
    }
    Ok(WebhookSettings {
        notify_received: f.bool("notifyReceived")?,
        notify_sent: f.bool("notifySent")?,
        notify_delivery: f.bool("notifyDelivery")?,
        notify_read: f.bool("notifyRead")?,
        // Absent in documents written before presence could be followed.
        notify_presence: f.0.get_bool("notifyPresence").unwrap_or(false),
        // Absent in documents written before calls could be rejected.
        reject_calls: f.0.get_bool("rejectCalls").unwrap_or(false),
        reject_calls_message: f.opt_string("rejectCallsMessage")?,
        // Absent in documents written before sends could be paced.
        send_rate: f
            .opt_i64("sendRate")?
            .map(u32::try_from)
            .transpose()
            .map_err(corrupt)?,
        max_retries: u32::try_from(count("maxRetries")?).map_err(corrupt)?,
        retry_interval_ms: u64::try_from(count("retryIntervalMs")?).map_err(corrupt)?,
        secret: f.opt_string("secret")?,
        headers,
        previous_secret: f.opt_string("previousSecret")?,
        previous_secret_until: f.opt_time("previousSecretUntil")?,
        // Absent in documents written before delivery could be paused.
        paused: f.0.get_bool("paused").unwrap_or(false),
        resumed_at: f.opt_time("resumedAt")?,
        // Absent in documents written before the setting existed.
        ordering: match f.opt_string("ordering")? {
            Some(o) => o.parse().map_err(|_| f.wrong("ordering"))?,
            None => WebhookOrdering::default(),
        },
    })
}

fn limits_doc(l: &Limits) -> Document {
    doc! {
        "maxMessagesSent": l.max_messages_sent.map(clamp_i64),
        "maxApiCalls": l.max_api_calls.map(clamp_i64),
        "period": match l.period {
            LimitPeriod::Day => "day",
            LimitPeriod::Month => "month",
        },
    }
}

fn limits_from_doc(f: &Fields<'_>) -> StoreResult<Limits> {
    let unsigned = |key: &str| -> StoreResult<Option<u64>> {
        f.opt_i64(key)?
            .map(|n| u64::try_from(n).map_err(corrupt))
            .transpose()
    };
    Ok(Limits {
        max_messages_sent: unsigned("maxMessagesSent")?,
        max_api_calls: unsigned("maxApiCalls")?,
        period: match f.string("period")?.as_str() {
            "day" => LimitPeriod::Day,
            "month" => LimitPeriod::Month,
            other => return Err(corrupt(format!("unknown limit period '{other}'"))),
        },
    })
}

/// The fields `update_instance` replaces.
fn instance_editable(i: &Instance) -> Document {
    doc! {
        "name": &i.name,
        "description": i.description.as_deref(),
        "engine": i.engine.as_str(),
        "webhookUrl": i.webhook_url.as_deref(),
        "webhookEnabled": i.webhook_enabled,
        "webhookSettings": webhook_doc(&i.webhook),
        "limits": i.limits.as_ref().map(limits_doc),
        "updatedAt": date(i.updated_at),
    }
}

fn instance_doc(i: &Instance) -> Document {
    let mut d = doc! {
        "_id": &i.id,
        "userId": &i.user_id,
        "status": i.status.as_str(),
        "phone": i.phone.as_deref(),
        "lastActivity": i.last_activity.map(date),
        "createdAt": date(i.created_at),
    };
    d.extend(instance_editable(i));
    d
}

fn instance_from_doc(d: &Document) -> StoreResult<Instance> {
    let f = Fields(d);
    let webhook = f
        .document("webhookSettings")?
        .ok_or_else(|| f.wrong("webhookSettings"))?;
    Ok(Instance {
        id: f.string("_id")?,
        user_id: f.string("userId")?,
        name: f.string("name")?,
        description: f.opt_string("description")?,
        engine: f.parsed("engine")?,
        status: f.parsed("status")?,
        phone: f.opt_string("phone")?,
        webhook_url: f.opt_string("webhookUrl")?,
        webhook_enabled: f.bool("webhookEnabled")?,
        webhook: webhook_from_doc(&webhook)?,
        limits: f
            .document("limits")?
            .map(|l| limits_from_doc(&l))
            .transpose()?,
        last_activity: f.opt_time("lastActivity")?,
        created_at: f.time("createdAt")?,
        updated_at: f.time("updatedAt")?,
    })
}

fn activity_doc(e: &ActivityEntry) -> StoreResult<Document> {
    Ok(doc! {
        "_id": &e.id,
        "instanceId": &e.instance_id,
        "action": &e.action,
        "details": to_bson(&e.details)?,
        "createdAt": date(e.created_at),
    })
}

fn event_doc(e: &InstanceEvent) -> StoreResult<Document> {
    Ok(doc! {
        "_id": &e.id,
        "instanceId": &e.instance_id,
        "kind": e.kind().as_str(),
        "ts": date(e.timestamp),
        "data": to_bson(&e.data_json())?,
    })
}

fn activity_from_doc(d: &Document) -> StoreResult<ActivityEntry> {
    let f = Fields(d);
    Ok(ActivityEntry {
        id: f.string("_id")?,
        instance_id: f.string("instanceId")?,
        action: f.string("action")?,
        details: f.json("details")?,
        created_at: f.time("createdAt")?,
    })
}

pub(crate) fn event_from_doc(d: &Document) -> StoreResult<InstanceEvent> {
    let f = Fields(d);
    InstanceEvent::from_stored(
        f.string("_id")?,
        f.string("instanceId")?,
        &f.string("kind")?,
        f.time("ts")?,
        f.json("data")?,
    )
    .map_err(corrupt)
}

#[async_trait]
impl UserStore for MongoStorage {
    async fn create_user(&self, u: &User) -> StoreResult<()> {
        self.coll(USERS)?
            .insert_one(user_doc(u))
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        self.coll(USERS)?
            .find_one(doc! {"_id": id})
            .await
            .map_err(map_err)?
            .as_ref()
            .map(user_from_doc)
            .transpose()
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        self.coll(USERS)?
            .find_one(doc! {"emailLower": email.to_lowercase()})
            .await
            .map_err(map_err)?
            .as_ref()
            .map(user_from_doc)
            .transpose()
    }

    async fn user_by_api_key_hash(&self, hash: &str) -> StoreResult<Option<User>> {
        self.coll(USERS)?
            .find_one(doc! {"apiKeyHash": hash})
            .await
            .map_err(map_err)?
            .as_ref()
            .map(user_from_doc)
            .transpose()
    }

    async fn list_users(&self, limit: u32, skip: u64) -> StoreResult<Page<User>> {
        let users = self.coll(USERS)?;
        let total = users.count_documents(doc! {}).await.map_err(map_err)?;
        // MongoDB reads limit 0 as "no limit"; the seam means "nothing".
        if limit == 0 {
            return Ok(Page {
                items: Vec::new(),
                total,
            });
        }
        let cursor = users
            .find(doc! {})
            .sort(doc! {"createdAt": 1, "_id": 1})
            .skip(skip)
            .limit(i64::from(limit))
            .await
            .map_err(map_err)?;
        Ok(Page {
            items: collect(cursor, user_from_doc).await?,
            total,
        })
    }

    async fn update_user(&self, u: &User) -> StoreResult<bool> {
        let mut set = user_doc(u);
        set.remove("_id");
        set.remove("createdAt");
        let done = self
            .coll(USERS)?
            .update_one(doc! {"_id": &u.id}, doc! {"$set": set})
            .await
            .map_err(map_err)?;
        Ok(done.matched_count > 0)
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        let done = self
            .coll(USERS)?
            .delete_one(doc! {"_id": id})
            .await
            .map_err(map_err)?;
        Ok(done.deleted_count > 0)
    }

    async fn count_admins(&self) -> StoreResult<u64> {
        self.coll(USERS)?
            .count_documents(doc! {"role": Role::Admin.as_str(), "active": true})
            .await
            .map_err(map_err)
    }
}

#[async_trait]
impl InstanceStore for MongoStorage {
    async fn create_instance(&self, i: &Instance) -> StoreResult<()> {
        self.coll(INSTANCES)?
            .insert_one(instance_doc(i))
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn instance_by_id(&self, id: &str) -> StoreResult<Option<Instance>> {
        self.coll(INSTANCES)?
            .find_one(doc! {"_id": id})
            .await
            .map_err(map_err)?
            .as_ref()
            .map(instance_from_doc)
            .transpose()
    }

    async fn list_instances(&self, user_id: Option<&str>) -> StoreResult<Vec<Instance>> {
        let filter = match user_id {
            Some(uid) => doc! {"userId": uid},
            None => doc! {},
        };
        let cursor = self
            .coll(INSTANCES)?
            .find(filter)
            .sort(doc! {"_id": 1})
            .await
            .map_err(map_err)?;
        collect(cursor, instance_from_doc).await
    }

    async fn instance_ids(&self) -> StoreResult<Vec<String>> {
        let mut cursor = self
            .coll(INSTANCES)?
            .find(doc! {})
            .projection(doc! {"_id": 1})
            .sort(doc! {"_id": 1})
            .await
            .map_err(map_err)?;
        let mut ids = Vec::new();
        while let Some(found) = cursor.try_next().await.map_err(map_err)? {
            if let Ok(id) = found.get_str("_id") {
                ids.push(id.to_owned());
            }
        }
        Ok(ids)
    }

    async fn update_instance(&self, i: &Instance) -> StoreResult<bool> {
        let done = self
            .coll(INSTANCES)?
            .update_one(doc! {"_id": &i.id}, doc! {"$set": instance_editable(i)})
            .await
            .map_err(map_err)?;
        Ok(done.matched_count > 0)
    }

    async fn set_instance_status(
        &self,
        id: &str,
        status: InstanceStatus,
        phone: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut set = doc! {"status": status.as_str(), "lastActivity": date(at)};
        if let Some(phone) = phone {
            set.insert("phone", phone);
        }
        self.coll(INSTANCES)?
            .update_one(doc! {"_id": id}, doc! {"$set": set})
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn delete_instance(&self, id: &str) -> StoreResult<bool> {
        // Dependents first: if this is interrupted the instance is still there, and
        // deleting it again finishes the job.
        for collection in [
            ACTIVITY,
            EVENTS,
            MESSAGES,
            CONTACTS,
            chats::CHATS,
            chats::LABELS,
        ] {
            self.coll(collection)?
                .delete_many(doc! {"instanceId": id})
                .await
                .map_err(map_err)?;
        }
        let done = self
            .coll(INSTANCES)?
            .delete_one(doc! {"_id": id})
            .await
            .map_err(map_err)?;
        Ok(done.deleted_count > 0)
    }
}

/// The activity filters shared by the count and the page query.
fn activity_filter(instance_id: &str, q: &ActivityQuery) -> Document {
    let mut filter = doc! {"instanceId": instance_id};
    if !q.actions.is_empty() {
        filter.insert("action", doc! {"$in": &q.actions});
    }
    if let Some(range) = date_range(q.start, q.end) {
        filter.insert("createdAt", range);
    }
    filter
}

#[async_trait]
impl ActivityStore for MongoStorage {
    async fn append_activity(&self, e: &ActivityEntry) -> StoreResult<()> {
        self.coll(ACTIVITY)?
            .insert_one(activity_doc(e)?)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn list_activity(
        &self,
        instance_id: &str,
        q: &ActivityQuery,
    ) -> StoreResult<Page<ActivityEntry>> {
        let activity = self.coll(ACTIVITY)?;
        let filter = activity_filter(instance_id, q);
        find_page(
            &activity,
            filter,
            doc! {"createdAt": -1, "_id": -1},
            q.limit,
            q.skip,
            activity_from_doc,
        )
        .await
    }
}

#[async_trait]
impl EventStore for MongoStorage {
    /// Behind the writes queued before it, where there is a queue.
    async fn append_event(&self, e: &InstanceEvent) -> StoreResult<()> {
        let event = event_doc(e)?;
        let Some(queue) = &self.commits else {
            return self.insert_event_doc(&event).await;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done = Box::new(move |outcome| {
            // The caller may have given up waiting: nothing to tell then.
            let _ = tx.send(outcome);
        });
        queue.enqueue(commits::Job::Event { event, done }).await;
        rx.await
            .map_err(|_| StoreError::Unavailable("the database's writer has stopped".into()))?
    }

    async fn list_events(
        &self,
        instance_id: &str,
        q: &EventQuery,
    ) -> StoreResult<(Vec<InstanceEvent>, bool)> {
        if q.limit == 0 {
            return Ok((Vec::new(), false));
        }
        let cursor = q.since.is_some() || q.after_id.is_some();
        let mut filter = doc! {"instanceId": instance_id};
        if let Some(since) = q.since {
            filter.insert("ts", doc! {"$gt": date(since)});
        }
        if let Some(after) = &q.after_id {
            filter.insert("_id", doc! {"$gt": after});
        }
        if !q.types.is_empty() {
            filter.insert("kind", doc! {"$in": &q.types});
        }
        // One more than asked: whether it arrives says if more events matched.
        let found = self
            .coll(EVENTS)?
            .find(filter)
            .sort(doc! {"_id": if cursor { 1 } else { -1 }})
            .limit(i64::from(q.limit) + 1)
            .await
            .map_err(map_err)?;
        let mut events = collect(found, event_from_doc).await?;
        let has_more = events.len() > q.limit as usize;
        events.truncate(q.limit as usize);
        if !cursor {
            events.reverse();
        }
        Ok((events, has_more))
    }
}

#[async_trait]
impl Storage for MongoStorage {
    fn provider(&self) -> &'static str {
        "mongodb"
    }

    async fn ping(&self) -> StoreResult<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable("storage is closed".into()));
        }
        self.db
            .run_command(doc! {"ping": 1})
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            // Immediate: no cursor outlives a call, and a session only a batch of the
            // commit queue (which fails as Unavailable, its callers told), so there is
            // nothing to wait for, and a stuck server must not hold the shutdown.
            self.client.clone().shutdown().immediate(true).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn short_timeouts_unless_the_url_sets_its_own() {
        let (options, name) = client_options("mongodb://127.0.0.1:27017/wagate")
            .await
            .expect("options");
        assert_eq!(name, "wagate");
        assert_eq!(
            options.server_selection_timeout,
            Some(SERVER_SELECTION_TIMEOUT)
        );
        assert_eq!(options.connect_timeout, Some(CONNECT_TIMEOUT));
        let (options, _) = client_options(
            "mongodb://127.0.0.1:27017/wagate?serverSelectionTimeoutMS=1500&connectTimeoutMS=700",
        )
        .await
        .expect("options");
        assert_eq!(
            options.server_selection_timeout,
            Some(Duration::from_millis(1500))
        );
        assert_eq!(options.connect_timeout, Some(Duration::from_millis(700)));
        assert!(matches!(
            client_options("mongodb://127.0.0.1:27017").await,
            Err(StoreError::Unavailable(_))
        ));
    }
}
