//! The WABA operator desk on SQLite: accounts, chats and messages (`0004_waba.sql`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use wagate_actors::domain::MessageStatus;
use wagate_actors::domain::Page;
use wagate_actors::domain::waba::{
    AssignedFilter, SendFailure, WabaAccount, WabaChat, WabaChatSummary, WabaMedia, WabaMessage,
};
use wagate_actors::store::StoreResult;
use wagate_actors::store::WabaStore;

use super::{SqliteStorage, clamp_i64, corrupt, forward_only_status, map_err, ms};
use crate::storage::from_millis;

fn opt_millis(v: Option<i64>) -> StoreResult<Option<DateTime<Utc>>> {
    v.map(from_millis).transpose()
}

pub(super) fn account_from_row(row: &SqliteRow) -> StoreResult<WabaAccount> {
    Ok(WabaAccount {
        owner_id: row.try_get("owner_id").map_err(map_err)?,
        phone_number_id: row.try_get("phone_number_id").map_err(map_err)?,
        business_account_id: row.try_get("business_account_id").map_err(map_err)?,
        access_token: row.try_get("access_token").map_err(map_err)?,
        app_secret: row.try_get("app_secret").map_err(map_err)?,
        verify_token: row.try_get("verify_token").map_err(map_err)?,
        verify_token_hash: row.try_get("verify_token_hash").map_err(map_err)?,
        updated_at: from_millis(row.try_get("updated_at").map_err(map_err)?)?,
    })
}

pub(super) fn chat_from_row(row: &SqliteRow) -> StoreResult<WabaChat> {
    Ok(WabaChat {
        id: row.try_get("id").map_err(map_err)?,
        owner_id: row.try_get("owner_id").map_err(map_err)?,
        customer_phone: row.try_get("customer_phone").map_err(map_err)?,
        customer_name: row.try_get("customer_name").map_err(map_err)?,
        last_customer_message_at: opt_millis(
            row.try_get("last_customer_message_at").map_err(map_err)?,
        )?,
        last_message_at: opt_millis(row.try_get("last_message_at").map_err(map_err)?)?,
        assigned_operator_id: row.try_get("assigned_operator_id").map_err(map_err)?,
        created_at: from_millis(row.try_get("created_at").map_err(map_err)?)?,
    })
}

fn media_from_row(row: &SqliteRow) -> StoreResult<Option<WabaMedia>> {
    let Some(media_id) = row
        .try_get::<Option<String>, _>("media_id")
        .map_err(map_err)?
    else {
        return Ok(None);
    };
    let state: Option<String> = row.try_get("media_state").map_err(map_err)?;
    let size: Option<i64> = row.try_get("media_size").map_err(map_err)?;
    let attempts: Option<i64> = row.try_get("media_attempts").map_err(map_err)?;
    Ok(Some(WabaMedia {
        media_id,
        mime_type: row.try_get("media_mime_type").map_err(map_err)?,
        file_name: row.try_get("media_file_name").map_err(map_err)?,
        size: size.map(|s| s.max(0) as u64),
        path: row.try_get("media_path").map_err(map_err)?,
        state: state
            .as_deref()
            .unwrap_or("pending")
            .parse()
            .map_err(corrupt)?,
        attempts: attempts.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
        error: row.try_get("media_error").map_err(map_err)?,
    }))
}

/// Binds the media columns of a message, in the order `media_id, media_mime_type,
/// media_file_name, media_size, media_path, media_state, media_attempts, media_error`.
fn bind_media<'q>(
    q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    media: Option<&WabaMedia>,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    q.bind(media.map(|m| m.media_id.clone()))
        .bind(media.and_then(|m| m.mime_type.clone()))
        .bind(media.and_then(|m| m.file_name.clone()))
        .bind(media.and_then(|m| m.size).map(clamp_i64))
        .bind(media.and_then(|m| m.path.clone()))
        .bind(media.map(|m| m.state.as_str()))
        .bind(media.map(|m| i64::from(m.attempts)))
        .bind(media.and_then(|m| m.error.clone()))
}

