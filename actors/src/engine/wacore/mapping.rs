//! Pure translations between whatsapp-rust's types and the engine seam's: addresses,
//! receipts, message content. Kept free of I/O so they are unit-tested directly.

use whatsapp_rust::Jid;
use whatsapp_rust::buffa::MessageField;
use whatsapp_rust::wacore::download::MediaType;
use whatsapp_rust::wacore::proto_helpers::MessageExt;
use whatsapp_rust::wacore::types::message::MessageSource;
use whatsapp_rust::wacore::types::presence::{ChatPresence, ChatPresenceMedia, ReceiptType};
use whatsapp_rust::wacore_binary::JidExt;
use whatsapp_rust::waproto::whatsapp as wa;

use crate::domain::{ContactCard, Location, MessageStatus, Poll, Presence, Typed};
use crate::engine::{EngineError, InboundCall, MessageChange, MessageRef, SendOptions};
use whatsapp_rust::wacore::types::call::{CallAction, IncomingCall};

/// The address a user of the gateway should see: the phone form
/// (`79001234567@s.whatsapp.net`) when WhatsApp gave one, without a device suffix.
/// WhatsApp increasingly addresses people by `@lid` (a privacy alias) and puts the phone
/// form in a second field; `alt` is that field.
pub fn phone_form(jid: &Jid, alt: Option<&Jid>) -> String {
    match alt {
        Some(alt) if jid.is_lid() && alt.is_pn() => alt.to_non_ad_string(),
        _ => jid.to_non_ad_string(),
    }
}

/// The chat and the sender of an inbound message, both in the phone form when known.
pub fn chat_and_sender(source: &MessageSource) -> (String, String) {
    let sender = phone_form(&source.sender, source.sender_alt.as_ref());
    let chat = if source.is_group {
        source.chat.to_non_ad_string()
    } else if source.is_from_me {
        // Our own message from another device (the phone): the chat is its recipient,
        // whose other form WhatsApp gives as `recipient_alt`.
        phone_form(&source.chat, source.recipient_alt.as_ref())
    } else {
        // In a direct chat the chat is the other person: the same alias rules apply.
        phone_form(&source.chat, source.sender_alt.as_ref())
    };
    (chat, sender)
}

/// An incoming call's offer as the seam carries it; `None` for the other call signals
/// (accepts, terminations, relay chatter) and for offers replayed from the offline
/// queue, whose call is over.
pub fn incoming_call(call: &IncomingCall) -> Option<InboundCall> {
    let CallAction::Offer {
        call_id,
        call_creator,
        caller_pn,
        is_video,
        group_jid,
        ..
    } = &call.action
    else {
        return None;
    };
    if call.offline {
        return None;
    }
    Some(InboundCall {
        call_id: call_id.clone(),
        from: phone_form(call_creator, caller_pn.as_ref()),
        peer: call.from.to_string(),
        creator: call_creator.to_string(),
        video: *is_video,
        group: group_jid.is_some(),
        timestamp: call.timestamp,
    })
}

/// A chat state as the gateway names it.
pub fn chat_state(state: ChatPresence, media: ChatPresenceMedia) -> Presence {
    match (state, media) {
        (ChatPresence::Composing, ChatPresenceMedia::Audio) => Presence::Recording,
        (ChatPresence::Composing, _) => Presence::Composing,
        (ChatPresence::Paused, _) => Presence::Paused,
    }
}

/// The status a receipt moves a sent message to; `None` for receipts that say nothing
/// about delivery (retries, history sync, our own devices' reads).
pub fn receipt_status(kind: &ReceiptType) -> Option<MessageStatus> {
    match kind {
        ReceiptType::Delivered => Some(MessageStatus::Delivered),
        ReceiptType::Read | ReceiptType::Played => Some(MessageStatus::Read),
        _ => None,
    }
}

/// Parses an address given to the gateway (`79001234567@s.whatsapp.net`, a group's
/// `…@g.us`, or bare digits).
///
/// Fails with `InvalidInput` when it is not a WhatsApp address.
pub fn parse_address(address: &str) -> Result<Jid, EngineError> {
    let address = address.trim();
    if !address.is_empty() && address.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Jid::pn(address));
    }
    address
        .parse::<Jid>()
        .ok()
        .filter(|jid| !jid.user.is_empty())
        .ok_or_else(|| EngineError::InvalidInput(format!("'{address}' is not a WhatsApp address")))
}

