//! Profiles and blocklists: what an account tells WhatsApp about itself, and whom it
//! blocks.
//!
//! - The push name comes as `<presence name=…>`; the "about" text as an IQ of
//!   namespace `status` (`<status>text</status>`), and others read it through usync's
//!   `status` protocol.
//! - A picture is set with `<iq xmlns="w:profile:picture" type="set"><picture
//!   type="image">bytes</picture></iq>` (no child removes it) and read with a `get`
//!   whose `target` names whose; the answer's `url` points into the media server.
//! - The blocklist is read with `<iq xmlns="blocklist" type="get">` and changed with
//!   `<item jid=… action="block|unblock" [pn_jid=…]>`, as WhatsApp has it: by LID, the
//!   phone number alongside on a block.

use std::collections::BTreeSet;

use whatsapp_rust::Jid;
use whatsapp_rust::NodeBuilder;
use whatsapp_rust::wacore_binary::node::Node;

use crate::server::Inner;
use crate::wire::{attr, bytes, error, result, text};

/// What the server keeps of one phone number's profile.
#[derive(Debug, Clone, Default)]
pub(crate) struct Profile {
    pub(crate) push_name: Option<String>,
    pub(crate) about: Option<String>,
    /// The picture's id and bytes.
    pub(crate) picture: Option<(String, Vec<u8>)>,
    /// The addresses blocked, as the client named them (`…@lid`).
    pub(crate) blocked: BTreeSet<String>,
}

impl Inner {
    /// The answer to a profile or blocklist IQ from the device on connection `n`; `None`
    /// for one of these namespaces the server does not know.
    pub(crate) fn profile_iq(
        &self,
        n: usize,
        kind: &str,
        xmlns: &str,
        child: &str,
        id: &str,
        node: &Node,
    ) -> Option<Node> {
        let Some((phone, _)) = self.device_of(n) else {
            return Some(error(id, 401, "not-authorized"));
        };
        Some(match (kind, xmlns, child) {
            ("get", "blocklist", _) => self.blocklist(&phone, id),
            ("set", "blocklist", _) => self.change_blocklist(&phone, id, node),
            ("set", "status", "status") => self.set_about(&phone, id, node),
            ("set", "w:profile:picture", _) => self.set_picture(&phone, id, node),
            ("get", "w:profile:picture", "picture") => self.get_picture(&phone, id, node),
            _ => return None,
        })
    }

    /// `phone` takes `picture` as its profile picture, or none; returns its new id.
    pub(crate) fn keep_picture(&self, phone: &str, picture: Option<Vec<u8>>) -> Option<String> {
        let picture_id = {
            let mut state = self.state();
            let next = state.next_picture;
            state.next_picture += 1;
            let profile = state.profiles.entry(phone.to_owned()).or_default();
            profile.picture = picture.map(|bytes| (next.to_string(), bytes));
            profile.picture.as_ref().map(|(id, _)| id.clone())
        };
        self.bump();
        picture_id
    }

    /// The push name the device on `phone`'s account announced.
    pub(crate) fn push_name_announced(&self, phone: &str, name: &str) {
        self.state()
            .profiles
            .entry(phone.to_owned())
            .or_default()
            .push_name = Some(name.to_owned());
        self.bump();
    }

    /// `<iq xmlns="status" type="set"><status>text</status></iq>` from `phone`.
    pub(crate) fn set_about(&self, phone: &str, id: &str, node: &Node) -> Node {
        let about = node
            .get_optional_child("status")
            .and_then(text)
            .unwrap_or_default();
        self.state()
            .profiles
            .entry(phone.to_owned())
            .or_default()
            .about = Some(about).filter(|a| !a.is_empty());
        self.bump();
        result(id).build()
    }

    /// `<iq xmlns="w:profile:picture" type="set">` from `phone`: a new picture, or none.
    pub(crate) fn set_picture(&self, phone: &str, id: &str, node: &Node) -> Node {
        let picture = node
            .get_optional_child("picture")
            .and_then(bytes)
            .map(<[u8]>::to_vec);
        let answer = result(id);
        match self.keep_picture(phone, picture) {
            Some(picture_id) => answer
                .children([NodeBuilder::new("picture").attr("id", picture_id).build()])
                .build(),
            None => answer.build(),
        }
    }

    /// `<iq xmlns="w:profile:picture" type="get" target=…>` from `phone`: the target's
    /// picture, unless they have none or block `phone`.
    pub(crate) fn get_picture(&self, phone: &str, id: &str, node: &Node) -> Node {
        let Some(target) = attr(node, "target").and_then(|t| t.parse::<Jid>().ok()) else {
            return error(id, 400, "bad-request");
        };
        let target = self.phone_of(&target);
        let profile = self.state().profiles.get(&target).cloned();
        let picture = profile.and_then(|p| {
            let blocks_asker = p.blocked.iter().any(|b| self.same_person(b, phone));
            p.picture.filter(|_| !blocks_asker)
        });
        let picture = match picture {
            Some((picture_id, bytes)) => {
                let path = format!("/v/fake/picture-{target}-{picture_id}");
                self.blobs.put(path.clone(), bytes);
                NodeBuilder::new("picture")
                    .attr("id", picture_id)
                    .attr("type", "image")
                    .attr("url", format!("https://{}{path}", crate::MEDIA_HOST))
                    .attr("direct_path", path)
                    .build()
            }
            None => NodeBuilder::new("picture")
                .children([NodeBuilder::new("error")
                    .attr("code", "404")
                    .attr("text", "item-not-found")
                    .build()])
                .build(),
        };
        result(id).children([picture]).build()
    }

    /// `<iq xmlns="blocklist" type="get">` from `phone`.
    pub(crate) fn blocklist(&self, phone: &str, id: &str) -> Node {
        let blocked = self
            .state()
            .profiles
            .get(phone)
            .map(|p| p.blocked.clone())
            .unwrap_or_default();
        let items = blocked
            .into_iter()
            .map(|jid| NodeBuilder::new("item").attr("jid", jid).build());
        result(id)
            .children([NodeBuilder::new("list").children(items).build()])
            .build()
    }

    /// `<iq xmlns="blocklist" type="set"><item jid=… action=…/></iq>` from `phone`.
    pub(crate) fn change_blocklist(&self, phone: &str, id: &str, node: &Node) -> Node {
        let Some(item) = node.get_optional_child("item") else {
            return error(id, 400, "bad-request");
        };
        let (Some(jid), Some(action)) = (attr(item, "jid"), attr(item, "action")) else {
            return error(id, 400, "bad-request");
        };
        {
            let mut state = self.state();
            let blocked = &mut state.profiles.entry(phone.to_owned()).or_default().blocked;
            match action.as_str() {
                "block" => {
                    blocked.insert(jid);
                }
                "unblock" => {
                    blocked.remove(&jid);
                }
                _ => return error(id, 400, "bad-request"),
            }
        }
        self.bump();
        result(id).build()
    }

    /// Whether the address `blocked` (as stored) is `phone`'s.
    fn same_person(&self, blocked: &str, phone: &str) -> bool {
        blocked
            .parse::<Jid>()
            .is_ok_and(|jid| self.phone_of(&jid) == phone)
    }
}
