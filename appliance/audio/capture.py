"""The microphone: a PortAudio input stream feeding 24 kHz mono PCM16 chunks to asyncio.

How it is wired::

    PortAudio callback thread                asyncio loop thread
    -------------------------                -------------------
    _Stream.callback(in_data)                Capture.chunks()
      ring.write(samples)  ---- SampleRing ---> ring.read(one period)
      loop.call_soon_threadsafe(wake) -------> Event set -> to_mono -> StreamResampler
                                               -> yield PCM16 LE bytes at 24 kHz

The callback only copies into the ring and, if no wake-up is pending yet, schedules one with
``call_soon_threadsafe``; it never blocks, never touches an asyncio object and never raises
(an exception is counted in ``callback_errors`` and the stream continues). If nobody reads,
the ring (about 2 s) drops the oldest audio and counts it: fresh audio matters more.

A supervisor task watches the stream every 0.1 s. A device that fails to open, or a stream
that stops delivering (no callback for ``stall_s``, or PortAudio says it is no longer active),
sets ``state`` to "failed" with a one-line ``error``, logs ONE warning for the whole outage,
and is tried again every ``retry_s``, each time with a new PortAudio instance (PortAudio lists
devices only when it is initialised, so a replugged USB microphone needs a new one; note that
``Pa_Initialize`` is reference counted: a new enumeration happens only once every PyAudio
instance in the process is terminated). When audio flows again, state is "running" and one
info line says so. Nothing ever raises out of the supervisor.

PyAudio calls (initialise, open, close, terminate) run one at a time in short-lived daemon
threads, so a slow enumeration does not stall the loop and a stream that hangs on close
(a dead device, a dry named pipe in tests) cannot hang ``stop()``: it is left to finish in
the background after 0.4 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pyaudio

from appliance.audio.devices import (
    AudioDeviceError,
    DeviceInfo,
    find_device,
    open_pyaudio,
    pick_rate,
    quiet_stderr,
)
from appliance.audio.resample import SPEECH_QUALITY, StreamResampler, to_mono
from appliance.audio.ring import SampleRing
from appliance.blocking import in_daemon_thread
from appliance.config.schema import AudioConfig

log = logging.getLogger(__name__)

OUTPUT_RATE = 24000  # what the Realtime API takes by default: 24 kHz mono PCM16
CAPTURE_RATES = (24000, 48000, 44100, 16000)  # tried in turn when input_rate is 0
CHECK_S = 0.1  # how often the supervisor looks at the stream
CLOSE_WAIT_S = 0.4  # how long stop() waits for PortAudio to close the stream

StateCallback = Callable[[str, str], Any]


def _port_audio_error(exc: OSError) -> str:
    """``[Errno -9996] Invalid input device`` -> ``Invalid input device (PortAudio -9996)``."""
    if isinstance(exc.errno, int) and exc.strerror:
        return f"{exc.strerror} (PortAudio {exc.errno})"
    return str(exc) or type(exc).__name__


class _Stream:
    """One opened stream and what belongs to it: ring, resampler, callback, counters.

    A new one per (re)open, so a late callback of an old stream can only touch its own ring.
    """

    def __init__(self, owner: Capture, device: DeviceInfo, rate: int, channels: int, ring_s: float):
        self.owner = owner
        self.device = device
        self.rate = rate
        self.channels = channels
        self.period = max(1, round(rate * owner.config.period_ms / 1000))
        self.ring = SampleRing(max(self.period * 2, int(rate * ring_s)), channels)
        self.resampler = StreamResampler(rate, owner.api_rate, quality=SPEECH_QUALITY)
        self.stream: Any = None
        self.opened_at = time.monotonic()
        self.last_callback = 0.0  # monotonic time of the last callback; 0: none yet
        self.callbacks = 0

    def callback(self, in_data: bytes | None, frame_count: int, time_info: Any, status: int):
        """PortAudio's thread: copy into the ring, wake the loop; nothing else, never raise."""
        owner = self.owner
        try:
            self.callbacks += 1
            owner.callbacks += 1
            self.last_callback = time.monotonic()
            if status & pyaudio.paInputOverflow:
                owner.input_overflows += 1
            if owner._paused and owner.state == "running":
                # Nobody listens: keep the stream alive, do no work. (Until a new stream is
                # seen running, its callbacks still wake the loop, which notes it is back.)
                return None, pyaudio.paContinue
            if in_data:
                self.ring.write(np.frombuffer(in_data, dtype=np.int16))
            if not owner._wake_pending:
                owner._wake_pending = True
                owner._loop.call_soon_threadsafe(owner._wake)
        except Exception:
            owner.callback_errors += 1
        return None, pyaudio.paContinue


