"""The appliance's state machine: what a press, a release, the link and the speaker mean.

Pure: ``TurnMachine.handle(event)`` returns the effects to carry out (start the mic, commit,
flush the speaker, play an earcon, set the LED...) and the shell carries them out. Every state
x event pair has a defined result (most are "ignore"); ``tests/test_state_machine.py``
enumerates the whole table.

States, as the owner sees them on the LED:

- ``starting``: the process is coming up (no session yet, none failed yet).
- ``idle``: connected, waiting for a press.
- ``listening``: the button is held (or toggled on): the mic streams to the API.
- ``thinking``: the question is sent; no answer audio yet.
- ``speaking``: the answer plays.
- ``offline``: no Realtime session (retrying); a press plays "not connected".
- ``error``: a fault the owner must fix: the key was refused, or no audio device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class State(Enum):
    STARTING = "starting"
    IDLE = "idle"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    OFFLINE = "offline"
    ERROR = "error"


# ---- events (what happened) ---------------------------------------------------------------


@dataclass(frozen=True)
class ButtonDown:
    at: float  # monotonic seconds


@dataclass(frozen=True)
class ButtonUp:
    at: float


@dataclass(frozen=True)
class SessionUp:
    pass


@dataclass(frozen=True)
class SessionDown:
    reason: str = ""


@dataclass(frozen=True)
class AuthFailed:
    reason: str = ""


@dataclass(frozen=True)
class AnswerAudio:
    """The first audio of the answer arrived (later deltas need no event)."""


@dataclass(frozen=True)
class ResponseFinished:
    """The final ``response.done`` of the turn (after any tool round)."""

    status: str = "completed"  # completed | cancelled | failed | incomplete


@dataclass(frozen=True)
class PlaybackDrained:
    pass


@dataclass(frozen=True)
class AudioLost:
    reason: str = ""


@dataclass(frozen=True)
class AudioBack:
    pass


@dataclass(frozen=True)
class ListenTimeout:
    pass


@dataclass(frozen=True)
class AnswerTimeout:
    pass


@dataclass(frozen=True)
class TurnFailed:
    """The shell could not carry out the turn (a send found no session, too little audio)."""

    reason: str = ""


Event = (
    ButtonDown
    | ButtonUp
    | SessionUp
    | SessionDown
    | AuthFailed
    | AnswerAudio
    | ResponseFinished
    | PlaybackDrained
    | AudioLost
    | AudioBack
    | ListenTimeout
    | AnswerTimeout
    | TurnFailed
)

# ---- effects (what to do) -----------------------------------------------------------------


@dataclass(frozen=True)
class StartMic:
    """Begin a turn: stream the microphone to the API."""


@dataclass(frozen=True)
class StopMic:
    pass


@dataclass(frozen=True)
class Commit:
    """Commit the streamed audio and ask for the answer (the shell refuses < 100 ms)."""


@dataclass(frozen=True)
class DiscardInput:
    """Forget the streamed audio: the press was too short."""


@dataclass(frozen=True)
class CancelResponse:
    pass


@dataclass(frozen=True)
class FlushPlayback:
    """Silence the speaker now and tell the server how much was heard (truncate)."""


@dataclass(frozen=True)
class PlayEarcon:
    name: str  # listening | sent | error | not_connected | working


@dataclass(frozen=True)
class SetLed:
    state: State


@dataclass(frozen=True)
class StartTimer:
    name: str  # "listen" | "answer"
    seconds: float


@dataclass(frozen=True)
class CancelTimer:
    name: str


@dataclass(frozen=True)
class TurnEnded:
    """A turn is over; ``result`` is answered | cancelled | failed | timeout | too_short."""

    result: str


Effect = (
    StartMic
    | StopMic
    | Commit
    | DiscardInput
    | CancelResponse
    | FlushPlayback
    | PlayEarcon
    | SetLed
    | StartTimer
    | CancelTimer
    | TurnEnded
)


@dataclass(frozen=True)
class TurnRules:
    mode: str = "hold"  # hold: talk while held; toggle: press to start, press again to stop
    min_press_ms: int = 150
    max_listen_s: float = 30.0
    answer_timeout_s: float = 15.0


@dataclass
class TurnMachine:
    """The state and the few facts the rules need; ``handle`` is the only way to change them."""

    rules: TurnRules = field(default_factory=TurnRules)
    state: State = State.STARTING
    connected: bool = False
    auth_failed: bool = False
    audio_lost: bool = False
    response_running: bool = False
    pressed_at: float | None = None

    def handle(self, event: Event) -> list[Effect]:
        """Apply one event; returns the effects, in the order they must be carried out."""
        before = self.state
        effects = self._dispatch(event)
        if self.state is not before:
            effects.append(SetLed(self.state))
        return effects

    # ---- the resting state, from the facts ---------------------------------------------

    def _rest(self) -> State:
        if self.auth_failed or self.audio_lost:
            return State.ERROR
        return State.IDLE if self.connected else State.OFFLINE

    @property
    def in_turn(self) -> bool:
        return self.state in (State.LISTENING, State.THINKING, State.SPEAKING)

    # ---- transitions -------------------------------------------------------------------

    def _dispatch(self, event: Event) -> list[Effect]:
        match event:
            case SessionUp():
                self.connected, self.auth_failed = True, False
                return self._settle() if not self.in_turn else []
            case SessionDown():
                self.connected = False
                return self._abort_turn("failed", "not_connected")
            case AuthFailed():
                self.connected, self.auth_failed = False, True
                return self._abort_turn("failed", "error")
            case AudioLost():
                self.audio_lost = True
                return self._abort_turn("failed", "error")
            case AudioBack():
                self.audio_lost = False
                return self._settle() if not self.in_turn else []
            case ButtonDown(at=at):
                return self._press(at)
            case ButtonUp(at=at):
                if self.state is State.LISTENING and self.rules.mode == "hold":
                    return self._end_listening(at)
                return []
            case ListenTimeout():
                if self.state is State.LISTENING:
                    return self._end_listening(None)
                return []
            case AnswerAudio():
                if self.state is State.THINKING:
                    self.state = State.SPEAKING
                    return [CancelTimer("answer")]
                return []
            case ResponseFinished(status=status):
                return self._response_finished(status)
            case PlaybackDrained():
                if self.state is State.SPEAKING and not self.response_running:
                    return self._finish("answered")
                return []
            case AnswerTimeout():
                if self.state is State.THINKING:
                    self.response_running = False
                    return [CancelResponse(), PlayEarcon("error"), *self._finish("timeout")]
                return []
            case TurnFailed():
                if self.in_turn:
                    return self._abort_turn("failed", "error")
                return []
        raise TypeError(f"not an event: {event!r}")  # pragma: no cover - a programming error

    def _settle(self) -> list[Effect]:
        rest = self._rest()
        # Before the first connection attempt has an outcome, "starting" says more than "offline".
        if not (self.state is State.STARTING and rest is State.OFFLINE):
            self.state = rest
        return []

    def _press(self, at: float) -> list[Effect]:
        state = self.state
        if state is State.LISTENING:
            return self._end_listening(at) if self.rules.mode == "toggle" else []
        if state in (State.OFFLINE, State.STARTING):
            return [PlayEarcon("not_connected")]
        if state is State.ERROR:
            return [PlayEarcon("error")]
        effects: list[Effect] = []
        if state is State.SPEAKING:  # barge-in: silence first, then stop generation
            effects.append(FlushPlayback())
            if self.response_running:
                effects.append(CancelResponse())
            effects.append(TurnEnded("cancelled"))
        elif state is State.THINKING:
            effects += [CancelResponse(), CancelTimer("answer"), TurnEnded("cancelled")]
        self.response_running = False
        self.pressed_at = at
        self.state = State.LISTENING
        return [
            *effects,
            StartMic(),
            PlayEarcon("listening"),
            StartTimer("listen", self.rules.max_listen_s),
        ]

    def _end_listening(self, at: float | None) -> list[Effect]:
        held_ms = None if at is None or self.pressed_at is None else (at - self.pressed_at) * 1000
        self.pressed_at = None
        if held_ms is not None and held_ms < self.rules.min_press_ms:
            self.state = self._rest()
            return [
                StopMic(),
                CancelTimer("listen"),
                DiscardInput(),
                PlayEarcon("error"),
                TurnEnded("too_short"),
            ]
        self.state = State.THINKING
        self.response_running = True
        return [
            StopMic(),
            CancelTimer("listen"),
            Commit(),
            PlayEarcon("sent"),
            StartTimer("answer", self.rules.answer_timeout_s),
        ]

    def _response_finished(self, status: str) -> list[Effect]:
        self.response_running = False
        if self.state is State.THINKING:  # ended with no audio at all
            effects: list[Effect] = [CancelTimer("answer")]
            if status in ("failed", "incomplete"):
                return [*effects, PlayEarcon("error"), *self._finish("failed")]
            result = "cancelled" if status == "cancelled" else "answered"
            return [*effects, *self._finish(result)]
        if self.state is State.SPEAKING and status == "failed":
            return []  # play what came; the drain ends the turn
        return []

    def _finish(self, result: str) -> list[Effect]:
        self.state = self._rest()
        return [TurnEnded(result)]

    def _abort_turn(self, result: str, earcon: str) -> list[Effect]:
        """The link or the audio failed: end any turn audibly, then rest."""
        effects: list[Effect] = []
        state = self.state
        if state is State.LISTENING:
            effects += [StopMic(), CancelTimer("listen"), DiscardInput()]
        elif state is State.THINKING:
            effects += [CancelTimer("answer")]
        elif state is State.SPEAKING:
            effects += [FlushPlayback()]
        if self.in_turn:
            effects += [PlayEarcon(earcon), TurnEnded(result)]
        self.response_running = False
        self.pressed_at = None
        self.state = self._rest()
        return effects
