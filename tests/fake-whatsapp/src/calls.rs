//! Calls: a user's phone rings an account, and the account's device rejects it.
//!
//! The offer goes to every linked device of the account as `<call from=… id=… t=…>
//! <offer call-id=… call-creator=…><audio enc="opus" rate="16000"/>[<video/>]</offer>
//! </call>`; a device answers it with `<call to=…><reject call-id=… call-creator=…/>
//! </call>`, which the server records for the test ([`crate::FakeWhatsApp::rejected_calls`])
//! and answers with an `<ack class="call">`.

use whatsapp_rust::NodeBuilder;
use whatsapp_rust::wacore_binary::node::Node;

use crate::peer::Peer;
use crate::server::{Inner, Reply, new_id};
use crate::wire::{Fallible, attr, now};

/// A call a device rejected.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedCall {
    pub call_id: String,
    /// Whom the reject went to (`to`).
    pub to: String,
    /// The call's creator, as the reject names it.
    pub creator: String,
}

impl Inner {
    /// `peer` calls the account `to`: its linked devices get the offer. Returns the
    /// call's id.
    pub(crate) fn call_from_user(&self, peer: &Peer, to: &str, video: bool) -> Fallible<String> {
        let call_id = new_id();
        let mut media = vec![
            NodeBuilder::new("audio")
                .attr("enc", "opus")
                .attr("rate", "16000")
                .build(),
        ];
        if video {
            media.push(NodeBuilder::new("video").build());
        }
        let stanza = NodeBuilder::new("call")
            .attr("from", peer.jid())
            .attr("id", new_id())
            .attr("t", now().to_string())
            .children([NodeBuilder::new("offer")
                .attr("call-id", call_id.clone())
                .attr("call-creator", peer.jid())
                .children(media)
                .build()])
            .build();
        for device in self.companions_of(to)? {
            self.deliver(to, device, stanza.clone())?;
        }
        Ok(call_id)
    }

    /// A `<call>` from a device: a reject is recorded; every call stanza is acknowledged.
    pub(crate) fn call(&self, n: usize, node: &Node) -> Vec<Reply> {
        let to = attr(node, "to").unwrap_or_default();
        if let Some(reject) = node.get_optional_child("reject") {
            let rejected = RejectedCall {
                call_id: attr(reject, "call-id").unwrap_or_default(),
                to: to.clone(),
                creator: attr(reject, "call-creator").unwrap_or_default(),
            };
            if rejected.call_id.is_empty() {
                self.problem(format!("connection {n}: a reject without a call id"));
            }
            self.state().rejected_calls.push(rejected);
            self.bump();
        }
        match attr(node, "id") {
            Some(id) => vec![Reply::Send(
                NodeBuilder::new("ack")
                    .attr("class", "call")
                    .attr("id", id)
                    .attr("from", to)
                    .build(),
            )],
            None => Vec::new(),
        }
    }
}
