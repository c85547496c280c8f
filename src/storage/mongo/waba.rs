//! The WABA operator desk on MongoDB.
//!
//! Chats and messages have numeric `_id`s (the spec's `chatId: number`), drawn from the
//! `counters` collection (`{_id: "<collection>", seq}`, `$inc` in an upsert, so two
//! servers sharing a database never hand out the same id). Accounts are keyed by their
//! owner's id.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::IndexModel;
use mongodb::bson::{Document, doc};
use mongodb::options::{IndexOptions, ReturnDocument};
use wagate_actors::domain::MessageStatus;
use wagate_actors::domain::Page;
use wagate_actors::domain::waba::{
    AssignedFilter, SendFailure, WabaAccount, WabaChat, WabaChatSummary, WabaMedia, WabaMessage,
};
use wagate_actors::error::StoreError;
use wagate_actors::store::StoreResult;
use wagate_actors::store::WabaStore;

use super::{Fields, MongoStorage, corrupt, date, find_page, forward_only_status, map_err};

pub(super) const ACCOUNTS: &str = "waba_accounts";
pub(super) const CHATS: &str = "waba_chats";
pub(super) const MESSAGES: &str = "waba_messages";
/// Sequences of numeric ids, one document per collection.
const COUNTERS: &str = "counters";

/// The indexes of the desk's collections (idempotent, run at every connect).
pub(super) async fn create_indexes(s: &MongoStorage) -> StoreResult<()> {
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
    let plan = [
        (
            ACCOUNTS,
            vec![
                index(
                    doc! {"phoneNumberId": 1},
                    "waba_accounts_by_phone_number_id",
                    true,
                ),
                index(
                    doc! {"verifyTokenHash": 1},
                    "waba_accounts_by_verify_token",
                    false,
                ),
            ],
        ),
        (
            CHATS,
            vec![
                index(
                    doc! {"ownerId": 1, "customerPhone": 1},
                    "waba_chats_by_customer",
                    true,
                ),
                // Chat lists, newest activity first.
                index(
                    doc! {"ownerId": 1, "lastMessageAt": 1, "_id": 1},
                    "waba_chats_by_activity",
                    false,
                ),
            ],
        ),
        (
            MESSAGES,
            vec![
                index(
                    doc! {"whatsappMessageId": 1},
                    "waba_messages_by_wamid",
                    true,
                ),
                index(
                    doc! {"chatId": 1, "ts": 1, "_id": 1},
                    "waba_messages_by_chat",
                    false,
                ),
            ],
        ),
    ];
    for (collection, indexes) in plan {
        s.coll(collection)?
            .create_indexes(indexes)
            .await
            .map_err(map_err)?;
    }
    Ok(())
}

fn numeric_id(f: &Fields<'_>) -> StoreResult<i64> {
    f.opt_i64("_id")?
        .ok_or_else(|| corrupt("a WABA record without a numeric _id"))
}

pub(super) fn account_doc(a: &WabaAccount) -> Document {
    doc! {
        "_id": &a.owner_id,
        "phoneNumberId": &a.phone_number_id,
        "businessAccountId": &a.business_account_id,
        "accessToken": &a.access_token,
        "appSecret": &a.app_secret,
        "verifyToken": &a.verify_token,
        "verifyTokenHash": &a.verify_token_hash,
        "updatedAt": date(a.updated_at),
    }
}

pub(super) fn account_from_doc(d: &Document) -> StoreResult<WabaAccount> {
    let f = Fields(d);
    Ok(WabaAccount {
        owner_id: f.string("_id")?,
        phone_number_id: f.string("phoneNumberId")?,
        business_account_id: f.string("businessAccountId")?,
        access_token: f.string("accessToken")?,
        app_secret: f.string("appSecret")?,
        verify_token: f.string("verifyToken")?,
        verify_token_hash: f.string("verifyTokenHash")?,
        updated_at: f.time("updatedAt")?,
    })
}

pub(super) fn chat_doc(c: &WabaChat) -> Document {
    doc! {
        "_id": c.id,
        "ownerId": &c.owner_id,
        "customerPhone": &c.customer_phone,
        "customerName": c.customer_name.as_deref(),
        "lastCustomerMessageAt": c.last_customer_message_at.map(date),
        "lastMessageAt": c.last_message_at.map(date),
        "assignedOperatorId": c.assigned_operator_id.as_deref(),
        "createdAt": date(c.created_at),
    }
}

