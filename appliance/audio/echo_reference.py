"""The echo canceller's far end: what the speaker played, aligned with what the mic hears.

How it is wired::

    Playback output callback (PortAudio thread)      Capture.chunks() (asyncio loop thread)
    ------------------------------------------       ---------------------------------------
    tap.feed(frames handed to the device) ---- SampleRing ----> tap.read(n, captured_at)
      (device rate; + the time and count of                       -> resampled to 24 kHz
       the last feed: two plain attributes)                       -> n samples aligned to
                                                                     the mic chunk

The playback side only copies into an SPSC :class:`SampleRing` and stores (time, frames fed
so far); it never blocks (the ring's lock guards one memcpy) and never allocates beyond that.

Alignment. Best by PortAudio's own stamps: an output callback's ``output_buffer_dac_time``
says when its first frame will be heard, an input callback's ``input_buffer_adc_time`` when its
first frame was captured, both on PortAudio's clock (ALSA: the devices' status timestamps, taken
when the pointers were read). For a mic chunk whose last sample was captured at ``t``, the far
end that was playing then is the frame that became audible at ``t``. Neither stamp moves with
the callbacks' own lateness, so a capture buffer that holds a quarter second (the box's
hands-free headroom, mic_stream.py) or a starved callback thread does not move the reference.

Without both stamps (a backend that gives 0, a test's simulated stream) the callbacks' arrival
times stand in: a frame handed to the device by the output callback at time ``t_cb`` is heard
about ``output latency`` later (PortAudio's ``get_output_latency()``), and a mic sample captured
at ``t`` reaches the input callback about ``input latency`` later (``get_input_latency()``), so
the frame audible when the chunk's last sample was captured was handed at
``t_in - input_latency - output_latency``. The position of that frame is extrapolated from
the last feed's (time, count) at the device rate and mapped to 24 kHz.

That timing is only trusted to a period or so (callbacks are not perfectly regular, and the
latencies PortAudio reports are its buffer sizes, not measured), so it is used to ANCHOR the
reference: the first chunk, after a gap (they differ by more than 250 ms: the mic was paused,
the loop stalled), and whenever the smoothed difference between where counting
samples says the reference is and where timing says it should be exceeds ``resync_ms`` (two
sound cards on separate clocks drift apart; a stall). Between anchors the reference simply
advances by the chunk length, so a steady stream gets a steady alignment and the adaptive
filter does not have to re-learn a jittering delay.

The reference is deliberately ``lead_ms`` EARLY (it contains far-end audio a little before
the echo of it reaches the mic): an adaptive filter can model an extra delay within its tail,
but not an echo that arrives before its reference. The canceller's tail (200 ms) must cover
``lead_ms`` + the room's delay and reverberation + the anchoring error.

Limits: the alignment is as good as the latencies PortAudio reports (a device whose real
latency differs by more than ``lead_ms`` gives an echo the filter cannot reach, or shifts it
into the tail); an anchor jump makes the canceller re-converge (about a second); frames the
playback stream never handed to the device (a failed device) count as silence; the
resampler's group delay (a few samples at speech quality) is ignored.
"""

from __future__ import annotations

import time
from collections import deque
from itertools import accumulate

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from appliance.audio.resample import SPEECH_QUALITY, StreamResampler
from appliance.audio.ring import SampleRing

_EMPTY = np.zeros(0, dtype=np.int16)
JUMP_S = 0.25  # timing and counting this far apart: re-anchor at once, not smoothed
MAX_SILENCE_S = 1.0  # a longer silence after an underrun is left to the timing (re-anchored)


