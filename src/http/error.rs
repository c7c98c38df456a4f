//! API errors: a [`Problem`] from the one table (`signalling::problem`), answered as JSON
//! `{"error": "<token>", "message": "<sentence>"}` with its status. Handlers name the kind
//! of refusal, never a status.

use crate::name::StreamName;
use crate::signalling::problem::{Problem, Refusal};
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub struct ApiError(pub Problem);

impl ApiError {
    pub fn new(refusal: Refusal, message: impl Into<String>) -> Self {
        Self(refusal.because(message))
    }

    pub fn no_stream(name: &str) -> Self {
        Self(Problem::no_stream(name))
    }

    pub fn no_file(file: &str) -> Self {
        Self(Problem::no_file(file))
    }
}

impl From<Problem> for ApiError {
    fn from(problem: Problem) -> Self {
        Self(problem)
    }
}

/// A stream name from a path segment, or a 400.
pub fn stream_name(text: &str) -> Result<StreamName, ApiError> {
    StreamName::new(text).map_err(|_| ApiError(Problem::bad_name()))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let Problem {
            status,
            error,
            message,
        } = self.0;
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({"error": error, "message": message});
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
