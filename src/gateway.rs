//! The context every session shares: configuration, the stream registry (each name's
//! life, with its session's handle, its lingering HLS output and its cluster claim), the
//! pipeline factory, the HLS store, metrics, the event webhooks' handle, the cluster
//! (chosen here, once), the shutdown signal and the task trackers. Created once in `main`.

use crate::access::Access;
use crate::cluster::{self, Claim, Cluster, Node, NodeInfo, NodeState, host_name};
use crate::config::Config;
use crate::events::Events;
use crate::media::PipelineFactory;
use crate::media::output::hls::{HlsOutput, HlsStore};
use crate::metrics::Metrics;
use crate::registry::{Opaque, Registry};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often ended streams are checked for expiry.
const REAP_INTERVAL: Duration = Duration::from_millis(500);

/// The names of this node, each with its session's handle (kept opaque: this layer
/// cannot name the session's types), its lingering HLS output and its cluster claim.
pub type StreamRegistry = Registry<Opaque, HlsOutput, Claim>;

#[derive(Debug)]
pub struct Gateway {
    pub config: Config,
    /// This node: its name in the cluster and its URL.
    pub node: Node,
    pub media: PipelineFactory,
    registry: Mutex<StreamRegistry>,
    /// Where HLS files go.
    pub hls: HlsStore,
    pub metrics: Metrics,
    /// Every publisher's ICE on one UDP port and one TCP port (started in `main`).
    pub net: crate::net::Mux,
    /// What happened to the streams, for `hooks.events_url`.
    pub events: Events,
    /// Who may publish and read: tokens, JSON Web Tokens, the hooks.
    pub access: Access,
    /// The cluster: this node on its own, or its claims and record in the cluster's
    /// Redis.
    pub cluster: Arc<dyn Cluster>,
    /// Cancelled when the gateway stops: no new publishers, and every session ends
    /// (each session's stop token is a child of it).
    pub shutdown: CancellationToken,
    /// Every session task, so that shutdown can wait for them.
    pub session_tasks: TaskTracker,
    /// Every signalling connection, so that shutdown can let them say goodbye.
    pub connections: TaskTracker,
}

impl Gateway {
    /// The gateway; with `cluster.redis_url` set, a member of that cluster (Redis is
    /// reached on first use). Fails on a Redis URL that cannot be used.
    pub fn new(config: Config, media: PipelineFactory, hls: HlsStore) -> Result<Arc<Self>, String> {
        let node = Node::from_config(&config.cluster, &config.http, &host_name());
        let cluster = cluster::open(&config.cluster, &node.id)?;
        let mut metrics = Metrics::default();
        let net = crate::net::Mux::new(&config.webrtc);
        metrics.register_ice_mux(net.counters());
        let events = Events::new(
            &config.hooks,
            &config.record.dir,
            &node.id,
            metrics.events.clone(),
        );
        let access = Access::new(&config, &node.id);
        Ok(Arc::new(Self {
            net,
            registry: Mutex::new(Registry::new(config.limits.max_publishers, &node.id)),
            node,
            config,
            media,
            hls,
            metrics,
            events,
            access,
            cluster,
            shutdown: CancellationToken::new(),
            session_tasks: TaskTracker::new(),
            connections: TaskTracker::new(),
        }))
    }

    /// This node as the cluster lists it: draining once it is shutting down.
    pub fn node_info(&self) -> NodeInfo {
        let state = if self.shutdown.is_cancelled() {
            NodeState::Draining
        } else {
            NodeState::Serving
        };
        let (publishers, max_publishers) = {
            let registry = self.registry();
            (registry.publishers(), registry.max_publishers())
        };
        NodeInfo {
            id: self.node.id.clone(),
            url: self.node.url.clone(),
            state,
            publishers,
            max_publishers,
        }
    }

    /// Joins the cluster (refused when another live node has this node's id) and keeps
    /// this node's record and claims renewed until it leaves.
    pub async fn join_cluster(self: &Arc<Self>) -> Result<(), String> {
        self.cluster.join(&self.node_info()).await?;
        let gateway = Arc::downgrade(self);
        self.cluster
            .clone()
            .spawn_renewal(Box::new(move || gateway.upgrade().map(|g| g.node_info())));
        Ok(())
    }

    /// Removes ended streams, and their HLS files, once they have lingered long enough.
    pub fn spawn_reaper(self: &Arc<Self>) {
        let gateway = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REAP_INTERVAL);
            loop {
                tick.tick().await;
                let Some(gateway) = gateway.upgrade() else {
                    break;
                };
                let expired = gateway.registry().expire(Instant::now());
                let outputs: Vec<HlsOutput> =
                    expired.into_iter().filter_map(|(_, hls)| hls).collect();
                if !outputs.is_empty() {
                    // Deleting files blocks: not on the workers that receive the RTP.
                    let _ = tokio::task::spawn_blocking(move || {
                        outputs.into_iter().for_each(HlsOutput::remove);
                    })
                    .await;
                }
            }
        });
    }

    /// How long an ended stream's HLS files stay.
    pub fn linger(&self) -> Duration {
        Duration::from_secs(self.config.hls.linger_s as u64)
    }

    /// When an ended stream's HLS files go away, if it ends now.
    pub fn linger_deadline(&self) -> Instant {
        Instant::now() + self.linger()
    }

    /// The registry, for one short call.
    pub fn registry(&self) -> MutexGuard<'_, StreamRegistry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops accepting publishers, ends every stream, and waits up to `grace` for the
    /// streams to end and their publishers to be told.
    pub async fn stop(&self, grace: Duration) {
        self.shutdown.cancel();
        // The other nodes place no publisher here from now on.
        let _ = self.cluster.renew(&self.node_info()).await;
        self.session_tasks.close();
        self.connections.close();
        let ended = async {
            self.session_tasks.wait().await;
            self.connections.wait().await;
        };
        if tokio::time::timeout(grace, ended).await.is_err() {
            tracing::warn!("some streams did not end within {grace:?}");
        }
        // The names and slots are free for other nodes at once, not after the lease.
        self.cluster.leave().await;
        // Ended playlists stay in a configured hls.dir, with their ENDLIST, for whoever
        // serves that directory; a temporary one goes away with the process.
    }
}
