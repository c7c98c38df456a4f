//! The cluster as this node sees it, behind one trait, [`Cluster`], chosen once at start
//! ([`open`]): [`local`] for a node on its own (in memory), [`membership`] for a node of
//! a cluster kept in Redis (`cluster.redis_url`). Around it, plain data: [`node`] (the
//! node's name and URL, what `/api/cluster` shows, where a publisher goes when this node
//! is full), [`claim`] (a publication's hold on its name and RTP slot) and [`signature`]
//! (how nodes sign the requests they forward to each other). Nothing above this module
//! knows which implementation runs.

mod claim;
mod local;
pub mod membership;
mod node;
pub mod signature;

pub use claim::{Claim, GiveUp, HeldSlot, SlotRequest};
pub use local::LocalCluster;
pub use node::{ClusterView, Node, NodeInfo, NodeState, host_name, place};

use crate::config::ClusterConfig;
use crate::name::StreamName;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Why a claim (or a question to the cluster) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// Another publication holds the name, on the node named.
    #[error("held by node {0}")]
    Held(String),
    /// Every RTP slot is taken, across the nodes that send to the host.
    #[error("every one of the {0} RTP slots is taken")]
    NoSlot(u32),
    #[error("the cluster's Redis cannot be reached: {0}")]
    Unavailable(String),
}

/// Whether Redis answered the last call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisState {
    /// Not asked yet.
    Unknown = 0,
    Connected = 1,
    Unavailable = 2,
}

impl RedisState {
    pub fn as_str(self) -> &'static str {
        match self {
            RedisState::Unknown | RedisState::Unavailable => "unavailable",
            RedisState::Connected => "connected",
        }
    }
}

/// Where a stream is served from, as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub node: String,
    /// The stream ended; its node serves its playlist while it lingers.
    pub ended: bool,
}

/// What `/api/cluster` and the metrics show of the cluster's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterStatus {
    /// The cluster's Redis; `None` for a node on its own.
    pub redis: Option<RedisState>,
    /// Calls made to it so far.
    pub calls: u64,
}

/// What the node asks of its cluster: names and RTP slots, who holds a stream, the
/// nodes and their loads, and the node's own record.
#[async_trait::async_trait]
pub trait Cluster: Send + Sync + std::fmt::Debug {
    /// Whether other nodes may take publishers: a full node then answers that the
    /// cluster has no capacity, where a node on its own answers that it is full.
    fn has_other_nodes(&self) -> bool;

    /// Claims `name` for a publication on this node and, with `slot`, an RTP slot no
    /// other node sending to that host uses, as one claim: both or neither.
    async fn claim(
        &self,
        name: &StreamName,
        slot: Option<SlotRequest>,
    ) -> Result<Claim, ClaimError>;

    /// Which node holds `name`, or served it last while its playlist lingers.
    async fn holder(&self, name: &str) -> Result<Option<Holder>, ClaimError>;

    /// The record of node `id`, while it is live.
    async fn node(&self, id: &str) -> Result<Option<NodeInfo>, ClaimError>;

    /// The live nodes, this one included once it has joined.
    async fn nodes(&self) -> Result<Vec<NodeInfo>, ClaimError>;

    /// Where a publisher that reached this node (`me`) goes instead: when this node is
    /// full or draining, the other node with the most room, if one has some.
    async fn placement(&self, me: &NodeInfo) -> Option<NodeInfo> {
        if me.room() > 0 {
            return None;
        }
        let nodes = self.nodes().await.unwrap_or_default();
        place(&nodes, &me.id).cloned()
    }

    /// Joins as `me`: refused when another live node has this node's id.
    async fn join(&self, me: &NodeInfo) -> Result<(), String>;

    /// Writes this node's record and renews its claims; a claim that another node holds
    /// now is given up, and its stream reported lost.
    async fn renew(&self, me: &NodeInfo) -> Result<(), ClaimError>;

    /// Renews this node's record and claims while the lease asks it, with what `me`
    /// says of the node, until it leaves (or `me` has nothing to say).
    fn spawn_renewal(self: Arc<Self>, me: Box<dyn Fn() -> Option<NodeInfo> + Send + Sync>);

    /// Leaves: every claim and this node's record go at once.
    async fn leave(&self);

    /// The names this node held that another node claimed, once: whoever ends those
    /// streams takes it.
    fn take_lost(&self) -> Option<mpsc::UnboundedReceiver<StreamName>>;

    fn status(&self) -> ClusterStatus;
}

/// The cluster this node is part of: the one in `config.redis_url`, or, when it is
/// empty, this node on its own. Fails on a Redis URL that cannot be used.
pub fn open(config: &ClusterConfig, node: &str) -> Result<Arc<dyn Cluster>, String> {
    if config.redis_url.is_empty() {
        Ok(LocalCluster::new(node))
    } else {
        Ok(membership::Membership::new(config, node)?)
    }
}
