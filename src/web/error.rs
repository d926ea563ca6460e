//! API errors: a status code and a JSON body saying what was wrong and,
//! where a request field caused it, which one.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::ledger::Lookup;
use crate::node::views::ErrorView;
use crate::node::{ActionError, SubmitError};

/// An error the API returns.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error: error.into(),
            field: None,
        }
    }

    pub fn bad(field: &str, error: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error: error.into(),
            field: Some(field.to_string()),
        }
    }

    pub fn not_found(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, error)
    }

    /// A JSON body that could not be taken: 413 when it was over the size
    /// limit, 400 otherwise, saying `what` was expected.
    pub fn json(field: &str, what: &str, e: &axum::extract::rejection::JsonRejection) -> ApiError {
        let too_large = e.status() == StatusCode::PAYLOAD_TOO_LARGE;
        ApiError {
            status: if too_large {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            },
            error: format!("{what}: {}", e.body_text()),
            field: Some(field.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorView {
            error: self.error,
            field: self.field,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<Lookup> for ApiError {
    fn from(e: Lookup) -> ApiError {
        let status = match e {
            Lookup::NotFound(_) => StatusCode::NOT_FOUND,
            Lookup::Ambiguous { .. } => StatusCode::CONFLICT,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> ApiError {
        if e.internal {
            return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.message);
        }
        ApiError::bad(e.field, e.message)
    }
}

impl From<crate::node::sleep::SleepError> for ApiError {
    fn from(e: crate::node::sleep::SleepError) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> ApiError {
        match e {
            ActionError::Lookup(l) => l.into(),
            ActionError::NotApplicable { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            ActionError::Node(n) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, n.to_string()),
        }
    }
}
