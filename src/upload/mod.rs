//! Recordings in object storage (`record.upload_url`), through the `object_store` crate:
//! S3 (and S3-compatible stores at `record.upload_endpoint`), Google Cloud Storage, Azure
//! Blob Storage, or a local directory.
//!
//! One task looks at `record.dir` every second and moves each recording's upload on, in
//! a task of its own, apart from the media: a store that is down or slow never holds a
//! stream back. On the cloud stores a recording is a multipart upload made while it is
//! written: each part of `record.upload_part_kib` goes up as soon as the file has grown
//! past it. The first part goes up last, when the file is complete, because an MP4
//! recording's header is finished at its end; then the upload is completed, and verified
//! against the local file's size. What has been uploaded is kept beside the recording
//! (`FILE.upload.json`), so that after a crash or a restart the upload goes on where it
//! was (a recording cut short by a crash is uploaded as it was left). A local directory
//! store gets the file when it is complete.
//!
//! Failures: a store that cannot be reached is tried again with a growing pause (up to a
//! minute), for as long as the gateway runs; wrong credentials or a missing bucket are
//! said once per recording in the log and in `/recordings` (`upload_error`), and tried
//! again at the next start. The local file is never deleted before its object is
//! complete and verified (`record.keep_local = false`).

mod state;

pub use state::{UploadState, annotate, read_state};
use state::{orphans, state_path, write_state};

use crate::config::{RecordConfig, StoreKind, StoreUrl};
use crate::events::{Event, Events};
use crate::media::output::record::parse_name;
use crate::metrics::UploadCounters;
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, PutPayload, RetryConfig};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

/// How often `record.dir` is looked at.
const POLL: Duration = Duration::from_secs(1);
/// A finished recording's file must have been left alone this long before its upload is
/// completed (its muxer may still be writing its end).
const QUIET: Duration = Duration::from_secs(2);
/// The longest pause between two tries of an unreachable store.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Uploads that move at once.
const CONCURRENT: usize = 4;
/// Polls between two looks for uploads whose recording is gone.
const ORPHANS_EVERY: u64 = 300;

/// A store, and the multipart interface where it has one.
struct Store {
    objects: Arc<dyn ObjectStore>,
    multipart: Option<Arc<dyn MultipartStore>>,
    prefix: String,
    /// `record.upload_url` without a trailing `/`: what `/recordings` shows.
    url: String,
}

impl Store {
    fn open(config: &RecordConfig) -> Result<Option<Store>, String> {
        let Some(url) = StoreUrl::parse(&config.upload_url)? else {
            return Ok(None);
        };
        // A store that does not answer fails a request within a minute; the uploader
        // then tries again later, so the client's own retries stay few.
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 3,
            retry_timeout: Duration::from_secs(30),
        };
        let client = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(60));
        let failed = |e: object_store::Error| format!("record.upload_url: {e}");
        let (objects, multipart): (Arc<dyn ObjectStore>, Option<Arc<dyn MultipartStore>>) =
            match url.kind {
                StoreKind::S3 => {
                    let mut builder = object_store::aws::AmazonS3Builder::from_env()
                        .with_bucket_name(&url.bucket)
                        .with_retry(retry)
                        .with_client_options(client);
                    let endpoint = &config.upload_endpoint;
                    if !endpoint.is_empty() {
                        builder = builder
                            .with_endpoint(endpoint)
                            .with_virtual_hosted_style_request(false)
                            .with_allow_http(endpoint.starts_with("http://"));
                    }
                    let store = Arc::new(builder.build().map_err(failed)?);
                    (store.clone(), Some(store))
                }
                StoreKind::Gcs => {
                    let store = Arc::new(
                        object_store::gcp::GoogleCloudStorageBuilder::from_env()
                            .with_bucket_name(&url.bucket)
                            .with_retry(retry)
                            .with_client_options(client)
                            .build()
                            .map_err(failed)?,
                    );
                    (store.clone(), Some(store))
                }
                StoreKind::Azure => {
                    let store = Arc::new(
                        object_store::azure::MicrosoftAzureBuilder::from_env()
                            .with_container_name(&url.bucket)
                            .with_retry(retry)
                            .with_client_options(client)
                            .build()
                            .map_err(failed)?,
                    );
                    (store.clone(), Some(store))
                }
                StoreKind::File => {
                    std::fs::create_dir_all(&url.bucket)
                        .map_err(|e| format!("record.upload_url: {}: {e}", url.bucket))?;
                    let store = object_store::local::LocalFileSystem::new_with_prefix(&url.bucket)
                        .map_err(failed)?;
                    (Arc::new(store), None)
                }
            };
        Ok(Some(Store {
            objects,
            multipart,
            prefix: url.prefix,
            url: config.upload_url.trim_end_matches('/').to_string(),
        }))
    }

    fn object(&self, file: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(file)
        } else {
            ObjectPath::from(format!("{}/{file}", self.prefix))
        }
    }
}

