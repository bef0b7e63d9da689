"""The microphone against REAL PortAudio over the virtual ALSA devices (see virtual_alsa.py).

Nothing is mocked: PyAudio, PortAudio (its callback thread included) and alsa-lib are the real
libraries; the devices are ALSA ``file`` plugins instead of a sound card. Two things differ
from a sound card. A file-backed device (``mic``) has no clock and runs hundreds of times faster
than real time, so those tests give Capture a large ring (``ring_s=600``) and drain it often
(``drain_s``). The paced named-pipe device (``mic_fifo``) delivers in real time as a card does,
but a pipe keeps what was written while the stream was stopped (a card's buffer starts empty at
each start): :class:`Mouth` writes it like a microphone, dropping its silence when nobody reads.

What the tests describe: the stream is STOPPED at rest (no callbacks, no timers), started by
``listen(True)``; while listening the ring is drained every 100 ms into one chunk; at a release
``take_tail()`` returns what came since, so nothing is lost; a failed device is closed and
PortAudio terminated, retried quietly, and ``suspend_device``/``resume_device`` re-enumerate.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import threading
import time

import numpy as np
import pyaudio
import pytest

from appliance.audio.capture import Capture
from appliance.audio.devices import PORTAUDIO_LOCK
from appliance.audio.resample import resample_all, to_mono
from appliance.config.schema import AudioConfig

# See the module docstring: file-backed devices outrun any real-time ring. A slow moment of a
# loaded machine filled a 60 s ring (CI: the stereo test read only the zero padding). The ring
# is a deque of chunks, filled only as far as the device runs ahead: ten minutes costs nothing.
RING_S = 600.0
FAST_DRAIN_S = 0.005
LOGGER = "appliance.audio.capture"


def signal(n: int, seed: int = 7) -> np.ndarray:
    """Pseudo-random int16 over the full range: any reordering, loss or rounding shows."""
    return np.random.default_rng(seed).integers(-32768, 32768, n, dtype=np.int16)


def chirp(n: int, rate: int) -> np.ndarray:
    t = np.arange(n) / rate
    f = 100 + (8000 - 100) * t / t[-1] / 2  # 100 Hz .. 8 kHz, below 24 kHz's Nyquist
    return (np.sin(2 * np.pi * f * t) * 12000).astype(np.int16)


async def collect(cap: Capture, samples: int, timeout: float = 5.0):
    """At least ``samples`` samples from chunks(): (int16 array, chunk sizes)."""
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


class CountingPyAudio(pyaudio.PyAudio):
    """The real PyAudio; every stream callback also counts its calls (test instrumentation)."""

    calls = 0

    def open(self, *args, **kwargs):
        callback = kwargs.get("stream_callback")
        if callback is not None:

            def counted(*a):
                CountingPyAudio.calls += 1
                return callback(*a)

            kwargs["stream_callback"] = counted
        return super().open(*args, **kwargs)


class Mouth:
    """Speaks into ``mic_fifo`` like a microphone: 20 ms every 20 ms, on schedule, silence when
    nothing is queued. Nonblocking: what finds the pipe full is dropped if it is silence (a
    stopped stream does not hear the room) and kept for the next tick if it is speech."""

    def __init__(self, alsa, rate: int = 24000) -> None:
        self.fd = os.open(alsa.mic_fifo, os.O_WRONLY | os.O_NONBLOCK)
        self.step = rate // 50
        self.queue: collections.deque[np.ndarray] = collections.deque()
        self.quiet = threading.Event()  # set: the microphone delivers nothing (a stall)
        self.stop = threading.Event()
        self.said = 0  # samples of speech written
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Mouth:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(2)
        os.close(self.fd)

    def say(self, samples: np.ndarray) -> None:
        for i in range(0, len(samples), self.step):
            piece = np.zeros(self.step, np.int16)
            chunk = samples[i : i + self.step]
            piece[: len(chunk)] = chunk
            self.queue.append(piece)

    def pending(self) -> int:
        return len(self.queue)

    def _run(self) -> None:
        silence = np.zeros(self.step, dtype="<i2").tobytes()
        start, n = time.monotonic(), 0
        while not self.stop.is_set():
            delay = start + n * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            n += 1
            if self.quiet.is_set():
                continue
            speech = self.queue[0] if self.queue else None
            data = silence if speech is None else speech.astype("<i2").tobytes()
            try:
                os.write(self.fd, data)
            except BlockingIOError:
                continue
            if speech is not None:
                self.queue.popleft()
                self.said += self.step


def scheduled_timers() -> list:
    """The loop's pending timers (a poller would have one)."""
    loop = asyncio.get_running_loop()
    return [h for h in loop._scheduled if not h.cancelled()]


