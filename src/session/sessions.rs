//! The running sessions: [`Sessions::publish`] checks an offer, claims the name and a
//! port slot, negotiates, and spawns the session's task; the handles of live sessions
//! are found here by name. Whatever ends a session, its wrapper frees what it held and
//! reports `Ended`.

use crate::blocking::blocking;
use crate::config::TranscodeMode;
use crate::gateway::Gateway;
use crate::name::StreamName;
use crate::registry::RegistryError;
use crate::session::driver::Session;
use crate::session::handle::{SessionEvent, SessionHandle};
use crate::session::offer::{self, OfferError, VideoPreference};
use crate::session::peer::Peer;
use crate::stream::EndReason;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::mpsc;
use tracing::Instrument;

/// Commands a session may hold before senders wait.
const COMMANDS_QUEUED: usize = 32;

/// Why a publication could not start. Each maps to one status in
/// `signalling::problem`.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Offer(#[from] OfferError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error("WebRTC negotiation failed: {0}")]
    Negotiation(String),
}

/// A publication request from any signalling protocol.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub stream: StreamName,
    pub offer: String,
    /// `websocket` or `whip`.
    pub publisher: &'static str,
}

/// The live sessions, by stream name.
#[derive(Debug)]
pub struct Sessions {
    gateway: Arc<Gateway>,
    handles: Mutex<HashMap<StreamName, SessionHandle>>,
}

impl Sessions {
    pub fn new(gateway: Arc<Gateway>) -> Arc<Self> {
        Arc::new(Self {
            gateway,
            handles: Mutex::new(HashMap::new()),
        })
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    fn handles(&self) -> std::sync::MutexGuard<'_, HashMap<StreamName, SessionHandle>> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The running session of a live stream.
    pub fn get(&self, name: &str) -> Option<SessionHandle> {
        self.handles().get(name).cloned()
    }

    /// Starts a session: checks the offer, claims the name and a port slot, negotiates and
    /// returns the answer. The session then runs on its own until it ends, and always
    /// reports `Ended` on `events` and frees what it held.
    pub async fn publish(
        self: &Arc<Self>,
        request: PublishRequest,
        events: mpsc::UnboundedSender<SessionEvent>,
    ) -> Result<(SessionHandle, String), PublishError> {
        let gateway = &self.gateway;
        if gateway.shutdown.is_cancelled() {
            return Err(PublishError::ShuttingDown);
        }
        let preference = match gateway.config.transcode.mode {
            TranscodeMode::Always => VideoPreference::Vp8,
            TranscodeMode::Auto => VideoPreference::OfferOrder,
        };
        let plan = offer::plan(&request.offer, preference)?;
        let name = request.stream.clone();
        let slot = gateway
            .registry()
            .reserve(&name, request.publisher, SystemTime::now())?;
        let span = tracing::info_span!("stream", name = %name);
        if let Some(rtx) = &plan.video_rtx {
            tracing::info!(parent: &span, payload_type = rtx.payload_type, "retransmissions on their own stream (RTX)");
        }
        // Remote candidates are bounded, offer and trickle together.
        let max_candidates = gateway.config.limits.max_remote_candidates as usize;
        let (offer, taken, ignored) = offer::limit_candidates(&request.offer, max_candidates);
        if ignored > 0 {
            tracing::warn!(parent: &span, ignored, "offer candidates past limits.max_remote_candidates ignored");
            gateway.metrics.candidates_ignored(ignored as u64);
        }
        let negotiated = Peer::negotiate(&gateway.config.webrtc, &plan, &offer)
            .instrument(span.clone())
            .await;
        let (peer, peer_events, answer) = match negotiated {
            Ok(n) => n,
            Err(e) => {
                // An ended stream taken over goes back to lingering.
                if gateway.hls.is_lingering(&name) {
                    gateway.registry().end(&name, gateway.linger_deadline());
                } else {
                    gateway.registry().release(&name);
                }
                return Err(PublishError::Negotiation(e.to_string()));
            }
        };
        let (commands_tx, commands) = mpsc::channel(COMMANDS_QUEUED);
        let handle = SessionHandle::new(name.clone(), commands_tx);
        self.handles().insert(name.clone(), handle.clone());
        let mut session = Session::new(
            gateway.clone(),
            name.clone(),
            slot,
            plan,
            (peer, peer_events),
            commands,
            events.clone(),
            offer::first_mid(&answer),
        );
        session.remote_candidates(taken, ignored as u64);
        let sessions = self.clone();
        gateway.metrics.publication_started();
        gateway.sessions.spawn(
            async move {
                tracing::info!(slot, "publisher connecting");
                // The session runs in a task of its own so that a panic ends this stream only.
                let (reason, hls) = match tokio::spawn(session.run().in_current_span()).await {
                    Ok(ended) => ended,
                    Err(e) => {
                        tracing::error!("session task failed: {e}");
                        (EndReason::InternalError, None)
                    }
                };
                sessions.handles().remove(&name);
                let gateway = &sessions.gateway;
                match hls {
                    // The playlist stays served, ended, for hls.linger_s.
                    Some(hls) => {
                        gateway.hls.linger(&name, hls);
                        gateway.registry().end(&name, gateway.linger_deadline());
                    }
                    None => {
                        let entry = gateway.registry().release(&name);
                        if let Some(live) = entry.and_then(|e| e.hls) {
                            blocking(|| std::fs::remove_dir_all(&live.dir)).ok();
                        }
                    }
                }
                tracing::info!(%reason, "stream ended");
                gateway.metrics.publication_ended(&reason);
                let _ = events.send(SessionEvent::Ended {
                    stream: name,
                    reason,
                });
            }
            .instrument(span),
        );
        Ok((handle, answer))
    }
}
