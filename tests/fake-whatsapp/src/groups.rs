//! Groups: WhatsApp's `w:g2` IQs, the `w:gp2` notifications a change sends to the
//! members, and the sender-key messages written in a group.
//!
//! - A group is `<id>@g.us` in phone-number addressing (`addressing_mode="pn"`): its
//!   members are named `<phone>@s.whatsapp.net`.
//! - IQs to `g.us` create (`<create subject>`), list (`<participating>`), leave
//!   (`<leave><group id/></leave>`) and join by code (`<invite code/>`); IQs to the group
//!   read it (`<query>`) and change it (`<subject>`, `<description>`, `<announcement>`,
//!   `<locked>` and their opposites, `<add|remove|promote|demote>` with an answer per
//!   participant, `<invite>` to read or, as a `set`, reset the code). What a member may
//!   not do is refused 403, as WhatsApp does: the settings, the participants (but
//!   `add`, while members may add) and the invite are for admins, the subject and
//!   description too once the group is locked.
//! - Each change goes to every linked device of the members (before and after it) as
//!   `<notification type="w:gp2" from=group participant=author>` with the change as its
//!   child.
//! - A device writes to a group with one `<enc type="skmsg">` for everyone and, in
//!   `<participants>`, its sender key (a `SenderKeyDistributionMessage`) encrypted for
//!   each device that lacks it. Every member's phone decrypts its copy of the key, takes
//!   it in, and decrypts the skmsg; the members' linked devices get the message from the
//!   group, with the sender as `participant`.

use std::collections::BTreeMap;

use whatsapp_rust::NodeBuilder;
use whatsapp_rust::wacore_binary::node::Node;
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::{Jid, Server};

use crate::peer::Peer;
use crate::server::{Inner, new_id};
use crate::wire::{Fallible, attr, error, now, result, text};

/// A member's standing in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Member,
    Admin,
    /// The creator.
    SuperAdmin,
}

impl Role {
    pub fn is_admin(self) -> bool {
        self != Role::Member
    }

    /// The `type` attribute WhatsApp gives it; none for a member.
    fn wire(self) -> Option<&'static str> {
        match self {
            Role::Member => None,
            Role::Admin => Some("admin"),
            Role::SuperAdmin => Some("superadmin"),
        }
    }
}

/// A group as the server keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// The user part of its address (`<id>@g.us`).
    pub id: String,
    pub subject: String,
    pub subject_owner: String,
    pub subject_time: u64,
    pub description: Option<String>,
    /// The token a description change names as `prev`.
    pub description_id: Option<String>,
    /// The creator's phone number.
    pub creator: String,
    pub creation: u64,
    /// Phone number → role.
    pub participants: BTreeMap<String, Role>,
    /// Only admins write.
    pub announce: bool,
    /// Only admins edit the subject and description.
    pub locked: bool,
    pub invite: String,
}

/// WhatsApp's refusal of a group request: a code and its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal(pub(crate) u16, pub(crate) &'static str);

const FORBIDDEN: Refusal = Refusal(403, "forbidden");
const NOT_FOUND: Refusal = Refusal(404, "item-not-found");
const BAD_REQUEST: Refusal = Refusal(400, "bad-request");
const CONFLICT: Refusal = Refusal(409, "conflict");

/// What a participant change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Add,
    Remove,
    Promote,
    Demote,
}

impl Change {
    fn of(tag: &str) -> Option<Change> {
        Some(match tag {
            "add" => Change::Add,
            "remove" => Change::Remove,
            "promote" => Change::Promote,
            "demote" => Change::Demote,
            _ => return None,
        })
    }

    fn tag(self) -> &'static str {
        match self {
            Change::Add => "add",
            Change::Remove => "remove",
            Change::Promote => "promote",
            Change::Demote => "demote",
        }
    }
}

impl Group {
    /// A new group: its creator is its super admin, `members` are members.
    pub(crate) fn new(id: String, creator: &str, subject: &str, members: &[String]) -> Group {
        let mut participants: BTreeMap<String, Role> =
            members.iter().map(|m| (m.clone(), Role::Member)).collect();
        participants.insert(creator.to_owned(), Role::SuperAdmin);
        Group {
            invite: invite_code(&id),
            id,
            subject: subject.to_owned(),
            subject_owner: creator.to_owned(),
            subject_time: now(),
            description: None,
            description_id: None,
            creator: creator.to_owned(),
            creation: now(),
            participants,
            announce: false,
            locked: false,
        }
    }

