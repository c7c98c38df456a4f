//! The stream API (`/api/streams`), the control API (stop a stream, start and stop its
//! recording, add and remove RTP destinations) and `/metrics`. Control requests are
//! commands to the stream's session.

use super::error::{ApiError, stream_name};
use crate::cluster::ClusterView;
use crate::gateway::Gateway;
use crate::metrics;
use crate::name::StreamName;
use crate::session::{ControlError, SessionCommand, SessionHandle, Sessions};
use crate::signalling::problem::{Problem, Refusal};
use crate::stream::EndReason;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// This node's streams, by name (the `gather` layer adds the other nodes').
pub async fn list_streams(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    Json(gateway.registry().list())
}

/// The cluster as this node sees it: the nodes in Redis, or this node alone when on
/// its own or when Redis cannot be reached.
pub async fn cluster(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    let me = gateway.node_info();
    let nodes = gateway.cluster.nodes().await;
    let status = gateway.cluster.status();
    let mut view = ClusterView::single(me.clone());
    view.redis = status.redis.map(|redis| redis.as_str().to_string());
    match nodes {
        Ok(mut nodes) => {
            // This node as it is now, not as it was at its last renewal.
            nodes.retain(|n| n.id != me.id);
            nodes.push(me);
            nodes.sort_by(|a, b| a.id.cmp(&b.id));
            view.nodes = nodes;
        }
        Err(e) => tracing::debug!("{e}"),
    }
    Json(view)
}

pub async fn get_stream(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let name = stream_name(&name)?;
    let info = gateway
        .registry()
        .get(name.as_str())
        .map(|s| s.info.clone());
    info.map(Json)
        .ok_or_else(|| ApiError::no_stream(name.as_str()))
}

/// The running session of a live stream.
fn live_session(sessions: &Sessions, name: &str) -> Result<SessionHandle, ApiError> {
    let name = stream_name(name)?;
    sessions
        .get(name.as_str())
        .ok_or_else(|| ApiError::no_stream(name.as_str()))
}

/// A control command's refusal, from the one table.
fn refused(stream: &StreamName) -> impl Fn(ControlError) -> ApiError + '_ {
    move |e| ApiError(Problem::control(stream, &e))
}

pub async fn stop_stream(
    State(sessions): State<Arc<Sessions>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let session = live_session(&sessions, &name)?;
    session.stop(EndReason::Stopped).await;
    Ok(Json(serde_json::json!({"stream": name, "state": "ending"})).into_response())
}

pub async fn start_recording(
    State(sessions): State<Arc<Sessions>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let session = live_session(&sessions, &name)?;
    let file = session
        .ask(SessionCommand::StartRecording)
        .await
        .map_err(refused(&session.stream))?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"stream": name, "recording": file})),
    )
        .into_response())
}

pub async fn stop_recording(
    State(sessions): State<Arc<Sessions>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let session = live_session(&sessions, &name)?;
    let file = session
        .ask(SessionCommand::StopRecording)
        .await
        .map_err(refused(&session.stream))?;
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
    let bad = |message: String| ApiError::new(Refusal::BadDestination, message);
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

pub async fn add_rtp_destination(
    State(sessions): State<Arc<Sessions>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let session = live_session(&sessions, &name)?;
    let request: RtpDestinationRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(Refusal::MalformedRequest, format!("invalid request: {e}")))?;
    let host = check_destination(&request)?;
    let destination = session
        .ask(|reply| SessionCommand::AddRtpDestination {
            host,
            video_port: request.video_port,
            audio_port: request.audio_port,
            reply,
        })
        .await
        .map_err(refused(&session.stream))?;
    Ok((StatusCode::CREATED, Json(destination)).into_response())
}

pub async fn remove_rtp_destination(
    State(sessions): State<Arc<Sessions>>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let session = live_session(&sessions, &name)?;
    session
        .ask(|reply| SessionCommand::RemoveRtpDestination { id, reply })
        .await
        .map_err(refused(&session.stream))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn render_metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    let nodes = gateway.cluster.nodes().await.map(|n| n.len()).ok();
    gateway.metrics.cluster(nodes, gateway.cluster.status());
    let streams = gateway.registry().list();
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        gateway.metrics.render(streams),
    )
        .into_response()
}
