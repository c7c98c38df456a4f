// The publisher page: pick a camera and microphone (or the screen), publish them to the
// gateway over its WebSocket signalling with the ICE servers it gives (its `welcome`, or
// /api/ice-servers with the token), show the gateway's state, the outgoing statistics
// and the path the media takes, and reconnect with backoff when the connection drops.
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

// How long the page waits for the gateway's `welcome` (a gateway without one: none).
const WELCOME_WAIT_MS = 3000;

// Opens the signalling socket and waits for its `welcome`: the socket and the ICE
// servers it gave (none from a gateway that sends no welcome).
function openSocket(stream) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/ws?stream=${encodeURIComponent(stream)}`);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => resolve({ ws, iceServers: [] }), WELCOME_WAIT_MS);
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type !== "welcome") return;
      clearTimeout(timer);
      resolve({ ws, iceServers: message.ice_servers || [] });
    };
    ws.onclose = () => {
      clearTimeout(timer);
      reject(new Error("the connection to the gateway closed"));
    };
  });
}

// The ICE servers for a publisher with a token: the welcome gives TURN credentials only
// where publishing needs none, so they are asked of the API with the token. On any
// failure the welcome's list stays (the publish itself then says what is wrong).
async function iceServersWithToken(stream, token, fallback) {
  try {
    const response = await fetch(`/api/ice-servers?stream=${encodeURIComponent(stream)}`,
      { headers: { Authorization: `Bearer ${token}` } });
    if (response.ok) return await response.json();
  } catch (e) {
    // The welcome's list.
  }
  return fallback;
}

// One attempt to publish `media`: a signalling socket, then a peer connection with the
// ICE servers the gateway gave, then the offer.
async function connect() {
  const stream = $("stream").value.trim();
  const token = $("token").value;
  setState("connecting", attempt > 0 ? `attempt ${attempt + 1}` : "");
  const current = { pc: null, ws: null, timer: null, lastStats: null, transport: null };
  session = current;
  const { ws, iceServers: welcomed } = await openSocket(stream);
  current.ws = ws;
  if (session !== current) {
    ws.close();
    return;
  }
  const iceServers = token ? await iceServersWithToken(stream, token, welcomed) : welcomed;
  if (ws.readyState !== WebSocket.OPEN) throw new Error("the connection to the gateway closed");
  const pc = new RTCPeerConnection({ iceServers });
  current.pc = pc;
  // For tests and for a look from the console.
  window.publisherConnection = pc;
  for (const track of media.getTracks()) {
    const transceiver = pc.addTransceiver(track, { direction: "sendonly", streams: [media] });
    if (track.kind === "video" && $("prefer-h264").checked) preferH264(transceiver);
  }
  const queued = [];
  let published = false;
  const send = (message) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
  };

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
  ws.onmessage = async (event) => {
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
        showTransport(current, stream);
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
  ws.onclose = () => {
    if (session === current) dropped("the connection to the gateway closed");
  };

  await pc.setLocalDescription(await pc.createOffer());
  if (session !== current) return;
  const message = { type: "publish", stream, sdp: pc.localDescription.sdp };
  if (token) message.token = token;
  send(message);
  published = true;
  queued.splice(0).forEach(send);
  current.timer = setInterval(() => showStats(current), 1000);
}

// The path the gateway says the media takes (the stream object's `transport`: udp, tcp,
// tcp-http or relay), asked once the stream is live and again every 10 s.
async function showTransport(current, stream) {
  if (session !== current) return;
  try {
    const response = await fetch(`/api/streams/${encodeURIComponent(stream)}`);
    if (response.ok) {
      const object = await response.json();
      current.transport = object.transport ?? null;
    }
  } catch (e) {
    // Shown again at the next try.
  }
  showPath(current);
  setTimeout(() => showTransport(current, stream), 10000);
}

// What the selected candidate pair says ("relay udp → host tcp"), and the gateway's word.
function showPath(current) {
  const parts = [];
  if (current.transport) parts.push(`gateway: ${current.transport}`);
  if (current.pair) parts.push(current.pair);
  $("stat-path").textContent = parts.length ? parts.join("; ") : "–";
  $("stat-path").dataset.transport = current.transport ?? "";
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
  if (pc) pc.close();
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
  if (!current.pc) return;
  const report = await current.pc.getStats();
  let video = null;
  let remote = null;
  let pair = null;
  let selected = null;
  const codecs = new Map();
  report.forEach((s) => {
    if (s.type === "codec") codecs.set(s.id, s.mimeType);
    if (s.type === "outbound-rtp" && s.kind === "video") video = s;
    if (s.type === "remote-inbound-rtp" && s.kind === "video") remote = s;
    if (s.type === "candidate-pair" && s.nominated) pair = s;
    if (s.type === "transport" && s.selectedCandidatePairId) selected = s.selectedCandidatePairId;
  });
  // The pair that carries the media: the transport's selected one, else the nominated.
  const carrying = (selected && report.get(selected)) || pair;
  if (carrying) {
    const local = report.get(carrying.localCandidateId);
    const remote = report.get(carrying.remoteCandidateId);
    if (local && remote) {
      const relay = local.candidateType === "relay" && local.relayProtocol ? ` via ${local.relayProtocol}` : "";
      current.pair = `${local.candidateType} ${local.protocol}${relay} → ${remote.candidateType} ${remote.protocol}`;
      $("stat-path").dataset.local = local.candidateType;
      $("stat-path").dataset.remote = remote.candidateType;
    }
  }
  showPath(current);
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
  await connect().catch((e) => dropped(e.message));
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
