"""The panel: debouncer and LED patterns (pure), the GPIO button and LED, open_panel's choice.

GPIO runs on gpiozero's REAL MockFactory with MockPWMPin: that is gpiozero's own test pin
factory (no unittest.mock of gpiozero anywhere). Its pins record every state they were set to
(``pin.states``), and ``drive_low()``/``drive_high()`` press and release a button wired to
ground. The mock calls the button callbacks synchronously in whatever thread drives the pin,
so a worker thread driving it stands in for the GPIO library's thread on a Pi. The mock does
not emulate ``bounce_time``: the bounce trains here exercise our own debouncer.
"""

from __future__ import annotations

import asyncio
import heapq
import io
import itertools
import logging
import threading
import time
from types import SimpleNamespace

import pytest
from gpiozero import PWMLED, Button, Device
from gpiozero.pins.mock import MockFactory, MockPWMPin
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.config.schema import ButtonConfig, GpioConfig, LedConfig, LedPattern
from appliance.core.state_machine import ButtonDown, ButtonUp, State, led_look
from appliance.panel.button import ButtonPanel
from appliance.panel.debounce import Debouncer
from appliance.panel.led import LedPanel
from appliance.panel.led_patterns import levels
from appliance.panel.select import GpioPanel, NullPanel, open_panel

# ---- the debouncer (pure) -------------------------------------------------------------


def simulate(debounce_s: float, start: bool, gaps: list[float]) -> tuple[list, list, bool]:
    """Feed a bounce train (the pin toggles after each gap) through a Debouncer, settling
    ``debounce_s`` after every accepted change as the button panel does, until nothing is
    pending. Returns (pin edges, accepted (time, state) list, the pin's final state)."""
    edges, t, pin = [], 0.0, start
    for gap in gaps:
        t += gap
        pin = not pin
        edges.append((t, pin))

    def pin_at(when: float) -> bool:
        state = start
        for at, value in edges:
            if at <= when:
                state = value
        return state

    deb = Debouncer(debounce_s, pressed=start)
    accepted: list[tuple[float, bool]] = []
    queue = [(at, 0, i, "edge", value) for i, (at, value) in enumerate(edges)]
    heapq.heapify(queue)
    seq = len(edges)
    while queue:
        at, _, _, kind, value = heapq.heappop(queue)
        change = deb.edge(value, at) if kind == "edge" else deb.settle(pin_at(at), at)
        if change is not None:
            accepted.append((at, change))
            seq += 1
            heapq.heappush(queue, (at + debounce_s, 1, seq, "settle", None))
    return edges, accepted, pin


@settings(max_examples=300, deadline=None)
@given(
    debounce_s=st.sampled_from([0.0, 0.005, 0.03, 0.08]),
    start=st.booleans(),
    gaps=st.lists(
        st.one_of(
            st.floats(0.0001, 0.01),  # contact bounce
            st.floats(0.01, 0.3),  # real presses and releases
        ),
        min_size=1,
        max_size=40,
    ),
)
def test_debouncer_any_bounce_train_ends_in_the_pins_state(debounce_s, start, gaps):
    edges, accepted, final = simulate(debounce_s, start, gaps)
    states = [s for _, s in accepted]
    # The first real change is accepted at once, at the first edge.
    assert accepted[0] == edges[0]
    # Accepted states alternate: never two downs or two ups in a row.
    assert all(a != b for a, b in itertools.pairwise(states))
    # The final accepted state is the pin's final state: no press or release is lost.
    assert states[-1] == final
    # Accepted changes are at least debounce_s apart.
    times = [t for t, _ in accepted]
    assert all(b - a >= debounce_s - 1e-6 for a, b in itertools.pairwise(times))
    # A clean signal (no edges closer than debounce_s) passes through unchanged.
    if all(g >= debounce_s + 1e-6 for g in gaps):
        assert accepted == edges


def test_debouncer_clean_press_is_one_down_and_one_up():
    deb = Debouncer(0.03)
    out = [
        deb.edge(True, 10.0),
        deb.settle(True, 10.03),
        deb.edge(False, 10.5),
        deb.settle(False, 10.53),
    ]
    assert out == [True, None, False, None]


def test_debouncer_bounce_ending_released_is_caught_by_settle():
    deb = Debouncer(0.03)
    assert deb.edge(True, 1.0) is True
    assert [deb.edge(False, 1.002), deb.edge(True, 1.004), deb.edge(False, 1.006)] == [None] * 3
    assert deb.settle(False, 1.03) is False
    assert deb.pressed is False


