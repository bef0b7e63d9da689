#!/usr/bin/env python3
"""The command line's own cost: ``appliance ask`` beside the vendor sample's file client, and
``appliance status`` beside a bare Python start, all measured in the same run.

- ask: the same question (a WAV, 44.1 kHz stereo, spoken-length) asked of the same local test
  Realtime server (tests/realtime_server.py, answering at once) by ``appliance ask`` and by the
  vendor sample (the voice-agent.py of /work/shared/seeds/ or ../shared/seeds/, its constants
  pointed at the local server; it converts with ffmpeg first, then connects, on websockets).
  Paired runs, alternating; wall time from start to exit (the answer file written), CPU as
  user+sys of the process and its children (the sample's ffmpeg counts; it is how it reads).
- status: ``appliance status`` against a real control socket (appliance/control/server.py with
  a fixed status), with ``--socket`` and through config.yaml; the floor is ``python -c pass``.

    .venv/bin/python bench/cli.py [--runs 9] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from realtime_server import AudioAnswer, RealtimeTestServer, tone  # noqa: E402

from appliance.audio.wavfile import write_wav  # noqa: E402
from appliance.control.server import ControlServer  # noqa: E402

KEY = "bench-key"
SEED_DIRS = (Path("/work/shared/seeds"), ROOT.parent / "shared" / "seeds")


def vendor_sample(work: Path, url: str, question: Path) -> Path:
    """The sample's code from the seed document, its constants pointed at the local server."""
    text = next(
        p.read_text(encoding="utf-8")
        for d in SEED_DIRS
        if d.is_dir()
        for p in sorted(d.glob("*.txt"))
        if "CONVERTED_FILE" in p.read_text(encoding="utf-8")
    )
    start = text.index("    import asyncio")
    end = text.index("        asyncio.run(main())", start) + len("        asyncio.run(main())")
    code = "\n".join(line[4:] for line in text[start:end].splitlines())
    constants = {
        "API_KEY": repr(KEY),
        "FOLDER": repr("benchfolder"),
        "INPUT_FILE": repr(str(question)),
        "CONVERTED_FILE": repr(str(work / "converted.wav")),
        "OUTPUT_FILE": repr(str(work / "sample-answer.wav")),
        "REALTIME_URL": repr(f"{url}?model=gpt://benchfolder/speech-realtime-250923"),
    }
    for name, value in constants.items():
        code, n = re.subn(rf"^{name} = .*$", f"{name} = {value}", code, count=1, flags=re.M)
        assert n == 1, f"{name} not found in the vendor sample"
    path = work / "voice_agent.py"
    path.write_text(code, encoding="utf-8")
    return path


def run_measured(argv: list[str], env: dict) -> tuple[float, float, int]:
    """(wall s, CPU s of the process and its children, exit code)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed ({proc.returncode}): {err[-800:]}")
    # wait4's usage covers the process and the children it waited for (the sample's ffmpeg).
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode


class ServerThread:
    """The local test server (and a control socket) on their own event loop."""

    def __init__(self, control_path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.control_path = control_path
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(30)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self.stop = asyncio.Event()
        async with (
            RealtimeTestServer(api_key=KEY) as server,
            ControlServer(self.control_path, _FixedStatus()),
        ):
            self.server = server
            self.ready.set()
            await self.stop.wait()

    def add_answer(self) -> None:
        self.loop.call_soon_threadsafe(
            self.server.answers.append, AudioAnswer("Полдень.", tone(44100, 1.5, freq=523))
        )

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


class _FixedStatus:
    async def press(self) -> None: ...

    async def release(self) -> None: ...

    async def talk(self, seconds: float) -> dict:
        return {}

    def status(self) -> dict:
        return {"state": "idle", "connected": True, "turns": 3, "audio": {"volume": 1.0}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="paired runs of each (default 9)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    question = work / "question.wav"
    t = np.arange(int(2.5 * 44100)) / 44100
    voice = (np.sin(2 * np.pi * 220 * t) * 8000).astype("<i2")
    write_wav(question, np.repeat(voice[:, None], 2, axis=1).tobytes(), 44100, 2)
    srv = ServerThread(work / "control.sock")
    config = work / "config.yaml"
    config.write_text(
        f"realtime:\n  url: {srv.server.url}\n  folder_id: benchfolder\n"
        f"control:\n  socket: {work / 'control.sock'}\n"
    )
    sample = vendor_sample(work, srv.server.url, question)
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.pop("CREDENTIALS_DIRECTORY", None)
    env_key = {**env, "APPLIANCE_API_KEY": KEY}
    py = sys.executable
    ask_argv = [py, "-m", "appliance", "ask", str(question), "-o", str(work / "a.wav"),
                "--config", str(config)]  # fmt: skip
    sample_argv = [py, str(sample)]
    commands = {
        "ask": (ask_argv, env_key, True),
        "sample": (sample_argv, env, True),
        "status_socket": (
            [py, "-m", "appliance", "status", "--socket", str(work / "control.sock")],
            env,
            False,
        ),
        "status_config": ([py, "-m", "appliance", "status", "--config", str(config)], env, False),
        "python_floor": ([py, "-c", "pass"], env, False),
    }
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    try:
        for argv, e, answers in commands.values():  # one warm-up each (page cache)
            if answers:
                srv.add_answer()
            run_measured(argv, e)
        for _ in range(args.runs):
            for name, (argv, e, answers) in commands.items():
                if answers:
                    srv.add_answer()
                wall, cpu, _ = run_measured(argv, e)
                figures[name].append((wall, cpu))
    finally:
        srv.close()
        shutil.rmtree(work, ignore_errors=True)

    def med(name: str, i: int) -> float:
        return round(statistics.median(f[i] for f in figures[name]) * 1000, 1)

    result = {
        "runs": args.runs,
        "ask_wall_ms": med("ask", 0),
        "sample_wall_ms": med("sample", 0),
        "ask_cpu_ms": med("ask", 1),
        "sample_cpu_ms": med("sample", 1),
        "status_socket_cpu_ms": med("status_socket", 1),
        "status_config_cpu_ms": med("status_config", 1),
        "status_socket_wall_ms": med("status_socket", 0),
        "python_floor_cpu_ms": med("python_floor", 1),
    }
    result["ask_wall_ratio"] = round(result["ask_wall_ms"] / result["sample_wall_ms"], 2)
    result["ask_cpu_ratio"] = round(result["ask_cpu_ms"] / result["sample_cpu_ms"], 2)
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:24} {value}")


if __name__ == "__main__":
    main()
