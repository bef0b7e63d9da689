"""The Realtime link against the local test server: turns, tools, every fault, renewal.

Real aiohttp on both ends over 127.0.0.1; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging

import pytest
from conftest import SECRET, fast_backoff, link_settings
from link_helpers import QUESTION, ask_once, until
from realtime_server import AudioAnswer, ErrorAnswer, ToolCallAnswer, tone

from appliance.protocol import server_events as ev
from appliance.protocol.client_events import FunctionTool
from appliance.realtime.link_events import AuthRejected, Connected, Disconnected
from appliance.realtime.session import NotConnected
from appliance.realtime.supervisor import SessionSupervisor
from appliance.realtime.tools import Tool, ToolRegistry


def audio_of(events) -> bytes:
    return b"".join(e.audio for e in events if isinstance(e, ev.AudioDelta))


def supervisor(server, tools=None, **overrides):
    backoff = overrides.pop("backoff", None) or fast_backoff()
    return SessionSupervisor(link_settings(server, **overrides), tools, backoff=backoff)


# ---- the happy path ---------------------------------------------------------------------


async def test_connect_and_one_turn(server):
    pcm = tone(44100, 0.3)
    server.answers.append(AudioAnswer("Сейчас полдень.", pcm))
    server.user_transcripts.append("Который час?")
    async with supervisor(server) as link:
        connected = (await until(link, Connected))[-1]
        assert connected == Connected(connected.session_id, False, 0, 44100)
        events = await ask_once(link)
    assert audio_of(events) == pcm
    assert events[-1] == ev.ResponseDone(events[-1].response_id, "completed")
    transcript = "".join(e.delta for e in events if isinstance(e, ev.TranscriptDelta))
    assert transcript.strip() == "Сейчас полдень."
    assert ev.InputTranscript in {type(e) for e in events}
    # What the server saw: session.update first (push-to-talk), the audio, commit, response.
    first = server.connections[0]
    types = [e["type"] for e in first.events]
    assert types[0] == "session.update"
    assert first.events[0]["session"]["audio"]["input"]["turn_detection"] is None
    assert types[-2:] == ["input_audio_buffer.commit", "response.create"]
    assert server.committed_audio == [QUESTION]
    assert "authorization" not in {k.lower() for k in first.headers}
    assert [(u.role, u.text) for u in link.history] == [
        ("user", "Который час?"),
        ("assistant", "Сейчас полдень."),
    ]


async def test_beta_event_names_make_the_same_turn(server):
    server.beta_names = True
    pcm = tone(44100, 0.2)
    server.answers.append(AudioAnswer("Beta.", pcm))
    async with supervisor(server) as link:
        await until(link, Connected)
        events = await ask_once(link)
    assert audio_of(events) == pcm
    assert [u.text for u in link.history][-1] == "Beta."


async def test_slow_answer_still_arrives(server):
    server.answer_delay_s = 0.6
    async with supervisor(server) as link:
        await until(link, Connected)
        events = await ask_once(link)
    assert events[-1].status == "completed" and audio_of(events)


# ---- tool calls -------------------------------------------------------------------------


def registry(calls):
    def get_time(args):
        calls.append(args)
        return {"time": "12:00", "tz": args.get("tz", "local")}

    return ToolRegistry([Tool(FunctionTool("get_time", "the time"), get_time)])


async def test_tool_round_trip(server):
    calls = []
    server.answers.extend(
        [ToolCallAnswer([("get_time", '{"tz": "Europe/Moscow"}')]), AudioAnswer("Noon.")]
    )
    async with supervisor(server, tools=registry(calls)) as link:
        await until(link, Connected)
        events = await ask_once(link)
    assert calls == [{"tz": "Europe/Moscow"}]
    outputs = [e for e in server.received if e["type"] == "conversation.item.create"]
    assert [json.loads(o["item"]["output"]) for o in outputs] == [
        {"time": "12:00", "tz": "Europe/Moscow"}
    ]
    # Exactly one response.create after the tool output, and the final answer came.
    types = [e["type"] for e in server.received]
    after_output = types[types.index("conversation.item.create") :]
    assert after_output.count("response.create") == 1
    assert events[-1].status == "completed" and audio_of(events)
    declared = server.connections[0].events[0]["session"]["tools"]
    assert [t["name"] for t in declared] == ["get_time"]


async def test_several_calls_one_response_create_and_unknown_tool_gets_error(server):
    calls = []
    server.answers.extend(
        [ToolCallAnswer([("get_time", "{}"), ("launch_rocket", "{}")]), AudioAnswer("Done.")]
    )
    async with supervisor(server, tools=registry(calls)) as link:
        await until(link, Connected)
        await ask_once(link)
    outputs = {
        e["item"]["call_id"]: json.loads(e["item"]["output"])
        for e in server.received
        if e["type"] == "conversation.item.create"
    }
    assert sorted(outputs.values(), key=str) == sorted(
        [{"time": "12:00", "tz": "local"}, {"error": "unknown tool: launch_rocket"}], key=str
    )
    assert [e["type"] for e in server.received].count("response.create") == 2


# ---- faults -----------------------------------------------------------------------------


async def test_refused_key_is_reported_and_retried_slowly(server, caplog):
    server.refuse(401, times=3)
    async with supervisor(server, backoff=fast_backoff(cap_s=0.3)) as link:
        events = await until(link, Connected, timeout=5)
    rejected = [e for e in events if isinstance(e, AuthRejected)]
    assert len(rejected) == 3
    assert rejected[0].reason == "the API key was refused (HTTP 401)"
    assert rejected[0].retry_in_s == 0.3
    times = [t for t, _ in server.handshakes]
    assert all(b - a >= 0.28 for a, b in itertools.pairwise(times))
    # One log line for three refusals (at most one per kind per minute).
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.ERROR


async def test_forbidden_and_auth_error_event_are_auth_failures(server):
    server.refuse(403, times=1)
    server.auth_error_after_upgrade(times=1)
    async with supervisor(server, backoff=fast_backoff(cap_s=0.1)) as link:
        events = await until(link, Connected, timeout=5)
    reasons = [e.reason for e in events if isinstance(e, AuthRejected)]
    assert reasons == [
        "the API key was refused (HTTP 403)",
        "the API key was refused (invalid_api_key)",
    ]


async def test_backoff_timing_between_failed_handshakes(server):
    server.refuse(503, times=4)
    async with supervisor(server) as link:
        events = await until(link, Connected, timeout=5)
    delays = [e.retry_in_s for e in events if isinstance(e, Disconnected)]
    assert delays == pytest.approx([0.05, 0.1, 0.2, 0.4])
    times = [t for t, _ in server.handshakes]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for gap, delay in zip(gaps, delays, strict=True):
        assert delay <= gap < delay + 0.25
    assert next(e.reason for e in events if isinstance(e, Disconnected)) == (
        "handshake refused: HTTP 503"
    )


@pytest.mark.parametrize("fault", ["drop", "close-1011", "close-1001"])
async def test_link_lost_mid_answer_fails_the_turn_then_recovers(server, fault):
    if fault == "drop":
        server.drop_mid_answer(after_deltas=2)
    else:
        server.close_mid_answer(code=int(fault.split("-")[1]), after_deltas=2)
    pcm = tone(44100, 0.3)
    server.answers.extend([AudioAnswer("Lost."), AudioAnswer("Second.", pcm)])
    async with supervisor(server) as link:
        await until(link, Connected)
        events = await ask_once(link)
        lost = events[-1]
        assert isinstance(lost, Disconnected) and lost.turn_lost
        reconnected = (await until(link, Connected))[-1]
        assert not reconnected.renewed
        events = await ask_once(link)
    assert audio_of(events) == pcm
    assert len(server.connections) == 2


async def test_audio_is_never_silently_dropped(server):
    async with supervisor(server) as link:
        await until(link, Connected)
        link.begin_turn()
        await link.append_audio(QUESTION)
        await server.close_all(1011)
        lost = (await until(link, Disconnected))[-1]
        assert lost.turn_lost
        with pytest.raises(NotConnected):  # before the reconnect: no session
            await link.append_audio(QUESTION)
        await until(link, Connected)
        # After it: the turn's first half went down with the old session; commit says so.
        with pytest.raises(NotConnected, match="lost with the previous session"):
            await link.commit()
        link.end_turn()
        events = await ask_once(link)  # a fresh turn works
    assert events[-1].status == "completed"


async def test_error_events_reach_the_appliance_and_the_link_stays(server):
    async with supervisor(server) as link:
        await until(link, Connected)
        await server.send_error_now("rate_limit_exceeded", "slow down", type="server_error")
        error = (await until(link, ev.ServerError))[-1]
        assert error.code == "rate_limit_exceeded"
        server.answers.append(ErrorAnswer("overloaded", "try later"))
        events = await ask_once(link)
        assert events[-1].status == "failed" and events[-1].error_code == "overloaded"
        events = await ask_once(link)
        assert events[-1].status == "completed"
    assert len(server.connections) == 1


async def test_junk_frames_are_skipped_and_logged_once(server, caplog):
    pcm = tone(44100, 0.2)
    server.junk_before_next_answer(
        [
            "not json",
            "{}",
            '{"type": 5}',
            b"\x00\x01",
            '{"type": "response.output_audio.delta"}',
            '{"type": "response.brand_new"}',
        ]
    )
    server.answers.append(AudioAnswer("Clean.", pcm))
    with caplog.at_level(logging.DEBUG, logger="appliance"):
        async with supervisor(server) as link:
            await until(link, Connected)
            events = await ask_once(link)
    assert audio_of(events) == pcm
    assert not any(isinstance(e, ev.Malformed | ev.Unknown) for e in events)
    malformed = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(malformed) == 1 and malformed[0].levelno == logging.WARNING
    assert any("brand_new" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)


async def test_dead_link_noticed_by_heartbeat(server):
    async with supervisor(server, heartbeat_s=0.3) as link:
        await until(link, Connected)
        server.go_silent()
        loop = asyncio.get_running_loop()
        start = loop.time()
        reconnected = (await until(link, Connected, timeout=5))[-1]
        took = loop.time() - start
    assert reconnected.renewed  # nothing was in flight: the conversation just continues
    assert took < 1.5  # heartbeat_s x 1.5 plus the first retry's half second


# ---- renewal ----------------------------------------------------------------------------


async def test_renewal_between_turns_replays_history(server):
    server.user_transcripts.extend(["First question", "Second question"])
    server.answers.extend([AudioAnswer("First answer."), AudioAnswer("Second answer.")])
    async with supervisor(server, session_max_s=0.5) as link:
        first = (await until(link, Connected))[-1]
        await ask_once(link)
        renewed = (await until(link, Connected, timeout=5))[-1]
        assert renewed.renewed and renewed.replayed == 2
        assert renewed.session_id != first.session_id
        events = await ask_once(link)
    assert events[-1].status == "completed"
    replayed = [
        (item["role"], item["content"][0]["text"]) for item in server.connections[1].conversation
    ]
    assert replayed == [("user", "First question"), ("assistant", "First answer.")]
    assert server.connections[0].close_code is not None


async def test_renewal_never_cuts_an_answer(server):
    server.pace_realtime = True  # the answer takes 1 s to arrive; the limit passes meanwhile
    pcm = tone(44100, 1.0)
    server.answers.append(AudioAnswer("A long answer.", pcm, chunk_ms=100))
    async with supervisor(server, session_max_s=0.3) as link:
        await until(link, Connected)
        events = await ask_once(link)
        assert audio_of(events) == pcm and len(server.connections) == 1
        renewed = (await until(link, Connected))[-1]
    assert renewed.renewed


async def test_server_expiry_between_turns_reconnects_quietly(server):
    server.session_max_s = 0.4
    async with supervisor(server) as link:
        await until(link, Connected)
        await ask_once(link)
        events = await until(link, Connected, timeout=5)
    # Offline between the two sessions (a press then plays "not connected"), but no turn lost.
    downs = [e for e in events if isinstance(e, Disconnected)]
    assert len(downs) == 1 and downs[0].between_turns and not downs[0].turn_lost
    assert events[-1].renewed and events[-1].replayed == 2


# ---- secrets ----------------------------------------------------------------------------


async def test_the_key_never_appears_in_logs_events_or_reprs(server, caplog):
    server.refuse(401, times=1)
    server.drop_mid_answer(after_deltas=1)
    server.junk_before_next_answer(["junk"])
    with caplog.at_level(logging.DEBUG):
        async with supervisor(server, backoff=fast_backoff(cap_s=0.1)) as link:
            seen = await until(link, Connected)
            seen += await ask_once(link)
            seen += await until(link, Connected)
            text = repr(link.settings) + repr(seen) + str(link.last_error)
    assert SECRET not in text
    assert SECRET not in caplog.text
    assert all(SECRET not in str(r.args) for r in caplog.records)


async def test_a_discarded_take_does_not_join_the_next_question(server):
    """A press too short (or a turn failed while listening): its audio is cleared on the
    server, and the next question is committed alone."""
    async with supervisor(server) as link:
        await until(link, Connected)
        link.begin_turn()
        await link.append_audio(b"\x05\x00" * 2400)  # 100 ms, then the take is dropped
        await link.discard_input()
        link.end_turn()
        assert link.answer_follows is False and link._idle()
        await server.wait_for(lambda: server.events_of("input_audio_buffer.clear"))
        await ask_once(link)
    assert server.committed_audio == [QUESTION]
    assert server.events_of("input_audio_buffer.clear")[0]["event_id"] == "evt_discard_input"


async def test_a_server_that_cannot_clear_is_told_once(server, caplog):
    caplog.set_level(logging.INFO, logger="appliance")
    async with supervisor(server) as link:
        await until(link, Connected)
        for _ in range(3):
            link.begin_turn()
            await link.append_audio(QUESTION)
            server._handlers.pop("input_audio_buffer.clear", None)  # now an unknown event
            await link.discard_input()
            link.end_turn()
            await asyncio.sleep(0.1)
    assert len(server.events_of("input_audio_buffer.clear")) == 1  # then no more tries
    assert sum("cannot clear its input buffer" in r.getMessage() for r in caplog.records) == 1
