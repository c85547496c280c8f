//! Extractors that answer bad input in the app's own error shape, naming the field, and
//! the parse of chat addresses every resource takes.

use axum::extract::multipart::MultipartRejection;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use wagate_actors::domain::Jid;

use crate::http::error::ApiError;

/// `axum::Json` with errors as `{error, code}`: syntax errors 400 `invalid_json`, wrong,
/// missing or unknown fields 400 `validation_error` (the message names the field), bodies
/// over the limit 413.
///
/// A number with a zero fraction (`100.0`) is taken as the integer it is: JSON Schema,
/// and so the API document, counts it as one, and some clients write every number so.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppJson<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(value) = axum::Json::<serde_json::Value>::from_request(req, state).await?;
        from_json(value)
            .map(AppJson)
            .map_err(|e| ApiError::validation(format!("invalid request body: {e}")))
    }
}

/// Reads a request's JSON as `T` the way [`AppJson`] does: a number with a zero fraction
/// is the integer it is. Errors name the field.
pub fn from_json<T: serde::de::DeserializeOwned>(
    mut value: serde_json::Value,
) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
    integral_numbers(&mut value);
    serde_path_to_error::deserialize(value)
}

/// Rewrites every number with a zero fraction that fits an `i64` or a `u64` as that
/// integer, so that fields typed as integers take it.
fn integral_numbers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|f| n.is_f64() && f.fract() == 0.0) {
                // The casts saturate; the range checks make them exact.
                if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f) {
                    *n = serde_json::Number::from(f as i64);
                } else if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                    *n = serde_json::Number::from(f as u64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        Value::Object(fields) => fields.values_mut().for_each(integral_numbers),
        Value::Null | Value::Bool(_) | Value::String(_) => {}
    }
}

impl<T: serde::Serialize> IntoResponse for AppJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match &r {
            JsonRejection::JsonDataError(e) => {
                ApiError::validation(clean_serde_message(&e.body_text()))
            }
            JsonRejection::JsonSyntaxError(e) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                clean_serde_message(&e.body_text()),
            ),
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_content_type",
                "expected a JSON body with `Content-Type: application/json`",
            ),
            _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::payload_too_large("request body is larger than the allowed limit")
            }
            _ => ApiError::bad_request(r.body_text()),
        }
    }
}

/// serde's messages say "Failed to deserialize the JSON body into the target type: missing
/// field `email` at line 1 column 20"; keep the part that names the field.
fn clean_serde_message(text: &str) -> String {
    let t = text
        .strip_prefix("Failed to deserialize the JSON body into the target type: ")
        .or_else(|| text.strip_prefix("Failed to parse the request body as JSON: "))
        .unwrap_or(text);
    format!("invalid request body: {t}")
}

/// `axum::extract::Query` with errors as `{error, code}` (400, naming the parameter).
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct AppQuery<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        let text = r.body_text();
        let t = text
            .strip_prefix("Failed to deserialize query string: ")
            .unwrap_or(&text);
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("invalid query parameter: {t}"),
        )
    }
}

/// `axum::extract::Path` with errors as `{error, code}`.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct AppPath<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request(format!("invalid path parameter: {}", r.body_text()))
    }
}

/// `axum::extract::Multipart` with errors as `{error, code}`: a body that is not
/// `multipart/form-data` (JSON, a URL-encoded form, none) answers 400
/// `invalid_content_type`.
pub struct AppMultipart(pub axum::extract::Multipart);

impl<S: Send + Sync> FromRequest<S> for AppMultipart {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        axum::extract::Multipart::from_request(req, state)
            .await
            .map(AppMultipart)
            .map_err(ApiError::from)
    }
}

/// A multipart body that breaks off or is malformed (400), or over the route's limit
/// (413).
pub fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::payload_too_large("upload is larger than the allowed limit")
    } else {
        ApiError::bad_request(format!("invalid multipart body: {}", e.body_text()))
    }
}

/// The whole content of a multipart field, refused with 413 past `max` bytes (`what`
/// names the field in the message).
pub async fn field_bytes(
    field: &mut axum::extract::multipart::Field<'_>,
    max: usize,
    what: &str,
) -> Result<Vec<u8>, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > max {
            return Err(ApiError::payload_too_large(format!(
                "{what} is larger than the limit of {max} bytes"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

impl From<MultipartRejection> for ApiError {
    fn from(r: MultipartRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_content_type",
            format!(
                "expected a `multipart/form-data` body: {}",
                r.body_text().to_lowercase()
            ),
        )
    }
}

/// A person's address as a client writes it (a phone number or a person's WhatsApp
/// address) → the [`Jid`]; 400 naming `field` for anything else, a group included.
pub fn person_address(field: &str, value: &str) -> Result<Jid, ApiError> {
    let jid = chat_address(field, value)?;
    if jid.is_group() {
        return Err(ApiError::validation(format!(
            "{field}: '{value}' is a group, not a person"
        )));
    }
    Ok(jid)
}

/// A chat address as a client writes it (a phone number in any common notation, a
/// person's or a group's WhatsApp address) → the [`Jid`], or 422 naming `field`.
pub fn chat_address(field: &str, value: &str) -> Result<Jid, ApiError> {
    Jid::parse(value).map_err(|e| {
        // The domain's messages either say what the value must be, or quote it.
        let joint = if e.starts_with("must ") { " " } else { ": " };
        ApiError::validation(format!("{field}{joint}{e}"))
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::from_json;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        max_retries: Option<u32>,
        chat_id: Option<i64>,
        big: Option<u64>,
        latitude: Option<f64>,
        #[serde(default)]
        nested: Vec<u8>,
    }

    #[test]
    fn a_number_with_a_zero_fraction_is_the_integer_it_is() {
        let body: Body = from_json(json!({
            "maxRetries": 20.0, "chatId": -5.0, "big": 18_000_000_000_000_000_000.0,
            "latitude": 55.0, "nested": [1.0, 2.0],
        }))
        .expect("integral numbers are integers");
        assert_eq!(
            body,
            Body {
                max_retries: Some(20),
                chat_id: Some(-5),
                big: Some(18_000_000_000_000_000_000),
                latitude: Some(55.0),
                nested: vec![1, 2],
            }
        );
    }

    #[test]
    fn a_fraction_or_an_integer_out_of_range_is_still_refused_naming_the_field() {
        let err = from_json::<Body>(json!({"maxRetries": 1.5})).expect_err("a fraction");
        assert!(err.to_string().starts_with("maxRetries: "), "{err}");
        let err = from_json::<Body>(json!({"maxRetries": 5e9})).expect_err("over u32");
        assert!(err.to_string().starts_with("maxRetries: "), "{err}");
        let err = from_json::<Body>(json!({"big": 1e20})).expect_err("over u64");
        assert!(err.to_string().starts_with("big: "), "{err}");
    }
}
