//! The pad through which one track's RTP packets enter a stream's pipeline.

use crate::media::event::{MediaEvent, MediaEvents};
use crate::media::measure::Measurements;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_video as gst_video;
use std::sync::Arc;

/// Where one track's RTP packets enter the pipeline: a source pad of the gateway's own,
/// linked to the template's input element (`video_in`, `audio_in`) and pushed from the
/// track's receive task. There is no queue and no thread of its own: the jitter buffer
/// right after it takes each packet and is the one thread hop on the way in, as `udpsrc`
/// would be in a bare pipeline (benchmarked: an `appsrc` here cost a second hop per
/// packet). The jitter buffer only queues and never waits for the pipeline, so pushing
/// never blocks the receive task; when the pipeline falls behind, the jitter buffer
/// drops what is older than its latency. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MediaInput {
    inner: Arc<InputPad>,
}

#[derive(Debug)]
struct InputPad {
    pad: gst::Pad,
    /// The pipeline, whose clock stamps each packet's arrival.
    pipeline: gst::Pipeline,
    /// Serialises pushes and the end of the stream, as a pad needs.
    lock: std::sync::Mutex<()>,
    /// The video input notes when each picture arrived.
    measurements: Option<Arc<Measurements>>,
}

impl MediaInput {
    /// Links a new source pad to `element`'s sink pad, with `element`'s `caps`.
    pub(in crate::media) fn link(
        pipeline: &gst::Pipeline,
        element: &gst::Element,
        keyframe_requests: Option<MediaEvents>,
        measurements: Option<Arc<Measurements>>,
    ) -> Option<MediaInput> {
        let caps = element.property::<Option<gst::Caps>>("caps")?;
        let query_caps = caps.clone();
        let clock = pipeline.downgrade();
        let pad = gst::Pad::builder(gst::PadDirection::Src)
            .name(format!("{}_src", element.name()))
            .event_function(move |_, _, event| {
                // Only the video input reports key-frame requests: the HLS muxer's
                // requests for segment key units reach the audio input too. With
                // transcoding the encoder answers the muxers itself, and what arrives here
                // is the depayloader's (or decoder's) request on loss it cannot repair:
                // due at once. Without transcoding the muxers' requests for a key unit at
                // a running time arrive here too: due when that time comes.
                if let Some(events) = &keyframe_requests
                    && let Ok(request) = gst_video::UpstreamForceKeyUnitEvent::parse(&event)
                {
                    let now = clock.upgrade().and_then(|p| p.current_running_time());
                    let wait = match (request.running_time, now) {
                        (Some(at), Some(now)) if at > now => Some(at - now),
                        _ => None,
                    };
                    events.send(match wait {
                        Some(wait) => MediaEvent::KeyframeDue {
                            running_time_ns: request.running_time.map_or(0, |t| t.nseconds()),
                            wait: std::time::Duration::from_nanos(wait.nseconds()),
                        },
                        None => MediaEvent::KeyframeRequested,
                    });
                }
                true
            })
            .query_function(move |_, _, query| match query.view_mut() {
                gst::QueryViewMut::Latency(latency) => {
                    latency.set(true, gst::ClockTime::ZERO, gst::ClockTime::NONE);
                    true
                }
                gst::QueryViewMut::Caps(q) => {
                    q.set_result(&query_caps);
                    true
                }
                _ => false,
            })
            .build();
        pad.set_active(true).ok()?;
        pad.link(&element.static_pad("sink")?).ok()?;
        let stream_id = pad.create_stream_id(pipeline, Some(element.name().as_str()));
        for event in [
            gst::event::StreamStart::new(&stream_id),
            gst::event::Caps::new(&caps),
            gst::event::Segment::new(&gst::FormattedSegment::<gst::ClockTime>::new()),
        ] {
            // Sticky: kept on the pad and sent with the first packet.
            let _ = pad.push_event(event);
        }
        Some(MediaInput {
            inner: Arc::new(InputPad {
                pad,
                pipeline: pipeline.clone(),
                lock: std::sync::Mutex::new(()),
                measurements,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands one RTP packet to the pipeline, stamped with its arrival time. False once
    /// the pipeline no longer takes packets (it ended or is stopping).
    pub fn push<T: AsRef<[u8]> + Send + 'static>(&self, packet: T) -> bool {
        let now = self.inner.pipeline.current_running_time();
        if let (Some(measurements), Some(now)) = (&self.inner.measurements, now) {
            measurements.arrived(packet.as_ref(), now);
        }
        let mut buffer = gst::Buffer::from_slice(packet);
        if let Some(buffer) = buffer.get_mut() {
            buffer.set_pts(now);
        }
        let _lock = self.lock();
        self.inner.pad.push(buffer).is_ok()
    }

    /// Ends the input's stream.
    pub(in crate::media) fn finish(&self) {
        let _lock = self.lock();
        let _ = self.inner.pad.push_event(gst::event::Eos::new());
    }
}
