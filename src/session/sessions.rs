//! The running sessions: [`Sessions::publish`] checks an offer, claims the name (and an
//! RTP slot) in the cluster, reserves them in the registry, negotiates, and spawns the
//! session's task. The registry (`crate::registry`) owns each name's life, with the
//! session's handle and the claim; this layer does the I/O its transitions ask for.
//! Whatever ends a session, its wrapper ends the name in one transition, gives the claim
//! up, and reports `Ended`.

use crate::blocking::blocking;
use crate::cluster::membership::{ClaimError, Membership};
use crate::config::TranscodeMode;
use crate::gateway::Gateway;
use crate::name::StreamName;
use crate::registry::{Opaque, Refused, RegistryError};
use crate::session::driver::Session;
use crate::session::handle::{SessionEvent, SessionHandle};
use crate::session::offer::{self, OfferError, VideoPreference};
use crate::session::peer::{NegotiationError, Peer};
use crate::stream::EndReason;
use std::sync::Arc;
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
    /// In a cluster, this node is full and no other node has room.
    #[error("no node of the cluster has room for another publisher")]
    NoCapacity,
    /// In a cluster, the name cannot be claimed: Redis does not answer.
    #[error("{0}")]
    ClusterUnavailable(String),
    #[error("WebRTC negotiation failed: {0}")]
    Negotiation(#[from] NegotiationError),
}

/// A publication request from any signalling protocol.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub stream: StreamName,
    pub offer: String,
    /// `websocket` or `whip`.
    pub publisher: &'static str,
}

/// What a publication holds in the cluster: its name and, when RTP is sent, its slot.
/// The registry entry keeps it, as an [`Opaque`] value, until the name ends.
#[derive(Debug, Clone)]
struct Claims {
    cluster: Arc<Membership>,
    rtp_host: String,
    slot: Option<u32>,
}

impl Claims {
    /// Gives the claims up; with `linger`, the node serves the ended stream that long.
    async fn give_up(&self, name: &StreamName, linger: Option<std::time::Duration>) {
        if let Some(slot) = self.slot {
            self.cluster.release_slot(&self.rtp_host, slot).await;
        }
        self.cluster.release_name(name, linger).await;
    }

    /// Gives up the claim a registry entry held, if any.
    async fn give_up_held(
        held: Option<Opaque>,
        name: &StreamName,
        linger: Option<std::time::Duration>,
    ) {
        if let Some(claims) = held.and_then(|held| held.downcast::<Claims>().ok()) {
            claims.give_up(name, linger).await;
        }
    }
}

/// Starts sessions, and finds the live ones' handles in the registry by name.
#[derive(Debug)]
pub struct Sessions {
    gateway: Arc<Gateway>,
}

impl Sessions {
    pub fn new(gateway: Arc<Gateway>) -> Arc<Self> {
        let sessions = Arc::new(Self { gateway });
        sessions.end_lost_names();
        sessions
    }

    /// In a cluster, ends each stream whose name another node claimed while this one
    /// could not renew it (Redis was away longer than the lease).
    fn end_lost_names(self: &Arc<Self>) {
        let Some(mut lost) = self.gateway.cluster.as_ref().and_then(|c| c.take_lost()) else {
            return;
        };
        let sessions = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(name) = lost.recv().await {
                let Some(handle) = sessions.upgrade().and_then(|s| s.get(name.as_str())) else {
                    continue;
                };
                handle.stop(EndReason::NameClaimedElsewhere).await;
            }
        });
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// The running session of a live stream.
    pub fn get(&self, name: &str) -> Option<SessionHandle> {
        let registry = self.gateway.registry();
        registry
            .handle(name)?
            .downcast_ref::<SessionHandle>()
            .cloned()
    }

    /// Claims `name` across the cluster and, when RTP is sent, a port slot that no
    /// other node sending to `rtp.host` uses.
    async fn claim(
        &self,
        cluster: &Arc<Membership>,
        name: &StreamName,
    ) -> Result<Claims, PublishError> {
        let config = &self.gateway.config;
        // A name live here needs no Redis to be refused.
        if self.gateway.registry().is_active(name.as_str()) {
            return Err(RegistryError::InUse.into());
        }
        let refused = |e: ClaimError| match e {
            ClaimError::Held(_) => PublishError::Registry(RegistryError::InUse),
            ClaimError::Unavailable(e) => PublishError::ClusterUnavailable(format!(
                "the cluster cannot be reached to claim the name: {e}"
            )),
        };
        cluster.claim_name(name).await.map_err(refused)?;
        let mut claims = Claims {
            cluster: cluster.clone(),
            rtp_host: config.rtp.host.to_string(),
            slot: None,
        };
        if config.rtp.enabled {
            // Each slot takes four ports from rtp.port_base.
            let count = 65536u32.saturating_sub(config.rtp.port_base) / 4;
            match cluster.claim_slot(&claims.rtp_host, count).await {
                Ok(slot) => claims.slot = Some(slot),
                Err(e) => {
                    claims.give_up(name, None).await;
                    return Err(match e {
                        ClaimError::Held(_) => PublishError::NoCapacity,
                        e => refused(e),
                    });
                }
            }
        }
        Ok(claims)
    }

    /// Starts a session: checks the offer, claims the name (and an RTP slot) in the
    /// cluster, reserves them in the registry, negotiates and returns the answer. The
    /// session then runs on its own until it ends; then its name ends in the registry, its
    /// claim is given up, and `Ended` is reported on `events`.
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
        // Claim, then reserve: the registry entry keeps the claim until the name ends.
        let claims = match &gateway.cluster {
            Some(cluster) => Some(self.claim(cluster, &name).await?),
            None => None,
        };
        let claimed_slot = claims.as_ref().and_then(|c| c.slot);
        let reserved = gateway.registry().reserve(
            &name,
            request.publisher,
            SystemTime::now(),
            claimed_slot,
            claims.map(|c| Box::new(c) as Opaque),
        );
        let slot = match reserved {
            Ok(slot) => slot,
            Err(Refused { error, claim }) => {
                Claims::give_up_held(claim, &name, None).await;
                return Err(match error {
                    RegistryError::Full(_) if gateway.cluster.is_some() => PublishError::NoCapacity,
                    e => e.into(),
                });
            }
        };
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
                let released = gateway.registry().release(&name, gateway.linger_deadline());
                let linger = released.lingers.then(|| gateway.linger());
                Claims::give_up_held(released.claim, &name, linger).await;
                return Err(e.into());
            }
        };
        let (commands_tx, commands) = mpsc::channel(COMMANDS_QUEUED);
        let handle = SessionHandle::new(name.clone(), commands_tx);
        gateway
            .registry()
            .started(&name, Box::new(handle.clone()) as Opaque);
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
        gateway.session_tasks.spawn(
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
                let gateway = &sessions.gateway;
                // One step: the handle goes, and with its HLS output the name lingers
                // (the playlist served, ended) for hls.linger_s.
                let ended = gateway
                    .registry()
                    .end(&name, hls, gateway.linger_deadline());
                if let Some(live) = ended.remove {
                    blocking(|| std::fs::remove_dir_all(&live.dir)).ok();
                }
                let linger = ended.lingers.then(|| gateway.linger());
                Claims::give_up_held(ended.claim, &name, linger).await;
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