/// The kind WhatsApp files a MIME type under for upload.
pub fn upload_kind(mime: &str) -> MediaType {
    match mime.split('/').next().unwrap_or_default() {
        "image" => MediaType::Image,
        "video" => MediaType::Video,
        "audio" => MediaType::Audio,
        _ => MediaType::Document,
    }
}

/// Which attachment an inbound message carries, with what the gateway stores about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub kind: AttachmentKind,
    pub mime_type: String,
    pub file_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachmentKind {
    Image,
    Video,
    Audio,
    Document,
    Sticker,
}

/// What an inbound message says: its text (or caption) and its attachment. `None` for
/// messages with nothing a gateway user reads (reactions, protocol messages, polls…).
pub fn content(message: &wa::Message) -> Option<(Option<String>, Option<Attachment>)> {
    let base = message.get_base_message();
    let attachment = attachment(base);
    let text = base
        .text_content()
        .or_else(|| base.get_caption())
        .map(str::to_owned)
        .filter(|t| !t.is_empty());
    if text.is_none() && attachment.is_none() {
        return None;
    }
    Some((text, attachment))
}

fn attachment(base: &wa::Message) -> Option<Attachment> {
    let with = |kind, mime: Option<&String>, default: &str, file_name: Option<&String>| {
        Some(Attachment {
            kind,
            mime_type: mime
                .filter(|m| !m.is_empty())
                .cloned()
                .unwrap_or_else(|| default.to_owned()),
            file_name: file_name.cloned(),
        })
    };
    if let Some(m) = base.image_message.as_option() {
        return with(
            AttachmentKind::Image,
            m.mimetype.as_ref(),
            "image/jpeg",
            None,
        );
    }
    if let Some(m) = base.video_message.as_option() {
        return with(
            AttachmentKind::Video,
            m.mimetype.as_ref(),
            "video/mp4",
            None,
        );
    }
    if let Some(m) = base.audio_message.as_option() {
        return with(
            AttachmentKind::Audio,
            m.mimetype.as_ref(),
            "audio/ogg",
            None,
        );
    }
    if let Some(m) = base.document_message.as_option() {
        return with(
            AttachmentKind::Document,
            m.mimetype.as_ref(),
            "application/octet-stream",
            m.file_name.as_ref(),
        );
    }
    if let Some(m) = base.sticker_message.as_option() {
        return with(
            AttachmentKind::Sticker,
            m.mimetype.as_ref(),
            "image/webp",
            None,
        );
    }
    None
}

/// The context WhatsApp attaches to a message: the quote of a reply (the quoted id,
/// its author, its text to show) and the mentioned people. `None` when there is
/// neither. `own` is the account's address, the author of its own messages.
pub fn outbound_context(options: &SendOptions, own: &str) -> Option<wa::ContextInfo> {
    if options.reply_to.is_none() && options.mentions.is_empty() {
        return None;
    }
    let mut context = wa::ContextInfo {
        mentioned_jid: options.mentions.clone(),
        ..Default::default()
    };
    if let Some(quote) = &options.reply_to {
        context.stanza_id = Some(quote.message_id.clone());
        context.participant = Some(author(quote, own));
        context.quoted_message = MessageField::some(wa::Message {
            conversation: Some(quote.text.clone().unwrap_or_default()),
            ..Default::default()
        });
    }
    Some(context)
}

fn author(target: &MessageRef, own: &str) -> String {
    if target.from_me {
        own.to_owned()
    } else {
        target.author.clone()
    }
}

/// The key a reaction names its target by. In a group the author is named too.
pub fn target_key(chat: &Jid, target: &MessageRef, own: &str) -> wa::MessageKey {
    wa::MessageKey {
        remote_jid: Some(chat.to_non_ad_string()),
        from_me: Some(target.from_me),
        id: Some(target.message_id.clone()),
        participant: chat.is_group().then(|| author(target, own)),
    }
}

/// What an inbound message refers to: the id of the message it replies to and the
/// people it mentions.
pub fn references(message: &wa::Message) -> (Option<String>, Vec<String>) {
    let base = message.get_base_message();
    let Some(context) = context_info(base) else {
        return (None, Vec::new());
    };
    let quoted = context.stanza_id.clone().filter(|id| !id.is_empty());
    let mentions = context
        .mentioned_jid
        .iter()
        .map(|jid| {
            jid.parse::<Jid>()
                .map_or_else(|_| jid.clone(), |j| j.to_non_ad_string())
        })
        .collect();
    (quoted, mentions)
}

