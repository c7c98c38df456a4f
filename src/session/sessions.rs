//! The running sessions: [`Sessions::publish`] checks an offer, claims the name (and an
//! RTP slot) in the cluster, reserves them in the registry, negotiates, and spawns the
//! session's task. The registry (`crate::registry`) owns each name's life, with the
//! session's handle and the claim; this layer does the I/O its transitions ask for.
//! Whatever ends a session, its wrapper ends the name in one transition, gives the claim
//! up, and reports `Ended`.

use crate::blocking::blocking;
use crate::cluster::{ClaimError, Cluster, SlotRequest};
use crate::config::{RtpConfig, TranscodeMode};
use crate::events::Event;
use crate::gateway::Gateway;
use crate::gateway::StreamRegistry;
use crate::name::StreamName;
use crate::registry::{Opaque, Refused, RegistryError, Started};
use crate::session::driver::Session;
use crate::session::handle::{SessionEvent, SessionHandle};
use crate::session::offer::{self, OfferError, VideoPreference};
use crate::session::peer::{NegotiationError, Peer};
use crate::stream::EndReason;
use std::sync::{Arc, MutexGuard};
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
    /// Records the stream or not, whatever `record.enabled` says (the publish hook's
    /// word); `None`: as configured.
    pub record: Option<bool>,
}

/// The RTP slot a publication claims across the cluster, when RTP is sent: each slot
/// takes four ports from `rtp.port_base`.
fn slot_request(rtp: &RtpConfig) -> Option<SlotRequest> {
    rtp.enabled.then(|| SlotRequest {
        host: rtp.host.to_string(),
        count: 65536u32.saturating_sub(rtp.port_base) / 4,
    })
}

/// Claims `name` (and a slot) in the cluster, then reserves both in the registry, whose
/// entry keeps the claim until the name ends; returns the port slot. On any refusal,
/// what was claimed is given up with the claim's guard.
async fn reserve<'r>(
    cluster: &dyn Cluster,
    registry: &impl Fn() -> MutexGuard<'r, StreamRegistry>,
    slots: Option<SlotRequest>,
    name: &StreamName,
    publisher: &'static str,
) -> Result<u32, PublishError> {
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
    let slot = claim.slot();
    let reserved = registry().reserve(name, publisher, SystemTime::now(), slot, Some(claim));
    // Refused, the claim comes back and, dropped, gives the name and slot up.
    match reserved {
        Ok(slot) => Ok(slot),
        // Where other nodes may have room, this one being full means the cluster is.
        Err(Refused {
            error: RegistryError::Full(_),
            ..
        }) if cluster.has_other_nodes() => Err(PublishError::NoCapacity),
        Err(Refused { error, .. }) => Err(error.into()),
    }
}

