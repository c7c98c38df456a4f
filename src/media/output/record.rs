//! The recording output: a file per recording in `record.dir`, named
//! `<stream>-<UTC start>.<ext>`; the branch that writes it, attached to a running
//! pipeline and cut off again (its file finished by the end of the stream); a recording's
//! life as one [`RecordingState`] (started, rolled over to a new file when the picture
//! size changes, stopped with its answer); which file names are ours, and the listing of a
//! recording directory.

use crate::config::RecordFormat;
use crate::media::error::PipelineError;
use crate::media::event::{MediaEvent, MediaEvents};
use crate::media::pipeline::StreamPipeline;
use crate::media::probe::{caps_size, probed_buffer};
use crate::media::spec::{FileOutput, RecordSpec};
use crate::media::templates::names;
use crate::name::StreamName;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_video as gst_video;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Why a recording could not start.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("cannot write in {}: {source}", dir.display())]
    Create {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the recording: {0}")]
    Attach(#[from] PipelineError),
    /// The recording's output failed while it was written (a full disk).
    #[error("the recording failed: {0}")]
    Failed(String),
}

/// One recording: its file, and while it is written, its branch in the pipeline.
#[derive(Debug)]
pub struct Recording {
    file: String,
    path: PathBuf,
    format: RecordFormat,
    branch: Option<Branch>,
    /// When its branch was attached: the start of its writing.
    attached_at: Option<Instant>,
}

/// A recording bin in a running pipeline, and the tee pads that feed it.
#[derive(Debug)]
struct Branch {
    bin: gst::Bin,
    links: Vec<(gst::Pad, gst::Pad)>,
}

impl Recording {
    /// Creates a new, empty recording file of `stream` in `dir`.
    pub fn create(
        dir: &Path,
        stream: &StreamName,
        format: RecordFormat,
    ) -> Result<Self, RecordingError> {
        let path = new_path(dir, stream, SystemTime::now(), format.extension());
        std::fs::create_dir_all(dir)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .create_new(true)
                    .write(true)
                    .open(&path)
            })
            .map_err(|source| RecordingError::Create {
                dir: dir.to_owned(),
                source,
            })?;
        tracing::info!(file = %path.display(), "recording");
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self {
            file,
            path,
            format,
            branch: None,
            attached_at: None,
        })
    }

    /// The file's name in `record.dir`.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// What the pipeline is built with.
    pub fn spec(&self) -> RecordSpec {
        RecordSpec {
            path: self.path.clone(),
            format: self.format,
        }
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// How long it has been written, from its attachment; `None` before.
    pub fn duration(&self) -> Option<Duration> {
        self.attached_at.map(|at| at.elapsed())
    }

    pub fn is_attached(&self) -> bool {
        self.branch.is_some()
    }

    /// Adds the recording branch, fed by the stream's H.264 and its AAC (transcoded) or
    /// the publisher's Opus (passed through).
    pub fn attach(&mut self, pipeline: &StreamPipeline) -> Result<(), PipelineError> {
        if self.branch.is_some() {
            return Err(PipelineError::Start("already recording".into()));
        }
        let start = |e: &dyn std::fmt::Display| PipelineError::Start(e.to_string());
        let (video, audio) = pipeline.tracks();
        // A passed-through stream records the publisher's Opus; a transcoded one the
        // AAC that its HLS and recordings share.
        let audio_tee = if pipeline.video_passthrough() {
            names::AUDIO_ENCODED
        } else {
            names::AUDIO_AAC
        };
        let audio = audio && pipeline.element(audio_tee).is_some();
        let bin = pipeline.build_record(&self.spec(), video, audio)?;
        bin.set_property("name", "record_bin");
        pipeline.gst().add(&bin).map_err(|e| start(&e))?;
        pipeline.clear_failed(FileOutput::Recording);
        let mut pads = Vec::new();
        for (tee, queue) in [
            (names::VIDEO_ENCODED, names::RECORD_VIDEO_QUEUE),
            (audio_tee, names::RECORD_AUDIO_QUEUE),
        ] {
            let (Some(tee), Some(queue)) = (pipeline.element(tee), bin.by_name(queue)) else {
                continue;
            };
            pipeline.drop_when_failed(&bin, queue.name().as_str(), FileOutput::Recording);
            let target = queue.static_pad("sink").expect("a queue has a sink pad");
            let bin_pad = gst::GhostPad::builder_with_target(&target)
                .map_err(|e| start(&e))?
                .name(queue.name().as_str())
                .build();
            bin.add_pad(&bin_pad).map_err(|e| start(&e))?;
            pads.push((tee, bin_pad.upcast::<gst::Pad>()));
        }
        if self.format == RecordFormat::Mp4 && video {
            align_track_starts(&bin, audio);
        }
        if self.format != RecordFormat::Ts && video {
            end_on_size_change(&bin, pipeline.events());
        }
        // The branch plays before it is linked: a running tee never pushes into a pad
        // that is not active yet (its flushing answer would stop the stream's thread).
        bin.sync_state_with_parent().map_err(|e| start(&e))?;
        let mut links = Vec::new();
        for (tee, bin_pad) in pads {
            let tee_pad = tee
                .request_pad_simple("src_%u")
                .ok_or_else(|| PipelineError::Start("the tee gives no pad".into()))?;
            tee_pad
                .link(&bin_pad)
                .map_err(|e| PipelineError::Start(format!("cannot link the recording: {e:?}")))?;
            links.push((tee_pad, bin_pad));
        }
        self.branch = Some(Branch { bin, links });
        self.attached_at = Some(Instant::now());
        Ok(())
    }

    /// Cuts the branch off and ends its file; the pipeline reports
    /// [`crate::media::MediaEvent::OutputFinished`] once the file is complete, and then
    /// [`Recording::detach`] takes the branch out. False when it was not attached.
    pub fn stop(&self) -> bool {
        let Some(branch) = &self.branch else {
            return false;
        };
        for (tee_pad, bin_pad) in &branch.links {
            let _ = tee_pad.unlink(bin_pad);
            if let Some(tee) = tee_pad.parent_element() {
                tee.release_request_pad(tee_pad);
            }
            bin_pad.send_event(gst::event::Eos::new());
        }
        true
    }

    /// Takes a stopped branch out of the pipeline; the file stays.
    pub fn detach(mut self, pipeline: &StreamPipeline) -> String {
        if let Some(branch) = self.branch.take() {
            let _ = branch.bin.set_state(gst::State::Null);
            let _ = pipeline.gst().remove(&branch.bin);
        }
        self.file
    }

    /// A recording that could not start: its empty file goes away.
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A stream's recording through its life: none, one being written, or one whose file is
/// being finished, after which whoever stopped it is answered, or it goes on in a new
/// file (the picture size changed). `T` is the recording ([`Recording`]), `R` whoever
/// waits for a stop's answer. Plain data: the session does what each transition says
/// (cuts a branch off, detaches it, answers).
#[derive(Debug, Default)]
pub enum RecordingState<T, R> {
    #[default]
    Idle,
    Recording(T),
    Stopping {
        recording: T,
        then: AfterStop<R>,
    },
}

/// What follows once a stopping recording's file is complete.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterStop<R> {
    /// Answer whoever asked for the stop.
    Answer(R),
    /// Go on in a new file.
    RollOver,
}

