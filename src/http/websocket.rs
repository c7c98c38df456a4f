//! The `/ws` socket adapter: turns WebSocket frames into `signalling::websocket` input
//! and writes its output back.

use crate::session::Sessions;
use crate::signalling::websocket::{Connection, Incoming};
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use tokio::sync::mpsc;

pub async fn upgrade(State(sessions): State<Arc<Sessions>>, upgrade: WebSocketUpgrade) -> Response {
    let gateway = sessions.gateway();
    // The transport accepts somewhat more than the limit, so that an oversized message
    // gets a signalling error instead of a dropped connection.
    let limit = gateway.config.limits.max_message_bytes as usize;
    upgrade
        .max_message_size(limit.saturating_mul(4))
        .on_upgrade(move |socket| {
            let connections = sessions.gateway().connections.clone();
            connections.track_future(serve_socket(sessions, socket))
        })
}

async fn serve_socket(sessions: Arc<Sessions>, socket: WebSocket) {
    let (mut sink, stream) = socket.split();
    let (outgoing, mut to_send) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(text) = to_send.recv().await {
            if sink.send(Message::Text(text.into())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let incoming = stream
        .take_while(|m| std::future::ready(matches!(m, Ok(m) if !matches!(m, Message::Close(_)))))
        .filter_map(|m| {
            std::future::ready(match m {
                Ok(Message::Text(text)) => Some(Incoming::Text(text.to_string())),
                Ok(Message::Binary(_)) => Some(Incoming::Binary),
                _ => None,
            })
        });
    Connection::new(sessions, outgoing).run(incoming).await;
    // The connection is gone, and with it the sender: the writer sends what is left.
    if tokio::time::timeout(std::time::Duration::from_secs(1), writer)
        .await
        .is_err()
    {
        tracing::debug!("a signalling socket did not take its last messages");
    }
}
