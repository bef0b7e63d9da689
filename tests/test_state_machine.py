"""The turn-taking state machine, pure: every state x event pair, then whole turns."""

from __future__ import annotations

import pytest

from appliance.core.state_machine import (
    AnswerAudio,
    AnswerTimeout,
    AudioBack,
    AudioLost,
    AuthFailed,
    BeginTurn,
    ButtonDown,
    ButtonUp,
    CancelResponse,
    CancelTimer,
    CloseMic,
    Commit,
    DiscardInput,
    DropResponse,
    FlushPlayback,
    FollowUpTimeout,
    ListenTimeout,
    LongPress,
    OpenMic,
    PlaybackDrained,
    PlayEarcon,
    ResponseFinished,
    SessionDown,
    SessionUp,
    SetLed,
    SetTurnDetection,
    SpeechStarted,
    SpeechStopped,
    StartMic,
    StartTimer,
    State,
    StopMic,
    TurnEnded,
    TurnFailed,
    TurnMachine,
    TurnRules,
)

S = State
EVENTS = {
    "down": ButtonDown(at=10.5),
    "up": ButtonUp(at=10.5),  # 500 ms after the press below: a real press
    "session_up": SessionUp(),
    "session_down": SessionDown("gone"),
    "auth_failed": AuthFailed("401"),
    "answer_audio": AnswerAudio(),
    "response_done": ResponseFinished("completed"),
    "drained": PlaybackDrained(),
    "audio_lost": AudioLost("unplugged"),
    "audio_back": AudioBack(),
    "listen_timeout": ListenTimeout(),
    "answer_timeout": AnswerTimeout(),
    "turn_failed": TurnFailed("no session"),
    "speech_started": SpeechStarted(),
    "speech_stopped": SpeechStopped(),
    "long_press": LongPress(),
    "follow_up_timeout": FollowUpTimeout(),
}


def machine_in(state: State, context: str = "") -> TurnMachine:
    """A machine in ``state``, in its natural context (push_to_talk for the old states,
    hands_free for conversing and muted, follow_up for follow_up) unless one is given."""
    context = context or {S.CONVERSING: "hands_free", S.MUTED: "hands_free"}.get(state, "")
    context = context or ("follow_up" if state is S.FOLLOW_UP else "push_to_talk")
    rules = TurnRules(
        max_listen_s=30,
        answer_timeout_s=15,
        conversation="hands_free" if context == "hands_free" else "push_to_talk",
        follow_up_s=8 if context == "follow_up" else 0,
        long_press_s=2,
        voice_barge_in=context == "hands_free",  # an echo canceller runs
    )
    m = TurnMachine(rules, state=state)
    m.connected = state not in (S.STARTING, S.OFFLINE, S.ERROR)
    m.auth_failed = state is S.ERROR
    m.response_running = state in (S.THINKING, S.SPEAKING)
    hands_free_press = context == "hands_free" and state is not S.IDLE
    m.pressed_at = 10.0 if state is S.LISTENING or hands_free_press else None
    if context == "hands_free":
        m.conversation_on = state is not S.IDLE
        m.muted = state is S.MUTED
        m.streaming = state in (S.CONVERSING, S.THINKING, S.SPEAKING)
    if context == "follow_up":
        m.follow_up = m.server_vad = True
        m.streaming = state in (S.FOLLOW_UP, S.THINKING)  # deaf while speaking (no canceller)
    return m


LISTEN = [StartMic(), PlayEarcon("listening"), StartTimer("listen", 30)]
SEND = [StopMic(), CancelTimer("listen"), Commit(), PlayEarcon("sent"), StartTimer("answer", 15)]
DROP_LISTEN = [StopMic(), CancelTimer("listen"), DiscardInput()]


def fail(earcon):
    return [PlayEarcon(earcon), TurnEnded("failed")]


