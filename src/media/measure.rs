//! Measurements of the video path, for the statistics and the benchmark: H.264 frames
//! out of the encoder, those made from newly arrived pictures, and each picture's delay
//! from the arrival of its first RTP packet to its first encoded frame (percentiles).
//! The probes keep their own counters (atomics, and the short arrival lists under their
//! own locks); they touch no session state.

use crate::media::probe::{element_pad, running_time};
use gstreamer as gst;
use gstreamer::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What the probes count, read by the session's statistics.
#[derive(Debug)]
pub struct Measurements {
    frames_out: AtomicU64,
    pictures_out: AtomicU64,
    encoder_delay_ns: AtomicU64,
    /// Running time of the publisher's last key frame (u64::MAX before the first).
    last_key_frame_ns: AtomicU64,
    delays: DelayHistogram,
    arrivals: Arrivals,
}

impl Default for Measurements {
    fn default() -> Self {
        Self {
            frames_out: AtomicU64::default(),
            pictures_out: AtomicU64::default(),
            encoder_delay_ns: AtomicU64::default(),
            last_key_frame_ns: AtomicU64::new(u64::MAX),
            delays: DelayHistogram::default(),
            arrivals: Arrivals::default(),
        }
    }
}

impl Measurements {
    /// Installs the probes on `pipeline`'s `video_jitter`, `video_in_parse` and
    /// `video_parse`, when it has them.
    pub fn attach(pipeline: &gst::Pipeline) -> Arc<Self> {
        let measurements = Arc::new(Self::default());
        note_released_pictures(pipeline, measurements.clone());
        note_key_frames(pipeline, measurements.clone());
        count_encoded_frames(pipeline, measurements.clone());
        measurements
    }

    /// Notes the arrival of a video RTP packet at the running time `now`.
    pub fn arrived(&self, packet: &[u8], now: gst::ClockTime) {
        if let Some(rtp_timestamp) = rtp_timestamp(packet) {
            self.arrivals.arrive(rtp_timestamp, now);
        }
    }

    /// H.264 frames out of the encoder so far.
    pub fn frames_out(&self) -> u64 {
        self.frames_out.load(Ordering::Relaxed)
    }

    /// H.264 frames made from a newly arrived picture so far; `frames_out` also counts
    /// the copies that fill gaps to keep the frame rate.
    pub fn pictures_out(&self) -> u64 {
        self.pictures_out.load(Ordering::Relaxed)
    }

    /// How long the last encoded frame took from arrival to leaving the encoder.
    pub fn encoder_delay(&self) -> Duration {
        Duration::from_nanos(self.encoder_delay_ns.load(Ordering::Relaxed))
    }

    /// The running time of the publisher's last key frame, if any came.
    pub fn last_key_frame(&self) -> Option<u64> {
        Some(self.last_key_frame_ns.load(Ordering::Relaxed)).filter(|&t| t != u64::MAX)
    }

    /// Every encoded frame's delay from arrival to leaving the encoder.
    pub fn delays(&self) -> &DelayHistogram {
        &self.delays
    }
}

/// Delays of every encoded frame, in milliseconds, for percentiles.
#[derive(Debug)]
pub struct DelayHistogram {
    /// One bucket per millisecond; the last holds everything longer.
    buckets: Vec<AtomicU64>,
}

impl Default for DelayHistogram {
    fn default() -> Self {
        Self {
            buckets: (0..1001).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl DelayHistogram {
    fn record(&self, delay: Duration) {
        let ms = (delay.as_millis() as usize).min(self.buckets.len() - 1);
        self.buckets[ms].fetch_add(1, Ordering::Relaxed);
    }

    /// The delay (ms) below which `quantile` of the frames stayed, if any frame was seen.
    pub fn percentile(&self, quantile: f64) -> Option<u64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let wanted = (quantile * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        counts
            .iter()
            .position(|c| {
                seen += c;
                seen >= wanted
            })
            .map(|ms| ms as u64)
    }
}

/// Frames left out of the delay percentiles, at the start of a stream.
const STEADY_AFTER_FRAMES: u64 = 60;

/// Pictures remembered for matching encoded frames to their arrival (a few seconds).
const ARRIVALS_KEPT: usize = 256;

/// When each video picture arrived, matched by RTP timestamp: the input notes the
/// arrival of each RTP timestamp's first packet; the jitter buffer's output notes the
/// timestamp (running time) it gave that picture; an encoded frame's timestamp then
/// leads back to the RTP timestamp it was made from, and so to its arrival.
#[derive(Debug, Default)]
struct Arrivals {
    /// RTP timestamp and the running time its first packet arrived, oldest first.
    arrived: std::sync::Mutex<std::collections::VecDeque<(u32, gst::ClockTime)>>,
    /// Running time the jitter buffer gave a picture, and its RTP timestamp.
    released: std::sync::Mutex<std::collections::VecDeque<(gst::ClockTime, u32)>>,
}

impl Arrivals {
    fn note<T: PartialEq + Copy, U>(
        list: &std::sync::Mutex<std::collections::VecDeque<(T, U)>>,
        key: T,
        value: U,
    ) {
        let mut list = list.lock().unwrap_or_else(|e| e.into_inner());
        // A picture's later packets (and retransmissions) keep its first note.
        if list.iter().rev().take(8).any(|(k, _)| *k == key) {
            return;
        }
        if list.len() == ARRIVALS_KEPT {
            list.pop_front();
        }
        list.push_back((key, value));
    }

    fn arrive(&self, rtp_timestamp: u32, at: gst::ClockTime) {
        Self::note(&self.arrived, rtp_timestamp, at);
    }

    fn release(&self, at: gst::ClockTime, rtp_timestamp: u32) {
        Self::note(&self.released, at, rtp_timestamp);
    }

    /// The picture an encoded frame timestamped `at` was made from, as its RTP
    /// timestamp and arrival: the picture the jitter buffer released nearest to `at`
    /// (the frame-rate adapter puts the nearest picture on each point of its grid).
    fn arrival_of(&self, at: gst::ClockTime) -> Option<(u32, gst::ClockTime)> {
        let rtp_timestamp = {
            let released = self.released.lock().unwrap_or_else(|e| e.into_inner());
            released
                .iter()
                .rev()
                .take(64)
                .min_by_key(|(t, _)| t.nseconds().abs_diff(at.nseconds()))?
                .1
        };
        let arrived = self.arrived.lock().unwrap_or_else(|e| e.into_inner());
        arrived
            .iter()
            .rev()
            .find(|(ts, _)| *ts == rtp_timestamp)
            .map(|(_, at)| (rtp_timestamp, *at))
    }
}

/// The RTP timestamp of a packet, if it is one.
fn rtp_timestamp(packet: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(packet.get(4..8)?.try_into().ok()?))
}

/// Notes, at the jitter buffer's output, the running time each picture was given.
fn note_released_pictures(pipeline: &gst::Pipeline, measurements: Arc<Measurements>) {
    let Some(pad) = element_pad(pipeline, ("video_jitter", "src")) else {
        return;
    };
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data
            && let Some(at) = running_time(pad, buffer)
            && let Ok(map) = buffer.map_readable()
            && let Some(rtp_timestamp) = rtp_timestamp(&map)
        {
            measurements.arrivals.release(at, rtp_timestamp);
        }
        gst::PadProbeReturn::Ok
    });
}

