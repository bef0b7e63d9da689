"""``appliance run`` end to end: a subprocess with paced virtual audio, the test Realtime server
and the control socket. What the owner hears is what the test reads from the speaker pipe."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from box import SPEAKER_RATE, PacedBox
from conftest import SECRET
from realtime_server import AudioAnswer


def speech(seconds: float, freq: float = 300.0) -> np.ndarray:
    t = np.arange(int(seconds * 24000)) / 24000
    return (np.sin(2 * np.pi * freq * t) * 6000).astype(np.int16)


def answer_signal(seconds: float, rate: int = SPEAKER_RATE) -> bytes:
    """A chirp: every 20 ms of it is different, so its position in what was heard is exact."""
    t = np.arange(int(seconds * rate)) / rate
    f = 300 + 400 * t / max(seconds, 0.1)
    return (np.sin(2 * np.pi * np.cumsum(f) / rate) * 9000).astype("<i2").tobytes()


def find(haystack: np.ndarray, needle: np.ndarray) -> int:
    """Index of ``needle`` (exact samples) in ``haystack``, or -1."""
    if len(needle) < 64:
        return -1
    # Anchor on a loud sample: silence around the answer would match a zero everywhere.
    k = int(np.argmax(np.abs(needle[:4410].astype(int))))
    probe = needle[k : k + 64]
    candidates = np.flatnonzero(haystack[k : len(haystack) - len(probe) + 1] == probe[0])
    for s in candidates:
        if np.array_equal(haystack[k + s : k + s + len(probe)], probe):
            return int(s)
    return -1


@pytest.fixture
async def start_box(server, tmp_path):
    """Starts a box (once) against ``server``; checks on the way out that it stopped cleanly."""
    boxes = []

    async def start(extra_config: str = "") -> PacedBox:
        b = PacedBox(tmp_path, server, SECRET, extra_config)
        boxes.append(b)
        await b.start()
        await b.wait_status(lambda s: s["connected"] and s["state"] == "idle", timeout=15)
        return b

    yield start
    open_then = [c for c in server.connections if not c.closed]
    for b in boxes:
        code = await b.stop()
        assert SECRET not in b.log()
        assert "Traceback" not in b.log(), b.log()[-3000:]
        assert code == 0, b.log()[-3000:]
    for conn in open_then:
        # The box left its live session with a close frame, not a dropped connection.
        await server.wait_for(lambda c=conn: c.closed, timeout=5)
        assert conn.close_code == 1000


@pytest.fixture
async def box(start_box):
    return await start_box()


async def test_a_full_turn_is_heard_at_the_speaker(box, server):
    pcm = answer_signal(0.8, server.output_rate)
    server.user_transcripts.append("Который час?")
    server.answers.append(AudioAnswer("Полдень.", pcm))
    box.say(speech(1.0))
    reply = await box.command("talk", seconds=1.0)
    assert reply["ok"], reply
    turn = reply["turn"]
    assert turn["result"] == "answered", (turn, box.log()[-3000:])
    assert turn["user"] == "Который час?" and turn["assistant"].strip() == "Полдень."
    assert turn["audio_in_ms"] >= 900
    # The whole answer reached the speaker, sample for sample (same rate, volume 1.0), but for
    # the last 5 ms, which fade out so that the end does not click.
    expected = np.frombuffer(pcm, dtype="<i2")
    fade = int(0.005 * box.speaker_rate)
    await box.wait_status(lambda s: s["state"] == "idle")
    heard = await box.wait_heard(
        lambda h: find(h, expected) >= 0 and len(h) >= find(h, expected) + len(expected)
    )
    at = find(heard, expected)
    assert np.array_equal(heard[at : at + len(expected) - fade], expected[:-fade])
    tail = heard[at + len(expected) - fade : at + len(expected)].astype(int)
    assert np.all(np.abs(tail) <= np.abs(expected[-fade:].astype(int)) + 1)
    assert abs(int(tail[-1])) < 200  # it ends near zero: no pop
    # What the mic heard went up: about one second of 24 kHz audio in one commit.
    assert len(server.committed_audio) == 1
    assert abs(len(server.committed_audio[0]) / 48 - 1000) < 150
    status = await box.status()
    assert status["turns"] == 1 and status["answered"] == 1
    last = status["last_turn"]
    assert last["latency_ms"] is not None
    # the box's own share (the answer's first audio here) comes before the first sound
    assert last["arrived_ms"] is not None and 0 <= last["arrived_ms"] <= last["latency_ms"]


async def test_barge_in_silences_and_truncates_at_what_was_heard(box, server):
    long_answer = answer_signal(4.0, server.output_rate)
    expected = np.frombuffer(long_answer, dtype="<i2")
    server.answers.extend([AudioAnswer("A long story.", long_answer), AudioAnswer("Short.")])
    box.say(speech(0.6))
    await box.command("press")
    await asyncio.sleep(0.6)
    await box.command("release")
    # Listen until about a second of the answer has been heard, then press.
    heard = await box.wait_heard(
        lambda h: (at := find(h, expected)) >= 0 and len(h) - at >= box.speaker_rate, timeout=5
    )
    at = find(heard, expected)
    await box.command("press")
    truncation = await server.wait_for(lambda: server.truncations, timeout=3)
    audio_end_ms = truncation[0]["audio_end_ms"]
    # What the owner heard of the answer: it plays exactly until the flush, then fades out
    # (at most 5 ms) to silence. Everything handed to the device before the flush is heard.
    await asyncio.sleep(0.3)
    heard = box.heard()
    answer_heard = heard[at : at + len(expected)]
    cut = int(np.flatnonzero(answer_heard != expected[: len(answer_heard)])[0])
    heard_ms = cut * 1000 / box.speaker_rate
    print(f"barge-in: heard {heard_ms:.0f} ms of the answer, truncate at {audio_end_ms} ms")
    assert abs(audio_end_ms - heard_ms) <= 60
    # And the answer does not go on: 50 ms past the cut, none of it is ever heard again.
    later = expected[cut + 2205 : cut + 2205 + 4410]
    assert find(heard[at + cut :], later) < 0
    assert len(server.events_of("response.cancel")) <= 1
    await asyncio.sleep(0.4)
    await box.command("release")
    status = await box.wait_status(lambda s: s["turns"] == 2 and s["state"] == "idle", timeout=10)
    assert status["results"] == {"cancelled": 1, "answered": 1}


def loud(samples: np.ndarray) -> bool:
    return len(samples) > 0 and int(np.max(np.abs(samples.astype(int)))) > 1000


async def test_a_press_while_offline_records_nothing_and_says_so(box, server):
    server.refuse_for(60, status=503)
    await server.close_all(1011)
    await box.wait_status(lambda s: s["state"] == "offline", timeout=10)
    appended = len(server.events_of("input_audio_buffer.append"))
    before = len(box.heard())
    box.say(speech(0.5))
    await box.command("press")
    status = await box.status()
    assert status["state"] == "offline" and not status["connected"]
    await asyncio.sleep(0.6)
    await box.command("release")
    heard = await box.wait_heard(lambda h: loud(h[before:]))
    assert loud(heard[before:]), "the not-connected sound was not played"
    assert len(server.events_of("input_audio_buffer.append")) == appended
    assert (await box.status())["turns"] == 0


async def test_a_dropped_link_fails_the_turn_audibly_then_the_next_is_answered(box, server):
    server.drop_mid_answer(after_deltas=2)
    server.answers.extend(
        [AudioAnswer("Cut.", answer_signal(2.0, server.output_rate)), AudioAnswer("Whole.")]
    )
    box.say(speech(0.5))
    first = await box.command("talk", seconds=0.5)
    assert (first["ok"], first["code"], first["turn"]["result"]) == (False, "turn_failed", "failed")
    assert first["error"].startswith("the turn failed: ")
    await box.wait_status(lambda s: s["connected"] and s["state"] == "idle", timeout=10)
    box.say(speech(0.5))
    second = await box.command("talk", seconds=0.5)
    assert second["turn"]["result"] == "answered"
    assert len(server.connections) == 2


async def test_session_renewal_between_turns_keeps_the_conversation(start_box, server):
    server.session_max_s = 3.0  # the server ends each session after 3 s, as Yandex's does
    box = await start_box()
    server.user_transcripts.extend(["Меня зовут Аня.", "Как меня зовут?"])
    server.answers.extend([AudioAnswer("Приятно познакомиться, Аня."), AudioAnswer("Аня.")])
    box.say(speech(0.5))
    first = await box.command("talk", seconds=0.5)
    assert first["turn"]["result"] == "answered"
    await server.wait_for(lambda: len(server.connections) >= 2, timeout=10)
    await box.wait_status(lambda s: s["connected"] and s["state"] == "idle", timeout=10)
    box.say(speech(0.5))
    second = await box.command("talk", seconds=0.5)
    assert second["turn"]["result"] == "answered"
    replayed = [
        (item["role"], item["content"][0]["text"])
        for item in server.connections[1].conversation
        if item.get("type") == "message"
        and item.get("content", [{}])[0].get("type") != "input_audio"
    ]
    # The conversation so far, replayed as one user recap item (every server takes it).
    assert len(replayed) >= 1 and replayed[0][0] == "user"
    recap = replayed[0][1]
    assert recap.startswith("Earlier in this conversation")
    assert recap.index("User: Меня зовут Аня.") < recap.index(
        "Assistant: Приятно познакомиться, Аня."
    )


async def test_a_refused_session_update_is_the_error_state_not_a_loop(server, tmp_path):
    """The service refuses the box's settings (an error naming its session.update): not
    connected, the error state with the server's reason, logged once, and no tight loop of
    reconnects (the next try is 30 s away)."""
    server.refuse_session_update(times=1000, message="Unsupported voice for this model")
    box = PacedBox(tmp_path, server, SECRET)
    await box.start()
    try:
        status = await box.wait_status(lambda s: s["state"] == "error", timeout=15)
        assert not status["connected"]
        assert "Unsupported voice for this model" in status["last_error"]
        await asyncio.sleep(2.0)
        assert len(server.connections) == 1  # retried at the cap, not in a loop
        reply = await box.command("press")
        await box.command("release")
        assert (await box.status())["state"] == "error"
        assert reply is not None
        assert box.log().count("Unsupported voice for this model") == 1
    finally:
        assert await box.stop() == 0
    assert SECRET not in box.log() and "Traceback" not in box.log()
