//! The handle the gateway emits events through: [`Events::emit`] keeps the event in
//! the outbox and hands it to the delivery task without waiting; [`Events::spawn`]
//! starts that task.

use crate::config::HooksConfig;
use crate::events::delivery::{self, DeliveryCounters, Queued};
use crate::events::event::{Event, body, new_id};
use crate::events::outbox::{self, Outbox};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// Events handed to the delivery task without waiting; past this many waiting in the
/// channel, an event is left for the task's next look at the outbox.
const QUEUED: usize = 256;

/// The handle that emits events; cheap to clone. Without `hooks.events_url` it does
/// nothing.
#[derive(Debug, Clone, Default)]
pub struct Events {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    outbox: Outbox,
    node: String,
    receiver: delivery::Receiver,
    counters: DeliveryCounters,
    queue: mpsc::Sender<Queued>,
    /// The channel's other end, until the delivery task takes it.
    queued: Mutex<Option<mpsc::Receiver<Queued>>>,
}

impl Events {
    /// Events of node `node`, kept in `record_dir`'s outbox until delivered.
    pub fn new(
        config: &HooksConfig,
        record_dir: &Path,
        node: &str,
        counters: DeliveryCounters,
    ) -> Self {
        if config.events_url.is_empty() {
            return Self::default();
        }
        let (queue, queued) = mpsc::channel(QUEUED);
        Self {
            inner: Some(Arc::new(Inner {
                outbox: Outbox::new(record_dir),
                node: node.to_string(),
                receiver: delivery::Receiver {
                    url: config.events_url.clone(),
                    secret: config.secret.clone(),
                    timeout: Duration::from_millis(config.timeout_ms.into()),
                },
                counters,
                queue,
                queued: Mutex::new(Some(queued)),
            })),
        }
    }

    /// Creates the outbox and starts the delivery task, which first delivers what a
    /// previous run left there. Once; later calls do nothing.
    pub fn spawn(&self) -> std::io::Result<()> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let Some(queued) = inner
            .queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return Ok(());
        };
        inner.outbox.prepare()?;
        let waiting = inner.outbox.list().len();
        tracing::info!(url = %inner.receiver.url, outbox = %inner.outbox.dir().display(), waiting, "events are delivered");
        tokio::spawn(delivery::run(
            inner.outbox.clone(),
            inner.receiver.clone(),
            queued,
            inner.counters.clone(),
        ));
        Ok(())
    }

    /// Keeps `event` on disk and hands it to the delivery task; never waits for the
    /// delivery. Writing the small file is the only blocking part.
    pub fn emit(&self, event: Event) {
        let Some(inner) = &self.inner else {
            return;
        };
        let id = new_id();
        let now = SystemTime::now();
        let name = outbox::file_name(now, &id);
        let body = body(&id, now, &inner.node, &event);
        if let Err(e) = crate::blocking::blocking(|| inner.outbox.write(&name, &body)) {
            tracing::error!(kind = event.kind(), %id, "cannot keep an event in the outbox ({}): {e}; it is not delivered", inner.outbox.dir().display());
            return;
        }
        tracing::debug!(kind = event.kind(), %id, "event");
        // Full: the delivery task finds the file at its next look at the outbox.
        let _ = inner.queue.try_send(Queued { name, body });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::StreamName;
    use crate::stream::EndReason;

    fn name(s: &str) -> StreamName {
        StreamName::new(s).unwrap()
    }

    #[test]
    fn without_a_url_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let events = Events::new(&HooksConfig::default(), dir.path(), "n", Default::default());
        events.emit(Event::ended(&name("cam"), &EndReason::Unpublished));
        events.spawn().unwrap();
        assert!(!dir.path().join(outbox::OUTBOX_DIR).exists());
    }

    #[test]
    fn emitted_events_wait_in_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let config = HooksConfig {
            events_url: "http://127.0.0.1:9/events".into(),
            ..HooksConfig::default()
        };
        let events = Events::new(&config, dir.path(), "n", Default::default());
        events.emit(Event::ended(&name("cam"), &EndReason::Unpublished));
        let outbox = Outbox::new(dir.path());
        let files = outbox.list();
        assert_eq!(files.len(), 1);
        let json: serde_json::Value =
            serde_json::from_slice(&outbox.read(&files[0]).unwrap()).unwrap();
        assert_eq!(json["id"].as_str(), outbox::id_of(&files[0]));
        assert_eq!(json["type"], "stream.ended");
    }
}
