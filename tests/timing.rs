//! Timing: key frames asked of the publisher only when needed, and audio in sync with
//! video in every output, measured on decoded frames and samples.

mod common;

use common::{Publisher, TestGateway};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The tests here measure time on decoded output: they run one at a time, so that none
/// measures the load of another on this machine.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static RUNNING: Mutex<()> = Mutex::new(());
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn a_clean_publication_asks_for_key_frames_only_at_start() {
    let _serial = one_at_a_time();
    // HLS on, 1 s segments: each segment's key unit must come from the encoder.
    let gateway =
        TestGateway::start("[hls]\nsegment_duration_s = 1\n[transcode]\nkeyframe_interval_s = 1");
    let mut publisher = Publisher::start(&gateway, "clean", &[]);
    publisher.wait_for("live", Duration::from_secs(30));
    let live = Instant::now();
    let stats = || gateway.stream("clean").expect("the stream is listed")["stats"].clone();
    // 20 s of a clean publication: at least 15 one-second segments made.
    let segments = common::eventually(Duration::from_secs(90), || {
        let stats = stats();
        let segments = stats["hls_segments"].as_u64().unwrap_or(0);
        (live.elapsed() >= Duration::from_secs(20) && segments >= 15).then_some(segments)
    })
    .expect("15 HLS segments within 90 s");
    let plis = stats()["plis_sent"].as_u64().unwrap();
    eprintln!(
        "{plis} key-frame requests in {:?}, {segments} segments",
        live.elapsed()
    );
    assert!(
        plis <= 2,
        "{plis} key-frame requests over a clean link in {:?} ({segments} segments)",
        live.elapsed()
    );
}

/// Writes a 20 s Matroska source in which a white flash (3 frames) and a 1 kHz beep
/// (100 ms) start together at every whole second: audio and video in sync by making.
fn sync_source(dir: &Path) -> PathBuf {
    let path = dir.join("sync.mkv");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("color=c=black:s=320x240:r=30:d=20,drawbox=c=white:t=fill:enable='lt(mod(t\\,1)\\,0.1)'")
        .args(["-f", "lavfi", "-i"])
        .arg("sine=f=1000:r=48000:samples_per_frame=480:d=20,volume='if(lt(mod(t\\,1)\\,0.1)\\,1\\,0)':eval=frame")
        .args(["-ac", "2", "-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj420p"])
        .args(["-c:a", "pcm_s16le"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    path
}

/// How late the audio is against the video in a decoded file, in ms (negative: early):
/// the median over its flashes of the time from a flash's first frame to the start of
/// the beep nearest to it. Panics with fewer than `min_pairs` flashes paired.
fn audio_offset_ms(input: &str, min_pairs: usize) -> f64 {
    let output = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-protocol_whitelist",
            "file,http,tcp,udp,rtp",
        ])
        .args(["-i", input])
        .args(["-vf", "blackdetect=d=0.02:pix_th=0.5"])
        .args(["-af", "silencedetect=n=-30dB:d=0.05"])
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    let times = |key: &str| -> Vec<f64> {
        text.split(key)
            .skip(1)
            .filter_map(|rest| {
                rest.trim_start()
                    .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    };
    let (flashes, beeps) = (times("black_end:"), times("silence_end:"));
    let mut offsets: Vec<f64> = flashes
        .iter()
        .filter_map(|flash| {
            beeps
                .iter()
                .map(|beep| beep - flash)
                .filter(|d| d.abs() < 0.5)
                .min_by(|a, b| a.abs().total_cmp(&b.abs()))
        })
        .map(|seconds| seconds * 1000.0)
        .collect();
    assert!(
        offsets.len() >= min_pairs,
        "{input}: {} flashes, {} beeps, {} paired",
        flashes.len(),
        beeps.len(),
        offsets.len()
    );
    offsets.sort_by(f64::total_cmp);
    offsets[offsets.len() / 2]
}

/// EBU R37: audio at most 40 ms early and 60 ms late.
fn assert_in_sync(what: &str, offset_ms: f64) {
    eprintln!("{what}: audio {offset_ms:+.0} ms against video");
    assert!(
        (-40.0..=60.0).contains(&offset_ms),
        "{what}: audio {offset_ms:+.0} ms against video"
    );
}

/// Publishes the sync source `publications` times under one name (with `args` for the
/// publisher) and measures every output: RTP through the SDP file, the recording in
/// `format` of each publication, and HLS in `variant` (the first publication's, before
/// any discontinuity).
fn lip_sync_in_every_output(outputs: (&str, &str), rtp: bool, args: &[&str], publications: usize) {
    lip_sync_with("", outputs, rtp, args, publications);
}

/// [`lip_sync_in_every_output`] with `extra` configuration.
fn lip_sync_with(
    extra: &str,
    (format, variant): (&str, &str),
    rtp: bool,
    args: &[&str],
    publications: usize,
) {
    let records = tempfile::tempdir().unwrap();
    let gateway = TestGateway::start(&format!(
        "[hls]\nplaylist_length = 15\nvariant = \"{variant}\"\n\
         [record]\nenabled = true\nformat = \"{format}\"\ndir = \"{}\"\n{extra}",
        records.path().display()
    ));
    let source = sync_source(gateway.dir.path());
    // The measure itself: the source is in sync to the sample.
    assert!(audio_offset_ms(source.to_str().unwrap(), 15).abs() < 1.0);
    let mut measured = Vec::new();
    for run in 0..publications {
        let mut publisher = Publisher::start(
            &gateway,
            "sync",
            &[
                &["--source", source.to_str().unwrap(), "--duration-s", "17"],
                args,
            ]
            .concat(),
        );
        publisher.wait_for("live", Duration::from_secs(30));
        if rtp {
            let captured = gateway.dir.path().join(format!("rtp{run}.mkv"));
            let status = Command::new("ffmpeg")
                .args(["-v", "error", "-y"])
                .args(["-protocol_whitelist", "file,http,tcp,udp,rtp"])
                .args(["-i", &gateway.url("/streams/sync/stream.sdp")])
                .args(["-t", "10", "-c", "copy"])
                .arg(&captured)
                .status()
                .unwrap();
            assert!(status.success());
            assert_in_sync(
                &format!("RTP, publication {run}"),
                audio_offset_ms(captured.to_str().unwrap(), 5),
            );
        }
        publisher.wait_for("ended", Duration::from_secs(40));
        let recording = common::eventually(Duration::from_secs(10), || {
            std::fs::read_dir(records.path())
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == format) && !measured.contains(p))
        })
        .expect("a recording");
        assert_in_sync(
            &format!("{format} recording, publication {run}"),
            audio_offset_ms(recording.to_str().unwrap(), 12),
        );
        measured.push(recording);
        if run == 0 {
            assert_in_sync(
                &format!("HLS ({variant})"),
                audio_offset_ms(&gateway.url("/streams/sync/stream.m3u8"), 10),
            );
        }
    }
}

