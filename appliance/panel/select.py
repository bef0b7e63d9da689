"""Which panel the appliance gets: the GPIO button and LED, the terminal, or none.

In order:

1. GPIO, when ``gpio.enabled`` and gpiozero can load a pin factory (lgpio on a Pi) and claim
   both pins. If it cannot, ONE line says why (info when this machine has no GPIO at all, as
   on a laptop; a warning when it has GPIO but the pins failed, as when another process holds
   them) and the next choice is tried. Under the service (stdin not a terminal) on a machine
   that has GPIO, a failure is a fault instead: an error line, and the :class:`NullPanel` that
   comes back carries it in ``fault`` (the daemon goes to the error state and says why: a box
   whose button does not work is broken, not merely "without GPIO").
2. The terminal (:class:`~appliance.panel.terminal.TerminalPanel`), when stdin is a TTY:
   someone is running the service by hand.
3. :class:`NullPanel`: nothing to press, nothing to light (under systemd on a box without the
   button). The control socket (``appliance press``/``release``) is then the only button;
   state changes go to the debug log.

Whatever comes back has ``show(state)`` and ``close()`` (the :class:`Panel` protocol);
``on_event`` receives ``ButtonDown``/``ButtonUp`` in the loop.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TextIO

from appliance.config.schema import ButtonConfig, GpioConfig
from appliance.core.state_machine import ButtonDown, ButtonUp, State
from appliance.panel.button import ButtonPanel
from appliance.panel.led import LedPanel

log = logging.getLogger(__name__)

OnEvent = Callable[[ButtonDown | ButtonUp], object]


class Panel(Protocol):
    def show(self, state: State) -> None: ...

    def close(self) -> None: ...


class NullPanel:
    """No button, no LED: state changes are logged at debug level.

    ``fault`` is why the GPIO button and LED could not be opened on a box that has them (None
    when there is simply no GPIO to use).
    """

    def __init__(self, fault: str | None = None) -> None:
        self.fault = fault

    def show(self, state: State) -> None:
        log.debug("state: %s", state.value)

    def close(self) -> None:
        pass


class GpioPanel:
    """The button and the LED on the Pi's header, as one panel."""

    def __init__(self, button: ButtonPanel, led: LedPanel) -> None:
        self.button = button
        self.led = led

    def show(self, state: State) -> None:
        self.led.show(state)

    def close(self) -> None:
        self.button.close()
        self.led.close()


def open_gpio(
    gpio: GpioConfig,
    button: ButtonConfig,
    loop: asyncio.AbstractEventLoop,
    on_event: OnEvent,
    *,
    pin_factory: Any = None,
) -> GpioPanel:
    """The GPIO panel; raises whatever gpiozero raises (nothing is left claimed then)."""
    # Without a factory gpiozero tries lgpio, RPi.GPIO, pigpio and its native one in turn,
    # warning (several lines each) about each that fails; open_panel's one line says it better.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        led = LedPanel(gpio.led_pin, gpio.led, pin_factory=pin_factory)
    if any(type(w.message).__name__ == "NativePinFactoryFallback" for w in caught):
        log.warning("gpiozero uses its experimental native pin driver: install python3-lgpio")
    try:
        buttons = ButtonPanel(
            gpio.button_pin, button.debounce_ms / 1000, loop, on_event, pin_factory=pin_factory
        )
    except BaseException:
        led.close()
        raise
    return GpioPanel(buttons, led)


def open_panel(
    gpio: GpioConfig,
    button: ButtonConfig,
    loop: asyncio.AbstractEventLoop,
    on_event: OnEvent,
    *,
    stdin: Any = sys.stdin,
    out: TextIO | None = None,
    pin_factory: Any = None,
    gpio_chips: Callable[[], bool] | None = None,
) -> Panel:
    """The best panel this machine has: GPIO, else the terminal, else a :class:`NullPanel`.

    ``gpio_chips()`` tells whether the machine has GPIO at all (default: a ``/dev/gpiochip*``).
    """
    fault = None
    if gpio.enabled:
        try:
            panel = open_gpio(gpio, button, loop, on_event, pin_factory=pin_factory)
        except Exception as e:
            has_gpio = not _no_gpio_here(e) or (gpio_chips or _has_gpio_chips)()
            if has_gpio and not _isatty(stdin):
                fault = _why(e)
                log.error("GPIO button and LED cannot be used: %s", fault)
            else:
                level = logging.WARNING if has_gpio else logging.INFO
                log.log(level, "GPIO button and LED not used: %s", _why(e))
        else:
            log.info("button on BCM %d, LED on BCM %d (GPIO)", gpio.button_pin, gpio.led_pin)
            return panel
    if _isatty(stdin):
        from appliance.panel.terminal import HINTS, TOGGLE_HINTS, TerminalPanel  # a TTY only

        try:
            panel = TerminalPanel(loop, on_event, stdin=stdin, out=out, mode=button.mode)
        except Exception as e:
            log.info("terminal keys not used: %s", _why(e))
        else:
            hints = TOGGLE_HINTS if button.mode == "toggle" else HINTS
            log.info("the terminal is the button: %s", hints[State.IDLE])
            return panel
    log.info("no GPIO and no terminal: the control socket is the only button")
    return NullPanel(fault)


def _no_gpio_here(e: BaseException) -> bool:
    """True when the machine has no GPIO at all (not a fault worth a warning)."""
    # gpiozero's BadPinFactory ("Unable to load any default pin factory!") is an ImportError,
    # as is gpiozero itself missing: both mean a development machine, not a broken box.
    return isinstance(e, ImportError)


def _has_gpio_chips() -> bool:
    """A GPIO chip device exists (a Pi; not a laptop or a build machine, as a rule)."""
    return any(Path("/dev").glob("gpiochip*"))


def _why(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, ImportError) and getattr(e, "name", None) == "gpiozero":
        return "gpiozero is not installed"
    if type(e).__name__ == "BadPinFactory":
        return f"no GPIO on this machine ({text})"
    return text


def _isatty(stream: Any) -> bool:
    try:
        return stream is not None and bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False
