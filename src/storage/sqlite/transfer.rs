//! Whole-store export, import, counts and clearing on SQLite, for copies between
//! providers. Exports page by primary key (keyset), so each page is one indexed range
//! scan however large the table; an import batch is one transaction.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row};
use wagate_actors::domain::Contact;
use wagate_actors::domain::{Usage, UsageKey};
use wagate_actors::store::{
    Record, RecordCounts, RecordKind, StoreResult, TransferStore, id_from_key,
};

use super::messaging::{bind_contact, contact_from_row, insert_message_row, message_from_row};
use super::stats::usage_from_row;
use super::{
    SqliteStorage, activity_from_row, clamp_i64, event_from_row, insert_activity, insert_event,
    insert_instance, insert_user, instance_from_row, map_err, user_from_row,
};
use super::{chats, waba};

/// The table of each kind and the expression its export is keyed and ordered by (usage
/// buckets have a composite key; the expression is [`wagate_actors::store::usage_key`]).
fn table(kind: RecordKind) -> (&'static str, &'static str) {
    match kind {
        RecordKind::Users => ("users", "id"),
        RecordKind::Instances => ("instances", "id"),
        RecordKind::Activity => ("activity", "id"),
        RecordKind::Events => ("events", "id"),
        RecordKind::Messages => ("messages", "id"),
        RecordKind::Contacts => ("contacts", "id"),
        RecordKind::Usage => (
            "usage_daily",
            "(day || '|' || user_id || '|' || instance_id)",
        ),
        RecordKind::WabaAccounts => ("waba_accounts", "owner_id"),
        // Numeric ids: the cursor is decoded ([`wagate_actors::store::id_from_key`]) and compared as a number.
        RecordKind::WabaChats => ("waba_chats", "id"),
        RecordKind::WabaMessages => ("waba_messages", "id"),
        RecordKind::Chats => ("chat_settings", "id"),
        RecordKind::Labels => ("labels", "id"),
    }
}

/// Whether the kind's export key is a numeric id (cursor: [`wagate_actors::store::id_key`]).
fn numeric(kind: RecordKind) -> bool {
    matches!(kind, RecordKind::WabaChats | RecordKind::WabaMessages)
}

fn record_from_row(kind: RecordKind, row: &SqliteRow) -> StoreResult<Record> {
    Ok(match kind {
        RecordKind::Users => Record::User(user_from_row(row)?),
        RecordKind::Instances => Record::Instance(instance_from_row(row)?),
        RecordKind::Activity => Record::Activity(activity_from_row(row)?),
        RecordKind::Events => Record::Event(event_from_row(row)?),
        RecordKind::Messages => Record::Message {
            message: Box::new(message_from_row(row)?),
            read_by_me: row.try_get("read_by_me").map_err(map_err)?,
        },
        RecordKind::Contacts => Record::Contact(contact_from_row(row)?),
        RecordKind::Usage => {
            let (key, usage) = usage_from_row(row)?;
            Record::Usage(key, usage)
        }
        RecordKind::WabaAccounts => Record::WabaAccount(waba::account_from_row(row)?),
        RecordKind::WabaChats => Record::WabaChat(waba::chat_from_row(row)?),
        RecordKind::WabaMessages => Record::WabaMessage(waba::message_from_row(row)?),
        RecordKind::Chats => Record::Chat(chats::chat_from_row(row)?),
        RecordKind::Labels => Record::Label(chats::label_from_row(row)?),
    })
}

async fn insert_contact<'e>(ex: impl sqlx::SqliteExecutor<'e>, c: &Contact) -> StoreResult<()> {
    // The upsert's arguments, in the same order.
    let insert = sqlx::query(
        "INSERT INTO contacts (id, instance_id, remote_jid, number, name, push_name, is_group, profile_picture,
                               about, last_activity, search_text, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    );
    bind_contact(insert, c)?
        .execute(ex)
        .await
        .map_err(map_err)?;
    Ok(())
}

