"""The control socket: protocol, server robustness, client and CLI, over real Unix sockets."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.control import ControlError, ControlServer, add_parsers, protocol, request
from appliance.control.protocol import Request, parse_request

ROOT = Path(__file__).resolve().parent.parent
VALID = "valid commands: press, release, talk, status"


class Recorder:
    """A ControlHandler that records its calls; ``fail`` makes the next call raise."""

    def __init__(self) -> None:
        self.calls: list[object] = []
        self.fail: BaseException | None = None
        self.gate: asyncio.Event | None = None  # talk() waits on it when set
        self.talk_done = asyncio.Event()
        self.state: dict = {"state": "idle", "connected": True, "turns": 2}

    def _record(self, call: object) -> None:
        self.calls.append(call)
        if self.fail is not None:
            exc, self.fail = self.fail, None
            raise exc

    async def press(self) -> None:
        self._record("press")

    async def release(self) -> None:
        self._record("release")

    async def talk(self, seconds: float) -> dict:
        self._record(("talk", seconds))
        try:
            if self.gate is not None:
                await self.gate.wait()
            return {"held_s": seconds, "user": "Который час?", "answered": True}
        finally:
            self.talk_done.set()

    def status(self) -> dict:
        self._record("status")
        return self.state


@pytest.fixture
def sock(tmp_path) -> Path:
    return tmp_path / "run" / "control.sock"


@pytest.fixture
async def handler(sock):
    handler = Recorder()
    async with ControlServer(sock, handler, idle_timeout=5.0):
        yield handler


@pytest.fixture
async def loop_errors():
    """Whatever reaches the loop's exception handler (unhandled task exceptions among them)."""
    errors: list[dict] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield errors
    loop.set_exception_handler(None)


