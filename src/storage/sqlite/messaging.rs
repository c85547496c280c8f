//! Messages, chats and contacts on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqliteExecutor};
use wagate_actors::domain::Page;
use wagate_actors::domain::{
    ChatSummary, Contact, ContactQuery, HistoryQuery, InstanceEvent, Message, MessageStatus,
    Reaction, StatusReport,
};
use wagate_actors::store::{Committed, StoreResult};
use wagate_actors::store::{ContactStore, MessageStore};

use super::sql::{Binding, Bound, Plain};
use super::{
    SqliteStorage, bind_event, clamp_i64, corrupt, forward_only_status, insert_event, json,
    map_err, ms,
};
use crate::storage::{StatusChange, from_millis};

fn opt_millis(v: Option<i64>) -> StoreResult<Option<DateTime<Utc>>> {
    v.map(from_millis).transpose()
}

pub(super) fn message_from_row(row: &SqliteRow) -> StoreResult<Message> {
    let status: String = row.try_get("status").map_err(map_err)?;
    let metadata: String = row.try_get("metadata").map_err(map_err)?;
    let size: Option<i64> = row.try_get("media_size").map_err(map_err)?;
    let mentions: String = row.try_get("mentions").map_err(map_err)?;
    let reactions: String = row.try_get("reactions").map_err(map_err)?;
    let typed: String = row.try_get("typed").map_err(map_err)?;
    Ok(Message {
        id: row.try_get("id").map_err(map_err)?,
        instance_id: row.try_get("instance_id").map_err(map_err)?,
        message_id: row.try_get("message_id").map_err(map_err)?,
        remote_jid: row.try_get("remote_jid").map_err(map_err)?,
        from_me: row.try_get("from_me").map_err(map_err)?,
        message_type: row.try_get("message_type").map_err(map_err)?,
        content: row.try_get("content").map_err(map_err)?,
        has_media: row.try_get("has_media").map_err(map_err)?,
        media_url: row.try_get("media_url").map_err(map_err)?,
        caption: row.try_get("caption").map_err(map_err)?,
        mime_type: row.try_get("mime_type").map_err(map_err)?,
        file_name: row.try_get("file_name").map_err(map_err)?,
        media_path: row.try_get("media_path").map_err(map_err)?,
        media_size: size.map(|s| s.max(0) as u64),
        status: status.parse().map_err(corrupt)?,
        push_name: row.try_get("push_name").map_err(map_err)?,
        metadata: serde_json::from_str(&metadata).map_err(corrupt)?,
        timestamp: from_millis(row.try_get("ts").map_err(map_err)?)?,
        created_at: from_millis(row.try_get("created_at").map_err(map_err)?)?,
        updated_at: from_millis(row.try_get("updated_at").map_err(map_err)?)?,
        status_updated_at: opt_millis(row.try_get("status_updated_at").map_err(map_err)?)?,
        quoted_message_id: row.try_get("quoted_message_id").map_err(map_err)?,
        mentions: serde_json::from_str(&mentions).map_err(corrupt)?,
        reactions: serde_json::from_str(&reactions).map_err(corrupt)?,
        edited_at: opt_millis(row.try_get("edited_at").map_err(map_err)?)?,
        revoked: row.try_get("revoked").map_err(map_err)?,
        typed: serde_json::from_str(&typed).map_err(corrupt)?,
        message_secret: row.try_get("message_secret").map_err(map_err)?,
    })
}