fn context_info(base: &wa::Message) -> Option<&wa::ContextInfo> {
    macro_rules! first {
        ($($field:ident),+) => {
            None$(.or_else(|| base.$field.as_option().and_then(|m| m.context_info.as_option())))+
        };
    }
    first!(
        extended_text_message,
        image_message,
        video_message,
        audio_message,
        document_message,
        sticker_message
    )
}

/// A reaction: the id of the message reacted to and the emoji (empty when taken back).
pub fn reaction(message: &wa::Message) -> Option<(String, String)> {
    let reaction = message.get_base_message().reaction_message.as_option()?;
    let target = reaction.key.as_option()?.id.clone()?;
    Some((target, reaction.text.clone().unwrap_or_default()))
}

/// A location, contact cards or a poll, with the poll's secret (the key its votes
/// are encrypted with). None for any other message.
pub fn typed(message: &wa::Message) -> Option<(Typed, Option<Vec<u8>>)> {
    let secret = message
        .message_context_info
        .as_option()
        .and_then(|c| c.message_secret.clone());
    let base = message.get_base_message();
    if let Some(l) = base.location_message.as_option() {
        let location = Location {
            latitude: l.degrees_latitude.unwrap_or_default(),
            longitude: l.degrees_longitude.unwrap_or_default(),
            name: l.name.clone().filter(|n| !n.is_empty()),
            address: l.address.clone().filter(|a| !a.is_empty()),
        };
        return Some((
            Typed {
                location: Some(location),
                ..Typed::default()
            },
            None,
        ));
    }
    let cards: Vec<&wa::message::ContactMessage> = match (
        base.contact_message.as_option(),
        base.contacts_array_message.as_option(),
    ) {
        (Some(one), _) => vec![one],
        (None, Some(many)) => many.contacts.iter().collect(),
        (None, None) => Vec::new(),
    };
    if !cards.is_empty() {
        let contacts = cards.into_iter().map(card_of).collect();
        return Some((
            Typed {
                contacts,
                ..Typed::default()
            },
            None,
        ));
    }
    let poll = base
        .poll_creation_message
        .as_option()
        .or(base.poll_creation_message_v2.as_option())
        .or(base.poll_creation_message_v3.as_option())?;
    let poll = Poll {
        question: poll.name.clone().unwrap_or_default(),
        options: poll
            .options
            .iter()
            .filter_map(|o| o.option_name.clone())
            .collect(),
        multiple_answers: poll.selectable_options_count != Some(1),
        votes: Vec::new(),
    };
    Some((
        Typed {
            poll: Some(poll),
            ..Typed::default()
        },
        secret,
    ))
}

/// A contact card read back from its vCard: the shown name (else the vCard's `FN`)
/// and every `TEL`'s number (`waid` when given).
fn card_of(card: &wa::message::ContactMessage) -> ContactCard {
    let vcard = card.vcard.as_deref().unwrap_or_default();
    let mut name = card.display_name.clone().filter(|n| !n.is_empty());
    let mut phones = Vec::new();
    for line in vcard.lines() {
        let line = line.trim();
        if let Some(full) = line.strip_prefix("FN:") {
            name.get_or_insert_with(|| full.to_owned());
        } else if line.starts_with("TEL") {
            let waid = line
                .split(';')
                .find_map(|part| part.split(':').next()?.strip_prefix("waid="));
            let number = match waid {
                Some(id) => id.to_owned(),
                None => line.rsplit(':').next().unwrap_or_default().to_owned(),
            };
            let digits: String = number.chars().filter(char::is_ascii_digit).collect();
            if !digits.is_empty() {
                phones.push(digits);
            }
        }
    }
    ContactCard {
        name: name.unwrap_or_default(),
        phones,
    }
}

/// A vCard of one contact card, as WhatsApp clients write them.
pub fn vcard(card: &ContactCard) -> String {
    let mut v = format!("BEGIN:VCARD\nVERSION:3.0\nFN:{}\n", card.name);
    for phone in &card.phones {
        let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
        v.push_str(&format!("TEL;type=CELL;waid={digits}:+{digits}\n"));
    }
    v.push_str("END:VCARD");
    v
}

