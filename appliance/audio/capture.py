"""The microphone: a PortAudio input stream, started only while somebody listens.

How it is wired::

    PortAudio callback thread                asyncio loop thread
    -------------------------                -------------------
    MicStream.callback(in_data)              Capture.chunks(), every DRAIN_S (100 ms)
      ring.append(in_data)  ---- ChunkRing ---> ring.take() -> to_mono -> StreamResampler
                                               -> yield PCM16 LE bytes at the API's rate
                                             Capture.take_tail() at a release: the rest, now

The callback appends the bytes PortAudio gave it to a deque and returns; nothing else (no
counters, no clock, no loop wake-up), except once per start, when its first call tells the loop
that audio flows. The loop takes everything every 100 ms, so one resampling and one append
carry 100 ms; at a release :meth:`Capture.take_tail` takes what came since the last drain (the
resampler's tail included), so the turn commits all of the question.

At rest the stream is STOPPED (opened, not started): no PortAudio thread, no callbacks, and on
the asyncio side nothing but tasks waiting on events. ``listen(True)`` (a press, hands-free
mode, a follow-up window) starts it; ``listen(False)`` stops it. At :meth:`Capture.start` the
device is opened, started until its first callback (it works), then stopped unless somebody
listens; ``state`` is "running" for a device that works, stream started or not.

A device that fails to open or start, or a started stream that stops delivering (no new audio
for ``stall_s``), sets ``state`` to "failed" with a one-line ``error``, logs ONE warning for the
whole outage, closes the stream and terminates PortAudio, and is tried again after ``retry_s``,
then less and less often (up to 4x ``retry_s``), with debug lines only. PortAudio lists devices
only when it is initialised, and ``Pa_Initialize`` is reference counted: a replugged microphone
is seen once every PyAudio instance in the process is terminated (see
:meth:`Capture.suspend_device`). When it works again, state is "running" and one info line says
so. A device lost while the stream rests is found at the next start (a press): failed, not a hang.

The PortAudio side (the stream, its callback, and the calls that open, start, stop and close
it) is :mod:`appliance.audio.mic_stream`; this module decides when. Every PortAudio call holds
:data:`appliance.audio.devices.PORTAUDIO_LOCK` and runs in a short-lived daemon thread, so a
slow enumeration does not stall the loop and a stream that hangs (a dead device, a dry named
pipe in tests) cannot hang the loop: it is left to finish in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from appliance.audio.devices import AudioDeviceError
from appliance.audio.mic_stream import MicPort, MicStream, port_audio_error
from appliance.audio.resample import to_mono
from appliance.blocking import in_daemon_thread
from appliance.config.schema import AudioConfig

log = logging.getLogger(__name__)

OUTPUT_RATE = 24000  # what the Realtime API takes by default: 24 kHz mono PCM16
DRAIN_S = 0.1  # how often the loop takes the ring while listening: 100 ms appends
WATCH_S = 0.25  # how often a started stream is checked for new audio
CALL_WAIT_S = 2.0  # how long a PortAudio start or stop may take before the device counts as lost
CLOSE_WAIT_S = 0.4  # how long stop() waits for PortAudio to close the stream
BACKOFF_MAX = 4  # retries slow down to this many times retry_s
LOSS_NOTE_S = 10.0  # (echo cancellation) lost samples are logged at most this often

StateCallback = Callable[[str, str], Any]
_PCM16 = np.dtype("<i2")  # the wire format (parsed once, not per chunk)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """A PortAudio call given up on may still fail later: that is no news (no asyncio warning)."""
    if not future.cancelled():
        future.exception()


@dataclass
class ListenTiming:
    """One ``listen(True)`` that started the stream: when, and when capture began.

    ``capture_began_at`` is the later of the start call and the first callback less one period
    (a sound card calls back once a period is captured; a backlog in a test pipe comes at once).
    """

    asked_at: float
    start_called_at: float = 0.0
    first_callback_at: float = 0.0
    capture_began_at: float = 0.0

    @property
    def press_to_capture_ms(self) -> float | None:
        if not self.capture_began_at:
            return None
        return (self.capture_began_at - self.asked_at) * 1000


class Capture:
    """The microphone of ``config`` (an AudioConfig) as an async stream of PCM16 chunks.

    ``async with Capture(config) as mic: async for chunk in mic.chunks(): ...`` or
    ``await start()`` / ``await stop()``. ``start()`` returns once the device has delivered
    audio or has failed (then it keeps retrying in the background); it never raises for a
    device problem. A new Capture listens; ``listen(False)`` before ``start()`` makes it rest.

    ``pa_factory`` makes the PyAudio instance (default ``pyaudio.PyAudio``); with
    ``owns_pa=False`` the instance is shared: never terminated, and made once. ``channels``
    forces the channel count (tests, odd devices); by default mono if the device can, else its
    channel count clamped to 1..2, downmixed. ``on_state(state, error)`` is called in the loop
    thread whenever ``state`` or ``error`` changes. ``api_rate`` is the rate of the chunks
    (``realtime.input_rate``); a device that has it is opened at it, so nothing is resampled.
    ``drain_s`` is how often chunks() takes the ring (tests of clockless devices: less).
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
        drain_s: float = DRAIN_S,
    ) -> None:
        self.config = config
        self.drain_s = drain_s  # tests of clockless file devices drain faster
        self.api_rate = api_rate
        # echo cancellation: (EchoCanceller, ReferenceTap) applied to the chunks, or None
        self.echo = echo
        self._loop: asyncio.AbstractEventLoop = loop  # type: ignore[assignment]  # set by start
        self._port = MicPort(
            config, pa_factory=pa_factory, owns_pa=owns_pa, channels=channels, api_rate=api_rate
        )
        self._on_state = on_state
        self._ring_s = ring_s
        self._stall_s = stall_s

        self.state = "stopped"
        self.error = ""
        self.device_name = ""
        self.device_rate = 0
        self.channels = 0
        self.callbacks = 0  # callbacks' chunks taken from the ring (each callback gives one)
        self.callback_errors = 0  # kept for the status figures: the callback cannot fail
        self.starts = 0  # starts of the stream that delivered audio (at start, at each press...)
        self.last_listen: ListenTiming | None = None  # the latest listen(True) that started it

        self._active: MicStream | None = None  # replaced in the loop thread only
        self._past_overruns = 0
        self._stopped = True
        self._suspended = False
        self._listening = True
        self._task: asyncio.Task[None] | None = None
        self._kick: asyncio.Event | None = None  # the supervisor has something to do
        self._retry_now: asyncio.Event | None = None  # end a wait between retries now
        self._idle: asyncio.Event | None = None  # suspended: the device is closed
        self._reopen = False  # resume_device(): open with a fresh PortAudio now
        self._retry_due = False  # the wait before the next retry is over
        self._audio_wake: asyncio.Event | None = None  # chunks() has a started stream to drain
        self._first: asyncio.Event | None = None  # the stream's first callback since its start
        self._settled: asyncio.Future[None] | None = None
        self._failures = 0  # consecutive failed attempts (the retry backoff)
        self._pending: ListenTiming | None = None  # a listen(True) whose stream is not yet heard
        self._clears = 0
        # (echo cancellation) losses not yet logged: [count, frames, too long to fill]
        self._losses_pending = [0, 0, 0]
        self._losses_noted_at = -LOSS_NOTE_S

    # --- figures ----------------------------------------------------------------------------

    @property
    def overruns(self) -> int:
        """Times the ring was found full: audio was dropped because nobody read it in time."""
        active = self._active
        return self._past_overruns + (active.ring.overruns if active else 0)

    @property
    def dropped_frames(self) -> int:
        """(echo cancellation only) Frames the device lost (PortAudio's input overflows) since
        it was opened, which silence stands in for; 0 without echo cancellation."""
        active = self._active
        return active.gaps.lost_frames if active is not None else 0

    @property
    def press_to_capture_ms(self) -> float | None:
        """The latest listen(True) that started the stream: ms until capture began."""
        timing = self.last_listen
        return None if timing is None else timing.press_to_capture_ms

    @property
    def input_latency_s(self) -> float:
        """What PortAudio reports for the open stream (echo cancellation)."""
        return self._port.input_latency_s

    @property
    def streaming(self) -> bool:
        """The PortAudio stream is started (callbacks run)."""
        active = self._active
        return active is not None and active.started

    # --- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Capture:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open the device; return when it has delivered audio or the first attempt failed."""
        if self._task is not None:
            return
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._stopped = False
        self._kick = asyncio.Event()
        self._retry_now = asyncio.Event()
        self._idle = asyncio.Event()
        self._audio_wake = asyncio.Event()
        self._first = asyncio.Event()
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
        await self._close(terminate=True, wait_s=CLOSE_WAIT_S)
        self._set_state("stopped", "")
        if self._audio_wake is not None:
            self._audio_wake.set()  # ends chunks()

    async def suspend_device(self) -> None:
        """Close the stream and terminate PortAudio, and try nothing until resume_device().

        For a change in the set of sound cards: once every PyAudio instance in the process is
        terminated, the next one enumerates the devices again. Idempotent; any state; returns
        once the device is closed (or after a few seconds if PortAudio hangs).
        """
        if self._stopped or self._idle is None:
            return
        self._suspended = True
        self._idle.clear()
        self._wake_supervisor()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2 * CALL_WAIT_S + self._stall_s):
                await self._idle.wait()

    async def resume_device(self) -> None:
        """Open the device again with a fresh enumeration (after suspend_device(), or to look
        now rather than at the next retry); the stream rests unless somebody listens. Returns
        after this attempt: state "running", or "failed" (then the usual quiet retries)."""
        if self._stopped or self._loop is None:
            return
        self._suspended = False
        self._failures = 0
        self._reopen = True
        settled = self._settled = self._loop.create_future()
        self._wake_supervisor()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            async with asyncio.timeout(2 * CALL_WAIT_S + self._stall_s + 5):
                await asyncio.shield(settled)

    def listen(self, on: bool) -> None:
        """Start the stream and deliver chunks (True), or stop it (False). Between turns the
        box needs no microphone: stopped, it costs nothing. Listening starts from fresh audio.
        Call from the loop thread; at a push-to-talk release call :meth:`take_tail` first.
        """
        if on == self._listening:
            return
        self._listening = on
        if on:
            self.clear()
            now = time.monotonic()
            if self.streaming:  # not stopped yet since the last listen: it captures already
                self.last_listen, self._pending = ListenTiming(now, now, now, now), None
            else:
                self._pending = ListenTiming(now)
        else:
            self._pending = None
        self._kick_supervisor()
        if self._audio_wake is not None:
            self._audio_wake.set()

    @property
    def listening(self) -> bool:
        return self._listening

    def clear(self) -> int:
        """Drop the audio buffered so far; returns the chunks dropped. Loop thread."""
        self._clears += 1
        active = self._active
        if active is None:
            return 0
        active.resampler.reset()
        return active.ring.clear()

    # --- the asyncio side: draining ----------------------------------------------------------

    async def chunks(self) -> AsyncIterator[bytes]:
        """Mono PCM16 little-endian chunks at ``api_rate``, until stop().

        While the stream runs and somebody listens, every DRAIN_S all the ring holds is taken,
        downmixed and resampled, and yielded as one chunk (about 100 ms). Otherwise this waits
        on an event: no timer runs at rest. One consumer at a time.
        """
        wake = self._audio_wake
        if wake is None:
            raise RuntimeError("Capture.chunks() before start()")
        while not self._stopped:
            if not (self._listening and self.streaming):
                wake.clear()
                await wake.wait()
                continue
            await asyncio.sleep(self.drain_s)
            if self._listening and not self._stopped:
                pcm = self._drain(final=False)
                if pcm:
                    yield pcm

    def take_tail(self) -> bytes:
        """Everything captured since the last chunk, now, with the resampler's tail: the end of
        a push-to-talk question, to send before the commit. Loop thread."""
        return self._drain(final=True)

    def _drain(self, final: bool) -> bytes:
        active = self._active
        if active is None:
            return b""
        arrived = active.last_callback
        data = active.ring.take()
        if active.gaps.recent or self._losses_pending[0]:  # (echo cancellation) lost samples
            self._note_losses(active)
        if not data:
            if not final:
                return b""
        else:
            self.callbacks += len(data) // (2 * active.channels * active.period)
            if active.passthrough and self.echo is None:
                return data  # mono at the API's rate: the callback's bytes are the chunk
        frames = np.frombuffer(data, dtype=_PCM16)
        if active.channels > 1:
            frames = to_mono(
                frames[: len(frames) // active.channels * active.channels].reshape(
                    -1, active.channels
                )
            )
        out = active.resampler.process(frames) if len(frames) else frames
        if final:
            tail = active.resampler.flush()
            if len(tail):
                out = np.concatenate([out, tail])
        if self.echo is not None and len(out):
            out = self._cancel_echo(out, arrived, active.captured_end())
        return out.astype(_PCM16, copy=False).tobytes()

    def _note_losses(self, active: MicStream) -> None:
        """(echo cancellation) PortAudio lost samples: one line at the first loss, then at most
        one every LOSS_NOTE_S with the losses meanwhile (a starved box loses them often)."""
        recent, pending = active.gaps.recent, self._losses_pending
        while recent:
            lost = recent.popleft()
            pending[0] += 1
            pending[1] += lost
            pending[2] += lost > active.gaps.max_fill
        now = time.monotonic()
        if not pending[0] or now - self._losses_noted_at < LOSS_NOTE_S:
            return
        count, frames, unfilled = pending
        log.info(
            "microphone: %d input overflow%s lost %.0f ms of samples (%d frames); silence "
            "stands in for them%s",
            count,
            "s" if count > 1 else "",
            frames * 1000 / active.rate,
            frames,
            f" (not for {unfilled} too long to fill)" if unfilled else "",
        )
        self._losses_noted_at = now
        pending[:] = [0, 0, 0]

    def _cancel_echo(self, out: np.ndarray, arrived: float, captured: float) -> np.ndarray:
        """(echo cancellation) ``out`` minus the echo of what the speaker played meanwhile.
        The chunk's last sample was captured at ``captured`` (PortAudio's stamp, 0 if none) and
        reached the callback about when its last callback ran (``arrived``)."""
        canceller, tap = self.echo  # type: ignore[misc]
        tap.set_input_latency(self._port.input_latency_s)
        far = tap.read(len(out), arrived or time.monotonic(), captured)
        return canceller.process(out, far)

    def _first_audio(self, active: MicStream, at: float) -> None:
        """(loop thread, once per start, from the callback) The started stream delivers."""
        if active is not self._active:
            return
        self.starts += 1  # counted with last_listen, so a reader of both sees them agree
        timing = self._pending
        if timing is not None and active.start_called_at >= timing.asked_at:
            timing.start_called_at = active.start_called_at
            timing.first_callback_at = at
            period_s = active.period / active.rate
            timing.capture_began_at = max(timing.start_called_at, at - period_s)
            self.last_listen, self._pending = timing, None
        if self._first is not None:
            self._first.set()

    # --- the supervisor ---------------------------------------------------------------------

    def _kick_supervisor(self) -> None:
        if self._kick is not None:
            self._kick.set()

    def _wake_supervisor(self) -> None:
        """Kick it, and end a wait between retries (suspend, resume)."""
        self._kick_supervisor()
        if self._retry_now is not None:
            self._retry_now.set()

    async def _supervise(self) -> None:
        """Open, start and stop as listening asks, watch, retry after a failure; never raises.
        Every PortAudio call of this Capture is made from here, one at a time."""
        while not self._stopped:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug here must not end the retries
                log.debug("capture supervisor error", exc_info=True)
                await self._lose(f"microphone error: {type(exc).__name__}: {exc}")

    async def _step(self) -> None:
        kick = self._kick
        assert kick is not None and self._idle is not None
        if self._suspended:
            if self._active is not None or self._port.pa is not None:
                await self._close(terminate=True, wait_s=CALL_WAIT_S)
            self._idle.set()
            kick.clear()
            if self._suspended:
                await kick.wait()
            return
        if self._reopen:  # resume_device(): a fresh PortAudio, now
            self._reopen = self._retry_due = False
            if self._active is not None:
                await self._close(terminate=True, wait_s=CALL_WAIT_S)
            await self._open()
            return
        active = self._active
        if active is None:
            if self.state == "failed" and not self._retry_due:
                await self._wait_retry()
                self._retry_due = True
                return
            self._retry_due = False
            await self._open()
            return
        if self._listening != active.started:
            await self._run_stream(active, self._listening)
            return
        kick.clear()
        if not active.started:
            await kick.wait()  # at rest: nothing to watch, nothing to poll
            return
        # Listening: new audio must keep coming (a new newest chunk, or chunks taken).
        taken, newest = active.ring.taken, active.ring.newest
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._stall_s):
                await kick.wait()
                return
        ring = active.ring
        if ring.taken == taken and ring.newest is newest and active is self._active:
            await self._lose(f"{self._describe(active)}: no audio for {self._stall_s:g} s")

    async def _wait_retry(self) -> None:
        """Wait before the next attempt: retry_s, doubling, at most BACKOFF_MAX x retry_s
        (ended early by suspend_device() and resume_device())."""
        retry = self._retry_now
        assert retry is not None
        delay = self.config.retry_s * min(BACKOFF_MAX, 2 ** max(0, self._failures - 1))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await retry.wait()
        retry.clear()

    async def _open(self) -> None:
        """One attempt: open the device and start it until its first callback (it works)."""
        try:
            opening = functools.partial(
                self._port.open,
                lambda: not (self._stopped or self._suspended),
                self.echo is not None,
                ring_s=self._ring_s,
                loop=self._loop,
                first_audio=self._first_audio,
            )
            active = await in_daemon_thread(opening, name="capture-open")
        except asyncio.CancelledError:
            raise
        except AudioDeviceError as exc:
            await self._close(terminate=True, wait_s=CALL_WAIT_S)  # then say so: it is closed
            self._fail(str(exc))
            return
        except Exception as exc:
            log.debug("opening the microphone failed", exc_info=True)
            await self._close(terminate=True, wait_s=CALL_WAIT_S)
            self._fail(f"cannot open the microphone: {port_audio_error(exc)}")
            return
        if active is None:  # stopped or suspended meanwhile
            return
        self._active = active
        if self._suspended or self._stopped:
            return  # the next step closes it
        self.device_name, self.device_rate, self.channels = (
            active.device.name,
            active.rate,
            active.channels,
        )
        if await self._run_stream(active, True):
            self._running(active)

    async def _run_stream(self, active: MicStream, start: bool) -> bool:
        """Start (and hear from) or stop the stream; on a failure the device is lost."""
        first = self._first
        assert first is not None
        if start:
            first.clear()
            active.arm()
        call = in_daemon_thread(self._port.start if start else self._port.stop, active)
        call.add_done_callback(_retrieve)
        try:
            async with asyncio.timeout(CALL_WAIT_S):
                await asyncio.shield(call)
        except TimeoutError:
            await self._lose(
                f"{self._describe(active)}: PortAudio did not {'start' if start else 'stop'} "
                f"the stream within {CALL_WAIT_S:g} s"
            )
            return False
        except OSError as exc:
            await self._lose(f"{self._describe(active)}: {port_audio_error(exc)}")
            return False
        if not start:
            return True
        try:
            async with asyncio.timeout(self._stall_s):
                await first.wait()
        except TimeoutError:
            await self._lose(f"{self._describe(active)}: started but delivers no audio")
            return False
        if self._audio_wake is not None:
            self._audio_wake.set()
        return True

    async def _lose(self, problem: str) -> None:
        """The device broke: fail, close the stream, terminate PortAudio, retry later."""
        self._fail(problem)
        await self._close(terminate=True, wait_s=CALL_WAIT_S)

    async def _close(self, terminate: bool, wait_s: float) -> None:
        active, self._active = self._active, None
        if active is not None:
            self._past_overruns += active.ring.overruns
        closing = in_daemon_thread(self._port.close, active, terminate, name="capture-close")
        closing.add_done_callback(_retrieve)
        done, _ = await asyncio.wait({closing}, timeout=wait_s)
        if not done:
            log.debug("the microphone did not close in time; it is left to close on its own")
        elif closing.exception() is not None:
            log.debug("closing the microphone failed: %s", closing.exception())

    def _describe(self, active: MicStream) -> str:
        return f"input device {active.device.index} {active.device.name!r}"

    def _running(self, active: MicStream) -> None:
        was = self.state
        self._failures = 0
        self._set_state("running", "")
        what = (
            f"{active.device.index} {active.device.name!r} at {active.rate} Hz, "
            f"{active.channels} channel{'s' if active.channels > 1 else ''}"
        )
        if was == "failed":
            log.info("microphone is back: %s", what)
        elif was != "running":
            log.info("microphone: %s, %d ms periods", what, self.config.period_ms)

    def _fail(self, error: str) -> None:
        error = " ".join(error.splitlines())
        self._failures += 1
        if self.state != "failed":
            log.warning(
                "microphone unavailable: %s; retrying every %g s or less often",
                error,
                self.config.retry_s,
            )
        else:
            log.debug("microphone still unavailable: %s", error)
        self._set_state("failed", error)

    def _settle(self) -> None:
        if self._settled is not None and not self._settled.done():
            self._settled.set_result(None)

    def _set_state(self, state: str, error: str) -> None:
        changed = (state, error) != (self.state, self.error)
        self.state, self.error = state, error
        if state != "stopped":
            self._settle()
        if changed and self._on_state is not None:
            try:
                self._on_state(state, error)
            except Exception as exc:
                log.warning("microphone state callback failed: %s: %s", type(exc).__name__, exc)
