//! The profile and the blocklist on the real engine: whatsapp-rust's `profile()`,
//! `contacts()` and `blocking()` features behind the seam's [`ProfileOp`].

use whatsapp_rust::features::{BlockingError, ContactError, ProfileError};
use whatsapp_rust::{Client, IqError, Jid};

use super::mapping::{parse_address, phone_form};
use crate::domain::{Profile, ProfileAnswer, ProfileOp, ProfilePicture};
use crate::engine::EngineError;

/// Carries out `op` on WhatsApp.
pub(super) async fn run(client: &Client, op: ProfileOp) -> Result<ProfileAnswer, EngineError> {
    match op {
        ProfileOp::Get => {
            let me = client
                .pn()
                .map(|jid| jid.to_non_ad())
                .ok_or_else(|| EngineError::InvalidState("the session has no number yet".into()))?;
            // The about text comes with the usync user info, the picture on its own IQ.
            let about = client
                .contacts()
                .get_user_info(std::slice::from_ref(&me))
                .await
                .map_err(contact_refused)?
                .remove(&me)
                .and_then(|info| info.status)
                .filter(|about| !about.is_empty());
            let picture = picture(client, &me).await?;
            Ok(ProfileAnswer::Profile(Profile {
                phone: Some(me.user.to_string()),
                name: Some(client.push_name()).filter(|n| !n.is_empty()),
                about,
                picture,
            }))
        }
        ProfileOp::Update(patch) => {
            let profile = client.profile();
            if let Some(name) = patch.name {
                profile.set_push_name(&name).await.map_err(refused)?;
            }
            if let Some(about) = patch.about {
                profile.set_status_text(&about).await.map_err(refused)?;
            }
            Ok(ProfileAnswer::Done)
        }
        ProfileOp::Picture(jpeg) => {
            let profile = client.profile();
            match jpeg {
                Some(bytes) if !bytes.is_empty() => {
                    profile.set_profile_picture(bytes).await.map_err(refused)?
                }
                _ => profile.remove_profile_picture().await.map_err(refused)?,
            };
            Ok(ProfileAnswer::Done)
        }
        ProfileOp::ContactPicture(jid) => {
            let jid = parse_address(&jid)?;
            Ok(ProfileAnswer::Picture(picture(client, &jid).await?))
        }
        ProfileOp::Block(jid) => {
            let jid = known_person(client, &jid).await?;
            client.blocking().block(&jid).await.map_err(block_refused)?;
            Ok(ProfileAnswer::Done)
        }
        ProfileOp::Unblock(jid) => {
            let jid = known_person(client, &jid).await?;
            client
                .blocking()
                .unblock(&jid)
                .await
                .map_err(block_refused)?;
            Ok(ProfileAnswer::Done)
        }
        ProfileOp::Blocklist => {
            let entries = client
                .blocking()
                .get_blocklist()
                .await
                .map_err(block_refused)?;
            let mut list = Vec::with_capacity(entries.len());
            for entry in entries {
                // WhatsApp lists blocked people by LID; the phone form where known.
                let pn = if entry.jid.is_lid() {
                    client
                        .get_lid_pn_entry(&entry.jid)
                        .await
                        .ok()
                        .flatten()
                        .map(|e| Jid::pn(&*e.phone_number))
                } else {
                    None
                };
                list.push(phone_form(&entry.jid, pn.as_ref()));
            }
            list.sort();
            list.dedup();
            Ok(ProfileAnswer::Blocklist(list))
        }
    }
}

/// `jid`'s full-size picture, or none (none set, or hidden from the account).
async fn picture(client: &Client, jid: &Jid) -> Result<Option<ProfilePicture>, EngineError> {
    let picture = client
        .contacts()
        .get_profile_picture(jid, false)
        .await
        .map_err(contact_refused)?;
    Ok(picture.map(|p| ProfilePicture {
        id: p.id,
        url: p.url,
    }))
}

/// `address` as a person WhatsApp knows, after asking whether they are on it: blocking
/// addresses people by their LID, which the answer teaches the session.
async fn known_person(client: &Client, address: &str) -> Result<Jid, EngineError> {
    let jid = parse_address(address)?.to_non_ad();
    if !(jid.is_pn() || jid.is_lid()) {
        return Err(EngineError::InvalidInput(format!(
            "'{address}' is not a person's address"
        )));
    }
    let found = client
        .contacts()
        .is_on_whatsapp(std::slice::from_ref(&jid))
        .await
        .map_err(contact_refused)?;
    if !found.iter().any(|r| r.is_registered) {
        return Err(EngineError::NotOnWhatsApp(jid.user.to_string()));
    }
    Ok(jid)
}

fn iq_refused(err: &IqError) -> Option<EngineError> {
    match err {
        IqError::ServerError { code, text, .. } => Some(match code {
            401 | 403 => EngineError::Forbidden(format!("WhatsApp refused ({code} {text})")),
            404 => EngineError::NotFound(format!("WhatsApp knows no such thing ({code} {text})")),
            400 | 406 => EngineError::InvalidInput(format!("WhatsApp refused ({code} {text})")),
            _ => EngineError::Unavailable(format!("WhatsApp answered {code} {text}")),
        }),
        _ => None,
    }
}

fn refused(err: ProfileError) -> EngineError {
    match &err {
        ProfileError::Iq(iq) => iq_refused(iq),
        ProfileError::InvalidArgument(why) => Some(EngineError::InvalidInput(why.clone())),
        _ => None,
    }
    .unwrap_or_else(|| EngineError::Unavailable(format!("the profile request failed: {err}")))
}

fn contact_refused(err: ContactError) -> EngineError {
    match &err {
        ContactError::Iq(iq) => iq_refused(iq),
        ContactError::InvalidJid(why) => Some(EngineError::InvalidInput(why.clone())),
        _ => None,
    }
    .unwrap_or_else(|| EngineError::Unavailable(format!("the contact request failed: {err}")))
}

fn block_refused(err: BlockingError) -> EngineError {
    match &err {
        BlockingError::Iq(iq) => iq_refused(iq),
        BlockingError::InvalidJid(why) => Some(EngineError::NotFound(format!(
            "WhatsApp cannot block this address: {why}"
        ))),
        _ => None,
    }
    .unwrap_or_else(|| EngineError::Unavailable(format!("the blocklist request failed: {err}")))
}