class Capture:
    """The microphone of ``config`` (an AudioConfig) as an async stream of 24 kHz PCM16 chunks.

    ``async with Capture(config) as mic: async for chunk in mic.chunks(): ...`` or
    ``await start()`` / ``await stop()``. ``start()`` returns once the device is running or has
    failed (then it keeps retrying in the background); it never raises for a device problem.

    ``pa_factory`` makes the PyAudio instance (default ``pyaudio.PyAudio``); with
    ``owns_pa=False`` the instance is shared: never terminated, and made once. ``channels``
    forces the channel count (tests, odd devices); by default mono if the device can, else its
    channel count clamped to 1..2, downmixed. ``on_state(state, error)`` is called in the loop
    thread whenever ``state`` or ``error`` changes.
    """

    def __init__(
        self,
        config: AudioConfig,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        pa_factory: Callable[[], Any] | None = None,
        owns_pa: bool = True,
        on_state: StateCallback | None = None,
        channels: int | None = None,
        ring_s: float = 2.0,
        stall_s: float = 1.0,
        echo: tuple[Any, Any] | None = None,
        api_rate: int = OUTPUT_RATE,
    ) -> None:
        self.config = config
        self.api_rate = api_rate  # the rate chunks() hands out (realtime.input_rate)
        # echo cancellation: (EchoCanceller, ReferenceTap) applied in chunks(), or None
        self.echo = echo
        self.input_latency_s = 0.0
        self._loop: asyncio.AbstractEventLoop = loop  # type: ignore[assignment]  # set by start
        self._pa_factory = pa_factory
        self._owns_pa = owns_pa
        self._on_state = on_state
        self._forced_channels = channels
        self._ring_s = ring_s
        self._stall_s = stall_s

        self.state = "stopped"
        self.error = ""
        self.device_name = ""
        self.device_rate = 0
        self.channels = 0
        self.callbacks = 0
        self.callback_errors = 0
        self.input_overflows = 0  # PortAudio's own "input overflow" flags (the device side)

        self._pa: Any = None
        self._pa_lock = threading.Lock()  # one PyAudio operation at a time, across threads
        self._active: _Stream | None = None  # written under _pa_lock, read anywhere
        self._past_overruns = 0
        self._past_dropped = 0
        self._stopped = True
        self._task: asyncio.Task[None] | None = None
        self._event: asyncio.Event | None = None
        self._wake_pending = False
        self._clears = 0  # clear() calls, so chunks() drops what it holds of the old audio
        self._paused = False  # see listen()
        self._settled: asyncio.Future[None] | None = None

    # --- counters ---------------------------------------------------------------------------

    @property
    def overruns(self) -> int:
        """Times the ring had to drop old audio because nobody read it in time."""
        active = self._active
        return self._past_overruns + (active.ring.overruns if active else 0)

    @property
    def dropped_frames(self) -> int:
        active = self._active
        return self._past_dropped + (active.ring.dropped_frames if active else 0)

    # --- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Capture:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open the device; return when audio flows or the first attempt has failed."""
        if self._task is not None:
            return
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._stopped = False
        self._event = asyncio.Event()
        self._settled = self._loop.create_future()
        self._task = self._loop.create_task(self._supervise(), name="capture-supervisor")
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self._settled)

    async def stop(self) -> None:
        """Close the stream and terminate PortAudio; idempotent, returns within about 0.5 s."""
        if self._stopped:
            return
        self._stopped = True
        if self._settled is not None and not self._settled.done():
            self._settled.set_result(None)  # a start() still waiting returns
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        closing = in_daemon_thread(self._close_blocking, True)
        done, _ = await asyncio.wait({closing}, timeout=CLOSE_WAIT_S)
        if not done:
            log.warning("the microphone did not close in time; it is left to close on its own")
        elif closing.exception() is not None:
            log.debug("closing the microphone failed: %s", closing.exception())
        self._set_state("stopped", "")
        if self._event is not None:
            self._event.set()  # ends chunks()

    def listen(self, on: bool) -> None:
        """Deliver chunks (True) or not (False). Between turns the box needs no microphone
        audio; paused, the callback keeps the stream alive but copies nothing and wakes
        nobody, which saves a loop wake-up every period. Resuming starts from fresh audio.

        Call from the loop thread.
        """
        if on and self._paused:
            self.clear()
        self._paused = not on

    @property
    def listening(self) -> bool:
        return not self._paused

    def clear(self) -> int:
        """Drop the audio buffered so far (e.g. at a button press); returns frames dropped.

        Call from the loop thread, between chunks.
        """
        self._clears += 1
        active = self._active
        if active is None:
            return 0
        active.resampler.reset()
        return active.ring.clear()

    # --- the asyncio side -------------------------------------------------------------------

    def _wake(self) -> None:
        """(loop thread, scheduled by the callback) Audio is in the ring."""
        self._wake_pending = False
        active = self._active
        if self.state != "running" and active is not None and active.callbacks:
            self._running(active)  # the first callback of a new stream: it works
        if self._event is not None:
            self._event.set()

    async def chunks(self) -> AsyncIterator[bytes]:
        """24 kHz mono PCM16 little-endian chunks of at most ``period_ms``, until stop().

        One device period at a time is taken from the ring, downmixed and resampled, and sent
        on at once (a resampler gives a few samples more or less than a period at a time). At
        24 kHz this is a pass-through: one callback's samples are one chunk, unchanged. While
        the device is failed this simply waits; audio resumes when it is back. One consumer at
        a time.
        """
        event = self._event
        if event is None:
            raise RuntimeError("Capture.chunks() before start()")
        size = max(1, round(self.api_rate * self.config.period_ms / 1000))
        while not self._stopped:
            event.clear()
            active = self._active
            while active is not None and not self._stopped:
                clears = self._clears
                frames = active.ring.read(active.period)
                if len(frames) == 0:
                    break
                out = active.resampler.process(to_mono(frames))
                if self.echo is not None and len(out):  # echo cancellation
                    out = self._cancel_echo(active, out)
                # Everything the resampler gives is sent at once, in pieces of at most a
                # period: holding back a short remainder to make equal chunks would add a whole
                # period of latency whenever the resampler gives a few samples less than one.
                for start in range(0, len(out), size):
                    if self._stopped:
                        break
                    yield out[start : start + size].astype("<i2", copy=False).tobytes()
                    if self._clears != clears:  # clear() while the consumer had the chunk
                        break
            if not self._stopped:
                await event.wait()

    def _cancel_echo(self, active: _Stream, out: np.ndarray) -> np.ndarray:
        """(echo cancellation) ``out`` minus the echo of what the speaker played meanwhile.

        The chunk's last sample reached the callback about when the newest frame in the ring
        did, less what is still waiting in the ring (at the device rate)."""
        canceller, tap = self.echo  # type: ignore[misc]
        delivered_at = active.last_callback - len(active.ring) / active.rate
        tap.set_input_latency(self.input_latency_s)
        return canceller.process(out, tap.read(len(out), delivered_at))

    # --- the supervisor ---------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Open, watch, and after a failure wait ``retry_s`` and open again; never raises."""
        while not self._stopped:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug here must not end the retries
                log.debug("capture supervisor error", exc_info=True)
                self._fail(f"microphone error: {type(exc).__name__}: {exc}")
                await asyncio.sleep(self.config.retry_s)

    async def _step(self) -> None:
        active = self._active
        if active is None:
            await self._attempt()
            if self._active is None:
                await asyncio.sleep(self.config.retry_s)
            return
        await asyncio.sleep(CHECK_S)
        problem = self._health(active)
        if problem:
            await self._lose(problem)
            await asyncio.sleep(self.config.retry_s)
        elif active.callbacks and self.state != "running":
            self._running(active)

    def _health(self, active: _Stream) -> str:
        """Why ``active`` is not delivering audio, or "" while it is."""
        now = time.monotonic()
        last = active.last_callback or active.opened_at
        if now - last > self._stall_s:
            if not active.callbacks:
                return f"{self._describe(active)}: opened but delivers no audio"
            return f"{self._describe(active)}: no audio for {now - last:.1f} s"
        try:
            if not active.stream.is_active():
                return f"{self._describe(active)}: the stream stopped"
        except OSError as exc:
            return f"{self._describe(active)}: {_port_audio_error(exc)}"
        return ""

    async def _attempt(self) -> None:
        """One try at opening the device; sets state "failed" if it does not work."""
        try:
            await in_daemon_thread(self._open_blocking)
        except asyncio.CancelledError:
            raise
        except AudioDeviceError as exc:
            self._fail(str(exc))
        except OSError as exc:
            self._fail(f"cannot open the microphone: {_port_audio_error(exc)}")
        except Exception as exc:
            log.debug("opening the microphone failed", exc_info=True)
            self._fail(f"cannot open the microphone: {type(exc).__name__}: {exc}")

    async def _lose(self, problem: str) -> None:
        """The running stream broke: close it (in the background if it hangs), fail."""
        self._fail(problem)
        closing = in_daemon_thread(self._close_blocking, True)
        await asyncio.wait({closing}, timeout=CLOSE_WAIT_S)

    def _describe(self, active: _Stream) -> str:
        return f"input device {active.device.index} {active.device.name!r}"

    def _running(self, active: _Stream) -> None:
        was = self.state
        self._set_state("running", "")
        what = (
            f"{active.device.index} {active.device.name!r} at {active.rate} Hz, "
            f"{active.channels} channel{'s' if active.channels > 1 else ''}"
        )
        if was == "failed":
            log.info("microphone is back: %s", what)
        else:
            log.info("microphone: %s, %d ms periods", what, self.config.period_ms)

    def _fail(self, error: str) -> None:
        error = " ".join(error.splitlines())
        if self.state != "failed":
            log.warning(
                "microphone unavailable: %s; retrying every %g s", error, self.config.retry_s
            )
        else:
            log.debug("microphone still unavailable: %s", error)
        self._set_state("failed", error)

    def _set_state(self, state: str, error: str) -> None:
        changed = (state, error) != (self.state, self.error)
        self.state, self.error = state, error
        if self._settled is not None and not self._settled.done() and state != "stopped":
            self._settled.set_result(None)
        if changed and self._on_state is not None:
            try:
                self._on_state(state, error)
            except Exception as exc:
                log.warning("microphone state callback failed: %s: %s", type(exc).__name__, exc)

    # --- PortAudio, in worker threads -------------------------------------------------------

    def _open_blocking(self) -> None:
        """(worker thread) A fresh PortAudio instance, the configured device, a started stream."""
        with self._pa_lock:
            if self._stopped:
                return
            if self._pa is not None and self._owns_pa:
                self._terminate_locked()
            if self._pa is None:
                self._pa = open_pyaudio(self._pa_factory)
            pa = self._pa
            device = find_device(pa, self.config.input_device, "input")
            channels, rate = self._format(pa, device)
            active = _Stream(self, device, rate, channels, self._ring_s)
            try:
                with quiet_stderr():
                    active.stream = pa.open(
                        rate=rate,
                        channels=channels,
                        format=pyaudio.paInt16,
                        input=True,
                        input_device_index=device.index,
                        frames_per_buffer=active.period,
                        stream_callback=active.callback,
                        start=False,
                    )
                    active.opened_at = time.monotonic()
                    active.stream.start_stream()
                    with contextlib.suppress(Exception):  # echo cancellation
                        self.input_latency_s = float(active.stream.get_input_latency())
            except OSError as exc:
                if active.stream is not None:
                    with contextlib.suppress(Exception):
                        active.stream.close()
                raise AudioDeviceError(
                    f"cannot open input device {device.index} {device.name!r} at {rate} Hz, "
                    f"{channels} ch: {_port_audio_error(exc)}"
                ) from None
            self._active = active
            self.device_name, self.device_rate, self.channels = device.name, rate, channels

    def _format(self, pa: Any, device: DeviceInfo) -> tuple[int, int]:
        """(channels, rate): mono if the device can, else its channels clamped to 1..2."""
        if self._forced_channels:
            options = [self._forced_channels]
        else:
            options = list(dict.fromkeys([1, min(max(device.max_input_channels, 1), 2)]))
        error: AudioDeviceError | None = None
        for channels in options:
            try:
                rate = pick_rate(
                    pa, device, "input", self.config.input_rate, CAPTURE_RATES, channels
                )
                return channels, rate
            except AudioDeviceError as exc:
                error = error or exc
        assert error is not None
        raise error

    def _close_blocking(self, terminate: bool) -> None:
        """(worker thread) Close the stream, and terminate PortAudio if we own it."""
        with self._pa_lock:
            active, self._active = self._active, None
            if active is not None:
                self._past_overruns += active.ring.overruns
                self._past_dropped += active.ring.dropped_frames
                with contextlib.suppress(Exception):
                    active.stream.stop_stream()
                with contextlib.suppress(Exception):
                    active.stream.close()
            if terminate and self._owns_pa:
                self._terminate_locked()

    def _terminate_locked(self) -> None:
        pa, self._pa = self._pa, None
        if pa is not None:
            with contextlib.suppress(Exception):
                pa.terminate()
