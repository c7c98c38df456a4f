//! The read token (SDP files, playlists, segments, recordings: `?token=` or a bearer
//! header) and the admin token (the control API: a bearer header).

use super::error::ApiError;
use crate::gateway::Gateway;
use crate::signalling::auth::token_matches;
use crate::signalling::problem::Refusal;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use headers::authorization::Bearer;
use headers::{Authorization, HeaderMapExt};
use std::sync::Arc;

pub fn query_token(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
}

/// With `auth.read_token` set, media (SDP, HLS, recordings) needs it, as `?token=` or
/// a bearer header.
pub async fn require_read_token(
    State(gateway): State<Arc<Gateway>>,
    request: Request,
    next: Next,
) -> Response {
    let configured = &gateway.config.auth.read_token;
    if configured.is_empty() || request.method() == Method::OPTIONS {
        return next.run(request).await;
    }
    let bearer = bearer(request.headers());
    let presented = query_token(request.uri().query()).or(bearer.as_deref());
    if token_matches(configured, presented) {
        next.run(request).await
    } else {
        ApiError::new(
            Refusal::Unauthorized,
            "this needs the read token, as ?token= or a bearer header",
        )
        .into_response()
    }
}

/// With `auth.admin_token` set, the control API needs it as a bearer header.
pub async fn require_admin_token(
    State(gateway): State<Arc<Gateway>>,
    request: Request,
    next: Next,
) -> Response {
    let configured = &gateway.config.auth.admin_token;
    let presented = bearer(request.headers());
    if configured.is_empty() || token_matches(configured, presented.as_deref()) {
        next.run(request).await
    } else {
        ApiError::new(
            Refusal::Unauthorized,
            "the control API needs the admin token as a bearer header",
        )
        .into_response()
    }
}

pub fn header(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .typed_get::<Authorization<Bearer>>()
        .map(|auth| auth.token().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_tokens() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            bearer(&headers)
        };
        assert_eq!(with("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(with("bearer abc").as_deref(), Some("abc"));
        assert_eq!(with("Basic abc"), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
