"""Tests of the Realtime API test double itself, with a raw aiohttp WebSocket client."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from event_validation import validate_client_event, validate_server_event
from realtime_replay import infer_waits
from realtime_server import (
    EMPTY_QUESTION_TRANSCRIPT,
    LEGACY,
    LEGACY_PATH,
    MODEL,
    OPENAI,
    OPENAI_MODEL,
    PATH,
    YANDEX_2026,
    YANDEX_MODEL_QUERY,
    AudioAnswer,
    CloseWith,
    ErrorAnswer,
    Pause,
    RealtimeTestServer,
    ToolCallAnswer,
    WaitFor,
    tone,
)

HEADERS = {"Authorization": "api-key test-key"}  # what the yandex profiles accept
PROFILE_NAMES = [YANDEX_2026, OPENAI]


@pytest.fixture
async def rt() -> AsyncIterator[RealtimeTestServer]:
    async with RealtimeTestServer() as server:
        yield server


@pytest.fixture(params=PROFILE_NAMES)
async def any_rt(request) -> AsyncIterator[RealtimeTestServer]:
    """The test server under each 2026 profile."""
    async with RealtimeTestServer(profile=request.param) as server:
        yield server


@pytest.fixture
async def oa() -> AsyncIterator[RealtimeTestServer]:
    async with RealtimeTestServer(profile=OPENAI) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def url(server: RealtimeTestServer, model: str | None = None) -> str:
    return f"{server.url}?model={model or server.model_query}"


def auth(server: RealtimeTestServer) -> dict[str, str]:
    return {"Authorization": server.auth_header}


@contextlib.asynccontextmanager
async def session_ws(
    http: aiohttp.ClientSession, server: RealtimeTestServer, **kwargs: Any
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with http.ws_connect(url(server), headers=auth(server), **kwargs) as ws:
        created = await recv(ws)
        assert created["type"] == "session.created"
        yield ws


async def recv(ws: aiohttp.ClientWebSocketResponse, timeout: float = 2.0) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout)
    assert msg.type is WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def recv_until(ws: aiohttp.ClientWebSocketResponse, type_: str) -> list[dict[str, Any]]:
    events = []
    while True:
        events.append(await recv(ws))
        if events[-1]["type"] == type_:
            return events


def pcm24(ms: int) -> bytes:
    return tone(24000, ms / 1000, freq=300)


async def append(ws: aiohttp.ClientWebSocketResponse, audio: bytes) -> None:
    await ws.send_json(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()}
    )


async def speak(ws: aiohttp.ClientWebSocketResponse, ms: int = 200, rate: int = 24000) -> bytes:
    """Append `ms` of audio at `rate` in 2 chunks and commit."""
    audio = tone(rate, ms / 1000, freq=300)
    half = len(audio) // 2
    for piece in (audio[:half], audio[half:]):
        await append(ws, piece)
    await ws.send_json({"type": "input_audio_buffer.commit"})
    return audio


async def update(
    ws: aiohttp.ClientWebSocketResponse, session: dict[str, Any], event_id: str = "evt_update"
) -> dict[str, Any]:
    """Send a session.update and return the server's reply (session.updated or error)."""
    await ws.send_json({"type": "session.update", "event_id": event_id, "session": session})
    return await recv(ws)


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def audio_of(events: list[dict[str, Any]], type_: str = "response.output_audio.delta") -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == type_)


def words_of(events: list[dict[str, Any]], type_: str) -> str:
    return "".join(e["delta"] for e in events if e["type"] == type_)


def sent_problems(server: RealtimeTestServer, index: int = 0) -> list[str]:
    """What the GA types (with the profile's allowances) say about what the server sent."""
    sent = server.connections[index].sent
    return [p for e in sent for p in validate_server_event(e, server.profile.name)]


# ------------------------------------------------------------------------------ handshake


async def test_handshake_sends_session_created(rt: RealtimeTestServer, http) -> None:
    assert rt.url.endswith(PATH) and PATH == "/v1/realtime" and MODEL == YANDEX_MODEL_QUERY
    assert rt.endpoint == f"{rt.url}?model={YANDEX_MODEL_QUERY}"
    async with http.ws_connect(url(rt), headers={**HEADERS, "X-Test": "1"}) as ws:
        created = await recv(ws)
    session = created["session"]
    assert created["type"] == "session.created" and created["event_id"]
    assert session["id"] == "sess_1" and session["type"] == "realtime"
    assert session["model"] == MODEL and session["output_modalities"] == ["audio"]
    assert session["audio"]["output"] == {
        "format": {"type": "audio/pcm", "rate": 44100},
        "voice": "marina",
    }
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert validate_server_event(created) == []
    rec = rt.connections[0]
    assert rec.query == {"model": MODEL} and rec.headers["X-Test"] == "1"
    assert "authorization" not in {k.lower() for k in rec.headers}
    await rt.wait_for(lambda: rec.closed)
    assert rec.close_code == 1000
    assert [status for _, status in rt.handshakes] == [101]


async def test_openai_handshake(oa: RealtimeTestServer, http) -> None:
    assert oa.url.endswith("/v1/realtime") and oa.model_query == OPENAI_MODEL == "gpt-realtime"
    assert oa.auth_header == "Bearer test-key"
    async with http.ws_connect(oa.endpoint, headers=auth(oa)) as ws:
        created = await recv(ws)
    session = created["session"]
    assert session["model"] == "gpt-realtime" and session["type"] == "realtime"
    assert session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert validate_server_event(created, OPENAI) == []


@pytest.mark.parametrize(
    ("profile", "scheme", "accepted"),
    [
        (YANDEX_2026, "api-key", True),
        (YANDEX_2026, "Api-Key", True),
        (YANDEX_2026, "API-KEY", True),
        (YANDEX_2026, "Bearer", True),
        (YANDEX_2026, "bearer", True),
        (OPENAI, "Bearer", True),
        (OPENAI, "bearer", True),
        (OPENAI, "Api-Key", False),
        (OPENAI, "api-key", False),
    ],
)
async def test_auth_schemes(http, profile: str, scheme: str, accepted: bool) -> None:
    async with RealtimeTestServer(profile=profile) as server:
        headers = {"Authorization": f"{scheme} test-key"}
        if accepted:
            async with http.ws_connect(url(server), headers=headers) as ws:
                assert (await recv(ws))["type"] == "session.created"
        else:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await http.ws_connect(url(server), headers=headers)
            assert info.value.status == 401


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "api-key wrong"}, {"Authorization": "Basic test-key"}]
)
async def test_bad_auth_is_401(rt: RealtimeTestServer, http, headers) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(url(rt), headers=headers)
    assert info.value.status == 401
    assert rt.connections == [] and rt.handshakes[-1][1] == 401


@pytest.mark.parametrize(
    ("profile", "query"),
    [
        (YANDEX_2026, ""),
        (YANDEX_2026, "?model=speech-realtime"),
        (YANDEX_2026, "?model=gpt://folder"),
        (YANDEX_2026, "?model=gpt-realtime"),
        (OPENAI, ""),
        (OPENAI, f"?model={YANDEX_MODEL_QUERY}"),
        (OPENAI, "?model=gpt://folder/gpt-realtime"),
    ],
)
async def test_bad_model_is_400(http, profile: str, query: str) -> None:
    async with RealtimeTestServer(profile=profile) as server:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(server.url + query, headers=auth(server))
        assert info.value.status == 400


