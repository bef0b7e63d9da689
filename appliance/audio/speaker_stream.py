"""The speaker's PortAudio stream: opened at rest, started by what plays, stopped when idle,
reopened after a failure. The sound itself (ring, tracker, callback) is :mod:`playback`'s.

Why stopped at rest: a running output stream calls back every period whether or not anything
plays (a thread waking 50 times a second, all day). At rest the stream is opened but stopped:
no callbacks, no thread, no timer. :meth:`SpeakerStream.kick` (something was queued) starts it
from a worker thread; what was queued meanwhile waits in the ring, so a start delays the first
sound by the start itself and never clips it. While it runs, the loop looks at it every 0.25-1 s
(alive? idle?) and stops it ``speaker_idle_s`` after the last sound. Kept opened rather than
closed at rest: a start is then under a ms (p99 4 ms), an open (a new PortAudio and its
enumeration) 7 ms over the virtual devices (``bench/audio.py --stream realtime``). The first
sound is no later than into a running stream: handed over at once rather than at the next
period, and behind PortAudio's 2-period prefill rather than a full device buffer of silence.

Device failure: a device that does not open, a stream that does not start or dies: the stream
is closed and PortAudio terminated, ONE warning, state "failed", then quiet retries (debug
lines) after ``retry_s``, doubling up to 8x; each retry is a new PortAudio initialisation (a
replugged device is found) whose stream must live ``_STABLE_S`` before one info line says it
is back (state "running"). A stream stopped on purpose on a device that works counts as
"running": a device lost meanwhile is found at the next start. Every PortAudio call that
initialises, terminates, opens, starts, stops or closes holds ``devices.PORTAUDIO_LOCK``
(PortAudio is not thread-safe; the capture side's calls hold it too), always taken before
``quiet_stderr``'s lock. :meth:`suspend` and :meth:`resume` let a watcher of /dev/snd close
everything and look again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.audio.devices import (
    PORTAUDIO_LOCK,
    AudioDeviceError,
    ask_latency,
    find_device,
    open_pyaudio,
    pick_rate,
    quiet_stderr,
)
from appliance.audio.thread_state import ThreadStatePin, unpin_wait_s
from appliance.blocking import in_daemon_thread
from appliance.config.schema import AudioConfig

log = logging.getLogger(__name__)

RATE_CANDIDATES = (48000, 44100, 24000)  # after the answer's own rate, when output_rate is 0
_PA_INT16 = 8  # pyaudio.paInt16, without importing pyaudio here
# While the stream runs the loop looks at it (alive? idle?) every speaker_idle_s / 4, within
# these bounds: each look wakes the loop (about 60 µs of CPU on a cold cache), and a stop a
# second late or a lost device noticed a second late costs nothing (a retry waits retry_s).
_MONITOR_S = 0.25
_MONITOR_MAX_S = 1.0
_STABLE_S = 0.3  # a reopened stream must live this long before the device counts as back
_RETRY_GROWTH = 8  # retries back off from retry_s to this many times it
_OPEN_TIMEOUT_S = 10.0  # PortAudio calls that take longer are given up on (a stuck device)
_CLOSE_TIMEOUT_S = 2.0

StateCallback = Callable[[str, "str | None"], None]


def _select_output(pa: Any, config: AudioConfig, source_rate: int) -> tuple[int, str, int]:
    """(index, name, rate) of the configured output device; the one seam to devices.py.

    ``output_rate`` set: that rate or an error. 0: the answer's rate, then 48000, 44100, 24000.
    """
    device = find_device(pa, config.output_device, "output")
    if config.output_rate:
        rate = pick_rate(pa, device, "output", config.output_rate, ())
    else:
        rate = pick_rate(pa, device, "output", source_rate, RATE_CANDIDATES)
    return device.index, device.name, rate


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    plain = isinstance(error, OSError | LookupError | AudioDeviceError)
    return text if plain else f"{type(error).__name__}: {text}"


def _start_blocking(opened: OpenedStream, pin: ThreadStatePin, quiet: bool) -> None:
    with PORTAUDIO_LOCK, quiet_stderr() if quiet else contextlib.nullcontext():
        pin.arm()  # the first callback keeps its thread's Python state (thread_state.py)
        opened.stream.start_stream()


def _unpin(opened: OpenedStream, pin: ThreadStatePin) -> None:
    """Before a stop: the callback's thread gives its Python state back (a few periods)."""
    pin.unpin(unpin_wait_s(opened.frames_per_buffer / max(1, opened.rate)))


