"""The microphone's PortAudio side: one opened input stream and the calls made on it.

:class:`MicStream` is one opened stream and what belongs to it (ring, resampler, callback, the
callback thread's Python state); a new one per (re)open, so a late callback of an old stream can
only touch its own ring. :class:`MicPort` holds the PortAudio instance and makes the calls:
open, start, stop, close, terminate. They block (a slow enumeration, a dead device), so
:class:`~appliance.audio.capture.Capture` makes them in worker threads, one at a time, and
each holds :data:`appliance.audio.devices.PORTAUDIO_LOCK`: the speaker calls PortAudio too,
and two threads in it at once crashed alsa-lib.

The callback runs on PortAudio's thread: it appends the bytes it was given to the ring and
returns; once per start it tells the loop that audio flows (``call_soon_threadsafe``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import pyaudio

from appliance.audio.devices import (
    PORTAUDIO_LOCK,
    AudioDeviceError,
    DeviceInfo,
    ask_latency,
    find_device,
    open_pyaudio,
    pick_rate,
    quiet_stderr,
)
from appliance.audio.echo_reference import InputGaps
from appliance.audio.resample import SPEECH_QUALITY, StreamResampler
from appliance.audio.ring import ChunkRing
from appliance.audio.thread_state import ThreadStatePin, unpin_wait_s
from appliance.config.schema import AudioConfig

CAPTURE_RATES = (24000, 48000, 44100, 16000)  # tried in turn (after the API's) when input_rate is 0
_CONTINUE = (None, pyaudio.paContinue)
# How much the device's capture buffer may hold before PortAudio loses samples, with echo
# cancellation (hands-free: the mic runs for hours and a loss misaligns the canceller). PyAudio
# asks for the device's "low" input latency, which ALSA devices give as two periods or less
# (40 ms at 20 ms periods): any stall of the capture thread longer than that lost audio (a
# starved VM lost 0.7-8 s of a 40 s hands-free run). On a card a larger buffer delays nothing: the
# callback still runs as each period is captured; the buffer only keeps what came while the
# thread was held up. What comes late then comes in a burst, which does not move the echo's
# reference: it is placed by the buffers' ADC times, not by when the callback ran
# (echo_reference.py). (Not in push-to-talk: over the tests' clockless file devices PortAudio
# then reads ahead from the file in bursts, which is what a card cannot do.)
INPUT_HEADROOM_S = 0.25


def port_audio_error(exc: BaseException) -> str:
    """``[Errno -9996] Invalid input device`` -> ``Invalid input device (PortAudio -9996)``."""
    if isinstance(exc, OSError) and isinstance(exc.errno, int) and exc.strerror:
        return f"{exc.strerror} (PortAudio {exc.errno})"
    return str(exc) or type(exc).__name__


class MicStream:
    """One opened input stream: its ring, its resampler (device rate -> the API's), its
    callback. ``first_audio(stream, at)`` is called in ``loop`` after the first callback of
    each start."""

    def __init__(
        self,
        device: DeviceInfo,
        rate: int,
        channels: int,
        *,
        period_ms: int,
        api_rate: int,
        ring_s: float,
        loop: asyncio.AbstractEventLoop,
        first_audio: Callable[[MicStream, float], None],
    ):
        self.device = device
        self.rate = rate
        self.channels = channels
        self.period = max(1, round(rate * period_ms / 1000))
        self.ring = ChunkRing(max(2, round(ring_s * 1000 / period_ms)))
        self.resampler = StreamResampler(rate, api_rate, quality=SPEECH_QUALITY)
        self.passthrough = channels == 1 and rate == api_rate  # nothing to convert
        self.stream: Any = None
        self.started = False  # the PortAudio stream is started (set by the worker thread)
        self.start_called_at = 0.0  # (worker thread) when Pa_StartStream was last called
        self.last_callback = 0.0  # (echo cancellation only) monotonic time of the last callback
        self.gaps = InputGaps(rate, 2 * channels)  # (echo cancellation only) lost samples
        # (echo cancellation only) frames appended to the ring so far, silence included, the
        # bytes the full ring dropped, and (PortAudio's capture time of the end of the last
        # appended buffer, the frames appended then): where the loop's chunk ends in the room's
        # time, however late the callback ran (see captured_end)
        self.appended = 0
        self.dropped_bytes = 0
        self.captured: tuple[float, int] | None = None
        self._loop = loop
        self._first_audio = first_audio
        self._append = self.ring.append
        self._armed = False  # the next callback is the first since a start: tell the loop
        self.pin = ThreadStatePin()  # PortAudio's thread keeps its Python state while it runs

    def arm(self) -> None:
        self._armed = True
        self.pin.arm()

    def unpin(self) -> None:
        """(worker thread, before a stop) The callback thread gives its Python state back."""
        self.pin.unpin(unpin_wait_s(self.period / self.rate))

    def callback(self, in_data: bytes, frame_count: int, time_info: Any, status: int):
        """PortAudio's thread: keep the bytes; nothing else (once per start: tell the loop)."""
        self._append(in_data)
        if self._armed:
            self._first(time.monotonic())
        if self.pin.attend:
            self.pin.service()
        return _CONTINUE

    def timed_callback(self, in_data: bytes, frame_count: int, time_info: Any, status: int):
        """The callback when an echo canceller needs to know when audio arrived, and where
        PortAudio lost some (an overflow): silence of the lost length goes first (InputGaps)."""
        now = time.monotonic()
        adc = time_info.get("input_buffer_adc_time", 0.0) if time_info else 0.0
        if self._armed:
            self.captured = None
        chunks = self.gaps.process(in_data, adc, frame_count, status, now, self._armed)
        ring = self.ring
        for chunk in chunks:
            if len(ring) == ring.max_chunks:  # the oldest goes: counted as taken
                with contextlib.suppress(IndexError):
                    self.dropped_bytes += len(ring.oldest)
            self._append(chunk)
            self.appended += len(chunk) // self.gaps.frame_bytes
        if adc > 0 and chunks and chunks[-1] is in_data:  # (not when InputGaps holds it)
            self.captured = (adc + frame_count / self.rate, self.appended)  # one atomic store
        self.last_callback = now
        if self._armed:
            self._first(now)
        if self.pin.attend:
            self.pin.service()
        return _CONTINUE

    def captured_end(self) -> float:
        """(loop thread, after a take) PortAudio's capture time of the end of what the ring
        gave so far (0 if unknown). The callback may have appended more since its last stamp,
        or stamped frames not taken yet: both are counted from the stamp at the stream's rate,
        which holds because silence stands in for lost frames (InputGaps)."""
        captured = self.captured
        if captured is None:
            return 0.0
        end, count = captured
        taken = (self.ring.taken_bytes + self.dropped_bytes) // self.gaps.frame_bytes
        return end - (count - taken) / self.rate

    def _first(self, now: float) -> None:
        self._armed = False
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(self._first_audio, self, now)


class MicPort:
    """The PortAudio instance of one microphone and the calls on its streams (worker threads).

    ``pa_factory`` makes the PyAudio instance (default ``pyaudio.PyAudio``); with
    ``owns_pa=False`` the instance is shared: never terminated, and made once. ``channels``
    forces the channel count, else mono if the device can, else its channels clamped to 1..2.
    """

    def __init__(
        self,
        config: AudioConfig,
        *,
        pa_factory: Callable[[], Any] | None,
        owns_pa: bool,
        channels: int | None,
        api_rate: int,
    ) -> None:
        self.config = config
        self.api_rate = api_rate
        self.pa: Any = None  # the PyAudio instance, None while terminated
        self.input_latency_s = 0.0  # what PortAudio reports for the latest open
        self._pa_factory = pa_factory
        self._owns_pa = owns_pa
        self._forced_channels = channels

    def open(self, wanted: Callable[[], bool], timed: bool, **stream_args: Any) -> MicStream | None:
        """A fresh PortAudio instance, the configured device, an opened stream (not started),
        or None if ``wanted()`` is false once the lock is held. ``timed``: the callback notes
        when audio arrived (echo cancellation). ``stream_args`` go to :class:`MicStream`."""
        with PORTAUDIO_LOCK:
            if not wanted():
                return None
            if self.pa is not None and self._owns_pa:
                self._terminate_locked()
            if self.pa is None:
                self.pa = open_pyaudio(self._pa_factory)
            pa = self.pa
            with quiet_stderr():  # probing rates prints ALSA's failures for the rejected ones
                device = find_device(pa, self.config.input_device, "input")
                channels, rate = self._format(pa, device)
            active = MicStream(
                device,
                rate,
                channels,
                period_ms=self.config.period_ms,
                api_rate=self.api_rate,
                **stream_args,
            )
            headroom = timed and ask_latency(pa, device.index, INPUT_HEADROOM_S, output=False)
            try:
                with quiet_stderr():
                    active.stream = pa.open(
                        rate=rate,
                        channels=channels,
                        format=pyaudio.paInt16,
                        input=True,
                        input_device_index=device.index,
                        frames_per_buffer=active.period,
                        stream_callback=active.timed_callback if timed else active.callback,
                        start=False,
                    )
                    # (echo cancellation, without ADC times) how late a sample reaches the
                    # callback: with the headroom PortAudio reports the buffer's size, but a
                    # sample waits a period unless the thread was held up
                    self.input_latency_s = active.period / rate
                    if not headroom:
                        with contextlib.suppress(Exception):
                            self.input_latency_s = float(active.stream.get_input_latency())
            except OSError as exc:
                raise AudioDeviceError(
                    f"cannot open input device {device.index} {device.name!r} at {rate} Hz, "
                    f"{channels} ch: {port_audio_error(exc)}"
                ) from None
            return active

    def start(self, active: MicStream) -> None:
        with PORTAUDIO_LOCK:
            if active.stream is None or active.started:
                return
            active.start_called_at = time.monotonic()
            with quiet_stderr():
                active.stream.start_stream()
            active.started = True

    def stop(self, active: MicStream) -> None:
        if active.stream is None or not active.started:
            return
        active.unpin()  # not under the lock: the speaker may need it meanwhile
        with PORTAUDIO_LOCK:
            if active.stream is None or not active.started:
                return
            with quiet_stderr():
                active.stream.stop_stream()
            active.started = False

    def close(self, active: MicStream | None, terminate: bool) -> None:
        """Close the stream, and terminate PortAudio if this port owns it."""
        if active is not None and active.stream is not None and active.started:
            active.unpin()  # not under the lock: the speaker may need it meanwhile
        with PORTAUDIO_LOCK, quiet_stderr():  # a lost device's errors: one line, ours
            if active is not None and active.stream is not None:
                if active.started:
                    active.started = False
                    with contextlib.suppress(Exception):
                        active.stream.stop_stream()
                with contextlib.suppress(Exception):
                    active.stream.close()
            if terminate and self._owns_pa:
                self._terminate_locked()

    def _format(self, pa: Any, device: DeviceInfo) -> tuple[int, int]:
        """(channels, rate): mono if the device can, else its channels clamped to 1..2; the
        configured rate, else the API's (nothing to resample), else the usual candidates."""
        if self._forced_channels:
            options = [self._forced_channels]
        else:
            options = list(dict.fromkeys([1, min(max(device.max_input_channels, 1), 2)]))
        candidates = (self.api_rate, *CAPTURE_RATES)
        error: AudioDeviceError | None = None
        for channels in options:
            try:
                rate = pick_rate(pa, device, "input", self.config.input_rate, candidates, channels)
                return channels, rate
            except AudioDeviceError as exc:
                error = error or exc
        assert error is not None
        raise error

    def _terminate_locked(self) -> None:
        pa, self.pa = self.pa, None
        if pa is not None:
            with contextlib.suppress(Exception):
                pa.terminate()
