//! Pipeline templates: the gst-launch descriptions in `pipelines/`, their placeholders,
//! and the startup check that each parses and has the named elements it promises.

use crate::config::{RecordFormat, RtpConfig, TranscodeConfig};
use crate::media::error::PipelineError;
use crate::media::spec::{
    AudioInput, HlsSpec, OutputSpec, RecordSpec, StreamSpec, VideoCodec, VideoInput,
};
use gstreamer as gst;
use gstreamer::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The element names the code looks up: the templates' interface. Every one is checked
/// at startup, in the template that must provide it.
pub mod names {
    pub const VIDEO_IN: &str = "video_in";
    pub const VIDEO_JITTER: &str = "video_jitter";
    pub const VIDEO_DEPAY: &str = "video_depay";
    pub const VIDEO_IN_PARSE: &str = "video_in_parse";
    pub const VIDEO_DECODER: &str = "video_decoder";
    pub const VIDEO_PARSE: &str = "video_parse";
    pub const VIDEO_ENCODED: &str = "video_encoded";
    pub const AUDIO_IN: &str = "audio_in";
    pub const AUDIO_JITTER: &str = "audio_jitter";
    pub const AUDIO_DEPAY: &str = "audio_depay";
    pub const AUDIO_ENCODED: &str = "audio_encoded";
    pub const AUDIO_AAC: &str = "audio_aac";
    pub const RTPBIN: &str = "rtpbin";
    pub const VIDEO_PAY: &str = "video_pay";
    pub const AUDIO_PAY: &str = "audio_pay";
    pub const VIDEO_RTP_OUT: &str = "video_rtp_out";
    pub const VIDEO_RTCP_OUT: &str = "video_rtcp_out";
    pub const AUDIO_RTP_OUT: &str = "audio_rtp_out";
    pub const AUDIO_RTCP_OUT: &str = "audio_rtcp_out";
    pub const HLS_MUX: &str = "hls_mux";
    pub const HLS_SINK: &str = "hls_sink";
    pub const HLS_VIDEO_QUEUE: &str = "hls_video_queue";
    pub const HLS_AUDIO_QUEUE: &str = "hls_audio_queue";
    pub const RECORD_MUX: &str = "record_mux";
    pub const RECORD_SINK: &str = "record_sink";
    pub const RECORD_VIDEO_QUEUE: &str = "record_video_queue";
    pub const RECORD_AUDIO_QUEUE: &str = "record_audio_queue";
    /// Elements of a file output are named with its prefix, so that an error is traced
    /// to the output it belongs to.
    pub const HLS_PREFIX: &str = "hls_";
    pub const RECORD_PREFIX: &str = "record_";
}

use names::*;

/// A template file and the element names other code relies on.
struct TemplateSpec {
    file: &'static str,
    names: &'static [&'static str],
}

const VIDEO: TemplateSpec = TemplateSpec {
    file: "video.pipeline",
    names: &[
        VIDEO_IN,
        VIDEO_JITTER,
        VIDEO_DEPAY,
        VIDEO_IN_PARSE,
        VIDEO_DECODER,
        VIDEO_PARSE,
        VIDEO_ENCODED,
    ],
};
const VIDEO_PASSTHROUGH: TemplateSpec = TemplateSpec {
    file: "video_passthrough.pipeline",
    names: &[
        VIDEO_IN,
        VIDEO_JITTER,
        VIDEO_DEPAY,
        VIDEO_IN_PARSE,
        VIDEO_PARSE,
        VIDEO_ENCODED,
    ],
};
const AUDIO: TemplateSpec = TemplateSpec {
    file: "audio.pipeline",
    names: &[AUDIO_IN, AUDIO_JITTER, AUDIO_DEPAY, AUDIO_ENCODED],
};
const AAC: TemplateSpec = TemplateSpec {
    file: "aac.pipeline",
    names: &[AUDIO_AAC],
};
const RTP: TemplateSpec = TemplateSpec {
    file: "rtp.pipeline",
    names: &[
        RTPBIN,
        VIDEO_PAY,
        AUDIO_PAY,
        VIDEO_RTP_OUT,
        VIDEO_RTCP_OUT,
        AUDIO_RTP_OUT,
        AUDIO_RTCP_OUT,
    ],
};
const HLS_NAMES: &[&str] = &[HLS_MUX, HLS_SINK, HLS_VIDEO_QUEUE, HLS_AUDIO_QUEUE];
const HLS: TemplateSpec = TemplateSpec {
    file: "hls.pipeline",
    names: HLS_NAMES,
};
const HLS_FMP4: TemplateSpec = TemplateSpec {
    file: "hls_fmp4.pipeline",
    names: HLS_NAMES,
};
const RECORD_NAMES: &[&str] = &[
    RECORD_MUX,
    RECORD_SINK,
    RECORD_VIDEO_QUEUE,
    RECORD_AUDIO_QUEUE,
];
const RECORD_MP4: TemplateSpec = TemplateSpec {
    file: "record_mp4.pipeline",
    names: RECORD_NAMES,
};
const RECORD_MKV: TemplateSpec = TemplateSpec {
    file: "record_mkv.pipeline",
    names: RECORD_NAMES,
};
const RECORD_TS: TemplateSpec = TemplateSpec {
    file: "record_ts.pipeline",
    names: RECORD_NAMES,
};

