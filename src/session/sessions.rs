//! The running sessions: [`Sessions::publish`] checks an offer, claims the name and a
//! port slot, negotiates, and spawns the session's task; the handles of live sessions
//! are found here by name. Whatever ends a session, its wrapper frees what it held and
//! reports `Ended`.

use crate::blocking::blocking;
use crate::cluster::{Claim, ClaimError, Cluster, SlotRequest};
use crate::config::{RtpConfig, TranscodeMode};
use crate::gateway::Gateway;
use crate::name::StreamName;
use crate::registry::{Registry, RegistryError};
use crate::session::driver::Session;
use crate::session::handle::{SessionEvent, SessionHandle};
use crate::session::offer::{self, OfferError, VideoPreference};
use crate::session::peer::Peer;
use crate::stream::EndReason;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
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

/// What a publication holds before it negotiates: its claim in the cluster (dropped, it
/// gives the name and slot up) and its port slot in the registry.
#[derive(Debug)]
struct Reservation {
    claim: Claim,
    slot: u32,
}

/// The RTP slot a publication claims across the cluster, when RTP is sent: each slot
/// takes four ports from `rtp.port_base`.
fn slot_request(rtp: &RtpConfig) -> Option<SlotRequest> {
    rtp.enabled.then(|| SlotRequest {
        host: rtp.host.to_string(),
        count: 65536u32.saturating_sub(rtp.port_base) / 4,
    })
}

/// Claims `name` (and a slot) in the cluster, then reserves both in the registry. On
/// any refusal, what was claimed is given up with the claim's guard.
async fn reserve<'r>(
    cluster: &dyn Cluster,
    registry: &impl Fn() -> MutexGuard<'r, Registry>,
    slots: Option<SlotRequest>,
    name: &StreamName,
    publisher: &'static str,
) -> Result<Reservation, PublishError> {
    // A name live here needs no Redis to be refused.
    if registry().is_active(name.as_str()) {
        return Err(RegistryError::InUse.into());
    }
    let claim = cluster.claim(name, slots).await.map_err(|e| match e {
        ClaimError::Held(_) => PublishError::Registry(RegistryError::InUse),
        ClaimError::NoSlot(_) => PublishError::NoCapacity,
        ClaimError::Unavailable(e) => PublishError::ClusterUnavailable(format!(
            "the cluster cannot be reached to claim the name: {e}"
        )),
    })?;
    let reserved = registry().reserve(name, publisher, SystemTime::now(), claim.slot());
    match reserved {
        Ok(slot) => Ok(Reservation { claim, slot }),
        // Where other nodes may have room, this one being full means the cluster is.
        Err(RegistryError::Full(_)) if cluster.has_other_nodes() => Err(PublishError::NoCapacity),
        Err(e) => Err(e.into()),
    }
}

/// The live sessions, by stream name.
#[derive(Debug)]
pub struct Sessions {
    gateway: Arc<Gateway>,
    handles: Mutex<HashMap<StreamName, SessionHandle>>,
}

impl Sessions {
    pub fn new(gateway: Arc<Gateway>) -> Arc<Self> {
        let sessions = Arc::new(Self {
            gateway,
            handles: Mutex::new(HashMap::new()),
        });
        sessions.end_lost_names();
        sessions
    }

    /// Ends each stream whose name another node claimed while this one could not renew
    /// it (Redis was away longer than the lease).
    fn end_lost_names(self: &Arc<Self>) {
        let Some(mut lost) = self.gateway.cluster.take_lost() else {
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
        let Reservation { claim, slot } = reserve(
            gateway.cluster.as_ref(),
            &|| gateway.registry(),
            slot_request(&gateway.config.rtp),
            &name,
            request.publisher,
        )
        .await?;
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
                let lingering = gateway.hls.is_lingering(&name);
                if lingering {
                    gateway.registry().end(&name, gateway.linger_deadline());
                    claim.linger(gateway.linger());
                } else {
                    gateway.registry().release(&name);
                }
                // Dropped, the claim gives the name and slot up.
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
                let lingering = hls.is_some();
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
                claim.end(lingering.then(|| gateway.linger())).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ClusterStatus, HeldSlot, Holder, NodeInfo, Release};
    use futures::future::BoxFuture;
    use std::time::Duration;

    /// What the fake cluster was told to give up: the name, its slot, its linger.
    type Released = Vec<(String, Option<u32>, Option<Duration>)>;

    #[derive(Debug, Default)]
    struct Log(Mutex<Released>);

    impl Release for Log {
        fn release(
            self: Arc<Self>,
            name: StreamName,
            slot: Option<HeldSlot>,
            linger: Option<Duration>,
        ) -> BoxFuture<'static, ()> {
            let entry = (name.to_string(), slot.map(|s| s.slot), linger);
            self.0.lock().unwrap().push(entry);
            Box::pin(async {})
        }
    }

    /// A cluster that answers every claim with `answer`, handing out slot 7.
    #[derive(Debug)]
    struct FakeCluster {
        answer: Result<(), ClaimError>,
        others: bool,
        claims: Mutex<u32>,
        log: Arc<Log>,
    }

    impl FakeCluster {
        fn new(answer: Result<(), ClaimError>, others: bool) -> Self {
            Self {
                answer,
                others,
                claims: Mutex::new(0),
                log: Arc::default(),
            }
        }

        fn released(&self) -> Released {
            self.log.0.lock().unwrap().clone()
        }
    }

