//! `cluster`: two release gateways sharing a Redis, behind HAProxy with the README's
//! configuration, on loopback. It measures what forwarding adds to a playlist, a part
//! and a segment (asked of the node that does not hold the stream, against asking the
//! one that does), the Redis calls a node and a stream cost (Redis's own
//! `commandstats`, idle and with publishers), and the time from SIGKILL of the node
//! that holds a publication to that publisher live again on the other node, with a
//! publisher that retries at once through HAProxy.

use crate::cli::*;
use crate::steps::percentile;
use crate::system::*;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use webrtc_gateway_testkit::{free_tcp_port, servers};

/// Requests timed per kind and per path.
const SAMPLES: usize = 300;
/// Publishers whose Redis calls are counted, spread over the nodes.
const STREAMS: usize = 8;

/// The node ports of the run, chosen once.
fn node_ports() -> [u16; 2] {
    static PORTS: std::sync::OnceLock<[u16; 2]> = std::sync::OnceLock::new();
    *PORTS.get_or_init(|| [free_tcp_port(), free_tcp_port()])
}

fn node_url(node: usize) -> String {
    format!("http://127.0.0.1:{}", node_ports()[node])
}

/// Node `node` (0 or 1) of the cluster, with its defaults and 320x180 video.
fn start_node(dir: &std::path::Path, node: usize, redis_port: u16) -> Result<Process> {
    let root = webrtc_gateway_testkit::root();
    let config = dir.join(format!("gw{}.toml", node + 1));
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\nwww_dir = \"{root}/www\"\n\
             [rtp]\nport_base = {rtp_base}\n\
             [transcode]\nwidth = 320\nheight = 180\nx264_preset = \"ultrafast\"\n\
             pipelines_dir = \"{root}/pipelines\"\n\
             [webrtc]\nbind_address = \"127.0.0.1\"\n{ice_ports}\
             [cluster]\nredis_url = \"redis://127.0.0.1:{redis_port}\"\nnode_id = \"gw{id}\"\n\
             secret = \"bench-cluster-secret\"\n",
            port = node_ports()[node],
            root = root.display(),
            ice_ports = crate::cli::ice_ports(),
            rtp_base = rtp_base(),
            id = node + 1,
        ),
    )?;
    spawn_gateway_on(&config, node_ports()[node], "a gateway node")
}

/// A publisher process (`webrtc-gateway-publish`, 320x180) to the socket at `ws`.
fn cluster_publisher(ws: &str, stream: &str) -> Result<tokio::process::Child> {
    Ok(
        publisher(ws, stream, &["--width", "320", "--height", "180"])?
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?,
    )
}

/// Waits for a publisher's `live`; false when it exits or `limit` passes first.
async fn until_live(child: &mut tokio::process::Child, limit: Duration) -> bool {
    let Some(stdout) = child.stdout.take() else {
        return false;
    };
    let mut lines = BufReader::new(stdout).lines();
    let live = async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("\"live\"") {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(limit, live).await.unwrap_or(false)
}

/// Every command Redis has run so far (script calls and the commands inside them).
async fn redis_commands(redis: &mut redis::aio::MultiplexedConnection) -> Result<u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(redis)
        .await?;
    Ok(info
        .lines()
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum())
}

