"""Noticing that a sound card came or went, without polling: inotify on ``/dev/snd``.

The kernel creates ``/dev/snd/controlC<N>`` and ``pcmC<N>D<M>p|c`` when a card appears (a USB
card plugged in, a driver bound) and removes them when it goes. Watching that directory costs
nothing until it changes: no thread, no timer, one file descriptor in the event loop. That
matters because the box keeps its streams stopped at rest and PortAudio enumerates devices only
when it is initialised: without this a card unplugged while idle would be noticed only at the
next press, and one plugged back in not at all until the streams were torn down.

A plug or unplug is a burst of events (a control node and several pcm nodes, a few ms apart):
:class:`SoundCardWatch` calls ``on_change`` once, ``settle_s`` after the last of them. When the
directory itself does not exist (no sound driver loaded yet) it watches its parent for it.

The pure part, :func:`inotify_events` (the events in an inotify buffer) and
:func:`is_card_node`, is tested on its own; the shell is tested with the real inotify on a
temporary directory.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import logging
import os
import struct
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

# Where the kernel puts the sound device nodes; APPLIANCE_SND_DIR moves it (the tests watch a
# directory of their own, as their sound cards are ALSA plugins with no nodes).
SND_DIR = Path(os.environ.get("APPLIANCE_SND_DIR") or "/dev/snd")

IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_WATCH_MASK = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (struct inotify_event)
_CARD_PREFIXES = ("controlC", "pcmC")


def inotify_events(buffer: bytes) -> list[tuple[int, int, str]]:
    """(watch descriptor, mask, name) of each event in an inotify read, in order.

    Names are NUL-padded in the buffer; an event without a name (about the watched directory
    itself) has ``""``.
    """
    events = []
    offset = 0
    while offset + _HEADER.size <= len(buffer):
        wd, mask, _cookie, length = _HEADER.unpack_from(buffer, offset)
        offset += _HEADER.size
        name = buffer[offset : offset + length].split(b"\0", 1)[0].decode(errors="replace")
        offset += length
        events.append((wd, mask, name))
    return events


def is_card_node(name: str) -> bool:
    """A node that comes and goes with a card (not ``seq`` or ``timer``, which stay)."""
    return name.startswith(_CARD_PREFIXES)


class _Inotify:
    """The three libc calls, through ctypes (the standard library has no inotify)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._add = libc.inotify_add_watch
        self._add.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        self._rm = libc.inotify_rm_watch
        self._rm.argtypes = (ctypes.c_int, ctypes.c_int)
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1: " + os.strerror(ctypes.get_errno()))
        self.fd = fd

    def add(self, path: Path, mask: int) -> int:
        wd = self._add(self.fd, os.fsencode(path), mask)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}")
        return wd

    def remove(self, wd: int) -> None:
        self._rm(self.fd, wd)  # fails harmlessly when the kernel already dropped it

    def close(self) -> None:
        os.close(self.fd)


class SoundCardWatch:
    """Calls ``on_change()`` (in the event loop) when a sound card appears or disappears.

    ``directory`` is ``/dev/snd`` on a box; tests give a temporary one. ``start()`` returns
    False (and logs one line) when inotify is unavailable: the box then finds a lost device at
    its next use, as it would without the watch.
    """

    def __init__(
        self,
        on_change: Callable[[], None],
        directory: Path = SND_DIR,
        settle_s: float = 0.5,
    ):
        self._on_change = on_change
        self._directory = directory
        self._settle_s = settle_s
        self._inotify: _Inotify | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wd_dir: int | None = None  # the watch on the directory
        self._wd_parent: int | None = None  # the watch on its parent, while it is missing
        self._timer: asyncio.TimerHandle | None = None
        self.changes = 0  # how many times on_change was called

    def start(self) -> bool:
        self._loop = asyncio.get_running_loop()
        try:
            self._inotify = _Inotify()
            self._arm()
        except OSError as exc:
            log.warning("sound cards coming and going are not watched: %s", exc)
            self.stop()
            return False
        self._loop.add_reader(self._inotify.fd, self._readable)
        return True

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._inotify is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._inotify.fd)
            self._inotify.close()
            self._inotify = None

    def _arm(self) -> None:
        """Watch the directory, or its parent until the directory exists."""
        assert self._inotify is not None
        try:
            self._wd_dir = self._inotify.add(self._directory, _WATCH_MASK | IN_ONLYDIR)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                raise
            self._wd_dir = None
        if self._wd_dir is None and self._wd_parent is None:
            self._wd_parent = self._inotify.add(self._directory.parent, IN_CREATE | IN_MOVED_TO)
        elif self._wd_dir is not None and self._wd_parent is not None:
            self._inotify.remove(self._wd_parent)
            self._wd_parent = None

    def _readable(self) -> None:
        assert self._inotify is not None
        try:
            buffer = os.read(self._inotify.fd, 64 * 1024)
        except BlockingIOError:
            return
        except OSError as exc:
            log.warning("the sound card watch stopped: %s", exc)
            self.stop()
            return
        changed = False
        rearm = False
        for wd, mask, name in inotify_events(buffer):
            if wd == self._wd_parent and name == self._directory.name:
                rearm = changed = True  # the directory appeared: cards may be in it already
            elif wd == self._wd_dir:
                if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED):
                    self._wd_dir = None
                    rearm = changed = True
                elif is_card_node(name):
                    changed = True
        if rearm:
            try:
                self._arm()
            except OSError as exc:
                log.warning("the sound card watch stopped: %s", exc)
                self.stop()
        if changed:
            self._settle()

    def _settle(self) -> None:
        """One call after a burst: restart the timer at each event."""
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(self._settle_s, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.changes += 1
        log.info("the sound cards changed: looking at the devices again")
        self._on_change()