pub(super) fn chat_from_doc(d: &Document) -> StoreResult<WabaChat> {
    let f = Fields(d);
    Ok(WabaChat {
        id: numeric_id(&f)?,
        owner_id: f.string("ownerId")?,
        customer_phone: f.string("customerPhone")?,
        customer_name: f.opt_string("customerName")?,
        last_customer_message_at: f.opt_time("lastCustomerMessageAt")?,
        last_message_at: f.opt_time("lastMessageAt")?,
        assigned_operator_id: f.opt_string("assignedOperatorId")?,
        created_at: f.time("createdAt")?,
    })
}

pub(super) fn message_doc(id: i64, m: &WabaMessage) -> Document {
    doc! {
        "_id": id,
        "chatId": m.chat_id,
        "ownerId": &m.owner_id,
        "whatsappMessageId": &m.whatsapp_message_id,
        "fromMe": m.from_me,
        "messageType": &m.message_type,
        "content": m.content.as_deref(),
        "mediaUrl": m.media_url.as_deref(),
        "status": m.status.as_str(),
        "isReadByOperator": m.is_read_by_operator,
        "senderUserId": m.sender_user_id.as_deref(),
        "ts": date(m.timestamp),
        "statusUpdatedAt": m.status_updated_at.map(date),
        "media": m.media.as_ref().map(media_doc),
        "error": m.error.as_ref().map(|e| doc! {"code": e.code, "title": &e.title}),
    }
}

fn media_doc(m: &WabaMedia) -> Document {
    doc! {
        "mediaId": &m.media_id,
        "mimeType": m.mime_type.as_deref(),
        "fileName": m.file_name.as_deref(),
        "size": m.size.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
        "path": m.path.as_deref(),
        "state": m.state.as_str(),
        "attempts": i64::from(m.attempts),
        "error": m.error.as_deref(),
    }
}

fn media_from_doc(d: &Document) -> StoreResult<WabaMedia> {
    let f = Fields(d);
    Ok(WabaMedia {
        media_id: f.string("mediaId")?,
        mime_type: f.opt_string("mimeType")?,
        file_name: f.opt_string("fileName")?,
        size: f.opt_i64("size")?.map(|s| s.max(0) as u64),
        path: f.opt_string("path")?,
        state: f.parsed("state")?,
        attempts: f
            .opt_i64("attempts")?
            .unwrap_or(0)
            .clamp(0, i64::from(u32::MAX)) as u32,
        error: f.opt_string("error")?,
    })
}

pub(super) fn message_from_doc(d: &Document) -> StoreResult<WabaMessage> {
    let f = Fields(d);
    Ok(WabaMessage {
        id: numeric_id(&f)?,
        chat_id: f
            .opt_i64("chatId")?
            .ok_or_else(|| corrupt("a WABA message without chatId"))?,
        owner_id: f.string("ownerId")?,
        whatsapp_message_id: f.string("whatsappMessageId")?,
        from_me: f.bool("fromMe")?,
        message_type: f.string("messageType")?,
        content: f.opt_string("content")?,
        media_url: f.opt_string("mediaUrl")?,
        media: f
            .document("media")?
            .map(|m| media_from_doc(m.0))
            .transpose()?,
        error: match f.document("error")? {
            Some(e) => Some(SendFailure {
                code: e.opt_i64("code")?,
                title: e.string("title")?,
            }),
            None => None,
        },
        status: f.parsed("status")?,
        is_read_by_operator: f.bool("isReadByOperator")?,
        sender_user_id: f.opt_string("senderUserId")?,
        timestamp: f.time("ts")?,
        status_updated_at: f.opt_time("statusUpdatedAt")?,
    })
}

fn owner_filter(owner_id: Option<&str>) -> Document {
    match owner_id {
        Some(owner) => doc! {"ownerId": owner},
        None => Document::new(),
    }
}

impl MongoStorage {
    /// The next number of the `collection`'s sequence.
    async fn next_id(&self, collection: &str) -> StoreResult<i64> {
        let counter = self
            .coll(COUNTERS)?
            .find_one_and_update(doc! {"_id": collection}, doc! {"$inc": {"seq": 1_i64}})
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await
            .map_err(map_err)?
            .ok_or_else(|| corrupt(format!("the counter of {collection} vanished")))?;
        Fields(&counter)
            .opt_i64("seq")?
            .ok_or_else(|| corrupt(format!("the counter of {collection} holds no number")))
    }