# (state, event) -> (next state, effects). Anything missing from a row means: no change, no effect.
TABLE: dict[State, dict[str, tuple[State, list]]] = {
    S.STARTING: {
        "down": (S.STARTING, [PlayEarcon("not_connected")]),
        "session_up": (S.IDLE, [SetLed(S.IDLE)]),
        "session_down": (S.OFFLINE, [SetLed(S.OFFLINE)]),
        "auth_failed": (S.ERROR, [SetLed(S.ERROR)]),
        "audio_lost": (S.ERROR, [SetLed(S.ERROR)]),
    },
    S.IDLE: {
        "down": (S.LISTENING, [*LISTEN, SetLed(S.LISTENING)]),
        "session_down": (S.OFFLINE, [SetLed(S.OFFLINE)]),
        "auth_failed": (S.ERROR, [SetLed(S.ERROR)]),
        "audio_lost": (S.ERROR, [SetLed(S.ERROR)]),
    },
    S.LISTENING: {
        "up": (S.THINKING, [*SEND, SetLed(S.THINKING)]),
        "listen_timeout": (S.THINKING, [*SEND, SetLed(S.THINKING)]),
        "session_down": (S.OFFLINE, [*DROP_LISTEN, *fail("not_connected"), SetLed(S.OFFLINE)]),
        "auth_failed": (S.ERROR, [*DROP_LISTEN, *fail("error"), SetLed(S.ERROR)]),
        "audio_lost": (S.ERROR, [*DROP_LISTEN, *fail("error"), SetLed(S.ERROR)]),
        "turn_failed": (S.IDLE, [*DROP_LISTEN, *fail("error"), SetLed(S.IDLE)]),
    },
    S.THINKING: {
        "down": (
            S.LISTENING,
            [
                CancelResponse(),
                CancelTimer("answer"),
                TurnEnded("cancelled"),
                *LISTEN,
                SetLed(S.LISTENING),
            ],
        ),
        "answer_audio": (S.SPEAKING, [CancelTimer("answer"), SetLed(S.SPEAKING)]),
        "response_done": (S.IDLE, [CancelTimer("answer"), TurnEnded("answered"), SetLed(S.IDLE)]),
        "answer_timeout": (
            S.IDLE,
            [CancelResponse(), PlayEarcon("error"), TurnEnded("timeout"), SetLed(S.IDLE)],
        ),
        "session_down": (
            S.OFFLINE,
            [CancelTimer("answer"), *fail("not_connected"), SetLed(S.OFFLINE)],
        ),
        "auth_failed": (S.ERROR, [CancelTimer("answer"), *fail("error"), SetLed(S.ERROR)]),
        "audio_lost": (S.ERROR, [CancelTimer("answer"), *fail("error"), SetLed(S.ERROR)]),
        "turn_failed": (S.IDLE, [CancelTimer("answer"), *fail("error"), SetLed(S.IDLE)]),
    },
    S.SPEAKING: {
        "down": (
            S.LISTENING,
            [
                FlushPlayback(),
                CancelResponse(),
                TurnEnded("cancelled"),
                *LISTEN,
                SetLed(S.LISTENING),
            ],
        ),
        "session_down": (S.OFFLINE, [FlushPlayback(), *fail("not_connected"), SetLed(S.OFFLINE)]),
        "auth_failed": (S.ERROR, [FlushPlayback(), *fail("error"), SetLed(S.ERROR)]),
        "audio_lost": (S.ERROR, [FlushPlayback(), *fail("error"), SetLed(S.ERROR)]),
        "turn_failed": (S.IDLE, [FlushPlayback(), *fail("error"), SetLed(S.IDLE)]),
    },
    S.OFFLINE: {
        "down": (S.OFFLINE, [PlayEarcon("not_connected")]),
        "session_up": (S.IDLE, [SetLed(S.IDLE)]),
        "auth_failed": (S.ERROR, [SetLed(S.ERROR)]),
        "audio_lost": (S.ERROR, [SetLed(S.ERROR)]),
    },
    S.ERROR: {
        "down": (S.ERROR, [PlayEarcon("error")]),
        "session_up": (S.IDLE, [SetLed(S.IDLE)]),  # the key works again
    },
    # Hands-free, a press in progress (pressed 500 ms before "up").
    S.CONVERSING: {
        "down": (S.CONVERSING, [StartTimer("long_press", 2)]),
        "up": (S.MUTED, [CancelTimer("long_press"), CloseMic(), SetLed(S.MUTED)]),
        "long_press": (S.IDLE, [CloseMic(), SetLed(S.IDLE)]),
        "speech_started": (S.CONVERSING, [BeginTurn()]),
        "speech_stopped": (
            S.THINKING,
            [BeginTurn(), StartTimer("answer", 15), SetLed(S.THINKING)],
        ),
        "session_down": (S.OFFLINE, [CloseMic(), SetLed(S.OFFLINE)]),
        "auth_failed": (S.ERROR, [CloseMic(), SetLed(S.ERROR)]),
        "audio_lost": (S.ERROR, [CloseMic(), SetLed(S.ERROR)]),
    },
    S.MUTED: {
        "down": (S.MUTED, [StartTimer("long_press", 2)]),
        "up": (S.CONVERSING, [CancelTimer("long_press"), OpenMic(), SetLed(S.CONVERSING)]),
        "long_press": (S.IDLE, [SetLed(S.IDLE)]),
        "session_down": (S.OFFLINE, [SetLed(S.OFFLINE)]),
        "auth_failed": (S.ERROR, [SetLed(S.ERROR)]),
        "audio_lost": (S.ERROR, [SetLed(S.ERROR)]),
    },
    # Push-to-talk, the follow-up window open (session on server VAD, the mic streaming).
    S.FOLLOW_UP: {
        "down": (
            S.LISTENING,
            [SetTurnDetection(False), CancelTimer("follow_up"), *LISTEN, SetLed(S.LISTENING)],
        ),
        "speech_started": (S.FOLLOW_UP, [CancelTimer("follow_up"), BeginTurn()]),
        "speech_stopped": (
            S.THINKING,
            [CancelTimer("follow_up"), BeginTurn(), StartTimer("answer", 15), SetLed(S.THINKING)],
        ),
        "follow_up_timeout": (S.IDLE, [SetTurnDetection(False), CloseMic(), SetLed(S.IDLE)]),
        "session_down": (
            S.OFFLINE,
            [SetTurnDetection(False), CancelTimer("follow_up"), CloseMic(), SetLed(S.OFFLINE)],
        ),
        "auth_failed": (
            S.ERROR,
            [SetTurnDetection(False), CancelTimer("follow_up"), CloseMic(), SetLed(S.ERROR)],
        ),
        "audio_lost": (
            S.ERROR,
            [SetTurnDetection(False), CancelTimer("follow_up"), CloseMic(), SetLed(S.ERROR)],
        ),
    },
}

