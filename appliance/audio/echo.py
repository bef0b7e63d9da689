"""Acoustic echo cancellation of the microphone: speexdsp (Debian's libspeexdsp) through ctypes.

In hands-free mode the microphone listens while the box speaks, so it hears the box. An
adaptive filter learns the room's echo path from the far end (what the speaker plays, see
:mod:`appliance.audio.echo_reference`) and subtracts its estimate of the echo from the mic;
a residual echo suppressor then removes most of what the linear filter leaves.

Why speexdsp, chosen by measurement (``bench/echo.py``: a synthetic room, 20-60 ms delay plus
a decaying 150 ms tail, espeak-ng voices, 20 ms chunks as the capture gives them, on the build
machine, x86-64)::

    library                       ERLE     near-end corr   CPU-ms/min   output delay
    speex, suppressor (chosen)    43.4 dB  0.990           416          20 ms (one frame)
    speex, linear filter only     29.5 dB  0.990           295          0
    webrtc (aec-audio-processing) 47.9 dB  0.741           522          9.3 ms (unreported)

(seed 1, 40 s, 20 ms frames, 200 ms filter; seeds 2 and 3 give speex 45.6 and 42.3 dB, 0.989.)

- speexdsp (MDF filter + the preprocessor's residual echo suppression) meets the targets
  (ERLE >= 20 dB, near-end correlation >= 0.9, <= 600 CPU-ms/min), is a Debian package
  (``libspeexdsp1``, 1.2.1, also on Raspberry Pi OS for arm64 and armhf), and needs no compiler:
  a ctypes binding over five C functions.
- ``aec-audio-processing`` (PyPI, WebRTC AEC3) has no wheel at all: pip builds its sdist, which
  compiles webrtc-audio-processing 2 and abseil with meson and a C++17 compiler (about 15
  minutes here, far longer on a Pi). Built, it cancels a little more echo but also most of the
  near-end voice during double talk (correlation 0.74 < 0.9): a barge-in would be lost.

Frames: the canceller works on whole frames (``frame_ms``, 20 ms = 480 samples at 24 kHz); the
filter covers ``tail_ms`` of echo path (delay + reverberation + the reference's alignment
error, see echo_reference.py), 200 ms by default. :meth:`EchoCanceller.process` takes any
chunk size: it buffers to whole frames and returns exactly as many samples as it was given.
With chunks that are whole frames (20 ms chunks, 20 ms frames: a 24 kHz mic) the output is
not delayed by the buffering; the first chunk that does not end on a frame (a 48 kHz mic,
resampled, gives 479 or 481 samples) introduces a fixed delay of one frame less one sample
(zeros, once), which then stays. The residual echo suppressor adds one frame (see ``delay``).

No I/O, no threads: call from one thread (the asyncio loop's) at a time.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
from typing import Any

import numpy as np

from appliance.audio.echo_reference import DelayEstimator

log = logging.getLogger(__name__)

# speex/speex_echo.h, speex/speex_preprocess.h
_SPEEX_ECHO_SET_SAMPLING_RATE = 24
_SPEEX_PREPROCESS_SET_NOISE_SUPPRESS = 18
_NOISE_SUPPRESS_DB = -6
_SPEEX_PREPROCESS_SET_AGC = 2
_SPEEX_PREPROCESS_SET_DEREVERB = 8
_SPEEX_PREPROCESS_SET_ECHO_SUPPRESS = 20
_SPEEX_PREPROCESS_SET_ECHO_SUPPRESS_ACTIVE = 22
_SPEEX_PREPROCESS_SET_ECHO_STATE = 24

_speex_lib: Any = None
_speex_error = ""


def _load_speex() -> Any:
    """libspeexdsp via ctypes, with argument types declared; None (and why) if missing."""
    global _speex_lib, _speex_error
    if _speex_lib is not None or _speex_error:
        return _speex_lib
    name = ctypes.util.find_library("speexdsp") or "libspeexdsp.so.1"
    try:
        lib = ctypes.CDLL(name)
        p, i, i16p = ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int16)
        lib.speex_echo_state_init.argtypes = [i, i]
        lib.speex_echo_state_init.restype = p
        lib.speex_echo_state_destroy.argtypes = [p]
        lib.speex_echo_state_destroy.restype = None
        lib.speex_echo_state_reset.argtypes = [p]
        lib.speex_echo_state_reset.restype = None
        lib.speex_echo_ctl.argtypes = [p, i, p]
        lib.speex_echo_ctl.restype = i
        lib.speex_echo_cancellation.argtypes = [p, i16p, i16p, i16p]
        lib.speex_echo_cancellation.restype = None
        lib.speex_preprocess_state_init.argtypes = [i, i]
        lib.speex_preprocess_state_init.restype = p
        lib.speex_preprocess_state_destroy.argtypes = [p]
        lib.speex_preprocess_state_destroy.restype = None
        lib.speex_preprocess_ctl.argtypes = [p, i, p]
        lib.speex_preprocess_ctl.restype = i
        lib.speex_preprocess_run.argtypes = [p, i16p]
        lib.speex_preprocess_run.restype = i
    except (OSError, AttributeError) as exc:
        _speex_error = f"libspeexdsp not usable ({name}): {exc}"
        return None
    _speex_lib = lib
    return lib


class _Speex:
    """One speexdsp echo canceller (+ residual echo suppressor) on frames of ``frame`` samples."""

    name = "speex"

    def __init__(self, rate: int, frame: int, tail: int, suppress: bool) -> None:
        lib = _load_speex()
        if lib is None:
            raise RuntimeError(_speex_error)
        self._lib = lib
        self._args = (rate, frame, tail, suppress)
        self._echo: Any = None
        self._pre: Any = None
        self._out = np.zeros(frame, dtype=np.int16)
        self._m = np.zeros(frame, dtype=np.int16)
        self._r = np.zeros(frame, dtype=np.int16)
        self.latency = frame if suppress else 0  # the preprocessor's overlap-add: one frame
        self._i16 = ctypes.POINTER(ctypes.c_int16)
        self._make()

    def _make(self) -> None:
        lib = self._lib
        rate, frame, tail, suppress = self._args
        self._echo = lib.speex_echo_state_init(frame, tail)
        if not self._echo:
            raise RuntimeError("speex_echo_state_init failed")
        value = ctypes.c_int(rate)
        lib.speex_echo_ctl(self._echo, _SPEEX_ECHO_SET_SAMPLING_RATE, ctypes.byref(value))
        if suppress:
            self._pre = lib.speex_preprocess_state_init(frame, rate)
            off = ctypes.c_int(0)
            for ctl in (_SPEEX_PREPROCESS_SET_AGC, _SPEEX_PREPROCESS_SET_DEREVERB):
                lib.speex_preprocess_ctl(self._pre, ctl, ctypes.byref(off))
            # The residual echo suppression is part of the denoiser's gain: with denoise off
            # it does nothing. Noise is suppressed only mildly (the server has its own).
            noise = ctypes.c_int(_NOISE_SUPPRESS_DB)
            lib.speex_preprocess_ctl(
                self._pre, _SPEEX_PREPROCESS_SET_NOISE_SUPPRESS, ctypes.byref(noise)
            )
            lib.speex_preprocess_ctl(self._pre, _SPEEX_PREPROCESS_SET_ECHO_STATE, self._echo)

    def process(self, mic: np.ndarray, far: np.ndarray) -> np.ndarray:
        """One frame: contiguous int16 ``mic`` and ``far`` -> a new int16 frame."""
        # Always the same buffers: the library's vectorised loops then see the same alignment
        # whatever the caller's chunking, so the output is bit for bit the same.
        out, m, r = self._out, self._m, self._r
        m[:] = mic
        r[:] = far
        cast = self._i16
        self._lib.speex_echo_cancellation(
            self._echo, m.ctypes.data_as(cast), r.ctypes.data_as(cast), out.ctypes.data_as(cast)
        )
        if self._pre is not None:
            self._lib.speex_preprocess_run(self._pre, out.ctypes.data_as(cast))
        return out.copy()

    def reset(self) -> None:
        self.close()
        self._make()

    def close(self) -> None:
        if self._pre is not None:
            self._lib.speex_preprocess_state_destroy(self._pre)
            self._pre = None
        if self._echo is not None:
            self._lib.speex_echo_state_destroy(self._echo)
            self._echo = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class _WebRTC:
    """WebRTC AEC3 through PyPI's ``aec-audio-processing`` (measured in the bench only)."""

    name = "webrtc"

    def __init__(self, rate: int, frame: int, tail: int, suppress: bool) -> None:
        from aec_audio_processing import AudioProcessor  # type: ignore[import-not-found]

        self._args = (rate, frame)
        self.latency = 0
        self._cls = AudioProcessor
        self._make()

    def _make(self) -> None:
        rate, _ = self._args
        ap = self._cls(enable_aec=True, enable_ns=False, enable_agc=False, enable_vad=False)
        ap.set_stream_format(rate, 1, rate, 1)
        ap.set_reverse_stream_format(rate, 1)
        ap.set_stream_delay(0)
        self._ap = ap

    def process(self, mic: np.ndarray, far: np.ndarray) -> np.ndarray:
        step = self._args[0] // 100  # WebRTC takes 10 ms at a time
        outs = []
        for i in range(0, len(mic), step):
            self._ap.process_reverse_stream(far[i : i + step].tobytes())
            outs.append(np.frombuffer(self._ap.process_stream(mic[i : i + step].tobytes()), "<i2"))
        return np.concatenate(outs).astype(np.int16)

    def reset(self) -> None:
        self._make()

    def close(self) -> None:
        pass


