//! The WebSocket signalling protocol (`GET /ws`): JSON messages in, sessions started and
//! stopped, answers, candidates, `live`, `ended` and errors out. Transport-free: the HTTP
//! layer hands it a stream of incoming texts and a sender for outgoing ones.

use crate::access::Caller;
use crate::ice_servers::{self, IceServer, Turn};
use crate::name::StreamName;
use crate::session::{PublishRequest, SessionEvent, SessionHandle, Sessions};
use crate::signalling::auth::authorize_publish;
use crate::signalling::problem::{Problem, Refusal};
use crate::stream::{EndReason, Outputs};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use webrtc::peer_connection::RTCIceCandidateInit;

/// A message from the client, as the transport delivered it.
#[derive(Debug)]
pub enum Incoming {
    Text(String),
    Binary,
    /// The client closed the socket, or it broke.
    Closed,
    /// A frame the protocol forbids; the connection must close.
    Violation(Violation),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A protocol error (a reserved opcode, a bad frame).
    Protocol,
    /// Text that is not UTF-8.
    Utf8,
    /// A message or frame too big to read.
    TooBig,
}

/// How the gateway closes the socket: a WebSocket status code and a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: String,
}

impl Close {
    fn new(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// Who minted TURN credentials name when the socket's URL names no stream.
const UNNAMED: &str = "publisher";

/// How long a connection waits for its stream's `ended` before it closes.
const ENDED_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientMessage {
    Publish {
        stream: String,
        sdp: String,
        #[serde(default)]
        token: Option<String>,
    },
    Candidate {
        candidate: Option<String>,
        #[serde(default, rename = "sdpMid")]
        sdp_mid: Option<String>,
        #[serde(default, rename = "sdpMLineIndex")]
        sdp_mline_index: Option<u16>,
        #[serde(default, rename = "usernameFragment")]
        username_fragment: Option<String>,
    },
    Unpublish,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMessage {
    /// The first message: the ICE servers to put in the peer connection before the offer.
    Welcome {
        ice_servers: Vec<IceServer>,
    },
    Answer {
        stream: StreamName,
        sdp: String,
    },
    Candidate {
        candidate: String,
        #[serde(rename = "sdpMid")]
        sdp_mid: Option<String>,
        #[serde(rename = "sdpMLineIndex")]
        sdp_mline_index: Option<u16>,
    },
    Live {
        stream: StreamName,
        outputs: Outputs,
    },
    Ended {
        stream: StreamName,
        reason: String,
    },
    Error {
        code: u16,
        error: String,
        message: String,
    },
}

fn error_message(problem: &Problem) -> ServerMessage {
    ServerMessage::Error {
        code: problem.status,
        error: problem.error.into(),
        message: problem.message.clone(),
    }
}

/// Parses one client message; every failure is a 400 with a sentence saying why.
pub fn parse(text: &str, max_bytes: usize) -> Result<ClientMessage, Problem> {
    if text.len() > max_bytes {
        return Err(Refusal::MessageTooLarge.because(format!(
            "message of {} bytes is larger than the limit of {max_bytes}",
            text.len()
        )));
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Refusal::MalformedMessage.because(format!("message is not JSON: {e}")))?;
    match value.get("type") {
        Some(serde_json::Value::String(kind)) => {
            if !["publish", "candidate", "unpublish"].contains(&kind.as_str()) {
                return Err(Refusal::UnknownType.because(format!("unknown message type {kind:?}")));
            }
        }
        Some(_) => {
            return Err(Refusal::MalformedMessage.because("\"type\" must be a string"));
        }
        None if value.is_object() => {
            return Err(Refusal::MalformedMessage.because("message has no \"type\""));
        }
        None => {
            return Err(Refusal::MalformedMessage.because("message must be a JSON object"));
        }
    }
    serde_json::from_value(value)
        .map_err(|e| Refusal::MalformedMessage.because(format!("invalid message: {e}")))
}

/// One signalling connection. Ends its stream when the client goes away.
pub struct Connection {
    sessions: Arc<Sessions>,
    /// Who connected, as the publish hook is told.
    caller: Caller,
    outgoing: mpsc::UnboundedSender<String>,
    events_tx: mpsc::UnboundedSender<SessionEvent>,
    events: mpsc::UnboundedReceiver<SessionEvent>,
    current: Option<SessionHandle>,
    /// The client asked the current stream to end; its `ended` is on the way.
    ending: bool,
    /// A publication has started on this connection: no publish timeout any more.
    published: bool,
}

impl Connection {
    /// `caller` says who connected (its token comes with each publish).
    pub fn new(
        sessions: Arc<Sessions>,
        outgoing: mpsc::UnboundedSender<String>,
        caller: Caller,
    ) -> Self {
        let (events_tx, events) = mpsc::unbounded_channel();
        Self {
            sessions,
            caller,
            outgoing,
            events_tx,
            events,
            current: None,
            ending: false,
            published: false,
        }
    }

    /// Serves the connection until it closes; answers how to close the socket. Its
    /// stream, if any, has ended and its publisher been told by then.
    pub async fn run(mut self, incoming: impl Stream<Item = Incoming>) -> Close {
        tokio::pin!(incoming);
        let gateway = self.sessions.gateway().clone();
        let timeout_s = gateway.config.signalling.publish_timeout_s;
        let publish_deadline = tokio::time::sleep(Duration::from_secs(timeout_s as u64));
        tokio::pin!(publish_deadline);
        self.send(&ServerMessage::Welcome {
            ice_servers: self.welcome_servers(),
        });
        let close = loop {
            tokio::select! {
                message = incoming.next() => match message {
                    Some(Incoming::Text(text)) => self.on_text(&text).await,
                    Some(Incoming::Binary) => self.send_error(&Refusal::MalformedMessage.because("messages must be JSON text")),
                    Some(Incoming::Violation(Violation::Protocol)) => {
                        break Close::new(1002, "protocol error");
                    }
                    Some(Incoming::Violation(Violation::Utf8)) => {
                        break Close::new(1007, "a text message is not UTF-8");
                    }
                    Some(Incoming::Violation(Violation::TooBig)) => {
                        break Close::new(1009, "message too big");
                    }
                    Some(Incoming::Closed) | None => break Close::new(1000, "closed by the client"),
                },
                Some(event) = self.events.recv() => self.on_session_event(event),
                _ = &mut publish_deadline, if !self.published => {
                    break Close::new(1008, format!("no publish within {timeout_s} s"));
                }
                // At shutdown, the connection closes once its publisher has been told.
                _ = gateway.shutdown.cancelled(), if self.current.is_none() => {
                    break Close::new(1001, "the gateway is shutting down");
                }
            }
        };
        if let Some(handle) = &self.current {
            handle.stop(EndReason::PublisherGone).await;
            self.wait_ended().await;
        }
        close
    }

    /// The ICE servers of the `welcome` message, for the stream the socket's URL names
    /// (`/ws?stream=NAME`), if any. TURN servers (with fresh credentials) only where
    /// publishing needs no token: a page with a token asks `/api/ice-servers` with it.
    fn welcome_servers(&self) -> Vec<IceServer> {
        let gateway = self.sessions.gateway();
        let stream = url::form_urlencoded::parse(self.caller.query.as_bytes())
            .find(|(key, _)| key == "stream")
            .and_then(|(_, value)| StreamName::new(&value).ok());
        let turn = if gateway.access.publish_needs_token(stream.as_ref()) {
            Turn::Withheld
        } else {
            Turn::Given
        };
        let who = stream.as_ref().map_or(UNNAMED, StreamName::as_str);
        ice_servers::for_publisher(&gateway.config.webrtc, who, turn, SystemTime::now())
    }

    /// Waits (a while) for the current stream's `ended`, relaying its other events.
    async fn wait_ended(&mut self) {
        let deadline = tokio::time::Instant::now() + ENDED_WAIT;
        while self.current.is_some() {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => self.on_session_event(event),
                _ => break,
            }
        }
        self.current = None;
    }

    async fn on_text(&mut self, text: &str) {
        let max = self.sessions.gateway().config.limits.max_message_bytes as usize;
        let result = match parse(text, max) {
            Ok(message) => self.on_message(message).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::debug!(code = e.status, "signalling error: {}", e.message);
            self.send_error(&e);
        }
    }

    async fn on_message(&mut self, message: ClientMessage) -> Result<(), Problem> {
        match message {
            ClientMessage::Publish { stream, sdp, token } => {
                // A publish right after an unpublish waits for the first stream's end.
                if self.ending {
                    self.wait_ended().await;
                }
                if let Some(current) = &self.current {
                    return Err(Refusal::AlreadyPublishing.because(format!(
                        "this connection already publishes stream {}; unpublish first",
                        current.stream
                    )));
                }
                let stream = StreamName::new(&stream).map_err(|_| Problem::bad_name())?;
                let caller = Caller {
                    token,
                    ..self.caller.clone()
                };
                let allowed =
                    authorize_publish(self.sessions.gateway(), &stream, "websocket", &caller)
                        .await?;
                let request = PublishRequest {
                    stream: stream.clone(),
                    offer: sdp,
                    publisher: "websocket",
                    record: allowed.record,
                };
                let (handle, answer) = self
                    .sessions
                    .publish(request, self.events_tx.clone())
                    .await
                    .map_err(|e| Problem::publish(&stream, &e))?;
                self.current = Some(handle);
                self.published = true;
                self.send(&ServerMessage::Answer {
                    stream,
                    sdp: answer,
                });
                Ok(())
            }
            ClientMessage::Candidate {
                candidate,
                sdp_mid,
                sdp_mline_index,
                username_fragment,
            } => {
                let Some(current) = &self.current else {
                    return Err(Refusal::NotPublishing
                        .because("a candidate needs a publication: send publish first"));
                };
                // A null or empty candidate marks the end of the publisher's candidates.
                if let Some(candidate) = candidate.filter(|c| !c.is_empty()) {
                    current
                        .add_candidate(RTCIceCandidateInit {
                            candidate,
                            sdp_mid,
                            sdp_mline_index,
                            username_fragment,
                            url: None,
                        })
                        .await;
                }
                Ok(())
            }
            ClientMessage::Unpublish => {
                let Some(current) = &self.current else {
                    return Err(Refusal::NotPublishing.because("this connection publishes nothing"));
                };
                current.stop(EndReason::Unpublished).await;
                self.ending = true;
                Ok(())
            }
        }
    }

    fn on_session_event(&mut self, event: SessionEvent) {
        let message = match event {
            SessionEvent::Candidate(c) => ServerMessage::Candidate {
                candidate: c.candidate,
                sdp_mid: c.sdp_mid,
                sdp_mline_index: c.sdp_mline_index,
            },
            SessionEvent::Live { stream, outputs } => ServerMessage::Live { stream, outputs },
            SessionEvent::Ended { stream, reason } => {
                if self.current.as_ref().is_some_and(|c| c.stream == stream) {
                    self.current = None;
                    self.ending = false;
                }
                ServerMessage::Ended {
                    stream,
                    reason: reason.to_string(),
                }
            }
        };
        self.send(&message);
    }

    fn send(&self, message: &ServerMessage) {
        let text = serde_json::to_string(message).expect("messages serialize");
        let _ = self.outgoing.send(text);
    }

    fn send_error(&self, error: &Problem) {
        self.sessions
            .gateway()
            .metrics
            .signalling_error(error.status);
        self.send(&error_message(error));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_table() {
        let table: &[(&str, &str, &str)] = &[
            (
                "not json",
                "malformed-message",
                "message is not JSON: expected ident at line 1 column 2",
            ),
            (
                "[1,2]",
                "malformed-message",
                "message must be a JSON object",
            ),
            ("{}", "malformed-message", "message has no \"type\""),
            (
                "{\"type\":5}",
                "malformed-message",
                "\"type\" must be a string",
            ),
            (
                "{\"type\":\"dance\"}",
                "unknown-type",
                "unknown message type \"dance\"",
            ),
            (
                "{\"type\":\"publish\",\"sdp\":\"v=0\"}",
                "malformed-message",
                "invalid message: missing field `stream`",
            ),
            (
                "{\"type\":\"publish\",\"stream\":1,\"sdp\":\"v=0\"}",
                "malformed-message",
                "invalid message: invalid type: integer `1`, expected a string",
            ),
        ];
        for (text, error, message) in table {
            let e = parse(text, 1024).unwrap_err();
            assert_eq!(
                (e.status, e.error, e.message.as_str()),
                (400, *error, *message),
                "{text}"
            );
        }
        let e = parse(&"x".repeat(2000), 1024).unwrap_err();
        assert_eq!(e.error, "message-too-large");
    }

    #[test]
    fn good_messages() {
        assert!(matches!(
            parse(r#"{"type":"publish","stream":"a","sdp":"v=0"}"#, 1024),
            Ok(ClientMessage::Publish { token: None, .. })
        ));
        assert!(matches!(
            parse(r#"{"type":"candidate","candidate":null}"#, 1024),
            Ok(ClientMessage::Candidate {
                candidate: None,
                ..
            })
        ));
        assert!(matches!(
            parse(r#"{"type":"unpublish"}"#, 1024),
            Ok(ClientMessage::Unpublish)
        ));
    }

    #[test]
    fn server_messages_match_the_contract() {
        let cam1 = StreamName::new("cam1").unwrap();
        let e = Problem::publish(&cam1, &crate::registry::RegistryError::InUse.into());
        assert_eq!(
            serde_json::to_value(error_message(&e)).unwrap(),
            serde_json::json!({"type": "error", "code": 409, "error": "stream-in-use",
                "message": "stream cam1 already has a publisher"})
        );
        let welcome = ServerMessage::Welcome {
            ice_servers: vec![IceServer {
                urls: vec!["turn:turn.example.net".into()],
                username: Some("1700000000:cam1".into()),
                credential: Some("c".into()),
            }],
        };
        assert_eq!(
            serde_json::to_value(welcome).unwrap(),
            serde_json::json!({"type": "welcome", "ice_servers": [{"urls": ["turn:turn.example.net"],
                "username": "1700000000:cam1", "credential": "c"}]})
        );
        let live = ServerMessage::Live {
            stream: cam1,
            outputs: Outputs {
                sdp: Some("/streams/cam1/stream.sdp".into()),
                hls: None,
                recording: None,
            },
        };
        assert_eq!(
            serde_json::to_value(live).unwrap(),
            serde_json::json!({"type": "live", "stream": "cam1", "outputs":
                {"sdp": "/streams/cam1/stream.sdp", "hls": null, "recording": null}})
        );
    }
}
