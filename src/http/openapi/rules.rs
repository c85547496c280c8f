//! The validation the handlers apply that the request types' own schemas cannot carry,
//! written into the document by [`super::finish`]: the patterns of path parameters
//! parsed as addresses, and rules across the fields of a request.

use serde_json::{Value, json};
use utoipa::openapi::{self, RefOr};

use super::{
    BASE64_PATTERN, CHAT_ADDRESS_PATTERN, GROUP_ADDRESS_PATTERN, HTTP_URL_PATTERN,
    NOT_BLANK_PATTERN, PERSON_ADDRESS_PATTERN, operations_mut,
};

/// A label's id in a path: 1 to 64 characters, none of them white space.
const LABEL_ID_PATTERN: &str = r"^\S{1,64}$";

/// Path parameters the handlers parse as chat addresses carry the pattern they are
/// parsed with: `chatId` (any chat; the operator desk's are numbers), `phone` (a person)
/// and `groupJid` (a group); a label's id (`labelId`) its bounds.
pub(super) fn address_parameters(doc: &mut openapi::OpenApi) {
    for item in doc.paths.paths.values_mut() {
        for op in operations_mut(item) {
            for parameter in op.parameters.iter_mut().flatten() {
                let pattern = match parameter.name.as_str() {
                    "chatId" => CHAT_ADDRESS_PATTERN,
                    "phone" => PERSON_ADDRESS_PATTERN,
                    "groupJid" => GROUP_ADDRESS_PATTERN,
                    "labelId" => LABEL_ID_PATTERN,
                    _ => continue,
                };
                if parameter.parameter_in != openapi::path::ParameterIn::Path {
                    continue;
                }
                if let Some(RefOr::T(openapi::Schema::Object(schema))) = parameter.schema.as_mut()
                    && schema.schema_type == openapi::schema::Type::String.into()
                {
                    schema.pattern = Some(pattern.to_owned());
                }
            }
        }
    }
}

/// Adds `rules` to the component schema `name` (an object): a request must satisfy each
/// of them beside the schema's own properties (`allOf`, in the same schema object, so
/// `properties` stay where readers look for them).
fn constrain(components: &mut openapi::Components, name: &str, rules: Vec<Value>) {
    let Some(RefOr::T(openapi::Schema::Object(object))) = components.schemas.get_mut(name) else {
        tracing::warn!(schema = name, "no such object schema in the API document");
        return;
    };
    // Inserted as is: the extensions' builder would prefix the key with `x-`.
    object
        .extensions
        .get_or_insert_with(Default::default)
        .insert("allOf".to_owned(), Value::Array(rules));
}

/// What a request must satisfy across its fields, as the handlers check it, written into
/// the request schemas so that generated clients know it too. Rules JSON Schema cannot
/// state (one date before another, what storage holds) are in the operations'
/// descriptions.
pub(super) fn cross_field_rules(components: &mut openapi::Components) {
    let text = json!({"type": "string", "pattern": NOT_BLANK_PATTERN});
    let url = json!({"type": "string", "pattern": HTTP_URL_PATTERN});
    let nothing = json!({"type": "null"});

    // A grace period comes with the new secret it is the overlap of.
    let grace = |secret: &str, period: &str| {
        json!({"anyOf": [
            {"properties": {period: nothing}},
            {"properties": {secret: {"type": "string"}}, "required": [secret]},
        ]})
    };
    constrain(
        components,
        "UpdateInstance",
        vec![grace("webhookSecret", "webhookSecretGracePeriod")],
    );
    constrain(
        components,
        "SettingsPatch",
        vec![grace("secret", "secretGracePeriod")],
    );

    // A new operator names the account it works for; nobody else does.
    constrain(
        components,
        "CreateUser",
        vec![json!({"anyOf": [
            {"properties": {"role": {"const": "operator"}, "ownerId": {"type": "string"}},
             "required": ["role", "ownerId"]},
            {"properties": {"role": {"enum": ["admin", "user"]}, "ownerId": nothing}},
        ]})],
    );

    // A form's parts are the ones listed (the parser refuses part names that are not
    // header-safe, so none other is sent).
    for form in ["SendFileForm", "WabaSendFile"] {
        if let Some(RefOr::T(openapi::Schema::Object(object))) = components.schemas.get_mut(form) {
            object.additional_properties = Some(Box::new(
                openapi::schema::AdditionalProperties::FreeForm(false),
            ));
        }
    }

    // `assign`: `operatorId` must be there, null included.
    if let Some(RefOr::T(openapi::Schema::Object(assign))) =
        components.schemas.get_mut("WabaAssign")
    {
        assign.required.push("operatorId".to_owned());
    }

    // An operator's send: the chat, then what its `type` needs.
    constrain(
        components,
        "WabaSend",
        vec![
            json!({"properties": {"chatId": {"type": "integer"}}, "required": ["chatId"]}),
            json!({"anyOf": [
                {"properties": {"type": {"enum": ["text", null]}, "message": text},
                 "required": ["message"]},
                {"properties": {"type": {"enum": ["image", "document"]}, "message": text,
                                "mediaUrl": url},
                 "required": ["type", "message", "mediaUrl"]},
                {"properties": {"type": {"const": "template"}, "template": {
                    "type": "object",
                    "properties": {
                        "name": text,
                        "language": {"anyOf": [
                            text,
                            {"type": "object", "properties": {"code": text}, "required": ["code"]},
                        ]},
                        "components": {"type": ["array", "null"]},
                    },
                    "required": ["name", "language"],
                 }},
                 "required": ["type", "template"]},
            ]}),
        ],
    );

    // A status is a text (on a background) or an image (with a caption).
    constrain(
        components,
        "PostStatus",
        vec![json!({"anyOf": [
            {"properties": {"text": text, "imageUrl": nothing, "caption": nothing},
             "required": ["text"]},
            {"properties": {"imageUrl": {"type": "string"}, "text": nothing,
                            "backgroundColor": nothing},
             "required": ["imageUrl"]},
        ]})],
    );

    // A change of a group changes something.
    let given = |field: &str| json!({"properties": {field: {"not": nothing}}, "required": [field]});
    constrain(
        components,
        "UpdateGroup",
        vec![json!({"anyOf": (["subject", "description", "announce", "locked"].map(given))})],
    );

    // A change of the profile changes something.
    constrain(
        components,
        "UpdateProfile",
        vec![json!({"anyOf": (["name", "about"].map(given))})],
    );

    // A simulated inbound message: a text or media (or both).
    constrain(
        components,
        "InboundRequest",
        vec![json!({"anyOf": [
            {"properties": {"body": text}, "required": ["body"]},
            {"properties": {"media": {"type": "object"}}, "required": ["media"]},
        ]})],
    );
    // Its media: from exactly one of a URL and base64 content.
    constrain(
        components,
        "MediaInput",
        vec![json!({"oneOf": [
            {"properties": {"url": url, "base64": nothing}, "required": ["url"]},
            {"properties": {"base64": {"type": "string", "pattern": BASE64_PATTERN}, "url": nothing},
             "required": ["base64"]},
        ]})],
    );
}
