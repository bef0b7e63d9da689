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
from appliance.realtime.link_events import AuthRejected, Connected, Disconnected, SetupRejected
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
    pcm = tone(server.output_rate, 0.3)
    server.answers.append(AudioAnswer("Сейчас полдень.", pcm))
    server.user_transcripts.append("Который час?")
    async with supervisor(server) as link:
        connected = (await until(link, Connected))[-1]
        assert connected == Connected(connected.session_id, False, 0, server.output_rate)
        events = await ask_once(link)
        seen = set(map(type, events))
        late = [] if ev.InputTranscript in seen else await until(link, ev.InputTranscript)
    assert ev.InputTranscript in {type(e) for e in events + late}  # asynchronous: may be late
    assert audio_of(events) == pcm
    assert events[-1] == ev.ResponseDone(events[-1].response_id, "completed")
    spoken = "".join(
        e.delta for e in events if isinstance(e, ev.TranscriptDelta) and e.channel == "audio"
    )
    assert spoken.strip() == "Сейчас полдень."
    # Yandex also sends the words as output_text: the same answer, not a second one.
    channels = {e.channel for e in events if isinstance(e, ev.TranscriptDelta)}
    assert channels == ({"audio", "text"} if server.profile.text_on_both_channels else {"audio"})
    # The answer was asked for only once the server had the question (and, on Yandex, its
    # transcript): never an empty question.
    first = server.connections[0]
    order = [e.get("type") for e in first.sent if isinstance(e, dict)]
    asked_after = order.index("response.created")
    assert order.index("input_audio_buffer.committed") < asked_after
    if link.settings.provider.transcript_before_response:
        done = "conversation.item.input_audio_transcription.completed"
        assert order.index(done) < asked_after
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
    # One user recap item: every server takes it (Yandex refuses assistant text items).
    replayed = [
        (item["role"], item["content"][0]["type"], item["content"][0]["text"])
        for item in server.connections[1].conversation
    ]
    assert len(replayed) == 1
    role, part, text = replayed[0]
    assert (role, part) == ("user", "input_text")
    assert text.startswith("Earlier in this conversation")
    assert text.index("User: First question") < text.index("Assistant: First answer.")
    assert server.connections[0].close_code == 1000  # left with a close frame


async def test_history_as_items_where_the_server_takes_them(server):
    server.user_transcripts.extend(["First question", "Second question"])
    server.answers.extend([AudioAnswer("First answer."), AudioAnswer("Second answer.")])
    async with supervisor(server, session_max_s=0.5, history_replay="items") as link:
        await until(link, Connected)
        await ask_once(link)
        assert (await until(link, Connected, timeout=5))[-1].renewed
    items = server.connections[1].conversation
    if server.profile.assistant_items:
        assert [(i["role"], i["content"][0]["text"]) for i in items] == [
            ("user", "First question"),
            ("assistant", "First answer."),
        ]
    else:  # Yandex: a recap instead of the assistant item it would refuse
        assert [i["role"] for i in items] == ["user"] and "First answer." in str(items)


async def test_history_replay_off(server):
    server.answers.append(AudioAnswer("First answer."))
    async with supervisor(server, session_max_s=0.5, history_replay="off") as link:
        await until(link, Connected)
        await ask_once(link)
        renewed = (await until(link, Connected, timeout=5))[-1]
    assert renewed.replayed == 0 and server.connections[1].conversation == []


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
    """A take that reached the server and is then dropped (a turn failed while listening):
    OpenAI clears its buffer; Yandex cannot, so the session is renewed (with its history)
    before the next question, which is committed alone either way."""
    async with supervisor(server) as link:
        await until(link, Connected)
        link.begin_turn()
        await link.append_audio(b"\x05\x00" * 2400)  # 100 ms, then the take is dropped
        await link.discard_input()
        link.end_turn()
        assert link.answer_follows is False and link._idle()
        if server.profile.clear_supported:
            await server.wait_for(lambda: server.events_of("input_audio_buffer.clear"))
        else:
            renewed = (await until(link, Connected))[-1]
            assert renewed.renewed and len(server.connections) == 2
        await ask_once(link)
    assert server.committed_audio == [QUESTION]
    if server.profile.clear_supported:
        assert server.events_of("input_audio_buffer.clear")[0]["event_id"] == "evt_discard_input"
    else:  # never asked: Yandex documents clear as unsupported
        assert server.events_of("input_audio_buffer.clear") == []


