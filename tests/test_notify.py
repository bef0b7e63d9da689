"""sd_notify through a real bound AF_UNIX datagram socket, as systemd's NOTIFY_SOCKET would be.

Every test runs twice: through libsystemd's sd_notify (systemd-python, what the box uses) and
through the module's own raw datagram fallback (a box without systemd-python).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
import uuid

import pytest

from appliance.service import notify as notify_mod
from appliance.service.notify import ServiceNotifier, raw_notify


@pytest.fixture(params=["libsystemd", "raw"])
def transport(request, monkeypatch):
    if request.param == "libsystemd":
        if notify_mod._sd_notify is None:
            pytest.skip("systemd-python is not installed")
    else:
        monkeypatch.setattr(notify_mod, "_sd_notify", None)
    return request.param


class Listener:
    """The systemd side: a bound datagram socket that collects messages with their arrival time."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.messages: list[tuple[float, str]] = []

    def drain(self) -> list[str]:
        """Everything queued right now, without waiting."""
        got = []
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                break
            self.messages.append((time.monotonic(), data.decode()))
            got.append(data.decode())
        return got

    async def collect(self, duration: float) -> list[tuple[float, str]]:
        """Messages arriving in the next ``duration`` seconds, stamped as they arrive."""
        loop = asyncio.get_running_loop()
        end = loop.time() + duration
        got = []
        while (left := end - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.sock, 4096), left)
            except TimeoutError:
                break
            got.append((time.monotonic(), data.decode()))
        self.messages.extend(got)
        return got

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener(tmp_path, monkeypatch, transport):
    path = str(tmp_path / "notify.sock")
    lst = Listener(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield lst
    lst.close()


def fields(message: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in message.split("\n") if line)


def test_ready_status_stopping(listener):
    n = ServiceNotifier()
    assert n.enabled
    assert n.ready("idle, connected")
    assert n.status("offline, retrying in 8 s")
    assert n.stopping()
    got = listener.drain()
    assert [fields(m) for m in got] == [
        {"READY": "1", "STATUS": "idle, connected"},
        {"STATUS": "offline, retrying in 8 s"},
        {"STOPPING": "1"},
    ]
    assert n.sent == 3


def test_status_text_stays_one_line(listener):
    ServiceNotifier().status("two\nlines")
    assert listener.drain() == ["STATUS=two lines"]


def test_reloading_carries_monotonic_usec(listener):
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    ServiceNotifier().reloading("reloading config")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    (msg,) = listener.drain()
    f = fields(msg)
    assert f["RELOADING"] == "1"
    assert f["STATUS"] == "reloading config"
    assert before <= int(f["MONOTONIC_USEC"]) <= after


def test_abstract_socket_name(monkeypatch, transport):
    name = f"appliance-test-{uuid.uuid4().hex}"
    lst = Listener("\0" + name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert ServiceNotifier().ready("up")
        assert lst.drain() == ["READY=1\nSTATUS=up"]
    finally:
        lst.close()


async def test_no_notify_socket_is_a_noop(monkeypatch, transport):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    n = ServiceNotifier()
    assert not n.enabled
    assert n.ready("x") is False
    assert n.status("x") is False
    assert n.stopping() is False
    assert n.reloading() is False
    assert n.watchdog() is False
    await asyncio.wait_for(n.run_watchdog(), 1)  # returns at once: nobody to ping
    assert n.sent == 0


def test_nobody_listening_does_not_raise(tmp_path, monkeypatch, transport):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    n = ServiceNotifier()
    assert n.ready("x") is False
    assert n.stopping() is False


def test_explicit_environ_uses_raw_datagrams(tmp_path):
    path = str(tmp_path / "n.sock")
    lst = Listener(path)
    try:
        n = ServiceNotifier({"NOTIFY_SOCKET": path})
        assert n.ready()
        assert lst.drain() == ["READY=1"]
    finally:
        lst.close()


def test_raw_notify_refuses_unknown_addresses():
    with pytest.raises(OSError):
        raw_notify("READY=1", "vsock:2:1234")


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("30000000", None, 15.0),
        ("200000", "self", 0.1),
        ("200000", "other", None),
        ("0", None, None),
        ("soon", None, None),
        ("200000", "nope", None),
    ],
)
def test_watchdog_interval(usec, pid, expected):
    env = {"NOTIFY_SOCKET": "/nonexistent"}
    if usec is not None:
        env["WATCHDOG_USEC"] = usec
    if pid == "self":
        env["WATCHDOG_PID"] = str(os.getpid())
    elif pid == "other":
        env["WATCHDOG_PID"] = str(os.getpid() + 1)
    elif pid is not None:
        env["WATCHDOG_PID"] = pid
    assert ServiceNotifier(env).watchdog_interval_s == expected


async def test_watchdog_cadence(listener, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # pings every 0.1 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = ServiceNotifier()
    assert n.watchdog_interval_s == pytest.approx(0.1)
    task = asyncio.create_task(n.run_watchdog())
    try:
        first = await listener.collect(0.2)
        assert first, "no WATCHDOG=1 at all"
        window = await listener.collect(0.55)  # the window opens after the first ping
    finally:
        task.cancel()
    assert all(msg == "WATCHDOG=1" for _, msg in first + window)
    assert 4 <= len(window) <= 6, [round(t - first[0][0], 3) for t, _ in window]
    times = [t for t, _ in first + window]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert 0.07 <= sum(gaps) / len(gaps) <= 0.15


async def test_watchdog_pid_of_another_process_sends_nothing(listener, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    n = ServiceNotifier()
    assert n.watchdog_interval_s is None
    await asyncio.wait_for(n.run_watchdog(), 1)  # returns: not our watchdog
    assert await listener.collect(0.25) == []


async def test_blocked_loop_sends_no_pings(listener, monkeypatch):
    """The pings come from the loop itself: while it is blocked, systemd hears nothing."""
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    n = ServiceNotifier()
    task = asyncio.create_task(n.run_watchdog())
    try:
        assert await listener.collect(0.25), "the watchdog did not start"
        listener.drain()
        time.sleep(0.4)  # noqa: ASYNC251 - on purpose: a hung loop, four ping deadlines pass
        assert listener.drain() == [], "a ping was sent while the loop was blocked"
        unblocked = time.monotonic()
        resumed = await listener.collect(0.15)
    finally:
        task.cancel()
    # The loop is back: the late ping goes out at once, then the normal cadence, no burst.
    assert 1 <= len(resumed) <= 3
    assert resumed[0][0] - unblocked < 0.05


async def test_watchdog_stops_when_cancelled(listener, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    n = ServiceNotifier()
    task = asyncio.create_task(n.run_watchdog())
    await listener.collect(0.12)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    listener.drain()
    assert await listener.collect(0.15) == []


def test_a_failing_sender_is_swallowed(monkeypatch, caplog):
    def boom(message, address):
        raise ConnectionRefusedError("systemd went away")

    n = ServiceNotifier({"NOTIFY_SOCKET": "/run/systemd/notify"}, sender=boom)
    with caplog.at_level("DEBUG", logger="appliance.service.notify"):
        assert n.ready("x") is False
    assert "systemd went away" in caplog.text
