//! This node's part in a cluster kept in Redis (`cluster.redis_url`): its record among
//! the nodes, and its claims on stream names and RTP port slots. Each claim is a key
//! set only where absent, holding a fencing token (from one counter) and the node's
//! id, with a lease that the node renews; every change is one Redis command or one
//! script, so that Redis alone decides races. A renewal compares the whole value: a
//! node back from a pause finds its claim taken (a newer token) and gives it up, and
//! takes back a claim that expired while Redis was away if nobody else took it.

use super::{
    Claim, ClaimError, Cluster, ClusterStatus, GiveUp, HeldSlot, Holder, NodeInfo, RedisState,
    SlotRequest,
};
use crate::config::ClusterConfig;
use crate::name::StreamName;
use futures::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// Every key of the cluster starts with it.
const PREFIX: &str = "webrtc-gateway:";
/// The longest any one Redis call may take before Redis counts as unavailable.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Slot keys read at once when looking for a free slot.
const SLOT_BATCH: u32 = 32;

/// Claims `KEYS[1]` for node `ARGV[1]` with a lease of `ARGV[2]` ms unless it is held;
/// the fencing token comes from the counter `KEYS[2]`. Answers `{1, value}` or
/// `{0, the holder's value}`.
const CLAIM: &str = r"
local held = redis.call('GET', KEYS[1])
if held then return {0, held} end
local value = redis.call('INCR', KEYS[2]) .. ' ' .. ARGV[1]
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return {1, value}
";

/// Renews each claim `KEYS[i]` whose value is still `ARGV[i]`, takes back those that
/// expired, and answers the keys that another claim holds now. `ARGV[#KEYS + 1]` is
/// the lease in ms.
const RENEW: &str = r"
local lease = ARGV[#KEYS + 1]
local lost = {}
for i, key in ipairs(KEYS) do
  local held = redis.call('GET', key)
  if held == ARGV[i] then
    redis.call('PEXPIRE', key, lease)
  elseif not held then
    redis.call('SET', key, ARGV[i], 'PX', lease)
  else
    table.insert(lost, key)
  end
end
return lost
";

/// Deletes `KEYS[1]` if it still holds `ARGV[1]`.
const GIVE_UP: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// A claim this node holds.
#[derive(Debug, Clone)]
struct Held {
    value: String,
    /// The stream whose name it claims; `None` for a port slot.
    stream: Option<StreamName>,
}

/// This node in the cluster's Redis.
pub struct Membership {
    node: String,
    lease: Duration,
    redis: ConnectionManager,
    held: Mutex<HashMap<String, Held>>,
    state: AtomicU8,
    /// Redis calls made, for the metrics.
    calls: AtomicU64,
    /// Names this node held that another node claimed while this one could not renew.
    lost: mpsc::UnboundedSender<StreamName>,
    lost_rx: Mutex<Option<mpsc::UnboundedReceiver<StreamName>>>,
    /// Held while the record and claims are renewed; true once the node has left.
    left: tokio::sync::Mutex<bool>,
    /// Itself, for the claims it hands out.
    me: Weak<Membership>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("node", &self.node)
            .field("lease", &self.lease)
            .finish()
    }
}

fn key(kind: &str, id: &str) -> String {
    format!("{PREFIX}{kind}:{id}")
}

/// The node named in a claim's value (`TOKEN NODE`).
fn node_of(value: &str) -> &str {
    value.split_once(' ').map_or(value, |(_, node)| node)
}