async def test_a_question_during_the_renewal_is_held_and_sent_whole(server):
    """The next press comes before the renewal that cleans the buffer has finished: its
    audio is held in the box and sent to the fresh session, and nothing is lost."""
    async with supervisor(server) as link:
        await until(link, Connected)
        link.begin_turn()
        await link.append_audio(b"\x05\x00" * 2400)
        await link.discard_input()
        link.end_turn()
        events = await ask_once(link)  # at once: the renewal (if any) is still under way
    assert isinstance(events[-1], ev.ResponseDone) and events[-1].status == "completed"
    assert server.committed_audio == [QUESTION]


async def test_a_server_that_refuses_clear_gets_a_renewal_instead(server, caplog):
    """A server that says it supports clear and then refuses it: said once, no more tries,
    and the session is renewed so the take cannot join the next question."""
    if not server.profile.clear_supported:
        pytest.skip("this profile's client never sends clear (Yandex: unsupported)")
    caplog.set_level(logging.INFO, logger="appliance")
    async with supervisor(server) as link:
        await until(link, Connected)
        for _ in range(3):
            link.begin_turn()
            await link.append_audio(QUESTION)
            server._handlers.pop("input_audio_buffer.clear", None)  # now an unknown event
            await link.discard_input()
            link.end_turn()
            await until(link, Connected)
        await ask_once(link)
    assert len(server.events_of("input_audio_buffer.clear")) == 1  # then no more tries
    assert sum("cannot clear its input buffer" in r.getMessage() for r in caplog.records) == 1
    assert server.committed_audio == [QUESTION]


# ---- the session must be known to have taken ----------------------------------------------


async def test_a_refused_session_update_is_an_error_retried_slowly(server, caplog):
    """An error naming our session.update: not connected, the error state (SetupRejected), the
    server's message logged once, retries at the backoff's cap, never a tight loop."""
    server.refuse_session_update(times=3, message="Voice 'nobody' is not available")
    caplog.set_level(logging.INFO, logger="appliance")
    async with supervisor(server, backoff=fast_backoff(cap_s=0.3)) as link:
        seen = await until(link, Connected, timeout=5)
    refusals = [e for e in seen if isinstance(e, SetupRejected)]
    assert len(refusals) == 3 and not any(isinstance(e, Disconnected) for e in seen)
    assert all(r.retry_in_s == pytest.approx(0.3) for r in refusals)
    assert "Voice 'nobody' is not available" in refusals[0].reason
    assert "our session.update" in refusals[0].reason  # the error named its event_id
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(server.handshakes)]
    assert len(gaps) == 3 and min(gaps) >= 0.25  # at the cap every time
    logged = [r for r in caplog.records if "refused the session settings" in r.getMessage()]
    assert len(logged) == 1  # said once, not once per retry


async def test_a_close_before_session_updated_is_a_refusal(server):
    server.refuse_session_update(times=1, code=None, message="bad session", close_code=1008)
    async with supervisor(server, backoff=fast_backoff(cap_s=0.2)) as link:
        seen = await until(link, Connected, timeout=5)
    assert any(isinstance(e, SetupRejected) for e in seen)


async def test_connected_only_after_session_updated(server):
    async with supervisor(server) as link:
        await until(link, Connected)
    order = [e.get("type") for e in server.connections[0].sent if isinstance(e, dict)]
    assert order[:2] == ["session.created", "session.updated"]
    update = server.events_of("session.update")[0]
    assert update["event_id"] == "evt_session_setup"


