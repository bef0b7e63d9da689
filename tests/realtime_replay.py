"""Replaying recorded server frames on the test server (RealtimeTestServer.script_frames).

A script is a list of steps: a server frame (a dict, sent as JSON as it is; a str or bytes, sent
as a raw frame), `WaitFor(type)` (wait until the client sends an event of that type, counting
from the previous wait), `Pause(seconds)` or `CloseWith(code)`. An audio delta recorded as its
byte count (an int, or the trace marker "<audio N bytes>") is sent as that many bytes of tone.
`infer_waits()` builds a script from the server's frames alone. (tests/trace_replay.py replays a
whole trace of the box, both sides, on a server of its own; this one replays inside the test
server, with its handshake checks, validation and recordings.)
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from dataclasses import dataclass
from typing import Any

try:  # importable both as `tests.realtime_replay` and as a top-level module
    from .realtime_scripts import Gone, tone
except ImportError:
    from realtime_scripts import Gone, tone  # type: ignore[no-redef]

AUDIO_MARKER = re.compile(r"^<audio (\d+) bytes>$")


@dataclass(frozen=True)
class WaitFor:
    """Replay step: wait until the client sends an event of this type."""

    type: str


@dataclass(frozen=True)
class Pause:
    """Replay step: wait this long."""

    seconds: float


@dataclass(frozen=True)
class CloseWith:
    """Replay step: close the WebSocket with this code (the script ends)."""

    code: int = 1000


# Server event -> the client event a recorded server frame of that type answers, for traces
# that hold only the server's side (best effort: server-VAD commits and responses, which the
# server starts on its own, would wait for nothing in a real trace).
ANSWERS_TO = {
    "session.updated": "session.update",
    "input_audio_buffer.committed": "input_audio_buffer.commit",
    "input_audio_buffer.cleared": "input_audio_buffer.clear",
    "response.created": "response.create",
    "conversation.item.truncated": "conversation.item.truncate",
    "conversation.item.deleted": "conversation.item.delete",
    "conversation.item.retrieved": "conversation.item.retrieve",
}


def infer_waits(frames: list[Any]) -> list[Any]:
    """A replay script from server frames alone: a WaitFor before each frame that answers a
    client event (ANSWERS_TO), unless the previous frame was server VAD's speech_stopped."""
    script: list[Any] = []
    previous = None
    for frame in frames:
        ftype = frame.get("type") if isinstance(frame, dict) else None
        wanted = ANSWERS_TO.get(ftype) if isinstance(ftype, str) else None
        vad_commit = ftype == "input_audio_buffer.committed" and (
            previous == "input_audio_buffer.speech_stopped"
        )
        if wanted is not None and not vad_commit:
            script.append(WaitFor(wanted))
        script.append(frame)
        previous = ftype
    return script


async def _wait_for_client(conn: Any, wanted: str, seen: int) -> int:
    """Wait for a client event of type `wanted` at or after index `seen`; the index after it."""
    while True:
        conn.client_event.clear()
        events = conn.record.events
        while seen < len(events):
            event = events[seen]
            seen += 1
            if isinstance(event, dict) and event.get("type") == wanted:
                return seen
        await conn.client_event.wait()


def _with_audio(frame: dict[str, Any], rate: int) -> dict[str, Any]:
    """A recorded audio delta given as its byte count becomes that much tone."""
    delta = frame.get("delta")
    if isinstance(delta, str) and (marker := AUDIO_MARKER.match(delta)):
        delta = int(marker.group(1))
    if frame.get("type") in ("response.output_audio.delta", "response.audio.delta") and (
        isinstance(delta, int) and not isinstance(delta, bool)
    ):
        pcm = tone(rate, (delta // 2) / rate)[: delta - delta % 2]
        return {**frame, "delta": base64.b64encode(pcm).decode("ascii")}
    return frame


async def play_script(conn: Any, script: list[Any]) -> None:
    """The task that replays one connection's script (RealtimeTestServer.script_frames)."""
    seen = 0
    try:
        for step in script:
            if isinstance(step, WaitFor):
                seen = await _wait_for_client(conn, step.type, seen)
            elif isinstance(step, Pause):
                await asyncio.sleep(step.seconds)
            elif isinstance(step, CloseWith):
                conn.request_close(step.code)
                return
            elif isinstance(step, dict):
                text = json.dumps(_with_audio(step, conn.output_rate), ensure_ascii=False)
                await conn.send_raw(text, json.loads(text))
            elif isinstance(step, (str, bytes)):
                await conn.send_raw(step)
            else:
                raise TypeError(f"not a replay step: {step!r}")
    except Gone:
        pass