@pytest.mark.parametrize("period_ms", [20, 50])
async def test_exact_samples_at_24000(virtual_alsa, period_ms):
    sig = signal(12000)  # 0.5 s
    virtual_alsa.set_mic(sig)
    config = AudioConfig(input_device="mic", input_rate=0, period_ms=period_ms)
    async with Capture(config, ring_s=RING_S, drain_s=FAST_DRAIN_S) as cap:
        assert (cap.state, cap.error) == ("running", "")
        assert (cap.device_name, cap.device_rate, cap.channels) == ("mic", 24000, 1)
        out, sizes = await collect(cap, len(sig) + 4800)
    assert out[: len(sig)].tobytes() == sig.tobytes()
    assert not out[len(sig) :].any()  # then the infile's zero padding, nothing else
    period = 24000 * period_ms // 1000
    assert all(size % period == 0 for size in sizes)  # pass-through: whole callbacks, unchanged
    assert cap.callbacks > 0 and cap.callback_errors == 0
    assert cap.state == "stopped"


async def test_48000_is_resampled_to_24000(virtual_alsa):
    sig = chirp(24000, 48000)  # 0.5 s at 48 kHz
    virtual_alsa.set_mic(sig)
    ref = resample_all(np.concatenate([sig, np.zeros(48000, np.int16)]), 48000, 24000)
    n = len(sig) // 2 + 2400  # the signal at 24 kHz, then 100 ms of the padding
    config = AudioConfig(input_device="mic", input_rate=48000)
    async with Capture(config, ring_s=RING_S, drain_s=FAST_DRAIN_S) as cap:
        assert cap.device_rate == 48000
        out, _ = await collect(cap, n)
        assert cap.overruns == 0, "the test read too late"
    out, ref = out[:n].astype(float), ref[:n].astype(float)
    assert np.corrcoef(out, ref)[0, 1] > 0.99
    ends = [np.flatnonzero(np.abs(x) > 200)[-1] for x in (out, ref)]
    assert abs(ends[0] - ends[1]) <= 24 * 3, "the signal ends more than 3 ms off"
    assert abs(ends[0] - len(sig) // 2) <= 24 * 3


async def test_the_api_rate_is_opened_when_the_device_has_it(virtual_alsa):
    """Yandex takes 44.1 kHz: with realtime.input_rate 44100 a device that has 44.1 kHz is
    opened at it and the samples pass unchanged (nothing resampled)."""
    sig = signal(22050, seed=5)
    virtual_alsa.set_mic(sig, rate=44100)
    config = AudioConfig(input_device="mic", input_rate=0)
    async with Capture(config, ring_s=RING_S, drain_s=FAST_DRAIN_S, api_rate=44100) as cap:
        assert cap.device_rate == 44100
        out, _ = await collect(cap, len(sig))
        assert cap.overruns == 0, "the test read too late"
    assert out[: len(sig)].tobytes() == sig.tobytes()


async def test_stereo_is_downmixed(virtual_alsa):
    left, right = signal(12000, seed=1), signal(12000, seed=2)
    stereo = np.stack([left, right], axis=1)
    virtual_alsa.set_mic(stereo.reshape(-1), channels=2)
    # Every virtual device can do mono (PortAudio adapts channels), so two are forced here.
    config = AudioConfig(input_device="mic")
    async with Capture(config, channels=2, ring_s=RING_S, drain_s=FAST_DRAIN_S) as cap:
        assert (cap.channels, cap.device_rate) == (2, 24000)
        out, _ = await collect(cap, len(left))
        assert cap.overruns == 0, "the test read too late"
    assert out[: len(left)].tobytes() == to_mono(stereo).tobytes()


async def test_stop_is_fast_idempotent_and_ends_chunks(virtual_alsa):
    cap = Capture(AudioConfig(input_device="default"), drain_s=FAST_DRAIN_S)
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
    cap = Capture(
        config,
        on_state=lambda s, e: states.append((s, e)),
        ring_s=RING_S,
        drain_s=FAST_DRAIN_S,
    )
    try:
        await cap.start()  # returns, does not raise
        message = (
            "no input device matches 'flaky'; "
            "available: 0 mic, 2 USB Audio Device mic, 3 mic_fifo, 6 default"
        )
        assert (cap.state, cap.error) == ("failed", message)
        assert cap._port.pa is None  # PortAudio is terminated while the device fails
        await asyncio.sleep(2.5)  # two more tries, backing off: at 0.5 s and 1.5 s (not 3.5)
        assert cap.state == "failed"
        records = [r for r in caplog.records if r.name == LOGGER]
        warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
        assert warnings == [
            f"microphone unavailable: {message}; retrying every 0.5 s or less often"
        ]
        retries = [r for r in records if "still unavailable" in r.getMessage()]
        assert len(retries) == 2

        sig = signal(6000, seed=3)
        reader = asyncio.create_task(collect(cap, len(sig), timeout=6))  # waits for a stream
        virtual_alsa.set_flaky(True, sig)  # the microphone is plugged in again
        # A new PortAudio instance lists it; that needs every other PyAudio to be terminated.
        assert await until(lambda: cap.state == "running", 3.0), cap.error
        out, _ = await reader
        assert out[: len(sig)].tobytes() == sig.tobytes()
    finally:
        await cap.stop()
    assert states == [("failed", message), ("running", ""), ("stopped", "")]
    infos = [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.INFO
    ]
    assert infos == ["microphone is back: 5 'flaky' at 24000 Hz, 1 channel"]
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


async def test_paced_pipe_is_drained_in_100_ms_chunks(virtual_alsa):
    sig = signal(24000, seed=4)  # 1 s
    cap = Capture(AudioConfig(input_device="mic_fifo", input_rate=24000))  # the 2 s ring
    with Mouth(virtual_alsa) as mouth:
        try:
            await cap.start()
            assert cap.state == "running"
            cap.clear()
            mouth.say(sig)
            arrivals: list[float] = []
            chunks: list[bytes] = []
            async with asyncio.timeout(5), contextlib.aclosing(cap.chunks()) as stream:
                async for chunk in stream:
                    arrivals.append(time.monotonic())
                    chunks.append(chunk)
                    if mouth.pending() == 0 and sig.tobytes() in b"".join(chunks):
                        break
            stopping = time.monotonic()
            await cap.stop()
            assert time.monotonic() - stopping < 0.5
        finally:
            await cap.stop()
    out = np.frombuffer(b"".join(chunks), dtype="<i2")
    assert sig.tobytes() in out.tobytes()  # all of it, in order (after the pipe's old silence)
    gaps = np.diff(arrivals[2:])  # past the backlog the pipe held before the start
    assert 0.085 < np.median(gaps) < 0.2, gaps  # 100 ms, and a loaded machine's lateness
    sizes = [len(c) // 2 for c in chunks[2:-1]]
    assert 1920 <= np.median(sizes) <= 4800  # about 100 ms each: one append, not five
    assert cap.overruns == 0


async def test_at_rest_the_stream_is_stopped_and_nothing_polls(virtual_alsa):
    """listen(False): no PortAudio callbacks, no timers on the loop, no chunks; listen(True)
    starts the stream again, from fresh audio, and records when capture began."""
    config = AudioConfig(input_device="mic_fifo", input_rate=24000)
    got: list[bytes] = []
    with Mouth(virtual_alsa) as mouth:
        cap = Capture(config, pa_factory=CountingPyAudio)
        cap.listen(False)  # as the daemon does: prove the device at start, then rest
        try:
            await cap.start()
            assert cap.state == "running" and cap.starts == 1  # it did deliver audio once

            async def read():
                async for chunk in cap.chunks():
                    got.append(chunk)

            reader = asyncio.create_task(read())
            assert await until(lambda: not cap.streaming, 1.0)
            await asyncio.sleep(0.1)
            calls = CountingPyAudio.calls
            await asyncio.sleep(0.5)
            assert CountingPyAudio.calls == calls, "callbacks while at rest"
            assert scheduled_timers() == [], "a timer runs while at rest"
            assert got == [] and cap.state == "running"

            cap.listen(True)
            mouth.say(np.full(24000 // 2, 1000, np.int16))
            assert await until(lambda: cap.last_listen is not None, 2.0)
            timing = cap.last_listen
            assert timing.start_called_at >= timing.asked_at
            assert timing.first_callback_at >= timing.start_called_at
            assert cap.press_to_capture_ms is not None and cap.press_to_capture_ms >= 0
            assert await until(lambda: any((np.frombuffer(c, "<i2") == 1000).any() for c in got), 3)
            assert CountingPyAudio.calls > calls
            assert cap.starts == 2
            reader.cancel()
        finally:
            await cap.stop()


async def test_take_tail_returns_what_came_since_the_last_chunk(virtual_alsa):
    """At a release the ring holds up to 100 ms not yet drained: take_tail() returns it, so
    chunks + tail are everything captured, in order, nothing lost."""
    sig = signal(24000 * 45 // 100, seed=6)  # 450 ms: the release is at a random drain phase
    config = AudioConfig(input_device="mic_fifo", input_rate=24000)
    got: list[bytes] = []
    with Mouth(virtual_alsa) as mouth:
        async with Capture(config) as cap:

            async def read():
                async for chunk in cap.chunks():
                    got.append(chunk)

            reader = asyncio.create_task(read())
            await asyncio.sleep(0.3)  # past the pipe's backlog
            mouth.say(sig)
            assert await until(lambda: mouth.pending() == 0, 3)
            await asyncio.sleep(0.03)  # the last 20 ms: read by PortAudio, then the callback
            tail = cap.take_tail()
            cap.listen(False)
            reader.cancel()
    out = b"".join(got) + tail  # without the tail: short of what came after the last drain
    assert sig.tobytes() in out


async def test_a_start_holds_the_portaudio_lock(virtual_alsa):
    """Every start of the stream waits for the process-wide PortAudio lock (playback's calls
    and capture's must never run at once)."""
    with Mouth(virtual_alsa):
        cap = Capture(AudioConfig(input_device="mic_fifo", input_rate=24000))
        cap.listen(False)
        try:
            await cap.start()
            assert await until(lambda: not cap.streaming, 1.0)
            with PORTAUDIO_LOCK:
                cap.listen(True)
                await asyncio.sleep(0.3)
                assert not cap.streaming  # blocked on the lock
            assert await until(lambda: cap.streaming, 1.0)
        finally:
            await cap.stop()


async def test_a_stream_that_stops_delivering_is_reopened(virtual_alsa, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    cap = Capture(AudioConfig(input_device="mic_fifo", input_rate=24000, retry_s=0.5))
    with Mouth(virtual_alsa) as mouth:
        try:
            await cap.start()
            assert cap.state == "running" and cap.streaming
            await asyncio.sleep(0.3)
            mouth.quiet.set()  # the microphone goes quiet: no more callbacks
            assert await until(lambda: cap.state == "failed", 4.0)
            assert cap.error == "input device 3 'mic_fifo': no audio for 1 s"
            mouth.quiet.clear()
            assert await until(lambda: cap.state == "running", 4.0), cap.error
            mouth.say(np.full(2400, 1000, np.int16))
            out, _ = await collect(cap, 24000 * 3)
            assert (out == 1000).any()
        finally:
            await cap.stop()
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len([m for m in messages if m.startswith("microphone unavailable")]) == 1
    assert len([m for m in messages if m.startswith("microphone is back")]) == 1


async def test_a_device_lost_at_rest_is_found_at_the_next_start(virtual_alsa):
    """A microphone that went quiet while the stream rested: the press starts it, no audio
    comes, and the state is failed within stall_s (not a hang)."""
    cap = Capture(AudioConfig(input_device="mic_fifo", input_rate=24000))
    with Mouth(virtual_alsa) as mouth:
        cap.listen(False)
        try:
            await cap.start()
            assert await until(lambda: not cap.streaming, 1.0)
            mouth.quiet.set()
            await asyncio.sleep(0.3)
            from virtual_alsa import _drain

            _drain(virtual_alsa.mic_fifo_fd)  # nothing left in the device
            cap.listen(True)
            started = time.monotonic()
            assert await until(lambda: cap.state == "failed", 3.0)
            assert time.monotonic() - started < 2.0
            assert cap.error == "input device 3 'mic_fifo': started but delivers no audio"
        finally:
            mouth.quiet.clear()  # a stream blocked on a dry pipe closes once data comes
            await cap.stop()


async def test_suspend_and_resume_follow_a_device_that_vanishes_and_comes_back(
    virtual_alsa, caplog
):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    states: list[tuple[str, str]] = []
    virtual_alsa.set_flaky(True, signal(4800, seed=8))
    config = AudioConfig(input_device="flaky", retry_s=30)  # only resume_device retries here
    cap = Capture(config, on_state=lambda s, e: states.append((s, e)), ring_s=RING_S)
    cap.listen(False)
    try:
        await cap.start()
        assert cap.state == "running"
        await cap.suspend_device()
        assert cap._port.pa is None and not cap.streaming
        await cap.suspend_device()  # idempotent
        virtual_alsa.set_flaky(False)  # the card is unplugged
        await cap.resume_device()  # a fresh enumeration does not list it
        assert cap.state == "failed"
        assert cap.error.startswith("no input device matches 'flaky'")
        assert cap._port.pa is None
        await cap.suspend_device()
        virtual_alsa.set_flaky(True, signal(4800, seed=9))  # and plugged in again
        await cap.resume_device()
        assert cap.state == "running"
        assert await until(lambda: not cap.streaming, 1.0)  # proved, then at rest: stopped
        cap.listen(True)
        assert await until(lambda: cap.streaming, 2.0)
    finally:
        await cap.stop()
    assert [s for s, _ in states] == ["running", "failed", "running", "stopped"]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
