#!/usr/bin/env python3
"""The audio engine's costs and added latencies, through real PortAudio over paced virtual devices.

Full duplex at a 48 kHz device rate (the usual USB card), for ``--seconds``:

- the microphone: ``mic_fifo`` fed at real-time pace -> Capture (48 kHz -> 24 kHz chunks);
- the speaker: answer deltas (44.1 kHz, the Realtime output) -> Playback (-> 48 kHz) ->
  ``speaker_fifo``, read at real-time pace.

It prints the callback cost (µs per callback, p50/p99, both directions), CPU-ms per minute of
full-duplex audio (runs of the same without the wrappers that time the callbacks; the
harness threads that play the sound card are measured and subtracted), the floor measured in
the same run (the same PortAudio streams on the same virtual devices with empty callbacks,
as PyAudio runs them) and the ratio of the two (goal: at most 1.5): ``--rounds`` (3) rounds of
box then floor, ``min(--seconds, 10)`` s each, and the medians, the capture latency (the last
sample of a chunk captured by the callback -> that chunk ready to send; the microphone is
drained every 100 ms, so this is up to 100 ms by design: a release sends the rest at once) and
the playback latency (an answer delta handed to Playback -> its first sample returned by the
output callback), p50/p99 each; and press -> first captured sample over 40 starts of the
microphone from rest (Capture.press_to_capture_ms: listen(True) -> the later of Pa_StartStream
and the first callback less one period; a pipe has no start-up time, a card adds its own).

    .venv/bin/python bench/audio.py [--seconds 20] [--period-ms 20] [--rounds 3] [--json]
        [--stream realtime [--jitter-ms 50]]

With ``--stream realtime`` it also streams answers at 1.0x real time with +-``--jitter-ms`` of
network jitter into Playback over speaker_fifo and prints ``underruns`` (with the jitter reserve,
and ``underruns_without_reserve``: it pinned at 0, as playback was before) and ``reserve_ms``
(what the reserve costs: first delta -> first sound); then bursts at 5x (``burst_reserve_ms``:
where the reserve settles) and the first sound of an answer into a stopped stream against a
running one, handed to the device and heard (``first_sound_*``, ``heard_*``), what a start of
the stopped stream costs, and what an open would (were it closed at rest).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyaudio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the virtual devices live with the tests

from virtual_alsa import VirtualAlsa  # noqa: E402

from appliance.audio.capture import Capture  # noqa: E402
from appliance.audio.playback import Playback  # noqa: E402
from appliance.config import AudioConfig  # noqa: E402

DEVICE_RATE = 48000
SOURCE_RATE = 44100
DELTA_EVERY_S = 0.2  # one answer delta at a time, into an idle speaker: latency, not queueing
PRESSES = 40  # microphone starts from rest, for press -> first captured sample


class Timings:
    """What the wrapped callbacks saw (written by PortAudio's threads, read afterwards)."""

    def __init__(self) -> None:
        self.input_us: list[float] = []
        self.output_us: list[float] = []
        self.input_marks: list[tuple[float, int]] = []  # (time, device frames captured so far)
        self.output_loud: list[float] = []  # times of callbacks returning sound after silence
        self.output_times: list[float] = []  # every output callback (the device's cadence)
        self._frames_in = 0
        self._was_loud = False

    def wrap(self, callback, is_input: bool):
        def timed(in_data, frame_count, time_info, status):
            start = time.perf_counter()
            result = callback(in_data, frame_count, time_info, status)
            spent = (time.perf_counter() - start) * 1e6
            if is_input:
                self.input_us.append(spent)
                self._frames_in += frame_count
                self.input_marks.append((time.monotonic(), self._frames_in))
            else:
                self.output_us.append(spent)
                self.output_times.append(time.monotonic())
                loud = bool(np.any(np.frombuffer(result[0], dtype=np.int16)))
                if loud and not self._was_loud:
                    self.output_loud.append(time.monotonic())
                self._was_loud = loud
            return result

        return timed


def timing_pyaudio(timings: Timings):
    class TimedPyAudio(pyaudio.PyAudio):
        def open(self, *args, **kwargs):
            callback = kwargs.get("stream_callback")
            if callback is not None:
                kwargs["stream_callback"] = timings.wrap(callback, bool(kwargs.get("input")))
            return super().open(*args, **kwargs)

    return TimedPyAudio


class SoundCard:
    """The harness: feeds the mic pipe and drains the speaker pipe at real-time pace."""

    def __init__(self, alsa: VirtualAlsa, period_s: float) -> None:
        self.alsa, self.period_s = alsa, period_s
        self.stop = threading.Event()
        self._spent: dict[int, float] = {}  # each harness thread's CPU seconds so far
        rng = np.random.default_rng(3)
        self.speech = (rng.standard_normal(DEVICE_RATE) * 3000).astype(np.int16)
        self._threads = [threading.Thread(target=self.feed), threading.Thread(target=self.drain)]

    def start(self) -> SoundCard:
        """Play the card: the microphone fed and the speaker drained, each in its own thread."""
        for t in self._threads:
            t.start()
        return self

    def close(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join()

    @property
    def cpu_s(self) -> float:
        """CPU seconds the harness threads have used so far (as of their last period): read at
        both ends of a window and subtracted, so what they did outside it does not count."""
        return sum(self._spent.values())

    def _paced(self, step) -> None:
        start, n = time.monotonic(), 0
        me = threading.get_ident()
        while not self.stop.is_set():
            delay = start + n * self.period_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            step(n)
            n += 1
            self._spent[me] = time.thread_time()

    def feed(self) -> None:
        """The microphone: a period on schedule; a stopped stream hears nothing, so what finds
        the pipe full is dropped (a blocked writer would burst its backlog at the next start)."""
        k = int(DEVICE_RATE * self.period_s)
        fd = os.open(self.alsa.mic_fifo, os.O_WRONLY | os.O_NONBLOCK)

        def step(n):
            at = (n * k) % (len(self.speech) - k)
            with contextlib.suppress(BlockingIOError):
                os.write(fd, self.speech[at : at + k].astype("<i2").tobytes())

        try:
            self._paced(step)
        finally:
            os.close(fd)

    def drain(self) -> None:
        nbytes = int(DEVICE_RATE * self.period_s) * 2
        self._paced(lambda n: self.alsa.read_speaker_fifo(nbytes, timeout=self.period_s))


def device_baseline(alsa: VirtualAlsa, period_ms: int, seconds: float) -> float:
    """CPU-ms per minute of PortAudio and these virtual devices alone: the same full-duplex
    streams, same pacing, with callbacks that do nothing (the sound card's share, not ours)."""
    card = SoundCard(alsa, period_ms / 1000).start()
    frames = DEVICE_RATE * period_ms // 1000
    silence = bytes(2 * frames)
    pa = alsa.pyaudio()
    streams = [
        pa.open(
            rate=DEVICE_RATE,
            channels=1,
            format=pyaudio.paInt16,
            input=True,
            input_device_index=alsa.index_of(pa, "mic_fifo"),
            frames_per_buffer=frames,
            stream_callback=lambda *a: (None, pyaudio.paContinue),
        ),
        pa.open(
            rate=DEVICE_RATE,
            channels=1,
            format=pyaudio.paInt16,
            output=True,
            output_device_index=alsa.index_of(pa, "speaker_fifo"),
            frames_per_buffer=frames,
            stream_callback=lambda d, n, t, s: (silence[: 2 * n], pyaudio.paContinue),
        ),
    ]
    cpu_start, card_start, wall_start = time.process_time(), card.cpu_s, time.monotonic()
    time.sleep(seconds)
    cpu, wall = time.process_time() - cpu_start, time.monotonic() - wall_start
    card_cpu = card.cpu_s - card_start
    for stream in streams:
        stream.stop_stream()
        stream.close()
    pa.terminate()
    card.close()
    return (cpu - card_cpu) * 1000 / wall * 60


async def until(predicate, wait_s: float = 3.0) -> bool:
    deadline = time.monotonic() + wait_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


async def unwrapped_run(alsa: VirtualAlsa, config: AudioConfig, seconds: float, presses: int):
    """The same full duplex without the timing wrappers (they cost CPU in every callback that
    the floor's empty callbacks do not have): (CPU-ms per minute, press -> capture ms list).

    Then ``presses`` times: the microphone rests (stream stopped), then listens again, as a
    press does; each start's press -> first captured sample (Capture.press_to_capture_ms).
    """
    card = SoundCard(alsa, config.period_ms / 1000).start()
    capture = Capture(config)
    playback = Playback(config, source_rate=SOURCE_RATE)
    await capture.start()
    await playback.start()
    tone = (np.sin(np.arange(int(0.04 * SOURCE_RATE)) * 0.06) * 8000).astype("<i2").tobytes()

    async def consume() -> None:
        async for _ in capture.chunks():
            pass

    consumer = asyncio.create_task(consume())
    cpu_start, card_start, wall_start = time.process_time(), card.cpu_s, time.monotonic()
    for i in range(int(seconds / DELTA_EVERY_S)):
        await asyncio.sleep(DELTA_EVERY_S)
        playback.play_answer(f"item{i}", tone)
        playback.end_answer(f"item{i}")
    await asyncio.sleep(0.3)
    wall, cpu = time.monotonic() - wall_start, time.process_time() - cpu_start
    card_cpu = card.cpu_s - card_start  # not the presses after the window
    press_ms: list[float] = []
    for _ in range(presses):
        capture.listen(False)
        await until(lambda: not capture.streaming)
        await asyncio.sleep(0.1)
        before = capture.last_listen
        capture.listen(True)
        if await until(lambda was=before: capture.last_listen is not was):
            press_ms.append(capture.press_to_capture_ms)
    consumer.cancel()
    await capture.stop()
    await playback.stop()
    card.close()
    return (cpu - card_cpu) * 1000 / wall * 60, press_ms


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def measure(seconds: float, period_ms: int, rounds: int = 3, round_s: float = 10.0) -> dict:
    alsa = VirtualAlsa(tempfile.mkdtemp(prefix="bench-audio-")).install()
    timings = Timings()
    config = AudioConfig(
        input_device="mic_fifo",
        output_device="speaker_fifo",
        input_rate=DEVICE_RATE,
        output_rate=DEVICE_RATE,
        period_ms=period_ms,
        volume=1.0,
        sounds=False,
    )
    card = SoundCard(alsa, period_ms / 1000).start()
    capture = Capture(config, pa_factory=timing_pyaudio(timings))
    playback = Playback(config, source_rate=SOURCE_RATE, pa_factory=timing_pyaudio(timings))
    await capture.start()
    await playback.start()
    capture_latency: list[float] = []
    delta_times: list[float] = []
    tone = (
        (np.sin(2 * np.pi * 440 * np.arange(int(0.04 * SOURCE_RATE)) / SOURCE_RATE) * 8000)
        .astype("<i2")
        .tobytes()
    )

    async def consume() -> None:
        sent = 0  # 24 kHz samples yielded so far
        async for chunk in capture.chunks():
            now = time.monotonic()
            sent += len(chunk) // 2
            last_frame = sent * DEVICE_RATE // 24000  # the device frame of the chunk's end
            for t, frames in timings.input_marks:  # (short list: trimmed below)
                if frames >= last_frame:
                    capture_latency.append((now - t) * 1000)
                    break
            del timings.input_marks[: max(0, len(timings.input_marks) - 50)]

    async def answer() -> None:
        for i in range(int(seconds / DELTA_EVERY_S)):
            await asyncio.sleep(DELTA_EVERY_S)
            delta_times.append(time.monotonic())
            playback.play_answer(f"item{i}", tone)
            playback.end_answer(f"item{i}")

    cpu_start, card_start = time.process_time(), card.cpu_s
    wall_start = time.monotonic()
    consumer = asyncio.create_task(consume())
    await answer()
    await asyncio.sleep(0.3)
    wall = time.monotonic() - wall_start
    cpu_total = time.process_time() - cpu_start
    card_cpu = card.cpu_s - card_start
    consumer.cancel()
    # Streams first: a stream blocked on a pipe that nobody serves cannot close.
    await capture.stop()
    await playback.stop()
    card.close()
    # The box and its floor in turns, each round both: this machine is shared, and a neighbour's
    # burst in one window must not decide the ratio. The medians are printed, and every round.
    boxes, floors, press_ms = [], [], []
    for r in range(rounds):
        box, presses = await unwrapped_run(alsa, config, round_s, PRESSES if r == 0 else 0)
        boxes.append(box)
        press_ms += presses
        floors.append(device_baseline(alsa, period_ms, round_s))
    alsa.close()
    ratios = [b / f for b, f in zip(boxes, floors, strict=True) if f > 0]
    cpu_per_min, baseline = float(np.median(boxes)), float(np.median(floors))
    # Each delta's first sound: the first loud output callback after it was handed over.
    playback_latency = []
    for t in delta_times:
        later = [x for x in timings.output_loud if x >= t]
        if later:
            playback_latency.append((later[0] - t) * 1000)
    cpu_ms = (cpu_total - card_cpu) * 1000
    callbacks = timings.input_us + timings.output_us
    return {
        "period_ms": period_ms,
        "device_rate": DEVICE_RATE,
        "seconds": round(wall, 1),
        "callbacks": len(callbacks),
        "callback_us_p50": round(pct(callbacks, 50), 1),
        "callback_us_p99": round(pct(callbacks, 99), 1),
        "cpu_ms_per_min": round(cpu_per_min, 1),
        "cpu_ms_per_min_timed": round(cpu_ms / wall * 60, 1),  # with the timing wrappers
        "floor_cpu_ms_per_min": round(baseline, 1),
        "cpu_ratio": round(float(np.median(ratios)), 2) if ratios else None,
        "cpu_ms_per_min_rounds": [round(x, 1) for x in boxes],
        "floor_cpu_ms_per_min_rounds": [round(x, 1) for x in floors],
        "cpu_ratio_rounds": [round(x, 2) for x in ratios],
        "press_to_capture_ms_p50": round(pct(press_ms, 50), 2),
        "press_to_capture_ms_p99": round(pct(press_ms, 99), 2),
        "callback_ms_per_min": round(sum(callbacks) / 1000 / wall * 60, 1),
        "capture_latency_ms_p50": round(pct(capture_latency, 50), 2),
        "capture_latency_ms_p99": round(pct(capture_latency, 99), 2),
        "playback_latency_ms_p50": round(pct(playback_latency, 50), 2),
        "playback_latency_ms_p99": round(pct(playback_latency, 99), 2),
        # How the device asks for audio: a real card calls every period; this virtual one
        # often asks for two periods back to back, then nothing for two periods.
        "output_callback_gap_ms_p99": round(pct(list(np.diff(timings.output_times) * 1000), 99), 1),
        "deltas": len(delta_times),
        "deltas_heard": len(playback_latency),
        "overruns": capture.overruns,
        "underruns": playback.underruns,
    }


# ---- --stream: the jitter reserve, an answer streamed at about real time ---------------------

STREAM_DELTA_S = 0.04  # the server's delta size (as the test server and Yandex send)


async def _stream_answers(
    playback: Playback,
    item: str,
    answers: int,
    seconds: float,
    speed: float,
    jitter_ms: float,
    rng: np.random.Generator,
) -> list[float]:
    """Send ``answers`` answers of ``seconds`` each in 40 ms deltas at ``speed`` x real time,
    each delta delayed by up to +-jitter_ms (in order: one TCP connection), 0.5 s apart.
    Returns each answer's first delta -> its first sound handed to the device, ms."""
    tone = np.sin(2 * np.pi * 300 * np.arange(int(seconds * SOURCE_RATE)) / SOURCE_RATE) * 8000
    pcm = tone.astype("<i2").tobytes()
    step = int(STREAM_DELTA_S * SOURCE_RATE) * 2
    costs = []
    for a in range(answers):
        item_id = f"{item}{a}"
        start = time.monotonic() + 0.05
        last = 0.0
        first_at = None
        for k, i in enumerate(range(0, len(pcm), step)):
            at = start + k * STREAM_DELTA_S / speed + rng.uniform(-jitter_ms, jitter_ms) / 1000
            last = max(last, at)
            await asyncio.sleep(max(0.0, last - time.monotonic()))
            first_at = first_at or time.monotonic()
            playback.play_answer(item_id, pcm[i : i + step])
        playback.end_answer(item_id)
        await playback.wait_drained(seconds + 2)
        heard = playback.first_sound_at(item_id)
        if heard is not None and first_at is not None:
            costs.append((heard - first_at) * 1000)
        await asyncio.sleep(0.5)
    return costs


class Listener:
    """Reads speaker_fifo at real-time pace in 5 ms steps, as a sound card plays it, and notes
    when sound starts after silence: when the owner would hear it."""

    def __init__(self, alsa: VirtualAlsa) -> None:
        self.alsa = alsa
        self.stop = threading.Event()
        self.onsets: list[float] = []
        self._was_loud = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        step_s, nbytes = 0.005, int(DEVICE_RATE * 0.005) * 2
        start, n = time.monotonic(), 0
        while not self.stop.is_set():
            delay = start + n * step_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            n += 1
            data = self.alsa.read_speaker_fifo(nbytes, timeout=step_s)
            loud = bool(data) and bool(np.any(np.frombuffer(data, dtype=np.int16)))
            if loud and not self._was_loud:
                self.onsets.append(time.monotonic())
            self._was_loud = loud

    def heard_after(self, t: float) -> float:
        later = [x for x in self.onsets if x >= t]
        return (later[0] - t) * 1000 if later else float("nan")

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


async def _first_sound(playback: Playback, item_id: str, ear: Listener) -> tuple[float, float]:
    """A whole answer at once (a burst) -> (its first sound handed to the device, heard), ms."""
    pcm = (np.ones(int(0.1 * SOURCE_RATE)) * 4000).astype("<i2").tobytes()
    t0 = time.monotonic()
    playback.play_answer(item_id, pcm)
    playback.end_answer(item_id)
    await playback.wait_drained(2.0)
    await asyncio.sleep(0.15)  # past the device's buffer: heard by now
    heard = playback.first_sound_at(item_id)
    return (heard - t0) * 1000 if heard is not None else float("nan"), ear.heard_after(t0)


async def measure_stream(jitter_ms: float, answers: int = 5, seconds: float = 2.0) -> dict:
    """The jitter reserve through the real Playback over speaker_fifo (drained at real-time
    pace): answers streamed at 1.0x with +-jitter_ms (with the reserve, and with it pinned at
    0: what playback did before), then bursts at 5x (where the reserve settles); and the first
    sound of a burst answer into a stopped stream (it starts) and into a running one."""
    from appliance.audio.jitter import ReservePolicy

    alsa = VirtualAlsa(tempfile.mkdtemp(prefix="bench-stream-")).install()
    ear = Listener(alsa)
    rng = np.random.default_rng(7)
    out: dict = {"stream": "realtime", "jitter_ms": jitter_ms, "answers": answers}
    try:
        config = AudioConfig(
            output_device="speaker_fifo",
            output_rate=DEVICE_RATE,
            volume=1.0,
            sounds=False,
            speaker_idle_s=0.5,
        )
        async with Playback(config, source_rate=SOURCE_RATE) as playback:
            costs = await _stream_answers(playback, "rt", answers, seconds, 1.0, jitter_ms, rng)
            out["underruns"] = playback.underruns
            out["reserve_ms"] = round(float(np.mean(costs)), 1) if costs else float("nan")
            out["reserve_ms_max"] = round(max(costs), 1) if costs else float("nan")
            out["reserve_ms_policy"] = round(playback.reserve_ms, 1)
            out["stream_starts"] = playback.starts
        async with Playback(config, source_rate=SOURCE_RATE) as playback:
            # A session whose server bursts (5x real time): where the reserve settles.
            await _stream_answers(playback, "burst", 10, 1.0, 5.0, 5.0, rng)
            out["burst_underruns"] = playback.underruns
            out["burst_reserve_ms"] = round(playback.reserve_ms, 1)
            burst = await _stream_answers(playback, "burst-last", 1, 1.0, 5.0, 5.0, rng)
            out["burst_start_ms"] = round(burst[0], 1) if burst else float("nan")
            rest, running, starts = [], [], []
            for i in range(10):
                await asyncio.sleep(config.speaker_idle_s)  # stopped after it (and a look)
                assert await until(lambda: not playback.running, 3.0)
                rest.append(await _first_sound(playback, f"rest{i}", ear))
                starts.append(playback.last_start_ms)
                running.append(await _first_sound(playback, f"running{i}", ear))
            for name, got in (("from_rest", rest), ("running", running)):
                for k, what in ((0, "first_sound"), (1, "heard")):
                    values = [x[k] for x in got]
                    out[f"{what}_{name}_ms_p50"] = round(pct(values, 50), 1)
                    out[f"{what}_{name}_ms_p99"] = round(pct(values, 99), 1)
            out["start_stream_ms_p50"] = round(pct(starts, 50), 2)
            out["start_stream_ms_p99"] = round(pct(starts, 99), 2)
            opens = []
            for _ in range(5):  # what a closed stream at rest would cost instead: an open
                t = time.monotonic()
                await playback.resume_device()  # close, new PortAudio, open (stopped)
                opens.append((time.monotonic() - t) * 1000)
            out["open_stream_ms_p50"] = round(pct(opens, 50), 1)
        async with Playback(config, source_rate=SOURCE_RATE) as playback:
            # The reserve pinned at 0: the answer starts at its first delta.
            playback._reserve = ReservePolicy(reserve_ms=0, min_ms=0, max_ms=0)
            await _stream_answers(playback, "rt", answers, seconds, 1.0, jitter_ms, rng)
            out["underruns_without_reserve"] = playback.underruns
    finally:
        ear.close()
        alsa.close()
    return out


def print_stream(r: dict) -> None:
    print(
        f"an answer streamed at 1.0x real time, +-{r['jitter_ms']:g} ms jitter, "
        f"{r['answers']} answers: {r['underruns']} underruns (without the reserve: "
        f"{r['underruns_without_reserve']}); the reserve costs {r['reserve_ms']} ms "
        f"(max {r['reserve_ms_max']}; policy {r['reserve_ms_policy']} ms)"
    )
    print(
        f"bursts at 5x: {r['burst_underruns']} underruns, the reserve settles at "
        f"{r['burst_reserve_ms']} ms, a burst answer starts after {r['burst_start_ms']} ms"
    )
    for what, label in (("first_sound", "handed to the device"), ("heard", "heard")):
        print(
            f"a burst answer's first sound {label}: from a stopped stream p50 "
            f"{r[what + '_from_rest_ms_p50']} / p99 {r[what + '_from_rest_ms_p99']} ms; "
            f"into a running one p50 {r[what + '_running_ms_p50']} / p99 "
            f"{r[what + '_running_ms_p99']} ms"
        )
    print(
        f"starting the stopped stream: p50 {r['start_stream_ms_p50']} / p99 "
        f"{r['start_stream_ms_p99']} ms; opening it (kept closed at rest instead): p50 "
        f"{r['open_stream_ms_p50']} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--period-ms", type=int, default=20)
    parser.add_argument(
        "--rounds", type=int, default=3, help="box/floor CPU rounds (medians are printed)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--stream", choices=("realtime",), help="also the jitter reserve")
    parser.add_argument("--jitter-ms", type=float, default=50.0)
    args = parser.parse_args()
    os.environ.setdefault("JACK_NO_START_SERVER", "1")
    r = asyncio.run(
        measure(args.seconds, args.period_ms, max(1, args.rounds), min(args.seconds, 10.0))
    )
    if args.stream:
        r.update(asyncio.run(measure_stream(args.jitter_ms)))
    if args.json:
        print(json.dumps(r))
        return
    target = args.period_ms + 5
    print(f"full duplex at {r['device_rate']} Hz, {r['period_ms']} ms periods, {r['seconds']} s")
    print(
        f"callback cost: p50 {r['callback_us_p50']} µs, p99 {r['callback_us_p99']} µs "
        f"({r['callbacks']} callbacks)"
    )
    print(
        f"CPU: {r['cpu_ms_per_min']} CPU-ms per minute of full-duplex audio; the floor "
        f"(PortAudio and the virtual devices with empty callbacks, same run): "
        f"{r['floor_cpu_ms_per_min']}; ratio {r['cpu_ratio']} (goal <= 1.5); inside our "
        f"callbacks: {r['callback_ms_per_min']}"
    )
    print(
        f"  medians of {len(r['cpu_ratio_rounds'])} rounds: box {r['cpu_ms_per_min_rounds']}, "
        f"floor {r['floor_cpu_ms_per_min_rounds']}, ratio {r['cpu_ratio_rounds']}"
    )
    print(
        f"capture latency (drained every 100 ms): p50 {r['capture_latency_ms_p50']} ms, "
        f"p99 {r['capture_latency_ms_p99']} ms"
    )
    print(
        f"playback latency: p50 {r['playback_latency_ms_p50']} ms, "
        f"p99 {r['playback_latency_ms_p99']} ms (target <= {target}); "
        f"{r['deltas_heard']}/{r['deltas']} deltas heard"
    )
    print(
        f"the device asks for output every {r['output_callback_gap_ms_p99']} ms at p99 "
        f"(a delta waits for the next ask)"
    )
    print(
        f"press -> first captured sample (the stream starts from rest): p50 "
        f"{r['press_to_capture_ms_p50']} ms, p99 {r['press_to_capture_ms_p99']} ms (goal <= 30)"
    )
    print(f"overruns {r['overruns']}, underruns {r['underruns']}")
    if args.stream:
        print_stream(r)


if __name__ == "__main__":
    main()