class ReferenceTap:
    """The far-end reference for the echo canceller at ``out_rate`` (24 kHz).

    Playback side: :meth:`open` when a stream is opened (loop thread), :meth:`feed` from the
    output callback. Capture side: :meth:`set_input_latency`, :meth:`read` (loop thread).
    """

    def __init__(
        self,
        out_rate: int = 24000,
        *,
        capacity_s: float = 2.0,
        lead_ms: float = 20.0,
        resync_ms: float = 30.0,
        clock=time.monotonic,
    ) -> None:
        self.out_rate = int(out_rate)
        self.capacity_s = capacity_s
        self.lead = round(lead_ms * out_rate / 1000)
        self.resync = round(resync_ms * out_rate / 1000)
        self.jump = round(JUMP_S * out_rate)
        self.clock = clock
        # the playback side (written by open() and the callback)
        self.device_rate = 0
        self.output_latency_s = 0.0
        self._ring: SampleRing | None = None
        self._gen = 0  # a new stream: the reader starts again
        self._fed = 0  # frames fed so far (callback), silence for underruns included
        self.silence_frames = 0  # of them, what stood in for the speaker's underruns
        # (time, frames fed after, frames, PortAudio's DAC time of its first frame or 0)
        self._last: tuple[float, int, int, float] | None = None
        # the capture side
        self.input_latency_s = 0.0
        self._reader_gen = -1
        self._resampler: StreamResampler | None = None
        self._taken = 0  # device frames taken out of the ring (plus those it dropped)
        self._taken_dropped = 0  # the ring's dropped_frames already counted in _taken
        self._buf = _EMPTY  # resampled reference, 24 kHz positions [_buf_start, _buf_end)
        self._buf_start = 0
        self._next: int | None = None  # 24 kHz position of the next sample to hand out
        self._error = 0.0  # smoothed (timing - counting), samples at 24 kHz
        self.resyncs = 0  # anchors after the first
        self.by_stamps = False  # the last target came from PortAudio's stamps (not arrival)

    # ---- playback side -----------------------------------------------------------------------

    def open(self, device_rate: int, output_latency_s: float) -> None:
        """(loop thread) A playback stream was opened at ``device_rate``; before it starts."""
        self._ring = SampleRing(max(1, round(self.capacity_s * device_rate)))
        self.device_rate = int(device_rate)
        self.output_latency_s = max(0.0, float(output_latency_s))
        self._fed = 0
        self._last = None
        self._gen += 1

    def feed(self, frames: np.ndarray, dac_time: float = 0.0, underflow: bool = False) -> None:
        """(the output callback) ``frames``: int16 mono, exactly what goes to the device;
        ``dac_time``: when its first frame is heard (PortAudio's stamp), 0 if unknown;
        ``underflow``: PortAudio says the device ran dry before this buffer (paOutputUnderflow).

        After an underflow the speaker was silent for a while that no frame accounts for: by
        the stamps, that silence goes into the ring first, so that counting stays the room's
        time (as InputGaps does for the mic). Without stamps the timing re-anchors it."""
        ring = self._ring
        if ring is None:
            return
        last = self._last
        if underflow and dac_time > 0 and last is not None and last[3] > 0:
            gap = round((dac_time - last[3]) * self.device_rate) - last[2]
            if 0 < gap <= self.device_rate * MAX_SILENCE_S:  # (allocates: after underruns only)
                ring.write(np.zeros(gap, dtype=np.int16))
                self._fed += gap
                self.silence_frames += gap
        ring.write(frames)
        n = len(frames)
        self._fed += n
        self._last = (self.clock(), self._fed, n, dac_time)

    # ---- capture side ------------------------------------------------------------------------

    def set_input_latency(self, latency_s: float) -> None:
        self.input_latency_s = max(0.0, float(latency_s))

    def _start_reader(self) -> None:
        self._reader_gen = self._gen
        self._resampler = StreamResampler(self.device_rate, self.out_rate, quality=SPEECH_QUALITY)
        self._taken = 0
        self._taken_dropped = self._ring.dropped_frames if self._ring is not None else 0
        self._buf = _EMPTY
        self._buf_start = 0
        self._next = None
        self._error = 0.0

    def _pull(self) -> None:
        """Move everything fed so far through the resampler into ``_buf``."""
        ring, resampler = self._ring, self._resampler
        if ring is None or resampler is None:
            return
        frames = ring.read()
        dropped = ring.dropped_frames
        if dropped > self._taken_dropped:  # the ring overran: a gap, start after it
            self._taken += dropped - self._taken_dropped
            self._taken_dropped = dropped
            resampler.reset()
            self._buf = _EMPTY
            self._buf_start = self._taken * self.out_rate // self.device_rate
        self._taken += len(frames)
        if len(frames):
            out = resampler.process(frames)
            self._buf = np.concatenate([self._buf, out]) if len(self._buf) else out

    def _target(self, delivered_at: float, captured_at: float) -> int | None:
        """24 kHz position of the far end audible when the chunk's last sample was captured
        (+ the lead), by PortAudio's stamps if both sides have them, else by arrival."""
        last = self._last
        if last is None or not self.device_rate:
            return None
        t_cb, fed, n, dac = last
        self.by_stamps = captured_at > 0 and dac > 0
        if self.by_stamps:  # both on PortAudio's clock
            at, audible_from = captured_at, dac
        else:
            at, audible_from = delivered_at - self.input_latency_s, t_cb + self.output_latency_s
        frame = fed - n + (at - audible_from) * self.device_rate  # frame fed - n: audible_from
        return round(frame * self.out_rate / self.device_rate) + self.lead

    def read(
        self, n: int, delivered_at: float | None = None, captured_at: float = 0.0
    ) -> np.ndarray:
        """``n`` far-end samples at 24 kHz for the mic chunk of ``n`` samples whose last
        sample reached the capture callback at ``delivered_at`` (monotonic; default now) and
        was captured at ``captured_at`` (PortAudio's clock, from the ADC stamps; 0 if unknown).
        Silence where nothing was played (or the playback side is closed)."""
        if n <= 0:
            return _EMPTY.copy()
        if self._ring is None or not self.device_rate:
            return np.zeros(n, dtype=np.int16)
        if self._reader_gen != self._gen:
            self._start_reader()
        self._pull()
        at = self.clock() if delivered_at is None else delivered_at
        stamped = self.by_stamps
        target = self._target(at, captured_at)
        if target is not None:
            target -= n  # the chunk's first sample
            if self._next is None:
                self._next = target
            elif abs(target - self._next) > self.jump or self.by_stamps != stamped:
                # a gap (paused, stalled), or the stamps came or went: at once
                self._next = target
                self._error = 0.0
                self.resyncs += 1
            else:  # drift or a steady offset: smoothed, so that timing jitter is ignored
                self._error += 0.1 * ((target - self._next) - self._error)
                if abs(self._error) > self.resync:
                    self._next += round(self._error)
                    self._error = 0.0
                    self.resyncs += 1
        if self._next is None:  # nothing was ever fed: silence, and no position yet
            return np.zeros(n, dtype=np.int16)
        out = np.zeros(n, dtype=np.int16)
        start, end = self._next, self._next + n
        buf_end = self._buf_start + len(self._buf)
        lo, hi = max(start, self._buf_start), min(end, buf_end)
        if hi > lo:
            out[lo - start : hi - start] = self._buf[lo - self._buf_start : hi - self._buf_start]
        # drop what no later chunk can need (positions only move forward, apart from resyncs)
        keep = max(0, min(end, buf_end) - self._buf_start - self.resync)
        if keep:
            self._buf = self._buf[keep:]
            self._buf_start += keep
        self._next = end
        return out


