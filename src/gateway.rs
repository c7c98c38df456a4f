//! The gateway's shared context: configuration, the stream registry, the pipeline
//! factory and the shutdown signal. Created once in `main` and handed to every task.

use crate::config::Config;
use crate::media::PipelineFactory;
use crate::registry::Registry;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug)]
pub struct Gateway {
    pub config: Config,
    pub media: PipelineFactory,
    registry: Mutex<Registry>,
    /// Cancelled when the gateway stops accepting publishers.
    pub shutdown: CancellationToken,
    /// Every session task, so that shutdown can wait for them.
    pub sessions: TaskTracker,
    /// Every signalling connection, so that shutdown can let them say goodbye.
    pub connections: TaskTracker,
}

impl Gateway {
    pub fn new(config: Config, media: PipelineFactory) -> Arc<Self> {
        Arc::new(Self {
            registry: Mutex::new(Registry::new(config.limits.max_publishers)),
            config,
            media,
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            connections: TaskTracker::new(),
        })
    }

    /// The registry, for one short call.
    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops accepting publishers, ends every stream, and waits up to `grace` for the
    /// streams to end and their publishers to be told.
    pub async fn stop(&self, grace: Duration) {
        self.shutdown.cancel();
        self.registry().stop_all();
        self.sessions.close();
        self.connections.close();
        let ended = async {
            self.sessions.wait().await;
            self.connections.wait().await;
        };
        if tokio::time::timeout(grace, ended).await.is_err() {
            tracing::warn!("some streams did not end within {grace:?}");
        }
    }
}
