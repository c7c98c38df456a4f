//! The gateway's shared context: configuration, the stream registry, the pipeline
//! factory, where HLS files go, and the shutdown signal. Created once in `main` and
//! handed to every task.

use crate::config::Config;
use crate::media::PipelineFactory;
use crate::metrics::Metrics;
use crate::registry::Registry;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
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
    /// Where each stream's HLS directory is made.
    pub hls_root: PathBuf,
    pub metrics: Metrics,
    /// The temporary HLS directory when `hls.dir` is empty, removed at exit.
    _hls_temp: Option<tempfile::TempDir>,
}

impl Gateway {
    /// `hls_temp` is the temporary directory used when `hls.dir` is empty.
    pub fn new(
        config: Config,
        media: PipelineFactory,
        hls_temp: Option<tempfile::TempDir>,
    ) -> Arc<Self> {
        let hls_root = match &hls_temp {
            Some(temp) => temp.path().to_owned(),
            None => config.hls.dir.clone(),
        };
        Arc::new(Self {
            registry: Mutex::new(Registry::new(config.limits.max_publishers)),
            config,
            media,
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            connections: TaskTracker::new(),
            hls_root,
            metrics: Metrics::default(),
            _hls_temp: hls_temp,
        })
    }

    /// Removes ended streams once their HLS files have lingered long enough.
    pub fn spawn_reaper(self: &Arc<Self>) {
        let gateway = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let Some(gateway) = gateway.upgrade() else {
                    break;
                };
                let expired = gateway.registry().expire(Instant::now());
                for hls in expired {
                    tracing::debug!(dir = %hls.dir.display(), "HLS files expired");
                    hls.remove();
                }
            }
        });
    }

    /// When an ended stream's HLS files go away, if it ends now.
    pub fn linger_deadline(&self) -> Instant {
        Instant::now() + Duration::from_secs(self.config.hls.linger_s as u64)
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
        // Ended playlists stay in a configured hls.dir, with their ENDLIST, for whoever
        // serves that directory; a temporary one goes away with the process.
    }
}
