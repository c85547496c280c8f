//! The one error type of the HTTP edge and its one mapping to status codes: every
//! error of the use cases and the actors becomes an [`ApiError`] here.
//!
//! Every error body is `{"error": "<human message>", "code": "<machine code>"}`. Details of
//! 5xx errors are logged, never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use wagate_actors::error::{DomainError, StoreError};

use wagate_actors::stats::LimitReached;

use crate::gateway::accounts::AccountError;
use crate::gateway::contacts::ContactError;
use crate::gateway::instances::InstanceError;
use crate::gateway::messaging::SendError;
use crate::gateway::storage::ProviderSwitchError;
use crate::gateway::waba::WabaError;
use crate::outbound::OutboundError;
use wagate_actors::desk::GraphError;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds the client should wait before retrying (429 and 503).
    pub retry_after: Option<u64>,
}

/// The body of every error answer.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    /// What went wrong, for people.
    #[schema(example = "instance 0190a3c2 not found")]
    pub error: &'a str,
    /// What went wrong, for programs: `bad_request`, `validation_error`, `unauthorized`,
    /// `not_found`, `rate_limited`, ... (stable; the HTTP status says the class).
    #[schema(example = "not_found")]
    pub code: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// A request body with a missing required field, a field of the wrong type or an
    /// unacceptable value (`message` names the field): 400 `validation_error`, as the API
    /// document's error table gives for "missing required fields, wrong data format".
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "validation_error", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// 429: the caller must wait `retry_after` seconds (sent as `Retry-After`).
    pub fn too_many_requests(
        code: &'static str,
        message: impl Into<String>,
        retry_after: u64,
    ) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, code, message)
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    /// A failure of ours: the detail goes to the log, the client gets a generic message.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal server error",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: &self.message,
            code: self.code,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(msg) => ApiError::conflict("conflict", msg),
            StoreError::Unavailable(msg) => {
                tracing::warn!(error = %msg, "storage unavailable");
                ApiError {
                    code: "storage_unavailable",
                    ..ApiError::unavailable("storage is unavailable, retry shortly")
                }
            }
            StoreError::Corrupt(msg) => ApiError::internal(format!("corrupt stored data: {msg}")),
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::NotFound(msg) => ApiError::not_found(msg),
            DomainError::Conflict { code, message } => ApiError::conflict(code, message),
            DomainError::Invalid(msg) => ApiError::validation(msg),
            DomainError::Unavailable(msg) => ApiError::unavailable(msg),
            DomainError::Timeout(msg) => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", msg),
            DomainError::Store(e) => e.into(),
            DomainError::Engine(msg) => ApiError::new(StatusCode::BAD_GATEWAY, "engine_error", msg),
            DomainError::NotOnWhatsApp(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_on_whatsapp", e.to_string())
            }
            DomainError::Refused { code, message } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
            }
            DomainError::Forbidden(msg) => ApiError::forbidden(msg),
        }
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::Invalid(msg) => ApiError::validation(msg),
            AccountError::EmailTaken => ApiError::conflict("email_taken", e.to_string()),
            AccountError::Unauthorized(msg) => ApiError::unauthorized(msg),
            AccountError::NotFound => ApiError::not_found(e.to_string()),
            AccountError::LastAdmin => ApiError::conflict("last_admin", e.to_string()),
            AccountError::Store(e) => e.into(),
            AccountError::Internal(detail) => ApiError::internal(detail),
        }
    }
}

impl From<InstanceError> for ApiError {
    fn from(e: InstanceError) -> Self {
        match e {
            InstanceError::Invalid(msg) => ApiError::validation(msg),
            InstanceError::NotFound(_) => ApiError::not_found(e.to_string()),
            InstanceError::Store(e) => e.into(),
            InstanceError::Domain(e) => e.into(),
        }
    }
}

impl From<SendError> for ApiError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Invalid(msg) => ApiError::validation(msg),
            SendError::Fetch(OutboundError::TooLarge(_)) => {
                ApiError::payload_too_large(e.to_string())
            }
            SendError::Fetch(OutboundError::InvalidUrl(_) | OutboundError::PrivateAddress(_)) => {
                ApiError::validation(e.to_string())
            }
            SendError::Fetch(
                OutboundError::Timeout | OutboundError::Status(_) | OutboundError::Network(_),
            ) => ApiError::new(StatusCode::BAD_GATEWAY, "media_fetch_failed", e.to_string()),
            SendError::Domain(e) => e.into(),
            SendError::Internal(detail) => ApiError::internal(detail),
        }
    }
}