# ---- the microphone's lost samples -------------------------------------------------------------

INPUT_OVERFLOW = 2  # PortAudio's paInputOverflow callback flag (pyaudio.paInputOverflow)


class InputGaps:
    """Where PortAudio lost microphone samples, and how many: silence of that length stands in
    for them, so that the mic's timeline stays the room's. Called by the capture callback with
    each buffer; returns what to append to the ring, in order.

    Why: the far end is read by counting (:class:`ReferenceTap`: every mic chunk takes as many
    far-end samples as it has). A capture overrun (the callback thread starved for longer than
    the device's buffer: a slow guest under TCG) loses mic samples, and PortAudio restarts the
    device and calls back with ``paInputOverflow``. Without a stand-in, the mic after the loss
    is that much later than its count says: the echo comes BEFORE its reference, where no filter
    reaches it, until the timing re-anchors the reference (the smoothed resync: about 1.5 s for
    40 ms) and the filter learns the path again; 2-3 s of echo per loss, in the VM and in
    tests/test_echo.py. With silence in its place, counting stays right and the filter keeps
    what it learnt. It must be the right length to the sample: an echo path moved by a few
    samples is a new path to the filter.

    How much: a buffer's ``input_buffer_adc_time`` says when its first frame was captured (the
    device's pointer and timestamp, taken by PortAudio: the callback's own lateness does not
    move it), but a pointer that moves in steps (snd-aloop: the kernel's 4 ms ticks) makes it
    late by up to a step. So after a flagged buffer it and the next ones, ``settle`` in all
    (200 ms), are held back; the stream's start by the least late of them is compared with
    its start by the least late of as many buffers before the loss. The same number on both
    sides: both are late by about as much, so the errors do not add up loss after loss (the
    least of many before against the least of 10 after overfilled by 0.2 ms a loss on average:
    70 ms over 400 losses in tests/test_echo.py; in a starved VM run the echo drifted 66 ms
    later). What remains is under a millisecond, either way; none with a pointer that is
    exact. Only a flagged buffer counts (an unflagged difference is a backend's jitter or a
    clock step, not a loss); without timestamps (0) the callback's arrival ``now`` stands in
    for them. A gap longer than ``max_fill_s`` is not filled (a stall that long: ReferenceTap
    re-anchors by timing at once, over 250 ms). The first buffer after a start (``armed``)
    begins again. A hands-free mic is 200 ms late once
    per loss; a push-to-talk release within them would lose what is held (echo cancellation
    is for hands-free). Pure: the caller passes the times.
    """

    def __init__(
        self, rate: int, frame_bytes: int = 2, *, settle: int = 10, max_fill_s: float = 2.0
    ) -> None:
        self.rate = int(rate)
        self.frame_bytes = frame_bytes
        self.settle = max(1, settle)
        self.max_fill = round(max_fill_s * rate)
        self._by_adc = True  # which clock the times are on (the ADC times', or arrival)
        # when frame 0 was captured, by each of the last buffers (its time less the frames
        # before it): the least is the estimate
        self._starts: deque[float] = deque(maxlen=self.settle)
        self._frames = 0  # frames handed on so far, silence included
        self._held: list = []  # buffers after a flagged one, not yet handed on
        self._held_times: list[float] = []  # when each held buffer's first frame was captured
        self._held_frames: list[int] = []
        self.lost_frames = 0  # frames filled with silence so far
        self.losses = 0  # overruns that lost samples
        self.unfilled = 0  # of them, too long to fill
        self.recent: deque[int] = deque(maxlen=64)  # the losses' lengths, for the loop to log

    def process(
        self, data, adc_time: float, frames: int, status: int, now: float, armed: bool = False
    ) -> list:
        """(the capture callback) ``data`` and what stands before it, to append in this order
        (nothing while buffers are held)."""
        by_adc = adc_time > 0
        t = adc_time if by_adc else now
        if armed or by_adc != self._by_adc:  # a new start, or another clock: begin again
            self._by_adc, self._frames = by_adc, 0
            self._starts.clear()
            self._held, self._held_times, self._held_frames = [], [], []
        out = []
        if self._held and status & INPUT_OVERFLOW:  # lost again while settling: settle now
            out = self._release()
        if self._held or (status & INPUT_OVERFLOW and self._starts):
            self._held.append(data)
            self._held_times.append(t)
            self._held_frames.append(frames)
            if len(self._held) >= self.settle:
                out += self._release()
            return out
        self._starts.append(t - self._frames / self.rate)
        self._frames += frames
        out.append(data)
        return out

    def _release(self) -> list:
        """The held buffers, after the silence that stands in for what was lost before them."""
        before = min(self._starts)  # as many buffers before as after: the same lateness
        offsets = [p / self.rate for p in accumulate(self._held_frames[:-1], initial=0)]
        after = min(t - p for t, p in zip(self._held_times, offsets, strict=True))
        lost = round((after - before) * self.rate) - self._frames
        out = []
        filled = 0
        if lost > 0:
            self.losses += 1
            self.recent.append(lost)
            if lost <= self.max_fill:
                filled = lost
                self.lost_frames += lost
                out.append(bytes(self.frame_bytes * lost))
            else:
                self.unfilled += 1
        self._frames += filled
        self._starts.clear()
        for t, p in zip(self._held_times, offsets, strict=True):
            self._starts.append(t - p - self._frames / self.rate)
        self._frames += sum(self._held_frames)
        out += self._held
        self._held, self._held_times, self._held_frames = [], [], []
        return out


