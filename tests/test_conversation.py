"""Hands-free conversation and the push-to-talk follow-up window, against the test server's
server VAD: the daemon end to end (tests/box.py), and a voice barge-in through a TurnShell on
the real link (an echo canceller is assumed: the box has none yet, so the daemon is deaf while
it speaks)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from box import PacedBox
from conftest import SECRET, fast_backoff, link_settings
from link_helpers import FakePanel, FakeTranscripts
from realtime_server import AudioAnswer, tone
from test_daemon_e2e import speech

from appliance.audio.echo import EchoCanceller
from appliance.core import state_machine as sm
from appliance.protocol.client_events import ServerVad
from appliance.realtime.supervisor import SessionSupervisor
from appliance.turns import TurnShell


def turn_detection(event: dict) -> Any:
    return event["session"]["audio"]["input"]["turn_detection"]


async def start(server, tmp_path, extra: str, state: str, echo_cancel="auto") -> PacedBox:
    box = PacedBox(tmp_path, server, SECRET, extra, echo_cancel=echo_cancel)
    await box.start()
    await box.wait_status(lambda s: s["connected"] and s["state"] == state, timeout=15)
    return box


async def stop(box: PacedBox) -> None:
    code = await box.stop()
    assert "Traceback" not in box.log(), box.log()[-3000:]
    assert code == 0, box.log()[-3000:]


HANDS_FREE = "conversation:\n  mode: hands_free\n  long_press_s: 0.5\n"


async def test_hands_free_without_echo_cancellation_is_deaf_while_speaking(server, tmp_path):
    box = await start(server, tmp_path, HANDS_FREE, "conversing", echo_cancel="off")
    try:
        assert (await box.status())["audio"]["echo"] is None
        assert "deaf while the box speaks" in box.log()
    finally:
        await stop(box)


async def test_hands_free_turns_mute_and_long_press(server, tmp_path):
    server.user_transcripts.extend(["Привет.", "Как дела?"])
    server.answers.extend([AudioAnswer("Здравствуйте."), AudioAnswer("Хорошо.")])
    box = await start(server, tmp_path, HANDS_FREE, "conversing")
    try:
        setup = server.events_of("session.update")[0]
        assert turn_detection(setup)["type"] == "server_vad"
        assert turn_detection(setup)["create_response"] is True
        assert turn_detection(setup)["interrupt_response"] is True
        # Hands-free with echo_cancel auto: the canceller (libspeexdsp) is on, so the mic
        # keeps listening while the box speaks.
        deaf = "deaf while the box speaks" in box.log()
        assert deaf == (not EchoCanceller.available())
        # Two questions, no press: the server's VAD finds them, commits and answers.
        for n, question in ((1, 0.8), (2, 0.6)):
            box.say(speech(question))
            status = await box.wait_status(
                lambda s, n=n: s["answered"] == n and s["state"] == "conversing", timeout=10
            )
        assert status["turns"] == 2 and status["last_turn"]["user"] == "Как дела?"
        echo = status["audio"]["echo"]  # the canceller's alignment, for `appliance status`
        assert set(echo) == {
            "delay_ms",
            "shift_ms",
            "realigns",
            "resyncs",
            "by_stamps",
            "speaker_silence_ms",
        }
        assert echo["realigns"] >= 0 and echo["speaker_silence_ms"] >= 0
        assert status["last_turn"]["assistant"].strip() == "Хорошо."
        assert len(server.sent_of("input_audio_buffer.speech_started")) == 2
        assert server.events_of("input_audio_buffer.commit") == []  # the server commits
        assert server.events_of("response.create") == []  # and answers by itself
        # A short press mutes: nothing more goes up; another unmutes.
        await box.command("press")
        await box.command("release")
        await box.wait_status(lambda s: s["state"] == "muted")
        appended = len(server.events_of("input_audio_buffer.append"))
        await asyncio.sleep(0.5)
        assert len(server.events_of("input_audio_buffer.append")) <= appended + 1
        await box.command("press")
        await box.command("release")
        await box.wait_status(lambda s: s["state"] == "conversing")
        await server.wait_for(
            lambda: len(server.events_of("input_audio_buffer.append")) > appended + 5
        )
        # A long press ends the conversation (at long_press_s, before the release).
        await box.command("press")
        await box.wait_status(lambda s: s["state"] == "idle", timeout=3)
        await box.command("release")
        await asyncio.sleep(0.2)
        appended = len(server.events_of("input_audio_buffer.append"))
        await asyncio.sleep(0.5)
        assert len(server.events_of("input_audio_buffer.append")) <= appended + 1
        assert (await box.status())["state"] == "idle"
        # A press starts a new one.
        await box.command("press")
        await box.command("release")
        await box.wait_status(lambda s: s["state"] == "conversing")
    finally:
        await stop(box)


async def test_the_follow_up_window_opens_and_closes(server, tmp_path):
    server.user_transcripts.extend(["Какая погода?", "А завтра?"])
    server.answers.extend([AudioAnswer("Солнечно."), AudioAnswer("Дождь.")])
    box = await start(server, tmp_path, "conversation:\n  follow_up_s: 1.5\n", "idle")
    try:
        assert turn_detection(server.events_of("session.update")[0]) is None
        # The first question is spoken while the button is held, all of it: a tail of it
        # after the release would fall into the follow-up window as a question of its own.
        await box.command("press")
        box.say(speech(0.6))
        await box.wait_said()
        await asyncio.sleep(0.1)
        await box.command("release")
        first = await box.wait_status(lambda s: s["answered"] == 1, timeout=10)
        assert first["last_turn"]["result"] == "answered"
        # The answer has played: the session listens hands-free for follow_up_s.
        await box.wait_status(lambda s: s["state"] == "follow_up", timeout=3)
        update = server.events_of("session.update")[-1]
        assert turn_detection(update)["type"] == "server_vad"
        # A follow-up question with no press is answered.
        box.say(speech(0.7))
        status = await box.wait_status(lambda s: s["answered"] == 2, timeout=10)
        assert status["last_turn"]["user"] == "А завтра?"
        assert status["last_turn"]["assistant"].strip() == "Дождь."
        assert len(server.events_of("input_audio_buffer.commit")) == 1  # the first turn's only
        assert len(server.events_of("response.create")) == 1
        # Then silence: the window closes, back to push-to-talk and idle.
        await box.wait_status(lambda s: s["state"] == "follow_up", timeout=5)
        closed_at = time.monotonic()
        await box.wait_status(lambda s: s["state"] == "idle", timeout=5)
        assert time.monotonic() - closed_at >= 1.0
        assert turn_detection(server.events_of("session.update")[-1]) is None
        appended = len(server.events_of("input_audio_buffer.append"))
        await asyncio.sleep(0.4)
        assert len(server.events_of("input_audio_buffer.append")) <= appended + 1
        # And a press is push-to-talk again.
        box.say(speech(0.5))
        third = await box.command("talk", seconds=0.5)
        assert third["turn"]["result"] == "answered"
        assert len(server.events_of("input_audio_buffer.commit")) == 2
    finally:
        await stop(box)


# ---- voice barge-in: a TurnShell on the real link, with fakes for speaker and LED ---------


class Speaker:
    """Plays nothing; counts what it was given, and reports 300 ms heard of each cut item."""

    def __init__(self) -> None:
        self.played: dict[str, int] = {}
        self.flushed: list[dict[str, int]] = []
        self.after_flush: list[str] = []
        self.last_audio = 0.0

    def play_earcon(self, name: str) -> None:
        pass

    def play_answer(self, item_id: str, pcm: bytes) -> None:
        if any(item_id in cut for cut in self.flushed):
            self.after_flush.append(item_id)
        self.played[item_id] = self.played.get(item_id, 0) + len(pcm)
        self.last_audio = time.monotonic()

    def end_answer(self, item_id: str) -> None:
        pass

    def flush(self) -> dict[str, int]:
        cut = {item: 300 for item in self.played if not any(item in c for c in self.flushed)}
        self.flushed.append(cut)
        return cut

    async def wait_drained(self, timeout: float | None = None) -> bool:
        await asyncio.sleep(0.05)
        return time.monotonic() - self.last_audio > 0.3

    def first_sound_at(self, item_id: str) -> float | None:
        return None


def pcm(samples: np.ndarray) -> list[bytes]:
    data = samples.astype("<i2").tobytes()
    return [data[i : i + 960] for i in range(0, len(data), 960)]  # 20 ms chunks


async def test_voice_barge_in_flushes_truncates_and_drops_the_late_audio(server):
    server.pace_realtime = True  # the long answer is still arriving when the owner speaks
    server.late_deltas_on_interrupt = 3  # and some of it arrives after the speech started
    server.answers.extend(
        [AudioAnswer("A long story.", tone(44100, 4.0)), AudioAnswer("Yes?", tone(44100, 0.3))]
    )
    vad = ServerVad(threshold=0.5, prefix_padding_ms=300, silence_duration_ms=300)
    link = SessionSupervisor(link_settings(server), backoff=fast_backoff(), turn_detection=vad)
    rules = sm.TurnRules(conversation="hands_free", voice_barge_in=True, answer_timeout_s=10)
    speaker, panel = Speaker(), FakePanel()
    shell = TurnShell(sm.TurnMachine(rules), link, speaker, panel, FakeTranscripts(), vad=vad)
    queue: list[bytes] = []

    async def pump():
        async for event in link.events():
            await shell.on_link_event(event)

    async def mic():  # 20 ms chunks at real-time pace: speech when queued, else silence
        silence = bytes(960)
        while True:
            await shell.on_mic_chunk(queue.pop(0) if queue else silence)
            await asyncio.sleep(0.02)

    async with link:
        tasks = [asyncio.create_task(pump()), asyncio.create_task(mic())]
        try:
            await server.wait_for(lambda: shell.machine.state is sm.State.CONVERSING)
            queue.extend(pcm(speech(0.5)))
            await server.wait_for(lambda: shell.machine.state is sm.State.SPEAKING, timeout=5)
            first_item = next(iter(speaker.played))
            await asyncio.sleep(0.5)  # some of the answer has played; the rest streams on
            queue.extend(pcm(speech(0.5)))  # the owner speaks over it
            truncations = await server.wait_for(lambda: server.truncations, timeout=5)
            assert truncations[0]["item_id"] == first_item
            assert truncations[0]["audio_end_ms"] == 300  # what the speaker said was heard
            assert len(speaker.flushed) >= 1 and first_item in speaker.flushed[0]
            cancelled = await server.wait_for(
                lambda: [
                    e
                    for e in server.sent_of("response.done")
                    if e["response"]["status"] == "cancelled"
                ]
            )
            assert cancelled[0]["response"]["status_details"]["reason"] == "turn_detected"
            assert server.events_of("response.cancel") == []  # the server cancelled it
            # The second question is answered; nothing more of the first answer was played.
            await server.wait_for(lambda: shell.counters.answered == 1, timeout=10)
            assert speaker.after_flush == []
            assert shell.counters.results == {"cancelled": 1, "answered": 1}
            assert len(speaker.played) == 2
            assert shell.machine.state is sm.State.CONVERSING
            assert panel.shown[:4] == [
                sm.State.CONVERSING,
                sm.State.THINKING,
                sm.State.SPEAKING,
                sm.State.CONVERSING,
            ]
        finally:
            for task in tasks:
                task.cancel()
            await shell.close()


async def test_late_audio_of_an_interrupted_answer_is_dropped_on_a_slow_link(server):
    """Push-to-talk barge-in while the server is slow to cancel: the old answer keeps
    streaming after the owner has already asked the next question (the box is thinking
    again), and none of it may be played: it is told apart by its response id."""
    server.pace_realtime = True
    server.cancel_delay_s = 0.6
    server.answers.extend(
        [AudioAnswer("A long story.", tone(44100, 4.0)), AudioAnswer("Yes?", tone(44100, 0.3))]
    )
    link = SessionSupervisor(link_settings(server), backoff=fast_backoff())
    rules = sm.TurnRules(min_press_ms=0, answer_timeout_s=10)
    speaker, panel = Speaker(), FakePanel()
    shell = TurnShell(sm.TurnMachine(rules), link, speaker, panel, FakeTranscripts())

    async def pump():
        async for event in link.events():
            await shell.on_link_event(event)

    async def ask():
        await shell.press()
        for chunk in pcm(speech(0.3)):
            await shell.on_mic_chunk(chunk)
        await shell.release()

    async with link:
        pumping = asyncio.create_task(pump())
        try:
            await server.wait_for(lambda: shell.machine.state is sm.State.IDLE)
            await ask()
            await server.wait_for(lambda: shell.machine.state is sm.State.SPEAKING, timeout=5)
            await asyncio.sleep(0.3)
            await ask()  # barge in and ask again at once: thinking while the old answer streams
            assert shell.machine.state is sm.State.THINKING
            await server.wait_for(lambda: shell.counters.answered == 1, timeout=10)
        finally:
            pumping.cancel()
            await shell.close()
    old = next(iter(speaker.flushed[0]))
    late = [e for e in server.sent_of("response.output_audio.delta") if e["item_id"] == old]
    assert len(late) > 10  # the old answer really did keep coming after the flush
    assert speaker.after_flush == []
    assert shell.counters.results == {"cancelled": 1, "answered": 1}
