"""The speaker, through REAL PortAudio over the virtual ALSA devices of virtual_alsa.py.

``speaker`` writes into a file and has no clock (the null slave runs as fast as the CPU): good
for exact content, useless for timing. ``speaker_fifo`` writes into a named pipe the test reads
at real-time pace, so "what the owner heard" is what the test has read: that is where barge-in
is measured. The file is complete only after the stream is closed (Playback.stop()).

Not the real library, and why (each marked where it is used): a pa_factory that fails on its
first calls, because a real device that fails to open and later opens cannot be made from ALSA
config alone within one PortAudio enumeration of a fixed device set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time

import numpy as np
import pyaudio
import pytest
from virtual_alsa import PIPE_SIZE

from appliance.audio.playback import Playback
from appliance.config.schema import AudioConfig

RATE = 44100
PERIOD_MS = 20
FPB = RATE * PERIOD_MS // 1000  # 882 frames per period at 44100
FADE_N = RATE * 5 // 1000  # 220 frames: 5 ms
# What PortAudio keeps in ALSA's buffer ahead of the pipe, measured here: 3 periods. Audio
# "handed to the device" is that much (plus what sits in the pipe) ahead of what was heard.
DEVICE_BUFFER_PERIODS = 3

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def alsa(virtual_alsa):  # the session's devices, reset before each test
    return virtual_alsa


def config(**overrides) -> AudioConfig:
    values = dict(output_device="speaker", volume=1.0, period_ms=PERIOD_MS, retry_s=0.1)
    values.update(overrides)
    return AudioConfig(**values)


def noise_answer(seconds: float, seed: int = 1) -> np.ndarray:
    """Random int16 with full-scale samples in it; first sample non-zero, last 10 ms silent
    (as a TTS answer ends), so the end fade leaves it unchanged and the output can be exact."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-32768, 32768, round(seconds * RATE), dtype=np.int32).astype(np.int16)
    x[:4] = [12345, 32767, -32768, 32767]
    x[-RATE // 100 :] = 0
    return x


def sine(seconds: float, rate: int = RATE, freq: float = 440.0, amp: float = 16000.0):
    t = np.arange(round(seconds * rate)) / rate
    return np.rint(amp * np.sin(2 * np.pi * freq * t + 0.3)).astype(np.int16)


def max_step(x: np.ndarray) -> int:
    return int(np.max(np.abs(np.diff(x.astype(np.int32))))) if len(x) > 1 else 0


def feed(p: Playback, item: str, x: np.ndarray, sizes=(1000, 3, 4410, 17, 2205)) -> None:
    """Deliver ``x`` in deltas of uneven size, as the server does (some an odd number of bytes)."""
    data = x.astype("<i2").tobytes()
    pos, i = 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)] * 2 + (1 if i % 3 == 1 else 0)
        p.play_answer(item, data[pos : pos + n])
        pos, i = pos + n, i + 1


def answer_region(out: np.ndarray) -> int:
    """Index of the first non-zero sample: where the answer starts in a speaker capture."""
    nz = np.flatnonzero(out)
    assert len(nz), "nothing was played"
    return int(nz[0])


@contextlib.asynccontextmanager
async def on_speaker_fifo(alsa, cfg: AudioConfig):
    """A started Playback on speaker_fifo; stopped while the pipe is drained, because a stream
    whose writer is blocked on a full pipe cannot close (an artefact of the pipe device: a
    real sound card never blocks for good)."""
    p = Playback(cfg, source_rate=RATE)
    await p.start()
    try:
        yield p
    finally:
        done = threading.Event()

        def drain() -> None:
            while not done.is_set():
                alsa.read_speaker_fifo(1 << 16, timeout=0.02)

        reader = threading.Thread(target=drain)
        reader.start()
        try:
            t = time.monotonic()
            await p.stop()
            assert time.monotonic() - t < 0.5, "stop() must be fast"
        finally:
            done.set()
            reader.join()


# ---- content ---------------------------------------------------------------------------------


