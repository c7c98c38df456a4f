//! Media over HTTP: each live stream's SDP file, its HLS playlists and segments (while it
//! is live or lingering), the recordings (with `Range`), and hls.js for the dashboard.
//! Only names of streams, segments and recordings are served: never a path.

use super::auth::query_token;
use super::error::{ApiError, stream_name};
use crate::gateway::Gateway;
use crate::media::output::record;
use crate::name::StreamName;
use axum::Json;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use tower::ServiceExt;
use tower_http::services::ServeFile;

pub async fn stream_sdp(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = stream_name(&name)?;
    if !gateway.config.rtp.enabled {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "rtp-disabled",
            "RTP output is disabled (rtp.enabled = false)",
        ));
    }
    let sdp = match gateway.registry().get(name.as_str()) {
        Some(entry) if entry.is_active() => entry.sdp.clone(),
        _ => return Err(ApiError::no_stream(name.as_str())),
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
pub async fn stream_file(
    State(gateway): State<Arc<Gateway>>,
    Path((name, file)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let name = stream_name(&name)?;
    let (stem, extension) = file.rsplit_once('.').unwrap_or((&file, ""));
    let content_type = match extension {
        "m3u8" => "application/vnd.apple.mpegurl",
        "ts" => "video/mp2t",
        _ => return Err(ApiError::no_file(&file)),
    };
    if StreamName::new(stem).is_err() {
        return Err(ApiError::no_file(&file));
    }
    let dir = match gateway.registry().get(name.as_str()) {
        None => return Err(ApiError::no_stream(name.as_str())),
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
        Err(_) => Err(ApiError::no_file(&file)),
    }
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

/// hls.js for the dashboard, from where setup installed it.
pub async fn hls_js(State(gateway): State<Arc<Gateway>>) -> Result<Response, ApiError> {
    let script = tokio::fs::read(&gateway.config.http.hls_js)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no-hls-js",
                "hls.js is not installed (run `make run` or `make test`, or `npm install`)",
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

pub async fn list_recordings(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    let dir = gateway.config.record.dir.clone();
    let gateway_for_list = gateway.clone();
    let files = tokio::task::spawn_blocking(move || {
        record::list(&dir, |file| gateway_for_list.registry().is_recording(file))
    })
    .await
    .unwrap_or_default();
    Json(files)
}

/// One recording, with `Range` support. Only names of recordings are served: never a
/// path outside `record.dir`.
pub async fn recording_file(
    State(gateway): State<Arc<Gateway>>,
    Path(file): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    if record::parse_name(&file).is_none() {
        return Err(ApiError::no_file(&file));
    }
    let path = gateway.config.record.dir.join(&file);
    if !tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file()) {
        return Err(ApiError::no_file(&file));
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
