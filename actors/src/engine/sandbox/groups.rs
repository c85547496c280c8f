//! The sandbox's groups: one book shared by every sandbox session of a server, kept by
//! WhatsApp's rules as a client meets them (admins change members and settings; a
//! locked group's info is for admins; an announce group is for admins to write in).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rand::Rng;

use crate::domain::address::{GROUP_SERVER, jid_user};
use crate::domain::event::{GroupAction, GroupUpdated};
use crate::domain::{
    Group, GroupAnswer, GroupMember, GroupOp, GroupPatch, GroupRole, ParticipantAction,
    ParticipantOutcome,
};
use crate::engine::EngineError;

/// Every group of the simulated network, by address.
#[derive(Debug, Default)]
pub(super) struct GroupBook {
    groups: HashMap<String, SandboxGroup>,
}

#[derive(Debug, Clone)]
struct SandboxGroup {
    group: Group,
    invite: String,
}

/// What a group operation did: its answer, and the updates each member's session hears
/// (the members as they are after the change, plus whoever it removed).
pub(super) struct Outcome {
    pub answer: GroupAnswer,
    pub updates: Vec<(String, GroupUpdated)>,
}

impl Outcome {
    fn answer(answer: GroupAnswer) -> Outcome {
        Outcome {
            answer,
            updates: Vec::new(),
        }
    }
}

impl GroupBook {
    /// The members of group `jid` (none for an unknown group).
    pub(super) fn members(&self, jid: &str) -> Option<&Group> {
        self.groups.get(jid).map(|g| &g.group)
    }

    /// Carries out `op` for the account `me` (`…@s.whatsapp.net`) at `now`.
    pub(super) fn apply(
        &mut self,
        me: &str,
        op: GroupOp,
        now: DateTime<Utc>,
    ) -> Result<Outcome, EngineError> {
        let update = |action, participants: Vec<String>| GroupUpdated {
            remote_jid: String::new(),
            author: Some(me.to_owned()),
            action,
            participants,
            subject: None,
            description: None,
            announce: None,
            locked: None,
            timestamp: now.timestamp(),
        };
        match op {
            GroupOp::List => {
                let mut groups: Vec<Group> = self
                    .groups
                    .values()
                    .filter(|g| g.group.role_of(me).is_some())
                    .map(|g| g.group.clone())
                    .collect();
                groups.sort_by(|a, b| a.jid.cmp(&b.jid));
                Ok(Outcome::answer(GroupAnswer::Groups(groups)))
            }
            GroupOp::Create {
                subject,
                participants,
            } => {
                let jid = new_group_jid();
                let mut members = vec![GroupMember {
                    jid: me.to_owned(),
                    role: GroupRole::Superadmin,
                }];
                for p in participants {
                    if p != me && on_whatsapp(&p) && !members.iter().any(|m| m.jid == p) {
                        members.push(GroupMember {
                            jid: p,
                            role: GroupRole::Member,
                        });
                    }
                }
                let group = Group {
                    jid: jid.clone(),
                    subject: subject.clone(),
                    description: None,
                    owner: Some(me.to_owned()),
                    created_at: Some(now.timestamp()),
                    announce: false,
                    locked: false,
                    participants: members,
                };
                self.groups.insert(
                    jid.clone(),
                    SandboxGroup {
                        group: group.clone(),
                        invite: new_invite(),
                    },
                );
                let created = GroupUpdated {
                    subject: Some(subject),
                    ..update(
                        GroupAction::Create,
                        group.participants.iter().map(|m| m.jid.clone()).collect(),
                    )
                };
                Ok(self.tell(&jid, &[], created, GroupAnswer::Group(group)))
            }
            GroupOp::Get(jid) => {
                let group = self.member_of(&jid, me)?;
                Ok(Outcome::answer(GroupAnswer::Group(group.group.clone())))
            }
            GroupOp::Update { jid, patch } => {
                let g = self.member_of_mut(&jid, me)?;
                let admin = g.group.role_of(me).is_some_and(GroupRole::is_admin);
                let settings = patch.announce.is_some() || patch.locked.is_some();
                if !admin && (settings || g.group.locked) {
                    return Err(not_admin(&jid));
                }
                let GroupPatch {
                    subject,
                    description,
                    announce,
                    locked,
                } = patch;
                let mut changes = Vec::new();
                if let Some(subject) = subject {
                    g.group.subject = subject.clone();
                    changes.push(GroupUpdated {
                        subject: Some(subject),
                        ..update(GroupAction::Subject, Vec::new())
                    });
                }
                if let Some(description) = description {
                    let description = Some(description).filter(|d| !d.is_empty());
                    g.group.description = description.clone();
                    changes.push(GroupUpdated {
                        description,
                        ..update(GroupAction::Description, Vec::new())
                    });
                }
                if settings {
                    if let Some(announce) = announce {
                        g.group.announce = announce;
                    }
                    if let Some(locked) = locked {
                        g.group.locked = locked;
                    }
                    changes.push(GroupUpdated {
                        announce,
                        locked,
                        ..update(GroupAction::Settings, Vec::new())
                    });
                }
                let mut outcome = Outcome::answer(GroupAnswer::Done);
                for change in changes {
                    outcome
                        .updates
                        .extend(self.tell(&jid, &[], change, GroupAnswer::Done).updates);
                }
                Ok(outcome)
            }
            GroupOp::Participants {
                jid,
                action,
                participants,
            } => {
                let g = self.member_of_mut(&jid, me)?;
                if !g.group.role_of(me).is_some_and(GroupRole::is_admin) {
                    return Err(not_admin(&jid));
                }
                let mut outcomes = Vec::new();
                let mut done = Vec::new();
                for p in participants {
                    let status = change_member(&mut g.group, &p, action);
                    if status == 200 {
                        done.push(p.clone());
                    }
                    outcomes.push(ParticipantOutcome { jid: p, status });
                }
                let answer = GroupAnswer::Outcomes(outcomes);
                if done.is_empty() {
                    return Ok(Outcome::answer(answer));
                }
                let gone = if action == ParticipantAction::Remove {
                    done.clone()
                } else {
                    Vec::new()
                };
                let kind = match action {
                    ParticipantAction::Add => GroupAction::Add,
                    ParticipantAction::Remove => GroupAction::Remove,
                    ParticipantAction::Promote => GroupAction::Promote,
                    ParticipantAction::Demote => GroupAction::Demote,
                };
                Ok(self.tell(&jid, &gone, update(kind, done), answer))
            }
            GroupOp::Invite { jid, reset } => {
                let g = self.member_of_mut(&jid, me)?;
                if !g.group.role_of(me).is_some_and(GroupRole::is_admin) {
                    return Err(not_admin(&jid));
                }
                if reset {
                    g.invite = new_invite();
                }
                Ok(Outcome::answer(GroupAnswer::Invite(g.invite.clone())))
            }
            GroupOp::Join(code) => {
                let Some(g) = self.groups.values_mut().find(|g| g.invite == code) else {
                    return Err(EngineError::NotFound(
                        "no group has this invite code (it may have been revoked)".into(),
                    ));
                };
                let jid = g.group.jid.clone();
                if g.group.role_of(me).is_some() {
                    return Ok(Outcome::answer(GroupAnswer::Joined(jid)));
                }
                g.group.participants.push(GroupMember {
                    jid: me.to_owned(),
                    role: GroupRole::Member,
                });
                let joined = update(GroupAction::Add, vec![me.to_owned()]);
                Ok(self.tell(&jid, &[], joined, GroupAnswer::Joined(jid.clone())))
            }
            GroupOp::Leave(jid) => {
                let g = self.member_of_mut(&jid, me)?;
                g.group.participants.retain(|m| m.jid != me);
                let empty = g.group.participants.is_empty();
                let left = update(GroupAction::Remove, vec![me.to_owned()]);
                let outcome = self.tell(&jid, &[me.to_owned()], left, GroupAnswer::Done);
                if empty {
                    self.groups.remove(&jid);
                }
                Ok(outcome)
            }
        }
    }