impl<T, R> RecordingState<T, R> {
    /// No recording is being written (or finished): a new one may start.
    pub fn is_idle(&self) -> bool {
        matches!(self, Self::Idle)
    }

    /// The recording being written or finished.
    pub fn current(&self) -> Option<&T> {
        match self {
            Self::Idle => None,
            Self::Recording(recording) | Self::Stopping { recording, .. } => Some(recording),
        }
    }

    /// A recording starts; refused (and handed back) while another is not done.
    pub fn start(&mut self, recording: T) -> Result<(), T> {
        if !self.is_idle() {
            return Err(recording);
        }
        *self = Self::Recording(recording);
        Ok(())
    }

    /// Someone asks the recording to stop. The recording to cut off now, `None` when it is
    /// already being finished (for a new file: it is not continued, and this stop is
    /// answered instead); the reply back when nothing is recorded (or a stop is already
    /// under way).
    pub fn stop(&mut self, reply: R) -> Result<Option<&T>, R> {
        match std::mem::take(self) {
            Self::Recording(recording) => {
                *self = Self::Stopping {
                    recording,
                    then: AfterStop::Answer(reply),
                };
                Ok(self.current())
            }
            Self::Stopping {
                recording,
                then: AfterStop::RollOver,
            } => {
                *self = Self::Stopping {
                    recording,
                    then: AfterStop::Answer(reply),
                };
                Ok(None)
            }
            other => {
                *self = other;
                Err(reply)
            }
        }
    }

