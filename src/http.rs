//! The HTTP server (axum): pages from `www/`, health, WebSocket signalling, the stream API,
//! the per-stream SDP files and HLS playlists and segments, and the recordings. API errors
//! are JSON `{"error", "message"}`.

use crate::gateway::Gateway;
use crate::media::recording;
use crate::metrics;
use crate::registry::valid_name;
use crate::session::{EndReason, SessionCommand, SessionHandle};
use crate::signalling::websocket::{Connection, Incoming};
use crate::signalling::whip::{self, Whip, WhipError};
use crate::signalling::{bearer, token_matches};
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, FromRef, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use tokio::sync::mpsc;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::cors::{Any, CorsLayer};
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeaderLayer;

/// An API error: a status, a token and a sentence.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error,
            message: message.into(),
        }
    }

    fn bad_name() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-stream-name",
            "stream names are 1 to 64 letters, digits, '_' or '-'",
        )
    }

    fn no_stream(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "no-such-stream",
            format!("no live stream named {name}"),
        )
    }
}

impl From<WhipError> for ApiError {
    fn from(error: WhipError) -> Self {
        let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
        ApiError::new(status, error.token(), error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.error, "message": self.message});
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// What the handlers share.
#[derive(Clone)]
struct AppState {
    gateway: Arc<Gateway>,
    whip: Arc<Whip>,
}

impl FromRef<AppState> for Arc<Gateway> {
    fn from_ref(state: &AppState) -> Self {
        state.gateway.clone()
    }
}

impl FromRef<AppState> for Arc<Whip> {
    fn from_ref(state: &AppState) -> Self {
        state.whip.clone()
    }
}

pub fn router(gateway: Arc<Gateway>) -> Router {
    let state = AppState {
        whip: Whip::new(gateway.clone()),
        gateway: gateway.clone(),
    };
    // Pages are revalidated on every load, so that an upgrade is seen at once.
    let www = ServiceBuilder::new()
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        ))
        .service(ServeDir::new(&gateway.config.http.www_dir));
    // Players on other origins (hls.js pages) fetch the media.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::HEAD])
        .allow_headers(Any)
        .expose_headers([header::CONTENT_LENGTH, header::CONTENT_RANGE]);
    let media = Router::new()
        .route("/streams/{name}/stream.sdp", get(stream_sdp))
        .route("/streams/{name}/{file}", get(stream_file))
        .route("/recordings", get(list_recordings))
        .route("/recordings/{file}", get(recording_file))
        .layer(middleware::from_fn_with_state(
            gateway.clone(),
            require_read_token,
        ))
        .layer(cors);
    let control = Router::new()
        .route("/api/streams/{name}", delete(stop_stream))
        .route(
            "/api/streams/{name}/recording",
            post(start_recording).delete(stop_recording),
        )
        .route("/api/streams/{name}/rtp", post(add_rtp_destination))
        .route(
            "/api/streams/{name}/rtp/{id}",
            delete(remove_rtp_destination),
        )
        .layer(middleware::from_fn_with_state(
            gateway.clone(),
            require_admin_token,
        ));
    // WHIP clients in browsers read the answer's headers from another origin.
    let whip_cors = ServiceBuilder::new()
        .layer(SetResponseHeaderLayer::overriding(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Location, ETag, Link, Accept-Post"),
        ));
    let whip = Router::new()
        .route("/whip/{name}", post(whip_create).options(whip_options))
        .route(
            "/whip/{name}/{id}",
            patch(whip_patch).delete(whip_delete).options(whip_options),
        )
        .layer(DefaultBodyLimit::max(256 * 1024))
        .layer(middleware::from_fn_with_state(gateway.clone(), count_whip))
        .layer(whip_cors);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/ws", get(websocket))
        .route("/api/streams", get(list_streams))
        .route("/api/streams/{name}", get(get_stream))
        .route("/metrics", get(render_metrics))
        .route("/hls.js", get(hls_js))
        .merge(control)
        .merge(media)
        .merge(whip)
        .fallback_service(www)
        .with_state(state)
}

async fn list_streams(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    Json(gateway.registry().list())
}