    pub fn jid(&self) -> Jid {
        Jid::group(self.id.as_str())
    }

    fn member(&self, phone: &str) -> Result<Role, Refusal> {
        self.participants.get(phone).copied().ok_or(FORBIDDEN)
    }

    /// `phone` may change settings, participants and the invite.
    pub(crate) fn admin(&self, phone: &str) -> Result<(), Refusal> {
        if self.member(phone)?.is_admin() {
            Ok(())
        } else {
            Err(FORBIDDEN)
        }
    }

    /// `phone` may change the subject and description.
    pub(crate) fn editor(&self, phone: &str) -> Result<(), Refusal> {
        if self.locked {
            self.admin(phone)
        } else {
            self.member(phone).map(|_| ())
        }
    }

    /// `by` adds, removes, promotes or demotes `whom`; `exists` says whether a number
    /// is on WhatsApp. Returns each one's error code, `None` when done.
    pub(crate) fn change(
        &mut self,
        by: &str,
        change: Change,
        whom: &[String],
        exists: impl Fn(&str) -> bool,
    ) -> Result<Vec<(String, Option<u16>)>, Refusal> {
        match change {
            Change::Add => self.member(by).map(|_| ())?,
            _ => self.admin(by)?,
        }
        let mut out = Vec::with_capacity(whom.len());
        for phone in whom {
            let role = self.participants.get(phone).copied();
            let code = match (change, role) {
                (Change::Add, Some(_)) => Some(409),
                (Change::Add, None) if !exists(phone) => Some(404),
                (Change::Add, None) => {
                    self.participants.insert(phone.clone(), Role::Member);
                    None
                }
                (_, None) => Some(404),
                // Nobody removes or demotes the creator.
                (Change::Remove | Change::Demote, Some(Role::SuperAdmin)) => Some(403),
                (Change::Remove, Some(_)) => {
                    self.participants.remove(phone);
                    None
                }
                (Change::Promote, Some(_)) => {
                    self.participants.insert(phone.clone(), Role::Admin);
                    None
                }
                (Change::Demote, Some(_)) => {
                    self.participants.insert(phone.clone(), Role::Member);
                    None
                }
            };
            out.push((phone.clone(), code));
        }
        Ok(out)
    }

    /// `<group …>` as the query, create and participating answers carry it.
    fn node(&self) -> Node {
        let mut children: Vec<Node> = self
            .participants
            .iter()
            .map(|(phone, role)| {
                let mut p = NodeBuilder::new("participant").attr("jid", Jid::pn(phone));
                if let Some(kind) = role.wire() {
                    p = p.attr("type", kind);
                }
                p.build()
            })
            .collect();
        if let (Some(body), Some(id)) = (&self.description, &self.description_id) {
            children.push(
                NodeBuilder::new("description")
                    .attr("id", id.clone())
                    .children([NodeBuilder::new("body")
                        .string_content(body.clone())
                        .build()])
                    .build(),
            );
        }
        if self.locked {
            children.push(NodeBuilder::new("locked").build());
        }
        if self.announce {
            children.push(NodeBuilder::new("announcement").build());
        }
        NodeBuilder::new("group")
            .attr("id", self.id.clone())
            .attr("subject", self.subject.clone())
            .attr("s_t", self.subject_time.to_string())
            .attr("s_o", Jid::pn(&self.subject_owner))
            .attr("creator", Jid::pn(&self.creator))
            .attr("creation", self.creation.to_string())
            .attr("addressing_mode", "pn")
            .attr("size", self.participants.len().to_string())
            .children(children)
            .build()
    }
}

/// A fresh invite code for group `id`.
fn invite_code(id: &str) -> String {
    let seed: [u8; 8] = rand10::random();
    let tail: String = seed.iter().map(|b| format!("{b:02X}")).collect();
    format!("{}{tail}", &id[id.len().saturating_sub(4)..])
}

