"""Contact debouncing, pure: which edges of a bouncy push button are real presses and releases.

A mechanical contact does not close once: for a few milliseconds it bounces, and the GPIO
library reports a train of edges (low, high, low, high, low...). gpiozero can debounce
(``bounce_time``) but its debouncing drops every edge inside the window, including the last
one, so a bounce that ENDS released can leave the software believing the button is still
held (and the box listening until ``max_listen_s``). Its mock pins do not emulate it either,
so it could not be tested. Hence our own, deliberately small logic:

- The FIRST edge after a quiet period is accepted at once: a clean press costs no latency.
- Edges within ``debounce_s`` of the last accepted one are ignored (that is the bounce).
- ``debounce_s`` after each accepted edge the caller reads the pin once more and calls
  :meth:`Debouncer.settle`: if the pin ended in the other state, that change is accepted
  then. So the final accepted state always equals the pin's real, stable state.

The class has no clock of its own: every call carries its time (monotonic seconds), which
makes it testable with any timing, including the property tests in ``tests/test_panel.py``.
"""

from __future__ import annotations

# Float slack when comparing times: a settle scheduled exactly debounce_s after an edge must
# count as "after the window" even if the subtraction rounds a hair below debounce_s.
_EPS = 1e-6


class Debouncer:
    """Accepts the edges of one contact; ``pressed`` is the state it starts from."""

    def __init__(self, debounce_s: float, *, pressed: bool = False) -> None:
        if debounce_s < 0:
            raise ValueError(f"debounce_s must be >= 0 (got {debounce_s})")
        self.debounce_s = float(debounce_s)
        self.pressed = pressed  # the accepted state
        self._last_at: float | None = None  # when the last change was accepted

    def _quiet(self, at: float) -> bool:
        return self._last_at is None or at - self._last_at >= self.debounce_s - _EPS

    def _accept(self, pressed: bool, at: float) -> bool:
        self.pressed = pressed
        self._last_at = at
        return pressed

    def edge(self, pressed: bool, at: float) -> bool | None:
        """An edge from the pin: the new accepted state, or None if the edge is ignored.

        Ignored: an edge to the state already accepted, and any edge within ``debounce_s``
        of the last accepted change. After an accepted edge, call :meth:`settle` once
        ``debounce_s`` has passed.
        """
        if pressed == self.pressed or not self._quiet(at):
            return None
        return self._accept(pressed, at)

    def settle(self, pressed_now: bool, at: float) -> bool | None:
        """The pin's state ``debounce_s`` after an accepted edge: a change, or None.

        Returns the new state if the pin ended different from the accepted state (the bounce
        ended the other way); that is an accepted change too, so settle again ``debounce_s``
        later. A settle that comes too early (an older one, overtaken by a newer accepted
        edge) changes nothing: the newer edge's own settle will look.
        """
        if pressed_now == self.pressed or not self._quiet(at):
            return None
        return self._accept(pressed_now, at)
