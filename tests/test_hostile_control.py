"""The control socket under the attacks of issue 13, item 5, over real Unix sockets.

Sixteen clients (the limit) that never read their replies, that keep the line alive with blank
lines, or that say nothing at all: whatever they do, a new client's ``status`` is answered
within 1 s. The server runs with its production limits (16 clients, 30 s idle).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest

from appliance.control import ControlServer, protocol

LIMIT = 16


class Handler:
    def __init__(self) -> None:
        self.gate = asyncio.Event()
        # A large status: sixteen clients that do not read fill their socket buffers soon.
        self.state = {"state": "idle", "padding": "x" * 4000}

    async def press(self) -> None:
        pass

    async def release(self) -> None:
        pass

    async def talk(self, seconds: float) -> dict:
        await self.gate.wait()
        return {}

    def status(self) -> dict:
        return self.state


@pytest.fixture
def sock(tmp_path):
    return tmp_path / "control.sock"


@pytest.fixture
async def server(sock):
    async with ControlServer(sock, Handler()) as server:
        yield server


async def open_conn(sock):
    return await asyncio.open_unix_connection(sock)


async def status_within(sock, seconds: float = 1.0) -> dict:
    """A new client's status reply; fails if it takes longer than ``seconds``."""
    started = time.monotonic()
    reader, writer = await open_conn(sock)
    try:
        writer.write(protocol.encode({"cmd": "status"}))
        await writer.drain()
        async with asyncio.timeout(seconds):
            reply = json.loads(await reader.readline())
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    assert time.monotonic() - started < seconds
    return reply


async def close_all(conns) -> None:
    for _, writer in conns:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def until(condition, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def test_clients_that_never_read_their_replies_lock_nobody_out(sock, server):
    conns = [await open_conn(sock) for _ in range(LIMIT)]
    for _, writer in conns:  # requests, and never a read: the replies pile up
        writer.write(protocol.encode({"cmd": "status"}) * 300)
    await until(lambda: len(server._clients) == LIMIT)
    await asyncio.sleep(0.5)  # the server's writes to them are stuck by now
    for _ in range(3):
        reply = await status_within(sock)
        assert reply["ok"] and reply["status"]["state"] == "idle"
    await close_all(conns)


async def test_a_reply_nobody_reads_times_out_and_frees_the_slot(sock):
    async with ControlServer(sock, Handler(), write_timeout=0.3) as server:
        _, writer = await open_conn(sock)
        writer.write(protocol.encode({"cmd": "status"}) * 300)
        await until(lambda: len(server._clients) == 1)
        await until(lambda: not server._clients, timeout=3.0)
        await close_all([(None, writer)])


async def test_blank_lines_do_not_keep_a_slot(sock):
    async with ControlServer(sock, Handler(), idle_timeout=0.5) as server:
        reader, writer = await open_conn(sock)
        started = time.monotonic()
        for _ in range(30):  # 1.5 s of blank lines, one every 50 ms
            writer.write(b"\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            if not server._clients and time.monotonic() - started > 0.1:
                break
        assert json.loads(await reader.readline()) == {
            "ok": False,
            "error": "idle for 0.5 s; goodbye",
        }
        assert time.monotonic() - started < 1.2
        await close_all([(reader, writer)])


async def test_sixteen_clients_typing_blank_lines_lock_nobody_out(sock, server):
    conns = [await open_conn(sock) for _ in range(LIMIT)]
    await until(lambda: len(server._clients) == LIMIT)

    async def keep_alive() -> None:
        while True:
            for _, writer in conns:
                writer.write(b"\n")
            await asyncio.sleep(0.05)

    typing = asyncio.create_task(keep_alive())
    try:
        for _ in range(3):
            assert (await status_within(sock))["ok"]
    finally:
        typing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await typing
        await close_all(conns)


async def test_sixteen_silent_clients_lock_nobody_out(sock, server):
    conns = [await open_conn(sock) for _ in range(LIMIT)]
    await until(lambda: len(server._clients) == LIMIT)
    assert (await status_within(sock))["ok"]
    # The one dropped was the one idle the longest: the first to connect.
    assert await asyncio.wait_for(conns[0][0].read(), 1.0) == b""
    await close_all(conns)


async def test_a_client_that_runs_a_command_is_never_dropped_for_a_newcomer(sock, server):
    talker = await open_conn(sock)
    talker[1].write(protocol.encode({"cmd": "talk", "seconds": 1}))
    await talker[1].drain()
    await until(lambda: any(c.running for c in server._clients.values()))
    others = [await open_conn(sock) for _ in range(LIMIT - 1)]
    await until(lambda: len(server._clients) == LIMIT)
    for _ in range(LIMIT + 2):  # more newcomers than idle slots
        assert (await status_within(sock))["ok"]
    server.handler.gate.set()
    reply = json.loads(await asyncio.wait_for(talker[0].readline(), 2.0))
    assert reply == {"ok": True, "turn": {}}
    await close_all([talker, *others])
