"""The protocol edge, pure: client events against the GA types; server frames to typed events."""

from __future__ import annotations

import base64
import json

import pytest
from event_validation import validate_client_event

from appliance.protocol import client_events as ce
from appliance.protocol import server_events as ev
from appliance.protocol.parser import BETA_TO_GA, parse_server_event


def frame(**fields) -> str:
    return json.dumps({"event_id": "evt_1", **fields})


# ---- client events ----------------------------------------------------------------------

TOOL = ce.FunctionTool(
    "get_time",
    "The local time",
    {"type": "object", "properties": {"tz": {"type": "string"}}},
)

ALL_CLIENT_EVENTS = {
    "session.update": ce.session_update(
        voice="marina", instructions="Be brief.", output_rate=44100, tools=[TOOL]
    ),
    "session.update (vad, transcription)": ce.session_update(
        voice="alena",
        instructions="",
        output_rate=24000,
        transcription_model="whisper-1",
        turn_detection=ce.ServerVad(),
    ),
    "append": ce.input_audio_append(b"\x01\x00" * 480),
    "commit": ce.input_audio_commit(),
    "clear": ce.input_audio_clear(),
    "response.create": ce.response_create(),
    "response.cancel": ce.response_cancel(),
    "response.cancel id": ce.response_cancel("resp_1"),
    "function_call_output": ce.function_call_output("call_1", '{"time": "12:00"}'),
    "history user": ce.history_message("user", "What time is it?"),
    "history assistant": ce.history_message("assistant", "Noon."),
    "truncate": ce.item_truncate("item_1", 1234),
}


@pytest.mark.parametrize("name", sorted(ALL_CLIENT_EVENTS))
def test_every_client_event_validates_against_the_ga_types(name):
    event = ALL_CLIENT_EVENTS[name]
    assert validate_client_event(event) == []
    # And it survives the wire: encode gives compact JSON that decodes to the same dict.
    assert json.loads(ce.encode(event)) == event


def test_session_update_is_push_to_talk_ga_shape():
    session = ALL_CLIENT_EVENTS["session.update"]["session"]
    assert session["type"] == "realtime"
    assert session["audio"]["input"]["format"] == {
        "type": "audio/pcm",
        "rate": 24000,
        "channels": 1,
    }
    # turn_detection must be present and null: leaving it out keeps the server's VAD on.
    assert "turn_detection" in session["audio"]["input"]
    assert session["audio"]["input"]["turn_detection"] is None
    assert session["audio"]["output"] == {
        "format": {"type": "audio/pcm", "rate": 44100},
        "voice": "marina",
    }
    assert session["tools"][0]["name"] == "get_time"
    assert session["tool_choice"] == "auto"
    assert "transcription" not in session["audio"]["input"]


def test_session_update_with_vad_and_transcription():
    session = ALL_CLIENT_EVENTS["session.update (vad, transcription)"]["session"]
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert session["audio"]["input"]["transcription"] == {"model": "whisper-1"}
    assert session["tools"] == [] and "tool_choice" not in session


def test_append_is_base64_of_the_pcm():
    pcm = bytes(range(256)) * 4
    assert base64.b64decode(ce.input_audio_append(pcm)["audio"]) == pcm


def test_truncate_never_negative():
    assert ce.item_truncate("i", -5)["audio_end_ms"] == 0


def test_yandex_style_server_tool_passes_as_function():
    tool = ce.FunctionTool("file_search", "index-123", "{}")
    event = ce.session_update(voice="marina", instructions="", output_rate=44100, tools=[tool])
    assert event["session"]["tools"][0] == {
        "type": "function",
        "name": "file_search",
        "description": "index-123",
        "parameters": "{}",
    }
    assert validate_client_event(event) == []


# ---- server events ----------------------------------------------------------------------

PCM = b"\x10\x00\x20\x00\xff\x7f"
B64 = base64.b64encode(PCM).decode()
IDS = {"response_id": "resp_1", "item_id": "item_1", "output_index": 0, "content_index": 0}

