"""systemd/appliance.service, checked offline by systemd-analyze (no systemd instance runs here).

``systemd-analyze verify`` exits 0 even on unknown keys and bad values: it only prints them, so
any output at all is a failure. It also checks that ExecStart's program exists; on a build
machine /opt/appliance/venv/bin/appliance does not, so verify runs on a temp copy of the unit
whose ExecStart program is rewritten to an existing executable (the arguments and everything
else unchanged), and a second test shows that this is the only complaint about the original.
(User=appliance and the groups are not checked by verify, so they need no such rewrite.)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "appliance.service"
EXEC = "/opt/appliance/venv/bin/appliance"
MAX_EXPOSURE = 1.5

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["systemd-analyze", "--no-pager", *args], capture_output=True, text=True, timeout=30
    )


def unit_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit under its own name in tmp_path, its ExecStart program made to exist."""
    text = UNIT.read_text() if text is None else text
    true = shutil.which("true")
    assert f"ExecStart={EXEC} " in text
    copy = tmp_path / "appliance.service"
    copy.write_text(text.replace(f"ExecStart={EXEC} ", f"ExecStart={true} "))
    return copy


def settings(text: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value given (keys like DeviceAllow= repeat)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = out.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert section is not None, f"setting outside a section: {line}"
        section.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.fixture(scope="module")
def unit():
    return settings(UNIT.read_text())


def test_verify_prints_nothing(tmp_path):
    result = analyze("verify", str(unit_copy(tmp_path)))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_verify_of_the_original_only_misses_the_installed_program():
    result = analyze("verify", str(UNIT))
    if Path(EXEC).exists():  # on an installed box nothing is missing
        assert (result.stdout, result.stderr) == ("", "")
        return
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines == [
        f"appliance.service: Command {EXEC} is not executable: No such file or directory"
    ]


def test_verify_does_complain_about_a_mistake(tmp_path):
    """The check above is only worth something if verify speaks up: a typo must show."""
    text = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSystem=strikt")
    result = analyze("verify", str(unit_copy(tmp_path, text)))
    assert result.returncode == 0  # exit status says nothing, hence the output checks
    assert "strikt" in result.stderr


def test_security_exposure():
    result = analyze("security", "--offline=true", str(UNIT))
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    match = re.search(r"Overall exposure level for appliance\.service: (\d+\.\d+) (\w+)", last)
    assert match, last
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, result.stdout
    assert match.group(2) == "OK"
    # The unit's header states the figure: keep the comment true.
    assert f"rates this unit {match.group(1)} OK" in " ".join(UNIT.read_text().split())
    # The same bound through systemd-analyze's own gate (the threshold is exposure x 10).
    gate = analyze("security", "--offline=true", f"--threshold={int(MAX_EXPOSURE * 10)}", str(UNIT))
    assert gate.returncode == 0


def test_service_lifecycle(unit):
    s = unit["Service"]
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert s["ExecStart"] == [f"{EXEC} run --config /etc/appliance/config.yaml"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["WatchdogSec"] == ["30"]
    assert s["Restart"] == ["on-failure"]
    assert s["RestartSec"] == ["5"]
    assert s["RestartPreventExitStatus"] == ["77 78"]
    assert s["TimeoutStopSec"] == ["5"]
    assert s.get("KillMode", ["control-group"])[0] in ("mixed", "control-group")
    u = unit["Unit"]
    for key in ("After", "Wants"):
        assert set(" ".join(u[key]).split()) >= {"network-online.target", "sound.target"}
    assert "StartLimitIntervalSec" in u
    assert "StartLimitBurst" in u
    assert "StartLimitIntervalSec" not in s  # ignored with a warning in [Service]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_identity_credentials_and_directories(unit):
    s = unit["Service"]
    assert s["User"] == ["appliance"]
    assert s["Group"] == ["appliance"]
    assert set(" ".join(s["SupplementaryGroups"]).split()) == {"audio", "gpio"}
    assert s["LoadCredential"] == ["api-key:/etc/appliance/api-key"]
    assert s["RuntimeDirectory"] == ["appliance"]
    assert s["RuntimeDirectoryMode"] == ["0750"]
    assert s["StateDirectory"] == ["appliance"]
    assert s["UMask"] == ["0077"]


def writable_dirs(s: dict[str, list[str]]) -> list[str]:
    """Where the service may write under ProtectSystem=strict (its own directories)."""
    dirs = [f"/run/{d}" for v in s.get("RuntimeDirectory", []) for d in v.split()]
    dirs += [f"/var/lib/{d}" for v in s.get("StateDirectory", []) for d in v.split()]
    dirs += [d.lstrip("-") for v in s.get("ReadWritePaths", []) for d in v.split()]
    return dirs


def test_lgpio_has_a_writable_directory_for_its_pipe(unit):
    # lgpio creates its notification FIFO in $LG_WD, else in the working directory (/ when the
    # unit sets none): read-only under ProtectSystem=strict, so the GPIO button and LED failed
    # to open on a real chip (tests/vm/ found it).
    s = unit["Service"]
    assert s["ProtectSystem"] == ["strict"]
    env = dict(item.split("=", 1) for value in s.get("Environment", []) for item in value.split())
    where = env.get("LG_WD") or s.get("WorkingDirectory", ["/"])[-1].lstrip("-")
    where = where.replace("%t", "/run").replace("%S", "/var/lib")
    assert any(where == d or where.startswith(d + "/") for d in writable_dirs(s)), where


def test_the_key_is_never_in_the_environment(unit):
    s = unit["Service"]
    for key in ("Environment", "EnvironmentFile", "PassEnvironment", "SetCredential"):
        for value in s.get(key, []):
            assert not re.search(r"key|token|secret", value, re.IGNORECASE), (key, value)
    assert not re.search(r"(?i)(sk-|AQVN)[A-Za-z0-9]", UNIT.read_text())


def test_devices_and_network(unit):
    s = unit["Service"]
    assert s["DevicePolicy"] == ["closed"]
    assert set(s["DeviceAllow"]) == {"char-alsa rw", "char-gpiochip rw"}
    assert set(" ".join(s["RestrictAddressFamilies"]).split()) == {
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
    }
    # What a sound + GPIO + network daemon cannot use (see the unit's comments).
    for key in ("PrivateDevices", "PrivateNetwork", "IPAddressDeny"):
        assert key not in s, key


def test_hardening_settings(unit):
    s = unit["Service"]
    expected = {
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "RestrictRealtime": "yes",
        "MemoryDenyWriteExecute": "yes",
        "LockPersonality": "yes",
        "SystemCallArchitectures": "native",
    }
    assert {k: s.get(k, [None])[-1] for k in expected} == expected
    assert "@system-service" in s["SystemCallFilter"]


# ---- MemoryDenyWriteExecute=yes, tried for real -----------------------------------------------

MDWE_PROBE = r"""
import ctypes, mmap, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN (Linux >= 6.3)
    print("NO-MDWE", os.strerror(ctypes.get_errno()))
    sys.exit(0)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("a W+X mapping was allowed: MDWE is not in force")
except OSError:
    pass

import ssl, time
import numpy as np, soxr, yaml, aiohttp, pyaudio
from gpiozero import Device, LED
from gpiozero.pins.mock import MockFactory, MockPWMPin
import appliance.audio.resample, appliance.realtime.session, appliance.service.journal
import appliance.service.notify

out = soxr.resample(np.zeros(4800, dtype=np.float32), 48000, 24000)
assert out.shape == (2400,)
cmp = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))
arr = (ctypes.c_int * 4)(3, 1, 4, 2)
libc.qsort(arr, 4, ctypes.sizeof(ctypes.c_int), cmp(lambda a, b: a[0] - b[0]))  # a libffi closure
assert list(arr) == [1, 2, 3, 4]
ssl.create_default_context()
Device.pin_factory = MockFactory(pin_class=MockPWMPin)
LED(18).on()

pa = pyaudio.PyAudio()
chunk = b"\x01\x00" * 480
stream = pa.open(format=pyaudio.paInt16, channels=1, rate=24000, output=True,
                 output_device_index=None, frames_per_buffer=480,
                 stream_callback=lambda data, n, info, status: (chunk, pyaudio.paComplete))
while stream.is_active():
    time.sleep(0.01)
stream.close()
pa.terminate()
print("MDWE-OK")
"""

ASOUND = """
pcm.speaker {{ type file slave.pcm {{ type null }} file "{out}" format "raw" }}
pcm.mic {{ type file slave.pcm {{ type null }} file "/dev/null" infile "/dev/zero" format "raw" }}
pcm.!default {{ type asym playback.pcm "speaker" capture.pcm "mic" }}
"""


def test_the_program_runs_without_writable_executable_memory(tmp_path):
    """MemoryDenyWriteExecute=yes kills W+X mappings; the kernel's PR_SET_MDWE (Linux >= 6.3)
    refuses the same, so the libraries the daemon loads are tried under it: numpy, soxr, aiohttp
    and ssl, gpiozero, PyAudio playing through ALSA, and a ctypes (libffi) callback."""
    asound = tmp_path / "asound.conf"
    asound.write_text(ASOUND.format(out=tmp_path / "speaker.raw"))
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(UNIT.parent.parent),
        "ALSA_CONFIG_PATH": str(asound),
    }
    result = subprocess.run(
        [sys.executable, "-c", MDWE_PROBE], capture_output=True, text=True, env=env, timeout=60
    )
    if result.stdout.startswith("NO-MDWE"):
        pytest.skip(f"the kernel has no PR_SET_MDWE: {result.stdout.strip()}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "MDWE-OK" in result.stdout
    assert (tmp_path / "speaker.raw").stat().st_size >= len(b"\x01\x00" * 480)
