#!/usr/bin/env python3
"""CPU cost of the protocol layer, socket included, per minute of audio, against the floor.

A real aiohttp WebSocket pair on 127.0.0.1: a bare aiohttp server in a subprocess (this file
with ``--serve``), and in this process the box's own path, a ``SessionSupervisor`` with its
``RealtimeSession``. Only this process's CPU is counted (``time.process_time``).

- Up: a minute of 24 kHz PCM16 mono in ``--append-ms`` (100) ``input_audio_buffer.append``
  events through ``SessionSupervisor.append_audio`` (built, encoded, sent), until the server
  has them all.
- Down: a minute of 44.1 kHz PCM16 mono in 40 ms ``response.output_audio.delta`` frames, sent
  by the server as fast as it can, read through ``SessionSupervisor.next_event`` as typed
  ``AudioDelta`` events (read, key-scrubbed, parsed, decoded, queued).
- Floor: a bare aiohttp client on the same server, the same connect options, sending the same
  frames pre-encoded (up) and reading the same frames as text (down), in the same run.

It also prints the codec alone (no socket: build + encode, parse + decode) and which codec ran
(orjson/pybase64, or the standard library). ``--profile up|down`` prints where the box's side
spends its time.

    .venv/bin/python bench/protocol.py [--json] [--repeat N] [--append-ms 100] [--profile up]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

UP_RATE, UP_CHUNK_MS = 24000, 100
DOWN_RATE, DOWN_CHUNK_MS = 44100, 40
KEY = "bench-secret-key-0123456789"
HEARTBEAT_S = 10.0


def _pcm(rate: int, chunk_ms: int, seconds: int = 60) -> list[bytes]:
    rng = np.random.default_rng(1)
    samples = (rng.standard_normal(rate * seconds) * 3000).astype("<i2").tobytes()
    step = rate * chunk_ms // 1000 * 2
    return [samples[i : i + step] for i in range(0, len(samples), step)]


def audio_delta_frames() -> list[str]:
    """A minute of ``response.output_audio.delta`` frames, as the server sends them."""
    return [
        json.dumps(
            {
                "type": "response.output_audio.delta",
                "event_id": f"evt_{i}",
                "response_id": "resp_1",
                "item_id": "item_1",
                "output_index": 0,
                "content_index": 0,
                "delta": base64.b64encode(chunk).decode(),
            }
        )
        for i, chunk in enumerate(_pcm(DOWN_RATE, DOWN_CHUNK_MS))
    ]


def append_frames(chunks: list[bytes]) -> list[str]:
    """The appends as the standard library writes them: what the floor sends."""
    return [
        json.dumps(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(c).decode("ascii")},
            separators=(",", ":"),
        )
        for c in chunks
    ]


def _cpu_ms(fn) -> float:
    start = time.process_time()
    fn()
    return (time.process_time() - start) * 1000


# ---- the server (a subprocess) ------------------------------------------------------------


async def serve() -> None:
    """A bare aiohttp Realtime double: session.created/updated, counts appends and says on
    stdout when a round is in, sends the delta frames on request."""
    from aiohttp import WSMsgType, web

    deltas = audio_delta_frames()
    created = json.dumps(
        {
            "type": "session.created",
            "event_id": "evt_created",
            "session": {
                "id": "sess_bench",
                "audio": {"output": {"format": {"type": "audio/pcm", "rate": DOWN_RATE}}},
            },
        }
    )

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        await ws.send_str(created)
        expected, received = 0, 0
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            if msg.data.startswith('{"type":"input_audio_buffer.append"') or (
                '"input_audio_buffer.append"' in msg.data[:80]
            ):
                received += 1
                if received == expected:
                    print("up", flush=True)
                continue
            event = json.loads(msg.data)
            kind = event.get("type")
            if kind == "session.update":
                session = {"id": "sess_bench", **event.get("session", {})}
                await ws.send_str(json.dumps({"type": "session.updated", "session": session}))
            elif kind == "bench.up":
                expected, received = event["count"], 0
                print("ready", flush=True)
            elif kind == "bench.down":
                gap_s = event.get("gap_ms", 0) / 1000
                for frame in deltas[: event["count"]]:
                    await ws.send_str(frame)
                    if gap_s:
                        await asyncio.sleep(gap_s)
        return ws

    app = web.Application()
    app.router.add_get("/v1/realtime", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    print(port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
    await runner.cleanup()


# ---- the client side (this process) ---------------------------------------------------------


class Server:
    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc, self.port = proc, port
        self.endpoint = f"ws://127.0.0.1:{port}/v1/realtime?model=gpt://bench/model"

    @classmethod
    async def start(cls) -> Server:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--serve",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        port = int(await proc.stdout.readline())
        return cls(proc, port)

    async def line(self) -> str:
        return (await self.proc.stdout.readline()).decode().strip()

    async def stop(self) -> None:
        self.proc.stdin.close()
        await self.proc.wait()


async def _box(server: Server):
    from appliance.config import ApiKey
    from appliance.protocol import server_events as ev
    from appliance.realtime.link_events import Connected
    from appliance.realtime.supervisor import LinkSettings, SessionSupervisor

    settings = LinkSettings(
        endpoint=server.endpoint, api_key=ApiKey(KEY), heartbeat_s=HEARTBEAT_S, input_rate=UP_RATE
    )
    link = SessionSupervisor(settings)
    link.start()
    while not isinstance(await link.next_event(), Connected):
        pass
    return link, ev.AudioDelta


async def _bare(server: Server):
    import aiohttp

    http = aiohttp.ClientSession()
    ws = await http.ws_connect(
        server.endpoint,
        headers={"Authorization": f"Api-Key {KEY}"},
        heartbeat=HEARTBEAT_S,
        max_msg_size=20 * 1024 * 1024,
        autoping=True,
    )
    await ws.receive()  # session.created
    return http, ws


async def measure(
    repeat: int, append_ms: int, gap_ms: float = 0.0, profile: str | None = None
) -> dict:
    up_chunks = _pcm(UP_RATE, append_ms)
    up_frames = append_frames(up_chunks)
    n_down = len(audio_delta_frames())
    server = await Server.start()
    link, audio_delta = await _box(server)
    http, ws = await _bare(server)

    async def box_up() -> None:
        await link.send({"type": "bench.up", "count": len(up_chunks)})
        await server.line()  # ready
        start = time.process_time()
        link.begin_turn()
        for chunk in up_chunks:
            await link.append_audio(chunk)
        await server.line()
        link.end_turn()
        return (time.process_time() - start) * 1000

    async def bare_up() -> None:
        await ws.send_str(json.dumps({"type": "bench.up", "count": len(up_frames)}))
        await server.line()
        start = time.process_time()
        for frame in up_frames:
            await ws.send_str(frame)
        await server.line()
        return (time.process_time() - start) * 1000

    async def box_down() -> float:
        start = time.process_time()
        await link.send({"type": "bench.down", "count": n_down, "gap_ms": gap_ms})
        for _ in range(n_down):
            event = await link.next_event()
            assert isinstance(event, audio_delta), event
        return (time.process_time() - start) * 1000

    async def bare_down() -> float:
        start = time.process_time()
        await ws.send_str(json.dumps({"type": "bench.down", "count": n_down, "gap_ms": gap_ms}))
        for _ in range(n_down):
            msg = await ws.receive()
            assert isinstance(msg.data, str)
        return (time.process_time() - start) * 1000

    runs = {"up": (box_up, bare_up), "down": (box_down, bare_down)}
    try:
        if profile:
            import cProfile
            import pstats

            box_run = runs[profile][0]
            await box_run()  # warm
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(repeat):
                await box_run()
            prof.disable()
            pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
        figures: dict[str, list[float]] = {}
        for _ in range(repeat + 1):  # the first round warms up and is dropped
            for name, (box_run, bare_run) in runs.items():
                figures.setdefault(name, []).append(await box_run())
                figures.setdefault(f"{name}_floor", []).append(await bare_run())
        for values in figures.values():
            del values[0]
    finally:
        await link.close()
        await ws.close()
        await http.close()
        await server.stop()
    med = {name: statistics.median(values) for name, values in figures.items()}
    return {
        "cpu_ms_per_audio_min_up": round(med["up"], 2),
        "cpu_ms_per_audio_min_down": round(med["down"], 2),
        "floor_cpu_ms_per_audio_min_up": round(med["up_floor"], 2),
        "floor_cpu_ms_per_audio_min_down": round(med["down_floor"], 2),
        "ratio_up": round(med["up"] / med["up_floor"], 2),
        "ratio_down": round(med["down"] / med["down_floor"], 2),
        "append_ms": append_ms,
        "down_gap_ms": gap_ms,
        "up_events_per_min": len(up_chunks),
        "down_events_per_min": n_down,
    }


def measure_codec(repeat: int, append_ms: int) -> dict:
    """The codec alone, no socket: build + encode an append; parse + decode a delta."""
    from appliance.protocol import client_events as ce
    from appliance.protocol.parser import parse_server_event

    up_chunks = _pcm(UP_RATE, append_ms)
    down_frames = audio_delta_frames()
    encode_append = getattr(ce, "append_frame", None) or (
        lambda chunk: ce.encode(ce.input_audio_append(chunk))
    )

    def up() -> None:
        for chunk in up_chunks:
            encode_append(chunk)

    def down() -> None:
        for raw in down_frames:
            parse_server_event(raw)

    return {
        "codec_cpu_ms_per_audio_min_up": round(
            statistics.median(_cpu_ms(up) for _ in range(repeat)), 2
        ),
        "codec_cpu_ms_per_audio_min_down": round(
            statistics.median(_cpu_ms(down) for _ in range(repeat)), 2
        ),
    }


def codec_name() -> str:
    try:
        from appliance.protocol import codec
    except ImportError:
        return "stdlib json + base64"
    return codec.NAME


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeat", type=int, default=7, help="rounds; the median is reported")
    parser.add_argument("--append-ms", type=int, default=UP_CHUNK_MS, help="append size (100)")
    parser.add_argument(
        "--gap-ms",
        type=float,
        default=0.0,
        help="the server's pause between deltas (0: a burst); e.g. 1: each frame read on its "
        "own, as when the server paces them (then the floor is mostly the loop's wake-ups)",
    )
    parser.add_argument("--profile", choices=("up", "down"), help="cProfile the box's side")
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false", help="do not put both on one core"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve())
        return
    if args.pin and hasattr(os, "sched_setaffinity"):
        # Both processes on one core: the server fills the socket while the box waits, then
        # the box reads it in large chunks. Without this, how many frames one read gets
        # depends on which process the other engineers' load slows down, and the figures
        # wander by 3x between runs.
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    result = asyncio.run(measure(args.repeat, args.append_ms, args.gap_ms, args.profile))
    result.update(measure_codec(args.repeat, args.append_ms))
    result["codec"] = codec_name()
    if args.json:
        print(json.dumps(result))
        return
    r = result
    print(f"codec: {r['codec']}")
    print(
        f"up   (24 kHz, {r['append_ms']} ms appends, {r['up_events_per_min']} events/min): "
        f"{r['cpu_ms_per_audio_min_up']:.1f} CPU-ms per minute of audio, socket included; "
        f"bare aiohttp {r['floor_cpu_ms_per_audio_min_up']:.1f}; x{r['ratio_up']} "
        f"(goal <= 10; codec alone {r['codec_cpu_ms_per_audio_min_up']:.1f})"
    )
    print(
        f"down (44.1 kHz, {DOWN_CHUNK_MS} ms deltas, {r['down_events_per_min']} events/min): "
        f"{r['cpu_ms_per_audio_min_down']:.1f} CPU-ms per minute of audio, socket included; "
        f"bare aiohttp {r['floor_cpu_ms_per_audio_min_down']:.1f}; x{r['ratio_down']} "
        f"(goal <= 15; codec alone {r['codec_cpu_ms_per_audio_min_down']:.1f})"
    )


if __name__ == "__main__":
    main()
