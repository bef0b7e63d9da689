"""The reconnect loop: keeps one Realtime session alive for as long as the appliance runs.

- Reconnects with exponential backoff and jitter; a refused key retries slowly, at the cap.
- Renews the session before the server's limit, between turns only, and replays the
  conversation as text so the model keeps the context.
- Answers the model's tool calls through a :class:`ToolRegistry` and asks for the follow-up
  response once every output of the calling response is sent.
- Never drops a turn silently: a send with no session raises :class:`NotConnected`, and a link
  lost mid-turn is reported as ``Disconnected(turn_lost=True)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp

from appliance.config import ApiKey, RealtimeConfig
from appliance.logs import LogThrottle
from appliance.protocol import client_events as ce
from appliance.protocol import server_events as ev
from appliance.protocol.providers import YANDEX, Provider, SessionShape
from appliance.realtime.backoff import Backoff
from appliance.realtime.history import AnswerWords, ConversationHistory
from appliance.realtime.link_events import (
    AuthRejected,
    Connected,
    Disconnected,
    LinkEvent,
    SetupRejected,
)
from appliance.realtime.session import (
    AuthRefused,
    LinkError,
    NotConnected,
    RealtimeSession,
    SetupRefused,
)
from appliance.realtime.tool_calls import ToolCalls
from appliance.realtime.tools import ToolRegistry
from appliance.realtime.trace import TraceWriter

log = logging.getLogger("appliance.realtime")

RENEWAL_POLL_S = 0.25
PENDING = "pending"  # response.create sent; no response id yet
CLEAR_EVENT_ID = "evt_discard_input"
SETUP_EVENT_ID = "evt_session_setup"
MAX_HELD_AUDIO_BYTES = 60 * 48000 * 2  # a minute of speech held while the session renews


@dataclass(frozen=True)
class LinkSettings:
    """What opening a session needs; built from the ``realtime`` config section."""

    endpoint: str
    api_key: ApiKey
    provider: Provider = YANDEX
    auth: str = "api_key"
    voice: str = "marina"
    voice_role: str = ""
    languages: tuple[str, ...] = ("ru-RU",)
    instructions: str = ""
    input_rate: int = ce.INPUT_RATE
    output_rate: int = 44100
    transcription_model: str = ""
    connect_timeout_s: float = 10.0
    heartbeat_s: float = 10.0
    session_max_s: float = 270.0
    transcript_wait_ms: int = 1500
    history_replay: str = "recap"
    history_max_chars: int = 4000
    # Every session opened with these settings writes its events here (owned by the caller).
    trace: TraceWriter | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_config(
        cls, cfg: RealtimeConfig, api_key: ApiKey, trace: TraceWriter | None = None
    ) -> LinkSettings:
        return cls(
            endpoint=cfg.endpoint,
            api_key=api_key,
            provider=cfg.spec,
            auth=cfg.auth,
            voice=cfg.voice,
            voice_role=cfg.voice_role,
            languages=cfg.languages,
            instructions=cfg.instructions,
            input_rate=cfg.input_rate,
            output_rate=cfg.output_rate,
            transcription_model=cfg.transcription_model,
            connect_timeout_s=cfg.connect_timeout_s,
            heartbeat_s=cfg.heartbeat_s,
            session_max_s=cfg.session_max_s,
            transcript_wait_ms=cfg.transcript_wait_ms,
            history_replay=cfg.history_replay,
            history_max_chars=cfg.history_max_chars,
            trace=trace,
        )

    @property
    def shape(self) -> SessionShape:
        return SessionShape(
            voice=self.voice,
            instructions=self.instructions,
            input_rate=self.input_rate,
            output_rate=self.output_rate,
            languages=self.languages,
            voice_role=self.voice_role,
            transcription_model=self.transcription_model,
        )


SupervisorEvent = ev.ServerEvent | LinkEvent


class SessionSupervisor:
    """Owns the HTTP client and the current :class:`RealtimeSession`; see the module docstring.

    Use as ``async with SessionSupervisor(settings) as link: async for event in link.events()``.
    """

    def __init__(
        self,
        settings: LinkSettings,
        tools: ToolRegistry | None = None,
        *,
        backoff: Backoff | None = None,
        turn_detection: ce.ServerVad | None = None,
        http_factory: Callable[[], aiohttp.ClientSession] = aiohttp.ClientSession,
    ) -> None:
        self.settings = settings
        self.tools = tools or ToolRegistry()
        self.backoff = backoff or Backoff()
        self.turn_detection = turn_detection
        self.history = ConversationHistory(settings.history_max_chars)
        self.output_rate = settings.output_rate
        self.reconnects = 0
        self.last_error: str | None = None
        self._http_factory = http_factory
        self._throttle = LogThrottle()
        self._events: asyncio.Queue[SupervisorEvent] = asyncio.Queue()
        self._session: RealtimeSession | None = None
        self._task: asyncio.Task | None = None
        self._http: aiohttp.ClientSession | None = None
        self._last_replayed = 0
        # Turn bookkeeping: what is in flight on the current session.
        self._turn_active = False
        self._buffer_session: str | None = None  # session holding uncommitted audio
        self._pending_audio_bytes = 0
        self._clear_supported = settings.provider.input_clear  # see discard_input
        # The response: None, PENDING (response.create sent, not created yet), or its id.
        self._response: str | None = None
        # A committed question whose response.create waits for the server (ask_when_ready);
        # ``_ask_ready``: it may go as soon as an interrupted answer has ended.
        self._asking = False
        self._ask_ready = False
        self._ask_timer: asyncio.TimerHandle | None = None
        self._ask_item: str | None = None  # the committed question's item id
        self._server_committed = False  # the server committed this turn's audio (its VAD)
        self._server_vad_forced = False  # asked for push-to-talk, the server runs VAD anyway
        # A discarded take's audio stayed in the server's buffer (it cannot clear it): the
        # session is renewed before the next question; meanwhile its audio is held here.
        self._dirty_buffer = False
        self._held_audio: list[bytes] = []
        self._clean = asyncio.Event()
        self._clean.set()
        self._renew_soon = asyncio.Event()
        self._background: set[asyncio.Task] = set()
        self._tool_calls = ToolCalls(self.tools)
        self._answers = AnswerWords()

    # ---- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> SessionSupervisor:
        self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="realtime-supervisor")

    async def close(self) -> None:
        self._cancel_ask()
        for task in list(self._background):
            task.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self._tool_calls.aclose()

    # ---- what the appliance reads ------------------------------------------------------

    async def events(self) -> AsyncIterator[SupervisorEvent]:
        while True:
            yield await self._events.get()

    async def next_event(self) -> SupervisorEvent:
        return await self._events.get()

    @property
    def connected(self) -> bool:
        return self._session is not None and not self._session.closed

    @property
    def session_id(self) -> str | None:
        return self._session.session_id if self._session else None

    @property
    def session_age_s(self) -> float | None:
        return self._session.age_s if self._session else None

    # ---- what the appliance sends ------------------------------------------------------

    def begin_turn(self) -> None:
        """A new turn starts: forget the last one's audio; no renewal until :meth:`end_turn`
        (except the one that cleans a buffer the server could not clear)."""
        self._turn_active = True
        self._buffer_session = None
        self._pending_audio_bytes = 0
        self._server_committed = False

    def end_turn(self) -> None:
        self._turn_active = False

    def _live(self) -> RealtimeSession:
        session = self._session
        if session is None or session.closed:
            raise NotConnected("not connected to the Realtime API")
        return session

    async def send(self, event: dict) -> None:
        await self._live().send(event)

    async def set_turn_detection(self, turn_detection: ce.ServerVad | None) -> None:
        """Switch turn detection now (``session.update``) and for every later session; with
        no session, only for the later ones."""
        self.turn_detection = turn_detection
        with contextlib.suppress(NotConnected):
            await self.send(ce.turn_detection_update(self.settings.provider, turn_detection))

    async def append_audio(self, pcm16: bytes) -> None:
        """Stream microphone audio; raises :class:`NotConnected` rather than losing it."""
        session = self._live()
        if self.turn_detection is not None:
            # Server VAD: the server commits by itself; nothing of ours is pending.
            await session.send_audio(pcm16)
            return
        if self._dirty_buffer:
            # The old take is still in the server's buffer: hold this one until the session
            # is renewed (bounded: the oldest audio goes first past a minute).
            self._held_audio.append(pcm16)
            while sum(map(len, self._held_audio)) > MAX_HELD_AUDIO_BYTES:
                self._held_audio.pop(0)
            self._renew_soon.set()
            return
        if self._buffer_session not in (None, session.session_id):
            raise NotConnected("the turn's audio was lost with the previous session")
        await session.send_audio(pcm16)
        self._buffer_session = session.session_id
        self._pending_audio_bytes += len(pcm16)

    async def commit(self) -> None:
        """Commit the question; ``response.create`` follows once the server has the question
        (see :meth:`_ask_when_ready`)."""
        if not self._clean.is_set():
            try:
                async with asyncio.timeout(self.settings.connect_timeout_s):
                    await self._clean.wait()
            except TimeoutError:
                raise NotConnected("the session could not be renewed for the question") from None
        session = self._live()
        if self._buffer_session not in (None, session.session_id):
            raise NotConnected("the turn's audio was lost with the previous session")
        if not (self._server_vad_forced and self._server_committed):
            await session.send(ce.input_audio_commit())
        self._buffer_session = None
        self._pending_audio_bytes = 0

    async def discard_input(self) -> None:
        """Forget the audio of a take that will not be committed (too short, or its turn
        failed): the server's input buffer is cleared so it cannot join the next question,
        and nothing counts as in flight any more."""
        session, buffer_session = self._session, self._buffer_session
        had_audio = bool(self._pending_audio_bytes)
        self._pending_audio_bytes = 0
        self._buffer_session = None
        self._held_audio.clear()
        if not (
            had_audio
            and session is not None
            and not session.closed
            and buffer_session == session.session_id
        ):
            return
        if not self._clear_supported:
            self._must_renew(session)
            return
        event = ce.input_audio_clear()
        event["event_id"] = CLEAR_EVENT_ID
        with contextlib.suppress(NotConnected):
            await session.send(event)

    def _must_renew(self, session: RealtimeSession) -> None:
        """The server holds audio that must not join the next question: renew first."""
        if self._session is session and not self._dirty_buffer:
            log.info("renewing the session: the server cannot clear a discarded take")
            self._dirty_buffer = True
            self._clean.clear()
            self._renew_soon.set()

    async def create_response(self) -> None:
        """Ask for the answer now (after tool outputs, or where nothing is to be awaited)."""
        self._cancel_ask()
        await self.send(ce.response_create())
        self._response = PENDING

    def ask_when_ready(self) -> None:
        """After :meth:`commit`: send ``response.create`` once the server has the question:
        its ``input_audio_buffer.committed`` and, where the provider needs it (Yandex answers
        an empty question otherwise), the transcript of that item; at most
        ``transcript_wait_ms`` after the commit. Not at all if the server starts the response
        itself (its VAD runs although push-to-talk was asked for)."""
        self._cancel_ask()
        self._asking, self._ask_ready = True, False
        self._ask_item = None
        wait_s = self.settings.transcript_wait_ms / 1000
        self._ask_timer = asyncio.get_running_loop().call_later(wait_s, self._ask_timed_out)

    def _ask_timed_out(self) -> None:
        self._ask_timer = None
        if self._asking:
            log.debug("asking without the transcript (none within the wait)")
            self._spawn(self._ask_now())

    async def _ask_now(self) -> None:
        if not self._asking:
            return
        if self._response is not None:
            # An interrupted answer has not ended yet: a second response.create now would be
            # refused (conversation_already_has_active_response). Ask at its response.done.
            self._ask_ready = True
            return
        self._cancel_ask()
        try:
            await self.create_response()
        except NotConnected:
            self._response = None  # the loss is reported by the loop as a lost turn

    def _cancel_ask(self) -> None:
        """Forget a waiting ask (and its timer)."""
        self._asking = self._ask_ready = False
        if self._ask_timer is not None:
            self._ask_timer.cancel()
            self._ask_timer = None

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _question_ready(self, event: ev.ServerEvent) -> None:
        """Events that may let the waiting ``response.create`` go."""
        if not self._asking:
            return
        provider = self.settings.provider
        match event:
            case ev.InputCommitted(item_id=item):
                self._ask_item = item
                ready = not provider.transcript_before_response
            case ev.InputTranscript(item_id=item) | ev.InputTranscriptFailed(item_id=item):
                ready = item == self._ask_item or self._ask_item is None
            case _:
                ready = False
        if ready and not self._server_vad_forced:
            await self._ask_now()

    @property
    def response_requested(self) -> bool:
        """``response.create`` was sent and the response has no id yet."""
        return self._response == PENDING

    async def cancel_response(self) -> bool:
        """Cancel the running response, if any; True if a cancel was sent. A question still
        waiting for its transcript is simply not asked."""
        if self._asking:
            self._cancel_ask()
        if self._response is None:
            return False
        rid = None if self._response == PENDING else self._response
        await self.send(ce.response_cancel(rid))
        return True

    async def truncate(self, item_id: str, audio_end_ms: int, content_index: int = 0) -> None:
        await self.send(ce.item_truncate(item_id, audio_end_ms, content_index))

    @property
    def response_active(self) -> bool:
        return self._response is not None or self._asking

    @property
    def answer_follows(self) -> bool:
        """A response is running, or tool outputs are being sent and a response will follow
        (not after a round of no-follow-up tools only, such as ``stop_talking``)."""
        return self._response is not None or self._asking or self._tool_calls.answer_pending

    def tool_running(self, call_id: str) -> bool:
        """The box is still running the tool of this call (for the "working" earcon)."""
        return self._tool_calls.running(call_id)

    # ---- the loop ----------------------------------------------------------------------

    def _in_flight(self) -> bool:
        """Audio, an answer or a tool call on the current session that a loss would cut."""
        return bool(
            self._pending_audio_bytes or self._response or self._asking or self._tool_calls.busy
        )

    def _idle(self) -> bool:
        return not (self._turn_active or self._in_flight())

    def _forget_turn_state(self) -> None:
        self._pending_audio_bytes = 0
        self._response = None
        self._cancel_ask()
        self._tool_calls.cancel_all()
        self._answers.clear()

    async def _open(self, http: aiohttp.ClientSession) -> tuple[RealtimeSession, int]:
        s = self.settings
        setup = ce.session_update(
            s.provider,
            s.shape,
            tools=self.tools.specs(),
            turn_detection=self.turn_detection,
            event_id=SETUP_EVENT_ID,
        )
        session = await RealtimeSession.open(
            http,
            endpoint=s.endpoint,
            api_key=s.api_key,
            setup=setup,
            provider=s.provider,
            auth=s.auth,
            connect_timeout_s=s.connect_timeout_s,
            heartbeat_s=s.heartbeat_s,
            trace=s.trace,
        )
        self._check_effective(session)
        try:
            replayed = await self._replay_history(session)
        except NotConnected:
            await session.close()
            raise
        if session.output_rate:
            self.output_rate = session.output_rate
        return session, replayed

    def _check_effective(self, session: RealtimeSession) -> None:
        """Compare what took (``session.updated``) with what was asked."""
        updated = session.updated
        forced = (
            self.turn_detection is None
            and updated is not None
            and updated.reports_turn_detection
            and updated.turn_detection is not None
        )
        if forced and not self._server_vad_forced:
            self._throttle.log(
                log,
                logging.WARNING,
                "vad-forced",
                "the server runs its own turn detection (%s) although push-to-talk asked for "
                "none; the box lets it answer by itself",
                updated.turn_detection,
            )
        self._server_vad_forced = forced

    async def _replay_history(self, session: RealtimeSession) -> int:
        """The conversation so far into a new session, as ``history_replay`` says: one user
        recap item (every server takes it), or one item per utterance (assistant items only
        where the provider accepts them; else a recap)."""
        mode = self.settings.history_replay
        replay = self.history.replay()
        if mode == "off" or not replay:
            return 0
        if mode == "items" and self.settings.provider.assistant_history:
            for utterance in replay:
                await session.send(ce.history_message(utterance.role, utterance.text))
        else:
            await session.send(ce.history_recap(self.history.recap()))
        return len(replay)

    async def _run(self) -> None:
        async with self._http_factory() as http:
            self._http = http
            try:
                await self._keep_alive()
            finally:
                # Stop, reload, ask done: leave with a close frame (1000), not a dropped TCP.
                current, self._session = self._session, None
                if current is not None:
                    await current.close()

    async def _keep_alive(self) -> None:
        """Connect, serve, renew, reconnect: for as long as the supervisor runs."""
        session: RealtimeSession | None = None
        replayed, renewed, opened_once = 0, False, False
        while True:
            if session is None:
                opened = await self._connect_once()
                if opened is None:
                    continue
                session, replayed = opened
                self.reconnects += opened_once
                opened_once = True
            self._session = session
            self.last_error = None
            if self._dirty_buffer or self._held_audio:
                await self._send_held_audio(session)  # a new session's buffer is clean
            if renewed:
                log.info(
                    "renewed the Realtime session (%s), replayed %d utterances",
                    session.session_id,
                    replayed,
                )
            else:
                log.info("connected to the Realtime API (session %s)", session.session_id)
            await self._events.put(
                Connected(session.session_id, renewed, replayed, self.output_rate)
            )
            await self._serve(session)
            if self._session is not None and self._session is not session:
                # Renewed between turns: carry on with the successor, no reconnect.
                await session.close()  # idempotent; the renewal task may not have finished
                session, replayed, renewed = self._session, self._last_replayed, True
                continue
            renewed = await self._after_loss(session)
            session = None

    async def _connect_once(self) -> tuple[RealtimeSession, int] | None:
        """One attempt; on failure report it, wait the backoff (or the cap) and return None."""
        try:
            return await self._open(self._http)
        except (AuthRefused, SetupRefused) as exc:
            # Refused, not unreachable: something for the owner to fix. Slowly, never a loop.
            delay = self.backoff.at_cap()
            self.last_error = str(exc)
            auth = isinstance(exc, AuthRefused)
            self._throttle.log(
                log,
                logging.ERROR,
                exc.kind,
                "%s; check the %s; retrying every %.0f s",
                exc,
                "key" if auth else "realtime settings",
                delay,
            )
            rejected = AuthRejected if auth else SetupRejected
            await self._events.put(rejected(str(exc), delay))
        except LinkError as exc:
            delay = self.backoff.next_delay()
            self.last_error = str(exc)
            self._throttle.log(
                log,
                logging.WARNING,
                f"connect-{exc.kind}",
                "cannot open a Realtime session: %s; retrying in %.1f s",
                exc,
                delay,
            )
            await self._events.put(Disconnected(str(exc), delay))
        await asyncio.sleep(delay)
        return None

    async def _after_loss(self, session: RealtimeSession) -> bool:
        """The session ended by itself. A turn in flight is reported lost at once; then back off.

        Returns True when nothing was in flight: the next session simply continues the
        conversation (Yandex ends sessions every few minutes; that is no outage).
        """
        self._session = None
        self.backoff.connection_ended(session.age_s)
        reason = f"the link closed (code {session.close_code})"
        turn_lost = self._in_flight()
        self._forget_turn_state()
        delay = self.backoff.next_delay()
        if turn_lost:
            self._throttle.log(
                log,
                logging.WARNING,
                "lost-mid-turn",
                "the Realtime session was lost mid-turn (%s); retrying in %.1f s",
                reason,
                delay,
            )
            await self._events.put(Disconnected(reason, delay, turn_lost=True))
        else:
            log.info("the Realtime session ended between turns (%s); reopening", reason)
            # Offline from this moment: a press now plays "not connected", not a doomed turn.
            await self._events.put(Disconnected(reason, delay, between_turns=True))
        await asyncio.sleep(delay)
        return not turn_lost

    async def _serve(self, session: RealtimeSession) -> None:
        renewal = asyncio.create_task(self._renew_when_due(session), name="realtime-renewal")
        try:
            async for event in session.events():
                await self._handle(session, event)
                if self._session is not session:
                    break
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal

    async def _renew_when_due(self, session: RealtimeSession) -> None:
        """At ``session_max_s``, open a successor between turns and switch to it atomically."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, self.settings.session_max_s - session.age_s)):
                await self._renew_soon.wait()
        while True:
            if self._idle() or (self._dirty_buffer and not self._in_flight()):
                try:
                    new, replayed = await self._open(self._http)
                except LinkError as exc:
                    self._throttle.log(
                        log,
                        logging.WARNING,
                        "renew",
                        "could not renew the Realtime session yet: %s",
                        exc,
                    )
                    await asyncio.sleep(min(5.0, self.backoff.at_cap()))
                    continue
                if (self._idle() or self._dirty_buffer) and self._session is session:
                    self._last_replayed = replayed
                    self._session = new  # no await between the check and the switch
                    self._renew_soon.clear()
                    await self._send_held_audio(new)
                    await session.close()
                    return
                await new.close()  # a turn began while we were connecting: try again later
            await asyncio.sleep(RENEWAL_POLL_S)

    async def _send_held_audio(self, session: RealtimeSession) -> None:
        """The fresh session has a clean buffer: send what the current take said meanwhile."""
        try:
            while self._held_audio:
                pcm16 = self._held_audio.pop(0)
                await session.send_audio(pcm16)
                self._buffer_session = session.session_id
                self._pending_audio_bytes += len(pcm16)
        except NotConnected:
            self._held_audio.clear()
        finally:
            self._dirty_buffer = False
            self._clean.set()

    # ---- server events -----------------------------------------------------------------

    async def _handle(self, session: RealtimeSession, event: ev.ServerEvent) -> None:
        if type(event) is ev.AudioDelta:  # 25 a second while speaking; nothing to decide here
            self._events.put_nowait(event)
            return
        match event:
            case ev.Malformed(reason=reason, type=kind):
                self._throttle.log(
                    log,
                    logging.WARNING,
                    "malformed",
                    "skipped a malformed server event%s: %s",
                    f" ({kind})" if kind else "",
                    reason,
                )
                return
            case ev.Unknown(type=kind):
                log.debug("ignored an unknown server event type %r", kind)
                return
            case ev.Ignored() | ev.SessionCreated():
                return
            case ev.SessionUpdated(output_rate=rate):
                if rate:
                    self.output_rate = rate
                return
            case ev.ServerError(is_commit_empty=True) if self._server_vad_forced:
                # The server's VAD committed the question first: nothing was lost.
                log.debug("the server had committed the question itself")
                return
            case ev.ServerError():
                if self._asking and event.is_commit_empty:
                    self._cancel_ask()
                if not self._server_error(session, event):
                    return
                if event.is_auth_failure:
                    await session.close()
            case ev.ResponseCreated(response_id=rid):
                if self._response is None:
                    self._cancel_ask()  # the server answers by itself (its VAD): do not ask too
                self._response = rid
            case ev.InputCommitted(item_id=item):
                self._server_committed = self._turn_active
                self.history.reserve(item)
                await self._question_ready(event)
            case ev.InputTranscript(item_id=item, transcript=text):
                self.history.add("user", text, item)
                await self._question_ready(event)
            case ev.InputTranscriptFailed():
                await self._question_ready(event)
            case ev.TranscriptDelta(item_id=item, delta=delta, channel=channel):
                self._answers.delta(item, delta, channel)
            case ev.TranscriptDone(item_id=item, text=text, channel=channel):
                self._answers.done(item, text, channel)
            case ev.OutputItemDone(call=ev.FunctionCall() as call, response_id=rid):
                self._tool_calls.start(session.send, rid, call)
            case ev.OutputItemDone(item_type="message", item_id=item, text=text):
                self.history.add("assistant", self._answers.finish(item, text))
            case ev.FunctionCallArgumentsDone(call=ev.FunctionCall() as call, response_id=rid):
                self._tool_calls.start(session.send, rid, call)
            case ev.ResponseDone():
                self._response_done(session, event)
                event = dataclasses.replace(event, answer_follows=self.answer_follows)
        await self._events.put(event)

    def _server_error(self, session: RealtimeSession, error: ev.ServerError) -> bool:
        """Log a server error; True if the appliance should see it too."""
        if error.is_harmless:
            log.debug("server: %s", error.message)
            return False
        if error.client_event_id == CLEAR_EVENT_ID:
            # Yandex documents input_audio_buffer.clear as unsupported: say so once, stop
            # asking, and renew the session so the take does not join the next question.
            self._clear_supported = False
            log.info(
                "the server cannot clear its input buffer (%s); renewing the session instead",
                error.kind or error.message,
            )
            self._must_renew(session)
            return False
        if error.is_session_expired:
            log.info("the server ended session %s: %s", session.session_id, error.message)
            return False
        if error.is_auth_failure:
            self.last_error = f"the API key was refused ({error.kind})"
            log.error("the server refused the API key (%s); reconnecting", error.kind)
            return True
        self._throttle.log(
            log,
            logging.WARNING,
            f"error-{error.kind}",
            "server error %s: %s",
            error.kind or error.type,
            error.message,
        )
        return True

    def _response_done(self, session: RealtimeSession, done: ev.ResponseDone) -> None:
        for call in done.calls:  # calls whose output_item.done never came
            self._tool_calls.start(session.send, done.response_id, call)
        for text in self._answers.finish_all():
            self.history.add("assistant", text)
        self._response = None
        if self._ask_ready:  # the next question waited for this (interrupted) answer to end
            self._spawn(self._ask_now())
        self._tool_calls.response_done(
            done.response_id, done.status == "completed", lambda: self._ask_again(session)
        )

    async def _ask_again(self, session: RealtimeSession) -> None:
        if self._session is session:
            await self.create_response()
