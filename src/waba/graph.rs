//! [`GraphClient`]: Meta's WhatsApp Cloud API over HTTP (reqwest, rustls), implementing the
//! desk's [`GraphApi`] seam.
//!
//! `POST {WABA_GRAPH_BASE_URL}/{WABA_API_VERSION}/{phoneNumberId}/messages` with the
//! account's bearer token and the Cloud API's payloads; the answer's `messages[0].id` is
//! the message's `wamid`; `GET /{businessAccountId}/message_templates` lists the approved
//! templates, page by page. Meta's error codes become [`GraphError`]s the HTTP edge maps to
//! clear answers. 5xx and 429 answers, Meta's throughput error (130429, whatever the
//! status) and failures to connect are retried with backoff, [`MAX_ATTEMPTS`] tries in
//! all: anything else either succeeded or will fail the same way again, and a network
//! error after the request went out could send the message twice.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{Value, json};
use wagate_actors::desk::{GraphApi, GraphError, MediaDownload, MediaUpload};
use wagate_actors::domain::waba::{
    GraphCredentials, TemplateButton, TemplateComponent, WabaContent, WabaTemplate,
    template_placeholders,
};

/// How long one request to Meta may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts per send, the first included (so at most two retries).
pub const MAX_ATTEMPTS: u32 = 3;
/// Delay before the first retry; it doubles before each next one.
pub const RETRY_BASE_DELAY: Duration = Duration::from_millis(200);

/// How long fetching one inbound file (its URL, then its bytes) may take by default
/// (`waba_media_timeout_ms`).
pub const MEDIA_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest inbound file the desk keeps by default (`waba_media_max_bytes`): Meta's
/// own limit for documents, its largest media.
pub const MEDIA_MAX_BYTES: u64 = 100 * 1024 * 1024;

/// Templates asked for per page of `message_templates`.
const TEMPLATE_PAGE_SIZE: &str = "100";
/// Pages of templates read at most: 6,000 templates, Meta's limit for one account.
const MAX_TEMPLATE_PAGES: usize = 60;
/// The fields of a template the desk shows.
const TEMPLATE_FIELDS: &str = "id,name,language,status,category,parameter_format,components";

/// Meta's error codes with an answer of their own.
const CODE_REENGAGEMENT: i64 = 131047;
const CODE_THROUGHPUT: i64 = 130429;
const CODE_BAD_TOKEN: i64 = 190;

/// The Cloud API client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GraphClient {
    http: reqwest::Client,
    base_url: String,
    version: String,
    retry_base: Duration,
    /// Downloads have only the overall `media_timeout`, not the per-request one.
    media_http: reqwest::Client,
    media_timeout: Duration,
    media_max_bytes: u64,
}

impl GraphClient {
    /// A client for `base_url` (no trailing slash) and API `version` (`v21.0`).
    ///
    /// Fails when the TLS backend cannot be initialised.
    pub fn new(base_url: &str, version: &str) -> Result<GraphClient, String> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("wagate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        let media_http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("wagate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(GraphClient {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            version: version.trim_matches('/').to_owned(),
            retry_base: RETRY_BASE_DELAY,
            media_http,
            media_timeout: MEDIA_TIMEOUT,
            media_max_bytes: MEDIA_MAX_BYTES,
        })
    }

    /// The same client with these bounds on one media download: `timeout` for the whole
    /// of it, `max_bytes` for the file.
    pub fn with_media_limits(mut self, timeout: Duration, max_bytes: u64) -> GraphClient {
        self.media_timeout = timeout;
        self.media_max_bytes = max_bytes;
        self
    }

    /// The longest a send can take: every attempt timing out, plus the retry delays. The
    /// desk's calls into a chat actor must wait at least this long.
    pub fn max_send_duration(&self) -> Duration {
        let delays: Duration = (0..MAX_ATTEMPTS.saturating_sub(1))
            .map(|n| self.retry_base * 2u32.pow(n))
            .sum();
        REQUEST_TIMEOUT * MAX_ATTEMPTS + delays
    }