async fn get_stream(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    if !valid_name(&name) {
        return Err(ApiError::bad_name());
    }
    let info = gateway.registry().get(&name).map(|s| s.info.clone());
    info.map(Json).ok_or_else(|| ApiError::no_stream(&name))
}

async fn stream_sdp(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if !valid_name(&name) {
        return Err(ApiError::bad_name());
    }
    if !gateway.config.rtp.enabled {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "rtp-disabled",
            "RTP output is disabled (rtp.enabled = false)",
        ));
    }
    let sdp = match gateway.registry().get(&name) {
        Some(entry) if entry.is_active() => entry.sdp.clone(),
        _ => return Err(ApiError::no_stream(&name)),
    };
    let sdp = sdp.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            format!("stream {name} has not produced its first frame yet"),
        )
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/sdp"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        sdp,
    )
        .into_response())
}

/// HLS playlists and segments of a live or lingering stream.
async fn stream_file(
    State(gateway): State<Arc<Gateway>>,
    Path((name, file)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    if !valid_name(&name) {
        return Err(ApiError::bad_name());
    }
    let (stem, extension) = file.rsplit_once('.').unwrap_or((&file, ""));
    let content_type = match extension {
        "m3u8" => "application/vnd.apple.mpegurl",
        "ts" => "video/mp2t",
        _ => return Err(no_file(&file)),
    };
    if !valid_name(stem) {
        return Err(no_file(&file));
    }
    let dir = match gateway.registry().get(&name) {
        None => return Err(ApiError::no_stream(&name)),
        Some(entry) => entry.hls_dir.clone(),
    };
    let Some(dir) = dir else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "hls-disabled",
            format!("stream {name} has no HLS output"),
        ));
    };
    match tokio::fs::read(dir.join(&file)).await {
        Ok(mut body) => {
            // Players cannot add a header to the URIs a playlist names: they get the
            // read token the playlist came with.
            if extension == "m3u8"
                && let Some(token) = query_token(query.as_deref())
            {
                body = with_token(&String::from_utf8_lossy(&body), token).into_bytes();
            }
            // Segment names are unique to one output: they never change once written.
            let cache = if extension == "ts" {
                "public, max-age=86400, immutable"
            } else {
                "no-cache"
            };
            Ok((
                [
                    (header::CONTENT_TYPE, content_type),
                    (header::CACHE_CONTROL, cache),
                ],
                body,
            )
                .into_response())
        }
        Err(_) if extension == "m3u8" => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            format!("stream {name} has no complete HLS segment yet"),
        )),
        Err(_) => Err(no_file(&file)),
    }
}

fn query_token(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
}

/// A playlist whose URIs carry `?token=`.
fn with_token(playlist: &str, token: &str) -> String {
    playlist
        .lines()
        .map(|line| {
            if line.is_empty() || line.starts_with('#') {
                line.to_string()
            } else {
                format!("{line}?token={token}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// With `auth.read_token` set, media (SDP, HLS, recordings) needs it, as `?token=` or
/// a bearer header.
async fn require_read_token(
    State(gateway): State<Arc<Gateway>>,
    request: Request,
    next: Next,
) -> Response {
    let configured = &gateway.config.auth.read_token;
    if configured.is_empty() || request.method() == Method::OPTIONS {
        return next.run(request).await;
    }
    let presented = query_token(request.uri().query())
        .or_else(|| bearer(header(request.headers(), header::AUTHORIZATION)));
    if token_matches(configured, presented) {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this needs the read token, as ?token= or a bearer header",
        )
        .into_response()
    }
}

/// With `auth.admin_token` set, the control API needs it as a bearer header.
async fn require_admin_token(
    State(gateway): State<Arc<Gateway>>,
    request: Request,
    next: Next,
) -> Response {
    let configured = &gateway.config.auth.admin_token;
    let presented = bearer(header(request.headers(), header::AUTHORIZATION));
    if configured.is_empty() || token_matches(configured, presented) {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the control API needs the admin token as a bearer header",
        )
        .into_response()
    }
}

/// The running session of a live stream.
fn live_session(gateway: &Gateway, name: &str) -> Result<SessionHandle, ApiError> {
    if !valid_name(name) {
        return Err(ApiError::bad_name());
    }
    gateway
        .registry()
        .get(name)
        .filter(|e| e.is_active())
        .and_then(|e| e.handle.clone())
        .ok_or_else(|| ApiError::no_stream(name))
}

fn conflict(message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "refused", message)
}

async fn stop_stream(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let session = live_session(&gateway, &name)?;
    session.stop(EndReason::Stopped).await;
    Ok(Json(serde_json::json!({"stream": name, "state": "ending"})).into_response())
}

async fn start_recording(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let session = live_session(&gateway, &name)?;
    let file = session
        .ask(SessionCommand::StartRecording)
        .await
        .map_err(conflict)?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"stream": name, "recording": file})),
    )
        .into_response())
}