/// `<participant jid/>` children, as phone numbers.
fn participants_of(node: &Node, phone_of: impl Fn(&Jid) -> String) -> Vec<String> {
    node.get_children_by_tag("participant")
        .filter_map(|p| attr(p, "jid")?.parse::<Jid>().ok())
        .map(|jid| phone_of(&jid))
        .collect()
}

fn refused(id: &str, Refusal(code, why): Refusal) -> Node {
    error(id, code, why)
}

/// A change the members hear of.
struct Notice {
    group: String,
    author: String,
    change: Node,
    /// Who hears of it: the members before and after the change.
    to: Vec<String>,
}

impl Inner {
    /// The answer to a `w:g2` IQ from the device on connection `n`; `None` for one the
    /// server does not know.
    pub(crate) fn group_iq(&self, n: usize, kind: &str, id: &str, node: &Node) -> Option<Node> {
        let Some((phone, _)) = self.device_of(n) else {
            return Some(error(id, 401, "not-authorized"));
        };
        let to = attr(node, "to").and_then(|t| t.parse::<Jid>().ok())?;
        let child = node.children().and_then(|c| c.first())?;
        let at_server = to.user.is_empty();
        let answer = match (kind, at_server, child.tag.as_ref()) {
            ("set", true, "create") => self.create(&phone, id, child),
            ("get", true, "participating") => Ok(self.participating(&phone, id)),
            ("set", true, "leave") => self.leave(&phone, id, child),
            ("set", true, "invite") => self.join(&phone, id, child),
            (_, true, _) => return None,
            ("get", false, "query") => self.query(&phone, id, &to),
            ("get" | "set", false, "invite") => self.invite(&phone, id, &to, kind == "set"),
            ("set", false, tag) => match Change::of(tag) {
                Some(change) => self.participants(&phone, id, &to, change, child),
                None => self.edit(&phone, id, &to, child),
            },
            _ => return None,
        };
        Some(answer.unwrap_or_else(|why| refused(id, why)))
    }

    /// What `apply` makes of (or refuses to) the group `to` names.
    fn with_group<T>(
        &self,
        to: &Jid,
        apply: impl FnOnce(&mut Group) -> Result<T, Refusal>,
    ) -> Result<T, Refusal> {
        let mut state = self.state();
        let group = state
            .groups
            .get_mut(to.user.as_str())
            .filter(|_| to.server == Server::Group)
            .ok_or(NOT_FOUND)?;
        let out = apply(group);
        drop(state);
        self.bump();
        out
    }

    fn create(&self, phone: &str, id: &str, create: &Node) -> Result<Node, Refusal> {
        let subject = attr(create, "subject")
            .filter(|s| !s.is_empty())
            .ok_or(BAD_REQUEST)?;
        let known: Vec<String> = participants_of(create, |j| self.phone_of(j))
            .into_iter()
            .filter(|p| self.exists(p) && p != phone)
            .collect();
        let group = {
            let mut state = self.state();
            let group_id = state.next_group.to_string();
            state.next_group += 1;
            let group = Group::new(group_id.clone(), phone, &subject, &known);
            state.groups.insert(group_id, group.clone());
            group
        };
        self.bump();
        self.notify(Notice {
            group: group.id.clone(),
            author: phone.to_owned(),
            change: NodeBuilder::new("create").children([group.node()]).build(),
            to: group.participants.keys().cloned().collect(),
        });
        Ok(result(id).children([group.node()]).build())
    }

    fn participating(&self, phone: &str, id: &str) -> Node {
        let groups: Vec<Node> = self
            .state()
            .groups
            .values()
            .filter(|g| g.participants.contains_key(phone))
            .map(Group::node)
            .collect();
        result(id)
            .children([NodeBuilder::new("groups").children(groups).build()])
            .build()
    }

    fn query(&self, phone: &str, id: &str, to: &Jid) -> Result<Node, Refusal> {
        let group = self.with_group(to, |g| g.member(phone).map(|_| g.node()))?;
        Ok(result(id).children([group]).build())
    }

