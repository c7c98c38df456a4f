//! A node of the cluster as plain data: its name and URL, its record (what
//! `/api/cluster` lists), and where a publisher goes when this node is full.

use crate::config::{ClusterConfig, HttpConfig};
use serde::{Deserialize, Serialize};

/// This node: its name in the cluster and its base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub url: String,
}

impl Node {
    /// From `cluster.node_id` and `cluster.advertise_url`, or, when they are empty, the
    /// host name and the HTTP port (`host:8080`), and `http(s)://` the listening address
    /// (the host name when it listens on every address) and port.
    pub fn from_config(cluster: &ClusterConfig, http: &HttpConfig, host_name: &str) -> Node {
        let port = http.listen.port();
        let id = if cluster.node_id.is_empty() {
            format!("{host_name}:{port}")
        } else {
            cluster.node_id.clone()
        };
        let url = if cluster.advertise_url.is_empty() {
            let tls = http.tls_self_signed || !http.tls_cert.as_os_str().is_empty();
            let scheme = if tls { "https" } else { "http" };
            let ip = http.listen.ip();
            let host = if ip.is_unspecified() {
                host_name.to_string()
            } else if ip.is_ipv6() {
                format!("[{ip}]")
            } else {
                ip.to_string()
            };
            format!("{scheme}://{host}:{port}")
        } else {
            cluster.advertise_url.trim_end_matches('/').to_string()
        };
        Node { id, url }
    }
}

/// This machine's host name, or `localhost` when it cannot be read.
pub fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| {
            let name = std::fs::read_to_string(path).ok()?;
            let name = name.trim();
            (!name.is_empty()).then(|| name.to_string())
        })
        .unwrap_or_else(|| "localhost".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Takes publishers.
    Serving,
    /// Shutting down: takes no new publishers.
    Draining,
}

/// One node as `/api/cluster` lists it, and as its record in Redis says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub url: String,
    pub state: NodeState,
    pub publishers: u32,
    pub max_publishers: u32,
}

/// What `/api/cluster` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterView {
    /// The node that answers.
    pub node: String,
    /// The cluster's Redis: `connected`, `unavailable`, or null for a node on its own.
    pub redis: Option<String>,
    pub nodes: Vec<NodeInfo>,
}

impl NodeInfo {
    /// Publishers it can still take; none while draining.
    pub fn room(&self) -> u32 {
        match self.state {
            NodeState::Serving => self.max_publishers.saturating_sub(self.publishers),
            NodeState::Draining => 0,
        }
    }
}

/// The node, other than `me`, with the most room for a publisher (the first by id
/// among equals), if any has room.
pub fn place<'a>(nodes: &'a [NodeInfo], me: &str) -> Option<&'a NodeInfo> {
    nodes
        .iter()
        .filter(|n| n.id != me && n.room() > 0)
        .min_by(|a, b| b.room().cmp(&a.room()).then_with(|| a.id.cmp(&b.id)))
}

impl ClusterView {
    /// A node on its own (or cut off from its cluster's Redis): the cluster is itself.
    pub fn single(me: NodeInfo) -> Self {
        ClusterView {
            node: me.id.clone(),
            redis: None,
            nodes: vec![me],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_named_by_its_host_and_port_unless_told() {
        let mut http = HttpConfig::default();
        let mut cluster = ClusterConfig::default();
        let node = Node::from_config(&cluster, &http, "gw1");
        assert_eq!(node.id, "gw1:8080");
        assert_eq!(node.url, "http://gw1:8080");
        http.listen = "127.0.0.1:9000".parse().unwrap();
        http.tls_self_signed = true;
        let node = Node::from_config(&cluster, &http, "gw1");
        assert_eq!(
            (node.id.as_str(), node.url.as_str()),
            ("gw1:9000", "https://127.0.0.1:9000")
        );
        cluster.node_id = "a".into();
        cluster.advertise_url = "http://10.0.0.5:8080/".into();
        let node = Node::from_config(&cluster, &http, "gw1");
        assert_eq!(
            (node.id.as_str(), node.url.as_str()),
            ("a", "http://10.0.0.5:8080")
        );
    }

    #[test]
    fn a_publisher_goes_to_the_other_node_with_most_room() {
        let node = |id: &str, state, publishers, max_publishers| NodeInfo {
            id: id.into(),
            url: format!("http://{id}"),
            state,
            publishers,
            max_publishers,
        };
        let nodes = [
            node("a", NodeState::Serving, 0, 16),
            node("b", NodeState::Serving, 10, 16),
            node("c", NodeState::Serving, 2, 16),
            node("d", NodeState::Draining, 0, 16),
            node("e", NodeState::Serving, 14, 16),
        ];
        assert_eq!(place(&nodes, "a").map(|n| n.id.as_str()), Some("c"));
        assert_eq!(place(&nodes, "c").map(|n| n.id.as_str()), Some("a"));
        assert_eq!(place(&nodes[3..4], "a"), None);
        // Among equals, the first by id; never the asking node, even with most room.
        let tied = [
            node("c", NodeState::Serving, 1, 4),
            node("b", NodeState::Serving, 1, 4),
            node("me", NodeState::Serving, 0, 4),
        ];
        assert_eq!(place(&tied, "me").map(|n| n.id.as_str()), Some("b"));
        let full = [
            node("a", NodeState::Serving, 1, 1),
            node("b", NodeState::Serving, 3, 3),
        ];
        assert_eq!(place(&full, "a"), None);
    }

    #[test]
    fn a_single_node_shows_itself() {
        let view = ClusterView::single(NodeInfo {
            id: "gw1:8080".into(),
            url: "http://gw1:8080".into(),
            state: NodeState::Serving,
            publishers: 2,
            max_publishers: 16,
        });
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"node": "gw1:8080", "redis": null, "nodes": [
                {"id": "gw1:8080", "url": "http://gw1:8080", "state": "serving",
                 "publishers": 2, "max_publishers": 16}]})
        );
    }
}
