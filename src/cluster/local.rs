//! A node on its own: the cluster is this node, kept in memory. Its names are claimed
//! here (the registry hands out its RTP slots), nobody else holds a stream, and it
//! places no publisher elsewhere.

use super::{
    Claim, ClaimError, Cluster, ClusterStatus, GiveUp, HeldSlot, Holder, NodeInfo, SlotRequest,
};
use crate::name::StreamName;
use futures::future::BoxFuture;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug)]
pub struct LocalCluster {
    node: String,
    names: Mutex<HashSet<StreamName>>,
    /// This node's record, as it last said it.
    record: Mutex<Option<NodeInfo>>,
    me: Weak<LocalCluster>,
}

impl LocalCluster {
    pub fn new(node: &str) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            node: node.to_string(),
            names: Mutex::new(HashSet::new()),
            record: Mutex::new(None),
            me: me.clone(),
        })
    }

    fn names(&self) -> MutexGuard<'_, HashSet<StreamName>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember(&self, me: &NodeInfo) {
        *self.record.lock().unwrap_or_else(|e| e.into_inner()) = Some(me.clone());
    }
}

impl GiveUp for LocalCluster {
    fn give_up(
        self: Arc<Self>,
        name: StreamName,
        _slot: Option<HeldSlot>,
        _linger: Option<Duration>,
    ) -> BoxFuture<'static, ()> {
        self.names().remove(&name);
        Box::pin(async {})
    }
}

#[async_trait::async_trait]
impl Cluster for LocalCluster {
    fn has_other_nodes(&self) -> bool {
        false
    }

    async fn claim(
        &self,
        name: &StreamName,
        _slot: Option<SlotRequest>,
    ) -> Result<Claim, ClaimError> {
        let owner = self
            .me
            .upgrade()
            .ok_or_else(|| ClaimError::Unavailable("the node is stopping".into()))?;
        if !self.names().insert(name.clone()) {
            return Err(ClaimError::Held(self.node.clone()));
        }
        Ok(Claim::new(name.clone(), None, owner))
    }

    async fn holder(&self, _name: &str) -> Result<Option<Holder>, ClaimError> {
        Ok(None)
    }

    async fn node(&self, id: &str) -> Result<Option<NodeInfo>, ClaimError> {
        Ok(self.nodes().await?.into_iter().find(|n| n.id == id))
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, ClaimError> {
        let record = self.record.lock().unwrap_or_else(|e| e.into_inner());
        Ok(record.iter().cloned().collect())
    }

    async fn join(&self, me: &NodeInfo) -> Result<(), String> {
        self.remember(me);
        Ok(())
    }

    async fn renew(&self, me: &NodeInfo) -> Result<(), ClaimError> {
        self.remember(me);
        Ok(())
    }

    fn spawn_renewal(self: Arc<Self>, _me: Box<dyn Fn() -> Option<NodeInfo> + Send + Sync>) {
        // Nothing expires: there is no lease to renew.
    }

    async fn leave(&self) {
        self.names().clear();
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::NodeState;

    fn name(text: &str) -> StreamName {
        StreamName::new(text).unwrap()
    }

    #[tokio::test]
    async fn a_name_is_held_once_until_its_claim_goes() {
        let cluster = LocalCluster::new("gw1:8080");
        let slots = SlotRequest {
            host: "127.0.0.1".into(),
            count: 8,
        };
        let claim = cluster.claim(&name("cam1"), Some(slots)).await.unwrap();
        // The registry hands out a node's own slots.
        assert_eq!(claim.slot(), None);
        assert_eq!(
            cluster.claim(&name("cam1"), None).await.unwrap_err(),
            ClaimError::Held("gw1:8080".into())
        );
        let other = cluster.claim(&name("cam2"), None).await.unwrap();
        drop(claim);
        let again = cluster.claim(&name("cam1"), None).await.unwrap();
        again.end(Some(Duration::from_secs(5))).await;
        other.linger(Duration::from_secs(5));
        assert!(cluster.names().is_empty());
    }

    #[tokio::test]
    async fn a_node_on_its_own_is_the_whole_cluster() {
        let cluster = LocalCluster::new("gw1:8080");
        let me = NodeInfo {
            id: "gw1:8080".into(),
            url: "http://gw1:8080".into(),
            state: NodeState::Serving,
            publishers: 1,
            max_publishers: 1,
        };
        assert!(!cluster.has_other_nodes());
        assert_eq!(cluster.holder("cam1").await, Ok(None));
        cluster.join(&me).await.unwrap();
        assert_eq!(cluster.nodes().await, Ok(vec![me.clone()]));
        assert_eq!(cluster.node("gw1:8080").await, Ok(Some(me.clone())));
        // Full, and nobody else to take the publisher.
        assert_eq!(cluster.placement(&me).await, None);
        assert_eq!(cluster.status().redis, None);
        assert!(cluster.take_lost().is_none());
    }
}