async def capture(alsa, p: Playback, after_s: float = 0.1) -> np.ndarray:
    """What the listener hears: speaker_fifo, read as fast as it comes, until the queue is
    drained and then past the device's buffer and the pipe, plus ``after_s`` of silence."""
    got = bytearray()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10.0
    while not p.drained and loop.time() < deadline:
        got += alsa.read_speaker_fifo(1 << 16, timeout=0.01)
        await asyncio.sleep(0)
    more = PIPE_SIZE // 2 + DEVICE_BUFFER_PERIODS * p.frames_per_buffer
    target = len(got) + 2 * (more + round(after_s * p.device_rate))
    while len(got) < target and loop.time() < deadline:
        got += alsa.read_speaker_fifo(target - len(got), timeout=0.01)
        await asyncio.sleep(0)
    return np.frombuffer(bytes(got), dtype="<i2").astype(np.int16)


async def stalled(p: Playback) -> Playback:
    """Nobody has read speaker_fifo yet, so after a moment the device waits for the listener:
    the answer can be queued whole first, as when the server sends faster than real time."""
    assert p.state == "running"
    await asyncio.sleep(0.05)
    return p


async def test_answer_is_played_exactly_when_rates_match(alsa):
    x = noise_answer(1.0)
    async with on_speaker_fifo(alsa, config(output_device="speaker_fifo")) as p:
        assert (p.device_name, p.device_rate, p.frames_per_buffer) == ("speaker_fifo", RATE, FPB)
        feed(await stalled(p), "item_1", x)
        p.end_answer("item_1")
        out = await capture(alsa, p)
        assert p.audio_end_ms("item_1") == len(x) * 1000 // RATE == 1000
        assert p.playing_item is None and p.drained
        assert p.callback_errors == 0 and p.cut_frames == 0
        assert p.underruns == 0  # the silence after a finished answer is not an underrun
    start = answer_region(out)
    # Before the answer: PortAudio's prefill (2 periods) and idle periods, all silence.
    assert start >= 2 * FPB and start % FPB == 0
    assert np.array_equal(out[start : start + len(x)], x)  # byte-identical, full scale kept
    assert not out[start + len(x) :].any() and len(out) > start + len(x) + RATE // 20


async def test_speaker_file_holds_the_prefill_then_the_answer(alsa):
    # The file device has no clock: it plays as fast as the CPU, so the answer is queued in
    # one delta (one ring write) to come out without a gap, and ends in silence (as speech
    # does) so a gap before its held-back 5 ms tail could not show either.
    x = noise_answer(0.5, seed=3)
    async with Playback(config(), source_rate=RATE) as p:
        assert (p.device_name, p.device_rate) == ("speaker", RATE)
        p.play_answer("item_1", x.tobytes())
        p.end_answer("item_1")
        assert await p.wait_drained(5.0)
        assert p.audio_end_ms("item_1") == 500
    out = alsa.read_speaker()  # complete now that the stream is closed
    start = answer_region(out)
    assert start >= 2 * FPB and start % FPB == 0
    assert np.array_equal(out[start : start + len(x)], x)
    assert not out[start + len(x) :].any()


async def test_answer_resampled_to_48000(alsa):
    # The same sound synthesized at both rates: 44100 in, 48000 expected out.
    def speechy(rate: int) -> np.ndarray:
        t = np.arange(round(0.6 * rate)) / rate
        env = np.sin(np.pi * t / 0.6) ** 2  # smooth start and end
        y = sum(a * np.sin(2 * np.pi * f * t) for a, f in ((6000, 220), (4000, 1234), (2000, 3100)))
        return np.rint(env * y).astype(np.int16)

    x, ref = speechy(RATE), speechy(48000)
    cfg = config(output_device="speaker_fifo", output_rate=48000)
    async with on_speaker_fifo(alsa, cfg) as p:
        assert p.device_rate == 48000 and p.frames_per_buffer == 960
        feed(await stalled(p), "item_1", x)
        p.end_answer("item_1")
        out = (await capture(alsa, p)).astype(np.float64)
        assert abs(p.audio_end_ms("item_1") - 600) <= PERIOD_MS
    # Align by cross-correlation around the first audible sample, then compare.
    first = answer_region(np.where(np.abs(out) > 2, out, 0))
    lo = max(0, first - 2000)
    lags = np.correlate(out[lo : lo + len(ref) + 4000], ref.astype(np.float64), mode="valid")
    lag = lo + int(np.argmax(lags))
    corr = np.corrcoef(out[lag : lag + len(ref)], ref)[0, 1]
    assert corr > 0.99, corr
    # Length right within a period: the audible output ends where the reference ends.
    loud = np.flatnonzero(np.abs(out) > 50)
    expected_end = lag + np.flatnonzero(np.abs(ref) > 50)[-1]
    assert abs(int(loud[-1]) - int(expected_end)) <= 960


