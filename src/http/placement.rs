//! Where a publisher goes: a layer over the publish routes (`/ws`, `POST /whip/{name}`)
//! that, when this node is full or draining and another node has room, hands the
//! publisher to the node with the most room (the cluster's [`placement`]): its WHIP
//! offer is posted there (the answer's resource URL leads its PATCH and DELETE there
//! from any node), its WebSocket relayed there frame by frame. Otherwise, and always
//! on a node of its own, the route's handler serves the publisher here.
//!
//! [`placement`]: crate::cluster::Cluster::placement

use super::auth::caller_of;
use super::forward::{self, is_forwarded, signed};
use super::state::AppState;
use super::websocket;
use crate::access::Caller;
use crate::cluster::NodeInfo;
use crate::gateway::Gateway;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message as RemoteMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as RemoteCloseFrame;

/// How long another node may take to accept a relayed WebSocket.
const CONNECT_WAIT: Duration = Duration::from_secs(2);

/// The node that takes a publisher who reached this node, if not this one.
async fn elsewhere(gateway: &Gateway, headers: &HeaderMap) -> Option<NodeInfo> {
    if is_forwarded(headers) {
        return None;
    }
    let node = gateway.cluster.placement(&gateway.node_info()).await;
    if let Some(node) = &node {
        tracing::info!(node = %node.id, "this node is full: the publisher goes to the node with the most room");
    }
    node
}

/// A WHIP offer, posted to the node with the most room when this one has none.
pub async fn whip(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match elsewhere(&state.gateway, request.headers()).await {
        Some(node) => forward::relay(&state, &node, "whip", request).await,
        None => next.run(request).await,
    }
}

/// A signalling socket, relayed to the node with the most room when this one has
/// none (served here if that node cannot be reached).
pub async fn websocket(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(node) = elsewhere(&state.gateway, request.headers()).await else {
        return next.run(request).await;
    };
    let (mut parts, _) = request.into_parts();
    let caller = Caller {
        token: None,
        ..caller_of(&parts.headers, &parts.uri, &parts.extensions)
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let sessions = state.sessions.clone();
    let gateway = state.gateway.clone();
    websocket::configure(upgrade, &gateway).on_upgrade(move |socket| {
        let connections = gateway.connections.clone();
        connections.track_future(async move {
            match connect(&gateway, &node).await {
                Ok(remote) => {
                    gateway.metrics.forwarded("websocket");
                    relay_socket(socket, remote).await;
                }
                Err(e) => {
                    tracing::warn!(node = %node.id, "cannot relay a publisher there: {e}");
                    websocket::serve_socket(sessions, socket, caller).await;
                }
            }
        })
    })
}

type RemoteSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the signalling socket of `node`, signed as forwarded by this one. Only over
/// plain `ws://`: a node on `https://` is not relayed to (its certificate would go
/// unchecked), and the publisher is served here.
async fn connect(gateway: &Gateway, node: &NodeInfo) -> Result<RemoteSocket, String> {
    let Some(rest) = node.url.strip_prefix("http://") else {
        return Err(format!(
            "a WebSocket is relayed over ws:// only, and {} is not http://",
            node.url
        ));
    };
    let mut request = format!("ws://{rest}/ws")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    for (name, value) in signed(gateway, &Method::GET, "/ws") {
        request.headers_mut().insert(name, value);
    }
    let connect = tokio_tungstenite::connect_async(request);
    match tokio::time::timeout(CONNECT_WAIT, connect).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer in time".into()),
    }
}

/// Relays every frame between the publisher's socket and the other node's, until
/// either closes; the close frame goes across too.
async fn relay_socket(client: WebSocket, remote: RemoteSocket) {
    let (mut to_client, mut from_client) = client.split();
    let (mut to_remote, mut from_remote) = remote.split();
    let up = async {
        while let Some(Ok(message)) = from_client.next().await {
            let message = match message {
                Message::Text(text) => RemoteMessage::text(text.as_str()),
                Message::Binary(data) => RemoteMessage::Binary(data),
                Message::Ping(data) => RemoteMessage::Ping(data),
                Message::Pong(data) => RemoteMessage::Pong(data),
                Message::Close(frame) => RemoteMessage::Close(frame.map(|f| RemoteCloseFrame {
                    code: f.code.into(),
                    reason: f.reason.as_str().into(),
                })),
            };
            let closing = message.is_close();
            if to_remote.send(message).await.is_err() || closing {
                return;
            }
        }
        // The publisher went without a close frame: the other node hears it.
        let _ = to_remote.send(RemoteMessage::Close(None)).await;
    };
    let down = async {
        while let Some(Ok(message)) = from_remote.next().await {
            let message = match message {
                RemoteMessage::Text(text) => Message::Text(text.as_str().into()),
                RemoteMessage::Binary(data) => Message::Binary(data),
                RemoteMessage::Ping(data) => Message::Ping(data),
                RemoteMessage::Pong(data) => Message::Pong(data),
                RemoteMessage::Close(frame) => Message::Close(frame.map(|f| CloseFrame {
                    code: f.code.into(),
                    reason: f.reason.as_str().into(),
                })),
                RemoteMessage::Frame(_) => continue,
            };
            let closing = matches!(message, Message::Close(_));
            if to_client.send(message).await.is_err() || closing {
                return;
            }
        }
        let frame = CloseFrame {
            code: 1001,
            reason: "the node that held the stream went away".into(),
        };
        let _ = to_client.send(Message::Close(Some(frame))).await;
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}
