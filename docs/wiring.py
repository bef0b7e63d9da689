"""Draw docs/wiring.svg: the push button and the LED on the Raspberry Pi's GPIO header.

    python docs/wiring.py            # rewrites docs/wiring.svg
    python docs/wiring.py OUT.svg    # writes elsewhere

Plain Python writing SVG by hand (no dependencies), deterministic, so that a test can check
that the committed picture is exactly what this script draws (tests/test_panel_wiring.py).

The circuit (BCM numbers are config.yaml's gpio.button_pin and gpio.led_pin defaults):

- a momentary push button between BCM 17 (physical pin 11) and GND (pin 9); no resistor:
  the Pi's internal pull-up holds the pin high, a press pulls it low;
- an LED and a 330 ohm resistor in series between BCM 18 (physical pin 12) and GND (pin 14):
  the LED's long leg (anode) toward the resistor and the pin, the short leg (cathode, flat
  side of the rim) to ground. Any GND pin will do (6, 9, 14, ...).
"""

from __future__ import annotations

import sys
from pathlib import Path
from xml.sax.saxutils import escape

BUTTON_BCM, BUTTON_PIN, BUTTON_GND = 17, 11, 9
LED_BCM, LED_PIN, LED_GND = 18, 12, 14
RESISTOR = "330 Ω"

# Physical pins 1-14 of the 40-pin header: (name, kind).
HEADER = {
    1: ("3V3", "power"),
    2: ("5V", "power"),
    3: ("BCM 2 (SDA)", "gpio"),
    4: ("5V", "power"),
    5: ("BCM 3 (SCL)", "gpio"),
    6: ("GND", "ground"),
    7: ("BCM 4", "gpio"),
    8: ("BCM 14 (TXD)", "gpio"),
    9: ("GND", "ground"),
    10: ("BCM 15 (RXD)", "gpio"),
    11: (f"BCM {BUTTON_BCM}", "used"),
    12: (f"BCM {LED_BCM} (PWM)", "used"),
    13: ("BCM 27", "gpio"),
    14: ("GND", "ground"),
}

WIDTH, HEIGHT = 820, 540
PITCH = 40  # between pin centres in the drawing
LEFT_X, RIGHT_X = 380, 420  # the header's two columns: odd pins left, even pins right
TOP_Y = 110  # pins 1 and 2

FILL = {"power": "#d62828", "ground": "#000000", "gpio": "#bbbbbb", "used": "#2a9d8f"}
BUTTON_WIRE, LED_WIRE, GND_WIRE = "#1d6fd6", "#e67e22", "#222222"
FONT = "font-family='DejaVu Sans, Arial, sans-serif'"


def pin_xy(pin: int) -> tuple[int, int]:
    """Centre of a physical pin in the drawing."""
    row = (pin - 1) // 2
    return (LEFT_X if pin % 2 else RIGHT_X), TOP_Y + row * PITCH


def text(x: float, y: float, s: str, *, size: int = 13, anchor: str = "start", **attrs) -> str:
    extra = "".join(f" {k.replace('_', '-')}='{v}'" for k, v in attrs.items())
    return (
        f"<text x='{x:g}' y='{y:g}' font-size='{size}' text-anchor='{anchor}'{extra}>"
        f"{escape(s)}</text>"
    )


def line(points: list[tuple[float, float]], color: str, width: float = 3) -> str:
    d = " ".join(f"{x:g},{y:g}" for x, y in points)
    return (
        f"<polyline points='{d}' fill='none' stroke='{color}' stroke-width='{width:g}' "
        "stroke-linejoin='round' stroke-linecap='round'/>"
    )


def header() -> list[str]:
    last_y = pin_xy(14)[1]
    out = [
        f"<rect x='{LEFT_X - 22}' y='{TOP_Y - 24}' width='{RIGHT_X - LEFT_X + 44}' "
        f"height='{last_y - TOP_Y + 48}' rx='6' fill='#3d3d3d' stroke='#000'/>",
        text(
            (LEFT_X + RIGHT_X) / 2,
            TOP_Y - 34,
            "GPIO header",
            size=14,
            anchor="middle",
            font_weight="bold",
        ),
        text(
            (LEFT_X + RIGHT_X) / 2,
            last_y + 44,
            "pins 1-14 of 40; GND also on 6",
            size=11,
            anchor="middle",
            fill="#555",
        ),
    ]
    for pin, (name, kind) in HEADER.items():
        x, y = pin_xy(pin)
        paint = f"fill='{FILL[kind]}' stroke='#fff' stroke-width='1.5'"
        if pin == 1:  # pin 1 is the square pad on the board
            out.append(f"<rect x='{x - 12}' y='{y - 12}' width='24' height='24' {paint}/>")
        else:
            out.append(f"<circle cx='{x}' cy='{y}' r='13' {paint}/>")
        ink = "#fff" if kind in ("ground", "used", "power") else "#000"
        out.append(text(x, y + 4, str(pin), size=11, anchor="middle", fill=ink, font_weight="bold"))
        wired = pin in (BUTTON_PIN, BUTTON_GND, LED_PIN, LED_GND)
        # Labels outside the header; a wired pin's label sits just above its wire.
        dy = -8 if wired else 4
        weight = "bold" if wired else "normal"
        if pin % 2:
            out.append(text(x - 30, y + dy, name, anchor="end", font_weight=weight))
        else:
            out.append(text(x + 30, y + dy, name, font_weight=weight))
    return out