# Hands-free (an echo canceller runs), a press in progress; the conversation is off in idle.
HANDS_FREE_TABLE: dict[State, dict[str, tuple[State, list]]] = {
    S.IDLE: {
        "down": (S.CONVERSING, [OpenMic(), SetLed(S.CONVERSING)]),
        "session_down": (S.OFFLINE, [SetLed(S.OFFLINE)]),
        "auth_failed": (S.ERROR, [SetLed(S.ERROR)]),
        "audio_lost": (S.ERROR, [SetLed(S.ERROR)]),
    },
    S.THINKING: {
        "down": (S.THINKING, [StartTimer("long_press", 2)]),
        "up": (S.THINKING, [CancelTimer("long_press"), CloseMic()]),  # muted; the answer comes
        "long_press": (
            S.IDLE,
            [
                CancelResponse(),
                CancelTimer("answer"),
                TurnEnded("cancelled"),
                CloseMic(),
                SetLed(S.IDLE),
            ],
        ),
        "speech_started": (
            S.CONVERSING,
            [
                DropResponse(),
                CancelTimer("answer"),
                TurnEnded("cancelled"),
                BeginTurn(),
                SetLed(S.CONVERSING),
            ],
        ),
        "answer_audio": (S.SPEAKING, [CancelTimer("answer"), SetLed(S.SPEAKING)]),
        "response_done": (
            S.CONVERSING,
            [CancelTimer("answer"), TurnEnded("answered"), SetLed(S.CONVERSING)],
        ),
        "answer_timeout": (
            S.CONVERSING,
            [CancelResponse(), PlayEarcon("error"), TurnEnded("timeout"), SetLed(S.CONVERSING)],
        ),
        "session_down": (
            S.OFFLINE,
            [CancelTimer("answer"), *fail("not_connected"), CloseMic(), SetLed(S.OFFLINE)],
        ),
        "auth_failed": (
            S.ERROR,
            [CancelTimer("answer"), *fail("error"), CloseMic(), SetLed(S.ERROR)],
        ),
        "audio_lost": (
            S.ERROR,
            [CancelTimer("answer"), *fail("error"), CloseMic(), SetLed(S.ERROR)],
        ),
        "turn_failed": (
            S.CONVERSING,
            [CancelTimer("answer"), *fail("error"), SetLed(S.CONVERSING)],
        ),
    },
    S.SPEAKING: {
        "down": (S.SPEAKING, [StartTimer("long_press", 2)]),
        "up": (S.SPEAKING, [CancelTimer("long_press"), CloseMic()]),
        "long_press": (
            S.IDLE,
            [
                FlushPlayback(),
                CancelResponse(),
                TurnEnded("cancelled"),
                CloseMic(),
                SetLed(S.IDLE),
            ],
        ),
        "speech_started": (  # voice barge-in: the server cancels, the box drops the rest
            S.CONVERSING,
            [
                FlushPlayback(),
                DropResponse(),
                TurnEnded("cancelled"),
                BeginTurn(),
                SetLed(S.CONVERSING),
            ],
        ),
        "session_down": (
            S.OFFLINE,
            [FlushPlayback(), *fail("not_connected"), CloseMic(), SetLed(S.OFFLINE)],
        ),
        "auth_failed": (S.ERROR, [FlushPlayback(), *fail("error"), CloseMic(), SetLed(S.ERROR)]),
        "audio_lost": (S.ERROR, [FlushPlayback(), *fail("error"), CloseMic(), SetLed(S.ERROR)]),
        "turn_failed": (S.CONVERSING, [FlushPlayback(), *fail("error"), SetLed(S.CONVERSING)]),
    },
}