impl Membership {
    /// Joins the cluster in `config.redis_url` as `node`. Redis is reached on first use
    /// and again after each failure: a node starts, and its live streams go on, while
    /// Redis is away.
    pub fn new(config: &ClusterConfig, node: &str) -> Result<Arc<Self>, String> {
        let client = redis::Client::open(config.redis_url.as_str()).map_err(|e| e.to_string())?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let redis = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| e.to_string())?;
        let (lost, lost_rx) = mpsc::unbounded_channel();
        Ok(Arc::new_cyclic(|me| Self {
            node: node.to_string(),
            lease: Duration::from_millis(config.lease_ms as u64),
            redis,
            held: Mutex::new(HashMap::new()),
            state: AtomicU8::new(RedisState::Unknown as u8),
            calls: AtomicU64::new(0),
            lost,
            lost_rx: Mutex::new(Some(lost_rx)),
            left: tokio::sync::Mutex::new(false),
            me: me.clone(),
        }))
    }

    fn redis_state(&self) -> RedisState {
        match self.state.load(Ordering::Relaxed) {
            1 => RedisState::Connected,
            2 => RedisState::Unavailable,
            _ => RedisState::Unknown,
        }
    }

    fn held(&self) -> MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one Redis call with a deadline, and notes whether Redis answered.
    async fn call<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, ClaimError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let result = match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(ClaimError::Unavailable(e.to_string())),
            Err(_) => Err(ClaimError::Unavailable(format!(
                "no answer within {CALL_TIMEOUT:?}"
            ))),
        };
        let now = if result.is_ok() {
            RedisState::Connected
        } else {
            RedisState::Unavailable
        };
        let before = self.state.swap(now as u8, Ordering::Relaxed);
        if before != now as u8 {
            match &result {
                Ok(_) if before == RedisState::Unavailable as u8 => {
                    tracing::info!("the cluster's Redis is reachable again")
                }
                Ok(_) => tracing::info!("joined the cluster"),
                Err(e) => tracing::warn!("{e}"),
            }
        }
        result
    }

    /// Claims `key` for this node, as `stream` when it is a name.
    async fn claim_key(&self, key: String, stream: Option<StreamName>) -> Result<(), ClaimError> {
        let mut redis = self.redis.clone();
        let script = Script::new(CLAIM);
        let mut invocation = script.key(&key);
        invocation
            .key(format!("{PREFIX}fence"))
            .arg(&self.node)
            .arg(self.lease.as_millis() as u64);
        let (won, value): (i64, String) = self.call(invocation.invoke_async(&mut redis)).await?;
        if won == 0 {
            return Err(ClaimError::Held(node_of(&value).to_string()));
        }
        self.held().insert(key, Held { value, stream });
        Ok(())
    }

    /// Claims a stream name for this node.
    async fn claim_name(&self, name: &StreamName) -> Result<(), ClaimError> {
        self.claim_key(key("stream", name.as_str()), Some(name.clone()))
            .await
    }

    /// Claims the lowest RTP port slot free across the cluster for `host`, below
    /// `count`.
    async fn claim_slot(&self, host: &str, count: u32) -> Result<u32, ClaimError> {
        let mut redis = self.redis.clone();
        let mut start = 0;
        while start < count {
            let end = (start + SLOT_BATCH).min(count);
            let keys: Vec<String> = (start..end)
                .map(|slot| key("slot", &format!("{host}:{slot}")))
                .collect();
            let values: Vec<Option<String>> = self.call(redis.mget(&keys)).await?;
            for (slot, (key, value)) in (start..end).zip(keys.into_iter().zip(values)) {
                if value.is_none() {
                    match self.claim_key(key, None).await {
                        Ok(()) => return Ok(slot),
                        // Another node took it meanwhile: the next one.
                        Err(ClaimError::Held(_)) => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
            start = end;
        }
        Err(ClaimError::NoSlot(count))
    }

    /// Gives up a name (with `linger`, the node keeps serving the ended stream's
    /// playlist that long, and other nodes send its viewers here).
    async fn give_up_name(&self, name: &StreamName, linger: Option<Duration>) {
        if let Some(linger) = linger.filter(|l| !l.is_zero()) {
            let mut redis = self.redis.clone();
            let ended = key("ended", name.as_str());
            let _: Result<(), _> = self
                .call(redis.pset_ex(ended, &self.node, linger.as_millis() as u64))
                .await;
        }
        self.give_up_key(key("stream", name.as_str())).await;
    }

    /// Gives up a slot.
    async fn give_up_slot(&self, host: &str, slot: u32) {
        self.give_up_key(key("slot", &format!("{host}:{slot}")))
            .await;
    }

    async fn give_up_key(&self, key: String) {
        let Some(held) = self.held().remove(&key) else {
            return;
        };
        self.delete_if_holding(&key, &held.value).await;
    }

    /// Deletes `key` in Redis if it still holds `value`, this node's claim; unreachable,
    /// the claim expires with its lease.
    async fn delete_if_holding(&self, key: &str, value: &str) {
        let mut redis = self.redis.clone();
        let script = Script::new(GIVE_UP);
        let mut invocation = script.key(key);
        invocation.arg(value);
        let _: Result<i64, _> = self.call(invocation.invoke_async(&mut redis)).await;
    }
}

impl GiveUp for Membership {
    fn give_up(
        self: Arc<Self>,
        name: StreamName,
        slot: Option<HeldSlot>,
        linger: Option<Duration>,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if let Some(slot) = slot {
                self.give_up_slot(&slot.host, slot.slot).await;
            }
            self.give_up_name(&name, linger).await;
        })
    }
}