class Conn:
    """A raw client connection, to send exactly the bytes a test wants."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, path) -> Conn:
        return cls(*await asyncio.open_unix_connection(path))

    async def ask(self, line: bytes | dict) -> dict:
        await self.send(line)
        return await self.reply()

    async def send(self, line: bytes | dict) -> None:
        self.writer.write(protocol.encode(line) if isinstance(line, dict) else line + b"\n")
        await self.writer.drain()

    async def reply(self, timeout: float = 3.0) -> dict:
        async with asyncio.timeout(timeout):
            return json.loads(await self.reader.readline())

    async def at_eof(self, timeout: float = 3.0) -> bool:
        async with asyncio.timeout(timeout):
            return await self.reader.read() == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def ask_once(path, line: bytes | dict) -> dict:
    conn = await Conn.open(path)
    try:
        return await conn.ask(line)
    finally:
        await conn.close()


async def until(condition, timeout: float = 3.0) -> None:
    """Poll: what the server does after a peer hangs up has no event to wait on."""
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


# --- round trips ----------------------------------------------------------------------------


async def test_every_command_round_trips_on_one_connection(sock, handler):
    conn = await Conn.open(sock)
    assert await conn.ask({"cmd": "press"}) == {"ok": True}
    assert await conn.ask({"cmd": "release"}) == {"ok": True}
    assert await conn.ask({"cmd": "talk", "seconds": 2.5}) == {
        "ok": True,
        "turn": {"held_s": 2.5, "user": "Который час?", "answered": True},
    }
    assert await conn.ask({"cmd": "status"}) == {"ok": True, "status": handler.state}
    await conn.close()
    assert handler.calls == ["press", "release", ("talk", 2.5), "status"]


async def test_client_request_and_status_dict_pass_through(sock, handler):
    handler.state = {
        "state": "speaking",
        "link": {"connected": True, "since_s": 12.5, "session": None},
        "errors": ["a", "b"],
        "where": Path("/x"),  # not JSON: sent as its str()
    }
    reply = await request(sock, {"cmd": "status"})
    assert reply == {"ok": True, "status": {**handler.state, "where": "/x"}}
    assert await request(sock, {"cmd": "talk", "seconds": 1}) == {
        "ok": True,
        "turn": {"held_s": 1.0, "user": "Который час?", "answered": True},
    }
    assert handler.calls[-1] == ("talk", 1.0)


async def test_extra_keys_and_crlf_and_blank_lines_are_fine(sock, handler):
    conn = await Conn.open(sock)
    await conn.send(b"")  # a blank line gets no reply
    assert await conn.ask(b'{"cmd": "press", "from": "ha", "seconds": "x"}\r') == {"ok": True}
    await conn.close()
    assert handler.calls == ["press"]


async def test_last_line_without_newline_is_answered_at_eof(sock, handler):
    conn = await Conn.open(sock)
    conn.writer.write(b'{"cmd":"release"}')
    conn.writer.write_eof()
    assert await conn.reply() == {"ok": True}
    assert await conn.at_eof()
    await conn.close()
    assert handler.calls == ["release"]


# --- bad requests ---------------------------------------------------------------------------

BAD = [
    (b"hello", "bad request: not JSON (send one JSON object per line)"),
    (b"\xff\xfe{}", "bad request: not JSON (send one JSON object per line)"),
    (b'{"cmd": "press"', "bad request: not JSON (send one JSON object per line)"),
    (b"[1, 2]", "bad request: expected a JSON object, got an array"),
    (b'"press"', "bad request: expected a JSON object, got a string"),
    (b"42", "bad request: expected a JSON object, got a number"),
    (b"null", "bad request: expected a JSON object, got null"),
    (b"{}", f'bad request: missing "cmd"; {VALID}'),
    (b'{"command": "press"}', f'bad request: missing "cmd"; {VALID}'),
    (b'{"cmd": "jump"}', f'bad request: unknown cmd "jump"; {VALID}'),
    (b'{"cmd": "PRESS"}', f'bad request: unknown cmd "PRESS"; {VALID}'),
    (b'{"cmd": 3}', f"bad request: unknown cmd 3; {VALID}"),
    (b'{"cmd": ["press"]}', f'bad request: unknown cmd ["press"]; {VALID}'),
    (b'{"cmd": "talk"}', 'bad request: talk needs "seconds" (a number from 0.1 to 300)'),
    (
        b'{"cmd": "talk", "seconds": "2"}',
        'bad request: "seconds" must be a number from 0.1 to 300, got "2"',
    ),
    (
        b'{"cmd": "talk", "seconds": true}',
        'bad request: "seconds" must be a number from 0.1 to 300, got true',
    ),
    (
        b'{"cmd": "talk", "seconds": null}',
        'bad request: "seconds" must be a number from 0.1 to 300, got null',
    ),
    (
        b'{"cmd": "talk", "seconds": 0.05}',
        'bad request: "seconds" must be a number from 0.1 to 300, got 0.05',
    ),
    (
        b'{"cmd": "talk", "seconds": 301}',
        'bad request: "seconds" must be a number from 0.1 to 300, got 301',
    ),
    (
        b'{"cmd": "talk", "seconds": -1}',
        'bad request: "seconds" must be a number from 0.1 to 300, got -1',
    ),
    (
        b'{"cmd": "talk", "seconds": NaN}',
        'bad request: "seconds" must be a number from 0.1 to 300, got NaN',
    ),
    (
        b'{"cmd": "talk", "seconds": 1e999}',
        'bad request: "seconds" must be a number from 0.1 to 300, got Infinity',
    ),
    (
        b'{"cmd": "talk", "seconds": 1' + b"0" * 400 + b"}",
        'bad request: "seconds" must be a number from 0.1 to 300, got 1' + "0" * 36 + "...",
    ),
]


@pytest.mark.parametrize(("line", "message"), BAD, ids=[repr(b[:30]) for b, _ in BAD])
async def test_bad_request_gets_its_error_and_the_server_keeps_serving(
    sock, handler, line, message
):
    conn = await Conn.open(sock)
    assert await conn.ask(line) == {"ok": False, "error": message}
    # The same connection stays usable, and so does the server.
    assert await conn.ask({"cmd": "status"}) == {"ok": True, "status": handler.state}
    await conn.close()
    assert await ask_once(sock, {"cmd": "press"}) == {"ok": True}
    assert handler.calls == ["status", "press"]


async def test_oversized_line_is_refused_and_the_connection_closed(sock, handler):
    conn = await Conn.open(sock)
    await conn.send(b'{"cmd": "status", "pad": "' + b"x" * 5000 + b'"}')
    assert await conn.reply() == {"ok": False, "error": "request line too long (over 4096 bytes)"}
    assert await conn.at_eof()
    await conn.close()
    # Exactly 4096 bytes is still fine; the server is unharmed.
    line = b'{"cmd": "status"}'.ljust(4096)
    assert await ask_once(sock, line) == {"ok": True, "status": handler.state}
    assert handler.calls == ["status"]


async def test_oversized_line_without_newline_is_refused_too(sock, handler):
    conn = await Conn.open(sock)
    conn.writer.write(b"x" * 10000)
    assert await conn.reply() == {"ok": False, "error": "request line too long (over 4096 bytes)"}
    await conn.close()
    assert await ask_once(sock, {"cmd": "press"}) == {"ok": True}


# --- robustness -----------------------------------------------------------------------------


async def test_idle_client_is_dropped(sock):
    async with ControlServer(sock, Recorder(), idle_timeout=0.2) as server:
        conn = await Conn.open(sock)
        assert await conn.reply() == {"ok": False, "error": "idle for 0.2 s; goodbye"}
        assert await conn.at_eof()
        await conn.close()
        await until(lambda: not server._clients)
        # A slow sender is dropped as well: the limit is per line, not per byte.
        conn = await Conn.open(sock)
        conn.writer.write(b'{"cmd":')
        assert (await conn.reply())["error"] == "idle for 0.2 s; goodbye"
        await conn.close()


async def test_seventeenth_client_is_refused_at_once_when_all_run_a_command(sock, handler):
    handler.gate = asyncio.Event()  # every talk waits: all 16 slots run a command
    conns = [await Conn.open(sock) for _ in range(16)]
    for conn in conns:
        await conn.send({"cmd": "talk", "seconds": 1})
    await until(lambda: len(handler.calls) == 16)
    extra = await Conn.open(sock)
    assert await extra.reply(timeout=1.0) == {
        "ok": False,
        "error": "too many control clients (at most 16); try again later",
    }
    assert await extra.at_eof()
    await extra.close()
    handler.gate.set()
    for conn in conns:  # the 16 are unaffected
        assert (await conn.reply())["ok"]
    assert await conns[0].ask({"cmd": "press"}) == {"ok": True}
    await conns.pop().close()
    # A slot frees once the server sees the hang-up.
    async with asyncio.timeout(3):
        while True:
            conn = await Conn.open(sock)
            reply = await conn.ask({"cmd": "release"})
            await conn.close()
            if reply["ok"]:
                break
            await asyncio.sleep(0.02)
    for conn in conns:
        await conn.close()


@pytest.mark.parametrize("cmd", ["press", "status"])
async def test_handler_exception_is_an_internal_error_and_the_server_lives(
    sock, handler, caplog, cmd
):
    handler.fail = RuntimeError("boom\nsecond line")
    with caplog.at_level(logging.DEBUG, logger="appliance.control"):
        assert await ask_once(sock, {"cmd": cmd}) == {
            "ok": False,
            "error": "internal error: RuntimeError",
        }
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"{cmd} failed: RuntimeError: boom" in warnings[0].getMessage()
    assert warnings[0].exc_info is None
    assert any(r.levelno == logging.DEBUG and r.exc_info for r in caplog.records)
    assert await ask_once(sock, {"cmd": "press"}) == {"ok": True}


async def test_handler_control_error_is_the_users_message(sock, handler):
    handler.fail = ControlError("not connected to the speech service")
    assert await ask_once(sock, {"cmd": "talk", "seconds": 1}) == {
        "ok": False,
        "error": "not connected to the speech service",
    }


async def test_client_leaving_mid_request_is_harmless(sock, handler, loop_errors):
    handler.gate = asyncio.Event()
    conn = await Conn.open(sock)
    await conn.send({"cmd": "talk", "seconds": 3})
    await until(lambda: handler.calls)
    await conn.close()  # gone while the turn runs
    await asyncio.sleep(0.05)
    handler.gate.set()
    await handler.talk_done.wait()  # the turn was not cut short
    # Half a line, then an abrupt reset.
    conn = await Conn.open(sock)
    conn.writer.write(b'{"cmd": "pre')
    await conn.writer.drain()
    conn.writer.transport.abort()
    await asyncio.sleep(0.05)
    assert await ask_once(sock, {"cmd": "status"}) == {"ok": True, "status": handler.state}
    gc.collect()  # a never-retrieved task exception would be reported now
    await asyncio.sleep(0)
    assert loop_errors == []


# --- the socket file ------------------------------------------------------------------------


async def test_socket_file_modes_and_close_removes_it(sock):
    server = ControlServer(sock, Recorder())
    await server.start()
    assert stat.S_ISSOCK(os.lstat(sock).st_mode)
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
    assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o755
    await server.close()
    assert not sock.exists()
    await server.close()  # twice is fine


async def test_close_ends_connected_clients_and_requests_in_progress(sock):
    handler = Recorder()
    handler.gate = asyncio.Event()  # never set: the talk hangs until close()
    server = ControlServer(sock, handler)
    await server.start()
    idle, busy = await Conn.open(sock), await Conn.open(sock)
    await busy.send({"cmd": "talk", "seconds": 1})
    await until(lambda: handler.calls and len(server._clients) == 2)
    async with asyncio.timeout(3):
        await server.close()
    assert await idle.at_eof() and await busy.at_eof()
    assert handler.talk_done.is_set()  # cancelled, not leaked
    await idle.close()
    await busy.close()
    assert not sock.exists()


async def test_stale_socket_file_is_replaced(sock):
    sock.parent.mkdir()
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(sock))  # bound, never listening, closed: what a killed daemon leaves
    dead.close()
    assert sock.exists()
    async with ControlServer(sock, Recorder()):
        assert await ask_once(sock, {"cmd": "press"}) == {"ok": True}


async def test_live_server_is_not_stolen(sock, handler):
    with pytest.raises(ControlError) as info:
        await ControlServer(sock, Recorder()).start()
    assert str(info.value) == (
        f"another appliance is already running (control socket {sock} answers)"
    )
    # The first server still owns the path.
    assert await ask_once(sock, {"cmd": "press"}) == {"ok": True}
    assert handler.calls == ["press"]


async def test_a_file_that_is_not_a_socket_is_left_alone(sock):
    sock.parent.mkdir()
    sock.write_text("precious")
    with pytest.raises(ControlError, match="exists and is not a socket"):
        await ControlServer(sock, Recorder()).start()
    assert sock.read_text() == "precious"


async def test_close_leaves_a_newer_servers_socket_alone(sock):
    old = ControlServer(sock, Recorder())
    await old.start()
    os.unlink(sock)  # e.g. an operator removed it and a new daemon took the path
    async with ControlServer(sock, Recorder()):
        await old.close()
        assert await ask_once(sock, {"cmd": "press"}) == {"ok": True}


# --- the client -----------------------------------------------------------------------------


async def test_client_not_running(sock):
    message = f"the appliance is not running (no control socket at {sock})"
    with pytest.raises(ControlError) as info:
        await request(sock, {"cmd": "status"})
    assert str(info.value) == message
    sock.parent.mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))
    stale.close()
    with pytest.raises(ControlError) as info:
        await request(sock, {"cmd": "status"})
    assert str(info.value) == message


async def test_client_timeout_is_one_line(sock):
    sock.parent.mkdir()
    held: list[asyncio.StreamWriter] = []
    mute = await asyncio.start_unix_server(lambda _r, w: held.append(w), path=sock)  # no answer
    with pytest.raises(ControlError) as info:
        await request(sock, {"cmd": "status"}, timeout=0.2)
    assert str(info.value) == f"no answer from the appliance within 0.2 s (control socket {sock})"
    for writer in held:
        writer.close()
    mute.close()
    await mute.wait_closed()


# --- the CLI commands -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """What cli.build_parser does once the lead wires add_parsers in."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS)
    parser = argparse.ArgumentParser(prog="appliance", parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)
    add_parsers(sub, common)
    return parser


