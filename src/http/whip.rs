//! WHIP over HTTP: the handlers pass the headers and body to `signalling::whip` and turn
//! its answers into responses; ICE servers are advertised as `Link` headers.

use super::auth::{bearer, caller_of, header};
use super::error::{ApiError, stream_name};
use super::state::AppState;
use crate::access::Caller;
use crate::gateway::Gateway;
use crate::ice_servers::{self, Turn};
use crate::name::StreamName;
use crate::signalling::problem::Refusal;
use crate::signalling::whip::{self, Whip};
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::SystemTime;

fn body_text(body: &Bytes) -> Result<String, ApiError> {
    String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::new(Refusal::BadSdp, "the body is not UTF-8 text"))
}

/// The ICE servers as `Link` headers (RFC 9725 section 4.6), for a publisher of
/// `stream`: TURN servers (with credentials minted for it) once it has shown that it may
/// publish, or where publishing needs no token.
fn with_ice_servers(
    gateway: &Gateway,
    stream: Option<&StreamName>,
    authorized: bool,
    headers: &mut HeaderMap,
) {
    let turn = if authorized || !gateway.access.publish_needs_token(stream) {
        Turn::Given
    } else {
        Turn::Withheld
    };
    let who = stream.map_or("publisher", StreamName::as_str);
    let servers = ice_servers::for_publisher(&gateway.config.webrtc, who, turn, SystemTime::now());
    for link in ice_servers::links(&servers) {
        if let Ok(value) = HeaderValue::from_str(&link) {
            headers.append(header::LINK, value);
        }
    }
}

/// Counts every WHIP answer by status.
pub async fn count(State(gateway): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    gateway.metrics.whip_request(response.status().as_u16());
    response
}

pub async fn create(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    extensions: Extensions,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = stream_name(&name)?;
    let offer = body_text(&body)?;
    let created = state
        .whip
        .create(
            &name,
            header(&headers, header::CONTENT_TYPE),
            &Caller {
                token: bearer(&headers),
                ..caller_of(&headers, &uri, &extensions)
            },
            offer,
        )
        .await
        .map_err(|e| ApiError(e.problem(&name)))?;
    let mut response = (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, whip::SDP.to_string()),
            (header::LOCATION, created.location),
            (header::ETAG, created.etag),
        ],
        created.answer,
    )
        .into_response();
    with_ice_servers(&state.gateway, Some(&name), true, response.headers_mut());
    Ok(response)
}

pub async fn patch(
    State(whip): State<Arc<Whip>>,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = stream_name(&name)?;
    let fragment = body_text(&body)?;
    whip.patch(
        &name,
        &id,
        header(&headers, header::CONTENT_TYPE),
        header(&headers, header::IF_MATCH),
        bearer(&headers).as_deref(),
        &fragment,
    )
    .await
    .map_err(|e| ApiError(e.problem(&name)))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn delete(
    State(whip): State<Arc<Whip>>,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = stream_name(&name)?;
    whip.delete(&name, &id, bearer(&headers).as_deref())
        .await
        .map_err(|e| ApiError(e.problem(&name)))?;
    Ok(StatusCode::OK.into_response())
}

/// CORS preflight and ICE server discovery; needs no token (and gets no TURN
/// credentials where publishing needs one).
pub async fn options(State(gateway): State<Arc<Gateway>>, uri: Uri) -> Response {
    let stream = uri
        .path()
        .trim_start_matches("/whip/")
        .split('/')
        .next()
        .and_then(|name| StreamName::new(name).ok());
    let mut response = (
        StatusCode::NO_CONTENT,
        [
            (header::HeaderName::from_static("accept-post"), whip::SDP),
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                "POST, PATCH, DELETE, OPTIONS",
            ),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "Authorization, Content-Type, If-Match",
            ),
        ],
    )
        .into_response();
    with_ice_servers(&gateway, stream.as_ref(), false, response.headers_mut());
    response
}
