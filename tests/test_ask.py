"""``appliance ask`` end to end: the real command in a subprocess against the local test server."""

from __future__ import annotations

import asyncio
import os
import sys
import wave

import numpy as np
import pytest
from conftest import SECRET, realtime_config_lines
from realtime_server import AudioAnswer, ToolCallAnswer, tone

from appliance.audio.wavfile import write_wav


def question_wav(path, seconds=0.6, rate=16000, channels=2):
    t = np.arange(int(seconds * rate)) / rate
    mono = (np.sin(2 * np.pi * 300 * t) * 8000).astype("<i2")
    write_wav(path, np.repeat(mono[:, None], channels, axis=1).tobytes(), rate, channels)
    return path


def config_file(tmp_path, server, extra=""):
    path = tmp_path / "config.yaml"
    path.write_text(
        "realtime:\n" + realtime_config_lines(server) + ""
        f"  connect_timeout_s: 2\n  answer_timeout_s: 5\n{extra}"
    )
    return path


async def run_ask(tmp_path, server, *args, key=SECRET, extra_config="", path_env=None):
    config = config_file(tmp_path, server, extra_config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.pop("CREDENTIALS_DIRECTORY", None)
    if key:
        env["APPLIANCE_API_KEY"] = key
    if path_env is not None:
        env["PATH"] = path_env
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appliance",
        "ask",
        *map(str, args),
        "--config",
        str(config),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    out, err = out.decode(), err.decode()
    assert "Traceback" not in err
    assert SECRET not in out + err
    return proc.returncode, out, err


def read_answer(path, rate=None):
    with wave.open(str(path), "rb") as wav:
        if rate is not None:
            assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, rate)
        return wav.readframes(wav.getnframes())


async def test_ask_writes_the_answer_exactly_as_received(server, tmp_path):
    pcm = tone(server.output_rate, 0.7, freq=523)
    server.user_transcripts.append("Сколько времени?")
    server.answers.append(AudioAnswer("Сейчас ровно полдень.", pcm))
    q, a = question_wav(tmp_path / "q.wav"), tmp_path / "a.wav"
    code, out, err = await run_ask(tmp_path, server, q, "-o", a)
    assert code == 0, err
    assert read_answer(a, server.output_rate) == pcm
    assert "user: Сколько времени?" in out.splitlines()
    # Each answer's words once, though Yandex sends them as output_text and as the transcript.
    said = [line.strip() for line in out.splitlines() if line.startswith("assistant:")]
    assert said == ["assistant: Сейчас ровно полдень."]
    # The question went up as 24 kHz mono PCM16 in 20-100 ms appends, then one commit.
    appends = server.events_of("input_audio_buffer.append")
    assert all(960 <= len(e["audio"]) * 3 // 4 <= 4800 for e in appends)
    assert len(server.committed_audio) == 1
    assert len(server.committed_audio[0]) == pytest.approx(0.6 * 24000 * 2, abs=200)
    await server.wait_for(lambda: server.connections[0].closed)
    assert server.connections[0].close_code == 1000  # ask left with a close frame


async def test_dropped_link_mid_answer_asks_again_and_keeps_one_whole_answer(server, tmp_path):
    server.drop_mid_answer(after_deltas=3)
    second = tone(server.output_rate, 0.5, freq=660)
    server.answers.extend(
        [AudioAnswer("Cut short.", tone(server.output_rate, 1.0)), AudioAnswer("Whole.", second)]
    )
    q, a = question_wav(tmp_path / "q.wav"), tmp_path / "a.wav"
    code, _out, err = await run_ask(tmp_path, server, q, "-o", a)
    assert code == 0, err
    assert read_answer(a) == second
    assert len(server.connections) == 2
    assert "asking again (1 of 2)" in err


async def test_gives_up_after_two_retries_with_exit_1(server, tmp_path):
    server.drop_mid_answer(after_deltas=1)
    server.refuse_for(60, status=503)  # every reconnect fails too
    q, a = question_wav(tmp_path / "q.wav"), tmp_path / "a.wav"
    code, _out, err = await run_ask(tmp_path, server, q, "-o", a)
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        "appliance ask: giving up after 3 attempts: cannot reach the Realtime API: "
        "handshake refused: HTTP 503"
    )
    assert not a.exists()


