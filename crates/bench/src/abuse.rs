//! `abuse`: what hostile clients cost the gateway, with its default limits. Three
//! figures: the gateway's memory before, with and after 2,000 idle WebSockets (kept
//! until the gateway closes them); the UDP datagrams the machine sends in 5 s while one
//! publisher trickles 10,000 candidates; and how long a publisher that connects but
//! sends no media holds its name.

use crate::cli::*;
use crate::system::*;
use anyhow::{Context, Result, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

const IDLE_CLIENTS: usize = 2000;
const CANDIDATES: usize = 10_000;
const OFFER: &str = include_str!("../../../tests/common/browser_offer.sdp");

fn ws_url() -> String {
    format!("ws://127.0.0.1:{}/ws", http_port())
}

/// The gateway's memory with no client, with `IDLE_CLIENTS` idle WebSockets, and once
/// the gateway has closed them (`signalling.publish_timeout_s`) and they have gone.
async fn idle_clients(pid: u32) -> Result<Value> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_mib(pid)?;
    let mut sockets = Vec::new();
    for chunk in 0..IDLE_CLIENTS / 100 {
        let batch = (0..100).map(|_| tokio_tungstenite::connect_async(ws_url()));
        for socket in futures::future::join_all(batch).await {
            sockets.push(
                socket
                    .with_context(|| format!("idle client in batch {chunk}"))?
                    .0,
            );
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with = rss_mib(pid)?;
    // Each waits for the gateway to close it.
    let started = Instant::now();
    let closes = sockets.into_iter().map(|mut socket| async move {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Close(frame) = message {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    });
    let codes = futures::future::join_all(closes).await;
    let closed_after = started.elapsed().as_secs_f64();
    let policy = codes.iter().filter(|c| **c == Some(1008)).count();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let after = rss_mib(pid)?;
    println!(
        "{IDLE_CLIENTS} idle WebSockets: RSS {before:.1} MiB before, {with:.1} MiB with them, \
         {after:.1} MiB after; closed by the gateway after {closed_after:.0} s, {policy} with 1008"
    );
    Ok(
        json!({"clients": IDLE_CLIENTS, "rss_before_mib": before, "rss_with_mib": with,
        "rss_after_mib": after, "closed_after_s": closed_after, "closed_1008": policy}),
    )
}

/// UDP datagrams this machine has sent so far (`/proc/net/snmp`).
fn udp_datagrams_out() -> Result<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp")?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().context("no Udp")?, udp.next().context("no Udp")?);
    let at = names
        .split_whitespace()
        .position(|n| n == "OutDatagrams")
        .context("no OutDatagrams")?;
    Ok(values
        .split_whitespace()
        .nth(at)
        .context("no value")?
        .parse()?)
}

/// A publisher that sends an offer and then `CANDIDATES` trickled candidates, each to
/// another loopback port: the datagrams sent in the next 5 s.
async fn candidate_flood() -> Result<Value> {
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url()).await?;
    let publish = json!({"type": "publish", "stream": "flood", "sdp": OFFER});
    socket
        .send(Message::Text(publish.to_string().into()))
        .await?;
    let start = udp_datagrams_out()?;
    for k in 0..CANDIDATES {
        let candidate = format!(
            "candidate:{k} 1 udp {} 127.0.0.1 {} typ host",
            2_000_000_000 - k,
            20_000 + k
        );
        let message = json!({"type": "candidate", "candidate": candidate, "sdpMid": "0",
            "sdpMLineIndex": 0});
        socket
            .send(Message::Text(message.to_string().into()))
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let sent = udp_datagrams_out()? - start;
    let stats = api("/api/streams/flood").await?;
    let ignored = stats["stats"]["candidates_ignored"].as_u64().unwrap_or(0);
    let _ = socket.close(None).await;
    println!(
        "{CANDIDATES} trickled candidates: {sent} UDP datagrams sent in 5 s (the whole \
         machine), {ignored} candidates ignored"
    );
    Ok(json!({"candidates": CANDIDATES, "datagrams_in_5s": sent, "ignored": ignored}))
}

/// A publisher whose connection comes up but that sends no media: the time from its
/// connection up to the gateway ending it, and the reason.
async fn silent_publisher() -> Result<Value> {
    let mut child = publisher(&ws_url(), "silent", &["--silent"])?
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let mut connected = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Ok(Ok(Some(line))) = tokio::time::timeout_at(deadline.into(), lines.next_line()).await
    {
        let message: Value = serde_json::from_str(&line).unwrap_or_default();
        if message["type"] == "ice" && message["state"] == "connected" {
            connected = Some(Instant::now());
        }
        if message["type"] == "ended" {
            let at = connected.context("ended before connecting")?;
            let held = at.elapsed().as_secs_f64();
            let reason = message["reason"].as_str().unwrap_or_default().to_string();
            println!("a publisher that sends no media: ended after {held:.1} s ({reason})");
            return Ok(json!({"held_s": held, "reason": reason}));
        }
    }
    bail!("the silent publisher was not ended within 60 s")
}

pub async fn run() -> Result<Value> {
    println!("webrtc-gateway abuse bench: default limits, release build, loopback");
    let dir = tempfile::tempdir()?;
    let gateway = start_default_gateway(dir.path(), "abuse")?;
    let pid = pid(&gateway)?;
    let idle = idle_clients(pid).await?;
    let again = idle_clients(pid).await?;
    let flood = candidate_flood().await?;
    let silent = silent_publisher().await?;
    Ok(
        json!({"idle_websockets": [idle, again], "candidate_flood": flood, "silent_publisher": silent}),
    )
}