_BACKENDS = {"speex": _Speex, "webrtc": _WebRTC}


def _backend_available(library: str) -> bool:
    if library == "speex":
        return _load_speex() is not None
    if library == "webrtc":
        try:
            import aec_audio_processing  # type: ignore[import-not-found]  # noqa: F401
        except Exception:
            return False
        return True
    return False


class EchoCanceller:
    """Streaming echo canceller at ``rate`` (24 kHz mono int16).

    ``process(mic, far)``: ``far`` is what the speaker played, aligned sample for sample with
    ``mic`` (see ReferenceTap); both int16 and of the same length, any length. Returns the
    mic with the echo removed, int16, the same length as ``mic``.
    """

    def __init__(
        self,
        rate: int = 24000,
        frame_ms: int = 20,
        tail_ms: int = 200,
        *,
        library: str = "speex",
        suppress: bool = True,
        align: bool = True,
        margin_ms: float = 20.0,
        max_delay_ms: float = 500.0,
    ) -> None:
        if library not in _BACKENDS:
            raise ValueError(f"library must be one of {tuple(_BACKENDS)}, got {library!r}")
        self.rate = int(rate)
        self.frame = max(1, round(rate * frame_ms / 1000))
        tail = max(self.frame, round(rate * tail_ms / 1000))
        self.library = library
        self._backend = _BACKENDS[library](self.rate, self.frame, tail, suppress)
        self._mic = np.zeros(0, dtype=np.int16)  # less than a frame, waiting for the rest
        self._far = np.zeros(0, dtype=np.int16)
        self._ready: list[np.ndarray] = []  # processed, not yet returned
        self._ready_n = 0
        self._short = 0  # samples of delay added for short chunks (0 if all are whole frames)
        self.frames = 0  # frames processed
        # The reference's alignment, measured (see DelayEstimator): when the echo is out of
        # the filter's reach, the far end is delayed so that its direct path comes
        # ``margin_ms`` after the reference.
        self.estimator = DelayEstimator(self.rate, max_delay_ms=max_delay_ms) if align else None
        self.margin = round(margin_ms * self.rate / 1000)
        # The echo's direct path may come up to this long after the reference: its tail (a
        # room's first ~100 ms carry most of its energy) then still fits in the filter.
        self.reach = max(self.margin, tail - round(0.1 * self.rate))
        self.max_shift = round(max_delay_ms * self.rate / 1000)
        self.shift = 0  # samples by which the far end is delayed now
        self.realigns = 0  # times the shift changed
        self._far_hist = np.zeros(self.max_shift if align else 0, dtype=np.int16)

    @classmethod
    def available(cls, library: str = "speex") -> bool:
        """Whether ``library`` can be loaded here (False: the caller falls back)."""
        return _backend_available(library)

    @staticmethod
    def unavailable_reason() -> str:
        _load_speex()
        return _speex_error

    def process(self, mic: np.ndarray, far: np.ndarray) -> np.ndarray:
        mic = np.asarray(mic, dtype=np.int16).reshape(-1)
        far = np.asarray(far, dtype=np.int16).reshape(-1)
        n = len(mic)
        if len(far) != n:
            raise ValueError(f"mic and far differ in length: {n} != {len(far)}")
        if n == 0:
            return mic.copy()
        if self.estimator is not None:
            far = self._aligned(mic, far)
        mics = np.concatenate([self._mic, mic]) if len(self._mic) else mic
        fars = np.concatenate([self._far, far]) if len(self._far) else far
        whole = len(mics) // self.frame * self.frame
        f = self.frame
        for start in range(0, whole, f):
            self._ready.append(
                self._backend.process(mics[start : start + f], fars[start : start + f])
            )
            self._ready_n += f
            self.frames += 1
        self._mic = mics[whole:].copy()
        self._far = fars[whole:].copy()
        if self._ready_n < n:
            # A chunk that does not end on a frame: from now on the output lags by frame - 1
            # samples, which covers any later chunking, so this happens once (one gap of
            # silence, less than a frame, at the first such chunk).
            missing = self.frame - 1 - self._short
            self._short += missing
            self._ready.insert(0, np.zeros(missing, dtype=np.int16))
            self._ready_n += missing
        ready = np.concatenate(self._ready) if len(self._ready) > 1 else self._ready[0]
        out, rest = ready[:n], ready[n:]
        self._ready = [rest] if len(rest) else []
        self._ready_n = len(rest)
        return out

    def _aligned(self, mic: np.ndarray, far: np.ndarray) -> np.ndarray:
        """``far`` delayed (bounded) when the measured echo falls outside the filter's reach."""
        estimator = self.estimator
        assert estimator is not None
        changes = estimator.changes
        delay = estimator.update(mic, far)
        if delay is not None and estimator.changes != changes:  # a new measurement
            behind = delay - self.shift  # where the echo is now, after the reference
            moved = ""
            if behind < 0 or behind > self.reach:
                # Out of reach (before the reference, or its tail past the filter): move the
                # reference so the echo comes ``margin`` after it, and learn the path afresh,
                # which is quicker than unlearning the old one. Within reach nothing moves:
                # the filter keeps what it learnt.
                shift = min(self.max_shift, max(0, delay - self.margin))
                if shift != self.shift:
                    self.shift = shift
                    self.realigns += 1
                    self._backend.reset()
                    moved = f"; the reference is moved {shift * 1000 / self.rate:.0f} ms later"
            log.info(
                "echo cancellation: the echo comes %.0f ms after its reference%s",
                delay * 1000 / self.rate,
                moved,
            )
        full = np.concatenate([self._far_hist, far])
        start = len(self._far_hist) - self.shift
        self._far_hist = full[len(full) - len(self._far_hist) :]
        return full[start : start + len(far)]

    def reset(self) -> None:
        """Forget the learnt echo path and the buffered samples (a new, unrelated stream)."""
        self._backend.reset()
        if self.estimator is not None:
            self.estimator.reset()
            self.shift = 0
            self._far_hist[:] = 0
        self._mic = np.zeros(0, dtype=np.int16)
        self._far = np.zeros(0, dtype=np.int16)
        self._ready = []
        self._ready_n = 0
        self._short = 0

    @property
    def delay(self) -> int:
        """Samples by which the output lags the input: the residual echo suppressor's frame
        (speex's preprocessor overlaps frames) plus what short chunks added (< one frame)."""
        return self._backend.latency + self._short

    def close(self) -> None:
        self._backend.close()
