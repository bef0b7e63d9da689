"""``appliance run`` as systemd runs it: sd_notify through a bound socket, SIGTERM, SIGHUP,
the exit codes. The daemon is the real one (see tests/box.py); only systemd is replaced, by
the datagram socket it would listen on (never start a systemd instance here)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time

import pytest
from box import PacedBox
from conftest import SECRET


class NotifySocket:
    """What systemd would receive from the service (NOTIFY_SOCKET)."""

    def __init__(self, path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def poll(self) -> list[tuple[float, dict[str, str]]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def with_key(self, key: str) -> list[tuple[float, dict[str, str]]]:
        return [(t, m) for t, m in self.poll() if key in m]

    async def wait(self, key: str, value: str | None = None, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, m in self.with_key(key):
                if value is None or m[key] == value:
                    return m
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {key}={value} among {[m for _, m in self.messages]}")


@pytest.fixture
async def notified_box(server, tmp_path):
    notify = NotifySocket(tmp_path / "notify.sock")
    box = PacedBox(tmp_path, server, SECRET)
    await box.start(env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"})
    try:
        yield box, notify
    finally:
        await box.stop()
        notify.sock.close()
        assert "Traceback" not in box.log(), box.log()[-3000:]


async def test_ready_status_watchdog_and_stopping(notified_box):
    box, notify = notified_box
    ready = await notify.wait("READY", "1")
    assert "STATUS" in ready
    await box.wait_status(lambda s: s["connected"] and s["state"] == "idle")
    await notify.wait("STATUS", "idle, connected")
    # The watchdog is fed from the event loop every WATCHDOG_USEC / 2.
    await asyncio.sleep(1.2)
    pings = [t for t, _ in notify.with_key("WATCHDOG")]
    recent = [t for t in pings if t > pings[-1] - 1.0]
    assert 3 <= len(recent) <= 7, pings
    # The state is told as it changes.
    await box.command("press")
    await notify.wait("STATUS", "listening, connected")
    await box.command("release")
    # SIGTERM: STOPPING=1, and out within 3 s with 0.
    started = time.monotonic()
    code = await box.stop(timeout=5)
    assert time.monotonic() - started < 3.0
    assert code == 0
    await notify.wait("STOPPING", "1", timeout=1)


async def test_sighup_keeps_the_session_unless_the_realtime_keys_change(notified_box, server):
    box, notify = notified_box
    before = await box.wait_status(lambda s: s["connected"] and s["state"] == "idle")
    text = box.config.read_text()
    box.config.write_text(text.replace("  volume: 1.0\n", "  volume: 0.4\n"))
    box.proc.send_signal(signal.SIGHUP)
    await notify.wait("RELOADING", "1")
    after = await box.wait_status(lambda s: s["audio"]["volume"] == 0.4)
    assert after["session_id"] == before["session_id"]  # the session was kept
    assert len(server.connections) == 1
    # A realtime key: a new session with the new voice.
    box.config.write_text(
        box.config.read_text().replace("realtime:\n", "realtime:\n  voice: alena\n", 1)
    )
    box.proc.send_signal(signal.SIGHUP)
    renewed = await box.wait_status(
        lambda s: s["connected"] and s["session_id"] != before["session_id"], timeout=10
    )
    assert renewed["state"] == "idle"
    assert server.connections[-1].events[0]["session"]["audio"]["output"]["voice"] == "alena"
    # A broken file: the running configuration stays, and the daemon says why.
    box.config.write_text("realtime: [\n")
    box.proc.send_signal(signal.SIGHUP)
    await asyncio.sleep(0.5)
    status = await box.status()
    assert status["connected"] and status["session_id"] == renewed["session_id"]
    assert "reload failed, keeping the running configuration" in box.log()


async def test_a_refused_key_shows_the_error_state_and_keeps_retrying(server, tmp_path):
    server.refuse(401, times=1000)
    notify = NotifySocket(tmp_path / "notify.sock")
    box = PacedBox(tmp_path, server, SECRET)
    await box.start(env={"NOTIFY_SOCKET": notify.path})
    try:
        status = await box.wait_status(lambda s: s["state"] == "error", timeout=15)
        line = (await notify.wait("STATUS"))["STATUS"]
        deadline = time.monotonic() + 5
        while "retrying in" not in line and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            line = notify.with_key("STATUS")[-1][1]["STATUS"]
        assert line.startswith("error, retrying in ")
        assert line.endswith("s (the API key was refused (HTTP 401))")
        assert "refused" in status["last_error"]
        assert not status["connected"]
        assert box.log().count("the API key was refused") == 1  # once, not once per retry
    finally:
        assert await box.stop() == 0
    assert SECRET not in box.log()


async def test_a_bad_config_exits_78_with_one_line(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("realtime:\n  folder_id: b1g\n  output_rate: 44000\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appliance",
        "run",
        "--config",
        str(config),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")},
    )
    _out, err = await proc.communicate()
    assert proc.returncode == 78
    assert err.decode().strip() == (
        f"appliance: {config}:3: realtime.output_rate: must be one of 0, 8000, 16000, 22050, "
        "24000, 44100, 48000 (got 44000)"
    )


async def test_gpio_that_cannot_be_opened_under_the_service_is_the_error_state(server, tmp_path):
    # gpiozero's mock factory with plain pins (no PWM for the LED): the pins cannot be opened,
    # as on the real chip when lgpio could not make its pipe (tests/vm/ found that). Under the
    # service (stdin not a terminal) that is the error state with its reason, not an info line.
    notify = NotifySocket(tmp_path / "notify.sock")
    box = PacedBox(tmp_path, server, SECRET)
    box.config.write_text(
        box.config.read_text().replace("gpio:\n  enabled: false\n", "gpio:\n  enabled: true\n")
    )
    await box.start(env={"NOTIFY_SOCKET": notify.path, "GPIOZERO_PIN_FACTORY": "mock"})
    try:
        status = await box.wait_status(lambda s: s["connected"], timeout=15)
        assert status["state"] == "error"
        line = (await notify.wait("READY", "1"))["STATUS"]
        assert line.startswith("error, GPIO: "), line
        assert "GPIO button and LED cannot be used: " in box.log()
        # The button on the control socket does nothing while the box is broken.
        await box.command("press")
        assert (await box.status())["state"] == "error"
    finally:
        assert await box.stop() == 0
