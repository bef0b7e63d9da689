"""The microphone against REAL PortAudio over the virtual ALSA devices (see virtual_alsa.py).

Nothing is mocked: PyAudio, PortAudio (its callback thread included) and alsa-lib are the real
libraries; the devices are ALSA ``file`` plugins instead of a sound card. One thing differs
from a sound card: a file-backed device has no clock and runs hundreds of times faster than
real time, so the tests that read the ``mic`` file give Capture a large ring (``ring_s=60``)
to hold what the callback delivers before the test reads it; the product's 2 s ring is used
with the paced named-pipe device (``mic_fifo``), which delivers in real time as a card does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time

import numpy as np
import pytest

from appliance.audio.capture import Capture
from appliance.audio.resample import resample_all, to_mono
from appliance.config.schema import AudioConfig

RING_S = 60.0  # see the module docstring: file-backed devices outrun any real-time ring
LOGGER = "appliance.audio.capture"


def signal(n: int, seed: int = 7) -> np.ndarray:
    """Pseudo-random int16 over the full range: any reordering, loss or rounding shows."""
    return np.random.default_rng(seed).integers(-32768, 32768, n, dtype=np.int16)


def chirp(n: int, rate: int) -> np.ndarray:
    t = np.arange(n) / rate
    f = 100 + (8000 - 100) * t / t[-1] / 2  # 100 Hz .. 8 kHz, below 24 kHz's Nyquist
    return (np.sin(2 * np.pi * f * t) * 12000).astype(np.int16)


async def collect(cap: Capture, samples: int, timeout: float = 5.0):
    """At least ``samples`` samples of 24 kHz audio from chunks(): (int16 array, chunk sizes)."""
    chunks: list[bytes] = []
    total = 0
    async with asyncio.timeout(timeout), contextlib.aclosing(cap.chunks()) as stream:
        async for chunk in stream:
            chunks.append(chunk)
            total += len(chunk) // 2
            if total >= samples:
                break
    return np.frombuffer(b"".join(chunks), dtype="<i2"), [len(c) // 2 for c in chunks]


async def until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


@pytest.mark.parametrize("period_ms", [20, 50])
async def test_exact_samples_at_24000(virtual_alsa, period_ms):
    sig = signal(12000)  # 0.5 s
    virtual_alsa.set_mic(sig)
    config = AudioConfig(input_device="mic", input_rate=0, period_ms=period_ms)
    async with Capture(config, ring_s=RING_S) as cap:
        assert (cap.state, cap.error) == ("running", "")
        assert (cap.device_name, cap.device_rate, cap.channels) == ("mic", 24000, 1)
        out, sizes = await collect(cap, len(sig) + 4800)
        assert cap.overruns == 0 and cap.dropped_frames == 0, "the test read too late"
    assert out[: len(sig)].tobytes() == sig.tobytes()
    assert not out[len(sig) :].any()  # then the infile's zero padding, nothing else
    assert set(sizes) == {24000 * period_ms // 1000}  # pass-through: exactly one period each
    assert cap.callbacks > 0 and cap.callback_errors == 0
    assert cap.state == "stopped"


async def test_48000_is_resampled_to_24000(virtual_alsa):
    sig = chirp(24000, 48000)  # 0.5 s at 48 kHz
    virtual_alsa.set_mic(sig)
    ref = resample_all(np.concatenate([sig, np.zeros(48000, np.int16)]), 48000, 24000)
    n = len(sig) // 2 + 2400  # the signal at 24 kHz, then 100 ms of the padding
    async with Capture(AudioConfig(input_device="mic", input_rate=48000), ring_s=RING_S) as cap:
        assert cap.device_rate == 48000
        out, sizes = await collect(cap, n)
        assert cap.overruns == 0, "the test read too late"
    out, ref = out[:n].astype(float), ref[:n].astype(float)
    assert np.corrcoef(out, ref)[0, 1] > 0.99
    ends = [np.flatnonzero(np.abs(x) > 200)[-1] for x in (out, ref)]
    assert abs(ends[0] - ends[1]) <= 24 * 3, "the signal ends more than 3 ms off"
    assert abs(ends[0] - len(sig) // 2) <= 24 * 3
    # Whatever the resampler gives goes out at once: pieces of at most 20 ms, about one per
    # callback (never held back to make equal chunks: that would add a period of latency).
    assert max(sizes) <= 480 and sum(sizes) >= n
    assert len(sizes) <= (n // 480) * 1.2 + 4


async def test_stereo_is_downmixed(virtual_alsa):
    left, right = signal(12000, seed=1), signal(12000, seed=2)
    stereo = np.stack([left, right], axis=1)
    virtual_alsa.set_mic(stereo.reshape(-1), channels=2)
    # Every virtual device can do mono (PortAudio adapts channels), so two are forced here.
    async with Capture(AudioConfig(input_device="mic"), channels=2, ring_s=RING_S) as cap:
        assert (cap.channels, cap.device_rate) == (2, 24000)
        out, _ = await collect(cap, len(left))
    assert out[: len(left)].tobytes() == to_mono(stereo).tobytes()


async def test_stop_is_fast_idempotent_and_ends_chunks(virtual_alsa):
    cap = Capture(AudioConfig(input_device="default"))
    await cap.stop()  # before start: nothing to do
    await cap.start()
    assert cap.state == "running" and cap.device_name == "default"
    reader = asyncio.create_task(collect(cap, 10**9))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await cap.stop()
    assert time.monotonic() - started < 0.5
    await asyncio.wait_for(reader, 1.0)  # chunks() ended
    await cap.stop()
    assert cap.state == "stopped"


async def test_missing_device_fails_then_recovers(virtual_alsa, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    states: list[tuple[str, str]] = []
    config = AudioConfig(input_device="flaky", retry_s=0.5)
    cap = Capture(config, on_state=lambda s, e: states.append((s, e)), ring_s=RING_S)
    try:
        await cap.start()  # returns, does not raise
        message = (
            "no input device matches 'flaky'; "
            "available: 0 mic, 2 USB Audio Device mic, 3 mic_fifo, 6 default"
        )
        assert (cap.state, cap.error) == ("failed", message)
        await asyncio.sleep(1.3)  # two more tries, at 0.5 s and 1.0 s
        assert cap.state == "failed"
        records = [r for r in caplog.records if r.name == LOGGER]
        warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
        assert warnings == [f"microphone unavailable: {message}; retrying every 0.5 s"]
        retries = [r for r in records if "still unavailable" in r.getMessage()]
        assert len(retries) >= 2

        sig = signal(6000, seed=3)
        virtual_alsa.set_flaky(True, sig)  # the microphone is plugged in again
        # A new PortAudio instance lists it; that needs every other PyAudio to be terminated.
        assert await until(lambda: cap.state == "running", 3.0), cap.error
        out, _ = await collect(cap, len(sig))
        assert out[: len(sig)].tobytes() == sig.tobytes()
    finally:
        await cap.stop()
    assert states == [("failed", message), ("running", ""), ("stopped", "")]
    infos = [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.INFO
    ]
    assert infos == ["microphone is back: 5 'flaky' at 24000 Hz, 1 channel"]
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


async def test_paced_pipe_delivers_in_real_time(virtual_alsa):
    sig = signal(24000, seed=4)  # 1 s, written in 20 ms chunks on schedule
    done = threading.Event()
    feeder = threading.Thread(
        target=virtual_alsa.feed_mic_fifo, args=(sig, 24000), kwargs={"stop": done.is_set}
    )
    cap = Capture(AudioConfig(input_device="mic_fifo", input_rate=24000))  # the 2 s ring
    try:
        feeder.start()
        await cap.start()
        assert cap.state == "running"
        started = time.monotonic()
        arrivals: list[float] = []
        chunks: list[bytes] = []
        async with asyncio.timeout(5), contextlib.aclosing(cap.chunks()) as stream:
            async for chunk in stream:
                arrivals.append(time.monotonic())
                chunks.append(chunk)
                if sum(len(c) for c in chunks) >= len(sig) * 2:
                    break
        elapsed = time.monotonic() - started
        stopping = time.monotonic()
        await cap.stop()
        assert time.monotonic() - stopping < 0.5
    finally:
        await cap.stop()
        done.set()  # keep feeding until the stream is closed: a dry pipe blocks PortAudio
        feeder.join(2)
    out = np.frombuffer(b"".join(chunks), dtype="<i2")
    assert out[: len(sig)].tobytes() == sig.tobytes()
    assert 0.85 < elapsed < 1.3, f"1 s of audio took {elapsed:.2f} s"
    gaps = np.diff(arrivals)
    assert 0.010 < np.median(gaps) < 0.030
    assert cap.overruns == 0


async def test_a_stream_that_stops_delivering_is_reopened(virtual_alsa, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    feeding = threading.Event()
    feeding.set()
    done = threading.Event()

    def feed() -> None:  # 20 ms chunks, on schedule, while ``feeding`` is set
        step = np.full(480, 1000, dtype=np.int16)
        while not done.is_set():
            if feeding.is_set():
                virtual_alsa.write_mic_fifo(step)
            time.sleep(0.02)

    feeder = threading.Thread(target=feed)
    feeder.start()
    cap = Capture(AudioConfig(input_device="mic_fifo", input_rate=24000, retry_s=0.5))
    try:
        await cap.start()
        assert cap.state == "running"
        feeding.clear()  # the microphone goes quiet: no more callbacks
        assert await until(lambda: cap.state == "failed", 2.0)
        assert cap.error.startswith("input device 3 'mic_fifo': no audio for 1.")
        feeding.set()
        assert await until(lambda: cap.state == "running", 3.0), cap.error
        out, _ = await collect(cap, 480)
        assert (out == 1000).any()
    finally:
        await cap.stop()
        done.set()
        feeder.join(2)
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len([m for m in messages if m.startswith("microphone unavailable")]) == 1
    assert len([m for m in messages if m.startswith("microphone is back")]) == 1


async def test_paused_capture_delivers_nothing_and_resumes_fresh(virtual_alsa):
    """Between turns the microphone is paused: no chunks, no loop wake-ups; the stream stays
    open and healthy. Resuming starts from new audio, not from what was captured meanwhile."""
    feeding = threading.Event()
    feeder = threading.Thread(
        target=virtual_alsa.feed_mic_fifo,
        args=(signal(24000 * 3), 24000),
        kwargs={"stop": feeding.is_set},
        daemon=True,
    )
    feeder.start()
    config = AudioConfig(input_device="mic_fifo", input_rate=24000)
    got: list[bytes] = []
    try:
        async with Capture(config) as cap:
            cap.listen(False)

            async def read():
                async for chunk in cap.chunks():
                    got.append(chunk)

            reader = asyncio.create_task(read())
            await asyncio.sleep(0.5)
            paused_chunks = len(got)
            assert cap.state == "running" and not cap.listening
            callbacks = cap.callbacks
            cap.listen(True)
            await asyncio.sleep(0.3)
            reader.cancel()
        assert paused_chunks <= 3  # only what was already captured when the pause began
        assert cap.callbacks > callbacks  # the stream kept running while paused
        resumed = len(got) - paused_chunks
        assert 10 <= resumed <= 20  # ~0.3 s of 20 ms chunks: no backlog from the pause
        assert cap.overruns == 0
    finally:
        feeding.set()
        feeder.join(2)