async def test_answers_one_after_another_each_play_as_if_resampled_alone(alsa):
    # Each answer is resampled from a clean start (an ended answer's resampler, flushed, serves
    # the next one): the second answer's samples are exactly those of a fresh resampler.
    from appliance.audio.resample import SPEECH_QUALITY, StreamResampler

    answers = [noise_answer(0.2, seed=3), noise_answer(0.3, seed=4), noise_answer(0.1, seed=5)]
    async with on_speaker_fifo(alsa, config(output_device="speaker_fifo", output_rate=48000)) as p:
        p = await stalled(p)
        for i, x in enumerate(answers):
            feed(p, f"item_{i}", x)
            p.end_answer(f"item_{i}")
        out = await capture(alsa, p)
    at = 0
    for x in answers:
        fresh = StreamResampler(RATE, 48000, quality=SPEECH_QUALITY)
        y = np.concatenate([fresh.process(x), fresh.flush()])
        y = y[: np.flatnonzero(y)[-1] + 1]  # (the last 10 ms are silent: the fade keeps them)
        at += answer_region(out[at:])
        assert np.array_equal(out[at : at + len(y)], y)
        at += len(y)


async def test_volume_half_halves_and_never_clips(alsa):
    x = noise_answer(0.3, seed=2)
    async with on_speaker_fifo(alsa, config(output_device="speaker_fifo", volume=0.5)) as p:
        assert p.volume == 0.5
        feed(await stalled(p), "item_1", x)
        p.end_answer("item_1")
        out = await capture(alsa, p)
    start = answer_region(out)
    y = out[start : start + len(x)].astype(np.int32)
    assert np.max(np.abs(y - x.astype(np.int32) / 2)) <= 0.5  # halved, rounded
    assert y.max() <= 16384 and y.min() >= -16384


async def test_volume_change_applies_from_the_next_period(alsa):
    x = sine(0.5)
    async with on_speaker_fifo(alsa, config(output_device="speaker_fifo")) as p:
        feed(await stalled(p), "item_1", x)
        p.end_answer("item_1")
        got = bytearray()
        while p.frames_played < RATE // 10:  # ~0.1 s of the answer played at full volume
            got += alsa.read_speaker_fifo(1 << 16, timeout=0.01)
            await asyncio.sleep(0)  # (the loop starts the stream)
        changed_at = p.frames_played
        p.volume = 0.25
        out = np.concatenate([np.frombuffer(bytes(got), dtype="<i2"), await capture(alsa, p)])
    start = answer_region(out)
    end = len(x) - FADE_N  # (the end fade is tested on its own)
    y = out[start : start + end].astype(np.int32)
    assert np.array_equal(y[:changed_at], x[:changed_at])
    later = changed_at + FPB  # the callback running at the change may have read the old gain
    assert np.max(np.abs(y[later:] - x[later:end].astype(np.int32) * 0.25)) <= 0.5


def test_volume_is_clamped():
    p = Playback(config(volume=0.8))
    assert p.volume == 0.8
    p.volume = 3
    assert p.volume == 1.0
    p.volume = -1
    assert p.volume == 0.0


