//! fMP4 (CMAF) segments from `isofmp4mux`: its initialisation section, and then, in
//! the low-latency variant, chunks (`moof` + `mdat`) of half a part, gathered into parts
//! of the part duration, a new fragment, and so a new segment, at each key frame.
//! Without parts each fragment is a segment. The appsink's callbacks run on the stream's
//! thread: each chunk goes at once to the requests for the part it belongs to (the one
//! the playlist hints at), each part is in the playlist as soon as its last chunk is
//! there, and each segment file is written before it is listed.

use crate::hls::live::LiveHls;
use crate::hls::playlist::{Part, Playlist, Segment};
use crate::media::event::{MediaEvent, MediaEvents};
use crate::media::pipeline::StreamPipeline;
use crate::media::spec::FileOutput;
use crate::media::templates::names;
use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// What a sink's callbacks need of the output.
pub struct Fmp4Writer {
    pub live: Arc<LiveHls>,
    /// Names of this output's files start with it.
    pub prefix: String,
    /// This publisher's initialisation section, `<prefix>init<n>.mp4`; a later one (the
    /// publisher's picture size changed, passed through) is `<prefix>init<n>_<k>.mp4`.
    pub init_uri: String,
    /// Initialisation sections the muxer has made for this publisher.
    pub headers: u32,
    /// The number the next part's URI gets, over every publisher of this output.
    pub next_part: Arc<AtomicU64>,
    /// In the low-latency variant, the part target, seconds.
    pub part_target: Option<f64>,
    /// The part being made.
    pub part: Option<PartInProgress>,
    /// Passed through, the segment duration: isofmp4mux asks for no key frame for the end
    /// of the fragment that follows a new initialisation section, so the writer does.
    pub boundary_after_header: Option<u64>,
    /// A new initialisation section came; the fragment after it has not started yet.
    pub header_pending: bool,
}

/// A part whose chunks are coming: they go out as they come (see
/// [`LiveHls::add_piece`]); it is listed once complete.
pub struct PartInProgress {
    uri: String,
    id: u64,
    pieces: Vec<Bytes>,
    /// Seconds so far.
    duration: f64,
    /// It begins a fragment, and so a segment, dated `date`.
    starts_fragment: bool,
    date: SystemTime,
}

/// One chunk as the muxer hands it over.
struct Chunk {
    bytes: Vec<u8>,
    /// It begins a fragment (with a key frame, when there is video).
    starts_fragment: bool,
    running_time: Option<gst::ClockTime>,
    duration: f64,
}

