"""The protocol edge, pure: client events against the GA types; server frames to typed events."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from event_validation import validate_client_event

from appliance.config.schema import FileSearchConfig, ToolsConfig
from appliance.protocol import client_events as ce
from appliance.protocol import server_events as ev
from appliance.protocol.parser import _PARSERS, BETA_TO_GA, parse_server_event
from appliance.protocol.providers import OPENAI, YANDEX, SessionShape
from appliance.tools.yandex import server_side_tools

HANDLED_TYPES = frozenset(_PARSERS)


def frame(**fields) -> str:
    return json.dumps({"event_id": "evt_1", **fields})


# ---- client events ----------------------------------------------------------------------

TOOL = ce.FunctionTool(
    "get_time",
    "The local time",
    {"type": "object", "properties": {"tz": {"type": "string"}}},
)

SHAPE = SessionShape(
    voice="marina",
    instructions="Be brief.",
    input_rate=24000,
    output_rate=44100,
    languages=("ru-RU",),
)
OPENAI_SHAPE = SessionShape(voice="marin", instructions="", input_rate=24000, output_rate=24000)

# Each event with the profile whose rules it must pass (openai: nothing waived).
ALL_CLIENT_EVENTS = {
    "session.update yandex": (
        ce.session_update(YANDEX, SHAPE, tools=[TOOL], event_id="evt_setup"),
        "yandex-2026",
    ),
    "session.update yandex 44.1 kHz in, role": (
        ce.session_update(
            YANDEX,
            SessionShape(
                voice="dasha",
                instructions="",
                input_rate=44100,
                output_rate=44100,
                languages=("kk-KZ",),
                voice_role="good",
            ),
            turn_detection=ce.ServerVad(),
        ),
        "yandex-2026",
    ),
    "session.update openai": (
        ce.session_update(OPENAI, OPENAI_SHAPE, tools=[TOOL], event_id="evt_setup"),
        "openai",
    ),
    "session.update openai (vad, transcription)": (
        ce.session_update(
            OPENAI,
            SessionShape(
                voice="alloy",
                instructions="",
                input_rate=24000,
                output_rate=24000,
                transcription_model="whisper-1",
            ),
            turn_detection=ce.ServerVad(),
        ),
        "openai",
    ),
    "turn detection yandex": (ce.turn_detection_update(YANDEX, ce.ServerVad()), "yandex-2026"),
    "turn detection openai": (ce.turn_detection_update(OPENAI, None), "openai"),
    "append": (ce.input_audio_append(b"\x01\x00" * 480), "openai"),
    "commit": (ce.input_audio_commit(), "openai"),
    "clear": (ce.input_audio_clear(), "openai"),
    "response.create": (ce.response_create(), "openai"),
    "response.cancel": (ce.response_cancel(), "openai"),
    "response.cancel id": (ce.response_cancel("resp_1"), "openai"),
    "function_call_output": (ce.function_call_output("call_1", '{"time": "12:00"}'), "openai"),
    "history recap": (ce.history_recap("Earlier: User: hi"), "openai"),
    "history user": (ce.history_message("user", "What time is it?"), "openai"),
    "history assistant": (ce.history_message("assistant", "Noon."), "openai"),
    "truncate": (ce.item_truncate("item_1", 1234), "openai"),
}


@pytest.mark.parametrize("name", sorted(ALL_CLIENT_EVENTS))
def test_every_client_event_validates_against_the_ga_types(name):
    event, profile = ALL_CLIENT_EVENTS[name]
    assert validate_client_event(event, profile) == []
    # And it survives the wire: encode gives compact JSON that decodes to the same dict.
    assert json.loads(ce.encode(event)) == event


def test_yandex_session_update_is_the_2026_shape():
    event = ALL_CLIENT_EVENTS["session.update yandex"][0]
    assert event["event_id"] == "evt_setup"
    session = event["session"]
    assert "type" not in session  # no 2026 Yandex example sends it
    # No channels anywhere: the 2026 format dropped it and OpenAI refuses it.
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["input"]["languages"] == ["ru-RU"]
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
    role = ALL_CLIENT_EVENTS["session.update yandex 44.1 kHz in, role"][0]["session"]["audio"]
    assert role["output"]["role"] == "good" and role["input"]["format"]["rate"] == 44100


def test_openai_session_update_is_the_ga_shape():
    session = ALL_CLIENT_EVENTS["session.update openai"][0]["session"]
    assert session["type"] == "realtime"
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert "languages" not in session["audio"]["input"]
    assert "role" not in session["audio"]["output"]
    assert session["audio"]["output"]["format"]["rate"] == 24000


def test_session_update_with_vad_and_transcription():
    session = ALL_CLIENT_EVENTS["session.update openai (vad, transcription)"][0]["session"]
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert session["audio"]["input"]["transcription"] == {"model": "whisper-1"}
    assert session["tools"] == [] and "tool_choice" not in session


def test_turn_detection_update_carries_the_type_only_for_openai():
    assert ALL_CLIENT_EVENTS["turn detection openai"][0]["session"]["type"] == "realtime"
    assert "type" not in ALL_CLIENT_EVENTS["turn detection yandex"][0]["session"]


def test_history_recap_is_one_user_text_item():
    item = ce.history_recap("Earlier: User: hi")["item"]
    assert item == {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "Earlier: User: hi"}],
    }


def test_append_is_base64_of_the_pcm():
    pcm = bytes(range(256)) * 4
    assert base64.b64decode(ce.input_audio_append(pcm)["audio"]) == pcm


def test_truncate_never_negative_and_names_the_content_index():
    assert ce.item_truncate("i", -5)["audio_end_ms"] == 0
    assert ce.item_truncate("i", 5, content_index=1)["content_index"] == 1


def test_yandex_server_tool_parameters_are_an_object():
    tools = server_side_tools(
        ToolsConfig(web_search=True, file_search=FileSearchConfig(index_id="idx1"))
    )
    event = ce.session_update(YANDEX, SHAPE, tools=tools)
    assert [t["parameters"] for t in event["session"]["tools"]] == [{}, {}]
    assert event["session"]["tools"][0]["description"] == "idx1"
    assert validate_client_event(event, "yandex-2026") == []


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
            type="session.updated",
            session={"id": "s", "audio": {"input": {"turn_detection": {"type": "server_vad"}}}},
        ),
        ev.SessionUpdated("s", turn_detection="server_vad", reports_turn_detection=True),
    ),
    (
        frame(type="session.updated", session={"id": "s", "turn_detection": None}),
        ev.SessionUpdated("s", turn_detection=None, reports_turn_detection=True),
    ),
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
    (
        frame(type="response.output_audio.delta", delta=B64, **{**IDS, "content_index": 1}),
        ev.AudioDelta("resp_1", "item_1", PCM, content_index=1),
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
        ev.TranscriptDelta("resp_1", "item_1", "Hi", ev.OUTPUT_TEXT),
    ),
    (
        frame(type="response.output_text.done", text="Hi!", **IDS),
        ev.TranscriptDone("resp_1", "item_1", "Hi!", ev.OUTPUT_TEXT),
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
        ev.FunctionCallArgumentsDone("resp_1", "fc1", "call_1", "{}", "get_time"),
    ),
    (  # Yandex's reference schema: no name (the call starts from output_item.done)
        frame(
            type="response.function_call_arguments.done",
            response_id="resp_1",
            item_id="fc1",
            output_index=0,
            call_id="call_1",
            arguments="{}",
        ),
        ev.FunctionCallArgumentsDone("resp_1", "fc1", "call_1", "{}", None),
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


# ---- errors with code: null (live servers send them) -------------------------------------


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("Your session hit the maximum duration of 15 minutes.", "session_expired"),
        (
            "Error committing input audio buffer: the buffer is empty.",
            "input_audio_buffer_commit_empty",
        ),
        ("Cancellation failed: no active response found", "response_cancel_not_active"),
        ("Conversation already has an active response", "conversation_already_has_active_response"),
        ("Incorrect API key provided: sk-***", "invalid_api_key"),
        ("Something nobody has seen", None),
    ],
)
def test_an_error_without_a_code_is_known_by_its_message(message, kind):
    event = parse_server_event(
        frame(
            type="error", error={"type": "invalid_request_error", "code": None, "message": message}
        )
    )
    assert isinstance(event, ev.ServerError) and event.code is None
    assert event.kind == kind
    assert event.is_session_expired == (kind == "session_expired")
    assert event.is_commit_empty == (kind == "input_audio_buffer_commit_empty")
    assert event.is_harmless == (kind == "response_cancel_not_active")
    assert event.is_auth_failure == (kind == "invalid_api_key")


def test_a_code_wins_over_the_message():
    event = ev.ServerError("invalid_request_error", "unknown_parameter", "buffer is empty")
    assert event.kind == "unknown_parameter" and not event.is_commit_empty


# ---- frames published by others (../shared/traces) ---------------------------------------

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"
TRACE_LINES = sorted(TRACES.glob("*.jsonl")) if TRACES.is_dir() else []


def _trace_frames():
    for path in TRACE_LINES:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                record = json.loads(line)
                yield pytest.param(record, id=f"{path.stem}:{number}")


@pytest.mark.skipif(not TRACE_LINES, reason="../shared/traces is not beside the checkout")
@pytest.mark.parametrize("record", list(_trace_frames()))
def test_published_frames_parse(record):
    """No frame raises; every recorded (live) frame of a type the box handles comes out as its
    typed event, never Unknown or Malformed. Reference examples may hold placeholders (an
    audio delta of "Base64EncodedAudioDelta"), so for them only "no exception" is asked, and
    Yandex-shaped frames (built from Yandex's reference) must come out typed too."""
    event = parse_server_event(record["frame"])
    kind = json.loads(record["frame"]).get("type")
    handled = BETA_TO_GA.get(kind, kind) in HANDLED_TYPES
    if record["kind"] in ("recorded", "yandex-ref") and handled:
        assert not isinstance(event, ev.Unknown | ev.Malformed), event


def test_the_published_frames_are_there():
    # The parser's real-world test is only worth something if it ran: the CI has ../shared.
    assert len(list(_trace_frames())) >= 50


def test_yandex_arguments_done_without_name_comes_out_typed():
    records = [r.values[0] for r in _trace_frames() if "F_yandex" in r.id]
    done = [
        parse_server_event(r["frame"])
        for r in records
        if json.loads(r["frame"])["type"] == "response.function_call_arguments.done"
    ]
    assert done and all(isinstance(d, ev.FunctionCallArgumentsDone) for d in done)
    assert all(d.call is None and d.call_id for d in done)