    /// Subject, description, announcement and locked, and their opposites.
    fn edit(&self, phone: &str, id: &str, to: &Jid, child: &Node) -> Result<Node, Refusal> {
        let tag = child.tag.to_string();
        let (change, members) = self.with_group(to, |g| {
            let change = match tag.as_str() {
                "subject" => {
                    g.editor(phone)?;
                    let subject = text(child).filter(|s| !s.is_empty()).ok_or(BAD_REQUEST)?;
                    g.subject = subject.clone();
                    g.subject_owner = phone.to_owned();
                    g.subject_time = now();
                    NodeBuilder::new("subject")
                        .attr("subject", subject)
                        .attr("s_o", Jid::pn(phone))
                        .attr("s_t", g.subject_time.to_string())
                        .build()
                }
                "description" => {
                    g.editor(phone)?;
                    if attr(child, "prev") != g.description_id {
                        return Err(CONFLICT);
                    }
                    let new_id = attr(child, "id").ok_or(BAD_REQUEST)?;
                    let body = child.get_optional_child("body").and_then(text);
                    let mut notice = NodeBuilder::new("description").attr("id", new_id.clone());
                    notice = match &body {
                        Some(body) => notice.children([NodeBuilder::new("body")
                            .string_content(body.clone())
                            .build()]),
                        None => notice.children([NodeBuilder::new("delete").build()]),
                    };
                    g.description_id = body.as_ref().map(|_| new_id);
                    g.description = body;
                    notice.build()
                }
                "announcement" | "not_announcement" => {
                    g.admin(phone)?;
                    g.announce = tag == "announcement";
                    NodeBuilder::new_dynamic(tag.clone()).build()
                }
                "locked" | "unlocked" => {
                    g.admin(phone)?;
                    g.locked = tag == "locked";
                    NodeBuilder::new_dynamic(tag.clone()).build()
                }
                _ => return Err(BAD_REQUEST),
            };
            Ok((change, g.participants.keys().cloned().collect()))
        })?;
        self.notify(Notice {
            group: to.user.to_string(),
            author: phone.to_owned(),
            change,
            to: members,
        });
        Ok(result(id).build())
    }

    fn participants(
        &self,
        phone: &str,
        id: &str,
        to: &Jid,
        change: Change,
        child: &Node,
    ) -> Result<Node, Refusal> {
        let whom = participants_of(child, |j| self.phone_of(j));
        let known: Vec<String> = whom.iter().filter(|p| self.exists(p)).cloned().collect();
        let exists = |p: &str| known.iter().any(|k| k == p);
        let (outcomes, mut hear) = self.with_group(to, |g| {
            let mut hear: Vec<String> = g.participants.keys().cloned().collect();
            let outcomes = g.change(phone, change, &whom, exists)?;
            hear.extend(g.participants.keys().cloned());
            Ok((outcomes, hear))
        })?;
        let done: Vec<Node> = outcomes
            .iter()
            .filter(|(_, code)| code.is_none())
            .map(|(p, _)| {
                NodeBuilder::new("participant")
                    .attr("jid", Jid::pn(p))
                    .build()
            })
            .collect();
        if !done.is_empty() {
            hear.sort();
            hear.dedup();
            self.notify(Notice {
                group: to.user.to_string(),
                author: phone.to_owned(),
                change: NodeBuilder::new(change.tag()).children(done).build(),
                to: hear,
            });
        }
        let answers = outcomes.into_iter().map(|(p, code)| {
            let mut node = NodeBuilder::new("participant").attr("jid", Jid::pn(&p));
            if let Some(code) = code {
                node = node.attr("error", code.to_string());
            }
            node.build()
        });
        Ok(result(id)
            .children([NodeBuilder::new(change.tag()).children(answers).build()])
            .build())
    }

    fn invite(&self, phone: &str, id: &str, to: &Jid, reset: bool) -> Result<Node, Refusal> {
        let code = self.with_group(to, |g| {
            g.admin(phone)?;
            if reset {
                g.invite = invite_code(&g.id);
            }
            Ok(g.invite.clone())
        })?;
        Ok(result(id)
            .children([NodeBuilder::new("invite").attr("code", code).build()])
            .build())
    }