/// Sets a bucket (a plain INSERT: importing the same bucket twice is a `Conflict`, never
/// a doubled count).
async fn insert_usage<'e>(
    ex: impl sqlx::SqliteExecutor<'e>,
    k: &UsageKey,
    u: &Usage,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO usage_daily (day, user_id, instance_id, messages_sent, messages_received, media_sent,
                                  media_received, total_media_size, api_calls, webhook_sent)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(k.day.format("%Y-%m-%d").to_string())
    .bind(&k.user_id)
    .bind(&k.instance_id)
    .bind(clamp_i64(u.messages_sent))
    .bind(clamp_i64(u.messages_received))
    .bind(clamp_i64(u.media_sent))
    .bind(clamp_i64(u.media_received))
    .bind(clamp_i64(u.total_media_size))
    .bind(clamp_i64(u.api_calls))
    .bind(clamp_i64(u.webhook_sent))
    .execute(ex)
    .await
    .map_err(map_err)?;
    Ok(())
}

#[async_trait]
impl TransferStore for SqliteStorage {
    async fn export_records(
        &self,
        kind: RecordKind,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<Record>> {
        let (table, key) = table(kind);
        // Both names are constants of this file, never input: safe to splice.
        let rows = if numeric(kind) {
            let query = match after {
                Some(after) => sqlx::query(AssertSqlSafe(format!(
                    "SELECT * FROM {table} WHERE {key} > ? ORDER BY {key} LIMIT ?"
                )))
                .bind(id_from_key(after)?),
                None => sqlx::query(AssertSqlSafe(format!(
                    "SELECT * FROM {table} ORDER BY {key} LIMIT ?"
                ))),
            };
            query.bind(i64::from(limit)).fetch_all(self.pool()).await
        } else {
            let sql = format!("SELECT * FROM {table} WHERE {key} > ? ORDER BY {key} LIMIT ?");
            sqlx::query(AssertSqlSafe(sql))
                .bind(after.unwrap_or(""))
                .bind(i64::from(limit))
                .fetch_all(self.pool())
                .await
        }
        .map_err(map_err)?;
        rows.iter().map(|row| record_from_row(kind, row)).collect()
    }

    async fn import_records(&self, records: &[Record]) -> StoreResult<()> {
        let mut tx = self.writer().begin().await.map_err(map_err)?;
        for record in records {
            match record {
                Record::User(u) => insert_user(&mut *tx, u).await?,
                Record::Instance(i) => insert_instance(&mut *tx, i).await?,
                Record::Activity(a) => insert_activity(&mut *tx, a).await?,
                Record::Event(e) => insert_event(&mut *tx, e).await?,
                Record::Message {
                    message,
                    read_by_me,
                } => insert_message_row(&mut *tx, message, *read_by_me).await?,
                Record::Contact(c) => insert_contact(&mut *tx, c).await?,
                Record::Usage(k, u) => insert_usage(&mut *tx, k, u).await?,
                Record::WabaAccount(a) => waba::insert_account(&mut *tx, a).await?,
                Record::WabaChat(c) => waba::insert_chat(&mut *tx, c).await?,
                Record::WabaMessage(m) => waba::insert_message(&mut *tx, m).await?,
                Record::Chat(c) => chats::insert_chat(&mut *tx, c, false).await?,
                Record::Label(l) => chats::insert_label(&mut *tx, l, false).await?,
            }
        }
        tx.commit().await.map_err(map_err)
    }

    async fn count_records(&self) -> StoreResult<RecordCounts> {
        let mut counts = RecordCounts::default();
        for kind in RecordKind::ALL {
            let (table, _) = table(kind);
            let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(self.pool())
                .await
                .map_err(map_err)?;
            counts.set(kind, n.max(0) as u64);
        }
        Ok(counts)
    }

    async fn clear_all(&self) -> StoreResult<()> {
        let mut tx = self.writer().begin().await.map_err(map_err)?;
        for kind in RecordKind::ALL {
            let (table, _) = table(kind);
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {table}")))
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }
}
