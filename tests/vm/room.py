"""A room for the box in the VM: what it plays comes back into its microphone, with a voice.

Runs in the guest on Debian's python3 with numpy (the wheelhouse's srvlib). The box plays on
the loopback card's device 0; what it plays comes out of device 1, and what is played into
device 1 is its microphone. This script sits on device 1 (arecord and aplay through ALSA's
plug layer, 24 kHz mono, 20 ms periods, 0.5 s buffers, 120 ms of silence queued first, so that
a slow guest does not underrun) and, 50 ms at a time, sends back

    echo = what the box played, through a room: ``--delay-ms`` (40) of extra delay, a direct
           path, then reflections decaying by 60 dB over ``--tail-ms`` (150), seeded
    near = a voice (espeak-ng's WAVs in ``--voices``, made by tests/vm/run; else speech-like
           noise): a question at the start, then, once the box answers, two stretches of
           talking over it (double talk)
    mic  = echo + near + a faint noise floor

until the answer has ended (or ``--max-s``), then saves everything it sent and heard to
``--out`` (an .npz: played, echo, near, mic; 24 kHz). :func:`measure` then compares what the
box sent to the server (its echo-cancelled mic, 24 kHz) with that: ERLE over the stretches
where only the box talks (after ``settle_s``), and the correlation of the box's mic with the
near-end voice over the double talk. The two timelines are lined up second by second (a slow
guest's box loses some of its microphone's samples; ``lost_ms`` says how many, and then the
figures mean little: exit 3).

    python3 room.py run --out room.npz [--delay-ms 40]
    python3 room.py measure room.npz sent.pcm [--json F]   # one line; exit 1 below target,
                                                           # 3 if the box lost samples
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np

RATE = 24000
CHUNK = RATE // 50  # 20 ms: the blocks of the measurement
STEP = RATE // 20  # 50 ms: the room's own steps (the guest may run under TCG: few, cheap ones)
DEVICE = "plughw:CARD=Loopback,DEV=1,SUBDEV=0"


def speechlike(seconds: float, seed: int, pitch: float, rate: int = RATE) -> np.ndarray:
    """Band-limited noise with a voiced buzz, 4 syllables a second and pauses between words
    (float, RMS about 0.5 while voiced): speech's spectrum and rhythm, without a speech model."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / rate)
    spec[(f < 200) | (f > 4000)] = 0
    x = np.fft.irfft(spec, n)
    x = x / np.std(x) + 0.3 * np.sign(np.sin(2 * np.pi * pitch * t))
    syllables = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)), 0, None) ** 2
    words = (rng.random(int(seconds * 2) + 1) > 0.25).repeat(rate // 2)[:n]
    return x * syllables * words


def voice(path: Path | str, dbfs: float, seconds: float | None = None) -> np.ndarray:
    """A WAV (espeak-ng's, made by tests/vm/run) at 24 kHz, its active RMS at ``dbfs``, looped
    to ``seconds``; float."""
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(float)
    if rate != RATE:  # linear interpolation: enough for a test voice
        t = np.arange(int(len(x) * RATE / rate)) * rate / RATE
        x = np.interp(t, np.arange(len(x)), x)
    if seconds is not None:
        x = np.resize(np.concatenate([x, np.zeros(RATE // 3)]), int(seconds * RATE))
    active = x[np.abs(x) > 0.05 * np.abs(x).max()]
    return x * (10 ** (dbfs / 20) * 32768 / np.sqrt(np.mean(active**2)))


def room_ir(delay_ms: float, tail_ms: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(tail_ms * RATE / 1000)
    tail = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n) * 0.3
    tail[0] = 1.0
    tail[1:3] += [0.5, 0.2]
    return np.concatenate([np.zeros(int(delay_ms * RATE / 1000)), tail * 0.5])


def run(args: argparse.Namespace) -> int:
    ir = room_ir(args.delay_ms, args.tail_ms)
    # Everything that takes time before the devices open: what arecord queues meanwhile would
    # stay in the room's path for good (the echo then came 240-480 ms after the reference).
    voices = Path(args.voices) if args.voices else None
    if voices is not None and (voices / "near.wav").exists():  # espeak-ng, as bench/echo.py
        question = voice(voices / "question.wav", args.near_dbfs)
        talk = voice(voices / "near.wav", args.near_dbfs)
    else:
        question = speechlike(1.5, 11, 210) * 0.25 * 32768 / 0.5 * 0.5  # about -14 dBFS
        talk = speechlike(3.0, 12, 190) * 0.25 * 32768 / 0.5 * 0.5
    noise = np.random.default_rng(3).standard_normal
    history = np.zeros(len(ir) - 1)
    nfft = 1 << int(np.ceil(np.log2(len(ir) - 1 + STEP)))
    ir_f = np.fft.rfft(ir, nfft)
    fmt = ["-t", "raw", "-f", "S16_LE", "-r", str(RATE), "-c", "1"]
    buffers = ["--period-time=20000", "--buffer-time=500000"]
    # aplay starts once 120 ms are queued (by default it waits for a full buffer: 0.5 s more
    # of delay); the silence written first is that margin. It is started first: arecord's
    # capture, once started, queues whatever comes before the loop reads it.
    play = subprocess.Popen(
        ["aplay", "-q", "-D", DEVICE, *fmt, *buffers, "--start-delay=120000"],
        stdin=subprocess.PIPE,
    )
    rec = subprocess.Popen(["arecord", "-q", "-D", DEVICE, *fmt, *buffers], stdout=subprocess.PIPE)
    assert rec.stdout is not None and play.stdin is not None
    played, echoes, nears, mics = [], [], [], []
    # schedule, in chunks: the question at 0.5 s; the answer's start is found by its sound
    k, answer_at, quiet_since, loud_n = 0, None, None, 0
    start = time.monotonic()
    play.stdin.write(bytes(2 * RATE * 12 // 100))  # 120 ms of silence first: aplay's margin
    try:
        while time.monotonic() - start < args.max_s:
            raw = rec.stdout.read(2 * STEP)
            if len(raw) < 2 * STEP:
                print("room: arecord ended", file=sys.stderr)
                return 2
            x = np.frombuffer(raw, dtype="<i2").astype(float)
            full = np.concatenate([history, x])
            echo = np.fft.irfft(np.fft.rfft(full, nfft) * ir_f, nfft)[len(history) : len(full)]
            history = full[len(full) - len(history) :]
            near = np.zeros(STEP)
            t = k * STEP
            q0 = RATE // 2
            if q0 <= t < q0 + len(question):
                seg = question[t - q0 : t - q0 + STEP]
                near[: len(seg)] = seg
            loud = np.sqrt(np.mean(x**2)) > 300
            if answer_at is None and loud and t > q0 + len(question):
                answer_at, loud_n = t, 0
                print(f"room: sound from the box at {t / RATE:.2f} s", file=sys.stderr)
            if answer_at is not None:
                loud_n += loud
                quiet_since = None if loud else (quiet_since or t)
                if quiet_since is not None and t - quiet_since > 1.5 * RATE:
                    if loud_n * STEP >= 3 * RATE:
                        break  # the answer has ended
                    print("room: that was a short sound, not the answer", file=sys.stderr)
                    answer_at, quiet_since = None, None
            if answer_at is not None:
                for at, offset in ((args.talk_at_s[0], 0.0), (args.talk_at_s[1], 2.8)):
                    a = answer_at + int(at * RATE)
                    if a <= t < a + int(2.5 * RATE):
                        b = (t - a + int(offset * RATE)) % len(talk)
                        seg = talk[b : b + STEP]
                        near[: len(seg)] = seg
            mic = echo + near + noise(STEP) * 3
            play.stdin.write(np.clip(np.rint(mic), -32768, 32767).astype("<i2").tobytes())
            play.stdin.flush()
            played.append(x)
            echoes.append(echo)
            nears.append(near)
            mics.append(mic)
            k += 1
    finally:
        rec.terminate()
        play.stdin.close()
        play.terminate()
    np.savez(
        args.out,
        played=np.concatenate(played),
        echo=np.concatenate(echoes),
        near=np.concatenate(nears),
        mic=np.concatenate(mics),
        answer_at=answer_at if answer_at is not None else -1,
        talk_at_s=np.array(args.talk_at_s),
    )
    print(f"room: {k * STEP / RATE:.1f} s, the answer from {answer_at}", file=sys.stderr)
    return 0 if answer_at is not None else 1


def _xcorr_peak(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    """(lag, normalised value) of the largest |cross-correlation|: a[i + lag] ~ b[i]."""
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    xc = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)
    k = int(np.argmax(np.abs(xc)))
    lag = k - n if k > n // 2 else k
    seen = a[max(0, lag) : max(0, lag) + len(b)]  # normalised by what it matched
    peak = float(abs(xc[k])) / (np.linalg.norm(seen) * np.linalg.norm(b) + 1e-9)
    return lag, peak


def lag_track(out: np.ndarray, mic: np.ndarray, near: np.ndarray, answer_at: int) -> np.ndarray:
    """Per room sample i, where it is in what the box sent (out[i + lag[i]] ~ mic[i]).

    First the answer's first seconds (the canceller has not learnt the echo yet: the box sends
    what its mic heard), else the near-end voice over the whole recording. Then, 1 s at a
    time, the room's mic against what the box sent within 0.5 s of the last lag: a box that
    loses some of its microphone's samples (a slow guest) shifts the lag, and each second
    follows it; a second that matches nothing well keeps the last lag."""
    first = [
        (peak, k - start)
        for start in range(max(0, answer_at), max(0, answer_at) + 2 * RATE + 1, RATE // 2)
        if answer_at >= 0 and start + RATE <= len(mic)
        for k, peak in [_xcorr_peak(out, mic[start : start + RATE])]
    ]
    best = max(first, default=(0.0, 0))
    lag = best[1] if best[0] > 0.5 else _xcorr_peak(out, near)[0]
    lags = np.full(len(mic), lag)
    win, reach = RATE, RATE // 2
    for start in range(0, len(mic) - win + 1, win):
        seg = mic[start : start + win]
        lo = start + lag - reach
        if np.std(seg) < 300 or lo < 0 or lo + win + 2 * reach > len(out):
            lags[start:] = lag
            continue
        part = out[lo : lo + win + 2 * reach]
        k, peak = _xcorr_peak(part, seg)
        if peak > 0.3 and 0 <= k <= 2 * reach and np.std(part[k : k + win]) > 0.05 * np.std(seg):
            lag = lo + k - start
        lags[start:] = lag
    return lags


def measure(room_file: str, sent_file: str, settle_s: float = 5.0) -> dict:
    """ERLE and near-end correlation of what the box sent (``sent_file``: raw PCM16, 24 kHz)."""
    r = np.load(room_file)
    echo, near, mic = r["echo"], r["near"], r["mic"]
    answer_at = int(r["answer_at"])
    out = np.fromfile(sent_file, dtype="<i2").astype(float)
    lags = lag_track(out, mic, near, answer_at)
    idx = np.arange(len(mic))
    at = idx + lags
    inside = (at >= 0) & (at < len(out))
    idx, at = idx[inside], at[inside]
    o = out[at]
    e, v, m = echo[idx], near[idx], mic[idx]
    after = idx >= answer_at + int(settle_s * RATE)
    blocks = len(idx) // CHUNK
    cut = blocks * CHUNK

    def per_block(x: np.ndarray) -> np.ndarray:
        return (x[:cut] ** 2).reshape(blocks, CHUNK).mean(axis=1)

    far_only = (per_block(e) > (32768 * 10 ** (-50 / 20)) ** 2) & (per_block(v) == 0)
    far_only &= after[:cut].reshape(blocks, CHUNK).all(axis=1)
    sel = np.repeat(far_only, CHUNK)
    erle = 10 * np.log10(np.sum(m[:cut][sel] ** 2) / max(1e-9, np.sum(o[:cut][sel] ** 2)))
    talk = (v != 0) & (idx >= answer_at)
    corr = float(np.corrcoef(o[talk], v[talk])[0, 1]) if talk.any() else float("nan")
    echo_in_talk = float(np.sqrt(np.mean(e[talk] ** 2))) if talk.any() else 0.0
    return {
        "erle_db": round(float(erle), 1),
        "near_end_corr": round(corr, 3),
        "far_only_s": round(float(far_only.sum()) * CHUNK / RATE, 1),
        "double_talk_s": round(float(talk.sum()) / RATE, 1),
        "echo_dbfs": round(20 * np.log10(np.sqrt(np.mean(m[:cut][sel] ** 2)) / 32768), 1)
        if sel.any()
        else None,
        "echo_rms_in_double_talk": round(echo_in_talk),
        "lag_samples": [int(lags[0]), int(lags[-1])],
        # what the box's microphone lost meanwhile (the lag shrank): 0 on a steady box
        "lost_ms": round(float(lags[max(0, answer_at)] - lags[-1]) * 1000 / RATE),
        "lag_changes": int(np.count_nonzero(np.diff(lags))),
        "mic_to_near_corr": round(float(np.corrcoef(m[talk], v[talk])[0, 1]), 3)
        if talk.any()
        else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run")
    p.add_argument("--out", required=True)
    p.add_argument("--delay-ms", type=float, default=40.0)
    p.add_argument("--tail-ms", type=float, default=150.0)
    p.add_argument("--max-s", type=float, default=60.0)
    p.add_argument("--talk-at-s", type=float, nargs=2, default=(7.0, 12.0))
    p.add_argument("--voices", default="", help="question.wav, near.wav (else speech-like)")
    p.add_argument("--near-dbfs", type=float, default=-24.0)
    m = sub.add_parser("measure")
    m.add_argument("room")
    m.add_argument("sent")
    m.add_argument("--json", default="", help="the figures, as JSON, to this file")
    args = parser.parse_args()
    if args.cmd == "run":
        return run(args)
    r = measure(args.room, args.sent)
    if args.json:
        Path(args.json).write_text(json.dumps(r))
    line = (
        f"ERLE {r['erle_db']} dB, near-end corr {r['near_end_corr']} (the mic itself "
        f"{r['mic_to_near_corr']}); echo {r['echo_dbfs']} dBFS; {r['far_only_s']} s far end only, "
        f"{r['double_talk_s']} s double talk"
    )
    if r["lost_ms"] > 100:  # the box dropped mic samples: no steady echo path to measure
        print(f"{line}; but the box lost {r['lost_ms']} ms of its microphone's samples meanwhile")
        return 3
    print(line)
    return 0 if r["erle_db"] >= 20 and r["near_end_corr"] >= 0.9 else 1


if __name__ == "__main__":
    raise SystemExit(main())