async fn stop_recording(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let session = live_session(&gateway, &name)?;
    let file = session
        .ask(SessionCommand::StopRecording)
        .await
        .map_err(conflict)?;
    Ok(
        Json(serde_json::json!({"stream": name, "recording": file, "finished": true}))
            .into_response(),
    )
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RtpDestinationRequest {
    host: String,
    video_port: u16,
    audio_port: u16,
}

/// Checks an extra RTP destination: an IP address (unicast or multicast), and even
/// ports from 1024 whose RTCP ports (+1) do not collide.
fn check_destination(request: &RtpDestinationRequest) -> Result<std::net::IpAddr, ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "bad-destination", message);
    let host: std::net::IpAddr = request.host.parse().map_err(|_| {
        bad(format!(
            "host must be an IP address, got {:?}",
            request.host
        ))
    })?;
    let unusable =
        host.is_unspecified() || matches!(host, std::net::IpAddr::V4(v4) if v4.is_broadcast());
    if unusable {
        return Err(bad(format!("{host} cannot receive RTP")));
    }
    for (key, port) in [
        ("video_port", request.video_port),
        ("audio_port", request.audio_port),
    ] {
        if port < 1024 || port % 2 == 1 || port == u16::MAX - 1 {
            return Err(bad(format!(
                "{key} must be an even port from 1024 to 65532, got {port}"
            )));
        }
    }
    if request.video_port.abs_diff(request.audio_port) < 2 {
        return Err(bad(
            "video_port and audio_port (and their RTCP ports) collide".into(),
        ));
    }
    Ok(host)
}

async fn add_rtp_destination(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let session = live_session(&gateway, &name)?;
    let request: RtpDestinationRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            format!("invalid request: {e}"),
        )
    })?;
    let host = check_destination(&request)?;
    let destination = session
        .ask(|reply| SessionCommand::AddRtpDestination {
            host,
            video_port: request.video_port,
            audio_port: request.audio_port,
            reply,
        })
        .await
        .map_err(conflict)?;
    Ok((StatusCode::CREATED, Json(destination)).into_response())
}

async fn remove_rtp_destination(
    State(gateway): State<Arc<Gateway>>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let session = live_session(&gateway, &name)?;
    session
        .ask(|reply| SessionCommand::RemoveRtpDestination { id, reply })
        .await
        .map_err(|message| ApiError::new(StatusCode::NOT_FOUND, "no-such-destination", message))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// hls.js for the dashboard, from where setup installed it.
async fn hls_js(State(gateway): State<Arc<Gateway>>) -> Result<Response, ApiError> {
    let script = tokio::fs::read(&gateway.config.http.hls_js)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no-hls-js",
                "hls.js is not installed (run `make run`, or `npm install`)",
            )
        })?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/javascript"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        script,
    )
        .into_response())
}

async fn render_metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    let streams = gateway.registry().list();
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        gateway.metrics.render(&streams),
    )
        .into_response()
}

fn no_file(file: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no-such-file",
        format!("no file named {file:?}"),
    )
}

async fn list_recordings(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    let dir = gateway.config.record.dir.clone();
    let gateway_for_list = gateway.clone();
    let files = tokio::task::spawn_blocking(move || {
        recording::list(&dir, |file| gateway_for_list.registry().is_recording(file))
    })
    .await
    .unwrap_or_default();
    Json(files)
}