    /// Moves the `collection`'s sequence to at least `id` (never back), so ids drawn
    /// later are greater: what an import of records with their own ids needs.
    pub(super) async fn raise_counter(&self, collection: &str, id: i64) -> StoreResult<()> {
        self.coll(COUNTERS)?
            .update_one(doc! {"_id": collection}, doc! {"$max": {"seq": id}})
            .upsert(true)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

#[async_trait]
impl WabaStore for MongoStorage {
    async fn put_waba_account(&self, a: &WabaAccount) -> StoreResult<()> {
        self.coll(ACCOUNTS)?
            .replace_one(doc! {"_id": &a.owner_id}, account_doc(a))
            .upsert(true)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn waba_account(&self, owner_id: &str) -> StoreResult<Option<WabaAccount>> {
        self.coll(ACCOUNTS)?
            .find_one(doc! {"_id": owner_id})
            .await
            .map_err(map_err)?
            .as_ref()
            .map(account_from_doc)
            .transpose()
    }

    async fn waba_account_by_phone_number_id(
        &self,
        phone_number_id: &str,
    ) -> StoreResult<Option<WabaAccount>> {
        self.coll(ACCOUNTS)?
            .find_one(doc! {"phoneNumberId": phone_number_id})
            .await
            .map_err(map_err)?
            .as_ref()
            .map(account_from_doc)
            .transpose()
    }

    async fn waba_account_by_verify_token_hash(
        &self,
        hash: &str,
    ) -> StoreResult<Option<WabaAccount>> {
        self.coll(ACCOUNTS)?
            .find_one(doc! {"verifyTokenHash": hash})
            .await
            .map_err(map_err)?
            .as_ref()
            .map(account_from_doc)
            .transpose()
    }

    async fn waba_chat_for_customer(
        &self,
        owner_id: &str,
        customer_phone: &str,
        customer_name: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<WabaChat> {
        let chats = self.coll(CHATS)?;
        let key = doc! {"ownerId": owner_id, "customerPhone": customer_phone};
        // Find, else create; a concurrent creation of the same chat loses on the unique
        // index and finds the winner's chat.
        for _ in 0..2 {
            let found = match customer_name {
                Some(name) => chats
                    .find_one_and_update(key.clone(), doc! {"$set": {"customerName": name}})
                    .return_document(ReturnDocument::After)
                    .await
                    .map_err(map_err)?,
                None => chats.find_one(key.clone()).await.map_err(map_err)?,
            };
            if let Some(d) = found {
                return chat_from_doc(&d);
            }
            let id = self.next_id(CHATS).await?;
            let chat = WabaChat {
                id,
                owner_id: owner_id.to_owned(),
                customer_phone: customer_phone.to_owned(),
                customer_name: customer_name.map(str::to_owned),
                last_customer_message_at: None,
                last_message_at: None,
                assigned_operator_id: None,
                created_at: at,
            };
            let inserted = chats.insert_one(chat_doc(&chat)).await.map_err(map_err);
            match inserted {
                Ok(_) => return Ok(chat),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(format!(
            "the chat of {customer_phone} could not be created"
        )))
    }

    async fn waba_chat(&self, id: i64) -> StoreResult<Option<WabaChat>> {
        self.coll(CHATS)?
            .find_one(doc! {"_id": id})
            .await
            .map_err(map_err)?
            .as_ref()
            .map(chat_from_doc)
            .transpose()
    }

    async fn find_waba_chat(
        &self,
        owner_id: &str,
        customer_phone: &str,
    ) -> StoreResult<Option<WabaChat>> {
        self.coll(CHATS)?
            .find_one(doc! {"ownerId": owner_id, "customerPhone": customer_phone})
            .await
            .map_err(map_err)?
            .as_ref()
            .map(chat_from_doc)
            .transpose()
    }

    async fn list_waba_chats(
        &self,
        owner_id: Option<&str>,
        assigned: &AssignedFilter,
        limit: u32,
        skip: u64,
    ) -> StoreResult<Page<WabaChatSummary>> {
        let chats = self.coll(CHATS)?;
        let sort = doc! {"lastMessageAt": -1, "_id": -1};
        let mut filter = owner_filter(owner_id);
        match assigned {
            AssignedFilter::All => {}
            // `null` matches a missing field too.
            AssignedFilter::Unassigned => {
                filter.insert("assignedOperatorId", mongodb::bson::Bson::Null);
            }
            AssignedFilter::To(id) => {
                filter.insert("assignedOperatorId", id.as_str());
            }
        }
        let page = find_page(&chats, filter, sort, limit, skip, chat_from_doc).await?;
        let messages = self.coll(MESSAGES)?;
        let mut items = Vec::with_capacity(page.items.len());
        for chat in page.items {
            let unread = messages
                .count_documents(
                    doc! {"chatId": chat.id, "fromMe": false, "isReadByOperator": false},
                )
                .await
                .map_err(map_err)?;
            let last_message = messages
                .find_one(doc! {"chatId": chat.id})
                .sort(doc! {"ts": -1, "_id": -1})
                .await
                .map_err(map_err)?
                .as_ref()
                .map(message_from_doc)
                .transpose()?;
            items.push(WabaChatSummary {
                chat,
                last_message,
                unread_count: unread,
            });
        }
        Ok(Page {
            items,
            total: page.total,
        })
    }

    async fn insert_waba_message(&self, m: &WabaMessage) -> StoreResult<WabaMessage> {
        let id = self.next_id(MESSAGES).await?;
        self.coll(MESSAGES)?
            .insert_one(message_doc(id, m))
            .await
            .map_err(map_err)?;
        // Forward only: `$max` never moves the chat's instants back.
        let mut max = doc! {"lastMessageAt": date(m.timestamp)};
        if !m.from_me {
            max.insert("lastCustomerMessageAt", date(m.timestamp));
        }
        self.coll(CHATS)?
            .update_one(doc! {"_id": m.chat_id}, doc! {"$max": max})
            .await
            .map_err(map_err)?;
        Ok(WabaMessage { id, ..m.clone() })
    }

    async fn waba_message(&self, id: i64) -> StoreResult<Option<WabaMessage>> {
        self.coll(MESSAGES)?
            .find_one(doc! {"_id": id})
            .await
            .map_err(map_err)?
            .as_ref()
            .map(message_from_doc)
            .transpose()
    }

    async fn advance_waba_message_status(
        &self,
        chat_id: i64,
        whatsapp_message_id: &str,
        status: MessageStatus,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<WabaMessage>> {
        let Some(filter) = forward_only_status(
            doc! {"whatsappMessageId": whatsapp_message_id, "chatId": chat_id},
            status,
        ) else {
            return Ok(None);
        };
        self.coll(MESSAGES)?
            .find_one_and_update(
                filter,
                doc! {"$set": {"status": status.as_str(), "statusUpdatedAt": date(at)}},
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(message_from_doc)
            .transpose()
    }

    async fn waba_chat_messages(
        &self,
        chat_id: i64,
        limit: u32,
        skip: u64,
    ) -> StoreResult<Page<WabaMessage>> {
        let messages = self.coll(MESSAGES)?;
        let filter = doc! {"chatId": chat_id};
        find_page(
            &messages,
            filter,
            doc! {"ts": -1, "_id": -1},
            limit,
            skip,
            message_from_doc,
        )
        .await
    }

    async fn mark_waba_chat_read(&self, chat_id: i64) -> StoreResult<u64> {
        let done = self
            .coll(MESSAGES)?
            .update_many(
                doc! {"chatId": chat_id, "fromMe": false, "isReadByOperator": false},
                doc! {"$set": {"isReadByOperator": true}},
            )
            .await
            .map_err(map_err)?;
        Ok(done.modified_count)
    }

    async fn assign_waba_chat(
        &self,
        chat_id: i64,
        expected: Option<&str>,
        assignee: Option<&str>,
    ) -> StoreResult<Option<WabaChat>> {
        // One conditional update; `null` in the filter matches a missing field too.
        self.coll(CHATS)?
            .find_one_and_update(
                doc! {"_id": chat_id, "assignedOperatorId": expected},
                doc! {"$set": {"assignedOperatorId": assignee}},
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(chat_from_doc)
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
        self.coll(MESSAGES)?
            .find_one_and_update(
                doc! {"_id": message_id},
                doc! {"$set": {
                    "whatsappMessageId": whatsapp_message_id,
                    "status": status.as_str(),
                    "statusUpdatedAt": date(at),
                    "error": error.map(|e| doc! {"code": e.code, "title": &e.title}),
                }},
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(message_from_doc)
            .transpose()
    }

    async fn set_waba_media(
        &self,
        message_id: i64,
        media: &WabaMedia,
    ) -> StoreResult<Option<WabaMessage>> {
        self.coll(MESSAGES)?
            .find_one_and_update(
                doc! {"_id": message_id},
                doc! {"$set": {"media": media_doc(media)}},
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(message_from_doc)
            .transpose()
    }
}