#[test]
fn lip_sync_in_rtp_hls_and_mp4_recordings() {
    let _serial = one_at_a_time();
    lip_sync_in_every_output(("mp4", "lowlatency"), true, &[], 1);
}

#[test]
fn lip_sync_in_every_output_when_h264_passes_through() {
    let _serial = one_at_a_time();
    lip_sync_with(
        "[transcode]\nmode = \"auto\"",
        ("mp4", "lowlatency"),
        true,
        &["--codec", "h264", "--keyframes-on-request"],
        1,
    );
}

#[test]
fn lip_sync_in_mp4_recordings_when_audio_starts_late() {
    let _serial = one_at_a_time();
    lip_sync_in_every_output(
        ("mp4", "lowlatency"),
        false,
        &["--audio-delay-ms", "1500"],
        1,
    );
}

#[test]
fn lip_sync_under_loss_and_after_a_restart() {
    let _serial = one_at_a_time();
    let lossy = ["--loss-percent", "5", "--jitter-ms", "30"];
    lip_sync_in_every_output(("mp4", "lowlatency"), true, &lossy, 2);
}

#[test]
fn lip_sync_in_mkv_recordings_and_fmp4_hls() {
    let _serial = one_at_a_time();
    lip_sync_in_every_output(("mkv", "fmp4"), false, &[], 1);
}

#[test]
fn lip_sync_in_ts_recordings_and_mpegts_hls() {
    let _serial = one_at_a_time();
    lip_sync_in_every_output(("ts", "mpegts"), false, &[], 1);
}

/// Seconds of frozen picture in `seconds` of a stream's RTP output, decoded by ffmpeg
/// from its SDP file; and the frames decoded.
fn frozen_seconds(gateway: &TestGateway, stream: &str, seconds: u32) -> (f64, usize) {
    let sdp = gateway.url(&format!("/streams/{stream}/stream.sdp"));
    common::players::frozen_seconds(Command::new("ffmpeg"), &sdp, seconds)
}