async def test_end_answer_fades_out(alsa):
    x = sine(0.25, amp=20000)
    x = x[: np.flatnonzero(np.abs(x) > 19000)[-1] + 1]  # ends loud: without a fade, a pop
    async with on_speaker_fifo(alsa, config(output_device="speaker_fifo")) as p:
        feed(await stalled(p), "item_1", x)
        p.end_answer("item_1")
        out = await capture(alsa, p)
    start = answer_region(out)
    y = out[start : start + len(x) + FPB]
    assert np.array_equal(y[: len(x) - FADE_N], x[: len(x) - FADE_N])  # untouched before
    assert y[len(x) - 1] == 0 and not y[len(x) :].any()  # faded to exactly 0, then silence
    assert max_step(y) <= max_step(x)


async def test_an_answer_that_runs_dry_counts_one_underrun_and_waits_for_its_reserve(alsa):
    # The file device plays as fast as the CPU: a short delta runs dry at once.
    async with Playback(config(), source_rate=RATE) as p:
        p.play_earcon("sent")
        assert await p.wait_drained(2.0)
        assert p.underruns == 0  # silence with no answer open is not an underrun
        first = p.reserve_ms
        p.play_answer("item_1", sine(0.05).tobytes())  # 50 ms: less than the reserve
        await asyncio.sleep(first / 2000)
        assert p.audio_end_ms("item_1") == 0  # held for the reserve
        await asyncio.sleep(first / 1000)  # waited the reserve: it plays, and runs dry
        assert p.audio_end_ms("item_1") > 0
        assert p.underruns == 1  # one gap, not one per period
        callbacks = p.callbacks
        p.play_answer("item_1", sine(0.05).tobytes())  # after the gap: held again, longer
        assert p.reserve_ms >= 1.5 * first
        await asyncio.sleep(0.05)
        assert p.callbacks > callbacks and p.underruns == 1
        assert p.audio_end_ms("item_1") == 45  # the first delta but its 5 ms tail: held
        p.end_answer("item_1")  # complete: nothing more to wait for
        assert await p.wait_drained(2.0)
        assert p.audio_end_ms("item_1") == 100 and p.underruns == 1


# ---- barge-in ----------------------------------------------------------------------------------


