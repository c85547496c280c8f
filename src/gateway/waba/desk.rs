//! The operators' side of the desk: the chats a caller sees, their histories, sends
//! (the 24-hour rule is the chat actor's), marking read and the live feed.

use tokio::sync::broadcast;
use wagate_actors::desk::WabaEvent;
use wagate_actors::domain::Page;
use wagate_actors::domain::waba::{WabaChat, WabaChatSummary, WabaContent, WabaMessage};

use super::{Scope, Waba, WabaError};

impl Waba {
    /// The chat, if `scope` sees it; `ChatNotFound` otherwise.
    pub async fn chat(&self, scope: &Scope, id: i64) -> Result<WabaChat, WabaError> {
        match self.storage.waba_chat(id).await? {
            Some(chat) if scope.sees(&chat.owner_id) => Ok(chat),
            _ => Err(WabaError::ChatNotFound(id)),
        }
    }

    /// The message, if `scope` sees it; `MessageNotFound` otherwise.
    pub async fn message(&self, scope: &Scope, id: i64) -> Result<WabaMessage, WabaError> {
        match self.storage.waba_message(id).await? {
            Some(m) if scope.sees(&m.owner_id) => Ok(m),
            _ => Err(WabaError::MessageNotFound(id)),
        }
    }

    /// The chats `scope` sees, most recent first.
    pub async fn chats(
        &self,
        scope: &Scope,
        limit: u32,
        offset: u64,
    ) -> Result<Page<WabaChatSummary>, WabaError> {
        Ok(self
            .storage
            .list_waba_chats(scope.owner(), limit, offset)
            .await?)
    }

    /// A page of a visible chat's messages, newest first.
    pub async fn history(
        &self,
        scope: &Scope,
        chat_id: i64,
        limit: u32,
        offset: u64,
    ) -> Result<Page<WabaMessage>, WabaError> {
        let chat = self.chat(scope, chat_id).await?;
        Ok(self
            .storage
            .waba_chat_messages(chat.id, limit, offset)
            .await?)
    }

    /// Marks a visible chat's inbound messages read by an operator; answers how many.
    pub async fn mark_read(&self, scope: &Scope, chat_id: i64) -> Result<u64, WabaError> {
        let chat = self.chat(scope, chat_id).await?;
        Ok(self.storage.mark_waba_chat_read(chat.id).await?)
    }

    /// Sends `content` to the customer of a visible chat with its account's credentials,
    /// `text` being what the history shows; answers the stored message.
    ///
    /// A caller whose own account has no settings gets `NotConfigured` first, whatever
    /// the chat. `OutsideWindow` for anything but a template when the customer has not
    /// written within 24 hours; `Graph` when Meta refuses or fails.
    pub async fn send(
        &self,
        scope: &Scope,
        chat_id: i64,
        content: WabaContent,
        text: Option<String>,
        sender_user_id: String,
    ) -> Result<WabaMessage, WabaError> {
        if let Some(owner) = scope.owner() {
            self.credentials(owner).await?;
        }
        let chat = self.chat(scope, chat_id).await?;
        let credentials = self.credentials(&chat.owner_id).await?;
        Ok(self
            .desk
            .send(&chat, credentials, content, text, Some(sender_user_id))
            .await?)
    }

    /// The live feed of every chat's new messages and status changes; the subscriber
    /// keeps what its [`Scope`] sees.
    pub fn subscribe(&self) -> broadcast::Receiver<WabaEvent> {
        self.desk.subscribe()
    }
}
