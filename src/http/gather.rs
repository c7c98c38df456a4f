//! In a cluster, lists are the whole cluster's: a layer over `/api/streams` and
//! `/recordings` adds every other node's answer to this node's, and one over
//! `/recordings/{file}` asks the other nodes for a recording this node does not have.
//! Each request to another node is signed as forwarded, so it is answered from that
//! node alone. On a node of its own there is nobody to ask.

use super::forward::{self, is_forwarded, other_nodes, sent_path, signed};
use super::state::AppState;
use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// How long a node may take to answer for a list.
const LIST_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest list this node reads back from its own handler.
const LIST_LIMIT: usize = 64 << 20;

/// This node's list (a JSON array) with every other node's, by `name` where items
/// have one.
pub async fn lists(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if is_forwarded(request.headers()) {
        return next.run(request).await;
    }
    let uri = request.uri().clone();
    let authorization = request.headers().get(header::AUTHORIZATION).cloned();
    let response = next.run(request).await;
    if response.status() != StatusCode::OK {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, LIST_LIMIT).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Ok(serde_json::Value::Array(mut items)) = serde_json::from_slice(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    items.extend(gather(&state, &uri, authorization).await);
    items.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Json(items).into_response()
}

/// Every other node's answer to the request `uri` (a JSON array), asked as this request
/// asked it (with its token, in a header or the query); a node that does not answer in
/// time is left out.
async fn gather(
    state: &AppState,
    uri: &Uri,
    authorization: Option<HeaderValue>,
) -> Vec<serde_json::Value> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let nodes = other_nodes(&state.gateway).await;
    let asks = nodes.iter().map(|node| {
        let url = format!("{}{path}", node.url);
        let sent = sent_path(&url);
        let mut request = state.peers.get(url).timeout(LIST_TIMEOUT);
        for (name, value) in signed(&state.gateway, &Method::GET, &sent) {
            request = request.header(name, value);
        }
        if let Some(authorization) = &authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        async move {
            let answer = request.send().await.ok()?.error_for_status().ok()?;
            answer.json::<Vec<serde_json::Value>>().await.ok()
        }
    });
    let answers = futures::future::join_all(asks).await;
    answers.into_iter().flatten().flatten().collect()
}

/// A file this node answers 404 for, from the first other node that has it.
pub async fn first_found(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if is_forwarded(request.headers()) {
        return next.run(request).await;
    }
    let (method, uri, headers) = (
        request.method().clone(),
        request.uri().clone(),
        request.headers().clone(),
    );
    let response = next.run(request).await;
    if response.status() != StatusCode::NOT_FOUND {
        return response;
    }
    for node in other_nodes(&state.gateway).await {
        let mut copy = Request::builder().method(&method).uri(&uri);
        for (name, value) in &headers {
            copy = copy.header(name, value);
        }
        let Ok(copy) = copy.body(Body::empty()) else {
            break;
        };
        let answer = forward::relay(&state, &node, "recording", copy).await;
        if answer.status() != StatusCode::NOT_FOUND && answer.status() != StatusCode::BAD_GATEWAY {
            return answer;
        }
    }
    response
}
