//! Chat actions and labels on the real engine: whatsapp-rust's `chat_actions()` and
//! `labels()` (app-state mutations WhatsApp syncs to the account's devices) behind the
//! seam's [`ChatOp`], and the same mutations made on the phone read back into one.

use whatsapp_rust::Client;
use whatsapp_rust::features::AppStateError;
use whatsapp_rust::types::events::Event;

use super::mapping::{parse_address, phone_form};
use crate::domain::{ChatChange, ChatOp, LabelSpec, Mute};
use crate::engine::EngineError;

/// Carries out `op` on WhatsApp.
pub(super) async fn run(client: &Client, op: &ChatOp) -> Result<(), EngineError> {
    match op {
        ChatOp::Change { chat, change } => {
            let jid = parse_address(chat)?.to_non_ad();
            let actions = client.chat_actions();
            match change {
                ChatChange::Archive(true) => actions.archive_chat(&jid, None).await,
                ChatChange::Archive(false) => actions.unarchive_chat(&jid, None).await,
                ChatChange::Pin(true) => actions.pin_chat(&jid).await,
                ChatChange::Pin(false) => actions.unpin_chat(&jid).await,
                ChatChange::Mute(None) => actions.unmute_chat(&jid).await,
                ChatChange::Mute(Some(Mute::Forever)) => actions.mute_chat(&jid).await,
                ChatChange::Mute(Some(Mute::Until(at))) => {
                    actions.mute_chat_until(&jid, at.timestamp_millis()).await
                }
                ChatChange::Label { label_id, attached } => {
                    let labels = client.labels();
                    if *attached {
                        labels.add_chat_label(label_id, &jid).await
                    } else {
                        labels.remove_chat_label(label_id, &jid).await
                    }
                }
            }
        }
        ChatOp::EditLabel(spec) => {
            client
                .labels()
                .create_label(&spec.label_id, &spec.name, spec.color)
                .await
        }
        ChatOp::DeleteLabel(label_id) => client.labels().delete_label(label_id).await,
    }
    .map_err(refused)
}

/// The chat or label change another of the account's devices made, if `event` is one.
pub(super) fn sync_of(event: &Event) -> Option<ChatOp> {
    let change = |jid: &whatsapp_rust::Jid, change| ChatOp::Change {
        chat: phone_form(jid, None),
        change,
    };
    Some(match event {
        Event::ArchiveUpdate(u) => change(&u.jid, ChatChange::Archive(u.action.archived?)),
        Event::PinUpdate(u) => change(&u.jid, ChatChange::Pin(u.action.pinned?)),
        Event::MuteUpdate(u) => {
            let mute = if u.action.muted? {
                // WhatsApp's `-1` is for ever; a missing end too.
                Some(Mute::from_millis(
                    u.action.mute_end_timestamp.unwrap_or(-1),
                )?)
            } else {
                None
            };
            change(&u.jid, ChatChange::Mute(mute))
        }
        Event::LabelAssociationUpdate(u) => change(
            &u.chat_jid,
            ChatChange::Label {
                label_id: u.label_id.clone(),
                attached: u.action.labeled?,
            },
        ),
        Event::LabelEditUpdate(u) if u.action.deleted == Some(true) => {
            ChatOp::DeleteLabel(u.label_id.clone())
        }
        Event::LabelEditUpdate(u) => ChatOp::EditLabel(LabelSpec {
            label_id: u.label_id.clone(),
            name: u.action.name.clone()?,
            color: u.action.color.unwrap_or(0),
        }),
        _ => return None,
    })
}

fn refused(err: AppStateError) -> EngineError {
    match err {
        AppStateError::InvalidRequest(why) => EngineError::InvalidInput(why),
        other => EngineError::Unavailable(format!("the app-state change failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use whatsapp_rust::Jid;
    use whatsapp_rust::types::events::{
        ArchiveUpdate, LabelAssociationUpdate, LabelEditUpdate, MuteUpdate,
    };
    use whatsapp_rust::waproto::whatsapp::sync_action_value as sav;

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now()
    }

    #[test]
    fn phone_side_changes_become_chat_ops() {
        let jid = Jid::pn("79001234567");
        let archived = Event::ArchiveUpdate(
            ArchiveUpdate::builder()
                .jid(jid.clone())
                .timestamp(now())
                .action(Box::new(sav::ArchiveChatAction {
                    archived: Some(true),
                    ..Default::default()
                }))
                .from_full_sync(false)
                .build(),
        );
        assert_eq!(
            sync_of(&archived),
            Some(ChatOp::Change {
                chat: "79001234567@s.whatsapp.net".into(),
                change: ChatChange::Archive(true),
            })
        );
        let muted = |muted, end| {
            Event::MuteUpdate(
                MuteUpdate::builder()
                    .jid(jid.clone())
                    .timestamp(now())
                    .action(Box::new(sav::MuteAction {
                        muted: Some(muted),
                        mute_end_timestamp: end,
                        ..Default::default()
                    }))
                    .from_full_sync(false)
                    .build(),
            )
        };
        let change_of = |event: &Event| match sync_of(event) {
            Some(ChatOp::Change { change, .. }) => Some(change),
            _ => None,
        };
        assert_eq!(
            change_of(&muted(true, Some(-1))),
            Some(ChatChange::Mute(Some(Mute::Forever)))
        );
        assert_eq!(
            change_of(&muted(true, Some(1_900_000_000_000))),
            Some(ChatChange::Mute(Mute::from_millis(1_900_000_000_000)))
        );
        assert_eq!(
            change_of(&muted(false, Some(0))),
            Some(ChatChange::Mute(None))
        );
        let labeled = Event::LabelAssociationUpdate(
            LabelAssociationUpdate::builder()
                .label_id("4".into())
                .chat_jid(jid.clone())
                .timestamp(now())
                .action(Box::new(sav::LabelAssociationAction {
                    labeled: Some(false),
                    ..Default::default()
                }))
                .from_full_sync(false)
                .build(),
        );
        assert_eq!(
            change_of(&labeled),
            Some(ChatChange::Label {
                label_id: "4".into(),
                attached: false
            })
        );
        let edit = |name: Option<&str>, deleted| {
            Event::LabelEditUpdate(
                LabelEditUpdate::builder()
                    .label_id("4".into())
                    .timestamp(now())
                    .action(Box::new(sav::LabelEditAction {
                        name: name.map(str::to_owned),
                        color: Some(3),
                        deleted: Some(deleted),
                        ..Default::default()
                    }))
                    .from_full_sync(false)
                    .build(),
            )
        };
        assert_eq!(
            sync_of(&edit(Some("VIP"), false)),
            Some(ChatOp::EditLabel(LabelSpec {
                label_id: "4".into(),
                name: "VIP".into(),
                color: 3
            }))
        );
        assert_eq!(
            sync_of(&edit(None, true)),
            Some(ChatOp::DeleteLabel("4".into()))
        );
    }

    #[test]
    fn refusals_are_the_clients_mistake_only_when_invalid() {
        assert!(matches!(
            refused(AppStateError::InvalidRequest("past".into())),
            EngineError::InvalidInput(_)
        ));
        assert!(matches!(
            refused(AppStateError::Internal(
                std::io::Error::other("no key").into()
            )),
            EngineError::Unavailable(_)
        ));
    }
}
