"""The project's Realtime test server (tests/realtime_server.py), run inside the VM guest.

Runs on Debian's python3 with the libraries of the wheelhouse's ``srvlib`` on PYTHONPATH and
tests/ on it too. The box talks to it on 127.0.0.1; the guest script steers it and reads what it
saw through a small HTTP side door on another port:

    GET  /stats                       what the server received (JSON, see stats())
    POST /answer?freq=HZ&seconds=S    the next answers: a sine tone of that pitch and length

    python3 rt_server.py [--port P] --port-file F --control-port-file G
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
from pathlib import Path

import numpy as np
import realtime_server
from aiohttp import web
from realtime_server import AudioAnswer, RealtimeTestServer, tone

# The pytest suite validates every client event against the openai package's types; here,
# under TCG, building that validator would cost the guest ~40 s per start: left out.
realtime_server.client_event_adapter = lambda: None
realtime_server.validate_client_event = lambda *_args, **_kw: []


def dominant_hz(pcm: bytes, rate: int) -> float:
    """The strongest frequency of PCM16 mono audio (0 for silence)."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    if len(x) < 256 or not np.any(x):
        return 0.0
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def stats(server: RealtimeTestServer, sent: list[dict]) -> dict:
    types = collections.Counter(e.get("type", "?") for e in server.received if isinstance(e, dict))
    return {
        "connections": len(server.connections),
        "types": dict(types),
        "commits": [
            {"seconds": len(a) / 2 / 24000, "hz": round(dominant_hz(a, 24000), 1)}
            for a in server.committed_audio
        ],
        "truncations": server.truncations,
        "answers_sent": sent,
        "validation_errors": server.validation_errors[:5],
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--control-port-file", required=True)
    args = parser.parse_args()
    server = RealtimeTestServer(api_key="vm-test-key-0123456789", port=args.port)
    sent: list[dict] = []
    answer = {"freq": 660.0, "seconds": 1.5}

    def next_answer() -> AudioAnswer:
        pcm = tone(server.output_rate, answer["seconds"], freq=answer["freq"], amplitude=0.4)
        sent.append(dict(answer, rate=server.output_rate))
        return AudioAnswer(f"A {answer['freq']:.0f} hertz answer.", pcm=pcm)

    class Answers(collections.deque):  # a fresh tone answer whenever the server takes one
        def __bool__(self) -> bool:
            return True

        def popleft(self):
            return next_answer()

    await server.start()
    server.answers = Answers()

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(stats(server, sent))

    async def set_answer(request: web.Request) -> web.Response:
        answer["freq"] = float(request.query.get("freq", answer["freq"]))
        answer["seconds"] = float(request.query.get("seconds", answer["seconds"]))
        return web.json_response(answer)

    app = web.Application()
    app.router.add_get("/stats", get_stats)
    app.router.add_post("/answer", set_answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    control_port = runner.addresses[0][1]
    # The port files last: once they are there, both ports answer.
    for path, port in ((args.control_port_file, control_port), (args.port_file, server.port)):
        Path(path).write_text(f"{port}\n")  # noqa: ASYNC240 (tiny, once, before serving)
    print(json.dumps({"port": server.port, "control": control_port}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
