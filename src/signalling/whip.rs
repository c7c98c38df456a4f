//! WHIP ingest (RFC 9725): `POST /whip/{name}` starts a session from an SDP offer and
//! answers with a session URL; `PATCH` on it trickles candidates; `DELETE` ends it.
//! Transport-free: the HTTP layer passes the headers and body it got and turns the
//! results into responses.

use crate::access::{Caller, token_matches};
use crate::name::StreamName;
use crate::session::offer::first_mid;
use crate::session::{PublishError, PublishRequest, SessionEvent, SessionHandle, Sessions};
use crate::signalling::auth::authorize_publish;
use crate::signalling::problem::{Problem, Refusal};
use crate::stream::EndReason;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use webrtc::peer_connection::RTCIceCandidateInit;

pub const SDP: &str = "application/sdp";
pub const SDP_FRAGMENT: &str = "application/trickle-ice-sdpfrag";

/// Why a WHIP request failed; each maps to one status.
#[derive(Debug, thiserror::Error)]
pub enum WhipError {
    #[error("the body must be {expected}, got {got:?}")]
    UnsupportedMediaType { expected: &'static str, got: String },
    #[error("this session needs the bearer token it was created with")]
    Unauthorized,
    #[error("{}", .0.message)]
    Refused(Problem),
    #[error("{0}")]
    Publish(#[from] PublishError),
    #[error("no WHIP session {0}")]
    NotFound(String),
    #[error("the session changed: If-Match does not match its ETag")]
    PreconditionFailed,
    #[error("ICE restarts are not supported: publish again instead")]
    IceRestart,
}

impl WhipError {
    /// The status and token of this refusal, from the one table.
    pub fn problem(&self, stream: &StreamName) -> Problem {
        let message = self.to_string();
        match self {
            WhipError::UnsupportedMediaType { .. } => {
                Refusal::UnsupportedMediaType.because(message)
            }
            WhipError::Unauthorized => Problem::unauthorized(message),
            WhipError::Refused(problem) => problem.clone(),
            WhipError::NotFound(_) => Refusal::NoSuchSession.because(message),
            WhipError::PreconditionFailed => Refusal::PreconditionFailed.because(message),
            WhipError::IceRestart => Refusal::IceRestartUnsupported.because(message),
            WhipError::Publish(e) => Problem::publish(stream, e),
        }
    }
}

/// A created WHIP session.
#[derive(Debug)]
pub struct Created {
    pub location: String,
    pub etag: String,
    pub answer: String,
}

struct WhipSession {
    stream: StreamName,
    /// The token it was created with: its PATCH and DELETE need the same.
    token: Option<String>,
    handle: SessionHandle,
    etag: String,
    ice_ufrag: Option<String>,
    mid: Option<String>,
}

/// The WHIP sessions, by their unguessable ids.
pub struct Whip {
    sessions: Arc<Sessions>,
    /// The WHIP sessions by id.
    by_id: Mutex<HashMap<String, WhipSession>>,
}

fn media_type(content_type: Option<&str>) -> String {
    content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

impl Whip {
    pub fn new(sessions: Arc<Sessions>) -> Arc<Self> {
        Arc::new(Self {
            sessions,
            by_id: Mutex::new(HashMap::new()),
        })
    }

    fn whip_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, WhipSession>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `token` is the one session `id` was created with (any, when it was
    /// created without one).
    fn authorize(&self, id: &str, token: Option<&str>) -> Result<(), WhipError> {
        match self.whip_sessions().get(id).map(|s| s.token.clone()) {
            Some(Some(created)) if !token_matches(&created, token) => Err(WhipError::Unauthorized),
            _ => Ok(()),
        }
    }

    /// `POST /whip/{stream}`.
    pub async fn create(
        self: &Arc<Self>,
        stream: &StreamName,
        content_type: Option<&str>,
        caller: &Caller,
        offer: String,
    ) -> Result<Created, WhipError> {
        let got = media_type(content_type);
        let allowed = authorize_publish(self.sessions.gateway(), stream, "whip", caller)
            .await
            .map_err(WhipError::Refused)?;
        if got != SDP {
            return Err(WhipError::UnsupportedMediaType { expected: SDP, got });
        }
        let ice_ufrag = attribute(&offer, "ice-ufrag");
        let request = PublishRequest {
            stream: stream.clone(),
            offer,
            publisher: "whip",
            record: allowed.record,
        };
        let (events, mut received) = mpsc::unbounded_channel();
        let (handle, answer) = self.sessions.publish(request, events).await?;
        let id = format!("{:032x}", rand::random::<u128>());
        let etag = format!("\"{:016x}\"", rand::random::<u64>());
        self.whip_sessions().insert(
            id.clone(),
            WhipSession {
                stream: stream.clone(),
                token: caller.token.clone(),
                handle,
                etag: etag.clone(),
                ice_ufrag,
                mid: first_mid(&answer),
            },
        );
        // The session URL goes away with the session.
        let whip = self.clone();
        let session_id = id.clone();
        tokio::spawn(async move {
            while let Some(event) = received.recv().await {
                if let SessionEvent::Ended { .. } = event {
                    break;
                }
            }
            whip.whip_sessions().remove(&session_id);
        });
        Ok(Created {
            location: format!("/whip/{stream}/{id}"),
            etag,
            answer,
        })
    }

    /// `PATCH` on a session URL: trickled candidates. An ICE restart is refused.
    pub async fn patch(
        &self,
        stream: &StreamName,
        id: &str,
        content_type: Option<&str>,
        if_match: Option<&str>,
        token: Option<&str>,
        fragment: &str,
    ) -> Result<(), WhipError> {
        self.authorize(id, token)?;
        let (handle, mid) = {
            let sessions = self.whip_sessions();
            let session = sessions
                .get(id)
                .filter(|s| s.stream == *stream)
                .ok_or_else(|| WhipError::NotFound(id.to_string()))?;
            if let Some(tag) = if_match
                && tag.trim() != "*"
                && tag.trim() != session.etag
            {
                return Err(WhipError::PreconditionFailed);
            }
            let got = media_type(content_type);
            if got != SDP_FRAGMENT {
                return Err(WhipError::UnsupportedMediaType {
                    expected: SDP_FRAGMENT,
                    got,
                });
            }
            if let Some(ufrag) = attribute(fragment, "ice-ufrag")
                && Some(&ufrag) != session.ice_ufrag.as_ref()
            {
                return Err(WhipError::IceRestart);
            }
            (session.handle.clone(), session.mid.clone())
        };
        for candidate in fragment_candidates(fragment) {
            handle
                .add_candidate(RTCIceCandidateInit {
                    candidate: candidate.to_string(),
                    sdp_mid: mid.clone(),
                    sdp_mline_index: Some(0),
                    ..Default::default()
                })
                .await;
        }
        Ok(())
    }

    /// `DELETE` on a session URL: the publication ends.
    pub async fn delete(
        &self,
        stream: &StreamName,
        id: &str,
        token: Option<&str>,
    ) -> Result<(), WhipError> {
        self.authorize(id, token)?;
        let session = {
            let mut sessions = self.whip_sessions();
            match sessions.get(id) {
                Some(s) if s.stream == *stream => sessions.remove(id),
                _ => None,
            }
        };
        let session = session.ok_or_else(|| WhipError::NotFound(id.to_string()))?;
        session.handle.stop(EndReason::Unpublished).await;
        Ok(())
    }
}

/// The candidates (`a=candidate:...`, without `a=`) of a trickle fragment (RFC 8840);
/// the ICE stack reads each one and ignores those it cannot.
pub fn fragment_candidates(fragment: &str) -> impl Iterator<Item = &str> {
    fragment
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a="))
        .filter(|a| a.starts_with("candidate:"))
}

/// The first `a=name:value` attribute of an SDP or SDP fragment.
pub fn attribute(sdp: &str, name: &str) -> Option<String> {
    let prefix = format!("a={name}:");
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix(&prefix).map(|v| v.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_ignore_parameters_and_case() {
        assert_eq!(media_type(Some("Application/SDP; charset=utf-8")), SDP);
        assert_eq!(media_type(None), "");
    }

    #[test]
    fn attributes() {
        let frag = "a=ice-ufrag:abcd\r\na=ice-pwd:xyz\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n";
        assert_eq!(attribute(frag, "ice-ufrag").as_deref(), Some("abcd"));
        assert_eq!(attribute(frag, "mid").as_deref(), Some("0"));
        assert_eq!(attribute(frag, "nothing"), None);
    }
}
