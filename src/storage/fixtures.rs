//! What the storage backends' own tests write: a message and an event of instance `i`.

use chrono::Utc;
use wagate_actors::domain::event::Connected;
use wagate_actors::domain::{Event, InstanceEvent, Message, MessageStatus, new_id};

/// A sent text message `wa_id` of instance `i`.
pub(crate) fn message(wa_id: &str) -> Message {
    let now = Utc::now();
    Message {
        id: new_id(),
        instance_id: "i".into(),
        message_id: wa_id.into(),
        remote_jid: "79001234567@s.whatsapp.net".into(),
        from_me: true,
        message_type: "text".into(),
        content: Some(wa_id.into()),
        has_media: false,
        media_url: None,
        caption: None,
        mime_type: None,
        file_name: None,
        media_path: None,
        media_size: None,
        status: MessageStatus::Sent,
        push_name: None,
        metadata: serde_json::json!({}),
        timestamp: now,
        created_at: now,
        updated_at: now,
        status_updated_at: None,
        quoted_message_id: None,
        mentions: Vec::new(),
        reactions: Vec::new(),
        edited_at: None,
        revoked: false,
        typed: Default::default(),
        message_secret: None,
    }
}

/// An event of instance `i`.
pub(crate) fn event() -> InstanceEvent {
    InstanceEvent::new(
        "i",
        Event::Connected(Connected {
            phone: "1".into(),
            push_name: None,
        }),
    )
}