/// Notes the running time of each key frame the publisher sent, as it leaves the input
/// parser (before any decoder).
fn note_key_frames(pipeline: &gst::Pipeline, measurements: Arc<Measurements>) {
    let Some(pad) = element_pad(pipeline, ("video_in_parse", "src")) else {
        return;
    };
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data
            && !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT)
            && let Some(at) = running_time(pad, buffer)
        {
            measurements
                .last_key_frame_ns
                .store(at.nseconds(), Ordering::Relaxed);
        }
        gst::PadProbeReturn::Ok
    });
}

/// Counts H.264 frames out of the encoder and keeps each one's delay since the packets
/// it was made from arrived. Copies the frame-rate adapter made of a picture (to fill a
/// gap) count as frames, but only a picture's first frame counts as its delay.
fn count_encoded_frames(pipeline: &gst::Pipeline, measurements: Arc<Measurements>) {
    let Some(parse) = pipeline.by_name("video_parse") else {
        return;
    };
    let Some(pad) = parse.static_pad("src") else {
        return;
    };
    // The RTP timestamp of the last frame's picture (u64::MAX before the first).
    let last_picture = AtomicU64::new(u64::MAX);
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let m = &measurements;
        let count = m.frames_out.fetch_add(1, Ordering::Relaxed);
        if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data
            && let Some(now) = pad.parent_element().and_then(|e| e.current_running_time())
            && let Some((picture, arrived)) =
                running_time(pad, buffer).and_then(|at| m.arrivals.arrival_of(at))
            && last_picture.swap(u64::from(picture), Ordering::Relaxed) != u64::from(picture)
        {
            m.pictures_out.fetch_add(1, Ordering::Relaxed);
            let delay = now.saturating_sub(arrived);
            m.encoder_delay_ns
                .store(delay.nseconds(), Ordering::Relaxed);
            // The steady state: the first frames wait for the first key frame.
            if count >= STEADY_AFTER_FRAMES {
                m.delays.record(Duration::from_nanos(delay.nseconds()));
            }
        }
        gst::PadProbeReturn::Ok
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoded_frame_is_matched_to_the_arrival_of_the_nearest_released_picture() {
        let arrivals = Arrivals::default();
        let ms = gst::ClockTime::from_mseconds;
        assert_eq!(arrivals.arrival_of(ms(1000)), None);
        for k in 0..5u32 {
            let arrived = 1000 + 33 * u64::from(k);
            arrivals.arrive(k * 3000, ms(arrived));
            // A picture's second packet, and a retransmission, keep its first arrival.
            arrivals.arrive(k * 3000, ms(arrived + 5));
            arrivals.release(ms(arrived + 10), k * 3000);
        }
        // The frame-rate grid a little after picture 2's release, then a little before
        // picture 3's.
        assert_eq!(
            arrivals.arrival_of(ms(1066 + 10 + 4)),
            Some((6000, ms(1066)))
        );
        assert_eq!(
            arrivals.arrival_of(ms(1099 + 10 - 4)),
            Some((9000, ms(1099)))
        );
        // Only the newest pictures are kept.
        for k in 5..(5 + ARRIVALS_KEPT as u32) {
            arrivals.arrive(k * 3000, ms(1000 + 33 * u64::from(k)));
        }
        arrivals.release(ms(1076), 2 * 3000);
        assert_eq!(arrivals.arrival_of(ms(1076)), None);
    }
}
