"""Fuzzing the daemon (issue 7 §2).

(a) Server events of every sort (valid, truncated, wrong-typed, huge deltas, invalid base64,
unknown types, out-of-order ids), parsed by the real parser and fed into a TurnShell with the
real state machine and a fake link, interleaved with link events, button presses, mic audio and
timer firings: nothing raises, the state is always a State, and the shell's invariants hold.

(b) Config files built from the real schema's keys with random values: ``load_config`` returns
a Config or raises a one-line ConfigError naming a key or the file, never anything else, and
never shows the API key.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import tempfile
import typing
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from link_helpers import FakePanel, FakeTranscripts
from test_conversation import Speaker

from appliance.config import Config, ConfigError, load_config
from appliance.core import state_machine as sm
from appliance.protocol.parser import parse_server_event
from appliance.realtime.link_events import AuthRejected, Connected, Disconnected
from appliance.turns import TurnShell

# ---- (a) server events into a TurnShell -------------------------------------------------


class FakeTools:
    def timeout_of(self, name: str) -> float:
        return 1.0

    def answered_by_server(self, name: str) -> bool:
        return name == "file_search"


class FakeLink:
    """Records what the shell sends; never raises."""

    output_rate = 44100
    session_id = "sess_fuzz"

    def __init__(self) -> None:
        self.sent: list[tuple] = []
        self.turn_open = False
        self.tools = FakeTools()

    def begin_turn(self) -> None:
        self.turn_open = True

    def end_turn(self) -> None:
        self.turn_open = False

    def tool_running(self, call_id: str) -> bool:
        return True

    async def append_audio(self, pcm: bytes) -> None:
        self.sent.append(("append", len(pcm)))

    async def commit(self) -> None:
        self.sent.append(("commit",))

    async def create_response(self) -> None:
        self.sent.append(("response.create",))

    def ask_when_ready(self) -> None:
        self.sent.append(("response.create",))

    response_requested = False

    async def cancel_response(self) -> bool:
        self.sent.append(("cancel",))
        return True

    async def truncate(self, item_id: str, audio_end_ms: int, content_index: int = 0) -> None:
        self.sent.append(("truncate", item_id, audio_end_ms))

    async def discard_input(self) -> None:
        self.sent.append(("discard_input", True))

    async def set_turn_detection(self, vad: Any) -> None:
        self.sent.append(("turn_detection", vad is not None))


RIDS = st.sampled_from(["resp_1", "resp_2", "resp_3", ""])  # few ids: often out of order
IIDS = st.sampled_from(["item_1", "item_2", "item_3"])
PCM = st.binary(max_size=512).map(lambda b: base64.b64encode(b).decode())
HUGE = base64.b64encode(bytes(1 << 20)).decode()  # 1 MiB of silence
JUNK = st.none() | st.integers() | st.booleans() | st.text(max_size=8) | st.lists(st.integers())


def _valid(kind: str, rid: str, iid: str, pcm: str, text: str, status: str) -> dict:
    if kind == "response.created":
        return {"type": kind, "response": {"id": rid, "status": "in_progress", "output": []}}
    if kind == "response.output_audio.delta":
        return {"type": kind, "response_id": rid, "item_id": iid, "delta": pcm}
    if kind == "response.output_audio_transcript.delta":
        return {"type": kind, "response_id": rid, "item_id": iid, "delta": text}
    if kind == "response.output_audio_transcript.done":
        return {"type": kind, "response_id": rid, "item_id": iid, "transcript": text}
    if kind == "response.done":
        return {"type": kind, "response": {"id": rid, "status": status, "output": []}}
    if kind == "response.function_call_arguments.done":
        return {
            "type": kind,
            "response_id": rid,
            "item_id": iid,
            "call_id": "call_" + iid,
            "name": text or "get_time",
            "arguments": "{}",
        }
    if kind == "error":
        return {"type": kind, "error": {"type": "server_error", "code": text, "message": text}}
    if kind.startswith("input_audio_buffer."):
        return {"type": kind, "item_id": iid, "audio_start_ms": 0, "audio_end_ms": 10}
    if kind == "conversation.item.input_audio_transcription.completed":
        return {"type": kind, "item_id": iid, "content_index": 0, "transcript": text}
    return {"type": kind}


KINDS = [
    "response.created",
    "response.output_audio.delta",
    "response.output_audio_transcript.delta",
    "response.output_audio_transcript.done",
    "response.done",
    "response.function_call_arguments.done",
    "error",
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "conversation.item.input_audio_transcription.completed",
]
valid_event = st.builds(
    _valid,
    st.sampled_from(KINDS),
    RIDS,
    IIDS,
    PCM,
    st.text(max_size=10),
    st.sampled_from(["completed", "cancelled", "failed", "incomplete", "weird"]),
)


def _wrong_types(event: dict, key: str, junk: Any) -> dict:
    keys = [k for k in event if k != "type"]
    if keys:
        event[keys[hash(key) % len(keys)]] = junk
    return event


frame = st.one_of(
    valid_event.map(json.dumps),
    valid_event.map(json.dumps).flatmap(lambda t: st.integers(0, len(t)).map(lambda n: t[:n])),
    st.builds(_wrong_types, valid_event, st.text(max_size=3), JUNK).map(json.dumps),
    st.builds(
        lambda rid, iid: json.dumps(
            {
                "type": "response.output_audio.delta",
                "response_id": rid,
                "item_id": iid,
                "delta": HUGE,
            }
        ),
        RIDS,
        IIDS,
    ),
    st.builds(
        lambda rid, bad: json.dumps(
            {
                "type": "response.output_audio.delta",
                "response_id": rid,
                "item_id": "item_1",
                "delta": bad,
            }
        ),
        RIDS,
        st.sampled_from(["!!!", "abc", "a===", "€uro", "QUJD\n"]),
    ),
    st.text(max_size=12).map(lambda k: json.dumps({"type": "x." + k, "item_id": "item_1"})),
    st.binary(max_size=20),
)

step = st.one_of(
    frame.map(lambda f: ("server", f)),
    st.sampled_from(
        [
            ("link", Connected("sess_fuzz")),
            ("link", Disconnected("fuzz", 0.1, turn_lost=True)),
            ("link", Disconnected("fuzz", 0.1)),
            ("link", AuthRejected("refused", 1.0)),
            ("press",),
            ("release",),
            ("mic",),
            ("sleep",),
            ("machine", sm.AnswerTimeout()),
            ("machine", sm.ListenTimeout()),
            ("machine", sm.LongPress()),
            ("machine", sm.FollowUpTimeout()),
            ("machine", sm.PlaybackDrained()),
        ]
    ),
)
rules = st.builds(
    sm.TurnRules,
    mode=st.sampled_from(["hold", "toggle"]),
    min_press_ms=st.sampled_from([0, 150]),
    conversation=st.sampled_from(["push_to_talk", "hands_free"]),
    follow_up_s=st.sampled_from([0.0, 5.0]),
    voice_barge_in=st.booleans(),
)
RESTING_NO_TURN = (sm.State.IDLE, sm.State.OFFLINE, sm.State.ERROR)


def check(shell: TurnShell, link: FakeLink) -> None:
    machine = shell.machine
    assert isinstance(machine.state, sm.State)
    if shell.sending:
        if machine.hands_free or machine.rules.follow_up_s > 0:
            assert machine.state is not sm.State.IDLE and machine.state is not sm.State.OFFLINE
        else:
            assert machine.state is sm.State.LISTENING
    if machine.state in RESTING_NO_TURN:
        assert shell.turn is None and not link.turn_open
        assert not shell.sending


async def run(steps: list, turn_rules: sm.TurnRules) -> None:
    link = FakeLink()
    shell = TurnShell(sm.TurnMachine(turn_rules), link, Speaker(), FakePanel(), FakeTranscripts())
    try:
        for s in steps:
            match s:
                case ("server", raw):
                    await shell.on_link_event(parse_server_event(raw))
                case ("link", event):
                    await shell.on_link_event(event)
                case ("press",):
                    await shell.press()
                case ("release",):
                    await shell.release()
                case ("mic",):
                    await shell.on_mic_chunk(bytes(960))
                case ("sleep",):
                    await asyncio.sleep(0)
                case ("machine", event):
                    await shell.handle(event)
            await asyncio.sleep(0)  # let posted events and background tasks run
            check(shell, link)
    finally:
        await shell.close()
    check(shell, link)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(step, max_size=40), rules)
def test_any_event_sequence_leaves_the_shell_consistent(steps, turn_rules):
    asyncio.run(run([("link", Connected("sess_fuzz")), *steps], turn_rules))


# ---- (b) config files -------------------------------------------------------------------

KEY = "sk-FUZZ-d41d8cd9-must-not-leak"


def _sections(cls: type, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        t = hints.get(f.name)
        if isinstance(t, type) and dataclasses.is_dataclass(t):
            out.update(_sections(t, prefix + f.name + "."))
        else:
            out[prefix + f.name] = t
    return out


KEYS = sorted(k for k in _sections(Config) if k != "realtime.api_key")
scalar = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["", "auto", "hold", "toggle", "hands_free", "speaker", "0.5", "-1", "yes"])
)
value = st.recursive(
    scalar,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
settings_st = st.dictionaries(
    st.sampled_from([*KEYS, "bogus.key", "realtime.bogus"]), value, max_size=8
)


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {"realtime": {"folder_id": "b1gfuzz", "api_key": KEY}}
    for key, v in flat.items():
        node = doc
        *path, last = key.split(".")
        for part in path:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = v
    return doc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings_st, st.one_of(st.none(), st.integers(0, 400)))
def test_any_config_file_loads_or_fails_in_one_line(flat, cut):
    text = yaml.safe_dump(_nest(flat), allow_unicode=True)
    if cut is not None:
        text = text[:cut]  # a truncated (often broken) file
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            config = load_config(path, environ={})
        except ConfigError as e:
            message = str(e)
            assert "\n" not in message
            assert KEY not in message
            assert str(path) in message or any(k.split(".")[-1] in message for k in KEYS)
        else:
            assert isinstance(config, Config)
            assert KEY not in repr(config)
