//! In a cluster, every node answers for all: a request for a stream held by another
//! node is forwarded to that node and its answer streamed back (playlists, blocking
//! reloads, segments, parts, the SDP file, the stream API, WHIP's PATCH and DELETE).
//! A forwarded request carries [`FORWARDED`] (the forwarding node) and, with
//! `cluster.secret` set, its time and signature ([`signed`]); a node takes a forwarded
//! request only signed so ([`authenticate`]), and answers it from what it holds itself,
//! so nothing is forwarded twice. Nodes reach each other over TLS verified against
//! `cluster.ca_file` or the system's roots.

use super::error::ApiError;
use super::state::AppState;
use crate::cluster::NodeInfo;
use crate::cluster::signature::{self, Forwarded, SignatureError};
use crate::config::ClusterConfig;
use crate::gateway::Gateway;
use crate::signalling::problem::{Problem, Refusal};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use std::time::Duration;

/// Marks a request one node forwards to another; its value is the forwarding node.
pub const FORWARDED: HeaderName = HeaderName::from_static("x-gateway-forwarded-by");
/// When the forwarding node signed the request, in seconds since the Unix epoch.
pub const FORWARDED_AT: HeaderName = HeaderName::from_static("x-gateway-forwarded-at");
/// The signature of a forwarded request (HMAC-SHA256, hex).
pub const FORWARD_SIGNATURE: HeaderName = HeaderName::from_static("x-gateway-forward-signature");
/// On a refusal of a forwarded request's signature, so that the forwarding node tells it
/// from a refusal of the client's own (a token, a hook).
const REFUSED_FORWARD: HeaderName = HeaderName::from_static("x-gateway-forward-refused");
/// How long a node may take to accept a forwarded connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The HTTP client nodes reach each other with: certificates are checked against
/// `cluster.ca_file` when set (and only it), else the system's roots.
pub fn client(config: &ClusterConfig) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .no_proxy();
    if !config.ca_file.as_os_str().is_empty() {
        builder = builder.tls_built_in_root_certs(false);
        // The file was checked when the configuration was loaded; a certificate that
        // cannot be read leaves no authority at all, never any.
        let authorities = std::fs::read(&config.ca_file)
            .map_err(|e| e.to_string())
            .and_then(|pem| reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string()));
        match authorities {
            Ok(authorities) => {
                for authority in authorities {
                    builder = builder.add_root_certificate(authority);
                }
            }
            Err(e) => tracing::error!(
                "cluster.ca_file {}: {e}; no node's certificate is trusted",
                config.ca_file.display()
            ),
        }
    }
    builder.build().expect("an HTTP client")
}

/// Whether `headers` come from another node (checked by [`authenticate`]).
pub fn is_forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(&FORWARDED)
}

/// The headers that mark `method` `path` (with its query) as forwarded by this node,
/// signed with `cluster.secret` when it is set.
/// The path and query of `url` as an HTTP client sends them (parsed and normalised as a
/// URL), which is what the receiving node checks a signature against.
pub fn sent_path(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(url) => match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        },
        Err(_) => url.to_string(),
    }
}

pub fn signed(gateway: &Gateway, method: &Method, path: &str) -> Vec<(HeaderName, HeaderValue)> {
    let node = &gateway.node.id;
    let Ok(by) = HeaderValue::from_str(node) else {
        return Vec::new();
    };
    let mut headers = vec![(FORWARDED, by)];
    let secret = &gateway.config.cluster.secret;
    if !secret.is_empty() {
        let request = Forwarded {
            method: method.as_str(),
            path,
            timestamp: signature::now(),
            node,
        };
        headers.push((FORWARDED_AT, HeaderValue::from(request.timestamp)));
        if let Ok(mac) = HeaderValue::from_str(&signature::sign(secret, &request)) {
            headers.push((FORWARD_SIGNATURE, mac));
        }
    }
    headers
}

/// Whether a forwarded request is signed with `secret`, fresh.
fn check(secret: &str, request: &Request) -> Result<(), SignatureError> {
    let headers = request.headers();
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(node), Some(at), Some(mac)) = (
        text(&FORWARDED),
        text(&FORWARDED_AT),
        text(&FORWARD_SIGNATURE),
    ) else {
        return Err(SignatureError::Missing);
    };
    let timestamp = at.parse().map_err(|_| SignatureError::BadTimestamp)?;
    let forwarded = Forwarded {
        method: request.method().as_str(),
        path: request.uri().path_and_query().map_or("/", |p| p.as_str()),
        timestamp,
        node,
    };
    signature::verify(secret, &forwarded, mac, signature::now())
}

/// With `cluster.secret` set, refuses a request that says another node forwarded it
/// unless it carries that node's fresh signature: nobody else passes for a node.
pub async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let secret = &state.gateway.config.cluster.secret;
    if is_forwarded(request.headers())
        && !secret.is_empty()
        && let Err(e) = check(secret, &request)
    {
        tracing::warn!(path = %request.uri().path(), "refused a forwarded request: {e}");
        let mut refused = ApiError(Problem::forward_unsigned(e.to_string())).into_response();
        refused
            .headers_mut()
            .insert(REFUSED_FORWARD, HeaderValue::from_static("signature"));
        return refused;
    }
    next.run(request).await
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
    ApiError::new(
        Refusal::NodeUnreachable,
        format!("node {node}, which holds the stream, cannot be reached: {e}"),
    )
    .into_response()
}

/// Sends `request` to `node`, signed, and streams its answer back.
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
    for (name, value) in signed(&state.gateway, &parts.method, &sent_path(&url)) {
        headers.insert(name, value);
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
    // The other node refused this node's signature: a fault between the nodes (another
    // cluster.secret, clocks apart), not the client's.
    if answer.status() == reqwest::StatusCode::FORBIDDEN
        && answer.headers().contains_key(REFUSED_FORWARD)
    {
        tracing::error!(node = %node.id, "the node refused this node's signature: do both have the same cluster.secret and the right time?");
        return unreachable(&node.id, "it refused this node's signature");
    }
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
/// holds it (or served it last, while its playlist lingers). For a stream nobody else
/// holds (always, on a node of its own), this node answers itself.
pub async fn to_holder(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    let Some(name) = stream_of(&path) else {
        return next.run(request).await;
    };
    // Live here, or nothing to ask: this node answers.
    let here = state.gateway.registry().get(name).map(|s| s.is_active());
    if is_forwarded(request.headers()) || here == Some(true) {
        return next.run(request).await;
    }
    let cluster = &state.gateway.cluster;
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

/// The other live nodes (none on a node of its own, or without Redis).
pub async fn other_nodes(gateway: &Gateway) -> Vec<NodeInfo> {
    let mut nodes = gateway.cluster.nodes().await.unwrap_or_default();
    nodes.retain(|n| n.id != gateway.node.id);
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_covers_the_path_as_it_is_sent() {
        assert_eq!(
            sent_path("http://gw2:8080/streams/a/index.m3u8?_HLS_msn=3&_HLS_part=1"),
            "/streams/a/index.m3u8?_HLS_msn=3&_HLS_part=1"
        );
        // What a client re-encodes or normalises is signed as it goes out.
        assert_eq!(
            sent_path("http://gw2:8080/api/streams?token={a b}"),
            "/api/streams?token={a%20b}"
        );
        assert_eq!(sent_path("http://gw2:8080/a/../recordings"), "/recordings");
        assert_eq!(sent_path("http://gw2:8080"), "/");
    }

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
