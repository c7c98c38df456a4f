//! The baseline: the same media work in bare gst-launch pipelines.

use crate::cli::*;
use crate::system::*;
use anyhow::Result;
use std::process::Command;
use std::time::{Duration, Instant};

/// The same work in a bare gst-launch pipeline, fed plain VP8 and Opus RTP by a second
/// one: what a person would run by hand for one publisher. Video: jitter buffer,
/// depayload, decode, scale, rate, encode (the gateway's x264 settings), payload; audio:
/// jitter buffer, depayload, payload; both through rtpbin to udpsinks, as the gateway
/// sends them. With `audio` false, the video alone. `n` copies run side by side, as `n`
/// publishers would; the result is their CPU per copy.
pub fn bare_cores(
    width: u32,
    height: u32,
    cli: &Options,
    audio: bool,
    n: u16,
    tps: f64,
) -> Result<f64> {
    let offsets: Vec<u16> = (0..n).map(|k| 20 * k).collect();
    let bares = offsets
        .iter()
        .map(|offset| launch(&bare_description(width, height, cli, audio, *offset)))
        .collect::<Result<Vec<_>>>()?;
    let _source = launch(&source_description(width, height, audio, &offsets))?;
    let cpu = || -> Result<f64> { bares.iter().map(|b| cpu_seconds(pid(b)?, tps)).sum() };
    std::thread::sleep(Duration::from_secs(3));
    let before = cpu()?;
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(cli.seconds));
    Ok((cpu()? - before) / start.elapsed().as_secs_f64() / f64::from(n))
}

pub fn launch(description: &str) -> Result<Process> {
    let description = description.to_string();
    Ok(Process::new("gst-launch-1.0", move || {
        let mut command = Command::new("gst-launch-1.0");
        command.arg("-q").args(description.split_whitespace());
        command
    })
    .hint("gstreamer1.0-tools installs it")
    .spawn()?)
}

/// One bare pipeline, on ports shifted by `offset`.
pub fn bare_description(
    width: u32,
    height: u32,
    cli: &Options,
    audio: bool,
    offset: u16,
) -> String {
    let (bare_in, bare_out) = (bare_in_port() + offset, bare_out_port() + offset);
    let video_caps = "application/x-rtp,media=video,clock-rate=90000,encoding-name=VP8,payload=96";
    let audio_caps = "application/x-rtp,media=audio,clock-rate=48000,encoding-name=OPUS,payload=97";
    let mut bare = format!(
        "rtpbin name=b \
         udpsrc port={bare_in} caps={video_caps} ! rtpjitterbuffer latency={JITTER_BUFFER_MS} \
         ! rtpvp8depay ! vp8dec ! videoconvert ! videoscale ! videorate \
         ! video/x-raw,format=I420,width={width},height={height},pixel-aspect-ratio=1/1,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset={preset} bitrate={BITRATE_KBPS} key-int-max=60 \
           threads={threads} ! h264parse config-interval=-1 ! rtph264pay config-interval=-1 \
         ! b.send_rtp_sink_0 b.send_rtp_src_0 ! udpsink host=127.0.0.1 port={out} sync=false async=false \
         b.send_rtcp_src_0 ! udpsink host=127.0.0.1 port={rtcp} sync=false async=false",
        preset = cli.preset,
        threads = cli.encoder_threads,
        out = bare_out,
        rtcp = bare_out + 1,
    );
    if audio {
        bare += &format!(
            " udpsrc port={in} caps={audio_caps} ! rtpjitterbuffer latency={JITTER_BUFFER_MS} ! rtpopusdepay \
             ! rtpopuspay pt=97 ! b.send_rtp_sink_1 \
             b.send_rtp_src_1 ! udpsink host=127.0.0.1 port={out} sync=false async=false \
             b.send_rtcp_src_1 ! udpsink host=127.0.0.1 port={rtcp} sync=false async=false",
            in = bare_in + 2,
            out = bare_out + 2,
            rtcp = bare_out + 3,
        );
    }
    bare
}

/// The publishers of `bare_description`s at `offsets`: one live encoder sends the same
/// VP8 (and Opus) to every copy.
pub fn source_description(width: u32, height: u32, audio: bool, offsets: &[u16]) -> String {
    let clients = |port: u16| {
        offsets
            .iter()
            .map(|offset| format!("127.0.0.1:{}", port + offset))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut source = format!(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate=30/1 \
         ! vp8enc deadline=1 cpu-used=8 keyframe-max-dist=60 target-bitrate=800000 \
           error-resilient=partitions ! rtpvp8pay mtu=1200 pt=96 ! multiudpsink clients={}",
        clients(bare_in_port())
    );
    if audio {
        source += &format!(
            " audiotestsrc is-live=true samplesperbuffer=960 wave=sine freq=440 \
             ! audio/x-raw,rate=48000,channels=2 ! opusenc frame-size=20 ! rtpopuspay pt=97 \
             ! multiudpsink clients={}",
            clients(bare_in_port() + 2)
        );
    }
    source
}