    /// `update` of group `jid`, for each member and for `also` (members it removed).
    fn tell(
        &self,
        jid: &str,
        also: &[String],
        mut update: GroupUpdated,
        answer: GroupAnswer,
    ) -> Outcome {
        update.remote_jid = jid.to_owned();
        let mut to: Vec<String> = self
            .members(jid)
            .map(|g| g.participants.iter().map(|m| m.jid.clone()).collect())
            .unwrap_or_default();
        to.extend(also.iter().cloned());
        Outcome {
            answer,
            updates: to.into_iter().map(|m| (m, update.clone())).collect(),
        }
    }

    fn member_of(&self, jid: &str, me: &str) -> Result<&SandboxGroup, EngineError> {
        self.groups
            .get(jid)
            .filter(|g| g.group.role_of(me).is_some())
            .ok_or_else(|| not_in(jid))
    }

    fn member_of_mut(&mut self, jid: &str, me: &str) -> Result<&mut SandboxGroup, EngineError> {
        self.groups
            .get_mut(jid)
            .filter(|g| g.group.role_of(me).is_some())
            .ok_or_else(|| not_in(jid))
    }
}

/// Applies `action` to `p`; WhatsApp's per-member code.
fn change_member(group: &mut Group, p: &str, action: ParticipantAction) -> u16 {
    let at = group.participants.iter().position(|m| m.jid == p);
    match (action, at) {
        (ParticipantAction::Add, Some(_)) => 409,
        (ParticipantAction::Add, None) if !on_whatsapp(p) => 404,
        (ParticipantAction::Add, None) => {
            group.participants.push(GroupMember {
                jid: p.to_owned(),
                role: GroupRole::Member,
            });
            200
        }
        (_, None) => 404,
        (_, Some(i)) if group.participants[i].role == GroupRole::Superadmin => 403,
        (ParticipantAction::Remove, Some(i)) => {
            group.participants.remove(i);
            200
        }
        (ParticipantAction::Promote, Some(i)) => {
            group.participants[i].role = GroupRole::Admin;
            200
        }
        (ParticipantAction::Demote, Some(i)) => {
            group.participants[i].role = GroupRole::Member;
            200
        }
    }
}

