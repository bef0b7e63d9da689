"""Fuzzing the parser: whatever the server sends, parsing returns a typed event and never raises."""

from __future__ import annotations

import base64
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.protocol import server_events as ev
from appliance.protocol.parser import _PARSERS, BETA_TO_GA, IGNORED_TYPES, parse_server_event

KNOWN_TYPES = sorted(set(_PARSERS) | set(BETA_TO_GA) | IGNORED_TYPES)
EVENT_CLASSES = tuple(
    cls for cls in vars(ev).values() if isinstance(cls, type) and cls.__module__ == ev.__name__
)

json_leaf = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
# Field names the parsers read, so random dicts often hit the real paths with wrong types.
FIELD_NAMES = [
    "item_id",
    "response_id",
    "delta",
    "transcript",
    "text",
    "item",
    "response",
    "session",
    "error",
    "call_id",
    "name",
    "arguments",
    "audio_end_ms",
    "status",
    "output",
    "id",
    "type",
    "content",
    "status_details",
    "audio_start_ms",
]
b64ish = st.one_of(
    st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
    st.text(max_size=30),
)
field_value = st.one_of(json_value, b64ish)
event_dict = st.builds(
    lambda kind, fields: {**fields, "type": kind},
    st.one_of(st.sampled_from(KNOWN_TYPES), st.text(max_size=30)),
    st.dictionaries(st.sampled_from(FIELD_NAMES), field_value, max_size=8),
)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(event_dict)
def test_any_event_dict_gives_a_typed_event(data):
    event = parse_server_event(json.dumps(data))
    assert isinstance(event, EVENT_CLASSES)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_any_frame_gives_a_typed_event(raw):
    event = parse_server_event(raw)
    assert isinstance(event, EVENT_CLASSES)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KNOWN_TYPES), json_value)
def test_truncated_json_is_malformed(kind, value):
    text = json.dumps({"type": kind, "x": value})
    event = parse_server_event(text[: len(text) // 2])
    assert isinstance(event, ev.Malformed)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=4096).filter(lambda b: len(b) % 2 == 0))
def test_valid_audio_deltas_round_trip(pcm):
    raw = json.dumps(
        {
            "type": "response.output_audio.delta",
            "response_id": "r",
            "item_id": "i",
            "output_index": 0,
            "content_index": 0,
            "delta": base64.b64encode(pcm).decode(),
        }
    )
    assert parse_server_event(raw) == ev.AudioDelta("r", "i", pcm)