async def test_new_model_name_accepted(rt: RealtimeTestServer, http) -> None:
    endpoint = f"{rt.url}?model=gpt://b1gfolder/speech-realtime-260528"
    async with http.ws_connect(endpoint, headers=auth(rt)) as ws:
        assert (await recv(ws))["session"]["model"] == "gpt://b1gfolder/speech-realtime-260528"


@pytest.mark.parametrize("profile", PROFILE_NAMES)
async def test_old_2025_path_is_404(http, profile: str) -> None:
    async with RealtimeTestServer(profile=profile) as server:
        old = f"ws://{server.host}:{server.port}{LEGACY_PATH}?model={server.model_query}"
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(old, headers=auth(server))
        assert info.value.status == 404


# ------------------------------------------------------------------------------ turns


async def test_full_audio_turn(any_rt: RealtimeTestServer, http) -> None:
    rt = any_rt
    yandex = rt.profile.name == YANDEX_2026
    pcm = tone(rt.output_rate, 0.3, freq=500)
    rt.answers.append(AudioAnswer("Сегодня солнечно и тепло.", pcm=pcm, chunk_ms=20))
    rt.user_transcripts.append("Какая сегодня погода?")
    async with session_ws(http, rt) as ws:
        sent = await speak(ws, 200)
        turn = await recv_until(ws, "conversation.item.input_audio_transcription.completed")
        await ws.send_json({"type": "response.create"})
        events = await recv_until(ws, "response.done")

    assert types(turn) == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.input_audio_transcription.completed",
    ]
    user_item = turn[1]["item"]
    assert user_item["role"] == "user" and user_item["content"][0]["type"] == "input_audio"
    assert turn[2]["transcript"] == "Какая сегодня погода?"
    assert turn[2]["item_id"] == turn[0]["item_id"] == user_item["id"]
    assert ("usage" in turn[2]) is not yandex  # Yandex's schema has no usage there
    assert rt.committed_audio == [sent] and rt.committed_audio[0].rate == 24000

    kinds = types(events)
    head = [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
    ]
    text_done = ["response.output_text.done"] if yandex else []
    tail = [
        "response.output_audio.done",
        *text_done,
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    assert kinds[:4] == head and kinds[-len(tail) :] == tail
    middle = set(kinds[4 : -len(tail)])
    deltas = {"response.output_audio.delta", "response.output_audio_transcript.delta"}
    assert middle == (deltas | {"response.output_text.delta"} if yandex else deltas)
    assert kinds.count("response.output_audio.delta") == 15  # 300 ms in 20 ms chunks
    assert audio_of(events) == pcm
    transcript = words_of(events, "response.output_audio_transcript.delta")
    assert transcript == "Сегодня солнечно и тепло."
    if yandex:  # the same words on both channels, deltas and done events
        assert words_of(events, "response.output_text.delta") == transcript
        assert events[kinds.index("response.output_text.done")]["text"] == transcript
    done = events[-1]["response"]
    assert done["status"] == "completed" and done["object"] == "realtime.response"
    assert done["output"][0]["content"] == [{"type": "output_audio", "transcript": transcript}]
    assert events[2]["previous_item_id"] == user_item["id"]

    all_sent = rt.connections[0].sent
    assert len({e["event_id"] for e in all_sent}) == len(all_sent)
    assert sent_problems(rt) == []
    assert rt.validation_errors == [] and rt.early_responses == []
    assert [e["type"] for e in rt.received] == [
        "input_audio_buffer.append",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "response.create",
    ]


YANDEX_SESSION = {
    "instructions": "Be brief.",
    "output_modalities": ["audio"],
    "audio": {
        "input": {
            "format": {"type": "audio/pcm", "rate": 44100},
            "turn_detection": None,
            "languages": ["ru-RU"],
        },
        "output": {
            "format": {"type": "audio/pcm", "rate": 44100},
            "voice": "alena",
            "role": "good",
        },
    },
    "tools": [{"type": "function", "name": "web_search", "description": "idx", "parameters": {}}],
}


async def test_yandex_session_update_without_type(http) -> None:
    async with RealtimeTestServer(output_rate=22050) as rt, session_ws(http, rt) as ws:
        updated = await update(ws, YANDEX_SESSION)
        assert validate_client_event(rt.received[0]) == []
        again = await update(ws, {"type": "realtime", "instructions": "Be kind."}, "evt_2")
    session = updated["session"]
    assert updated["type"] == "session.updated"
    assert session["instructions"] == "Be brief." and session["id"] == "sess_1"
    assert session["audio"]["input"]["turn_detection"] is None
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 44100}
    assert session["audio"]["input"]["languages"] == ["ru-RU"]
    assert session["audio"]["output"] == {  # the server's output rate wins
        "format": {"type": "audio/pcm", "rate": 22050},
        "voice": "alena",
        "role": "good",
    }
    assert session["tools"][0]["parameters"] == {}
    assert again["type"] == "session.updated" and again["session"]["instructions"] == "Be kind."
    assert rt.connections[0].session == again["session"]
    assert rt.validation_errors == [] and sent_problems(rt) == []


@pytest.mark.parametrize(
    ("session", "param"),
    [
        (
            {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000, "channels": 1}}}},
            "session.audio.input.format.channels",
        ),
        (
            {"audio": {"output": {"format": {"type": "audio/pcm", "rate": 44100, "channels": 1}}}},
            "session.audio.output.format.channels",
        ),
    ],
)
async def test_yandex_refuses_channels(rt: RealtimeTestServer, http, session, param) -> None:
    async with session_ws(http, rt) as ws:
        before = json.loads(json.dumps(rt.connections[0].session))
        err = await update(ws, {**session, "instructions": "changed"}, "evt_channels")
    assert err["type"] == "error" and err["event_id"]
    assert err["error"] == {
        "type": "invalid_request_error",
        "code": "unknown_parameter",
        "message": f"Unknown parameter: '{param}'.",
        "param": param,
        "event_id": "evt_channels",
    }
    assert rt.connections[0].session == before  # not updated
    assert rt.sent_of("session.updated") == []
    assert sent_problems(rt) == []
    assert any("channels" in p for p in rt.validation_errors)