def button() -> list[str]:
    """Normally-open push button, drawn upright, between pin 9 (GND) and pin 11 (BCM 17)."""
    (px, gy), (_, sy) = pin_xy(BUTTON_GND), pin_xy(BUTTON_PIN)
    bx = 130  # the button's contacts are on this vertical
    top, bottom = gy + 22, sy + 58  # contact positions, spread out below the pins' rows
    return [
        line([(px - 13, gy), (bx, gy), (bx, top)], GND_WIRE),
        line(
            [(px - 13, sy), (bx + 40, sy), (bx + 40, bottom + 30), (bx, bottom + 30), (bx, bottom)],
            BUTTON_WIRE,
        ),
        f"<circle cx='{bx}' cy='{top}' r='4' fill='#fff' stroke='#000' stroke-width='2'/>",
        f"<circle cx='{bx}' cy='{bottom}' r='4' fill='#fff' stroke='#000' stroke-width='2'/>",
        # the moving contact: a bar beside the two fixed contacts, pushed by the plunger
        line([(bx - 14, top - 4), (bx - 14, bottom + 4)], "#000", 3),
        line([(bx - 14, (top + bottom) / 2), (bx - 40, (top + bottom) / 2)], "#000", 2),
        line([(bx - 40, (top + bottom) / 2 - 10), (bx - 40, (top + bottom) / 2 + 10)], "#000", 3),
        text(bx - 40, bottom + 58, "momentary push button", anchor="start", font_weight="bold"),
        text(bx - 40, bottom + 76, "no resistor: the internal pull-up", size=11, fill="#555"),
        text(
            bx - 40, bottom + 90, "holds the pin high; a press pulls it low", size=11, fill="#555"
        ),
    ]


def led() -> list[str]:
    """330 ohm resistor and LED in series, from pin 12 (BCM 18) back to pin 14 (GND)."""
    (px, sy), (_, gy) = pin_xy(LED_PIN), pin_xy(LED_GND)
    r0, r1 = 600, 660  # the resistor
    a, k = 700, 730  # the LED's anode and cathode
    end = 780
    tri = f"{a},{sy - 14} {a},{sy + 14} {k},{sy}"
    note = {"size": 11, "anchor": "middle", "fill": "#555"}
    return [
        line([(px + 13, sy), (r0, sy)], LED_WIRE),
        f"<rect x='{r0}' y='{sy - 9}' width='{r1 - r0}' height='18' fill='#f4e1c1' "
        "stroke='#000' stroke-width='2'/>",
        text((r0 + r1) / 2, sy + 28, RESISTOR, anchor="middle", font_weight="bold"),
        line([(r1, sy), (a, sy)], LED_WIRE),
        f"<polygon points='{tri}' fill='#e63946' stroke='#000' stroke-width='2'/>",
        line([(k, sy - 14), (k, sy + 14)], "#000", 3),  # the cathode bar
        line([(a + 12, sy - 16), (a + 20, sy - 28)], "#e63946", 2),  # light leaving the LED
        line([(a + 22, sy - 12), (a + 30, sy - 24)], "#e63946", 2),
        text(a - 8, sy - 18, "+", size=14, anchor="middle", font_weight="bold"),
        text(k + 10, sy - 18, "-", size=14, anchor="middle", font_weight="bold"),
        line([(k, sy), (end, sy), (end, gy), (px + 13, gy)], GND_WIRE),
        text(a - 20, gy + 40, "5 mm LED", anchor="middle", font_weight="bold"),
        text(a - 20, gy + 58, "anode (+, long leg) toward the resistor,", **note),
        text(a - 20, gy + 72, "cathode (-, short leg, flat rim) to GND", **note),
    ]


def legend() -> list[str]:
    return [
        text(24, 32, "Push button and LED on the Raspberry Pi", size=18, font_weight="bold"),
        text(
            24,
            52,
            "BCM numbers as in config.yaml (gpio.button_pin, gpio.led_pin); "
            "physical pin numbers in the circles",
            size=12,
            fill="#555",
        ),
        text(
            24,
            HEIGHT - 38,
            f"button: BCM {BUTTON_BCM} (pin {BUTTON_PIN}) and GND (pin {BUTTON_GND})",
            size=12,
            fill=BUTTON_WIRE,
            font_weight="bold",
        ),
        text(
            24,
            HEIGHT - 18,
            f"LED: BCM {LED_BCM} (pin {LED_PIN}), {RESISTOR}, LED, GND (pin {LED_GND})",
            size=12,
            fill=LED_WIRE,
            font_weight="bold",
        ),
        text(
            WIDTH - 24,
            HEIGHT - 18,
            "any GND pin will do: 6, 9, 14, ...",
            size=12,
            anchor="end",
            fill="#555",
        ),
    ]


def render() -> str:
    """The whole SVG document, as text."""
    body = [*legend(), *button(), *led(), *header()]
    return "\n".join(
        [
            "<?xml version='1.0' encoding='UTF-8'?>",
            f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' "
            f"viewBox='0 0 {WIDTH} {HEIGHT}' {FONT}>",
            "<title>Wiring: push button on BCM 17, LED on BCM 18</title>",
            f"<rect width='{WIDTH}' height='{HEIGHT}' fill='#ffffff'/>",
            *body,
            "</svg>",
            "",
        ]
    )


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).with_suffix(".svg")
    out.write_text(render(), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
