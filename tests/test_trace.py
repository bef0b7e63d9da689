"""The Realtime trace (``realtime.trace_file``, ``ask --trace``, ``check --trace``) and its replay.

Real seams: real sessions against the local test server (tests/realtime_server.py) and against
the replay server (tests/trace_replay.py), the real commands in subprocesses, real files (an
unwritable path is a real missing directory; a failing disk is /dev/full).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
import stat
import sys
import types
import wave
from datetime import datetime

import aiohttp
import pytest
from box import PacedBox
from conftest import SECRET, link_settings, provider_of, realtime_config_lines
from link_helpers import QUESTION, until
from realtime_profiles import get_profile
from realtime_server import AudioAnswer, tone
from test_ask import question_wav, run_ask
from test_check import run_check as run_check_command
from test_check import write_config
from trace_replay import Frame, ReplayServer, Reply, SessionScript, read_trace, script_from_trace

from appliance.config import ConfigError, load_config
from appliance.protocol import server_events as ev
from appliance.realtime.link_events import Connected
from appliance.realtime.supervisor import SessionSupervisor
from appliance.realtime.trace import (
    TraceFileError,
    TraceWriter,
    audio_bytes,
    audio_marker_bytes,
    endpoint_facts,
    response_headers,
    without_audio,
)


def at(server, replay):
    """The replay server dressed as ``server`` (its profile), for run_ask and link_settings."""
    return types.SimpleNamespace(
        profile=server.profile, url=replay.url, output_rate=server.output_rate
    )


# A Yandex-shaped server, for the replays written by hand below.
YANDEX_SERVER = types.SimpleNamespace(profile=get_profile("yandex-2026"), output_rate=44100)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def lines_of(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def of(lines, direction, type_=None) -> list[dict]:
    return [
        line["event"]
        for line in lines
        if line["dir"] == direction and (type_ is None or line["event"].get("type") == type_)
    ]


def audio_total(events, field) -> int:
    sizes = [audio_marker_bytes(e[field]) for e in events]
    assert None not in sizes, sizes
    return sum(sizes)


# ---- the writer ------------------------------------------------------------------------------


def test_audio_payloads_become_their_byte_counts():
    for n in range(0, 12):
        assert audio_bytes(b64(bytes(n))) == n
    pcm = b64(bytes(9600))
    append = {"type": "input_audio_buffer.append", "audio": pcm}
    assert without_audio(append) == {
        "type": "input_audio_buffer.append",
        "audio": "<audio 9600 bytes>",
    }
    assert append["audio"] == pcm  # the caller's event is not touched
    for kind in ("response.output_audio.delta", "response.audio.delta"):
        assert without_audio({"type": kind, "delta": pcm})["delta"] == "<audio 9600 bytes>"
    # Words stay words: a text or transcript delta is not audio.
    text = {"type": "response.output_audio_transcript.delta", "delta": "Привет"}
    assert without_audio(text) == text
    item = {
        "type": "conversation.item.create",
        "item": {"type": "message", "content": [{"type": "input_audio", "audio": pcm}]},
    }
    assert without_audio(item)["item"]["content"][0]["audio"] == "<audio 9600 bytes>"
    # session.update's "audio" is the audio configuration, not a payload.
    update = {
        "type": "session.update",
        "session": {
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": 24000}},
                "output": {"format": {"type": "audio/pcm", "rate": 44100}, "voice": "marina"},
            }
        },
    }
    assert without_audio(update) == update
    assert audio_marker_bytes("<audio 9600 bytes>") == 9600
    assert audio_marker_bytes("hello") is None


def test_the_endpoint_is_noted_without_secrets_in_its_query():
    facts = endpoint_facts("wss://user:pw@h.example:443/v1/realtime?model=gpt://f/m&key=abc")
    assert facts == {
        "url": "wss://h.example:443/v1/realtime",
        "query": {"model": "gpt://f/m", "key": "***"},
    }


def test_lines_have_times_directions_and_events(tmp_path):
    clock = iter([10.0, 10.5, 11.25, 12.0, 13.0, 14.0]).__next__
    trace = TraceWriter(tmp_path / "t.jsonl", clock=clock)
    trace.sent({"type": "response.create"})
    trace.received('{"type": "response.created"}')
    trace.received("<html>502 Bad Gateway</html>" + "x" * 2000)
    trace.close()
    lines = lines_of(tmp_path / "t.jsonl")
    assert [(line["t"], line["dir"]) for line in lines] == [
        (0.5, "note"),
        (1.25, "sent"),
        (2.0, "recv"),
        (3.0, "recv"),
        (4.0, "note"),
    ]
    assert lines[0]["event"]["type"] == "trace.start" and lines[0]["event"]["format"] == 1
    assert lines[1]["event"] == {"type": "response.create"}
    assert lines[2]["event"] == {"type": "response.created"}
    assert lines[3]["event"] == {"raw": "<html>502 Bad Gateway</html>" + "x" * 972}
    assert lines[-1]["event"]["type"] == "trace.end"
    for line in lines:
        assert datetime.fromisoformat(line["wall"]).tzinfo is not None
    # The conversation's words are private: the file is the owner's only.
    assert stat.S_IMODE(os.stat(tmp_path / "t.jsonl").st_mode) == 0o600


def test_the_key_is_never_written(tmp_path):
    key = 'sk-"quoted"\\key-1234'
    trace = TraceWriter(tmp_path / "t.jsonl", secrets=[SECRET])
    trace.protect(key)
    trace.sent({"type": "session.update", "session": {"instructions": f"my key is {SECRET}"}})
    trace.received(json.dumps({"type": "error", "error": {"message": f"bad key {key}"}}))
    trace.received(f"not json {SECRET} " + "x" * 990 + SECRET)  # the cut falls inside the key
    trace.note("connect", header=f"Authorization: Bearer {SECRET}")
    trace.close()
    text = (tmp_path / "t.jsonl").read_text()
    assert SECRET not in text and SECRET[:-3] not in text
    assert "quoted" not in text
    assert text.count("***") >= 4
    assert "bad key ***" in text


def test_the_size_cap_ends_with_one_note(tmp_path, caplog):
    path = tmp_path / "t.jsonl"
    trace = TraceWriter(path, max_bytes=3000)
    with caplog.at_level(logging.WARNING, "appliance.trace"):
        for i in range(100):
            trace.sent({"type": "input_audio_buffer.append", "audio": b64(bytes(4800)), "i": i})
    assert not trace.enabled
    lines = lines_of(path)
    assert lines[-1]["event"] == {"type": "trace.full", "max_bytes": 3000}
    assert 5 < len(lines) < 40
    assert path.stat().st_size <= 3000 + len(json.dumps(lines[-1])) + 1
    size = path.stat().st_size
    trace.sent({"type": "response.create"})
    trace.close()
    assert path.stat().st_size == size  # nothing after the note
    assert len([r for r in caplog.records if r.name == "appliance.trace"]) == 1


def test_append_keeps_the_earlier_trace_and_counts_it_for_the_cap(tmp_path):
    path = tmp_path / "t.jsonl"
    first = TraceWriter(path, append=True)
    first.sent({"type": "response.create"})
    first.close()
    second = TraceWriter(path, append=True)
    second.close()
    assert [e["type"] for e in of(lines_of(path), "note")] == ["trace.start", "trace.end"] * 2
    full = TraceWriter(path, append=True, max_bytes=path.stat().st_size)
    assert not full.enabled  # already full: not one more line
    full.close()
    assert len(lines_of(path)) == 5


def test_an_unwritable_path_is_one_clean_error(tmp_path):
    with pytest.raises(TraceFileError) as error:
        TraceWriter(tmp_path / "missing" / "t.jsonl")
    assert str(error.value) == (
        f"cannot write the trace {tmp_path / 'missing' / 't.jsonl'}: No such file or directory"
    )


def test_a_failing_disk_turns_tracing_off_with_one_warning(caplog):
    with caplog.at_level(logging.WARNING, "appliance.trace"):
        trace = TraceWriter("/dev/full")  # every write fails with ENOSPC
        trace.sent({"type": "response.create"})
        trace.received('{"type": "response.done"}')
        trace.close()
    assert not trace.enabled
    warnings = [r.getMessage() for r in caplog.records if r.name == "appliance.trace"]
    assert warnings == [
        "cannot write the trace /dev/full (No space left on device); tracing is off"
    ]


# ---- a real session --------------------------------------------------------------------------


async def one_turn(link):
    """A push-to-talk turn: the question, its commit, the answer asked for when it is ready."""
    link.begin_turn()
    try:
        await link.append_audio(QUESTION)
        await link.commit()
        link.ask_when_ready()
        return await until(link, ev.ResponseDone)
    finally:
        link.end_turn()


async def test_a_turn_is_traced_in_order_without_audio_or_key(server, tmp_path):
    answer = tone(server.output_rate, 0.4)
    server.user_transcripts.append("Который час?")
    server.answers.append(AudioAnswer("Полдень.", answer))
    path = tmp_path / "t.jsonl"
    trace = TraceWriter(path)
    async with SessionSupervisor(link_settings(server, trace=trace)) as link:
        await until(link, Connected)
        await one_turn(link)
    trace.close()
    text = path.read_text()
    assert SECRET not in text
    lines = lines_of(path)
    times = [line["t"] for line in lines]
    assert times == sorted(times)
    notes = of(lines, "note")
    assert notes[1]["type"] == "connect"
    assert notes[1]["url"] == server.url  # no query: the model is noted apart
    assert notes[1]["query"]["model"] == server.profile.model_query
    assert notes[2] == {"type": "handshake", "status": 101}
    order = [(line["dir"], line["event"].get("type")) for line in lines if line["dir"] != "note"]
    assert order.index(("recv", "session.created")) < order.index(("sent", "session.update"))
    sent_types = [t for d, t in order if d == "sent"]
    assert sent_types[0] == "session.update"
    assert sent_types[-2:] == ["input_audio_buffer.commit", "response.create"]
    assert set(sent_types[1:-2]) == {"input_audio_buffer.append"}
    done = order.index(("recv", "response.done"))
    transcribed = ("recv", "conversation.item.input_audio_transcription.completed")
    assert set(order[done + 1 :]) <= {transcribed}  # OpenAI may transcribe after the answer
    # The box left the session itself: no close is blamed on the server.
    assert [n for n in notes if n["type"] == "closed" and n["by"] == "server"] == []
    # What the server got is what the trace says was sent (audio by its size).
    appends = of(lines, "sent", "input_audio_buffer.append")
    assert audio_total(appends, "audio") == len(QUESTION) == len(server.committed_audio[0])
    deltas = of(lines, "recv", "response.output_audio.delta")
    assert audio_total(deltas, "delta") == len(answer)
    if provider_of(server).transcript_before_response:
        transcripts = of(lines, "recv", "conversation.item.input_audio_transcription.completed")
        assert [t["transcript"] for t in transcripts] == ["Который час?"]


async def test_a_refused_handshake_is_noted(server, tmp_path):
    server.refuse(401, times=5)
    trace = TraceWriter(tmp_path / "t.jsonl")
    async with SessionSupervisor(link_settings(server, trace=trace)) as link:
        await link.next_event()
    trace.close()
    notes = of(lines_of(tmp_path / "t.jsonl"), "note")
    handshake = notes[2]
    assert handshake["type"] == "handshake" and handshake["status"] == 401
    assert handshake["reason"] == "handshake refused: HTTP 401"
    assert handshake["message"] == "Invalid response status"
    assert "Content-Type" in handshake["headers"]  # the server's headers, for its support


def test_only_harmless_response_headers_are_noted():
    headers = {
        "X-Request-Id": "r-1",
        "Set-Cookie": "s=1",
        "WWW-Authenticate": "Bearer",
        "X-Api-Key-Hint": "sk-...",
        "Server": "x" * 500,
    }
    assert response_headers(headers) == {"X-Request-Id": "r-1", "Server": "x" * 200}
    assert response_headers(None) == {}


async def test_a_key_in_a_server_frame_is_scrubbed(tmp_path):
    """The server should never echo the key; if one does, the trace still does not hold it."""
    created = {"type": "session.created", "session": {"id": "sess_x"}}
    script = SessionScript(
        on_connect=[Frame(event=created)],
        replies=[
            Reply(
                "session.update",
                0,
                0,
                None,
                [
                    Frame(event={"type": "session.updated", "session": {"id": "sess_x"}}),
                    Frame(event={"type": "x.echo", "text": f"key {SECRET} refused"}),
                    Frame(raw=f"<html>{SECRET}</html>"),
                ],
            )
        ],
    )
    path = tmp_path / "t.jsonl"
    trace = TraceWriter(path)  # not told the key: the session protects the key it uses
    async with (
        ReplayServer([script]) as replay,
        SessionSupervisor(link_settings(at(YANDEX_SERVER, replay), trace=trace)) as link,
    ):
        await until(link, Connected)
        await replay_wait(lambda: len(of(lines_of(path), "recv")) >= 4)
    trace.close()
    text = path.read_text()
    assert SECRET not in text
    assert "key *** refused" in text and "<html>***</html>" in text


async def replay_wait(predicate, timeout=5.0):
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.02)


# ---- the commands ----------------------------------------------------------------------------


def read_wav(path):
    with wave.open(str(path), "rb") as wav:
        return wav.getframerate(), wav.readframes(wav.getnframes())


async def test_ask_trace_writes_the_file(server, tmp_path):
    server.answers.append(AudioAnswer("Да.", tone(server.output_rate, 0.3)))
    q, t = question_wav(tmp_path / "q.wav"), tmp_path / "t.jsonl"
    code, out, err = await run_ask(tmp_path, server, q, "--trace", t)
    assert code == 0, err
    assert "assistant: Да." in out
    lines = lines_of(t)
    assert SECRET not in t.read_text()
    assert of(lines, "sent", "response.create") and of(lines, "recv", "response.done")
    assert lines[-1]["event"]["type"] == "trace.end"
    # ask leaves its session with a close frame, and the trace says so.
    assert of(lines, "note", "closed") == [{"type": "closed", "code": 1000, "by": "client"}]


async def test_ask_trace_to_an_unwritable_path_exits_2(server, tmp_path):
    q = question_wav(tmp_path / "q.wav")
    code, _out, err = await run_ask(tmp_path, server, q, "--trace", tmp_path / "no" / "t")
    assert code == 2
    assert err.strip().splitlines() == [
        f"appliance ask: cannot write the trace {tmp_path / 'no' / 't'}: No such file or directory"
    ]
    assert server.connections == []  # nothing was asked


async def test_check_trace_holds_the_servers_answer_to_session_update(server, tmp_path):
    t = tmp_path / "t.jsonl"
    config = tmp_path / "config.yaml"
    config.write_text(
        "realtime:\n" + realtime_config_lines(server) + "  connect_timeout_s: 2\n"
        "gpio:\n  enabled: false\n"
    )
    code, lines, out = await run_check_command(config, "--skip-audio", "--trace", t)
    assert code == 0, out
    assert lines["trace"].startswith("ok    trace")
    assert str(t) in lines["trace"]
    trace = lines_of(t)
    assert SECRET not in t.read_text()
    assert of(trace, "sent", "session.update")
    assert of(trace, "recv", "session.updated")  # check listened for the reply
    assert of(trace, "note", "closed")[-1]["by"] == "client"


async def test_check_trace_to_an_unwritable_path_exits_2(tmp_path):
    config = write_config(tmp_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "appliance", "check", "--config", str(config), "--trace", "/nonexistent/t"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 2
    assert out == b""
    assert err.decode().splitlines() == [
        "appliance check: cannot write the trace /nonexistent/t: No such file or directory"
    ]


# ---- realtime.trace_file -----------------------------------------------------------------------


def test_trace_file_is_relative_to_the_config_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("realtime:\n  folder_id: b1g\n  trace_file: logs/t.jsonl\n")
    assert load_config(path, environ={}).realtime.trace_file == str(tmp_path / "logs/t.jsonl")
    path.write_text("realtime:\n  folder_id: b1g\n  trace_file: /var/lib/appliance/t.jsonl\n")
    assert load_config(path, environ={}).realtime.trace_file == "/var/lib/appliance/t.jsonl"
    path.write_text("realtime:\n  folder_id: b1g\n")
    assert load_config(path, environ={}).realtime.trace_file is None
    path.write_text('realtime:\n  folder_id: b1g\n  trace_file: ""\n')
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert str(error.value) == (
        f"{path}:3: realtime.trace_file: is empty; give a path or remove the line"
    )


def _with_trace_file(box: PacedBox, value: str) -> None:
    text = box.config.read_text()
    box.config.write_text(text.replace("realtime:\n", f"realtime:\n  trace_file: {value}\n", 1))


async def test_run_traces_to_the_configured_file_and_appends(server, tmp_path):
    for run in (1, 2):
        (tmp_path / f"run{run}").mkdir()
        box = PacedBox(tmp_path / f"run{run}", server, SECRET)
        _with_trace_file(box, "../trace.jsonl")  # relative to the config file
        await box.start()
        try:
            first = await box.wait_status(lambda s: s["connected"] and s["state"] == "idle")
            if run == 1:  # a reload that changes a realtime key: a new session, the same trace
                text = box.config.read_text()
                box.config.write_text(text.replace("answer_timeout_s: 5", "answer_timeout_s: 6"))
                box.proc.send_signal(signal.SIGHUP)
                await box.wait_status(
                    lambda s, old=first["session_id"]: s["connected"] and s["session_id"] != old
                )
        finally:
            assert await box.stop() == 0
        assert "Traceback" not in box.log()
    path = tmp_path / "trace.jsonl"
    assert SECRET not in path.read_text()
    lines = lines_of(path)
    notes = [e["type"] for e in of(lines, "note")]
    assert notes.count("trace.start") == 2  # the second run kept the first run's trace
    assert notes.count("trace.end") == 2  # the reload kept the writer: one start, one end
    assert len(of(lines, "sent", "session.update")) == 3
    assert len(of(lines, "recv", "session.created")) == 3
    # The session the reload replaced was left with a close frame, and that is in the trace.
    run1 = notes[: notes.index("trace.end")]
    assert run1.index("closed") > run1.index("connect")
    closes = of(lines, "note", "closed")
    assert {"type": "closed", "code": 1000, "by": "client"} in closes


async def test_run_with_an_unwritable_trace_file_warns_and_still_works(server, tmp_path):
    box = PacedBox(tmp_path, server, SECRET)
    _with_trace_file(box, "/nonexistent/trace.jsonl")
    await box.start()
    try:
        await box.wait_status(lambda s: s["connected"] and s["state"] == "idle")
    finally:
        assert await box.stop() == 0
    warnings = [line for line in box.log().splitlines() if "realtime.trace_file" in line]
    assert len(warnings) == 1, box.log()[-2000:]
    assert warnings[0].endswith(
        "realtime.trace_file: cannot write the trace /nonexistent/trace.jsonl: "
        "No such file or directory; running without a trace"
    )


# ---- replay: a recorded trace as a test server ---------------------------------------------------


def conversation(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(("user:", "assistant:"))]


async def test_a_recorded_turn_replays_to_the_same_answer(server, tmp_path):
    answer = tone(server.output_rate, 0.8, freq=523)
    server.user_transcripts.append("Сколько времени?")
    server.answers.append(AudioAnswer("Сейчас ровно полдень.", answer))
    q = question_wav(tmp_path / "q.wav")
    recorded, replayed = tmp_path / "recorded.jsonl", tmp_path / "replayed.jsonl"
    code, out, err = await run_ask(
        tmp_path, server, q, "-o", tmp_path / "a1.wav", "--trace", recorded
    )
    assert code == 0, err
    async with ReplayServer.from_file(recorded) as replay:
        code, out2, err2 = await run_ask(
            tmp_path, at(server, replay), q, "-o", tmp_path / "a2.wav", "--trace", replayed
        )
        assert code == 0, err2
        assert replay.divergences == [] and replay.unplayed() == []
        assert len(replay.connections) == 1
        assert replay.connections[0].headers["Authorization"].endswith(SECRET)
    assert conversation(out2) == conversation(out)
    assert sorted(conversation(out)) == [  # OpenAI's transcript may come after the answer
        "assistant: Сейчас ровно полдень.",
        "user: Сколько времени?",
    ]
    rate1, audio1 = read_wav(tmp_path / "a1.wav")
    rate2, audio2 = read_wav(tmp_path / "a2.wav")
    assert rate1 == rate2 == server.output_rate
    assert len(audio2) == len(audio1) == len(answer)

    # The replayed session is the recorded one, frame for frame (audio by its size).
    def received(path):
        return [
            {k: v for k, v in e.items() if k != "event_id"} for e in of(read_trace(path), "recv")
        ]

    assert received(replayed) == received(recorded)


async def test_a_recorded_drop_replays_as_a_drop_and_a_retry(server, tmp_path):
    server.drop_mid_answer(after_deltas=3)
    whole = tone(server.output_rate, 0.5, freq=660)
    server.answers.extend(
        [AudioAnswer("Cut short.", tone(server.output_rate, 1.0)), AudioAnswer("Whole.", whole)]
    )
    q = question_wav(tmp_path / "q.wav")
    recorded = tmp_path / "recorded.jsonl"
    code, out, err = await run_ask(
        tmp_path, server, q, "-o", tmp_path / "a1.wav", "--trace", recorded
    )
    assert code == 0, err
    sessions = script_from_trace(read_trace(recorded))
    assert len(sessions) == 2
    assert sessions[0].server_closed and sessions[0].server_close in (None, 1006)
    assert not sessions[1].server_closed
    async with ReplayServer(sessions) as replay:
        code, out2, err2 = await run_ask(tmp_path, at(server, replay), q, "-o", tmp_path / "a2.wav")
        assert code == 0, err2
        assert len(replay.connections) == 2 and replay.divergences == []
    assert "asking again (1 of 2)" in err2
    assert conversation(out2) == conversation(out)
    assert [line for line in conversation(out) if line.startswith("assistant:")][-1] == (
        "assistant: Whole."
    )
    assert len(read_wav(tmp_path / "a2.wav")[1]) == len(whole)


async def test_a_recorded_refusal_replays_as_a_refusal(server, tmp_path):
    server.refuse(401, times=10)
    q = question_wav(tmp_path / "q.wav")
    recorded = tmp_path / "recorded.jsonl"
    code, _out, _err = await run_ask(tmp_path, server, q, "--trace", recorded)
    assert code == 77
    async with ReplayServer.from_file(recorded) as replay:
        code, _out, err = await run_ask(tmp_path, at(server, replay), q)
    assert code == 77
    assert err.strip().splitlines()[-1] == "appliance ask: the API key was refused (HTTP 401)"


def test_audio_replies_come_due_by_the_audio_appended_not_the_chunks():
    """Server VAD replies (speech_started) follow the question's audio, however it is cut."""
    trace = [
        {"t": 0, "dir": "note", "event": {"type": "connect"}},
        {"t": 0, "dir": "recv", "event": {"type": "session.created"}},
        {
            "t": 1,
            "dir": "sent",
            "event": {"type": "input_audio_buffer.append", "audio": "<audio 4800 bytes>"},
        },
        {
            "t": 1.1,
            "dir": "sent",
            "event": {"type": "input_audio_buffer.append", "audio": "<audio 4800 bytes>"},
        },
        {"t": 1.2, "dir": "recv", "event": {"type": "input_audio_buffer.speech_started"}},
        {
            "t": 1.3,
            "dir": "sent",
            "event": {"type": "input_audio_buffer.append", "audio": "<audio 4800 bytes>"},
        },
    ]
    (session,) = script_from_trace(trace)
    assert [f.event for f in session.on_connect] == [{"type": "session.created"}]
    speech = session.replies[1]
    assert (speech.trigger, speech.appended) == ("input_audio_buffer.append", 9600)
    assert [f.event["type"] for f in speech.frames] == ["input_audio_buffer.speech_started"]
    assert speech.frames[0].delay_s == pytest.approx(0.1)
    # A client sending 9600 bytes as 4 x 2400 meets speech_started after the 4th chunk.
    assert not ReplayServer._matches(speech, "input_audio_buffer.append", 2, 7200)
    assert ReplayServer._matches(speech, "input_audio_buffer.append", 3, 9600)
    # A commit releases every audio reply before it.
    assert ReplayServer._matches(speech, "input_audio_buffer.commit", 0, 0)