    /// The picture size changed: the recording to cut off, to go on in a new file; `None`
    /// when none is being written.
    pub fn size_changed(&mut self) -> Option<&T> {
        match std::mem::take(self) {
            Self::Recording(recording) => {
                *self = Self::Stopping {
                    recording,
                    then: AfterStop::RollOver,
                };
                self.current()
            }
            other => {
                *self = other;
                None
            }
        }
    }

    /// A recording's file is complete. A stopping one is done: it is handed back with what
    /// follows, and a new one may start. One still recording was finished by the end of
    /// the stream and stays.
    pub fn finished(&mut self) -> Option<(T, AfterStop<R>)> {
        match std::mem::take(self) {
            Self::Stopping { recording, then } => Some((recording, then)),
            other => {
                *self = other;
                None
            }
        }
    }

    /// The recording's output failed: it is handed back to be cut off, with whoever waits
    /// for its stop's answer, and a new one may start.
    pub fn failed(&mut self) -> Option<(T, Option<R>)> {
        match std::mem::take(self) {
            Self::Idle => None,
            Self::Recording(recording) => Some((recording, None)),
            Self::Stopping { recording, then } => {
                let reply = match then {
                    AfterStop::Answer(reply) => Some(reply),
                    AfterStop::RollOver => None,
                };
                Some((recording, reply))
            }
        }
    }

    /// Takes the recording out, whatever its state (one that could not start).
    pub fn take(&mut self) -> Option<T> {
        match std::mem::take(self) {
            Self::Idle => None,
            Self::Recording(recording) | Self::Stopping { recording, .. } => Some(recording),
        }
    }
}

/// MP4 and Matroska describe the picture size once, at the start of the file: when the
/// pictures change size (a publisher's own H.264, passed through, as a browser raises its
/// resolution), nothing of the new size reaches this file, which is reported so that it
/// is finished and the recording goes on in a new one. MPEG-TS carries each size in
/// band and records on.
fn end_on_size_change(bin: &gst::Bin, events: MediaEvents) {
    // After the queue: the probes that align the tracks' starts are on its sink pad.
    let Some(pad) = bin
        .by_name(names::RECORD_VIDEO_QUEUE)
        .and_then(|q| q.static_pad("src"))
    else {
        return;
    };
    // The first size, and whether it has changed since.
    let state = Mutex::new((None, false));
    let kinds = gst::PadProbeType::EVENT_DOWNSTREAM
        | gst::PadProbeType::BUFFER
        | gst::PadProbeType::BUFFER_LIST;
    pad.add_probe(kinds, move |_, info| {
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        let (size, changed) = &mut *state;
        if let Some(new) = caps_size(info) {
            if size.is_some_and(|old| old != new) && !*changed {
                *changed = true;
                events.send(MediaEvent::RecordingSizeChanged);
            }
            size.get_or_insert(new);
        }
        let is_eos = matches!(
            &info.data,
            Some(gst::PadProbeData::Event(e)) if e.type_() == gst::EventType::Eos
        );
        if *changed && !is_eos {
            gst::PadProbeReturn::Drop
        } else {
            gst::PadProbeReturn::Ok
        }
    });
}