impl Fmp4Writer {
    /// Hands the muxer's output to the writer, on the stream's thread.
    pub fn attach(self, pipeline: &StreamPipeline) {
        let Some(sink) = pipeline
            .gst()
            .by_name(names::HLS_SINK)
            .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
        else {
            return;
        };
        let clock = pipeline.wall_clock_source();
        let events = pipeline.events();
        let eos_events = events.clone();
        // The callbacks run one at a time on the stream's thread; the lock is never
        // contended.
        let writer = Arc::new(Mutex::new(self));
        let eos_writer = writer.clone();
        let callbacks = gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let mut writer = writer.lock().unwrap_or_else(|e| e.into_inner());
                if let Err(e) = writer.on_sample(&sample, &|rt| clock(rt), &events) {
                    events.send(MediaEvent::OutputFailed {
                        output: FileOutput::Hls,
                        message: format!("cannot write an HLS segment: {e}"),
                    });
                    return Err(gst::FlowError::Error);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .eos(move |_| {
                let mut writer = eos_writer.lock().unwrap_or_else(|e| e.into_inner());
                let finished = writer.finish_part();
                if let Err(e) = finished.and_then(|()| close_open(&writer.live)) {
                    eos_events.send(MediaEvent::OutputFailed {
                        output: FileOutput::Hls,
                        message: format!("cannot write the last HLS segment: {e}"),
                    });
                }
            })
            .build();
        sink.set_callbacks(callbacks);
    }

    fn on_sample(
        &mut self,
        sample: &gst::Sample,
        wall_clock: &dyn Fn(u64) -> SystemTime,
        events: &MediaEvents,
    ) -> std::io::Result<()> {
        let segment = sample
            .segment()
            .and_then(|s| s.downcast_ref::<gst::ClockTime>().cloned());
        let mut chunk: Option<Chunk> = None;
        let mut each = |buffer: &gst::BufferRef| -> std::io::Result<()> {
            let Ok(map) = buffer.map_readable() else {
                return Ok(());
            };
            let kind = map.get(4..8);
            if buffer.flags().contains(gst::BufferFlags::HEADER) && kind == Some(b"ftyp") {
                return self.new_header(&map);
            }
            if kind == Some(b"moof") || chunk.is_none() {
                if let Some(done) = chunk.take() {
                    self.add(done, wall_clock, events)?;
                }
                chunk = Some(Chunk {
                    bytes: Vec::with_capacity(64 * 1024),
                    starts_fragment: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                    running_time: segment
                        .as_ref()
                        .and_then(|s| s.to_running_time(buffer.pts())),
                    duration: buffer.duration().map_or(0.0, |d| d.nseconds() as f64 / 1e9),
                });
            }
            if let Some(chunk) = &mut chunk {
                chunk.bytes.extend_from_slice(&map);
            }
            Ok(())
        };
        if let Some(list) = sample.buffer_list() {
            for buffer in list.iter() {
                each(buffer)?;
            }
        } else if let Some(buffer) = sample.buffer() {
            each(buffer)?;
        }
        match chunk {
            Some(done) => self.add(done, wall_clock, events),
            None => Ok(()),
        }
    }

    /// The muxer made an initialisation section: the first, or a new one when the
    /// stream's caps changed (a publisher's new picture size, passed through). A new one
    /// gets a file of its own and the next segment comes after a discontinuity.
    fn new_header(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        // The part in progress belongs to the segment before the new section.
        self.finish_part()?;
        self.headers += 1;
        if self.headers > 1 {
            self.header_pending = true;
            let first = self
                .init_uri
                .split_once('_')
                .map_or(self.init_uri.as_str(), |(f, _)| f);
            let stem = first.trim_end_matches(".mp4").to_string();
            self.init_uri = format!("{stem}_{}.mp4", self.headers);
            self.live.update(Playlist::discontinue);
        }
        write_file(&self.live, &self.init_uri, bytes)
    }

    /// Adds a chunk: as a part, or, without parts, as a whole segment.
    fn add(
        &mut self,
        chunk: Chunk,
        wall_clock: &dyn Fn(u64) -> SystemTime,
        events: &MediaEvents,
    ) -> std::io::Result<()> {
        if chunk.starts_fragment && std::mem::take(&mut self.header_pending) {
            self.ask_for_boundary(&chunk, wall_clock, events);
        }
        let date = chunk
            .running_time
            .map_or_else(SystemTime::now, |rt| wall_clock(rt.nseconds()));
        let Some(part_target) = self.part_target else {
            let msn = self.live.read(|p| p.position().msn);
            let uri = format!("{}{msn:05}.m4s", self.prefix);
            write_file(&self.live, &uri, &chunk.bytes)?;
            let removed = self.live.push(Segment {
                uri,
                duration: chunk.duration,
                date,
                discontinuity: false,
                map: Some(self.init_uri.clone()),
                parts: Vec::new(),
            });
            remove_files(&self.live, &removed);
            return super::write_media(&self.live);
        };
        // A new fragment starts a new part (and segment); so does a chunk when the one
        // before it filled the part.
        if chunk.starts_fragment {
            self.finish_part()?;
        }
        let piece_duration = chunk.duration;
        let part = self.part.get_or_insert_with(|| {
            let id = self.next_part.fetch_add(1, Ordering::Relaxed);
            PartInProgress {
                uri: format!("{}p{id}.m4s", self.prefix),
                id,
                pieces: Vec::new(),
                duration: 0.0,
                starts_fragment: chunk.starts_fragment,
                date,
            }
        });
        let piece = Bytes::from(chunk.bytes);
        self.live.add_piece(&part.uri, piece.clone());
        part.pieces.push(piece);
        part.duration += piece_duration;
        // Complete when another chunk like this one would pass the target: a part
        // never lasts longer than PART-TARGET.
        if part.duration + piece_duration > part_target + 0.0005 {
            self.finish_part()?;
        }
        Ok(())
    }

    /// Completes the part in progress: lists it (first writing the segment it
    /// completes, when it starts a new one).
    fn finish_part(&mut self) -> std::io::Result<()> {
        let Some(part) = self.part.take() else {
            return Ok(());
        };
        // A part that starts a fragment completes the open segment: its file is
        // written first.
        let open = self.live.read(|p| {
            p.segments()
                .last()
                .filter(|_| p.position().parts > 0)
                .cloned()
        });
        let msn = self.live.read(|p| p.position().msn);
        let mut next_msn = msn;
        let completes = part.starts_fragment && open.is_some();
        if let Some(open) = open.filter(|_| completes) {
            write_file(&self.live, &open.uri, &self.live.segment_bytes(&open))?;
            next_msn += 1;
        }
        let start = part.starts_fragment.then(|| {
            (
                format!("{}{next_msn:05}.m4s", self.prefix),
                part.date,
                Some(self.init_uri.clone()),
            )
        });
        let next = format!("{}p{}.m4s", self.prefix, part.id + 1);
        let bytes = Bytes::from(part.pieces.concat());
        let listed = Part {
            uri: part.uri,
            duration: part.duration,
            independent: part.starts_fragment,
        };
        let (_, removed) = self.live.add_part(start, listed, bytes, next);
        remove_files(&self.live, &removed);
        if completes {
            super::write_media(&self.live)?;
        }
        Ok(())
    }
}

impl Fmp4Writer {
    /// Passed through, asks for the key frame that ends the fragment after a new
    /// initialisation section, as isofmp4mux does for every other fragment.
    fn ask_for_boundary(
        &self,
        chunk: &Chunk,
        wall_clock: &dyn Fn(u64) -> SystemTime,
        events: &MediaEvents,
    ) {
        let (Some(segment_ns), Some(start)) = (self.boundary_after_header, chunk.running_time)
        else {
            return;
        };
        let end = start.nseconds() + segment_ns;
        let wait = wall_clock(end)
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        events.send(MediaEvent::KeyframeDue {
            running_time_ns: end,
            wait,
        });
    }
}

/// The stream ended: the open segment is complete.
fn close_open(live: &LiveHls) -> std::io::Result<()> {
    let open = live.read(|p| {
        p.segments()
            .last()
            .filter(|_| p.position().parts > 0)
            .cloned()
    });
    if let Some(open) = open {
        write_file(live, &open.uri, &live.segment_bytes(&open))?;
    }
    let (_, removed) = live.close_open();
    remove_files(live, &removed);
    super::write_media(live)
}

fn write_file(live: &LiveHls, uri: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(live.dir.join(uri), bytes)
}

fn remove_files(live: &LiveHls, segments: &[Segment]) {
    for segment in segments {
        let _ = std::fs::remove_file(live.dir.join(&segment.uri));
    }
}
