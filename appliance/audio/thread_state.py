"""One Python thread state kept on PortAudio's callback thread while a stream runs.

Why: PyAudio wraps every callback in ``PyGILState_Ensure()`` / ``PyGILState_Release()``.
PortAudio's callback thread is not a Python thread, so it has no thread state of its own:
each Ensure creates one and each Release destroys it, every period of every stream. Measured
on this project's virtual devices (48 kHz, 20 ms periods, a microphone and a speaker with
empty callbacks): 330-430 CPU-ms per minute as PyAudio does it, 136-233 with the state kept,
i.e. about half of what a stream costs before it does any work.

How: the first callback after a start takes one more count on its own state (``pin``);
PyAudio's Release then leaves it alive, and every later callback finds it. Before the stream is
stopped, the count is given back *on that same thread*, in its next callback (``unpin``), so
PyAudio's own Release frees the state there, as CPython expects. A state is never freed from
another thread: Python 3.12+ would unbind the freeing thread's own state instead.

If the stream stops without a callback to give the count back (a device gone, a stuck stream),
the state outlives its thread: a few hundred bytes, counted in ``leaked``. Where the C API is not
reachable through ctypes (another interpreter, a free-threaded build) nothing is pinned and the
streams work as PyAudio makes them.
"""

from __future__ import annotations

import atexit
import ctypes
import sys
import threading
import weakref

_LOCKED = 0  # PyGILState_LOCKED: what Ensure returns on a thread that holds the GIL already
# A stop waits for the stream's next callback to give its state back: up to this many periods,
# and at least UNPIN_MIN_S (a loaded machine's callbacks come late); a dead device's never comes.
UNPIN_PERIODS = 3
UNPIN_MIN_S = 0.25


def unpin_wait_s(period_s: float) -> float:
    """How long a stop of a stream with ``period_s`` periods waits for its last callback."""
    return max(UNPIN_MIN_S, UNPIN_PERIODS * period_s)


def _c_api() -> tuple | None:
    if sys.implementation.name != "cpython":
        return None
    is_gil_enabled = getattr(sys, "_is_gil_enabled", None)
    if is_gil_enabled is not None and not is_gil_enabled():
        return None  # free-threaded: no GIL to save a state for
    try:
        api = ctypes.pythonapi  # PyDLL: called with the GIL held, as these must be
        ensure, release = api.PyGILState_Ensure, api.PyGILState_Release
        current = api.PyThreadState_Get
    except (AttributeError, OSError):
        return None
    ensure.argtypes, ensure.restype = [], ctypes.c_int
    release.argtypes, release.restype = [ctypes.c_int], None
    current.argtypes, current.restype = [], ctypes.c_void_p
    return ensure, release, current


_API = _c_api()
_LIVE: weakref.WeakSet[ThreadStatePin] = weakref.WeakSet()
_leaked = 0  # states that outlived their thread, in this process (the daemon's status shows it)


def leaked() -> int:
    return _leaked


@atexit.register
def _unpin_all() -> None:
    """At exit, before the interpreter frees every thread state: a stream still running (a
    crash path that skipped its stop) must not keep one it would then find freed."""
    for pin in list(_LIVE):
        if pin.pinned:
            pin.unpin(0.1)


class ThreadStatePin:
    """Keeps the callback thread's Python thread state between callbacks of one started stream.

    The callback calls ``service()`` when ``attend`` is true (one attribute test per period);
    the owner calls ``arm()`` before each start and ``unpin(timeout_s)`` before each stop, from
    any thread but the callback's.
    """

    def __init__(self) -> None:
        self.attend = False  # read by the callback: something to do on its thread
        self.enabled = _API is not None
        self.pins = 0  # states kept (one per start that called back)
        self.unpins = 0  # states given back on their own thread
        self.leaked = 0  # states that outlived their thread (no callback came to give it back)
        self._want = False
        self._pinned = 0  # address of the kept state, 0 if none
        self._lock = threading.Lock()
        self._released = threading.Event()
        _LIVE.add(self)

    @property
    def pinned(self) -> bool:
        return bool(self._pinned)

    def arm(self) -> None:
        """Keep the state of the next callback's thread (called before a start)."""
        if not self.enabled:
            return
        with self._lock:
            self._want = True
            self.attend = True

    def service(self) -> None:
        """(the callback's thread) Keep this thread's state, or give it back, as asked.
        Never blocks: if the owner holds the lock this instant, the next callback does it."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            ensure, release, current = _API  # type: ignore[misc]
            if self._want:
                if not self._pinned:
                    ensure()  # one more count: PyAudio's Release no longer frees the state
                    self._pinned = current()
                    self.pins += 1
                self.attend = False
            elif not self._pinned:
                self.attend = False
                self._released.set()
            elif current() == self._pinned:  # the count is given back where it was taken
                release(_LOCKED)  # back to PyAudio's own count: its Release frees the state
                self._pinned = 0
                self.unpins += 1
                self.attend = False
                self._released.set()
            # else: another thread calls back (an old stream's): the pinned one must do it
        finally:
            self._lock.release()

    def unpin(self, timeout_s: float) -> bool:
        """Before a stop (not on the callback's thread): have the next callback give the state
        back, waiting up to ``timeout_s`` for it. False if no callback came: the state leaks
        with its thread (counted)."""
        global _leaked
        if not self.enabled:
            return True
        with self._lock:
            self._want = False
            if not self._pinned:
                self.attend = False
                return True
            self._released.clear()
            self.attend = True
        if self._released.wait(timeout_s):
            return True
        with self._lock:
            if self._pinned:  # still kept: the thread is gone or going with it
                self._pinned = 0
                self.leaked += 1
                _leaked += 1
            self.attend = False
        return False
