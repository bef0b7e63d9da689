"""Echo cancellation: the speexdsp canceller on a synthetic room, and the far-end reference.

The canceller tests use a seeded, speech-like far end (band-limited noise with a syllable
envelope) through a room of a 30 ms delay and a decaying 120 ms tail; the bounds are a little
below the bench's targets (bench/echo.py). Skipped, with the reason, where libspeexdsp is
missing. The ReferenceTap tests are pure: a fake clock drives simulated callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time

import numpy as np
import pytest

from appliance.audio.echo import EchoCanceller
from appliance.audio.echo_reference import INPUT_OVERFLOW, DelayEstimator, InputGaps, ReferenceTap

RATE = 24000
needs_speex = pytest.mark.skipif(
    not EchoCanceller.available(), reason=EchoCanceller.unavailable_reason() or "no speexdsp"
)


def speechlike(seconds: float, seed: int, pitch: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / RATE)
    spec[(f < 200) | (f > 4000)] = 0
    x = np.fft.irfft(spec, n)
    x = x / np.std(x) + 0.3 * np.sign(np.sin(2 * np.pi * pitch * t))
    syllables = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    words = (rng.random(int(seconds * 2) + 1) > 0.25).repeat(RATE // 2)[:n]
    return x * syllables * words


def room(seed: int, delay_ms: float = 30.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(0.12 * RATE)
    tail = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n) * 0.3
    tail[0] = 1.0
    return np.concatenate([np.zeros(int(delay_ms * RATE / 1000)), tail])


def scene(seconds: float = 12.0, seed: int = 3, delay_ms: float = 30.0):
    """(mic int16, far int16, near float, double-talk mask): near end from 8 to 10 s."""
    far = speechlike(seconds, seed, 110) * 3000
    echo = np.convolve(far, room(seed, delay_ms))[: len(far)]
    echo *= 3000 / np.std(echo)
    near = np.zeros_like(far)
    a, b = min(len(far), 8 * RATE), min(len(far), 10 * RATE)
    near[a:b] = (speechlike(2.0, seed + 1, 210) * 2500)[: b - a]
    mask = np.zeros(len(far), dtype=bool)
    mask[a:b] = True
    mic = echo + near + np.random.default_rng(seed).standard_normal(len(far)) * 3
    to16 = lambda x: np.clip(np.rint(x), -32768, 32767).astype(np.int16)  # noqa: E731
    return to16(mic), to16(far), near, mask


def run(ec: EchoCanceller, mic: np.ndarray, far: np.ndarray, sizes) -> np.ndarray:
    outs, pos = [], 0
    sizes = iter(sizes)
    while pos < len(mic):
        n = next(sizes)
        outs.append(ec.process(mic[pos : pos + n], far[pos : pos + n]))
        assert len(outs[-1]) == len(mic[pos : pos + n])
        pos += n
    return np.concatenate(outs)


@needs_speex
def test_cancels_echo_and_keeps_near_end():
    mic, far, near, mask = scene()
    ec = EchoCanceller()
    out = run(ec, mic, far, iter(lambda: 480, None)).astype(float)  # 20 ms, as Capture gives
    assert len(out) == len(mic)
    d = ec.delay
    assert 0 <= d <= ec.frame
    out = out[d:]
    m = mic[: len(out)].astype(float)
    after = np.arange(len(out)) >= 4 * RATE  # converged
    far_only = after & ~mask[: len(out)] & (np.abs(m) > 300)
    erle = 10 * np.log10(np.sum(m[far_only] ** 2) / np.sum(out[far_only] ** 2))
    assert erle >= 15, f"ERLE {erle:.1f} dB"
    dt = mask[: len(out)]
    corr = np.corrcoef(out[dt], near[: len(out)][dt])[0, 1]
    assert corr > 0.8, f"near-end correlation {corr:.3f}"


def erle_and_corr(ec: EchoCanceller, mic, far, near, mask, settled_s=4.0) -> tuple[float, float]:
    out = run(ec, mic, far, iter(lambda: 480, None)).astype(float)[ec.delay :]
    m = mic[: len(out)].astype(float)
    after = np.arange(len(out)) >= settled_s * RATE  # converged
    far_only = after & ~mask[: len(out)] & (np.abs(m) > 300)
    erle = 10 * np.log10(np.sum(m[far_only] ** 2) / np.sum(out[far_only] ** 2))
    dt = mask[: len(out)]
    return float(erle), float(np.corrcoef(out[dt], near[: len(out)][dt])[0, 1])


@needs_speex
@pytest.mark.parametrize("delay_ms", [250, 350])
def test_a_late_echo_is_cancelled_once_its_delay_is_measured(delay_ms):
    """The echo comes 250/350 ms after its reference (a device buffering more than it says):
    beyond the 200 ms filter, unless the reference is moved by the measured delay (the
    bounds: the first test's; the bench measures 40-150 ms against the targets). The delay
    is found after ~2 s of speech, and the filter learns the path afresh then (~3-4 s)."""
    mic, far, near, mask = scene(delay_ms=delay_ms)
    aligned = EchoCanceller()
    erle, corr = erle_and_corr(aligned, mic, far, near, mask, settled_s=6.5)
    assert aligned.estimator is not None
    assert abs(aligned.estimator.delay - delay_ms * RATE // 1000) <= RATE // 1000  # 1 ms
    assert aligned.realigns == 1
    # (near-end: the same scene with the reference placed by hand keeps 0.91; the residual
    # suppressor right after the filter started afresh takes a little more of it)
    assert erle >= 20 and corr >= 0.75, (erle, corr)
    unaligned_erle, _ = erle_and_corr(EchoCanceller(align=False), mic, far, near, mask, 6.5)
    assert unaligned_erle < erle - 6, (unaligned_erle, erle)


def echo_of(far: np.ndarray, delay_ms: float, seed: int) -> np.ndarray:
    return np.convolve(far, room(seed, delay_ms))[: len(far)]


@pytest.mark.parametrize("delay_ms", [0, 40, 80, 130, 150, 300])
def test_delay_estimator_finds_a_known_delay(delay_ms):
    far = speechlike(6.0, 7, 110) * 3000
    near = np.zeros_like(far)
    near[3 * RATE : 5 * RATE] = speechlike(2.0, 8, 210) * 3000  # double talk
    mic = echo_of(far, delay_ms, 7) + near + np.random.default_rng(7).standard_normal(len(far))
    est = DelayEstimator()
    seen = [est.update(mic[i : i + 480], far[i : i + 480]) for i in range(0, len(far), 480)]
    assert est.delay is not None
    assert abs(est.delay - delay_ms * RATE / 1000) <= RATE / 1000  # within 1 ms
    assert est.changes == 1  # found once, then kept through the double talk
    first = next(i for i, d in enumerate(seen) if d is not None)
    assert first * 0.02 <= 2.5  # found within 2.5 s of speech


def test_delay_estimator_follows_a_new_path_and_ignores_silence():
    est = DelayEstimator()
    quiet = np.zeros(RATE * 3)
    noise = np.random.default_rng(1).standard_normal(len(quiet)) * 30  # the mic's own noise
    for i in range(0, len(quiet), 480):
        assert est.update(noise[i : i + 480], quiet[i : i + 480]) is None  # nothing played
    far = speechlike(8.0, 9, 110) * 3000
    mic = np.concatenate([echo_of(far[: 4 * RATE], 40, 9), echo_of(far[4 * RATE :], 130, 9)])
    delays = []
    for i in range(0, len(far), 480):
        delays.append(est.update(mic[i : i + 480], far[i : i + 480]))
    assert abs(delays[4 * 50 - 1] - 40 * 24) <= 24  # 40 ms before the change at 4 s
    assert abs(delays[-1] - 130 * 24) <= 24  # 130 ms within 4 s after it
    assert est.changes == 2
    est.reset()
    assert est.delay is None and est.changes == 0


def test_delay_estimator_at_48k_and_with_odd_chunks():
    rate = 48000
    t = speechlike(6.0, 4, 120)
    far = np.repeat(t, 2) * 3000  # 48 kHz, crudely
    mic = np.concatenate([np.zeros(int(0.09 * rate)), far])[: len(far)] * 0.5
    est = DelayEstimator(rate)
    rng = np.random.default_rng(2)
    pos = 0
    while pos < len(far):
        n = int(rng.integers(1, 2000))
        est.update(mic[pos : pos + n], far[pos : pos + n])
        pos += n
    assert est.delay is not None and abs(est.delay - 0.09 * rate) <= rate / 1000


@needs_speex
def test_odd_chunks_give_the_same_output_delayed_by_less_than_a_frame():
    mic, far, _, _ = scene(3.0)
    whole = run(EchoCanceller(), mic, far, iter(lambda: 480, None))
    rng = np.random.default_rng(5)
    ec = EchoCanceller()
    odd = run(ec, mic, far, iter(lambda: int(rng.integers(1, 700)), None))
    assert len(odd) == len(mic)
    short = ec.delay - EchoCanceller().delay  # what the odd chunks added: once, a frame - 1
    assert short == ec.frame - 1
    assert odd[short:].tobytes() == whole[: len(whole) - short].tobytes()
    assert not odd[:short].any()


@needs_speex
def test_reset_and_arguments():
    ec = EchoCanceller()
    mic, far, _, _ = scene(1.0)
    first = run(ec, mic, far, iter(lambda: 480, None))
    ec.reset()
    again = run(ec, mic, far, iter(lambda: 480, None))
    assert first.tobytes() == again.tobytes()  # a fresh start: the same output
    assert len(ec.process(np.zeros(0, np.int16), np.zeros(0, np.int16))) == 0
    with pytest.raises(ValueError):
        ec.process(np.zeros(10, np.int16), np.zeros(9, np.int16))
    with pytest.raises(ValueError):
        EchoCanceller(library="nope")
    ec.close()


def test_available_is_a_bool_for_any_library():
    assert isinstance(EchoCanceller.available(), bool)
    assert EchoCanceller.available("nope") is False


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def simulate(tap: ReferenceTap, clock: FakeClock, far48: np.ndarray, in_lat: float, chunks: int):
    """Output callbacks of 10 ms at 48 kHz from t=0, mic chunks of 20 ms delivered ``in_lat``
    after their last sample was captured; returns the reference read for the mic chunks."""
    events = [(k * 0.01, 0, k) for k in range(len(far48) // 480)]
    events += [((m + 1) * 0.02 + in_lat, 1, m) for m in range(chunks)]
    refs = []
    for t, kind, k in sorted(events):
        clock.t = t
        if kind == 0:
            tap.feed(far48[k * 480 : (k + 1) * 480])
        else:
            refs.append(tap.read(480, t))
    return np.concatenate(refs)


def test_reference_is_aligned_by_the_latencies():
    clock = FakeClock()
    tap = ReferenceTap(24000, lead_ms=20, clock=clock)
    tap.open(48000, 0.05)
    tap.set_input_latency(0.03)
    far48 = np.zeros(48000 * 3, dtype=np.int16)
    far48[48000 : 48000 + 48] = 20000  # a 1 ms click at 1.000 s, handed to the device then
    ref = simulate(tap, clock, far48, 0.03, 100)  # 2 s of mic chunks
    # The click is heard at 1.000 s + 50 ms output latency, i.e. mic sample 25200; the
    # reference has it lead_ms (480 samples) earlier, at 24720.
    peak = int(np.argmax(np.abs(ref)))
    assert abs(peak - (24000 + 1200 - 480)) <= 3, peak
    assert tap.resyncs == 0


def test_reference_resyncs_after_a_gap_and_is_silent_without_playback():
    clock = FakeClock()
    tap = ReferenceTap(24000, clock=clock)
    assert not tap.read(480).any()  # never opened: silence
    tap.open(24000, 0.0)
    assert not tap.read(480).any()  # nothing fed yet: silence
    for k in range(50):  # 1 s of a constant tone fed, 20 ms at a time
        clock.t = k * 0.02
        tap.feed(np.full(480, 1000, dtype=np.int16))
    first = tap.read(480, clock.t)
    assert first.any()
    clock.t += 5.0  # the mic was paused for 5 s: the ring overran meanwhile
    for _ in range(50):
        tap.feed(np.full(480, 2000, dtype=np.int16))
        clock.t += 0.02
    ref = tap.read(480, clock.t - 0.1)
    assert tap.resyncs == 1
    assert set(np.unique(ref)) <= {0, 2000} and (ref == 2000).any()


def test_reopen_at_another_rate_starts_again():
    clock = FakeClock()
    tap = ReferenceTap(24000, lead_ms=0, clock=clock)
    tap.open(24000, 0.0)
    tap.feed(np.full(4800, 100, dtype=np.int16))
    clock.t = 0.2
    assert (tap.read(480, 0.2) == 100).all()
    tap.open(48000, 0.0)  # the speaker came back at 48 kHz
    tap.feed(np.full(9600, 300, dtype=np.int16))  # 200 ms handed at 0.2 s
    clock.t = 0.3
    ref = tap.read(480, 0.3)  # what played from 80 to 100 ms into it
    assert np.abs(ref[50:-50].astype(int) - 300).max() <= 2  # resampled; edges of the filter


# ---- lost microphone samples -------------------------------------------------------------------


def feed_gaps(gaps: InputGaps, buffers) -> list[bytes]:
    """``buffers``: (adc time, status[, now]); 480 frames each."""
    out: list[bytes] = []
    for k, (adc, status, *now) in enumerate(buffers):
        data = bytes([k % 250 + 1]) * 960  # one buffer's 480 frames, recognisable
        out += gaps.process(data, adc, 480, status, now[0] if now else 50.0 + k)
    return out


def test_input_gaps_fills_what_an_overflow_lost_to_the_sample():
    gaps = InputGaps(24000, 2, settle=5)
    # A pointer that moves in 4 ms steps: each ADC time up to 4 ms late; the loss is 40 ms.
    jitter = [0.003, 0.0, 0.0015, 0.0039, 0.001, 0.0, 0.002, 0.0035, 0.0, 0.0005, 0.003]
    buffers = [(10.0 + k * 0.02 + jitter[k], 0) for k in range(6)]  # on time, jittered
    buffers.append((10.0 + 8 * 0.02 + jitter[6], INPUT_OVERFLOW))  # after the overrun
    buffers += [(10.0 + k * 0.02 + jitter[k - 2], 0) for k in range(9, 13)]
    out = feed_gaps(gaps, buffers)
    assert [len(x) for x in out] == [960] * 6 + [960 * 2] + [960] * 5  # the held 5 at once
    assert not any(out[6]) and out[7] == bytes([7]) * 960  # silence, then the buffers held
    assert (gaps.lost_frames, gaps.losses, list(gaps.recent)) == (960, 1, [960])


def test_input_gaps_errors_do_not_add_up():
    """400 losses of 40 ms, ADC times up to 4 ms late (uniform, seeded): the silence filled
    is the loss, over all of them, to within 25 ms (12 ms short here: each estimate is as late
    before the loss as after it; the least of many before against the least of 10 after was
    70 ms over, the echo drifting later loss after loss)."""
    gaps = InputGaps(24000, 2)
    late = np.random.default_rng(7).uniform(0, 0.004, 400 * 32)
    for n in range(400 * 32):
        if n % 32 in (29, 30):  # two buffers lost
            continue
        flag = INPUT_OVERFLOW if n % 32 == 31 else 0
        gaps.process(b"", 10.0 + n * 0.02 + late[n], 480, flag, 0.0)
    assert gaps.losses == 399  # the last one is still held
    assert abs(gaps.lost_frames - 399 * 960) <= 600, gaps.lost_frames - 399 * 960


def test_input_gaps_ignores_jitter_and_restarts():
    gaps = InputGaps(24000, 2, settle=5)
    late = [(10.0 + k * 0.02 + (0.015 if k == 3 else 0), 0) for k in range(6)]
    assert len(feed_gaps(gaps, late)) == 6  # 15 ms late, not flagged: jitter
    flagged = [(10.12, INPUT_OVERFLOW)] + [(10.14 + k * 0.02, 0) for k in range(4)]
    out = feed_gaps(gaps, flagged)  # flagged, nothing missing
    assert [len(x) for x in out] == [960] * 5 and gaps.losses == 0
    assert gaps.process(b"x", 99.0, 480, INPUT_OVERFLOW, 60.0, armed=True) == [b"x"]  # a start
    out = feed_gaps(gaps, [(102.0, INPUT_OVERFLOW)] + [(102.02 + k * 0.02, 0) for k in range(4)])
    assert [len(x) for x in out] == [960] * 5  # held, then handed on without silence
    assert (gaps.lost_frames, gaps.losses, gaps.unfilled) == (0, 1, 1)  # 3 s: not filled


def test_input_gaps_without_timestamps_measures_by_arrival():
    gaps = InputGaps(48000, 2, settle=5)
    out = feed_gaps(gaps, [(0.0, 0, 5.0 + k * 0.01) for k in range(3)])
    late = [(0.0, INPUT_OVERFLOW, 5.11)] + [(0.0, 0, 5.12 + k * 0.01) for k in range(4)]
    out += feed_gaps(gaps, late)
    assert gaps.lost_frames == round(0.08 * 48000) and len(out) == 3 + 1 + 5


def echo_capture(tap: ReferenceTap):
    """A Capture with echo cancellation and its stream, not opened: the test is PortAudio."""
    from appliance.audio.capture import Capture
    from appliance.audio.devices import DeviceInfo
    from appliance.audio.mic_stream import MicStream
    from appliance.config.schema import AudioConfig

    config = AudioConfig(input_rate=RATE)
    cap = Capture(config, echo=(EchoCanceller(), tap))
    stream = MicStream(
        DeviceInfo(0, "simulated mic", 1, 0, RATE),
        RATE,
        1,
        period_ms=config.period_ms,
        api_rate=RATE,
        ring_s=2.0,
        loop=None,
        first_audio=cap._first_audio,
    )
    cap._active = stream
    return cap, stream


def test_the_loops_chunk_ends_where_its_stamp_says():
    """MicStream.captured_end: PortAudio's capture time of the end of what the loop has taken,
    whether the callback ran after the take or the full ring dropped its oldest chunks."""
    tap = ReferenceTap(RATE)
    _, stream = echo_capture(tap)
    period = stream.period  # 20 ms

    def callback(k: int) -> None:  # buffer k was captured from 10 s + k periods on
        stream.timed_callback(
            bytes(2 * period), period, {"input_buffer_adc_time": 10 + k * 0.02}, 0
        )

    assert stream.captured_end() == 0.0  # nothing stamped yet
    for k in range(5):
        callback(k)
    stream.ring.take()
    assert stream.captured_end() == pytest.approx(10.1)
    callback(5)  # after the take: not the loop's yet
    assert stream.captured_end() == pytest.approx(10.1)
    stream.ring.clear()  # dropped by the loop (a new turn): counted as taken
    assert stream.captured_end() == pytest.approx(10.12)
    for k in range(6, 6 + stream.ring.max_chunks + 7):  # the ring is full: 7 oldest dropped
        callback(k)
    stream.ring.take()
    assert stream.captured_end() == pytest.approx(10 + (6 + stream.ring.max_chunks + 7) * 0.02)
    stream.timed_callback(bytes(2 * period), period, {}, 0)  # no stamp: counted from the last
    stream.ring.take()
    assert stream.captured_end() == pytest.approx(10 + (6 + stream.ring.max_chunks + 8) * 0.02)


def capture_on_a_simulated_clock(
    lost_ms: float,
    step_ms: float = 0.0,
    seconds: float = 10.0,
    loss_at: float = 7.0,
    *,
    late_ms: float = 0.0,
    output_latency: float = 0.0,
    stamped: bool = False,
    underrun_ms: float = 0.0,
):
    """The echo-cancelling capture path (MicStream.timed_callback -> ring -> Capture._drain ->
    ReferenceTap + EchoCanceller) on a simulated clock: playback callbacks of 10 ms feed the
    tap, mic callbacks of 20 ms (24 kHz mono: no resampling) carry a room's echo of it, and
    the loop drains every 100 ms. At ``loss_at`` the mic loses ``lost_ms`` and the next
    callback says so as PortAudio does after an overrun (``paInputOverflow``; its ADC time is
    when its first frame was captured, or up to ``step_ms`` later: a pointer that moves in
    steps). With ``late_ms`` each callback runs up to that much later than its buffer's time
    (a starved thread: the mic's buffers then come in bursts), the speaker's
    ``output_latency`` before its frames are heard; ``stamped``: both callbacks get PortAudio's
    stamps (the playback's DAC time), as on ALSA. The test stands
    in for PortAudio's threads and the clock: the clockless virtual devices never overrun, and
    a real clock would make this test as slow as the audio. Returns (the mic's echo, what the
    box sent, both by real time, the Capture)."""
    far = np.clip(speechlike(seconds, 5, 120) * 3000, -32768, 32767).astype(np.int16)
    # a speaker's underrun at loss_at: what plays from then on is heard underrun_ms later
    ran_dry = round(loss_at * 100) if underrun_ms else len(far)  # the first 10 ms block after
    gap = round(underrun_ms * RATE / 1000)
    played = np.concatenate([far[: ran_dry * 240], np.zeros(gap, np.int16), far[ran_dry * 240 :]])
    echo = np.convolve(played[: len(far)].astype(float), room(5, 30.0))[: len(far)]
    clock = FakeClock()
    tap = ReferenceTap(RATE, clock=clock)
    tap.open(RATE, output_latency)
    cap, stream = echo_capture(tap)
    echo *= 3000 / np.std(echo)
    noise = np.random.default_rng(5).standard_normal(len(far)) * 3  # a mic's noise floor
    mic = np.clip(np.rint(echo + noise), -32768, 32767).astype(np.int16)
    period = stream.period
    first_lost = round(loss_at * RATE) // period
    lost = range(first_lost, first_lost + round(lost_ms * RATE / 1000) // period)
    steps = np.random.default_rng(6).uniform(0, step_ms / 1000, len(far) // period)
    rng = np.random.default_rng(7)

    def runs(times, most_s):  # each callback runs up to most_s late, never before the last one
        late = rng.uniform(0, most_s, len(times))
        return np.maximum.accumulate(np.asarray(times) + late)

    # when each 10 ms of the far end plays
    heard = [k * 0.01 + (gap / RATE if k >= ran_dry else 0) for k in range(len(far) // 240)]
    # a speaker's callback later than its buffer lasts would be an underrun: not this test's
    handed = runs([h - output_latency for h in heard], min(late_ms / 1000, 0.8 * output_latency))
    events = list(zip(handed, [0] * len(heard), range(len(heard)), strict=True))
    kept = [k for k in range(len(far) // period) if k not in lost]
    captured = [(k + 1) * 0.02 for k in kept]
    events += list(zip(runs(captured, late_ms / 1000), [1] * len(kept), kept, strict=True))
    events += [(d * 0.1 + 0.005, 2, d) for d in range(round(seconds * 10))]
    sent = []
    for t, kind, k in sorted(events):
        clock.t = t
        if kind == 0:
            tap.feed(far[k * 240 : (k + 1) * 240], heard[k] if stamped else 0.0, k == ran_dry)
        elif kind == 1:
            status = INPUT_OVERFLOW if k - 1 in lost else 0
            chunk = mic[k * period : (k + 1) * period].tobytes()
            adc = k * 0.02 + steps[k]
            stream.timed_callback(chunk, period, {"input_buffer_adc_time": adc}, status)
            stream.last_callback = t  # it ran at t on the simulated clock
        else:
            sent.append(np.frombuffer(cap._drain(final=False), dtype="<i2"))
    sent.append(np.frombuffer(cap._drain(final=False), dtype="<i2"))  # what came late
    out = np.concatenate(sent).astype(float)
    if len(out) < len(mic):  # nothing stood in for the lost samples: put them back in time
        cut = lost[0] * period
        out = np.concatenate([out[:cut], np.zeros(len(mic) - len(out)), out[cut:]])
    return echo, out, cap


def erle_db(echo: np.ndarray, out: np.ndarray, start_s: float, end_s: float) -> float:
    part = slice(round(start_s * RATE), round(end_s * RATE))
    return 10 * np.log10(np.sum(echo[part] ** 2) / max(1e-9, np.sum(out[part] ** 2)))


@needs_speex
@pytest.mark.parametrize("lost_ms", [40, 80])
def test_lost_mic_samples_do_not_let_the_echo_through(lost_ms):
    """A capture overrun loses 40-80 ms of the mic: silence stands in for them, the reference
    stays aligned, and the echo is cancelled as well as before within a quarter second: 24 dB
    over the next 1.25 s (without the stand-in: 0-2 dB, the echo before its reference until
    the timing re-anchors it and the filter learns again, 2-3 s; as in the VM under TCG)."""
    echo, out, cap = capture_on_a_simulated_clock(lost_ms)
    assert cap.dropped_frames == lost_ms * 24
    before = erle_db(echo, out, 5.0, 7.0)  # speex has converged (about 4 s)
    after = erle_db(echo, out, 7.0 + lost_ms / 1000 + 0.25, 8.5)
    assert before >= 20, f"not converged before the loss: {before:.1f} dB"
    assert after >= 15, f"{after:.1f} dB after losing {lost_ms} ms (before it: {before:.1f} dB)"


@needs_speex
@pytest.mark.parametrize("lost_ms", [40, 80])
def test_lost_mic_samples_with_a_coarse_pointer(lost_ms):
    """ADC times up to 4 ms late (snd-aloop's pointer moves in the kernel's 4 ms ticks): the
    silence is the loss to within a millisecond (the least of 10 buffers' times), and the echo
    path is the filter's again 1.5 s later: 17-33 dB (without the stand-in: 1-5 dB). Not to
    the sample: a few samples off, speex re-adapts for about a second (see the report)."""
    echo, out, cap = capture_on_a_simulated_clock(lost_ms, step_ms=4.0)
    assert abs(cap.dropped_frames - lost_ms * 24) <= 24
    after = erle_db(echo, out, 7.0 + 1.5, 9.0)
    assert after >= 12, f"{after:.1f} dB 1.5 s after losing {lost_ms} ms"


@needs_speex
def test_lost_samples_are_logged_without_a_flood(caplog):
    """A starved box overruns every few periods (416 times in one VM run): the first loss is
    logged at once, the rest at most every 10 s, summed."""
    tap = ReferenceTap(RATE)
    tap.open(RATE, 0.0)
    cap, stream = echo_capture(tap)
    with caplog.at_level(logging.INFO, logger="appliance.audio.capture"):
        for k in range(30):  # a loss before each of 30 drains
            stream.gaps.recent.append(960 + k)
            stream.ring.append(bytes(960))
            cap._drain(final=False)
    lines = [r.getMessage() for r in caplog.records if "input overflow" in r.getMessage()]
    assert lines == [
        "microphone: 1 input overflow lost 40 ms of samples (960 frames); silence stands in "
        "for them"
    ]
    assert cap._losses_pending[:2] == [29, sum(range(961, 990))]  # the next line's


@needs_speex
def test_the_reference_follows_the_stamps_not_the_callbacks():
    """A starved box (or the hands-free mic's quarter-second capture buffer) runs its callbacks
    up to 200 ms late, the mic's in bursts; the speaker's frames are heard 100 ms after they are
    handed over. By PortAudio's stamps (ADC and DAC times) the reference stays where the echo
    is: >= 20 dB once speex has converged. (By the callbacks' arrival it moves by up to 200 ms
    from chunk to chunk: 0-3 dB, measured when this test was written.)"""
    echo, out, cap = capture_on_a_simulated_clock(0, late_ms=200, output_latency=0.1, stamped=True)
    tap = cap.echo[1]
    # (the first buffer's ADC time is 0 on this simulated clock, unstamped: one re-anchor)
    assert tap.by_stamps and tap.resyncs <= 1
    assert erle_db(echo, out, 5.0, 10.0) >= 20


@needs_speex
@pytest.mark.parametrize("underrun_ms", [30, 120])
def test_a_speaker_underrun_is_silence_in_the_reference(underrun_ms):
    """The speaker runs dry for 30-120 ms (a late answer, a starved thread): what it plays
    after is heard that much later. PortAudio flags the next buffer (paOutputUnderflow) and its
    DAC time says how late: silence of that length goes into the reference, which stays on the
    echo without a re-anchor, and the filter keeps what it learnt (>= 20 dB in the next 1.5 s).
    (Without the silence the reference is that much early until the timing re-anchors it, and
    the filter learns the path again: 0.3-1.3 dB over those 1.5 s when this test was written.)"""
    echo, out, cap = capture_on_a_simulated_clock(
        0, stamped=True, output_latency=0.1, underrun_ms=underrun_ms
    )
    tap = cap.echo[1]
    assert tap.silence_frames == underrun_ms * 24
    assert tap.resyncs <= 1  # (the simulated clock's first unstamped buffer: see above)
    assert erle_db(echo, out, 5.0, 7.0) >= 20
    assert erle_db(echo, out, 7.0 + underrun_ms / 1000, 8.5) >= 20


# ---- through real PortAudio over the virtual devices --------------------------------------


@needs_speex
@pytest.mark.skip(
    reason="unproven here: over the clockless virtual devices the echo comes 125-141 ms after "
    "its reference; the DelayEstimator finds that, yet only 5.5-12.4 dB are removed (the pipes' "
    "path is not steady enough for the filter?). tests/vm measures it on a kernel card"
)
async def test_capture_cancels_the_echo_of_playback(virtual_alsa):
    """Playback -> speaker_fifo -> (the test: a room, 30 ms + tail) -> mic_fifo -> Capture with
    echo cancellation. The virtual devices have no clock: the test thread paces both pipes."""
    from appliance.audio.capture import Capture
    from appliance.audio.playback import Playback
    from appliance.config.schema import AudioConfig

    seconds = 8.0
    far = np.clip(speechlike(seconds, 11, 120) * 3000, -32768, 32767).astype(np.int16)
    ir = room(11)
    stop = threading.Event()
    mic_log: list[np.ndarray] = []

    def pump() -> None:
        history = np.zeros(len(ir), dtype=float)
        start = time.monotonic()
        i = 0
        while not stop.is_set():
            got = b""
            while len(got) < 960 and not stop.is_set():
                got += virtual_alsa.read_speaker_fifo(960 - len(got), timeout=0.05)
            if stop.is_set():
                break
            x = np.frombuffer(got, "<i2").astype(float)
            full = np.concatenate([history, x])
            y = np.convolve(full, ir)[len(history) : len(history) + len(x)] * 0.8
            history = full[-len(ir) :]
            mic = np.clip(np.rint(y), -32768, 32767).astype(np.int16)
            mic_log.append(mic)
            i += 1
            delay = start + i * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            virtual_alsa.write_mic_fifo(mic)

    tap = ReferenceTap()
    # The pipes and the pump buffer about 100 ms that PortAudio's latencies do not report (a
    # sound card's do): measured, the echo reaches the mic ~130 ms after its reference. A
    # longer filter covers that here; the alignment itself is tested above.
    ec = EchoCanceller()
    config = AudioConfig(
        input_device="mic_fifo", output_device="speaker_fifo", input_rate=24000, output_rate=24000
    )
    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    got: list[np.ndarray] = []
    try:
        async with (
            Playback(config, source_rate=24000, tap=tap) as speaker,
            Capture(config, echo=(ec, tap)) as cap,
        ):
            assert speaker.state == "running" and cap.state == "running"
            speaker.play_answer("a1", far.tobytes())
            speaker.end_answer("a1")
            async with asyncio.timeout(seconds + 10):
                async with contextlib.aclosing(cap.chunks()) as stream:
                    async for chunk in stream:
                        got.append(np.frombuffer(chunk, "<i2"))
                        if sum(map(len, got)) >= int((seconds - 0.5) * RATE):
                            break
    finally:
        stop.set()
        pumper.join(2)
    heard = np.concatenate(mic_log).astype(float)
    out = np.concatenate(got).astype(float)
    # Compare the last 3 s: loud echo in the mic, little of it after cancellation.
    n = 3 * RATE
    level_in = np.sqrt(np.mean(heard[len(heard) - n - RATE : -RATE] ** 2))
    level_out = np.sqrt(np.mean(out[-n:] ** 2))
    assert level_in > 500, "the echo did not reach the mic"
    erle = 20 * np.log10(level_in / max(level_out, 1e-3))
    assert erle >= 10, f"only {erle:.1f} dB of echo removed through PortAudio"
