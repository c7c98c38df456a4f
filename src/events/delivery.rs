//! The one task that delivers events: it takes new events from a bounded channel and,
//! every [`SCAN_INTERVAL`], whatever the outbox holds that it does not know (those the
//! channel had no room for, and at start those a previous run left). It POSTs them one
//! at a time, the oldest due first, each signed; a 2xx removes the event's file. A
//! refused or unanswered delivery is tried again after a pause that doubles from one
//! second up to [`MAX_PAUSE`], with jitter; an event still failing [`GIVE_UP`] after its
//! first failure is dropped, said in the log and counted.

use crate::events::outbox::{Outbox, id_of};
use crate::hook_signature::{SIGNATURE_HEADER, signature};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How often the outbox is looked at for events the channel did not bring.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(5);
/// The first pause after a failed delivery.
pub const FIRST_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause between two tries of one event.
pub const MAX_PAUSE: Duration = Duration::from_secs(300);
/// How long an event is tried after its first failure before it is dropped.
pub const GIVE_UP: Duration = Duration::from_secs(3600);
/// The header that carries the event's id.
pub const EVENT_ID_HEADER: &str = "X-Gateway-Event-Id";

/// What the delivery of events counts (registered with the metrics).
#[derive(Debug, Clone, Default)]
pub struct DeliveryCounters {
    pub delivered: Counter,
    /// Tries that failed (refused or unanswered).
    pub failed: Counter,
    /// Events given up after an hour of failures.
    pub dropped: Counter,
    /// Events waiting for delivery.
    pub pending: Gauge,
}

/// An event written to the outbox, for the delivery task.
#[derive(Debug)]
pub struct Queued {
    pub name: String,
    pub body: Vec<u8>,
}

/// Where and how events are delivered.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub url: String,
    pub secret: String,
    pub timeout: Duration,
}

/// An event waiting for delivery.
#[derive(Debug)]
struct Pending {
    body: Vec<u8>,
    /// When it may be tried.
    due: Instant,
    /// The pause after its next failure.
    pause: Duration,
    /// When its deliveries began failing.
    failing_since: Option<Instant>,
}

impl Pending {
    fn new(body: Vec<u8>) -> Self {
        Self {
            body,
            due: Instant::now(),
            pause: FIRST_PAUSE,
            failing_since: None,
        }
    }
}

/// What follows a failed try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterFailure {
    /// Tried again at its `due` time; `first` when it had not failed before.
    Retry { first: bool },
    /// Failing for [`GIVE_UP`]: dropped.
    GiveUp,
}

impl Pending {
    /// Notes a failed try at `now`: the next one after a jittered pause (`jitter` in
    /// 0..1), or none once it has failed for [`GIVE_UP`].
    fn failed(&mut self, now: Instant, jitter: f64) -> AfterFailure {
        let first = self.failing_since.is_none();
        let since = *self.failing_since.get_or_insert(now);
        if now.duration_since(since) >= GIVE_UP {
            return AfterFailure::GiveUp;
        }
        self.due = now + jittered(self.pause, jitter);
        self.pause = next_pause(self.pause);
        AfterFailure::Retry { first }
    }
}