pub(super) fn contact_from_row(row: &SqliteRow) -> StoreResult<Contact> {
    Ok(Contact {
        id: row.try_get("id").map_err(map_err)?,
        instance_id: row.try_get("instance_id").map_err(map_err)?,
        remote_jid: row.try_get("remote_jid").map_err(map_err)?,
        number: row.try_get("number").map_err(map_err)?,
        name: row.try_get("name").map_err(map_err)?,
        push_name: row.try_get("push_name").map_err(map_err)?,
        is_group: row.try_get("is_group").map_err(map_err)?,
        profile_picture: row.try_get("profile_picture").map_err(map_err)?,
        about: row.try_get("about").map_err(map_err)?,
        last_activity: opt_millis(row.try_get("last_activity").map_err(map_err)?)?,
        created_at: from_millis(row.try_get("created_at").map_err(map_err)?)?,
        updated_at: from_millis(row.try_get("updated_at").map_err(map_err)?)?,
    })
}

fn push_history_filters(
    qb: &mut QueryBuilder<Sqlite>,
    instance_id: &str,
    remote_jid: &str,
    q: &HistoryQuery,
) {
    qb.push(" WHERE instance_id = ")
        .push_bind(instance_id.to_owned())
        .push(" AND remote_jid = ")
        .push_bind(remote_jid.to_owned());
    if let Some(start) = q.start {
        qb.push(" AND ts >= ").push_bind(ms(start));
    }
    if let Some(end) = q.end {
        qb.push(" AND ts <= ").push_bind(ms(end));
    }
}

/// Inserts one message row; `read_by_me` is whether the account has read it (inbound).
/// Imports run it inside their transaction; queued writes bind [`bind_message`] instead.
pub(super) async fn insert_message_row<'e>(
    ex: impl SqliteExecutor<'e>,
    m: &Message,
    read_by_me: bool,
) -> StoreResult<()> {
    bind_message(sqlx::query(insert_message_sql!()), m, read_by_me)?
        .execute(ex)
        .await
        .map_err(map_err)?;
    Ok(())
}

/// Binds the arguments of `insert_message_sql` for `m`.
fn bind_message(q: Binding, m: &Message, read_by_me: bool) -> StoreResult<Binding> {
    Ok(q.bind(&m.id)
        .bind(&m.instance_id)
        .bind(&m.message_id)
        .bind(&m.remote_jid)
        .bind(m.from_me)
        .bind(&m.message_type)
        .bind(&m.content)
        .bind(m.has_media)
        .bind(&m.media_url)
        .bind(&m.caption)
        .bind(&m.mime_type)
        .bind(&m.file_name)
        .bind(&m.media_path)
        .bind(m.media_size.map(clamp_i64))
        .bind(m.status.as_str())
        .bind(&m.push_name)
        .bind(json(&m.metadata)?)
        .bind(ms(m.timestamp))
        .bind(ms(m.created_at))
        .bind(ms(m.updated_at))
        .bind(m.status_updated_at.map(ms))
        .bind(read_by_me)
        .bind(&m.quoted_message_id)
        .bind(json(&m.mentions)?)
        .bind(json(&m.reactions)?)
        .bind(m.edited_at.map(ms))
        .bind(m.revoked)
        .bind(json(&m.typed)?)
        .bind(&m.message_secret))
}

/// Binds the arguments of `upsert_contact_sql` (and of the import's plain insert) for `c`.
pub(super) fn bind_contact(q: Binding, c: &Contact) -> StoreResult<Binding> {
    Ok(q.bind(&c.id)
        .bind(&c.instance_id)
        .bind(&c.remote_jid)
        .bind(&c.number)
        .bind(&c.name)
        .bind(&c.push_name)
        .bind(c.is_group)
        .bind(&c.profile_picture)
        .bind(&c.about)
        .bind(c.last_activity.map(ms))
        .bind(search_text(c))
        .bind(ms(c.created_at))
        .bind(ms(c.updated_at)))
}