    #[async_trait::async_trait]
    impl Cluster for FakeCluster {
        fn has_other_nodes(&self) -> bool {
            self.others
        }
        async fn claim(
            &self,
            name: &StreamName,
            slot: Option<SlotRequest>,
        ) -> Result<Claim, ClaimError> {
            *self.claims.lock().unwrap() += 1;
            self.answer.clone()?;
            let slot = slot.map(|s| HeldSlot {
                host: s.host,
                slot: 7,
            });
            Ok(Claim::new(name.clone(), slot, self.log.clone()))
        }
        async fn holder(&self, _name: &str) -> Result<Option<Holder>, ClaimError> {
            Ok(None)
        }
        async fn node(&self, _id: &str) -> Result<Option<NodeInfo>, ClaimError> {
            Ok(None)
        }
        async fn nodes(&self) -> Result<Vec<NodeInfo>, ClaimError> {
            Ok(Vec::new())
        }
        async fn join(&self, _me: &NodeInfo) -> Result<(), String> {
            Ok(())
        }
        async fn renew(&self, _me: &NodeInfo) -> Result<(), ClaimError> {
            Ok(())
        }
        fn spawn_renewal(self: Arc<Self>, _me: Box<dyn Fn() -> Option<NodeInfo> + Send + Sync>) {}
        async fn leave(&self) {}
        fn take_lost(&self) -> Option<mpsc::UnboundedReceiver<StreamName>> {
            None
        }
        fn status(&self) -> ClusterStatus {
            ClusterStatus {
                redis: None,
                calls: 0,
            }
        }
    }

    fn name(text: &str) -> StreamName {
        StreamName::new(text).unwrap()
    }

    fn slots() -> Option<SlotRequest> {
        Some(SlotRequest {
            host: "127.0.0.1".into(),
            count: 100,
        })
    }

    async fn try_reserve(
        cluster: &FakeCluster,
        registry: &Mutex<Registry>,
        stream: &str,
    ) -> Result<Reservation, PublishError> {
        let lock = || registry.lock().unwrap();
        reserve(cluster, &lock, slots(), &name(stream), "whip").await
    }

    #[tokio::test]
    async fn a_claimed_name_is_reserved_with_the_clusters_slot() {
        let cluster = FakeCluster::new(Ok(()), true);
        let registry = Mutex::new(Registry::new(4, "gw1"));
        let reservation = try_reserve(&cluster, &registry, "cam1").await.unwrap();
        assert_eq!(reservation.slot, 7);
        assert!(registry.lock().unwrap().is_active("cam1"));
        // Live here: refused without asking the cluster.
        let again = try_reserve(&cluster, &registry, "cam1").await.unwrap_err();
        assert!(matches!(
            again,
            PublishError::Registry(RegistryError::InUse)
        ));
        assert_eq!(*cluster.claims.lock().unwrap(), 1);
        assert!(cluster.released().is_empty());
        reservation.claim.end(Some(Duration::from_secs(3))).await;
        assert_eq!(
            cluster.released(),
            [("cam1".into(), Some(7), Some(Duration::from_secs(3)))]
        );
    }

    #[tokio::test]
    async fn the_clusters_refusals_become_publish_errors() {
        let cases = [
            (ClaimError::Held("gw2".into()), "Registry(InUse)"),
            (ClaimError::Unavailable("down".into()), "ClusterUnavailable"),
            (ClaimError::NoSlot(100), "NoCapacity"),
        ];
        for (refusal, expected) in cases {
            let cluster = FakeCluster::new(Err(refusal.clone()), true);
            let registry = Mutex::new(Registry::new(4, "gw1"));
            let error = try_reserve(&cluster, &registry, "cam1").await.unwrap_err();
            assert!(
                format!("{error:?}").starts_with(expected),
                "{refusal}: {error:?}"
            );
            assert!(!registry.lock().unwrap().is_active("cam1"));
            assert!(cluster.released().is_empty());
        }
    }

    #[tokio::test]
    async fn a_full_node_gives_its_claim_up_and_says_who_is_full() {
        for (others, expected) in [(true, "NoCapacity"), (false, "Registry(Full(1))")] {
            let cluster = FakeCluster::new(Ok(()), others);
            let registry = Mutex::new(Registry::new(1, "gw1"));
            let first = try_reserve(&cluster, &registry, "cam1").await.unwrap();
            let error = try_reserve(&cluster, &registry, "cam2").await.unwrap_err();
            assert_eq!(format!("{error:?}"), expected);
            assert_eq!(cluster.released(), [("cam2".into(), Some(7), None)]);
            drop(first);
        }
    }

    #[tokio::test]
    async fn a_failed_negotiation_gives_the_claim_up() {
        let cluster = FakeCluster::new(Ok(()), true);
        let registry = Mutex::new(Registry::new(4, "gw1"));
        // What `publish` does when negotiation fails: the registry entry goes, and the
        // reservation is dropped with the error.
        let reservation = try_reserve(&cluster, &registry, "cam1").await.unwrap();
        registry.lock().unwrap().release(&name("cam1"));
        drop(reservation);
        assert_eq!(cluster.released(), [("cam1".into(), Some(7), None)]);
        // An ended stream taken over goes back to lingering.
        let reservation = try_reserve(&cluster, &registry, "cam2").await.unwrap();
        reservation.claim.linger(Duration::from_secs(5));
        assert_eq!(
            cluster.released()[1],
            ("cam2".into(), Some(7), Some(Duration::from_secs(5)))
        );
    }
}