OFF = SetTurnDetection(False)

# Push-to-talk, a turn the follow-up window started (no echo canceller: deaf while speaking).
FOLLOW_UP_TABLE: dict[State, dict[str, tuple[State, list]]] = {
    S.THINKING: {
        "down": (
            S.LISTENING,
            [
                OFF,
                CancelResponse(),
                CancelTimer("answer"),
                TurnEnded("cancelled"),
                *LISTEN,
                SetLed(S.LISTENING),
            ],
        ),
        "speech_started": (
            S.FOLLOW_UP,
            [
                DropResponse(),
                CancelTimer("answer"),
                TurnEnded("cancelled"),
                BeginTurn(),
                SetLed(S.FOLLOW_UP),
            ],
        ),
        "answer_audio": (S.SPEAKING, [CancelTimer("answer"), CloseMic(), SetLed(S.SPEAKING)]),
        "response_done": (
            S.IDLE,
            [OFF, CancelTimer("answer"), TurnEnded("answered"), CloseMic(), SetLed(S.IDLE)],
        ),
        "answer_timeout": (
            S.IDLE,
            [
                OFF,
                CancelResponse(),
                PlayEarcon("error"),
                TurnEnded("timeout"),
                CloseMic(),
                SetLed(S.IDLE),
            ],
        ),
        "session_down": (
            S.OFFLINE,
            [OFF, CancelTimer("answer"), *fail("not_connected"), CloseMic(), SetLed(S.OFFLINE)],
        ),
        "auth_failed": (
            S.ERROR,
            [OFF, CancelTimer("answer"), *fail("error"), CloseMic(), SetLed(S.ERROR)],
        ),
        "audio_lost": (
            S.ERROR,
            [OFF, CancelTimer("answer"), *fail("error"), CloseMic(), SetLed(S.ERROR)],
        ),
        "turn_failed": (
            S.IDLE,
            [OFF, CancelTimer("answer"), *fail("error"), CloseMic(), SetLed(S.IDLE)],
        ),
    },
    S.SPEAKING: {
        "down": (
            S.LISTENING,
            [
                OFF,
                FlushPlayback(),
                CancelResponse(),
                TurnEnded("cancelled"),
                *LISTEN,
                SetLed(S.LISTENING),
            ],
        ),
        "speech_started": (
            S.FOLLOW_UP,
            [
                FlushPlayback(),
                DropResponse(),
                TurnEnded("cancelled"),
                BeginTurn(),
                OpenMic(),
                SetLed(S.FOLLOW_UP),
            ],
        ),
        "session_down": (
            S.OFFLINE,
            [OFF, FlushPlayback(), *fail("not_connected"), SetLed(S.OFFLINE)],
        ),
        "auth_failed": (S.ERROR, [OFF, FlushPlayback(), *fail("error"), SetLed(S.ERROR)]),
        "audio_lost": (S.ERROR, [OFF, FlushPlayback(), *fail("error"), SetLed(S.ERROR)]),
        "turn_failed": (S.IDLE, [OFF, FlushPlayback(), *fail("error"), SetLed(S.IDLE)]),
    },
}

