//! Small pad-probe tools the pipeline and the outputs share: the running time of a buffer,
//! and a one-shot report of the first buffer that passes a pad. A probe only reads the
//! buffer and sends an event; it takes no lock.

use crate::media::event::{MediaEvent, MediaEvents};
use gstreamer as gst;
use gstreamer::prelude::*;

/// The running time of a buffer arriving at `pad`.
pub fn running_time(pad: &gst::Pad, buffer: &gst::BufferRef) -> Option<gst::ClockTime> {
    pad.sticky_event::<gst::event::Segment>(0)?
        .segment()
        .downcast_ref::<gst::format::Time>()?
        .to_running_time(buffer.pts())
}

/// The picture size a caps event a probe sees declares (`width`, `height`).
pub fn caps_size(info: &gst::PadProbeInfo) -> Option<(u32, u32)> {
    let Some(gst::PadProbeData::Event(event)) = &info.data else {
        return None;
    };
    let gst::EventView::Caps(caps) = event.view() else {
        return None;
    };
    let s = caps.caps().structure(0)?;
    let side = |field: &str| u32::try_from(s.get::<i32>(field).ok()?).ok();
    Some((side("width")?, side("height")?))
}

/// The buffer a probe sees at `pad`, and its running time, when it carries one.
pub fn probed_buffer<'a>(
    pad: &gst::Pad,
    info: &'a gst::PadProbeInfo,
) -> Option<(&'a gst::BufferRef, gst::ClockTime)> {
    let Some(gst::PadProbeData::Buffer(buffer)) = &info.data else {
        return None;
    };
    Some((buffer.as_ref(), running_time(pad, buffer)?))
}

/// The pad `pad` of the pipeline's element named `element`, when it has both.
pub fn element_pad(pipeline: &gst::Pipeline, (element, pad): (&str, &str)) -> Option<gst::Pad> {
    pipeline.by_name(element).and_then(|e| e.static_pad(pad))
}

/// Reports the first buffer passing an element's pad for which `event` gives an event,
/// then removes itself.
pub fn on_first_buffer(
    pipeline: &gst::Pipeline,
    (element, pad): (&str, &str),
    events: MediaEvents,
    event: impl Fn(&gst::Pad, &gst::BufferRef) -> Option<MediaEvent> + Send + Sync + 'static,
) {
    let Some(pad) = element_pad(pipeline, (element, pad)) else {
        return;
    };
    // Payloaders push lists of packets; the first packet stands for the list.
    let kinds = gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST;
    pad.add_probe(kinds, move |pad, info| {
        let buffer = match &info.data {
            Some(gst::PadProbeData::Buffer(buffer)) => Some(buffer.as_ref()),
            Some(gst::PadProbeData::BufferList(list)) => list.get(0),
            _ => None,
        };
        let Some(buffer) = buffer else {
            return gst::PadProbeReturn::Ok;
        };
        match event(pad, buffer) {
            Some(event) => {
                events.send(event);
                gst::PadProbeReturn::Remove
            }
            None => gst::PadProbeReturn::Ok,
        }
    });
}