impl From<ContactError> for ApiError {
    fn from(e: ContactError) -> Self {
        match e {
            ContactError::Invalid(msg) => ApiError::validation(msg),
            ContactError::NotOnWhatsApp(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_on_whatsapp", e.to_string())
            }
            ContactError::Store(e) => e.into(),
            ContactError::Domain(e) => e.into(),
        }
    }
}

impl From<ProviderSwitchError> for ApiError {
    fn from(e: ProviderSwitchError) -> Self {
        let message = e.to_string();
        match e {
            ProviderSwitchError::UnknownProvider(_) => ApiError::validation(message),
            ProviderSwitchError::ClusterMode => ApiError::conflict("cluster_mode", message),
            ProviderSwitchError::AlreadyActive(_) => ApiError::conflict("already_active", message),
            ProviderSwitchError::NotConfigured => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "database_url_missing",
                message,
            ),
            ProviderSwitchError::Unreachable { .. }
            | ProviderSwitchError::CopyUnavailable { .. } => ApiError {
                code: "database_unavailable",
                ..ApiError::unavailable(message)
            },
            ProviderSwitchError::CopyFailed { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "switch_failed", message)
            }
            ProviderSwitchError::NotRecorded { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "switch_failed", message)
            }
        }
    }
}

impl From<WabaError> for ApiError {
    fn from(e: WabaError) -> Self {
        match e {
            WabaError::NotConfigured => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "waba_not_configured",
                e.to_string(),
            ),
            WabaError::Missing(_) => ApiError::bad_request(e.to_string()),
            WabaError::PhoneNumberInUse => ApiError::conflict("phone_number_in_use", e.to_string()),
            WabaError::ChatNotFound(_) | WabaError::MessageNotFound(_) => {
                ApiError::not_found(e.to_string())
            }
            WabaError::MediaUrl(_) => ApiError::validation(e.to_string()),
            WabaError::AssignedToOther(_) => ApiError::conflict("chat_assigned", e.to_string()),
            WabaError::NotYourChat(_) => ApiError::forbidden(e.to_string()),
            WabaError::UnknownAssignee(_) => ApiError::bad_request(e.to_string()),
            WabaError::UnknownVerifyToken => ApiError::forbidden(e.to_string()),
            WabaError::BadSignature => ApiError::unauthorized(e.to_string()),
            WabaError::OutsideWindow => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "outside_24h_window",
                e.to_string(),
            ),
            WabaError::Graph(GraphError::ReEngagement(m)) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "outside_24h_window", m)
            }
            WabaError::Graph(GraphError::Throttled(m)) => ApiError {
                retry_after: Some(5),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "waba_rate_limited", m)
            },
            WabaError::Graph(GraphError::BadToken(m)) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "waba_token_invalid", m)
            }
            WabaError::Graph(GraphError::Rejected { code, message }) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "waba_error",
                format!("Meta refused the request (code {code}): {message}"),
            ),
            WabaError::Graph(GraphError::Unavailable(m)) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "waba_unavailable", m)
            }
            WabaError::Graph(GraphError::TooLarge(m)) => ApiError::payload_too_large(m),
            WabaError::NoMedia(_) => ApiError::not_found(e.to_string()),
            WabaError::UnsupportedType(_) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_media_type",
                e.to_string(),
            ),
            WabaError::TooLarge(m) => ApiError::payload_too_large(m),
            WabaError::MediaPending(_) => ApiError {
                code: "media_pending",
                retry_after: Some(2),
                ..ApiError::unavailable(e.to_string())
            },
            WabaError::MediaFailed(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "media_fetch_failed", e.to_string())
            }
            WabaError::Sealed(detail) => ApiError::internal(detail),
            WabaError::Store(e) => e.into(),
            WabaError::Domain(e) => e.into(),
        }
    }
}

impl From<LimitReached> for ApiError {
    fn from(reached: LimitReached) -> Self {
        ApiError::too_many_requests(
            "limit_exceeded",
            format!(
                "usage limit reached ({}); it resets at the start of the next period",
                reached.limits.join(", ")
            ),
            reached.retry_after,
        )
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