@pytest.mark.parametrize("profile", PROFILE_NAMES)
async def test_string_tool_parameters_refused(http, profile: str) -> None:
    tools = [
        {"type": "function", "name": "web_search", "parameters": {}},
        {"type": "function", "name": "file_search", "description": "idx", "parameters": "{}"},
    ]
    async with RealtimeTestServer(profile=profile) as rt, session_ws(http, rt) as ws:
        err = await update(ws, {"type": "realtime", "tools": tools}, "evt_tools")
        assert err["type"] == "error"
        assert err["error"]["code"] == "invalid_type"
        assert err["error"]["param"] == "session.tools[1].parameters"
        assert err["error"]["event_id"] == "evt_tools"
        assert rt.connections[0].session["tools"] == []
        await ws.send_json(
            {"type": "response.create", "event_id": "r1", "response": {"tools": tools}}
        )
        err = await recv(ws)
        assert err["error"]["param"] == "response.tools[1].parameters"
        assert err["error"]["event_id"] == "r1"
        ok = await update(ws, {"type": "realtime", "tools": tools[:1]}, "evt_tools_2")
        assert ok["type"] == "session.updated" and ok["session"]["tools"] == tools[:1]
    assert sum("parameters" in p for p in rt.validation_errors) == 2


async def test_yandex_input_at_44100(rt: RealtimeTestServer, http) -> None:
    """The input rate of the session applies to the commit minimum and the recording."""
    async with session_ws(http, rt) as ws:
        await update(ws, YANDEX_SESSION)
        await append(ws, tone(44100, 0.09))  # 90 ms at 44.1 kHz: more than 100 ms at 24 kHz
        await ws.send_json({"type": "input_audio_buffer.commit", "event_id": "c1"})
        err = await recv(ws)
        assert err["error"]["code"] == "input_audio_buffer_commit_empty"
        assert err["error"]["event_id"] == "c1" and "90.00ms" in err["error"]["message"]
        await append(ws, tone(44100, 0.03))
        await ws.send_json({"type": "input_audio_buffer.commit"})
        assert (await recv(ws))["type"] == "input_audio_buffer.committed"
    [commit] = rt.committed_audio
    assert commit.rate == 44100 and commit.ms == pytest.approx(120, abs=0.1)
    assert commit.connection == 0 and commit.item_id.startswith("item_")
    assert commit == tone(44100, 0.09) + tone(44100, 0.03)


@pytest.mark.parametrize(
    ("session", "code", "param"),
    [
        ({"instructions": "x"}, "missing_required_parameter", "session.type"),
        ({"type": "transcription"}, "invalid_value", "session.type"),
        (
            {
                "type": "realtime",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 44100}}},
            },
            "invalid_value",
            "session.audio.input.format.rate",
        ),
        (
            {
                "type": "realtime",
                "audio": {"output": {"format": {"type": "audio/pcm", "rate": 44100}}},
            },
            "invalid_value",
            "session.audio.output.format.rate",
        ),
        (
            {
                "type": "realtime",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000, "channels": 1}}},
            },
            "unknown_parameter",
            "session.audio.input.format.channels",
        ),
        (
            {"type": "realtime", "audio": {"input": {"languages": ["ru-RU"]}}},
            "unknown_parameter",
            "session.audio.input.languages",
        ),
        (
            {"type": "realtime", "audio": {"output": {"voice": "marin", "role": "good"}}},
            "unknown_parameter",
            "session.audio.output.role",
        ),
    ],
)
async def test_openai_refusals(oa: RealtimeTestServer, http, session, code, param) -> None:
    async with session_ws(http, oa) as ws:
        before = json.loads(json.dumps(oa.connections[0].session))
        err = await update(ws, session, "evt_oa")
        assert err["type"] == "error"
        assert err["error"]["type"] == "invalid_request_error"
        assert (err["error"]["code"], err["error"]["param"]) == (code, param)
        assert err["error"]["event_id"] == "evt_oa" and param in err["error"]["message"]
        assert oa.connections[0].session == before
        good = {
            "type": "realtime",
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": None},
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"},
            },
        }
        ok = await update(ws, good, "evt_ok")
        assert ok["type"] == "session.updated"
        assert ok["session"]["audio"]["output"]["voice"] == "marin"
    assert sent_problems(oa) == []
    if session.get("type") != "transcription":  # a transcription session is a valid event
        assert oa.validation_errors  # the refused update is also invalid for the client


async def test_client_errors(any_rt: RealtimeTestServer, http) -> None:
    rt = any_rt
    async with session_ws(http, rt) as ws:
        await ws.send_str("not json")
        assert (await recv(ws))["error"]["code"] == "invalid_json"
        await ws.send_json({"type": "input_audio_buffer.append", "audio": "!!!"})
        assert (await recv(ws))["error"]["code"] == "invalid_base64"
        await ws.send_json({"type": "response.dance", "event_id": "e1"})
        err = await recv(ws)
        assert err["error"]["code"] == "unknown_event" and err["error"]["event_id"] == "e1"
        await append(ws, pcm24(50))
        await ws.send_json({"type": "input_audio_buffer.commit"})
        assert (await recv(ws))["error"]["code"] == "input_audio_buffer_commit_empty"
        await ws.send_json({"type": "response.cancel"})
        assert (await recv(ws))["error"]["code"] == "response_cancel_not_active"
    assert any(e.startswith("response.dance:") for e in rt.validation_errors)
    assert any(e.startswith("input_audio_buffer.append: audio") for e in rt.validation_errors)
    assert rt.committed_audio == []
    assert sent_problems(rt) == []


async def test_clear(any_rt: RealtimeTestServer, http) -> None:
    """OpenAI clears the buffer; Yandex refuses clear (an error with no code) and keeps it."""
    rt = any_rt
    async with session_ws(http, rt) as ws:
        await append(ws, pcm24(150))
        await ws.send_json({"type": "input_audio_buffer.clear", "event_id": "evt_clear"})
        reply = await recv(ws)
        await append(ws, pcm24(120))
        await ws.send_json({"type": "input_audio_buffer.commit"})
        assert (await recv(ws))["type"] == "input_audio_buffer.committed"
    if rt.profile.name == OPENAI:
        assert reply["type"] == "input_audio_buffer.cleared"
        assert rt.committed_audio == [pcm24(120)]
    else:
        assert reply["error"] == {
            "type": "invalid_request_error",
            "code": None,
            "message": "input_audio_buffer.clear is not supported",
            "param": None,
            "event_id": "evt_clear",
        }
        assert rt.committed_audio == [pcm24(150) + pcm24(120)]  # the old take joins the next
    assert sent_problems(rt) == []


ASSISTANT_ITEM = {
    "type": "message",
    "role": "assistant",
    "content": [{"type": "output_text", "text": "Earlier I said hello."}],
}
RECAP_ITEM = {
    "type": "message",
    "role": "user",
    "content": [{"type": "input_text", "text": "Earlier in this conversation: ..."}],
}


async def test_history_items(any_rt: RealtimeTestServer, http) -> None:
    rt = any_rt
    async with session_ws(http, rt) as ws:
        await ws.send_json({"type": "conversation.item.create", "item": RECAP_ITEM})
        recap = await recv(ws)
        await ws.send_json(
            {"type": "conversation.item.create", "event_id": "evt_a", "item": ASSISTANT_ITEM}
        )
        reply = await recv(ws)
    assert recap["type"] == "conversation.item.added"
    assert recap["item"]["content"] == RECAP_ITEM["content"]
    if rt.profile.name == OPENAI:
        assert reply["type"] == "conversation.item.added"
        assert len(rt.connections[0].conversation) == 2
    else:
        err = reply["error"]
        assert reply["type"] == "error" and err["event_id"] == "evt_a"
        assert err["message"].startswith("MessageContentItemOutputText")
        assert err["message"].endswith("not supported yet") and err["code"] is None
        assert [i["role"] for i in rt.connections[0].conversation] == ["user"]
    assert rt.validation_errors == [] and sent_problems(rt) == []