/// Where a recording's tracks start, shared by the probes on its two queues.
#[derive(Debug, Default)]
struct TrackStarts {
    /// The running time of the first audio buffer seen.
    audio: Option<gst::ClockTime>,
    /// The running time of the key frame the recording starts with.
    video: Option<gst::ClockTime>,
    /// When video first came, for how long it may wait for audio.
    video_waiting_since: Option<gst::ClockTime>,
    /// A key frame has been asked of the encoder for the audio's start.
    key_unit_requested: bool,
}

/// How long either track waits for the other to start before it is recorded alone.
const START_WAIT: gst::ClockTime = gst::ClockTime::from_seconds(2);

/// Makes a fragmented MP4 recording's tracks start together. mp4mux starts every track
/// of a fragmented file at zero, whatever its first timestamp, so a track that begins
/// later is shifted onto the other (hundreds of ms). The recording therefore starts
/// with a key frame, at or after the audio's first buffer (the encoder is asked for one
/// when audio starts after video), and audio before that key frame is dropped: the
/// tracks then start within one audio frame (21 ms) of each other.
///
/// Audio reaches the recording well before the video of the same moment (the video is
/// decoded and encoded again), so the audio is held in its queue, whose own thread
/// waits here, until the key frame is known; only then is it cut.
fn align_track_starts(bin: &gst::Bin, audio: bool) {
    let starts = Arc::new((Mutex::new(TrackStarts::default()), Condvar::new()));
    let pad = |queue: &str, pad: &str| bin.by_name(queue).and_then(|q| q.static_pad(pad));
    if let Some(pad) = pad(names::RECORD_VIDEO_QUEUE, "sink") {
        let starts = starts.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let Some((buffer, at)) = probed_buffer(pad, info) else {
                return gst::PadProbeReturn::Ok;
            };
            let (lock, started) = &*starts;
            let mut starts = lock.lock().unwrap_or_else(|e| e.into_inner());
            if starts.video.is_some() {
                return gst::PadProbeReturn::Ok;
            }
            let since = *starts.video_waiting_since.get_or_insert(at);
            let audio_ready = match starts.audio {
                Some(audio_at) => at >= audio_at,
                None => !audio || at.saturating_sub(since) >= START_WAIT,
            };
            let key = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
            if audio_ready && key {
                starts.video = Some(at);
                started.notify_all();
                return gst::PadProbeReturn::Ok;
            }
            if audio_ready && !starts.key_unit_requested {
                starts.key_unit_requested = true;
                // Without all-headers: the parsers put the parameter sets before every
                // key frame already. Asked for all headers, the request reaches every
                // branch of the tee on its way back down; after a passed-through
                // change of picture size the HLS muxer then stopped making fragments
                // in about a third of the runs (none of eight without).
                let request = gst_video::UpstreamForceKeyUnitEvent::builder()
                    .all_headers(false)
                    .build();
                drop(starts);
                pad.push_event(request);
            }
            gst::PadProbeReturn::Drop
        });
    }
    if let Some(pad) = pad(names::RECORD_AUDIO_QUEUE, "src") {
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let Some((_, at)) = probed_buffer(pad, info) else {
                return gst::PadProbeReturn::Ok;
            };
            let (lock, started) = &*starts;
            let mut starts = lock.lock().unwrap_or_else(|e| e.into_inner());
            starts.audio.get_or_insert(at);
            // The queue's thread waits for the key frame, a bounded time.
            let deadline =
                std::time::Instant::now() + std::time::Duration::from_nanos(START_WAIT.nseconds());
            while starts.video.is_none() {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return gst::PadProbeReturn::Ok;
                }
                starts = started
                    .wait_timeout(starts, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            match starts.video {
                Some(video_at) if at < video_at => gst::PadProbeReturn::Drop,
                _ => gst::PadProbeReturn::Ok,
            }
        });
    }
}

