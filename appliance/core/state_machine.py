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
- ``conversing``: hands-free (``conversation.mode: hands_free``): the mic streams and the
  server's VAD finds the turns (``SpeechStarted``/``SpeechStopped``); the server commits and
  answers by itself. A short press mutes, a long press (``LongPress``) ends the conversation.
- ``muted``: hands-free, the mic not sent; a short press unmutes.
- ``follow_up``: push-to-talk with ``conversation.follow_up_s``: after an answer has played the
  session is switched to server VAD and the box listens hands-free for that long
  (``FollowUpTimeout`` ends the window: back to push-to-talk and idle).

``thinking`` and ``speaking`` serve both kinds of turn. A turn found by the server's VAD (hands
free, or one a follow-up window started) may be interrupted by voice: ``SpeechStarted`` while
the box speaks flushes the speaker and drops the rest of that response (the server cancels it
itself: ``interrupt_response``). Unless ``voice_barge_in`` (an echo canceller runs), the mic is
deaf while the box speaks. The LED of ``conversing`` and ``follow_up`` is the listening one
(:func:`led_look`).
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
    CONVERSING = "conversing"
    MUTED = "muted"
    FOLLOW_UP = "follow_up"


_LOOKS = {State.CONVERSING: State.LISTENING, State.FOLLOW_UP: State.LISTENING}


def led_look(state: State) -> State:
    """The state whose LED pattern ``state`` shows (``gpio.led.<look>``)."""
    return _LOOKS.get(state, state)


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


@dataclass(frozen=True)
class SpeechStarted:
    """Server VAD: the owner started speaking (``input_audio_buffer.speech_started``)."""


@dataclass(frozen=True)
class SpeechStopped:
    """Server VAD: the owner stopped (``speech_stopped``, or the server's ``committed``);
    the server commits and answers by itself."""


@dataclass(frozen=True)
class LongPress:
    """The button has been held ``long_press_s`` (the "long_press" timer)."""


@dataclass(frozen=True)
class FollowUpTimeout:
    """The follow-up window passed in silence (the "follow_up" timer)."""


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
    | SpeechStarted
    | SpeechStopped
    | LongPress
    | FollowUpTimeout
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
class OpenMic:
    """Stream the mic for the server's VAD (no turn yet: the server finds the turns)."""


@dataclass(frozen=True)
class CloseMic:
    """Stop streaming the mic (muted, deaf while the box speaks, conversation over)."""


@dataclass(frozen=True)
class BeginTurn:
    """The server's VAD heard the owner start a turn: count it and keep its figures."""


@dataclass(frozen=True)
class DropResponse:
    """Drop the rest of the running response (its late audio, by id) without cancelling it:
    the server cancels it itself (``interrupt_response``)."""


@dataclass(frozen=True)
class SetTurnDetection:
    """Switch the session's turn detection: server VAD (True) or push-to-talk (None)."""

    server_vad: bool


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
    | OpenMic
    | CloseMic
    | BeginTurn
    | DropResponse
    | SetTurnDetection
)


@dataclass(frozen=True)
class TurnRules:
    mode: str = "hold"  # hold: talk while held; toggle: press to start, press again to stop
    min_press_ms: int = 150
    max_listen_s: float = 30.0
    answer_timeout_s: float = 15.0
    conversation: str = "push_to_talk"  # push_to_talk | hands_free
    follow_up_s: float = 0.0  # push-to-talk: listen hands-free this long after an answer
    long_press_s: float = 2.0  # hands-free: a press this long ends the conversation
    voice_barge_in: bool = False  # an echo canceller runs: the mic stays on while speaking


