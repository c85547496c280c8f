//! The operators' side of the desk: the chats a caller sees, their histories, sends
//! (the 24-hour rule is the chat actor's), marking read and the live feed.

use wagate_actors::desk::{EventId, FeedEntry, Subscription, WabaEvent};
use wagate_actors::domain::waba::{
    AssignedFilter, WabaChat, WabaChatSummary, WabaContent, WabaMessage,
};
use wagate_actors::domain::{Page, Role, User};
use wagate_actors::error::DomainError;

use super::{Scope, Waba, WabaError};
use crate::outbound::{OutboundError, check_url_resolving};

/// How many of a chat's newest messages are searched for the customer's latest one when
/// marking it read (operators answering more often than that in a row is not a chat
/// with anything unread).
const READ_RECEIPT_SCAN: u32 = 200;

/// What marking a chat read did.
#[derive(Debug, Clone, PartialEq)]
pub struct Marked {
    /// Inbound messages newly marked read by an operator.
    pub marked: u64,
    /// What Meta was told.
    pub receipt: ReadReceipt,
}

/// The read receipt sent to Meta for the customer's latest message.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadReceipt {
    Sent {
        whatsapp_message_id: String,
    },
    /// Meta refused or could not be reached (or the account has no usable settings).
    Failed {
        whatsapp_message_id: String,
        error: String,
    },
    /// The customer has not written (recently).
    NothingToMark,
}

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

    /// The chats `scope` sees that `assigned` keeps, most recent first.
    pub async fn chats(
        &self,
        scope: &Scope,
        assigned: &AssignedFilter,
        limit: u32,
        offset: u64,
    ) -> Result<Page<WabaChatSummary>, WabaError> {
        Ok(self
            .storage
            .list_waba_chats(scope.owner(), assigned, limit, offset)
            .await?)
    }

    /// Assigns a visible chat to `assignee` (None: releases it) on behalf of `caller`,
    /// and tells the live feed when that changed anything. Answers the chat after it.
    ///
    /// An operator may take a chat nobody has, or release its own: `AssignedToOther`
    /// (409) when someone else has it, `NotYourChat` (403) for anything else. An owner
    /// or admin may assign the chat to anyone of its account (the owner or one of its
    /// operators); `UnknownAssignee` for anybody else. The change is a compare-and-set
    /// on the assignee it was decided on, so two operators taking one chat cannot both
    /// win.
    pub async fn assign(
        &self,
        scope: &Scope,
        caller: &User,
        chat_id: i64,
        assignee: Option<String>,
    ) -> Result<WabaChat, WabaError> {
        let mut chat = self.chat(scope, chat_id).await?;
        if let Some(id) = &assignee {
            self.check_assignee(&chat, id).await?;
        }
        // Decided on what was read; retried when someone changed it meanwhile.
        for _ in 0..3 {
            let current = chat.assigned_operator_id.as_deref();
            if caller.role == Role::Operator {
                let me = caller.id.as_str();
                match assignee.as_deref() {
                    Some(other) if other != me => {
                        return Err(WabaError::NotYourChat(
                            "an operator may assign a chat only to itself; its owner or an admin may assign anyone",
                        ));
                    }
                    Some(_) => {
                        if let Some(holder) = current.filter(|c| *c != me) {
                            return Err(WabaError::AssignedToOther(holder.to_owned()));
                        }
                    }
                    None => {
                        if current.is_some_and(|c| c != me) {
                            return Err(WabaError::NotYourChat(
                                "an operator may release only a chat assigned to itself",
                            ));
                        }
                    }
                }
            }
            if current == assignee.as_deref() {
                return Ok(chat);
            }
            match self
                .storage
                .assign_waba_chat(chat.id, current, assignee.as_deref())
                .await?
            {
                Some(changed) => {
                    self.desk.publish(WabaEvent::Assignment(changed.clone()));
                    return Ok(changed);
                }
                None => chat = self.chat(scope, chat_id).await?,
            }
        }
        Err(WabaError::Domain(DomainError::Unavailable(format!(
            "chat {chat_id} is being reassigned concurrently; retry"
        ))))
    }

    /// `UnknownAssignee` unless `id` is the chat's owner or one of its operators.
    async fn check_assignee(&self, chat: &WabaChat, id: &str) -> Result<(), WabaError> {
        let ok = match self.storage.user_by_id(id).await? {
            Some(u) if u.role == Role::Operator => u.owner_id.as_deref() == Some(&chat.owner_id),
            Some(u) => u.id == chat.owner_id,
            None => false,
        };
        if ok {
            Ok(())
        } else {
            Err(WabaError::UnknownAssignee(id.to_owned()))
        }
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

    /// Marks a visible chat's inbound messages read by an operator, then tells Meta the
    /// customer's latest message was read (blue ticks on the customer's phone).
    ///
    /// The local mark stands whatever Meta answers: the receipt in the answer says
    /// whether Meta took it, and why not.
    pub async fn mark_read(&self, scope: &Scope, chat_id: i64) -> Result<Marked, WabaError> {
        let chat = self.chat(scope, chat_id).await?;
        let marked = self.storage.mark_waba_chat_read(chat.id).await?;
        let receipt = match self.latest_inbound(chat.id).await? {
            None => ReadReceipt::NothingToMark,
            Some(wamid) => match self.credentials(&chat.owner_id).await {
                Err(e) => ReadReceipt::Failed {
                    whatsapp_message_id: wamid,
                    error: e.to_string(),
                },
                Ok(credentials) => match self.graph.mark_read(&credentials, &wamid).await {
                    Ok(()) => ReadReceipt::Sent {
                        whatsapp_message_id: wamid,
                    },
                    Err(e) => {
                        tracing::warn!(chat = chat.id, error = %e, "Meta refused a read receipt");
                        ReadReceipt::Failed {
                            whatsapp_message_id: wamid,
                            error: e.to_string(),
                        }
                    }
                },
            },
        };
        Ok(Marked { marked, receipt })
    }

    /// Meta's id of the chat's newest inbound message, looked for among its newest
    /// `READ_RECEIPT_SCAN` messages.
    async fn latest_inbound(&self, chat_id: i64) -> Result<Option<String>, WabaError> {
        let page = self
            .storage
            .waba_chat_messages(chat_id, READ_RECEIPT_SCAN, 0)
            .await?;
        Ok(page
            .items
            .into_iter()
            .find(|m| !m.from_me)
            .map(|m| m.whatsapp_message_id))
    }

    /// Sends `content` to the customer of a visible chat with its account's credentials,
    /// `text` being what the history shows; answers the stored message.
    ///
    /// A caller whose own account has no settings gets `NotConfigured` first, whatever
    /// the chat. `MediaUrl` for a media URL that is not http(s) or that points (or
    /// resolves) to a loopback, private or link-local address, unless
    /// `ALLOW_PRIVATE_NETWORK_URLS` — the same guard as webhook URLs, checked before
    /// Meta is asked to fetch it. `OutsideWindow` for anything but a template when the
    /// customer has not written within 24 hours; `Graph` when Meta refuses or fails.
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
        if let Some(link) = content.media_url() {
            let url = reqwest::Url::parse(link)
                .map_err(|e| WabaError::MediaUrl(OutboundError::InvalidUrl(e.to_string())))?;
            check_url_resolving(&url, self.allow_private_urls)
                .await
                .map_err(WabaError::MediaUrl)?;
        }
        let credentials = self.credentials(&chat.owner_id).await?;
        Ok(self
            .desk
            .send(&chat, credentials, content, text, Some(sender_user_id))
            .await?)
    }

    /// How many chat actors run now (idle ones stop).
    pub fn chat_actors(&self) -> usize {
        self.desk.chat_actors()
    }

    /// The live feed of every chat's new messages, status changes and assignments,
    /// resumed after `last_seen` when given; the subscriber keeps what its [`Scope`]
    /// sees.
    pub fn subscribe(&self, last_seen: Option<EventId>) -> Subscription {
        self.desk.subscribe(last_seen)
    }

    /// The kept events after `id` (None: some are no longer kept), for a subscriber
    /// that fell behind.
    pub fn events_since(&self, id: EventId) -> Option<Vec<FeedEntry>> {
        self.desk.events_since(id)
    }
}
