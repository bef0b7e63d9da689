"""A local test double of the Realtime API servers (OpenAI Realtime GA protocol), by profile.

An aiohttp WebSocket server on 127.0.0.1 with a random free port. See
/work/shared/realtime-protocol.md (section 0: the 2026 formats) for the protocol it speaks, and
tests/realtime_profiles.py for what each profile expects and refuses. Usage::

    async with RealtimeTestServer() as server:          # profile="yandex-2026", the default
        server.answers.append(AudioAnswer("Hello"))
        ...connect to server.endpoint with {"Authorization": server.auth_header}...

Profiles: ``"yandex-2026"`` (default), ``"openai"``, and ``"legacy"`` (TRANSITIONAL: the 2025
path and shapes, everything accepted; only until the old tests move). Every refusal is a GA
``error`` event naming the client's ``event_id``; a refused session.update leaves the session as
it was.

The test scripts a scenario through `answers`, `user_transcripts`, the delays and the fault
methods (or replays recorded frames with `script_frames`), then checks what the client did
through the recordings (`connections`, `received`, `committed_audio`, `early_responses`, ...).

Audio in: PCM16 mono at the session's input rate (24000 unless the client's session.update
names another rate the profile allows); the 100 ms commit minimum and the VAD frames are
measured at that rate, and each `committed_audio` entry carries its `rate`.

Input transcription: `conversation.item.input_audio_transcription.completed` of a committed item
arrives `transcript_delay_s` after the commit (0 = right after `conversation.item.added`, as the
legacy profile does). Under yandex-2026 a `response.create` that arrives while the transcript of
the last committed item is still pending gets the EMPTY ANSWER: a complete audio response of
0.2 s of 220 Hz tone whose words are `EMPTY_QUESTION_TRANSCRIPT` ("Я не расслышала вопрос."),
or `early_answer` if set; the scripted answers are NOT consumed, and the event is recorded in
`early_responses`.

Server VAD is simulated once a client's session.update sets `turn_detection` to server_vad (the
default session's VAD is not, so scripted push-to-talk tests need not turn it off), or always
when `keeps_server_vad` is set (a server that ignores `turn_detection: null` and says so in
session.updated): an energy detector over the appended audio sends
`speech_started`/`speech_stopped`, commits by itself and, with `create_response`, plays the next
scripted answer; with `interrupt_response`, speech during a response cancels it
(`response.done` cancelled, reason turn_detected).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import json
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

try:  # importable both as `tests.realtime_server` and as a top-level module
    from . import realtime_profiles as rp
    from . import realtime_replay as rr
    from . import realtime_scripts as rs
    from .event_validation import client_event_adapter, validate_client_event
    from .realtime_handlers import (
        INPUT_RATE,
        ClientEventHandlers,
        CommittedAudio,
    )
except ImportError:
    import realtime_profiles as rp  # type: ignore[no-redef]
    import realtime_replay as rr  # type: ignore[no-redef]
    import realtime_scripts as rs  # type: ignore[no-redef]
    from event_validation import client_event_adapter, validate_client_event  # type: ignore[no-redef]
    from realtime_handlers import (  # type: ignore[no-redef]
        INPUT_RATE,
        ClientEventHandlers,
        CommittedAudio,
    )

AudioAnswer = rs.AudioAnswer
ToolCallAnswer = rs.ToolCallAnswer
ErrorAnswer = rs.ErrorAnswer
Answer = rs.Answer
tone = rs.tone
WaitFor = rr.WaitFor
Pause = rr.Pause
CloseWith = rr.CloseWith
Profile = rp.Profile
PROFILES = rp.PROFILES
YANDEX_2026 = rp.YANDEX_2026
OPENAI = rp.OPENAI
LEGACY = rp.LEGACY
YANDEX_MODEL_QUERY = rp.YANDEX_MODEL_QUERY
OPENAI_MODEL = rp.OPENAI_MODEL
EMPTY_QUESTION_TRANSCRIPT = rp.EMPTY_QUESTION_TRANSCRIPT

__all__ = [
    "EMPTY_QUESTION_TRANSCRIPT",
    "LEGACY",
    "LEGACY_PATH",
    "MODEL",
    "OPENAI",
    "OPENAI_MODEL",
    "PATH",
    "PROFILES",
    "YANDEX_2026",
    "YANDEX_MODEL_QUERY",
    "AudioAnswer",
    "CloseWith",
    "CommittedAudio",
    "ConnectionRecord",
    "ErrorAnswer",
    "Pause",
    "Profile",
    "RealtimeTestServer",
    "ToolCallAnswer",
    "WaitFor",
    "tone",
]

log = logging.getLogger(__name__)

PATH = rp.PROFILES[rp.YANDEX_2026].path  # both 2026 profiles: /v1/realtime
LEGACY_PATH = rp.PROFILES[rp.LEGACY].path  # the 2025 path, legacy profile only
MODEL = rp.YANDEX_MODEL_QUERY  # the model query of the yandex profiles (kept for old tests)


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
        self.audio_index: dict[str, int] = {}  # assistant item id -> its audio's content_index
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
        # Input transcription: item id -> the task that will send its .completed event.
        self.pending_transcripts: dict[str, asyncio.Task[None]] = {}
        self.last_commit: str | None = None  # the item id of the last committed audio
        # Replay (server.script_frames): the script task and a flag set on each client event.
        self.script_task: asyncio.Task[None] | None = None
        self.client_event = asyncio.Event()

    @property
    def input_rate(self) -> int:
        audio = self.record.session.get("audio")
        audio_in = audio.get("input") if isinstance(audio, dict) else None
        fmt = audio_in.get("format") if isinstance(audio_in, dict) else None
        rate = fmt.get("rate") if isinstance(fmt, dict) else None
        return rate if isinstance(rate, int) and rate > 0 else INPUT_RATE

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

    async def refuse(self, refusal: rp.Refusal, event: Any) -> None:
        await self.error(refusal.code, refusal.message, refusal.param, event, type_=refusal.type)

    async def error(
        self,
        code: str | None,
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

    def background_tasks(self) -> list[asyncio.Task[Any]]:
        tasks = [self.timer, self.response.task if self.response else None, self.script_task]
        tasks += self.pending_transcripts.values()
        return [t for t in tasks if t is not None]

    def stop_answering(self) -> None:
        for task in self.background_tasks():
            if not task.done() and task is not asyncio.current_task():
                task.cancel()
        self.response = None


class RealtimeTestServer(ClientEventHandlers):
    """The Realtime API test double. See the module docstring and the attributes below.

    `profile`: "yandex-2026" (default), "openai" or "legacy" (or a `Profile`); `output_rate`:
    the rate the server sends audio at and reports in session.updated whatever the client
    asked (default: the profile's, 44100 for Yandex, 24000 for OpenAI); `port`: 0 for a free
    one (tests/vm/ gives a fixed one, across a reboot).
    """

    def __init__(
        self,
        *,
        profile: str | rp.Profile = rp.YANDEX_2026,
        api_key: str = "test-key",
        output_rate: int | None = None,
        port: int = 0,
    ) -> None:
        self.profile: rp.Profile = rp.get_profile(profile)
        self.api_key = api_key
        self.output_rate = output_rate or self.profile.default_output_rate
        self.host = "127.0.0.1"
        self._listen_port = port  # 0: a free one (tests/vm/ gives a fixed one, across a reboot)
        self.port: int | None = None
        # Scenario scripting.
        self.answers: collections.deque[Answer] = collections.deque()
        self.default_answer: Answer = AudioAnswer("Hello from the test server.")
        self.user_transcripts: collections.deque[str] = collections.deque()
        self.beta_names = False
        self.answer_delay_s = 0.0  # the response delay: response.create -> response.created
        # commit -> ...input_audio_transcription.completed (0: sent right after the commit)
        self.transcript_delay_s = self.profile.transcript_delay_s
        # False: no ...input_audio_transcription.completed at all (Yandex's reference marks the
        # transcription events unreliable); then no response.create counts as early.
        self.sends_transcripts = True
        # The answer to a response.create sent before the transcript is done (yandex-2026);
        # None: 0.2 s of 220 Hz tone saying EMPTY_QUESTION_TRANSCRIPT.
        self.early_answer: Answer | None = None
        # A server that ignores `turn_detection: null`: session.updated keeps reporting
        # server_vad and the server runs its VAD (commits and answers on its own).
        self.keeps_server_vad = False
        # yandex-2026: after refusing an assistant history item, also close with this code
        # (a third party reports the refusal "breaks the dialog"); None keeps the session open.
        self.assistant_item_close_code: int | None = None
        self.session_max_s: float | None = None
        self.pace_realtime = False
        self.late_deltas_on_interrupt = 0  # see _late_audio
        # The content_index of an answer's audio; > 0 puts a text part first, at 0 (the words
        # go there when the profile sends them on both channels). Truncate must name it.
        self.audio_content_index = 0
        self.cancel_delay_s = 0.0  # response.cancel takes effect only after this long
        self.autoping = True  # answer client pings (silent connections never do)
        self.pings = 0  # WebSocket pings received from clients
        # Recordings.
        self.connections: list[ConnectionRecord] = []
        self.received: list[Any] = []
        self.committed_audio: list[bytes] = []
        self.truncations: list[dict[str, Any]] = []
        self.validation_errors: list[str] = []
        self.handshakes: list[tuple[float, int]] = []
        self.call_ids: list[str] = []
        # response.create refused an answer because the transcript was pending (yandex-2026):
        # {"connection": index, "item_id": the committed item whose transcript was pending}
        self.early_responses: list[dict[str, Any]] = []
        # Internals.
        self._session_refusals: collections.deque[tuple[rp.Refusal, int | None, bool]]
        self._session_refusals = collections.deque()
        self._scripts: collections.deque[list[Any]] = collections.deque()
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
        """The WebSocket URL without the query (the profile's path)."""
        return f"ws://{self.host}:{self.port}{self.profile.path}"

    @property
    def model_query(self) -> str:
        """A `model` query value this profile accepts (YANDEX_MODEL_QUERY or OPENAI_MODEL)."""
        return self.profile.model_query

    @property
    def endpoint(self) -> str:
        """`url` with the `model` query this profile accepts."""
        return f"{self.url}?model={self.model_query}"

    @property
    def auth_header(self) -> str:
        """An `Authorization` value this server accepts (Api-Key for Yandex, Bearer for OpenAI)."""
        scheme = "Api-Key" if "api-key" in self.profile.auth_schemes else "Bearer"
        return f"{scheme} {self.api_key}"

    @property
    def response_delay_s(self) -> float:
        """The same as `answer_delay_s`."""
        return self.answer_delay_s

    @response_delay_s.setter
    def response_delay_s(self, seconds: float) -> None:
        self.answer_delay_s = seconds

    async def __aenter__(self) -> RealtimeTestServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        client_event_adapter()  # build it now (~0.5 s once), not on the first client event
        app = web.Application()
        app.router.add_get(self.profile.path, self._handle)
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

    def refuse_session_update(
        self,
        times: int = 1,
        *,
        code: str | None = "invalid_value",
        message: str = "The session configuration is not supported.",
        param: str | None = "session",
        close_code: int | None = None,
        send_error: bool = True,
    ) -> None:
        """Refuse the next `times` session.updates whatever they hold: an `error` naming the
        update's event_id (session unchanged), then, with `close_code`, a close with it.
        `send_error=False` (with a `close_code`): the close alone, no error."""
        if not send_error and close_code is None:
            raise ValueError("a refusal without an error needs a close_code")
        refusal = rp.Refusal(code, message, param)
        self._session_refusals.extend([(refusal, close_code, send_error)] * times)

    def script_frames(self, frames: list[Any]) -> None:
        """Replay: the NEXT accepted connection plays `frames` in order instead of answering.

        Each step is a server frame to send (a dict, sent as JSON as it is, or a str/bytes raw
        frame), `WaitFor(type)` (wait until the client sends an event of that type, counting from
        the previous wait), `Pause(seconds)` or `CloseWith(code)`. The server sends nothing of its
        own (no session.created unless the frames hold one); the handshake checks still apply,
        client events are still recorded and validated. An output_audio delta given as an int
        (a trace's byte count) is sent as that many bytes of tone. After the last step the
        connection stays open and silent. See tests/realtime_replay.py (`infer_waits()`).
        """
        self._scripts.append(list(frames))

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
        if scheme.lower() not in self.profile.auth_schemes or token.strip() != self.api_key:
            return 401, "The API key is missing or invalid"
        if not self.profile.model_pattern.match(request.query.get("model", "")):
            return 400, self.profile.model_hint
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
            voice = self.profile.default_voice
            record.session = rs.default_session(session_id, model, conn.output_rate, voice)
            if self._scripts:
                conn.script_task = self.spawn(rr.play_script(conn, self._scripts.popleft()))
            else:
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
                self.pings += 1
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
        tasks = conn.background_tasks()
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

    async def _on_text(self, conn: _Conn, data: str) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            await conn.error("invalid_json", "The event is not valid JSON")
            return
        conn.record.events.append(event)
        self.received.append(event)
        etype = event.get("type") if isinstance(event, dict) else None
        for problem in validate_client_event(event, self.profile.name):
            self.validation_errors.append(f"{etype}: {problem}")
        if conn.script_task is not None:  # replaying: the script answers, not the handlers
            conn.client_event.set()
            return
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
