//! `cache`: what an audience costs the gateway through a shared cache. Varnish with the
//! README's configuration in front of one gateway with one low-latency publication;
//! simulated low-latency viewers (`tests/tools/ll_viewers.py`: a blocking reload for
//! each next part, then the part) in growing numbers through Varnish, and some straight
//! at the gateway as the reference. For each: the requests a second that reached the
//! gateway (its own count, less the script's own requests to the origin), its CPU, how
//! far behind the live edge the viewers were, and the time the cache added.

use crate::cli::*;
use crate::system::*;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::{Duration, Instant};
use webrtc_gateway_testkit::{python, servers};

const STREAM: &str = "cached";

/// The HLS requests that have reached the gateway so far.
async fn gateway_requests() -> Result<u64> {
    let metrics = api("/metrics").await?;
    Ok(metrics
        .as_str()
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("webrtc_gateway_hls_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

/// One run of `viewers` simulated viewers through `base`.
async fn run_viewers(base: &str, viewers: usize, seconds: u64, gateway_pid: u32) -> Result<Value> {
    let tps = ticks_per_second();
    let before = gateway_requests().await?;
    let cpu_before = cpu_seconds(gateway_pid, tps)?;
    let output = tokio::process::Command::from(python::tool(
        "ll_viewers.py",
        &[
            "--base",
            base,
            "--origin",
            &format!("http://127.0.0.1:{}", http_port()),
            "--stream",
            STREAM,
            "--viewers",
            &viewers.to_string(),
            "--seconds",
            &seconds.to_string(),
        ],
    ))
    .output()
    .await
    .context(python::HINT)?;
    if !output.status.success() {
        bail!(
            "the viewers failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let cpu = cpu_seconds(gateway_pid, tps)? - cpu_before;
    let reached = gateway_requests().await? - before;
    let report: Value = serde_json::from_slice(&output.stdout)?;
    let from_viewers = reached.saturating_sub(report["origin_requests"].as_u64().unwrap_or(0));
    Ok(json!({
        "viewers": viewers,
        "requests_per_s_asked": report["requests"].as_u64().unwrap_or(0) as f64 / seconds as f64,
        "requests_per_s_at_gateway": from_viewers as f64 / seconds as f64,
        "distinct_urls": report["distinct_urls"],
        "gateway_cores": cpu / seconds as f64,
        "statuses": report["status"],
        "lag_parts_p50": report["lag_p50"],
        "lag_parts_p99": report["lag_p99"],
        "added_ms_p50": report["added_ms_p50"],
        "added_ms_p99": report["added_ms_p99"],
    }))
}

pub async fn run(cli: &Options) -> Result<Value> {
    println!(
        "webrtc-gateway cache bench: simulated low-latency viewers of one stream, through \
         Varnish (the README's configuration) and straight at the gateway, {} s each",
        cli.seconds
    );
    let dir = tempfile::tempdir()?;
    let gateway = start_default_gateway(dir.path(), "cache")?;
    let varnish = servers::varnish(http_port())?;
    let _publisher = publisher(&format!("ws://127.0.0.1:{}/ws", http_port()), STREAM, &[])?
        .stdout(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let playlist = api(&format!("/streams/{STREAM}/stream.m3u8")).await;
        if playlist.is_ok_and(|p| p.as_str().unwrap_or_default().contains("#EXTINF")) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the publication did not go live");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let through = varnish.url("");
    let direct = format!("http://127.0.0.1:{}", http_port());
    let mut runs = Vec::new();
    for (base, label, counts) in [
        (&direct, "direct", [1usize, 10, 100].as_slice()),
        (&through, "varnish", [1usize, 10, 100, 1000].as_slice()),
    ] {
        for &viewers in counts {
            let mut result = run_viewers(base, viewers, cli.seconds, pid(&gateway)?).await?;
            result["path"] = json!(label);
            println!(
                "{label:>8} {viewers:>5} viewers: {:.0} requests/s asked, {:.1}/s at the \
                 gateway ({} distinct URLs), gateway {:.3} cores; behind live p50 {} p99 {} \
                 parts; the cache added p50 {} ms, p99 {} ms; statuses {}",
                result["requests_per_s_asked"].as_f64().unwrap_or(0.0),
                result["requests_per_s_at_gateway"].as_f64().unwrap_or(0.0),
                result["distinct_urls"],
                result["gateway_cores"].as_f64().unwrap_or(0.0),
                result["lag_parts_p50"],
                result["lag_parts_p99"],
                result["added_ms_p50"],
                result["added_ms_p99"],
                result["statuses"],
            );
            runs.push(result);
        }
    }
    let at = |viewers: usize| {
        runs.iter()
            .find(|r| r["path"] == "varnish" && r["viewers"] == viewers)
            .and_then(|r| r["requests_per_s_at_gateway"].as_f64())
            .unwrap_or(f64::NAN)
    };
    let ratio = at(1000) / at(1);
    println!("through Varnish, 1,000 viewers cost the gateway {ratio:.2}x the requests of one");
    Ok(json!({"cache": runs, "ratio_1000_to_1": ratio}))
}