#[async_trait::async_trait]
impl Cluster for Membership {
    fn has_other_nodes(&self) -> bool {
        true
    }

    /// Claims the name, then the lowest slot free across the cluster; a name whose slot
    /// cannot be claimed is given up again (its claim dropped).
    async fn claim(
        &self,
        name: &StreamName,
        slot: Option<SlotRequest>,
    ) -> Result<Claim, ClaimError> {
        let owner = self
            .me
            .upgrade()
            .ok_or_else(|| ClaimError::Unavailable("the node is stopping".into()))?;
        self.claim_name(name).await?;
        let claim = Claim::new(name.clone(), None, owner);
        let Some(slot) = slot else {
            return Ok(claim);
        };
        let index = self.claim_slot(&slot.host, slot.count).await?;
        Ok(claim.with_slot(HeldSlot {
            host: slot.host,
            slot: index,
        }))
    }

    /// Which node holds `name`, or served it last while its playlist lingers.
    async fn holder(&self, name: &str) -> Result<Option<Holder>, ClaimError> {
        let mut redis = self.redis.clone();
        let (live, ended): (Option<String>, Option<String>) = self
            .call(redis.mget(&[key("stream", name), key("ended", name)]))
            .await?;
        Ok(match (live, ended) {
            (Some(value), _) => Some(Holder {
                node: node_of(&value).to_string(),
                ended: false,
            }),
            (None, Some(node)) => Some(Holder { node, ended: true }),
            (None, None) => None,
        })
    }

    /// The record of node `id`, while it is live.
    async fn node(&self, id: &str) -> Result<Option<NodeInfo>, ClaimError> {
        let mut redis = self.redis.clone();
        let record: Option<String> = self.call(redis.get(key("node", id))).await?;
        Ok(record.and_then(|r| serde_json::from_str(&r).ok()))
    }

