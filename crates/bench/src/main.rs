//! `webrtc-gateway-bench`: how many publishers this machine carries, how fast, at what
//! cost. It runs the release gateway beside it on loopback and drives it with N
//! synthetic publishers: webrtc-rs clients in this process sending VP8 and Opus that
//! were encoded once at setup from a GStreamer test source (`videotestsrc pattern=ball`,
//! a 440 Hz tone), so that the load generator itself costs little.
//!
//! For each size it measures a bare `gst-launch-1.0` pipeline doing the same media work
//! (video: depayload, decode, scale, rate, encode, payload; audio: depayload, payload;
//! both through rtpbin), 1, 2, 4 and 8 copies side by side, then sweeps 1, 2, 4, ...
//! publishers: the gateway's CPU and RSS (from /proc), every stream's output frame rate
//! (counting the RTP frames that arrive at its port), and the delay from a frame's
//! arrival to its H.264 leaving the encoder (p50/p95/p99, jitter buffer included). The
//! sweep narrows down on the last N where every stream keeps 95% of its input frame
//! rate, counted both at its RTP port and as frames made from new pictures (so that
//! copies filling gaps do not count); the most streams with a p99 delay within 150 ms
//! is reported beside it. It also times ICE connected to the first H.264
//! packet and to the first HLS playlist. Prints a table and writes JSON.
//!
//! That is the `startup` subcommand; each other measurement is a subcommand of its own
//! (`passthrough`, `abuse`, `latency`, `cache`, `upload`, `cluster`, `access`, `soak`,
//! `networks`), in its module. The servers beside the gateway (Varnish, Redis, HAProxy,
//! s3s-fs) come from the workspace's test kit, on free ports; coturn is started by
//! `networks`.

#![forbid(unsafe_code)]

mod abuse;
mod access;
mod bare;
mod cache;
mod cli;
mod cluster;
mod latency;
mod load;
mod networks;
mod passthrough;
mod soak;
mod steps;
mod system;
mod upload;

use crate::bare::*;
use crate::cli::*;
use crate::load::*;
use crate::steps::*;
use crate::system::*;
use anyhow::{Context, Result};
use clap::Parser;
use gstreamer as gst;
use serde_json::json;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let options = Options::of(&cli.run);
    gst::init()?;
    let report = match cli.run {
        Run::Startup(_) => startup_and_sweep(&options).await?,
        Run::Passthrough { .. } => passthrough::run(&options).await?,
        Run::Abuse => abuse::run().await?,
        Run::Latency { .. } => latency::run(&options).await?,
        Run::Cache { .. } => cache::run(&options).await?,
        Run::Upload(_) => upload::run(&options).await?,
        Run::Cluster { .. } => cluster::run(&options).await?,
        Run::Access { .. } => access::run(&options).await?,
        Run::Soak(ref args) => soak::run(args, &cli.json).await?,
        Run::Networks { .. } => networks::run(&options).await?,
    };
    write_report(&cli, &report)
}