const ALL: [&TemplateSpec; 10] = [
    &VIDEO,
    &VIDEO_PASSTHROUGH,
    &AUDIO,
    &AAC,
    &RTP,
    &HLS,
    &HLS_FMP4,
    &RECORD_MP4,
    &RECORD_MKV,
    &RECORD_TS,
];

fn hls_template(hls: &HlsSpec) -> &'static TemplateSpec {
    if hls.fmp4 { &HLS_FMP4 } else { &HLS }
}

fn record_template(format: RecordFormat) -> &'static TemplateSpec {
    match format {
        RecordFormat::Mp4 => &RECORD_MP4,
        RecordFormat::Mkv => &RECORD_MKV,
        RecordFormat::Ts => &RECORD_TS,
    }
}

fn video_template(spec: &StreamSpec) -> &'static TemplateSpec {
    if spec.video_passthrough {
        &VIDEO_PASSTHROUGH
    } else {
        &VIDEO
    }
}

/// The spec used to check the templates at startup: every track and every output,
/// MPEG-TS HLS with the Matroska recording, fMP4 HLS (with parts with MP4) otherwise.
fn check_spec(codec: VideoCodec, passthrough: bool, format: RecordFormat) -> StreamSpec {
    StreamSpec {
        video_passthrough: passthrough,
        name: crate::name::StreamName::new("check").expect("a name"),
        max_input: (3840, 2160),
        slot: 0,
        video: Some(VideoInput {
            codec,
            payload_type: 96,
            clock_rate: 90000,
        }),
        audio: Some(AudioInput { payload_type: 111 }),
        outputs: OutputSpec {
            rtp: true,
            hls: Some(HlsSpec {
                location: "/nonexistent/segment%05d.ts".into(),
                start_index: 0,
                segment_ns: 2_000_000_000,
                fmp4: format != RecordFormat::Mkv,
                part_ns: (format == RecordFormat::Mp4).then_some(500_000_000),
            }),
            record: Some(RecordSpec {
                path: "/nonexistent/check.mp4".into(),
                format,
            }),
        },
    }
}

/// The Debian package that ships a GStreamer element, for error messages.
pub fn debian_package(element: &str) -> Option<&'static str> {
    Some(match element {
        "x264enc" => "gstreamer1.0-plugins-ugly",
        "avdec_h264" | "avenc_aac" => "gstreamer1.0-libav",
        "h264parse" | "mpegtsmux" | "hlssink2" | "opusparse" => "gstreamer1.0-plugins-bad",
        "appsrc" | "appsink" | "videoconvert" | "videoscale" | "videorate" | "opusdec"
        | "opusenc" | "audioconvert" | "audioresample" | "audiorate" => "gstreamer1.0-plugins-base",
        "vp8dec" | "vp8enc" | "rtpbin" | "rtpjitterbuffer" | "rtpvp8depay" | "rtph264depay"
        | "rtph264pay" | "rtpopusdepay" | "rtpopuspay" | "udpsink" | "udpsrc" | "mp4mux"
        | "qtmux" | "matroskamux" | "splitmuxsink" => "gstreamer1.0-plugins-good",
        "tee" | "queue" | "capsfilter" | "fakesink" | "identity" => "libgstreamer1.0-0",
        _ => return None,
    })
}

