"""The turn-taking state machine, pure: every state x event pair, then whole turns."""

from __future__ import annotations

import pytest

from appliance.core.state_machine import (
    AnswerAudio,
    AnswerTimeout,
    AudioBack,
    AudioLost,
    AuthFailed,
    ButtonDown,
    ButtonUp,
    CancelResponse,
    CancelTimer,
    Commit,
    DiscardInput,
    FlushPlayback,
    ListenTimeout,
    PlaybackDrained,
    PlayEarcon,
    ResponseFinished,
    SessionDown,
    SessionUp,
    SetLed,
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
}


def machine_in(state: State) -> TurnMachine:
    m = TurnMachine(TurnRules(max_listen_s=30, answer_timeout_s=15), state=state)
    m.connected = state in (S.IDLE, S.LISTENING, S.THINKING, S.SPEAKING)
    m.auth_failed = state is S.ERROR
    m.response_running = state in (S.THINKING, S.SPEAKING)
    m.pressed_at = 10.0 if state is S.LISTENING else None
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
}

PAIRS = [(state, name) for state in State for name in EVENTS]


def test_the_table_names_only_real_pairs():
    assert set(TABLE) == set(State)
    assert all(set(row) <= set(EVENTS) for row in TABLE.values())


@pytest.mark.parametrize(("state", "name"), PAIRS, ids=[f"{s.value}-{n}" for s, n in PAIRS])
def test_every_state_and_event(state, name):
    machine = machine_in(state)
    expected_state, expected_effects = TABLE[state].get(name, (state, []))
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