/// Why a step of an upload failed.
#[derive(Debug, thiserror::Error)]
enum UploadError {
    /// Wrong credentials, a missing bucket: not tried again before the next start.
    #[error("{0}")]
    Refused(String),
    /// Anything else (the store unreachable, a timeout): tried again after a pause.
    #[error("{0}")]
    Failed(String),
}

impl From<object_store::Error> for UploadError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => UploadError::Refused(e.to_string()),
            other => UploadError::Failed(other.to_string()),
        }
    }
}

impl From<std::io::Error> for UploadError {
    fn from(e: std::io::Error) -> Self {
        UploadError::Failed(e.to_string())
    }
}

/// What a step of an upload achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// The parts that were full went up; the recording is still written.
    Partly,
    /// Complete and verified.
    Done,
}

/// When a recording's upload is tried next, and whether its failure was said.
#[derive(Debug, Clone, Copy)]
struct Retry {
    at: Option<Instant>,
    pause: Duration,
    said: bool,
}

/// The uploads of every recording in `record.dir`.
pub struct Uploads {
    store: Store,
    dir: PathBuf,
    part_bytes: u64,
    keep_local: bool,
    in_flight: Mutex<HashSet<String>>,
    /// Recordings whose upload is complete (and, without `keep_local`, whose file went).
    done: Mutex<HashSet<String>>,
    retries: Mutex<HashMap<String, Retry>>,
    limit: Arc<tokio::sync::Semaphore>,
    counters: UploadCounters,
    /// Where `upload.completed` goes.
    events: Events,
}

impl std::fmt::Debug for Uploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploads")
            .field("url", &self.store.url)
            .finish_non_exhaustive()
    }
}

impl Uploads {
    /// `None` when `record.upload_url` is empty.
    pub fn new(
        config: &RecordConfig,
        counters: UploadCounters,
        events: Events,
    ) -> Result<Option<Arc<Uploads>>, String> {
        let Some(store) = Store::open(config)? else {
            return Ok(None);
        };
        tracing::info!(url = %store.url, "recordings are uploaded");
        Ok(Some(Arc::new(Uploads {
            store,
            dir: config.dir.clone(),
            part_bytes: config.upload_part_kib as u64 * 1024,
            keep_local: config.keep_local,
            in_flight: Mutex::default(),
            done: Mutex::default(),
            retries: Mutex::default(),
            limit: Arc::new(tokio::sync::Semaphore::new(CONCURRENT)),
            counters,
            events,
        })))
    }

