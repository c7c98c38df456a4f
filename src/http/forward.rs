//! In a cluster, every node answers for all: a request for a stream held by another
//! node is forwarded to that node and its answer streamed back (playlists, blocking
//! reloads, segments, parts, the SDP file, the stream API, WHIP's PATCH and DELETE);
//! lists (`/api/streams`, `/recordings`) gather every node's; a publisher that reaches
//! a full or draining node is placed on the node with the most room, its WebSocket or
//! WHIP request relayed there. A forwarded request carries [`FORWARDED`], and a node
//! answers it from what it holds itself, so nothing is forwarded twice.

use super::state::AppState;
use crate::cluster::{self, NodeInfo};
use crate::gateway::Gateway;
use crate::signalling::problem::Refusal;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use std::sync::Arc;
use std::time::Duration;

/// Marks a request one node forwards to another; its value is the forwarding node.
pub const FORWARDED: HeaderName = HeaderName::from_static("x-gateway-forwarded-by");
/// How long a node may take to accept a forwarded connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a node may take to answer for a list.
const LIST_TIMEOUT: Duration = Duration::from_secs(3);

/// The HTTP client nodes reach each other with.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .no_proxy()
        // Nodes on HTTPS with their own self-signed certificates reach each other.
        .danger_accept_invalid_certs(true)
        .build()
        .expect("an HTTP client")
}

/// Whether `headers` come from another node.
pub fn is_forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(&FORWARDED)
}

/// The stream a path is about, when another node may hold it.
fn stream_of(path: &str) -> Option<&str> {
    let rest = path
        .strip_prefix("/api/streams/")
        .or_else(|| path.strip_prefix("/streams/"))
        .or_else(|| path.strip_prefix("/whip/").filter(|r| r.contains('/')))?;
    let name = rest.split('/').next()?;
    (!name.is_empty()).then_some(name)
}

/// Hop-by-hop headers, which a forwarding node does not pass on.
fn hop_by_hop(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        header::HOST,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
        header::TRAILER,
        header::PROXY_AUTHORIZATION,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
}

fn unreachable(node: &str, e: impl std::fmt::Display) -> Response {
    super::error::ApiError::new(
        Refusal::NodeUnreachable,
        format!("node {node}, which holds the stream, cannot be reached: {e}"),
    )
    .into_response()
}

/// Sends `request` to `node` and streams its answer back.
pub async fn relay(
    state: &AppState,
    node: &NodeInfo,
    kind: &'static str,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", node.url);
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            headers.append(name, value.clone());
        }
    }
    if let Ok(me) = HeaderValue::from_str(&state.gateway.node.id) {
        headers.insert(FORWARDED, me);
    }
    state.gateway.metrics.forwarded(kind);
    let body = reqwest::Body::wrap_stream(body.into_data_stream());
    let answer = state
        .peers
        .request(parts.method, url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => return unreachable(&node.id, e),
    };
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if !hop_by_hop(name) {
            response = response.header(name, value);
        }
    }
    let body = Body::from_stream(answer.bytes_stream().map_err(std::io::Error::other));
    response
        .body(body)
        .unwrap_or_else(|e| unreachable(&node.id, e))
}

/// What a forwarded request is counted as.
fn kind_of(path: &str) -> &'static str {
    if path.starts_with("/api/") {
        "api"
    } else if path.starts_with("/whip/") {
        "whip"
    } else if path.ends_with(".m3u8") {
        "playlist"
    } else if path.ends_with(".sdp") {
        "sdp"
    } else {
        "media"
    }
}

/// Forwards a request for a stream that this node does not have to the node that
/// holds it (or served it last, while its playlist lingers). Without Redis, or for a
/// stream nobody holds, this node answers itself.
pub async fn to_holder(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(cluster) = state.gateway.cluster.clone() else {
        return next.run(request).await;
    };
    let path = request.uri().path().to_string();
    let Some(name) = stream_of(&path) else {
        return next.run(request).await;
    };
    // Live here, or nothing to ask: this node answers.
    let here = state.gateway.registry().get(name).map(|s| s.is_active());
    if is_forwarded(request.headers()) || here == Some(true) {
        return next.run(request).await;
    }
    // A stream live elsewhere wins over one that ended here.
    let holder = match cluster.holder(name).await {
        Ok(Some(holder))
            if holder.node != state.gateway.node.id && (!holder.ended || here.is_none()) =>
        {
            holder
        }
        _ => return next.run(request).await,
    };
    match cluster.node(&holder.node).await {
        Ok(Some(node)) => relay(&state, &node, kind_of(&path), request).await,
        // Its node is gone: the stream with it.
        _ => next.run(request).await,
    }
}

