"""A WHIP publisher that is not ours: aiortc sends a test picture and tone to a WHIP URL.

Usage: aiortc_whip.py URL [--token T] [--seconds N] [--no-audio] [--codec h264]
                       [--ice-servers API_URL] [--relay]
Prints one JSON line per step: {"step": "created", "status": 201, "location": ...,
"candidates": ["host", ...]} (the offer's candidate types).
--ice-servers takes the ICE servers from the gateway's /api/ice-servers (with the token);
--relay gathers relay candidates only (iceTransportPolicy "relay"), so the media can only
go through the TURN server.
"""

import argparse
import asyncio
import json
import sys

import aiohttp
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaPlayer


def say(**fields):
    print(json.dumps(fields), flush=True)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--token")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--no-audio", action="store_true")
    parser.add_argument("--codec", help="offer only this video codec (h264, vp8)")
    parser.add_argument("--ice-servers", help="the gateway's /api/ice-servers URL")
    parser.add_argument("--relay", action="store_true", help="relay candidates only")
    args = parser.parse_args()

    # No ICE servers unless the gateway gives some: aiortc's default STUN server is off
    # this machine, and the tests reach nothing past it (host candidates on loopback are
    # all the gateway needs).
    ice_servers = []
    if args.ice_servers:
        headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
        async with aiohttp.ClientSession() as http:
            async with http.get(args.ice_servers, headers=headers) as r:
                given = await r.json()
                say(step="ice-servers", status=r.status, servers=given)
                if r.status != 200:
                    return 3
        ice_servers = [
            RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in given
        ]
    policy = RTCIceTransportPolicy.RELAY if args.relay else RTCIceTransportPolicy.ALL
    pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers, iceTransportPolicy=policy))
    video = MediaPlayer("testsrc=size=320x240:rate=30", format="lavfi")
    transceiver = pc.addTransceiver(video.video, direction="sendonly")
    if args.codec:
        wanted = f"video/{args.codec}".lower()
        codecs = RTCRtpSender.getCapabilities("video").codecs
        transceiver.setCodecPreferences([c for c in codecs if c.mimeType.lower() == wanted])
    if not args.no_audio:
        audio = MediaPlayer("sine=frequency=440:sample_rate=48000", format="lavfi")
        pc.addTransceiver(audio.audio, direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    kinds = [
        line.split(" typ ")[1].split()[0]
        for line in pc.localDescription.sdp.splitlines()
        if line.startswith("a=candidate:") and " typ " in line
    ]

    headers = {"Content-Type": "application/sdp"}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    async with aiohttp.ClientSession() as http:
        async with http.post(args.url, data=pc.localDescription.sdp, headers=headers) as r:
            body = await r.text()
            location = r.headers.get("Location")
            say(step="created", status=r.status, location=location, etag=r.headers.get("ETag"),
                candidates=kinds)
            if r.status != 201:
                say(step="error", body=body)
                await pc.close()
                return 3
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
        for _ in range(100):
            if pc.connectionState == "connected":
                break
            await asyncio.sleep(0.1)
        say(step="connection", state=pc.connectionState)
        await asyncio.sleep(args.seconds)
        session = aiohttp.helpers.URL(args.url).join(aiohttp.helpers.URL(location))
        async with http.delete(str(session), headers=headers) as r:
            say(step="deleted", status=r.status)
    await pc.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