/// The time of `SAMPLES` GETs of `path` from each node, in ms: (through the other node,
/// from the holding node).
async fn timed(http: &reqwest::Client, holder: usize, path: &str) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut forwarded, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..SAMPLES {
        for (node, into) in [(1 - holder, &mut forwarded), (holder, &mut direct)] {
            let start = Instant::now();
            let answer = http.get(format!("{}{path}", node_url(node))).send().await?;
            if !answer.status().is_success() {
                bail!("{path} from gw{}: {}", node + 1, answer.status());
            }
            answer.bytes().await?;
            into.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok((forwarded, direct))
}

fn summary(kind: &str, forwarded: &[f64], direct: &[f64]) -> Value {
    let p = |v: &[f64], q| (percentile(v, q) * 100.0).round() / 100.0;
    println!(
        "{kind:>9}: through the other node p50 {:.2} ms p99 {:.2} ms; from its node p50 \
         {:.2} ms p99 {:.2} ms; forwarding adds {:.2} ms at p50",
        p(forwarded, 0.5),
        p(forwarded, 0.99),
        p(direct, 0.5),
        p(direct, 0.99),
        p(forwarded, 0.5) - p(direct, 0.5),
    );
    json!({
        "kind": kind,
        "forwarded_ms_p50": p(forwarded, 0.5), "forwarded_ms_p99": p(forwarded, 0.99),
        "direct_ms_p50": p(direct, 0.5), "direct_ms_p99": p(direct, 0.99),
    })
}

/// The newest complete part and segment URIs of a low-latency media playlist.
fn newest(playlist: &str) -> Option<(String, String)> {
    let part = playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PART:"))
        .filter_map(|l| l.split("URI=\"").nth(1)?.split('"').next())
        .next_back()?;
    let segment = playlist
        .lines()
        .rfind(|l| !l.starts_with('#') && !l.is_empty())?;
    Some((part.to_string(), segment.to_string()))
}

pub async fn run(cli: &Options) -> Result<Value> {
    println!(
        "webrtc-gateway cluster bench: two nodes, one Redis, HAProxy with the README's \
         configuration, on loopback"
    );
    let dir = tempfile::tempdir()?;
    let redis_server = servers::redis(None)?;
    let mut nodes = vec![
        start_node(dir.path(), 0, redis_server.port)?,
        start_node(dir.path(), 1, redis_server.port)?,
    ];
    let proxy = servers::haproxy(&node_ports())?;
    let mut redis = redis::Client::open(format!("redis://127.0.0.1:{}", redis_server.port))?
        .get_multiplexed_async_connection()
        .await?;
    let http = reqwest::Client::new();

    // Redis calls of two idle nodes, then with publishers.
    let window = Duration::from_secs(cli.seconds);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = redis_commands(&mut redis).await?;
    tokio::time::sleep(window).await;
    let idle = (redis_commands(&mut redis).await? - before) as f64 / window.as_secs_f64();
    let mut publishers = Vec::new();
    for k in 0..STREAMS {
        let ws = format!("ws://127.0.0.1:{}/ws", node_ports()[k % 2]);
        let mut child = cluster_publisher(&ws, &format!("s{k}"))?;
        if !until_live(&mut child, Duration::from_secs(30)).await {
            bail!("publisher s{k} did not go live");
        }
        publishers.push(child);
    }
    let before = redis_commands(&mut redis).await?;
    tokio::time::sleep(window).await;
    let busy = (redis_commands(&mut redis).await? - before) as f64 / window.as_secs_f64();
    let per_node = idle / 2.0;
    let per_stream = (busy - idle) / STREAMS as f64;
    let at_scale = 1000.0 * per_node + 20_000.0 * per_stream;
    println!(
        "Redis: {per_node:.2} commands/s per idle node, {per_stream:.2} per stream; \
         1,000 nodes of 20 streams: {at_scale:.0} commands/s"
    );

    // What forwarding adds: s0 is on gw1; ask gw2 for it, and gw1.
    let playlist = http
        .get(format!("{}/streams/s0/stream.m3u8", node_url(0)))
        .send()
        .await?
        .text()
        .await?;
    let (part, segment) = newest(&playlist).context("no parts in s0's playlist")?;
    let mut latency = Vec::new();
    for (kind, path) in [
        ("playlist", "/streams/s0/stream.m3u8".to_string()),
        ("part", format!("/streams/s0/{part}")),
        ("segment", format!("/streams/s0/{segment}")),
    ] {
        let (forwarded, direct) = timed(&http, 0, &path).await?;
        latency.push(summary(kind, &forwarded, &direct));
    }
    drop(publishers);

    // Failover: a publisher on gw1, which is killed; the publisher retries at once
    // through HAProxy until it is live again (on gw2, once gw1's claim has expired).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ws = format!("ws://127.0.0.1:{}/ws", node_ports()[0]);
    let mut first = cluster_publisher(&ws, "failover")?;
    if !until_live(&mut first, Duration::from_secs(30)).await {
        bail!("the failover publisher did not go live");
    }
    let killed = Instant::now();
    nodes[0].kill();
    let through = format!("ws://127.0.0.1:{}/ws", proxy.port);
    let mut attempts = 0;
    let back = loop {
        attempts += 1;
        let mut again = cluster_publisher(&through, "failover")?;
        if until_live(&mut again, Duration::from_secs(15)).await {
            break killed.elapsed();
        }
        if killed.elapsed() > Duration::from_secs(60) {
            bail!("the publisher was not live again within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "failover: SIGKILL of the holding node to the publisher live on the other: {:.2} s \
         ({attempts} attempts; cluster.lease_ms = 5000)",
        back.as_secs_f64()
    );
    drop(first);
    nodes.clear();
    Ok(json!({
        "nodes": 2, "streams": STREAMS, "window_s": cli.seconds,
        "redis_commands_per_s": {"idle_cluster": idle, "with_streams": busy,
            "per_idle_node": per_node, "per_stream": per_stream,
            "at_1000_nodes_of_20_streams": at_scale},
        "forwarding": latency,
        "failover_s": back.as_secs_f64(), "failover_attempts": attempts, "lease_ms": 5000,
    }))
}
