//! Contacts: adding a person to an instance's WhatsApp contacts, importing what the
//! session knows into storage, saving a contact by hand. Every stored contact is built
//! by [`Contact::new`], so its number and kind always come from its address.

use chrono::Utc;
use wagate_actors::domain::{Contact, Jid};
use wagate_actors::error::{DomainError, StoreError};
use wagate_actors::instance::InstancesHandle;
use wagate_actors::store::DynStorage;

/// Longest accepted contact field (name, push name, about, picture URL).
const MAX_FIELD: usize = 1024;

/// Why a contact operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ContactError {
    /// A field breaks its rules (the message names it).
    #[error("{0}")]
    Invalid(String),
    /// WhatsApp knows no account with this number.
    #[error("{0} is not on WhatsApp")]
    NotOnWhatsApp(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The instance refused or failed (not connected, not found, ...).
    #[error(transparent)]
    Domain(#[from] DomainError),
}

/// An optional text field: at most [`MAX_FIELD`] characters, trimmed; blank is none.
fn bounded(field: &str, v: Option<String>) -> Result<Option<String>, ContactError> {
    match v {
        Some(s) if s.chars().count() > MAX_FIELD => Err(ContactError::Invalid(format!(
            "{field} must be at most {MAX_FIELD} characters"
        ))),
        Some(s) if s.trim().is_empty() => Ok(None),
        other => Ok(other.map(|s| s.trim().to_owned())),
    }
}

/// What a client may set on a saved contact; absent fields keep what is stored.
#[derive(Debug, Default, Clone)]
pub struct ContactFields {
    pub name: Option<String>,
    pub push_name: Option<String>,
    pub profile_picture: Option<String>,
    pub about: Option<String>,
}

/// Contact operations over storage and the instance actors. Cheap to clone.
#[derive(Clone)]
pub struct ContactBook {
    storage: DynStorage,
    actors: InstancesHandle,
}

impl ContactBook {
    pub fn new(storage: DynStorage, actors: InstancesHandle) -> Self {
        ContactBook { storage, actors }
    }

    /// Adds the person at `jid` to the instance's WhatsApp contacts and stores it.
    ///
    /// Fails with `Invalid` for a group or a too long name, `NotOnWhatsApp` when the
    /// number has no WhatsApp account, `Domain` when the instance is not connected.
    pub async fn add(
        &self,
        instance_id: &str,
        jid: &Jid,
        name: Option<String>,
    ) -> Result<Contact, ContactError> {
        if jid.is_group() {
            return Err(ContactError::Invalid(
                "phone must be a person's number, not a group".into(),
            ));
        }
        let name = bounded("name", name)?;
        let handle = self.actors.get(instance_id)?;
        if !handle.add_contact(jid.as_str(), name.as_deref()).await? {
            return Err(ContactError::NotOnWhatsApp(jid.user().to_owned()));
        }
        let contact = Contact {
            name,
            ..Contact::new(instance_id, jid.as_str(), Utc::now())
        };
        Ok(self.storage.upsert_contact(&contact).await?)
    }

    /// Stores (or refreshes) every contact the instance's session knows; returns how
    /// many.
    pub async fn import(&self, instance_id: &str) -> Result<u64, ContactError> {
        let live = self.actors.get(instance_id)?.contacts().await?;
        let mut imported = 0u64;
        for c in live {
            let contact = Contact {
                name: c.name,
                push_name: c.push_name,
                ..Contact::new(instance_id, &c.jid, Utc::now())
            };
            self.storage.upsert_contact(&contact).await?;
            imported += 1;
        }
        Ok(imported)
    }

    /// Stores the contact at `jid` (or updates the stored one with that address).
    ///
    /// Fails with `Invalid` when a field is too long.
    pub async fn save(
        &self,
        instance_id: &str,
        jid: &Jid,
        fields: ContactFields,
    ) -> Result<Contact, ContactError> {
        let contact = Contact {
            name: bounded("name", fields.name)?,
            push_name: bounded("pushName", fields.push_name)?,
            profile_picture: bounded("profilePicture", fields.profile_picture)?,
            about: bounded("about", fields.about)?,
            ..Contact::new(instance_id, jid.as_str(), Utc::now())
        };
        Ok(self.storage.upsert_contact(&contact).await?)
    }
}
