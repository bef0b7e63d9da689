#!/usr/bin/env python3
"""The echo canceller in a synthetic room: ERLE, near-end speech kept, CPU.

The far end (what the box says) is espeak-ng speech (band-limited noise with a syllable
envelope if espeak-ng is missing), played into a room: a delay of 20-60 ms and an exponentially
decaying impulse response (~150 ms, seeded). The mic hears that echo, a faint noise floor and,
in two stretches, near-end speech (another voice: the user talking over the box). The canceller
gets the mic in 20 ms chunks, as Capture gives them, with the far end aligned as ReferenceTap
gives it. Nothing is written to disk but espeak-ng's temporary WAVs.

Printed: ERLE (dB) after ``--converge-s``, over the far-end-only stretches where the echo is
audible: 10*log10(E[mic^2]/E[out^2]); the near-end correlation: the output against the clean
near-end speech over the double-talk stretches (1.0 = untouched); CPU-ms per minute of audio
(process time of the canceller alone). ``--json``: one object with ``erle_db``,
``near_end_corr``, ``cpu_ms_per_min``, ``library`` and the details.

    .venv/bin/python bench/echo.py [--library speex|webrtc] [--seconds 40] [--seed 1] [--json]
    .venv/bin/python bench/echo.py --delays 40,80,130,150   # the echo that late after its
                                                            # reference: measured alignment
                                                            # against none, per delay

Targets (issue 8): ERLE >= 20 dB, near-end correlation >= 0.9, <= 600 CPU-ms per minute.
``--delay-ms`` fixes the room's delay (default: 20-60 ms, seeded); ``--no-align`` turns the
canceller's measured alignment off (DelayEstimator, see echo_reference.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance.audio.echo import EchoCanceller  # noqa: E402
from appliance.audio.resample import resample_all  # noqa: E402

RATE = 24000
CHUNK_MS = 20

FAR_TEXT = [
    "The weather today is mostly sunny with a light breeze from the west.",
    "Tomorrow brings clouds in the morning and some rain later in the afternoon.",
    "Your next appointment is at half past three with the dentist on Elm Street.",
    "I have set a timer for twelve minutes. I will let you know when it is done.",
    "Here is a short story about a fox who wanted to learn how to sing.",
]
NEAR_TEXT = [
    "Stop, stop. What about the weekend instead?",
    "No, I meant the other one, the one on Friday.",
]


def espeak(text: str, voice: str, speed: int = 160) -> np.ndarray | None:
    """``text`` spoken by espeak-ng at 24 kHz int16, or None if espeak-ng is missing."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "say.wav"
        subprocess.run(
            [exe, "-v", voice, "-s", str(speed), "-w", str(path), text],
            check=True,
            capture_output=True,
        )
        with wave.open(str(path)) as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
    return resample_all(pcm, rate, RATE)


