//! The `/ws` socket adapter: turns WebSocket frames into `signalling::websocket` input
//! and writes its output back. (A socket that reaches a full node of a cluster is
//! relayed elsewhere by the `placement` layer before it gets here.)

use super::auth::caller_of;
use crate::access::Caller;
use crate::gateway::Gateway;
use crate::session::Sessions;
use crate::signalling::websocket::{Connection, Incoming, Violation};
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{Extensions, HeaderMap, Uri};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Each socket's read buffer (the transport's default is 128 KiB).
const READ_BUFFER: usize = 4096;
/// What may wait, unsent, for a client that does not read.
const MAX_WRITE_BUFFER: usize = 1 << 20;

/// How long the last messages and the close frame may take.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

pub async fn upgrade(
    State(sessions): State<Arc<Sessions>>,
    upgrade: WebSocketUpgrade,
    headers: HeaderMap,
    uri: Uri,
    extensions: Extensions,
) -> Response {
    let gateway = sessions.gateway().clone();
    // Who connected, for the publish hook; the token comes with each publish.
    let caller = Caller {
        token: None,
        ..caller_of(&headers, &uri, &extensions)
    };
    configure(upgrade, &gateway).on_upgrade(move |socket| {
        let connections = gateway.connections.clone();
        connections.track_future(serve_socket(sessions, socket, caller))
    })
}

/// The socket's limits and buffers, for a publisher served here or relayed.
pub fn configure(upgrade: WebSocketUpgrade, gateway: &Gateway) -> WebSocketUpgrade {
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

pub async fn serve_socket(sessions: Arc<Sessions>, socket: WebSocket, caller: Caller) {
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
    let close = Connection::new(sessions, outgoing, caller)
        .run(incoming)
        .await;
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