def _abort_blocking(opened: OpenedStream, pin: ThreadStatePin) -> None:
    """Stop at once: Pa_AbortStream drops what the device still holds (by now silence).
    PyAudio's stop_stream() is Pa_StopStream, which waits for it to play out, and a stuck
    device never lets it return."""
    stream = opened.stream
    if getattr(stream, "_is_running", False):
        _unpin(opened, pin)  # not under the lock: the microphone may need it meanwhile
    with PORTAUDIO_LOCK:
        handle = getattr(stream, "_stream", None)
        if handle is None or not getattr(stream, "_is_running", False):
            stream.stop_stream()
            return
        import pyaudio  # loaded already: the stream is PyAudio's

        pyaudio.pa.abort_stream(handle)
        stream._is_running = False  # what stop_stream() would have recorded


def _close_blocking(opened: OpenedStream, pin: ThreadStatePin) -> None:
    # close() on an active stream aborts it (Pa_CloseStream) rather than waiting for the
    # device to play out its buffer as stop_stream() would. It still waits for PortAudio's
    # thread, which cannot return while stuck in a blocking write: hence the timeout.
    if getattr(opened.stream, "_is_running", False):
        _unpin(opened, pin)  # not under the lock: the microphone may need it meanwhile
    with PORTAUDIO_LOCK, quiet_stderr():
        with contextlib.suppress(Exception):
            opened.stream.close()
        with contextlib.suppress(Exception):
            opened.pa.terminate()


def _close_later(opened: OpenedStream) -> None:
    # an open that came too late: never started, so nothing to unpin
    threading.Thread(target=_close_blocking, args=(opened, ThreadStatePin()), daemon=True).start()


@dataclass
class OpenedStream:
    gen: int  # which open this is: a callback of an older stream plays nothing
    pa: Any
    stream: Any
    index: int
    name: str
    rate: int
    frames_per_buffer: int
    latency_s: float