/// `startup`: start-up times, then the sweep at each size against the bare pipeline.
async fn startup_and_sweep(cli: &Options) -> Result<serde_json::Value> {
    let tps = ticks_per_second();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut report = json!({
        "machine": {"cpus": cpus, "model": cpu_model()},
        "source": "videotestsrc pattern=ball, VP8 (vp8enc deadline=1 cpu-used=8, 800 kbit/s) + Opus 440 Hz",
        "preset": cli.preset, "encoder_threads": cli.encoder_threads, "video_bitrate_kbps": BITRATE_KBPS, "hls": cli.hls, "sizes": [],
    });
    println!(
        "webrtc-gateway bench: {cpus} cores ({}), x264 {}, VP8 + Opus in, RTP out{}",
        cpu_model(),
        cli.preset,
        if cli.hls { " and HLS" } else { "" }
    );

    for (index, size) in cli.sizes.split(',').enumerate() {
        let (width, height) = size
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
            .context("sizes are WxH")?;
        let clip = Arc::new(clip(width, height, SourceCodec::Vp8)?);
        if let Some(n) = cli.only {
            let settings = GatewaySettings {
                passthrough: false,
                rtp: true,
                hls: cli.hls,
                record: Record::Off,
            };
            let step = run_step(cli, (width, height), settings, n, &clip, tps).await?;
            println!("{}", serde_json::to_string_pretty(&step)?);
            return Ok(json!({"only": n, "width": width, "height": height, "step": step}));
        }
        // The bare pipeline side by side with itself 1, 2, 4 and 8 times: its cost per
        // copy falls as the machine gets busier, as the gateway's does.
        println!("\n{width}x{height}:");
        let bare_video = bare_cores(width, height, cli, false, 1, tps)?;
        let mut bares = Vec::new();
        for n in [1, 2, 4, 8] {
            bares.push((n as usize, bare_cores(width, height, cli, true, n, tps)?));
        }
        let bare_at = |n: usize| {
            bares
                .iter()
                .rev()
                .find(|(k, _)| *k <= n)
                .map_or(bares[0].1, |(_, cores)| *cores)
        };
        let bare = bares.iter().map(|(_, c)| *c).fold(f64::INFINITY, f64::min);
        let bare_limit = cpus as f64 / bare;
        println!(
            "bare gst-launch pipeline (video and audio), cores per copy with 1/2/4/8 copies: {}; \
             limit {bare_limit:.1} streams; its video alone, 1 copy: {bare_video:.3}",
            bares
                .iter()
                .map(|(_, c)| format!("{c:.3}"))
                .collect::<Vec<_>>()
                .join("/")
        );

        let mut startups = Vec::new();
        if index == 0 && cli.startups > 0 {
            let dir = tempfile::tempdir()?;
            let settings = GatewaySettings {
                passthrough: false,
                rtp: true,
                hls: true,
                record: Record::Off,
            };
            let gateway = start_gateway(width, height, cli, settings, dir.path())?;
            for run in 0..cli.startups {
                startups.push(
                    startup(&clip, run)
                        .await
                        .with_context(|| format!("start-up {run}"))?,
                );
            }
            drop(gateway);
            let rtp: Vec<f64> = startups.iter().map(|s| s.0).collect();
            let hls: Vec<f64> = startups.iter().map(|s| s.1).collect();
            println!(
                "ICE connected -> first H.264 RTP packet: p50 {:.0} ms, max {:.0} ms; -> first HLS playlist: p50 {:.0} ms, max {:.0} ms",
                percentile(&rtp, 0.5),
                percentile(&rtp, 1.0),
                percentile(&hls, 0.5),
                percentile(&hls, 1.0)
            );
        }

        println!(
            "{:>4} {:>7} {:>8} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>15} {:>10}",
            "N",
            "cores",
            "cores/N",
            "gw/bare",
            "gw/video",
            "RSS/N",
            "min fps",
            "mean fps",
            "new fps",
            "delay 50/95/99",
            "generator"
        );
        let settings = GatewaySettings {
            passthrough: false,
            rtp: true,
            hls: cli.hls,
            record: Record::Off,
        };
        let line = |step: &Step| {
            let n = step.publishers;
            format!(
                "{:>4} {:>7.2} {:>8.3} {:>9.2} {:>10.2} {:>6.1}MB {:>8.1} {:>8.1} {:>8.1} {:>6}/{}/{} ms {:>6.2} cores",
                n,
                step.cores,
                step.cores_per_stream,
                step.cores_per_stream / bare_at(n),
                step.cores_per_stream / bare_video,
                step.rss_per_stream_mib,
                step.min_output_fps,
                step.mean_output_fps,
                step.min_picture_fps,
                step.delay_p50_ms,
                step.delay_p95_ms,
                step.delay_p99_ms,
                step.generator_cores
            )
        };
        let Sweep {
            steps,
            capacity,
            delay_held,
        } = sweep(
            cli,
            (width, height),
            settings,
            &clip,
            cli.max_streams,
            tps,
            &line,
        )
        .await?;
        println!(
            "capacity at {width}x{height} (every stream at 95% of {FPS} fps or more, new pictures \
             and at its port): {capacity} publishers ({:.0}% of the bare limit); \
             of the steps tried, the most with delay p99 at most {MAX_DELAY_P99_MS} ms: {delay_held} ({:.0}%)",
            100.0 * capacity as f64 / bare_limit,
            100.0 * delay_held as f64 / bare_limit,
        );
        report["sizes"].as_array_mut().expect("an array").push(json!({
            "width": width, "height": height,
            "bare_cores_per_stream": bares.iter().map(|(n, c)| json!({"copies": n, "cores_per_copy": c})).collect::<Vec<_>>(),
            "bare_video_only_cores_per_stream": bare_video,
            "bare_limit": bare_limit,
            "startup_ms": startups.iter().map(|s| json!({"first_rtp": s.0, "first_playlist": s.1})).collect::<Vec<_>>(),
            "steps": steps.iter().map(|(s, good)| json!({"step": s, "good": good})).collect::<Vec<_>>(),
            "capacity": capacity, "capacity_delay_held": delay_held,
        }));
    }
    Ok(report)
}

fn write_report(cli: &Cli, report: &serde_json::Value) -> Result<()> {
    if let Some(parent) = cli.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&cli.json, serde_json::to_string_pretty(report)?)?;
    println!("\nJSON report: {}", cli.json.display());
    Ok(())
}
