"""The terminal panel as a person meets it, in a real terminal: a tmux pane with bash in it.

tmux types the keys (``send-keys``) and shows the screen (``capture-pane``). A held key is
typed as a terminal's auto-repeat sends it: one space, the repeat delay, then a space every
33 ms. The panel runs alone (tests/terminal_harness.py, recording its button events) or inside
a whole ``appliance run`` with no sound device.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
    pytest.mark.timeout(120),
]
HARNESS = Path(__file__).parent / "terminal_harness.py"


class Tmux:
    def __init__(self, tmp: Path) -> None:
        self.socket = f"appliance-test-{os.getpid()}-{tmp.name}"[:90]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("TMUX", "APPLIANCE_"))}

    def __call__(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True, text=True, check=True, env=self.env, timeout=20,
        ).stdout  # fmt: skip

    def start(self, command: str) -> None:
        self("new-session", "-d", "-s", "t", "-x", "160", "-y", "40", command)

    def keys(self, *keys: str) -> None:
        self("send-keys", "-t", "t", *keys)

    def screen(self) -> list[str]:
        """The pane's lines with text (the empty rows below are left out)."""
        lines = self("capture-pane", "-p", "-t", "t").splitlines()
        return [line.rstrip() for line in lines if line.strip()]

    def wait_screen(self, predicate, timeout: float = 15.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            lines = self.screen()
            if predicate(lines) or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def kill(self) -> None:
        # kill-server only hangs up the panes, and a SIGHUP is a reload to `appliance run`:
        # end what runs in each pane first (TERM, then KILL), so no daemon outlives the test.
        panes = subprocess.run(
            ["tmux", "-L", self.socket, "list-panes", "-a", "-F", "#{pane_pid}"],
            capture_output=True,
            text=True,
            env=self.env,
        ).stdout.split()
        for sig in ("TERM", "KILL"):
            for pid in panes:
                subprocess.run(["pkill", f"-{sig}", "-P", pid], capture_output=True)
            if sig == "TERM":
                time.sleep(0.5)
        subprocess.run(
            ["tmux", "-L", self.socket, "kill-server"], capture_output=True, env=self.env
        )


@pytest.fixture
def tmux(tmp_path):
    t = Tmux(tmp_path)
    yield t
    t.kill()


def wait_for(path: Path, predicate, timeout: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if predicate(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def events(lines: list[str]) -> list[str]:
    return [line.split()[0] for line in lines if line.startswith("Button")]


def harness(tmux: Tmux, tmp_path: Path, *extra: str) -> Path:
    """bash in the pane, the harness started from it (a foreground job, as a person does)."""
    log = tmp_path / "events.txt"
    tmux.start("env PS1='$ ' bash --norc --noprofile")
    tmux.wait_screen(lambda lines: any(line.startswith("$") for line in lines))
    tmux.keys(f"{sys.executable} {HARNESS} {log} {' '.join(extra)}", "Enter")
    assert wait_for(log, lambda lines: "ready" in lines) == ["ready"], tmux.screen()
    return log


def hold_space(tmux: Tmux, delay_s: float, held_s: float) -> None:
    """A space held for ``held_s`` on a terminal whose repeat delay is ``delay_s``."""
    start = time.monotonic()
    tmux.keys(" ")
    at = delay_s
    while at <= held_s:
        time.sleep(max(0.0, start + at - time.monotonic()))
        tmux.keys(" ")
        at += 0.033


def test_one_held_key_is_one_turn_with_the_xorg_repeat_delay(tmux, tmp_path):
    """X.org's default repeat delay is 660 ms: the first repeat comes after the old 600 ms
    release, which split one held key into two turns."""
    log = harness(tmux, tmp_path)
    hold_space(tmux, delay_s=0.66, held_s=1.5)
    lines = wait_for(log, lambda lines: len(events(lines)) >= 2)
    time.sleep(1.2)  # a second turn would have started by now
    assert events(log.read_text().splitlines()) == ["ButtonDown", "ButtonUp"], lines
    # The delay was learned: a tap now is sent after it (plus a margin), sooner than 1 s.
    tmux.keys(" ")
    tapped = time.monotonic()
    wait_for(log, lambda lines: len(events(lines)) >= 4)
    down, up = [line.split() for line in log.read_text().splitlines()[-2:]]
    assert (down[0], up[0]) == ("ButtonDown", "ButtonUp")
    assert 0.66 < float(up[1]) - float(down[1]) < 0.98, (down, up, tapped)


def test_ctrl_z_and_fg_give_back_keypress_mode(tmux, tmp_path):
    log = harness(tmux, tmp_path)
    tmux.keys("C-z")
    screen = tmux.wait_screen(lambda lines: any("Stopped" in line for line in lines))
    assert any("Stopped" in line for line in screen), screen
    tmux.keys("echo typed-in-the-shell", "Enter")  # the shell's terminal is a normal one again
    screen = tmux.wait_screen(lambda lines: "typed-in-the-shell" in lines)
    assert "typed-in-the-shell" in screen, screen
    tmux.keys("fg", "Enter")
    tmux.wait_screen(lambda lines: bool(lines) and lines[-1].startswith("[appliance] idle"))
    time.sleep(0.3)
    tmux.keys(" ")  # one key, no Enter: only keypress (cbreak) mode delivers it
    lines = wait_for(log, lambda lines: events(lines) == ["ButtonDown", "ButtonUp"], timeout=5)
    assert events(lines) == ["ButtonDown", "ButtonUp"], tmux.screen()


def test_log_lines_never_share_the_status_line(tmux, tmp_path):
    harness(tmux, tmp_path, "--log-after", "0.5")
    screen = tmux.wait_screen(
        lambda lines: (
            any("a log line" in line for line in lines) and lines[-1].startswith("[appliance] idle")
        )
    )
    logged = [line for line in screen if "a log line" in line]
    assert logged == ["INFO appliance: a log line"], screen
    assert screen[-1].startswith("[appliance] idle"), screen  # redrawn below it


@pytest.mark.skipif(os.path.exists("/dev/snd"), reason="this machine has sound devices")
def test_a_press_without_a_sound_device_says_why_nothing_happens(tmux, tmp_path):
    """This machine's own ALSA, with no sound card (an empty ALSA configuration aborts
    libasound, so the real one is used, and the test skips where a card exists)."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "realtime:\n  folder_id: f\n  url: ws://127.0.0.1:9/\n  connect_timeout_s: 1\n"
        f"gpio:\n  enabled: false\ncontrol:\n  socket: {tmp_path / 'control.sock'}\n"
        f"tools:\n  state_file: {tmp_path / 'state.json'}\n"
    )
    tmux.start(
        "env -u ALSA_CONFIG_PATH APPLIANCE_API_KEY=k JACK_NO_START_SERVER=1 "
        f"{sys.executable} -m appliance run --config {config}; sleep 30"
    )
    screen = tmux.wait_screen(lambda lines: any("[appliance] error" in line for line in lines))
    assert any("[appliance] error" in line for line in screen), screen
    tmux.keys(" ")
    screen = tmux.wait_screen(lambda lines: any("nothing happens" in line for line in lines))
    status = [line for line in screen if "nothing happens" in line]
    assert status and "nothing happens: no microphone: " in status[-1], screen