async def test_assistant_item_close_code(rt: RealtimeTestServer, http) -> None:
    rt.assistant_item_close_code = 1011
    async with session_ws(http, rt) as ws:
        await ws.send_json({"type": "conversation.item.create", "item": ASSISTANT_ITEM})
        assert (await recv(ws))["type"] == "error"
        msg = await ws.receive(timeout=2)
        assert msg.type is WSMsgType.CLOSE and msg.data == 1011


async def test_tool_call_round_trip(any_rt: RealtimeTestServer, http) -> None:
    rt = any_rt
    rt.answers.extend(
        [ToolCallAnswer([("get_time", '{"tz": "Europe/Moscow"}')]), AudioAnswer("Полдень.")]
    )
    async with session_ws(http, rt) as ws:
        await speak(ws)
        await recv_until(ws, "conversation.item.input_audio_transcription.completed")
        await ws.send_json({"type": "response.create"})
        events = await recv_until(ws, "response.done")
        kinds = types(events)
        assert kinds.count("response.function_call_arguments.delta") == 2
        args_done = events[kinds.index("response.function_call_arguments.done")]
        if rt.profile.name == OPENAI:
            assert args_done["name"] == "get_time"
        else:  # Yandex's schema: the name only in the item
            assert "name" not in args_done
        assert args_done["call_id"] == "call_1"
        assert args_done["arguments"] == '{"tz": "Europe/Moscow"}'
        deltas = [e["delta"] for e in events if e["type"].endswith("arguments.delta")]
        assert "".join(deltas) == args_done["arguments"]
        item = events[kinds.index("response.output_item.done")]["item"]
        assert item["type"] == "function_call" and item["status"] == "completed"
        assert item["name"] == "get_time"
        assert events[-1]["response"]["output"] == [item]

        output = {"type": "function_call_output", "call_id": "call_1", "output": '"12:00"'}
        await ws.send_json({"type": "conversation.item.create", "item": output})
        added = await recv(ws)
        assert added["type"] == "conversation.item.added"
        assert added["previous_item_id"] == item["id"] and added["item"]["id"]
        bad = {**output, "call_id": "call_999"}
        await ws.send_json({"type": "conversation.item.create", "item": bad})
        assert (await recv(ws))["type"] == "error"
        await ws.send_json({"type": "response.create"})
        answer = await recv_until(ws, "response.done")
    assert answer[-1]["response"]["output"][0]["content"][0]["transcript"] == "Полдень."
    assert rt.call_ids == ["call_1"]
    assert rt.connections[0].conversation[0]["call_id"] == "call_1"
    assert rt.validation_errors == [] and sent_problems(rt) == []


async def test_transcript_delay(any_rt: RealtimeTestServer, http) -> None:
    rt = any_rt
    assert rt.transcript_delay_s == 0.05  # the default of both 2026 profiles
    rt.transcript_delay_s = 0.3
    async with session_ws(http, rt) as ws:
        await speak(ws)
        committed = await recv(ws)
        t0 = time.monotonic()
        added = await recv(ws)
        completed = await recv(ws, timeout=3)
        waited = time.monotonic() - t0
    assert committed["type"] == "input_audio_buffer.committed"
    assert added["type"] == "conversation.item.added"
    assert completed["type"] == "conversation.item.input_audio_transcription.completed"
    assert completed["item_id"] == committed["item_id"]
    assert waited >= 0.25


async def test_early_response_create_gets_empty_answer(rt: RealtimeTestServer, http) -> None:
    """yandex-2026: a response.create before the transcript answers an empty question."""
    rt.transcript_delay_s = 0.3
    rt.answers.append(AudioAnswer("Сегодня солнечно."))
    async with session_ws(http, rt) as ws:
        await speak(ws)
        await ws.send_json({"type": "response.create"})
        early = await recv_until(ws, "response.done")
        more = await recv_until(ws, "conversation.item.input_audio_transcription.completed")
        await ws.send_json({"type": "response.create"})
        answer = await recv_until(ws, "response.done")
    item_id = early[0]["item_id"]
    assert rt.early_responses == [{"connection": 0, "item_id": item_id}]
    assert "conversation.item.input_audio_transcription.completed" not in types(early)
    assert early[-1]["response"]["status"] == "completed"
    assert words_of(early, "response.output_audio_transcript.delta") == EMPTY_QUESTION_TRANSCRIPT
    assert len(audio_of(early)) == 2 * round(0.2 * rt.output_rate)
    assert more[-1]["item_id"] == item_id
    assert words_of(answer, "response.output_audio_transcript.delta") == "Сегодня солнечно."
    assert sent_problems(rt) == []


async def test_early_response_create_answered_by_openai(oa: RealtimeTestServer, http) -> None:
    oa.transcript_delay_s = 0.3
    oa.answers.append(AudioAnswer("It is sunny."))
    async with session_ws(http, oa) as ws:
        await speak(ws)
        await ws.send_json({"type": "response.create"})
        events = await recv_until(ws, "response.done")
    assert words_of(events, "response.output_audio_transcript.delta") == "It is sunny."
    assert oa.early_responses == []


async def test_no_transcripts(rt: RealtimeTestServer, http) -> None:
    rt.sends_transcripts = False
    rt.answers.append(AudioAnswer("Сегодня солнечно."))
    async with session_ws(http, rt) as ws:
        await speak(ws)
        turn = [await recv(ws), await recv(ws)]
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(timeout=0.3)
        await ws.send_json({"type": "response.create"})
        events = await recv_until(ws, "response.done")
    assert types(turn) == ["input_audio_buffer.committed", "conversation.item.added"]
    assert rt.sent_of("conversation.item.input_audio_transcription.completed") == []
    assert words_of(events, "response.output_audio_transcript.delta") == "Сегодня солнечно."
    assert rt.early_responses == []


async def test_early_answer_is_configurable(rt: RealtimeTestServer, http) -> None:
    rt.transcript_delay_s = 0.3
    rt.early_answer = AudioAnswer("", pcm=b"")
    async with session_ws(http, rt) as ws:
        await speak(ws)
        await ws.send_json({"type": "response.create"})
        events = await recv_until(ws, "response.done")
    assert audio_of(events) == b"" and len(rt.early_responses) == 1


