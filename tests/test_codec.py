"""The protocol's JSON and base64 (appliance.protocol.codec): orjson and pybase64 where they are
installed, the standard library otherwise. Both must give frames of the same meaning, the
fallback must work where the libraries are missing, a malformed frame stays a logged and skipped
``Malformed``, and the key is still scrubbed from what the server sends."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SECRET, link_settings
from hypothesis import given
from hypothesis import strategies as st
from link_helpers import ask_once, until
from realtime_server import AudioAnswer, tone

from appliance.protocol import client_events as ce
from appliance.protocol import codec
from appliance.protocol import server_events as ev
from appliance.protocol.parser import parse_server_event
from appliance.protocol.providers import OPENAI, YANDEX, SessionShape
from appliance.realtime.link_events import Connected
from appliance.realtime.session import parse_scrubbed
from appliance.realtime.supervisor import SessionSupervisor

ROOT = Path(__file__).resolve().parent.parent
TRACES = ROOT.parent / "shared" / "traces"


@pytest.fixture(params=["stdlib", "fast"])
def codec_kind(request):
    """Each test that takes this runs once with each implementation."""
    if request.param == "fast" and not codec.available():
        pytest.skip("orjson/pybase64 missing (test_the_fast_codec_is_installed fails)")
    codec.use(request.param)
    yield request.param
    codec.use("fast")


def with_each(fn):
    """``fn()`` under the standard library, then under orjson/pybase64."""
    if not codec.available():
        pytest.skip("orjson/pybase64 missing (test_the_fast_codec_is_installed fails)")
    try:
        codec.use("stdlib")
        slow = fn()
        codec.use("fast")
        return slow, fn()
    finally:
        codec.use("fast")


def test_the_fast_codec_is_installed():
    # They are dependencies (pyproject.toml): a dev environment without them tests only half.
    assert codec.available()
    assert codec.use("fast") == "orjson + pybase64"


def client_events() -> list[dict]:
    shape = SessionShape(
        voice="marina",
        input_rate=24000,
        output_rate=44100,
        instructions='Отвечай коротко. "Quotes" \\ and\ttabs',
    )
    tools = [ce.FunctionTool("get_time", "Время", {"type": "object", "properties": {}})]
    return [
        ce.session_update(YANDEX, shape, tools=tools, turn_detection=ce.ServerVad()),
        ce.session_update(OPENAI, shape, event_id="evt_1"),
        ce.turn_detection_update(OPENAI, None),
        ce.input_audio_append(b"\x01\x00\xff\x7f" * 100),
        ce.input_audio_commit(),
        ce.response_create(),
        ce.response_cancel("resp_1"),
        ce.function_call_output("call_1", json.dumps({"ok": True, "text": "ёж 🦔"})),
        ce.history_recap("user: привет\nassistant: здравствуй"),
        ce.item_truncate("item_1", 1234.7),
        {"type": "x", "big": 2**70, "list": [1, 2.5, None, True], "empty": {}},  # orjson
        # refuses the int: the standard library writes that event
        {"type": "x", "floats": [1e16, 1e-7, -0.0, 0.1]},  # 1e16 comes out as 1e+16 there
    ]


def test_both_encoders_write_the_same_client_events():
    for event in client_events():
        slow, fast = with_each(lambda event=event: ce.encode(event))
        assert json.loads(slow) == json.loads(fast) == json.loads(json.dumps(event))
        if "floats" not in event:
            assert slow == fast  # the very same text


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_both_encoders_mean_the_same_for_any_json(value):
    slow, fast = with_each(lambda: codec.dumps(value))
    assert json.loads(slow) == json.loads(fast)
    assert with_each(lambda: codec.loads(fast)) == (json.loads(fast), json.loads(fast))


@given(st.binary(max_size=4000))
def test_an_append_frame_is_the_encoded_append_event(pcm):
    for kind in ("stdlib", "fast"):
        if kind == "fast" and not codec.available():
            continue
        codec.use(kind)
        try:
            frame = ce.append_frame(pcm)
            assert frame == ce.encode(ce.input_audio_append(pcm))
            assert base64.b64decode(json.loads(frame)["audio"], validate=True) == pcm
        finally:
            codec.use("fast")


def delta_frame(audio: object, **fields) -> str:
    """A delta frame; ``audio`` as bytes is encoded, anything else is the payload as is."""
    payload = base64.b64encode(audio).decode() if isinstance(audio, bytes) else audio
    frame = {
        "type": "response.output_audio.delta",
        "event_id": "evt_1",
        "response_id": "resp_1",
        "item_id": "item_1",
        "output_index": 0,
        "content_index": 0,
        "delta": payload,
    }
    frame.update(fields)
    return json.dumps(frame)


@given(st.binary(max_size=4000).map(lambda b: b[: len(b) // 2 * 2]), st.integers(0, 3))
def test_both_decoders_read_the_same_delta(pcm, index):
    frame = delta_frame(pcm, content_index=index)
    slow, fast = with_each(lambda: parse_server_event(frame))
    assert slow == fast == ev.AudioDelta("resp_1", "item_1", pcm, index)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("@@@@", "not valid base64"),
        ("AA AA", "not valid base64"),
        ("AAAA\n", "not valid base64"),
        ("-_AA", "not valid base64"),  # the URL-safe alphabet is not the protocol's
        ("AAA", "not valid base64"),  # padding missing
        ("AAAA====", "not valid base64"),  # padding past the end
        ("AAAA=", "not valid base64"),
        ("AAé=", "not valid base64"),
        ("AA==", "odd number of bytes"),
        (5, "'delta' missing or not a string"),
    ],
)
def test_a_bad_delta_is_malformed_with_either_codec(codec_kind, payload, reason):
    event = parse_server_event(delta_frame(payload))
    assert isinstance(event, ev.Malformed), event
    assert reason in event.reason and event.type == "response.output_audio.delta"


@pytest.mark.parametrize(
    "frame",
    ["not json", "", "[1, 2]", '{"type": 5}', "{}", '{"a": NaN}', '{"type": "x"' * 2, "\ud800"],
)
def test_what_is_not_a_json_object_is_malformed_with_either_codec(codec_kind, frame):
    assert isinstance(parse_server_event(frame), ev.Malformed)


def published_frames() -> list[str]:
    frames = []
    for path in sorted(TRACES.glob("*.jsonl")) if TRACES.is_dir() else []:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                frames.append(json.loads(line)["frame"])
    return frames


@pytest.mark.skipif(not published_frames(), reason="../shared/traces is not beside the checkout")
def test_every_published_frame_parses_the_same_with_either_codec():
    frames = published_frames()
    slow, fast = with_each(lambda: [parse_server_event(f) for f in frames])
    assert slow == fast
    assert len(frames) >= 50 and len({type(e) for e in fast}) >= 10


FALLBACK = """
import base64, json, sys
sys.modules["orjson"] = None  # an import of either now raises ImportError
sys.modules["pybase64"] = None
from appliance.protocol import client_events as ce, codec, server_events as ev
from appliance.protocol.parser import parse_server_event
from appliance.realtime.session import parse_scrubbed
assert not codec.available() and codec.NAME == "json + base64", codec.NAME
assert codec.use("fast") == "json + base64"  # asking for the fast one changes nothing
pcm = bytes(range(256)) * 4
frame = ce.append_frame(pcm)
assert frame == json.dumps(ce.input_audio_append(pcm), separators=(",", ":"))
assert base64.b64decode(json.loads(frame)["audio"]) == pcm
delta = json.dumps({"type": "response.output_audio.delta", "response_id": "r",
                    "item_id": "i", "delta": base64.b64encode(pcm).decode()})
