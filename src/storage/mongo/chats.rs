//! How the account keeps its chats, and its labels, on MongoDB.

use async_trait::async_trait;
use mongodb::IndexModel;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::IndexOptions;
use wagate_actors::domain::chat::sort_labels;
use wagate_actors::domain::{ChatSettings, Label, Mute};
use wagate_actors::store::{ChatStore, StoreResult};

use super::{Fields, MongoStorage, collect, date, map_err};

pub(super) const CHATS: &str = "chat_settings";
pub(super) const LABELS: &str = "labels";

pub(super) async fn create_indexes(s: &MongoStorage) -> StoreResult<()> {
    let unique = |keys: Document, name: &str| {
        IndexModel::builder()
            .keys(keys)
            .options(
                IndexOptions::builder()
                    .name(name.to_owned())
                    .unique(true)
                    .build(),
            )
            .build()
    };
    s.coll(CHATS)?
        .create_indexes([unique(
            doc! {"instanceId": 1, "remoteJid": 1},
            "chat_settings_by_jid",
        )])
        .await
        .map_err(map_err)?;
    s.coll(LABELS)?
        .create_indexes([unique(
            doc! {"instanceId": 1, "labelId": 1},
            "labels_by_label_id",
        )])
        .await
        .map_err(map_err)?;
    Ok(())
}

pub(super) fn chat_doc(c: &ChatSettings) -> Document {
    doc! {
        "_id": &c.id,
        "instanceId": &c.instance_id,
        "remoteJid": &c.remote_jid,
        "archived": c.archived,
        "pinned": c.pinned,
        // WhatsApp's encoding: null not muted, -1 until unmuted, else the end in Unix ms.
        "mutedUntil": c.mute.map(Mute::to_millis).map_or(Bson::Null, Bson::Int64),
        "labels": &c.labels,
        "updatedAt": date(c.updated_at),
    }
}

pub(super) fn chat_from_doc(d: &Document) -> StoreResult<ChatSettings> {
    let f = Fields(d);
    Ok(ChatSettings {
        id: f.string("_id")?,
        instance_id: f.string("instanceId")?,
        remote_jid: f.string("remoteJid")?,
        archived: f.bool("archived")?,
        pinned: f.bool("pinned")?,
        mute: f.opt_i64("mutedUntil")?.and_then(Mute::from_millis),
        labels: f.list("labels")?,
        updated_at: f.time("updatedAt")?,
    })
}

pub(super) fn label_doc(l: &Label) -> Document {
    doc! {
        "_id": &l.id,
        "instanceId": &l.instance_id,
        "labelId": &l.label_id,
        "name": &l.name,
        "color": l.color,
        "createdAt": date(l.created_at),
        "updatedAt": date(l.updated_at),
    }
}

pub(super) fn label_from_doc(d: &Document) -> StoreResult<Label> {
    let f = Fields(d);
    let color = f.opt_i64("color")?.unwrap_or(0);
    Ok(Label {
        id: f.string("_id")?,
        instance_id: f.string("instanceId")?,
        label_id: f.string("labelId")?,
        name: f.string("name")?,
        color: i32::try_from(color).unwrap_or(0),
        created_at: f.time("createdAt")?,
        updated_at: f.time("updatedAt")?,
    })
}

#[async_trait]
impl ChatStore for MongoStorage {
    async fn chat_settings(
        &self,
        instance_id: &str,
        remote_jid: &str,
    ) -> StoreResult<Option<ChatSettings>> {
        self.coll(CHATS)?
            .find_one(doc! {"instanceId": instance_id, "remoteJid": remote_jid})
            .await
            .map_err(map_err)?
            .as_ref()
            .map(chat_from_doc)
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
        let cursor = self
            .coll(CHATS)?
            .find(doc! {"instanceId": instance_id, "remoteJid": {"$in": remote_jids}})
            .await
            .map_err(map_err)?;
        collect(cursor, chat_from_doc).await
    }

    async fn put_chat_settings(&self, chat: &ChatSettings) -> StoreResult<()> {
        let mut set = chat_doc(chat);
        set.remove("_id");
        self.coll(CHATS)?
            .update_one(
                doc! {"instanceId": &chat.instance_id, "remoteJid": &chat.remote_jid},
                doc! {"$set": set, "$setOnInsert": {"_id": &chat.id}},
            )
            .upsert(true)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn labels(&self, instance_id: &str) -> StoreResult<Vec<Label>> {
        let cursor = self
            .coll(LABELS)?
            .find(doc! {"instanceId": instance_id})
            .await
            .map_err(map_err)?;
        let mut labels = collect(cursor, label_from_doc).await?;
        sort_labels(&mut labels);
        Ok(labels)
    }

    async fn put_label(&self, label: &Label) -> StoreResult<()> {
        let mut set = label_doc(label);
        let on_insert = doc! {"_id": &label.id, "createdAt": date(label.created_at)};
        set.remove("_id");
        set.remove("createdAt");
        self.coll(LABELS)?
            .update_one(
                doc! {"instanceId": &label.instance_id, "labelId": &label.label_id},
                doc! {"$set": set, "$setOnInsert": on_insert},
            )
            .upsert(true)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn delete_label(&self, instance_id: &str, label_id: &str) -> StoreResult<bool> {
        let done = self
            .coll(LABELS)?
            .delete_one(doc! {"instanceId": instance_id, "labelId": label_id})
            .await
            .map_err(map_err)?;
        Ok(done.deleted_count > 0)
    }
}