/// A lossy publisher beside a clean one, in one gateway: the frozen time of each in
/// 15 s of RTP output.
fn freezes_under_loss(loss_percent: u32, jitter_ms: u32, rtx: bool, max_frozen: f64) {
    let gateway = TestGateway::start("");
    let mut clean = Publisher::start(&gateway, "clean", &[]);
    let (loss, jitter) = (loss_percent.to_string(), jitter_ms.to_string());
    let mut args = vec!["--loss-percent", &loss, "--jitter-ms", &jitter];
    if rtx {
        args.push("--rtx");
    }
    let mut lossy = Publisher::start(&gateway, "lossy", &args);
    clean.wait_for("live", Duration::from_secs(30));
    lossy.wait_for("live", Duration::from_secs(30));
    // The clean stream is the control: when it froze too, the machine was too busy for
    // the measurement to say anything of the loss, and it is made again (three tries).
    let measure = || {
        std::thread::scope(|scope| {
            let clean = scope.spawn(|| frozen_seconds(&gateway, "clean", 15));
            let lossy = frozen_seconds(&gateway, "lossy", 15);
            (clean.join().unwrap(), lossy)
        })
    };
    let mut run = measure();
    for _ in 1..3 {
        if run.0.0 <= 0.2 {
            break;
        }
        eprintln!("the clean stream froze {:.2} s: measuring again", run.0.0);
        run = measure();
    }
    let ((clean_frozen, clean_frames), (lossy_frozen, lossy_frames)) = run;
    let stats = gateway.stream("lossy").expect("the lossy stream goes on")["stats"].clone();
    if rtx {
        // Negotiated: the publisher then retransmits only on the RTX stream, so the
        // frozen time below holds only if the gateway takes those as repairs.
        assert!(
            gateway
                .log()
                .contains("retransmissions on their own stream"),
            "the gateway did not take RTX"
        );
    }
    eprintln!(
        "{loss_percent}% loss, {jitter_ms} ms jitter, RTX {rtx}: {lossy_frozen:.2} s frozen in 15 s \
         ({lossy_frames} frames; clean beside it: {clean_frozen:.2} s, {clean_frames} frames); \
         NACKs {}, PLIs {}, jitter buffer lost {}",
        stats["nacks_sent"], stats["plis_sent"], stats["jitter_buffer_lost"]
    );
    assert!(
        lossy_frames > 300 && clean_frames > 300,
        "{lossy_frames}, {clean_frames}"
    );
    assert!(
        clean_frozen <= 0.2,
        "the clean stream froze {clean_frozen:.2} s"
    );
    assert!(
        lossy_frozen <= max_frozen,
        "{loss_percent}% loss, {jitter_ms} ms jitter: {lossy_frozen:.2} s frozen"
    );
    assert!(!gateway.stream_ended("lossy") && !gateway.stream_ended("clean"));
}

#[test]
fn five_percent_loss_freezes_at_most_a_fifth_of_a_second() {
    let _serial = one_at_a_time();
    freezes_under_loss(5, 30, false, 0.2);
}

#[test]
fn ten_percent_loss_freezes_at_most_half_a_second() {
    let _serial = one_at_a_time();
    freezes_under_loss(10, 50, false, 0.5);
}

#[test]
fn ten_percent_loss_with_rtx_freezes_at_most_half_a_second() {
    let _serial = one_at_a_time();
    freezes_under_loss(10, 50, true, 0.5);
}

#[test]
fn a_publisher_that_changes_resolution_keeps_a_continuous_output() {
    let _serial = one_at_a_time();
    let gateway = TestGateway::start("");
    // 640x360, then 1280x720 five seconds in, as a browser whose estimate grew.
    let mut publisher = Publisher::start(
        &gateway,
        "switch",
        &["--resize", "1280x720", "--resize-after-s", "5"],
    );
    publisher.wait_for("live", Duration::from_secs(30));
    let (frozen, frames) = frozen_seconds(&gateway, "switch", 12);
    let stats = gateway.stream("switch").expect("the stream goes on")["stats"].clone();
    eprintln!(
        "resolution switch: {frozen:.2} s frozen in 12 s ({frames} frames), PLIs {}",
        stats["plis_sent"]
    );
    assert!(frames > 250, "{frames} frames");
    assert!(frozen <= 0.2, "{frozen:.2} s frozen over the switch");
    let video = &gateway.stream("switch").unwrap()["video"];
    assert_eq!(
        (
            video["input_width"].as_u64(),
            video["input_height"].as_u64()
        ),
        (Some(1280), Some(720)),
        "{video}"
    );
    assert!(
        gateway.log().contains("width=640 height=360"),
        "the stream did not start at 640x360"
    );
}
