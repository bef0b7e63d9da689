"""``appliance check``: the real command in a subprocess, over the virtual ALSA devices and the
local Realtime test server; and the pure parts (lines, exit codes, levels, clock) in process."""

from __future__ import annotations

import asyncio
import math
import os
import sys
from datetime import UTC, datetime

import numpy as np
import pytest
from conftest import SECRET, realtime_config_lines

from appliance.check import (
    BUSY_HINT,
    CLOCK_HINT,
    SILENCE_HINT,
    Result,
    alsa_owners,
    check_clock,
    check_key,
    exit_code,
    format_result,
    has_gpio,
    is_busy,
    level_result,
    levels,
)
from appliance.config import load_config

NAMES = [
    "config",
    "api key",
    "microphone",
    "speaker",
    "mic level",
    "earcon",
    "button",
    "led",
    "realtime",
    "clock",
]
AMPLITUDE = 3000  # the test tone's peak: 20 * log10(3000 / 32768) = -20.8 dBFS


def tone(seconds: float = 1.0, rate: int = 24000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 440 * t) * AMPLITUDE).astype(np.int16)


def write_config(tmp_path, url="ws://127.0.0.1:9/v1/realtime", mic="mic", gpio=False):
    """``url`` is a URL (a Yandex-shaped box) or a test server (its profile picks the provider)."""
    path = tmp_path / "config.yaml"
    where = (
        f"  url: {url}\n  folder_id: testfolder\n"
        if isinstance(url, str)
        else realtime_config_lines(url)
    )
    path.write_text(
        f"realtime:\n{where}  connect_timeout_s: 2\n"
        f"audio:\n  input_device: {mic}\n  output_device: speaker\n"
        f"gpio:\n  enabled: {'true' if gpio else 'false'}\n"
    )
    return path


