"""What a running box holds at rest (issue 12, goal 6; the figures: bench/turn.py).

- Libraries only some boxes use are imported where they are used: a box with no webhook tools,
  no time zone, a config without mistakes, devices at the API's rates and no terminal never
  loads jsonschema-rs (5 MB), zoneinfo, difflib, soxr or the terminal panel.
- After starting up, the daemon gives the C heap's free pages back to the kernel.
Each runs in a fresh interpreter: this one has imported everything already.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

AT_REST = """
import sys
from pathlib import Path
import appliance.cli, appliance.daemon
from appliance.config import load_config
from appliance.tools import build_registry
from appliance.tools.builtin import time_now

class Host:  # the daemon's side of the built-in tools; not called while building
    pass

path = Path(sys.argv[1]) / "config.yaml"
path.write_text("realtime:\\n  folder_id: b1g\\ntools:\\n  state_file: %s\\n" % (path.parent / "s"))
config = load_config(path)
registry = build_registry(config, Host())
time_now()  # the get_time tool in the system's zone
print(" ".join(sorted(sys.modules)))
"""


def modules_of(program: str, *args: str) -> set[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "APPLIANCE_API_KEY": "test-key-1234"}
    result = subprocess.run(
        [sys.executable, "-c", program, *args], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_a_box_without_webhooks_loads_no_schema_engine(tmp_path):
    loaded = modules_of(AT_REST, str(tmp_path))
    assert "appliance.daemon" in loaded and "appliance.tools.webhook" in loaded
    assert (
        not {
            "jsonschema_rs",
            "jsonschema",
            "zoneinfo",
            "difflib",
            "soxr",
            "appliance.panel.terminal",
        }
        & loaded
    )


def test_the_engines_still_load_where_they_are_used(tmp_path):
    program = """
import sys
from appliance.audio.resample import StreamResampler
from appliance.tools.arguments import ArgumentChecker
from appliance.tools.builtin import time_now
StreamResampler(48000, 24000)
ArgumentChecker({"type": "object", "properties": {"n": {"pattern": "^a+$"}}}).check({"n": "aa"})
time_now("Europe/Moscow")
print(" ".join(sorted(sys.modules)))
"""
    assert {"jsonschema_rs", "zoneinfo", "soxr"} <= modules_of(program)


FRAGMENTED = """
from appliance.service.process import release_free_memory

def rss_kb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

# 64 MB of 1 kB blocks (malloc, not Python's small-object allocator), every 64th one kept:
# the heap's pages are all free but one block each, and free() cannot give them back.
blocks = [bytes(1000) for _ in range(64_000)]
kept = blocks[::64]
del blocks
before = rss_kb()
assert release_free_memory()
print(before - rss_kb())
"""


def test_free_heap_pages_go_back_to_the_kernel():
    result = subprocess.run(
        [sys.executable, "-c", FRAGMENTED],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 20_000  # kB: most of the 64 MB
