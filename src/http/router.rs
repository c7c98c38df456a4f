//! The routes and their layers: pages from `www/`, health, signalling, the APIs, the
//! media files (behind the read token, with CORS) and WHIP (with its CORS headers).

use super::state::AppState;
use super::{auth, control, media_files, websocket, whip};
use crate::session::Sessions;
use crate::signalling::whip::Whip;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, header};
use axum::middleware;
use axum::routing::{delete, get, patch, post};
use std::sync::Arc;
use tower::ServiceBuilder;
use tower_http::cors::{Any, CorsLayer};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

/// Largest WHIP request body (an SDP offer or fragment).
const WHIP_BODY_LIMIT: usize = 256 * 1024;

pub fn router(sessions: Arc<Sessions>) -> Router {
    let gateway = sessions.gateway().clone();
    let state = AppState {
        whip: Whip::new(sessions.clone()),
        sessions,
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
        .route("/streams/{name}/stream.sdp", get(media_files::stream_sdp))
        .route("/streams/{name}/{file}", get(media_files::stream_file))
        .route("/recordings", get(media_files::list_recordings))
        .route("/recordings/{file}", get(media_files::recording_file))
        .layer(middleware::from_fn_with_state(
            gateway.clone(),
            auth::require_read_token,
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
        .route("/whip/{name}", post(whip::create).options(whip::options))
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
        .route("/ws", get(websocket::upgrade))
        .route("/api/streams", get(control::list_streams))
        .route("/api/streams/{name}", get(control::get_stream))
        .route("/metrics", get(control::render_metrics))
        .route("/hls.js", get(media_files::hls_js))
        .merge(control)
        .merge(media)
        .merge(whip)
        .fallback_service(www)
        .with_state(state)
}
