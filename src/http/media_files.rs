//! Media over HTTP: each live stream's SDP file, its HLS playlists and segments (while it
//! is live or lingering), the recordings (with `Range`), and hls.js for the dashboard.
//! Only names of streams, segments and recordings are served: never a path.

use super::auth::query_token;
use super::error::{ApiError, stream_name};
use crate::config::{HlsConfig, HlsVariant};
use crate::gateway::Gateway;
use crate::hls::live::{Growing, LiveHls, PartBody, Reload, ReloadError};
use crate::media::output::hls::MEDIA;
use crate::media::output::record;
use crate::name::StreamName;
use crate::signalling::problem::Refusal;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tower::ServiceExt;
use tower_http::services::ServeFile;

pub async fn stream_sdp(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = stream_name(&name)?;
    if !gateway.config.rtp.enabled {
        return Err(ApiError::new(
            Refusal::RtpDisabled,
            "RTP output is disabled (rtp.enabled = false)",
        ));
    }
    let sdp = match gateway.registry().get(name.as_str()) {
        Some(entry) if entry.is_active() => entry.sdp.clone(),
        _ => return Err(ApiError::no_stream(name.as_str())),
    };
    let sdp = sdp.ok_or_else(|| {
        ApiError::new(
            Refusal::NotReady,
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

/// HLS playlists, segments and parts of a live or lingering stream. The media playlist
/// answers blocking reloads (`_HLS_msn`, `_HLS_part`); the part the playlist hints at
/// next is answered as soon as it starts, its bytes sent as the muxer writes them.
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
        "m4s" => "video/iso.segment",
        "mp4" => "video/mp4",
        _ => return Err(ApiError::no_file(&file)),
    };
    if StreamName::new(stem).is_err() {
        return Err(ApiError::no_file(&file));
    }
    let live = match gateway.registry().get(name.as_str()) {
        None => return Err(ApiError::no_stream(name.as_str())),
        Some(entry) => entry.hls.clone(),
    };
    let Some(live) = live else {
        return Err(ApiError::new(
            Refusal::HlsDisabled,
            format!("stream {name} has no HLS output"),
        ));
    };
    let token = query_token(query.as_deref());
    let hls = &gateway.config.hls;
    let playlist = |text: String, cache: Cached| {
        let cache_control = cache.control(hls, text.contains("#EXT-X-ENDLIST"));
        let text = match token {
            Some(token) => with_token(&text, token),
            None => text,
        };
        (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, cache_control.as_str()),
            ],
            text,
        )
            .into_response()
    };
    if file == MEDIA {
        let reload = Reload::parse(query.as_deref()).map_err(bad_directive)?;
        let blocking = reload.msn.is_some();
        gateway
            .metrics
            .hls_request(if blocking { "blocking" } else { "playlist" });
        return media_playlist(&live, &name, reload)
            .await
            .map(|text| playlist(text, Cached::MediaPlaylist { blocking }));
    }
    gateway.metrics.hls_request(match extension {
        "m3u8" => "multivariant",
        "mp4" => "init",
        "m4s" if is_part(stem) => "part",
        _ => "segment",
    });
    // Segment, part and initialisation section names are unique to one output (and
    // so to one publication): they never change once written.
    let immutable = |body: Body| {
        (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, IMMUTABLE),
            ],
            body,
        )
            .into_response()
    };
    if extension == "m4s"
        && let Some(part) = live.part(&file).await
    {
        return Ok(immutable(match part {
            PartBody::Complete(bytes) => Body::from(bytes),
            PartBody::Growing(pieces) => {
                let target = live.read(|p| p.target_duration());
                growing_body(pieces, Duration::from_secs(3 * u64::from(target)))
            }
        }));
    }
    match tokio::fs::read(live.dir.join(&file)).await {
        Ok(body) if extension == "m3u8" => Ok(playlist(
            String::from_utf8_lossy(&body).into(),
            Cached::Multivariant,
        )),
        Ok(body) => Ok(immutable(Body::from(body))),
        Err(_) if extension == "m3u8" => Err(not_ready(&name)),
        Err(_) => Err(ApiError::no_file(&file)),
    }
}