    fn join(&self, phone: &str, id: &str, invite: &Node) -> Result<Node, Refusal> {
        let code = attr(invite, "code").ok_or(BAD_REQUEST)?;
        let (group, members) = {
            let mut state = self.state();
            let group = state
                .groups
                .values_mut()
                .find(|g| g.invite == code)
                .ok_or(NOT_FOUND)?;
            if group.participants.contains_key(phone) {
                return Err(Refusal(304, "already-exists"));
            }
            group.participants.insert(phone.to_owned(), Role::Member);
            (
                group.id.clone(),
                group.participants.keys().cloned().collect(),
            )
        };
        self.bump();
        self.notify(Notice {
            group: group.clone(),
            author: phone.to_owned(),
            change: NodeBuilder::new("add")
                .attr("reason", "invite")
                .children([NodeBuilder::new("participant")
                    .attr("jid", Jid::pn(phone))
                    .build()])
                .build(),
            to: members,
        });
        Ok(result(id)
            .children([NodeBuilder::new("group")
                .attr("jid", Jid::group(group.as_str()))
                .build()])
            .build())
    }

    fn leave(&self, phone: &str, id: &str, leave: &Node) -> Result<Node, Refusal> {
        let to = leave
            .get_optional_child("group")
            .and_then(|g| attr(g, "id"))
            .and_then(|g| g.parse::<Jid>().ok())
            .ok_or(BAD_REQUEST)?;
        let members = self.with_group(&to, |g| {
            let members: Vec<String> = g.participants.keys().cloned().collect();
            g.participants.remove(phone).ok_or(FORBIDDEN)?;
            Ok(members)
        })?;
        self.notify(Notice {
            group: to.user.to_string(),
            author: phone.to_owned(),
            change: NodeBuilder::new("remove")
                .children([NodeBuilder::new("participant")
                    .attr("jid", Jid::pn(phone))
                    .build()])
                .build(),
            to: members,
        });
        Ok(result(id).build())
    }

    /// Whether `phone` is on WhatsApp here (a user or an account).
    fn exists(&self, phone: &str) -> bool {
        let state = self.state();
        state.users.contains_key(phone) || state.accounts.contains_key(phone)
    }

    /// The `w:gp2` notification of `notice`, to every linked device of its audience.
    fn notify(&self, notice: Notice) {
        let stanza = NodeBuilder::new("notification")
            .attr("type", "w:gp2")
            .attr("from", Jid::group(notice.group.as_str()))
            .attr("id", new_id())
            .attr("t", now().to_string())
            .attr("participant", Jid::pn(&notice.author))
            .attr("addressing_mode", "pn")
            .children([notice.change])
            .build();
        for phone in notice.to {
            for device in self.companions_of(&phone).unwrap_or_default() {
                if let Err(why) = self.deliver(&phone, device, stanza.clone()) {
                    self.problem(why);
                }
            }
        }
    }

    /// User or account `creator` makes a group with `members` (phone numbers), as from
    /// its phone; returns its address.
    pub(crate) fn create_group_by(
        &self,
        creator: &str,
        subject: &str,
        members: &[&str],
    ) -> Fallible<Jid> {
        let members: Vec<String> = members.iter().map(|m| (*m).to_owned()).collect();
        for phone in members.iter().map(String::as_str).chain([creator]) {
            if !self.exists(phone) {
                return Err(format!("{phone} is not on WhatsApp here"));
            }
        }
        let create = NodeBuilder::new("create")
            .attr("subject", subject.to_owned())
            .children(members.iter().map(|m| {
                NodeBuilder::new("participant")
                    .attr("jid", Jid::pn(m))
                    .build()
            }))
            .build();
        let answer = self
            .create(creator, "by-phone", &create)
            .map_err(|why| format!("creating the group: {why:?}"))?;
        answer
            .get_optional_child("group")
            .and_then(|g| attr(g, "id"))
            .map(|id| Jid::group(id.as_str()))
            .ok_or_else(|| "the created group has no id".to_owned())
    }

    /// A group as it is now.
    pub(crate) fn group(&self, jid: &Jid) -> Option<Group> {
        self.state().groups.get(jid.user.as_str()).cloned()
    }