async def run_cmd(*argv: str) -> int:
    """A command in-process; its blocking client runs in a thread, the server in this loop."""
    args = build_parser().parse_args(list(argv))
    return await asyncio.to_thread(args.func, args)


async def test_cli_commands_in_process(sock, handler, capsys):
    s = ["--socket", str(sock)]
    assert await run_cmd("press", *s) == 0
    assert capsys.readouterr().out == "pressed\n"
    assert await run_cmd("release", *s) == 0
    assert capsys.readouterr().out == "released\n"
    assert await run_cmd("talk", "--seconds", "0.5", *s) == 0
    assert capsys.readouterr().out == (
        "talked for 0.5 s\n  held_s: 0.5\n  user: Который час?\n  answered: yes\n"
    )
    assert await run_cmd("talk", *s, "--json") == 0
    assert json.loads(capsys.readouterr().out)["held_s"] == 3.0  # the default
    handler.state = {"state": "idle", "link": {"connected": False, "retry_in_s": 2.5}, "x": None}
    assert await run_cmd("status", *s) == 0
    assert capsys.readouterr().out == (
        "state: idle\nlink:\n  connected: no\n  retry_in_s: 2.5\nx: -\n"
    )
    assert await run_cmd("status", "--json", *s) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and json.loads(out) == handler.state
    assert handler.calls == ["press", "release", ("talk", 0.5), ("talk", 3.0), "status", "status"]