/// One recording, with `Range` support. Only names of recordings are served: never a
/// path outside `record.dir`.
async fn recording_file(
    State(gateway): State<Arc<Gateway>>,
    Path(file): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    if recording::parse_name(&file).is_none() {
        return Err(no_file(&file));
    }
    let path = gateway.config.record.dir.join(&file);
    if !path.is_file() {
        return Err(no_file(&file));
    }
    let content_type = match file.rsplit_once('.').map(|(_, e)| e) {
        Some("mp4") => "video/mp4",
        Some("mkv") => "video/x-matroska",
        _ => "video/mp2t",
    };
    let service = ServeFile::new_with_mime(path, &content_type.parse().expect("a MIME type"));
    match service.oneshot(request).await {
        Ok(response) => Ok(response.into_response()),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "read-failed",
            format!("cannot read {file}: {e}"),
        )),
    }
}

fn header(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn body_text(body: &Bytes) -> Result<String, ApiError> {
    String::from_utf8(body.to_vec()).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-sdp",
            "the body is not UTF-8 text",
        )
    })
}

fn with_ice_servers(gateway: &Gateway, headers: &mut HeaderMap) {
    for link in whip::ice_server_links(&gateway.config.webrtc) {
        if let Ok(value) = HeaderValue::from_str(&link) {
            headers.append(header::LINK, value);
        }
    }
}

/// Counts every WHIP answer by status.
async fn count_whip(State(gateway): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    gateway.metrics.whip_request(response.status().as_u16());
    response
}

async fn whip_create(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let offer = body_text(&body)?;
    let created = state
        .whip
        .create(
            &name,
            header(&headers, header::CONTENT_TYPE),
            header(&headers, header::AUTHORIZATION),
            offer,
        )
        .await?;
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
    with_ice_servers(&state.gateway, response.headers_mut());
    Ok(response)
}

async fn whip_patch(
    State(whip): State<Arc<Whip>>,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let fragment = body_text(&body)?;
    whip.patch(
        &name,
        &id,
        header(&headers, header::CONTENT_TYPE),
        header(&headers, header::IF_MATCH),
        header(&headers, header::AUTHORIZATION),
        &fragment,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn whip_delete(
    State(whip): State<Arc<Whip>>,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    whip.delete(&name, &id, header(&headers, header::AUTHORIZATION))
        .await?;
    Ok(StatusCode::OK.into_response())
}

/// CORS preflight and ICE server discovery; needs no token.
async fn whip_options(State(gateway): State<Arc<Gateway>>) -> Response {
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
    with_ice_servers(&gateway, response.headers_mut());
    response
}

async fn websocket(State(gateway): State<Arc<Gateway>>, upgrade: WebSocketUpgrade) -> Response {
    // The transport accepts somewhat more than the limit, so that an oversized message
    // gets a signalling error instead of a dropped connection.
    let limit = gateway.config.limits.max_message_bytes as usize;
    upgrade
        .max_message_size(limit.saturating_mul(4))
        .on_upgrade(move |socket| {
            let connections = gateway.connections.clone();
            connections.track_future(serve_socket(gateway, socket))
        })
}

async fn serve_socket(gateway: Arc<Gateway>, socket: WebSocket) {
    let (mut sink, stream) = socket.split();
    let (outgoing, mut to_send) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(text) = to_send.recv().await {
            if sink.send(Message::Text(text.into())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let incoming = stream
        .take_while(|m| std::future::ready(matches!(m, Ok(m) if !matches!(m, Message::Close(_)))))
        .filter_map(|m| {
            std::future::ready(match m {
                Ok(Message::Text(text)) => Some(Incoming::Text(text.to_string())),
                Ok(Message::Binary(_)) => Some(Incoming::Binary),
                _ => None,
            })
        });
    Connection::new(gateway, outgoing).run(incoming).await;
    // The connection is gone, and with it the sender: the writer sends what is left.
    if tokio::time::timeout(std::time::Duration::from_secs(1), writer)
        .await
        .is_err()
    {
        tracing::debug!("a signalling socket did not take its last messages");
    }
}
