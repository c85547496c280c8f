//! Presence and chat states: who is online, who follows whom, and "typing…".
//!
//! A device announces itself with `<presence type="available|unavailable">`, follows
//! someone with `<presence type="subscribe" to=…>` (answered at once with where they
//! are) and types with `<chatstate to=…><composing/></chatstate>`. The server carries
//! each to whoever it concerns: a user's phone keeps it ([`Peer::next_presence`]), an
//! account's linked devices get the stanza WhatsApp would send them.

use whatsapp_rust::NodeBuilder;
use whatsapp_rust::wacore_binary::node::Node;
use whatsapp_rust::{Jid, Server};

use crate::peer::{Peer, ReceivedPresence};
use crate::server::{Inner, Reply};
use crate::wire::{Fallible, attr, now};

impl Inner {
    /// A presence stanza from the device on connection `n`.
    pub(crate) fn presence(&self, n: usize, node: &Node) -> Vec<Reply> {
        let Some((phone, _)) = self.device_of(n) else {
            self.problem(format!("connection {n}: a presence before login"));
            return Vec::new();
        };
        match attr(node, "type").as_deref() {
            Some("available") => self.announce(&phone, true),
            Some("unavailable") => self.announce(&phone, false),
            Some("subscribe") => {
                let Some(watched) = attr(node, "to").and_then(|to| to.parse::<Jid>().ok()) else {
                    self.problem(format!("connection {n}: a subscription to no one"));
                    return Vec::new();
                };
                let watched = self.phone_of(&watched);
                let now = self.subscribe(&phone, &watched);
                return vec![Reply::Send(now)];
            }
            Some("unsubscribe") => {
                if let Some(watched) = attr(node, "to").and_then(|to| to.parse::<Jid>().ok()) {
                    let watched = self.phone_of(&watched);
                    if let Some(followers) = self.state().presence_subscribers.get_mut(&watched) {
                        followers.remove(&phone);
                    }
                }
            }
            // A push name announcement (`<presence name=…>`) says nothing of presence.
            _ => {}
        }
        Vec::new()
    }

    /// A chat state from the device on connection `n`: its recipient sees it.
    pub(crate) fn chatstate(&self, n: usize, node: &Node) -> Vec<Reply> {
        let Some((phone, _)) = self.device_of(n) else {
            self.problem(format!("connection {n}: a chat state before login"));
            return Vec::new();
        };
        let Some(to) = attr(node, "to").and_then(|to| to.parse::<Jid>().ok()) else {
            self.problem(format!("connection {n}: a chat state to no one"));
            return Vec::new();
        };
        let Some(child) = node.children().and_then(|c| c.first()) else {
            self.problem(format!("connection {n}: an empty chat state"));
            return Vec::new();
        };
        let state = match (child.tag.as_ref(), attr(child, "media").as_deref()) {
            ("composing", Some("audio")) => "recording",
            ("composing", _) => "composing",
            _ => "paused",
        };
        if let Some(peer) = self.peer(&to) {
            peer.keep_presence(ReceivedPresence {
                from: Jid::pn(&phone),
                state: state.to_owned(),
            });
        }
        self.bump();
        Vec::new()
    }

    /// `phone` comes online or goes offline; its followers hear of it.
    pub(crate) fn presence_from_user(&self, phone: &str, available: bool) {
        self.announce(phone, available);
    }

    /// The user `peer` types to the account `to`: its linked devices see it.
    pub(crate) fn chatstate_from_user(&self, peer: &Peer, to: &str, state: &str) -> Fallible<()> {
        let child = match state {
            "composing" => NodeBuilder::new("composing").build(),
            "recording" => NodeBuilder::new("composing").attr("media", "audio").build(),
            "paused" => NodeBuilder::new("paused").build(),
            other => return Err(format!("no chat state {other}")),
        };
        let stanza = NodeBuilder::new("chatstate")
            .attr("from", peer.jid())
            .children([child])
            .build();
        for device in self.companions_of(to)? {
            self.deliver(to, device, stanza.clone())?;
        }
        Ok(())
    }

    /// `follower` follows `phone`'s presence; the stanza telling where `phone` is now.
    pub(crate) fn subscribe(&self, follower: &str, phone: &str) -> Node {
        let now = {
            let mut state = self.state();
            state
                .presence_subscribers
                .entry(phone.to_owned())
                .or_default()
                .insert(follower.to_owned());
            state.presences.get(phone).copied()
        };
        self.bump();
        presence_stanza(phone, now.unwrap_or((false, 0)))
    }

    fn announce(&self, phone: &str, available: bool) {
        let at = now();
        let followers = {
            let mut state = self.state();
            state.presences.insert(phone.to_owned(), (available, at));
            state
                .presence_subscribers
                .get(phone)
                .cloned()
                .unwrap_or_default()
        };
        let stanza = presence_stanza(phone, (available, at));
        for follower in followers {
            match self.companions_of(&follower) {
                // An account: its linked devices get the stanza.
                Ok(devices) if !devices.is_empty() => {
                    for device in devices {
                        if let Err(why) = self.deliver(&follower, device, stanza.clone()) {
                            self.problem(why);
                        }
                    }
                }
                // A user: its phone keeps it.
                _ => {
                    if let Some(peer) = self.peer(&Jid::pn(&follower)) {
                        peer.keep_presence(ReceivedPresence {
                            from: Jid::pn(phone),
                            state: if available {
                                "available"
                            } else {
                                "unavailable"
                            }
                            .to_owned(),
                        });
                    }
                }
            }
        }
        self.bump();
    }

    /// The phone number behind an address (an account's LID included).
    fn phone_of(&self, jid: &Jid) -> String {
        if jid.server == Server::Lid
            && let Some(peer) = self.peer(jid)
        {
            return peer.phone();
        }
        jid.user.to_string()
    }
}

/// `<presence from=… type=available|unavailable [last=…]>`.
fn presence_stanza(phone: &str, (available, at): (bool, u64)) -> Node {
    let mut stanza = NodeBuilder::new("presence")
        .attr("from", Jid::pn(phone))
        .attr(
            "type",
            if available {
                "available"
            } else {
                "unavailable"
            },
        );
    if !available && at > 0 {
        stanza = stanza.attr("last", at.to_string());
    }
    stanza.build()
}
