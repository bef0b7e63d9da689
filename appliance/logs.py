"""Logging setup and a throttle that keeps repeated failures from flooding the journal."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def setup_logging(level: str = "info", stream=None) -> None:
    """Plain lines on stderr (the journal adds its own timestamps under systemd)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS.get(level, logging.INFO))
    # aiohttp's own access/client loggers are noisy at debug and say nothing we do not.
    logging.getLogger("aiohttp").setLevel(max(root.level, logging.WARNING))


class LogThrottle:
    """At most one line per kind of failure per ``interval_s``; the rest are counted.

    A box that loses Wi-Fi for a night retries hundreds of times; the journal should say so in
    a handful of lines, each telling how many were left out.
    """

    def __init__(self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, kind: str) -> int | None:
        """None if this line must be dropped; else how many of its kind were dropped before it."""
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval_s:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return None
        self._last[kind] = now
        return self._suppressed.pop(kind, 0)

    def log(self, logger: logging.Logger, level: int, kind: str, msg: str, *args) -> bool:
        dropped = self.allow(kind)
        if dropped is None:
            return False
        if dropped:
            msg += f" ({dropped} more like this in the last minute)"
        logger.log(level, msg, *args)
        return True
