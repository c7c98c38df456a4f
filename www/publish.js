// The publisher page: pick a camera and microphone (or the screen), publish them to the
// gateway over its WebSocket signalling, show the gateway's state and the outgoing
// statistics, and reconnect with backoff when the connection drops.
// ?stream=NAME&autostart=1 publishes the default devices at once; &h264=1 prefers H.264.
"use strict";

const $ = (id) => document.getElementById(id);
// Errors after which trying again cannot help.
// (403: a token or the publish hook says no; 503 hook-unavailable is tried again.)
const FATAL_CODES = new Set([400, 401, 403, 409, 415]);
// Endings after which the publisher should not come back on its own.
const FINAL_REASONS = new Set(["unpublished", "stopped-by-operator"]);

let media = null;        // the MediaStream being published or previewed
let session = null;      // { pc, ws, timer } of the current attempt
let wanted = false;      // the person asked to publish and has not stopped
let attempt = 0;
let retryTimer = null;
let meter = null;

function setState(state, reason) {
  $("state").textContent = state;
  $("state").className = `badge ${state}`;
  $("reason").textContent = reason ? `(${reason})` : "";
  document.body.dataset.state = state;
}

function showOutputs(outputs) {
  const base = location.origin;
  const lines = [];
  if (outputs.sdp) {
    lines.push(`ffplay -protocol_whitelist file,http,tcp,udp,rtp -i ${base}${outputs.sdp}`);
  }
  if (outputs.hls) lines.push(`HLS: ${base}${outputs.hls}`);
  if (outputs.recording) lines.push(`Recording: ${outputs.recording}`);
  $("outputs").textContent = lines.join("\n");
  $("outputs").hidden = lines.length === 0;
}

async function listDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [kind, select] of [["videoinput", $("camera")], ["audioinput", $("microphone")]]) {
    const chosen = select.value;
    select.replaceChildren();
    devices.filter((d) => d.kind === kind).forEach((d, i) => {
      const option = new Option(d.label || `${kind === "videoinput" ? "Camera" : "Microphone"} ${i + 1}`, d.deviceId);
      select.add(option);
    });
    if (chosen) select.value = chosen;
  }
}

async function openMedia() {
  const [width, height] = $("resolution").value.split("x").map(Number);
  const frameRate = Number($("framerate").value);
  const audio = $("microphone").value ? { deviceId: { exact: $("microphone").value } } : true;
  if ($("source").value === "screen") {
    const screen = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate }, audio: false });
    const mic = await navigator.mediaDevices.getUserMedia({ audio });
    return new MediaStream([...screen.getVideoTracks(), ...mic.getAudioTracks()]);
  }
  const video = { width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: frameRate } };
  if ($("camera").value) video.deviceId = { exact: $("camera").value };
  return navigator.mediaDevices.getUserMedia({ video, audio });
}

function startMeter(stream) {
  stopMeter();
  const track = stream.getAudioTracks()[0];
  if (!track || !window.AudioContext) return;
  const context = new AudioContext();
  const analyser = context.createAnalyser();
  analyser.fftSize = 512;
  context.createMediaStreamSource(new MediaStream([track])).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const draw = () => {
    analyser.getFloatTimeDomainData(samples);
    const rms = Math.sqrt(samples.reduce((sum, v) => sum + v * v, 0) / samples.length);
    $("level").style.width = `${Math.min(100, rms * 300)}%`;
    meter.frame = requestAnimationFrame(draw);
  };
  meter = { context, frame: requestAnimationFrame(draw) };
}

function stopMeter() {
  if (!meter) return;
  cancelAnimationFrame(meter.frame);
  meter.context.close();
  meter = null;
  $("level").style.width = "0";
}

// Puts H.264 first in the offer (the others stay, as a fallback), where the browser lets
// a page order its codecs (setCodecPreferences) and can send H.264. Says so otherwise.
function preferH264(transceiver) {
  const codecs = window.RTCRtpSender?.getCapabilities?.("video")?.codecs;
  if (!transceiver.setCodecPreferences || !codecs) {
    $("codec-note").textContent = "this browser cannot prefer a codec";
    return;
  }
  const h264 = codecs.filter((c) => c.mimeType.toLowerCase() === "video/h264");
  if (h264.length === 0) {
    $("codec-note").textContent = "this browser cannot send H.264";
    return;
  }
  const others = codecs.filter((c) => c.mimeType.toLowerCase() !== "video/h264");
  transceiver.setCodecPreferences([...h264, ...others]);
  $("codec-note").textContent = "";
}