async def run_check(config, *args, alsa=None, key=SECRET, env_extra=None):
    """(exit code, {check name: line}, stdout) of ``python -m appliance check``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APPLIANCE_", "GPIOZERO_"))}
    env.pop("CREDENTIALS_DIRECTORY", None)
    env["JACK_NO_START_SERVER"] = "1"
    if alsa is not None:
        env["ALSA_CONFIG_PATH"] = str(alsa.config_path)
    if key:
        env["APPLIANCE_API_KEY"] = key
    env.update(env_extra or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "appliance", "check", "--config", str(config), *args),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    out, err = out.decode(), err.decode()
    assert "Traceback" not in out + err
    assert SECRET not in out + err
    assert err == ""  # the component loggers stay off the terminal without -v
    lines = {line[6:19].strip(): line for line in out.splitlines()}
    return proc.returncode, lines, out


# ---- end to end -----------------------------------------------------------------------------


async def test_all_pass(server, virtual_alsa, tmp_path):
    virtual_alsa.set_mic(tone(), pad_s=0)  # no zero padding: the fast file device stays loud
    code, lines, out = await run_check(write_config(tmp_path, server), alsa=virtual_alsa)
    assert code == 0, out
    assert list(lines) == NAMES
    for name, line in lines.items():
        status = "skip" if name in ("button", "led") else "ok"
        assert line.startswith(f"{status:<6}{name}"), line
    assert lines["api key"].endswith("present (from $APPLIANCE_API_KEY)")
    assert "'mic' at 24000 Hz" in lines["microphone"]
    assert f"'speaker' at {server.output_rate} Hz" in lines["speaker"]  # the answers' rate
    assert "1.0 s recorded, peak -21 dBFS, rms -2" in lines["mic level"]
    assert "played 'listening' on 'speaker'" in lines["earcon"]
    assert "gpio.enabled is false" in lines["button"]
    provider = "openai" if server.profile.name == "openai" else "yandex"
    assert f"session.updated from {provider} ({server.url}) in " in lines["realtime"]
    assert "(session sess_" in lines["realtime"]
    assert "UTC (TLS needs the right time)" in lines["clock"]
    assert len(server.connections) == 1
    assert server.connections[0].query["model"] == (
        "gpt-realtime"
        if server.profile.name == "openai"
        else "gpt://testfolder/speech-realtime-250923"
    )
    assert virtual_alsa.speaker_file.stat().st_size > 0  # the earcon was played


async def test_refused_key_exits_77(server, virtual_alsa, tmp_path):
    virtual_alsa.set_mic(tone(), pad_s=0)
    server.refuse(401, times=5)
    code, lines, out = await run_check(write_config(tmp_path, server), alsa=virtual_alsa)
    assert code == 77, out
    line = lines["realtime"]
    assert line.startswith("FAIL  realtime     the API key was refused (HTTP 401)  -> ")
    assert "$APPLIANCE_API_KEY" in line
    assert ("testfolder" in line) == (server.profile.name != "openai")  # Yandex: the folder
    assert lines["api key"].startswith("ok")  # present, but refused


async def test_bad_config_exits_78_and_stops(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("realtime:\n  folder_id: testfolder\n  vioce: marina\n")
    code, lines, _out = await run_check(config)
    assert code == 78
    assert list(lines) == ["config"]
    assert lines["config"].startswith(f"FAIL  config       {config}:3: realtime.vioce: unknown key")
    assert "did you mean realtime.voice?" in lines["config"]


async def test_missing_config_file_exits_78(tmp_path):
    code, lines, _out = await run_check(tmp_path / "nowhere.yaml")
    assert code == 78
    assert "cannot read" in lines["config"] and "nowhere.yaml" in lines["config"]


async def test_missing_mic_lists_devices_and_says_what_to_set(server, virtual_alsa, tmp_path):
    config = write_config(tmp_path, server, mic="nosuchmic")
    code, lines, out = await run_check(config, alsa=virtual_alsa)
    assert code == 1, out
    line = lines["microphone"]
    assert line.startswith("FAIL  microphone   no input device matches 'nosuchmic'; available: ")
    assert "0 mic" in line and "2 USB Audio Device mic" in line and "default" in line
    assert line.endswith("-> set audio.input_device (see `appliance devices`)")
    assert lines["mic level"].startswith("skip")
    assert lines["speaker"].startswith("ok") and lines["earcon"].startswith("ok")
    assert lines["realtime"].startswith("ok")


async def test_silent_mic_fails_about_muting(server, virtual_alsa, tmp_path):
    virtual_alsa.set_mic(np.zeros(48000, np.int16))
    code, lines, out = await run_check(write_config(tmp_path, server), alsa=virtual_alsa)
    assert code == 1, out
    line = lines["mic level"]
    assert line.startswith("FAIL  mic level    1.0 s recorded, peak -inf dBFS, rms -inf dBFS")
    assert line.endswith(f"-> {SILENCE_HINT}")
    assert [n for n, line in lines.items() if line.startswith("FAIL")] == ["mic level"]


async def test_gpio_enabled_without_gpio_fails(tmp_path):
    config = write_config(tmp_path, gpio=True)
    code, lines, out = await run_check(config, "--skip-audio", "--skip-network")
    assert code == 1, out
    assert lines["button"].startswith("FAIL  button       no GPIO on this machine (BadPinFactory")
    assert "gpio.enabled: false" in lines["button"]
    assert lines["led"].startswith("FAIL  led")


async def test_gpio_with_mock_pins_passes(tmp_path):
    config = write_config(tmp_path, gpio=True)
    mock = {"GPIOZERO_PIN_FACTORY": "mock", "GPIOZERO_MOCK_PIN_CLASS": "mockpwmpin"}
    code, lines, out = await run_check(config, "--skip-audio", "--skip-network", env_extra=mock)
    assert code == 0, out
    assert lines["button"] == "ok    button       BCM 17 reads released"
    assert lines["led"] == "ok    led          BCM 18 cycled"


async def test_skips_and_a_missing_key(tmp_path):
    config = write_config(tmp_path)
    code, lines, out = await run_check(config, "--skip-audio", "--skip-network", key="")
    assert code == 78, out
    assert list(lines) == NAMES
    assert lines["api key"].startswith("FAIL  api key      no API key  -> set $APPLIANCE_API_KEY")
    for name in ("microphone", "speaker", "mic level", "earcon"):
        assert lines[name] == f"skip  {name:<13}--skip-audio"
    assert lines["realtime"] == "skip  realtime     --skip-network"
    code, lines, out = await run_check(config, "--skip-audio", "--skip-network")
    assert code == 0, out


# ---- the pure parts ------------------------------------------------------------------------


def test_format_result():
    assert format_result(Result.ok("speaker", "'default' at 48000 Hz")) == (
        "ok    speaker      'default' at 48000 Hz"
    )
    failed = Result.fail("microphone", "no input device\nmatches 'usb'", "set audio.input_device")
    assert format_result(failed) == (
        "FAIL  microphone   no input device matches 'usb'  -> set audio.input_device"
    )
    assert format_result(Result.skip("realtime", "--skip-network")) == (
        "skip  realtime     --skip-network"
    )
    leaky = Result.fail("realtime", f"refused key {SECRET}", f"not {SECRET}")
    assert SECRET not in format_result(leaky, [SECRET])
    assert format_result(leaky, [SECRET]).count("***") == 2


def test_exit_codes():
    ok, skip = Result.ok("a", ""), Result.skip("b", "")
    fail, refused, config = (
        Result.fail("c", ""),
        Result.fail("d", "", "", 77),
        Result.fail("e", "", "", 78),
    )
    assert exit_code([]) == 0
    assert exit_code([ok, skip]) == 0
    assert exit_code([ok, fail]) == 1
    assert exit_code([fail, refused]) == 77
    assert exit_code([refused, config, fail]) == 78


def test_levels_and_silence():
    assert levels(np.zeros(10, np.int16)) == (-math.inf, -math.inf)
    peak, rms = levels(tone())
    assert peak == pytest.approx(20 * math.log10(AMPLITUDE / 32768), abs=0.01)
    assert rms == pytest.approx(peak - 3.01, abs=0.05)  # a sine's rms is 3 dB below its peak
    assert levels(np.full(4, -32768, np.int16)) == (0.0, 0.0)
    loud = level_result(tone(), 24000)
    assert (loud.status, loud.detail) == ("ok", "1.0 s recorded, peak -21 dBFS, rms -24 dBFS")
    dither = level_result(np.tile(np.array([1, -1, 0, 2], np.int16), 6000), 24000)
    assert dither.status == "FAIL" and dither.hint == SILENCE_HINT
    assert level_result(np.zeros(0, np.int16), 24000).status == "FAIL"


def test_clock():
    built = datetime(2026, 3, 1, tzinfo=UTC)
    good = check_clock(datetime(2026, 11, 21, 6, 40, tzinfo=UTC), built)
    assert (
        format_result(good) == "ok    clock        2026-11-21 06:40 UTC (TLS needs the right time)"
    )
    old = check_clock(datetime(1970, 1, 1, tzinfo=UTC), built)
    assert (old.status, old.hint) == ("FAIL", CLOCK_HINT)
    early = check_clock(datetime(2026, 1, 5, tzinfo=UTC), built)
    assert early.status == "FAIL" and "before this software was built (2026-03-01)" in early.detail
    assert check_clock(datetime(2026, 2, 28, 12, tzinfo=UTC), built).status == "ok"  # slack


def test_busy_is_recognised():
    assert is_busy(OSError(-9985, "Device unavailable"))
    assert is_busy(ValueError("Device unavailable", -9985))  # PyAudio's is_format_supported
    assert is_busy("cannot open input device 0 'mic' at 24000 Hz, 1 ch: Device unavailable")
    assert is_busy(OSError(16, "Device or resource busy"))
    assert is_busy(RuntimeError("GPIO busy"))
    assert not is_busy(OSError(-9996, "Invalid input device"))
    assert "sudo systemctl stop appliance" in BUSY_HINT


def test_alsa_owners(tmp_path):
    sub = tmp_path / "card0" / "pcm0c" / "sub0"
    sub.mkdir(parents=True)
    (sub / "status").write_text("state: RUNNING\nowner_pid   : 1\ntrigger_time: 1.0\n")
    closed = tmp_path / "card0" / "pcm0p" / "sub0"
    closed.mkdir(parents=True)
    (closed / "status").write_text("closed\n")
    mine = tmp_path / "card1" / "pcm0p" / "sub0"
    mine.mkdir(parents=True)
    (mine / "status").write_text(f"state: PREPARED\nowner_pid   : {os.getpid()}\n")
    owners = alsa_owners(tmp_path)
    assert len(owners) == 1 and owners[0].startswith("pid 1 (")
    assert alsa_owners(tmp_path / "missing") == []


def test_has_gpio(tmp_path):
    assert not has_gpio(tmp_path)
    (tmp_path / "gpiochip0").touch()
    assert has_gpio(tmp_path)


def test_key_line_shows_the_source_never_the_key(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("realtime:\n  folder_id: testfolder\n")
    present = check_key(load_config(path, environ={"APPLIANCE_API_KEY": SECRET}))
    assert format_result(present) == "ok    api key      present (from $APPLIANCE_API_KEY)"
    missing = check_key(load_config(path, environ={}))
    assert (missing.status, missing.exit_code, missing.detail) == ("FAIL", 78, "no API key")
    assert missing.hint.startswith("set $APPLIANCE_API_KEY, the systemd credential api-key")


class BusyPortAudio:
    """A PyAudio stand-in with one sound card that another process holds: every format test
    fails as PortAudio's does then (ValueError, paDeviceUnavailable)."""

    def get_device_count(self):
        return 1

    def get_device_info_by_index(self, index):
        return {
            "index": 0,
            "name": "USB Audio Device",
            "maxInputChannels": 1,
            "maxOutputChannels": 2,
            "defaultSampleRate": 48000.0,
        }

    def get_default_input_device_info(self):
        return self.get_device_info_by_index(0)

    get_default_output_device_info = get_default_input_device_info

    def is_format_supported(self, rate, **kwargs):
        raise ValueError("Device unavailable", -9985)


@pytest.mark.parametrize("kind", ["input", "output"])
def test_a_busy_device_says_so(kind):
    from appliance.check import _probe

    result = _probe(BusyPortAudio(), kind, "usb", 0, (24000, 48000))
    assert result.status == "FAIL" and result.hint == BUSY_HINT
    assert "supports none of these rates: 24000, 48000 Hz" in result.detail
    assert "(Device unavailable -9985)" in result.detail
