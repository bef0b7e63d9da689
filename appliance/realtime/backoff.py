"""Reconnect delays: exponential with jitter, capped, reset after a stable connection. Pure."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delay before the n-th consecutive reconnect attempt.

    The n-th delay is drawn from ``[0.5, 1] x min(cap, first x factor**n)``: the first retry comes
    within ``first_s`` (a blip costs half a second, not thirty), and the jitter keeps a fleet of
    boxes that lost the same Wi-Fi from reconnecting in lockstep.
    """

    first_s: float = 0.5
    cap_s: float = 30.0
    factor: float = 2.0
    stable_s: float = 30.0
    rng: Callable[[], float] = field(default=random.random, repr=False)
    attempt: int = 0

    def next_delay(self) -> float:
        base = min(self.cap_s, self.first_s * self.factor**self.attempt)
        self.attempt += 1
        return base * (0.5 + 0.5 * self.rng())

    def at_cap(self) -> float:
        """The slow retry used once the key was refused: never a tight loop."""
        return self.cap_s

    def connection_ended(self, lasted_s: float) -> None:
        """A connection that stayed up ``stable_s`` was healthy: start again from the short wait."""
        if lasted_s >= self.stable_s:
            self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0