// One attempt to publish `media`: a peer connection and a signalling socket.
async function connect() {
  const stream = $("stream").value.trim();
  const token = $("token").value;
  setState("connecting", attempt > 0 ? `attempt ${attempt + 1}` : "");
  const pc = new RTCPeerConnection();
  for (const track of media.getTracks()) {
    const transceiver = pc.addTransceiver(track, { direction: "sendonly", streams: [media] });
    if (track.kind === "video" && $("prefer-h264").checked) preferH264(transceiver);
  }
  const current = { pc, ws: null, timer: null, lastStats: null };
  session = current;
  const queued = [];
  let published = false;
  const send = (message) => current.ws.send(JSON.stringify(message));

  pc.onicecandidate = (event) => {
    const message = event.candidate
      ? { type: "candidate", candidate: event.candidate.candidate,
          sdpMid: event.candidate.sdpMid, sdpMLineIndex: event.candidate.sdpMLineIndex }
      : { type: "candidate", candidate: null };
    if (published) send(message); else queued.push(message);
  };
  pc.onconnectionstatechange = () => {
    if (session === current && pc.connectionState === "failed") dropped("the connection failed");
  };

  await pc.setLocalDescription(await pc.createOffer());
  // The socket opens only once the offer is ready, so that no event is missed.
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  current.ws = new WebSocket(`${scheme}//${location.host}/ws`);
  current.ws.onopen = () => {
    const message = { type: "publish", stream, sdp: pc.localDescription.sdp };
    if (token) message.token = token;
    send(message);
    published = true;
    queued.splice(0).forEach(send);
  };
  current.ws.onmessage = async (event) => {
    if (session !== current) return;
    const message = JSON.parse(event.data);
    switch (message.type) {
      case "answer":
        await pc.setRemoteDescription({ type: "answer", sdp: message.sdp });
        break;
      case "candidate":
        if (message.candidate) {
          await pc.addIceCandidate({ candidate: message.candidate,
            sdpMid: message.sdpMid, sdpMLineIndex: message.sdpMLineIndex });
        }
        break;
      case "live":
        attempt = 0;
        setState("live");
        showOutputs(message.outputs);
        break;
      case "ended":
        if (FINAL_REASONS.has(message.reason)) {
          finish("ended", message.reason);
        } else {
          dropped(message.reason);
        }
        break;
      case "error":
        // Back after a drop, the name may still be held for the node that was lost (a
        // cluster frees it within its lease): that 409 is worth another try.
        if (FATAL_CODES.has(message.code) && !(message.code === 409 && attempt > 0)) {
          finish("error", `${message.code} ${message.error}: ${message.message}`);
        } else {
          dropped(`${message.code} ${message.error}: ${message.message}`);
        }
        break;
    }
  };
  current.ws.onclose = () => {
    if (session === current) dropped("the connection to the gateway closed");
  };
  current.timer = setInterval(() => showStats(current), 1000);
}

function closeSession(unpublish) {
  if (!session) return;
  const { pc, ws, timer } = session;
  session = null;
  clearInterval(timer);
  if (ws) {
    if (unpublish && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "unpublish" }));
    setTimeout(() => ws.close(), unpublish ? 300 : 0);
  }
  pc.close();
}

// The connection dropped while the person still wants to publish: try again, later.
function dropped(reason) {
  closeSession(false);
  if (!wanted) return;
  const delay = Math.min(15, 2 ** attempt);
  attempt += 1;
  setState("reconnecting", `${reason}; trying again in ${delay} s`);
  clearTimeout(retryTimer);
  retryTimer = setTimeout(() => connect().catch((e) => dropped(e.message)), delay * 1000);
}

// Publishing is over: the person stopped, or the gateway refused for good.
function finish(state, reason) {
  wanted = false;
  clearTimeout(retryTimer);
  closeSession(state === "stopped");
  stopMeter();
  if (media) media.getTracks().forEach((t) => t.stop());
  media = null;
  setState(state, reason);
  $("start").disabled = false;
  $("stop").disabled = true;
}

async function showStats(current) {
  const report = await current.pc.getStats();
  let video = null;
  let remote = null;
  let pair = null;
  const codecs = new Map();
  report.forEach((s) => {
    if (s.type === "codec") codecs.set(s.id, s.mimeType);
    if (s.type === "outbound-rtp" && s.kind === "video") video = s;
    if (s.type === "remote-inbound-rtp" && s.kind === "video") remote = s;
    if (s.type === "candidate-pair" && s.nominated) pair = s;
  });
  if (!video) return;
  const last = current.lastStats;
  if (last) {
    const kbps = ((video.bytesSent - last.bytesSent) * 8) / (video.timestamp - last.timestamp);
    $("stat-bitrate").textContent = `${Math.round(kbps)} kbit/s`;
  }
  current.lastStats = video;
  $("stat-fps").textContent = video.framesPerSecond ? `${Math.round(video.framesPerSecond)} fps` : "–";
  $("stat-resolution").textContent = video.frameWidth ? `${video.frameWidth}×${video.frameHeight}` : "–";
  const codec = codecs.get(video.codecId);
  $("stat-codec").textContent = codec ? codec.replace(/^video\//, "") : "–";
  $("stat-lost").textContent = remote ? String(remote.packetsLost) : "0";
  const rtt = remote?.roundTripTime ?? pair?.currentRoundTripTime;
  $("stat-rtt").textContent = rtt !== undefined ? `${Math.round(rtt * 1000)} ms` : "–";
}

async function start() {
  wanted = true;
  attempt = 0;
  $("start").disabled = true;
  $("stop").disabled = false;
  setState("connecting");
  media = await openMedia();
  $("preview").srcObject = media;
  startMeter(media);
  listDevices().catch(() => {});
  await connect();
}

$("form").addEventListener("submit", (event) => {
  event.preventDefault();
  start().catch((e) => finish("error", e.message));
});
$("stop").addEventListener("click", () => finish("stopped", ""));

const params = new URLSearchParams(location.search);
if (params.get("stream")) $("stream").value = params.get("stream");
if (params.get("token")) $("token").value = params.get("token");
if (params.get("h264") === "1") $("prefer-h264").checked = true;
listDevices().catch(() => {});
if (params.get("autostart") === "1") {
  start().catch((e) => finish("error", e.message));
}
