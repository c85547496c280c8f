//! Sending a location, contact cards or a poll. The instance is checked to be within
//! its limits, messages included, before anything is sent.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use wagate_actors::domain::{ContactCard, Location, Poll, Typed};

use super::send::Sent;
use crate::gateway::messaging::Extras;
use crate::http::access::SendingInstance;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{AppJson, chat_address};
use crate::http::openapi::{
    NO_INSTANCE_NUMBER_OR_QUOTE, NOT_CONNECTED, NOT_IN_GROUP, OVER_LIMIT, PACED,
};
use crate::http::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SendLocation {
    /// A phone number or a WhatsApp address (person or group).
    #[schema(schema_with = crate::http::openapi::chat_address_schema)]
    phone: String,
    #[schema(minimum = -90, maximum = 90, example = 55.7558)]
    latitude: f64,
    #[schema(minimum = -180, maximum = 180, example = 37.6173)]
    longitude: f64,
    /// The place's name: not blank, at most 255 characters.
    #[schema(
        example = "Красная площадь",
        max_length = 255,
        pattern = r"[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    name: Option<String>,
    /// Its address: not blank, at most 255 characters.
    #[schema(
        max_length = 255,
        pattern = r"[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    address: Option<String>,
    /// The WhatsApp id of a message of this chat to reply to.
    #[serde(rename = "replyTo")]
    reply_to: Option<String>,
    /// Milliseconds (at most 20,000) of "typing…" in the chat before the message
    /// goes; the answer comes once it went.
    #[schema(maximum = 20000)]
    delay: Option<u64>,
}

