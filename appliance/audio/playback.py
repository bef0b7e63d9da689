"""The speaker: answers and earcons out of a PortAudio callback stream, with an honest barge-in.

Why a callback stream fed from a ring: the Realtime server sends an answer much faster than
real time, in deltas of uneven size, on the asyncio loop. The loop resamples each delta to the
device's rate and appends it to a :class:`SampleRing`; PortAudio's own thread pulls exactly one
period per callback. The callback never blocks, works in preallocated buffers (the only
allocation is the bytes object PyAudio wants back), never touches asyncio and never raises:
when the ring is short it plays silence and counts an underrun.

Why one tracker at the device rate: everything written to the ring (answer audio AND earcons)
is registered with ONE :class:`PlaybackTracker` whose positions are ring frames, and
``frames_played`` counts the frames the callback really took from the ring. The two therefore
never drift, and on barge-in ``flush()`` says exactly how many ms of each answer were handed to
the device (clamped to what was received), which is what ``conversation.item.truncate`` needs.

Why flush is done on the loop side, under a lock the callback shares: ``flush()`` must return
the heard ms at once, so the frames that will still play (a fade-out of at most 5 ms from the
head of the ring, then nothing) have to be decided there and then. Under the lock the loop
takes those frames from the ring head, fades them, empties the ring and puts the faded frames
back; the callback holds the same lock only around its ring read and the ``frames_played``
update, so it sees either the ring before the flush or after it, never half of it. The lock is
held for a copy of a few hundred samples: it never waits on I/O. The output is silent within
one period (plus what PortAudio had already been handed).

Pops: a flushed answer fades out (above); a finished answer fades out too: the last 5 ms of each
answer are held back from the ring until the next delta or ``end_answer()``, which fades them.
An answer longer than the ring (``playback_buffer_s``) is cut, faded, with one warning; audio
already queued is never dropped to make room (the ring's drop-oldest is not used here).

The stream runs only while something plays (:mod:`appliance.audio.speaker_stream`: opened
but stopped at rest, started by the first sound queued, stopped ``speaker_idle_s`` after the
ring ran empty; device failures, retries, suspend and resume). The echo canceller's reference
needs nothing more: what was not played is silence.

Jitter: an answer starts only once it has a reserve (:mod:`appliance.audio.jitter`): the
callback does not read past a hold position in the ring until the loop releases it (reserve
buffered or waited for, or the answer ended); earcons queued before the answer play meanwhile.
An answer that runs dry while it plays counts an underrun and is held again the same way.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from appliance.audio.earcons import earcon
from appliance.audio.jitter import ReservePolicy
from appliance.audio.resample import SPEECH_QUALITY, StreamResampler
from appliance.audio.ring import SampleRing
from appliance.audio.speaker_stream import RATE_CANDIDATES as RATE_CANDIDATES  # (check.py's)
from appliance.audio.speaker_stream import OpenedStream, SpeakerStream, StateCallback
from appliance.audio.tracker import PlaybackTracker
from appliance.config.schema import AudioConfig

log = logging.getLogger(__name__)

FADE_S = 0.005  # the longest fade-out at a flush or at the end of an answer
EARCON_PREFIX = "earcon:"
_PA_CONTINUE = 0  # pyaudio.paContinue (PortAudio's paContinue), without importing pyaudio here
_PA_ABORT = 2  # pyaudio.paAbort
# With echo cancellation (hands-free) the speaker's buffer holds this much: PortAudio's default
# low latency on ALSA is two periods or so, and a callback thread held up longer lets the device
# run dry: a gap in the answer, and a jump in the echo's path that the canceller must learn
# again (a starved VM guest ran dry for 0.7 s of a 25 s answer). It costs a button barge-in up to
# as much (what is in the device's buffer plays out); hands-free's voice barge-in is slower.
OUTPUT_HEADROOM_S = 0.1
_PA_OUTPUT_UNDERFLOW = 4  # pyaudio.paOutputUnderflow: the device ran dry before this buffer


@functools.lru_cache(maxsize=8)
def _ramp(n: int) -> np.ndarray:
    """A raised-cosine fade of ``n`` steps, just under 1 ... 0 (made once per length: every
    answer ends with one)."""
    ramp = 0.5 + 0.5 * np.cos(np.pi * np.arange(1, n + 1) / n)
    ramp.flags.writeable = False
    return ramp


def _fade_out(frames: np.ndarray, n: int) -> np.ndarray:
    """``frames`` with a raised-cosine fade over its last ``n`` frames down to exactly 0."""
    n = min(n, len(frames))
    if n <= 0:
        return frames
    out = np.array(frames, dtype=np.int16, copy=True)
    out[-n:] = np.rint(out[-n:] * _ramp(n)).astype(np.int16)
    return out


_EMPTY = np.zeros(0, dtype=np.int16)
_PCM16 = np.dtype("<i2")  # the wire format (parsed once, not per chunk)


@dataclass
class _Answer:
    """One answer being received: its resampler state and the held-back tail (for the fade)."""

    item_id: str
    resampler: StreamResampler
    held: np.ndarray = field(default_factory=lambda: _EMPTY)
    carry: bytes = b""  # an odd trailing byte of the last delta
    cut: bool = False  # overflowed the ring: the rest of the answer is dropped
    watched: bool = False  # its first frame's position is watched (first_sound_at)


class Playback:
    """The speaker. ``async with Playback(config.audio, source_rate=44100) as speaker: ...``

    Loop side (asyncio thread only): play_answer, end_answer, play_earcon, flush, audio_end_ms,
    playing_item, drained, wait_drained, volume, start, stop, suspend_device, resume_device.
    Callback side: _callback only.
    """

    def __init__(
        self,
        config: AudioConfig,
        *,
        source_rate: int = 44100,
        pa_factory: Callable[[], Any] | None = None,
        on_state: StateCallback | None = None,
        tap: Any = None,
    ) -> None:
        self.config = config
        self.source_rate = int(source_rate)
        # echo cancellation: an optional ReferenceTap fed with every frame handed to the device
        self._tap = tap
        self._device = SpeakerStream(
            config,
            headroom_s=OUTPUT_HEADROOM_S if tap is not None else 0.0,
            source_rate=self.source_rate,
            callback=self._callback,
            on_open=self._install,
            on_close=self._forget,
            busy=self._busy,
            played=lambda: self.frames_played,
            on_rest=self._rest,
            pa_factory=pa_factory,
            on_state=on_state,
        )
        self.device_name = ""
        self.device_rate = 0
        self.frames_per_buffer = 0
        self.latency_s = 0.0
        # counters (written by the callback thread where noted; plain ints, read anywhere)
        self.frames_played = 0  # callback: real audio frames taken from the ring, monotonic
        self.callbacks = 0  # callback
        self.callback_errors = 0  # callback
        self.underruns = 0  # callback: an answer ran dry while playing (each is one gap)
        # callback: the DEVICE ran dry (PortAudio's paOutputUnderflow: the callback thread was
        # held up longer than the device's buffer lasts), whatever was playing
        self.device_underruns = 0
        self.cut_frames = 0  # loop: frames not played because the ring was full
        self._gain = float(np.clip(config.volume, 0.0, 1.0))
        self._answer_open = False  # loop -> callback: an answer is not finished yet
        self._lock = threading.Lock()  # callback ring read vs. flush(); never held across I/O
        self._ring: SampleRing | None = None
        self._tracker: PlaybackTracker | None = None
        self._fade_n = 0
        self._out = _EMPTY
        self._fbuf = np.zeros(0, dtype=np.float32)
        self._silence = b""
        self._answers: dict[str, _Answer] = {}
        self._spare: StreamResampler | None = None  # an ended answer's, flushed: reused
        self._cut_items: deque[str] = deque(maxlen=32)  # flushed: their late deltas are ignored
        # The jitter reserve: the callback reads no further than _hold_at (a ring position in
        # frames_played terms) until the loop releases it (under _lock; the callback sets it
        # too, when an answer runs dry).
        self._reserve = ReservePolicy(read_ahead_ms=2.0 * config.period_ms)
        self._hold_at: int | None = None
        self._reserve_timer: asyncio.TimerHandle | None = None
        self._underruns_seen = 0
        self._answer_began: float | None = None  # the first delta came (ms), until it plays
        self.last_reserve_wait_ms = 0.0  # the last answer's first delta -> allowed to play
        # Latency figures, measured where the sound leaves the box (the output callback):
        self._watch: tuple[str, int] | None = None  # (answer, ring position of its 1st frame)
        self._first_sound: dict[str, float] = {}  # answer -> when its first frame was handed
        self._flush_at: float | None = None  # a flush the callback has not yet acted on
        self.last_flush_ms: float | None = None  # flush -> the device got its fade and silence
        self._unplayed_warned: deque[str] = deque(maxlen=32)

    @property
    def reserve_ms(self) -> float:
        """The jitter reserve an answer waits for before it starts (adapted per session)."""
        return self._reserve.reserve_ms

    # the stream's figures (speaker_stream.py)
    state = property(lambda self: self._device.state)  # stopped, running, failed
    error = property(lambda self: self._device.error)
    running = property(lambda self: self._device.running)  # started (something plays)
    starts = property(lambda self: self._device.starts)  # started by something to play
    stops = property(lambda self: self._device.stops)  # stopped after speaker_idle_s of nothing
    last_start_ms = property(lambda self: self._device.last_start_ms)

    # ---- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Playback:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open the device, stream stopped (or enter "failed" and keep retrying); never raises
        for the device."""
        await self._device.start()

    async def stop(self) -> None:
        """Stop at once (queued audio is dropped); idempotent. Use wait_drained() first to let
        an answer finish."""
        await self._device.stop()

    async def suspend_device(self) -> None:
        """Close the stream and terminate PortAudio, in any state, until resume_device();
        idempotent. For a watcher of the sound cards: PortAudio sees a changed set of cards
        only after every PortAudio instance in the process was terminated (the capture side's
        too). Queued audio is dropped (counted as heard up to what the device was handed); an
        answer still arriving plays on from its next delta after resume_device(). The state
        is left as it was; what is asked to play meanwhile is not played (one warning per
        answer)."""
        await self._device.suspend()

    async def resume_device(self) -> None:
        """Look for the device again (a new PortAudio initialisation, so a new enumeration) and
        open it, stream stopped: state "running". If it cannot be opened: "failed" and quiet
        retries. Closes first if it was not suspended. Nothing before start() or after stop()."""
        await self._device.resume()

    def _busy(self) -> bool:
        """Something is queued, or an answer is still arriving."""
        ring = self._ring
        return bool(self._answers) or (ring is not None and len(ring) > 0)

    def _install(self, opened: OpenedStream) -> None:
        """Buffers, ring and tracker for the opened device; the callback is not running yet."""
        rate = opened.rate
        if self._ring is None or self._tracker is None or self.device_rate != rate:
            # A new rate means new positions: tracker, ring and frames_played start again.
            self._ring = SampleRing(max(1, round(self.config.playback_buffer_s * rate)))
            self._tracker = PlaybackTracker(rate=rate)
            self.frames_played = 0
            self._answers.clear()
        self.device_name = opened.name
        self.device_rate = rate
        self.frames_per_buffer = opened.frames_per_buffer
        self._fade_n = max(1, min(round(FADE_S * rate), opened.frames_per_buffer))
        self._out = np.zeros(opened.frames_per_buffer, dtype=np.int16)
        self._fbuf = np.zeros(opened.frames_per_buffer, dtype=np.float32)
        self._silence = bytes(2 * opened.frames_per_buffer)
        self.latency_s = opened.latency_s
        if self._tap is not None:  # echo cancellation
            self._tap.open(rate, self.latency_s)

    def _forget(self, lost: bool) -> None:
        """The stream was closed: nothing queued can play any more (a revived device must not
        play stale answers); what was handed to the device counts as heard. A lost device's
        answers are cut (their late deltas are not played)."""
        if self._tracker is not None and self._ring is not None:
            self._tracker.played_up_to(self.frames_played)
            self._tracker.flush()
            self._ring.clear()
        for item_id in self._answers:
            if lost:
                self._cut_items.append(item_id)
        self._answers.clear()
        self._answer_open = False
        self._release()

    def _rest(self) -> None:
        """The speaker stopped at rest: the ring's pages go back to the kernel until an answer
        needs them (a few MB held for nothing otherwise, all day)."""
        ring = self._ring
        if ring is not None:
            ring.release_memory()

    # ---- the PortAudio callback (its own thread) -------------------------------------------

    def _callback(
        self, gen: int, in_data: Any, frame_count: int, time_info: Any, status: int
    ) -> tuple[bytes, int]:
        """One period: ring -> volume -> PortAudio. Never blocks on I/O, never raises."""
        try:
            if gen != self._device.gen:  # a stream given up on: it must not take from the ring
                return bytes(2 * frame_count), _PA_ABORT
            pin = self._device.pin
            if pin.attend:  # keep (or give back) this thread's Python state: thread_state.py
                pin.service()
            self.callbacks += 1
            underflow = status & _PA_OUTPUT_UNDERFLOW
            if underflow:
                self.device_underruns += 1
            ring = self._ring
            if (
                ring is not None
                and not len(ring)  # nothing queued
                and 2 * frame_count == len(self._silence)
                and self._flush_at is None
                and self._tap is None
                and (self._hold_at is not None or not self._answer_open)
            ):
                # Silence with nothing to account for (no underrun: no answer plays dry): the
                # same bytes every time. What the loop queues meanwhile plays next period.
                return self._silence, _PA_CONTINUE
            out = self._out
            if frame_count > len(out):  # PortAudio asked for more than a period: rare
                out = self._out = np.zeros(frame_count, dtype=np.int16)
                self._fbuf = np.zeros(frame_count, dtype=np.float32)
            out = out[:frame_count]
            n = 0
            if ring is not None:
                with self._lock:
                    hold = self._hold_at
                    if hold is None:
                        n = ring.read_into(out)
                    elif hold > self.frames_played:  # what is queued before the held answer
                        n = ring.read_into(out[: min(frame_count, hold - self.frames_played)])
                    self.frames_played += n
                    if hold is None and n < frame_count and self._answer_open:
                        # Ran dry while an answer plays: one underrun, and the rest of the
                        # answer waits for a reserve again (one gap, not a stutter).
                        self.underruns += 1
                        self._hold_at = self.frames_played
                    watch = self._watch
                    if watch is not None and self.frames_played > watch[1]:
                        self._first_sound[watch[0]] = time.monotonic()
                        self._watch = None
                    if self._flush_at is not None:
                        self.last_flush_ms = (time.monotonic() - self._flush_at) * 1000 + (
                            FADE_S * 1000 if n else 0.0
                        )
                        self._flush_at = None
            if n < frame_count:
                out[n:] = 0
            gain = self._gain
            if n and gain < 1.0:
                # |x * g| <= |x| for g <= 1: never outside int16, so no clipping is needed.
                f = self._fbuf[:n]
                np.multiply(out[:n], np.float32(gain), out=f, dtype=np.float32)
                np.rint(f, out=f)
                out[:n] = f
            if self._tap is not None:  # echo cancellation: a copy into its ring, never blocks
                # and when PortAudio says its first frame is heard (its stamp, 0 without one)
                dac = time_info.get("output_buffer_dac_time", 0.0) if time_info else 0.0
                self._tap.feed(out, dac, bool(underflow))
            return out.tobytes(), _PA_CONTINUE
        except Exception:
            self.callback_errors += 1
            silence = self._silence
            if len(silence) < 2 * frame_count:
                silence = bytes(2 * frame_count)
            return silence[: 2 * frame_count], _PA_CONTINUE

    # ---- the loop side -----------------------------------------------------------------------

    @property
    def volume(self) -> float:
        return self._gain

    @volume.setter
    def volume(self, value: float) -> None:
        """Software volume 0..1 (clamped); the next callback uses it."""
        self._gain = float(min(1.0, max(0.0, float(value))))

    @staticmethod
    def _now_ms() -> float:
        return time.monotonic() * 1000

    def _hold_here(self) -> None:
        """The next frame written waits for the reserve (earlier ones play)."""
        ring = self._ring
        if ring is None:
            return
        with self._lock:
            self._hold_at = self.frames_played + len(ring)

    def _release(self) -> None:
        if self._answer_began is not None and self._reserve.waiting:  # the answer's start
            self.last_reserve_wait_ms = self._now_ms() - self._answer_began
        self._answer_began = None
        self._reserve.started()
        if self._reserve_timer is not None:
            self._reserve_timer.cancel()
            self._reserve_timer = None
        with self._lock:
            self._hold_at = None

    def _arm_reserve_timer(self) -> None:
        """The waited-the-reserve rule: a one-shot timer, not a poll."""
        if self._reserve_timer is not None:
            self._reserve_timer.cancel()
        deadline = self._reserve.deadline()
        if deadline is None:
            return
        delay = max(0.0, (deadline - self._now_ms()) / 1000)
        self._reserve_timer = asyncio.get_running_loop().call_later(delay, self._reserve_due)

    def _reserve_due(self) -> None:
        self._reserve_timer = None
        if self._reserve.waiting:
            self._release()

    def play_answer(self, item_id: str, pcm16: bytes) -> None:
        """Queue one delta of answer ``item_id`` (PCM16 mono at ``source_rate``)."""
        if item_id in self._cut_items:
            return  # barge-in already cut this answer: its late deltas are not played
        if self._device.opened is None or self._ring is None:
            self._unplayable(item_id)
            return
        now = self._now_ms()
        answer = self._answers.get(item_id)
        if answer is None:
            for other in [i for i in self._answers if i != item_id]:
                self.end_answer(other)  # answers are sequential: a new one ends the last
            answer = _Answer(item_id, self._resampler())
            self._answers[item_id] = answer
            self._answer_open = True
            self._underruns_seen = self.underruns
            self._reserve.begin(now)
            self._answer_began = now
            self._hold_here()
            self._arm_reserve_timer()
            self._device.kick()  # starting the stream overlaps the wait for the reserve
        elif self.underruns != self._underruns_seen:  # it ran dry: the callback holds it
            self._underruns_seen = self.underruns
            self._reserve.underran(now)
            self._arm_reserve_timer()
        data = answer.carry + bytes(pcm16)
        if len(data) % 2:
            answer.carry, data = data[-1:], data[:-1]
        else:
            answer.carry = b""
        samples = np.frombuffer(data, dtype=_PCM16).astype(np.int16, copy=False)
        if answer.cut:
            self.cut_frames += len(samples) * self.device_rate // self.source_rate
            return
        self._push(answer, answer.resampler.process(samples), final=False)
        self._reserve.arrived(now, len(samples) * 1000 / self.source_rate)
        if self._reserve.waiting and self._reserve.ready(now):
            self._release()

    def end_answer(self, item_id: str) -> None:
        """Answer ``item_id`` is complete: play the resampler's tail, fading the last 5 ms."""
        answer = self._answers.pop(item_id, None)
        self._answer_open = bool(self._answers)
        if answer is None:
            return
        self._release()  # complete: nothing more to wait for
        need = self._reserve.end()
        log.debug(
            "speaker: answer %s waited %.0f ms for its reserve; it needed %.0f ms, next %.0f ms",
            item_id,
            self.last_reserve_wait_ms,
            need,
            self._reserve.reserve_ms,
        )
        if answer.cut or self._ring is None:
            return
        self._push(answer, answer.resampler.flush(), final=True)
        self._spare = answer.resampler  # flushed: as good as new, for the next answer

    def _resampler(self) -> StreamResampler:
        """A resampler for a new answer: the last answer's, flushed (a new soxr stream designs
        its filter again: 0.1 ms, as much as resampling a second of audio), or a new one."""
        spare, self._spare = self._spare, None
        if spare is not None and spare.out_rate == self.device_rate:
            return spare
        return StreamResampler(self.source_rate, self.device_rate, quality=SPEECH_QUALITY)

    def play_earcon(self, name: str) -> None:
        """Queue earcon ``name`` after whatever is queued; nothing when sounds are off."""
        ring = self._ring
        if not self.config.sounds or self._device.opened is None or ring is None:
            return
        with self._lock:
            # Held with nothing queued past the hold (an answer that ran dry): the earcon is
            # not held with it.
            move_hold = self._hold_at is not None and self._hold_at >= self.frames_played + len(
                ring
            )
        for answer in self._answers.values():  # their held-back tail comes first
            self._enqueue(answer.item_id, answer.held, answer)
            answer.held = _EMPTY
        self._enqueue(EARCON_PREFIX + name, earcon(name, self.device_rate), None)
        if move_hold:
            self._hold_here()
        self._device.kick()

    def _push(self, answer: _Answer, frames: np.ndarray, *, final: bool) -> None:
        data = np.concatenate([answer.held, frames]) if len(answer.held) else frames
        if final:
            answer.held = _EMPTY
            self._enqueue(answer.item_id, _fade_out(data, self._fade_n), answer)
            return
        ring = self._ring
        assert ring is not None
        if len(data) > ring.free:
            answer.held = _EMPTY
            self._enqueue(answer.item_id, data, answer)  # cuts (and fades) what does not fit
            return
        keep = max(0, len(data) - self._fade_n)
        answer.held = data[keep:].copy()
        self._enqueue(answer.item_id, data[:keep], answer)

    def _enqueue(self, item_id: str, frames: np.ndarray, answer: _Answer | None) -> None:
        """Write to the ring and register with the tracker; never drops queued audio."""
        ring, tracker = self._ring, self._tracker
        if ring is None or tracker is None or not len(frames):
            return
        free = ring.free  # only the callback changes it meanwhile, and only upwards
        if len(frames) > free:
            excess = len(frames) - free
            self.cut_frames += excess
            frames = _fade_out(frames[:free], self._fade_n)
            if answer is not None:
                answer.cut = True
            log.warning(
                "speaker: %s is longer than the %g s playback buffer; the rest is cut",
                "answer " + item_id if answer is not None else item_id,
                self.config.playback_buffer_s,
            )
            if not len(frames):
                return
        if answer is not None and not answer.watched:
            answer.watched = True
            with self._lock:
                self._watch = (item_id, tracker.queue_end)
            while len(self._first_sound) > 16:  # bounded: only recent answers matter
                self._first_sound.pop(next(iter(self._first_sound)))
        ring.write(frames)
        tracker.queued(item_id, len(frames))

    def _unplayable(self, item_id: str) -> None:
        if item_id not in self._unplayed_warned:
            self._unplayed_warned.append(item_id)
            why = "suspended (the sound cards changed)" if self._device.suspended else self.state
            log.warning("speaker: %s; answer %s is not played", why, item_id)

    def flush(self) -> dict[str, int]:
        """Barge-in: silence within one period. Returns {item_id: ms handed to the device}
        for every answer cut (clamped to what was received); earcons are not listed."""
        ring, tracker = self._ring, self._tracker
        open_items = list(self._answers)
        for item_id in open_items:
            self._cut_items.append(item_id)
        self._answers.clear()
        self._answer_open = False
        if open_items:
            self._reserve.end()  # what arrived of it still says how the server streams
        if self._reserve_timer is not None:
            self._reserve_timer.cancel()
            self._reserve_timer = None
        self._reserve.started()
        if ring is None or tracker is None:
            with self._lock:
                self._hold_at = None
            return {}
        n = self._fade_n
        buf = np.empty(n, dtype=np.int16)
        with self._lock:
            played = self.frames_played
            if self._hold_at is not None:  # held audio was never heard: it does not fade in
                n = max(0, min(n, self._hold_at - played))
            taken = ring.read_into(buf[:n])  # the head of the ring: what the device gets next
            ring.clear()
            if taken:
                ring.write(_fade_out(buf[:taken], taken))
            self._hold_at = None
            self._watch = None
            self._flush_at = time.monotonic()
            self.last_flush_ms = None  # the next callback measures this flush
        # The faded frames are certain to be handed to the device: they count as heard.
        tracker.played_up_to(played + taken)
        cut = tracker.flush()
        for item_id in open_items:
            cut.setdefault(item_id, tracker.audio_end_ms(item_id))
        return {k: v for k, v in cut.items() if not k.startswith(EARCON_PREFIX)}

    def first_sound_at(self, item_id: str) -> float | None:
        """When the first frame of answer ``item_id`` was handed to the device (monotonic)."""
        return self._first_sound.get(item_id)

    def _sync(self) -> PlaybackTracker | None:
        if self._tracker is not None:
            self._tracker.played_up_to(self.frames_played)
        return self._tracker

    def audio_end_ms(self, item_id: str) -> int:
        """Ms of ``item_id`` handed to the device so far, at most what was received."""
        tracker = self._sync()
        return tracker.audio_end_ms(item_id) if tracker is not None else 0

    @property
    def playing_item(self) -> str | None:
        """The item (answer id or "earcon:<name>") being played now or next; None if idle."""
        tracker = self._sync()
        return tracker.playing_item if tracker is not None else None

    @property
    def drained(self) -> bool:
        """Everything queued has been handed to the device (held-back tails included)."""
        tracker = self._sync()
        held = any(len(a.held) for a in self._answers.values())
        return (tracker is None or tracker.drained) and not held

    async def wait_drained(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until drained and the device's own latency has passed; False on timeout.

        A timeout argument rather than asyncio.timeout(): the answer "not drained" is a normal
        result here (the caller decides to flush), not an exception."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        step = max(0.005, self.config.period_ms / 2000)
        while not self.drained:
            if self._device.opened is None:
                return self.drained
            if deadline is not None and loop.time() >= deadline:
                return False
            await asyncio.sleep(step)
        if self._device.opened is not None:
            rest = self.latency_s
            if deadline is not None:
                rest = min(rest, max(0.0, deadline - loop.time()))
            await asyncio.sleep(rest)
        return True
