//! The `/ws` socket adapter: turns WebSocket frames into `signalling::websocket` input
//! and writes its output back. In a cluster, a socket that reaches a full node is
//! relayed, frame by frame, to the node with the most room.

use super::forward::{self, FORWARDED};
use super::state::AppState;
use crate::cluster::NodeInfo;
use crate::session::Sessions;
use crate::signalling::websocket::{Connection, Incoming, Violation};
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as RemoteMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as RemoteCloseFrame;

/// Each socket's read buffer (the transport's default is 128 KiB).
const READ_BUFFER: usize = 4096;
/// What may wait, unsent, for a client that does not read.
const MAX_WRITE_BUFFER: usize = 1 << 20;

/// How long the last messages and the close frame may take.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

pub async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let sessions = state.sessions.clone();
    let gateway = sessions.gateway();
    let elsewhere = forward::placement(gateway, &headers).await;
    // The transport accepts somewhat more than the limit, so that an oversized message
    // gets a signalling error instead of a dropped connection; past that, it closes the
    // socket with 1009 without reading the rest.
    let limit = (gateway.config.limits.max_message_bytes as usize).saturating_mul(4);
    // Signalling messages are small and an idle socket should cost little: a small read
    // buffer (it grows for a larger message), writes sent at once, and a bound on what
    // may wait for a client that does not read.
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            let connections = sessions.gateway().connections.clone();
            connections.track_future(async move {
                let Some(node) = elsewhere else {
                    return serve_socket(sessions, socket).await;
                };
                match connect(&sessions, &node).await {
                    Ok(remote) => {
                        sessions.gateway().metrics.forwarded("websocket");
                        relay_socket(socket, remote).await;
                    }
                    Err(e) => {
                        tracing::warn!(node = %node.id, "cannot relay a publisher there: {e}");
                        serve_socket(sessions, socket).await;
                    }
                }
            })
        })
}

type RemoteSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the signalling socket of `node`, as forwarded by this one.
async fn connect(sessions: &Sessions, node: &NodeInfo) -> Result<RemoteSocket, String> {
    let url = format!(
        "ws{}/ws",
        node.url.strip_prefix("http").unwrap_or(&node.url)
    );
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    if let Ok(me) = HeaderValue::from_str(&sessions.gateway().node.id) {
        request.headers_mut().insert(FORWARDED, me);
    }
    let connect = tokio_tungstenite::connect_async(request);
    match tokio::time::timeout(CLOSE_WAIT * 2, connect).await {
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

/// What the transport's error says of the client.
fn incoming_error(error: axum::Error) -> Incoming {
    match error.into_inner().downcast::<tungstenite::Error>() {
        Ok(error) => match *error {
            tungstenite::Error::Capacity(_) => Incoming::Violation(Violation::TooBig),
            tungstenite::Error::Utf8(_) => Incoming::Violation(Violation::Utf8),
            tungstenite::Error::Protocol(_) => Incoming::Violation(Violation::Protocol),
            _ => Incoming::Closed,
        },
        Err(_) => Incoming::Closed,
    }
}

async fn serve_socket(sessions: Arc<Sessions>, socket: WebSocket) {
    let (mut sink, stream) = socket.split();
    let (outgoing, mut to_send) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(text) = to_send.recv().await {
            if sink.send(Message::Text(text.into())).await.is_err() {
                return None;
            }
        }
        Some(sink)
    });
    let incoming = stream.filter_map(|m| {
        std::future::ready(match m {
            Ok(Message::Text(text)) => Some(Incoming::Text(text.to_string())),
            Ok(Message::Binary(_)) => Some(Incoming::Binary),
            Ok(Message::Close(_)) => Some(Incoming::Closed),
            Ok(Message::Ping(_) | Message::Pong(_)) => None,
            Err(e) => Some(incoming_error(e)),
        })
    });
    let close = Connection::new(sessions, outgoing).run(incoming).await;
    // The connection is gone, and with it the sender: the writer sends what is left,
    // then the close frame says why.
    match tokio::time::timeout(CLOSE_WAIT, writer).await {
        Ok(Ok(Some(mut sink))) => {
            let frame = CloseFrame {
                code: close.code,
                reason: close.reason.into(),
            };
            let _ = tokio::time::timeout(CLOSE_WAIT, sink.send(Message::Close(Some(frame)))).await;
        }
        _ => tracing::debug!("a signalling socket did not take its last messages"),
    }
}