PARSED = [
    (
        frame(
            type="session.created",
            session={
                "id": "sess_1",
                "audio": {
                    "output": {"format": {"type": "audio/pcm", "rate": 44100}, "voice": "marina"}
                },
            },
        ),
        ev.SessionCreated("sess_1", 44100, "marina"),
    ),
    (frame(type="session.updated", session={"id": "sess_1"}), ev.SessionUpdated("sess_1")),
    (
        frame(
            type="error",
            error={"type": "invalid_request_error", "code": "x", "message": "m", "event_id": "c1"},
        ),
        ev.ServerError("invalid_request_error", "x", "m", "c1"),
    ),
    (
        frame(type="input_audio_buffer.committed", item_id="u1", previous_item_id=None),
        ev.InputCommitted("u1"),
    ),
    (frame(type="input_audio_buffer.cleared"), ev.InputCleared()),
    (
        frame(type="input_audio_buffer.speech_started", item_id="u1", audio_start_ms=40),
        ev.SpeechStarted("u1", 40),
    ),
    (
        frame(type="input_audio_buffer.speech_stopped", item_id="u1", audio_end_ms=900),
        ev.SpeechStopped("u1", 900),
    ),
    (
        frame(
            type="conversation.item.input_audio_transcription.completed",
            item_id="u1",
            content_index=0,
            transcript="hi",
        ),
        ev.InputTranscript("u1", "hi"),
    ),
    (
        frame(
            type="conversation.item.input_audio_transcription.failed",
            item_id="u1",
            error={"message": "no"},
        ),
        ev.InputTranscriptFailed("u1", "no"),
    ),
    (
        frame(type="conversation.item.added", item={"id": "u1", "type": "message", "role": "user"}),
        ev.ItemAdded("u1", "message", "user"),
    ),
    (
        frame(type="conversation.item.truncated", item_id="a1", content_index=0, audio_end_ms=300),
        ev.ItemTruncated("a1", 300),
    ),
    (
        frame(type="response.created", response={"id": "resp_1", "status": "in_progress"}),
        ev.ResponseCreated("resp_1"),
    ),
    (
        frame(
            type="response.output_item.added",
            response_id="resp_1",
            output_index=0,
            item={"id": "item_1", "type": "message", "role": "assistant"},
        ),
        ev.OutputItemAdded("resp_1", "item_1", "message", "assistant"),
    ),
    (
        frame(type="response.output_audio.delta", delta=B64, **IDS),
        ev.AudioDelta("resp_1", "item_1", PCM),
    ),
    (frame(type="response.output_audio.done", **IDS), ev.AudioDone("resp_1", "item_1")),
    (
        frame(type="response.output_audio_transcript.delta", delta="Hel", **IDS),
        ev.TranscriptDelta("resp_1", "item_1", "Hel"),
    ),
    (
        frame(type="response.output_audio_transcript.done", transcript="Hello", **IDS),
        ev.TranscriptDone("resp_1", "item_1", "Hello"),
    ),
    (
        frame(type="response.output_text.delta", delta="Hi", **IDS),
        ev.TranscriptDelta("resp_1", "item_1", "Hi"),
    ),
    (
        frame(type="response.output_text.done", text="Hi!", **IDS),
        ev.TranscriptDone("resp_1", "item_1", "Hi!"),
    ),
    (
        frame(
            type="response.function_call_arguments.done",
            response_id="resp_1",
            item_id="fc1",
            output_index=0,
            call_id="call_1",
            name="get_time",
            arguments="{}",
        ),
        ev.FunctionCallArgumentsDone("resp_1", "fc1", ev.FunctionCall("call_1", "get_time", "{}")),
    ),
    (
        frame(
            type="response.output_item.done",
            response_id="resp_1",
            output_index=0,
            item={
                "id": "fc1",
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_time",
                "arguments": "{}",
                "status": "completed",
            },
        ),
        ev.OutputItemDone(
            "resp_1", "fc1", "function_call", ev.FunctionCall("call_1", "get_time", "{}")
        ),
    ),
    (
        frame(
            type="response.output_item.done",
            response_id="resp_1",
            output_index=0,
            item={
                "id": "item_1",
                "type": "message",
                "content": [{"type": "output_audio", "transcript": "Hello"}],
            },
        ),
        ev.OutputItemDone("resp_1", "item_1", "message", None, "Hello"),
    ),
    (
        frame(
            type="response.done",
            response={
                "id": "resp_1",
                "status": "completed",
                "output": [
                    {
                        "type": "function_call",
                        "call_id": "c",
                        "name": "n",
                        "arguments": "{}",
                        "status": "completed",
                    }
                ],
            },
        ),
        ev.ResponseDone("resp_1", "completed", calls=(ev.FunctionCall("c", "n", "{}"),)),
    ),
    (
        frame(
            type="response.done",
            response={
                "id": "resp_2",
                "status": "cancelled",
                "status_details": {"type": "cancelled", "reason": "client_cancelled"},
            },
        ),
        ev.ResponseDone("resp_2", "cancelled", reason="client_cancelled"),
    ),
    (
        frame(
            type="response.done",
            response={
                "id": "resp_3",
                "status": "failed",
                "status_details": {
                    "error": {"type": "server_error", "code": "boom", "message": "it broke"}
                },
            },
        ),
        ev.ResponseDone("resp_3", "failed", error_code="boom", error_message="it broke"),
    ),
    (frame(type="rate_limits.updated", rate_limits=[]), ev.Ignored("rate_limits.updated")),
    (frame(type="conversation.item.done", item={}), ev.Ignored("conversation.item.done")),
    (frame(type="response.brand_new_thing", x=1), ev.Unknown("response.brand_new_thing")),
]