/// The body of a part being made: its pieces so far, then each as the muxer writes it
/// (chunked transfer), ending when the part is complete. A part cut off before then, or
/// one whose next piece does not come within `limit`, ends the body with an error, so
/// that neither a player nor a cache takes it as whole.
fn growing_body(pieces: watch::Receiver<Growing>, limit: Duration) -> Body {
    let pieces = futures::stream::unfold(Some((pieces, 0)), move |state| async move {
        let (mut pieces, sent) = state?;
        loop {
            let (new, complete) = {
                let growing = pieces.borrow_and_update();
                let new = growing.pieces.get(sent..).unwrap_or_default().to_vec();
                (new, growing.complete)
            };
            if !new.is_empty() {
                let count = new.len();
                let bytes = match <[Bytes; 1]>::try_from(new) {
                    Ok([one]) => one,
                    Err(many) => Bytes::from(many.concat()),
                };
                return Some((Ok(bytes), Some((pieces, sent + count))));
            }
            if complete {
                return None;
            }
            match tokio::time::timeout(limit, pieces.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    let cut = std::io::Error::other("the part was cut off before it was complete");
                    return Some((Err(cut), None));
                }
                Err(_) => {
                    let late =
                        std::io::Error::other(format!("no more of the part within {limit:?}"));
                    return Some((Err(late), None));
                }
            }
        }
    });
    Body::from_stream(pieces)
}

/// Segments, parts and initialisation sections: their URIs are never reused.
const IMMUTABLE: &str = "public, max-age=86400, immutable";

/// Whether a segment file's stem names a low-latency part (`<prefix>p<n>`), not a whole
/// segment (`<prefix><msn>`).
fn is_part(stem: &str) -> bool {
    stem.rsplit_once('-')
        .is_some_and(|(_, tail)| tail.starts_with('p'))
}

/// The playlists, and how long a shared cache (a CDN, Varnish) may keep each: every
/// answer is `public` and the same for every viewer, so one request per URL reaches the
/// gateway however large the audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cached {
    /// A few seconds: it changes only when the publisher's size or codec does.
    Multivariant,
    /// A media playlist. A blocking reload's answer (`_HLS_msn`, `_HLS_part` in its
    /// URL) stays right: media sequence numbers are never reused for a name, so it is
    /// kept six target durations, a day once the stream has ended. The plain URL
    /// changes with every part (every segment without parts), so that long; also once
    /// ended, as a returning publisher continues the same playlist.
    MediaPlaylist { blocking: bool },
}

impl Cached {
    fn control(self, hls: &HlsConfig, ended: bool) -> String {
        let seconds = match self {
            Cached::Multivariant => 5,
            Cached::MediaPlaylist { blocking: true } if ended => 86_400,
            Cached::MediaPlaylist { blocking: true } => 6 * hls.segment_duration_s,
            Cached::MediaPlaylist { blocking: false } if hls.variant == HlsVariant::LowLatency => {
                hls.part_duration_ms.div_ceil(1000)
            }
            Cached::MediaPlaylist { blocking: false } => hls.segment_duration_s,
        };
        format!("public, max-age={seconds}")
    }
}

fn bad_directive(e: ReloadError) -> ApiError {
    ApiError::new(Refusal::BadDeliveryDirective, e.to_string())
}

/// The media playlist, once it has what the request's delivery directives ask for.
async fn media_playlist(
    live: &LiveHls,
    name: &StreamName,
    reload: Reload,
) -> Result<String, ApiError> {
    live.playlist(reload).await.map_err(|e| match e {
        bad @ ReloadError::BadRequest(_) => bad_directive(bad),
        timeout @ (ReloadError::Timeout { .. } | ReloadError::NoSegment(_)) => {
            ApiError::new(Refusal::NotReady, format!("stream {name}: {timeout}"))
        }
    })
}

fn not_ready(name: &StreamName) -> ApiError {
    ApiError::new(
        Refusal::NotReady,
        format!("stream {name} has no complete HLS segment yet"),
    )
}

/// A playlist whose URIs carry `?token=`: the URI lines, and the `URI="..."` of tags.
fn with_token(playlist: &str, token: &str) -> String {
    playlist
        .lines()
        .map(|line| {
            if line.is_empty() {
                line.to_string()
            } else if line.starts_with('#') {
                match line.split_once("URI=\"") {
                    Some((head, rest)) => match rest.split_once('"') {
                        Some((uri, tail)) => format!("{head}URI=\"{uri}?token={token}\"{tail}"),
                        None => line.to_string(),
                    },
                    None => line.to_string(),
                }
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
                Refusal::NoHlsJs,
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

/// This node's recordings (the `gather` layer adds the other nodes').
pub async fn list_recordings(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    let dir = gateway.config.record.dir.clone();
    let gateway_for_list = gateway.clone();
    let files = tokio::task::spawn_blocking(move || {
        let mut files = record::list(&dir, |file| gateway_for_list.registry().is_recording(file));
        crate::upload::annotate(&dir, &mut files);
        files
    })
    .await
    .unwrap_or_default();
    Json(files)
}

/// One recording, with `Range` support. Only names of recordings are served: never a
/// path outside `record.dir`. (The `gather` layer asks the other nodes for one that is
/// not here.)
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
            Refusal::ReadFailed,
            format!("cannot read {file}: {e}"),
        )),
    }
}
