"""The push button on the Pi's header, read with gpiozero and debounced by our own logic.

How the hardware is wired::

    BCM 17 (physical pin 11) ---o  o--- GND (physical pin 9, or 6 / 14)
                                 _|_
                            momentary push button (normally open)

No resistor: the Pi's internal pull-up (``pull_up=True``) holds the pin high while the button
is open, and a press connects it to ground, pulling it low. gpiozero turns "low" into
"pressed".

Threads: gpiozero calls ``when_pressed``/``when_released`` on the GPIO library's own thread
(lgpio's callback thread on a Pi; the mock pins call them in whatever thread drives the pin).
Those callbacks do the least possible: they take the time and hand the edge to the asyncio
loop with ``loop.call_soon_threadsafe``, the one asyncio call that is safe from another
thread. They never block and never touch anything else. Everything after that runs in the
loop: the :class:`~appliance.panel.debounce.Debouncer` decides which edges count (gpiozero's
``bounce_time`` is off: it loses a bounce that ends released, see the debouncer), accepted
edges become ``ButtonDown``/``ButtonUp`` for ``on_event``, and ``debounce_s`` after each
accepted edge the pin is read once more (``settle``) so that the final state is never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from appliance.core.state_machine import ButtonDown, ButtonUp
from appliance.panel.debounce import Debouncer

log = logging.getLogger(__name__)

ButtonEvent = ButtonDown | ButtonUp


class ButtonPanel:
    """The GPIO button: ``on_event(ButtonDown(at) | ButtonUp(at))`` in the loop, debounced."""

    def __init__(
        self,
        button_pin: int,
        debounce_s: float,
        loop: asyncio.AbstractEventLoop,
        on_event: Callable[[ButtonEvent], object],
        *,
        pin_factory: Any = None,
    ) -> None:
        from gpiozero import Button  # imported here: the rest of the app runs without gpiozero

        self._loop = loop
        self._on_event = on_event
        self._closed = False
        self._settle_handle: asyncio.TimerHandle | None = None
        self._button = Button(button_pin, pull_up=True, bounce_time=None, pin_factory=pin_factory)
        # Start from the pin as it is: a button held while the service starts is no press.
        self._debouncer = Debouncer(debounce_s, pressed=bool(self._button.is_pressed))
        self._button.when_pressed = self._pressed
        self._button.when_released = self._released

    # ---- the GPIO library's thread: take the time, hand over, return ---------------------

    def _pressed(self) -> None:
        self._hand_over(True)

    def _released(self) -> None:
        self._hand_over(False)

    def _hand_over(self, pressed: bool) -> None:
        # RuntimeError: the loop is closed, the service is shutting down.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._edge, pressed, time.monotonic())

    # ---- the asyncio loop -------------------------------------------------------------

    def _edge(self, pressed: bool, at: float) -> None:
        if self._closed:
            return
        accepted = self._debouncer.edge(pressed, at)
        if accepted is not None:
            self._accepted(accepted, at)

    def _settle(self) -> None:
        self._settle_handle = None
        if self._closed:
            return
        at = time.monotonic()
        try:
            pressed_now = bool(self._button.is_pressed)
        except Exception as e:
            log.warning("cannot read the button: %s", e)
            return
        change = self._debouncer.settle(pressed_now, at)
        if change is not None:
            self._accepted(change, at)

    def _accepted(self, pressed: bool, at: float) -> None:
        if self._settle_handle is not None:
            self._settle_handle.cancel()
        self._settle_handle = self._loop.call_later(self._debouncer.debounce_s, self._settle)
        event = ButtonDown(at) if pressed else ButtonUp(at)
        try:
            self._on_event(event)
        except Exception as e:  # one clear line; the button keeps working
            log.error("handling %s failed: %s", type(event).__name__, e)
            log.debug("handler traceback", exc_info=True)

    @property
    def is_pressed(self) -> bool:
        """The debounced state."""
        return self._debouncer.pressed

    def close(self) -> None:
        """Stop reporting and release the pin; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._settle_handle is not None:
            self._settle_handle.cancel()
            self._settle_handle = None
        try:
            self._button.when_pressed = None
            self._button.when_released = None
            self._button.close()
        except Exception as e:  # closing must not fail shutdown
            log.debug("button close: %s", e)
