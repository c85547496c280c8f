//! Whole-store export, import, counts and clearing on MongoDB, for copies between
//! providers. Exports page by `_id` (every collection's `_id` is the record's key, usage
//! buckets' too), so each page is one range scan of the primary index; an import batch
//! is one `insertMany` per collection.

use async_trait::async_trait;
use mongodb::bson::{Bson, Document, doc};
use wagate_actors::store::{
    Record, RecordCounts, RecordKind, StoreResult, TransferStore, id_from_key,
};

use super::messaging::{contact_doc, contact_from_doc, message_doc, message_from_doc};
use super::stats::{USAGE, usage_doc, usage_from_doc};
use super::{
    ACTIVITY, CONTACTS, EVENTS, INSTANCES, MESSAGES, MongoStorage, USERS, activity_doc,
    activity_from_doc, collect, event_doc, event_from_doc, instance_doc, instance_from_doc,
    map_err, user_doc, user_from_doc,
};
use super::{chats, waba};

fn collection(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Users => USERS,
        RecordKind::Instances => INSTANCES,
        RecordKind::Activity => ACTIVITY,
        RecordKind::Events => EVENTS,
        RecordKind::Messages => MESSAGES,
        RecordKind::Contacts => CONTACTS,
        RecordKind::Usage => USAGE,
        RecordKind::WabaAccounts => waba::ACCOUNTS,
        RecordKind::WabaChats => waba::CHATS,
        RecordKind::WabaMessages => waba::MESSAGES,
        RecordKind::Chats => chats::CHATS,
        RecordKind::Labels => chats::LABELS,
    }
}

/// Whether the kind's `_id` is a number (its cursor is [`wagate_actors::store::id_key`] of it).
fn numeric(kind: RecordKind) -> bool {
    matches!(kind, RecordKind::WabaChats | RecordKind::WabaMessages)
}

/// The numeric id of a WABA chat or message record.
fn numeric_id(record: &Record) -> Option<i64> {
    match record {
        Record::WabaChat(c) => Some(c.id),
        Record::WabaMessage(m) => Some(m.id),
        _ => None,
    }
}

fn user_record(d: &Document) -> StoreResult<Record> {
    user_from_doc(d).map(Record::User)
}

fn instance_record(d: &Document) -> StoreResult<Record> {
    instance_from_doc(d).map(Record::Instance)
}

fn activity_record(d: &Document) -> StoreResult<Record> {
    activity_from_doc(d).map(Record::Activity)
}

fn event_record(d: &Document) -> StoreResult<Record> {
    event_from_doc(d).map(Record::Event)
}

fn message_record(d: &Document) -> StoreResult<Record> {
    Ok(Record::Message {
        message: Box::new(message_from_doc(d)?),
        // Absent on documents written before the flag existed: not read.
        read_by_me: matches!(d.get("readByMe"), Some(Bson::Boolean(true))),
    })
}

fn contact_record(d: &Document) -> StoreResult<Record> {
    contact_from_doc(d).map(Record::Contact)
}

fn usage_record(d: &Document) -> StoreResult<Record> {
    usage_from_doc(d).map(|(k, u)| Record::Usage(k, u))
}

fn waba_account_record(d: &Document) -> StoreResult<Record> {
    waba::account_from_doc(d).map(Record::WabaAccount)
}

fn waba_chat_record(d: &Document) -> StoreResult<Record> {
    waba::chat_from_doc(d).map(Record::WabaChat)
}

fn waba_message_record(d: &Document) -> StoreResult<Record> {
    waba::message_from_doc(d).map(Record::WabaMessage)
}

fn chat_record(d: &Document) -> StoreResult<Record> {
    chats::chat_from_doc(d).map(Record::Chat)
}

fn label_record(d: &Document) -> StoreResult<Record> {
    chats::label_from_doc(d).map(Record::Label)
}