# ---- the echo's delay, measured ----------------------------------------------------------------

_DECIMATED_RATE = 4000  # speech's echo is found in its band below 2 kHz: cheap, and enough


class _Decimator:
    """Low-pass (windowed sinc below 0.45 of the new Nyquist) and keep every ``factor``th
    sample, across chunks (a little FIR state and the phase carried over)."""

    def __init__(self, factor: int, taps: int = 63) -> None:
        self.factor = max(1, int(factor))
        if self.factor == 1:
            self._fir = np.ones(1)
        else:
            k = np.arange(taps) - (taps - 1) / 2
            cutoff = 0.9 / (2 * self.factor)  # of the input rate
            self._fir = np.sinc(2 * cutoff * k) * 2 * cutoff * np.hamming(taps)
        self._hist = np.zeros(len(self._fir) - 1)
        self._phase = 0  # input samples to skip before the next output sample

    def skip(self, n: int) -> int:
        """``n`` input samples of silence: how many output samples they make (all zero)."""
        out = len(range(self._phase, n, self.factor))
        self._phase = (self._phase - n) % self.factor
        self._hist[:] = 0
        return out

    def process(self, x: np.ndarray) -> np.ndarray:
        if self.factor == 1:
            return np.asarray(x, dtype=float)
        full = np.concatenate([self._hist, np.asarray(x, dtype=float)])
        n = len(full) - len(self._hist)  # one filtered value per input sample; only every
        windows = sliding_window_view(full, len(self._fir))[self._phase : n : self.factor]
        self._hist = full[n:]
        self._phase = (self._phase - n) % self.factor
        return windows @ self._fir[::-1]  # factor-th is computed


