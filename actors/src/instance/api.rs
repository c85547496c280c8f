//! [`InstanceHandle`]: the typed face of one instance actor.

use std::time::Duration;

use ractor::{ActorRef, RpcReplyPort};

use super::actor::{InstanceMsg, PresenceAction, QrAnswer, SendExtras};
use super::status::StatusView;
use crate::domain::{
    ChatAnswer, ChatChange, ChatOp, ChatSettings, Event, Group, GroupAnswer, GroupOp, GroupPatch,
    Label, LabelSpec, Message, ParticipantAction, ParticipantOutcome, Profile, ProfileAnswer,
    ProfileOp, ProfilePatch, ProfilePicture,
};
use crate::engine::{EngineContact, OutboundContent, SandboxControl};
use crate::error::DomainError;
use crate::handle::call;

/// A running instance. Cheap to clone; every method gives up after the call timeout.
///
/// Every method fails with [`DomainError::Unavailable`] when the actor is gone (removed,
/// restarting) and with [`DomainError::Timeout`] when it does not answer in time.
#[derive(Debug, Clone)]
pub struct InstanceHandle {
    id: String,
    actor: ActorRef<InstanceMsg>,
    timeout: Duration,
}

impl InstanceHandle {
    pub(crate) fn new(id: String, actor: ActorRef<InstanceMsg>, timeout: Duration) -> Self {
        InstanceHandle { id, actor, timeout }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub async fn status(&self) -> Result<StatusView, DomainError> {
        self.ask(InstanceMsg::Status).await
    }

    /// The QR code showing. Fails with `Conflict("already_connected")` when connected; a
    /// logged-out, failed or given-up instance starts a new pairing and answers
    /// `Generating`.
    pub async fn qr(&self) -> Result<QrAnswer, DomainError> {
        self.ask(InstanceMsg::Qr).await?
    }

    /// Starts pairing by phone number; returns the code to type on the phone.
    /// Fails with `Conflict("already_connected")` when connected and `Invalid` for a
    /// malformed phone.
    pub async fn pair_code(&self, phone: &str) -> Result<String, DomainError> {
        let phone = phone.to_owned();
        self.ask(|reply| InstanceMsg::PairCode { phone, reply })
            .await?
    }

    /// Stops the engine and starts it again; also revives a failed or logged-out
    /// instance. Fails with `Unavailable` when the engine cannot start.
    pub async fn reconnect(&self) -> Result<(), DomainError> {
        self.ask(InstanceMsg::Reconnect).await?
    }

    /// Unlinks the device and wipes the session; the instance stays, `logged_out`.
    pub async fn logout(&self) -> Result<(), DomainError> {
        self.ask(InstanceMsg::Logout).await?
    }

    /// A sandbox simulation command. Fails with `Invalid` on a non-sandbox instance and
    /// with `Conflict("invalid_state")` when the session is not in a state for it.
    pub async fn sandbox(&self, control: SandboxControl) -> Result<(), DomainError> {
        self.ask(|reply| InstanceMsg::Sandbox { control, reply })
            .await?
    }

    /// Sends a message to `to` (a person's or group's address) and returns it as
    /// stored: `sent`, or `pending` when `extras.send_rate` paces it (it waits in the
    /// instance's queue). `extras.delay` shows "typing…" that long first. Fails with
    /// `Conflict("not_connected")` unless connected.
    /// Fails with `NotFound` when `extras.reply_to` is no stored message of that chat.
    pub async fn send(
        &self,
        to: &str,
        content: OutboundContent,
        extras: SendExtras,
    ) -> Result<Message, DomainError> {
        let to = to.to_owned();
        // A delayed send is answered once it went: its delay on top of the wait. A
        // paced one is answered when it is queued.
        let wait = match extras.send_rate {
            None => self.timeout + extras.delay.unwrap_or_default(),
            Some(_) => self.timeout,
        };
        call(
            &self.actor,
            wait,
            &format!("instance {}", self.id),
            |reply| InstanceMsg::Send {
                to,
                content,
                extras,
                reply,
            },
        )
        .await?
    }

    /// Reacts to stored message `message_id` (an empty emoji takes the reaction back).
    /// Fails with `NotFound` for an unknown message, `Conflict("not_connected")` unless
    /// connected.
    pub async fn react(&self, message_id: &str, emoji: &str) -> Result<(), DomainError> {
        let message_id = message_id.to_owned();
        let emoji = emoji.to_owned();
        self.ask(|reply| InstanceMsg::React {
            message_id,
            emoji,
            reply,
        })
        .await?
    }

    /// Replaces the text of our own stored text message `message_id` and returns it as
    /// stored. Fails with `NotFound` for an unknown message, `Refused` for someone
    /// else's, a deleted or non-text one, or after WhatsApp's 15-minute window,
    /// `Conflict("not_connected")` unless connected.
    pub async fn edit(&self, message_id: &str, text: String) -> Result<Message, DomainError> {
        let message_id = message_id.to_owned();
        self.ask(|reply| InstanceMsg::Edit {
            message_id,
            text,
            reply,
        })
        .await?
    }

    /// Deletes stored message `message_id`: for everyone (our own only; needs a
    /// connection) or only from this account's history.
    pub async fn delete(&self, message_id: &str, for_everyone: bool) -> Result<(), DomainError> {
        let message_id = message_id.to_owned();
        self.ask(|reply| InstanceMsg::Delete {
            message_id,
            for_everyone,
            reply,
        })
        .await?
    }

    /// `Conflict("not_connected")` unless the instance is connected.
    pub async fn ensure_connected(&self) -> Result<(), DomainError> {
        if self.status().await?.ready {
            Ok(())
        } else {
            Err(DomainError::conflict(
                "not_connected",
                "the instance is not connected to WhatsApp",
            ))
        }
    }

    /// Marks a chat's inbound messages read (read receipts go to the senders); returns
    /// how many were unread.
    pub async fn mark_read(&self, chat: &str) -> Result<u64, DomainError> {
        let chat = chat.to_owned();
        self.ask(|reply| InstanceMsg::MarkRead { chat, reply })
            .await?
    }

    /// Tells WhatsApp the account's presence, a chat state, or a subscription. Fails
    /// with `Conflict("not_connected")` unless connected.
    pub async fn presence(&self, action: PresenceAction) -> Result<(), DomainError> {
        self.ask(|reply| InstanceMsg::Presence { action, reply })
            .await?
    }

    /// The groups the account is in.
    pub async fn groups(&self) -> Result<Vec<Group>, DomainError> {
        match self.group_op(GroupOp::List).await? {
            GroupAnswer::Groups(groups) => Ok(groups),
            other => Err(unexpected(other)),
        }
    }

    /// Creates a group of the account with `participants`; returns it.
    pub async fn create_group(
        &self,
        subject: String,
        participants: Vec<String>,
    ) -> Result<Group, DomainError> {
        match self
            .group_op(GroupOp::Create {
                subject,
                participants,
            })
            .await?
        {
            GroupAnswer::Group(group) => Ok(group),
            other => Err(unexpected(other)),
        }
    }

    /// A group's metadata and members. `NotFound` when the account is not in it.
    pub async fn group(&self, jid: &str) -> Result<Group, DomainError> {
        match self.group_op(GroupOp::Get(jid.to_owned())).await? {
            GroupAnswer::Group(group) => Ok(group),
            other => Err(unexpected(other)),
        }
    }

    /// Changes a group's subject, description or settings. `Forbidden` unless the
    /// account may.
    pub async fn update_group(&self, jid: &str, patch: GroupPatch) -> Result<(), DomainError> {
        self.group_op(GroupOp::Update {
            jid: jid.to_owned(),
            patch,
        })
        .await
        .map(|_| ())
    }

    /// Adds, removes, promotes or demotes members; WhatsApp's answer per member.
    pub async fn group_participants(
        &self,
        jid: &str,
        action: ParticipantAction,
        participants: Vec<String>,
    ) -> Result<Vec<ParticipantOutcome>, DomainError> {
        match self
            .group_op(GroupOp::Participants {
                jid: jid.to_owned(),
                action,
                participants,
            })
            .await?
        {
            GroupAnswer::Outcomes(outcomes) => Ok(outcomes),
            other => Err(unexpected(other)),
        }
    }

    /// The group's invite code; `reset` revokes the current one first.
    pub async fn group_invite(&self, jid: &str, reset: bool) -> Result<String, DomainError> {
        match self
            .group_op(GroupOp::Invite {
                jid: jid.to_owned(),
                reset,
            })
            .await?
        {
            GroupAnswer::Invite(code) => Ok(code),
            other => Err(unexpected(other)),
        }
    }

    /// Joins the group an invite code opens; returns its address.
    pub async fn join_group(&self, code: &str) -> Result<String, DomainError> {
        match self.group_op(GroupOp::Join(code.to_owned())).await? {
            GroupAnswer::Joined(jid) => Ok(jid),
            other => Err(unexpected(other)),
        }
    }

    pub async fn leave_group(&self, jid: &str) -> Result<(), DomainError> {
        self.group_op(GroupOp::Leave(jid.to_owned()))
            .await
            .map(|_| ())
    }

    async fn group_op(&self, op: GroupOp) -> Result<GroupAnswer, DomainError> {
        self.ask(|reply| InstanceMsg::Group { op, reply }).await?
    }

    /// The account's own profile.
    pub async fn profile(&self) -> Result<Profile, DomainError> {
        match self.profile_op(ProfileOp::Get).await? {
            ProfileAnswer::Profile(profile) => Ok(profile),
            other => Err(unexpected(other)),
        }
    }

    /// Changes the account's name or about text.
    pub async fn update_profile(&self, patch: ProfilePatch) -> Result<(), DomainError> {
        self.profile_op(ProfileOp::Update(patch)).await.map(|_| ())
    }

    /// Sets the account's picture (a JPEG), or removes it.
    pub async fn set_profile_picture(&self, jpeg: Option<Vec<u8>>) -> Result<(), DomainError> {
        self.profile_op(ProfileOp::Picture(jpeg)).await.map(|_| ())
    }

    /// A contact's picture: none when they have none or hide it from the account.
    pub async fn contact_picture(&self, jid: &str) -> Result<Option<ProfilePicture>, DomainError> {
        match self
            .profile_op(ProfileOp::ContactPicture(jid.to_owned()))
            .await?
        {
            ProfileAnswer::Picture(picture) => Ok(picture),
            other => Err(unexpected(other)),
        }
    }

    /// Blocks (`true`) or unblocks a contact.
    pub async fn block(&self, jid: &str, block: bool) -> Result<(), DomainError> {
        let jid = jid.to_owned();
        let op = if block {
            ProfileOp::Block(jid)
        } else {
            ProfileOp::Unblock(jid)
        };
        self.profile_op(op).await.map(|_| ())
    }

    /// The addresses the account blocks.
    pub async fn blocklist(&self) -> Result<Vec<String>, DomainError> {
        match self.profile_op(ProfileOp::Blocklist).await? {
            ProfileAnswer::Blocklist(list) => Ok(list),
            other => Err(unexpected(other)),
        }
    }

    async fn profile_op(&self, op: ProfileOp) -> Result<ProfileAnswer, DomainError> {
        self.ask(|reply| InstanceMsg::Profile { op, reply }).await?
    }

    /// Archives, pins, mutes or labels `chat` (an address) on WhatsApp; returns the
    /// chat as kept now. `NotFound` when attaching a label the instance does not know,
    /// `Invalid` for a mute that has already ended.
    pub async fn change_chat(
        &self,
        chat: &str,
        change: ChatChange,
    ) -> Result<ChatSettings, DomainError> {
        let op = ChatOp::Change {
            chat: chat.to_owned(),
            change,
        };
        match self.chat_op(op).await? {
            ChatAnswer::Chat(chat) => Ok(chat),
            other => Err(unexpected(other)),
        }
    }

    /// Creates a label (the instance picks its id); returns it.
    pub async fn create_label(&self, name: String, color: i32) -> Result<Label, DomainError> {
        let op = ChatOp::EditLabel(LabelSpec {
            label_id: String::new(),
            name,
            color,
        });
        match self.chat_op(op).await? {
            ChatAnswer::Label(label) => Ok(label),
            other => Err(unexpected(other)),
        }
    }

    async fn chat_op(&self, op: ChatOp) -> Result<ChatAnswer, DomainError> {
        self.ask(|reply| InstanceMsg::Chat { op, reply }).await?
    }

    /// The contacts the session knows (empty while it is not running).
    pub async fn contacts(&self) -> Result<Vec<EngineContact>, DomainError> {
        self.ask(InstanceMsg::Contacts).await?
    }

    /// Adds a contact if the number is on WhatsApp; returns whether it is.
    /// Fails with `Conflict("not_connected")` unless connected.
    pub async fn add_contact(&self, jid: &str, name: Option<&str>) -> Result<bool, DomainError> {
        let jid = jid.to_owned();
        let name = name.map(str::to_owned);
        self.ask(|reply| InstanceMsg::AddContact { jid, name, reply })
            .await?
    }

    /// Hands the actor a copy of an event raised elsewhere, to publish in its turn (see
    /// `EventHub::raise`); false when the actor is gone.
    pub(crate) fn publish(&self, event: &Event) -> bool {
        self.actor
            .send_message(InstanceMsg::Publish(event.clone()))
            .is_ok()
    }

    async fn ask<T: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<T>) -> InstanceMsg,
    ) -> Result<T, DomainError> {
        call(
            &self.actor,
            self.timeout,
            &format!("instance {}", self.id),
            build,
        )
        .await
    }
}

/// An engine answered a group operation with another operation's kind of answer.
fn unexpected(answer: impl std::fmt::Debug) -> DomainError {
    DomainError::Engine(format!("the engine gave an unexpected answer: {answer:?}"))
}
