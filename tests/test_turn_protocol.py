"""The turn shell's side of the 2026 protocol, on the real link against the test server (both
profiles): a short press sends nothing at all, a press that counts sends its held first audio
in order, and a barge-in's truncate names the content_index of the audio being played. The
LED panel and the speaker are fakes that record what the owner would see and hear."""

from __future__ import annotations

import asyncio
import time

import pytest
from test_fault_matrix import Speaker, pump, rig

from appliance.core import state_machine as sm

pytestmark = pytest.mark.timeout(30)

CHUNK = 960  # 20 ms at 24 kHz


def numbered_chunks(n: int) -> list[bytes]:
    """Chunks whose samples say which chunk they are, so order is checkable at the server."""
    return [(i + 1).to_bytes(2, "little") * (CHUNK // 2) for i in range(n)]


async def started(server, min_press_ms: int):
    r = await rig(server)
    r.shell.machine.rules = sm.TurnRules(min_press_ms=min_press_ms, answer_timeout_s=5.0)
    r.link.start()
    r.tasks.append(asyncio.create_task(pump(r)))
    await r.wait_state(sm.State.IDLE)
    return r


async def stop(r) -> None:
    for task in r.tasks:
        task.cancel()
    await r.link.close()
    await r.shell.close()


async def talk(r, chunks: list[bytes]) -> None:
    """Press, feed the chunks at real time (20 ms apart), release."""
    await r.shell.press()
    for chunk in chunks:
        await r.shell.on_mic_chunk(chunk)
        await asyncio.sleep(0.02)
    await r.shell.release()


async def test_a_short_press_sends_nothing_at_all(server):
    r = await started(server, min_press_ms=300)
    try:
        await talk(r, numbered_chunks(5))  # 100 ms: too short
        record = await r.shell.wait_turn_end(3)
        assert record is not None and record.result == "too_short"
        await asyncio.sleep(0.2)
        # Nothing reached the server: no append, no commit, no clear (which Yandex refuses).
        sent = {e.get("type") for e in server.received}
        assert sent.isdisjoint(
            {"input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear"}
        )
        assert len(server.connections) == 1  # and no renewal was needed
    finally:
        await stop(r)


async def test_a_press_that_counts_sends_its_held_start_in_order(server):
    r = await started(server, min_press_ms=200)
    try:
        chunks = numbered_chunks(20)  # 400 ms
        start = time.monotonic()
        await talk(r, chunks)
        record = await r.shell.wait_turn_end(5)
        assert record is not None and record.result == "answered", record
        assert time.monotonic() - start < 5
        assert server.committed_audio == [b"".join(chunks)]  # all of it, in order
        assert record.audio_in_ms == 400
    finally:
        await stop(r)


async def test_barge_in_truncates_the_audio_part_the_deltas_named(server):
    """A server whose answer's audio is content part 1 (text before it): the truncate names
    part 1 (the test server refuses any other index)."""
    server.audio_content_index = 1
    server.pace_realtime = True
    r = await started(server, min_press_ms=0)
    try:
        await talk(r, numbered_chunks(10))
        await r.wait_state(sm.State.SPEAKING)
        await asyncio.sleep(0.5)  # the fake speaker reports 300 ms heard: let that much arrive
        await r.shell.press()  # barge in
        await server.wait_for(lambda: server.truncations, timeout=5)
        await r.shell.release()
        assert server.truncations[0]["content_index"] == 1
        assert server.sent_of("error") == []
        assert isinstance(r.speaker, Speaker)
    finally:
        await stop(r)
