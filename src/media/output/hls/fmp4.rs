//! fMP4 (CMAF) segments from `isofmp4mux`: its initialisation section, and then, in
//! the low-latency variant, one chunk (`moof` + `mdat`) per part, a new fragment, and
//! so a new segment, at each key frame. Without parts each fragment is a segment.
//! The appsink's callbacks run on the stream's thread: each part is in the playlist
//! as soon as the muxer has it, and each segment file is written before it is listed.

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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
    pub low_latency: bool,
    /// Passed through, the segment duration: isofmp4mux asks for no key frame for the end
    /// of the fragment that follows a new initialisation section, so the writer does.
    pub boundary_after_header: Option<u64>,
    /// A new initialisation section came; the fragment after it has not started yet.
    pub header_pending: bool,
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
    pub fn attach(mut self, pipeline: &StreamPipeline) {
        let Some(sink) = pipeline
            .gst()
            .by_name(names::HLS_SINK)
            .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
        else {
            return;
        };
        let clock = pipeline.wall_clock_source();
        let events = pipeline.events();
        let live = self.live.clone();
        let eos_events = events.clone();
        let callbacks = gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if let Err(e) = self.on_sample(&sample, &|rt| clock(rt), &events) {
                    events.send(MediaEvent::OutputFailed {
                        output: FileOutput::Hls,
                        message: format!("cannot write an HLS segment: {e}"),
                    });
                    return Err(gst::FlowError::Error);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .eos(move |_| {
                if let Err(e) = close_open(&live) {
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
        let msn = self.live.read(|p| p.position().msn);
        if !self.low_latency {
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
        }
        // A new fragment completes the open segment: its file is written first.
        let open = self.live.read(|p| {
            p.segments()
                .last()
                .filter(|_| p.position().parts > 0)
                .cloned()
        });
        let mut next_msn = msn;
        let completes = chunk.starts_fragment && open.is_some();
        if let Some(open) = open.filter(|_| completes) {
            write_file(&self.live, &open.uri, &self.live.segment_bytes(&open))?;
            next_msn += 1;
        }
        let id = self.next_part.fetch_add(1, Ordering::Relaxed);
        let uri = format!("{}p{id}.m4s", self.prefix);
        let next = format!("{}p{}.m4s", self.prefix, id + 1);
        let start = chunk.starts_fragment.then(|| {
            (
                format!("{}{next_msn:05}.m4s", self.prefix),
                date,
                Some(self.init_uri.clone()),
            )
        });
        let part = Part {
            uri,
            duration: chunk.duration,
            independent: chunk.starts_fragment,
        };
        let (_, removed) = self
            .live
            .add_part(start, part, Bytes::from(chunk.bytes), next);
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
