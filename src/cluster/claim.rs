//! A publication's hold on the cluster: its stream name and, when RTP is sent, its RTP
//! port slot, as one [`Claim`]. Whoever holds the claim holds the name; dropping it gives
//! both up, and [`Claim::end`] gives them up with the ended stream's playlist lingering.

use crate::name::StreamName;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

/// An RTP port slot to claim across the nodes that send to one `rtp.host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRequest {
    /// The host the RTP goes to: nodes sending to it never share a port.
    pub host: String,
    /// Slots from 0 below this.
    pub count: u32,
}

/// An RTP port slot held in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldSlot {
    pub host: String,
    pub slot: u32,
}

/// What gives a claim up: the cluster implementation that made it. The work that must
/// be done at once (in memory) is done in the call; what takes I/O is the future.
pub trait GiveUp: Send + Sync {
    /// Gives up `name` and `slot`; with `linger`, the node keeps serving the ended
    /// stream's playlist that long, and other nodes send its viewers here.
    fn give_up(
        self: Arc<Self>,
        name: StreamName,
        slot: Option<HeldSlot>,
        linger: Option<Duration>,
    ) -> BoxFuture<'static, ()>;
}

/// A stream name (and maybe an RTP slot) held for one publication, until it is ended or
/// dropped.
pub struct Claim {
    name: StreamName,
    slot: Option<HeldSlot>,
    owner: Option<Arc<dyn GiveUp>>,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("name", &self.name)
            .field("slot", &self.slot)
            .field("held", &self.owner.is_some())
            .finish()
    }
}

impl Claim {
    /// A claim on `name` (and `slot`) that `owner` gives up.
    pub fn new(name: StreamName, slot: Option<HeldSlot>, owner: Arc<dyn GiveUp>) -> Self {
        Self {
            name,
            slot,
            owner: Some(owner),
        }
    }

    pub fn name(&self) -> &StreamName {
        &self.name
    }

    /// The RTP slot claimed across the cluster, if one was asked for and the cluster
    /// hands slots out (a node on its own leaves them to its registry).
    pub fn slot(&self) -> Option<u32> {
        self.slot.as_ref().map(|s| s.slot)
    }

    /// The same claim, with `slot` held too (given up with it).
    pub fn with_slot(mut self, slot: HeldSlot) -> Self {
        self.slot = Some(slot);
        self
    }

    /// The future that gives the claim up; nothing when it was given up already.
    fn give_up(&mut self, linger: Option<Duration>) -> Option<BoxFuture<'static, ()>> {
        let owner = self.owner.take()?;
        let linger = linger.filter(|l| !l.is_zero());
        Some(owner.give_up(self.name.clone(), self.slot.take(), linger))
    }

    /// Gives the claim up now; with `linger`, the ended stream's playlist is served here
    /// that long.
    pub async fn end(mut self, linger: Option<Duration>) {
        if let Some(giving_up) = self.give_up(linger) {
            giving_up.await;
        }
    }

    /// Gives the claim up in the background, with the ended stream lingering.
    pub fn linger(mut self, linger: Duration) {
        if let Some(giving_up) = self.give_up(Some(linger)) {
            spawn(giving_up);
        }
    }
}

/// Gives a claim up in the background; without a runtime, the claim expires with its
/// lease.
fn spawn(giving_up: BoxFuture<'static, ()>) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(giving_up);
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(giving_up) = self.give_up(None) {
            spawn(giving_up);
        }
    }
}
