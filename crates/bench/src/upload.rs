//! `upload`: what uploading recordings costs the live streams. The same publishers
//! (transcoded, 640x360 by default) recorded to MP4, first with recordings kept on disk
//! only, then also uploaded to an S3-compatible store (`s3s-fs`, which `make test-deps`
//! installs), in one run: each stream's frame rate and the delay p99 beside each other,
//! the upload rate while the streams run (a backlog of recordings left from before
//! uploads meanwhile, as after a restart), and once they end, how long until every
//! recording is uploaded and at what rate.

use crate::cli::*;
use crate::load::*;
use crate::steps::*;
use crate::system::*;
use anyhow::{Context, Result};
use serde_json::{Value, json};

pub async fn run(cli: &Options) -> Result<Value> {
    let n = cli.only.unwrap_or(16);
    let size = cli.sizes.split(',').next().unwrap_or("640x360");
    let (width, height) = size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .context("--sizes WxH")?;
    println!(
        "webrtc-gateway upload bench: {n} transcoded publishers at {size} recorded to MP4, \
         on disk only and then also uploaded to s3s-fs, {} s each",
        cli.seconds
    );
    let store = webrtc_gateway_testkit::servers::s3_store()?;
    S3_STORE_PORT
        .set(store.port)
        .map_err(|_| anyhow::anyhow!("the S3 store started twice"))?;
    let clip = std::sync::Arc::new(clip(width, height, SourceCodec::Vp8)?);
    let tps = ticks_per_second();
    let mut runs = Vec::new();
    for record in [Record::Local, Record::Upload] {
        let settings = GatewaySettings {
            rtp: true,
            record,
            ..GatewaySettings::default()
        };
        let step = run_step(cli, (width, height), settings, n, &clip, tps).await?;
        println!(
            "{:>6?}: {:.3} cores, min frame rate {:.1}, delay p50 {} ms, p99 {} ms{}",
            record,
            step.cores,
            step.min_picture_fps,
            step.delay_p50_ms,
            step.delay_p99_ms,
            match (
                step.upload_mib_per_s,
                step.drain_s,
                step.drain_mib_per_s,
                step.uploaded_mib
            ) {
                (Some(during), Some(drain), Some(rate), Some(total)) => format!(
                    "; uploaded {during:.2} MiB/s while the streams ran; every recording \
                     uploaded {drain:.1} s after the measurement began ({rate:.2} MiB/s \
                     overall), {total:.0} MiB in all"
                ),
                _ => String::new(),
            }
        );
        runs.push(json!({"record": record, "step": step}));
    }
    Ok(json!({"publishers": n, "size": size, "upload": runs}))
}
