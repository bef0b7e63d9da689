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
from realtime_server import (
    MODEL,
    AudioAnswer,
    ErrorAnswer,
    RealtimeTestServer,
    ToolCallAnswer,
    tone,
)

HEADERS = {"Authorization": "api-key test-key"}


@pytest.fixture
async def rt() -> AsyncIterator[RealtimeTestServer]:
    async with RealtimeTestServer() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def url(server: RealtimeTestServer, model: str = MODEL) -> str:
    return f"{server.url}?model={model}"


@contextlib.asynccontextmanager
async def session_ws(
    http: aiohttp.ClientSession, server: RealtimeTestServer, **kwargs: Any
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with http.ws_connect(url(server), headers=HEADERS, **kwargs) as ws:
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


async def speak(ws: aiohttp.ClientWebSocketResponse, ms: int = 200) -> bytes:
    """Append `ms` of audio in 2 chunks and commit."""
    audio = pcm24(ms)
    half = len(audio) // 2
    for piece in (audio[:half], audio[half:]):
        await ws.send_json(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(piece).decode()}
        )
    await ws.send_json({"type": "input_audio_buffer.commit"})
    return audio


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def audio_of(events: list[dict[str, Any]], type_: str = "response.output_audio.delta") -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == type_)


# ------------------------------------------------------------------------------ handshake


async def test_handshake_sends_session_created(rt: RealtimeTestServer, http) -> None:
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


@pytest.mark.parametrize("auth", ["api-key test-key", "Api-Key test-key", "Bearer test-key"])
async def test_auth_schemes_accepted(rt: RealtimeTestServer, http, auth: str) -> None:
    async with http.ws_connect(url(rt), headers={"Authorization": auth}) as ws:
        assert (await recv(ws))["type"] == "session.created"


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "api-key wrong"}, {"Authorization": "Basic test-key"}]
)
async def test_bad_auth_is_401(rt: RealtimeTestServer, http, headers) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(url(rt), headers=headers)
    assert info.value.status == 401
    assert rt.connections == [] and rt.handshakes[-1][1] == 401


@pytest.mark.parametrize("query", ["", "?model=speech-realtime", "?model=gpt://folder"])
async def test_bad_model_is_400(rt: RealtimeTestServer, http, query: str) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(rt.url + query, headers=HEADERS)
    assert info.value.status == 400


# ------------------------------------------------------------------------------ turns


async def test_full_audio_turn(rt: RealtimeTestServer, http) -> None:
    pcm = tone(44100, 0.3, freq=500)
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
    assert rt.committed_audio == [sent]

    kinds = types(events)
    head = [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
    ]
    tail = [
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    assert kinds[:4] == head and kinds[-6:] == tail
    middle = set(kinds[4:-6])
    assert middle == {"response.output_audio.delta", "response.output_audio_transcript.delta"}
    assert kinds.count("response.output_audio.delta") == 15  # 300 ms in 20 ms chunks
    assert audio_of(events) == pcm
    transcript = "".join(
        e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta"
    )
    assert transcript == "Сегодня солнечно и тепло."
    done = events[-1]["response"]
    assert done["status"] == "completed" and done["object"] == "realtime.response"
    assert done["output"][0]["content"] == [{"type": "output_audio", "transcript": transcript}]
    assert events[2]["previous_item_id"] == user_item["id"]

    all_sent = rt.connections[0].sent
    assert len({e["event_id"] for e in all_sent}) == len(all_sent)
    assert [p for e in all_sent for p in validate_server_event(e)] == []
    assert rt.validation_errors == []
    assert [e["type"] for e in rt.received] == [
        "input_audio_buffer.append",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "response.create",
    ]


async def test_session_update_merges_and_keeps_server_rate(http) -> None:
    async with RealtimeTestServer(output_rate=22050) as rt, session_ws(http, rt) as ws:
        update = {
            "type": "realtime",
            "instructions": "Be brief.",
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000, "channels": 1},
                    "turn_detection": None,
                },
                "output": {"format": {"type": "audio/pcm", "rate": 44100}, "voice": "alena"},
            },
        }
        await ws.send_json({"type": "session.update", "session": update})
        updated = await recv(ws)
    session = updated["session"]
    assert updated["type"] == "session.updated"
    assert session["instructions"] == "Be brief." and session["id"] == "sess_1"
    assert session["audio"]["input"]["turn_detection"] is None
    assert session["audio"]["input"]["format"]["channels"] == 1
    assert session["audio"]["output"] == {
        "format": {"type": "audio/pcm", "rate": 22050},
        "voice": "alena",
    }
    assert rt.connections[0].session == session
    assert rt.validation_errors == []