@pytest.mark.parametrize(
    ("raw", "expected"), PARSED, ids=[json.loads(r)["type"] for r, _ in PARSED]
)
def test_server_events_parse_to_typed_events(raw, expected):
    assert parse_server_event(raw) == expected


@pytest.mark.parametrize(("beta", "ga"), sorted(BETA_TO_GA.items()))
def test_beta_names_map_to_ga(beta, ga):
    fields = {
        "response.audio.delta": {"delta": B64, **IDS},
        "response.audio.done": IDS,
        "response.audio_transcript.delta": {"delta": "a", **IDS},
        "response.audio_transcript.done": {"transcript": "a", **IDS},
        "response.text.delta": {"delta": "a", **IDS},
        "response.text.done": {"text": "a", **IDS},
        "conversation.item.created": {"item": {"id": "x", "type": "message", "role": "user"}},
    }[beta]
    assert parse_server_event(frame(type=beta, **fields)) == parse_server_event(
        frame(type=ga, **fields)
    )
    assert not isinstance(parse_server_event(frame(type=beta, **fields)), ev.Malformed | ev.Unknown)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x00\x01binary", "binary frame of 8 bytes"),
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ("{}", "no event type"),
        ('{"type": 5}', "no event type"),
        (
            frame(type="response.output_audio.delta", delta="!!!notbase64", **IDS),
            "audio delta is not valid base64",
        ),
        (
            frame(
                type="response.output_audio.delta", delta=base64.b64encode(b"abc").decode(), **IDS
            ),
            "audio delta has an odd number of bytes (not PCM16)",
        ),
        (
            frame(type="response.output_audio.delta", delta=B64, item_id="i"),
            "'response_id' missing or not a string",
        ),
        (frame(type="response.done"), "'response' missing or not an object"),
        (
            frame(type="response.done", response={"status": "completed"}),
            "'id' missing or not a string",
        ),
        (frame(type="error", error="boom"), "'error' missing or not an object"),
        (
            frame(type="conversation.item.truncated", item_id="a", audio_end_ms="12"),
            "'audio_end_ms' missing or not a number",
        ),
        ("[" * 100_000 + "]" * 100_000, "not JSON"),
    ],
)
def test_malformed_frames_are_named_not_raised(raw, reason):
    event = parse_server_event(raw)
    assert isinstance(event, ev.Malformed)
    assert event.reason == reason


def test_auth_and_expiry_errors_are_recognised():
    auth = parse_server_event(
        frame(
            type="error",
            error={"type": "invalid_request_error", "code": "invalid_api_key", "message": "bad"},
        )
    )
    expired = parse_server_event(
        frame(
            type="error",
            error={"type": "invalid_request_error", "code": "session_expired", "message": "60 min"},
        )
    )
    other = parse_server_event(frame(type="error", error={"type": "server_error", "message": "x"}))
    assert auth.is_auth_failure and not auth.is_session_expired
    assert expired.is_session_expired and not expired.is_auth_failure
    assert not other.is_auth_failure and other.code is None


def test_incomplete_function_call_is_not_a_call():
    raw = frame(
        type="response.output_item.done",
        response_id="r",
        output_index=0,
        item={
            "id": "f",
            "type": "function_call",
            "call_id": "c",
            "name": "n",
            "arguments": "{",
            "status": "incomplete",
        },
    )
    assert parse_server_event(raw).call is None