class SpeakerStream:
    """The output stream of one :class:`~appliance.audio.playback.Playback` (loop side only).

    The owner gives: ``callback(gen, in_data, frame_count, time_info, status)`` (PortAudio's,
    with the stream's generation first), ``on_open(opened)`` (a stream was opened, not yet
    started: set up buffers for its rate), ``on_close(lost)`` (it was closed: forget what was
    queued), ``busy()`` (something is queued or still arriving: keep running), ``played()``
    (frames played so far: sound since the last look is not idle either) and ``on_rest()``
    (the stream was stopped after speaker_idle_s of nothing: let go of what only sound needs).
    """

    def __init__(
        self,
        config: AudioConfig,
        *,
        source_rate: int,
        callback: Callable[..., tuple[bytes, int]],
        on_open: Callable[[OpenedStream], None],
        on_close: Callable[[bool], None],
        busy: Callable[[], bool],
        played: Callable[[], int] = lambda: 0,
        on_rest: Callable[[], None] = lambda: None,
        pa_factory: Callable[[], Any] | None = None,
        on_state: StateCallback | None = None,
        headroom_s: float = 0.0,
    ) -> None:
        self.config = config
        self.source_rate = source_rate
        # the device's buffer asked for at least this long (0: PortAudio's default low latency)
        self.headroom_s = headroom_s
        self._callback = callback
        self._on_open = on_open
        self._on_close = on_close
        self._on_rest = on_rest
        self._busy = busy
        self._played = played
        self._pa_factory = pa_factory
        self._on_state = on_state
        self.state = "stopped"
        self.error: str | None = None
        self.opened: OpenedStream | None = None
        self.running = False  # the opened stream is started
        self.gen = 0  # the generation of the stream the callback may serve
        self.pin = ThreadStatePin()  # the callback (owner's) services it: see thread_state.py
        self.starts = 0  # the stream was started (by something to play)
        self.stops = 0  # ... and stopped after speaker_idle_s of nothing
        self.last_start_ms: float | None = None  # how long the last start took
        self.suspended = False  # suspend(): closed until resume()
        self._outage = False  # a failure was logged and the device is not back yet
        self._started = False  # between start() and stop()
        self._verifying = False  # _verify() owns the stream (a device that failed, on trial)
        self._retry_s = config.retry_s
        self._stream_task: asyncio.Task[None] | None = None  # runs the stream while needed
        self._retry_task: asyncio.Task[None] | None = None  # reopens a failed device

    # ---- asked by the owner ------------------------------------------------------------------

    async def start(self) -> None:
        """Open the device, stream stopped (or "failed" and retries); never raises for it."""
        if self._started:
            return
        self._started, self.suspended = True, False
        if not await self._try_open(verify=False):
            self._schedule_retry()

    async def stop(self) -> None:
        """Close at once; idempotent."""
        self._started = False
        await self._cancel_tasks()
        await self._close(lost=False)
        self._set_state("stopped", None)

    async def suspend(self) -> None:
        """Close the stream and terminate PortAudio, in any state; idempotent. The state is
        left as it was."""
        self.suspended = True
        await self._cancel_tasks()
        await self._close(lost=False)

    async def resume(self) -> None:
        """A new PortAudio (a new enumeration) and the device opened, stream stopped:
        "running"; or "failed" and quiet retries. Nothing before start() or after stop()."""
        if not self._started:
            return
        await self.suspend()
        self.suspended = False
        self._retry_s = self.config.retry_s
        if not await self._try_open(verify=False):
            self._schedule_retry()

    def kick(self) -> None:
        """Something is to be played: the stream runs (started now unless it is running)."""
        if self.opened is None or self.suspended or self._verifying:
            return  # (_try_open kicks after a trial, if something is queued by then)
        if self._stream_task is None or self._stream_task.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop: nothing can start the stream (never in the box)
                return
            self._stream_task = loop.create_task(self._run_stream(self.opened), name="speaker")

    # ---- the stream's life -------------------------------------------------------------------

    async def _run_stream(self, opened: OpenedStream) -> None:
        """Start the stream, watch it while it plays, stop it speaker_idle_s after the last
        sound; again at once if something came meanwhile. Only this task (and _verify)
        starts and stops a stream."""
        loop = asyncio.get_running_loop()
        while opened is self.opened:
            if not self.running:
                t = time.monotonic()
                try:
                    await self._pa_call(_start_blocking, opened, self.pin, False)
                except Exception as e:
                    await self._lost(f"cannot start the output stream: {_one_line(e)}")
                    return
                self.last_start_ms = (time.monotonic() - t) * 1000
                self.starts += 1
                self.running = True
            idle_since: float | None = None
            played = self._played()
            every = min(_MONITOR_MAX_S, max(_MONITOR_S, self.config.speaker_idle_s / 4))
            while True:
                await asyncio.sleep(every)
                if opened is not self.opened:
                    return
                if not self._alive(opened):
                    await self._lost("the output stream stopped (device lost?)")
                    return
                # Short sounds come and go between two looks: what played meanwhile counts.
                was, played = played, self._played()
                if self._busy() or played != was:
                    idle_since = None
                    continue
                now = loop.time()
                if idle_since is None:
                    idle_since = now
                if now - idle_since >= self.config.speaker_idle_s:
                    break
            try:
                await self._pa_call(_abort_blocking, opened, self.pin)
            except Exception as e:
                await self._lost(f"cannot stop the output stream: {_one_line(e)}")
                return
            self.running = False
            self.stops += 1
            if not self._busy():
                self._on_rest()
                return

    @staticmethod
    def _alive(opened: OpenedStream) -> bool:
        # Pa_IsStreamActive reads a flag: no PORTAUDIO_LOCK (a worker may hold it for seconds
        # opening a device, and the loop must not wait for that).
        try:
            return bool(opened.stream.is_active())
        except Exception:
            return False

    async def _pa_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A PortAudio call in a worker thread (it may block on a stuck device), given up on
        after _OPEN_TIMEOUT_S.

        ``asyncio.timeout``, not ``wait_for``: Python 3.11's wait_for returns the result and
        drops a cancellation that comes as the call completes, so a stop() that cancelled the
        stream's task during its start waited for the task to go idle by itself (5-7 s; the
        playback tests caught it now and then)."""
        async with asyncio.timeout(_OPEN_TIMEOUT_S):
            return await in_daemon_thread(fn, *args, name="playback-io")

    async def _cancel_tasks(self) -> None:
        for task in (self._stream_task, self._retry_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._stream_task = self._retry_task = None

    # ---- opening, failing, retrying ----------------------------------------------------------

    async def _try_open(self, *, verify: bool) -> bool:
        """Open the device (stream stopped). ``verify`` (after a failure): the stream must
        also start and live _STABLE_S before the device counts as back."""
        fut = in_daemon_thread(
            self._open_blocking, self.gen + 1, late=_close_later, name="playback-io"
        )
        try:
            async with asyncio.timeout(_OPEN_TIMEOUT_S):  # not wait_for: see _pa_call
                opened = await fut
        except TimeoutError:
            self._fail(f"the device did not open within {_OPEN_TIMEOUT_S:g} s")
            return False
        except Exception as e:
            self._fail(_one_line(e))
            return False
        self.opened, self.running, self.gen = opened, False, opened.gen
        self._on_open(opened)
        if verify and not await self._verify(opened):
            return False
        if opened is not self.opened:
            return False  # suspended or stopped meanwhile
        if self._outage:
            self._outage = False
            log.info("speaker: back on %r at %d Hz", opened.name, opened.rate)
        else:
            log.info(
                "speaker: %r at %d Hz, %d ms periods",
                opened.name,
                opened.rate,
                self.config.period_ms,
            )
        self._retry_s = self.config.retry_s
        self._set_state("running", None)
        if self._busy():
            self.kick()
        return True

    def _open_blocking(self, gen: int) -> OpenedStream:
        """In a worker thread: a new PortAudio, the device, a stream (not started)."""
        with PORTAUDIO_LOCK:
            pa = open_pyaudio(self._pa_factory)
            try:
                with quiet_stderr():  # ALSA's probing and a failed open's trace: debug lines
                    index, name, rate = _select_output(pa, self.config, self.source_rate)
                    fpb = max(1, round(rate * self.config.period_ms / 1000))
                    if self.headroom_s:
                        ask_latency(pa, index, self.headroom_s, output=True)
                    stream = pa.open(
                        rate=rate,
                        channels=1,
                        format=_PA_INT16,
                        output=True,
                        output_device_index=index,
                        frames_per_buffer=fpb,
                        stream_callback=functools.partial(self._callback, gen),
                        start=False,
                    )
                try:
                    latency = float(stream.get_output_latency())
                except Exception:
                    latency = 0.0
            except BaseException:
                with contextlib.suppress(Exception):
                    pa.terminate()
                raise
        return OpenedStream(gen, pa, stream, index, name, rate, fpb, latency)

    async def _verify(self, opened: OpenedStream) -> bool:
        self._verifying = True
        try:
            return await self._verify_stream(opened)
        finally:
            self._verifying = False

    async def _verify_stream(self, opened: OpenedStream) -> bool:
        try:
            await self._pa_call(_start_blocking, opened, self.pin, True)
        except Exception as e:
            await self._close(lost=True)
            self._fail(f"cannot start the output stream: {_one_line(e) or 'timed out'}")
            return False
        self.running = True
        await asyncio.sleep(_STABLE_S)
        if opened is not self.opened:
            return False
        if not self._alive(opened):
            await self._close(lost=True)
            self._fail("the output stream stopped (device lost?)")
            return False
        if not self._busy():
            try:
                await self._pa_call(_abort_blocking, opened, self.pin)
            except Exception as e:
                await self._close(lost=True)
                self._fail(f"cannot stop the output stream: {_one_line(e) or 'timed out'}")
                return False
            self.running = False
        return True

    async def _lost(self, error: str) -> None:
        await self._close(lost=True)
        self._fail(error)
        self._schedule_retry()

    async def _close(self, *, lost: bool) -> None:
        opened, self.opened = self.opened, None
        self.running = False
        if opened is not None:
            self.gen += 1  # should the old stream's callback run again, it plays nothing
            try:
                async with asyncio.timeout(_CLOSE_TIMEOUT_S):  # not wait_for: see _pa_call
                    await in_daemon_thread(_close_blocking, opened, self.pin)
            except TimeoutError:
                log.warning(
                    "speaker: %r did not close within %g s (stuck?); left behind",
                    opened.name,
                    _CLOSE_TIMEOUT_S,
                )
        self._on_close(lost)

    def _schedule_retry(self) -> None:
        if self.suspended or not self._started:
            return
        if self._retry_task is None or self._retry_task.done():
            self._retry_task = asyncio.get_running_loop().create_task(
                self._retry(), name="speaker-retry"
            )

    async def _retry(self) -> None:
        """Reopen a failed device: after retry_s, then backing off to 8x. Never ends by
        itself while the device is failed: an unexpected error is logged and it goes on."""
        cap = self.config.retry_s * _RETRY_GROWTH
        while self.opened is None and self._started and not self.suspended:
            await asyncio.sleep(self._retry_s)
            self._retry_s = min(cap, self._retry_s * 2)
            try:
                if await self._try_open(verify=True):
                    return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.exception("speaker: unexpected error: %s", _one_line(e))
                self._set_state("failed", _one_line(e))

    def _fail(self, error: str) -> None:
        if not self._outage:
            self._outage = True
            log.warning(
                "speaker: %s (device %r); trying again in %g s, then less often",
                error,
                self.config.output_device,
                self._retry_s,
            )
        else:
            log.debug("speaker: still failing: %s", error)
        self._set_state("failed", error)

    def _set_state(self, state: str, error: str | None) -> None:
        changed = (state, error) != (self.state, self.error)
        self.state, self.error = state, error
        if changed and self._on_state is not None:
            try:
                self._on_state(state, error)
            except Exception:
                log.exception("speaker: on_state callback failed")