const EXTENSIONS: [&str; 3] = ["mp4", "mkv", "ts"];

/// `20261121T101500Z` for a time.
pub fn compact_utc(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .replace(['-', ':'], "")
}

/// A free path for a new recording of `stream` started at `started`.
fn new_path(dir: &Path, stream: &StreamName, started: SystemTime, extension: &str) -> PathBuf {
    let stamp = compact_utc(started);
    let mut path = dir.join(format!("{stream}-{stamp}.{extension}"));
    let mut n = 2;
    while path.exists() {
        path = dir.join(format!("{stream}-{stamp}-{n}.{extension}"));
        n += 1;
    }
    path
}

/// A recording's stream and start (RFC 3339) from its file name, if the name is one of ours.
pub fn parse_name(file: &str) -> Option<(String, String)> {
    let (stem, extension) = file.rsplit_once('.')?;
    if !EXTENSIONS.contains(&extension) {
        return None;
    }
    // `<stream>-<stamp>` or `<stream>-<stamp>-<n>`.
    let stem = match stem.rsplit_once('-') {
        Some((head, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => stem,
    };
    let (stream, stamp) = stem.rsplit_once('-')?;
    if StreamName::new(stream).is_err() || !is_stamp(stamp) {
        return None;
    }
    let b = stamp.as_bytes();
    let s = |r: std::ops::Range<usize>| std::str::from_utf8(&b[r]).unwrap_or_default();
    let started = format!(
        "{}-{}-{}T{}:{}:{}Z",
        s(0..4),
        s(4..6),
        s(6..8),
        s(9..11),
        s(11..13),
        s(13..15)
    );
    Some((stream.to_string(), started))
}

fn is_stamp(stamp: &str) -> bool {
    let b = stamp.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

/// A recording as `GET /recordings` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordingFile {
    pub file: String,
    pub stream: String,
    pub started_at: String,
    pub bytes: u64,
    pub finished: bool,
    /// Its object's URL once uploaded and verified (`record.upload_url`).
    pub uploaded: Option<String>,
    /// Why its upload has not succeeded yet.
    pub upload_error: Option<String>,
    /// Whether the file is still on this node's disk (`record.keep_local = false`
    /// deletes it after its upload).
    pub local: bool,
}

/// The recordings in `dir`, newest first; `is_active` tells which are being written.
/// (`crate::upload::annotate` adds what their uploads say.)
pub fn list(dir: &Path, is_active: impl Fn(&str) -> bool) -> Vec<RecordingFile> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<RecordingFile> = entries
        .flatten()
        .filter_map(|entry| {
            let file = entry.file_name().into_string().ok()?;
            let (stream, started_at) = parse_name(&file)?;
            let metadata = entry.metadata().ok().filter(|m| m.is_file())?;
            Some(RecordingFile {
                finished: !is_active(&file),
                file,
                stream,
                started_at,
                bytes: metadata.len(),
                uploaded: None,
                upload_error: None,
                local: true,
            })
        })
        .collect();
    files.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(a.file.cmp(&b.file)));
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    type State = RecordingState<&'static str, u32>;

    #[test]
    fn a_recording_starts_stops_and_answers() {
        let mut state = State::default();
        assert_eq!(state.stop(1), Err(1), "nothing to stop");
        assert_eq!(state.finished(), None);
        assert_eq!(state.start("a.mp4"), Ok(()));
        assert_eq!(state.start("b.mp4"), Err("b.mp4"), "already recording");
        assert_eq!(state.current(), Some(&"a.mp4"));
        assert_eq!(state.stop(2), Ok(Some(&"a.mp4")), "cut off now");
        assert_eq!(state.stop(3), Err(3), "a stop is under way");
        assert_eq!(state.start("b.mp4"), Err("b.mp4"), "still being finished");
        assert_eq!(state.size_changed(), None);
        assert_eq!(state.finished(), Some(("a.mp4", AfterStop::Answer(2))));
        assert!(state.is_idle());
        assert_eq!(state.start("b.mp4"), Ok(()));
    }

    #[test]
    fn a_size_change_rolls_over_unless_a_stop_comes_first() {
        let mut state = State::default();
        assert_eq!(state.size_changed(), None, "nothing recorded");
        state.start("a.mp4").unwrap();
        assert_eq!(state.size_changed(), Some(&"a.mp4"));
        assert_eq!(state.size_changed(), None, "already being finished");
        assert_eq!(state.finished(), Some(("a.mp4", AfterStop::RollOver)));
        state.start("b.mp4").unwrap();
        // A stop while the file is finished for a new one: answered, no new file.
        assert_eq!(state.size_changed(), Some(&"b.mp4"));
        assert_eq!(state.stop(7), Ok(None), "already being cut off");
        assert_eq!(state.finished(), Some(("b.mp4", AfterStop::Answer(7))));
    }

    #[test]
    fn the_stream_end_finishes_a_recording_that_stays() {
        let mut state = State::default();
        state.start("a.mp4").unwrap();
        assert_eq!(state.finished(), None);
        assert_eq!(state.current(), Some(&"a.mp4"));
        assert_eq!(state.take(), Some("a.mp4"));
        assert!(state.is_idle());
    }

    #[test]
    fn a_failed_recording_answers_its_stop_and_leaves_room_for_a_new_one() {
        let mut state = State::default();
        assert_eq!(state.failed(), None, "nothing recorded");
        state.start("a.mp4").unwrap();
        assert_eq!(state.failed(), Some(("a.mp4", None)));
        assert!(state.is_idle());
        // Failed while a stop waits for the file: that stop is answered now.
        state.start("b.mp4").unwrap();
        state.stop(4).unwrap();
        assert_eq!(state.failed(), Some(("b.mp4", Some(4))));
        // Failed while rolling over to a new file: nobody waits.
        state.start("c.mp4").unwrap();
        state.size_changed();
        assert_eq!(state.failed(), Some(("c.mp4", None)));
        assert_eq!(state.start("d.mp4"), Ok(()));
    }

    #[test]
    fn names_round_trip() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_256_100);
        assert_eq!(compact_utc(t), "20261121T101500Z");
        let dir = tempfile::tempdir().unwrap();
        let stream = StreamName::new("cam-1").unwrap();
        let path = new_path(dir.path(), &stream, t, "mp4");
        assert_eq!(path.file_name().unwrap(), "cam-1-20261121T101500Z.mp4");
        std::fs::write(&path, b"x").unwrap();
        let second = new_path(dir.path(), &stream, t, "mp4");
        assert_eq!(second.file_name().unwrap(), "cam-1-20261121T101500Z-2.mp4");
        for name in ["cam-1-20261121T101500Z.mp4", "cam-1-20261121T101500Z-2.mp4"] {
            assert_eq!(
                parse_name(name),
                Some(("cam-1".into(), "2026-11-21T10:15:00Z".into()))
            );
        }
    }

    #[test]
    fn foreign_names_are_not_recordings() {
        for name in [
            "../etc/passwd",
            "cam1.mp4",
            "cam1-2026.mp4",
            "cam1-20261121T101500Z.exe",
            "a/b-20261121T101500Z.mp4",
            "-20261121T101500Z.mp4",
            "cam1-20261121X101500Z.mp4",
        ] {
            assert_eq!(parse_name(name), None, "{name}");
        }
    }

    #[test]
    fn listing_marks_the_active_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a-20261121T101500Z.mkv"), b"1234").unwrap();
        std::fs::write(dir.path().join("b-20261121T101600Z.ts"), b"12").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let list = list(dir.path(), |f| f.starts_with("b-"));
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].file, "b-20261121T101600Z.ts");
        assert!(!list[0].finished);
        assert_eq!((list[1].bytes, list[1].finished), (4, true));
    }
}