_RESTING = (State.STARTING, State.IDLE, State.OFFLINE, State.ERROR, State.CONVERSING, State.MUTED)


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
    conversation_on: bool = True  # hands-free: the conversation is on (a long press ends it)
    muted: bool = False  # hands-free: the owner muted the mic
    follow_up: bool = False  # push-to-talk: in a follow-up window, or a turn it started
    hearing: bool = False  # the server's VAD began a turn that is not sent yet (BeginTurn done)
    streaming: bool = False  # the mic streams for the server's VAD (OpenMic done)
    server_vad: bool = False  # push-to-talk: the session was switched to server VAD

    def handle(self, event: Event) -> list[Effect]:
        """Apply one event; returns the effects, in the order they must be carried out."""
        before = self.state
        effects = self._dispatch(event)
        if self.state not in (State.FOLLOW_UP, State.THINKING, State.SPEAKING):
            self.follow_up = False
        effects = [*self._turn_detection(), *effects, *self._stream()]
        if self.state is not before:
            effects.append(SetLed(self.state))
        return effects

    # ---- the resting state, from the facts ---------------------------------------------

    @property
    def hands_free(self) -> bool:
        return self.rules.conversation == "hands_free"

    @property
    def by_voice(self) -> bool:
        """The server's VAD finds the turns now: hands-free, or a push-to-talk follow-up."""
        return self.hands_free or self.follow_up

    def _rest(self) -> State:
        if self.auth_failed or self.audio_lost:
            return State.ERROR
        if not self.connected:
            return State.OFFLINE
        if self.hands_free and self.conversation_on:
            return State.MUTED if self.muted else State.CONVERSING
        return State.IDLE

    @property
    def in_turn(self) -> bool:
        return self.state in (State.LISTENING, State.THINKING, State.SPEAKING)

    def _turn_detection(self) -> list[Effect]:
        """Push-to-talk: server VAD exactly while a follow-up window (or its turn) lasts."""
        if self.hands_free or self.follow_up == self.server_vad:
            return []  # hands-free sessions are opened with server VAD and keep it
        self.server_vad = self.follow_up
        return [SetTurnDetection(self.server_vad)]

    def _stream(self) -> list[Effect]:
        state = self.state
        if state in (State.CONVERSING, State.FOLLOW_UP):
            want = True
        elif state is State.THINKING and self.by_voice:
            want = not self.muted
        elif state is State.SPEAKING and self.by_voice:
            want = self.rules.voice_barge_in and not self.muted  # else deaf: it would hear itself
        else:
            want = False
        if want == self.streaming:
            return []
        self.streaming = want
        return [OpenMic() if want else CloseMic()]

    # ---- transitions -------------------------------------------------------------------

    def _dispatch(self, event: Event) -> list[Effect]:
        match event:
            case SessionUp():
                self.connected, self.auth_failed = True, False
                return self._settle() if self.state in _RESTING else []
            case SessionDown():
                self.connected = False
                if self.state is State.SPEAKING and not self.response_running:
                    return []  # the whole answer is here: it plays out, then the box rests
                return self._abort_turn("failed", "not_connected")
            case AuthFailed():
                self.connected, self.auth_failed = False, True
                return self._abort_turn("failed", "error")
            case AudioLost():
                self.audio_lost = True
                return self._abort_turn("failed", "error")
            case AudioBack():
                self.audio_lost = False
                return self._settle() if self.state in _RESTING else []
            case ButtonDown(at=at):
                return self._press(at)
            case ButtonUp(at=at):
                if self.hands_free:
                    return self._hands_free_release(at)
                if self.state is State.LISTENING and self.rules.mode == "hold":
                    return self._end_listening(at)
                return []
            case LongPress():
                if self.hands_free and self.pressed_at is not None:
                    self.pressed_at = None  # the release that follows is no press
                    return self._end_conversation()
                return []
            case SpeechStarted():
                return self._speech_started()
            case SpeechStopped():
                return self._speech_stopped()
            case FollowUpTimeout():
                if self.state is State.FOLLOW_UP and not self.hearing:
                    self.state = self._rest()
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
                    return self._answered()
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
        if self.hands_free:
            if state is State.IDLE:  # a new conversation
                self.conversation_on, self.muted = True, False
                self.state = self._rest()
                return []
            # Short: mute or unmute (on the release); held long_press_s: end the conversation.
            self.pressed_at = at
            return [StartTimer("long_press", self.rules.long_press_s)]
        effects: list[Effect] = []
        if state is State.SPEAKING:  # barge-in: silence first, then stop generation
            effects.append(FlushPlayback())
            if self.response_running:
                effects.append(CancelResponse())
            effects.append(TurnEnded("cancelled"))
        elif state is State.THINKING:
            effects += [CancelResponse(), CancelTimer("answer"), TurnEnded("cancelled")]
        elif state is State.FOLLOW_UP:
            effects.append(CancelTimer("follow_up"))
            if self.hearing:
                effects.append(TurnEnded("cancelled"))
        self.response_running = self.hearing = self.follow_up = False
        self.streaming = False  # StartMic takes the mic over
        self.pressed_at = at
        self.state = State.LISTENING
        return [
            *effects,
            StartMic(),
            PlayEarcon("listening"),
            StartTimer("listen", self.rules.max_listen_s),
        ]

    def _hands_free_release(self, at: float) -> list[Effect]:
        if self.pressed_at is None:
            return []
        held_s, self.pressed_at = at - self.pressed_at, None
        effects: list[Effect] = [CancelTimer("long_press")]
        if held_s >= self.rules.long_press_s:  # the release beat the timer
            return [*effects, *self._end_conversation()]
        self.muted = not self.muted
        if self.state in (State.CONVERSING, State.MUTED):
            if self.hearing:
                effects.append(TurnEnded("cancelled"))
                self.hearing = False
            self.state = self._rest()
        return effects  # thinking/speaking: the answer goes on; the mic follows ``muted``

    def _end_conversation(self) -> list[Effect]:
        state = self.state
        if state not in (State.CONVERSING, State.MUTED, State.THINKING, State.SPEAKING):
            return []
        effects: list[Effect] = []
        if state is State.THINKING:
            effects += [CancelResponse(), CancelTimer("answer"), TurnEnded("cancelled")]
        elif state is State.SPEAKING:
            effects.append(FlushPlayback())
            if self.response_running:
                effects.append(CancelResponse())
            effects.append(TurnEnded("cancelled"))
        elif self.hearing:
            effects.append(TurnEnded("cancelled"))
        self.conversation_on = self.muted = self.hearing = self.response_running = False
        self.state = self._rest()
        return effects

    def _speech_started(self) -> list[Effect]:
        state = self.state
        if state is State.CONVERSING or state is State.FOLLOW_UP:
            if self.hearing:
                return []
            self.hearing = True
            effects: list[Effect] = [CancelTimer("follow_up")] if state is State.FOLLOW_UP else []
            return [*effects, BeginTurn()]
        if state not in (State.THINKING, State.SPEAKING) or not self.by_voice:
            return []
        # The owner speaks over the answer (or before it): the server cancels the response
        # by itself; the box silences it, truncates what was heard and drops its late audio.
        if state is State.SPEAKING:
            effects = [FlushPlayback()]
            if self.response_running:
                effects.append(DropResponse())
        else:
            effects = [DropResponse(), CancelTimer("answer")]
        self.response_running = False
        self.hearing = True
        self.state = State.CONVERSING if self.hands_free else State.FOLLOW_UP
        return [*effects, TurnEnded("cancelled"), BeginTurn()]

    def _speech_stopped(self) -> list[Effect]:
        state = self.state
        if state is not State.CONVERSING and state is not State.FOLLOW_UP:
            return []
        effects: list[Effect] = []
        if not self.hearing:  # no speech_started came: the turn starts here
            if state is State.FOLLOW_UP:
                effects.append(CancelTimer("follow_up"))
            effects.append(BeginTurn())
        self.hearing = False
        self.response_running = True
        self.state = State.THINKING
        return [*effects, StartTimer("answer", self.rules.answer_timeout_s)]

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
        return []  # speaking: play what came; the drain ends the turn

    def _answered(self) -> list[Effect]:
        """The answer has played: rest, or (push-to-talk) open the follow-up window."""
        effects = self._finish("answered")
        if not self.hands_free and self.rules.follow_up_s > 0 and self.state is State.IDLE:
            self.state = State.FOLLOW_UP
            self.follow_up = True
            effects.append(StartTimer("follow_up", self.rules.follow_up_s))
        return effects

    def _finish(self, result: str) -> list[Effect]:
        self.hearing = False
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
        elif state is State.FOLLOW_UP:
            effects += [CancelTimer("follow_up")]
        if self.in_turn or self.hearing:
            effects += [PlayEarcon(earcon), TurnEnded(result)]
        self.response_running = self.hearing = False
        self.pressed_at = None
        self.state = self._rest()
        return effects
