"""LED patterns as brightness cycles, pure: what the LED does in each state.

A pattern (``gpio.led.<state>`` in the configuration: ``pattern``, ``level``, ``period_s``)
becomes ONE cycle of brightness values, one per ``tick_s``; the LED driver repeats the cycle
(``itertools.cycle``) and gpiozero writes one value per tick to the PWM pin.

The shapes follow the AIY Voice Kit's status LED, which owners of such boxes know:

- ``off``: dark. ``steady``: constant ``level`` (dim when idle, full while listening).
- ``pulse``: a smooth fade in and out (raised cosine) from 0 up to ``level`` and back,
  once per ``period_s``: "busy" (starting, thinking) or, slowly, "speaking".
- ``blink``: a short flash (10% of the period, at least 0.1 s) then dark: "offline, retrying".
- ``triple``: three short flashes (0.1 s on, 0.1 s off) then dark for the rest of the period:
  "a fault to fix". Three flashes read as "error" from across a room; one flash does not.
"""

from __future__ import annotations

import math

from appliance.config.schema import LedPattern

FLASH_S = 0.1  # one flash of blink (at least) and of triple; also the gap between triple's


def cycle_length(period_s: float, tick_s: float) -> int:
    """Ticks in one cycle: ``round(period_s / tick_s)``, at least 1."""
    if tick_s <= 0:
        raise ValueError(f"tick_s must be > 0 (got {tick_s})")
    return max(1, round(period_s / tick_s))


def levels(pattern: LedPattern, tick_s: float = 0.02) -> list[float]:
    """One cycle of brightness values (0..1) for ``pattern`` at ``tick_s`` per value."""
    level = float(pattern.level)
    kind = pattern.pattern
    if kind == "off" or level <= 0.0:
        return [0.0]
    if kind == "steady":
        return [level]
    n = cycle_length(pattern.period_s, tick_s)
    if kind == "pulse":
        return _pulse(level, n)
    if kind == "blink":
        return _blink(level, n, tick_s)
    if kind == "triple":
        return _triple(level, n, tick_s)
    raise ValueError(f"unknown LED pattern {kind!r}")


def _pulse(level: float, n: int) -> list[float]:
    """Raised cosine: 0 at the start, exactly ``level`` at tick ``n // 2``, falling after.

    Rising and falling halves are computed separately so that the peak is exactly ``level``
    even for an odd ``n``; the cycle stops one tick short of 0, so repeating it is seamless.
    """
    if n < 2:
        return [level]
    top = n // 2
    rise = [level * (1 - math.cos(math.pi * i / top)) / 2 for i in range(top + 1)]
    fall_len = n - top
    fall = [level * (1 - math.cos(math.pi * (n - i) / fall_len)) / 2 for i in range(top + 1, n)]
    return rise + fall


def _ticks(seconds: float, tick_s: float) -> int:
    return max(1, round(seconds / tick_s))


def _blink(level: float, n: int, tick_s: float) -> list[float]:
    if n < 2:
        return [level]
    on = min(_ticks(max(FLASH_S, 0.1 * n * tick_s), tick_s), max(1, n // 2))
    return [level] * on + [0.0] * (n - on)


def _triple(level: float, n: int, tick_s: float) -> list[float]:
    if n < 6:  # no room for three flashes with gaps: a plain blink says "look" at least
        return _blink(level, n, tick_s)
    # Each flash and each gap is FLASH_S, shrunk if the period is too short for three of
    # each plus a pause at least as long as one flash.
    flash = min(_ticks(FLASH_S, tick_s), max(1, n // 7))
    cycle = ([level] * flash + [0.0] * flash) * 3
    return cycle + [0.0] * (n - len(cycle))
