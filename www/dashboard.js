// The dashboard: live streams refreshed every two seconds, a player for each (hls.js in
// its low-latency mode wherever Media Source Extensions run, native HLS elsewhere, as on
// iPhones), ready-to-copy player commands, and the recordings.
"use strict";

const $ = (id) => document.getElementById(id);
let hls = null;           // the hls.js player, when one is used
let playing = null;       // the name of the stream in the player
let hlsScript = null;     // loading hls.js, once
let statusTimer = null;   // refreshes the player's latency line
let cacheAge = null;      // the Age header of the last media playlist, when a cache sent one

function cell(content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content); else td.textContent = content;
  return td;
}

// A table's only row, saying there is nothing to list.
function emptyRow(body, text, columns) {
  const td = cell(text);
  td.colSpan = columns;
  td.className = "muted";
  const tr = document.createElement("tr");
  tr.append(td);
  body.append(tr);
}

function uptime(startedAt) {
  const seconds = Math.max(0, Math.floor((Date.now() - Date.parse(startedAt)) / 1000));
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  return h ? `${h}h ${m}m` : m ? `${m}m ${s}s` : `${s}s`;
}

function size(bytes) {
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (bytes >= 1024 && i < units.length - 1) { bytes /= 1024; i += 1; }
  return `${bytes.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function commands(stream) {
  const base = location.origin;
  const list = [];
  if (stream.outputs.sdp) {
    const sdp = `${base}${stream.outputs.sdp}`;
    list.push(["ffplay", `ffplay -protocol_whitelist file,http,tcp,udp,rtp -i ${sdp}`]);
    list.push(["VLC", `curl -o ${stream.name}.sdp ${sdp} && vlc --demux=avformat --avformat-format=sdp ${stream.name}.sdp`]);
    list.push(["GStreamer", `gst-launch-1.0 souphttpsrc location=${sdp} ! sdpdemux name=d d. ! queue ! rtph264depay ! avdec_h264 ! videoconvert ! autovideosink d. ! queue ! rtpopusdepay ! opusdec ! audioconvert ! autoaudiosink`]);
  }
  if (stream.outputs.hls) list.push(["HLS (Safari, VLC)", `${base}${stream.outputs.hls}`]);
  return list;
}

function loadHlsJs() {
  hlsScript ??= new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = "hls.js";
    script.onload = () => resolve(window.Hls);
    script.onerror = () => reject(new Error("hls.js is not installed"));
    document.head.append(script);
  });
  return hlsScript;
}

async function play(stream) {
  closePlayer();
  playing = stream.name;
  const video = $("player");
  $("player-panel").hidden = false;
  $("player-title").textContent = stream.name;
  const box = $("player-commands");
  box.replaceChildren();
  for (const [name, text] of commands(stream)) {
    const label = document.createElement("div");
    label.className = "muted";
    label.textContent = name;
    const pre = document.createElement("pre");
    pre.className = "command";
    pre.textContent = text;
    box.append(label, pre);
  }
  const url = stream.outputs.hls;
  if (!url) return;
  const Hls = await loadHlsJs().catch(() => null);
  if (Hls?.isSupported()) {
    // Low-latency mode follows the playlist's parts and PART-HOLD-BACK where it has
    // them (a live-sync setting of our own would override it), and hls.js's three
    // target durations behind the live edge where it has not. Played up to 1.5 times
    // as fast, it catches up with that target after a stall.
    // The Age a shared cache (a CDN, Varnish) puts on the media playlist says how long it
    // held it: noted, and shown beside the latency.
    cacheAge = null;
    const noteAge = (xhr, url) => {
      if (!url.includes(".m3u8")) return;
      xhr.addEventListener("load", () => {
        const age = xhr.getResponseHeader("Age");
        cacheAge = age === null ? null : Number(age);
      });
    };
    hls = new Hls({ lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5, xhrSetup: noteAge });
    hls.loadSource(url);
    hls.attachMedia(video);
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = url;                      // the browser plays HLS itself
  } else {
    $("player-status").textContent = "This browser plays HLS neither natively nor with hls.js.";
    return;
  }
  statusTimer = setInterval(showStatus, 1000);
  showStatus();
  video.play().catch(() => {});
}

// Which player plays, and how far behind the live edge it is.
function showStatus() {
  const line = $("player-status");
  if (!hls) {
    line.textContent = "native HLS player";
    line.dataset.player = "native";
    return;
  }
  const mode = hls.lowLatencyMode && hls.levels?.[0]?.details?.partList ? "low-latency" : "standard";
  const latency = Number.isFinite(hls.latency) && hls.latency > 0 ? `, ${hls.latency.toFixed(1)} s behind live` : "";
  const age = cacheAge === null ? "" : `; the playlist's Age from a cache: ${cacheAge} s`;
  line.textContent = `hls.js ${window.Hls.version} (${mode})${latency}${age}`;
  line.dataset.player = "hls.js";
  line.dataset.latency = Number.isFinite(hls.latency) ? hls.latency.toFixed(2) : "";
}