/// The wait before the next try: between half and all of `pause` (`jitter` in 0..1),
/// so that events that failed together are not all tried again at once.
pub fn jittered(pause: Duration, jitter: f64) -> Duration {
    pause.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// The pause after the next failure.
pub fn next_pause(pause: Duration) -> Duration {
    (pause * 2).min(MAX_PAUSE)
}

/// Delivers the outbox's events for as long as the gateway runs.
pub async fn run(
    outbox: Outbox,
    receiver: Receiver,
    mut queued: mpsc::Receiver<Queued>,
    counters: DeliveryCounters,
) {
    // Never redirected: a 3xx would turn the POST into a GET whose 2xx nobody received
    // the event with. It counts as a refusal and is tried again.
    let client = match reqwest::Client::builder()
        .timeout(receiver.timeout)
        .connect_timeout(receiver.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(
                "cannot make the HTTP client of the event webhooks: {e}; no event is delivered"
            );
            return;
        }
    };
    let mut pending: BTreeMap<String, Pending> = BTreeMap::new();
    let mut scan = tokio::time::interval(SCAN_INTERVAL);
    loop {
        while let Ok(event) = queued.try_recv() {
            take(&outbox, &mut pending, event).await;
        }
        counters.pending.set(pending.len() as i64);
        let now = Instant::now();
        let due = pending
            .iter()
            .find(|(_, p)| p.due <= now)
            .map(|(name, _)| name.clone());
        if let Some(name) = due {
            deliver(&client, &receiver, &outbox, &mut pending, &name, &counters).await;
            continue;
        }
        let next = pending.values().map(|p| p.due).min();
        tokio::select! {
            event = queued.recv() => match event {
                Some(event) => take(&outbox, &mut pending, event).await,
                None => return,
            },
            _ = scan.tick() => {
                let known = outbox.clone();
                let files = tokio::task::spawn_blocking(move || known.list())
                    .await
                    .unwrap_or_default();
                for name in files {
                    if pending.contains_key(&name) {
                        continue;
                    }
                    let reader = outbox.clone();
                    let file = name.clone();
                    match tokio::task::spawn_blocking(move || reader.read(&file)).await {
                        Ok(Ok(body)) => {
                            pending.insert(name, Pending::new(body));
                        }
                        Ok(Err(e)) => tracing::warn!(file = %name, "cannot read an event from the outbox: {e}"),
                        Err(_) => {}
                    }
                }
            }
            _ = sleep_until(next) => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A new event from the channel: taken unless it was delivered already (a scan found
/// its file first).
async fn take(outbox: &Outbox, pending: &mut BTreeMap<String, Pending>, event: Queued) {
    if pending.contains_key(&event.name) {
        return;
    }
    let (checked, name) = (outbox.clone(), event.name.clone());
    let on_disk = tokio::task::spawn_blocking(move || checked.contains(&name))
        .await
        .unwrap_or(true);
    if on_disk {
        pending.insert(event.name, Pending::new(event.body));
    }
}

/// One try of one event.
async fn deliver(
    client: &reqwest::Client,
    receiver: &Receiver,
    outbox: &Outbox,
    pending: &mut BTreeMap<String, Pending>,
    name: &str,
    counters: &DeliveryCounters,
) {
    let Some(event) = pending.get_mut(name) else {
        return;
    };
    let id = id_of(name).unwrap_or_default().to_string();
    let answer = client
        .post(&receiver.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature(&receiver.secret, &event.body))
        .header(EVENT_ID_HEADER, &id)
        .body(event.body.clone())
        .send()
        .await;
    let failure = match answer {
        Ok(answer) if answer.status().is_success() => None,
        Ok(answer) => Some(format!("answered {}", answer.status())),
        Err(e) if e.is_timeout() => Some(format!(
            "no answer within {} ms (hooks.timeout_ms)",
            receiver.timeout.as_millis()
        )),
        Err(e) => Some(format!("cannot reach it: {e}")),
    };
    let now = Instant::now();
    let Some(failure) = failure else {
        counters.delivered.inc();
        pending.remove(name);
        forget(outbox, name).await;
        // The receiver answers again: whatever waits for it goes now.
        for other in pending.values_mut() {
            other.due = other.due.min(now);
        }
        tracing::debug!(%id, "event delivered");
        return;
    };
    counters.failed.inc();
    match event.failed(now, rand::random::<f64>()) {
        AfterFailure::GiveUp => {
            tracing::error!(%id, url = %receiver.url, "event dropped: its delivery failed for {} s ({failure})", GIVE_UP.as_secs());
            counters.dropped.inc();
            pending.remove(name);
            forget(outbox, name).await;
        }
        AfterFailure::Retry { first: true } => {
            tracing::warn!(%id, url = %receiver.url, "cannot deliver an event: {failure}; trying again with backoff");
        }
        AfterFailure::Retry { first: false } => {
            tracing::debug!(%id, "event delivery failed again: {failure}");
        }
    }
}

async fn forget(outbox: &Outbox, name: &str) {
    let (outbox, file) = (outbox.clone(), name.to_string());
    let removed = tokio::task::spawn_blocking(move || outbox.remove(&file)).await;
    if let Ok(Err(e)) = removed {
        tracing::error!(file = %name, "cannot remove a delivered event from the outbox: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_five_minutes() {
        let mut pause = FIRST_PAUSE;
        let mut seen = vec![pause];
        while pause < MAX_PAUSE {
            pause = next_pause(pause);
            seen.push(pause);
        }
        assert_eq!(seen[..4], [1, 2, 4, 8].map(Duration::from_secs));
        assert_eq!(next_pause(MAX_PAUSE), MAX_PAUSE);
    }

    #[test]
    fn a_failing_event_is_retried_for_an_hour_then_given_up() {
        let start = Instant::now();
        let mut event = Pending::new(b"{}".to_vec());
        let mut now = start;
        let mut tries = 0;
        let outcome = loop {
            tries += 1;
            match event.failed(now, 1.0) {
                AfterFailure::Retry { first } => {
                    assert_eq!(first, tries == 1);
                    assert!(event.due > now);
                    assert!(event.due - now <= MAX_PAUSE);
                    now = event.due;
                }
                AfterFailure::GiveUp => break now,
            }
        };
        assert!(outcome.duration_since(start) >= GIVE_UP);
        assert!(outcome.duration_since(start) < GIVE_UP + MAX_PAUSE);
        // 1 + 2 + … + 256 s, then every 5 minutes until the hour is up.
        assert_eq!(tries, 9 + 11 + 1);
    }

    #[test]
    fn jitter_keeps_the_wait_within_half_and_all_of_the_pause() {
        let pause = Duration::from_secs(8);
        assert_eq!(jittered(pause, 0.0), Duration::from_secs(4));
        assert_eq!(jittered(pause, 1.0), pause);
        assert_eq!(jittered(pause, 7.0), pause);
        assert!(jittered(pause, 0.3) > Duration::from_secs(4));
    }
}
