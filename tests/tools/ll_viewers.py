"""Simulated low-latency HLS viewers of one stream, as hls.js behaves at the live edge:
each loads the media playlist once, then asks for the next part with a blocking reload
(`_HLS_msn`, `_HLS_part`) and fetches the part that answer lists, for as long as it runs.

Every viewer asks for the same URLs, so a shared cache in front of the gateway can hold
identical requests together. One more viewer watches the origin directly, so that the
time the cache adds is known: for each part, when a viewer had it against when the
origin's viewer had it. Prints one JSON object: the requests made, their statuses, the
distinct URLs, the requests made straight to the origin (`origin_requests`), how far
behind the live edge (in parts, read from the origin's own playlist once a second) the
viewers were, and the time the cache added.

Usage: ll_viewers.py --base URL --origin URL --stream NAME --viewers N --seconds S
"""

import argparse
import asyncio
import json
import re
import time

import aiohttp

PART_ID = re.compile(r"-p(\d+)\.m4s")
PREFIX = re.compile(r"^(s[0-9a-f]+-)")


def parse(playlist):
    """The open segment's number, its parts so far, and the last part's URI."""
    sequence = 0
    segments = 0
    parts_in_open = 0
    last_part = None
    for line in playlist.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            sequence = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-PART:"):
            parts_in_open += 1
            uri = re.search(r'URI="([^"]+)"', line)
            if uri:
                last_part = uri.group(1)
        elif line and not line.startswith("#"):
            segments += 1
            parts_in_open = 0
    return sequence + segments, parts_in_open, last_part


def part_id(uri):
    found = PART_ID.search(uri or "")
    return int(found.group(1)) if found else None


class Viewer:
    def __init__(self):
        self.last_part = None
        self.parts = 0
        # When this viewer had each part (monotonic seconds), by URI.
        self.had = {}


def new_stats():
    return {"requests": 0, "status": {}, "urls": set(), "errors": [], "prefixes": set()}


async def watch(session, base, viewer, stats, deadline):
    playlist_url = f"{base}/stream.m3u8"

    async def get(url):
        stats["requests"] += 1
        stats["urls"].add(url)
        try:
            async with session.get(url) as response:
                body = await response.read()
                stats["status"][str(response.status)] = (
                    stats["status"].get(str(response.status), 0) + 1
                )
                if response.status != 200 and len(stats["errors"]) < 10:
                    stats["errors"].append(f"{response.status} {url}: {body[:200]!r}")
                return response.status, body
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            stats["status"]["failed"] = stats["status"].get("failed", 0) + 1
            if len(stats["errors"]) < 10:
                stats["errors"].append(f"{url}: {e!r}")
            return None, b""

    status, body = await get(playlist_url)
    while time.monotonic() < deadline:
        if status != 200:
            await asyncio.sleep(0.5)
            status, body = await get(playlist_url)
            continue
        msn, part, _ = parse(body.decode())
        status, body = await get(f"{playlist_url}?_HLS_msn={msn}&_HLS_part={part}")
        if status != 200:
            continue
        _, _, uri = parse(body.decode())
        if uri and uri != viewer.last_part:
            for prefix in PREFIX.findall(uri):
                stats["prefixes"].add(prefix)
            part_status, _ = await get(f"{base}/{uri}")
            if part_status == 200:
                viewer.last_part = uri
                viewer.parts += 1
                viewer.had[uri] = time.monotonic()


async def monitor(session, origin, viewers, lags, deadline, started, counted):
    """Once a second: how many parts each viewer is behind the origin's newest."""
    while time.monotonic() < deadline:
        await asyncio.sleep(1)
        if time.monotonic() < started + 3:
            continue
        counted["requests"] += 1
        try:
            async with session.get(f"{origin}/stream.m3u8") as response:
                text = await response.text()
        except aiohttp.ClientError:
            continue
        _, _, newest = parse(text)
        live = part_id(newest)
        if live is None:
            continue
        for viewer in viewers:
            mine = part_id(viewer.last_part)
            if mine is not None:
                lags.append(live - mine)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True, help="the cache's address")
    parser.add_argument("--origin", required=True, help="the gateway's address")
    parser.add_argument("--stream", required=True)
    parser.add_argument("--viewers", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    base = f"{args.base}/streams/{args.stream}"
    origin = f"{args.origin}/streams/{args.stream}"
    stats = new_stats()
    origin_stats = new_stats()
    viewers = [Viewer() for _ in range(args.viewers)]
    at_origin = Viewer()
    lags = []
    timeout = aiohttp.ClientTimeout(total=20)
    connector = aiohttp.TCPConnector(limit=0)
    started = time.monotonic()
    deadline = started + args.seconds
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def staggered(index, viewer):
            # Viewers join over the first second, as an audience does.
            await asyncio.sleep(index / max(1, args.viewers))
            await watch(session, base, viewer, stats, deadline)

        await asyncio.gather(
            monitor(session, origin, viewers, lags, deadline, started, origin_stats),
            watch(session, origin, at_origin, origin_stats, deadline),
            *(staggered(i, v) for i, v in enumerate(viewers)),
        )
    lags.sort()
    # Parts from 3 s on: a viewer that joins starts from a playlist up to one part old.
    added = sorted(
        (had - at_origin.had[uri]) * 1000
        for viewer in viewers
        for uri, had in viewer.had.items()
        if uri in at_origin.had and at_origin.had[uri] > started + 3
    )
    print(
        json.dumps(
            {
                "viewers": args.viewers,
                "requests": stats["requests"],
                "status": stats["status"],
                "distinct_urls": len(stats["urls"]),
                "errors": stats["errors"],
                "prefixes": sorted(stats["prefixes"]),
                "parts": [v.parts for v in viewers],
                "lag_samples": len(lags),
                "lag_p50": lags[len(lags) // 2] if lags else None,
                "lag_p99": lags[int(len(lags) * 0.99)] if lags else None,
                "lag_max": lags[-1] if lags else None,
                "origin_requests": origin_stats["requests"],
                "added_ms_p50": round(added[len(added) // 2], 1) if added else None,
                "added_ms_p99": round(added[int(len(added) * 0.99)], 1) if added else None,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
