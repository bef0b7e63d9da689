"""The status LED on the Pi's header, driven by gpiozero's PWMLED.

How the hardware is wired::

    BCM 18 (physical pin 12) ---[ 330 ohm ]---|>|--- GND (physical pin 14, or 6 / 9)
                                             anode  cathode (the short leg, flat side)

The resistor limits the current to a few mA ((3.3 V - ~2 V) / 330 ohm = ~4 mA for a red LED),
well inside what a GPIO pin may source. BCM 18 is one of the Pi's PWM pins; gpiozero dims the
LED with PWM on any pin (lgpio does it in software), so ``gpio.led_pin`` may be moved.

How it is driven: a steady level is one write of ``led.value`` (no thread). Any moving
pattern (pulse, blink, triple) is one cycle of brightness values from
:func:`~appliance.panel.led_patterns.levels`, repeated with ``itertools.cycle`` and fed to
gpiozero's ``source``: gpiozero's own thread writes one value per ``source_delay`` (one tick),
so the asyncio loop never wakes up for the LED. Setting ``source = None`` stops that thread
and waits for it (at most one tick) before the next pattern starts, so two patterns never
fight over the pin. Showing the pattern already shown does nothing: a state that is set again
(the state machine re-announcing "idle") does not restart a pulse mid-fade.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

from appliance.config.schema import LedConfig, LedPattern
from appliance.core.state_machine import State, led_look
from appliance.panel.led_patterns import levels

log = logging.getLogger(__name__)

TICK_S = 0.02  # 50 updates a second: smooth to the eye, light on a Pi Zero's CPU


class LedPanel:
    """The LED: ``show(state)`` applies that state's pattern from ``LedConfig``."""

    def __init__(
        self,
        led_pin: int,
        patterns: LedConfig,
        *,
        pin_factory: Any = None,
        tick_s: float = TICK_S,
    ) -> None:
        from gpiozero import PWMLED  # imported here: the rest of the app runs without gpiozero

        self.patterns = patterns
        self.tick_s = tick_s
        self._led = PWMLED(led_pin, pin_factory=pin_factory)
        self._shown: LedPattern | None = None
        self._closed = False
        self._failed = False

    def pattern_of(self, state: State) -> LedPattern:
        # conversing and follow_up look like listening; a config without ``muted`` (older
        # schema) shows the offline pattern for it.
        look = led_look(state).value
        return getattr(self.patterns, look, None) or self.patterns.offline

    def show(self, state: State) -> None:
        """Show ``state``'s pattern; the same pattern again is left running as it is."""
        if self._closed:
            return
        pattern = self.pattern_of(state)
        if pattern == self._shown:
            return
        self._apply(pattern)

    def off(self) -> None:
        """LED dark (until the next ``show``)."""
        if not self._closed:
            self._apply(LedPattern(pattern="off", level=0.0))

    def close(self) -> None:
        """LED dark, its thread stopped and the pin released; safe to call twice."""
        if self._closed:
            return
        self.off()
        self._closed = True
        try:
            self._led.close()
        except Exception as e:  # closing must not fail shutdown
            log.debug("LED close: %s", e)

    def _apply(self, pattern: LedPattern) -> None:
        try:
            self._led.source = None  # stops and joins the previous pattern's thread
            cycle = levels(pattern, self.tick_s)
            if len(cycle) == 1:
                self._led.value = cycle[0]
            else:
                self._led.source_delay = self.tick_s
                self._led.source = itertools.cycle(cycle)
        except Exception as e:
            # The LED is only a display: report once, keep the appliance running.
            if not self._failed:
                log.warning("LED on the GPIO does not work: %s", e)
                self._failed = True
            self._shown = None
            return
        self._shown = pattern