impl StatusChange {
    /// The change and its event, inside the writer's transaction. The query is built
    /// for each run: a replayed batch runs its writes twice.
    async fn apply(&self, conn: &mut SqliteConnection) -> StoreResult<Option<InstanceEvent>> {
        let query = forward_only_status(
            "messages",
            &["status_updated_at", "updated_at"],
            self.status,
            self.at,
            |qb| {
                qb.push("instance_id = ")
                    .push_bind(self.instance_id.clone())
                    .push(" AND message_id = ")
                    .push_bind(self.message_id.clone());
            },
        );
        let Some(mut query) = query else {
            return Ok(None);
        };
        let Some(row) = query
            .build()
            .fetch_optional(&mut *conn)
            .await
            .map_err(map_err)?
        else {
            return Ok(None);
        };
        let event = self.report.event(&message_from_row(&row)?);
        insert_event(conn, &event).await?;
        Ok(Some(event))
    }
}

#[async_trait]
impl MessageStore for SqliteStorage {
    async fn insert_message(&self, m: &Message) -> StoreResult<()> {
        let write = Bound::new(insert_message_sql!(), |q| bind_message(q, m, false))?;
        self.commits()
            .submit(write, |conn, write| Box::pin(write.execute(conn)))
            .await
    }

    async fn record_message(
        &self,
        m: &Message,
        contact: Option<&Contact>,
        event: &InstanceEvent,
    ) -> StoreResult<()> {
        self.commits()
            .submit_plain(record_write(m, contact, event)?)
            .await
    }

    async fn record_message_then(
        &self,
        m: &Message,
        contact: Option<&Contact>,
        event: &InstanceEvent,
        done: Committed,
    ) {
        match record_write(m, contact, event) {
            Ok(write) => self.commits().enqueue_plain(write, done).await,
            Err(e) => done(Err(e)),
        }
    }

    async fn message_by_id(
        &self,
        instance_id: &str,
        message_id: &str,
    ) -> StoreResult<Option<Message>> {
        sqlx::query("SELECT * FROM messages WHERE instance_id = ? AND message_id = ?")
            .bind(instance_id)
            .bind(message_id)
            .fetch_optional(self.pool())
            .await
            .map_err(map_err)?
            .as_ref()
            .map(message_from_row)
            .transpose()
    }