TABLES = {"": TABLE, "hands_free": HANDS_FREE_TABLE, "follow_up": FOLLOW_UP_TABLE}
PAIRS = [
    (context, state, name)
    for context, table in TABLES.items()
    for state in table
    for name in EVENTS
]


def test_the_table_names_only_real_pairs():
    assert set(TABLE) == set(State)
    for table in TABLES.values():
        assert all(set(row) <= set(EVENTS) for row in table.values())


@pytest.mark.parametrize(
    ("context", "state", "name"),
    PAIRS,
    ids=[f"{c or 'natural'}-{s.value}-{n}" for c, s, n in PAIRS],
)
def test_every_state_and_event(context, state, name):
    machine = machine_in(state, context)
    expected_state, expected_effects = TABLES[context][state].get(name, (state, []))
    effects = machine.handle(EVENTS[name])
    assert (machine.state, effects) == (expected_state, expected_effects)


# ---- whole turns --------------------------------------------------------------------------


def run(machine, *events):
    effects = []
    for event in events:
        effects += machine.handle(event)
    return effects


def connected(**rules) -> TurnMachine:
    m = TurnMachine(TurnRules(**rules))
    m.handle(SessionUp())
    return m


def test_a_full_answered_turn():
    m = connected()
    effects = run(
        m, ButtonDown(1.0), ButtonUp(2.0), AnswerAudio(), ResponseFinished(), PlaybackDrained()
    )
    assert m.state is S.IDLE
    assert [e for e in effects if isinstance(e, SetLed)] == [
        SetLed(S.LISTENING),
        SetLed(S.THINKING),
        SetLed(S.SPEAKING),
        SetLed(S.IDLE),
    ]
    assert effects[-2:] == [TurnEnded("answered"), SetLed(S.IDLE)]


def test_drain_before_the_response_is_done_keeps_speaking():
    m = connected()
    run(m, ButtonDown(1.0), ButtonUp(2.0), AnswerAudio())
    assert run(m, PlaybackDrained()) == [] and m.state is S.SPEAKING  # the server is slow
    run(m, ResponseFinished(), PlaybackDrained())
    assert m.state is S.IDLE


def test_short_press_is_ignored_with_an_error_earcon():
    m = connected(min_press_ms=150)
    effects = run(m, ButtonDown(1.0), ButtonUp(1.1))
    assert m.state is S.IDLE
    assert Commit() not in effects
    assert effects[-4:] == [
        DiscardInput(),
        PlayEarcon("error"),
        TurnEnded("too_short"),
        SetLed(S.IDLE),
    ]


def test_toggle_mode_press_starts_and_press_stops():
    m = connected(mode="toggle")
    run(m, ButtonDown(1.0), ButtonUp(1.2))
    assert m.state is S.LISTENING  # the release does not end a toggled turn
    effects = run(m, ButtonDown(3.0))
    assert m.state is S.THINKING and Commit() in effects