async def read_paced(alsa, seconds: float, got: bytearray, until=None) -> None:
    """Read speaker_fifo in 20 ms chunks on a real-time schedule (the 'listener')."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for k in range(1, round(seconds / 0.02) + 1):
        await asyncio.sleep(max(0.0, start + k * 0.02 - loop.time()))
        got += alsa.read_speaker_fifo(FPB * 2, timeout=0.5)
        if until is not None and until(got):
            return


async def test_flush_reports_what_was_heard_and_goes_silent(alsa):
    x = sine(2.0)  # a whole answer, delivered faster than real time
    pipe_frames = PIPE_SIZE // 2
    async with on_speaker_fifo(alsa, config(output_device="speaker_fifo")) as p:
        got = bytearray()
        p.play_answer("item_1", x.tobytes())

        def heard_half_a_second(buf: bytearray) -> bool:
            a = np.frombuffer(bytes(buf), dtype="<i2")
            nz = np.flatnonzero(a)
            return len(nz) > 0 and len(a) - nz[0] >= RATE // 2

        await read_paced(alsa, 3.0, got, until=heard_half_a_second)
        before = np.frombuffer(bytes(got), dtype="<i2")
        start = answer_region(before)
        read_ms = (len(before) - start) * 1000 / RATE
        cut = p.flush()
        assert set(cut) == {"item_1"}
        # Handed to the device = read by the listener + what sits in the pipe and in ALSA's
        # buffer + the <= 5 ms fade that still plays after the flush.
        in_flight = pipe_frames + DEVICE_BUFFER_PERIODS * FPB + FADE_N
        assert read_ms <= cut["item_1"] <= read_ms + in_flight * 1000 / RATE
        assert p.audio_end_ms("item_1") == cut["item_1"]
        assert p.playing_item is None
        p.play_answer("item_1", x[:4410].tobytes())  # a late delta of the cut answer
        assert p.drained  # ... is not played
        await read_paced(alsa, 0.3, got)
    out = np.frombuffer(bytes(got), dtype="<i2")
    after = out[len(before) :]
    last = int(np.flatnonzero(after)[-1]) if after.any() else -1
    # Silent once what was already in the pipe and ALSA's buffer, and the 5 ms fade, are out.
    assert last < in_flight
    assert len(after) > last + RATE // 10  # (and it was read for long enough to tell)
    # What came out of the speaker is exactly what flush() reported as heard.
    played = len(before) + last + 1 - start
    assert abs(played * 1000 // RATE - cut["item_1"]) <= 1
    # The cut fades: no step larger than the signal's own.
    assert max_step(out[start:]) <= max_step(x)
    assert np.array_equal(out[start : start + played - FADE_N], x[: played - FADE_N])


async def test_overlong_answer_is_cut_with_one_warning(alsa, caplog):
    # Nobody reads speaker_fifo: the device stalls once the pipe is full, the ring fills up.
    cfg = config(output_device="speaker_fifo", playback_buffer_s=0.5)
    x = sine(2.0)
    with caplog.at_level(logging.WARNING, logger="appliance"):
        async with on_speaker_fifo(alsa, cfg) as p:
            await asyncio.sleep(0.05)
            for i in range(0, len(x), 4410):
                p.play_answer("item_1", x[i : i + 4410].tobytes())
            p.end_answer("item_1")
            ring = p._ring  # (white box: to show queued audio was never dropped)
            assert ring is not None and ring.dropped_frames == 0 and ring.free == 0
            assert p.cut_frames > 0
            assert p.cut_frames + len(ring) + p.frames_played == len(x)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "longer than the 0.5 s playback buffer" in warnings[0].message


# ---- device failures -------------------------------------------------------------------------


def same_audio(out: np.ndarray, x: np.ndarray) -> bool:
    """``x`` came out whole and in order. The file device has no clock and may run dry between
    deltas, which inserts silence: compare the non-zero samples only."""
    return np.array_equal(out[out != 0], x[x != 0])


async def test_missing_device_fails_with_one_warning_and_keeps_retrying(alsa, caplog):
    calls = []

    def counting_pa():  # the real PyAudio, counted
        calls.append(1)
        return pyaudio.PyAudio()

    states = []
    cfg = config(output_device="no_such_speaker")
    with caplog.at_level(logging.DEBUG, logger="appliance"):
        p = Playback(cfg, pa_factory=counting_pa, on_state=lambda s, e: states.append((s, e)))
        await p.start()
        assert p.state == "failed"
        assert "no output device matches 'no_such_speaker'" in p.error
        assert "speaker" in p.error  # ... and it says what there is
        p.play_answer("item_1", sine(0.1).tobytes())  # nowhere to play: said, not raised
        p.play_answer("item_1", sine(0.1).tobytes())
        await asyncio.sleep(0.45)
        assert p.state == "failed" and len(calls) >= 3
        t = time.monotonic()
        await p.stop()
        await p.stop()  # idempotent
        assert time.monotonic() - t < 0.5 and p.state == "stopped"
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "no_such_speaker" in w]) == 1
    assert len([w for w in warnings if "not played" in w]) == 1  # once per answer
    assert [s for s, _ in states] == ["failed", "stopped"]  # on_state: once per change
    assert "no_such_speaker" in states[0][1]


async def test_recovers_after_the_device_fails_to_open(alsa, caplog):
    # NOT the real library for the first two calls: PortAudio initialisation "fails" (as it
    # does when the sound card's driver is not up yet); from the third call on, real PyAudio.
    calls = []

    def flaky_pa():
        calls.append(1)
        if len(calls) <= 2:
            raise OSError("[Errno -9999] Unanticipated host error")
        return pyaudio.PyAudio()

    states = []
    with caplog.at_level(logging.INFO, logger="appliance"):
        async with Playback(
            config(), pa_factory=flaky_pa, on_state=lambda s, e: states.append(s)
        ) as p:
            assert p.state == "failed" and "Unanticipated host error" in p.error
            for _ in range(100):
                if p.state == "running":
                    break
                await asyncio.sleep(0.02)
            assert p.state == "running" and p.error is None
            x = noise_answer(0.2)
            feed(p, "item_1", x)
            p.end_answer("item_1")
            assert await p.wait_drained(2.0)
    assert same_audio(alsa.read_speaker(), x)
    messages = [r.message for r in caplog.records]
    assert len([m for m in messages if "trying again in" in m]) == 1
    assert len([m for m in messages if "back on 'speaker'" in m]) == 1
    assert states == ["failed", "running", "stopped"]


async def test_stream_that_dies_is_reopened_when_the_device_works_again(alsa, caplog):
    # The speaker's output file cannot be written (a directory is in its place): PortAudio
    # opens the stream, the first write fails and the stream dies, as when a USB speaker is
    # unplugged. Every retry dies the same way until the file can be written again.
    spk = alsa.speaker_file
    spk.unlink()
    spk.mkdir()
    try:
        with caplog.at_level(logging.INFO, logger="appliance"):
            async with Playback(config()) as p:
                # Opened and stopped: nothing has tried the device yet.
                assert p.state == "running" and not p.running
                p.play_earcon("listening")  # the start finds it
                for _ in range(100):
                    if p.state == "failed":
                        break
                    await asyncio.sleep(0.02)
                assert p.state == "failed" and "output stream stopped" in p.error
                await asyncio.sleep(0.4)  # several retries, each dying again
                spk.rmdir()
                for _ in range(150):
                    if p.state == "running":
                        break
                    await asyncio.sleep(0.02)
                assert p.state == "running"
                x = noise_answer(0.2, seed=5)
                feed(p, "item_1", x)
                p.end_answer("item_1")
                assert await p.wait_drained(2.0)
    finally:
        if spk.is_dir():
            spk.rmdir()
    assert same_audio(alsa.read_speaker(), x)
    messages = [r.message for r in caplog.records if r.name.startswith("appliance")]
    assert len([m for m in messages if "trying again in" in m]) == 1
    assert len([m for m in messages if "back on" in m]) == 1


# ---- the stream runs only while something plays ----------------------------------------------


def speaker_tasks() -> list[str]:
    return [
        t.get_name() for t in asyncio.all_tasks() if t.get_name() in ("speaker", "speaker-retry")
    ]


async def test_stream_is_stopped_at_rest_started_by_an_earcon_and_stopped_after_draining(alsa):
    from appliance.audio.earcons import earcon

    async with Playback(config(speaker_idle_s=0.5), source_rate=RATE) as p:
        assert p.state == "running"  # opened, and the device is fine
        await asyncio.sleep(0.2)
        # At rest: no callbacks, nothing running on the loop for the speaker.
        assert not p.running and p.callbacks == 0 and p.starts == 0
        assert speaker_tasks() == []
        p.play_earcon("listening")  # the press: the earcon starts the stream
        assert await p.wait_drained(2.0)
        assert p.running and p.starts == 1 and p.callbacks > 0
        await asyncio.sleep(0.2)
        assert p.running  # kept running for a while after the sound
        for _ in range(100):
            if not p.running:
                break
            await asyncio.sleep(0.02)
        assert not p.running and p.stops == 1 and p.state == "running"
        await asyncio.sleep(0.05)
        callbacks = p.callbacks
        await asyncio.sleep(0.2)
        assert p.callbacks == callbacks and speaker_tasks() == []
        x = noise_answer(0.2, seed=7)
        p.play_answer("item_1", x.tobytes())  # an answer starts it again
        p.end_answer("item_1")
        assert await p.wait_drained(2.0)
        assert p.starts == 2
    out = alsa.read_speaker()
    # The earcon played whole from its first sample: the start delayed it, it did not clip it.
    ding = earcon("listening", RATE)
    start = answer_region(out) - answer_region(ding)
    assert start >= 2 * FPB and start % FPB == 0  # after PortAudio's prefill: a new start
    assert np.array_equal(out[start : start + len(ding)], ding)
    assert same_audio(out[start + len(ding) :], x)


async def test_short_sounds_between_two_looks_keep_the_stream_running(alsa):
    # A clockless device plays an earcon at once, so the ring is empty whenever the loop looks:
    # what was played since the last look counts as sound all the same (no stop and start
    # between sounds that come more often than speaker_idle_s).
    async with Playback(config(speaker_idle_s=0.5), source_rate=RATE) as p:
        for _ in range(12):
            p.play_earcon("listening")
            await asyncio.sleep(0.15)
            assert p.drained
        assert p.starts == 1 and p.stops == 0 and p.running
        for _ in range(100):
            if not p.running:
                break
            await asyncio.sleep(0.02)
        assert p.stops == 1 and not p.running  # quiet for speaker_idle_s: stopped


async def test_answer_waits_for_its_reserve_unless_it_comes_faster_than_real_time(alsa):
    async with on_speaker_fifo(alsa, config(output_device="speaker_fifo")) as p:
        reserve = p.reserve_ms
        got = bytearray()
        reader = asyncio.create_task(read_paced(alsa, 3.0, got))
        # In 40 ms deltas at real time: it waits for the reserve.
        x = sine(0.6)
        step = RATE * 40 // 1000
        t0 = time.monotonic()
        for k, i in enumerate(range(0, len(x), step)):
            await asyncio.sleep(max(0.0, t0 + k * 0.04 - time.monotonic()))
            p.play_answer("item_1", x[i : i + step].tobytes())
        p.end_answer("item_1")
        waited = (p.first_sound_at("item_1") - t0) * 1000
        assert reserve - 5 <= waited <= reserve + 4 * PERIOD_MS, waited
        assert await p.wait_drained(3.0) and p.underruns == 0
        # All at once (a burst): it starts at once.
        t0 = time.monotonic()
        p.play_answer("item_2", sine(0.6).tobytes())
        p.end_answer("item_2")
        assert await p.wait_drained(3.0)
        assert (p.first_sound_at("item_2") - t0) * 1000 <= 4 * PERIOD_MS  # < the reserve
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


# ---- suspend and resume (the sound cards changed) ----------------------------------------------


async def test_suspend_and_resume_device(alsa, caplog):
    # NOT the real library while "the card is gone": the factory fails on demand (one
    # enumeration of the fixed virtual devices cannot lose a card); real PyAudio otherwise.
    gone = False
    inits = []

    def pa_factory():
        inits.append(1)
        if gone:
            raise OSError("[Errno -9996] Invalid output device (no default output device)")
        return pyaudio.PyAudio()

    states = []
    with caplog.at_level(logging.INFO, logger="appliance"):
        async with Playback(
            config(), pa_factory=pa_factory, on_state=lambda s, e: states.append(s)
        ) as p:
            p.play_earcon("listening")
            assert await p.wait_drained(2.0)
            await p.suspend_device()
            await p.suspend_device()  # idempotent
            assert p.state == "running" and not p.running and p.drained
            p.play_answer("item_1", sine(0.1).tobytes())  # nowhere to play: said once
            await p.resume_device()  # a fresh PortAudio: a new enumeration
            assert len(inits) == 2 and p.state == "running" and not p.running
            x = noise_answer(0.2, seed=9)
            p.play_answer("item_2", x.tobytes())
            p.end_answer("item_2")
            assert await p.wait_drained(2.0)
            gone = True
            await p.suspend_device()  # closed: the speaker's file is complete
            heard, sent = alsa.read_speaker(), x[x != 0]
            assert np.array_equal(heard[heard != 0], sent)  # played whole after resume
            await p.resume_device()
            assert p.state == "failed" and "Invalid output device" in p.error
            await asyncio.sleep(0.35)  # quiet retries: after 0.1 s, then 0.2 s
            assert len(inits) >= 4 and p.state == "failed"
            gone = False
            for _ in range(100):
                if p.state == "running":
                    break
                await asyncio.sleep(0.02)
            assert p.state == "running"
    assert states == ["running", "failed", "running", "stopped"]
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "suspended" in w and "item_1" in w]) == 1
    assert len([w for w in warnings if "Invalid output device" in w]) == 1  # then quiet


async def test_every_portaudio_call_holds_the_lock(alsa, monkeypatch):
    from appliance.audio.devices import PORTAUDIO_LOCK

    unlocked: list[str] = []

    def check(what: str) -> None:
        if not PORTAUDIO_LOCK._is_owned():
            unlocked.append(what)

    def checked(obj, name):
        real = getattr(obj, name)

        def call(*args, **kwargs):
            check(name)
            return real(*args, **kwargs)

        return call

    class CheckedPyAudio(pyaudio.PyAudio):
        def __init__(self):
            check("initialize")
            super().__init__()

        def terminate(self):
            check("terminate")
            super().terminate()

        def open(self, *args, **kwargs):
            check("open")
            stream = super().open(*args, **kwargs)
            for name in ("start_stream", "stop_stream", "close"):
                setattr(stream, name, checked(stream, name))
            return stream

    monkeypatch.setattr(pyaudio.pa, "abort_stream", checked(pyaudio.pa, "abort_stream"))
    async with Playback(
        config(speaker_idle_s=0.3), pa_factory=CheckedPyAudio, source_rate=RATE
    ) as p:
        p.play_earcon("sent")
        assert await p.wait_drained(2.0)
        for _ in range(100):
            if not p.running:
                break
            await asyncio.sleep(0.02)
        assert p.stops == 1
        await p.suspend_device()
        await p.resume_device()
    assert unlocked == []


async def test_the_rings_memory_goes_back_when_the_speaker_rests(alsa):
    """An answer that came far ahead of its playing filled the ring; once the speaker has
    stopped at rest, those pages are the kernel's again (a box holds no audio memory idle)."""
    from test_ring_tracker import resident_kb

    async with Playback(config(speaker_idle_s=0.3), source_rate=RATE) as p:
        x = noise_answer(8.0, seed=3)  # 8 s at once: 700 kB queued before it plays
        p.play_answer("item_1", x.tobytes())
        p.end_answer("item_1")
        assert resident_kb(p._ring) >= 500
        assert await p.wait_drained(10.0)
        for _ in range(150):  # stopped speaker_idle_s after it drained
            if not p.running and p.stops:
                break
            await asyncio.sleep(0.02)
        assert not p.running and p.stops == 1
        assert resident_kb(p._ring) <= 8


