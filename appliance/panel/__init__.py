"""The panel: the box's whole user interface, one push button and one LED.

On a Raspberry Pi the button sits between BCM 17 (physical pin 11) and ground, and the LED with
a 330 ohm resistor between BCM 18 (physical pin 12) and ground (see ``docs/wiring.svg``). The
button produces ``ButtonDown``/``ButtonUp`` events for the state machine; the LED shows the
state with one pattern per state (``gpio.led`` in the configuration).

Modules, one concern each:

- :mod:`~appliance.panel.debounce`: the pure debouncer (which edges of a bouncy contact count).
- :mod:`~appliance.panel.led_patterns`: the pure pattern -> brightness-cycle function.
- :mod:`~appliance.panel.button`: the GPIO button (gpiozero), handing edges to asyncio.
- :mod:`~appliance.panel.led`: the GPIO LED (gpiozero PWM).
- :mod:`~appliance.panel.terminal`: the same UI on a terminal (space/Enter, a status line).
- :mod:`~appliance.panel.select`: :func:`open_panel` picks GPIO, terminal or nothing.
"""
