//! Groups on the real engine: whatsapp-rust's `groups()` feature behind the seam's
//! [`GroupOp`], and its `w:gp2` notifications as the gateway's group updates.

use whatsapp_rust::features::{
    GroupCreateOptions, GroupDescription, GroupError, GroupMetadata, GroupParticipantOptions,
    GroupSubject, ParticipantChangeResponse, ParticipantType, PreviousDescription,
};
use whatsapp_rust::types::events::GroupUpdate;
use whatsapp_rust::wacore::stanza::groups::{GroupNotificationAction, GroupParticipantInfo};
use whatsapp_rust::wacore_binary::JidExt;
use whatsapp_rust::{Client, IqError, Jid};

use super::mapping::{parse_address, phone_form};
use crate::domain::event::{GroupAction, GroupUpdated};
use crate::domain::{
    Group, GroupAnswer, GroupMember, GroupOp, GroupRole, ParticipantAction, ParticipantOutcome,
};
use crate::engine::EngineError;

/// Carries out `op` on WhatsApp.
pub(super) async fn run(client: &Client, op: GroupOp) -> Result<GroupAnswer, EngineError> {
    let groups = client.groups();
    match op {
        GroupOp::List => {
            let joined = groups.get_participating().await.map_err(refused)?;
            let mut list: Vec<Group> = joined.values().map(group_of).collect();
            list.sort_by(|a, b| a.jid.cmp(&b.jid));
            Ok(GroupAnswer::Groups(list))
        }
        GroupOp::Create {
            subject,
            participants,
        } => {
            let mut members = Vec::with_capacity(participants.len());
            for p in &participants {
                members.push(
                    GroupParticipantOptions::builder()
                        .jid(parse_address(p)?)
                        .build(),
                );
            }
            let options = GroupCreateOptions::builder()
                .subject(subject)
                .participants(members)
                .build();
            let created = groups.create_group(options).await.map_err(refused)?;
            Ok(GroupAnswer::Group(group_of(&created.metadata)))
        }
        GroupOp::Get(jid) => {
            let jid = group_jid(&jid)?;
            let metadata = groups.get_metadata(&jid).await.map_err(refused)?;
            Ok(GroupAnswer::Group(group_of(&metadata)))
        }
        GroupOp::Update { jid, patch } => {
            let jid = group_jid(&jid)?;
            if let Some(subject) = patch.subject {
                let subject = GroupSubject::new(subject)
                    .map_err(|e| EngineError::InvalidInput(e.to_string()))?;
                groups
                    .set_subject(jid.clone(), subject)
                    .await
                    .map_err(refused)?;
            }
            if let Some(description) = patch.description {
                let description = match description.as_str() {
                    "" => None,
                    text => Some(
                        GroupDescription::new(text)
                            .map_err(|e| EngineError::InvalidInput(e.to_string()))?,
                    ),
                };
                groups
                    .set_description(jid.clone(), description, PreviousDescription::Resolve)
                    .await
                    .map_err(refused)?;
            }
            if let Some(announce) = patch.announce {
                groups
                    .set_announce(jid.clone(), announce)
                    .await
                    .map_err(refused)?;
            }
            if let Some(locked) = patch.locked {
                groups
                    .set_locked(jid.clone(), locked)
                    .await
                    .map_err(refused)?;
            }
            Ok(GroupAnswer::Done)
        }
        GroupOp::Participants {
            jid,
            action,
            participants,
        } => {
            let jid = group_jid(&jid)?;
            let mut members = Vec::with_capacity(participants.len());
            for p in &participants {
                members.push(parse_address(p)?);
            }
            let answers = match action {
                ParticipantAction::Add => groups.add_participants(jid, &members).await,
                ParticipantAction::Remove => groups.remove_participants(jid, &members).await,
                ParticipantAction::Promote => groups.promote_participants(jid, &members).await,
                ParticipantAction::Demote => groups.demote_participants(jid, &members).await,
            }
            .map_err(refused)?;
            Ok(GroupAnswer::Outcomes(
                answers.iter().map(outcome_of).collect(),
            ))
        }
        GroupOp::Invite { jid, reset } => {
            let jid = group_jid(&jid)?;
            let link = groups.get_invite_link(jid, reset).await.map_err(refused)?;
            Ok(GroupAnswer::Invite(invite_code(&link)))
        }
        GroupOp::Join(code) => {
            let joined = groups.join_with_invite_code(&code).await.map_err(refused)?;
            Ok(GroupAnswer::Joined(joined.group_jid().to_non_ad_string()))
        }
        GroupOp::Leave(jid) => {
            let jid = group_jid(&jid)?;
            groups.leave(jid).await.map_err(refused)?;
            Ok(GroupAnswer::Done)
        }
    }
}