async def test_with_echo_cancellation_the_speaker_has_headroom(alsa):
    """Hands-free (an echo reference tap) asks PortAudio for a 100 ms output buffer, so a
    held-up callback thread does not let the device run dry; push-to-talk keeps PortAudio's
    default low latency (a button barge-in stops what the device holds)."""
    from appliance.audio.devices import set_default_latency
    from appliance.audio.echo_reference import ReferenceTap
    from appliance.audio.playback import OUTPUT_HEADROOM_S

    pa = pyaudio.PyAudio()  # keeps PortAudio's table alive: restored by hand below
    index = alsa.index_of(pa, "speaker")
    before = pa.get_device_info_by_index(index)["defaultLowOutputLatency"]
    try:
        latencies = {}
        for name, tap in (("plain", None), ("tap", ReferenceTap())):
            async with Playback(config(), source_rate=RATE, tap=tap) as p:
                latencies[name] = p.latency_s
        assert latencies["plain"] < 0.08
        assert latencies["tap"] >= 0.8 * OUTPUT_HEADROOM_S > latencies["plain"]
        assert tap.output_latency_s == latencies["tap"]  # the tap is told the buffer's size
    finally:
        set_default_latency(index, before, output=True)
        pa.terminate()


def test_a_device_underrun_is_counted():
    """PortAudio flags the buffer after the device ran dry (paOutputUnderflow): counted for
    the status, whatever was playing. (The callback is called directly: the virtual devices
    never run dry, their writer blocks instead.)"""
    p = Playback(config(), source_rate=RATE)
    gen = p._device.gen
    p._callback(gen, None, 480, {}, 0)
    assert p.device_underruns == 0
    p._callback(gen, None, 480, {}, pyaudio.paOutputUnderflow)
    p._callback(gen, None, 480, {}, pyaudio.paOutputUnderflow | pyaudio.paOutputOverflow)
    assert p.device_underruns == 2 and p.callback_errors == 0