/// Sends a location (`messageType` `location`; the history and events carry
/// `location`).
#[utoipa::path(
    post,
    path = "/api/whatsapp/{instanceId}/send-location",
    tag = "messages",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body = SendLocation,
    responses(
        (status = 200, description = "Sent", body = Sent),
        (status = 202, description = PACED, body = Sent),
        (status = 400, description = "A missing or invalid phone, or coordinates off the globe (`validation_error`)", body = ErrorBody),
        (status = 404, description = NO_INSTANCE_NUMBER_OR_QUOTE, body = ErrorBody),
        (status = 403, description = NOT_IN_GROUP, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
pub(super) async fn send_location(
    State(state): State<AppState>,
    SendingInstance { instance, .. }: SendingInstance,
    AppJson(body): AppJson<SendLocation>,
) -> ApiResult<(StatusCode, AppJson<Sent>)> {
    let to = chat_address("phone", &body.phone)?;
    let typed = Typed {
        location: Some(Location {
            latitude: body.latitude,
            longitude: body.longitude,
            name: body.name.filter(|n| !n.trim().is_empty()),
            address: body.address.filter(|a| !a.trim().is_empty()),
        }),
        ..Typed::default()
    };
    let extras = Extras {
        reply_to: body.reply_to,
        delay_ms: body.delay,
        ..Extras::default()
    };
    send(&state, &instance, &to, typed, extras).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SendContact {
    /// A phone number or a WhatsApp address (person or group).
    #[schema(schema_with = crate::http::openapi::chat_address_schema)]
    phone: String,
    /// 1 to 10 cards, each a name (at most 255 characters) and 1 to 10 phone numbers.
    #[schema(schema_with = crate::http::openapi::contact_cards_schema)]
    contacts: Vec<ContactCard>,
    /// The WhatsApp id of a message of this chat to reply to.
    #[serde(rename = "replyTo")]
    reply_to: Option<String>,
    /// Milliseconds (at most 20,000) of "typing…" in the chat before the message
    /// goes; the answer comes once it went.
    #[schema(maximum = 20000)]
    delay: Option<u64>,
}

/// Sends contact cards as vCards (`messageType` `contact`; the history and events carry
/// `contacts`).
#[utoipa::path(
    post,
    path = "/api/whatsapp/{instanceId}/send-contact",
    tag = "messages",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body = SendContact,
    responses(
        (status = 200, description = "Sent", body = Sent),
        (status = 202, description = PACED, body = Sent),
        (status = 400, description = "A missing or invalid phone, no cards, too many, or a card without a name or a valid number (`validation_error`)", body = ErrorBody),
        (status = 404, description = NO_INSTANCE_NUMBER_OR_QUOTE, body = ErrorBody),
        (status = 403, description = NOT_IN_GROUP, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
pub(super) async fn send_contact(
    State(state): State<AppState>,
    SendingInstance { instance, .. }: SendingInstance,
    AppJson(body): AppJson<SendContact>,
) -> ApiResult<(StatusCode, AppJson<Sent>)> {
    let to = chat_address("phone", &body.phone)?;
    let typed = Typed {
        contacts: body.contacts,
        ..Typed::default()
    };
    let extras = Extras {
        reply_to: body.reply_to,
        delay_ms: body.delay,
        ..Extras::default()
    };
    send(&state, &instance, &to, typed, extras).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct SendPoll {
    /// A phone number or a WhatsApp address (person or group).
    #[schema(schema_with = crate::http::openapi::chat_address_schema)]
    phone: String,
    /// Not blank, at most 255 characters.
    #[schema(
        example = "Обед в 13:00?",
        max_length = 255,
        pattern = r"[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    question: String,
    /// 2 to 12 distinct options, each not blank and at most 255 characters.
    #[schema(schema_with = crate::http::openapi::poll_options_schema)]
    options: Vec<String>,
    /// Voters may choose several options (default false: one).
    #[serde(default)]
    multiple_answers: bool,
    /// The WhatsApp id of a message of this chat to reply to.
    reply_to: Option<String>,
    /// Milliseconds (at most 20,000) of "typing…" in the chat before the message
    /// goes; the answer comes once it went.
    #[schema(maximum = 20000)]
    delay: Option<u64>,
}

/// Sends a poll (`messageType` `poll`; the history and events carry `poll`). Votes
/// arrive as `poll_vote` events, with the chosen options by name, and are kept on the
/// poll (each voter's latest choice).
#[utoipa::path(
    post,
    path = "/api/whatsapp/{instanceId}/send-poll",
    tag = "messages",
    params(("instanceId" = String, Path, description = "The instance's id")),
    request_body = SendPoll,
    responses(
        (status = 200, description = "Sent", body = Sent),
        (status = 202, description = PACED, body = Sent),
        (status = 400, description = "A missing or invalid phone, a blank question, or not 2 to 12 distinct options (`validation_error`)", body = ErrorBody),
        (status = 404, description = NO_INSTANCE_NUMBER_OR_QUOTE, body = ErrorBody),
        (status = 403, description = NOT_IN_GROUP, body = ErrorBody),
        (status = 409, description = NOT_CONNECTED, body = ErrorBody),
        (status = 429, description = OVER_LIMIT, body = ErrorBody),
    )
)]
pub(super) async fn send_poll(
    State(state): State<AppState>,
    SendingInstance { instance, .. }: SendingInstance,
    AppJson(body): AppJson<SendPoll>,
) -> ApiResult<(StatusCode, AppJson<Sent>)> {
    let to = chat_address("phone", &body.phone)?;
    let typed = Typed {
        poll: Some(Poll {
            question: body.question,
            options: body.options,
            multiple_answers: body.multiple_answers,
            votes: Vec::new(),
        }),
        ..Typed::default()
    };
    let extras = Extras {
        reply_to: body.reply_to,
        delay_ms: body.delay,
        ..Extras::default()
    };
    send(&state, &instance, &to, typed, extras).await
}

/// Sends `typed` from `instance`, paced as the instance's settings say.
async fn send(
    state: &AppState,
    instance: &wagate_actors::domain::Instance,
    to: &wagate_actors::domain::Jid,
    typed: Typed,
    extras: Extras,
) -> ApiResult<(StatusCode, AppJson<Sent>)> {
    let extras = Extras {
        send_rate: instance.webhook.send_rate,
        ..extras
    };
    let sent = state
        .messenger
        .send_typed(&instance.id, to, typed, extras)
        .await?;
    Ok(Sent::answer(sent))
}
