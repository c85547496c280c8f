//! The account's own profile (name, about, picture), its contacts' pictures, and the
//! contacts it blocks: the operations a client asks for and what WhatsApp answers.

use serde::{Deserialize, Serialize};

/// The account as WhatsApp shows it to others.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Profile {
    /// The account's phone number (digits), once linked.
    pub phone: Option<String>,
    /// The push name: what contacts without the number saved see.
    pub name: Option<String>,
    /// The "about" text, when WhatsApp says (none set, or hidden by privacy settings:
    /// `null`).
    pub about: Option<String>,
    /// The profile picture, when there is one.
    pub picture: Option<ProfilePicture>,
}

/// A profile picture: where to download it and its id (it changes with the picture).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProfilePicture {
    pub id: String,
    /// WhatsApp's download address (it expires after a while: ask again), or on the
    /// sandbox engine a `data:` URL of the picture.
    pub url: String,
}

/// Changes to the account's profile; absent fields stay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfilePatch {
    pub name: Option<String>,
    /// Empty clears it.
    pub about: Option<String>,
}

/// A profile operation, as the instance hands it to its engine.
#[derive(Debug, Clone, PartialEq)]
pub enum ProfileOp {
    /// The account's own profile.
    Get,
    Update(ProfilePatch),
    /// A new picture (a JPEG; WhatsApp shows it square), or none: the picture is removed.
    Picture(Option<Vec<u8>>),
    /// A contact's picture (`…@s.whatsapp.net`).
    ContactPicture(String),
    Block(String),
    Unblock(String),
    /// The addresses the account blocks.
    Blocklist,
}

/// The engine's answer to a [`ProfileOp`].
#[derive(Debug, Clone, PartialEq)]
pub enum ProfileAnswer {
    Profile(Profile),
    /// A picture, or none (the contact has none, or hides it from the account).
    Picture(Option<ProfilePicture>),
    Blocklist(Vec<String>),
    Done,
}
