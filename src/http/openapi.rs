//! The OpenAPI 3.1 document of the API and the pages that show it.
//!
//! The document is generated from the handlers: each one carries `#[utoipa::path]`, and
//! [`crate::http::api`] registers them with `utoipa_axum::routes!`, so the router and the
//! document come from the same declarations. [`finish`] then adds what is common to every
//! operation (the error answer, who may call it).
//!
//! `GET /docs` is a small viewer written for this server (`assets/docs/`, compiled in):
//! it reads `/openapi.json` and lists the operations by tag, with a form to try each one.
//! Nothing is loaded from elsewhere, so it works offline and under the strict
//! Content-Security-Policy of [`super::browser`].

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder};
use utoipa::openapi::security::{SecurityRequirement, SecurityScheme};
use utoipa::openapi::{self, ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod rules;

use crate::http::error::ErrorBody;
use crate::http::state::AppState;

/// The name of the JWT scheme (`Authorization: Bearer <token>` from `/api/auth/login`).
pub const BEARER_AUTH: &str = "bearerAuth";
/// The name of the API-key scheme (`x-api-key: <key>`).
pub const API_KEY: &str = "apiKey";

/// The tag of these documentation endpoints.
pub const TAG: &str = "docs";

/// Descriptions of error answers many endpoints share.
pub const NO_INSTANCE: &str = "No such instance visible to the caller";
pub const NO_INSTANCE_NUMBER_OR_QUOTE: &str = "No such instance visible to the caller, the recipient's number is not on WhatsApp (`not_on_whatsapp`), or `replyTo` names no message of this chat (`not_found`)";
pub const OVER_LIMIT: &str =
    "The instance's usage limit is reached (`limit_exceeded`); see `Retry-After`";
pub const NOT_IN_GROUP: &str = "To a group: the account is not in it, or it is an announce group and the account is not an admin (`forbidden`)";
pub const NOT_CONNECTED: &str = "The instance is not connected to WhatsApp (`not_connected`)";
pub const PACED: &str = "Queued: the instance paces its sends (`sendRate`); the message is stored `pending`, counts against the limits now, and goes in its turn (`message_sent` follows)";
pub const NOT_ADMIN: &str = "Not an admin";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wagate",
        description = "Self-hosted multi-instance WhatsApp gateway: REST API, signed webhooks, \
live event streams.\n\nEvery endpoint under `/api` except `POST /api/auth/login` and Meta's \
webhook needs either `Authorization: Bearer <token>` (a JWT from `/api/auth/login`) or \
`x-api-key: <key>`. Every error answers `{\"error\": \"<message>\", \"code\": \"<code>\"}`."
    ),
    tags(
        (name = "health", description = "Liveness and readiness"),
        (name = "metrics", description = "Prometheus metrics"),
        (name = "auth", description = "Logging in and the caller's own account"),
        (name = "users", description = "Accounts (admins manage all, users themselves)"),
        (name = "instances", description = "WhatsApp instances: lifecycle, status, QR and pair codes, activity, events"),
        (name = "messages", description = "Sending, chats, history and media"),
        (name = "groups", description = "WhatsApp groups: members, settings, invites"),
        (name = "presence", description = "Online, offline and typing; following a contact's presence"),
        (name = "profile", description = "The account's profile, contacts' pictures, blocking"),
        (name = "chats", description = "Archiving, pinning, muting and labelling chats; the account's labels"),
        (name = "contacts", description = "Live and stored contacts"),
        (name = "webhooks", description = "An instance's webhook deliveries"),
        (name = "stats", description = "Usage statistics"),
        (name = "sandbox", description = "Controls of the built-in simulated WhatsApp network"),
        (name = "db", description = "The storage provider (admins only)"),
        (name = "cluster", description = "Cluster mode: the live nodes"),
        (name = "waba", description = "WhatsApp Business API: settings, Meta's webhook, the operator desk"),
        (name = "docs", description = "This document and its viewer"),
        (name = "dashboard", description = "The web dashboard's and the operator desk's pages and files"),
    ),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// The document before any path is added: information, tags, the error schema.
pub fn base() -> openapi::OpenApi {
    ApiDoc::openapi()
}

/// The schema of a string parameter or field that takes one of `values`: the handler's
/// own list, so the document cannot drift from what it accepts.
pub fn string_enum(values: &[&str]) -> openapi::schema::Object {
    openapi::schema::ObjectBuilder::new()
        .schema_type(openapi::schema::Type::String)
        .enum_values(Some(values.iter().copied()))
        .build()
}