    /// Looks at `record.dir` every second, for as long as `owner` lives; `is_active`
    /// says whether a recording is being written now (the gateway's registry knows).
    pub fn spawn<T: Send + Sync + 'static>(
        self: &Arc<Self>,
        owner: Weak<T>,
        is_active: impl Fn(&T, &str) -> bool + Send + Sync + 'static,
    ) {
        let uploads = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            let mut ticks = 0u64;
            loop {
                tick.tick().await;
                // At start (what a node killed left) and every few minutes after.
                if ticks.is_multiple_of(ORPHANS_EVERY) {
                    uploads.abandon_orphans().await;
                }
                ticks += 1;
                let Some(owner) = owner.upgrade() else {
                    break;
                };
                let dir = uploads.dir.clone();
                let files = tokio::task::spawn_blocking(move || recordings(&dir))
                    .await
                    .unwrap_or_default();
                for (file, modified) in files {
                    let active = is_active(&owner, &file);
                    uploads.consider(file, active, modified);
                }
            }
        });
    }

    /// Aborts the multipart uploads whose recording is gone, and removes their state.
    async fn abandon_orphans(&self) {
        let dir = self.dir.clone();
        let orphans = tokio::task::spawn_blocking(move || orphans(&dir))
            .await
            .unwrap_or_default();
        for (file, state) in orphans {
            if self.in_flight().contains(&file) {
                continue;
            }
            if let (Some(id), Some(multipart)) = (&state.multipart, &self.store.multipart) {
                let object = self.store.object(&file);
                match multipart.abort_multipart(&object, id).await {
                    Ok(()) => {
                        tracing::info!(%file, "the recording is gone before its upload was complete: its multipart upload is aborted")
                    }
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => {
                        tracing::debug!(%file, "cannot abort the multipart upload now: {e}");
                        continue;
                    }
                }
            }
            let _ = std::fs::remove_file(state_path(&self.dir, &file));
            self.retries().remove(&file);
        }
    }

    /// Starts the next step of `file`'s upload, unless one is under way or it waits.
    fn consider(self: &Arc<Self>, file: String, active: bool, modified: SystemTime) {
        let quiet = modified.elapsed().unwrap_or_default() >= QUIET;
        if !active && !quiet {
            return;
        }
        if self.store.multipart.is_none() && active {
            return;
        }
        if self
            .done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&file)
        {
            return;
        }
        if let Some(retry) = self.retries().get(&file)
            && retry.at.is_none_or(|at| Instant::now() < at)
        {
            return;
        }
        if !self.in_flight().insert(file.clone()) {
            return;
        }
        let uploads = self.clone();
        tokio::spawn(async move {
            let _permit = uploads.limit.clone().acquire_owned().await;
            let result = uploads.step(&file, active).await;
            uploads.settle(&file, result).await;
            uploads.in_flight().remove(&file);
        });
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn retries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Retry>> {
        self.retries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes how a step went: a failure is said once and tried again after a pause
    /// (never before the next start when the store refused); `/recordings` shows it
    /// until a step succeeds.
    async fn settle(&self, file: &str, result: Result<Progress, UploadError>) {
        let error = match result {
            Ok(progress) => {
                if progress == Progress::Done {
                    self.done
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(file.to_string());
                }
                let recovered = self.retries().remove(file).is_some();
                if recovered {
                    tracing::info!(%file, "the recording's upload goes on");
                    self.note_error(file, None).await;
                }
                return;
            }
            Err(error) => error,
        };
        let refused = matches!(error, UploadError::Refused(_));
        {
            let mut retries = self.retries();
            let retry = retries.entry(file.to_string()).or_insert(Retry {
                at: None,
                pause: Duration::from_secs(1),
                said: false,
            });
            if !retry.said {
                if refused {
                    tracing::error!(%file, url = %self.store.url, "the store refuses the recording's upload: {error}; it stays on disk and is tried again at the next start");
                } else {
                    tracing::warn!(%file, url = %self.store.url, "cannot upload the recording now: {error}; trying again");
                }
                retry.said = true;
            } else {
                tracing::debug!(%file, "upload failed again: {error}");
            }
            if refused {
                retry.at = None;
            } else {
                retry.at = Some(Instant::now() + retry.pause);
                retry.pause = (retry.pause * 2).min(MAX_BACKOFF);
            }
        }
        self.note_error(file, Some(error.to_string())).await;
    }

    /// Keeps why the upload has not succeeded (or that it goes on) in its state file.
    async fn note_error(&self, file: &str, message: Option<String>) {
        let dir = self.dir.clone();
        let file = file.to_string();
        let _ = tokio::task::spawn_blocking(move || {
            let mut state = read_state(&dir, &file).unwrap_or_default();
            if state.error != message && state.uploaded.is_none() {
                state.error = message;
                let _ = write_state(&dir, &file, &state);
            }
        })
        .await;
    }

    /// Moves `file`'s upload on: the parts that are full while it is written; all the
    /// rest, completion and verification once it is complete.
    async fn step(&self, file: &str, active: bool) -> Result<Progress, UploadError> {
        let path = self.dir.join(file);
        let mut state = read_state(&self.dir, file).unwrap_or_default();
        if state.uploaded.is_some() {
            if !self.keep_local && path.exists() {
                std::fs::remove_file(&path)?;
                tracing::info!(%file, "local recording deleted: its upload is complete (record.keep_local = false)");
            }
            return Ok(Progress::Done);
        }
        let length = std::fs::metadata(&path)?.len();
        let object = self.store.object(file);
        match &self.store.multipart {
            Some(multipart) if length > 0 => {
                self.upload_parts(
                    multipart.as_ref(),
                    file,
                    &path,
                    &object,
                    &mut state,
                    length,
                    active,
                )
                .await?;
                if active {
                    return Ok(Progress::Partly);
                }
            }
            _ => {
                if active {
                    return Ok(Progress::Partly);
                }
                let body = tokio::fs::read(&path).await?;
                let sent = body.len() as u64;
                self.store
                    .objects
                    .put(&object, PutPayload::from(body))
                    .await?;
                self.counters.bytes.inc_by(sent);
            }
        }
        // Verified: the object is there, as long as the file.
        let meta = self.store.objects.head(&object).await?;
        if meta.size != length {
            state = UploadState::default();
            write_state(&self.dir, file, &state)?;
            return Err(UploadError::Failed(format!(
                "the object has {} bytes, the file {length}: uploading it again",
                meta.size
            )));
        }
        let url = format!("{}/{file}", self.store.url);
        tracing::info!(%file, %url, bytes = length, "recording uploaded");
        self.counters.completed.inc();
        let stream = parse_name(file).map(|(stream, _)| stream);
        let completed = Event::UploadCompleted {
            stream,
            file: file.to_string(),
            url: url.clone(),
            bytes: length,
        };
        self.events.emit(completed);
        state = UploadState {
            uploaded: Some(url),
            bytes: length,
            ..UploadState::default()
        };
        write_state(&self.dir, file, &state)?;
        if !self.keep_local {
            std::fs::remove_file(&path)?;
            tracing::info!(%file, "local recording deleted: its upload is complete (record.keep_local = false)");
        }
        Ok(Progress::Done)
    }

    /// The multipart upload: parts from the second as they fill; once the file is
    /// complete, the last part, the first, and completion.
    #[allow(clippy::too_many_arguments)]
    async fn upload_parts(
        &self,
        store: &dyn MultipartStore,
        file: &str,
        path: &Path,
        object: &ObjectPath,
        state: &mut UploadState,
        length: u64,
        active: bool,
    ) -> Result<(), UploadError> {
        let id = match &state.multipart {
            Some(id) => id.clone(),
            None => {
                let id = store.create_multipart(object).await?;
                *state = UploadState {
                    multipart: Some(id.clone()),
                    part_bytes: self.part_bytes,
                    ..UploadState::default()
                };
                write_state(&self.dir, file, state)?;
                id
            }
        };
        let size = state.part_bytes.max(1);
        // While written, only parts that are full; then every part to the end.
        let parts = if active {
            length / size
        } else {
            length.div_ceil(size)
        };
        for index in 1..parts as usize {
            if state.parts.contains_key(&index) {
                continue;
            }
            let data = read_range(path, index as u64 * size, size).await?;
            let sent = data.len() as u64;
            let part = match store.put_part(object, &id, index, data.into()).await {
                Ok(part) => part,
                Err(e @ object_store::Error::NotFound { .. }) => {
                    // The store no longer knows the upload (aborted, expired): anew.
                    *state = UploadState::default();
                    write_state(&self.dir, file, state)?;
                    return Err(UploadError::Failed(format!("the upload was lost: {e}")));
                }
                Err(e) => return Err(e.into()),
            };
            self.counters.bytes.inc_by(sent);
            state.parts.insert(index, part.content_id);
            write_state(&self.dir, file, state)?;
        }
        if active {
            return Ok(());
        }
        let first = read_range(path, 0, size).await?;
        let sent = first.len() as u64;
        let first = store.put_part(object, &id, 0, first.into()).await?;
        self.counters.bytes.inc_by(sent);
        let mut all = vec![first];
        for index in 1..parts as usize {
            let content_id =
                state.parts.get(&index).cloned().ok_or_else(|| {
                    UploadError::Failed(format!("part {index} of {file} is missing"))
                })?;
            all.push(object_store::multipart::PartId { content_id });
        }
        match store.complete_multipart(object, &id, all).await {
            Ok(_) => Ok(()),
            Err(e @ object_store::Error::NotFound { .. }) => {
                *state = UploadState::default();
                write_state(&self.dir, file, state)?;
                Err(UploadError::Failed(format!("the upload was lost: {e}")))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// `length` bytes of `path` from `offset` (fewer at its end), read off the workers.
async fn read_range(path: &Path, offset: u64, length: u64) -> std::io::Result<Vec<u8>> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut data = Vec::with_capacity(length as usize);
        file.take(length).read_to_end(&mut data)?;
        Ok(data)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// The recordings in `dir` and when each was last written.
fn recordings(dir: &Path) -> Vec<(String, SystemTime)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let file = entry.file_name().into_string().ok()?;
            parse_name(&file)?;
            let metadata = entry.metadata().ok().filter(|m| m.is_file())?;
            Some((file, metadata.modified().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::state::{STATE_SUFFIX, uploaded_only};
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn uploads_whose_recording_went_are_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let kept = "cam1-20260101T000000Z.mp4";
        let gone = "cam2-20260101T000000Z.mp4";
        let done = "cam3-20260101T000000Z.mp4";
        std::fs::write(dir.path().join(kept), b"x").unwrap();
        let under_way = UploadState {
            multipart: Some("id".into()),
            part_bytes: 1,
            ..UploadState::default()
        };
        write_state(dir.path(), kept, &under_way).unwrap();
        write_state(dir.path(), gone, &under_way).unwrap();
        let uploaded = UploadState {
            uploaded: Some("s3://b/cam3".into()),
            ..UploadState::default()
        };
        write_state(dir.path(), done, &uploaded).unwrap();
        let partial = dir.path().join(format!("{kept}{STATE_SUFFIX}.new"));
        std::fs::write(&partial, b"{").unwrap();
        assert_eq!(orphans(dir.path()), vec![(gone.to_string(), under_way)]);
        assert!(!partial.exists());
    }

    #[test]
    fn states_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let file = "cam1-20261206T101500Z.mp4";
        let state = UploadState {
            multipart: Some("id".into()),
            part_bytes: 65536,
            parts: BTreeMap::from([(1, "etag1".into())]),
            ..UploadState::default()
        };
        write_state(dir.path(), file, &state).unwrap();
        assert_eq!(read_state(dir.path(), file), Some(state));
        // Not a recording: a sidecar is never listed as one.
        assert!(parse_name(&format!("{file}{STATE_SUFFIX}")).is_none());
        assert!(uploaded_only(dir.path()).is_empty());
        let done = UploadState {
            uploaded: Some("s3://b/x".into()),
            bytes: 10,
            ..UploadState::default()
        };
        write_state(dir.path(), file, &done).unwrap();
        assert_eq!(uploaded_only(dir.path()), vec![(file.to_string(), done)]);
    }
}