def babble(seconds: float, rng: np.random.Generator, pitch: float) -> np.ndarray:
    """Speech-like: noise shaped to 200-4000 Hz with a voiced buzz, 4 syllables/s, pauses."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    noise = rng.standard_normal(n)
    spec = np.fft.rfft(noise)
    f = np.fft.rfftfreq(n, 1 / RATE)
    spec[(f < 200) | (f > 4000)] = 0
    shaped = np.fft.irfft(spec, n)
    buzz = np.sign(np.sin(2 * np.pi * pitch * t)) * 0.3
    syll = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)), 0, None) ** 2
    words = (rng.random(int(seconds * 2) + 1) > 0.25).repeat(RATE // 2)[:n]
    x = (shaped / np.std(shaped) + buzz) * syll * words
    return x


def scale(x: np.ndarray, rms_dbfs: float) -> np.ndarray:
    active = x[np.abs(x) > 0.05 * np.max(np.abs(x))]
    rms = np.sqrt(np.mean(active.astype(float) ** 2)) if len(active) else 1.0
    return x.astype(float) * (10 ** (rms_dbfs / 20) * 32768 / rms)


def room_ir(rng: np.random.Generator, delay_ms: float, decay_ms: float = 150.0) -> np.ndarray:
    """Delay, a direct path, then exponentially decaying reflections (-60 dB at decay_ms)."""
    d = int(delay_ms * RATE / 1000)
    n = int(decay_ms * RATE / 1000)
    k = np.arange(n)
    tail = rng.standard_normal(n) * np.exp(-6.9 * k / n) * 0.3
    tail[0] = 1.0
    tail[1:3] += [0.5, 0.2]
    return np.concatenate([np.zeros(d), tail])


def scene(
    seconds: float,
    seed: int,
    echo_dbfs: float = -22.0,
    near_dbfs: float = -24.0,
    delay_ms: float | None = None,
):
    """(mic, far, near_clean, echo, near_mask): float arrays at 24 kHz and the double-talk mask.

    The far end talks all the time (with its pauses); the near end in two stretches."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    voices = espeak("test", "en-us") is not None
    if voices:
        parts, total = [], 0
        i = 0
        while total < n:
            s = espeak(FAR_TEXT[i % len(FAR_TEXT)], "en-us")
            assert s is not None
            parts += [s, np.zeros(int(RATE * rng.uniform(0.2, 0.6)), dtype=np.int16)]
            total += len(parts[-2]) + len(parts[-1])
            i += 1
        far = np.concatenate(parts)[:n].astype(float)
    else:
        far = babble(seconds, rng, 110)
    far = scale(far, -18.0)
    room_delay = rng.uniform(20, 60)
    ir = room_ir(rng, room_delay if delay_ms is None else delay_ms)
    echo = np.convolve(far, ir)[:n]
    echo = scale(echo, echo_dbfs)
    near = np.zeros(n)
    mask = np.zeros(n, dtype=bool)
    for j, start_s in enumerate((0.45 * seconds, 0.75 * seconds)):
        s = espeak(NEAR_TEXT[j % len(NEAR_TEXT)], "en+f3", 170) if voices else None
        clip = s.astype(float) if s is not None else babble(3.0, rng, 210)
        a = int(start_s * RATE)
        b = min(n, a + len(clip))
        near[a:b] = clip[: b - a]
        mask[a:b] = True
    near = scale(near, near_dbfs) if near.any() else near
    noise = rng.standard_normal(n) * 32768 * 10 ** (-70 / 20)
    mic = echo + near + noise
    far16 = np.clip(np.rint(far), -32768, 32767).astype(np.int16)
    mic16 = np.clip(np.rint(mic), -32768, 32767).astype(np.int16)
    return mic16, far16, near, echo, mask