/// Raw bytes (a file, an image) in the document.
/// A chat address as the server takes it (`phone` of the sends, ...): a phone number in
/// any common notation (7 to 15 digits, an optional leading `+`, spaces, dashes, dots,
/// parentheses), a person's WhatsApp address (`79001234567@s.whatsapp.net`, or the
/// legacy `@c.us`) or a group's (`120363000000-1600000000@g.us`).
pub const CHAT_ADDRESS_PATTERN: &str = r"^(?:\+?(?:[ ().-]*[0-9]){7,15}[ ().-]*|(?:-*[0-9]){7,15}-*@(?:s\.whatsapp\.net|c\.us)|[0-9-]{1,64}@g\.us)$";
/// A phone number as the server takes it: 7 to 15 digits, an optional leading `+`,
/// spaces, dashes, dots, parentheses.
pub const PHONE_PATTERN: &str = r"^\+?(?:[ ().-]*[0-9]){7,15}[ ().-]*$";
/// A person's address as the server takes it where a group will not do (adding a
/// contact): a phone number as [`PHONE_PATTERN`] or a person's WhatsApp address.
pub const PERSON_ADDRESS_PATTERN: &str =
    r"^(?:\+?(?:[ ().-]*[0-9]){7,15}[ ().-]*|(?:-*[0-9]){7,15}-*@(?:s\.whatsapp\.net|c\.us))$";
/// A group's address: its id (digits and dashes) and `@g.us`.
pub const GROUP_ADDRESS_PATTERN: &str = r"^[0-9-]{1,64}@g\.us$";
/// Text that is not blank: at least one character that is not white space (the server
/// trims before it checks). White space as Rust's `char::is_whitespace` (Unicode's
/// `White_Space`) has it, written out: `\s` of the document's regular expressions
/// (ECMA-262) is another set.
pub const NOT_BLANK_PATTERN: &str =
    r"[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]";
/// An http(s) URL the server's URL parser takes: a scheme, a host name whose last label
/// starts with a letter (a numeric one would be read as an IPv4 address) and no label
/// with `--` (an internationalised name must be valid), an optional port and path.
pub const HTTP_URL_PATTERN: &str = r"^https?://(?:[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*\.)*[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)*(?::[0-9]{1,4})?(?:/[A-Za-z0-9._~/-]*)?$";
/// Standard base64 with padding, not empty (white space around it is trimmed).
/// The bits a final partial group leaves over must be zero, as the decoder requires.
pub const BASE64_PATTERN: &str = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)$";
/// A name of a custom webhook header: an HTTP token.
const HEADER_NAME_PATTERN: &str = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,1024}$";
/// A value of a custom webhook header: visible ASCII, spaces and tabs.
const HEADER_VALUE_PATTERN: &str = r"^[\t -~]{0,1024}$";

fn string_with_pattern(pattern: &str, example: &str) -> openapi::schema::Object {
    openapi::schema::ObjectBuilder::new()
        .schema_type(openapi::schema::Type::String)
        .pattern(Some(pattern))
        .examples([example])
        .build()
}

/// The schema of a chat address field ([`CHAT_ADDRESS_PATTERN`]).
pub fn chat_address_schema() -> openapi::schema::Object {
    string_with_pattern(CHAT_ADDRESS_PATTERN, "79001234567")
}

/// The schema of a person's address field ([`PERSON_ADDRESS_PATTERN`]).
pub fn person_address_schema() -> openapi::schema::Object {
    string_with_pattern(PERSON_ADDRESS_PATTERN, "79001234567")
}

/// The schema of a text field that must not be blank and has at most `max` characters.
pub fn not_blank(max: usize) -> openapi::schema::ObjectBuilder {
    openapi::schema::ObjectBuilder::new()
        .schema_type(openapi::schema::Type::String)
        .pattern(Some(NOT_BLANK_PATTERN))
        .max_length(Some(max))
}

/// The schema of a phone number field ([`PHONE_PATTERN`]).
pub fn phone_schema() -> openapi::schema::Object {
    string_with_pattern(PHONE_PATTERN, "+7 900 123-45-67")
}

/// The schema of a list of phone numbers (mentions), each as [`phone_schema`].
pub fn phone_list_schema() -> openapi::schema::Array {
    openapi::schema::ArrayBuilder::new()
        .items(phone_schema())
        .examples([serde_json::json!(["79001234567"])])
        .build()
}