def test_debouncer_stale_settle_changes_nothing():
    deb = Debouncer(0.03)
    deb.edge(True, 1.0)
    deb.edge(False, 1.05)  # accepted; the settle of the first edge comes late, at 1.06
    assert deb.settle(True, 1.06) is None
    assert deb.settle(False, 1.08) is None


def test_debouncer_rejects_negative_window():
    with pytest.raises(ValueError):
        Debouncer(-0.01)


# ---- LED patterns (pure) --------------------------------------------------------------


def runs_of_on(cycle: list[float]) -> int:
    """On-runs in a repeating cycle (a run wrapping round the end counts once)."""
    on = [v > 0 for v in cycle]
    return sum(1 for i, v in enumerate(on) if v and not on[i - 1]) or (1 if all(on) else 0)


def test_levels_off_and_steady():
    assert levels(LedPattern(pattern="off", level=1.0)) == [0.0]
    assert levels(LedPattern(pattern="steady", level=0.1)) == [0.1]
    assert levels(LedPattern(pattern="pulse", level=0.0)) == [0.0]


@pytest.mark.parametrize("period_s", [0.1, 0.5, 0.8, 1.0, 3.0, 0.37])
@pytest.mark.parametrize("level", [1.0, 0.8, 0.25])
def test_levels_pulse_is_a_smooth_fade_in_and_out(period_s, level):
    cycle = levels(LedPattern(pattern="pulse", level=level, period_s=period_s), 0.02)
    assert len(cycle) == round(period_s / 0.02)
    assert max(cycle) == pytest.approx(level, abs=1e-12)
    assert min(cycle) == 0.0 == cycle[0]
    peak = cycle.index(max(cycle))
    rise, fall = cycle[: peak + 1], cycle[peak:]
    assert rise == sorted(rise)
    assert fall == sorted(fall, reverse=True)
    assert abs(peak - len(cycle) / 2) <= 1


@pytest.mark.parametrize(
    ("period_s", "on_ticks"), [(2.0, 10), (1.0, 5), (0.5, 5), (5.0, 25), (0.2, 5)]
)
def test_levels_blink_is_one_short_flash(period_s, on_ticks):
    cycle = levels(LedPattern(pattern="blink", level=0.7, period_s=period_s), 0.02)
    assert len(cycle) == round(period_s / 0.02)
    assert runs_of_on(cycle) == 1
    assert cycle[:on_ticks] == [0.7] * on_ticks  # 10% of the period, at least 0.1 s
    assert set(cycle[on_ticks:]) == {0.0}


@pytest.mark.parametrize("period_s", [2.0, 1.0, 0.7, 0.3, 0.12])
def test_levels_triple_is_three_flashes_then_dark(period_s):
    cycle = levels(LedPattern(pattern="triple", level=1.0, period_s=period_s), 0.02)
    assert len(cycle) == round(period_s / 0.02)
    assert runs_of_on(cycle) == 3
    assert max(cycle) == 1.0 and cycle[0] == 1.0 and cycle[-1] == 0.0
    if period_s >= 1.0:  # each flash ~0.1 s, then a pause longer than the flashes
        assert cycle[:5] == [1.0] * 5 and cycle[5:10] == [0.0] * 5
        assert set(cycle[30:]) == {0.0}


def test_levels_every_default_state_pattern():
    config = LedConfig()
    for state in State:
        cycle = levels(getattr(config, led_look(state).value))
        assert cycle and all(0.0 <= v <= 1.0 for v in cycle)


# ---- the LED on mock PWM pins ---------------------------------------------------------

FAST = LedConfig(
    thinking=LedPattern(pattern="pulse", level=1.0, period_s=0.2),
    offline=LedPattern(pattern="blink", level=1.0, period_s=0.2),
    error=LedPattern(pattern="triple", level=1.0, period_s=0.8),
)