async def test_refuse_session_update(any_rt: RealtimeTestServer, http) -> None:
    rt = any_rt
    rt.refuse_session_update(message="No such voice.", param="session.audio.output.voice")
    session = {"type": "realtime", "instructions": "Be brief."}
    async with session_ws(http, rt) as ws:
        err = await update(ws, session, "evt_refused")
        assert err["type"] == "error"
        assert err["error"] == {
            "type": "invalid_request_error",
            "code": "invalid_value",
            "message": "No such voice.",
            "param": "session.audio.output.voice",
            "event_id": "evt_refused",
        }
        assert rt.connections[0].session["instructions"] == ""
        ok = await update(ws, session, "evt_again")  # one-shot
        assert ok["type"] == "session.updated"
    rt.refuse_session_update(close_code=1008)
    async with session_ws(http, rt) as ws:
        err = await update(ws, session, "evt_3")
        assert err["error"]["event_id"] == "evt_3"
        msg = await ws.receive(timeout=2)
        assert msg.type is WSMsgType.CLOSE and msg.data == 1008
    await rt.wait_for(lambda: rt.connections[1].closed)
    assert rt.connections[1].close_code == 1008
    rt.refuse_session_update(close_code=1011, send_error=False)
    async with session_ws(http, rt) as ws:
        await ws.send_json({"type": "session.update", "session": session})
        msg = await ws.receive(timeout=2)
        assert msg.type is WSMsgType.CLOSE and msg.data == 1011  # no error first
    with pytest.raises(ValueError):
        rt.refuse_session_update(send_error=False)


async def test_response_delay(rt: RealtimeTestServer, http) -> None:
    rt.response_delay_s = 0.3
    assert rt.answer_delay_s == 0.3
    async with session_ws(http, rt) as ws:
        t0 = time.monotonic()
        await ws.send_json({"type": "response.create"})
        assert (await recv(ws))["type"] == "response.created"
        assert time.monotonic() - t0 >= 0.28