/// The other live nodes, or none without a cluster (or without Redis).
pub async fn other_nodes(gateway: &Gateway) -> Vec<NodeInfo> {
    let Some(cluster) = &gateway.cluster else {
        return Vec::new();
    };
    let mut nodes = cluster.nodes().await.unwrap_or_default();
    nodes.retain(|n| n.id != gateway.node.id);
    nodes
}

/// Every other node's answer to the request `uri` (a JSON array), asked as this request
/// asked it (with its token, in a header or the query); a node that does not answer in
/// time is left out.
pub async fn gather(state: &AppState, headers: &HeaderMap, uri: &Uri) -> Vec<serde_json::Value> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    if is_forwarded(headers) {
        return Vec::new();
    }
    let nodes = other_nodes(&state.gateway).await;
    let asks = nodes.iter().map(|node| {
        let mut request = state
            .peers
            .get(format!("{}{path}", node.url))
            .timeout(LIST_TIMEOUT)
            .header(FORWARDED, state.gateway.node.id.as_str());
        if let Some(auth) = headers.get(header::AUTHORIZATION) {
            request = request.header(header::AUTHORIZATION, auth);
        }
        async move {
            let answer = request.send().await.ok()?.error_for_status().ok()?;
            answer.json::<Vec<serde_json::Value>>().await.ok()
        }
    });
    let answers = futures::future::join_all(asks).await;
    answers.into_iter().flatten().flatten().collect()
}

/// A recording this node does not have, from the first other node that has it.
pub async fn recording_elsewhere(state: &AppState, request: Request) -> Option<Response> {
    if is_forwarded(request.headers()) {
        return None;
    }
    let (parts, _) = request.into_parts();
    for node in other_nodes(&state.gateway).await {
        let mut copy = Request::builder().method(&parts.method).uri(&parts.uri);
        for (name, value) in &parts.headers {
            copy = copy.header(name, value);
        }
        let copy = copy.body(Body::empty()).ok()?;
        let response = relay(state, &node, "recording", copy).await;
        if response.status() != StatusCode::NOT_FOUND
            && response.status() != StatusCode::BAD_GATEWAY
        {
            return Some(response);
        }
    }
    None
}

/// Where a publisher that reached this node goes instead: when this node is full or
/// draining, the node with the most room, if another has some.
pub async fn placement(gateway: &Arc<Gateway>, headers: &HeaderMap) -> Option<NodeInfo> {
    gateway.cluster.as_ref()?;
    if is_forwarded(headers) || gateway.node_info().room() > 0 {
        return None;
    }
    let nodes = other_nodes(gateway).await;
    let node = cluster::place(&nodes, &gateway.node.id).cloned();
    if let Some(node) = &node {
        tracing::info!(node = %node.id, "this node is full: the publisher goes to the node with the most room");
    }
    node
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_stream() {
        assert_eq!(stream_of("/api/streams/cam1"), Some("cam1"));
        assert_eq!(stream_of("/api/streams/cam1/recording"), Some("cam1"));
        assert_eq!(stream_of("/streams/cam1/index.m3u8"), Some("cam1"));
        assert_eq!(stream_of("/whip/cam1/abc"), Some("cam1"));
        assert_eq!(stream_of("/whip/cam1"), None);
        assert_eq!(stream_of("/api/streams"), None);
        assert_eq!(stream_of("/api/streams/"), None);
        assert_eq!(stream_of("/recordings/x.mp4"), None);
        assert_eq!(kind_of("/streams/a/stream.m3u8"), "playlist");
        assert_eq!(kind_of("/streams/a/s1-00001.m4s"), "media");
    }
}