    fn messages_url(&self, phone_number_id: &str) -> String {
        format!(
            "{}/{}/{}/messages",
            self.base_url, self.version, phone_number_id
        )
    }
}

/// The Cloud API payload of `content` for the customer `to`.
pub fn payload(to: &str, content: &WabaContent) -> Value {
    let mut body = json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": content.kind(),
    });
    let (key, value) = match content {
        WabaContent::Text { body } => ("text", json!({ "body": body })),
        WabaContent::Image { link, caption } => {
            let mut image = json!({ "link": link });
            if let Some(c) = caption {
                image["caption"] = json!(c);
            }
            ("image", image)
        }
        WabaContent::Document {
            link,
            caption,
            filename,
        } => {
            let mut document = json!({ "link": link });
            if let Some(c) = caption {
                document["caption"] = json!(c);
            }
            if let Some(f) = filename {
                document["filename"] = json!(f);
            }
            ("document", document)
        }
        WabaContent::Uploaded {
            kind,
            media_id,
            caption,
            filename,
        } => {
            let mut media = json!({ "id": media_id });
            // Audio and stickers take no caption; only documents have a file name.
            if let Some(c) = caption
                && matches!(*kind, "image" | "video" | "document")
            {
                media["caption"] = json!(c);
            }
            if let Some(f) = filename
                && *kind == "document"
            {
                media["filename"] = json!(f);
            }
            (*kind, media)
        }
        WabaContent::Template {
            name,
            language,
            components,
        } => {
            let mut template = json!({ "name": name, "language": { "code": language } });
            if let Some(c) = components {
                template["components"] = c.clone();
            }
            ("template", template)
        }
    };
    body[key] = value;
    body
}

/// Meta's error body: `{"error": {"message", "type", "code", "error_data": {"details"}}}`.
fn meta_error(body: &Value) -> Option<(i64, String)> {
    let error = body.get("error")?;
    let code = error.get("code")?.as_i64()?;
    let message = error
        .get("error_data")
        .and_then(|d| d.get("details"))
        .and_then(Value::as_str)
        .or_else(|| error.get("message").and_then(Value::as_str))
        .unwrap_or("no message")
        .to_owned();
    Some((code, message))
}

/// `text` with every occurrence of `secret` masked (JSON-escaped forms included).
fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_owned();
    }
    let mut out = text.replace(secret, "****");
    let escaped = Value::String(secret.to_owned()).to_string();
    let escaped = &escaped[1..escaped.len() - 1];
    if escaped != secret {
        out = out.replace(escaped, "****");
    }
    out
}

/// The error of an answer that is not a success.
fn classify(status: reqwest::StatusCode, body: &Value) -> GraphError {
    match meta_error(body) {
        Some((CODE_REENGAGEMENT, m)) => GraphError::ReEngagement(format!(
            "Meta refused the message (131047): more than 24 hours have passed since the customer last wrote; send an approved template instead ({m})"
        )),
        Some((CODE_THROUGHPUT, m)) => GraphError::Throttled(format!(
            "Meta's throughput limit was reached (130429): retry later ({m})"
        )),
        Some((CODE_BAD_TOKEN, m)) => GraphError::BadToken(format!(
            "Meta rejected the access token (190): update accessToken with PUT /api/waba/settings ({m})"
        )),
        _ if status == reqwest::StatusCode::TOO_MANY_REQUESTS => {
            GraphError::Throttled("Meta answered 429 Too Many Requests: retry later".into())
        }
        _ if status.is_server_error() => {
            GraphError::Unavailable(format!("Meta's Graph API answered {status}"))
        }
        Some((code, message)) => GraphError::Rejected { code, message },
        None => GraphError::Rejected {
            code: i64::from(status.as_u16()),
            message: format!("Meta answered {status} without an error body"),
        },
    }
}