async def test_keeps_server_vad(any_rt: RealtimeTestServer, http) -> None:
    """A server that ignores turn_detection: null runs its VAD and answers by itself."""
    rt = any_rt
    rt.keeps_server_vad = True
    rt.answers.append(AudioAnswer("Да."))
    session: dict[str, Any] = {"audio": {"input": {"turn_detection": None}}}
    if rt.profile.session_type_required:
        session["type"] = "realtime"
    async with session_ws(http, rt) as ws:
        updated = await update(ws, session)
        vad = updated["session"]["audio"]["input"]["turn_detection"]
        await append(ws, pcm24(300) + bytes(2 * 24000 * 600 // 1000))  # speech, then 600 ms quiet
        events = await recv_until(ws, "response.done")
        await ws.send_json({"type": "response.create", "event_id": "late"})
        events += await recv_until(ws, "response.done")
    assert vad["type"] == "server_vad" and vad["create_response"] is True
    kinds = types(events)
    assert kinds[:3] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
    ]
    assert words_of(events, "response.output_audio_transcript.delta").startswith("Да.")
    assert kinds.count("response.done") == 2


async def test_vad_at_44100(rt: RealtimeTestServer, http) -> None:
    vad = {"type": "server_vad", "silence_duration_ms": 200, "prefix_padding_ms": 0}
    session = {
        **YANDEX_SESSION,
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 44100}, "turn_detection": vad}},
    }
    async with session_ws(http, rt) as ws:
        await update(ws, session)
        await append(ws, bytes(2 * 4410) + tone(44100, 0.3) + bytes(2 * 44100 * 3 // 10))
        events = await recv_until(ws, "input_audio_buffer.committed")
    started, stopped = events[0], events[1]
    assert started["audio_start_ms"] == 100
    assert stopped["audio_end_ms"] == 600  # 100 ms quiet + 300 ms tone + 200 ms silence
    assert rt.committed_audio[0].rate == 44100


async def test_second_response_create_while_active(rt: RealtimeTestServer, http) -> None:
    rt.answer_delay_s = 0.2
    async with session_ws(http, rt) as ws:
        t0 = time.monotonic()
        await ws.send_json({"type": "response.create"})
        await ws.send_json({"type": "response.create"})
        err = await recv(ws)
        assert err["error"]["code"] == "conversation_already_has_active_response"
        created = await recv(ws)
        assert created["type"] == "response.created"
        assert time.monotonic() - t0 >= 0.19
        await recv_until(ws, "response.done")
        await ws.send_json({"type": "response.create"})
        assert (await recv_until(ws, "response.done"))[-1]["response"]["status"] == "completed"


async def test_cancel_mid_answer_then_truncate(any_rt: RealtimeTestServer, http) -> None:
    rt = any_rt
    rate = rt.output_rate
    rt.pace_realtime = True
    rt.answers.append(AudioAnswer("a long answer", pcm=tone(rate, 1.0), chunk_ms=40))
    async with session_ws(http, rt) as ws:
        await ws.send_json({"type": "response.create"})
        events = []
        while types(events).count("response.output_audio.delta") < 2:
            events.append(await recv(ws))
        await ws.send_json({"type": "response.cancel"})
        events += await recv_until(ws, "response.done")
        kinds = types(events)
        done = events[-1]["response"]
        assert done["status"] == "cancelled"
        assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
        assert kinds.count("response.output_audio.delta") < 10
        tail = kinds[kinds.index("response.output_audio.done") :]
        text_done = ["response.output_text.done"] if rt.profile.text_on_both_channels else []
        assert tail == [
            "response.output_audio.done",
            *text_done,
            "response.output_audio_transcript.done",
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done",
        ]
        item = events[kinds.index("response.output_item.done")]["item"]
        assert item["status"] == "incomplete"
        heard_ms = len(audio_of(events)) * 1000 // (2 * rate)

        await ws.send_json({"type": "response.cancel"})
        assert (await recv(ws))["error"]["code"] == "response_cancel_not_active"
        trunc = {"type": "conversation.item.truncate", "item_id": item["id"], "content_index": 0}
        await ws.send_json({**trunc, "audio_end_ms": heard_ms + 500})
        err = await recv(ws)
        assert err["error"]["code"] == "invalid_value" and err["error"]["param"] == "audio_end_ms"
        await ws.send_json({**trunc, "audio_end_ms": heard_ms})
        truncated = await recv(ws)
        assert truncated["type"] == "conversation.item.truncated"
        assert truncated["audio_end_ms"] == heard_ms
        await ws.send_json({**trunc, "item_id": "item_404", "audio_end_ms": 0})
        assert (await recv(ws))["error"]["code"] == "item_not_found"
    assert rt.truncations == [
        {"connection": 0, "item_id": item["id"], "content_index": 0, "audio_end_ms": heard_ms}
    ]
    assert sent_problems(rt) == []


async def test_text_and_error_answers(rt: RealtimeTestServer, http) -> None:
    rt.answers.extend([AudioAnswer("just some text", text=True), ErrorAnswer("boom", "It broke")])
    async with session_ws(http, rt) as ws:
        await ws.send_json({"type": "response.create"})
        text = await recv_until(ws, "response.done")
        await ws.send_json({"type": "response.create"})
        failed = await recv_until(ws, "response.done")
    deltas = [e["delta"] for e in text if e["type"] == "response.output_text.delta"]
    assert "".join(deltas) == "just some text" and len(deltas) == 3
    assert "response.output_audio.delta" not in types(text)
    assert text[-1]["response"]["output_modalities"] == ["text"]
    assert text[-1]["response"]["output"][0]["content"] == [
        {"type": "output_text", "text": "just some text"}
    ]
    assert types(failed) == ["response.created", "response.done"]
    assert failed[-1]["response"]["status"] == "failed"
    assert failed[-1]["response"]["status_details"]["error"]["code"] == "boom"
    assert [p for e in rt.connections[0].sent for p in validate_server_event(e)] == []


# ------------------------------------------------------------------------------ faults


async def test_refuse_and_refuse_for(rt: RealtimeTestServer, http) -> None:
    rt.refuse(503, times=2)
    for _ in range(2):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(url(rt), headers=HEADERS)
        assert info.value.status == 503
    async with session_ws(http, rt):
        pass
    rt.refuse_for(0.2, status=403)
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(url(rt), headers=HEADERS)
    assert info.value.status == 403
    await asyncio.sleep(0.25)
    async with session_ws(http, rt):
        pass
    assert [status for _, status in rt.handshakes] == [503, 503, 101, 403, 101]
    times = [t for t, _ in rt.handshakes]
    assert times == sorted(times)


async def test_auth_error_after_upgrade(rt: RealtimeTestServer, http) -> None:
    rt.auth_error_after_upgrade()
    async with http.ws_connect(url(rt), headers=HEADERS) as ws:
        err = await recv(ws)
        assert err["type"] == "error" and err["error"]["code"] == "invalid_api_key"
        msg = await ws.receive(timeout=2)
        assert msg.type is WSMsgType.CLOSE and msg.data == 1008
    async with session_ws(http, rt):  # one-shot
        pass


async def test_drop_mid_answer(rt: RealtimeTestServer, http) -> None:
    rt.drop_mid_answer(after_deltas=2)
    async with http.ws_connect(url(rt), headers=HEADERS) as ws:
        await recv(ws)
        await ws.send_json({"type": "response.create"})
        events = []
        while (msg := await ws.receive(timeout=2)).type is WSMsgType.TEXT:
            events.append(json.loads(msg.data))
        assert msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR)
        assert ws.close_code != 1000
    assert types(events).count("response.output_audio.delta") == 2
    assert "response.done" not in types(events)
    await rt.wait_for(lambda: rt.connections[0].closed)
    assert rt.connections[0].close_code == 1006
    async with session_ws(http, rt) as ws:  # the server survives
        await ws.send_json({"type": "response.create"})
        assert (await recv_until(ws, "response.done"))[-1]["response"]["status"] == "completed"


@pytest.mark.parametrize("code", [1011, 1001])
async def test_close_mid_answer(rt: RealtimeTestServer, http, code: int) -> None:
    rt.close_mid_answer(code=code, after_deltas=3)
    async with session_ws(http, rt) as ws:
        await ws.send_json({"type": "response.create"})
        events = []
        while (msg := await ws.receive(timeout=2)).type is WSMsgType.TEXT:
            events.append(json.loads(msg.data))
        assert msg.type is WSMsgType.CLOSE and msg.data == code
    assert types(events).count("response.output_audio.delta") == 3
    await rt.wait_for(lambda: rt.connections[0].closed)
    assert rt.connections[0].close_code == code


async def test_junk_frames_before_answer(rt: RealtimeTestServer, http) -> None:
    bad_delta = json.dumps({"type": "response.output_audio.delta", "delta": "@@@", "item_id": "x"})
    junk: list[str | bytes] = ["not json", "{}", '{"type": 5}', bad_delta, b"\x00\x01"]
    rt.junk_before_next_answer(junk)
    async with session_ws(http, rt) as ws:
        await ws.send_json({"type": "response.create"})
        frames = [await ws.receive(timeout=2) for _ in junk]
        assert [m.data for m in frames] == junk
        assert frames[-1].type is WSMsgType.BINARY
        events = await recv_until(ws, "response.done")
        assert events[0]["type"] == "response.created"
        await ws.send_json({"type": "response.create"})  # one-shot
        assert (await recv(ws))["type"] == "response.created"


async def test_beta_names(rt: RealtimeTestServer, http) -> None:
    rt.beta_names = True
    rt.answers.extend([AudioAnswer("hi there"), AudioAnswer("text", text=True)])
    async with session_ws(http, rt) as ws:
        await speak(ws)
        await recv_until(ws, "conversation.item.input_audio_transcription.completed")
        await ws.send_json({"type": "response.create"})
        events = await recv_until(ws, "response.done")
        await ws.send_json({"type": "response.create"})
        events += await recv_until(ws, "response.done")
    kinds = set(types(events))
    assert {
        "response.audio.delta",
        "response.audio.done",
        "response.audio_transcript.delta",
        "response.audio_transcript.done",
        "response.text.delta",
        "response.text.done",
        "conversation.item.created",
    } <= kinds
    assert not any(k.startswith(("response.output_audio", "response.output_text")) for k in kinds)
    assert not kinds & {"conversation.item.added", "conversation.item.done"}
    assert audio_of(events, "response.audio.delta") == tone(44100)


async def test_session_max_s_mid_answer(rt: RealtimeTestServer, http) -> None:
    rt.session_max_s = 0.3
    rt.pace_realtime = True
    rt.answers.append(AudioAnswer("long", pcm=tone(44100, 2.0)))
    async with session_ws(http, rt) as ws:
        await ws.send_json({"type": "response.create"})
        events = []
        while (msg := await ws.receive(timeout=2)).type is WSMsgType.TEXT:
            events.append(json.loads(msg.data))
        assert msg.type is WSMsgType.CLOSE and msg.data == 1000
    assert events[-1]["type"] == "error"
    assert events[-1]["error"]["code"] == "session_expired"
    assert "maximum duration" in events[-1]["error"]["message"]
    assert "response.output_audio.delta" in types(events)
    assert "response.done" not in types(events)


async def test_go_silent_detected_by_heartbeat(rt: RealtimeTestServer, http) -> None:
    async with session_ws(http, rt, heartbeat=0.5) as ws:
        rt.go_silent()
        await ws.send_json({"type": "response.create"})
        t0 = time.monotonic()
        msg = await ws.receive(timeout=3)
        elapsed = time.monotonic() - t0
        assert msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR), msg
        assert elapsed < 1.5
    assert "response.create" not in types(rt.received)


async def test_send_error_now_and_close_all(rt: RealtimeTestServer, http) -> None:
    async with session_ws(http, rt) as ws1, session_ws(http, rt) as ws2:
        assert rt.open_connections == 2
        await rt.send_error_now("server_is_overloaded", "Try later", type="server_error")
        for ws in (ws1, ws2):
            err = await recv(ws)
            assert err["error"] == {
                "type": "server_error",
                "code": "server_is_overloaded",
                "message": "Try later",
                "param": None,
                "event_id": None,
            }
        receivers = [asyncio.ensure_future(ws.receive(timeout=2)) for ws in (ws1, ws2)]
        await rt.close_all(code=1001)
        for msg in await asyncio.gather(*receivers):
            assert msg.type is WSMsgType.CLOSE and msg.data == 1001
    await rt.wait_for(lambda: rt.open_connections == 0)