/// The sandbox's rule for numbers: all are on WhatsApp except those ending in `0000`.
fn on_whatsapp(jid: &str) -> bool {
    !jid_user(jid).ends_with("0000")
}

fn not_in(jid: &str) -> EngineError {
    EngineError::NotFound(format!("the account is not in group {jid}"))
}

fn not_admin(jid: &str) -> EngineError {
    EngineError::Forbidden(format!(
        "WhatsApp refused: the account is not an admin of group {jid}"
    ))
}

fn new_group_jid() -> String {
    let digits: u64 = rand::rng().random_range(0..100_000_000_000);
    format!("1203630{digits:011}@{GROUP_SERVER}")
}

fn new_invite() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..22)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "79001160001@s.whatsapp.net";
    const BOB: &str = "79001160002@s.whatsapp.net";
    const CAROL: &str = "79001160003@s.whatsapp.net";

    fn created(book: &mut GroupBook) -> Group {
        let op = GroupOp::Create {
            subject: "Team".into(),
            participants: vec![BOB.into(), "79001160000@s.whatsapp.net".into()],
        };
        match book.apply(ALICE, op, Utc::now()).expect("created").answer {
            GroupAnswer::Group(g) => g,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_creator_is_superadmin_and_numbers_off_whatsapp_are_left_out() {
        let mut book = GroupBook::default();
        let g = created(&mut book);
        assert_eq!(g.role_of(ALICE), Some(GroupRole::Superadmin));
        assert_eq!(g.role_of(BOB), Some(GroupRole::Member));
        assert_eq!(g.participants.len(), 2);
        assert!(g.jid.ends_with("@g.us"));
    }

    #[test]
    fn members_who_are_not_admins_are_refused_admin_work() {
        let mut book = GroupBook::default();
        let g = created(&mut book);
        let add = GroupOp::Participants {
            jid: g.jid.clone(),
            action: ParticipantAction::Add,
            participants: vec![CAROL.into()],
        };
        assert!(matches!(
            book.apply(BOB, add.clone(), Utc::now()),
            Err(EngineError::Forbidden(_))
        ));
        let settings = GroupOp::Update {
            jid: g.jid.clone(),
            patch: GroupPatch {
                announce: Some(true),
                ..GroupPatch::default()
            },
        };
        assert!(matches!(
            book.apply(BOB, settings, Utc::now()),
            Err(EngineError::Forbidden(_))
        ));
        // Someone outside the group does not see it at all.
        assert!(matches!(
            book.apply(CAROL, GroupOp::Get(g.jid.clone()), Utc::now()),
            Err(EngineError::NotFound(_))
        ));
        // The admin adds Carol; adding her again is 409, the superadmin stays.
        let done = book.apply(ALICE, add.clone(), Utc::now()).expect("added");
        assert_eq!(
            done.answer,
            GroupAnswer::Outcomes(vec![ParticipantOutcome {
                jid: CAROL.into(),
                status: 200
            }])
        );
        assert_eq!(done.updates.len(), 3, "every member hears of it");
        let again = book.apply(ALICE, add, Utc::now()).expect("answered");
        assert!(matches!(again.answer, GroupAnswer::Outcomes(o) if o[0].status == 409));
        assert!(again.updates.is_empty());
    }

    #[test]
    fn joining_by_invite_and_leaving() {
        let mut book = GroupBook::default();
        let g = created(&mut book);
        let code = match book
            .apply(
                ALICE,
                GroupOp::Invite {
                    jid: g.jid.clone(),
                    reset: false,
                },
                Utc::now(),
            )
            .expect("invite")
            .answer
        {
            GroupAnswer::Invite(code) => code,
            other => panic!("{other:?}"),
        };
        let joined = book
            .apply(CAROL, GroupOp::Join(code.clone()), Utc::now())
            .expect("joined");
        assert_eq!(joined.answer, GroupAnswer::Joined(g.jid.clone()));
        // A reset revokes the old code.
        book.apply(
            ALICE,
            GroupOp::Invite {
                jid: g.jid.clone(),
                reset: true,
            },
            Utc::now(),
        )
        .expect("reset");
        assert!(matches!(
            book.apply(BOB, GroupOp::Join(code), Utc::now()),
            Err(EngineError::NotFound(_))
        ));
        let left = book
            .apply(CAROL, GroupOp::Leave(g.jid.clone()), Utc::now())
            .expect("left");
        assert!(left.updates.iter().any(|(to, _)| to == CAROL));
        assert_eq!(book.members(&g.jid).map(|g| g.participants.len()), Some(2));
    }
}