function closePlayer() {
  if (hls) { hls.destroy(); hls = null; }
  clearInterval(statusTimer);
  $("player-status").textContent = "";
  const video = $("player");
  video.removeAttribute("src");
  video.load();
  playing = null;
  $("player-panel").hidden = true;
}

async function refreshStreams() {
  const body = $("streams");
  const streams = await (await fetch("/api/streams")).json();
  body.replaceChildren();
  if (streams.length === 0) emptyRow(body, "No stream is live. Publish one!", 8);
  for (const stream of streams) {
    const tr = document.createElement("tr");
    tr.dataset.stream = stream.name;
    tr.dataset.state = stream.state;
    const state = document.createElement("span");
    state.className = `badge ${stream.state}`;
    state.textContent = stream.state;
    const v = stream.video;
    const video = v
      ? `${v.codec} ${v.width}×${v.height} @ ${Math.round(stream.stats.output_fps || v.fps)} fps (from ${v.input_codec})`
      : stream.audio ? "audio only" : "–";
    const paths = { udp: "UDP", tcp: "TCP", "tcp-http": "TCP on the HTTP port", relay: "relayed (TURN)" };
    const path = paths[stream.transport];
    const bitrate = stream.stats.bitrate_kbps ? `${Math.round(stream.stats.bitrate_kbps)} kbit/s` : "–";
    const rate = path ? `${bitrate} over ${path}` : bitrate;
    let recording = "–";
    if (stream.outputs.recording) {
      const a = document.createElement("a");
      a.href = `/recordings/${encodeURIComponent(stream.outputs.recording)}`;
      a.textContent = stream.outputs.recording;
      recording = a;
    }
    const watch = document.createElement("button");
    watch.type = "button";
    watch.className = "secondary watch";
    watch.textContent = "Watch";
    watch.disabled = !stream.outputs.hls;
    watch.addEventListener("click", () => play(stream));
    tr.append(cell(stream.name), cell(state), cell(stream.node), cell(video), cell(rate),
      cell(stream.state === "ended" ? "–" : uptime(stream.started_at)), cell(recording), cell(watch));
    body.append(tr);
  }
  if (playing && !streams.some((s) => s.name === playing)) closePlayer();
}

// The nodes of the cluster (this node alone without one), their load and Redis.
async function refreshCluster() {
  const response = await fetch("/api/cluster");
  if (!response.ok) return;
  const cluster = await response.json();
  const status = $("cluster-status");
  status.dataset.redis = cluster.redis ?? "none";
  status.textContent = cluster.redis === null
    ? `This node (${cluster.node}) runs on its own.`
    : `Answered by node ${cluster.node}; the cluster's Redis is ${cluster.redis}.`;
  const body = $("nodes");
  body.replaceChildren();
  for (const node of cluster.nodes) {
    const tr = document.createElement("tr");
    tr.dataset.node = node.id;
    tr.append(cell(node.id), cell(node.state), cell(`${node.publishers} of ${node.max_publishers}`),
      cell(node.url));
    body.append(tr);
  }
}

async function refreshRecordings() {
  const body = $("recordings");
  const response = await fetch("/recordings");
  const files = response.ok ? await response.json() : [];
  body.replaceChildren();
  if (files.length === 0) emptyRow(body, "No recording yet.", 5);
  for (const file of files) {
    const a = document.createElement("a");
    a.href = `/recordings/${encodeURIComponent(file.file)}`;
    a.textContent = "Download";
    a.download = file.file;
    const tr = document.createElement("tr");
    tr.append(cell(file.file), cell(file.stream), cell(new Date(file.started_at).toLocaleString()),
      cell(file.finished ? size(file.bytes) : `${size(file.bytes)}, recording`), cell(a));
    body.append(tr);
  }
}

async function refresh() {
  try {
    await Promise.all([refreshStreams(), refreshRecordings(), refreshCluster()]);
    document.body.dataset.loaded = "1";
  } catch (e) {
    $("streams").replaceChildren(cell(`Cannot reach the gateway: ${e.message}`));
  }
}

$("player-close").addEventListener("click", closePlayer);
refresh();
setInterval(refresh, 2000);
