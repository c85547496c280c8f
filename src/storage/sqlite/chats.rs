//! How the account keeps its chats, and its labels, on SQLite.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteExecutor};
use wagate_actors::domain::chat::sort_labels;
use wagate_actors::domain::{ChatSettings, Label, Mute};
use wagate_actors::store::{ChatStore, StoreResult};

use super::{SqliteStorage, corrupt, json, map_err, ms};
use crate::storage::from_millis;

pub(super) fn chat_from_row(row: &SqliteRow) -> StoreResult<ChatSettings> {
    let muted: Option<i64> = row.try_get("muted_until").map_err(map_err)?;
    let labels: String = row.try_get("labels").map_err(map_err)?;
    Ok(ChatSettings {
        id: row.try_get("id").map_err(map_err)?,
        instance_id: row.try_get("instance_id").map_err(map_err)?,
        remote_jid: row.try_get("remote_jid").map_err(map_err)?,
        archived: row.try_get("archived").map_err(map_err)?,
        pinned: row.try_get("pinned").map_err(map_err)?,
        mute: muted.and_then(Mute::from_millis),
        labels: serde_json::from_str(&labels).map_err(corrupt)?,
        updated_at: from_millis(row.try_get("updated_at").map_err(map_err)?)?,
    })
}

pub(super) fn label_from_row(row: &SqliteRow) -> StoreResult<Label> {
    Ok(Label {
        id: row.try_get("id").map_err(map_err)?,
        instance_id: row.try_get("instance_id").map_err(map_err)?,
        label_id: row.try_get("label_id").map_err(map_err)?,
        name: row.try_get("name").map_err(map_err)?,
        color: row.try_get("color").map_err(map_err)?,
        created_at: from_millis(row.try_get("created_at").map_err(map_err)?)?,
        updated_at: from_millis(row.try_get("updated_at").map_err(map_err)?)?,
    })
}

/// Inserts `c`; with `replace`, settings already kept for its chat are replaced
/// (keeping their id) instead of being a conflict.
pub(super) async fn insert_chat<'e>(
    ex: impl SqliteExecutor<'e>,
    c: &ChatSettings,
    replace: bool,
) -> StoreResult<()> {
    let upsert = if replace {
        " ON CONFLICT (instance_id, remote_jid) DO UPDATE SET archived = excluded.archived,
             pinned = excluded.pinned, muted_until = excluded.muted_until,
             labels = excluded.labels, updated_at = excluded.updated_at"
    } else {
        ""
    };
    let mut q = QueryBuilder::<Sqlite>::new(
        "INSERT INTO chat_settings (id, instance_id, remote_jid, archived, pinned, muted_until, labels, updated_at) VALUES (",
    );
    let mut values = q.separated(", ");
    values
        .push_bind(&c.id)
        .push_bind(&c.instance_id)
        .push_bind(&c.remote_jid)
        .push_bind(c.archived)
        .push_bind(c.pinned)
        .push_bind(c.mute.map(Mute::to_millis))
        .push_bind(json(&c.labels)?)
        .push_bind(ms(c.updated_at));
    q.push(")").push(upsert);
    q.build().execute(ex).await.map_err(map_err)?;
    Ok(())
}

/// Inserts `l`; with `replace`, a label of the same id is renamed and recoloured
/// instead of being a conflict.
pub(super) async fn insert_label<'e>(
    ex: impl SqliteExecutor<'e>,
    l: &Label,
    replace: bool,
) -> StoreResult<()> {
    let upsert = if replace {
        " ON CONFLICT (instance_id, label_id) DO UPDATE SET name = excluded.name,
             color = excluded.color, updated_at = excluded.updated_at"
    } else {
        ""
    };
    let mut q = QueryBuilder::<Sqlite>::new(
        "INSERT INTO labels (id, instance_id, label_id, name, color, created_at, updated_at) VALUES (",
    );
    let mut values = q.separated(", ");
    values
        .push_bind(&l.id)
        .push_bind(&l.instance_id)
        .push_bind(&l.label_id)
        .push_bind(&l.name)
        .push_bind(l.color)
        .push_bind(ms(l.created_at))
        .push_bind(ms(l.updated_at));
    q.push(")").push(upsert);
    q.build().execute(ex).await.map_err(map_err)?;
    Ok(())
}

#[async_trait]
impl ChatStore for SqliteStorage {
    async fn chat_settings(
        &self,
        instance_id: &str,
        remote_jid: &str,
    ) -> StoreResult<Option<ChatSettings>> {
        sqlx::query("SELECT * FROM chat_settings WHERE instance_id = ? AND remote_jid = ?")
            .bind(instance_id)
            .bind(remote_jid)
            .fetch_optional(self.pool())
            .await
            .map_err(map_err)?
            .as_ref()
            .map(chat_from_row)
            .transpose()
    }

    async fn chat_settings_of(
        &self,
        instance_id: &str,
        remote_jids: &[String],
    ) -> StoreResult<Vec<ChatSettings>> {
        if remote_jids.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM chat_settings WHERE instance_id = ");
        q.push_bind(instance_id).push(" AND remote_jid IN (");
        let mut jids = q.separated(", ");
        for jid in remote_jids {
            jids.push_bind(jid);
        }
        q.push(")");
        let rows = q.build().fetch_all(self.pool()).await.map_err(map_err)?;
        rows.iter().map(chat_from_row).collect()
    }

    async fn put_chat_settings(&self, chat: &ChatSettings) -> StoreResult<()> {
        let chat = chat.clone();
        self.commits()
            .submit(chat, |conn, chat| Box::pin(insert_chat(conn, chat, true)))
            .await
    }

    async fn labels(&self, instance_id: &str) -> StoreResult<Vec<Label>> {
        let rows = sqlx::query("SELECT * FROM labels WHERE instance_id = ?")
            .bind(instance_id)
            .fetch_all(self.pool())
            .await
            .map_err(map_err)?;
        let mut labels = rows
            .iter()
            .map(label_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        sort_labels(&mut labels);
        Ok(labels)
    }

    async fn put_label(&self, label: &Label) -> StoreResult<()> {
        let label = label.clone();
        self.commits()
            .submit(label, |conn, label| {
                Box::pin(insert_label(conn, label, true))
            })
            .await
    }

    async fn delete_label(&self, instance_id: &str, label_id: &str) -> StoreResult<bool> {
        let (instance_id, label_id) = (instance_id.to_owned(), label_id.to_owned());
        self.commits()
            .submit((instance_id, label_id), |conn, (instance_id, label_id)| {
                Box::pin(async move {
                    let done =
                        sqlx::query("DELETE FROM labels WHERE instance_id = ? AND label_id = ?")
                            .bind(instance_id)
                            .bind(label_id)
                            .execute(conn)
                            .await
                            .map_err(map_err)?;
                    Ok(done.rows_affected() > 0)
                })
            })
            .await
    }
}