    /// The live nodes, this one included once it has joined. Nodes whose record has
    /// expired are forgotten.
    async fn nodes(&self) -> Result<Vec<NodeInfo>, ClaimError> {
        let mut redis = self.redis.clone();
        let mut ids: Vec<String> = self.call(redis.smembers(key("nodes", "all"))).await?;
        ids.sort();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| key("node", id)).collect();
        let records: Vec<Option<String>> = self.call(redis.mget(&keys)).await?;
        let mut nodes = Vec::new();
        let mut gone = Vec::new();
        for (id, record) in ids.into_iter().zip(records) {
            match record.and_then(|r| serde_json::from_str::<NodeInfo>(&r).ok()) {
                Some(node) => nodes.push(node),
                None => gone.push(id),
            }
        }
        if !gone.is_empty() {
            let _: Result<i64, _> = self.call(redis.srem(key("nodes", "all"), gone)).await;
        }
        Ok(nodes)
    }

    /// Joins the cluster as `me`: refused when another live node has this node's id (a
    /// record with another URL). Redis may be away: the node then joins at its first
    /// renewal, and its live streams never wait for it.
    async fn join(&self, me: &NodeInfo) -> Result<(), String> {
        match self.node(&me.id).await {
            Ok(Some(other)) if other.url != me.url => {
                return Err(format!(
                    "cluster.node_id {:?} is taken by the live node at {}: each node needs \
                     its own",
                    me.id, other.url
                ));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("{e}; this node joins the cluster once Redis answers");
                return Ok(());
            }
        }
        let _ = self.renew(me).await;
        Ok(())
    }

    /// Writes this node's record and renews its claims; a claim that another node
    /// holds now is given up, and its stream reported lost.
    async fn renew(&self, me: &NodeInfo) -> Result<(), ClaimError> {
        let mut redis = self.redis.clone();
        let record = serde_json::to_string(me).expect("a node record serializes");
        let lease_ms = self.lease.as_millis() as u64;
        let mut pipe = redis::pipe();
        pipe.pset_ex(key("node", &self.node), record, lease_ms)
            .ignore()
            .sadd(key("nodes", "all"), &self.node)
            .ignore();
        let _: () = self.call(pipe.query_async(&mut redis)).await?;
        let held: Vec<(String, String)> = self
            .held()
            .iter()
            .map(|(key, held)| (key.clone(), held.value.clone()))
            .collect();
        if held.is_empty() {
            return Ok(());
        }
        let script = Script::new(RENEW);
        let mut invocation = script.prepare_invoke();
        for (key, _) in &held {
            invocation.key(key);
        }
        for (_, value) in &held {
            invocation.arg(value);
        }
        invocation.arg(lease_ms);
        let lost: Vec<String> = self.call(invocation.invoke_async(&mut redis)).await?;
        for key in &lost {
            let Some(held) = self.held().remove(key) else {
                continue;
            };
            match held.stream {
                Some(name) => {
                    tracing::warn!(stream = %name, "another node claimed the name while this one could not renew it");
                    let _ = self.lost.send(name);
                }
                None => tracing::warn!(key, "another node claimed an RTP slot of this node's"),
            }
        }
        // A claim given up while the script ran may have been taken back by it (its key
        // was gone, as if expired): it goes again, if it still holds what this node set.
        let given_up: Vec<(String, String)> = {
            let now = self.held();
            held.into_iter()
                .filter(|(key, _)| !now.contains_key(key) && !lost.contains(key))
                .collect()
        };
        for (key, value) in given_up {
            self.delete_if_holding(&key, &value).await;
        }
        Ok(())
    }

    /// Renews this node's record and claims three times a lease, with what `me` says of
    /// the node, until it leaves (or `me` has nothing to say).
    fn spawn_renewal(self: Arc<Self>, me: Box<dyn Fn() -> Option<NodeInfo> + Send + Sync>) {
        let membership = self;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(membership.lease / 3);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(record) = me() else { break };
                let left = membership.left.lock().await;
                if *left {
                    break;
                }
                // Failures are logged once by `call`; live streams go on.
                let _ = membership.renew(&record).await;
            }
        });
    }

    /// Leaves the cluster: every claim and this node's record go at once, not after
    /// the lease.
    async fn leave(&self) {
        // No renewal runs now, nor after.
        *self.left.lock().await = true;
        let keys: Vec<String> = self.held().keys().cloned().collect();
        for key in keys {
            self.give_up_key(key).await;
        }
        let mut redis = self.redis.clone();
        let mut pipe = redis::pipe();
        pipe.del(key("node", &self.node))
            .ignore()
            .srem(key("nodes", "all"), &self.node)
            .ignore();
        let _: Result<(), _> = self.call(pipe.query_async(&mut redis)).await;
    }

    /// The names this node lost to another node's claim, once: whoever ends those
    /// streams takes it.
    fn take_lost(&self) -> Option<mpsc::UnboundedReceiver<StreamName>> {
        self.lost_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    fn status(&self) -> ClusterStatus {
        ClusterStatus {
            redis: Some(self.redis_state()),
            calls: self.calls.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_names_its_node_after_the_token() {
        assert_eq!(node_of("17 gw1:8080"), "gw1:8080");
        assert_eq!(node_of("17 node with spaces"), "node with spaces");
        assert_eq!(key("stream", "cam1"), "webrtc-gateway:stream:cam1");
    }
}