pub(super) fn message_from_row(row: &SqliteRow) -> StoreResult<WabaMessage> {
    let status: String = row.try_get("status").map_err(map_err)?;
    Ok(WabaMessage {
        id: row.try_get("id").map_err(map_err)?,
        chat_id: row.try_get("chat_id").map_err(map_err)?,
        owner_id: row.try_get("owner_id").map_err(map_err)?,
        whatsapp_message_id: row.try_get("whatsapp_message_id").map_err(map_err)?,
        from_me: row.try_get("from_me").map_err(map_err)?,
        message_type: row.try_get("message_type").map_err(map_err)?,
        content: row.try_get("content").map_err(map_err)?,
        media_url: row.try_get("media_url").map_err(map_err)?,
        media: media_from_row(row)?,
        error: match row
            .try_get::<Option<String>, _>("error_title")
            .map_err(map_err)?
        {
            Some(title) => Some(SendFailure {
                code: row.try_get("error_code").map_err(map_err)?,
                title,
            }),
            None => None,
        },
        status: status.parse().map_err(corrupt)?,
        is_read_by_operator: row.try_get("is_read_by_operator").map_err(map_err)?,
        sender_user_id: row.try_get("sender_user_id").map_err(map_err)?,
        timestamp: from_millis(row.try_get("ts").map_err(map_err)?)?,
        status_updated_at: opt_millis(row.try_get("status_updated_at").map_err(map_err)?)?,
    })
}

/// Stores an account as given (a copy: a second account of the owner is a `Conflict`).
pub(super) async fn insert_account<'e>(
    ex: impl sqlx::SqliteExecutor<'e>,
    a: &WabaAccount,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO waba_accounts (owner_id, phone_number_id, business_account_id, access_token, app_secret,
                                    verify_token, verify_token_hash, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&a.owner_id)
    .bind(&a.phone_number_id)
    .bind(&a.business_account_id)
    .bind(&a.access_token)
    .bind(&a.app_secret)
    .bind(&a.verify_token)
    .bind(&a.verify_token_hash)
    .bind(ms(a.updated_at))
    .execute(ex)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// Stores a chat under its own id. An explicit id in an AUTOINCREMENT table raises
/// `sqlite_sequence` to it, so ids assigned later stay above every copied one.
pub(super) async fn insert_chat<'e>(
    ex: impl sqlx::SqliteExecutor<'e>,
    c: &WabaChat,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO waba_chats (id, owner_id, customer_phone, customer_name, last_customer_message_at,
                                 last_message_at, assigned_operator_id, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(c.id)
    .bind(&c.owner_id)
    .bind(&c.customer_phone)
    .bind(&c.customer_name)
    .bind(c.last_customer_message_at.map(ms))
    .bind(c.last_message_at.map(ms))
    .bind(&c.assigned_operator_id)
    .bind(ms(c.created_at))
    .execute(ex)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// Stores a message under its own id, every field as given (the chat is not touched:
/// a copy brings the chat's instants along with it). See [`insert_chat`] for the ids.
pub(super) async fn insert_message<'e>(
    ex: impl sqlx::SqliteExecutor<'e>,
    m: &WabaMessage,
) -> StoreResult<()> {
    let q = sqlx::query(
        "INSERT INTO waba_messages (id, chat_id, owner_id, whatsapp_message_id, from_me, message_type, content,
                                    media_url, status, is_read_by_operator, sender_user_id, ts, status_updated_at,
                                    media_id, media_mime_type, media_file_name, media_size, media_path,
                                    media_state, media_attempts, media_error, error_code, error_title)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(m.id)
    .bind(m.chat_id)
    .bind(&m.owner_id)
    .bind(&m.whatsapp_message_id)
    .bind(m.from_me)
    .bind(&m.message_type)
    .bind(&m.content)
    .bind(&m.media_url)
    .bind(m.status.as_str())
    .bind(m.is_read_by_operator)
    .bind(&m.sender_user_id)
    .bind(ms(m.timestamp))
    .bind(m.status_updated_at.map(ms));
    bind_media(q, m.media.as_ref())
        .bind(m.error.as_ref().and_then(|e| e.code))
        .bind(m.error.as_ref().map(|e| e.title.clone()))
        .execute(ex)
        .await
        .map_err(map_err)?;
    Ok(())
}

