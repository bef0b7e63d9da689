#!/usr/bin/env python3
"""What an always-on box costs at rest, against the floor, and what resting costs a press.

Two processes connected to the same local test Realtime server (Yandex-shaped), measured over
the same window: ``appliance run`` (push-to-talk, connected, nobody talking; paced virtual
audio as in tests/box.py, heartbeat at the config's default 10 s) and the floor, a bare aiohttp
WebSocket client with the same heartbeat that sent the same ``session.update`` and waits. Both
are read from /proc: CPU per minute (the scheduler's per-thread ns counters), and wake-ups per
second (context switches of all the process's threads, voluntary and not: each is a thread that
slept and ran again).

Then ``--presses`` presses through the control socket: press to the first captured sample, as
the box measures it (the time from the press reaching the box to the first microphone callback
with data; the box reports it in ``status.audio.capture.press_to_capture_ms``).

    .venv/bin/python bench/idle.py [--seconds 60] [--presses 20] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from box import PacedBox  # noqa: E402
from realtime_server import AudioAnswer, RealtimeTestServer, tone  # noqa: E402
from turn import proc_figures  # noqa: E402

KEY = "bench-key"
HEARTBEAT_S = 10.0  # realtime.heartbeat_s's default: what a box in the field runs with

FLOOR_CLIENT = textwrap.dedent(
    """
    import asyncio, json, sys
    import aiohttp

    async def main(url, auth, heartbeat):
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(url, headers={"Authorization": auth},
                                       heartbeat=heartbeat) as ws:
                await ws.send_str(json.dumps({"type": "session.update", "session": {}}))
                print("connected", flush=True)
                async for _ in ws:
                    pass

    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
    """
)


def cpu_s(pid: int) -> float:
    """CPU time of the process so far, from the scheduler's per-thread nanosecond counters
    (/proc/PID/task/*/schedstat): the 10 ms ticks of /proc/PID/stat read 0 for a process that
    uses a few ms a minute. A thread that ended takes its time with it; at rest no thread ends
    (the audio threads exist only while a stream runs), and the window is checked for that."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1e9


def switches(pid: int) -> int:
    """Context switches of every thread of the process so far."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
    return total


async def window(pids: dict[str, int], seconds: float) -> dict[str, dict[str, float]]:
    start = {name: (cpu_s(pid), switches(pid)) for name, pid in pids.items()}
    await asyncio.sleep(seconds)
    figures = {}
    for name, pid in pids.items():
        cpu0, sw0 = start[name]
        figures[name] = {
            "cpu_ms_per_min": (cpu_s(pid) - cpu0) * 1000 / seconds * 60,
            "wakeups_per_s": (switches(pid) - sw0) / seconds,
        }
    return figures


async def presses(box: PacedBox, count: int) -> list[float]:
    """Press to first captured sample, ``count`` times from rest. The box updates ``starts`` and
    ``press_to_capture_ms`` together when a start delivers audio: waiting for ``starts`` to
    grow makes the figure read this press's."""
    delays = []
    for number in range(1, count + 1):
        before = (await box.status())["audio"]["capture"]["starts"]
        await box.command("press")
        status = await box.wait_status(lambda s, b=before: s["audio"]["capture"]["starts"] > b, 5)
        delays.append(float(status["audio"]["capture"]["press_to_capture_ms"]))
        await asyncio.sleep(0.3)
        await box.command("release")
        await box.wait_status(lambda s, n=number: s["turns"] == n and s["state"] == "idle", 15)
        await asyncio.sleep(1.0)  # at rest again between presses, as in life
    return delays


async def measure(seconds: float, rounds: int, press_count: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    async with RealtimeTestServer(profile="yandex-2026", api_key=KEY) as server:
        server.default_answer = AudioAnswer("Yes.", tone(server.output_rate, 0.2))
        box = PacedBox(tmp, server, KEY, sounds=False)
        box.config.write_text(
            box.config.read_text().replace("heartbeat_s: 2\n", f"heartbeat_s: {HEARTBEAT_S}\n")
        )
        floor = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            FLOOR_CLIENT,
            server.endpoint,
            server.auth_header,
            str(HEARTBEAT_S),
            stdout=asyncio.subprocess.PIPE,
        )
        await box.start()
        try:
            assert floor.stdout is not None
            await asyncio.wait_for(floor.stdout.readline(), 15)
            await box.wait_status(lambda s: s["connected"] and s["state"] == "idle", 15)
            await asyncio.sleep(3.0)  # past the start: what a box does all day
            pids = {"box": box.proc.pid, "floor": floor.pid}
            samples = [await window(pids, seconds / rounds) for _ in range(rounds)]
            rss = {"box": proc_figures(box.proc.pid)[1], "floor": proc_figures(floor.pid)[1]}
            delays = await presses(box, press_count)
        finally:
            await box.stop()
            floor.terminate()
            await floor.wait()

    def median(who: str, what: str) -> float:
        return float(np.median([s[who][what] for s in samples]))

    idle, floor_cpu = median("box", "cpu_ms_per_min"), median("floor", "cpu_ms_per_min")
    return {
        "seconds": seconds,
        "rounds": rounds,
        "idle_cpu_ms_per_min": round(idle, 1),
        "floor_cpu_ms_per_min": round(floor_cpu, 1),
        "ratio": round(idle / max(floor_cpu, 0.01), 2),
        "wakeups_per_s": round(median("box", "wakeups_per_s"), 2),
        "floor_wakeups_per_s": round(median("floor", "wakeups_per_s"), 2),
        "rss_mb": round(rss["box"], 1),
        "floor_rss_mb": round(rss["floor"], 1),
        "presses": len(delays),
        "press_to_capture_ms_p50": round(float(np.percentile(delays, 50)), 1) if delays else None,
        "press_to_capture_ms_p99": round(float(np.percentile(delays, 99)), 1) if delays else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="idle window, in all")
    parser.add_argument("--rounds", type=int, default=3, help="the window in this many parts")
    parser.add_argument("--presses", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    r = asyncio.run(measure(args.seconds, max(1, args.rounds), max(0, args.presses)))
    if args.json:
        print(json.dumps(r))
        return
    print(
        f"idle, connected, push-to-talk ({r['seconds']:.0f} s in {r['rounds']} rounds, medians):"
        f" box {r['idle_cpu_ms_per_min']} CPU-ms/min, floor (bare aiohttp client, same"
        f" heartbeat) {r['floor_cpu_ms_per_min']}: x{r['ratio']} (goal <= 2)"
    )
    print(f"wake-ups: box {r['wakeups_per_s']}/s (goal <= 2), floor {r['floor_wakeups_per_s']}/s")
    print(f"RSS: box {r['rss_mb']} MB, floor {r['floor_rss_mb']} MB")
    print(
        f"press -> first captured sample over {r['presses']} presses: p50 "
        f"{r['press_to_capture_ms_p50']} ms, p99 {r['press_to_capture_ms_p99']} ms (goal <= 30)"
    )


if __name__ == "__main__":
    main()