assert parse_server_event(delta) == ev.AudioDelta("r", "i", pcm)
bad = delta.replace('"delta": "', '"delta": "@')
assert isinstance(parse_server_event(bad), ev.Malformed)
error = '{"type": "error", "error": {"message": "bad key KEY-1234-abcd"}}'
assert "KEY-1234-abcd" not in repr(parse_scrubbed(error, "KEY-1234-abcd"))
print("fallback ok", codec.NAME)
"""


def test_the_standard_library_runs_where_the_libraries_are_missing():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", FALLBACK], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "fallback ok json + base64"


# ---- the key is still scrubbed ---------------------------------------------------------------

KEY = "AQVN-secret-0123456789abcdef"


def test_an_audio_delta_brings_only_its_ids_and_its_audio():
    # parse_scrubbed checks only these two strings of an audio delta: a new string field
    # taken from the frame must be scrubbed there too before it is added here.
    assert [f.name for f in dataclasses.fields(ev.AudioDelta)] == [
        "response_id",
        "item_id",
        "audio",
        "content_index",
    ]


@pytest.mark.parametrize(
    "frame",
    [
        '{"type": "error", "error": {"type": "invalid_request_error", "message": "key %s"}}',
        '{"type": "response.brand_new_%s"}',
        '{"type": "response.output_audio_transcript.delta", "response_id": "r", '
        '"item_id": "i", "delta": "%s"}',
        '{"type": "response.done", "response": {"id": "%s", "status": "failed", '
        '"status_details": {"error": {"message": "%s", "code": "x"}}}}',
        delta_frame(b"\x00\x01", event_id="%s", response_id="r-%s", item_id="%s"),
        delta_frame(b"\x00\x01", response_id="%s", item_id="i").replace(
            '"type": "response.output_audio.delta"', '"type": "response.audio.delta"'
        ),
        delta_frame("@@@@", response_id="%s", item_id="%s"),
        delta_frame({"x": "%s"}),
        '{"type": "session.created", "session": {"id": "%s"}}',
        "%s is not JSON",
    ],
)
def test_the_key_never_comes_out_of_a_frame(codec_kind, frame):
    frame = frame.replace("%s", KEY)
    assert KEY in frame
    event = parse_scrubbed(frame, KEY)
    assert KEY not in repr(event)


@given(
    st.one_of(
        json_values.map(json.dumps),
        st.dictionaries(
            st.sampled_from(["type", "delta", "response_id", "item_id", "error"]),
            json_values | st.sampled_from(["response.output_audio.delta", KEY, f"x{KEY}y"]),
        ).map(json.dumps),
        st.text(),
    )
)
def test_parse_scrubbed_never_raises_nor_lets_the_key_out(frame):
    # A frame whose "type" is a list once raised here (unhashable), out of the read loop.
    for kind in ("stdlib", "fast"):
        if kind == "fast" and not codec.available():
            continue
        codec.use(kind)
        try:
            assert KEY not in repr(parse_scrubbed(frame, KEY))
        finally:
            codec.use("fast")


def test_an_audio_delta_with_the_key_in_its_ids_keeps_its_audio(codec_kind):
    pcm = b"\x10\x00\x20\x00"
    event = parse_scrubbed(delta_frame(pcm, response_id=f"r{KEY}", item_id=KEY), KEY)
    assert event == ev.AudioDelta("r***", "***", pcm, 0)
    clean = parse_scrubbed(delta_frame(pcm), KEY)
    assert clean == ev.AudioDelta("resp_1", "item_1", pcm, 0)


# ---- through the supervisor: logged and skipped --------------------------------------------


async def test_malformed_deltas_are_logged_and_skipped_without_the_key(codec_kind, server, caplog):
    pcm = tone(44100, 0.2)
    server.junk_before_next_answer(
        [
            delta_frame("@@@@", event_id=SECRET, response_id=SECRET),
            delta_frame("AAé=", item_id=SECRET),
            delta_frame("AA=="),
            '{"type": "response.output_audio.delta", "delta": 5}',
        ]
    )
    server.answers.append(AudioAnswer("Clean.", pcm))
    with caplog.at_level(logging.DEBUG, logger="appliance"):
        async with SessionSupervisor(link_settings(server)) as link:
            await until(link, Connected)
            events = await ask_once(link)
    audio = b"".join(e.audio for e in events if isinstance(e, ev.AudioDelta))
    assert audio == pcm  # the good deltas after the bad ones all arrived
    assert not any(isinstance(e, ev.Malformed) for e in events)
    malformed = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert malformed and malformed[0].levelno == logging.WARNING
    assert "not valid base64" in malformed[0].getMessage()
    assert SECRET not in caplog.text
