"""Earcons: the short sounds that tell the owner what the box is doing, synthesized with numpy.

Why synthesized rather than WAV files: no binary assets to ship, install or lose, and every
sound comes out at exactly the device's rate, so playing one never needs a resampler.

Each sound is built at a nominal peak and then normalized to -12 dBFS: loud enough to hear over
a room, well below an answer's speech, so a chirp never startles. Every tone burst starts and
ends with a raised-cosine fade of 4 ms; a sound that starts or stops on a non-zero sample
clicks. Frequencies glide with a continuous phase (the phase is the running sum of the
instantaneous frequency), so a two-tone sound has no step at the change of pitch either.

The sounds differ in pitch, contour and rhythm, so each can be told apart without looking:

- ``listening``: rising two-tone (660 -> 880 Hz), 120 ms: "go ahead, I am listening".
- ``sent``: one short soft blip (1 kHz, 60 ms, smooth envelope): "got it, asking now".
- ``error``: low descending glide (440 -> 220 Hz), 250 ms: "that did not work".
- ``not_connected``: two low beeps (330 Hz, 90 ms each): "no connection to the service".
- ``working``: three soft ticks over 300 ms: "still thinking" (e.g. a tool is running).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

EARCONS = ("listening", "sent", "error", "not_connected", "working")

PEAK_DBFS = -12.0
FADE_S = 0.004  # raised-cosine fade at both ends of every burst (3-5 ms)
_FULL_SCALE = 32767


def _tone(rate: int, seconds: float, f_start: float, f_end: float | None = None) -> np.ndarray:
    """A sine gliding linearly from ``f_start`` to ``f_end`` with continuous phase, float64."""
    n = round(rate * seconds)
    f_end = f_start if f_end is None else f_end
    freq = np.linspace(f_start, f_end, n, endpoint=False)
    phase = 2 * np.pi * np.cumsum(freq) / rate
    return np.sin(phase - phase[0])


def _fade(x: np.ndarray, rate: int, seconds: float = FADE_S) -> np.ndarray:
    """Raised-cosine fade in and out; the first and last samples become exactly 0."""
    n = min(max(2, round(rate * seconds)), len(x) // 2)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))  # 0 ... 1
    y = x.copy()
    y[:n] *= ramp
    y[-n:] *= ramp[::-1]
    return y


def _silence(rate: int, seconds: float) -> np.ndarray:
    return np.zeros(round(rate * seconds))


def _listening(rate: int) -> np.ndarray:
    # One glide that jumps from 660 to 880 Hz halfway: the phase stays continuous.
    n = round(rate * 0.06)
    freq = np.concatenate([np.full(n, 660.0), np.full(n, 880.0)])
    return _fade(np.sin(2 * np.pi * np.cumsum(freq) / rate), rate)


def _sent(rate: int) -> np.ndarray:
    blip = _tone(rate, 0.06, 1000.0)
    # "Soft": a Hann envelope over the whole blip instead of a flat top.
    return blip * np.hanning(len(blip))


def _error(rate: int) -> np.ndarray:
    return _fade(_tone(rate, 0.25, 440.0, 220.0), rate)


def _not_connected(rate: int) -> np.ndarray:
    beep = _fade(_tone(rate, 0.09, 330.0), rate)
    return np.concatenate([beep, _silence(rate, 0.07), beep])


def _working(rate: int) -> np.ndarray:
    # A tick: a short 1.5 kHz burst with a fast exponential decay, faded at both ends.
    tick = _tone(rate, 0.025, 1500.0) * np.exp(-np.arange(round(rate * 0.025)) / (rate * 0.006))
    tick = _fade(tick, rate)
    gap = _silence(rate, 0.1125)  # ticks 137.5 ms apart: 300 ms from the first to the end
    return np.concatenate([tick, gap, tick, gap, tick])


_BUILDERS = {
    "listening": _listening,
    "sent": _sent,
    "error": _error,
    "not_connected": _not_connected,
    "working": _working,
}


@lru_cache(maxsize=32)
def earcon(name: str, rate: int) -> np.ndarray:
    """The earcon ``name`` at ``rate`` Hz: mono int16, peak -12 dBFS, read-only and cached."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown earcon {name!r}; known: {', '.join(EARCONS)}")
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    x = _BUILDERS[name](rate)
    peak = np.max(np.abs(x))
    x = x * (_FULL_SCALE * 10 ** (PEAK_DBFS / 20) / peak)
    out = np.rint(x).astype(np.int16)
    out.setflags(write=False)  # cached and shared: nobody may change it in place
    return out
