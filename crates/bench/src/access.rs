//! `access`: what the hooks cost. The time from a WHIP offer to its answer on loopback
//! without a publish hook and with one (a hook server in this process that allows at
//! once), and the read-hook calls one HLS viewer costs over `--seconds` (60 unless
//! given) with `hooks.cache_s = 10`: the goal is at most seconds / cache_s + 1.

use crate::cli::*;
use crate::load::*;
use crate::steps::*;
use crate::system::*;
use anyhow::{Context, Result};
use axum::Router;
use axum::routing::post;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The offer a browser sends (VP8 and H.264 video, Opus audio), as the tests use it.
const OFFER: &str = include_str!("../../../tests/common/browser_offer.sdp");
/// WHIP publishes timed in each run.
const PUBLISHES: usize = 20;
const CACHE_S: u64 = 10;

/// Counts the hook calls by action; answers 200 at once.
async fn hook_server(calls: Arc<[AtomicUsize; 2]>) -> Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (publish, read) = (calls.clone(), calls);
    let app = Router::new()
        .route(
            "/publish",
            post(move || async move {
                publish[0].fetch_add(1, Ordering::Relaxed);
                "{}"
            }),
        )
        .route(
            "/read",
            post(move || async move {
                read[1].fetch_add(1, Ordering::Relaxed);
                "{}"
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(port)
}

fn start(dir: &std::path::Path, hooks: &str) -> Result<Process> {
    let root = webrtc_gateway_testkit::root();
    let config = dir.join("access.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{http_port}\"\nwww_dir = \"{root}/www\"\n\
             [rtp]\nenabled = false\n\
             [hls]\nlinger_s = 0\n\
             [transcode]\nwidth = 320\nheight = 180\nx264_preset = \"ultrafast\"\n\
             pipelines_dir = \"{root}/pipelines\"\n\
             [webrtc]\nbind_address = \"127.0.0.1\"\n{ice_ports}{hooks}",
            root = root.display(),
            ice_ports = crate::cli::ice_ports(),
            http_port = http_port(),
        ),
    )?;
    spawn_gateway(&config)
}

/// Milliseconds from each WHIP offer sent to its answer; each session is deleted.
async fn publish_times(client: &reqwest::Client) -> Result<Vec<f64>> {
    let base = format!("http://127.0.0.1:{}", http_port());
    let mut times = Vec::new();
    for n in 0..PUBLISHES {
        let start = Instant::now();
        let response = client
            .post(format!("{base}/whip/access{n}"))
            .header("Content-Type", "application/sdp")
            .body(OFFER)
            .send()
            .await?;
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(String::from);
        response.bytes().await?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(status == 201, "WHIP answered {status}");
        if let Some(location) = location {
            client.delete(format!("{base}{location}")).send().await?;
        }
    }
    Ok(times)
}

/// One viewer: the playlist and its newest part (or segment), every 200 ms, with a
/// token; how many requests it made.
async fn view(client: &reqwest::Client, stream: &str, seconds: u64) -> Result<usize> {
    let base = format!("http://127.0.0.1:{}/streams/{stream}", http_port());
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut fetched = 0;
    while Instant::now() < end {
        let playlist = client
            .get(format!("{base}/stream.m3u8?token=viewer"))
            .send()
            .await?
            .text()
            .await?;
        fetched += 1;
        // The newest part, as a low-latency player fetches it, or the newest segment.
        let newest = playlist
            .lines()
            .filter(|l| l.starts_with("#EXT-X-PART:"))
            .filter_map(|l| l.split("URI=\"").nth(1))
            .filter_map(|l| l.split('"').next())
            .next_back()
            .or_else(|| {
                playlist
                    .lines()
                    .rfind(|l| !l.starts_with('#') && !l.is_empty())
            });
        if let Some(uri) = newest {
            let uri = if uri.contains('?') {
                uri.to_string()
            } else {
                format!("{uri}?token=viewer")
            };
            client
                .get(format!("{base}/{uri}"))
                .send()
                .await?
                .bytes()
                .await?;
            fetched += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(fetched)
}

pub async fn run(cli: &Options) -> Result<Value> {
    let seconds = cli.seconds;
    println!(
        "webrtc-gateway access bench: WHIP offer to answer without and with a publish hook \
         ({PUBLISHES} each); read-hook calls for one HLS viewer over {seconds} s, cache_s = {CACHE_S}"
    );
    let calls = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let hook_port = hook_server(calls.clone()).await?;
    let client = reqwest::Client::new();
    let mut publishes = Vec::new();
    for hooked in [false, true] {
        let dir = tempfile::tempdir()?;
        let hooks = if hooked {
            format!("[hooks]\npublish_url = \"http://127.0.0.1:{hook_port}/publish\"\n")
        } else {
            String::new()
        };
        let gateway = start(dir.path(), &hooks)?;
        let times = publish_times(&client).await?;
        drop(gateway);
        let (p50, max) = (percentile(&times, 0.5), percentile(&times, 1.0));
        println!(
            "publish hook {}: offer to answer p50 {p50:.1} ms, max {max:.1} ms",
            if hooked { "on " } else { "off" }
        );
        publishes.push(json!({"hook": hooked, "p50_ms": p50, "max_ms": max, "times_ms": times}));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let publish_calls = calls[0].load(Ordering::Relaxed);

    let dir = tempfile::tempdir()?;
    let gateway = start(
        dir.path(),
        &format!(
            "[hooks]\nread_url = \"http://127.0.0.1:{hook_port}/read\"\ncache_s = {CACHE_S}\n"
        ),
    )?;
    let clip = Arc::new(clip(320, 180, SourceCodec::Vp8)?);
    let publisher = publish("viewed", clip).await?;
    // Until the playlist exists (its reads are asked too, and counted apart).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(api("/streams/viewed/stream.m3u8?token=warmup").await, Ok(Value::String(t)) if t.contains("#EXT"))
    {
        anyhow::ensure!(Instant::now() < deadline, "no HLS playlist");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = calls[1].load(Ordering::Relaxed);
    let fetched = view(&client, "viewed", seconds)
        .await
        .context("the viewer")?;
    let read_calls = calls[1].load(Ordering::Relaxed) - before;
    drop(publisher);
    drop(gateway);
    let goal = seconds / CACHE_S + 1;
    println!(
        "one HLS viewer, {seconds} s, {fetched} requests: {read_calls} read-hook calls (goal: at most {goal})"
    );
    Ok(json!({
        "publish": publishes, "publish_hook_calls": publish_calls,
        "read": {"seconds": seconds, "cache_s": CACHE_S, "requests": fetched, "hook_calls": read_calls, "goal": goal},
    }))
}
