//! What each recording's upload has come to, kept beside it as `FILE.upload.json`, and
//! the listings of those state files whose recording is gone from the directory.

use crate::media::output::record::{RecordingFile, parse_name};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The sidecar file that says how far a recording's upload has come.
pub(super) const STATE_SUFFIX: &str = ".upload.json";

/// How far one recording's upload has come, kept beside it as `FILE.upload.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UploadState {
    /// The multipart upload under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) multipart: Option<String>,
    /// The part size it was started with.
    #[serde(default)]
    pub(super) part_bytes: u64,
    /// The parts uploaded so far (from the second), by index.
    #[serde(default)]
    pub(super) parts: BTreeMap<usize, String>,
    /// The object's URL, once complete and verified.
    #[serde(default)]
    pub uploaded: Option<String>,
    /// The object's size then.
    #[serde(default)]
    pub bytes: u64,
    /// Why the last try failed, while it is not uploaded.
    #[serde(default)]
    pub error: Option<String>,
}

pub(super) fn state_path(dir: &Path, file: &str) -> PathBuf {
    dir.join(format!("{file}{STATE_SUFFIX}"))
}

/// What `FILE.upload.json` says of a recording, if there is one.
pub fn read_state(dir: &Path, file: &str) -> Option<UploadState> {
    let text = std::fs::read(state_path(dir, file)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Adds to the recordings listed from `dir` what their uploads say, and those whose
/// local file went after their upload; newest first.
pub fn annotate(dir: &Path, files: &mut Vec<RecordingFile>) {
    for file in files.iter_mut() {
        if let Some(upload) = read_state(dir, &file.file) {
            file.uploaded = upload.uploaded;
            file.upload_error = upload.error;
        }
    }
    for (file, upload) in uploaded_only(dir) {
        if let Some((stream, started_at)) = parse_name(&file) {
            files.push(RecordingFile {
                file,
                stream,
                started_at,
                bytes: upload.bytes,
                finished: true,
                uploaded: upload.uploaded,
                upload_error: None,
                local: false,
            });
        }
    }
    files.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(a.file.cmp(&b.file)));
}

/// The state files whose recording is gone from `dir`: `(file, state)`, the state `None`
/// where it cannot be read.
pub(super) fn without_recording(dir: &Path) -> Vec<(String, Option<UploadState>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let file = name.strip_suffix(STATE_SUFFIX)?;
            parse_name(file)?;
            (!dir.join(file).exists()).then(|| (file.to_string(), read_state(dir, file)))
        })
        .collect()
}

/// The recordings that have only an upload left (their local file deleted after it):
/// `(file, state)`.
pub(super) fn uploaded_only(dir: &Path) -> Vec<(String, UploadState)> {
    without_recording(dir)
        .into_iter()
        .filter_map(|(file, state)| Some((file, state.filter(|s| s.uploaded.is_some())?)))
        .collect()
}

/// The uploads whose recording went before they were complete (deleted by hand or by a
/// retention job): `(file, state)`. Their multipart uploads are aborted and their state
/// files removed, so that neither piles up. Also removes the partial state files that a
/// process killed while writing one left.
pub(super) fn orphans(dir: &Path) -> Vec<(String, UploadState)> {
    let partial = format!("{STATE_SUFFIX}.new");
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(&partial))
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    without_recording(dir)
        .into_iter()
        .map(|(file, state)| (file, state.unwrap_or_default()))
        .filter(|(_, state)| state.uploaded.is_none())
        .collect()
}

pub(super) fn write_state(dir: &Path, file: &str, state: &UploadState) -> std::io::Result<()> {
    let path = state_path(dir, file);
    let temporary = path.with_extension("json.new");
    std::fs::write(&temporary, serde_json::to_vec_pretty(state)?)?;
    std::fs::rename(temporary, path)
}