async def test_a_server_that_keeps_its_vad_answers_once(server, caplog):
    """Push-to-talk asked for turn_detection null; the server says server_vad and answers by
    itself: a warning once, and no second response.create on top of the server's own."""
    server.keeps_server_vad = True
    speech = tone(24000, 0.8, amplitude=0.5) + b"\x00\x00" * 24000  # speech, then 1 s quiet
    caplog.set_level(logging.INFO, logger="appliance")
    async with supervisor(server) as link:
        await until(link, Connected)
        events = await ask_once(link, question=speech)
        await asyncio.sleep(2 * link.settings.transcript_wait_ms / 1000)
    assert isinstance(events[-1], ev.ResponseDone) and events[-1].status == "completed"
    assert server.events_of("response.create") == []
    # No second answer asked for; at most our commit found the server had committed first
    # (a race the box shrugs off: that error is not passed on as a failed turn).
    codes = [e["error"]["code"] for e in server.sent_of("error")]
    assert codes in ([], ["input_audio_buffer_commit_empty"])
    assert not any(isinstance(e, ev.ServerError) for e in events)
    assert sum("runs its own turn detection" in r.getMessage() for r in caplog.records) == 1


async def test_response_create_waits_for_a_late_transcript(server):
    """Yandex: the transcript comes 200 ms after the commit; response.create follows it (an
    early one would be answered as an empty question). OpenAI: only the commit is awaited."""
    server.transcript_delay_s = 0.2
    async with supervisor(server) as link:
        await until(link, Connected)
        events = await ask_once(link)
    assert server.early_responses == []
    spoken = [e.delta for e in events if isinstance(e, ev.TranscriptDelta) and e.channel == "audio"]
    assert "".join(spoken).strip() == "Hello from the test server."
    order = [e.get("type") for e in server.connections[0].sent if isinstance(e, dict)]
    created = order.index("response.created")
    transcribed = "conversation.item.input_audio_transcription.completed" in order[:created]
    assert transcribed == link.settings.provider.transcript_before_response


async def test_the_transcript_wait_is_bounded(server):
    server.transcript_delay_s = 3.0  # later than the wait: the box asks anyway
    async with supervisor(server, transcript_wait_ms=300) as link:
        await until(link, Connected)
        start = asyncio.get_running_loop().time()
        events = await ask_once(link)
        took = asyncio.get_running_loop().time() - start
    assert isinstance(events[-1], ev.ResponseDone)
    assert took < 2.5


@pytest.mark.parametrize(("heartbeat_s", "pinged"), [(0.2, True), (0, False)])
async def test_heartbeat_zero_sends_no_pings(server, heartbeat_s, pinged):
    async with supervisor(server, heartbeat_s=heartbeat_s) as link:
        await until(link, Connected)
        await asyncio.sleep(0.7)
        assert link.connected
    assert (server.pings > 0) == pinged


async def test_leaving_sends_a_close_frame(server):
    async with supervisor(server) as link:
        await until(link, Connected)
        await ask_once(link)
    await server.wait_for(lambda: server.connections[0].closed)
    assert server.connections[0].close_code == 1000


async def test_a_server_that_echoes_the_key_never_gets_it_into_a_log(server, caplog):
    """A refusal whose message quotes the key: the reason, the log and last_error say *** ."""
    server.refuse_session_update(times=1, message=f"the key {SECRET} may not use this voice")
    caplog.set_level(logging.DEBUG)
    async with supervisor(server, backoff=fast_backoff(cap_s=0.2)) as link:
        seen = await until(link, Connected, timeout=5)
        await server.send_error_now("invalid_value", f"echo {SECRET}")
        await asyncio.sleep(0.2)
    (refusal,) = [e for e in seen if isinstance(e, SetupRejected)]
    assert "the key *** may not use this voice" in refusal.reason
    assert SECRET not in caplog.text and SECRET not in repr(seen)