/// The message of a location, contact cards or a poll; a poll carries `poll_secret`,
/// the key its votes are sealed with (none when it is not a poll).
pub fn outbound_typed(typed: &Typed, poll_secret: &[u8]) -> Option<wa::Message> {
    if let Some(poll) = &typed.poll {
        return Some(outbound_poll(poll, poll_secret));
    }
    if let Some(l) = &typed.location {
        return Some(wa::Message {
            location_message: MessageField::some(wa::message::LocationMessage {
                degrees_latitude: Some(l.latitude),
                degrees_longitude: Some(l.longitude),
                name: l.name.clone(),
                address: l.address.clone(),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let card = |c: &ContactCard| wa::message::ContactMessage {
        display_name: Some(c.name.clone()),
        vcard: Some(vcard(c)),
        ..Default::default()
    };
    match typed.contacts.as_slice() {
        [] => None,
        [one] => Some(wa::Message {
            contact_message: MessageField::some(card(one)),
            ..Default::default()
        }),
        many => Some(wa::Message {
            contacts_array_message: MessageField::some(wa::message::ContactsArrayMessage {
                display_name: Some(format!("{} contacts", many.len())),
                contacts: many.iter().map(card).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// A poll as WhatsApp Web creates one: a single-answer poll is a v3 creation message,
/// a multiple-answer one a v1 allowing every option, each of text options, with the
/// secret its votes are sealed with in the message's context info.
fn outbound_poll(poll: &Poll, secret: &[u8]) -> wa::Message {
    let selectable = if poll.multiple_answers {
        poll.options.len() as u32
    } else {
        1
    };
    let creation = wa::message::PollCreationMessage {
        name: Some(poll.question.clone()),
        options: poll
            .options
            .iter()
            .map(|name| wa::message::poll_creation_message::Option {
                option_name: Some(name.clone()),
                option_hash: None,
            })
            .collect(),
        selectable_options_count: Some(selectable),
        poll_content_type: Some(wa::message::PollContentType::TEXT),
        ..Default::default()
    };
    let mut message = if poll.multiple_answers {
        wa::Message {
            poll_creation_message: MessageField::some(creation),
            ..Default::default()
        }
    } else {
        wa::Message {
            poll_creation_message_v3: MessageField::some(creation),
            ..Default::default()
        }
    };
    message.message_context_info = MessageField::some(wa::MessageContextInfo {
        message_secret: Some(secret.to_vec()),
        ..Default::default()
    });
    message
}

/// A vote: the poll's id and the sealed choice.
pub fn vote(message: &wa::Message) -> Option<(String, Vec<u8>, Vec<u8>)> {
    let update = message.get_base_message().poll_update_message.as_option()?;
    let poll_id = update.poll_creation_message_key.as_option()?.id.clone()?;
    let vote = update.vote.as_option()?;
    Some((poll_id, vote.enc_payload.clone()?, vote.enc_iv.clone()?))
}

/// An edit or a deletion for everyone: the id of the message changed and what became
/// of it. Edits sent through the message-secret path (channels, community
/// announcements) are not read.
pub fn change(message: &wa::Message) -> Option<(String, MessageChange)> {
    use wa::message::protocol_message::Type;
    let protocol = message.get_base_message().protocol_message.as_option()?;
    let target = protocol.key.as_option()?.id.clone()?;
    match protocol.r#type? {
        Type::Revoke => Some((target, MessageChange::Revoked)),
        Type::MessageEdit => {
            let edited = protocol.edited_message.as_option()?;
            let text = edited.text_content().or_else(|| edited.get_caption())?;
            Some((target, MessageChange::Edited(text.to_owned())))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        s.parse().expect("jid")
    }

    #[test]
    fn the_phone_form_wins_over_a_lid() {
        let lid = jid("123456789012345@lid");
        let pn = jid("79001234567@s.whatsapp.net");
        assert_eq!(phone_form(&lid, Some(&pn)), "79001234567@s.whatsapp.net");
        assert_eq!(phone_form(&lid, None), "123456789012345@lid");
        assert_eq!(phone_form(&pn, None), "79001234567@s.whatsapp.net");
        // A device suffix is not part of the person's address.
        assert_eq!(
            phone_form(&jid("79001234567:12@s.whatsapp.net"), None),
            "79001234567@s.whatsapp.net"
        );
    }

    #[test]
    fn groups_keep_their_address_and_name_the_member() {
        let source = MessageSource {
            chat: jid("120363000000000000@g.us"),
            sender: jid("123456789012345@lid"),
            is_group: true,
            sender_alt: Some(jid("79001234567@s.whatsapp.net")),
            ..Default::default()
        };
        assert_eq!(
            chat_and_sender(&source),
            (
                "120363000000000000@g.us".to_owned(),
                "79001234567@s.whatsapp.net".to_owned()
            )
        );
        let direct = MessageSource {
            chat: jid("123456789012345@lid"),
            sender: jid("123456789012345@lid"),
            sender_alt: Some(jid("79001234567@s.whatsapp.net")),
            ..Default::default()
        };
        let (chat, sender) = chat_and_sender(&direct);
        assert_eq!(chat, "79001234567@s.whatsapp.net");
        assert_eq!(sender, chat);

        // Sent from our own phone: the chat is the recipient, not us.
        let own = MessageSource {
            chat: jid("222222222222222@lid"),
            sender: jid("79000000001@s.whatsapp.net"),
            is_from_me: true,
            sender_alt: Some(jid("111111111111111@lid")),
            recipient: Some(jid("222222222222222@lid")),
            recipient_alt: Some(jid("79005550001@s.whatsapp.net")),
            ..Default::default()
        };
        assert_eq!(
            chat_and_sender(&own),
            (
                "79005550001@s.whatsapp.net".to_owned(),
                "79000000001@s.whatsapp.net".to_owned()
            )
        );
    }

    #[test]
    fn receipts_map_to_delivery_states() {
        assert_eq!(
            receipt_status(&ReceiptType::Delivered),
            Some(MessageStatus::Delivered)
        );
        assert_eq!(
            receipt_status(&ReceiptType::Read),
            Some(MessageStatus::Read)
        );
        assert_eq!(
            receipt_status(&ReceiptType::Played),
            Some(MessageStatus::Read)
        );
        assert_eq!(receipt_status(&ReceiptType::Retry), None);
        assert_eq!(receipt_status(&ReceiptType::ReadSelf), None);
    }

    #[test]
    fn addresses_parse_or_are_refused() {
        assert_eq!(
            parse_address("79001234567").map(|j| j.to_string()),
            Ok("79001234567@s.whatsapp.net".to_owned())
        );
        assert_eq!(
            parse_address("120363000000000000@g.us").map(|j| j.to_string()),
            Ok("120363000000000000@g.us".to_owned())
        );
        for bad in ["", "not a jid", "@s.whatsapp.net"] {
            assert!(
                matches!(parse_address(bad), Err(EngineError::InvalidInput(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn content_reads_text_captions_and_attachments() {
        let text = wa::Message {
            conversation: Some("hello".into()),
            ..Default::default()
        };
        assert_eq!(content(&text), Some((Some("hello".into()), None)));

        let image = wa::Message {
            image_message: MessageField::some(wa::message::ImageMessage {
                caption: Some("look".into()),
                mimetype: Some("image/png".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            content(&image),
            Some((
                Some("look".into()),
                Some(Attachment {
                    kind: AttachmentKind::Image,
                    mime_type: "image/png".into(),
                    file_name: None
                })
            ))
        );

        let document = wa::Message {
            document_message: MessageField::some(wa::message::DocumentMessage {
                file_name: Some("report.pdf".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (_, attachment) = content(&document).expect("document");
        let attachment = attachment.expect("attachment");
        assert_eq!(attachment.mime_type, "application/octet-stream");
        assert_eq!(attachment.file_name.as_deref(), Some("report.pdf"));

        assert_eq!(content(&wa::Message::default()), None);
    }

    #[test]
    fn uploads_are_filed_by_mime_family() {
        assert!(matches!(upload_kind("image/png"), MediaType::Image));
        assert!(matches!(upload_kind("video/mp4"), MediaType::Video));
        assert!(matches!(upload_kind("audio/ogg"), MediaType::Audio));
        assert!(matches!(
            upload_kind("application/pdf"),
            MediaType::Document
        ));
    }

    fn quote(from_me: bool) -> MessageRef {
        MessageRef {
            message_id: "Q1".into(),
            from_me,
            author: "79005550001@s.whatsapp.net".into(),
            text: Some("Lunch?".into()),
        }
    }

    #[test]
    fn a_reply_quotes_its_message_and_names_the_mentioned() {
        let own = "79001234567@s.whatsapp.net";
        assert_eq!(outbound_context(&SendOptions::default(), own), None);
        let options = SendOptions {
            reply_to: Some(quote(false)),
            mentions: vec!["79005550001@s.whatsapp.net".into()],
            message_id: None,
            status: None,
        };
        let context = outbound_context(&options, own).expect("context");
        assert_eq!(context.stanza_id.as_deref(), Some("Q1"));
        assert_eq!(
            context.participant.as_deref(),
            Some("79005550001@s.whatsapp.net")
        );
        assert_eq!(context.mentioned_jid, ["79005550001@s.whatsapp.net"]);
        assert_eq!(
            context
                .quoted_message
                .as_option()
                .and_then(|m| m.conversation.as_deref()),
            Some("Lunch?")
        );
        // Our own message is quoted as written by the account.
        let options = SendOptions {
            reply_to: Some(quote(true)),
            mentions: Vec::new(),
            message_id: None,
            status: None,
        };
        let context = outbound_context(&options, own).expect("context");
        assert_eq!(context.participant.as_deref(), Some(own));

        // Read back from an inbound message.
        let mut message = wa::Message {
            conversation: Some("Yes".into()),
            ..Default::default()
        };
        assert_eq!(references(&message), (None, Vec::new()));
        use whatsapp_rust::wacore::proto_helpers::MessageExt as _;
        message.set_context_info(context);
        assert_eq!(references(&message), (Some("Q1".to_owned()), Vec::new()));
    }

    #[test]
    fn reactions_name_their_target_by_key() {
        let own = "79001234567@s.whatsapp.net";
        let dm = jid("79005550001@s.whatsapp.net");
        let key = target_key(&dm, &quote(false), own);
        assert_eq!(key.id.as_deref(), Some("Q1"));
        assert_eq!(key.from_me, Some(false));
        assert_eq!(key.participant, None, "a direct chat names no participant");
        let group = jid("120363000000000000@g.us");
        let key = target_key(&group, &quote(true), own);
        assert_eq!(key.participant.as_deref(), Some(own));

        let reacted = wa::Message {
            reaction_message: MessageField::some(wa::message::ReactionMessage {
                key: MessageField::some(key),
                text: Some("👍".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(reaction(&reacted), Some(("Q1".to_owned(), "👍".to_owned())));
        assert_eq!(
            content(&reacted),
            None,
            "a reaction is no message of its own"
        );
    }

    #[test]
    fn edits_and_revokes_name_their_target() {
        use wa::message::protocol_message::Type;
        let protocol = |kind, edited: Option<wa::Message>| wa::Message {
            protocol_message: MessageField::some(wa::message::ProtocolMessage {
                key: MessageField::some(wa::MessageKey {
                    id: Some("Q1".into()),
                    ..Default::default()
                }),
                r#type: Some(kind),
                edited_message: edited.map(MessageField::some).unwrap_or_default(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = wa::Message {
            conversation: Some("fixed".into()),
            ..Default::default()
        };
        let edit = protocol(Type::MessageEdit, Some(text));
        assert_eq!(
            change(&edit),
            Some(("Q1".to_owned(), MessageChange::Edited("fixed".into())))
        );
        assert_eq!(content(&edit), None, "an edit is no message of its own");
        // The legacy form wraps the protocol message in `editedMessage`.
        let wrapped = wa::Message {
            edited_message: MessageField::some(wa::message::FutureProofMessage {
                message: MessageField::some(edit),
            }),
            ..Default::default()
        };
        assert!(matches!(
            change(&wrapped),
            Some((_, MessageChange::Edited(_)))
        ));
        let revoke = protocol(Type::Revoke, None);
        assert_eq!(
            change(&revoke),
            Some(("Q1".to_owned(), MessageChange::Revoked))
        );
        assert_eq!(
            change(&protocol(Type::MessageEdit, None)),
            None,
            "no new text"
        );
        assert_eq!(change(&protocol(Type::EphemeralSetting, None)), None);
    }

    #[test]
    fn a_poll_goes_with_its_secret_and_reads_back() {
        let poll = |multiple_answers| Typed {
            poll: Some(Poll {
                question: "Lunch?".into(),
                options: vec!["12:00".into(), "13:00".into(), "14:00".into()],
                multiple_answers,
                votes: Vec::new(),
            }),
            ..Typed::default()
        };
        let secret = [7u8; 32];
        let single = outbound_typed(&poll(false), &secret).expect("a message");
        let creation = single
            .poll_creation_message_v3
            .as_option()
            .expect("single answer: v3");
        assert_eq!(creation.selectable_options_count, Some(1));
        assert_eq!(
            typed(&single),
            Some((poll(false), Some(secret.to_vec()))),
            "read back as sent, secret included"
        );
        let multiple = outbound_typed(&poll(true), &secret).expect("a message");
        let creation = multiple
            .poll_creation_message
            .as_option()
            .expect("multiple answers: v1");
        assert_eq!(creation.selectable_options_count, Some(3));
        assert_eq!(typed(&multiple), Some((poll(true), Some(secret.to_vec()))));
    }
}