async def test_stop_closes_open_connections(http) -> None:
    server = RealtimeTestServer()
    await server.start()
    server.pace_realtime = True
    ws = await http.ws_connect(url(server), headers=HEADERS)
    try:
        await recv(ws)
        await ws.send_json({"type": "response.create"})
        await recv(ws)
        receiver = asyncio.ensure_future(ws.receive_json())
        t0 = time.monotonic()
        await server.stop()
        assert time.monotonic() - t0 < 2
        with contextlib.suppress(TypeError):  # receive_json on a CLOSE message
            while True:
                await asyncio.wait_for(receiver, 2)
                receiver = asyncio.ensure_future(ws.receive_json())
        assert ws.closed or (await ws.receive(timeout=2)).type in (
            WSMsgType.CLOSE,
            WSMsgType.CLOSED,
        )
    finally:
        await ws.close()
    assert server.connections[0].closed


# ------------------------------------------------------------------------------ validation


def session_update(**session: Any) -> dict[str, Any]:
    return {"type": "session.update", "session": session}


def audio(rate_in: int = 24000, rate_out: int = 24000, **extra: Any) -> dict[str, Any]:
    return {
        "input": {"format": {"type": "audio/pcm", "rate": rate_in}, "turn_detection": None},
        "output": {"format": {"type": "audio/pcm", "rate": rate_out}, "voice": "marina"},
        **extra,
    }


def test_validate_client_event_yandex() -> None:
    good = session_update(output_modalities=["audio"], audio=audio(44100, 44100))
    good["session"]["audio"]["input"]["languages"] = ["ru-RU"]
    good["session"]["audio"]["output"]["role"] = "good"
    assert validate_client_event(good) == [] == validate_client_event(good, YANDEX_2026)
    assert good["session"]["audio"]["output"]["format"]["rate"] == 44100  # not modified
    assert "type" not in good["session"]
    typed = json.loads(json.dumps(good))
    typed["session"]["type"] = "realtime"
    assert validate_client_event(typed) == []
    odd = json.loads(json.dumps(good))
    odd["session"]["audio"]["input"]["format"]["rate"] = 16000
    assert any("rate" in p for p in validate_client_event(odd))
    odd_out = json.loads(json.dumps(good))
    odd_out["session"]["audio"]["output"]["format"]["rate"] = 11025
    assert validate_client_event(odd_out) != []
    channels = json.loads(json.dumps(good))
    channels["session"]["audio"]["input"]["format"]["channels"] = 1
    assert validate_client_event(channels) == [
        "session.audio.input.format.channels: refused by yandex-2026 (unknown_parameter)"
    ]
    tools = session_update(tools=[{"type": "function", "name": "web_search", "parameters": "{}"}])
    assert validate_client_event(tools) == [
        "session.tools[0].parameters: refused by yandex-2026 (must be an object)"
    ]
    tools["session"]["tools"][0]["parameters"] = {}
    assert validate_client_event(tools) == []
    bad_tool = {
        "type": "response.create",
        "response": {"tools": [{"name": "f", "parameters": "{}"}]},
    }
    assert validate_client_event(bad_tool)


def test_validate_client_event_openai() -> None:
    good = session_update(type="realtime", output_modalities=["audio"], audio=audio())
    assert validate_client_event(good, OPENAI) == []
    untyped = session_update(**{k: v for k, v in good["session"].items() if k != "type"})
    assert any("type" in p for p in validate_client_event(untyped, OPENAI))
    for rate_in, rate_out in ((44100, 24000), (24000, 44100)):
        bad = session_update(type="realtime", audio=audio(rate_in, rate_out))
        assert any("rate" in p for p in validate_client_event(bad, OPENAI))
    for where, key, value in (
        ("input", "languages", ["ru-RU"]),
        ("output", "role", "good"),
    ):
        bad = json.loads(json.dumps(good))
        bad["session"]["audio"][where][key] = value
        assert validate_client_event(bad, OPENAI) == [
            f"session.audio.{where}.{key}: refused by openai (unknown_parameter)"
        ]
    bad = json.loads(json.dumps(good))
    bad["session"]["audio"]["output"]["format"]["channels"] = 1
    assert validate_client_event(bad, OPENAI) != []


def test_validate_client_event_legacy() -> None:
    old = session_update(type="realtime", audio=audio(24000, 44100))
    old["session"]["audio"]["input"]["format"]["channels"] = 1
    assert validate_client_event(old, LEGACY) == []
    untyped = session_update(audio=audio(24000, 44100))
    assert any("type" in p for p in validate_client_event(untyped, LEGACY))


@pytest.mark.parametrize("profile", [YANDEX_2026, OPENAI, LEGACY])
def test_validate_client_event_common(profile: str) -> None:
    three_bytes = base64.b64encode(b"abc").decode()
    append = {"type": "input_audio_buffer.append"}
    assert validate_client_event({**append, "audio": three_bytes}, profile)
    assert validate_client_event({**append, "audio": "AAA="}, profile) == []
    truncate = {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0}
    assert validate_client_event({**truncate, "audio_end_ms": 10}, profile) == []
    assert validate_client_event({**truncate, "audio_end_ms": -1}, profile)
    assert validate_client_event({**truncate, "content_index": 1, "audio_end_ms": 1}, profile) == []
    assert validate_client_event({**truncate, "content_index": -1, "audio_end_ms": 1}, profile)
    assert validate_client_event({"type": "response.audio.delta"}, profile)
    assert validate_client_event([1, 2], profile)


def test_validate_server_event_allowances() -> None:
    args_done = {
        "type": "response.function_call_arguments.done",
        "event_id": "e1",
        "response_id": "r1",
        "output_index": 0,
        "item_id": "i1",
        "call_id": "c1",
        "arguments": "{}",
    }
    assert validate_server_event(args_done) == []
    assert any("name" in p for p in validate_server_event(args_done, OPENAI))
    completed = {
        "type": "conversation.item.input_audio_transcription.completed",
        "event_id": "e2",
        "item_id": "i0",
        "content_index": 0,
        "transcript": "какая погода",
    }
    assert validate_server_event(completed) == []
    assert any("usage" in p for p in validate_server_event(completed, OPENAI))
    updated = {"type": "session.updated", "event_id": "e3", "session": {"type": "realtime"}}
    updated["session"]["audio"] = audio(44100, 44100)
    assert validate_server_event(updated) == []
    problems = validate_server_event(updated, OPENAI)
    assert any("input.format.AudioPCM.rate" in p for p in problems)
    assert any("output.format.AudioPCM.rate" in p for p in problems)


# ------------------------------------------------------------------------------ legacy


