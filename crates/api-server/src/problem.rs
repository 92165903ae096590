//! Errors as `application/problem+json` (RFC 9457): what was wrong and what to do about it.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An error answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`about:blank` when the status says it all).
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's short text.
    pub title: String,
    pub status: u16,
    /// What was wrong, and how to fix it.
    pub detail: String,
}

/// An error of a handler; becomes a [`Problem`].
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: String,
    /// Seconds before a retry makes sense (429, 503).
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self {
            retry_after: Some(5),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
        }
    }

    pub fn too_many(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many requests from your address; try again in {retry_after} s"),
            )
        }
    }

    /// A backend's answer, in words for the caller. `what` names the thing asked for
    /// ("workspace alice/web"). Internal failures are logged and not shown in detail.
    pub fn from_status(what: &str, status: &tonic::Status) -> Self {
        use tonic::Code;
        let message = status.message();
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => Self::bad_request(message),
            Code::NotFound => Self::not_found(format!("{what} does not exist")),
            Code::AlreadyExists => Self::conflict(message),
            Code::FailedPrecondition | Code::Aborted => Self::conflict(message),
            Code::PermissionDenied => Self::forbidden(message),
            Code::Unauthenticated => Self::unauthorized(message),
            Code::ResourceExhausted => Self::new(StatusCode::TOO_MANY_REQUESTS, message),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                tracing::warn!(%what, code = ?status.code(), error = %message, "backend unavailable");
                Self::unavailable(format!(
                    "a service behind the API is not available right now ({message}); try again shortly"
                ))
            }
            _ => {
                tracing::error!(%what, code = ?status.code(), error = %message, "backend failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the request failed inside k8shell; the server log has the details",
                )
            }
        }
    }

    pub fn problem(&self) -> Problem {
        Problem {
            kind: "about:blank".to_owned(),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Rejections of axum's extractors (bad JSON, bad query, bad path) as problems too.
impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        Self::new(rejection.status(), rejection.body_text())
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        Self::new(rejection.status(), rejection.body_text())
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::PathRejection) -> Self {
        Self::new(rejection.status(), rejection.body_text())
    }
}