def best_lag(out: np.ndarray, near: np.ndarray, mask: np.ndarray, told: int) -> int:
    """The output's delay: what the canceller says, or where the near end matches best (a
    library may add latency it does not report; WebRTC's filter bank does, ~10 ms)."""
    idx = np.flatnonzero(mask)
    idx = idx[idx + 2 * RATE // 10 < len(out)]
    if not len(idx):
        return told
    scores = {lag: abs(float(np.dot(out[idx + lag], near[idx]))) for lag in range(0, 2400, 4)}
    best = max(scores, key=scores.__getitem__)
    fine = range(max(0, best - 4), best + 5)
    best = max(fine, key=lambda lag: abs(float(np.dot(out[idx + lag], near[idx]))))
    return told if abs(best - told) <= 2 else best


def run(
    library: str,
    seconds: float = 40.0,
    seed: int = 1,
    converge_s: float = 5.0,
    frame_ms: int = 20,
    tail_ms: int = 200,
    suppress: bool = True,
    ref_offset_ms: float = 0.0,
    delay_ms: float | None = None,
    align: bool = True,
) -> dict:
    mic, far, near, echo, mask = scene(seconds, seed, delay_ms=delay_ms)
    if ref_offset_ms:  # the reference late (<0) or early (>0) against the truth
        k = int(abs(ref_offset_ms) * RATE / 1000)
        pad = np.zeros(k, dtype=np.int16)
        far = np.concatenate([far[k:], pad]) if ref_offset_ms > 0 else np.concatenate([pad, far])
        far = far[: len(mic)]
    ec = EchoCanceller(RATE, frame_ms, tail_ms, library=library, suppress=suppress, align=align)
    chunk = RATE * CHUNK_MS // 1000
    outs = []
    cpu0 = time.process_time()
    for start in range(0, len(mic), chunk):
        outs.append(ec.process(mic[start : start + chunk], far[start : start + chunk]))
    cpu = time.process_time() - cpu0
    out = np.concatenate(outs).astype(float)
    d = best_lag(out, near, mask, ec.delay)
    out = out[d:]
    mic_f, near_a, echo_a, mask_a = (x[: len(out)] for x in (mic.astype(float), near, echo, mask))
    settled = np.arange(len(out)) >= converge_s * RATE
    # far-end-only stretches where the echo is audible: 20 ms blocks
    blk = chunk
    nb = len(out) // blk
    e_blocks = (echo_a[: nb * blk] ** 2).reshape(nb, blk).mean(axis=1)
    audible = e_blocks > (32768 * 10 ** (-50 / 20)) ** 2
    far_only = audible & ~mask_a[: nb * blk].reshape(nb, blk).any(axis=1)
    far_only &= settled[: nb * blk].reshape(nb, blk).all(axis=1)
    sel = np.repeat(far_only, blk)
    erle = 10 * np.log10(
        np.sum(mic_f[: nb * blk][sel] ** 2) / max(1e-9, np.sum(out[: nb * blk][sel] ** 2))
    )
    dt = mask_a & settled
    corr = float(np.corrcoef(out[dt], near_a[dt])[0, 1]) if dt.any() else float("nan")
    minutes = len(mic) / RATE / 60
    return {
        "library": library,
        "erle_db": round(float(erle), 2),
        "near_end_corr": round(corr, 4),
        "cpu_ms_per_min": round(cpu * 1000 / minutes, 1),
        "seconds": seconds,
        "seed": seed,
        "frame_ms": frame_ms,
        "tail_ms": tail_ms,
        "suppress": suppress,
        "ref_offset_ms": ref_offset_ms,
        "delay_ms": delay_ms,
        "align": align,
        "estimated_delay_ms": (
            round(ec.estimator.delay * 1000 / RATE, 2)
            if ec.estimator is not None and ec.estimator.delay is not None
            else None
        ),
        "realigns": ec.realigns,
        "output_delay_samples": d,
        "far_only_s": round(float(far_only.sum()) * CHUNK_MS / 1000, 2),
        "double_talk_s": round(float(dt.sum()) / RATE, 2),
        "mic_to_near_corr": round(float(np.corrcoef(mic_f[dt], near_a[dt])[0, 1]), 4),
    }


def sweep(args: argparse.Namespace) -> int:
    """Per delay: the canceller with its measured alignment, and without (the floor)."""
    rows = []
    print("delay ms  measured ms  ERLE dB  corr   CPU ms/min | no alignment: ERLE dB  corr")
    for delay in (float(d) for d in args.delays.split(",")):
        both = [
            run(args.library, args.seconds, args.seed, args.converge_s, args.frame_ms,
                args.tail_ms, not args.no_suppress, 0.0, delay, align)
            for align in (True, False)
        ]  # fmt: skip
        rows.append(both)
        a, b = both
        print(
            f"{delay:8.0f}  {a['estimated_delay_ms'] or float('nan'):11.2f}  {a['erle_db']:7.1f}"
            f"  {a['near_end_corr']:.3f}  {a['cpu_ms_per_min']:10.0f} | "
            f"{b['erle_db']:21.1f}  {b['near_end_corr']:.3f}"
        )
    if args.json:
        print(json.dumps(rows))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", default="speex", choices=("speex", "webrtc"))
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--converge-s", type=float, default=5.0)
    parser.add_argument("--frame-ms", type=int, default=20)
    parser.add_argument("--tail-ms", type=int, default=200)
    parser.add_argument("--no-suppress", action="store_true", help="linear filter only")
    parser.add_argument("--ref-offset-ms", type=float, default=0.0)
    parser.add_argument("--delay-ms", type=float, default=None, help="the room's delay")
    parser.add_argument("--no-align", action="store_true", help="no measured alignment")
    parser.add_argument("--delays", default="", help="comma-separated: a sweep, see above")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.delays:
        return sweep(args)
    if not EchoCanceller.available(args.library):
        print(f"{args.library}: not available here", file=sys.stderr)
        return 2
    result = run(
        args.library,
        args.seconds,
        args.seed,
        args.converge_s,
        args.frame_ms,
        args.tail_ms,
        not args.no_suppress,
        args.ref_offset_ms,
        args.delay_ms,
        not args.no_align,
    )
    if args.json:
        print(json.dumps(result))
        return 0
    ok = (
        result["erle_db"] >= 20
        and result["near_end_corr"] >= 0.9
        and result["cpu_ms_per_min"] <= 600
    )
    print(f"library            {result['library']}")
    print(f"ERLE               {result['erle_db']:.1f} dB (after {args.converge_s:g} s)")
    print(
        f"near-end corr      {result['near_end_corr']:.3f} "
        f"(mic itself: {result['mic_to_near_corr']:.3f})"
    )
    print(f"CPU                {result['cpu_ms_per_min']:.0f} ms per minute of audio")
    if result["align"]:
        print(
            f"echo delay         {result['estimated_delay_ms']} ms measured "
            f"({result['realigns']} realignments)"
        )
    print(f"targets            {'met' if ok else 'NOT met'} (>= 20 dB, >= 0.9, <= 600 ms/min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