#[async_trait]
impl WabaStore for SqliteStorage {
    async fn put_waba_account(&self, a: &WabaAccount) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO waba_accounts (owner_id, phone_number_id, business_account_id, access_token, app_secret,
                                        verify_token, verify_token_hash, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (owner_id) DO UPDATE SET
                 phone_number_id = excluded.phone_number_id,
                 business_account_id = excluded.business_account_id,
                 access_token = excluded.access_token,
                 app_secret = excluded.app_secret,
                 verify_token = excluded.verify_token,
                 verify_token_hash = excluded.verify_token_hash,
                 updated_at = excluded.updated_at",
        )
        .bind(&a.owner_id)
        .bind(&a.phone_number_id)
        .bind(&a.business_account_id)
        .bind(&a.access_token)
        .bind(&a.app_secret)
        .bind(&a.verify_token)
        .bind(&a.verify_token_hash)
        .bind(ms(a.updated_at))
        .execute(self.writer())
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn waba_account(&self, owner_id: &str) -> StoreResult<Option<WabaAccount>> {
        sqlx::query("SELECT * FROM waba_accounts WHERE owner_id = ?")
            .bind(owner_id)
            .fetch_optional(self.pool())
            .await
            .map_err(map_err)?
            .as_ref()
            .map(account_from_row)
            .transpose()
    }

    async fn waba_account_by_phone_number_id(
        &self,
        phone_number_id: &str,
    ) -> StoreResult<Option<WabaAccount>> {
        sqlx::query("SELECT * FROM waba_accounts WHERE phone_number_id = ?")
            .bind(phone_number_id)
            .fetch_optional(self.pool())
            .await
            .map_err(map_err)?
            .as_ref()
            .map(account_from_row)
            .transpose()
    }

    async fn waba_account_by_verify_token_hash(
        &self,
        hash: &str,
    ) -> StoreResult<Option<WabaAccount>> {
        sqlx::query("SELECT * FROM waba_accounts WHERE verify_token_hash = ? LIMIT 1")
            .bind(hash)
            .fetch_optional(self.pool())
            .await
            .map_err(map_err)?
            .as_ref()
            .map(account_from_row)
            .transpose()
    }

