"""Bounded resources (issue 7 §4): a 15 MiB server frame, an answer of 10 minutes of audio into
a small playback buffer, and 10,000 tiny deltas through the link to a TurnShell."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time

import numpy as np
import pytest
from conftest import fast_backoff, link_settings
from link_helpers import QUESTION, FakePanel, FakeTranscripts, ask_once, until
from realtime_server import AudioAnswer, tone
from test_conversation import Speaker
from test_playback import RATE, config, on_speaker_fifo

from appliance.core import state_machine as sm
from appliance.protocol import server_events as ev
from appliance.realtime.link_events import Connected
from appliance.realtime.session import MAX_FRAME_BYTES
from appliance.realtime.supervisor import SessionSupervisor
from appliance.turns import TurnShell

pytestmark = pytest.mark.timeout(30)


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def delta_frame(pcm: bytes, item_id: str = "item_big", response_id: str = "resp_big") -> str:
    return json.dumps(
        {
            "type": "response.output_audio.delta",
            "event_id": "ev_x",
            "response_id": response_id,
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
            "delta": base64.b64encode(pcm).decode(),
        }
    )


async def test_a_15_mib_frame_is_parsed_and_the_link_stays(server, caplog):
    pcm = bytes(range(256)) * (11 * 1024 * 4 + 1024)  # 11.25 MiB: ~15 MiB of base64
    frame = delta_frame(pcm)
    assert 15 * 2**20 <= len(frame) < MAX_FRAME_BYTES
    server.junk_before_next_answer([frame])
    answer = tone(44100, 0.2)
    server.answers.extend([AudioAnswer("After the big one.", answer), AudioAnswer("Again.")])
    with caplog.at_level(logging.WARNING, logger="appliance"):
        async with SessionSupervisor(link_settings(server), backoff=fast_backoff()) as link:
            await until(link, Connected)
            events = await ask_once(link, timeout=10)
            big = [e for e in events if isinstance(e, ev.AudioDelta) and e.item_id == "item_big"]
            assert len(big) == 1 and big[0].audio == pcm  # parsed whole, not skipped
            del big, events
            assert (await ask_once(link))[-1].status == "completed"  # the same link goes on
    assert len(server.connections) == 1
    assert caplog.records == []


async def test_ten_minutes_of_answer_into_a_half_second_buffer(virtual_alsa, caplog):
    # Nobody reads speaker_fifo: the device stalls at once and the ring fills, as when the
    # server sends far faster than real time. 10 minutes go in; no 10 minutes pass.
    cfg = config(output_device="speaker_fifo", playback_buffer_s=0.5)
    chunk = (np.sin(np.arange(RATE // 10) * 2 * np.pi * 440 / RATE) * 8000).astype("<i2")
    data = chunk.tobytes()  # 100 ms
    chunks = 10 * 60 * 10
    with caplog.at_level(logging.WARNING, logger="appliance"):
        async with on_speaker_fifo(virtual_alsa, cfg) as p:
            await asyncio.sleep(0.05)
            ring = p._ring  # white box: the ring's size is the bound under test
            assert ring is not None
            capacity = ring.capacity
            assert capacity == round(0.5 * p.device_rate)
            before = rss_kib()
            started = time.monotonic()
            for i in range(chunks):
                p.play_answer("item_long", data)
                if i % 600 == 0:
                    assert len(ring) <= capacity
                    await asyncio.sleep(0)
            p.end_answer("item_long")
            took = time.monotonic() - started
            grown_kib = rss_kib() - before
            assert len(ring) <= capacity and ring.dropped_frames == 0
            total = chunks * len(chunk)
            assert p.cut_frames + len(ring) + p.frames_played == total
            assert p.cut_frames > total * 0.99
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "longer than the 0.5 s playback buffer" in warnings[0].getMessage()
    assert grown_kib < 8 * 1024, f"RSS grew {grown_kib} KiB"  # 10 min of audio is 53 MB
    print(f"10 min of answer queued in {took:.2f} s; RSS grew {grown_kib} KiB")


class RecordingSpeaker(Speaker):
    def __init__(self) -> None:
        super().__init__()
        self.audio: dict[str, bytearray] = {}

    def play_answer(self, item_id: str, pcm: bytes) -> None:
        super().play_answer(item_id, pcm)
        self.audio.setdefault(item_id, bytearray()).extend(pcm)


async def test_ten_thousand_tiny_deltas_arrive_in_order(server):
    n = 10_000
    tiny = [i.to_bytes(2, "little") for i in range(n)]
    server.junk_before_next_answer([delta_frame(b, "item_tiny", "resp_tiny") for b in tiny])
    server.answers.append(AudioAnswer("Tail.", tone(44100, 0.1)))
    link = SessionSupervisor(link_settings(server), backoff=fast_backoff())
    rules = sm.TurnRules(min_press_ms=0, answer_timeout_s=20)
    speaker = RecordingSpeaker()
    shell = TurnShell(sm.TurnMachine(rules), link, speaker, FakePanel(), FakeTranscripts())

    async def pump():
        async for event in link.events():
            await shell.on_link_event(event)

    async with link:
        task = asyncio.create_task(pump())
        try:
            await server.wait_for(lambda: shell.machine.state is sm.State.IDLE)
            started, cpu = time.monotonic(), time.process_time()
            await shell.press()
            await shell.on_mic_chunk(QUESTION)
            await shell.release()
            record = await shell.wait_turn_end(20)
            took, cpu = time.monotonic() - started, time.process_time() - cpu
        finally:
            task.cancel()
            await shell.close()
    assert record is not None and record.result == "answered"
    assert bytes(speaker.audio["item_tiny"]) == b"".join(tiny)  # all of them, in order
    assert len(speaker.audio) == 2
    print(f"{n} tiny deltas: {took:.2f} s wall, {cpu:.2f} s CPU (server included)")
