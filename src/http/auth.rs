//! Who may read (SDP files, playlists, segments, recordings: `access` with the token
//! of `?token=` or a bearer header) and the admin token (the control API: a bearer
//! header).

use super::error::ApiError;
use crate::access::{Caller, token_matches};
use crate::gateway::Gateway;
use crate::media::output::record;
use crate::name::StreamName;
use crate::signalling::problem::{Problem, Refusal};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Extensions, HeaderMap, Method, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use headers::authorization::Bearer;
use headers::{Authorization, HeaderMapExt};
use std::net::SocketAddr;
use std::sync::Arc;

pub fn query_token(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
}

/// Media (SDP, HLS, recordings) as `access` rules it: the read token, a JSON Web Token
/// with a `read` claim (either as `?token=` or a bearer header), or the read hook.
pub async fn require_read_access(
    State(gateway): State<Arc<Gateway>>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() == Method::OPTIONS {
        return next.run(request).await;
    }
    // As the handlers read it: decoded (`%2E` is a dot to them too).
    let path = percent_encoding::percent_decode_str(request.uri().path())
        .decode_utf8_lossy()
        .into_owned();
    // A path that names no stream's file is closed like the list of every recording:
    // nothing is served past the check unless it names what it reads.
    let stream = read_stream(&path).unwrap_or(None);
    if let Some(name) = &stream
        && StreamName::new(name).is_err()
    {
        return ApiError(Problem::bad_name()).into_response();
    }
    let caller = caller(&request);
    match gateway.access.read(stream.as_deref(), &path, &caller).await {
        Ok(()) => next.run(request).await,
        Err(denied) => ApiError(Problem::denied(&denied)).into_response(),
    }
}

/// The stream a media path reads: `/streams/NAME/...`, a recording's stream, or
/// `Some(None)` for the list of every recording; `None` for no stream's file.
pub fn read_stream(path: &str) -> Option<Option<String>> {
    let mut parts = path.trim_start_matches('/').split('/');
    match (parts.next(), parts.next()) {
        (Some("streams"), Some(name)) => Some(Some(name.to_string())),
        (Some("recordings"), None | Some("")) => Some(None),
        (Some("recordings"), Some(file)) => {
            record::parse_name(file).map(|(stream, _)| Some(stream))
        }
        _ => None,
    }
}

/// Who asks, as the hooks are told: the token (`?token=` or a bearer header), the
/// client's address, its `User-Agent` and the query.
pub fn caller(request: &Request) -> Caller {
    caller_of(request.headers(), request.uri(), request.extensions())
}

/// [`caller`] from a request's parts.
pub fn caller_of(headers: &HeaderMap, uri: &Uri, extensions: &Extensions) -> Caller {
    let query = uri.query();
    let token = query_token(query)
        .map(String::from)
        .or_else(|| bearer(headers));
    Caller {
        token,
        remote_addr: extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.to_string())
            .unwrap_or_default(),
        user_agent: header(headers, header::USER_AGENT)
            .unwrap_or_default()
            .to_string(),
        query: query.unwrap_or_default().to_string(),
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