async def test_refused_key_exits_77(server, tmp_path):
    server.refuse(401, times=10)
    q = question_wav(tmp_path / "q.wav")
    code, _out, err = await run_ask(tmp_path, server, q, "-o", tmp_path / "a.wav")
    assert code == 77
    assert err.strip().splitlines()[-1] == "appliance ask: the API key was refused (HTTP 401)"


async def test_a_tool_call_is_answered_and_the_answer_follows(server, tmp_path):
    """The model calls a tool ask does not have: it gets {"error": ...} as the output, one
    response.create follows, and the file holds the real answer (Yandex's arguments.done
    has no name: the call is taken from output_item.done)."""
    pcm = tone(server.output_rate, 0.4, freq=700)
    server.answers.extend(
        [ToolCallAnswer([("get_weather", '{"city": "Москва"}')]), AudioAnswer("Не знаю.", pcm)]
    )
    q, a = question_wav(tmp_path / "q.wav"), tmp_path / "a.wav"
    code, out, err = await run_ask(tmp_path, server, q, "-o", a)
    assert code == 0, err
    assert read_answer(a, server.output_rate) == pcm
    outputs = [
        e["item"]
        for e in server.events_of("conversation.item.create")
        if e["item"]["type"] == "function_call_output"
    ]
    assert len(outputs) == 1 and "error" in outputs[0]["output"]
    assert len(server.events_of("response.create")) == 2  # the question's, then the tool's
    assert [line for line in out.splitlines() if line.startswith("assistant:")] == [
        "assistant: Не знаю."
    ]


async def test_a_refused_session_update_exits_78(server, tmp_path):
    server.refuse_session_update(times=10, message="Unknown voice")
    q = question_wav(tmp_path / "q.wav")
    code, _out, err = await run_ask(tmp_path, server, q, "-o", tmp_path / "a.wav")
    assert code == 78
    assert "Unknown voice" in err.strip().splitlines()[-1]


async def test_text_only_answer_prints_and_writes_nothing(server, tmp_path):
    server.answers.append(AudioAnswer("Only words.", text=True))
    q, a = question_wav(tmp_path / "q.wav"), tmp_path / "a.wav"
    code, out, err = await run_ask(tmp_path, server, q, "-o", a)
    assert code == 0, err
    assert "assistant: Only words." in out
    assert "(the answer had no audio; nothing written)" in out
    assert not a.exists()


async def test_bad_inputs_have_one_line_answers(server, tmp_path):
    q = question_wav(tmp_path / "q.wav")
    code, _, err = await run_ask(tmp_path, server, tmp_path / "missing.wav")
    assert code == 2 and "cannot read" in err and len(err.strip().splitlines()) == 1
    short = question_wav(tmp_path / "short.wav", seconds=0.05)
    code, _, err = await run_ask(tmp_path, server, short)
    assert (code, err.strip()) == (
        2,
        f"appliance ask: {short}: the question is shorter than 100 ms of audio (50 ms)",
    )
    code, _, err = await run_ask(tmp_path, server, q, extra_config="  vioce: marina\n")
    assert code == 78
    assert err.strip().endswith("realtime.vioce: unknown key; did you mean realtime.voice?")
    code, _, err = await run_ask(tmp_path, server, q, key="")
    assert code == 78 and err.strip().startswith("appliance: ") and "no API key" in err
    assert len(server.connections) == 0  # none of these reached the network


async def test_usage_error_exits_2(tmp_path):
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appliance",
        "ask",
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2 and b"usage: appliance ask" in err