impl GraphClient {
    /// `POST /{phoneNumberId}/messages` with `body`, retrying 5xx and 429 answers; the
    /// answer's JSON on success. `what` names the call in the log.
    async fn post_messages(
        &self,
        credentials: &GraphCredentials,
        body: &Value,
        what: &str,
    ) -> Result<Value, GraphError> {
        let url = self.messages_url(&credentials.phone_number_id);
        let token = &credentials.access_token;
        self.with_retries(token, what, || {
            self.http.post(&url).bearer_auth(token).json(body)
        })
        .await
    }

    /// Sends the request `build` makes, retrying 5xx and 429 answers, Meta's throughput
    /// error and failures to connect; the answer's JSON on success. `token` is masked in
    /// whatever Meta answers; `what` names the call in the log.
    async fn with_retries(
        &self,
        token: &str,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Value, GraphError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let answer = match build().send().await {
                Ok(answer) => answer,
                // Not connected: the request never left, so trying again cannot send
                // the message twice (a timeout after it left could).
                Err(e) if e.is_connect() && attempt < MAX_ATTEMPTS => {
                    let delay = self.retry_base * 2u32.pow(attempt - 1);
                    tracing::info!(attempt, ?delay, error = %e, "cannot connect to the Graph API for {what}; retrying");
                    tokio::time::sleep(delay).await;
                    continue;
                }
                Err(e) => {
                    return Err(GraphError::Unavailable(format!(
                        "cannot reach Meta's Graph API: {}",
                        redact(&e.to_string(), token)
                    )));
                }
            };
            let status = answer.status();
            let text = answer.text().await.map_err(|e| {
                GraphError::Unavailable(format!("Meta's answer could not be read: {e}"))
            })?;
            // Meta's error messages end up in logs and in the operator's answer: an
            // upstream that quotes the request's bearer token must not carry it there.
            let text = redact(&text, token);
            let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if status.is_success() {
                return Ok(json);
            }
            let retryable = status.is_server_error()
                || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                || meta_error(&json).is_some_and(|(code, _)| code == CODE_THROUGHPUT);
            if !retryable || attempt >= MAX_ATTEMPTS {
                let error = classify(status, &json);
                tracing::warn!(%status, attempt, error = %error, "the Graph API refused {what}");
                return Err(error);
            }
            let delay = self.retry_base * 2u32.pow(attempt - 1);
            tracing::info!(%status, attempt, ?delay, "the Graph API answered a retryable error to {what}");
            tokio::time::sleep(delay).await;
        }
    }
}