def wait_until(predicate, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.fixture
def factory():
    # gpiozero's own mock pin factory, with PWM-capable pins (a plain MockPin has no PWM).
    factory = MockFactory(pin_class=MockPWMPin)
    yield factory
    factory.reset()


@pytest.fixture
def led(factory):
    panel = LedPanel(18, FAST, pin_factory=factory, tick_s=0.01)
    yield panel
    panel.close()


def values(pin) -> list[float]:
    return [float(s.state) for s in pin.states]


def test_led_steady_levels_are_exact(factory, led):
    pin = factory.pin(18)
    led.show(State.IDLE)
    assert pin.state == 0.1
    led.show(State.LISTENING)
    assert pin.state == 1.0
    count = len(pin.states)
    time.sleep(0.05)
    assert len(pin.states) == count  # steady: nothing keeps writing


def test_led_pulse_fades_in_and_out(factory, led):
    pin = factory.pin(18)
    pin.clear_states()
    led.show(State.THINKING)
    wait_until(lambda: len(pin.states) > 25)  # more than one 20-tick cycle
    seen = values(pin)[1:]
    peak = seen.index(1.0)
    assert 0 < peak < 15
    assert seen[: peak + 1] == sorted(seen[: peak + 1])  # the fade in
    tail = seen[peak : seen.index(0.0, peak) + 1]
    assert tail == sorted(tail, reverse=True)  # the fade out, down to dark
    assert len({round(v, 3) for v in seen}) > 5  # really graded, not on/off


def test_led_blink_and_triple_flash(factory, led):
    pin = factory.pin(18)
    pin.clear_states()
    led.show(State.OFFLINE)
    wait_until(lambda: len(pin.states) >= 5)
    assert values(pin)[:5] == [0.0, 1.0, 0.0, 1.0, 0.0]

    pin.clear_states()
    led.show(State.ERROR)  # three flashes (0.1 s each, 0.1 s apart) then a 0.3 s pause
    wait_until(lambda: len(pin.states) >= 9)
    states = pin.states
    assert [float(s.state) for s in states[:9]] == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    flash_gap = states[4].timestamp  # how long the first gap lasted
    pause = states[7].timestamp  # how long the dark after the third flash lasted
    assert pause > 1.8 * flash_gap


def test_led_switching_state_replaces_the_pattern(factory, led):
    pin = factory.pin(18)
    led.show(State.THINKING)
    wait_until(lambda: len(pin.states) > 5)
    led.show(State.IDLE)
    assert pin.state == 0.1
    count = len(pin.states)
    time.sleep(0.05)
    assert len(pin.states) == count and pin.state == 0.1  # the pulse's thread is gone
    assert not [t for t in threading.enumerate() if "_copy_values" in t.name]


def test_led_same_state_again_does_not_restart(factory, led):
    led.show(State.THINKING)
    source = led._led.source
    led.show(State.THINKING)
    assert led._led.source is source


def test_led_close_turns_it_off_and_frees_the_pin(factory, led):
    pin = factory.pin(18)
    led.show(State.THINKING)
    wait_until(lambda: len(pin.states) > 3)
    led.close()
    assert pin.state == 0
    led.show(State.LISTENING)  # after close: ignored, no error
    led.close()
    PWMLED(18, pin_factory=factory).close()  # the pin is free again


# ---- the button on mock pins ----------------------------------------------------------


class Recorder:
    """on_event: records (event, thread id) and wakes the test."""

    def __init__(self) -> None:
        self.events: list = []
        self.threads: set[int] = set()
        self.changed = asyncio.Event()

    def __call__(self, event) -> None:
        self.events.append(event)
        self.threads.add(threading.get_ident())
        self.changed.set()

    async def wait_for(self, n: int, timeout: float = 2.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.events) < n:
                self.changed.clear()
                await self.changed.wait()

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events]


@pytest.fixture
async def button(factory):
    rec = Recorder()
    panel = ButtonPanel(17, 0.03, asyncio.get_running_loop(), rec, pin_factory=factory)
    yield SimpleNamespace(panel=panel, pin=factory.pin(17), rec=rec)
    panel.close()


def drive(pin, *steps, pause: float = 0.001) -> None:
    """Drive the pin through steps ("low"/"high"), ``pause`` apart (a worker thread's job)."""
    for i, step in enumerate(steps):
        if i:
            time.sleep(pause)
        getattr(pin, f"drive_{step}")()


async def test_button_press_and_release_from_the_gpio_thread(button):
    pin, rec = button.pin, button.rec
    before = time.monotonic()
    await asyncio.to_thread(pin.drive_low)
    await rec.wait_for(1)
    await asyncio.sleep(0.05)
    await asyncio.to_thread(pin.drive_high)
    await rec.wait_for(2)
    await asyncio.sleep(0.05)
    assert rec.kinds() == ["ButtonDown", "ButtonUp"]
    down, up = rec.events
    assert before <= down.at < up.at <= time.monotonic()
    assert up.at - down.at >= 0.05
    assert rec.threads == {threading.get_ident()}  # delivered in the loop, not the GPIO thread


