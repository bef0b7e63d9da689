"""The microphone inside a turn, on the real link against the test server (both profiles):
REAL PortAudio over the paced virtual ``mic_fifo`` (see test_capture.Mouth), the real Capture
and TurnShell wired as the daemon wires them, a fake speaker and panel. What is checked is what
the server received: the end of a question (the audio since the last 100 ms chunk) arrives
before ``input_audio_buffer.commit``; a 44.1 kHz microphone is sent to Yandex unresampled at
the rate its session.update declared; ``audio_in_ms`` counts samples."""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np
import pytest
from conftest import fast_backoff, link_settings, provider_of
from link_helpers import FakePanel, FakeTranscripts
from test_capture import Mouth, signal, until
from test_fault_matrix import Speaker
from test_turn_protocol import started, stop

from appliance.audio.capture import Capture
from appliance.config.schema import AudioConfig
from appliance.core import state_machine as sm
from appliance.realtime.supervisor import SessionSupervisor
from appliance.turns import TurnShell

pytestmark = pytest.mark.timeout(40)


@contextlib.asynccontextmanager
async def box(server, virtual_alsa, rate: int = 24000):
    """A TurnShell whose microphone is a Capture on mic_fifo at ``rate`` (also the API's)."""
    link = SessionSupervisor(link_settings(server, input_rate=rate), backoff=fast_backoff())
    mic = Capture(AudioConfig(input_device="mic_fifo"), api_rate=rate)
    mic.listen(False)  # as the daemon: proved at start, then at rest
    shell = TurnShell(
        sm.TurnMachine(sm.TurnRules(min_press_ms=0, answer_timeout_s=5.0)),
        link,
        Speaker(),
        FakePanel(),
        FakeTranscripts(),
        mic=mic,
        input_rate=rate,
    )

    async def pump_mic() -> None:
        async for chunk in mic.chunks():
            await shell.on_mic_chunk(chunk)

    with Mouth(virtual_alsa, rate) as mouth:
        await mic.start()
        assert mic.state == "running"
        link.start()
        tasks = [asyncio.create_task(pump_mic())]
        tasks.append(asyncio.create_task(_pump_link(link, shell)))
        try:
            await server.wait_for(lambda: shell.machine.state is sm.State.IDLE, timeout=5)
            assert await until(lambda: not mic.streaming, 2.0), "the stream did not rest"
            yield shell, mic, mouth
        finally:
            for task in tasks:
                task.cancel()
            await link.close()
            await shell.close()
            await mic.stop()


async def _pump_link(link, shell) -> None:
    async for event in link.events():
        await shell.on_link_event(event)


async def ask(shell, mic, mouth, question: np.ndarray) -> None:
    """Press, say ``question`` once the stream runs, release as soon as the last 20 ms has
    reached the device (the release falls anywhere between two 100 ms drains)."""
    await shell.press()
    assert await until(lambda: mic.streaming, 2.0)
    mouth.say(question)
    assert await until(lambda: mouth.pending() == 0, 5.0)
    await asyncio.sleep(0.03)  # PortAudio reads the last period and calls back
    await shell.release()


async def test_the_end_of_a_question_arrives_before_the_commit(server, virtual_alsa):
    question = signal(24000 * 45 // 100, seed=11)  # 450 ms
    async with box(server, virtual_alsa) as (shell, mic, mouth):
        await ask(shell, mic, mouth, question)
        await server.wait_for(lambda: server.committed_audio, timeout=5)
        committed = server.committed_audio[0]  # the server's buffer at the commit
        assert question.tobytes() in committed, "audio of the question was lost"
        record = await shell.wait_turn_end(10)
        assert record is not None and record.result == "answered", record
        assert record.audio_in_ms == len(committed) // 2 * 1000 // 24000
        assert await until(lambda: not mic.streaming, 2.0), "the stream did not rest again"


async def test_a_44100_hz_microphone_goes_to_yandex_unresampled(server, virtual_alsa):
    if 44100 not in provider_of(server).input_rates:
        pytest.skip(f"{server.profile.name} takes 24 kHz input only")
    question = signal(44100 * 3 // 10, seed=12)  # 300 ms at 44.1 kHz
    async with box(server, virtual_alsa, rate=44100) as (shell, mic, mouth):
        assert mic.device_rate == 44100  # the device at the API's rate: nothing to resample
        await ask(shell, mic, mouth, question)
        await server.wait_for(lambda: server.committed_audio, timeout=5)
        committed = server.committed_audio[0]
        assert committed.rate == 44100  # what session.update declared
        assert question.tobytes() in committed  # bit for bit: not resampled


async def test_audio_in_ms_counts_samples_not_rounded_chunks(server):
    """A 48 kHz mic resampled to 24 kHz gives chunks of 479 and 481 samples; rounding each to
    whole ms counted 975 ms for this second of audio."""
    r = await started(server, min_press_ms=0)
    try:
        await r.shell.press()
        for n in [479, 481] * 25:  # 24000 samples: 1 s
            await r.shell.on_mic_chunk(np.full(n, 300, "<i2").tobytes())
        await r.shell.release()
        record = await r.shell.wait_turn_end(5)
        assert record is not None and record.result == "answered", record
        assert record.audio_in_ms == 1000
    finally:
        await stop(r)
