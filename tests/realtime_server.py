"""A local test double of Yandex's speech-to-speech Realtime API (OpenAI Realtime GA protocol).

An aiohttp WebSocket server on 127.0.0.1 with a random free port. See
/work/shared/realtime-protocol.md for the protocol it speaks. Usage::

    async with RealtimeTestServer() as server:
        server.answers.append(AudioAnswer("Hello"))
        ...connect to f"{server.url}?model={MODEL}" with "Authorization: api-key test-key"...

The test scripts a scenario through `answers`, `user_transcripts` and the fault methods, then
checks what the client did through the recordings (`connections`, `received`, ...).

Server VAD is simulated once a client's session.update sets `turn_detection` to server_vad (the
default session's VAD is not, so scripted push-to-talk tests need not turn it off): an energy
detector over the appended audio sends `speech_started`/`speech_stopped`, commits by itself and,
with `create_response`, plays the next scripted answer; with `interrupt_response`, speech during
a response cancels it (`response.done` cancelled, reason turn_detected).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import copy
import json
import logging
import math
import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

try:  # importable both as `tests.realtime_server` and as a top-level module
    from . import realtime_scripts as rs
    from .event_validation import client_event_adapter, validate_client_event
except ImportError:
    import realtime_scripts as rs  # type: ignore[no-redef]
    from event_validation import client_event_adapter, validate_client_event  # type: ignore[no-redef]

AudioAnswer = rs.AudioAnswer
ToolCallAnswer = rs.ToolCallAnswer
ErrorAnswer = rs.ErrorAnswer
Answer = rs.Answer
tone = rs.tone

__all__ = [
    "MODEL",
    "PATH",
    "AudioAnswer",
    "ConnectionRecord",
    "ErrorAnswer",
    "RealtimeTestServer",
    "ToolCallAnswer",
    "tone",
]

log = logging.getLogger(__name__)

PATH = "/v1/realtime/openai"
MODEL = "gpt://test-folder/speech-realtime-250923"
INPUT_RATE = 24000
MIN_COMMIT_BYTES = INPUT_RATE * 2 // 10  # 100 ms of PCM16 mono at 24 kHz
VAD_FRAME_MS = 10
VAD_LEVEL = 0.02  # server VAD: a frame is speech if its RMS (full scale 1) > threshold x this
_MODEL_RE = re.compile(r"^gpt://[^/]+/\S+$")


@dataclass
class ConnectionRecord:
    """What happened on one accepted WebSocket connection."""

    index: int
    query: dict[str, str]
    headers: dict[str, str]  # without Authorization
    events: list[Any] = field(default_factory=list)  # client events received, in order
    conversation: list[dict[str, Any]] = field(default_factory=list)  # items the client created
    session: dict[str, Any] = field(default_factory=dict)  # the effective session
    sent: list[Any] = field(default_factory=list)  # server events (dicts) and raw junk frames
    close_code: int | None = None  # the server's code if it closed first, else the client's
    closed: bool = False


class _Conn:
    """Per-connection state."""

    def __init__(self, server: RealtimeTestServer, request: web.Request, ws, record):
        self.server = server
        self.request = request
        self.ws: web.WebSocketResponse = ws
        self.record: ConnectionRecord = record
        self.output_rate = server.output_rate
        self.buffer = bytearray()
        self.items: dict[str, dict[str, Any]] = {}  # the conversation, in order
        self.audio_sent: dict[str, int] = {}  # assistant item id -> audio bytes sent
        self.call_ids: set[str] = set()
        self.response: rs.ResponseState | None = None
        self.lock = asyncio.Lock()
        self.silent = False
        self.aborted = False
        self.close_task: asyncio.Task[None] | None = None
        self.closed_with: int | None = None  # the code of a close the server started
        self.timer: asyncio.Task[None] | None = None
        # Server VAD (when the session's turn_detection is server_vad).
        self.vad_rest = bytearray()  # appended audio not yet cut into frames
        self.vad_ms = 0  # audio appended so far, ms
        self.vad_item: str | None = None  # the user item of the speech being heard
        self.vad_quiet_ms = 0
        self.vad_chosen = False  # the client set turn_detection (the default is not simulated)

    @property
    def last_item_id(self) -> str | None:
        return next(reversed(self.items), None)

    async def send_raw(self, frame: str | bytes, recorded: Any = None) -> None:
        if self.silent or self.ws.closed:
            raise rs.Gone
        async with self.lock:
            if self.silent or self.ws.closed:
                raise rs.Gone
            self.record.sent.append(frame if recorded is None else recorded)
            try:
                if isinstance(frame, bytes):
                    await self.ws.send_bytes(frame)
                else:
                    await self.ws.send_str(frame)
            except (ConnectionError, RuntimeError) as exc:
                raise rs.Gone from exc

    async def emit(self, type_: str, **fields: Any) -> None:
        if self.server.beta_names:
            if type_ == "conversation.item.done":
                return  # no beta equivalent
            type_ = rs.BETA_NAMES.get(type_, type_)
        text = json.dumps({"type": type_, "event_id": self.server.new_id("event"), **fields})
        await self.send_raw(text, json.loads(text))

    async def error(
        self,
        code: str,
        message: str,
        param: str | None = None,
        event: Any = None,
        *,
        type_: str = "invalid_request_error",
    ) -> None:
        client_id = event.get("event_id") if isinstance(event, dict) else None
        err = {"type": type_, "code": code, "message": message, "param": param}
        await self.emit("error", error={**err, "event_id": client_id})

    def request_close(self, code: int) -> asyncio.Task[None]:
        if self.close_task is None:
            self.closed_with = code
            self.close_task = self.server.spawn(self._close(code))
        return self.close_task

    async def _close(self, code: int) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code=code)

    def abort(self) -> None:
        transport = self.request.transport
        if transport is not None and not transport.is_closing():
            transport.abort()
            self.aborted = True

    def stop_answering(self) -> None:
        for task in (self.timer, self.response.task if self.response else None):
            if task is not None and not task.done() and task is not asyncio.current_task():
                task.cancel()
        self.response = None


class RealtimeTestServer:
    """The Realtime API test double. See the module docstring and the attributes below."""

    def __init__(
        self, *, api_key: str = "test-key", output_rate: int = 44100, port: int = 0
    ) -> None:
        self.api_key = api_key
        self.output_rate = output_rate
        self.host = "127.0.0.1"
        self._listen_port = port  # 0: a free one (tests/vm/ gives a fixed one, across a reboot)
        self.port: int | None = None
        # Scenario scripting.
        self.answers: collections.deque[Answer] = collections.deque()
        self.default_answer: Answer = AudioAnswer("Hello from the test server.")
        self.user_transcripts: collections.deque[str] = collections.deque()
        self.beta_names = False
        self.answer_delay_s = 0.0
        self.session_max_s: float | None = None
        self.pace_realtime = False
        self.late_deltas_on_interrupt = 0  # see _late_audio
        self.cancel_delay_s = 0.0  # response.cancel takes effect only after this long
        self.autoping = True  # answer client pings (silent connections never do)
        # Recordings.
        self.connections: list[ConnectionRecord] = []
        self.received: list[Any] = []
        self.committed_audio: list[bytes] = []
        self.truncations: list[dict[str, Any]] = []
        self.validation_errors: list[str] = []
        self.handshakes: list[tuple[float, int]] = []
        self.call_ids: list[str] = []
        # Internals.
        self._refusals: collections.deque[int] = collections.deque()
        self._refuse_until: tuple[float, int] | None = None
        self._auth_errors = 0
        self._fault: rs.Fault | None = None
        self._junk: list[str | bytes] = []
        self._live: list[_Conn] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._counters: collections.Counter[str] = collections.Counter()
        self._runner: web.AppRunner | None = None
        self._handlers: dict[str, Callable[[_Conn, dict[str, Any]], Coroutine[Any, Any, None]]]
        self._handlers = {
            "session.update": self._on_session_update,
            "input_audio_buffer.append": self._on_append,
            "input_audio_buffer.commit": self._on_commit,
            "input_audio_buffer.clear": self._on_clear,
            "conversation.item.create": self._on_item_create,
            "conversation.item.delete": self._on_item_delete,
            "conversation.item.retrieve": self._on_item_retrieve,
            "conversation.item.truncate": self._on_truncate,
            "response.create": self._on_response_create,
            "response.cancel": self._on_response_cancel,
        }

    # ----------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{PATH}"

    async def __aenter__(self) -> RealtimeTestServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        client_event_adapter()  # build it now (~0.5 s once), not on the first client event
        app = web.Application()
        app.router.add_get(PATH, self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._listen_port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is None:
            return
        conns = list(self._live)
        closing = [c.request_close(1001) for c in conns if not c.silent]
        if closing:
            await asyncio.wait(closing, timeout=1.5)
        for conn in conns:
            conn.abort()
        runner, self._runner = self._runner, None
        await runner.cleanup()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("test server task failed", exc_info=task.exception())

    def new_id(self, prefix: str) -> str:
        self._counters[prefix] += 1
        return f"{prefix}_{self._counters[prefix]}"

    # ----------------------------------------------------------------- faults

    def refuse(self, status: int = 401, times: int = 1) -> None:
        """The next `times` handshakes get HTTP `status` instead of the upgrade."""
        self._refusals.extend([status] * times)

    def refuse_for(self, seconds: float, status: int = 401) -> None:
        """Every handshake in the next `seconds` gets HTTP `status`."""
        self._refuse_until = (time.monotonic() + seconds, status)

    def auth_error_after_upgrade(self, times: int = 1) -> None:
        """Accept the upgrade, then send error invalid_api_key and close 1008."""
        self._auth_errors += times

    def drop_mid_answer(self, after_deltas: int = 2) -> None:
        """Abort the TCP connection (no close frame) after N audio deltas of the next answer."""
        self._fault = rs.Fault("drop", after_deltas)

    def close_mid_answer(self, code: int = 1011, after_deltas: int = 2) -> None:
        """Close the WebSocket with `code` after N audio deltas of the next audio answer."""
        self._fault = rs.Fault("close", after_deltas, code)

    def junk_before_next_answer(self, frames: list[str | bytes]) -> None:
        """Raw frames (bytes -> binary frames) sent at the start of the next response."""
        self._junk.extend(frames)

    def take_junk(self) -> list[str | bytes]:
        junk, self._junk = self._junk, []
        return junk

    def take_fault(self) -> rs.Fault | None:
        fault, self._fault = self._fault, None
        return fault

    async def send_error_now(
        self, code: str, message: str, type: str = "invalid_request_error"
    ) -> None:
        """Send an `error` event to every open connection."""
        for conn in list(self._live):
            with contextlib.suppress(rs.Gone):
                await conn.error(code, message, type_=type)

    def go_silent(self) -> None:
        """Open connections stop answering: no events, no pongs, no close replies."""
        for conn in list(self._live):
            conn.silent = True
            conn.stop_answering()

    async def close_all(self, code: int = 1001) -> None:
        """Close every open connection with `code` (waits for the closing handshakes)."""
        tasks = [conn.request_close(code) for conn in list(self._live)]
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)

    # ----------------------------------------------------------------- helpers for tests

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Poll `predicate()` until it is truthy (returns it) or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            await asyncio.sleep(0.01)

    def events_of(self, type: str) -> list[dict[str, Any]]:
        """Client events of that type received on any connection, in order."""
        return [e for e in self.received if isinstance(e, dict) and e.get("type") == type]

    def sent_of(self, type: str) -> list[dict[str, Any]]:
        """Server events of that type sent on any connection (by connection, in order)."""
        return [
            e
            for rec in self.connections
            for e in rec.sent
            if isinstance(e, dict) and e.get("type") == type
        ]

    @property
    def open_connections(self) -> int:
        return len(self._live)

    # ----------------------------------------------------------------- connection

    def _handshake_status(self, request: web.Request, now: float) -> tuple[int, str]:
        if self._refusals:
            return self._refusals.popleft(), "refused by the test"
        if self._refuse_until is not None and now < self._refuse_until[0]:
            return self._refuse_until[1], "refused by the test"
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("api-key", "bearer") or token.strip() != self.api_key:
            return 401, "The API key is missing or invalid"
        if not _MODEL_RE.match(request.query.get("model", "")):
            return 400, "Query parameter model=gpt://<folder>/<model> is required"
        return 101, ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        status, reason = self._handshake_status(request, now)
        ws = web.WebSocketResponse(
            autoping=False, autoclose=False, timeout=1.0, max_msg_size=16 * 1024 * 1024
        )
        if status == 101 and not ws.can_prepare(request).ok:
            status, reason = 400, "WebSocket upgrade expected"
        self.handshakes.append((now, status))
        if status != 101:
            body = {"error": {"code": status, "message": reason}}
            return web.json_response(body, status=status)
        await ws.prepare(request)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        record = ConnectionRecord(len(self.connections), dict(request.query), headers)
        self.connections.append(record)
        conn = _Conn(self, request, ws, record)
        self._live.append(conn)
        try:
            if self._auth_errors > 0:
                self._auth_errors -= 1
                await conn.error("invalid_api_key", "Incorrect API key provided")
                conn.closed_with = 1008
                await ws.close(code=1008, message=b"invalid api key")
                return ws
            session_id = self.new_id("sess")
            model = request.query["model"]
            record.session = rs.default_session(session_id, model, conn.output_rate)
            await conn.emit("session.created", session=copy.deepcopy(record.session))
            if self.session_max_s is not None:
                conn.timer = self.spawn(self._expire(conn, self.session_max_s))
            await self._read_loop(conn)
        except rs.Gone:
            pass
        except Exception:
            log.exception("test server connection %d failed", record.index)
        finally:
            await self._finish(conn)
        return ws

    async def _read_loop(self, conn: _Conn) -> None:
        ws = conn.ws
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.TEXT:
                if not conn.silent:
                    await self._on_text(conn, msg.data)
            elif msg.type is WSMsgType.BINARY:
                if not conn.silent:
                    await conn.error("invalid_json", "Binary frames are not supported")
            elif msg.type is WSMsgType.PING:
                if not conn.silent and self.autoping:
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await ws.pong(msg.data)
            elif msg.type is WSMsgType.PONG:
                continue
            elif msg.type is WSMsgType.CLOSE:
                if conn.silent:
                    conn.abort()  # a dead server does not answer the close handshake
                else:
                    with contextlib.suppress(Exception):
                        await ws.close()
                return
            else:  # CLOSING (we are closing), CLOSED, ERROR
                return

    async def _finish(self, conn: _Conn) -> None:
        if conn in self._live:
            self._live.remove(conn)
        if conn.close_task is not None and not conn.close_task.done():
            await asyncio.wait([conn.close_task], timeout=2.0)
        tasks = [t for t in (conn.timer, conn.response and conn.response.task) if t]
        conn.response = None
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        code = conn.closed_with if conn.closed_with is not None else conn.ws.close_code
        conn.record.close_code = 1006 if conn.aborted or code is None else int(code)
        conn.record.closed = True

    async def _expire(self, conn: _Conn, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if conn.silent:
            return
        minutes = f"{seconds / 60:g}"
        message = f"Your session hit the maximum duration of {minutes} minutes."
        with contextlib.suppress(rs.Gone):
            await conn.error("session_expired", message)
        conn.request_close(1000)

    async def _late_audio(self, conn: _Conn, response: rs.ResponseState) -> None:
        """A real server may still send audio after the speech that interrupts it: with
        ``late_deltas_on_interrupt`` > 0, that many deltas of the current item go out first."""
        current = response.current
        if not self.late_deltas_on_interrupt or current is None or current.kind != "audio":
            return
        chunk = rs.tone(conn.output_rate, 0.04, freq=880.0)
        item_id = current.item["id"]
        for _ in range(self.late_deltas_on_interrupt):
            conn.audio_sent[item_id] = conn.audio_sent.get(item_id, 0) + len(chunk)
            await conn.emit(
                "response.output_audio.delta",
                response_id=current.response_id,
                item_id=item_id,
                output_index=current.output_index,
                content_index=0,
                delta=base64.b64encode(chunk).decode("ascii"),
            )

    async def _on_text(self, conn: _Conn, data: str) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            await conn.error("invalid_json", "The event is not valid JSON")
            return
        conn.record.events.append(event)
        self.received.append(event)
        etype = event.get("type") if isinstance(event, dict) else None
        for problem in validate_client_event(event):
            self.validation_errors.append(f"{etype}: {problem}")
        if not isinstance(event, dict):
            await conn.error("invalid_event", "An event must be a JSON object")
            return
        handler = self._handlers.get(etype) if isinstance(etype, str) else None
        if handler is None:
            await conn.error("unknown_event", f"Unknown event type {etype!r}", "type", event)
            return
        try:
            await handler(conn, event)
        except (rs.Gone, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("test server failed on %s", etype)
            await conn.error("server_error", f"Test server failed on {etype}", type_="server_error")

    # ----------------------------------------------------------------- client events

    async def _on_session_update(self, conn: _Conn, event: dict[str, Any]) -> None:
        update = event.get("session")
        if not isinstance(update, dict):
            await conn.error("missing_required_parameter", "session is required", "session", event)
            return
        session = conn.record.session
        audio_in = (
            update.get("audio", {}).get("input") if isinstance(update.get("audio"), dict) else None
        )
        if isinstance(audio_in, dict) and "turn_detection" in audio_in:
            conn.vad_chosen = True
        rs.deep_merge(session, {k: v for k, v in update.items() if k not in ("id", "object")})
        # The server's output rate wins: the client must read it from session.updated.
        if not isinstance(session.get("audio"), dict):
            session["audio"] = {}
        audio = session["audio"]
        if not isinstance(audio.get("output"), dict):
            audio["output"] = {}
        fmt = audio["output"].get("format")
        fmt = fmt if isinstance(fmt, dict) else {}
        audio["output"]["format"] = {**fmt, "type": "audio/pcm", "rate": conn.output_rate}
        await conn.emit("session.updated", session=copy.deepcopy(session))

    async def _on_append(self, conn: _Conn, event: dict[str, Any]) -> None:
        try:
            raw = base64.b64decode(event.get("audio"), validate=True)  # type: ignore[arg-type]
        except (binascii.Error, ValueError, TypeError):
            await conn.error("invalid_base64", "audio is not valid base64", "audio", event)
            return
        conn.buffer += raw
        audio_input = conn.record.session.get("audio", {}).get("input", {})
        vad = audio_input.get("turn_detection") if isinstance(audio_input, dict) else None
        if conn.vad_chosen and isinstance(vad, dict) and vad.get("type") == "server_vad":
            await self._vad(conn, raw, vad)

    async def _vad(self, conn: _Conn, raw: bytes, vad: dict[str, Any]) -> None:
        """Server VAD, by energy: speech_started when a frame is loud, speech_stopped after
        silence_duration_ms of quiet, then the commit and (create_response) the next answer;
        with interrupt_response, speech during a response cancels it (turn_detected)."""
        frame_bytes = INPUT_RATE * 2 * VAD_FRAME_MS // 1000
        level = float(vad.get("threshold") or 0.5) * VAD_LEVEL * 32768
        padding_ms = int(vad.get("prefix_padding_ms") or 0)
        silence_ms = int(vad.get("silence_duration_ms") or 500)
        conn.vad_rest += raw
        while len(conn.vad_rest) >= frame_bytes:
            frame = np.frombuffer(bytes(conn.vad_rest[:frame_bytes]), dtype="<i2")
            del conn.vad_rest[:frame_bytes]
            conn.vad_ms += VAD_FRAME_MS
            loud = float(np.sqrt(np.mean(frame.astype(np.float64) ** 2))) > level
            if conn.vad_item is None:
                if not loud:
                    continue
                conn.vad_item, conn.vad_quiet_ms = self.new_id("item"), 0
                start_ms = max(0, conn.vad_ms - VAD_FRAME_MS - padding_ms)
                await conn.emit(
                    "input_audio_buffer.speech_started",
                    item_id=conn.vad_item,
                    audio_start_ms=start_ms,
                )
                if vad.get("interrupt_response") and conn.response is not None:
                    await self._late_audio(conn, conn.response)
                    await rs.cancel_response(conn, conn.response, "turn_detected")
                continue
            conn.vad_quiet_ms = 0 if loud else conn.vad_quiet_ms + VAD_FRAME_MS
            if conn.vad_quiet_ms < silence_ms:
                continue
            item_id, conn.vad_item = conn.vad_item, None
            await conn.emit(
                "input_audio_buffer.speech_stopped", item_id=item_id, audio_end_ms=conn.vad_ms
            )
            await self._commit_buffer(conn, item_id)
            if vad.get("create_response", True) and conn.response is None:
                self._start_response(conn)
        if conn.vad_item is None:  # between utterances only the prefix padding is kept
            keep = INPUT_RATE * 2 * padding_ms // 1000
            del conn.buffer[: max(0, len(conn.buffer) - keep)]

    async def _on_commit(self, conn: _Conn, event: dict[str, Any]) -> None:
        ms = len(conn.buffer) * 1000 / (2 * INPUT_RATE)
        if len(conn.buffer) < MIN_COMMIT_BYTES:
            message = (
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"100ms of audio, but buffer only has {ms:.2f}ms of audio."
            )
            await conn.error("input_audio_buffer_commit_empty", message, event=event)
            return
        await self._commit_buffer(conn)

    async def _commit_buffer(self, conn: _Conn, item_id: str | None = None) -> None:
        ms = len(conn.buffer) * 1000 / (2 * INPUT_RATE)
        audio = bytes(conn.buffer)
        conn.buffer.clear()
        self.committed_audio.append(audio)
        transcript = (
            self.user_transcripts.popleft() if self.user_transcripts else f"user audio {ms:.0f} ms"
        )
        item_id = item_id or self.new_id("item")
        previous = conn.last_item_id
        item = rs.user_audio_item(item_id)
        conn.items[item_id] = item
        await conn.emit("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous)
        await conn.emit(
            "conversation.item.added", previous_item_id=previous, item=copy.deepcopy(item)
        )
        item["content"][0]["transcript"] = transcript
        await conn.emit(
            "conversation.item.input_audio_transcription.completed",
            item_id=item_id,
            content_index=0,
            transcript=transcript,
            usage={"type": "duration", "seconds": round(ms / 1000, 3)},
        )

    async def _on_clear(self, conn: _Conn, event: dict[str, Any]) -> None:
        conn.buffer.clear()
        await conn.emit("input_audio_buffer.cleared")

    async def _on_item_create(self, conn: _Conn, event: dict[str, Any]) -> None:
        item = event.get("item")
        if not isinstance(item, dict):
            await conn.error("missing_required_parameter", "item is required", "item", event)
            return
        if item.get("type") == "function_call_output" and item.get("call_id") not in conn.call_ids:
            message = f"Tool call ID {item.get('call_id')!r} not found in conversation."
            await conn.error("invalid_value", message, "item.call_id", event)
            return
        item = copy.deepcopy(item)
        if not item.get("id"):
            item["id"] = self.new_id("item")
        item.setdefault("object", "realtime.item")
        item.setdefault("status", "completed")
        previous = event.get("previous_item_id") or conn.last_item_id
        conn.items[item["id"]] = item
        conn.record.conversation.append(item)
        await conn.emit(
            "conversation.item.added", previous_item_id=previous, item=copy.deepcopy(item)
        )

    async def _on_item_delete(self, conn: _Conn, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        if conn.items.pop(item_id, None) is None:  # type: ignore[arg-type]
            await conn.error("item_not_found", f"Item {item_id!r} not found", "item_id", event)
            return
        await conn.emit("conversation.item.deleted", item_id=item_id)

    async def _on_item_retrieve(self, conn: _Conn, event: dict[str, Any]) -> None:
        item = conn.items.get(event.get("item_id"))  # type: ignore[arg-type]
        if item is None:
            message = f"Item {event.get('item_id')!r} not found"
            await conn.error("item_not_found", message, "item_id", event)
            return
        await conn.emit("conversation.item.retrieved", item=copy.deepcopy(item))

    async def _on_truncate(self, conn: _Conn, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        end = event.get("audio_end_ms")
        index = event.get("content_index")
        if item_id not in conn.items:
            await conn.error("item_not_found", f"Item {item_id!r} not found", "item_id", event)
            return
        if item_id not in conn.audio_sent:
            message = "Only assistant messages with audio can be truncated"
            await conn.error("invalid_value", message, "item_id", event)
            return
        if index != 0:
            await conn.error("invalid_value", "content_index must be 0", "content_index", event)
            return
        duration_ms = conn.audio_sent[item_id] * 1000 / (2 * conn.output_rate)
        if not isinstance(end, int) or isinstance(end, bool) or end < 0:
            message = "audio_end_ms must be a non-negative integer"
            await conn.error("invalid_value", message, "audio_end_ms", event)
            return
        if end > math.ceil(duration_ms):
            message = f"Audio content of {duration_ms:.0f}ms is already shorter than {end}ms"
            await conn.error("invalid_value", message, "audio_end_ms", event)
            return
        truncation = {"item_id": item_id, "content_index": 0, "audio_end_ms": end}
        self.truncations.append({"connection": conn.record.index, **truncation})
        await conn.emit("conversation.item.truncated", **truncation)

    async def _on_response_create(self, conn: _Conn, event: dict[str, Any]) -> None:
        if conn.response is not None:
            message = (
                f"Conversation already has an active response in progress: {conn.response.id}. "
                "Wait until the response is finished before creating a new one."
            )
            await conn.error("conversation_already_has_active_response", message, event=event)
            return
        self._start_response(conn)

    def _start_response(self, conn: _Conn) -> None:
        answer = self.answers.popleft() if self.answers else self.default_answer
        resp = rs.ResponseState(self.new_id("resp"))
        conn.response = resp
        resp.task = self.spawn(rs.play_response(conn, resp, answer))

    async def _on_response_cancel(self, conn: _Conn, event: dict[str, Any]) -> None:
        resp = conn.response
        wanted = event.get("response_id")
        if resp is None or (wanted and wanted != resp.id):
            message = "Cancellation failed: no active response found"
            await conn.error("response_cancel_not_active", message, event=event)
            return
        if self.cancel_delay_s:  # a slow server: the answer streams on a while (paced)
            await asyncio.sleep(self.cancel_delay_s)
            if conn.response is not resp:
                return
        await rs.cancel_response(conn, resp)