/// The schema of the custom webhook headers: at most 20, HTTP names, visible values.
pub fn headers_schema() -> openapi::schema::Object {
    openapi::schema::ObjectBuilder::new()
        .schema_type(openapi::schema::Type::Object)
        .max_properties(Some(20))
        .property_names(Some(
            openapi::schema::ObjectBuilder::new()
                .schema_type(openapi::schema::Type::String)
                .pattern(Some(HEADER_NAME_PATTERN)),
        ))
        .additional_properties(Some(
            openapi::schema::ObjectBuilder::new()
                .schema_type(openapi::schema::Type::String)
                .pattern(Some(HEADER_VALUE_PATTERN)),
        ))
        .examples([serde_json::json!({"X-Tenant": "acme"})])
        .build()
}

/// The schema of a webhook URL field: an http(s) URL ([`HTTP_URL_PATTERN`]) of at most
/// 2048 characters, or the empty string (which removes it), or null (no change).
pub fn webhook_url_schema() -> openapi::schema::Object {
    let url = HTTP_URL_PATTERN
        .strip_prefix('^')
        .and_then(|p| p.strip_suffix('$'))
        .unwrap_or(HTTP_URL_PATTERN);
    openapi::schema::ObjectBuilder::new()
        .schema_type(openapi::schema::SchemaType::from_iter([
            openapi::schema::Type::String,
            openapi::schema::Type::Null,
        ]))
        .pattern(Some(format!("^(?:{url})?$")))
        .max_length(Some(2048))
        .examples(["https://hooks.example/wagate"])
        .build()
}

/// The schema of the contact cards of a send: 1 to 10, each a name that is not blank
/// (at most 255 characters) and 1 to 10 phone numbers.
pub fn contact_cards_schema() -> openapi::schema::Array {
    let card = openapi::schema::ObjectBuilder::new()
        .schema_type(openapi::schema::Type::Object)
        .property("name", not_blank(255).examples(["Иван Иванов"]))
        .required("name")
        .property(
            "phones",
            openapi::schema::ArrayBuilder::new()
                .items(phone_schema())
                .min_items(Some(1))
                .max_items(Some(10)),
        )
        .required("phones");
    openapi::schema::ArrayBuilder::new()
        .items(card)
        .min_items(Some(1))
        .max_items(Some(10))
        .build()
}

/// The schema of a poll's options: 2 to 12 distinct texts, not blank, of at most 255
/// characters each.
pub fn poll_options_schema() -> openapi::schema::Array {
    openapi::schema::ArrayBuilder::new()
        .items(not_blank(255))
        .min_items(Some(2))
        .max_items(Some(12))
        .unique_items(true)
        .examples([serde_json::json!(["Да", "Нет"])])
        .build()
}

#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Binary(pub Vec<u8>);

/// The names of the shared error answers under `components.responses`.
const ERROR_RESPONSE: &str = "Error";
const UNAUTHORIZED_RESPONSE: &str = "Unauthorized";
const BAD_REQUEST_RESPONSE: &str = "BadRequest";
const UNAVAILABLE_RESPONSE: &str = "Unavailable";