    async fn set_message_reactions(
        &self,
        instance_id: &str,
        message_id: &str,
        reactions: &[Reaction],
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let reactions = json(&reactions)?;
        let state = (reactions, instance_id.to_owned(), message_id.to_owned());
        self.commits()
            .submit(state, move |conn, (reactions, instance_id, message_id)| {
                Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE messages SET reactions = ?, updated_at = ? WHERE instance_id = ? AND message_id = ?",
                    )
                    .bind(reactions)
                    .bind(ms(at))
                    .bind(instance_id)
                    .bind(message_id)
                    .execute(conn)
                    .await
                    .map_err(map_err)?;
                    Ok(done.rows_affected() > 0)
                })
            })
            .await
    }

    async fn rewrite_message(&self, m: &Message, event: &InstanceEvent) -> StoreResult<bool> {
        self.commits()
            .submit((m.clone(), event.clone()), |conn, (m, event)| {
                Box::pin(rewrite_message_in(conn, m, event))
            })
            .await
    }

    async fn pending_sends(&self, instance_id: &str) -> StoreResult<Vec<String>> {
        // rowid: the order the messages were queued in.
        sqlx::query_scalar(
            "SELECT message_id FROM messages
             WHERE instance_id = ? AND from_me = 1 AND status = 'pending' ORDER BY rowid",
        )
        .bind(instance_id)
        .fetch_all(self.pool())
        .await
        .map_err(map_err)
    }

    async fn settle_pending_send(&self, m: &Message, event: &InstanceEvent) -> StoreResult<bool> {
        self.commits()
            .submit((m.clone(), event.clone()), |conn, (m, event)| {
                Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE messages SET status = ?, status_updated_at = ?, ts = ?,
                                             metadata = ?, message_secret = ?, updated_at = ?
                         WHERE instance_id = ? AND message_id = ? AND status = 'pending'",
                    )
                    .bind(m.status.as_str())
                    .bind(m.status_updated_at.map(ms))
                    .bind(ms(m.timestamp))
                    .bind(json(&m.metadata)?)
                    .bind(&m.message_secret)
                    .bind(ms(m.updated_at))
                    .bind(&m.instance_id)
                    .bind(&m.message_id)
                    .execute(&mut *conn)
                    .await
                    .map_err(map_err)?;
                    let settled = done.rows_affected() > 0;
                    if settled {
                        insert_event(conn, event).await?;
                    }
                    Ok(settled)
                })
            })
            .await
    }

    async fn forget_message(
        &self,
        instance_id: &str,
        message_id: &str,
        event: &InstanceEvent,
    ) -> StoreResult<bool> {
        let state = (instance_id.to_owned(), message_id.to_owned(), event.clone());
        self.commits()
            .submit(state, |conn, (instance_id, message_id, event)| {
                Box::pin(async move {
                    let done = sqlx::query(
                        "DELETE FROM messages WHERE instance_id = ? AND message_id = ?",
                    )
                    .bind(instance_id)
                    .bind(message_id)
                    .execute(&mut *conn)
                    .await
                    .map_err(map_err)?;
                    insert_event(conn, event).await?;
                    Ok(done.rows_affected() > 0)
                })
            })
            .await
    }

    async fn advance_message_status(
        &self,
        instance_id: &str,
        message_id: &str,
        status: MessageStatus,
        at: DateTime<Utc>,
        report: &StatusReport,
    ) -> StoreResult<Option<InstanceEvent>> {
        // Nothing may become `status`: no write to queue.
        if status.predecessors().is_empty() {
            return Ok(None);
        }
        let change = StatusChange::new(instance_id, message_id, status, at, report);
        self.commits()
            .submit(change, |conn, change| Box::pin(change.apply(conn)))
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
        // Queued even when nothing may become `status` (it then changes nothing): `done`
        // must come after the writes queued before it.
        let change = StatusChange::new(instance_id, message_id, status, at, report);
        self.commits()
            .enqueue(change, |conn, change| Box::pin(change.apply(conn)), done)
            .await
    }

    async fn chat_history(
        &self,
        instance_id: &str,
        remote_jid: &str,
        q: &HistoryQuery,
    ) -> StoreResult<Page<Message>> {
        let mut count = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM messages");
        push_history_filters(&mut count, instance_id, remote_jid, q);
        let total: i64 = count
            .build_query_scalar()
            .fetch_one(self.pool())
            .await
            .map_err(map_err)?;
        let mut page = QueryBuilder::<Sqlite>::new("SELECT * FROM messages");
        push_history_filters(&mut page, instance_id, remote_jid, q);
        page.push(" ORDER BY ts DESC, id DESC LIMIT ")
            .push_bind(i64::from(q.limit))
            .push(" OFFSET ")
            .push_bind(clamp_i64(q.skip));
        let rows = page.build().fetch_all(self.pool()).await.map_err(map_err)?;
        Ok(Page {
            items: rows
                .iter()
                .map(message_from_row)
                .collect::<StoreResult<_>>()?,
            total: total.max(0) as u64,
        })
    }

    async fn list_chats(
        &self,
        instance_id: &str,
        limit: u32,
        skip: u64,
    ) -> StoreResult<Page<ChatSummary>> {
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(DISTINCT remote_jid) FROM messages WHERE instance_id = ?",
        )
        .bind(instance_id)
        .fetch_one(self.pool())
        .await
        .map_err(map_err)?;
        let chats = sqlx::query(
            "SELECT remote_jid, MAX(ts) AS last_ts, COUNT(*) AS message_count,
                    SUM(CASE WHEN from_me = 0 AND read_by_me = 0 THEN 1 ELSE 0 END) AS unread
             FROM messages WHERE instance_id = ?
             GROUP BY remote_jid ORDER BY last_ts DESC, remote_jid LIMIT ? OFFSET ?",
        )
        .bind(instance_id)
        .bind(i64::from(limit))
        .bind(clamp_i64(skip))
        .fetch_all(self.pool())
        .await
        .map_err(map_err)?;
        let mut items = Vec::with_capacity(chats.len());
        for row in &chats {
            let jid: String = row.try_get("remote_jid").map_err(map_err)?;
            let last = sqlx::query(
                "SELECT * FROM messages WHERE instance_id = ? AND remote_jid = ? ORDER BY ts DESC, id DESC LIMIT 1",
            )
            .bind(instance_id)
            .bind(&jid)
            .fetch_one(self.pool())
            .await
            .map_err(map_err)?;
            let count: i64 = row.try_get("message_count").map_err(map_err)?;
            let unread: i64 = row.try_get("unread").map_err(map_err)?;
            items.push(ChatSummary {
                remote_jid: jid,
                last_message: message_from_row(&last)?,
                unread_count: unread.max(0) as u64,
                message_count: count.max(0) as u64,
            });
        }
        Ok(Page {
            items,
            total: total.max(0) as u64,
        })
    }

    async fn mark_chat_read(
        &self,
        instance_id: &str,
        remote_jid: &str,
    ) -> StoreResult<Vec<String>> {
        let state = (instance_id.to_owned(), remote_jid.to_owned());
        self.commits()
            .submit(state, |conn, (instance_id, remote_jid)| {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "UPDATE messages SET read_by_me = 1
                         WHERE instance_id = ? AND remote_jid = ? AND from_me = 0 AND read_by_me = 0
                         RETURNING message_id",
                    )
                    .bind(instance_id)
                    .bind(remote_jid)
                    .fetch_all(conn)
                    .await
                    .map_err(map_err)?;
                    rows.iter()
                        .map(|r| r.try_get("message_id").map_err(map_err))
                        .collect()
                })
            })
            .await
    }
}