/// A `w:gp2` notification as a group update; `None` for what the gateway does not
/// report (ephemeral timers, membership requests, communities).
pub(super) fn update_of(update: &GroupUpdate) -> Option<GroupUpdated> {
    let members = |list: &[GroupParticipantInfo]| -> Vec<String> {
        list.iter()
            .map(|p| phone_form(&p.jid, p.phone_number.as_ref()))
            .collect()
    };
    let mut out = GroupUpdated {
        remote_jid: update.group_jid.to_non_ad_string(),
        author: update
            .participant
            .as_ref()
            .map(|p| phone_form(p, update.participant_pn.as_ref())),
        action: GroupAction::Settings,
        participants: Vec::new(),
        subject: None,
        description: None,
        announce: None,
        locked: None,
        timestamp: update.timestamp.timestamp(),
    };
    match &update.action {
        GroupNotificationAction::Add { participants, .. } => {
            out.action = GroupAction::Add;
            out.participants = members(participants);
        }
        GroupNotificationAction::Remove { participants, .. } => {
            out.action = GroupAction::Remove;
            out.participants = members(participants);
        }
        GroupNotificationAction::Promote { participants } => {
            out.action = GroupAction::Promote;
            out.participants = members(participants);
        }
        GroupNotificationAction::Demote { participants } => {
            out.action = GroupAction::Demote;
            out.participants = members(participants);
        }
        GroupNotificationAction::Subject { subject, .. } => {
            out.action = GroupAction::Subject;
            out.subject = Some(subject.clone());
        }
        GroupNotificationAction::Description { description, .. } => {
            out.action = GroupAction::Description;
            out.description = description.clone();
        }
        GroupNotificationAction::Locked { .. } => out.locked = Some(true),
        GroupNotificationAction::Unlocked => out.locked = Some(false),
        GroupNotificationAction::Announce => out.announce = Some(true),
        GroupNotificationAction::NotAnnounce => out.announce = Some(false),
        GroupNotificationAction::Create { .. } => out.action = GroupAction::Create,
        _ => return None,
    }
    Some(out)
}

fn group_of(m: &GroupMetadata) -> Group {
    Group {
        jid: m.id.to_non_ad_string(),
        subject: m.subject.clone(),
        description: m.description.clone(),
        owner: m
            .creator
            .as_ref()
            .map(|c| phone_form(c, m.creator_pn.as_ref())),
        created_at: m.creation_time.and_then(|t| i64::try_from(t).ok()),
        announce: m.is_announcement,
        locked: m.is_locked,
        participants: m
            .participants
            .iter()
            .map(|p| GroupMember {
                jid: phone_form(&p.jid, p.phone_number.as_ref()),
                role: match p.participant_type {
                    ParticipantType::SuperAdmin => GroupRole::Superadmin,
                    ParticipantType::Admin => GroupRole::Admin,
                    _ => GroupRole::Member,
                },
            })
            .collect(),
    }
}

fn outcome_of(r: &ParticipantChangeResponse) -> ParticipantOutcome {
    let status = match (&r.error, &r.status) {
        (Some(code), _) | (None, Some(code)) => code.parse().unwrap_or(500),
        (None, None) => 200,
    };
    ParticipantOutcome {
        jid: phone_form(&r.jid, r.phone_number.as_ref()),
        status,
    }
}

/// `https://chat.whatsapp.com/CODE` → `CODE`.
fn invite_code(link: &str) -> String {
    link.rsplit('/').next().unwrap_or(link).to_owned()
}

fn group_jid(jid: &str) -> Result<Jid, EngineError> {
    let parsed = parse_address(jid)?;
    if parsed.is_group() {
        Ok(parsed)
    } else {
        Err(EngineError::InvalidInput(format!("'{jid}' is not a group")))
    }
}

/// WhatsApp's refusal as the seam names it: 401/403 the account may not, 404/406 no
/// such group for it.
fn refused(err: GroupError) -> EngineError {
    match &err {
        GroupError::Iq(IqError::ServerError { code, text, .. }) => match code {
            401 | 403 => EngineError::Forbidden(format!("WhatsApp refused ({code} {text})")),
            404 | 406 => {
                EngineError::NotFound(format!("WhatsApp knows no such group ({code} {text})"))
            }
            _ => EngineError::Unavailable(format!("WhatsApp answered {code} {text}")),
        },
        GroupError::InvalidRequest(why) => EngineError::InvalidInput(why.clone()),
        _ => EngineError::Unavailable(format!("the group request failed: {err}")),
    }
}