    async fn waba_chat_for_customer(
        &self,
        owner_id: &str,
        customer_phone: &str,
        customer_name: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<WabaChat> {
        // One statement: two webhooks of a new customer cannot create two chats.
        let row = sqlx::query(
            "INSERT INTO waba_chats (owner_id, customer_phone, customer_name, created_at)
             VALUES (?, ?, ?, ?)
             ON CONFLICT (owner_id, customer_phone) DO UPDATE SET
                 customer_name = COALESCE(excluded.customer_name, waba_chats.customer_name)
             RETURNING *",
        )
        .bind(owner_id)
        .bind(customer_phone)
        .bind(customer_name)
        .bind(ms(at))
        .fetch_one(self.writer())
        .await
        .map_err(map_err)?;
        chat_from_row(&row)
    }

    async fn waba_chat(&self, id: i64) -> StoreResult<Option<WabaChat>> {
        sqlx::query("SELECT * FROM waba_chats WHERE id = ?")
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(map_err)?
            .as_ref()
            .map(chat_from_row)
            .transpose()
    }

    async fn find_waba_chat(
        &self,
        owner_id: &str,
        customer_phone: &str,
    ) -> StoreResult<Option<WabaChat>> {
        sqlx::query("SELECT * FROM waba_chats WHERE owner_id = ? AND customer_phone = ?")
            .bind(owner_id)
            .bind(customer_phone)
            .fetch_optional(self.pool())
            .await
            .map_err(map_err)?
            .as_ref()
            .map(chat_from_row)
            .transpose()
    }

    async fn list_waba_chats(
        &self,
        owner_id: Option<&str>,
        assigned: &AssignedFilter,
        limit: u32,
        skip: u64,
    ) -> StoreResult<Page<WabaChatSummary>> {
        // `?1 IS NULL` lets one statement serve both "one owner" and "everybody"; `?2`
        // is the assignee filter: 0 every chat, 1 unassigned ones, 2 those of `?3`.
        let (mode, assignee) = match assigned {
            AssignedFilter::All => (0_i64, None),
            AssignedFilter::Unassigned => (1, None),
            AssignedFilter::To(id) => (2, Some(id.as_str())),
        };
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM waba_chats c WHERE (?1 IS NULL OR c.owner_id = ?1) AND
                  (?2 = 0 OR (?2 = 1 AND c.assigned_operator_id IS NULL)
                   OR (?2 = 2 AND c.assigned_operator_id = ?3))",
        )
        .bind(owner_id)
        .bind(mode)
        .bind(assignee)
        .fetch_one(self.pool())
        .await
        .map_err(map_err)?;
        let rows = sqlx::query(
            "SELECT c.*,
                    (SELECT COUNT(*) FROM waba_messages m
                      WHERE m.chat_id = c.id AND m.from_me = 0 AND m.is_read_by_operator = 0) AS unread,
                    (SELECT m.id FROM waba_messages m WHERE m.chat_id = c.id
                      ORDER BY m.ts DESC, m.id DESC LIMIT 1) AS last_id
             FROM waba_chats c
             WHERE (?1 IS NULL OR c.owner_id = ?1) AND
                   (?2 = 0 OR (?2 = 1 AND c.assigned_operator_id IS NULL)
                    OR (?2 = 2 AND c.assigned_operator_id = ?3))
             ORDER BY c.last_message_at IS NULL, c.last_message_at DESC, c.id DESC
             LIMIT ?4 OFFSET ?5",
        )
        .bind(owner_id)
        .bind(mode)
        .bind(assignee)
        .bind(i64::from(limit))
        .bind(clamp_i64(skip))
        .fetch_all(self.pool())
        .await
        .map_err(map_err)?;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            let unread: i64 = row.try_get("unread").map_err(map_err)?;
            let last_id: Option<i64> = row.try_get("last_id").map_err(map_err)?;
            let last_message = match last_id {
                Some(id) => self.waba_message(id).await?,
                None => None,
            };
            items.push(WabaChatSummary {
                chat: chat_from_row(row)?,
                last_message,
                unread_count: unread.max(0) as u64,
            });
        }
        Ok(Page {
            items,
            total: total.max(0) as u64,
        })
    }

    async fn insert_waba_message(&self, m: &WabaMessage) -> StoreResult<WabaMessage> {
        let mut tx = self.writer().begin().await.map_err(map_err)?;
        let q = sqlx::query(
            "INSERT INTO waba_messages (chat_id, owner_id, whatsapp_message_id, from_me, message_type, content,
                                        media_url, status, is_read_by_operator, sender_user_id, ts, status_updated_at,
                                        media_id, media_mime_type, media_file_name, media_size, media_path,
                                        media_state, media_attempts, media_error, error_code, error_title)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             RETURNING *",
        )
        .bind(m.chat_id)
        .bind(&m.owner_id)
        .bind(&m.whatsapp_message_id)
        .bind(m.from_me)
        .bind(&m.message_type)
        .bind(&m.content)
        .bind(&m.media_url)
        .bind(m.status.as_str())
        .bind(m.is_read_by_operator)
        .bind(&m.sender_user_id)
        .bind(ms(m.timestamp))
        .bind(m.status_updated_at.map(ms));
        let row = bind_media(q, m.media.as_ref())
            .bind(m.error.as_ref().and_then(|e| e.code))
            .bind(m.error.as_ref().map(|e| e.title.clone()))
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query(
            "UPDATE waba_chats SET
                 last_message_at = MAX(COALESCE(last_message_at, ?1), ?1),
                 last_customer_message_at = CASE WHEN ?2 THEN last_customer_message_at
                     ELSE MAX(COALESCE(last_customer_message_at, ?1), ?1) END
             WHERE id = ?3",
        )
        .bind(ms(m.timestamp))
        .bind(m.from_me)
        .bind(m.chat_id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        let stored = message_from_row(&row)?;
        tx.commit().await.map_err(map_err)?;
        Ok(stored)
    }

    async fn waba_message(&self, id: i64) -> StoreResult<Option<WabaMessage>> {
        sqlx::query("SELECT * FROM waba_messages WHERE id = ?")
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(map_err)?
            .as_ref()
            .map(message_from_row)
            .transpose()
    }

    async fn advance_waba_message_status(
        &self,
        chat_id: i64,
        whatsapp_message_id: &str,
        status: MessageStatus,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<WabaMessage>> {
        let Some(mut qb) =
            forward_only_status("waba_messages", &["status_updated_at"], status, at, |qb| {
                qb.push("whatsapp_message_id = ")
                    .push_bind(whatsapp_message_id.to_owned())
                    .push(" AND chat_id = ")
                    .push_bind(chat_id);
            })
        else {
            return Ok(None);
        };
        qb.build()
            .fetch_optional(self.writer())
            .await
            .map_err(map_err)?
            .as_ref()
            .map(message_from_row)
            .transpose()
    }

    async fn waba_chat_messages(
        &self,
        chat_id: i64,
        limit: u32,
        skip: u64,
    ) -> StoreResult<Page<WabaMessage>> {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM waba_messages WHERE chat_id = ?")
            .bind(chat_id)
            .fetch_one(self.pool())
            .await
            .map_err(map_err)?;
        let rows = sqlx::query(
            "SELECT * FROM waba_messages WHERE chat_id = ? ORDER BY ts DESC, id DESC LIMIT ? OFFSET ?",
        )
        .bind(chat_id)
        .bind(i64::from(limit))
        .bind(clamp_i64(skip))
        .fetch_all(self.pool())
        .await
        .map_err(map_err)?;
        Ok(Page {
            items: rows
                .iter()
                .map(message_from_row)
                .collect::<StoreResult<_>>()?,
            total: total.max(0) as u64,
        })
    }

    async fn mark_waba_chat_read(&self, chat_id: i64) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE waba_messages SET is_read_by_operator = 1
             WHERE chat_id = ? AND from_me = 0 AND is_read_by_operator = 0",
        )
        .bind(chat_id)
        .execute(self.writer())
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected())
    }

    async fn assign_waba_chat(
        &self,
        chat_id: i64,
        expected: Option<&str>,
        assignee: Option<&str>,
    ) -> StoreResult<Option<WabaChat>> {
        // `IS` compares NULLs too: "unassigned" is a value the condition can expect.
        sqlx::query(
            "UPDATE waba_chats SET assigned_operator_id = ?
             WHERE id = ? AND assigned_operator_id IS ?
             RETURNING *",
        )
        .bind(assignee)
        .bind(chat_id)
        .bind(expected)
        .fetch_optional(self.writer())
        .await
        .map_err(map_err)?
        .as_ref()
        .map(chat_from_row)
        .transpose()
    }

    async fn settle_waba_message(
        &self,
        message_id: i64,
        whatsapp_message_id: &str,
        status: MessageStatus,
        error: Option<&SendFailure>,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<WabaMessage>> {
        sqlx::query(
            "UPDATE waba_messages SET whatsapp_message_id = ?, status = ?, status_updated_at = ?,
                                      error_code = ?, error_title = ?
             WHERE id = ? RETURNING *",
        )
        .bind(whatsapp_message_id)
        .bind(status.as_str())
        .bind(ms(at))
        .bind(error.and_then(|e| e.code))
        .bind(error.map(|e| e.title.clone()))
        .bind(message_id)
        .fetch_optional(self.writer())
        .await
        .map_err(map_err)?
        .as_ref()
        .map(message_from_row)
        .transpose()
    }

    async fn set_waba_media(
        &self,
        message_id: i64,
        media: &WabaMedia,
    ) -> StoreResult<Option<WabaMessage>> {
        let q = sqlx::query(
            "UPDATE waba_messages SET media_id = ?, media_mime_type = ?, media_file_name = ?, media_size = ?,
                                      media_path = ?, media_state = ?, media_attempts = ?, media_error = ?
             WHERE id = ? RETURNING *",
        );
        bind_media(q, Some(media))
            .bind(message_id)
            .fetch_optional(self.writer())
            .await
            .map_err(map_err)?
            .as_ref()
            .map(message_from_row)
            .transpose()
    }
}
