//! The one shape of every error the REST API answers with, shared by the router (which
//! writes it) and [`RootClient`](crate::RootClient) (which reads it).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use edgeio_core::api::ApiError;
use edgeio_core::job::FieldError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The stable codes of [`ErrorInfo::code`], one per kind of failure, for programs to match.
pub mod code {
    /// The request breaks rules (400).
    pub const INVALID: &str = "invalid";
    /// No such job, cluster or route (404).
    pub const NOT_FOUND: &str = "not_found";
    /// The request clashes with what exists, e.g. a second live job of one name (409).
    pub const CONFLICT: &str = "conflict";
    /// The engine cannot do this (501).
    pub const UNSUPPORTED: &str = "unsupported";
    /// A part the answer needs cannot be reached now; retry later (503).
    pub const UNAVAILABLE: &str = "unavailable";
    /// The body is larger than the limit (413).
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    /// The body's content type is missing or not one the route reads (415).
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    /// No token, or one that proves nobody (401).
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    /// The token's role does not allow this (403).
    pub const FORBIDDEN: &str = "forbidden";
    /// The route exists, the method does not (405).
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
}

/// Every error body of the REST API:
/// `{"error": {"code": "...", "message": "...", "details": [{"field", "value", "rule"}]}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error.
    pub error: ErrorInfo,
}

/// What went wrong: a stable code, one line for people, and the field-level problems.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// One of the constants in [`code`] (clients should accept others, for later versions).
    pub code: String,
    /// One line for people.
    pub message: String,
    /// Each problem with a field of the request; empty when the error is not about fields.
    #[serde(default)]
    pub details: Vec<ErrorDetail>,
}

/// One problem with one field of a request: the field, the value found, the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Dotted path in the descriptor (`requirements.memory`), a query parameter (`tail`), or
    /// `body` for the body as a whole.
    pub field: String,
    /// The value found, as written, or `(missing)`.
    pub value: String,
    /// The rule it breaks.
    pub rule: String,
}

impl ErrorResponse {
    /// An error with `code`, `message` and `details`.
    pub fn new(
        code: impl Into<String>,
        message: impl Into<String>,
        details: Vec<ErrorDetail>,
    ) -> ErrorResponse {
        ErrorResponse {
            error: ErrorInfo {
                code: code.into(),
                message: message.into(),
                details,
            },
        }
    }
}

impl ErrorDetail {
    /// A detail about `field`.
    pub fn new(
        field: impl Into<String>,
        value: impl Into<String>,
        rule: impl Into<String>,
    ) -> ErrorDetail {
        ErrorDetail {
            field: field.into(),
            value: value.into(),
            rule: rule.into(),
        }
    }
}

impl From<&FieldError> for ErrorDetail {
    fn from(e: &FieldError) -> ErrorDetail {
        ErrorDetail::new(e.path.clone(), e.value.clone(), e.rule.clone())
    }
}

impl fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.field, self.value, self.rule)
    }
}

/// The message, then each detail as `field: value: rule`, on one line (`; ` between them).
impl fmt::Display for ErrorResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.error.message)?;
        for (i, detail) in self.error.details.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "{detail}")?;
        }
        Ok(())
    }
}

/// An error answer of the router: a status and the JSON body.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: StatusCode,
    pub(crate) body: ErrorResponse,
}

impl Failure {
    pub(crate) fn new(
        status: StatusCode,
        code: &str,
        message: impl Into<String>,
        details: Vec<ErrorDetail>,
    ) -> Failure {
        Failure {
            status,
            body: ErrorResponse::new(code, message, details),
        }
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Failure {
        let status = match &e {
            ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Unsupported { .. } => StatusCode::NOT_IMPLEMENTED,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            // A variant added to core after this router was written: the engine's failure,
            // not the client's, so it is reported as the server's.
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let details = e.details().iter().map(ErrorDetail::from).collect();
        Failure::new(status, e.code(), e.to_string(), details)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, error = %self.body, "api request failed");
        } else {
            tracing::debug!(status = %self.status, error = %self.body, "api request refused");
        }
        (self.status, Json(self.body)).into_response()
    }
}
