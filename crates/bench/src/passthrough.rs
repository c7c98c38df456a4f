//! `passthrough`: H.264 publishers passed through (`transcode.mode = "auto"`) against
//! the same publishers transcoded (`"always"`), at each size, in one run. First the
//! receive-only cost (publishers received, depayloaded and parsed, no output at all),
//! then a sweep of each: capacity by frame rate and within the delay target, cores and
//! RSS per stream.

use crate::cli::*;
use crate::load::*;
use crate::steps::*;
use crate::system::*;
use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::sync::Arc;

/// Publishers in the receive-only step.
const RECEIVE_ONLY_PUBLISHERS: usize = 16;

fn line(step: &Step) -> String {
    format!(
        "{:>5} {:>7.2} {:>8.4} {:>6.1}MB {:>8.1} {:>8.1} {:>6}/{}/{} ms {:>6.2} cores",
        step.publishers,
        step.cores,
        step.cores_per_stream,
        step.rss_per_stream_mib,
        step.min_output_fps,
        step.min_picture_fps,
        step.delay_p50_ms,
        step.delay_p95_ms,
        step.delay_p99_ms,
        step.generator_cores
    )
}

const HEADER: &str = "    N   cores  cores/N    RSS/N  min fps  new fps  delay 50/95/99  generator";

/// The step at the capacity found (the largest good one), for its per-stream figures.
fn at_capacity(sweep: &Sweep) -> Option<&Step> {
    sweep
        .steps
        .iter()
        .filter(|(s, good)| *good && s.publishers == sweep.capacity)
        .map(|(s, _)| s)
        .next()
}

pub async fn run(cli: &Options) -> Result<Value> {
    let tps = ticks_per_second();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "webrtc-gateway bench, H.264 pass-through against transcoding: {cpus} cores ({}), \
         x264 {} when transcoding, H.264 (constrained baseline) + Opus in, RTP out",
        cpu_model(),
        cli.preset
    );
    let mut sizes = Vec::new();
    for size in cli.sizes.split(',') {
        let (width, height) = size
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
            .context("sizes are WxH")?;
        let clip = Arc::new(clip(width, height, SourceCodec::H264)?);
        println!("\n{width}x{height}, H.264 publishers:");
        if let Some(n) = cli.only {
            // N publishers received only, then passed through to RTP: the cost of
            // passing through against receiving, at the same load (and a step to
            // profile the gateway in).
            let mut steps = Vec::new();
            for (name, rtp) in [("received only", false), ("passed through", true)] {
                let settings = GatewaySettings {
                    passthrough: true,
                    rtp,
                    hls: rtp && cli.hls,
                    record: Record::Off,
                };
                let step = run_step(cli, (width, height), settings, n, &clip, tps).await?;
                println!("{name}:\n{HEADER}\n{}", line(&step));
                steps.push(step);
            }
            println!(
                "a passed-through stream costs {:.2}x a stream received only, at {n} publishers",
                steps[1].cores_per_stream / steps[0].cores_per_stream
            );
            return Ok(json!({"received_only": steps[0], "passed_through": steps[1]}));
        }
        let receive_only = GatewaySettings {
            passthrough: true,
            rtp: false,
            hls: false,
            record: Record::Off,
        };
        let n = RECEIVE_ONLY_PUBLISHERS.min(cli.max_passthrough);
        let received = run_step(cli, (width, height), receive_only, n, &clip, tps).await?;
        println!(
            "received only (ICE, DTLS, SRTP, RTCP, NACK, jitter buffer, depayloader and parser; \
             no output), {n} publishers: {:.4} cores and {:.1} MB each",
            received.cores_per_stream, received.rss_per_stream_mib
        );

        let mut sweeps = Vec::new();
        for (name, passthrough, max) in [
            ("passed through", true, cli.max_passthrough),
            ("transcoded", false, cli.max_streams),
        ] {
            println!("{name}:\n{HEADER}");
            let settings = GatewaySettings {
                passthrough,
                rtp: true,
                hls: false,
                record: Record::Off,
            };
            let result = sweep(cli, (width, height), settings, &clip, max, tps, &line).await?;
            sweeps.push((name, result));
        }
        let (passed, transcoded) = (&sweeps[0].1, &sweeps[1].1);
        let per_stream = |s: &Sweep| at_capacity(s).map(|step| step.cores_per_stream);
        let passed_cores = per_stream(passed).unwrap_or(f64::NAN);
        println!(
            "capacity at {width}x{height} (every stream at 95% of {FPS} fps or more; within a \
             delay p99 of {MAX_DELAY_P99_MS} ms): passed through {} ({}), transcoded {} ({}): \
             {:.1}x ({:.1}x within the delay target); a passed-through stream costs {:.4} cores, \
             {:.2}x its receive-only cost; a transcoded one {:.3}",
            passed.capacity,
            passed.delay_held,
            transcoded.capacity,
            transcoded.delay_held,
            passed.capacity as f64 / transcoded.capacity.max(1) as f64,
            passed.delay_held as f64 / transcoded.delay_held.max(1) as f64,
            passed_cores,
            passed_cores / received.cores_per_stream,
            per_stream(transcoded).unwrap_or(f64::NAN),
        );
        sizes.push(json!({
            "width": width, "height": height,
            "receive_only": received,
            "passthrough": {
                "capacity": passed.capacity, "capacity_delay_held": passed.delay_held,
                "steps": passed.steps.iter().map(|(s, good)| json!({"step": s, "good": good})).collect::<Vec<_>>(),
            },
            "transcoded": {
                "capacity": transcoded.capacity, "capacity_delay_held": transcoded.delay_held,
                "steps": transcoded.steps.iter().map(|(s, good)| json!({"step": s, "good": good})).collect::<Vec<_>>(),
            },
            "capacity_ratio": passed.capacity as f64 / transcoded.capacity.max(1) as f64,
            "passthrough_cores_over_receive_only": passed_cores / received.cores_per_stream,
        }));
    }
    Ok(json!({
        "machine": {"cpus": cpus, "model": cpu_model()},
        "source": "videotestsrc pattern=ball, H.264 (x264enc veryfast, constrained baseline, 800 kbit/s, a key frame every 2 s) + Opus 440 Hz",
        "preset": cli.preset, "encoder_threads": cli.encoder_threads,
        "sizes": sizes,
    }))
}