/// The loaded templates, checked once at startup.
#[derive(Debug, Clone)]
pub struct Templates {
    dir: PathBuf,
    text: BTreeMap<&'static str, String>,
}

impl Templates {
    /// Loads every template from `dir` and checks that a full pipeline built from them
    /// parses and carries every promised element name.
    pub fn load(
        dir: &Path,
        transcode: &TranscodeConfig,
        rtp: &RtpConfig,
    ) -> Result<Templates, PipelineError> {
        let mut text = BTreeMap::new();
        for spec in ALL {
            let path = dir.join(spec.file);
            let body =
                std::fs::read_to_string(&path).map_err(|source| PipelineError::ReadTemplate {
                    path: path.clone(),
                    source,
                })?;
            text.insert(spec.file, body);
        }
        let templates = Templates {
            dir: dir.to_owned(),
            text,
        };
        templates.check(transcode, rtp)?;
        Ok(templates)
    }

    fn check(&self, transcode: &TranscodeConfig, rtp: &RtpConfig) -> Result<(), PipelineError> {
        for (codec, passthrough, format) in [
            (VideoCodec::Vp8, false, RecordFormat::Mp4),
            (VideoCodec::H264, false, RecordFormat::Mkv),
            (VideoCodec::Vp8, false, RecordFormat::Ts),
            (VideoCodec::H264, true, RecordFormat::Mp4),
            (VideoCodec::H264, true, RecordFormat::Mkv),
        ] {
            let spec = check_spec(codec, passthrough, format);
            let pipeline = self.build(&spec, transcode, rtp)?;
            let record = spec.outputs.record.as_ref().expect("the check records");
            let bin = self.build_record(record, true, true)?;
            let has = |name: &str| pipeline.by_name(name).is_some() || bin.by_name(name).is_some();
            let hls = spec.outputs.hls.as_ref().expect("the check has HLS");
            for template in [
                video_template(&spec),
                &AUDIO,
                &AAC,
                &RTP,
                hls_template(hls),
                record_template(format),
            ] {
                for name in template.names {
                    if !has(name) {
                        return Err(PipelineError::MissingName {
                            template: self.dir.join(template.file),
                            name: name.to_string(),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Builds a recording bin; the caller gives it pads for its queues.
    pub fn build_record(
        &self,
        record: &RecordSpec,
        video: bool,
        audio: bool,
    ) -> Result<gst::Bin, PipelineError> {
        let template = record_template(record.format);
        let values = BTreeMap::from([("record_path", record.path.display().to_string())]);
        let description =
            render(&self.text[template.file], &values, video, audio).map_err(|placeholder| {
                PipelineError::UnknownPlaceholder {
                    template: self.dir.join(template.file),
                    placeholder,
                }
            })?;
        let mut context = gst::ParseContext::new();
        gst::parse::bin_from_description_full(
            &description,
            false,
            Some(&mut context),
            gst::ParseFlags::FATAL_ERRORS,
        )
        .map_err(|e| parse_error(&context, &e))?
        .downcast::<gst::Bin>()
        .map_err(|_| PipelineError::Parse("not a bin".into()))
    }

    /// Builds the description of one stream's pipeline.
    pub fn describe(
        &self,
        spec: &StreamSpec,
        transcode: &TranscodeConfig,
        rtp: &RtpConfig,
    ) -> Result<String, PipelineError> {
        let mut values: BTreeMap<&str, String> = BTreeMap::new();
        let ports = rtp.port_base + 4 * spec.slot;
        values.insert("rtp_host", rtp.host.to_string());
        values.insert("video_rtp_port", ports.to_string());
        values.insert("video_rtcp_port", (ports + 1).to_string());
        values.insert("audio_rtp_port", (ports + 2).to_string());
        values.insert("audio_rtcp_port", (ports + 3).to_string());
        values.insert("multicast_ttl", rtp.multicast_ttl.to_string());
        values.insert("jitter_buffer_ms", transcode.jitter_buffer_ms.to_string());
        values.insert("width", transcode.width.to_string());
        values.insert("height", transcode.height.to_string());
        values.insert("framerate", transcode.framerate.to_string());
        values.insert("x264_preset", transcode.x264_preset.name().to_string());
        values.insert("encoder_threads", transcode.encoder_threads.to_string());
        values.insert(
            "video_bitrate_kbps",
            transcode.video_bitrate_kbps.to_string(),
        );
        values.insert(
            "keyframe_interval_frames",
            (transcode.keyframe_interval_s * transcode.framerate).to_string(),
        );
        if let Some(video) = &spec.video {
            // The parser reads the picture size from the bitstream for the input check;
            // VP8 has no parser element (its key frames are read by the gateway).
            let (depay, parser, decoder, name) = match video.codec {
                VideoCodec::Vp8 => ("rtpvp8depay", "identity", "vp8dec", "VP8"),
                VideoCodec::H264 => ("rtph264depay", "h264parse", "avdec_h264", "H264"),
            };
            values.insert("video_depayloader", depay.into());
            values.insert("video_input_parser", parser.into());
            values.insert("video_decoder", decoder.into());
            values.insert("video_encoding_name", name.into());
            values.insert("video_payload_type", video.payload_type.to_string());
            values.insert("video_clock_rate", video.clock_rate.to_string());
        }
        if let Some(audio) = &spec.audio {
            values.insert("audio_payload_type", audio.payload_type.to_string());
        }
        let outputs: &OutputSpec = &spec.outputs;
        if let Some(hls) = &outputs.hls {
            values.insert("hls_location", hls.location.display().to_string());
            values.insert("hls_start_index", hls.start_index.to_string());
            values.insert("segment_ns", hls.segment_ns.to_string());
            values.insert(
                "hls_chunk_duration",
                hls.part_ns
                    .map(|ns| format!("chunk-duration={}", chunk_ns(ns)))
                    .unwrap_or_default(),
            );
        }

        let mut parts = Vec::new();
        if spec.video.is_some() {
            parts.push(video_template(spec));
        }
        if spec.audio.is_some() {
            parts.push(&AUDIO);
            // AAC for HLS, and for the recordings of transcoded streams; without them,
            // none is made (a transcoded stream's recording started later from the
            // control API then has video only). A passed-through stream records the
            // publisher's Opus as it records its H.264.
            let record_aac = outputs.record.is_some() && !spec.video_passthrough;
            if outputs.hls.is_some() || record_aac {
                parts.push(&AAC);
            }
        }
        if outputs.rtp {
            parts.push(&RTP);
        }
        if let Some(hls) = &outputs.hls {
            parts.push(hls_template(hls));
        }
        let mut description = String::new();
        for part in parts {
            let rendered = render(
                &self.text[part.file],
                &values,
                spec.video.is_some(),
                spec.audio.is_some(),
            )
            .map_err(|placeholder| PipelineError::UnknownPlaceholder {
                template: self.dir.join(part.file),
                placeholder,
            })?;
            description.push_str(&rendered);
            description.push('\n');
        }
        Ok(description)
    }

    /// Parses the description of one stream's pipeline into a pipeline.
    pub fn build(
        &self,
        spec: &StreamSpec,
        transcode: &TranscodeConfig,
        rtp: &RtpConfig,
    ) -> Result<gst::Pipeline, PipelineError> {
        let description = self.describe(spec, transcode, rtp)?;
        let mut context = gst::ParseContext::new();
        let parsed = gst::parse::launch_full(
            &description,
            Some(&mut context),
            gst::ParseFlags::FATAL_ERRORS,
        );
        match parsed {
            Ok(element) => element
                .downcast::<gst::Pipeline>()
                .map_err(|_| PipelineError::Parse("not a pipeline".into())),
            Err(error) => Err(parse_error(&context, &error)),
        }
    }
}

/// A missing element named with its Debian package, or the parser's message.
fn parse_error(context: &gst::ParseContext, error: &gstreamer::glib::Error) -> PipelineError {
    match context.missing_elements().first() {
        Some(element) => PipelineError::MissingElement {
            element: element.to_string(),
            package: debian_package(element)
                .map(|p| format!("install the Debian package {p}"))
                .unwrap_or_else(|| "no known Debian package ships it".into()),
        },
        None => PipelineError::Parse(error.message().to_string()),
    }
}

/// Drops comment lines, keeps `[video]` and `[audio]` lines only for streams with that
/// track and `[no-video]` lines only for streams without video, and fills
/// `{placeholders}`; an unknown one is an error.
fn render(
    template: &str,
    values: &BTreeMap<&str, String>,
    video: bool,
    audio: bool,
) -> Result<String, String> {
    let mut out = String::new();
    for line in template.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        let condition = [
            ("[video] ", video),
            ("[audio] ", audio),
            ("[no-video] ", !video),
        ]
        .into_iter()
        .find_map(|(prefix, keep)| line.strip_prefix(prefix).map(|rest| (rest, keep)));
        let line = match condition {
            Some((rest, true)) => rest,
            Some((_, false)) => continue,
            None => line,
        };
        let mut rest = line;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find('}')
                .ok_or_else(|| rest[start..].to_string())?;
            let key = &rest[start + 1..start + end];
            let value = values.get(key).ok_or_else(|| key.to_string())?;
            out.push_str(value);
            rest = &rest[start + end + 1..];
        }
        out.push_str(rest);
        out.push('\n');
    }
    Ok(out)
}

/// The low-latency variant's `isofmp4mux` chunk duration for parts of `part_ns`: half a
/// part, a millisecond short, so that a chunk ends on the picture that reaches half the
/// part (a chunk takes every picture that starts before its end) and two make a part.
/// Each chunk goes to the requests for the part in progress as soon as it is muxed; the
/// writer gathers them into parts. (A chunk per picture cost the muxer a wait of a second
/// whenever a picture came late, and streams fell behind on a busy machine.)
fn chunk_ns(part_ns: u64) -> u64 {
    (part_ns / 2).saturating_sub(1_000_000).max(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_fills_and_strips_comments() {
        let values = BTreeMap::from([("a", "1".to_string()), ("b", "two".to_string())]);
        assert_eq!(
            render("# note\nx={a} y={b}\n", &values, true, true).unwrap(),
            "x=1 y=two\n"
        );
        assert_eq!(render("x={c}", &values, true, true).unwrap_err(), "c");
        let tracks = "all\n[video] v={a}\n[audio] a={b}\n[no-video] n\n";
        assert_eq!(render(tracks, &values, true, false).unwrap(), "all\nv=1\n");
        assert_eq!(
            render(tracks, &values, false, true).unwrap(),
            "all\na=two\nn\n"
        );
    }

    #[test]
    fn packages_for_common_elements() {
        assert_eq!(debian_package("x264enc"), Some("gstreamer1.0-plugins-ugly"));
        assert_eq!(
            debian_package("rtpvp8depay"),
            Some("gstreamer1.0-plugins-good")
        );
        assert_eq!(debian_package("vp8dec"), Some("gstreamer1.0-plugins-good"));
        assert_eq!(
            debian_package("videoscale"),
            Some("gstreamer1.0-plugins-base")
        );
        assert_eq!(debian_package("avdec_h264"), Some("gstreamer1.0-libav"));
        assert_eq!(debian_package("nosuchelement"), None);
    }

    /// The templates as shipped, read without the startup check (which builds
    /// pipelines).
    fn shipped() -> Templates {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pipelines");
        let text = ALL
            .iter()
            .map(|spec| {
                let body = std::fs::read_to_string(dir.join(spec.file)).expect("a template");
                (spec.file, body)
            })
            .collect();
        Templates { dir, text }
    }

    #[test]
    fn aac_only_where_an_output_needs_it() {
        let templates = shipped();
        let describe = |passthrough: bool, hls: bool| {
            let mut spec = check_spec(VideoCodec::H264, passthrough, RecordFormat::Mp4);
            if !hls {
                spec.outputs.hls = None;
            }
            templates
                .describe(&spec, &TranscodeConfig::default(), &RtpConfig::default())
                .unwrap()
        };
        // Transcoded: the recording takes AAC.
        assert!(describe(false, false).contains("avenc_aac"));
        // Passed through: the recording takes the publisher's Opus; only HLS needs AAC.
        assert!(!describe(true, false).contains("avenc_aac"));
        assert!(describe(true, true).contains("avenc_aac"));
        // Opus reaches RTP untouched either way.
        assert!(describe(true, false).contains("rtpopuspay"));
        assert!(!describe(true, false).contains("opusenc"));
    }
}