async def test_a_recorded_reply_names_the_live_clients_event_id(tmp_path):
    """An error about the recorded session.update is about the live one in the replay."""
    trace = [
        {"t": 0, "dir": "note", "event": {"type": "connect"}},
        {"t": 0, "dir": "recv", "event": {"type": "session.created"}},
        {"t": 1, "dir": "sent", "event": {"type": "session.update", "event_id": "evt_then"}},
        {
            "t": 1.5,
            "dir": "recv",
            "event": {"type": "error", "error": {"code": None, "event_id": "evt_then"}},
        },
    ]
    async with (
        ReplayServer(script_from_trace(trace)) as replay,
        aiohttp.ClientSession() as http,
        http.ws_connect(replay.url) as ws,
    ):
        assert (await ws.receive_json())["type"] == "session.created"
        await ws.send_json({"type": "session.update", "event_id": "evt_now"})
        error = await ws.receive_json(timeout=5)
    assert error == {"type": "error", "error": {"code": None, "event_id": "evt_now"}}
    assert replay.unplayed() == [] and replay.divergences == []


async def test_pace_keeps_the_recorded_gaps():
    trace = [
        {"t": 0, "dir": "note", "event": {"type": "connect"}},
        {"t": 0, "dir": "recv", "event": {"type": "session.created"}},
        {"t": 1, "dir": "sent", "event": {"type": "response.create"}},
        {"t": 1.4, "dir": "recv", "event": {"type": "response.created"}},
        {"t": 1.8, "dir": "recv", "event": {"type": "response.done"}},
    ]
    loop = asyncio.get_running_loop()
    for pace, least, most in ((1.0, 0.75, 3.0), (0.0, 0.0, 0.5)):
        async with (
            ReplayServer(script_from_trace(trace), pace=pace) as replay,
            aiohttp.ClientSession() as http,
            http.ws_connect(replay.url) as ws,
        ):
            await ws.receive_json(timeout=5)
            started = loop.time()
            await ws.send_json({"type": "response.create"})
            assert (await ws.receive_json(timeout=5))["type"] == "response.created"
            assert (await ws.receive_json(timeout=5))["type"] == "response.done"
            assert least <= loop.time() - started <= most, pace