class DelayEstimator:
    """How long after the far-end reference its echo reaches the microphone, measured.

        The reference from :class:`ReferenceTap` is placed by the latencies PortAudio reports; a
        device that buffers more than it says (the host's named-pipe devices: ~130 ms) puts the
        echo beyond the adaptive filter's reach. This finds the echo's bulk delay from the signals
        themselves: every ``hop_s``, the cross-spectrum of the last ``window_s`` of mic and
        reference (both decimated to 4 kHz) is averaged into a running one, whitened (GCC-PHAT,
        with a partial weighting so that silent bands do not add noise), and its peak over
        ``0..max_delay_ms`` taken. A peak counts only when it stands well above the correlation's
        own noise (``min_confidence``), only while the reference carries sound (the earliest peak
    nearly as strong as the top one: the direct path, not a stronger cluster of reflections), and
    a new delay is
        adopted only when two hops in a row agree on it (within ``agree_ms``) and it differs from
        the current one by more than ``agree_ms``: a steady path gives a steady delay, one stray
        peak (double talk, a loud noise) moves nothing.

        ``update(mic, far)`` takes aligned chunks (same length, any size) at ``rate``; ``delay``
        is the estimate in samples at ``rate`` (None until the first one), ``changes`` how many
        times it moved. Pure: no I/O, no clock; about 1 ms of CPU per second of audio.
    """

    EARLIEST = 0.6  # of the top peak: an earlier peak this strong is the direct path

    def __init__(
        self,
        rate: int = 24000,
        *,
        max_delay_ms: float = 500.0,
        window_s: float = 0.6,
        hop_s: float = 0.5,
        smoothing: float = 0.5,
        min_confidence: float = 7.0,
        agree_ms: float = 3.0,
        min_far_dbfs: float = -50.0,
    ) -> None:
        self.rate = int(rate)
        self.factor = max(1, self.rate // _DECIMATED_RATE)
        self.dec_rate = self.rate / self.factor
        self.max_lag = int(max_delay_ms * self.dec_rate / 1000)
        self.window = int(window_s * self.dec_rate)
        self.hop = max(1, int(hop_s * self.dec_rate))
        self.smoothing = smoothing
        self.min_confidence = min_confidence
        self.agree = max(1, round(agree_ms * self.dec_rate / 1000))
        self.min_far = (32768 * 10 ** (min_far_dbfs / 20)) ** 2
        span = self.window + self.max_lag  # the mic's window: the far end's and the lags after it
        self._n = 1 << int(np.ceil(np.log2(2 * span)))
        self._span = span
        self._mic_dec = _Decimator(self.factor)
        self._far_dec = _Decimator(self.factor)
        self._mic = np.zeros(span)
        self._far = np.zeros(span)
        self._raw_mic: list[np.ndarray] = []  # not yet decimated
        self._raw_far: list[np.ndarray] = []
        self._raw_n = 0
        self._filled = 0
        self._cross: np.ndarray | None = None  # the running cross-spectrum
        self._candidate: int | None = None
        self.delay: int | None = None
        self.confidence = 0.0  # of the last hop's peak
        self.changes = 0

    def reset(self) -> None:
        self.__init__(  # type: ignore[misc]
            self.rate,
            max_delay_ms=self.max_lag * 1000 / self.dec_rate,
            window_s=self.window / self.dec_rate,
            hop_s=self.hop / self.dec_rate,
            smoothing=self.smoothing,
            min_confidence=self.min_confidence,
            agree_ms=self.agree * 1000 / self.dec_rate,
            min_far_dbfs=20 * np.log10(np.sqrt(self.min_far) / 32768),
        )

    def update(self, mic: np.ndarray, far: np.ndarray) -> int | None:
        self._raw_mic.append(np.asarray(mic, dtype=float).reshape(-1))
        self._raw_far.append(np.asarray(far, dtype=float).reshape(-1))
        self._raw_n += len(self._raw_mic[-1])
        if self._raw_n < self.hop * self.factor:  # decimated in batches: cheaper
            return self.delay
        far_raw = np.concatenate(self._raw_far)
        played = bool(far_raw.any())
        if played:
            m = self._mic_dec.process(np.concatenate(self._raw_mic))
            f = self._far_dec.process(far_raw)
        else:  # nothing played (most of the time): no filtering, and no hop below
            m = f = np.zeros(self._mic_dec.skip(self._raw_n))
            self._far_dec.skip(self._raw_n)
        self._raw_mic, self._raw_far, self._raw_n = [], [], 0
        k = len(m)
        if k >= self._span:
            self._mic, self._far = m[-self._span :].copy(), f[-self._span :].copy()
        else:
            self._mic = np.concatenate([self._mic[k:], m])
            self._far = np.concatenate([self._far[k:], f])
        self._filled = min(self._span, self._filled + k)
        if played and self._filled >= self._span:
            self._hop()
        return self.delay

    def _hop(self) -> None:
        far = self._far[: self.window]  # the reference's window; its echo is in mic[lag:]
        if float(np.mean(far**2)) < self.min_far:  # nothing played: no news
            return
        n = self._n
        cross = np.fft.rfft(self._mic, n) * np.conj(np.fft.rfft(far, n))
        if self._cross is None:
            self._cross = cross
        else:
            self._cross = self.smoothing * self._cross + (1 - self.smoothing) * cross
        mag = np.abs(self._cross)
        weighted = self._cross / (mag**0.8 + 1e-9 * (mag.max() + 1e-30))
        r = np.fft.irfft(weighted, n)[: self.max_lag + 1]
        top = int(np.argmax(r))
        peak = float(r[top])
        near = max(self.agree * 4, 8)
        rest = np.concatenate([r[: max(0, top - near)], r[top + near + 1 :]])
        noise = float(np.std(rest)) if len(rest) > 8 else 0.0
        self.confidence = peak / noise if noise > 0 else 0.0
        if self.confidence < self.min_confidence:
            self._candidate = None
            return
        # The direct path comes first; a cluster of reflections may be stronger: the earliest
        # lag nearly as strong as the top one, itself well above the noise.
        level = max(self.EARLIEST * peak, self.min_confidence * noise)
        lag = int(np.flatnonzero(r[: top + 1] >= level)[0])
        if self._candidate is None or abs(lag - self._candidate) > self.agree:
            self._candidate = lag  # one hop's word: wait for the next to agree
            return
        self._candidate = lag
        delay = lag * self.factor
        if self.delay is None or abs(delay - self.delay) > self.agree * self.factor:
            self.delay = delay
            self.changes += 1
