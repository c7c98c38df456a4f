//! One step of the sweep (N publishers, measured), start-up timing, percentiles.

use crate::cli::*;
use crate::load::*;
use crate::system::*;
use anyhow::{Result, bail};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub publishers: usize,
    pub cores: f64,
    pub cores_per_stream: f64,
    pub rss_mib: f64,
    pub rss_per_stream_mib: f64,
    /// Frames per second at the stream's RTP port (copies that fill gaps included).
    pub min_output_fps: f64,
    pub mean_output_fps: f64,
    /// Encoded frames per second made from newly arrived pictures (the gateway's
    /// `pictures_out`): the frame rate the rule holds to.
    pub min_picture_fps: f64,
    pub delay_p50_ms: u64,
    pub delay_p95_ms: u64,
    pub delay_p99_ms: u64,
    /// CPU of this process, the load generator, on the same machine.
    pub generator_cores: f64,
    /// With uploads: MiB a second uploaded while the streams were measured (a backlog
    /// of `BACKLOG_FILES` recordings from before, and parts of the new ones).
    pub upload_mib_per_s: Option<f64>,
    /// ... and how long from the start of the measurement until every recording (the
    /// backlog, and the streams' once they ended) was uploaded, at what rate overall.
    pub drain_s: Option<f64>,
    pub drain_mib_per_s: Option<f64>,
    /// Everything uploaded by the end.
    pub uploaded_mib: Option<f64>,
}

/// Recordings as a restart leaves them, to upload while the streams are measured:
/// random bytes (no store compresses them), dated in the past.
fn write_backlog(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut data = vec![0u8; BACKLOG_MIB * 1024 * 1024];
    for k in 0..BACKLOG_FILES {
        rand::fill(&mut data[..]);
        std::fs::write(dir.join(format!("backlog{k}-20260101T000000Z.mp4")), &data)?;
    }
    Ok(())
}

/// A counter of the gateway's `/metrics`.
async fn metric(name: &str) -> Result<f64> {
    let text = api("/metrics").await?;
    Ok(text
        .as_str()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0))
}

const UPLOAD_BYTES: &str = "webrtc_gateway_upload_bytes_total";
const UPLOADS_COMPLETED: &str = "webrtc_gateway_uploads_completed_total";

