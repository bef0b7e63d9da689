#!/usr/bin/env python3
"""Soak: ``appliance run`` (a subprocess, paced virtual audio, control socket; tests/box.py)
against the local test Realtime server through N turns with faults mixed in at random (seeded).

Faults: a drop mid-answer, a close 1011 mid-answer, the handshake refused for ``--refuse-s``
(the link is closed, then every reconnect is refused 503 for that long, and the owner presses
during the outage), junk frames before an answer, a slow answer (within the answer timeout), a
slow answer beyond it (a timeout turn), the session expiring while the box waits for an answer,
a barge-in (press while speaking), and the microphone vanishing for 5 s mid-question.

How a turn is judged. Every question the owner asks must end either answered, or failed
audibly: the daemon's ``last_turn`` (control socket ``status``, the same record the daemon's
``turn N: <result>`` log line is written from) has a result other than "answered", AND the
error or not_connected earcon is heard on the speaker pipe. The earcons are recognised by
their pitch: error glides 440 -> 220 Hz and not_connected beeps at 330 Hz, while every answer
here is a 1200 Hz tone and the other earcons are 660-1500 Hz; at least 60 ms of speaker audio
whose dominant frequency is 200-470 Hz counts as "heard". A barge-in's interrupted turn ends
"cancelled" by the owner's own press: counted as ``interrupted``. A press while offline starts
no turn in the daemon (only the not_connected earcon): counted in ``offline_presses`` (and in
``failed_audibly`` if the earcon is heard, else ``lost``). Anything else is ``lost``.

The microphone vanishing: the mic is a named pipe fed at real-time pace by the bench; the
feeder stops writing for 5 s (keeping its clock, so no burst on resume). ALSA's file plugin
then blocks reading the pipe, PortAudio's input callbacks stop, the capture's stall detection
(no callback for 1 s) marks the device failed, the daemon fails the turn (error earcon) and
reopens the device every retry_s until audio flows again. The speaker keeps working so the
earcon can be heard (a dead speaker can say nothing: that is not tested here).

Log lines per fault: the daemon's log lines (debug level) from the moment a fault is set up
until the box is idle, connected and its audio running again after it; the maximum is reported.

    .venv/bin/python bench/soak.py [--turns 1000] [--seed 1] [--refuse-s 10] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from box import MIC_RATE, PERIOD_S, SPEAKER_RATE, PacedBox  # noqa: E402
from realtime_server import AudioAnswer, RealtimeTestServer, tone  # noqa: E402

KEY = "bench-key"
ANSWER_HZ = 1200.0
ANSWER_TIMEOUT_S = 5.0  # tests/box.py's config
VANISH_S = 5.0
FAULT_RATE = 0.3
FAULTS = (
    "drop",
    "close_1011",
    "refused",
    "junk",
    "slow",
    "too_slow",
    "expiry",
    "barge_in",
    "mic_vanish",
)
EARCON_BAND = (200.0, 470.0)
EARCON_MIN_FRAMES = 3  # 20 ms frames: 60 ms
CONTROL_POLL = "control: Request(cmd='status'"
BUSY = ("listening", "thinking", "speaking")


SoakBox = PacedBox  # mic_gone and clear_heard are PacedBox's


def speech(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * MIC_RATE)) / MIC_RATE
    return (np.sin(2 * np.pi * 250 * t) * 6000).astype(np.int16)


def earcon_frames(heard: np.ndarray) -> int:
    """How many 20 ms frames of ``heard`` are loud and pitched like the error earcons."""
    n = int(SPEAKER_RATE * PERIOD_S)
    frames = len(heard) // n
    if frames == 0:
        return 0
    x = heard[: frames * n].astype(np.float64).reshape(frames, n) / 32768
    loud = np.sqrt((x**2).mean(axis=1)) > 0.01
    spectrum = np.abs(np.fft.rfft(x * np.hanning(n), n=4 * n, axis=1))
    freq = np.fft.rfftfreq(4 * n, 1 / SPEAKER_RATE)[spectrum.argmax(axis=1)]
    return int((loud & (freq >= EARCON_BAND[0]) & (freq <= EARCON_BAND[1])).sum())


def proc_figures(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return {
        "rss_mb": round(rss_kb / 1024, 1),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": len(os.listdir(f"/proc/{pid}/task")),
    }


class LogReader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines = 0

    def advance(self) -> list[str]:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        cut = data.rfind(b"\n") + 1
        self.offset += cut
        new = [
            line
            for line in data[:cut].decode(errors="replace").splitlines()
            if CONTROL_POLL not in line  # the bench's own status polling, not the daemon's
        ]
        self.lines += len(new)
        return new


class Soak:
    def __init__(self, box: SoakBox, server: RealtimeTestServer, args) -> None:
        self.box, self.server, self.args = box, server, args
        self.rng = random.Random(args.seed)
        self.counts = {"answered": 0, "failed_audibly": 0, "interrupted": 0, "lost": 0}
        self.turns = 0
        self.offline_presses = 0
        self.lost_detail: list[str] = []
        self.faults: dict[str, int] = {}
        self.fault_log_lines: dict[str, int] = {}
        self.worst_fault: tuple[int, str, list[str]] = (0, "", [])
        self.results: dict[str, int] = {}
        self.log = LogReader(box.log_path)
        self.kinds = args.only.split(",") if args.only else list(FAULTS)

    # ---- the owner's actions ------------------------------------------------------------

    async def ask(self, seconds: float = 0.4) -> None:
        self.box.say(speech(seconds))
        await self.box.command("press")
        await asyncio.sleep(seconds)
        await self.box.command("release")

    async def wait_end(self, number: int, wait_s: float = 20.0) -> dict | None:
        """The status once turn ``number`` has a result and the box is no longer busy with it."""
        try:
            return await self.box.wait_status(
                lambda s: (
                    (s["last_turn"] or {}).get("number", 0) >= number and s["state"] not in BUSY
                ),
                wait_s,
            )
        except AssertionError:
            return None

    async def judge(self, number: int, status: dict | None, what: str) -> str:
        self.turns += 1
        last = (status or {}).get("last_turn") or {}
        if status is None or last.get("number") != number:
            return self._lost(f"turn {number} ({what}): never ended; status {status}")
        result = last["result"]
        self.results[result] = self.results.get(result, 0) + 1
        if result == "answered":
            self.counts["answered"] += 1
            return result
        heard = await self.box.wait_heard(lambda h: earcon_frames(h) >= EARCON_MIN_FRAMES, 2.0)
        if earcon_frames(heard) >= EARCON_MIN_FRAMES:
            self.counts["failed_audibly"] += 1
            return result
        return self._lost(f"turn {number} ({what}): {result} with no error earcon heard")

    def _lost(self, why: str) -> str:
        self.counts["lost"] += 1
        self.lost_detail.append(why)
        return "lost"

    async def turn(self, what: str = "plain") -> str:
        before = await self.box.status()
        number = before["turns"] + 1
        self.box.clear_heard()
        await self.ask()
        return await self.judge(number, await self.wait_end(number), what)

    async def settle(self, wait_s: float = 60.0) -> dict:
        """Wait until the box is idle, connected and its audio running."""
        return await self.box.wait_status(
            lambda s: (
                s["state"] == "idle"
                and s["connected"]
                and s["audio"]["capture"]["state"] == "running"
                and s["audio"]["playback"]["state"] == "running"
            ),
            wait_s,
        )

    # ---- faults ---------------------------------------------------------------------------

    async def fault(self, kind: str) -> None:
        self.log.advance()
        start = self.log.lines
        self.faults[kind] = self.faults.get(kind, 0) + 1
        server, box = self.server, self.box
        if kind == "drop":
            server.drop_mid_answer(after_deltas=2)
            await self.turn(kind)
        elif kind == "close_1011":
            server.close_mid_answer(1011, after_deltas=2)
            await self.turn(kind)
        elif kind == "junk":
            server.junk_before_next_answer(
                ["not json", b"\x00\xff binary", '{"type": 5}', '{"type": "no.such.event"}', "[]"]
            )
            await self.turn(kind)
        elif kind == "slow":
            server.answer_delay_s = self.rng.uniform(0.5, ANSWER_TIMEOUT_S - 1.5)
            try:
                await self.turn(kind)
            finally:
                server.answer_delay_s = 0.0
        elif kind == "too_slow":
            server.answer_delay_s = ANSWER_TIMEOUT_S + 1.5
            await self.turn(kind)
            server.answer_delay_s = 0.0
            await asyncio.sleep(2.0)  # the late answer comes (and must be dropped)
        elif kind == "expiry":
            server.answer_delay_s = 2.0
            before = await box.status()
            number = before["turns"] + 1
            box.clear_heard()
            await self.ask()
            for conn in list(server._live):  # the server's own expiry path
                server.spawn(server._expire(conn, 0.3))
            server.answer_delay_s = 0.0
            await self.judge(number, await self.wait_end(number), kind)
        elif kind == "barge_in":
            server.answers.append(AudioAnswer("A long answer.", tone(44100, 3.0, ANSWER_HZ)))
            before = await box.status()
            number = before["turns"] + 1
            box.clear_heard()
            await self.ask()
            spoke = await box.wait_status(lambda s: s["state"] in ("speaking", "idle"), 10)
            if spoke["state"] == "speaking":
                await asyncio.sleep(0.3)
                box.say(speech(0.3))
                await box.command("press")  # barge in: ends turn `number`, starts the next
                await asyncio.sleep(0.3)
                await box.command("release")
                status = await self.wait_end(number + 1)
                self.turns += 1
                self.counts["interrupted"] += 1
                self.results["cancelled"] = self.results.get("cancelled", 0) + 1
                await self.judge(number + 1, status, "after a barge-in")
            else:
                await self.judge(number, await self.wait_end(number), kind)
        elif kind == "refused":
            server.refuse_for(self.args.refuse_s, 503)
            await server.close_all(1001)
            await box.wait_status(lambda s: not s["connected"], 10)
            before = await box.status()
            box.clear_heard()
            await self.ask()
            await asyncio.sleep(1.0)
            after = await box.status()
            if after["turns"] == before["turns"]:  # no turn: the box said "not connected"
                self.turns += 1
                self.offline_presses += 1
                heard = await box.wait_heard(lambda h: earcon_frames(h) >= EARCON_MIN_FRAMES, 2.0)
                if earcon_frames(heard) >= EARCON_MIN_FRAMES:
                    self.counts["failed_audibly"] += 1
                else:
                    self._lost("press while offline: no not_connected earcon heard")
            else:
                number = before["turns"] + 1
                await self.judge(number, await self.wait_end(number), kind)
        elif kind == "mic_vanish":
            before = await box.status()
            number = before["turns"] + 1
            box.clear_heard()
            box.say(speech(3.0))
            await box.command("press")
            await asyncio.sleep(0.3)
            box.mic_gone = True
            gone_at = time.monotonic()
            status = await self.wait_end(number, VANISH_S)
            await asyncio.sleep(max(0.0, gone_at + VANISH_S - time.monotonic()))
            box.mic_gone = False
            await box.command("release")  # the owner lets go at some point
            await self.judge(number, status or await self.wait_end(number), kind)
        await self.settle(self.args.refuse_s + 60)
        new = self.log.advance()
        lines = self.log.lines - start
        self.fault_log_lines[kind] = max(self.fault_log_lines.get(kind, 0), lines)
        if lines > self.worst_fault[0]:
            self.worst_fault = (lines, kind, new)

    async def run(self) -> None:
        while self.turns < self.args.turns:
            if self.turns > 0 and self.rng.random() < self.args.fault_rate:
                await self.fault(self.rng.choice(self.kinds))
            else:
                await self.turn()
                await self.settle()


async def soak(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    started = time.monotonic()
    async with RealtimeTestServer(api_key=KEY) as server:
        server.default_answer = AudioAnswer("Yes.", tone(44100, 0.5, ANSWER_HZ))
        box = SoakBox(tmp, server.url, KEY, sounds=True)
        await box.start()
        try:
            await box.wait_status(lambda s: s["connected"] and s["state"] == "idle", 15)
            pid = box.proc.pid
            at_connect = proc_figures(pid)
            run = Soak(box, server, args)
            await run.turn("warm-up")
            await run.settle()
            first = proc_figures(pid)
            first_tasks = (await box.status())["tasks"]
            await run.run()
            await run.settle()
            await asyncio.sleep(1.0)
            last = proc_figures(pid)
            final = await box.status()
        finally:
            code = await box.stop()
    errors = [line for line in box.log().splitlines() if "Traceback" in line]
    return {
        "turns": run.turns,
        **run.counts,
        "offline_presses": run.offline_presses,
        "reconnects": final["reconnects"],
        "rss_mb_start": first["rss_mb"],
        "rss_mb_end": last["rss_mb"],
        "fds_start": first["fds"],
        "fds_end": last["fds"],
        "threads_start": first["threads"],
        "threads_end": last["threads"],
        "tasks_start": first_tasks,
        "tasks_end": final["tasks"],
        "max_log_lines_per_fault": run.worst_fault[0],
        "worst_fault": run.worst_fault[1],
        "log_lines_per_fault": run.fault_log_lines,
        "faults": run.faults,
        "results": run.results,
        "daemon_results": final["results"],
        "at_connect": at_connect,
        "lost_detail": run.lost_detail,
        "tracebacks": len(errors),
        "exit_code": code,
        "seed": args.seed,
        "run_s": round(time.monotonic() - started, 1),
        "log": str(box.log_path),
        "_worst_lines": run.worst_fault[2],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--refuse-s", type=float, default=10.0, help="handshake refused, s")
    parser.add_argument("--fault-rate", type=float, default=FAULT_RATE, help="per step, 0-1")
    parser.add_argument("--only", help="faults to draw from, comma-separated (default: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--show-worst", action="store_true", help="print the worst fault's log")
    args = parser.parse_args()
    r = asyncio.run(soak(args))
    worst = r.pop("_worst_lines")
    if args.json:
        print(json.dumps(r))
    else:
        print(
            f"{r['turns']} turns in {r['run_s']} s: {r['answered']} answered, "
            f"{r['failed_audibly']} failed audibly ({r['offline_presses']} presses offline), "
            f"{r['interrupted']} interrupted by a barge-in, {r['lost']} lost (must be 0)"
        )
        for why in r["lost_detail"]:
            print(f"  lost: {why}")
        print(f"faults: {r['faults']}; turn results: {r['results']}")
        print(f"reconnects: {r['reconnects']}")
        print(f"RSS: {r['rss_mb_start']} -> {r['rss_mb_end']} MB (growth at most 2 MB)")
        print(
            f"fds: {r['fds_start']} -> {r['fds_end']}; threads: "
            f"{r['threads_start']} -> {r['threads_end']}; asyncio tasks: "
            f"{r['tasks_start']} -> {r['tasks_end']} (no growth)"
        )
        print(
            f"log lines per fault: max {r['max_log_lines_per_fault']} ({r['worst_fault']}); "
            f"per kind {r['log_lines_per_fault']}"
        )
        print(f"tracebacks in the log: {r['tracebacks']}; exit code {r['exit_code']}")
        print(f"log: {r['log']}")
    if args.show_worst:
        print("\n".join(worst), file=sys.stderr)


if __name__ == "__main__":
    main()