/// Completes a document whose paths are all in:
/// - both security schemes, required by default (either one will do);
/// - an operation annotated `security(())` is public: its `security` becomes `[]`;
/// - every operation answers errors as `{error, code}` (`default`), those needing
///   credentials also list 401, and those taking a body list 400 (missing required
///   fields, wrong data format) unless they describe their own;
/// - operation ids are `<tag>_<handler>`, unique although handler names repeat across
///   modules (`status`, `mark_read`).
pub fn finish(mut doc: openapi::OpenApi) -> openapi::OpenApi {
    let components = doc.components.get_or_insert_with(openapi::Components::new);
    components.security_schemes.insert(
        BEARER_AUTH.to_owned(),
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some("The token of `POST /api/auth/login`."))
                .build(),
        ),
    );
    components.security_schemes.insert(
        API_KEY.to_owned(),
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "x-api-key",
            "The user's API key (`apiKey` of login, user creation or key regeneration).",
        ))),
    );
    let error_json = || {
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Error")))
            .build()
    };
    components.responses.insert(
        ERROR_RESPONSE.to_owned(),
        RefOr::T(
            ResponseBuilder::new()
                .description("An error: the status says its class, `code` which one")
                .content("application/json", error_json())
                .build(),
        ),
    );
    components.responses.insert(
        UNAUTHORIZED_RESPONSE.to_owned(),
        RefOr::T(
            ResponseBuilder::new()
                .description("No credentials, or invalid ones")
                .content("application/json", error_json())
                .build(),
        ),
    );
    components.responses.insert(
        BAD_REQUEST_RESPONSE.to_owned(),
        RefOr::T(
            ResponseBuilder::new()
                .description(
                    "A required field is missing or a field has the wrong format \
                     (`validation_error`, naming the field), or the body is not JSON \
                     (`invalid_json`)",
                )
                .content("application/json", error_json())
                .build(),
        ),
    );
    components.responses.insert(
        UNAVAILABLE_RESPONSE.to_owned(),
        RefOr::T(
            ResponseBuilder::new()
                .description(
                    "A part of the server is restarting (the instance's session, an actor: \
                     `unavailable`) or storage cannot be reached (`storage_unavailable`); \
                     retry after `Retry-After` seconds",
                )
                .header(
                    "Retry-After",
                    openapi::HeaderBuilder::new()
                        .schema(
                            openapi::schema::ObjectBuilder::new()
                                .schema_type(openapi::schema::Type::Integer)
                                .minimum(Some(1)),
                        )
                        .description(Some("Seconds to wait before retrying"))
                        .build(),
                )
                .content("application/json", error_json())
                .build(),
        ),
    );
    let either = vec![
        SecurityRequirement::new(BEARER_AUTH, Vec::<String>::new()),
        SecurityRequirement::new(API_KEY, Vec::<String>::new()),
    ];
    doc.security = Some(either);
    for (path, item) in doc.paths.paths.iter_mut() {
        let api = path.starts_with("/api/");
        for op in operations_mut(item) {
            if let (Some(tag), Some(id)) = (
                op.tags.as_ref().and_then(|t| t.first()),
                op.operation_id.as_ref(),
            ) {
                op.operation_id = Some(format!("{tag}_{id}"));
            }
            let public = op
                .security
                .as_ref()
                .is_some_and(|s| s.iter().all(|r| *r == SecurityRequirement::default()));
            let has_body = op.request_body.is_some();
            let responses = &mut op.responses.responses;
            if has_body {
                responses.entry("400".to_owned()).or_insert_with(|| {
                    RefOr::Ref(Ref::new(format!(
                        "#/components/responses/{BAD_REQUEST_RESPONSE}"
                    )))
                });
            }
            if public {
                op.security = Some(Vec::new());
            } else {
                responses.entry("401".to_owned()).or_insert_with(|| {
                    RefOr::Ref(Ref::new(format!(
                        "#/components/responses/{UNAUTHORIZED_RESPONSE}"
                    )))
                });
            }
            if api {
                responses.entry("503".to_owned()).or_insert_with(|| {
                    RefOr::Ref(Ref::new(format!(
                        "#/components/responses/{UNAVAILABLE_RESPONSE}"
                    )))
                });
            }
            responses.entry("default".to_owned()).or_insert_with(|| {
                RefOr::Ref(Ref::new(format!("#/components/responses/{ERROR_RESPONSE}")))
            });
        }
    }
    rules::address_parameters(&mut doc);
    if let Some(components) = doc.components.as_mut() {
        rules::cross_field_rules(components);
    }
    doc
}

/// The operations of a path item, whatever their method.
pub fn operations_mut(
    item: &mut openapi::PathItem,
) -> impl Iterator<Item = &mut openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// The document this server serves, built once.
static DOCUMENT_JSON: LazyLock<String> = LazyLock::new(|| {
    crate::http::openapi_document()
        .to_pretty_json()
        .unwrap_or_else(|e| {
            // Serialising plain data structures cannot fail; answer something valid anyway.
            tracing::error!(error = %e, "cannot serialise the OpenAPI document");
            "{}".to_owned()
        })
});

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .routes(routes!(docs_page))
        .routes(routes!(docs_script))
        .routes(routes!(docs_style))
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = TAG,
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", body = serde_json::Value))
)]
async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT_JSON.as_str(),
    )
}

/// A page that shows this document.
///
/// Operations by tag, their parameters and schemas, and a form to try each one with a
/// token or API key.
#[utoipa::path(
    get,
    path = "/docs",
    tag = TAG,
    security(()),
    responses((status = 200, description = "The documentation page", content_type = "text/html", body = String))
)]
async fn docs_page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../../assets/docs/index.html"),
    )
}

/// The script of the documentation page.
#[utoipa::path(
    get,
    path = "/docs/app.js",
    tag = TAG,
    security(()),
    responses((status = 200, description = "The script of `/docs`", content_type = "text/javascript", body = String))
)]
async fn docs_script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../../assets/docs/app.js"),
    )
}

/// The style sheet of the documentation page.
#[utoipa::path(
    get,
    path = "/docs/app.css",
    tag = TAG,
    security(()),
    responses((status = 200, description = "The style sheet of `/docs`", content_type = "text/css", body = String))
)]
async fn docs_style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../../assets/docs/app.css"),
    )
}
