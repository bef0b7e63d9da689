"""Device listing and selection against REAL PortAudio over the virtual ALSA devices.

Nothing is mocked: PyAudio, PortAudio and alsa-lib are the real libraries; only the devices
are ALSA ``file`` plugins instead of sound cards (see virtual_alsa.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from virtual_alsa import USB_MIC

from appliance.audio.devices import (
    STANDARD_RATES,
    AudioDeviceError,
    DeviceNotFound,
    find_device,
    format_device_table,
    list_devices,
    open_pyaudio,
    pick_rate,
    quiet_stderr,
)

ROOT = Path(__file__).resolve().parent.parent

# The session's devices, in PortAudio's order (virtual_alsa.py writes them so).
NAMES = ["mic", "speaker", USB_MIC, "mic_fifo", "speaker_fifo", "flaky", "default"]
INPUTS = "0 mic, 2 USB Audio Device mic, 3 mic_fifo, 6 default"
OUTPUTS = "1 speaker, 4 speaker_fifo, 5 flaky, 6 default"


@pytest.fixture
def pa(virtual_alsa):
    pa = virtual_alsa.pyaudio()
    yield pa
    pa.terminate()  # every instance: PortAudio re-enumerates only once all are gone


def test_listing_has_the_devices_with_channels_rates_and_defaults(pa):
    devices = list_devices(pa)
    assert [d.name for d in devices] == NAMES
    assert [d.index for d in devices] == list(range(len(NAMES)))
    mic, speaker, usb, _, _, flaky, default = devices
    assert (mic.max_input_channels, mic.max_output_channels) == (128, 0)
    assert (speaker.max_input_channels, speaker.max_output_channels) == (0, 128)
    assert usb.max_input_channels > 0
    assert mic.input_rates == STANDARD_RATES and mic.output_rates == ()
    assert speaker.output_rates == STANDARD_RATES and speaker.input_rates == ()
    assert default.input_rates == default.output_rates == STANDARD_RATES
    assert flaky.max_input_channels == 0  # its infile is missing: like an unplugged mic
    assert [d.name for d in devices if d.is_default_input] == ["default"]
    assert [d.name for d in devices if d.is_default_output] == ["default"]
    assert mic.default_rate > 0


def test_find_default(pa):
    assert find_device(pa, "default", "input").name == "default"
    assert find_device(pa, "Default", "output").index == 6
    assert find_device(pa, "default", "input").input_rates == STANDARD_RATES


def test_find_by_index(pa):
    usb = find_device(pa, "2", "input")
    assert (usb.index, usb.name) == (2, USB_MIC)
    assert find_device(pa, " 1 ", "output").name == "speaker"


def test_find_by_index_of_the_wrong_kind(pa):
    with pytest.raises(DeviceNotFound) as err:
        find_device(pa, "1", "input")  # the speaker: no input channels
    assert str(err.value) == f"no input device with index 1; available: {INPUTS}"


def test_find_by_substring_case_insensitive(pa):
    assert find_device(pa, "usb", "input").name == USB_MIC
    assert find_device(pa, "audio DEVICE", "input").name == USB_MIC
    assert find_device(pa, "fifo", "input").name == "mic_fifo"  # inputs only
    assert find_device(pa, "fifo", "output").name == "speaker_fifo"
    assert find_device(pa, "spea", "output").name == "speaker"  # first match


def test_exact_name_wins_over_the_first_substring_match(pa):
    # "mic" is part of "mic", "USB Audio Device mic" and "mic_fifo": the exact name wins.
    assert find_device(pa, "MIC", "input").index == 0
    assert find_device(pa, "mic_fifo", "input").index == 3


def test_no_match_names_the_spec_and_lists_the_devices_of_that_kind(pa):
    with pytest.raises(DeviceNotFound) as err:
        find_device(pa, "Scarlett", "input")
    assert str(err.value) == f"no input device matches 'Scarlett'; available: {INPUTS}"
    with pytest.raises(DeviceNotFound) as err:
        find_device(pa, "usb", "output")
    assert str(err.value) == f"no output device matches 'usb'; available: {OUTPUTS}"
    assert isinstance(err.value, AudioDeviceError)


def test_a_missing_device_appears_after_reinitialising(virtual_alsa):
    pa = virtual_alsa.pyaudio()
    try:
        with pytest.raises(DeviceNotFound):
            find_device(pa, "flaky", "input")
    finally:
        pa.terminate()
    virtual_alsa.set_flaky(True)
    pa = virtual_alsa.pyaudio()
    try:
        assert find_device(pa, "flaky", "input").index == 5
    finally:
        pa.terminate()


def test_pick_rate(pa):
    mic = find_device(pa, "mic", "input")
    assert pick_rate(pa, mic, "input", 44100, (24000, 48000)) == 44100
    assert pick_rate(pa, mic, "input", 0, (24000, 48000)) == 24000
    # 100 Hz and 1 MHz are beyond what ALSA allows: the next candidate is taken.
    assert pick_rate(pa, mic, "input", 100, (1_000_000, 16000)) == 16000
    assert pick_rate(pa, mic, "input", 0, (48000,), channels=2) == 48000


def test_pick_rate_none_supported(pa):
    mic = find_device(pa, "mic", "input")
    with pytest.raises(AudioDeviceError) as err:
        pick_rate(pa, mic, "input", 100, (1_000_000, 100))
    assert str(err.value) == "input device 0 'mic' supports none of these rates: 100, 1000000 Hz"


def test_device_table(pa):
    lines = format_device_table(list_devices(pa)).splitlines()
    assert lines[0].split() == [
        "#", "name", "in", "out", "input", "rates,", "kHz", "output", "rates,", "kHz", "default"
    ]  # fmt: skip
    assert len(lines) == 1 + len(NAMES)
    assert lines[1].split() == [
        "0",
        "mic",
        "128",
        "0",
        "16",
        "22.05",
        "24",
        "32",
        "44.1",
        "48",
        "-",
    ]
    assert lines[3].startswith(f"2  {USB_MIC}  ")
    assert lines[-1].split()[:4] == ["6", "default", "128", "128"]
    assert lines[-1].endswith("input, output")


def _run_devices(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.yaml"
    config.write_text("realtime:\n  folder_id: testfolder\n")
    env = {k: v for k, v in env.items() if not k.startswith("APPLIANCE_")}
    env.pop("CREDENTIALS_DIRECTORY", None)  # no API key anywhere: devices does not need one
    return subprocess.run(
        [sys.executable, "-m", "appliance", "devices", "--config", str(config)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_devices_command_lists_the_devices(tmp_path, virtual_alsa):
    # The fixture holds the named pipes open; without that the child's PyAudio() would block.
    result = _run_devices(tmp_path, dict(os.environ))
    assert result.returncode == 0, result.stderr
    rows = [line.split()[:2] for line in result.stdout.splitlines()[1:]]
    assert rows[0] == ["0", "mic"] and rows[1] == ["1", "speaker"] and rows[-1] == ["6", "default"]
    assert USB_MIC in result.stdout
    assert result.stderr == ""  # JACK's and ALSA's chatter is kept off the terminal


@pytest.mark.skipif(Path("/dev/snd").exists(), reason="this machine has a sound card")
def test_devices_command_without_any_device(tmp_path, virtual_alsa):
    env = dict(os.environ)
    env.pop("ALSA_CONFIG_PATH")  # the system's ALSA configuration: no sound card here
    result = _run_devices(tmp_path, env)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "appliance devices: PortAudio finds no sound device "
        "(no sound card, or ALSA is not configured for this user)\n"
    )


# What libjack wrote to stderr at every start of the service (tests/vm/ found it in the
# journal): under the unit's system call filter it cannot start its message thread.
LIBJACK_UNDER_THE_UNIT = (
    "Cannot create thread res = 1\n"
    "JackMessageBuffer::Create cannot start thread\n"
    "Cannot create message buffer\n"
    "Cannot connect to server socket err = No such file or directory\n"
    "Cannot connect to server request channel\n"
    "jack server is not running or cannot be started\n"
    "JackShmReadWritePtr::~JackShmReadWritePtr - Init not done for -1, skipping unlock\n"
)


def test_open_pyaudio_keeps_libjack_off_stderr_and_never_starts_a_server(capfd, monkeypatch):
    monkeypatch.delenv("JACK_NO_START_SERVER", raising=False)
    seen = {}

    def factory():
        seen["no_start"] = os.environ.get("JACK_NO_START_SERVER")
        os.write(2, (LIBJACK_UNDER_THE_UNIT + "something else\n").encode())
        return "pa"

    assert open_pyaudio(factory) == "pa"
    assert seen["no_start"] == "1"
    assert capfd.readouterr().err == "something else\n"


# alsa-lib 1.2.8 aborted the daemon this way in the VM (tests/vm/): the assert's message went
# into quiet_stderr()'s file and was lost with the process.
ABORTS_INSIDE_QUIET_STDERR = """
import os
from appliance.audio.devices import quiet_stderr
with quiet_stderr():
    os.write(2, b"ALSA lib pcm.c:2666:(snd_pcm_open_noupdate) Unknown PCM cards.pcm.rear\\n")
    os.write(2, b"Cannot connect to server socket err = No such file or directory\\n")
    os.write(2, b"python3: pcm_plugin.c:572: snd_pcm_plugin_status: Assertion `err' failed.\\n")
    os.abort()