    /// A `<message to="…@g.us">` from the device `sender`: every member's phone takes
    /// in the sender key meant for it and decrypts the skmsg; the members' linked
    /// devices get the message from the group.
    pub(crate) async fn group_message(&self, node: &Node, sender: &Jid, group: &Jid) {
        let id = attr(node, "id").unwrap_or_default();
        let Some(members) = self.group(group).map(|g| g.participants) else {
            self.problem(format!("{id}: a message to {group}, which does not exist"));
            return;
        };
        if !members.contains_key(sender.user.as_str()) {
            self.problem(format!(
                "{id}: {sender} wrote to {group} without being in it"
            ));
            return;
        }
        let Some(skmsg) = node
            .get_children_by_tag("enc")
            .find(|e| attr(e, "type").as_deref() == Some("skmsg"))
        else {
            self.problem(format!("{id}: a group message without an skmsg"));
            return;
        };
        // The sender key, per device it was encrypted for.
        let keys: Vec<(Jid, &Node)> = node
            .get_optional_child("participants")
            .map(|p| {
                p.get_children_by_tag("to")
                    .filter_map(|to| {
                        let jid = attr(to, "jid")?.parse::<Jid>().ok()?;
                        Some((jid, to.get_optional_child("enc")?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let key_for = |phone: &str, device: u16| {
            keys.iter()
                .find(|(jid, _)| self.phone_of(jid) == phone && jid.device == device)
                .map(|(_, enc)| *enc)
        };
        for phone in members.keys() {
            if let Some(peer) = self.peer(&Jid::pn(phone))
                && let Err(why) = peer
                    .receive_group(group, sender, &id, key_for(phone, 0), skmsg)
                    .await
            {
                self.problem(why);
            }
            for device in self.companions_of(phone).unwrap_or_default() {
                if *phone == sender.user && device == sender.device {
                    continue;
                }
                let mut encs: Vec<Node> = key_for(phone, device).into_iter().cloned().collect();
                encs.push(skmsg.clone());
                let stanza = group_stanza(group, sender, &id, "text", None, encs);
                if let Err(why) = self.deliver(phone, device, stanza) {
                    self.problem(why);
                }
            }
        }
        self.bump();
    }

    /// `peer` writes `message` to `group`: its sender key goes to each member's linked
    /// devices in a pairwise message, next to the skmsg. Returns the message id.
    pub(crate) async fn send_group_from_peer(
        &self,
        peer: &Peer,
        group: &Jid,
        message: &wa::Message,
    ) -> Fallible<String> {
        let members = self
            .group(group)
            .ok_or_else(|| format!("{group} does not exist"))?
            .participants;
        if !members.contains_key(&peer.phone()) {
            return Err(format!("{} is not in {group}", peer.jid()));
        }
        let (distribution, skmsg) = peer.encrypt_for_group(group, message).await?;
        let key = wa::Message {
            sender_key_distribution_message: whatsapp_rust::buffa::MessageField::some(
                wa::message::SenderKeyDistributionMessage {
                    group_id: Some(group.to_string()),
                    axolotl_sender_key_distribution_message: Some(distribution),
                },
            ),
            ..Default::default()
        };
        let id = new_id();
        let skmsg = NodeBuilder::new("enc")
            .attr("v", "2")
            .attr("type", "skmsg")
            .bytes(skmsg)
            .build();
        for phone in members.keys().filter(|p| **p != peer.phone()) {
            for device in self.companions_of(phone).unwrap_or_default() {
                let (enc_type, ciphertext) = self.pairwise(peer, phone, device, &key).await?;
                let encs = vec![
                    NodeBuilder::new("enc")
                        .attr("v", "2")
                        .attr("type", enc_type)
                        .bytes(ciphertext)
                        .build(),
                    skmsg.clone(),
                ];
                let stanza = group_stanza(group, &peer.jid(), &id, "text", Some(peer.name()), encs);
                self.deliver(phone, device, stanza)?;
            }
        }
        self.bump();
        Ok(id)
    }
}

/// `<message from=group participant=sender …>` with `encs`.
fn group_stanza(
    group: &Jid,
    sender: &Jid,
    id: &str,
    kind: &str,
    name: Option<&str>,
    encs: Vec<Node>,
) -> Node {
    let mut stanza = NodeBuilder::new("message")
        .attr("from", group.clone())
        .attr("participant", sender.clone())
        .attr("id", id.to_owned())
        .attr("t", now().to_string())
        .attr("type", kind.to_owned())
        .attr("addressing_mode", "pn");
    if let Some(name) = name {
        stanza = stanza.attr("notify", name.to_owned());
    }
    stanza.children(encs).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "79001000001";
    const BOB: &str = "79001000002";
    const CAROL: &str = "79001000003";
    const STRANGER: &str = "79001000004";

    fn team() -> Group {
        Group::new(
            "120363000000000001".into(),
            ALICE,
            "Team",
            &[BOB.to_owned()],
        )
    }

    fn on_whatsapp(phone: &str) -> bool {
        phone != "79009999999"
    }

    #[test]
    fn the_creator_is_super_admin_and_the_rest_members() {
        let group = team();
        assert_eq!(group.participants[ALICE], Role::SuperAdmin);
        assert_eq!(group.participants[BOB], Role::Member);
        assert_eq!(group.jid().to_string(), "120363000000000001@g.us");
        assert!(!group.invite.is_empty());
    }

    #[test]
    fn members_may_add_but_only_admins_remove_promote_and_demote() {
        let mut group = team();
        let added = group
            .change(
                BOB,
                Change::Add,
                &[CAROL.into(), "79009999999".into(), ALICE.into()],
                on_whatsapp,
            )
            .expect("a member may add");
        assert_eq!(
            added,
            [
                (CAROL.to_owned(), None),
                ("79009999999".to_owned(), Some(404)),
                (ALICE.to_owned(), Some(409)),
            ]
        );
        for change in [Change::Remove, Change::Promote, Change::Demote] {
            assert_eq!(
                group.change(BOB, change, &[CAROL.into()], on_whatsapp),
                Err(FORBIDDEN)
            );
        }
        assert_eq!(
            group.change(STRANGER, Change::Add, &[], on_whatsapp),
            Err(FORBIDDEN),
            "a stranger may not even add"
        );
        let promoted = group.change(ALICE, Change::Promote, &[BOB.into()], on_whatsapp);
        assert_eq!(promoted, Ok(vec![(BOB.to_owned(), None)]));
        assert_eq!(group.participants[BOB], Role::Admin);
        let removed = group.change(
            BOB,
            Change::Remove,
            &[CAROL.into(), ALICE.into()],
            on_whatsapp,
        );
        assert_eq!(
            removed,
            Ok(vec![
                (CAROL.to_owned(), None),
                (ALICE.to_owned(), Some(403))
            ])
        );
        assert!(!group.participants.contains_key(CAROL));
        let demoted = group.change(ALICE, Change::Demote, &[BOB.into()], on_whatsapp);
        assert_eq!(demoted, Ok(vec![(BOB.to_owned(), None)]));
        assert_eq!(group.participants[BOB], Role::Member);
    }

    #[test]
    fn a_locked_group_is_edited_by_admins_only() {
        let mut group = team();
        assert_eq!(group.editor(BOB), Ok(()));
        assert_eq!(group.admin(BOB), Err(FORBIDDEN));
        assert_eq!(group.editor(CAROL), Err(FORBIDDEN), "not a member");
        group.locked = true;
        assert_eq!(group.editor(BOB), Err(FORBIDDEN));
        assert_eq!(group.editor(ALICE), Ok(()));
    }

    #[test]
    fn the_group_node_is_what_the_library_reads() {
        use whatsapp_rust::wacore::iq::groups::GroupInfoResponse;
        use whatsapp_rust::wacore::protocol::ProtocolNode;
        let mut group = team();
        group.description = Some("About".into());
        group.description_id = Some("D1".into());
        group.announce = true;
        let parsed = GroupInfoResponse::try_from_node(&group.node()).expect("parses");
        assert_eq!(parsed.id.to_string(), "120363000000000001@g.us");
        assert_eq!(parsed.subject.as_str(), "Team");
        assert_eq!(parsed.description.as_deref(), Some("About"));
        assert_eq!(parsed.description_id.as_deref(), Some("D1"));
        assert!(parsed.is_announcement && !parsed.is_locked);
        assert_eq!(
            parsed.creator.map(|c| c.to_string()),
            Some(format!("{ALICE}@s.whatsapp.net"))
        );
        let roles: Vec<(String, bool)> = parsed
            .participants
            .iter()
            .map(|p| (p.jid.user.to_string(), p.participant_type.is_admin()))
            .collect();
        assert_eq!(roles, [(ALICE.to_owned(), true), (BOB.to_owned(), false)]);
    }
}