/// The write of [`MessageStore::record_message`]: the message, its event and (inbound) its
/// contact, as one query (one round trip to the connection's thread), bound before it is
/// queued. All three or (a replayed batch rolls a failed write back) none.
fn record(m: &Message, contact: Option<&Contact>, event: &InstanceEvent) -> StoreResult<Bound> {
    match contact {
        None => Bound::new(concat!(insert_message_sql!(), insert_event_sql!()), |q| {
            bind_event(bind_message(q, m, false)?, event)
        }),
        // The contact's statement last: its row is the only one the query returns.
        Some(c) => Bound::new(
            concat!(
                insert_message_sql!(),
                insert_event_sql!(),
                upsert_contact_sql!()
            ),
            |q| bind_contact(bind_event(bind_message(q, m, false)?, event)?, c),
        ),
    }
}

/// The [`record`] write of `m`, `contact` and `event`, joinable with the same writes
/// queued next to it. A contact's row comes back: its search text is rewritten when the
/// merge changed it.
pub(super) fn record_write(
    m: &Message,
    contact: Option<&Contact>,
    event: &InstanceEvent,
) -> StoreResult<Plain> {
    let write = record(m, contact, event)?;
    let (m, event) = (m.clone(), event.clone());
    Ok(match contact.cloned() {
        None => Plain::new(write, move |q| {
            bind_event(bind_message(q, &m, false)?, &event)
        }),
        Some(c) => Plain::new(write, move |q| {
            bind_contact(bind_event(bind_message(q, &m, false)?, &event)?, &c)
        })
        .then(|conn, row| Box::pin(async move { merged_search_text(conn, row).await.map(drop) })),
    })
}