"""
QUIET_BLOCK = "from appliance.audio.devices import quiet_stderr\nwith quiet_stderr(): pass\n"


def _python(code: str, env: dict) -> tuple[int, int, str]:
    child = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    _, err = child.communicate(timeout=30)
    return child.pid, child.returncode, err


def test_an_abort_inside_quiet_stderr_keeps_its_message_for_the_next_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    env["STATE_DIRECTORY"] = str(tmp_path)  # as systemd sets it for the service
    pid, rc, err = _python(ABORTS_INSIDE_QUIET_STDERR, env)
    assert rc == -signal.SIGABRT
    assert "Assertion" not in err  # fd 2 was quiet_stderr()'s file when it aborted
    assert [p.name for p in tmp_path.iterdir()] == [f"appliance-stderr.{pid}"]
    _, rc, err = _python(QUIET_BLOCK, env)  # the next start
    assert rc == 0
    assert err == (
        f"process {pid} ended inside PortAudio/ALSA; it wrote:\n"
        "ALSA lib pcm.c:2666:(snd_pcm_open_noupdate) Unknown PCM cards.pcm.rear\n"
        "python3: pcm_plugin.c:572: snd_pcm_plugin_status: Assertion `err' failed.\n"
    )
    assert list(tmp_path.iterdir()) == []  # forwarded once; a block that ends leaves nothing
    _, rc, err = _python(QUIET_BLOCK, env)
    assert (rc, err) == (0, "")


def test_a_process_that_ended_with_only_chatter_in_quiet_stderr_is_not_reported(tmp_path):
    # A stop while a worker thread was opening a device: nothing went wrong in the library.
    (tmp_path / "appliance-stderr.999999999").write_text(
        "ALSA lib pcm.c:2666:(snd_pcm_open_noupdate) Unknown PCM cards.pcm.rear\n"
        "Cannot connect to server socket err = No such file or directory\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    env["STATE_DIRECTORY"] = str(tmp_path)
    _, rc, err = _python(QUIET_BLOCK, env)
    assert (rc, err) == (0, "")
    assert list(tmp_path.iterdir()) == []


def test_quiet_stderr_without_a_state_or_runtime_directory_uses_an_anonymous_file(capfd):
    env_keys = ("STATE_DIRECTORY", "XDG_RUNTIME_DIR")
    saved = {k: os.environ.pop(k) for k in env_keys if k in os.environ}
    try:
        with quiet_stderr():
            os.write(2, b"Cannot connect to server request channel\nkept\n")
    finally:
        os.environ.update(saved)
    assert capfd.readouterr().err == "kept\n"
