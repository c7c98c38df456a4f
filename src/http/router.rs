//! The routes and their layers: pages from `www/`, health, signalling, the APIs, the
//! media files (behind the read token, with CORS) and WHIP (with its CORS headers).

use super::error::ApiError;
use super::state::AppState;
use super::{auth, control, forward, gather, media_files, placement, websocket, whip};
use crate::gateway::Gateway;
use crate::session::Sessions;
use crate::signalling::whip::Whip;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use std::sync::Arc;
use std::time::Duration;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::cors::{Any, CorsLayer};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;

/// Largest WHIP request body (an SDP offer or fragment).
const WHIP_BODY_LIMIT: usize = 256 * 1024;

pub fn router(sessions: Arc<Sessions>) -> Router {
    let gateway = sessions.gateway().clone();
    let state = AppState {
        whip: Whip::new(sessions.clone()),
        sessions,
        gateway: gateway.clone(),
        peers: forward::client(&gateway.config.cluster),
    };
    let gathered = || middleware::from_fn_with_state(state.clone(), gather::lists);
    let body_timeout = Duration::from_secs(gateway.config.http.request_timeout_s as u64);
    // Players on other origins (hls.js pages) fetch the media. The answer is the same
    // for every origin, so it names no request header in `Vary`: a shared cache keeps
    // one copy for every page that embeds the player. `Age` is exposed, as players read
    // it from a cache's answers to know how old a playlist is.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::HEAD])
        .allow_headers(Any)
        .expose_headers([header::CONTENT_LENGTH, header::CONTENT_RANGE, header::AGE])
        .vary(Vec::<header::HeaderName>::new());
    let media = Router::new()
        .route("/streams/{name}/stream.sdp", get(media_files::stream_sdp))
        .route("/streams/{name}/{file}", get(media_files::stream_file))
        .route(
            "/recordings",
            get(media_files::list_recordings).layer(gathered()),
        )
        .route(
            "/recordings/{file}",
            get(media_files::recording_file).layer(middleware::from_fn_with_state(
                state.clone(),
                gather::first_found,
            )),
        )
        .layer(middleware::from_fn_with_state(
            gateway.clone(),
            auth::require_read_access,
        ))
        .layer(cors);
    let control = Router::new()
        .route("/api/streams/{name}", delete(control::stop_stream))
        .route(
            "/api/streams/{name}/recording",
            post(control::start_recording).delete(control::stop_recording),
        )
        .route(
            "/api/streams/{name}/rtp",
            post(control::add_rtp_destination),
        )
        .route(
            "/api/streams/{name}/rtp/{id}",
            delete(control::remove_rtp_destination),
        )
        .layer(middleware::from_fn_with_state(
            gateway.clone(),
            auth::require_admin_token,
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
        .route(
            "/whip/{name}",
            post(whip::create)
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    placement::whip,
                ))
                .options(whip::options),
        )
        .route(
            "/whip/{name}/{id}",
            patch(whip::patch)
                .delete(whip::delete)
                .options(whip::options),
        )
        .layer(DefaultBodyLimit::max(WHIP_BODY_LIMIT))
        .layer(middleware::from_fn_with_state(gateway.clone(), whip::count))
        .layer(whip_cors);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/ws",
            get(websocket::upgrade).layer(middleware::from_fn_with_state(
                state.clone(),
                placement::websocket,
            )),
        )
        .route("/api/streams", get(control::list_streams).layer(gathered()))
        .route("/api/cluster", get(control::cluster))
        .route("/api/streams/{name}", get(control::get_stream))
        .route("/metrics", get(control::render_metrics))
        .route("/hls.js", get(media_files::hls_js))
        .route("/api/ice-servers", get(super::ice_servers::list))
        .merge(control)
        .merge(media)
        .merge(whip)
        .fallback(pages)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            forward::to_holder,
        ))
        // Before anything else, a request that says a node forwarded it must show it.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            forward::authenticate,
        ))
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .with_state(state)
}

/// The pages in `www/`, revalidated on every load so that an upgrade is seen at once.
/// A path that names no file is a 404, whatever the file system says of it (a NUL byte,
/// a name too long).
async fn pages(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let pages = ServiceBuilder::new()
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        ))
        .service(ServeDir::new(&gateway.config.http.www_dir));
    match pages.oneshot(request).await {
        Ok(response) if !response.status().is_server_error() => response.map(Body::new),
        _ => ApiError::no_file(&path).into_response(),
    }
}