async def test_button_press_and_release_from_the_loop_thread(button):
    panel, pin, rec = button.panel, button.pin, button.rec
    pin.drive_low()  # the mock calls back right here, in the loop's thread
    assert rec.events == []  # ... and the edge is still handed over, not handled inline
    await rec.wait_for(1)
    await asyncio.sleep(0.04)
    pin.drive_high()
    await rec.wait_for(2)
    assert rec.kinds() == ["ButtonDown", "ButtonUp"]
    assert panel.is_pressed is False


async def test_button_bouncy_press_is_one_down(button):
    pin, rec = button.pin, button.rec
    await asyncio.to_thread(drive, pin, "low", "high", "low", "high", "low")
    await asyncio.sleep(0.1)  # well past the settle
    assert rec.kinds() == ["ButtonDown"]
    await asyncio.to_thread(drive, pin, "high", "low", "high")  # a bouncy release
    await asyncio.sleep(0.1)
    assert rec.kinds() == ["ButtonDown", "ButtonUp"]


async def test_button_bounce_ending_released_gives_down_then_up(button):
    panel, pin, rec = button.panel, button.pin, button.rec
    await asyncio.to_thread(drive, pin, "low", "high", "low", "high")
    await rec.wait_for(2)
    assert rec.kinds() == ["ButtonDown", "ButtonUp"]
    down, up = rec.events
    assert up.at - down.at >= 0.03  # the release was found by the settle, debounce_s later
    await asyncio.sleep(0.1)
    assert len(rec.events) == 2 and panel.is_pressed is False


class HeldButtonPin(MockPWMPin):
    """A mock pin whose button is held down: the pull-up cannot lift it (the plain mock
    drives a pin high when its pull-up is set, so it cannot start pressed)."""

    def _set_pull(self, value):
        super()._set_pull(value)
        self.drive_low()


async def test_button_held_at_start_is_no_press(factory):
    factory.pin(17, pin_class=HeldButtonPin)
    rec = Recorder()
    panel = ButtonPanel(17, 0.03, asyncio.get_running_loop(), rec, pin_factory=factory)
    try:
        assert panel.is_pressed is True
        await asyncio.sleep(0.05)
        assert rec.events == []
        factory.pin(17).drive_high()
        await rec.wait_for(1)
        assert rec.kinds() == ["ButtonUp"]
    finally:
        panel.close()


async def test_button_handler_error_is_one_line_and_the_button_goes_on(factory, caplog):
    seen = []

    def handler(event):
        seen.append(event)
        raise RuntimeError("boom")

    panel = ButtonPanel(17, 0.0, asyncio.get_running_loop(), handler, pin_factory=factory)
    try:
        pin = factory.pin(17)
        with caplog.at_level(logging.INFO):
            pin.drive_low()
            await asyncio.sleep(0.02)
            pin.drive_high()
            await asyncio.sleep(0.02)
        assert [type(e) for e in seen] == [ButtonDown, ButtonUp]
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert [r.getMessage() for r in errors] == [
            "handling ButtonDown failed: boom",
            "handling ButtonUp failed: boom",
        ]
        assert all(r.exc_info is None for r in errors)
    finally:
        panel.close()


async def test_button_close_stops_events_and_frees_the_pin(button, factory):
    panel, pin, rec = button.panel, button.pin, button.rec
    panel.close()
    pin.drive_low()
    await asyncio.sleep(0.05)
    assert rec.events == []
    Button(17, pin_factory=factory).close()  # the pin is free again
    panel.close()  # twice is fine


# ---- open_panel -----------------------------------------------------------------------


