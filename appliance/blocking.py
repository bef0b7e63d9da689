"""Blocking driver calls (PortAudio, GPIO) run off the event loop, in daemon threads."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any


def in_daemon_thread(
    fn: Callable[..., Any],
    *args: Any,
    late: Callable[[Any], Any] | None = None,
    name: str = "driver-call",
) -> asyncio.Future[Any]:
    """``fn(*args)`` in a new daemon thread, as a future of the running loop.

    Why not the loop's executor: a driver call on a stuck device can block for good (a
    PortAudio stream whose writer hangs in write() cannot be closed), and an executor thread
    would then hold up the loop's shutdown and the process's exit. A result that arrives after
    the future was given up on (cancelled, timed out) is handed to ``late`` (to close it).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if future.done():
            if ok and late is not None:
                with contextlib.suppress(Exception):
                    late(value)
        elif ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def run() -> None:
        try:
            value, ok = fn(*args), True
        except BaseException as exc:
            value, ok = exc, False
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, ok, value)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future
