"""The terminal panel through a real pseudo-terminal (os.openpty): keys in, status line out.

Writing to the pty's master side is typing on the keyboard; the slave side is the service's
stdin. Enter is sent as "\\r", as a terminal sends it (the tty turns it into "\\n").
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import select
import termios
import time
from types import SimpleNamespace

import pytest
from test_panel import Recorder

from appliance.config.schema import ButtonConfig, GpioConfig
from appliance.core.state_machine import State
from appliance.panel.select import open_panel
from appliance.panel.terminal import TerminalPanel, _can_encode, status_line


@pytest.fixture
def pty():
    master, slave = os.openpty()
    stdin = os.fdopen(slave, "rb", buffering=0)
    yield SimpleNamespace(master=master, stdin=stdin)
    stdin.close()
    os.close(master)


@pytest.fixture
async def terminal(pty):
    master, stdin = pty.master, pty.stdin
    rec = Recorder()
    out = io.StringIO()
    before = termios.tcgetattr(stdin.fileno())
    panel = TerminalPanel(
        asyncio.get_running_loop(), rec, stdin=stdin, out=out, release_after_s=0.25
    )
    yield SimpleNamespace(panel=panel, master=master, rec=rec, out=out)
    panel.close()
    assert termios.tcgetattr(stdin.fileno()) == before


async def test_terminal_is_cbreak_while_open_and_restored_after(pty):
    stdin = pty.stdin
    fd = stdin.fileno()
    before = termios.tcgetattr(fd)
    assert before[3] & termios.ICANON and before[3] & termios.ECHO
    panel = TerminalPanel(asyncio.get_running_loop(), Recorder(), stdin=stdin, out=io.StringIO())
    lflag = termios.tcgetattr(fd)[3]
    assert not lflag & termios.ICANON and not lflag & termios.ECHO
    assert lflag & termios.ISIG  # Ctrl-C still stops the service
    panel.close()
    assert termios.tcgetattr(fd) == before
    panel.close()  # twice is fine


async def test_terminal_restored_when_opening_fails(pty):
    stdin = pty.stdin
    before = termios.tcgetattr(stdin.fileno())
    closed = asyncio.new_event_loop()
    closed.close()  # add_reader on a closed loop raises
    with pytest.raises(RuntimeError):
        TerminalPanel(closed, Recorder(), stdin=stdin, out=io.StringIO())
    assert termios.tcgetattr(stdin.fileno()) == before


async def test_terminal_not_taken_from_the_background(pty, monkeypatch):
    stdin = pty.stdin
    before = termios.tcgetattr(stdin.fileno())
    # As if the pty were our controlling terminal, owned by another (foreground) process group.
    monkeypatch.setattr(os, "tcgetpgrp", lambda fd: os.getpgrp() + 1)
    with pytest.raises(OSError, match="background"):
        TerminalPanel(asyncio.get_running_loop(), Recorder(), stdin=stdin, out=io.StringIO())
    assert termios.tcgetattr(stdin.fileno()) == before


async def test_terminal_enter_twice_is_down_then_up(terminal):
    master, rec = terminal.master, terminal.rec
    os.write(master, b"\r")
    await rec.wait_for(1)
    assert rec.kinds() == ["ButtonDown"]
    await asyncio.sleep(0.3)  # longer than release_after_s: Enter latches, no timeout
    assert rec.kinds() == ["ButtonDown"]
    os.write(master, b"\r")
    await rec.wait_for(2)
    assert rec.kinds() == ["ButtonDown", "ButtonUp"]
    os.write(master, b"xyz")  # other keys do nothing
    await asyncio.sleep(0.05)
    assert len(rec.events) == 2


async def test_terminal_held_space_is_one_press_released_after_silence(terminal):
    master, rec = terminal.master, terminal.rec
    for _ in range(10):  # auto-repeat: a space every 40 ms
        os.write(master, b" ")
        await asyncio.sleep(0.04)
    last_space = time.monotonic() - 0.04
    assert rec.kinds() == ["ButtonDown"]
    await rec.wait_for(2)
    assert rec.kinds() == ["ButtonDown", "ButtonUp"]
    down, up = rec.events
    assert up.at - down.at >= 0.4 + 0.25 - 0.05
    assert 0.2 <= up.at - last_space <= 0.6  # ~release_after_s after the last space


async def test_terminal_enter_releases_a_held_space(terminal):
    master, rec = terminal.master, terminal.rec
    os.write(master, b" ")
    await rec.wait_for(1)
    os.write(master, b"\r")
    await rec.wait_for(2)
    await asyncio.sleep(0.3)  # the space's release timer was cancelled
    assert rec.kinds() == ["ButtonDown", "ButtonUp"]


async def test_terminal_toggle_mode_enter_is_a_click(pty):
    master, stdin = pty.master, pty.stdin
    rec = Recorder()
    panel = TerminalPanel(
        asyncio.get_running_loop(), rec, stdin=stdin, out=io.StringIO(), mode="toggle"
    )
    try:
        os.write(master, b"\r")
        await rec.wait_for(2)
        os.write(master, b"\r")
        await rec.wait_for(4)
        assert rec.kinds() == ["ButtonDown", "ButtonUp"] * 2
    finally:
        panel.close()


async def test_terminal_status_line_on_the_given_stream(terminal):
    panel, out = terminal.panel, terminal.out
    panel.show(State.IDLE)
    panel.show(State.IDLE)  # the same state again: not rewritten
    panel.show(State.LISTENING)
    assert out.getvalue() == (
        "[appliance] idle ○  (hold space or press Enter to talk)\n"
        "[appliance] listening ●  (release space or press Enter to send)\n"
    )


async def test_terminal_status_line_rewritten_in_place_on_a_tty(pty):
    master, stdin = pty.master, pty.stdin
    out = open(stdin.fileno(), "w", encoding="utf-8", closefd=False)  # noqa: SIM115, ASYNC230 (a pty)
    panel = TerminalPanel(asyncio.get_running_loop(), Recorder(), stdin=stdin, out=out)
    try:
        panel.show(State.LISTENING)
        panel.show(State.THINKING)
    finally:
        panel.close()
        out.close()
    shown = b""
    while select.select([master], [], [], 0.2)[0]:
        shown += os.read(master, 4096)
    text = shown.decode()
    assert text.startswith("\r[appliance] listening ●  (")
    assert "\x1b[K\r[appliance] thinking ◐  (" in text
    assert text.endswith("\r\n")  # close ends the line: the prompt starts below it


def test_status_line_in_toggle_mode():
    assert status_line(State.LISTENING, mode="toggle") == (
        "[appliance] listening ●  (press space or Enter again to send)"
    )


def test_status_line_ascii_fallback():
    assert status_line(State.ERROR, ascii_only=True).startswith("[appliance] error !  (")
    ascii_out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    assert not _can_encode(ascii_out, "●")
    assert _can_encode(io.StringIO(), "●")


async def test_open_panel_terminal_when_stdin_is_a_tty(pty, caplog):
    master, stdin = pty.master, pty.stdin
    rec = Recorder()
    caplog.set_level(logging.INFO)
    panel = open_panel(
        GpioConfig(enabled=False),
        ButtonConfig(),
        asyncio.get_running_loop(),
        rec,
        stdin=stdin,
        out=io.StringIO(),
    )
    try:
        assert isinstance(panel, TerminalPanel)
        assert [r.getMessage() for r in caplog.records if r.name.startswith("appliance")] == [
            "the terminal is the button: hold space or press Enter to talk"
        ]
        os.write(master, b"\r")
        await rec.wait_for(1)
    finally:
        panel.close()
