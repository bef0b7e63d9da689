"""The project's Realtime test server (tests/realtime_server.py), run inside the VM guest.

Runs on Debian's python3 with the libraries of the wheelhouse's ``srvlib`` on PYTHONPATH and
tests/ on it too. The box talks to it on 127.0.0.1; the guest script steers it and reads what it
saw through a small HTTP side door on another port:

    GET  /stats                       what the server received (JSON, see stats())
    POST /answer?freq=HZ&seconds=S    the next answers: a sine tone of that pitch and length
    POST /answer?kind=speech&seconds=S   ... or speech-like sound (room.py's), that long
    POST /echo?on=1                   the echo test (room.py): from now on every appended audio
                                      is kept, and once the VAD has committed a question it
                                      hears nothing (no barge-in, no new turn) until ?on=0
    GET  /mic                         the audio appended since /echo?on=1 (raw PCM16)

    python3 rt_server.py [--port P] --port-file F --control-port-file G
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import json
from pathlib import Path

import numpy as np
import realtime_server
from aiohttp import web
from realtime_server import AudioAnswer, RealtimeTestServer, tone
from room import speechlike, voice

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


class EchoTestServer(RealtimeTestServer):
    """The test server, with the echo test's switch (see /echo above)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.echo_test = False
        self.vad_deaf = False
        self.mic = bytearray()
        self.commits_before = 0

    async def _on_append(self, conn, event) -> None:
        if self.echo_test:
            with contextlib.suppress(ValueError):
                self.mic += base64.b64decode(event.get("audio") or "")
        await super()._on_append(conn, event)

    async def _vad(self, conn, raw, vad) -> None:
        # Deaf from the first commit on: the answer is streamed faster than it plays, so the
        # response may be over (conn.response None) long before the box has played it.
        if self.echo_test and (self.vad_deaf or len(self.committed_audio) > self.commits_before):
            self.vad_deaf = True
            return
        await super()._vad(conn, raw, vad)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--control-port-file", required=True)
    parser.add_argument("--voices", default="", help="far.wav: the speech answer (echo test)")
    args = parser.parse_args()
    server = EchoTestServer(api_key="vm-test-key-0123456789", port=args.port)
    sent: list[dict] = []
    answer = {"freq": 660.0, "seconds": 1.5, "kind": "tone"}

    def next_answer() -> AudioAnswer:
        if answer["kind"] == "speech":
            seconds = float(answer["seconds"])
            if args.voices and Path(args.voices, "far.wav").exists():  # espeak-ng's, -18 dBFS
                x = voice(Path(args.voices, "far.wav"), -18.0, seconds)
                if server.output_rate != 24000:
                    t = np.arange(int(len(x) * server.output_rate / 24000)) * 24000
                    x = np.interp(t / server.output_rate, np.arange(len(x)), x)
            else:
                x = speechlike(seconds, 21, 120, server.output_rate) * 0.1 * 32768
            pcm = np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()
            sent.append(dict(answer, rate=server.output_rate))
            return AudioAnswer("A speech-like answer.", pcm=pcm)
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
        answer["kind"] = request.query.get("kind", "tone")
        return web.json_response(answer)

    async def set_echo(request: web.Request) -> web.Response:
        server.echo_test = request.query.get("on", "1") == "1"
        server.vad_deaf = False
        if server.echo_test:
            server.mic = bytearray()
            server.commits_before = len(server.committed_audio)
        return web.json_response({"echo_test": server.echo_test})

    async def get_mic(request: web.Request) -> web.Response:
        return web.Response(body=bytes(server.mic), content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/stats", get_stats)
    app.router.add_post("/answer", set_answer)
    app.router.add_post("/echo", set_echo)
    app.router.add_get("/mic", get_mic)
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
