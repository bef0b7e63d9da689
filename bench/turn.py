#!/usr/bin/env python3
"""What the box adds to a conversation: release -> first sound, barge-in press -> silence, CPU per
turn and memory, over N turns of ``appliance run`` (a subprocess) against the local test
Realtime server answering at once, with paced virtual audio (see tests/box.py).

The latencies are the box's own measurements at the point the sound leaves it (the output
callback hands the samples to the device): release to the first answer sample handed over, and a
barge-in's flush to the fade and silence handed over. They exclude the sound card's own buffer
(here the test's named pipe, 46 ms), and the 60 ms "sent" earcon, which would only delay an
answer that arrives faster than it plays (earcons are off in this run).

Release -> first sound is also split: ``release_to_arrival_ms`` is release -> the answer's first
audio in the box (the box's own share), and the rest is the jitter reserve and the wait for the
speaker's next request for samples. This virtual speaker (ALSA's ``file`` plugin into a paced
pipe) asks for four 20 ms periods at once every 80 ms, so an answer that arrives just after a
request waits up to 80 ms: that, traced callback by callback, was the "one slow turn in 80"
(60-95 ms) of issue 12; a card asks every period.

The server is the Yandex-shaped test server (profile yandex-2026) whose transcript of each
question arrives ``--transcript-delay-ms`` (200) after the commit: the box waits for it before
asking for the answer (Yandex answers an empty question otherwise), so that wait is part of
release -> first sound. The same run also measures the OpenAI-shaped server, where the box
asks as soon as the commit is confirmed, and prints the difference: what the wait costs.

Memory: the box's RSS after the first turn and after the last (``--turns 200``: the growth), and
the floor measured in the same run: a bare process with asyncio, numpy, aiohttp and PyAudio
imported and PortAudio initialised over the same kind of virtual devices, and the ratio.

    .venv/bin/python bench/turn.py [--turns 50] [--transcript-delay-ms 200] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from box import PacedBox, _asound  # noqa: E402
from realtime_server import AudioAnswer, RealtimeTestServer, tone  # noqa: E402

KEY = "bench-key"
BARGE_IN_EVERY = 5
IDLE_S = 10.0


def speech(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 24000)) / 24000
    return (np.sin(2 * np.pi * 250 * t) * 6000).astype(np.int16)


def proc_figures(pid: int) -> tuple[float, float]:
    """(CPU seconds so far, RSS in MB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss_kb = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return cpu, rss_kb / 1024


FLOOR_PROGRAM = """
import asyncio, numpy, aiohttp, pyaudio
pa = pyaudio.PyAudio()  # PortAudio initialised: it has listed the devices, as the box's has
asyncio.run(asyncio.sleep(0.5))
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:")))
"""


def floor_rss_mb() -> float:
    """RSS of the floor: a bare process with asyncio, numpy, aiohttp and PyAudio imported and
    PortAudio initialised, over the same kind of virtual devices (ALSA's file plugin) as the
    box, in its own folder (its device listing must not touch the box's pipes)."""
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        mic, speaker = Path(tmp) / "mic.raw", Path(tmp) / "speaker.raw"
        mic.write_bytes(bytes(9600))
        asound = Path(tmp) / "asound.conf"
        asound.write_text(_asound(mic, speaker))
        env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
        env.update(ALSA_CONFIG_PATH=str(asound), JACK_NO_START_SERVER="1")
        out = subprocess.run(
            [sys.executable, "-c", FLOOR_PROGRAM],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    return int(out.split()[-1]) / 1024


async def one_turn(box: PacedBox, number: int) -> dict:
    box.say(speech(0.4))
    await box.command("press")
    await asyncio.sleep(0.4)
    await box.command("release")
    status = await box.wait_status(lambda s: s["turns"] == number and s["state"] == "idle", 15)
    return status


async def barge_in(box: PacedBox, server: RealtimeTestServer, number: int) -> float:
    server.answers.append(AudioAnswer("A long answer.", tone(server.output_rate, 3.0)))
    box.say(speech(0.4))
    await box.command("press")
    await asyncio.sleep(0.4)
    await box.command("release")
    await box.wait_status(lambda s: s["state"] == "speaking", 10)
    await asyncio.sleep(0.3)
    await box.command("press")  # barge in
    status = await box.wait_status(
        lambda s: s["state"] == "listening" and s["audio"]["playback"]["last_flush_ms"] is not None,
        5,
    )
    flush_ms = status["audio"]["playback"]["last_flush_ms"]
    box.say(speech(0.3))
    await asyncio.sleep(0.3)
    await box.command("release")
    await box.wait_status(lambda s: s["turns"] == number + 1 and s["state"] == "idle", 15)
    return flush_ms


async def measure(turns: int, profile: str = "yandex-2026", transcript_delay_ms: int = 200) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-turn-"))
    async with RealtimeTestServer(profile=profile, api_key=KEY) as server:
        server.transcript_delay_s = transcript_delay_ms / 1000
        server.default_answer = AudioAnswer("Yes.", tone(server.output_rate, 0.3))
        box = PacedBox(tmp, server, KEY, sounds=False)
        await box.start()
        try:
            await box.wait_status(lambda s: s["connected"] and s["state"] == "idle", 15)
            pid = box.proc.pid
            # Idle: connected, nobody talking (most of a smart speaker's life).
            await asyncio.sleep(1.0)
            idle_start, _ = proc_figures(pid)
            await asyncio.sleep(IDLE_S)
            idle_cpu = (proc_figures(pid)[0] - idle_start) / IDLE_S * 60 * 1000
            latencies, bargeins, arrivals = [], [], []
            done = 0
            status = await one_turn(box, 1)
            done = 1
            latencies.append(status["last_turn"]["latency_ms"])
            arrivals.append(status["last_turn"]["arrived_ms"])
            cpu_first, rss_first = proc_figures(pid)
            while done < turns:
                if done % BARGE_IN_EVERY == 0 and done + 2 <= turns:
                    bargeins.append(await barge_in(box, server, done + 1))
                    done += 2
                    continue
                status = await one_turn(box, done + 1)
                done += 1
                latencies.append(status["last_turn"]["latency_ms"])
                arrivals.append(status["last_turn"]["arrived_ms"])
            cpu_last, rss_last = proc_figures(pid)
            final = await box.status()
        finally:
            await box.stop()
    return {
        "profile": profile,
        "transcript_delay_ms": transcript_delay_ms,
        "early_responses": len(server.early_responses),
        "turns": done,
        "answered": final["answered"],
        "release_to_sound_ms_p50": round(float(np.percentile(latencies, 50)), 1),
        "release_to_sound_ms_p99": round(float(np.percentile(latencies, 99)), 1),
        # the box's own share: release -> the answer's first audio in the box
        "release_to_arrival_ms_p50": round(float(np.percentile(arrivals, 50)), 1),
        "release_to_arrival_ms_p99": round(float(np.percentile(arrivals, 99)), 1),
        "bargein_ms_p50": round(float(np.percentile(bargeins, 50)), 1) if bargeins else None,
        "bargein_ms_p99": round(float(np.percentile(bargeins, 99)), 1) if bargeins else None,
        "bargeins": len(bargeins),
        "cpu_ms_per_turn": round((cpu_last - cpu_first) * 1000 / max(1, done - 1), 1),
        "idle_cpu_ms_per_min": round(idle_cpu),
        "rss_mb_first": round(rss_first, 1),
        "rss_mb_last": round(rss_last, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--transcript-delay-ms", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    turns = max(2, args.turns)
    r = asyncio.run(measure(turns, "yandex-2026", args.transcript_delay_ms))
    floor = asyncio.run(measure(max(2, turns // 2), "openai", args.transcript_delay_ms))
    r["release_to_sound_ms_p50_openai"] = floor["release_to_sound_ms_p50"]
    r["release_to_sound_ms_p99_openai"] = floor["release_to_sound_ms_p99"]
    r["release_to_arrival_ms_p50_openai"] = floor["release_to_arrival_ms_p50"]
    r["release_to_arrival_ms_p99_openai"] = floor["release_to_arrival_ms_p99"]
    r["transcript_wait_added_ms_p50"] = round(
        r["release_to_sound_ms_p50"] - floor["release_to_sound_ms_p50"], 1
    )
    r["rss_mb_floor"] = round(floor_rss_mb(), 1)
    r["rss_ratio"] = round(r["rss_mb_last"] / r["rss_mb_floor"], 2)
    r["rss_growth_mb"] = round(r["rss_mb_last"] - r["rss_mb_first"], 1)
    if args.json:
        print(json.dumps(r))
        return
    print(f"{r['turns']} turns ({r['answered']} answered, {r['bargeins']} barge-ins)")
    print(
        f"release -> first sound, Yandex-shaped server, transcript {r['transcript_delay_ms']} ms "
        f"after the commit: p50 {r['release_to_sound_ms_p50']} ms, "
        f"p99 {r['release_to_sound_ms_p99']} ms ({r['early_responses']} empty-question answers)"
    )
    print(
        f"the same without the transcript wait (OpenAI-shaped server): p50 "
        f"{r['release_to_sound_ms_p50_openai']} ms, p99 {r['release_to_sound_ms_p99_openai']} ms; "
        f"the wait adds {r['transcript_wait_added_ms_p50']} ms at p50 (target for the box's own "
        "share <= 60)"
    )
    print(
        f"of which release -> the answer's first audio in the box: p50 "
        f"{r['release_to_arrival_ms_p50_openai']} ms, p99 {r['release_to_arrival_ms_p99_openai']} "
        f"ms (Yandex-shaped: {r['release_to_arrival_ms_p50']} / {r['release_to_arrival_ms_p99']}); "
        "the rest waits for the speaker to ask for samples: this virtual one asks for four "
        "periods at once every 80 ms (a card asks every period)"
    )
    print(
        f"barge-in press -> silence: p50 {r['bargein_ms_p50']} ms, "
        f"p99 {r['bargein_ms_p99']} ms (target <= 40)"
    )
    print(f"CPU: {r['cpu_ms_per_turn']} ms per turn; idle {r['idle_cpu_ms_per_min']} ms per minute")
    print(
        f"RSS: {r['rss_mb_first']} MB after 1 turn, {r['rss_mb_last']} MB after {r['turns']} "
        f"(growth {r['rss_growth_mb']} MB; target <= 60 MB, growth < 2 MB over 200 turns); "
        f"floor (asyncio + numpy + aiohttp + PortAudio) {r['rss_mb_floor']} MB; "
        f"x{r['rss_ratio']}"
    )


if __name__ == "__main__":
    main()