/// Whether `id` can be put in a Graph API path as it is (Meta's ids are digits).
fn plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl GraphClient {
    /// `GET /{media_id}` for the file's URL, then the file, without a deadline of its own.
    async fn fetch_media(
        &self,
        credentials: &GraphCredentials,
        media_id: &str,
    ) -> Result<MediaDownload, GraphError> {
        if !plain_id(media_id) {
            return Err(GraphError::Rejected {
                code: 100,
                message: format!("'{media_id}' is not a media id"),
            });
        }
        let token = &credentials.access_token;
        let unreachable = |e: reqwest::Error| {
            GraphError::Unavailable(format!(
                "cannot reach Meta: {}",
                redact(&e.to_string(), token)
            ))
        };
        let url = format!("{}/{}/{}", self.base_url, self.version, media_id);
        let answer = self
            .media_http
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(unreachable)?;
        let status = answer.status();
        let text = answer.text().await.map_err(unreachable)?;
        let json: Value = serde_json::from_str(&redact(&text, token)).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(classify(status, &json));
        }
        let max = self.media_max_bytes;
        let too_large = |size: u64| {
            GraphError::TooLarge(format!(
                "the file is {size} bytes, over the desk's limit of {max} bytes (waba_media_max_bytes)"
            ))
        };
        if let Some(size) = json["file_size"].as_u64()
            && size > max
        {
            return Err(too_large(size));
        }
        let Some(file_url) = json["url"].as_str() else {
            return Err(GraphError::Unavailable(format!(
                "Meta answered no URL for media {media_id}"
            )));
        };
        let answer = self
            .media_http
            .get(file_url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(unreachable)?;
        let status = answer.status();
        if !status.is_success() {
            return Err(
                if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    GraphError::Unavailable(format!("Meta's media download answered {status}"))
                } else {
                    GraphError::Rejected {
                        code: i64::from(status.as_u16()),
                        message: format!("Meta's media download answered {status}"),
                    }
                },
            );
        }
        if let Some(size) = answer.content_length()
            && size > max
        {
            return Err(too_large(size));
        }
        let mime_type = json["mime_type"].as_str().map(str::to_owned).or_else(|| {
            answer
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
        let mut bytes = Vec::new();
        let mut body = answer.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(unreachable)?;
            if (bytes.len() + chunk.len()) as u64 > max {
                return Err(too_large((bytes.len() + chunk.len()) as u64));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(MediaDownload { bytes, mime_type })
    }
}

/// A string field of `v`, when it is one and not empty.
fn text_field(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A template of Meta's `message_templates` list; None without a name or language.
fn parse_template(v: &Value) -> Option<WabaTemplate> {
    let components = v
        .get("components")
        .and_then(Value::as_array)
        .map(|all| all.iter().filter_map(parse_component).collect())
        .unwrap_or_default();
    Some(WabaTemplate {
        id: text_field(v, "id"),
        name: text_field(v, "name")?,
        language: text_field(v, "language")?,
        status: text_field(v, "status").unwrap_or_default(),
        category: text_field(v, "category"),
        parameter_format: text_field(v, "parameter_format"),
        components,
    })
}

fn parse_component(v: &Value) -> Option<TemplateComponent> {
    let text = text_field(v, "text");
    let buttons = v
        .get("buttons")
        .and_then(Value::as_array)
        .map(|all| {
            all.iter()
                .filter_map(|b| {
                    let url = text_field(b, "url");
                    Some(TemplateButton {
                        kind: text_field(b, "type")?.to_ascii_uppercase(),
                        text: text_field(b, "text"),
                        placeholders: url
                            .as_deref()
                            .map(template_placeholders)
                            .unwrap_or_default(),
                        url,
                        phone_number: text_field(b, "phone_number"),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Some(TemplateComponent {
        kind: text_field(v, "type")?.to_ascii_uppercase(),
        format: text_field(v, "format").map(|f| f.to_ascii_uppercase()),
        placeholders: text
            .as_deref()
            .map(template_placeholders)
            .unwrap_or_default(),
        text,
        buttons,
    })
}

#[async_trait]
impl GraphApi for GraphClient {
    async fn send_message(
        &self,
        credentials: &GraphCredentials,
        to: &str,
        content: &WabaContent,
    ) -> Result<String, GraphError> {
        let json = self
            .post_messages(credentials, &payload(to, content), "a send")
            .await?;
        json["messages"][0]["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| GraphError::Unavailable("Meta answered without a message id".into()))
    }

    async fn mark_read(
        &self,
        credentials: &GraphCredentials,
        whatsapp_message_id: &str,
    ) -> Result<(), GraphError> {
        let body = json!({
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": whatsapp_message_id,
        });
        self.post_messages(credentials, &body, "a read receipt")
            .await
            .map(|_| ())
    }

    async fn upload_media(
        &self,
        credentials: &GraphCredentials,
        file: &MediaUpload,
    ) -> Result<String, GraphError> {
        let token = &credentials.access_token;
        let url = format!(
            "{}/{}/{}/media",
            self.base_url, self.version, credentials.phone_number_id
        );
        let part = reqwest::multipart::Part::bytes(file.bytes.clone())
            .file_name(file.file_name.clone().unwrap_or_else(|| "file".into()))
            .mime_str(&file.mime_type)
            .map_err(|e| GraphError::Rejected {
                code: 100,
                message: format!("'{}' is not a media type: {e}", file.mime_type),
            })?;
        let form = reqwest::multipart::Form::new()
            .text("messaging_product", "whatsapp")
            .text("type", file.mime_type.clone())
            .part("file", part);
        let unreachable = |e: reqwest::Error| {
            GraphError::Unavailable(format!(
                "cannot reach Meta's Graph API: {}",
                redact(&e.to_string(), token)
            ))
        };
        let answer = tokio::time::timeout(
            self.media_timeout,
            self.media_http
                .post(&url)
                .bearer_auth(token)
                .multipart(form)
                .send(),
        )
        .await
        .map_err(|_| {
            GraphError::Unavailable(format!(
                "uploading the file to Meta took longer than {} ms",
                self.media_timeout.as_millis()
            ))
        })?
        .map_err(unreachable)?;
        let status = answer.status();
        let text = answer.text().await.map_err(unreachable)?;
        let json: Value = serde_json::from_str(&redact(&text, token)).unwrap_or(Value::Null);
        if !status.is_success() {
            let error = classify(status, &json);
            tracing::warn!(%status, error = %error, "the Graph API refused an upload");
            return Err(error);
        }
        json["id"].as_str().map(str::to_owned).ok_or_else(|| {
            GraphError::Unavailable("Meta answered an upload without a media id".into())
        })
    }

    async fn approved_templates(
        &self,
        credentials: &GraphCredentials,
        business_account_id: &str,
    ) -> Result<Vec<WabaTemplate>, GraphError> {
        if !plain_id(business_account_id) {
            return Err(GraphError::Rejected {
                code: 100,
                message: format!("'{business_account_id}' is not a business account id"),
            });
        }
        let url = format!(
            "{}/{}/{}/message_templates",
            self.base_url, self.version, business_account_id
        );
        let token = &credentials.access_token;
        let mut templates = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_TEMPLATE_PAGES {
            let page = self
                .with_retries(token, "a template list", || {
                    let mut query = vec![
                        ("fields", TEMPLATE_FIELDS),
                        ("status", "APPROVED"),
                        ("limit", TEMPLATE_PAGE_SIZE),
                    ];
                    if let Some(cursor) = &after {
                        query.push(("after", cursor));
                    }
                    self.http.get(&url).bearer_auth(token).query(&query)
                })
                .await?;
            // The status filter is Meta's; the desk checks it too.
            templates.extend(
                page["data"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(parse_template)
                    .filter(WabaTemplate::is_approved),
            );
            let paging = &page["paging"];
            match paging["cursors"]["after"].as_str() {
                Some(cursor) if paging.get("next").is_some_and(Value::is_string) => {
                    after = Some(cursor.to_owned());
                }
                _ => return Ok(templates),
            }
        }
        tracing::warn!(
            pages = MAX_TEMPLATE_PAGES,
            "the template list of {business_account_id} has more pages than the desk reads"
        );
        Ok(templates)
    }

    async fn download_media(
        &self,
        credentials: &GraphCredentials,
        media_id: &str,
    ) -> Result<MediaDownload, GraphError> {
        match tokio::time::timeout(self.media_timeout, self.fetch_media(credentials, media_id))
            .await
        {
            Ok(done) => done,
            Err(_) => Err(GraphError::Unavailable(format!(
                "fetching media {media_id} from Meta took longer than {} ms (waba_media_timeout_ms)",
                self.media_timeout.as_millis()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_the_cloud_apis() {
        let text = payload("79001234567", &WabaContent::Text { body: "Hi".into() });
        assert_eq!(
            text,
            json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "79001234567",
                   "type": "text", "text": {"body": "Hi"}})
        );
        let doc = payload(
            "1",
            &WabaContent::Document {
                link: "https://e.com/a.pdf".into(),
                caption: None,
                filename: Some("a.pdf".into()),
            },
        );
        assert_eq!(
            doc["document"],
            json!({"link": "https://e.com/a.pdf", "filename": "a.pdf"})
        );
        let audio = payload(
            "1",
            &WabaContent::Uploaded {
                kind: "audio",
                media_id: "M1".into(),
                caption: Some("not for audio".into()),
                filename: Some("a.ogg".into()),
            },
        );
        assert_eq!(audio["type"], "audio");
        assert_eq!(audio["audio"], json!({"id": "M1"}));
        let template = payload(
            "1",
            &WabaContent::Template {
                name: "hello".into(),
                language: "en_US".into(),
                components: None,
            },
        );
        assert_eq!(
            template["template"],
            json!({"name": "hello", "language": {"code": "en_US"}})
        );
    }

    #[test]
    fn templates_are_read_with_their_placeholders() {
        let t = parse_template(&json!({
            "id": "9", "name": "order_ready", "language": "en_US", "status": "APPROVED",
            "category": "UTILITY",
            "components": [
                {"type": "header", "format": "document"},
                {"type": "BODY", "text": "Order {{1}} for {{2}}"},
                {"type": "BUTTONS", "buttons": [
                    {"type": "URL", "text": "Track", "url": "https://e.com/t/{{1}}"},
                    {"text": "no type: skipped"}]},
                {"text": "no type: skipped"}
            ]
        }))
        .expect("a template");
        assert!(t.is_approved());
        assert_eq!(t.components.len(), 3);
        assert_eq!(t.components[0].kind, "HEADER");
        assert_eq!(t.components[0].format.as_deref(), Some("DOCUMENT"));
        assert_eq!(t.components[0].parameter_count(), 1);
        assert_eq!(t.components[1].placeholders, vec!["1", "2"]);
        assert_eq!(t.components[2].buttons.len(), 1);
        assert_eq!(t.components[2].buttons[0].placeholders, vec!["1"]);
        assert!(parse_template(&json!({"name": "no language"})).is_none());
    }

    #[test]
    fn quoted_tokens_are_masked() {
        assert_eq!(
            redact(
                r#"{"error":{"message":"bad token EAAGx/y in Bearer EAAGx/y"}}"#,
                "EAAGx/y"
            ),
            r#"{"error":{"message":"bad token **** in Bearer ****"}}"#
        );
        // As JSON writes it: a quote or backslash in the token is escaped.
        assert_eq!(redact(r#"{"m":"t\"k"}"#, "t\"k"), r#"{"m":"****"}"#);
        assert_eq!(redact("nothing here", ""), "nothing here");
    }

    #[test]
    fn meta_errors_are_classified() {
        let body = |code: i64| json!({"error": {"message": "m", "code": code}});
        let bad = reqwest::StatusCode::BAD_REQUEST;
        assert!(matches!(
            classify(bad, &body(131047)),
            GraphError::ReEngagement(_)
        ));
        assert!(matches!(
            classify(bad, &body(130429)),
            GraphError::Throttled(_)
        ));
        assert!(matches!(
            classify(reqwest::StatusCode::UNAUTHORIZED, &body(190)),
            GraphError::BadToken(_)
        ));
        assert_eq!(
            classify(bad, &body(100)),
            GraphError::Rejected {
                code: 100,
                message: "m".into()
            }
        );
        assert!(matches!(
            classify(reqwest::StatusCode::BAD_GATEWAY, &Value::Null),
            GraphError::Unavailable(_)
        ));
    }

    #[test]
    fn the_send_budget_covers_every_attempt() {
        let client = GraphClient::new("http://127.0.0.1:1", "v21.0").expect("client");
        assert_eq!(
            client.max_send_duration(),
            REQUEST_TIMEOUT * 3 + Duration::from_millis(600)
        );
    }
}