def test_barge_in_after_the_response_finished_does_not_cancel():
    m = connected()
    run(m, ButtonDown(1.0), ButtonUp(2.0), AnswerAudio(), ResponseFinished())
    effects = run(m, ButtonDown(5.0))
    assert effects[:2] == [FlushPlayback(), TurnEnded("cancelled")]
    assert CancelResponse() not in effects and m.state is S.LISTENING


def test_failed_answer_without_audio_is_audible():
    m = connected()
    effects = run(m, ButtonDown(1.0), ButtonUp(2.0), ResponseFinished("failed"))
    assert m.state is S.IDLE and PlayEarcon("error") in effects
    assert TurnEnded("failed") in effects


def test_errors_rest_until_every_cause_is_fixed():
    m = connected()
    run(m, AudioLost("usb"), AuthFailed("401"))
    assert m.state is S.ERROR
    run(m, AudioBack())
    assert m.state is S.ERROR  # the key is still refused
    run(m, SessionUp())
    assert m.state is S.IDLE
    run(m, SessionDown())
    assert m.state is S.OFFLINE
    run(m, AudioLost("usb"))
    assert m.state is S.ERROR
    run(m, AudioBack())
    assert m.state is S.OFFLINE


def test_starting_stays_starting_until_the_link_has_an_outcome():
    m = TurnMachine()
    assert run(m, AudioBack()) == [] and m.state is S.STARTING
    run(m, SessionUp())
    assert m.state is S.IDLE


# ---- hands-free and the follow-up window, whole turns -------------------------------------


def test_a_hands_free_turn_without_a_canceller_is_deaf_while_speaking():
    m = connected(conversation="hands_free")
    assert m.state is S.CONVERSING
    effects = run(m, SpeechStarted(), SpeechStopped(), AnswerAudio())
    assert effects[-2:] == [CloseMic(), SetLed(S.SPEAKING)]  # it would hear itself
    effects = run(m, ResponseFinished(), PlaybackDrained())
    assert effects == [TurnEnded("answered"), OpenMic(), SetLed(S.CONVERSING)]


def test_the_follow_up_window_opens_after_the_answer_and_closes_in_silence():
    m = connected(follow_up_s=5)
    effects = run(
        m, ButtonDown(1.0), ButtonUp(2.0), AnswerAudio(), ResponseFinished(), PlaybackDrained()
    )
    assert m.state is S.FOLLOW_UP
    assert effects[-5:] == [
        SetTurnDetection(True),
        TurnEnded("answered"),
        StartTimer("follow_up", 5),
        OpenMic(),
        SetLed(S.FOLLOW_UP),
    ]
    # A follow-up question: answered, then the window opens again (VAD stays on).
    effects = run(m, SpeechStarted(), SpeechStopped(), AnswerAudio())
    assert SetTurnDetection(False) not in effects and m.state is S.SPEAKING
    effects = run(m, ResponseFinished(), PlaybackDrained())
    assert effects == [
        TurnEnded("answered"),
        StartTimer("follow_up", 5),
        OpenMic(),  # deaf while it spoke (no echo canceller)
        SetLed(S.FOLLOW_UP),
    ]
    assert m.state is S.FOLLOW_UP
    assert run(m, FollowUpTimeout()) == [SetTurnDetection(False), CloseMic(), SetLed(S.IDLE)]


def test_a_long_press_released_before_its_timer_still_ends_the_conversation():
    m = connected(conversation="hands_free", long_press_s=2)
    run(m, ButtonDown(1.0))
    effects = run(m, ButtonUp(3.5))
    assert m.state is S.IDLE and not m.conversation_on
    assert effects == [CancelTimer("long_press"), CloseMic(), SetLed(S.IDLE)]
    assert run(m, LongPress()) == []  # the stale timer does nothing
    run(m, ButtonDown(5.0), ButtonUp(5.1))
    assert m.state is S.CONVERSING
