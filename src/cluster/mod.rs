//! The cluster as this node sees it: [`node`] (plain data: the node's name and URL,
//! what `/api/cluster` shows, where a publisher goes when this node is full) and, with
//! `cluster.redis_url` set, [`membership`] (the node's record and its claims on names
//! and port slots, kept in Redis). Without Redis, the cluster is this node on its own.

pub mod membership;
mod node;

pub use node::{ClusterView, Node, NodeInfo, NodeState, host_name, place};
