"""The turn shell: carries out the state machine's effects on the link, the mic and the speaker.

Everything here runs in the asyncio loop. Inputs arrive as calls (``on_link_event``,
``on_mic_chunk``, ``press``...), each turned into state-machine events; the effects that come
back are carried out in order. Nothing here decides *what* should happen: that is
:mod:`appliance.core.state_machine`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from appliance.core import state_machine as sm
from appliance.protocol import client_events as ce
from appliance.protocol import server_events as ev
from appliance.realtime.history import AnswerWords
from appliance.realtime.link_events import AuthRejected, Connected, Disconnected, SetupRejected
from appliance.realtime.session import NotConnected
from appliance.realtime.supervisor import SessionSupervisor

log = logging.getLogger("appliance.turns")

MIN_COMMIT_MS = 100  # the API rejects shorter commits; the box never sends them
WORKING_AFTER_S = 1.0  # a tool still running after this long gets the "working" earcon
TIMER_EVENTS: dict[str, Callable[[], sm.Event]] = {
    "listen": sm.ListenTimeout,
    "answer": sm.AnswerTimeout,
    "long_press": sm.LongPress,
    "follow_up": sm.FollowUpTimeout,
}


@dataclass
class TurnRecord:
    """The figures of one turn, for the journal and ``appliance status``."""

    number: int
    session_id: str | None = None
    user: str = ""
    assistant: str = ""
    audio_in_ms: int = 0
    audio_out_ms: int = 0
    latency_ms: int | None = None  # release -> the answer's first sample handed to the speaker
    # release -> the answer's first audio here: the box's own share of latency_ms; the rest is
    # the jitter reserve and the wait for the sound card's next request for samples
    arrived_ms: int | None = None
    result: str = ""
    released_at: float | None = None
    first_item: str | None = None  # the answer item whose first sound ends the latency

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("released_at")
        data.pop("first_item")
        return data


@dataclass
class TurnCounters:
    turns: int = 0
    answered: int = 0
    failed: int = 0
    errors: int = 0
    last_error: str | None = None
    results: dict[str, int] = field(default_factory=dict)


class TurnShell:
    """Wires one :class:`TurnMachine` to the link, the capture, the playback and the panel.

    ``playback`` and ``panel`` are duck-typed (see :mod:`appliance.audio.playback` and
    :mod:`appliance.panel`); ``transcripts`` is a :class:`appliance.service.journal.TranscriptLog`.
    """

    def __init__(
        self,
        machine: sm.TurnMachine,
        link: SessionSupervisor,
        playback: Any,
        panel: Any,
        transcripts: Any,
        *,
        mic: Any = None,
        on_state: Callable[[sm.State], None] | None = None,
        vad: ce.ServerVad | None = None,
        input_rate: int = ce.INPUT_RATE,
    ) -> None:
        self.machine = machine
        self.link = link
        self.playback = playback
        self.panel = panel
        self.transcripts = transcripts
        self.on_state = on_state
        self.vad = vad or ce.ServerVad()  # a follow-up window's turn detection
        self.input_rate = input_rate  # of the mic chunks (realtime.input_rate)
        self.mic = mic  # the Capture: listens only during a turn (listen(True/False))
        if mic is not None:
            mic.listen(False)
        self.counters = TurnCounters()
        self.turn: TurnRecord | None = None
        self.last_turn: TurnRecord | None = None
        self._sending = False
        self._timers: dict[str, asyncio.TimerHandle] = {}
        # Interrupted responses whose late audio is dropped; bounded (months of uptime).
        self._dropped_responses: deque[str] = deque(maxlen=16)
        # Responses silenced by the stop_talking tool: their audio is not played, but unlike
        # dropped ones their response.done still ends the turn.
        self._silenced_responses: deque[str] = deque(maxlen=16)
        # Tool calls of this turn, and the "working" earcon timer of those still pending.
        self._tool_calls_seen: set[str] = set()
        self._working_timers: dict[str, asyncio.TimerHandle] = {}
        self._response_id: str | None = None
        self._drop_next_response = False
        self._answer_items: set[str] = set()
        self._content_index: dict[str, int] = {}  # answer item -> its audio part's index
        self._words = AnswerWords()  # the turn's answer words, each said once
        self._in_samples = 0  # microphone samples sent in this turn
        # A press's first audio stays here until the press is long enough to count
        # (button.min_press_ms): a short press sends nothing at all.
        self._held: list[bytes] | None = None
        self._hold_until = 0.0
        # What the capture held at the release (since its last 100 ms chunk): sent before
        # the commit, so the end of the question is not cut.
        self._tail = b""
        self._drain_task: asyncio.Task | None = None
        self._turn_done = asyncio.Event()
        self._busy: set[asyncio.Task] = set()

    # ---- inputs ------------------------------------------------------------------------

    async def handle(self, event: sm.Event) -> None:
        """Feed one event to the machine and carry out what it says, in order."""
        before = self.machine.state
        effects = self.machine.handle(event)
        if self.machine.state is not before:
            log.debug(
                "state %s -> %s on %s", before.value, self.machine.state.value, type(event).__name__
            )
        for effect in effects:
            await self._do(effect)

    def post(self, event: sm.Event) -> None:
        """Feed an event from a plain callback (timers, panels): runs as its own task."""
        task = asyncio.get_running_loop().create_task(self.handle(event))
        self._busy.add(task)
        task.add_done_callback(self._busy.discard)

    async def press(self) -> None:
        await self.handle(sm.ButtonDown(time.monotonic()))

    async def release(self) -> None:
        await self.handle(sm.ButtonUp(time.monotonic()))

    async def wait_turn_end(self, wait_s: float) -> TurnRecord | None:
        """After a release: wait until the turn has a result (answered, failed...)."""
        try:
            async with asyncio.timeout(wait_s):
                while self.machine.in_turn:
                    self._turn_done.clear()
                    await self._turn_done.wait()
        except TimeoutError:
            pass
        return self.last_turn

    @property
    def sending(self) -> bool:
        """The mic streams to the API (a push-to-talk turn, or the server's VAD listening)."""
        return self._sending

    async def on_mic_chunk(self, pcm: bytes) -> None:
        """Mono PCM16 at the API's input rate from the capture; sent only while the machine
        says so, and only once a press has lasted ``min_press_ms``."""
        if not self._sending:
            return
        if self._held is not None:
            self._held.append(pcm)
            if time.monotonic() < self._hold_until:
                return
            pcm, self._held = b"".join(self._held), None
        await self._send_audio(pcm)

    async def _send_audio(self, pcm: bytes) -> None:
        try:
            await self.link.append_audio(pcm)
        except NotConnected as exc:
            if self.machine.state is sm.State.LISTENING:
                self._mic(False)
                await self.handle(sm.TurnFailed(str(exc)))
            return  # server VAD: the link reports the loss itself (SessionDown)
        if self.turn is not None:
            # Counted in samples: whole-ms rounding per chunk ran 3% low at some rates.
            self._in_samples += len(pcm) // 2
            self.turn.audio_in_ms = self._in_samples * 1000 // self.input_rate

    async def on_link_event(self, event: Any) -> None:
        match event:
            case Connected():
                await self.handle(sm.SessionUp())
            case Disconnected(reason=reason, between_turns=between_turns):
                if not between_turns:  # a server's session limit is no error
                    self._note_error(f"offline: {reason}")
                await self.handle(sm.SessionDown(reason))
            case AuthRejected(reason=reason) | SetupRejected(reason=reason):
                self._note_error(reason)
                await self.handle(sm.AuthFailed(reason))
            case ev.InputTranscript(transcript=text):
                self._user_said(text)
            case ev.SpeechStarted():
                await self.handle(sm.SpeechStarted())
            case ev.SpeechStopped() | ev.InputCommitted():
                await self.handle(sm.SpeechStopped())
                if self.turn is not None and self.turn.released_at is None:
                    self.turn.released_at = time.monotonic()  # the latency counts from here
            case ev.ResponseCreated(response_id=rid):
                if self._drop_next_response:
                    self._drop_next_response = False
                    self._dropped_responses.append(rid)
                elif self.machine.state in (sm.State.THINKING, sm.State.SPEAKING):
                    self._response_id = rid
            case ev.TranscriptDelta(response_id=rid, item_id=item, delta=delta, channel=ch):
                if self.turn is not None and rid not in self._dropped_responses:
                    self._words.delta(item, delta, ch)
                    self.turn.assistant = self._words.joined()
            case ev.TranscriptDone(response_id=rid, item_id=item, text=text, channel=ch):
                if self.turn is not None and rid not in self._dropped_responses:
                    self._words.done(item, text, ch)
                    self.turn.assistant = self._words.joined()
            case ev.AudioDelta():
                await self._answer_audio(event)
            case ev.OutputItemDone(call=ev.FunctionCall() as call, response_id=rid):
                self._tool_call_started(rid, call)
            case ev.FunctionCallArgumentsDone(call=ev.FunctionCall() as call, response_id=rid):
                self._tool_call_started(rid, call)  # (Yandex's has no name: output_item.done)
            case ev.ResponseDone():
                await self._response_done(event)
            case ev.ServerError(is_commit_empty=True):
                await self.handle(sm.TurnFailed("the server found no audio in the question"))
            case ev.ServerError(message=message, kind=code):
                self._note_error(f"server error {code}: {message}")

    # ---- answer audio ------------------------------------------------------------------

    async def _answer_audio(self, event: ev.AudioDelta) -> None:
        if event.response_id in self._dropped_responses:
            return  # the owner interrupted this answer: its late audio is not played
        if event.response_id in self._silenced_responses:
            return  # stop_talking: the rest of this answer is not played either
        if self.machine.state not in (sm.State.THINKING, sm.State.SPEAKING):
            return
        self._cancel_working()  # the answer is here: no "working" sound over it
        self.playback.play_answer(event.item_id, event.audio)
        self._answer_items.add(event.item_id)
        self._content_index[event.item_id] = event.content_index
        turn = self.turn
        if turn is not None:
            turn.audio_out_ms += len(event.audio) * 1000 // 2 // self.link.output_rate
            if turn.first_item is None and turn.released_at is not None:
                # Until the speaker reports the first sound: the answer's arrival.
                turn.first_item = event.item_id
                turn.latency_ms = round((time.monotonic() - turn.released_at) * 1000)
                turn.arrived_ms = turn.latency_ms
        if self.machine.state is sm.State.THINKING:
            await self.handle(sm.AnswerAudio())
            self._watch_drain()

    async def _response_done(self, done: ev.ResponseDone) -> None:
        if done.response_id in self._dropped_responses:
            return
        if done.answer_follows:
            return  # a tool round: the real answer is still to come
        self._cancel_working()
        for item in self._answer_items:
            self.playback.end_answer(item)
        self._answer_items.clear()
        self._response_id = None
        if done.status == "failed":
            self._note_error(f"the answer failed: {done.error_code} {done.error_message or ''}")
        await self.handle(sm.ResponseFinished(done.status))
        if self.machine.state is sm.State.SPEAKING:
            self._watch_drain()

    def _watch_drain(self) -> None:
        if self._drain_task is None or self._drain_task.done():
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    # ---- tools: feedback while one runs, and stop_talking ------------------------------

    def _tool_call_started(self, response_id: str, call: ev.FunctionCall) -> None:
        """A call the box answers itself: if it still runs after WORKING_AFTER_S, play the
        soft "working" earcon, once per call. The LED needs nothing: it already shows
        thinking (or, if the call came while speaking, keeps showing that)."""
        if not self.machine.in_turn or response_id in self._dropped_responses:
            return  # an interrupted answer's call: the owner has moved on
        if call.call_id in self._tool_calls_seen:
            return  # announced twice (arguments.done, then output_item.done)
        self._tool_calls_seen.add(call.call_id)
        if "answer" in self._timers:
            # The answer comes after the tool: give the tool its own time on top of the usual
            # wait, so a slow (allowed) webhook does not end the turn as a timeout.
            self._cancel_timer("answer")
            wait = self.machine.rules.answer_timeout_s + self.link.tools.timeout_of(call.name)
            self._timers["answer"] = asyncio.get_running_loop().call_later(
                wait, self.post, sm.AnswerTimeout()
            )
        if self.link.tools.answered_by_server(call.name):
            return
        self._working_timers[call.call_id] = asyncio.get_running_loop().call_later(
            WORKING_AFTER_S, self._still_working, call.call_id
        )

    def _still_working(self, call_id: str) -> None:
        self._working_timers.pop(call_id, None)
        if self.link.tool_running(call_id) and self.machine.state in (
            sm.State.THINKING,
            sm.State.SPEAKING,
        ):
            self.playback.play_earcon("working")

    def _cancel_working(self) -> None:
        for handle in self._working_timers.values():
            handle.cancel()
        self._working_timers.clear()

    def stop_talking(self) -> None:
        """The stop_talking tool: silence the current answer now, as a press would, but
        without starting a turn. The turn then ends normally with the response's
        ``response.done`` (the link asks for no follow-up answer)."""
        if self._response_id is not None:
            self._silenced_responses.append(self._response_id)
        cut = self._cut_playback()
        if cut:
            self._background(self._truncate(cut))

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._busy.add(task)
        task.add_done_callback(self._busy.discard)

    async def _drain(self) -> None:
        while self.machine.state is sm.State.SPEAKING:
            if await self.playback.wait_drained(0.5):
                await self.handle(sm.PlaybackDrained())
                if self.machine.state is sm.State.SPEAKING:
                    await asyncio.sleep(0.05)  # the server is still sending: look again

    # ---- effects -----------------------------------------------------------------------

    async def _do(self, effect: sm.Effect) -> None:
        match effect:
            case sm.StartMic():
                self._start_turn()
            case sm.StopMic():
                self._mic(False)
            case sm.Commit():
                await self._commit()
            case sm.DiscardInput():
                self._mic(False)
                self._held = None  # a short press: its audio never left the box
                self._tail = b""
                await self.link.discard_input()
            case sm.CancelResponse():
                await self._cancel()
            case sm.FlushPlayback():
                await self._barge_in()
            case sm.PlayEarcon(name=name):
                self.playback.play_earcon(name)
            case sm.SetLed(state=state):
                self.panel.show(state)
                if self.on_state:
                    self.on_state(state)
            case sm.StartTimer(name=name, seconds=seconds):
                self._cancel_timer(name)
                self._timers[name] = asyncio.get_running_loop().call_later(
                    seconds, self.post, TIMER_EVENTS[name]()
                )
            case sm.CancelTimer(name=name):
                self._cancel_timer(name)
            case sm.TurnEnded(result=result):
                self._end_turn(result)
            case sm.OpenMic():
                self._mic(True)
            case sm.CloseMic():
                self._mic(False)
            case sm.BeginTurn():
                self._begin_turn()
            case sm.DropResponse():
                if self._response_id:  # its late audio is dropped; the server cancels it
                    self._dropped_responses.append(self._response_id)
                self._response_id = None
            case sm.SetTurnDetection(server_vad=on):
                await self.link.set_turn_detection(self.vad if on else None)

    def _cancel_timer(self, name: str) -> None:
        handle = self._timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def _mic(self, on: bool) -> None:
        if not on and self._sending and self.mic is not None:
            self._tail = self.mic.take_tail()  # before the stream stops: nothing is lost
        self._sending = on
        if self.mic is not None:
            self.mic.listen(on)

    def _start_turn(self) -> None:
        self._begin_turn()
        self._held = []
        self._hold_until = time.monotonic() + self.machine.rules.min_press_ms / 1000
        self._mic(True)

    def _begin_turn(self) -> None:
        self._tool_calls_seen.clear()
        self.counters.turns += 1
        self.turn = TurnRecord(self.counters.turns, session_id=self.link.session_id)
        self.link.begin_turn()
        self._answer_items.clear()
        self._content_index.clear()
        self._words.clear()
        self._in_samples = 0
        self._held = None
        self._tail = b""

    async def _commit(self) -> None:
        turn = self.turn
        assert turn is not None
        turn.released_at = time.monotonic()
        held, self._held = self._held, None
        tail, self._tail = self._tail, b""
        # The press counted: what it held goes first, then what the capture took at the
        # release; both before the commit.
        pcm = b"".join(held or ()) + tail
        if pcm:
            await self._send_audio(pcm)
            if self.turn is not turn:
                return  # sending failed and ended the turn
        if turn.audio_in_ms < MIN_COMMIT_MS:
            # Under 100 ms the API refuses the commit; the box never sends it.
            self.post(sm.TurnFailed(f"only {turn.audio_in_ms} ms of audio"))
            return
        try:
            await self.link.commit()
            self.link.ask_when_ready()
        except NotConnected as exc:
            self.post(sm.TurnFailed(str(exc)))

    async def _cancel(self) -> None:
        if self._response_id:
            self._dropped_responses.append(self._response_id)
        elif self.link.response_requested:
            # Cancelled before response.created named it: drop the next one that appears.
            self._drop_next_response = True
        with contextlib.suppress(NotConnected):  # nothing to cancel on a dead link
            await self.link.cancel_response()
        self._response_id = None

    async def _barge_in(self) -> None:
        """Silence first; then tell the server how much of each cut answer was heard."""
        await self._truncate(self._cut_playback())

    def _cut_playback(self) -> dict[str, int]:
        self._cancel_working()
        cut = self.playback.flush()
        self._answer_items.clear()
        return cut

    async def _truncate(self, cut: dict[str, int]) -> None:
        for item_id, heard_ms in cut.items():
            if item_id.startswith("earcon:"):
                continue
            try:
                await self.link.truncate(item_id, heard_ms, self._content_index.get(item_id, 0))
            except NotConnected:
                return

    def _end_turn(self, result: str) -> None:
        self._cancel_working()
        turn, self.turn = self.turn, None
        self.link.end_turn()
        if turn is None:
            return
        turn.result = result
        if turn.first_item is not None and turn.released_at is not None:
            # Release to the first answer sample handed to the speaker: what the owner waits.
            heard_at = self.playback.first_sound_at(turn.first_item)
            if heard_at is not None:
                turn.latency_ms = round((heard_at - turn.released_at) * 1000)
        self.counters.results[result] = self.counters.results.get(result, 0) + 1
        if result == "answered":
            self.counters.answered += 1
            if turn.assistant:
                self.transcripts.assistant(turn.assistant, turn.number, turn.session_id)
        elif result in ("failed", "timeout"):
            self.counters.failed += 1
        self.transcripts.turn(
            turn.number,
            turn.latency_ms,
            turn.audio_in_ms,
            turn.audio_out_ms,
            result,
            session_id=turn.session_id,
        )
        self.last_turn = turn
        self._turn_done.set()

    def _user_said(self, text: str) -> None:
        turn = self.turn or self.last_turn
        if turn is None:
            return
        turn.user = text
        self.transcripts.user(text, turn.number, turn.session_id)

    def _note_error(self, message: str) -> None:
        self.counters.errors += 1
        self.counters.last_error = message

    async def close(self) -> None:
        self._cancel_working()
        for name in list(self._timers):
            self._cancel_timer(name)
        tasks = [t for t in (self._drain_task, *self._busy) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
