"""Run a Python script against a REAL systemd-journald, in a private mount namespace.

libsystemd always writes to /run/systemd/journal/socket. Inside ``unshare -m --propagation
private`` a tmpfs goes over /run (so not even an empty directory is created on the host), the
test's temp dir is bound onto /run/log (where journald writes its runtime journal) and a tmpfs
goes over /var/log/journal (nothing persistent is touched, even if journald were told to
flush); then /lib/systemd/systemd-journald is started, the script runs, journald is stopped and
the namespace vanishes with its last process. No systemd instance is started (testbed.md).

The journal is read back with ``journalctl -D <dir>/journal -o json``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

JOURNALD = "/lib/systemd/systemd-journald"
ROOT = Path(__file__).resolve().parent.parent

# Exit codes of the driver, so a failure says which step broke.
_STEPS = {
    10: "mounting the tmpfs on /run",
    11: "binding the log dir onto /run/log",
    12: "mounting the tmpfs on /var/log/journal",
    13: "journald did not create its socket within 5 s",
}

_DRIVER = r"""
set -u
mount -t tmpfs -o mode=0755 tmpfs /run || exit 10
mkdir -p /run/systemd/journal /run/log
mount --bind "$JT_LOGDIR" /run/log || exit 11
if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal || exit 12; fi
"$JT_JOURNALD" &
J=$!
trap 'kill -TERM $J 2>/dev/null; wait $J 2>/dev/null' EXIT
i=0
while [ ! -S /run/systemd/journal/socket ]; do
    i=$((i + 1)); [ $i -gt 250 ] && exit 13
    sleep 0.02
done
"$JT_PYTHON" "$JT_SCRIPT"
"""


def unavailable_reason() -> str | None:
    """Why the real-journald tests cannot run here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "needs Linux"
    for tool in ("unshare", "journalctl", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not os.access(JOURNALD, os.X_OK):
        return f"{JOURNALD} is not installed (apt-get install systemd)"
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "mount", "-t", "tmpfs", "tmpfs", "/run"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    if probe.returncode != 0:
        return f"no private mount namespace here: {probe.stderr.strip()}"
    return None


def run_with_journald(
    workdir: Path, script: str, env: dict[str, str], timeout: float = 20
) -> tuple[list[dict], str]:
    """Run ``script`` (Python source) next to a private journald; return its entries and the
    raw ``journalctl -o json`` text (for searching every field of every entry).

    ``env`` is added to a minimal environment (PATH, PYTHONPATH=repo root); it is where a test
    puts JOURNAL_STREAM/INVOCATION_ID and a fake key, never the command line, which journald
    records as ``_CMDLINE``.
    """
    logdir = workdir / "log"
    logdir.mkdir(parents=True)
    driver = workdir / "driver.sh"
    driver.write_text(_DRIVER)
    snippet = workdir / "snippet.py"
    snippet.write_text(script)
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "JT_LOGDIR": str(logdir),
        "JT_JOURNALD": JOURNALD,
        "JT_PYTHON": sys.executable,
        "JT_SCRIPT": str(snippet),
        **env,
    }
    proc = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", str(driver)],
        env=full_env,
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a timeout kills journald too
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"journald run took more than {timeout} s") from None
    if proc.returncode != 0:
        step = _STEPS.get(proc.returncode, "the script failed")
        raise AssertionError(f"journald run: {step} (exit {proc.returncode})\n{out}\n{err}")
    read = subprocess.run(
        ["journalctl", "--no-pager", "-D", str(logdir / "journal"), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    entries = [json.loads(line) for line in read.stdout.splitlines() if line.strip()]
    return entries, read.stdout