pub async fn run_step(
    cli: &Options,
    (width, height): (u32, u32),
    settings: GatewaySettings,
    n: usize,
    clip: &Arc<Clip>,
    tps: f64,
) -> Result<Step> {
    let dir = tempfile::tempdir()?;
    let gateway = start_gateway(width, height, cli, settings, dir.path())?;
    let pid = pid(&gateway)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = rss_mib(pid)?;
    let counters: Vec<FrameCounter> = (0..n)
        .map(|k| FrameCounter::listen(rtp_base() + 4 * k as u16))
        .collect::<Result<_>>()?;
    let mut publishers = Vec::new();
    for i in 0..n {
        publishers.push(publish(&format!("load{i}"), clip.clone()).await?);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    if settings.record == Record::Upload {
        let recordings = dir.path().join("recordings");
        tokio::task::spawn_blocking(move || write_backlog(&recordings)).await??;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let before: Vec<u64> = counters.iter().map(FrameCounter::count).collect();
    let pictures_before = pictures_out(&api("/api/streams").await?);
    let cpu_before = cpu_seconds(pid, tps)?;
    let own_before = cpu_seconds(std::process::id(), tps)?;
    let uploaded_before = metric(UPLOAD_BYTES).await?;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(cli.seconds)).await;
    let elapsed = start.elapsed().as_secs_f64();
    let cores = (cpu_seconds(pid, tps)? - cpu_before) / elapsed;
    let generator_cores = (cpu_seconds(std::process::id(), tps)? - own_before) / elapsed;
    let fps: Vec<f64> = counters
        .iter()
        .zip(&before)
        .map(|(c, b)| (c.count() - b) as f64 / elapsed)
        .collect();
    let uploaded_during = metric(UPLOAD_BYTES).await? - uploaded_before;
    let rss = rss_mib(pid)?;
    let streams = api("/api/streams").await?;
    let pictures_after = pictures_out(&streams);
    let min_picture_fps = (0..n)
        .map(|i| {
            let name = format!("load{i}");
            let count =
                |m: &std::collections::HashMap<String, u64>| m.get(&name).copied().unwrap_or(0);
            count(&pictures_after).saturating_sub(count(&pictures_before)) as f64 / elapsed
        })
        .fold(f64::INFINITY, f64::min);
    if cli.only.is_some() {
        for s in streams.as_array().into_iter().flatten() {
            eprintln!("{} {}", s["name"], s["stats"]);
        }
    }
    let worst = |key: &str| {
        streams
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["stats"][key].as_u64())
            .max()
            .unwrap_or(0)
    };
    let step = Step {
        publishers: n,
        cores,
        cores_per_stream: cores / n as f64,
        rss_mib: rss,
        rss_per_stream_mib: (rss - idle_rss) / n as f64,
        min_output_fps: fps.iter().cloned().fold(f64::INFINITY, f64::min),
        mean_output_fps: fps.iter().sum::<f64>() / n as f64,
        min_picture_fps,
        delay_p50_ms: worst("encoder_delay_p50_ms"),
        delay_p95_ms: worst("encoder_delay_p95_ms"),
        delay_p99_ms: worst("encoder_delay_p99_ms"),
        generator_cores,
        upload_mib_per_s: None,
        drain_s: None,
        drain_mib_per_s: None,
        uploaded_mib: None,
    };
    drop(publishers);
    let mut step = step;
    if settings.record == Record::Upload {
        const MIB: f64 = 1024.0 * 1024.0;
        step.upload_mib_per_s = Some(uploaded_during / MIB / elapsed);
        // Every recording ends; their last parts and first parts go up.
        let deadline = Instant::now() + Duration::from_secs(300);
        while metric(UPLOADS_COMPLETED).await? < (n + BACKLOG_FILES) as f64 {
            if Instant::now() > deadline {
                bail!("the recordings were not all uploaded within 300 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let drain = start.elapsed().as_secs_f64();
        step.drain_s = Some(drain);
        let total = metric(UPLOAD_BYTES).await?;
        step.drain_mib_per_s = Some((total - uploaded_before) / MIB / drain);
        step.uploaded_mib = Some(total / MIB);
    }
    drop(gateway);
    Ok(step)
}

/// The steps of one sweep, and what they show.
pub struct Sweep {
    pub steps: Vec<(Step, bool)>,
    /// The most publishers with every stream at 95% of its frame rate or more.
    pub capacity: usize,
    /// Of those, the most whose delay p99 stayed within the target.
    pub delay_held: usize,
}

/// Sweeps 1, 2, 4, ... publishers, doubling until a step fails, then halving the gap
/// between the last good and the first bad until it is within an eighth. `line` prints
/// each step.
pub async fn sweep(
    cli: &Options,
    size: (u32, u32),
    settings: GatewaySettings,
    clip: &Arc<Clip>,
    max: usize,
    tps: f64,
    line: &dyn Fn(&Step) -> String,
) -> Result<Sweep> {
    let mut steps: Vec<(Step, bool)> = Vec::new();
    let (mut good_n, mut bad_n) = (0usize, None::<usize>);
    let mut n = 1;
    while n <= max && n > good_n {
        let step = run_step(cli, size, settings, n, clip, tps).await?;
        println!("{}", line(&step));
        let good = step.min_output_fps >= 0.95 * FPS && step.min_picture_fps >= 0.95 * FPS;
        steps.push((step, good));
        if good {
            good_n = n;
        } else {
            bad_n = Some(n);
        }
        n = match bad_n {
            None if n < max => (n * 2).min(max),
            None => break,
            Some(bad) if bad - good_n > (good_n / 8).max(1) => (good_n + bad) / 2,
            Some(_) => break,
        };
    }
    let capacity_with = |held: &dyn Fn(&Step) -> bool| {
        steps
            .iter()
            .filter(|(s, good)| *good && held(s))
            .map(|(s, _)| s.publishers)
            .max()
            .unwrap_or(0)
    };
    let capacity = capacity_with(&|_| true);
    let delay_held = capacity_with(&|s| s.delay_p99_ms <= MAX_DELAY_P99_MS);
    Ok(Sweep {
        steps,
        capacity,
        delay_held,
    })
}

/// Every stream's `pictures_out`, by name.
pub fn pictures_out(streams: &Value) -> std::collections::HashMap<String, u64> {
    streams
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            Some((
                s["name"].as_str()?.to_string(),
                s["stats"]["pictures_out"].as_u64()?,
            ))
        })
        .collect()
}

/// ICE connected to the first H.264 RTP packet, and to the first HLS playlist, in ms.
pub async fn startup(clip: &Arc<Clip>, run: usize) -> Result<(f64, f64)> {
    let counter = FrameCounter::listen(rtp_base())?;
    let name = format!("startup{run}");
    let publisher = publish(&name, clip.clone()).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let first_rtp = loop {
        if let Some(at) = counter.first_packet() {
            break at;
        }
        if Instant::now() > deadline {
            bail!("no RTP arrived");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let playlist = loop {
        let text = api(&format!("/streams/{name}/stream.m3u8")).await;
        if let Ok(Value::String(text)) = text
            && text.contains("#EXTINF")
        {
            break Instant::now();
        }
        if Instant::now() > deadline {
            bail!("no HLS playlist");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ms = |at: Instant| {
        at.saturating_duration_since(publisher.connected_at)
            .as_secs_f64()
            * 1000.0
    };
    let result = (ms(first_rtp), ms(playlist));
    drop(publisher);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    Ok(result)
}

pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}
