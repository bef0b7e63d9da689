"""Hostile configuration files (issue 13, items 6-8): one config error line each, exit 78.

Each runs ``appliance check`` in a subprocess with a memory cap and a time limit, so an attack
that still worked would fail the test (out of memory, or killed) instead of taking the machine.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPLIANCE = [sys.executable, "-m", "appliance"]

REALTIME = """\
realtime:
  url: ws://127.0.0.1:8765/v1/realtime/openai
  folder_id: b1gexample
"""
HOOK = """\
tools:
  webhooks:
    - name: hook
      url: http://127.0.0.1:9/hook
"""


def laughs(levels: int = 9) -> str:
    """A "billion laughs" under a webhook's parameters: 10**levels strings from ~1 KB."""
    lines = ["      parameters:", "        type: object", "        l0: &l0 [lol,lol,lol,lol,lol]"]
    for i in range(1, levels):
        lines.append(f"        l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def check(tmp_path: Path, text: str) -> tuple[int, str]:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    proc = subprocess.run(
        [*APPLIANCE, "--config", str(path), "check", "--skip-audio", "--skip-network"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "APPLIANCE_API_KEY": "k-123"},
        preexec_fn=_limit_memory,
    )
    return proc.returncode, proc.stdout + proc.stderr


def one_config_error(output: str, path: Path) -> str:
    """The one line naming the config file (check prints it among its other lines)."""
    lines = [line for line in output.splitlines() if str(path) in line]
    assert len(lines) == 1, output
    assert "Traceback" not in output and "unexpected error" not in output
    return lines[0].split(f"{path}:", 1)[1].split("  -> ", 1)[0]


def test_billion_laughs_under_parameters_is_refused_at_load(tmp_path):
    code, output = check(tmp_path, REALTIME + HOOK + laughs())
    assert code == 78, output
    assert one_config_error(output, tmp_path / "config.yaml") == (
        "11: YAML aliases expand to more than 10000 values; write the values out instead"
    )


def test_a_few_aliases_are_fine(tmp_path):
    text = REALTIME + HOOK + laughs(levels=3)  # 500 strings
    code, output = check(tmp_path, text)
    assert "YAML aliases" not in output and code != 78, output


@pytest.mark.parametrize(
    ("nest", "line"),
    [("[" * 20_000 + "]" * 20_000, 1), ("{a: " * 5_000 + "1" + "}" * 5_000, 1)],
    ids=["brackets", "braces"],
)
def test_deep_nesting_is_one_config_error(tmp_path, nest, line):
    code, output = check(tmp_path, REALTIME + f"logging: {nest}\n")
    assert code == 78, output
    assert one_config_error(output, tmp_path / "config.yaml") == (
        f"{line + 3}: nested deeper than 64 levels"
    )


def test_a_self_referencing_alias_is_one_clean_line(tmp_path):
    text = REALTIME + HOOK + "      parameters: &p\n        type: object\n        again: *p\n"
    code, output = check(tmp_path, text)
    assert code == 78, output
    assert one_config_error(output, tmp_path / "config.yaml") == (
        "10: a YAML alias refers to its own anchor (a loop)"
    )


def test_api_key_file_that_is_a_device_is_refused(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        REALTIME.replace("realtime:\n", "realtime:\n  api_key_file: /dev/zero\n"),
        encoding="utf-8",
    )
    proc = subprocess.run(
        [*APPLIANCE, "--config", str(path), "check", "--skip-audio", "--skip-network"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
        preexec_fn=_limit_memory,
    )
    assert proc.returncode == 78, proc.stdout + proc.stderr
    assert one_config_error(proc.stdout + proc.stderr, path) == (
        "2: realtime.api_key_file: cannot read the key file: not a regular file"
    )


def test_a_huge_key_file_is_refused(tmp_path):
    key = tmp_path / "key"
    key.write_bytes(b"k" * 100_000)
    path = tmp_path / "config.yaml"
    path.write_text(
        REALTIME.replace("realtime:\n", f"realtime:\n  api_key_file: {key}\n"), encoding="utf-8"
    )
    from appliance.config import ConfigError, load_config

    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value) == (
        f"{path}:2: realtime.api_key_file: cannot read the key file: larger than 4096 bytes"
    )


def test_a_config_file_that_never_ends_is_one_error():
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", "--config", "/dev/zero", "check", "--skip-audio"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
        preexec_fn=_limit_memory,
    )
    assert proc.returncode == 78, proc.stderr
    assert "/dev/zero: cannot read: not a regular file" in proc.stdout + proc.stderr