/// A name reserved for a publication that has not started its session yet. Dropped
/// while still held, it gives the reservation back: the name is free again (or, when it
/// took over an ended name, lingers again), and the claim is given up with it.
struct Reservation<'a> {
    gateway: &'a Gateway,
    name: StreamName,
    held: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let gateway = self.gateway;
        let released = gateway
            .registry()
            .release(&self.name, gateway.linger_deadline());
        if let Some(claim) = released.claim
            && released.lingers
        {
            claim.linger(gateway.linger());
        }
        // Otherwise dropped, the claim gives the name and slot up.
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

    /// Ends each stream whose name another node claimed while this one could not renew
    /// it (Redis was away longer than the lease).
    fn end_lost_names(self: &Arc<Self>) {
        let Some(mut lost) = self.gateway.cluster.take_lost() else {
            return;
        };
        let sessions = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(name) = lost.recv().await {
                let Some(sessions) = sessions.upgrade() else {
                    break;
                };
                // A running session stops now; one still negotiating, as it starts.
                let handle = sessions
                    .gateway
                    .registry()
                    .lose(name.as_str())
                    .and_then(|handle| handle.downcast_ref::<SessionHandle>())
                    .cloned();
                if let Some(handle) = handle {
                    handle.stop(EndReason::NameClaimedElsewhere).await;
                }
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
        let slot = reserve(
            gateway.cluster.as_ref(),
            &|| gateway.registry(),
            slot_request(&gateway.config.rtp),
            &name,
            request.publisher,
        )
        .await?;
        // Until its session runs, a publication given up midway (negotiation failed, or
        // its client gone and this future dropped with it) gives its reservation back.
        let mut reservation = Reservation {
            gateway,
            name: name.clone(),
            held: true,
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
        let negotiated = Peer::negotiate(&gateway.config.webrtc, gateway.net.peer(), &plan, &offer)
            .instrument(span.clone())
            .await;
        let (peer, peer_events, answer) = match negotiated {
            Ok(n) => n,
            Err(e) => return Err(e.into()),
        };
        let (commands_tx, commands) = mpsc::channel(COMMANDS_QUEUED);
        let handle = SessionHandle::new(name.clone(), commands_tx);
        let started = gateway
            .registry()
            .started(&name, Box::new(handle.clone()) as Opaque);
        reservation.held = false;
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
        session.record = request.record.unwrap_or(gateway.config.record.enabled);
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
                // The name is free here: given up in the cluster too before anything else,
                // so that nobody is refused it meanwhile.
                if let Some(claim) = ended.claim {
                    claim.end(ended.lingers.then(|| gateway.linger())).await;
                }
                if let Some(live) = ended.remove {
                    blocking(|| std::fs::remove_dir_all(&live.dir)).ok();
                }
                tracing::info!(%reason, "stream ended");
                gateway.metrics.publication_ended(&reason);
                gateway.events.emit(Event::ended(&name, &reason));
                let _ = events.send(SessionEvent::Ended {
                    stream: name,
                    reason,
                });
            }
            .instrument(span),
        );
        if started == Started::Lost {
            // Another node claimed the name while this one negotiated.
            handle.stop(EndReason::NameClaimedElsewhere).await;
        }
        Ok((handle, answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Claim, ClusterStatus, GiveUp, HeldSlot, Holder, NodeInfo};
    use crate::registry::Registry;
    use futures::future::BoxFuture;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    /// What the fake cluster was told to give up: the name, its slot, its linger.
    type GivenUp = Vec<(String, Option<u32>, Option<Duration>)>;

    #[derive(Debug, Default)]
    struct Log(Mutex<GivenUp>);

    impl GiveUp for Log {
        fn give_up(
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

        fn given_up(&self) -> GivenUp {
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
        registry: &Mutex<StreamRegistry>,
        stream: &str,
    ) -> Result<u32, PublishError> {
        let lock = || registry.lock().unwrap();
        reserve(cluster, &lock, slots(), &name(stream), "whip").await
    }

    fn registry(max_publishers: u32) -> Mutex<StreamRegistry> {
        Mutex::new(Registry::new(max_publishers, "gw1"))
    }

    #[tokio::test]
    async fn a_claimed_name_is_reserved_with_the_clusters_slot() {
        let cluster = FakeCluster::new(Ok(()), true);
        let registry = registry(4);
        let slot = try_reserve(&cluster, &registry, "cam1").await.unwrap();
        assert_eq!(slot, 7);
        assert!(registry.lock().unwrap().is_active("cam1"));
        // Live here: refused without asking the cluster.
        let again = try_reserve(&cluster, &registry, "cam1").await.unwrap_err();
        assert!(matches!(
            again,
            PublishError::Registry(RegistryError::InUse)
        ));
        assert_eq!(*cluster.claims.lock().unwrap(), 1);
        assert!(cluster.given_up().is_empty());
        // The registry kept the claim; the name's end hands it back to be given up.
        let ended = registry
            .lock()
            .unwrap()
            .end(&name("cam1"), None, Instant::now());
        assert!(!ended.lingers);
        let claim = ended.claim.expect("the entry kept its claim");
        claim.end(Some(Duration::from_secs(3))).await;
        assert_eq!(
            cluster.given_up(),
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
            let registry = registry(4);
            let error = try_reserve(&cluster, &registry, "cam1").await.unwrap_err();
            assert!(
                format!("{error:?}").starts_with(expected),
                "{refusal}: {error:?}"
            );
            assert!(!registry.lock().unwrap().is_active("cam1"));
            assert!(cluster.given_up().is_empty());
        }
    }

    #[tokio::test]
    async fn a_full_node_gives_its_claim_up_and_says_who_is_full() {
        for (others, expected) in [(true, "NoCapacity"), (false, "Registry(Full(1))")] {
            let cluster = FakeCluster::new(Ok(()), others);
            let registry = registry(1);
            try_reserve(&cluster, &registry, "cam1").await.unwrap();
            let error = try_reserve(&cluster, &registry, "cam2").await.unwrap_err();
            assert_eq!(format!("{error:?}"), expected);
            assert_eq!(cluster.given_up(), [("cam2".into(), Some(7), None)]);
        }
    }

    #[tokio::test]
    async fn a_failed_negotiation_gives_the_claim_up() {
        let cluster = FakeCluster::new(Ok(()), true);
        let registry = registry(4);
        // What `publish` does when negotiation fails: the reservation is given back, and
        // the claim it kept, dropped, gives the name up.
        try_reserve(&cluster, &registry, "cam1").await.unwrap();
        let released = registry
            .lock()
            .unwrap()
            .release(&name("cam1"), Instant::now());
        assert!(!released.lingers && released.claim.is_some());
        drop(released);
        assert_eq!(cluster.given_up(), [("cam1".into(), Some(7), None)]);
        assert!(!registry.lock().unwrap().is_active("cam1"));
        // An ended stream taken over goes back to lingering, and its claim with it.
        try_reserve(&cluster, &registry, "cam2").await.unwrap();
        let released = registry
            .lock()
            .unwrap()
            .release(&name("cam2"), Instant::now());
        released.claim.unwrap().linger(Duration::from_secs(5));
        assert_eq!(
            cluster.given_up()[1],
            ("cam2".into(), Some(7), Some(Duration::from_secs(5)))
        );
    }
}
