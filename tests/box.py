"""``appliance run`` as a subprocess, with a paced microphone and speaker (named pipes).

Nothing inside the box is mocked: it runs the real PortAudio over ALSA's file plugin (testbed.md),
the real aiohttp session against the local test server, and the real control socket. The test
plays the owner: it speaks into the mic pipe (at real-time pace, 20 ms at a time), listens on the
speaker pipe (also at real-time pace, which is what paces the box's output stream), and presses
the button through the control socket (``gpio.enabled: false``, stdin not a TTY).
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import fcntl
import os
import select
import signal
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from appliance.control.client import request
from appliance.control.protocol import ControlError

MIC_RATE = 24000
SPEAKER_RATE = 44100
PERIOD_S = 0.02
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def _asound(mic: Path, speaker: Path) -> str:
    def pcm(name: str, direction: str, infile: str, outfile: str) -> str:
        return (
            f"pcm.{name} {{ type asym {direction}.pcm {{ type file slave.pcm {{ type null }} "
            f'file "{outfile}" {infile}format "raw" }} }}\n'
        )

    return (
        pcm("box_mic", "capture", f'infile "{mic}" ', "/dev/null")
        + pcm("box_speaker", "playback", "", str(speaker))
        + 'pcm.!default { type asym playback.pcm "box_speaker" capture.pcm "box_mic" }\n'
    )


def _realtime_lines(server) -> str:
    """The box's ``realtime`` settings for a test server (its profile picks the provider), or,
    given a bare URL, a Yandex-shaped box."""
    if isinstance(server, str):
        return f"  url: {server}\n  folder_id: testfolder\n"
    from conftest import realtime_config_lines

    return realtime_config_lines(server)


def _with_state_file(extra_config: str, path: Path) -> str:
    """``extra_config`` with ``tools.state_file`` in the box's directory unless it names one:
    the default, /var/lib/appliance/state.json, is the machine's, and a volume saved there
    would leak into every later box."""
    if "state_file:" in extra_config:
        return extra_config
    line = f"  state_file: {path}\n"
    if "\ntools:\n" in "\n" + extra_config:
        return ("\n" + extra_config).replace("\ntools:\n", "\ntools:\n" + line, 1)[1:]
    return extra_config + "tools:\n" + line


class PacedBox:
    """One appliance process and the owner's ears and mouth. See the module docstring."""

    def __init__(
        self,
        tmp: Path,
        server_url: Any,  # a RealtimeTestServer (its profile picks the provider), or a URL
        api_key: str,
        extra_config: str = "",
        *,
        sounds: bool = True,
        echo_cancel: str = "auto",
    ) -> None:
        self.dir = tmp
        # The speaker runs at the answers' rate, so what it plays is what the server sent.
        self.speaker_rate = getattr(server_url, "output_rate", SPEAKER_RATE)
        self.socket = str(tmp / "control.sock")
        self.config = tmp / "config.yaml"
        self.log_path = tmp / "appliance.log"
        self.config.write_text(
            "realtime:\n" + _realtime_lines(server_url) + ""
            "  connect_timeout_s: 2\n"
            "  answer_timeout_s: 5\n"
            "  heartbeat_s: 2\n"
            "audio:\n"
            f"  input_rate: {MIC_RATE}\n"
            f"  output_rate: {self.speaker_rate}\n"
            "  period_ms: 20\n"
            "  volume: 1.0\n"
            "  retry_s: 0.5\n"
            f"  sounds: {'true' if sounds else 'false'}\n"
            f"  echo_cancel: {echo_cancel}\n"
            "gpio:\n"
            "  enabled: false\n"
            "control:\n"
            f"  socket: {self.socket}\n"
            "logging:\n"
            "  level: debug\n" + _with_state_file(extra_config, tmp / "state.json")
        )
        self.api_key = api_key
        self.proc: asyncio.subprocess.Process | None = None
        self.returncode: int | None = None
        self._mic_queue: collections.deque[np.ndarray] = collections.deque()
        self._heard: list[np.ndarray] = []
        self.heard_samples = 0  # total samples read from the speaker so far
        self.unsaid_bytes = 0  # speech queued or in hand, not yet written to the mic pipe
        self.mic_gone = False  # True: the mic "vanishes" (nothing reaches its pipe, it stalls)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._fds: list[int] = []

    # ---- the owner's side --------------------------------------------------------------

    def say(self, samples: np.ndarray) -> None:
        """Queue speech (24 kHz int16) for the mic; silence is sent whenever nothing is queued."""
        samples = np.asarray(samples, dtype=np.int16)
        with self._lock:
            self.unsaid_bytes += samples.nbytes
        self._mic_queue.append(samples)

    async def wait_said(self, timeout: float = 5.0) -> None:
        """Until everything queued with say() has gone into the mic pipe (a loaded machine
        can lag behind real time; a test that releases the button must not cut a question)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # polled: two threads' counters, no event to await
            if self.unsaid_bytes <= 0 and self._mic_backlog() == 0:
                return
            await asyncio.sleep(0.01)

    def _mic_backlog(self) -> int:
        """Bytes written to the mic pipe that the box has not read yet."""
        if not self._fds:
            return 0
        size = array.array("i", [0])
        fcntl.ioctl(self._fds[0], termios.FIONREAD, size)
        return size[0]

    def clear_heard(self) -> None:
        """Forget what the speaker played so far (a test or bench judging one turn at a time)."""
        with self._lock:
            self._heard.clear()

    def heard(self) -> np.ndarray:
        with self._lock:
            return np.concatenate(self._heard) if self._heard else np.zeros(0, np.int16)

    async def wait_heard(self, predicate, timeout: float = 3.0) -> np.ndarray:
        """What the speaker played, once ``predicate(heard)`` holds (the pipe lags a little)."""
        deadline = time.monotonic() + timeout
        while True:
            heard = self.heard()
            if predicate(heard) or time.monotonic() > deadline:
                return heard
            await asyncio.sleep(0.05)

    async def command(self, cmd: str, **fields) -> dict:
        return await request(self.socket, {"cmd": cmd, **fields}, timeout=30)

    async def status(self) -> dict:
        return (await self.command("status"))["status"]

    async def wait_status(self, predicate, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            with contextlib.suppress(ControlError):
                last = await self.status()
                if predicate(last):
                    return last
            await asyncio.sleep(0.05)
        raise AssertionError(f"status never matched; last: {last}\nlog:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self, env: dict | None = None) -> None:
        mic, speaker = self.dir / "mic.fifo", self.dir / "speaker.fifo"
        os.mkfifo(mic)
        os.mkfifo(speaker)
        mic_fd = os.open(mic, os.O_RDWR)  # held open: PyAudio() opens every pcm to list it
        speaker_fd = os.open(speaker, os.O_RDWR)
        fcntl.fcntl(speaker_fd, F_SETPIPE_SZ, 4096)  # a small pipe: our reads pace the box
        # Small too: the feeder starts before the box reads, and a big pipe would keep that
        # head start as a permanent backlog (everything said would reach the box late).
        fcntl.fcntl(mic_fd, F_SETPIPE_SZ, 4096)
        self._fds = [mic_fd, speaker_fd]
        asound = self.dir / "asound.conf"
        asound.write_text(_asound(mic, speaker))
        self._threads = [
            threading.Thread(target=self._feed_mic, args=(mic_fd,), daemon=True),
            threading.Thread(target=self._read_speaker, args=(speaker_fd,), daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
        for name in ("CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "JOURNAL_STREAM", "INVOCATION_ID"):
            child_env.pop(name, None)
        child_env.update(
            ALSA_CONFIG_PATH=str(asound),
            APPLIANCE_API_KEY=self.api_key,
            JACK_NO_START_SERVER="1",
            **(env or {}),
        )
        log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "appliance",
            "run",
            "--config",
            str(self.config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=child_env,
        )
        os.close(log)  # the child has its own copy

    async def stop(self, timeout: float = 5.0) -> int:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.returncode = self.proc.returncode if self.proc else None
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        return self.returncode

    # ---- the paced devices (threads: they block on the pipes) --------------------------

    def _feed_mic(self, fd: int) -> None:
        """A microphone: 20 ms on schedule. The box stops its stream at rest, and a stopped
        stream hears nothing (a card's buffer starts empty at each start): while a period
        still waits unread in the pipe, silence is dropped and speech waits for the next
        period (the owner speaks once the box listens), and the schedule never catches up on
        missed periods in a burst."""
        os.set_blocking(fd, False)
        step = int(MIC_RATE * PERIOD_S)
        silence = np.zeros(step, dtype="<i2").tobytes()
        pending = b""
        start = time.monotonic()
        n = 0
        while not self._stop.is_set():
            if time.monotonic() - (start + n * PERIOD_S) > 2 * PERIOD_S:
                start, n = time.monotonic(), 0  # late (a loaded machine): no burst to catch up
            if self.mic_gone:  # the device is gone: nothing reaches the pipe
                delay = start + n * PERIOD_S - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                n += 1
                continue
            if len(pending) < step * 2 and self._mic_queue:
                pending += np.asarray(self._mic_queue.popleft(), dtype="<i2").tobytes()
            chunk = pending[: step * 2] if pending else silence
            spoken = 0 if chunk is silence else len(chunk)
            chunk = chunk.ljust(step * 2, b"\0")
            delay = start + n * PERIOD_S - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            n += 1
            if self._mic_backlog() >= len(chunk):
                continue  # nobody reads (the stream is stopped): silence is lost, speech waits
            try:
                os.write(fd, chunk)  # one period: less than PIPE_BUF, so all or nothing
            except BlockingIOError:
                continue
            except OSError:
                return
            pending = pending[step * 2 :]
            if spoken:
                with self._lock:
                    self.unsaid_bytes = max(0, self.unsaid_bytes - spoken)

    def _read_speaker(self, fd: int) -> None:
        step = int(self.speaker_rate * PERIOD_S) * 2
        start = time.monotonic()
        n = 0
        while not self._stop.is_set():
            delay = start + n * PERIOD_S - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            n += 1
            got = b""
            while len(got) < step and not self._stop.is_set():
                ready, _, _ = select.select([fd], [], [], 0.1)
                if not ready:
                    break
                try:
                    got += os.read(fd, step - len(got))
                except OSError:
                    return
            if got:
                samples = np.frombuffer(got[: len(got) // 2 * 2], dtype="<i2").astype(np.int16)
                with self._lock:
                    self._heard.append(samples)
                    self.heard_samples += len(samples)