def panel_log(caplog) -> list[tuple[int, str]]:
    return [
        (r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("appliance.panel")
    ]


async def test_open_panel_gpio(factory, caplog):
    rec = Recorder()
    with caplog.at_level(logging.INFO):
        panel = open_panel(
            GpioConfig(), ButtonConfig(), asyncio.get_running_loop(), rec, pin_factory=factory
        )
    try:
        assert isinstance(panel, GpioPanel)
        assert panel_log(caplog) == [(logging.INFO, "button on BCM 17, LED on BCM 18 (GPIO)")]
        panel.show(State.LISTENING)
        assert factory.pin(18).state == 1.0
        factory.pin(17).drive_low()
        await rec.wait_for(1)
        assert rec.kinds() == ["ButtonDown"]
    finally:
        panel.close()
    assert factory.pin(18).state == 0


async def test_open_panel_falls_back_to_null_when_gpio_is_off(caplog):
    with caplog.at_level(logging.DEBUG):
        panel = open_panel(
            GpioConfig(enabled=False),
            ButtonConfig(),
            asyncio.get_running_loop(),
            Recorder(),
            stdin=io.StringIO(),
        )
        assert isinstance(panel, NullPanel)
        panel.show(State.IDLE)
        panel.close()
    assert panel_log(caplog) == [
        (logging.INFO, "no GPIO and no terminal: the control socket is the only button"),
        (logging.DEBUG, "state: idle"),
    ]


async def test_open_panel_no_pin_factory_is_one_info_line(monkeypatch, caplog):
    # No factory given and none loadable: what a laptop gives ("Unable to load any default
    # pin factory!"); an unknown factory name forces the same BadPinFactory on any machine.
    monkeypatch.setattr(Device, "pin_factory", None)
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "no-such-factory")
    with caplog.at_level(logging.INFO):
        panel = open_panel(
            GpioConfig(),
            ButtonConfig(),
            asyncio.get_running_loop(),
            Recorder(),
            stdin=None,
            gpio_chips=lambda: False,  # a laptop: no /dev/gpiochip*
        )
    assert isinstance(panel, NullPanel) and panel.fault is None
    assert panel_log(caplog) == [
        (
            logging.INFO,
            "GPIO button and LED not used: no GPIO on this machine "
            "(Unable to find pin factory 'no-such-factory')",
        ),
        (logging.INFO, "no GPIO and no terminal: the control socket is the only button"),
    ]


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_open_panel_broken_gpio_by_hand_warns_and_frees_the_led(factory, caplog):
    # The button on the LED's pin: the LED is claimed, the button fails, the LED is let go.
    # Run by hand (stdin a terminal): a warning, and the terminal is tried as the button.
    gpio = GpioConfig(button_pin=18)
    with caplog.at_level(logging.INFO):
        panel = open_panel(
            gpio,
            ButtonConfig(),
            asyncio.get_running_loop(),
            Recorder(),
            pin_factory=factory,
            stdin=FakeTty(),
            out=io.StringIO(),
        )
    # (A StringIO is no real terminal: the terminal panel fails next, a NullPanel is left.)
    assert getattr(panel, "fault", None) is None
    (level, message), *_ = panel_log(caplog)
    assert level == logging.WARNING and message.startswith("GPIO button and LED not used: ")
    PWMLED(18, pin_factory=factory).close()


async def test_open_panel_broken_gpio_under_the_service_is_a_fault(factory, caplog):
    # Under systemd (no terminal) the same failure is a broken box: an error line, and the
    # NullPanel carries the reason for the daemon's error state.
    gpio = GpioConfig(button_pin=18)
    with caplog.at_level(logging.INFO):
        panel = open_panel(
            gpio,
            ButtonConfig(),
            asyncio.get_running_loop(),
            Recorder(),
            pin_factory=factory,
            stdin=None,
        )
    assert isinstance(panel, NullPanel)
    assert panel.fault and "18" in panel.fault
    (level, message), _ = panel_log(caplog)
    assert level == logging.ERROR
    assert message == f"GPIO button and LED cannot be used: {panel.fault}"
    PWMLED(18, pin_factory=factory).close()


async def test_open_panel_no_pin_factory_on_a_box_with_gpio_chips_is_a_fault(monkeypatch, caplog):
    # lgpio failing to load on a Pi (as when it cannot make its pipe: tests/vm/ found that)
    # leaves gpiozero with no factory at all; the chips are there, so the box is broken.
    monkeypatch.setattr(Device, "pin_factory", None)
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "no-such-factory")
    with caplog.at_level(logging.INFO):
        panel = open_panel(
            GpioConfig(),
            ButtonConfig(),
            asyncio.get_running_loop(),
            Recorder(),
            stdin=None,
            gpio_chips=lambda: True,
        )
    assert isinstance(panel, NullPanel)
    assert panel.fault == "no GPIO on this machine (Unable to find pin factory 'no-such-factory')"
    assert panel_log(caplog)[0][0] == logging.ERROR


async def test_open_panel_without_pwm_falls_back(caplog):
    factory = MockFactory()  # plain MockPin: no PWM, as on a pin factory that lacks it
    with caplog.at_level(logging.INFO):
        panel = open_panel(
            GpioConfig(),
            ButtonConfig(),
            asyncio.get_running_loop(),
            Recorder(),
            pin_factory=factory,
        )
    assert isinstance(panel, NullPanel)
    assert len([m for _, m in panel_log(caplog) if m.startswith("GPIO")]) == 1
