//! The operator desk's records in memory.

use std::sync::{MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::MemoryStorage;
use crate::domain::waba::{
    AssignedFilter, SendFailure, WabaAccount, WabaChat, WabaChatSummary, WabaMedia, WabaMessage,
};
use crate::domain::{MessageStatus, Page};
use crate::error::StoreError;
use crate::store::{Record, RecordKind, StoreResult, WabaStore};

#[derive(Default)]
pub(super) struct WabaData {
    accounts: Vec<WabaAccount>,
    chats: Vec<WabaChat>,
    messages: Vec<WabaMessage>,
    next_chat: i64,
    next_message: i64,
}

impl MemoryStorage {
    fn open_waba(&self) -> StoreResult<MutexGuard<'_, WabaData>> {
        drop(self.open()?);
        Ok(self.waba())
    }

    fn waba(&self) -> MutexGuard<'_, WabaData> {
        self.waba.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every record of one of the WABA kinds, unordered (the caller sorts by key).
    pub(super) fn export_waba(&self, kind: RecordKind) -> Vec<Record> {
        let data = self.waba();
        match kind {
            RecordKind::WabaAccounts => data
                .accounts
                .iter()
                .cloned()
                .map(Record::WabaAccount)
                .collect(),
            RecordKind::WabaChats => data.chats.iter().cloned().map(Record::WabaChat).collect(),
            RecordKind::WabaMessages => data
                .messages
                .iter()
                .cloned()
                .map(Record::WabaMessage)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Stores one WABA record exactly as given (ids kept; the id sequences move past
    /// them). `Conflict` on a key or unique field already stored.
    pub(super) fn import_waba(&self, record: Record) -> StoreResult<()> {
        let mut data = self.waba();
        match record {
            Record::WabaAccount(a) => {
                if data
                    .accounts
                    .iter()
                    .any(|x| x.owner_id == a.owner_id || x.phone_number_id == a.phone_number_id)
                {
                    return Err(StoreError::Conflict(format!(
                        "the WABA account of {} exists",
                        a.owner_id
                    )));
                }
                data.accounts.push(a);
            }
            Record::WabaChat(c) => {
                if data.chats.iter().any(|x| {
                    x.id == c.id
                        || (x.owner_id == c.owner_id && x.customer_phone == c.customer_phone)
                }) {
                    return Err(StoreError::Conflict(format!("chat {} exists", c.id)));
                }
                data.next_chat = data.next_chat.max(c.id);
                data.chats.push(c);
            }
            Record::WabaMessage(m) => {
                if data
                    .messages
                    .iter()
                    .any(|x| x.id == m.id || x.whatsapp_message_id == m.whatsapp_message_id)
                {
                    return Err(StoreError::Conflict(format!("message {} exists", m.id)));
                }
                data.next_message = data.next_message.max(m.id);
                data.messages.push(m);
            }
            _ => {}
        }
        Ok(())
    }

    /// Accounts, chats and messages stored.
    pub(super) fn waba_counts(&self) -> (u64, u64, u64) {
        let data = self.waba();
        (
            data.accounts.len() as u64,
            data.chats.len() as u64,
            data.messages.len() as u64,
        )
    }

    /// Deletes every WABA record; the id sequences stay (ids are never reused).
    pub(super) fn clear_waba(&self) {
        let mut data = self.waba();
        data.accounts.clear();
        data.chats.clear();
        data.messages.clear();
    }
}

fn page<T: Clone>(items: &[T], limit: u32, skip: u64) -> Page<T> {
    Page {
        total: items.len() as u64,
        items: items
            .iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .take(limit as usize)
            .cloned()
            .collect(),
    }
}

#[async_trait]
impl WabaStore for MemoryStorage {
    async fn put_waba_account(&self, account: &WabaAccount) -> StoreResult<()> {
        let mut data = self.open_waba()?;
        if data
            .accounts
            .iter()
            .any(|a| a.phone_number_id == account.phone_number_id && a.owner_id != account.owner_id)
        {
            return Err(StoreError::Conflict(format!(
                "phone number id {} belongs to another account",
                account.phone_number_id
            )));
        }
        data.accounts.retain(|a| a.owner_id != account.owner_id);
        data.accounts.push(account.clone());
        Ok(())
    }

    async fn waba_account(&self, owner_id: &str) -> StoreResult<Option<WabaAccount>> {
        Ok(self
            .waba()
            .accounts
            .iter()
            .find(|a| a.owner_id == owner_id)
            .cloned())
    }

    async fn waba_account_by_phone_number_id(
        &self,
        phone_number_id: &str,
    ) -> StoreResult<Option<WabaAccount>> {
        Ok(self
            .waba()
            .accounts
            .iter()
            .find(|a| a.phone_number_id == phone_number_id)
            .cloned())
    }

    async fn waba_account_by_verify_token_hash(
        &self,
        hash: &str,
    ) -> StoreResult<Option<WabaAccount>> {
        Ok(self
            .waba()
            .accounts
            .iter()
            .find(|a| a.verify_token_hash == hash)
            .cloned())
    }

    async fn waba_chat_for_customer(
        &self,
        owner_id: &str,
        customer_phone: &str,
        customer_name: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<WabaChat> {
        let mut data = self.open_waba()?;
        if let Some(chat) = data
            .chats
            .iter_mut()
            .find(|c| c.owner_id == owner_id && c.customer_phone == customer_phone)
        {
            if let Some(name) = customer_name {
                chat.customer_name = Some(name.to_owned());
            }
            return Ok(chat.clone());
        }
        data.next_chat += 1;
        let chat = WabaChat {
            id: data.next_chat,
            owner_id: owner_id.to_owned(),
            customer_phone: customer_phone.to_owned(),
            customer_name: customer_name.map(str::to_owned),
            last_customer_message_at: None,
            last_message_at: None,
            assigned_operator_id: None,
            created_at: at,
        };
        data.chats.push(chat.clone());
        Ok(chat)
    }

    async fn waba_chat(&self, id: i64) -> StoreResult<Option<WabaChat>> {
        Ok(self.open_waba()?.chats.iter().find(|c| c.id == id).cloned())
    }

    async fn find_waba_chat(
        &self,
        owner_id: &str,
        customer_phone: &str,
    ) -> StoreResult<Option<WabaChat>> {
        Ok(self
            .waba()
            .chats
            .iter()
            .find(|c| c.owner_id == owner_id && c.customer_phone == customer_phone)
            .cloned())
    }

    async fn list_waba_chats(
        &self,
        owner_id: Option<&str>,
        assigned: &AssignedFilter,
        limit: u32,
        skip: u64,
    ) -> StoreResult<Page<WabaChatSummary>> {
        let data = self.open_waba()?;
        let mut chats: Vec<&WabaChat> = data
            .chats
            .iter()
            .filter(|c| owner_id.is_none_or(|o| c.owner_id == o))
            .filter(|c| assigned.keeps(c.assigned_operator_id.as_deref()))
            .collect();
        chats.sort_by_key(|c| std::cmp::Reverse((c.last_message_at, c.id)));
        let summaries: Vec<WabaChatSummary> = chats
            .into_iter()
            .map(|chat| {
                let of_chat = data.messages.iter().filter(|m| m.chat_id == chat.id);
                WabaChatSummary {
                    chat: chat.clone(),
                    last_message: of_chat.clone().max_by_key(|m| (m.timestamp, m.id)).cloned(),
                    unread_count: of_chat
                        .filter(|m| !m.from_me && !m.is_read_by_operator)
                        .count() as u64,
                }
            })
            .collect();
        Ok(page(&summaries, limit, skip))
    }

    async fn insert_waba_message(&self, message: &WabaMessage) -> StoreResult<WabaMessage> {
        let mut data = self.open_waba()?;
        if data
            .messages
            .iter()
            .any(|m| m.whatsapp_message_id == message.whatsapp_message_id)
        {
            return Err(StoreError::Conflict(format!(
                "message {} exists",
                message.whatsapp_message_id
            )));
        }
        data.next_message += 1;
        let stored = WabaMessage {
            id: data.next_message,
            ..message.clone()
        };
        if let Some(chat) = data.chats.iter_mut().find(|c| c.id == message.chat_id) {
            let ts = Some(message.timestamp);
            chat.last_message_at = chat.last_message_at.max(ts);
            if !message.from_me {
                chat.last_customer_message_at = chat.last_customer_message_at.max(ts);
            }
        }
        data.messages.push(stored.clone());
        Ok(stored)
    }

    async fn waba_message(&self, id: i64) -> StoreResult<Option<WabaMessage>> {
        Ok(self
            .open_waba()?
            .messages
            .iter()
            .find(|m| m.id == id)
            .cloned())
    }

    async fn advance_waba_message_status(
        &self,
        chat_id: i64,
        whatsapp_message_id: &str,
        status: MessageStatus,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<WabaMessage>> {
        let mut data = self.open_waba()?;
        let Some(m) = data
            .messages
            .iter_mut()
            .find(|m| m.chat_id == chat_id && m.whatsapp_message_id == whatsapp_message_id)
        else {
            return Ok(None);
        };
        if !m.status.can_become(status) {
            return Ok(None);
        }
        m.status = status;
        m.status_updated_at = Some(at);
        Ok(Some(m.clone()))
    }

    async fn waba_chat_messages(
        &self,
        chat_id: i64,
        limit: u32,
        skip: u64,
    ) -> StoreResult<Page<WabaMessage>> {
        let data = self.open_waba()?;
        let mut messages: Vec<WabaMessage> = data
            .messages
            .iter()
            .filter(|m| m.chat_id == chat_id)
            .cloned()
            .collect();
        messages.sort_by_key(|m| std::cmp::Reverse((m.timestamp, m.id)));
        Ok(page(&messages, limit, skip))
    }

    async fn mark_waba_chat_read(&self, chat_id: i64) -> StoreResult<u64> {
        let mut data = self.open_waba()?;
        let mut n = 0;
        for m in data
            .messages
            .iter_mut()
            .filter(|m| m.chat_id == chat_id && !m.from_me && !m.is_read_by_operator)
        {
            m.is_read_by_operator = true;
            n += 1;
        }
        Ok(n)
    }

    async fn assign_waba_chat(
        &self,
        chat_id: i64,
        expected: Option<&str>,
        assignee: Option<&str>,
    ) -> StoreResult<Option<WabaChat>> {
        let mut data = self.open_waba()?;
        let Some(chat) = data.chats.iter_mut().find(|c| c.id == chat_id) else {
            return Ok(None);
        };
        if chat.assigned_operator_id.as_deref() != expected {
            return Ok(None);
        }
        chat.assigned_operator_id = assignee.map(str::to_owned);
        Ok(Some(chat.clone()))
    }

    async fn settle_waba_message(
        &self,
        message_id: i64,
        whatsapp_message_id: &str,
        status: MessageStatus,
        error: Option<&SendFailure>,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<WabaMessage>> {
        let mut data = self.open_waba()?;
        Ok(data
            .messages
            .iter_mut()
            .find(|m| m.id == message_id)
            .map(|m| {
                m.whatsapp_message_id = whatsapp_message_id.to_owned();
                m.status = status;
                m.status_updated_at = Some(at);
                m.error = error.cloned();
                m.clone()
            }))
    }

    async fn set_waba_media(
        &self,
        message_id: i64,
        media: &WabaMedia,
    ) -> StoreResult<Option<WabaMessage>> {
        let mut data = self.open_waba()?;
        Ok(data
            .messages
            .iter_mut()
            .find(|m| m.id == message_id)
            .map(|m| {
                m.media = Some(media.clone());
                m.clone()
            }))
    }
}