async def test_client_errors(rt: RealtimeTestServer, http) -> None:
    async with session_ws(http, rt) as ws:
        await ws.send_str("not json")
        assert (await recv(ws))["error"]["code"] == "invalid_json"
        await ws.send_json({"type": "input_audio_buffer.append", "audio": "!!!"})
        assert (await recv(ws))["error"]["code"] == "invalid_base64"
        await ws.send_json({"type": "response.dance", "event_id": "e1"})
        err = await recv(ws)
        assert err["error"]["code"] == "unknown_event" and err["error"]["event_id"] == "e1"
        await ws.send_json(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm24(50)).decode()}
        )
        await ws.send_json({"type": "input_audio_buffer.commit"})
        assert (await recv(ws))["error"]["code"] == "input_audio_buffer_commit_empty"
        await ws.send_json({"type": "input_audio_buffer.clear"})
        assert (await recv(ws))["type"] == "input_audio_buffer.cleared"
        await ws.send_json({"type": "response.cancel"})
        assert (await recv(ws))["error"]["code"] == "response_cancel_not_active"
    assert any(e.startswith("response.dance:") for e in rt.validation_errors)
    assert any(e.startswith("input_audio_buffer.append: audio") for e in rt.validation_errors)
    assert rt.committed_audio == []


async def test_tool_call_round_trip(rt: RealtimeTestServer, http) -> None:
    rt.answers.extend(
        [ToolCallAnswer([("get_time", '{"tz": "Europe/Moscow"}')]), AudioAnswer("Полдень.")]
    )
    async with session_ws(http, rt) as ws:
        await speak(ws)
        await ws.send_json({"type": "response.create"})
        events = await recv_until(ws, "response.done")
        kinds = types(events)
        assert kinds.count("response.function_call_arguments.delta") == 2
        args_done = events[kinds.index("response.function_call_arguments.done")]
        assert args_done["name"] == "get_time" and args_done["call_id"] == "call_1"
        assert args_done["arguments"] == '{"tz": "Europe/Moscow"}'
        deltas = [e["delta"] for e in events if e["type"].endswith("arguments.delta")]
        assert "".join(deltas) == args_done["arguments"]
        item = events[kinds.index("response.output_item.done")]["item"]
        assert item["type"] == "function_call" and item["status"] == "completed"
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
    assert rt.validation_errors == []


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


async def test_cancel_mid_answer_then_truncate(rt: RealtimeTestServer, http) -> None:
    rt.pace_realtime = True
    rt.answers.append(AudioAnswer("a long answer", pcm=tone(44100, 1.0), chunk_ms=40))
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
        assert tail == [
            "response.output_audio.done",
            "response.output_audio_transcript.done",
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done",
        ]
        item = events[kinds.index("response.output_item.done")]["item"]
        assert item["status"] == "incomplete"
        heard_ms = len(audio_of(events)) * 1000 // (2 * 44100)

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
    assert [p for e in rt.connections[0].sent for p in validate_server_event(e)] == []


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


def test_validate_client_event() -> None:
    good = {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000, "channels": 1},
                    "turn_detection": None,
                },
                "output": {"format": {"type": "audio/pcm", "rate": 44100}, "voice": "marina"},
            },
        },
    }
    assert validate_client_event(good) == []
    assert good["session"]["audio"]["output"]["format"]["rate"] == 44100  # not modified
    untyped = {**good, "session": {k: v for k, v in good["session"].items() if k != "type"}}
    assert any("type" in p for p in validate_client_event(untyped))
    odd_rate = json.loads(json.dumps(good))
    odd_rate["session"]["audio"]["output"]["format"]["rate"] = 11025
    assert validate_client_event(odd_rate) != []
    three_bytes = base64.b64encode(b"abc").decode()
    assert validate_client_event({"type": "input_audio_buffer.append", "audio": three_bytes})
    assert validate_client_event({"type": "input_audio_buffer.append", "audio": "AAA="}) == []
    truncate = {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0}
    assert validate_client_event({**truncate, "audio_end_ms": 10}) == []
    assert validate_client_event({**truncate, "audio_end_ms": -1})
    assert validate_client_event({**truncate, "content_index": 1, "audio_end_ms": 1})
    assert validate_client_event({"type": "response.audio.delta"})
    assert validate_client_event([1, 2])