async def test_cli_refusal_is_one_line_and_exit_1(sock, handler, capsys):
    handler.fail = ControlError("not connected")
    assert await run_cmd("press", "--socket", str(sock)) == 1
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "appliance: not connected\n")


async def test_cli_socket_from_the_config(tmp_path, sock, handler, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(f"realtime:\n  folder_id: testfolder\ncontrol:\n  socket: {sock}\n")
    assert await run_cmd("status", "--json", "--config", str(config)) == 0
    assert json.loads(capsys.readouterr().out) == handler.state


def test_talk_seconds_out_of_range_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["talk", "--seconds", "400", "--socket", "x"])
    assert info.value.code == 2
    assert "must be a number from 0.1 to 300, got 400" in capsys.readouterr().err


CLI_SCRIPT = textwrap.dedent(
    """
    import argparse, sys
    from appliance.control import add_parsers
    common = argparse.ArgumentParser(add_help=False)
    parser = argparse.ArgumentParser(prog="appliance")
    add_parsers(parser.add_subparsers(dest="command", required=True), common)
    args = parser.parse_args()
    sys.exit(args.func(args))
    """
)


async def run_cli(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLI_SCRIPT,
        *argv,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    async with asyncio.timeout(10):
        out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


async def test_cli_subprocess_round_trip(sock, handler):
    code, out, err = await run_cli("status", "--json", "--socket", str(sock))
    assert (code, err) == (0, "")
    assert json.loads(out) == handler.state
    code, out, err = await run_cli("press", "--socket", str(sock))
    assert (code, out, err) == (0, "pressed\n", "")
    assert handler.calls == ["status", "press"]


async def test_cli_subprocess_not_running(tmp_path):
    path = tmp_path / "nothing.sock"
    code, out, err = await run_cli("press", "--socket", str(path))
    assert (code, out) == (1, "")
    assert err == f"appliance: the appliance is not running (no control socket at {path})\n"


# --- the protocol, fuzzed -------------------------------------------------------------------


def check_parse_result(result) -> None:
    if isinstance(result, Request):
        assert result.cmd in protocol.COMMANDS
        assert (result.seconds is not None) == (result.cmd == "talk")
        if result.seconds is not None:
            assert 0.1 <= result.seconds <= 300
        return
    assert result.keys() == {"ok", "error"} and result["ok"] is False
    assert isinstance(result["error"], str) and result["error"]
    assert "\n" not in result["error"] and len(result["error"]) <= 300
    line = protocol.encode(result)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == result


@given(st.binary(max_size=5000))
def test_any_bytes_parse_to_a_request_or_an_error_reply(data):
    check_parse_result(parse_request(data))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "cmd": st.sampled_from(protocol.COMMANDS) | json_values,
            "seconds": st.floats(0, 400) | st.integers(-(10**30), 10**30) | json_values,
        },
    ).flatmap(
        lambda d: st.dictionaries(st.text(max_size=8), json_values, max_size=3).map(
            lambda extra: {**extra, **d}
        )
    )
)
def test_any_json_object_parses_to_a_request_or_an_error_reply(obj):
    result = parse_request(json.dumps(obj).encode())
    check_parse_result(result)
    if isinstance(result, Request):  # accepted exactly what the protocol allows
        assert result.payload() == {k: v for k, v in obj.items() if k in result.payload()}


def test_deeply_nested_json_is_a_plain_error():
    assert parse_request(b"[" * 4000)["error"].startswith("bad request: not JSON")
    assert parse_request(b"[" * 2000 + b"]" * 2000)["error"].startswith("bad request")
