"""The panel on a terminal: keys for the button, a status line for the LED.

For running the appliance on a laptop or over SSH, where there is no GPIO but there is a
terminal. The keys:

- **Enter** is a button that latches: the first Enter presses it (``ButtonDown``), the next
  releases it (``ButtonUp``). With ``button.mode: toggle`` each Enter is a whole click (down and
  up at once), as the physical button gives in that mode.
- **Space, held** is hold-to-talk. A terminal sends no key-up, only the key again and again
  (auto-repeat: a first repeat after ~500 ms, then every ~30-40 ms). So the first space
  presses, each further space keeps it held, and no space for ``release_after_s`` (0.6 s,
  longer than the usual 500 ms repeat delay) releases. The release therefore comes 0.6 s after
  the key is let go; ``ButtonUp.at`` is that moment, when listening really ends.

The "LED" is one status line on ``out`` (stderr), rewritten in place (``\\r`` and erase to the
end of the line) with a symbol per state, e.g. ``[appliance] listening ●  (release space or
press Enter to send)``. On a stream that is not a terminal each change is a line of its own.

The terminal is put in cbreak mode (keys arrive one by one, unechoed; Ctrl-C still works) and
put back as it was on ``close()``; also if the constructor fails half way, and at interpreter
exit if ``close()`` was never reached. Keys are read with ``loop.add_reader``: no thread. A
service started in the background of its terminal (``appliance run &``) does not take the
terminal: changing its mode would stop the process (SIGTTOU), and the keys are the shell's.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
import termios
import time
import tty
from collections.abc import Callable
from typing import Any, TextIO

from appliance.core.state_machine import ButtonDown, ButtonUp, State

log = logging.getLogger(__name__)

RELEASE_AFTER_S = 0.6

SYMBOLS = {
    State.STARTING: ("◌", "..."),
    State.IDLE: ("○", "o"),
    State.LISTENING: ("●", "*"),
    State.THINKING: ("◐", "~"),
    State.SPEAKING: ("♪", ">"),
    State.OFFLINE: ("✕", "x"),
    State.ERROR: ("⚠", "!"),
    State.CONVERSING: ("●", "*"),
    State.MUTED: ("◍", "m"),
    State.FOLLOW_UP: ("●", "*"),
}

HINTS = {
    State.STARTING: "starting up",
    State.IDLE: "hold space or press Enter to talk",
    State.LISTENING: "release space or press Enter to send",
    State.THINKING: "waiting for the answer; press to interrupt",
    State.SPEAKING: "press to interrupt",
    State.OFFLINE: "not connected; retrying",
    State.ERROR: "a fault to fix: see the log",
    State.CONVERSING: "just speak; press to mute, hold to end the conversation",
    State.MUTED: "muted; press to unmute, hold to end the conversation",
    State.FOLLOW_UP: "ask a follow-up question, or press to talk",
}


# With button.mode: toggle a press starts and the next press ends: no holding.
TOGGLE_HINTS = {
    **HINTS,
    State.IDLE: "press space or Enter to talk",
    State.LISTENING: "press space or Enter again to send",
}


def status_line(state: State, *, ascii_only: bool = False, mode: str = "hold") -> str:
    """The status text for ``state``, without the carriage return."""
    fancy, plain = SYMBOLS[state]
    symbol = plain if ascii_only else fancy
    hint = (TOGGLE_HINTS if mode == "toggle" else HINTS)[state]
    return f"[appliance] {state.value} {symbol}  ({hint})"


def _can_encode(out: TextIO, text: str) -> bool:
    encoding = getattr(out, "encoding", None)
    if not encoding:  # an in-memory text stream (io.StringIO) takes any text
        return True
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


class TerminalPanel:
    """Keys on ``stdin`` (a TTY) as the button, a status line on ``out`` as the LED."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_event: Callable[[ButtonDown | ButtonUp], object],
        *,
        stdin: Any = None,
        out: TextIO | None = None,
        mode: str = "hold",
        release_after_s: float = RELEASE_AFTER_S,
    ) -> None:
        self._loop = loop
        self._on_event = on_event
        self._out = out if out is not None else sys.stderr
        self._mode = mode
        self.release_after_s = release_after_s
        self._fd = (stdin if stdin is not None else sys.stdin).fileno()
        self._held_by: str | None = None  # "enter" | "space" | None
        self._release_timer: asyncio.TimerHandle | None = None
        self._state: State | None = None
        self._wrote = False
        self._closed = False
        self._rewrite = _isatty(self._out)
        self._ascii = not _can_encode(self._out, "".join(s for s, _ in SYMBOLS.values()))

        self._saved = termios.tcgetattr(self._fd)  # raises termios.error if not a terminal
        if _in_background(self._fd):
            # Changing the mode of a terminal we do not own stops us (SIGTTOU), and its keys
            # belong to the shell anyway.
            raise OSError("the service runs in the background of its terminal")
        tty.setcbreak(self._fd, termios.TCSANOW)
        try:
            atexit.register(self._restore_tty)
            loop.add_reader(self._fd, self._readable)
        except BaseException:
            self._restore_tty()
            atexit.unregister(self._restore_tty)
            raise

    def __enter__(self) -> TerminalPanel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- keys -------------------------------------------------------------------------

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 1024)
        except BlockingIOError:
            return
        except OSError as e:
            data = b""
            log.debug("terminal read: %s", e)
        if not data:  # the terminal went away (EOF / hang-up): stop reading it
            self._loop.remove_reader(self._fd)
            log.info("the terminal closed; the terminal button is off")
            return
        previous = b""
        for byte in data:
            key = bytes([byte])
            if key in (b"\r", b"\n"):
                if not (key == b"\n" and previous == b"\r"):  # CR LF is one Enter
                    self._enter()
            elif key == b" ":
                self._space()
            previous = key

    def _enter(self) -> None:
        if self._mode == "toggle":  # a click: the machine toggles on each ButtonDown
            self._release()  # a space still held lets go first
            now = time.monotonic()
            self._emit(ButtonDown(now))
            self._emit(ButtonUp(now))
            return
        if self._held_by is None:
            self._held_by = "enter"
            self._emit(ButtonDown(time.monotonic()))
        else:  # Enter releases whatever holds the button, space included
            self._release()

    def _space(self) -> None:
        if self._held_by == "enter":
            return
        if self._held_by is None:
            self._held_by = "space"
            self._emit(ButtonDown(time.monotonic()))
        self._cancel_release()
        self._release_timer = self._loop.call_later(self.release_after_s, self._release)

    def _release(self) -> None:
        self._cancel_release()
        if self._held_by is not None and not self._closed:
            self._held_by = None
            self._emit(ButtonUp(time.monotonic()))

    def _cancel_release(self) -> None:
        if self._release_timer is not None:
            self._release_timer.cancel()
            self._release_timer = None

    def _emit(self, event: ButtonDown | ButtonUp) -> None:
        try:
            self._on_event(event)
        except Exception as e:  # one clear line; the keys keep working
            log.error("handling %s failed: %s", type(event).__name__, e)
            log.debug("handler traceback", exc_info=True)

    # ---- the "LED" --------------------------------------------------------------------

    def show(self, state: State) -> None:
        """Rewrite the status line for ``state`` (nothing if it is already shown)."""
        if self._closed or state is self._state:
            return
        self._state = state
        text = status_line(state, ascii_only=self._ascii, mode=self._mode)
        self._write(f"\r{text}\x1b[K" if self._rewrite else f"{text}\n")

    def _write(self, text: str) -> None:
        try:
            self._out.write(text)
            self._out.flush()
            self._wrote = True
        except (OSError, ValueError) as e:  # a closed or broken stream: the status is cosmetic
            log.debug("status line: %s", e)

    # ---- closing ----------------------------------------------------------------------

    def _restore_tty(self) -> None:
        try:
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
        except (termios.error, OSError) as e:
            log.debug("restoring the terminal: %s", e)

    def close(self) -> None:
        """Stop reading keys, end the status line, restore the terminal; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._cancel_release()
        try:
            self._loop.remove_reader(self._fd)
        except Exception as e:  # a closed loop: nothing left to remove
            log.debug("terminal remove_reader: %s", e)
        if self._wrote and self._rewrite:
            self._write("\n")  # leave the last status visible; the shell prompt starts below
        self._restore_tty()
        atexit.unregister(self._restore_tty)


def _in_background(fd: int) -> bool:
    """True if ``fd`` is our controlling terminal and another process group owns it."""
    try:
        return os.tcgetpgrp(fd) != os.getpgrp()
    except OSError:  # not our controlling terminal (a pty of our own): nothing to fight over
        return False


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False