/// How a stored document of `kind` decodes into a record.
fn decoder(kind: RecordKind) -> fn(&Document) -> StoreResult<Record> {
    match kind {
        RecordKind::Users => user_record,
        RecordKind::Instances => instance_record,
        RecordKind::Activity => activity_record,
        RecordKind::Events => event_record,
        RecordKind::Messages => message_record,
        RecordKind::Contacts => contact_record,
        RecordKind::Usage => usage_record,
        RecordKind::WabaAccounts => waba_account_record,
        RecordKind::WabaChats => waba_chat_record,
        RecordKind::WabaMessages => waba_message_record,
        RecordKind::Chats => chat_record,
        RecordKind::Labels => label_record,
    }
}

/// The document a record is stored as, exactly as the write paths store it.
fn document(record: &Record) -> StoreResult<Document> {
    Ok(match record {
        Record::User(u) => user_doc(u),
        Record::Instance(i) => instance_doc(i),
        Record::Activity(a) => activity_doc(a)?,
        Record::Event(e) => event_doc(e)?,
        Record::Message {
            message,
            read_by_me,
        } => {
            let mut d = message_doc(message)?;
            d.insert("readByMe", *read_by_me);
            d
        }
        Record::Contact(c) => contact_doc(c),
        Record::Usage(k, u) => usage_doc(k, u),
        Record::WabaAccount(a) => waba::account_doc(a),
        Record::WabaChat(c) => waba::chat_doc(c),
        Record::WabaMessage(m) => waba::message_doc(m.id, m),
        Record::Chat(c) => chats::chat_doc(c),
        Record::Label(l) => chats::label_doc(l),
    })
}

#[async_trait]
impl TransferStore for MongoStorage {
    async fn export_records(
        &self,
        kind: RecordKind,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<Record>> {
        // MongoDB reads limit 0 as "no limit"; the seam means "nothing".
        if limit == 0 {
            return Ok(Vec::new());
        }
        let filter = match after {
            Some(key) if numeric(kind) => doc! {"_id": {"$gt": id_from_key(key)?}},
            Some(key) => doc! {"_id": {"$gt": key}},
            None => doc! {},
        };
        let cursor = self
            .coll(collection(kind))?
            .find(filter)
            .sort(doc! {"_id": 1})
            .limit(i64::from(limit))
            .await
            .map_err(map_err)?;
        collect(cursor, decoder(kind)).await
    }

    async fn import_records(&self, records: &[Record]) -> StoreResult<()> {
        // One insertMany per run of records of the same kind, in the order given.
        let mut start = 0;
        while start < records.len() {
            let kind = records[start].kind();
            let end = records[start..]
                .iter()
                .position(|r| r.kind() != kind)
                .map_or(records.len(), |n| start + n);
            let docs = records[start..end]
                .iter()
                .map(document)
                .collect::<StoreResult<Vec<_>>>()?;
            self.coll(collection(kind))?
                .insert_many(docs)
                .await
                .map_err(map_err)?;
            // Ids drawn from the counters later must not meet the copied ones.
            if let Some(max) = records[start..end].iter().filter_map(numeric_id).max() {
                self.raise_counter(collection(kind), max).await?;
            }
            start = end;
        }
        Ok(())
    }

    async fn count_records(&self) -> StoreResult<RecordCounts> {
        let mut counts = RecordCounts::default();
        for kind in RecordKind::ALL {
            let n = self
                .coll(collection(kind))?
                .count_documents(doc! {})
                .await
                .map_err(map_err)?;
            counts.set(kind, n);
        }
        Ok(counts)
    }

    async fn clear_all(&self) -> StoreResult<()> {
        // delete_many rather than drop: the indexes (and their unique rules) stay.
        for kind in RecordKind::ALL {
            self.coll(collection(kind))?
                .delete_many(doc! {})
                .await
                .map_err(map_err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_collection() {
        let mut names: Vec<_> = RecordKind::ALL.iter().map(|k| collection(*k)).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RecordKind::ALL.len());
    }
}
