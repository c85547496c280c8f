//! Errors of the domain boundary: what storage and the actors report to the use cases
//! above them. None of them knows HTTP; the server's edge maps each variant once.

use thiserror::Error;

/// A storage backend failure.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum StoreError {
    /// A unique constraint was violated (for example a second user with the same email).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend cannot be reached or refused to work; retrying later may succeed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded: a bug or a corrupted row.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

/// What every storage method returns.
pub type StoreResult<T> = Result<T, StoreError>;

/// A request-level failure reported by an actor or domain service. The actor keeps
/// running; the HTTP edge maps each variant to one status code.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum DomainError {
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state; `code` is the machine code
    /// (`already_connected`, `not_connected`, …).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{0}")]
    Invalid(String),
    /// The actor is restarting or stopped; the caller may retry shortly.
    #[error("{0}")]
    Unavailable(String),
    /// The actor did not answer in time.
    #[error("{0}")]
    Timeout(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The recipient's number is not on WhatsApp.
    #[error("{0} is not on WhatsApp")]
    NotOnWhatsApp(String),
    /// The engine (WhatsApp connection) failed to carry out the request.
    #[error("{0}")]
    Engine(String),
    /// Well-formed, but WhatsApp's rules do not allow it (editing someone else's
    /// message, or after the edit window); `code` is the machine code.
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    /// WhatsApp refused: the account may not do this (a group change by a non-admin).
    #[error("{0}")]
    Forbidden(String),
}

impl DomainError {
    pub fn refused(code: &'static str, message: impl Into<String>) -> Self {
        DomainError::Refused {
            code,
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        DomainError::Conflict {
            code,
            message: message.into(),
        }
    }
}
