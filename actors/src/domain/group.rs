//! WhatsApp groups as the gateway shows them: metadata, members and their roles, the
//! changes a client asks for, and what WhatsApp answers per member.

use serde::{Deserialize, Serialize};

/// A member's standing in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum GroupRole {
    Member,
    Admin,
    /// The creator: an admin no other admin can demote.
    Superadmin,
}

impl GroupRole {
    pub fn is_admin(self) -> bool {
        matches!(self, GroupRole::Admin | GroupRole::Superadmin)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupMember {
    /// `…@s.whatsapp.net` (the phone form when WhatsApp gives it).
    pub jid: String,
    pub role: GroupRole,
}

/// A group's metadata and members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Group {
    /// `…@g.us`.
    pub jid: String,
    pub subject: String,
    pub description: Option<String>,
    /// Who created it, when WhatsApp says.
    pub owner: Option<String>,
    /// Unix seconds, when WhatsApp says.
    pub created_at: Option<i64>,
    /// Only admins send messages.
    pub announce: bool,
    /// Only admins change the subject, description and settings.
    pub locked: bool,
    pub participants: Vec<GroupMember>,
}

impl Group {
    /// The member `jid`'s role, if they are one.
    pub fn role_of(&self, jid: &str) -> Option<GroupRole> {
        self.participants
            .iter()
            .find(|m| m.jid == jid)
            .map(|m| m.role)
    }
}

/// Changes to a group's metadata and settings; absent fields stay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupPatch {
    pub subject: Option<String>,
    /// An empty description removes it.
    pub description: Option<String>,
    pub announce: Option<bool>,
    pub locked: Option<bool>,
}

impl GroupPatch {
    pub fn is_empty(&self) -> bool {
        *self == GroupPatch::default()
    }
}

/// What to do to some members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ParticipantAction {
    Add,
    Remove,
    Promote,
    Demote,
}

impl ParticipantAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ParticipantAction::Add => "add",
            ParticipantAction::Remove => "remove",
            ParticipantAction::Promote => "promote",
            ParticipantAction::Demote => "demote",
        }
    }
}

/// WhatsApp's answer for one member of a participants change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParticipantOutcome {
    pub jid: String,
    /// `200` done; otherwise WhatsApp's code: `403` not allowed (their privacy
    /// settings), `404` not a member or not on WhatsApp, `409` already a member.
    pub status: u16,
}

/// A group operation, as the instance hands it to its engine.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupOp {
    /// The groups the account is in.
    List,
    Create {
        subject: String,
        participants: Vec<String>,
    },
    Get(String),
    Update {
        jid: String,
        patch: GroupPatch,
    },
    Participants {
        jid: String,
        action: ParticipantAction,
        participants: Vec<String>,
    },
    /// The invite code; `reset` revokes the old one and makes a new one.
    Invite {
        jid: String,
        reset: bool,
    },
    Join(String),
    Leave(String),
}

/// The engine's answer to a [`GroupOp`].
#[derive(Debug, Clone, PartialEq)]
pub enum GroupAnswer {
    Groups(Vec<Group>),
    Group(Group),
    Outcomes(Vec<ParticipantOutcome>),
    Invite(String),
    /// The group joined.
    Joined(String),
    Done,
}