/// The edit or revocation of [`MessageStore::rewrite_message`], with its event, on the
/// caller's connection (inside its transaction).
async fn rewrite_message_in(
    conn: &mut SqliteConnection,
    m: &Message,
    event: &InstanceEvent,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE messages SET content = ?, caption = ?, has_media = ?, media_url = ?, media_path = ?,
                             media_size = ?, edited_at = ?, revoked = ?, typed = ?, updated_at = ?
         WHERE instance_id = ? AND message_id = ?",
    )
    .bind(&m.content)
    .bind(&m.caption)
    .bind(m.has_media)
    .bind(&m.media_url)
    .bind(&m.media_path)
    .bind(m.media_size.map(clamp_i64))
    .bind(m.edited_at.map(ms))
    .bind(m.revoked)
    .bind(json(&m.typed)?)
    .bind(ms(m.updated_at))
    .bind(&m.instance_id)
    .bind(&m.message_id)
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    insert_event(conn, event).await?;
    Ok(done.rows_affected() > 0)
}

/// What contact search matches against, case-folded for every script.
pub(super) fn search_text(c: &Contact) -> String {
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

fn push_contact_filters(qb: &mut QueryBuilder<Sqlite>, instance_id: &str, q: &ContactQuery) {
    qb.push(" WHERE instance_id = ")
        .push_bind(instance_id.to_owned());
    if q.only_groups {
        qb.push(" AND is_group = 1");
    }
    if let Some(search) = q.search.as_deref().filter(|s| !s.is_empty()) {
        // LIKE with the wildcards of the search text escaped.
        let escaped = search
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        qb.push(" AND search_text LIKE ")
            .push_bind(format!("%{escaped}%"))
            .push(" ESCAPE '\\'");
    }
}

/// The contact upsert of [`ContactStore::upsert_contact`], on the caller's connection
/// (inside its transaction). `search_text` is rewritten only when it changed.
async fn upsert_contact_in(conn: &mut SqliteConnection, write: &Bound) -> StoreResult<Contact> {
    let rows = write.fetch_all(&mut *conn).await?;
    let row = rows
        .first()
        .ok_or_else(|| corrupt("the contact upsert returned no row"))?;
    merged_search_text(conn, row).await
}

/// Rewrites the search text of the contact an upsert returned (`row`) when merging it
/// changed what the text is made of; the contact as stored.
async fn merged_search_text(conn: &mut SqliteConnection, row: &SqliteRow) -> StoreResult<Contact> {
    let stored = contact_from_row(row)?;
    let text = search_text(&stored);
    let old: String = row.try_get("search_text").map_err(map_err)?;
    if old != text {
        sqlx::query("UPDATE contacts SET search_text = ? WHERE id = ?")
            .bind(text)
            .bind(&stored.id)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
    }
    Ok(stored)
}

#[async_trait]
impl ContactStore for SqliteStorage {
    async fn upsert_contact(&self, c: &Contact) -> StoreResult<Contact> {
        let write = Bound::new(upsert_contact_sql!(), |q| bind_contact(q, c))?;
        self.commits()
            .submit(write, |conn, write| {
                Box::pin(upsert_contact_in(conn, write))
            })
            .await
    }

    async fn list_contacts(
        &self,
        instance_id: &str,
        q: &ContactQuery,
    ) -> StoreResult<Page<Contact>> {
        let mut count = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM contacts");
        push_contact_filters(&mut count, instance_id, q);
        let total: i64 = count
            .build_query_scalar()
            .fetch_one(self.pool())
            .await
            .map_err(map_err)?;
        let mut page = QueryBuilder::<Sqlite>::new("SELECT * FROM contacts");
        push_contact_filters(&mut page, instance_id, q);
        page.push(" ORDER BY COALESCE(name, push_name, number) COLLATE NOCASE, id LIMIT ")
            .push_bind(i64::from(q.limit))
            .push(" OFFSET ")
            .push_bind(clamp_i64(q.skip));
        let rows = page.build().fetch_all(self.pool()).await.map_err(map_err)?;
        Ok(Page {
            items: rows
                .iter()
                .map(contact_from_row)
                .collect::<StoreResult<_>>()?,
            total: total.max(0) as u64,
        })
    }
}
