// Publishes the camera and microphone to the gateway over WebSocket signalling.
// ?stream=NAME&autostart=1 publishes the default devices at once.
"use strict";

const $ = (id) => document.getElementById(id);
let session = null;

function setState(state, reason) {
  $("state").textContent = state;
  $("state").className = state;
  $("reason").textContent = reason ? `(${reason})` : "";
  document.body.dataset.state = state;
}

function showOutputs(stream, outputs) {
  const base = location.origin;
  const lines = [];
  if (outputs.sdp) {
    lines.push(`SDP: ${base}${outputs.sdp}`);
    lines.push(`ffplay -protocol_whitelist file,http,tcp,udp,rtp -i ${base}${outputs.sdp}`);
  }
  if (outputs.hls) lines.push(`HLS: ${base}${outputs.hls}`);
  $("outputs").textContent = lines.join("\n");
  $("outputs").hidden = lines.length === 0;
}

async function start() {
  const stream = $("stream").value.trim();
  const token = $("token").value;
  setState("connecting");
  $("start").disabled = true;
  $("stop").disabled = false;

  const media = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
  $("preview").srcObject = media;
  const pc = new RTCPeerConnection();
  session = { pc, ws: null, media };
  for (const track of media.getTracks()) {
    pc.addTransceiver(track, { direction: "sendonly", streams: [media] });
  }
  const queued = [];
  let published = false;
  let ws = null;
  const send = (message) => ws.send(JSON.stringify(message));

  pc.onicecandidate = (event) => {
    const message = event.candidate
      ? { type: "candidate", candidate: event.candidate.candidate,
          sdpMid: event.candidate.sdpMid, sdpMLineIndex: event.candidate.sdpMLineIndex }
      : { type: "candidate", candidate: null };
    if (published) send(message); else queued.push(message);
  };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === "failed") setState("error", "connection failed");
  };

  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  // The socket opens only once the offer is ready, so that no event is missed.
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(`${scheme}//${location.host}/ws`);
  session.ws = ws;
  ws.onopen = () => {
    const message = { type: "publish", stream, sdp: pc.localDescription.sdp };
    if (token) message.token = token;
    send(message);
    published = true;
    queued.splice(0).forEach(send);
  };
  ws.onmessage = async (event) => {
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
        setState("live");
        showOutputs(message.stream, message.outputs);
        break;
      case "ended":
        setState("ended", message.reason);
        stop(false);
        break;
      case "error":
        setState("error", `${message.code} ${message.error}: ${message.message}`);
        stop(false);
        break;
    }
  };
  ws.onclose = () => {
    if ($("state").textContent === "live" || $("state").textContent === "connecting") {
      setState("ended", "connection to the gateway closed");
    }
    stop(false);
  };
}

function stop(unpublish = true) {
  if (!session) return;
  const { pc, ws, media } = session;
  session = null;
  if (ws) {
    if (unpublish && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ type: "unpublish" }));
    }
    setTimeout(() => ws.close(), unpublish ? 500 : 0);
  }
  pc.close();
  media.getTracks().forEach((t) => t.stop());
  $("start").disabled = false;
  $("stop").disabled = true;
}

$("form").addEventListener("submit", (event) => {
  event.preventDefault();
  start().catch((e) => { setState("error", e.message); stop(false); });
});
$("stop").addEventListener("click", () => stop(true));

const params = new URLSearchParams(location.search);
if (params.get("stream")) $("stream").value = params.get("stream");
if (params.get("token")) $("token").value = params.get("token");
if (params.get("autostart") === "1") {
  start().catch((e) => { setState("error", e.message); stop(false); });
}