async def test_legacy_profile_keeps_the_2025_behaviour(http) -> None:
    """TRANSITIONAL: the old path and shapes, until the old tests move to the 2026 profiles."""
    async with RealtimeTestServer(profile=LEGACY) as rt:
        assert rt.url.endswith("/v1/realtime/openai") and rt.transcript_delay_s == 0
        rt.answers.append(ToolCallAnswer([("f", "{}")]))
        async with http.ws_connect(f"{rt.url}?model={MODEL}", headers=HEADERS) as ws:
            await recv(ws)
            old = {"type": "realtime", "audio": audio(24000, 44100)}
            old["audio"]["input"]["format"]["channels"] = 1
            old["tools"] = [{"type": "function", "name": "file_search", "parameters": "{}"}]
            assert (await update(ws, old))["type"] == "session.updated"
            await speak(ws)
            turn = types(
                await recv_until(ws, "conversation.item.input_audio_transcription.completed")
            )
            await ws.send_json({"type": "response.create"})
            events = await recv_until(ws, "response.done")
            await ws.send_json({"type": "input_audio_buffer.clear"})
            assert (await recv(ws))["type"] == "input_audio_buffer.cleared"
            await ws.send_json({"type": "conversation.item.create", "item": ASSISTANT_ITEM})
            assert (await recv(ws))["type"] == "conversation.item.added"
    assert turn[-1] == "conversation.item.input_audio_transcription.completed" and len(turn) == 3
    assert events[types(events).index("response.function_call_arguments.done")]["name"] == "f"
    assert rt.validation_errors == []


# ------------------------------------------------------------------------------ replay


async def test_script_frames_replays_in_answer_to_client_events(
    rt: RealtimeTestServer, http
) -> None:
    created = {"type": "session.created", "event_id": "ev_1", "session": {"id": "s_rec"}}
    updated = {"type": "session.updated", "event_id": "ev_2", "session": {"id": "s_rec"}}
    delta = {
        "type": "response.output_audio.delta",
        "event_id": "ev_4",
        "response_id": "r",
        "item_id": "i",
        "output_index": 0,
        "content_index": 0,
        "delta": 882,  # a byte count
    }
    rt.script_frames(
        [
            created,
            WaitFor("session.update"),
            updated,
            WaitFor("response.create"),
            {"type": "response.created", "event_id": "ev_3", "response": {"id": "r"}},
            delta,
            {**delta, "event_id": "ev_5", "delta": "<audio 100 bytes>"},  # a trace's marker
            "not json",
            Pause(0.2),
            CloseWith(4000),
        ]
    )
    async with http.ws_connect(url(rt), headers=auth(rt)) as ws:
        assert await recv(ws) == created
        await ws.send_json(
            {"type": "response.create"}
        )  # not awaited yet: the script is on session.update
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(timeout=0.2)
        await ws.send_json({"type": "session.update", "session": {}})
        assert await recv(ws) == updated
        await ws.send_json({"type": "response.create"})
        assert (await recv(ws))["type"] == "response.created"
        got = await recv(ws)
        assert base64.b64decode(got["delta"]) == tone(44100, 0.01)
        assert {k: v for k, v in got.items() if k != "delta"} == {
            k: v for k, v in delta.items() if k != "delta"
        }
        assert base64.b64decode((await recv(ws))["delta"]) == tone(44100, 50 / 44100)
        assert (await ws.receive(timeout=1)).data == "not json"
        t0 = time.monotonic()
        msg = await ws.receive(timeout=2)
        assert msg.type is WSMsgType.CLOSE and msg.data == 4000
        assert time.monotonic() - t0 >= 0.15
    assert types(rt.received) == ["response.create", "session.update", "response.create"]
    async with session_ws(http, rt) as ws:  # one-shot: the next connection is served normally
        assert (await update(ws, {"instructions": "x"}))["type"] == "session.updated"


def test_infer_waits() -> None:
    frames = [
        {"type": "session.created"},
        {"type": "session.updated"},
        {"type": "input_audio_buffer.speech_stopped"},
        {"type": "input_audio_buffer.committed"},
        {"type": "input_audio_buffer.committed"},
        {"type": "response.created"},
        {"type": "response.done"},
    ]
    assert infer_waits(frames) == [
        frames[0],
        WaitFor("session.update"),
        frames[1],
        frames[2],
        frames[3],
        WaitFor("input_audio_buffer.commit"),
        frames[4],
        WaitFor("response.create"),
        frames[5],
        frames[6],
    ]


@pytest.mark.parametrize("profile", PROFILE_NAMES)
async def test_audio_content_index(http, profile: str) -> None:
    """audio_content_index=1: a text part at 0, the audio at 1; truncate must name 1."""
    async with RealtimeTestServer(profile=profile) as rt, session_ws(http, rt) as ws:
        rt.audio_content_index = 1
        rt.answers.append(AudioAnswer("Привет.", pcm=tone(rt.output_rate, 0.2), chunk_ms=40))
        await ws.send_json({"type": "response.create"})
        events = await recv_until(ws, "response.done")
        item = events[-1]["response"]["output"][0]
        trunc = {"type": "conversation.item.truncate", "item_id": item["id"], "audio_end_ms": 50}
        await ws.send_json({**trunc, "content_index": 0})
        err = await recv(ws)
        await ws.send_json({**trunc, "content_index": 1})
        truncated = await recv(ws)
    both = rt.profile.text_on_both_channels
    indexes = {e["type"]: e["content_index"] for e in events if "content_index" in e}
    assert indexes["response.output_audio.delta"] == 1
    assert indexes["response.output_audio_transcript.done"] == 1
    assert ("response.output_text.delta" in indexes) is both
    if both:
        assert indexes["response.output_text.done"] == 0
    parts = [(e["type"], e["content_index"]) for e in events if "content_part" in e["type"]]
    assert parts == [
        ("response.content_part.added", 0),
        ("response.content_part.added", 1),
        ("response.content_part.done", 0),
        ("response.content_part.done", 1),
    ]
    assert item["content"] == [
        {"type": "output_text", "text": "Привет." if both else ""},
        {"type": "output_audio", "transcript": "Привет."},
    ]
    assert err["error"]["param"] == "content_index" and truncated["content_index"] == 1
    assert rt.truncations[0]["content_index"] == 1
    assert sent_problems(rt) == []


@pytest.mark.parametrize(
    ("profile", "fmt", "code", "param"),
    [
        (
            YANDEX_2026,
            {"type": "audio/pcm", "rate": 44100, "channels": 1},
            "unknown_parameter",
            "response.audio.output.format.channels",
        ),
        (
            OPENAI,
            {"type": "audio/pcm", "rate": 44100},
            "invalid_value",
            "response.audio.output.format.rate",
        ),
    ],
)
async def test_response_create_body_checked(http, profile, fmt, code, param) -> None:
    async with RealtimeTestServer(profile=profile) as rt, session_ws(http, rt) as ws:
        body = {"audio": {"output": {"format": fmt}}}
        await ws.send_json({"type": "response.create", "event_id": "r1", "response": body})
        err = await recv(ws)
        assert err["type"] == "error" and err["error"]["event_id"] == "r1"
        assert (err["error"]["code"], err["error"]["param"]) == (code, param)
        fmt = {k: v for k, v in fmt.items() if k != "channels"}
        fmt["rate"] = 44100 if profile == YANDEX_2026 else 24000
        body = {"audio": {"output": {"format": fmt}}}
        await ws.send_json({"type": "response.create", "response": body})
        assert (await recv_until(ws, "response.done"))[-1]["response"]["status"] == "completed"
    assert rt.validation_errors  # the refused one
    assert all(e.startswith("response.create: response.") for e in rt.validation_errors)
