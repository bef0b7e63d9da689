"""The panel on a terminal: keys for the button, a status line for the LED.

For running the appliance on a laptop or over SSH, where there is no GPIO but there is a
terminal. The keys:

- **Enter** is a button that latches: the first Enter presses it (``ButtonDown``), the next
  releases it (``ButtonUp``). With ``button.mode: toggle`` each Enter is a whole click (down and
  up at once), as the physical button gives in that mode.
- **Space, held** is hold-to-talk. A terminal sends no key-up, only the key again and again
  (auto-repeat: a first repeat after the repeat delay, 250-660 ms by desktop (X.org's default
  is 660 ms), then every ~30-40 ms). So the first space presses and each further space keeps
  it held. Until the first repeat, up to ``first_repeat_s`` (1 s) passes before a release;
  once one hold has shown the repeat delay (a first gap, then repeats close together) the
  wait is that delay plus a margin, so a tap is sent sooner. Between repeats, no space for
  ``release_after_s`` (0.4 s) releases. ``ButtonUp.at`` is that moment, when listening ends.

The "LED" is one status line on ``out`` (stderr), rewritten in place (``\\r`` and erase to the
end of the line) with a symbol per state, e.g. ``[appliance] listening ●  (release space or
press Enter to send)``. On a stream that is not a terminal each change is a line of its own.

Log lines written to the same terminal (the logging handlers on ``out``) clear the status
line first and redraw it below themselves, so the two never share a line. A press that cannot
start a turn (no sound device, offline) is explained on the status line (:meth:`explain`).

The terminal is put in cbreak mode (keys arrive one by one, unechoed; Ctrl-C still works) and
put back as it was on ``close()``; also if the constructor fails half way, and at interpreter
exit if ``close()`` was never reached. Ctrl-Z gives the shell its terminal back as it was, and
``fg`` (SIGCONT in the foreground) puts the keys back in cbreak mode and redraws the status;
continued in the background (``bg``) the keys are left alone until the next ``fg``.
Keys are read with ``loop.add_reader``: no thread. A
service started in the background of its terminal (``appliance run &``) does not take the
terminal: changing its mode would stop the process (SIGTTOU), and the keys are the shell's.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import signal
import sys
import termios
import time
import tty
from collections.abc import Callable
from typing import Any, TextIO

from appliance.core.state_machine import ButtonDown, ButtonUp, State

log = logging.getLogger(__name__)

RELEASE_AFTER_S = 0.4  # between auto-repeats (every 30-40 ms; more jitter over SSH)
FIRST_REPEAT_S = 1.0  # before the first repeat, until a hold has shown the repeat delay
_REPEAT_GAP_MAX_S = 0.15  # gaps this short after the first one are auto-repeat

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
        first_repeat_s: float = FIRST_REPEAT_S,
    ) -> None:
        self._loop = loop
        self._on_event = on_event
        self._out = out if out is not None else sys.stderr
        self._mode = mode
        self.release_after_s = release_after_s
        self.first_repeat_s = first_repeat_s
        self.repeat_delay_s: float | None = None  # learned from a held space
        self._spaces: list[float] = []  # when the spaces of this hold came (the first three)
        self._fd = (stdin if stdin is not None else sys.stdin).fileno()
        self._held_by: str | None = None  # "enter" | "space" | None
        self._release_timer: asyncio.TimerHandle | None = None
        self._state: State | None = None
        self._line = ""  # the status text on screen (without \r)
        self._reading = False
        self._signals: list[int] = []
        self._wrapped: list[tuple[logging.StreamHandler, Any]] = []
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
            self._reading = True
        except BaseException:
            self._restore_tty()
            atexit.unregister(self._restore_tty)
            raise
        self._watch_job_control()
        if self._rewrite:
            self._wrap_log_handlers()

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
        now = time.monotonic()
        if self._held_by is None:
            self._held_by = "space"
            self._spaces = [now]
            self._emit(ButtonDown(now))
        elif len(self._spaces) < 3:
            self._spaces.append(now)
            self._learn_repeat_delay()
        self._cancel_release()
        wait = self._first_wait() if len(self._spaces) == 1 else self.release_after_s
        self._release_timer = self._loop.call_later(wait, self._release)

    def _learn_repeat_delay(self) -> None:
        """A first gap, then a short one: the first was the terminal's auto-repeat delay."""
        if len(self._spaces) != 3:
            return
        first = self._spaces[1] - self._spaces[0]
        second = self._spaces[2] - self._spaces[1]
        if second <= _REPEAT_GAP_MAX_S and first > 2 * second:
            if self.repeat_delay_s is None:
                log.debug("terminal: the key-repeat delay is %.0f ms", first * 1000)
            self.repeat_delay_s = first

    def _first_wait(self) -> float:
        """How long a pressed space may wait for its first repeat."""
        if self.repeat_delay_s is None:
            return self.first_repeat_s
        return max(self.release_after_s, self.repeat_delay_s * 1.25 + 0.1)

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
        self._put(status_line(state, ascii_only=self._ascii, mode=self._mode))

    def explain(self, reason: str) -> None:
        """Say on the status line why a press did nothing (until the state changes)."""
        if self._closed or self._state is None:
            return
        fancy, plain = SYMBOLS[self._state]
        symbol = plain if self._ascii else fancy
        self._put(f"[appliance] {self._state.value} {symbol}  (nothing happens: {reason})")

    def _put(self, text: str) -> None:
        if self._rewrite:
            self._line = text
            self._write(f"\r{text}\x1b[K")
        else:
            self._write(f"{text}\n")

    def _redraw(self) -> None:
        if self._line and self._rewrite and not self._closed:
            self._write(f"\r{self._line}\x1b[K")

    def _write(self, text: str) -> None:
        try:
            self._out.write(text)
            self._out.flush()
            self._wrote = True
        except (OSError, ValueError) as e:  # a closed or broken stream: the status is cosmetic
            log.debug("status line: %s", e)

    # ---- sharing the terminal: log lines, Ctrl-Z and fg -------------------------------

    def _wrap_log_handlers(self) -> None:
        """Log handlers writing to our terminal go through :class:`_AboveStatus`."""
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and _same_tty(handler.stream, self._out):
                self._wrapped.append((handler, handler.stream))
                handler.setStream(_AboveStatus(self, handler.stream))

    def _watch_job_control(self) -> None:
        if _in_background(self._fd, unknown=True):
            return  # not our controlling terminal: no job control to follow
        for sig, handler in ((signal.SIGTSTP, self._suspend), (signal.SIGCONT, self._resume)):
            try:
                self._loop.add_signal_handler(sig, handler)
            except (RuntimeError, ValueError) as e:  # not the main thread's loop
                log.debug("terminal: no job control: %s", e)
                return
            self._signals.append(sig)

    def _suspend(self) -> None:
        """Ctrl-Z: the shell gets its terminal back as it was, then we stop."""
        if self._rewrite and self._line:
            self._write("\r\x1b[K")
        self._restore_tty()
        os.kill(os.getpid(), signal.SIGSTOP)

    def _resume(self) -> None:
        """SIGCONT: keys again when in the foreground (fg); hands off in the background (bg)."""
        if self._closed:
            return
        if _in_background(self._fd):
            if self._reading:
                self._loop.remove_reader(self._fd)  # reading would stop us (SIGTTIN)
                self._reading = False
            return
        try:
            tty.setcbreak(self._fd, termios.TCSANOW)
        except (termios.error, OSError) as e:
            log.debug("terminal: cbreak after fg: %s", e)
        if not self._reading:
            self._loop.add_reader(self._fd, self._readable)
            self._reading = True
        self._redraw()

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
        for handler, stream in self._wrapped:
            handler.setStream(stream)
        self._wrapped.clear()
        for sig in self._signals:
            with contextlib.suppress(Exception):
                self._loop.remove_signal_handler(sig)
        try:
            self._loop.remove_reader(self._fd)
        except Exception as e:  # a closed loop: nothing left to remove
            log.debug("terminal remove_reader: %s", e)
        if self._wrote and self._rewrite:
            self._write("\n")  # leave the last status visible; the shell prompt starts below
        self._restore_tty()
        atexit.unregister(self._restore_tty)


class _AboveStatus:
    """A log handler's stream on the panel's terminal: each line goes above the status line."""

    def __init__(self, panel: TerminalPanel, stream: Any) -> None:
        self._panel = panel
        self._stream = stream

    def write(self, text: str) -> int:
        panel = self._panel
        if panel._line and not panel._closed:
            self._stream.write("\r\x1b[K")
        written = self._stream.write(text)
        if text.endswith("\n"):
            self._stream.flush()
            panel._redraw()
        return written

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _same_tty(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return os.path.samestat(os.fstat(a.fileno()), os.fstat(b.fileno()))
    except (AttributeError, ValueError, OSError):
        return False


def _in_background(fd: int, unknown: bool = False) -> bool:
    """True if ``fd`` is our controlling terminal and another process group owns it.

    ``unknown`` is the answer when ``fd`` is not our controlling terminal at all.
    """
    try:
        return os.tcgetpgrp(fd) != os.getpgrp()
    except OSError:  # not our controlling terminal (a pty of our own): nothing to fight over
        return unknown


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False
