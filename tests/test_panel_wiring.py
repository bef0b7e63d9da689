"""docs/wiring.svg is exactly what docs/wiring.py draws, well-formed, and matches the config."""

from __future__ import annotations

import importlib.util
import xml.etree.ElementTree as ET
from pathlib import Path

from appliance.config.schema import GpioConfig

DOCS = Path(__file__).resolve().parent.parent / "docs"


def wiring():
    spec = importlib.util.spec_from_file_location("wiring", DOCS / "wiring.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_svg_is_what_the_script_draws():
    assert (DOCS / "wiring.svg").read_text(encoding="utf-8") == wiring().render(), (
        "docs/wiring.svg is out of date: run python docs/wiring.py"
    )


def test_svg_is_well_formed_and_labelled():
    root = ET.fromstring((DOCS / "wiring.svg").read_bytes())
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = " | ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    for label in ("BCM 17", "BCM 18 (PWM)", "GND", "330 Ω", "pin 11", "pin 12", "pin 9", "pin 14"):
        assert label in texts, label


def test_drawing_matches_the_config_defaults():
    w, gpio = wiring(), GpioConfig()
    assert (gpio.button_pin, gpio.led_pin) == (w.BUTTON_BCM, w.LED_BCM)
    assert (w.BUTTON_PIN, w.LED_PIN) == (11, 12)  # BCM 17 and 18 on the 40-pin header
    assert {w.BUTTON_GND, w.LED_GND} <= {n for n, (name, _) in w.HEADER.items() if name == "GND"}


def test_readme_section_links_the_picture():
    section = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    assert "(docs/wiring.svg)" in section
    for words in ("BCM 17", "physical pin 11", "BCM 18", "physical pin 12", "330 Ω"):
        assert words in section
