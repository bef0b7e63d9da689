"""Replay a recorded Realtime trace: a user's trace becomes a test server (a regression test).

A trace (appliance/realtime/trace.py, JSON lines) holds, for each session the box opened (a
``connect`` note starts one), the client's events (``sent``) and the server's frames (``recv``)
in the order the box saw them. :func:`script_from_trace` turns it into a script:

- the frames that came before the client said anything (``session.created``) are sent on
  connect;
- the frames that followed a client event, up to the next one, are that event's reply. A reply
  is keyed by the event's type and its occurrence in the session (the 2nd ``response.create``),
  except the audio appends: their replies (speech_started in server VAD) are keyed by how much
  audio the client had appended by then, so a client that cuts its audio into other chunks still
  meets them at the same point of the question;
- a session the server closed (``closed`` note, ``by: server``) is closed after its last reply
  with the recorded code (1006, or no code, is a dropped TCP connection); a refused handshake
  (``handshake`` note with a status other than 101) is refused again with that status; a
  connect that failed before any HTTP answer is skipped.

:class:`ReplayServer` is a small aiohttp WebSocket server on 127.0.0.1 that plays session *i* of
the script on the *i*-th connection (a connection beyond the script is refused with HTTP 503 and
counted in ``divergences``). Audio markers (``"<audio N bytes>"``) are sent as N bytes of a tone;
an ``event_id`` the recorded client sent and a recorded server frame names (an ``error`` about a
``session.update``) is rewritten to the live client's ``event_id`` of the same event. It depends
on nothing but aiohttp and the trace format (not on tests/realtime_server.py).

``pace=0`` (default) sends the replies at once; ``pace=1.0`` keeps the recorded gaps between the
frames of a reply (``0.5``: half of them).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

APPEND = "input_audio_buffer.append"
AUDIO_MARKER = re.compile(r"^<audio (\d+) bytes>$")


@dataclass
class Frame:
    """One server frame: a JSON event, a raw text frame, or a binary frame of ``binary`` bytes."""

    event: dict[str, Any] | None = None
    raw: str | None = None
    binary: int | None = None
    delay_s: float = 0.0  # after the previous frame of the reply (or after its trigger)


@dataclass
class Reply:
    """What the server sent after one client event."""

    trigger: str  # the client event's type
    occurrence: int  # its index among the session's events of that type (appends: unused)
    appended: int  # appends: the audio bytes the client had appended, this one included
    event_id: str | None  # the event_id the recorded client event carried
    frames: list[Frame] = field(default_factory=list)


@dataclass
class SessionScript:
    on_connect: list[Frame] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    refuse_status: int | None = None  # a refused handshake
    server_close: int | None = None  # the server closed the session with this code
    server_closed: bool = False


def read_trace(path: str | Path) -> list[dict[str, Any]]:
    """The lines of a trace file (a torn last line, from a box that lost power, is skipped)."""
    lines = []
    for text in Path(path).read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            lines.append(json.loads(text))
    return lines


def _audio_size(value: Any) -> int:
    match = AUDIO_MARKER.match(value) if isinstance(value, str) else None
    return int(match.group(1)) if match else 0


def script_from_trace(lines: Iterable[dict[str, Any]]) -> list[SessionScript]:
    """The sessions of a trace as replay scripts (see the module docstring)."""
    sessions: list[SessionScript] = []
    current: SessionScript | None = None
    counts: dict[str, int] = {}
    appended = 0
    last_t = 0.0
    target: list[Frame] | None = None
    for line in lines:
        kind, event, t = line.get("dir"), line.get("event") or {}, float(line.get("t", 0.0))
        if kind == "note":
            what = event.get("type")
            if what == "connect":
                current = SessionScript()
                sessions.append(current)
                counts, appended, target = {}, 0, current.on_connect
            elif current is None:
                continue
            elif what == "handshake" and event.get("status") != 101:
                current.refuse_status = int(event["status"])
            elif what == "connect_failed":
                sessions.remove(current)
                current = None
            elif what == "closed" and event.get("by") == "server":
                current.server_closed = True
                current.server_close = event.get("code")
            elif what == "binary_frame" and target is not None:
                target.append(Frame(binary=int(event.get("bytes", 0)), delay_s=t - last_t))
            last_t = t
        elif current is None:
            continue
        elif kind == "sent":
            etype = str(event.get("type", ""))
            if etype == APPEND:
                appended += _audio_size(event.get("audio"))
            reply = Reply(etype, counts.get(etype, 0), appended, event.get("event_id"))
            counts[etype] = counts.get(etype, 0) + 1
            current.replies.append(reply)
            target, last_t = reply.frames, t
        elif kind == "recv" and target is not None:
            frame = Frame(raw=event["raw"]) if set(event) == {"raw"} else Frame(event=event)
            frame.delay_s = max(0.0, t - last_t)
            target.append(frame)
            last_t = t
    return sessions


def tone_bytes(n: int) -> bytes:
    """``n`` bytes of a quiet PCM16 tone (an audio marker's stand-in)."""
    samples = (np.sin(np.arange((n + 1) // 2) * 0.06) * 3000).astype("<i2")
    return samples.tobytes()[:n]


def _materialize(value: Any, ids: dict[str, str]) -> Any:
    """A recorded event made sendable: audio markers to audio, recorded client ids to live."""
    if isinstance(value, dict):
        return {k: _materialize(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_materialize(v, ids) for v in value]
    if isinstance(value, str):
        match = AUDIO_MARKER.match(value)
        if match:
            return base64.b64encode(tone_bytes(int(match.group(1)))).decode("ascii")
        return ids.get(value, value)
    return value


@dataclass
class ReplayConnection:
    index: int
    headers: dict[str, str]
    received: list[dict[str, Any]] = field(default_factory=list)  # the live client's events
    played: int = 0  # replies sent


class ReplayServer:
    """Serves a trace's sessions; see the module docstring. ``async with ReplayServer(s):``."""

    def __init__(self, sessions: list[SessionScript], *, pace: float = 0.0) -> None:
        self.sessions = sessions
        self.pace = pace
        self.connections: list[ReplayConnection] = []
        self.divergences: list[str] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> ReplayServer:
        return cls(script_from_trace(read_trace(path)), **kwargs)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    async def __aenter__(self) -> ReplayServer:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    def unplayed(self) -> list[str]:
        """Recorded replies the live client never asked for, as ``session i: type #n``."""
        missing = []
        for i, script in enumerate(self.sessions):
            played = self.connections[i].played if i < len(self.connections) else 0
            for reply in script.replies[played:]:
                if reply.frames:
                    missing.append(f"session {i}: {reply.trigger} #{reply.occurrence}")
        return missing

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        index = len(self.connections)
        conn = ReplayConnection(index, dict(request.headers))
        self.connections.append(conn)
        if index >= len(self.sessions):
            self.divergences.append(f"connection {index}: the trace has no such session")
            return web.Response(status=503, text="no more sessions in the trace")
        script = self.sessions[index]
        if script.refuse_status is not None:
            return web.Response(status=script.refuse_status, text="refused (replayed)")
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        outbox: asyncio.Queue[tuple[list[Frame], bool] | None] = asyncio.Queue()
        ids: dict[str, str] = {}
        sender = asyncio.create_task(self._send(ws, outbox, ids, request, script))
        self._tasks.add(sender)
        sender.add_done_callback(self._tasks.discard)
        pending = list(script.replies)
        counts: dict[str, int] = {}
        appended = 0
        await outbox.put((script.on_connect, not pending and script.server_closed))
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            try:
                event = json.loads(msg.data)
            except ValueError:
                self.divergences.append(f"connection {index}: a client frame is not JSON")
                continue
            conn.received.append(event)
            etype = str(event.get("type", ""))
            if etype == APPEND:
                with contextlib.suppress(ValueError, TypeError):
                    appended += len(base64.b64decode(event.get("audio", "")))
            occurrence = counts.get(etype, 0)
            counts[etype] = occurrence + 1
            due = []
            while pending and self._matches(pending[0], etype, occurrence, appended):
                due.append(pending.pop(0))
                if due[-1].trigger != APPEND:
                    break
            for reply in due:
                if reply.event_id and event.get("event_id"):
                    ids[reply.event_id] = event["event_id"]
                conn.played += 1
                await outbox.put((reply.frames, not pending and script.server_closed))
        await outbox.put(None)
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        return ws

    @staticmethod
    def _matches(reply: Reply, etype: str, occurrence: int, appended: int) -> bool:
        if reply.trigger == APPEND:
            # Audio replies come due by the amount appended; another event type releases every
            # audio reply before it (the client committed: all its audio is in).
            return etype != APPEND or appended >= reply.appended
        return reply.trigger == etype and reply.occurrence == occurrence

    async def _send(
        self,
        ws: web.WebSocketResponse,
        outbox: asyncio.Queue[tuple[list[Frame], bool] | None],
        ids: dict[str, str],
        request: web.Request,
        script: SessionScript,
    ) -> None:
        while (item := await outbox.get()) is not None:
            frames, then_close = item
            for frame in frames:
                if self.pace and frame.delay_s > 0:
                    await asyncio.sleep(frame.delay_s * self.pace)
                if ws.closed:
                    return
                with contextlib.suppress(ConnectionError, RuntimeError):
                    if frame.binary is not None:
                        await ws.send_bytes(tone_bytes(frame.binary))
                    elif frame.raw is not None:
                        await ws.send_str(frame.raw)
                    else:
                        await ws.send_str(json.dumps(_materialize(frame.event, ids)))
            if then_close:
                code = script.server_close
                if code in (None, 1005, 1006):  # no close frame was seen: the link dropped
                    if request.transport is not None:
                        request.transport.close()
                else:
                    await ws.close(code=int(code))
                return
