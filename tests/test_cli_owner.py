"""The control commands as an owner meets them: honest exit codes against a real box
(``appliance run`` as a subprocess, tests/box.py), a closed pipe, an unreadable key file, what
the commands import, and where the socket is on a laptop."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from box import PacedBox
from conftest import SECRET
from realtime_server import AudioAnswer
from test_daemon_e2e import answer_signal, speech

from appliance.control import paths

pytestmark = pytest.mark.timeout(180)


async def appliance(*args: str, env: dict | None = None) -> tuple[int, str, str]:
    """The real command in a subprocess: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "appliance", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL, env=env,
    )  # fmt: skip
    async with asyncio.timeout(90):
        out, err = await proc.communicate()
    assert "Traceback" not in err.decode()
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def start_box(server, tmp_path):
    boxes = []

    async def start(edit=None, wait=lambda s: s["connected"] and s["state"] == "idle"):
        b = PacedBox(tmp_path, server, SECRET)
        if edit is not None:
            b.config.write_text(edit(b.config.read_text()))
        boxes.append(b)
        await b.start()
        await b.wait_status(wait, timeout=15)
        return b

    yield start
    for b in boxes:
        await b.stop()
        assert SECRET not in b.log()


async def test_press_and_talk_while_offline_say_so_and_exit_3(start_box, server):
    box = await start_box()
    server.refuse_for(60, status=503)
    await server.close_all(1011)
    await box.wait_status(lambda s: s["state"] == "offline", timeout=10)
    code, out, err = await appliance("press", "--socket", box.socket)
    assert (code, out) == (3, "")
    assert err.startswith("appliance: not connected to the Realtime API (")
    await appliance("release", "--socket", box.socket)
    code, out, err = await appliance("talk", "--seconds", "0.3", "--socket", box.socket)
    assert (code, out) == (3, "")
    assert err.startswith("appliance: not connected to the Realtime API (")
    assert (await box.status())["turns"] == 0


async def test_a_refused_key_exits_77(start_box, server):
    server.refuse_for(60, status=401)
    box = await start_box(wait=lambda s: s["state"] == "error")
    code, _, err = await appliance("talk", "--seconds", "0.3", "--socket", box.socket)
    assert code == 77
    assert err.startswith("appliance: the API key was refused")


async def test_no_microphone_exits_4(start_box):
    box = await start_box(
        edit=lambda text: text.replace("audio:\n", "audio:\n  input_device: no-such-mic\n", 1),
        wait=lambda s: s["state"] == "error",
    )
    code, _, err = await appliance("press", "--socket", box.socket)
    assert code == 4
    assert err.startswith("appliance: no microphone: ")


async def test_a_failed_turn_exits_5_and_says_why(start_box, server):
    box = await start_box()
    server.drop_mid_answer(after_deltas=1)
    server.answers.append(AudioAnswer("Cut.", answer_signal(2.0)))
    box.say(speech(0.5))
    code, out, err = await appliance("talk", "--seconds", "0.5", "--json", "--socket", box.socket)
    assert code == 5
    assert err.startswith("appliance: the turn failed: ")
    assert '"result": "failed"' in out  # --json still prints the turn
    await box.wait_status(lambda s: s["connected"] and s["state"] == "idle", timeout=10)
    server.answers.append(AudioAnswer("Whole."))
    box.say(speech(0.5))
    code, out, err = await appliance("talk", "--seconds", "0.5", "--socket", box.socket)
    assert code == 0, err
    assert out.startswith("talked for 0.5 s")


async def test_status_into_a_closed_pipe_is_quiet(start_box, tmp_path):
    box = await start_box()
    code, _, err = await appliance("status", "--socket", box.socket)
    assert code == 0, err
    # `appliance status | head -1`, without the race: the reader is gone before it writes.
    read_end, write_end = os.pipe()
    os.close(read_end)
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "appliance", "status", "--socket", box.socket],
        stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
    )  # fmt: skip
    os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 141
    shell = await asyncio.to_thread(
        subprocess.run,
        f"{sys.executable} -m appliance status --socket {box.socket} | head -1",
        shell=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shell.stdout.startswith("state: idle") and shell.stderr == ""


async def test_status_works_when_the_key_file_cannot_be_read(start_box, tmp_path):
    box = await start_box()
    config = tmp_path / "other.yaml"
    config.write_text(
        "realtime:\n  folder_id: f\n  api_key_file: /nonexistent/api-key\n"
        f"control:\n  socket: {box.socket}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    code, out, err = await appliance("status", "--config", str(config), env=env)
    assert code == 0, err
    assert out.startswith("state: idle")
    code, out, err = await appliance("check", "--config", str(config), "--skip-audio", env=env)
    assert code == 78 and "api_key_file" in out + err  # the key's own commands still say it


def test_control_commands_import_nothing_heavy(tmp_path):
    """status, press, release and talk talk to a socket: no aiohttp, numpy, soxr or asyncio."""
    probe = (
        "import sys\n"
        "from appliance.cli import main\n"
        "for cmd in (['status'], ['press'], ['release'], ['talk', '--seconds', '1']):\n"
        "    main([*cmd, '--socket', sys.argv[1]])\n"
        "heavy = {'aiohttp', 'numpy', 'soxr', 'soundfile', 'asyncio', 'yaml'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "none.sock")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
    assert result.stderr.count("the appliance is not running") == 4


# --- the socket on a laptop ---------------------------------------------------------------


def test_default_socket_places():
    xdg = "/run/user/1000"
    runtime = {"RUNTIME_DIRECTORY": "/run/appliance"}  # systemd's, for the service
    assert paths.server_socket(runtime, euid=999) == "/run/appliance/control.sock"
    assert paths.server_socket({}, euid=0) == "/run/appliance/control.sock"  # sudo
    if os.path.isdir(xdg):
        assert paths.server_socket({"XDG_RUNTIME_DIR": xdg}, euid=1000) == (
            f"{xdg}/appliance/control.sock"
        )
    assert paths.server_socket({}, euid=1000) == "/tmp/appliance-1000/control.sock"
    assert paths.user_socket({"XDG_RUNTIME_DIR": "relative"}, uid=5) == (
        "/tmp/appliance-5/control.sock"
    )


async def test_a_socket_it_cannot_use_fails_before_the_audio_is_opened(tmp_path):
    """A file where the socket's directory should be: one line naming control.socket, exit
    78, and the sound devices never opened (no ALSA configuration is even given)."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    config = tmp_path / "config.yaml"
    config.write_text(
        "realtime:\n  folder_id: f\n  url: ws://127.0.0.1:9/\n"
        f"gpio:\n  enabled: false\ncontrol:\n  socket: {blocker}/control.sock\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(APPLIANCE_API_KEY=SECRET, ALSA_CONFIG_PATH=str(tmp_path / "missing.conf"))
    code, _, err = await appliance("run", "--config", str(config), env=env)
    assert code == 78
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("appliance: control.socket: "), err
    assert str(blocker) in lines[0]
    assert "ALSA" not in err and "PortAudio" not in err


async def test_as_a_user_the_socket_is_in_the_runtime_dir_and_the_commands_find_it(
    server, tmp_path
):
    """No control.socket in the config, XDG_RUNTIME_DIR set: the daemon listens there (mode
    0700 directory) and `appliance status` without --socket finds it."""
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    box = PacedBox(tmp_path, server, SECRET)
    text = box.config.read_text().replace(f"control:\n  socket: {box.socket}\n", "")
    box.config.write_text(text)
    box.socket = str(runtime / "appliance" / "control.sock")
    env = {"XDG_RUNTIME_DIR": str(runtime)}
    await box.start(env=env)
    try:
        await box.wait_status(lambda s: s["connected"], timeout=15)
        assert (runtime / "appliance").stat().st_mode & 0o777 == 0o700
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
        code, out, err = await appliance(
            "status", "--config", str(box.config), env={**full_env, **env}
        )
        assert code == 0, err
        assert out.startswith("state: idle")
    finally:
        await box.stop()


# --- control.socket read without the schema ----------------------------------------------

HEAD = "realtime:\n  folder_id: f\n"
PLAIN = {
    "unset": (HEAD, None),
    "shipped": (
        Path(__file__)
        .parent.parent.joinpath("config.yaml")
        .read_text()
        .replace('folder_id: ""', "folder_id: f"),
        None,
    ),
    "plain": (HEAD + "control:\n  socket: /srv/a.sock\n", "/srv/a.sock"),
    "comment after": (
        HEAD + "control:  # the socket\n  socket: /srv/a.sock  # here\n",
        "/srv/a.sock",
    ),
    "quoted": (HEAD + "control:\n    socket: '/srv/my socket'\n", "/srv/my socket"),
    "double quoted": (HEAD + 'control:\n  socket: "/srv/b.sock" # x\n', "/srv/b.sock"),
    "null": (HEAD + "control:\n  socket: ~\n", None),
    "section first": ("control:\n\n  # why\n  socket: /x.sock\n" + HEAD, "/x.sock"),
    "other keys": (HEAD + "logging:\n  level: info\n# control:\n#  socket: /no\n", None),
}
UNPLAIN = {
    "flow": (HEAD + "control: {socket: /srv/f.sock}\n", "/srv/f.sock"),
    "escape": (HEAD + 'control:\n  socket: "/srv/\\x41.sock"\n', "/srv/A.sock"),
    "anchor": (HEAD + "control: &c\n  socket: /srv/s.sock\n", "/srv/s.sock"),
    "folded": (HEAD + "control:\n  socket: >-\n    /srv/long.sock\n", "/srv/long.sock"),
}


@pytest.mark.parametrize("case", [*PLAIN, *UNPLAIN])
def test_the_quick_socket_reading_agrees_with_the_loader(tmp_path, case):
    from appliance.config import load_config

    text, expected = {**PLAIN, **UNPLAIN}[case]
    path = tmp_path / "config.yaml"
    path.write_text(text)
    if "folder_id" not in text:
        path.write_text(text + HEAD)
    assert load_config(path, {}, resolve_key=False).control.socket == expected
    quick = paths.configured_socket(path.read_text())
    assert quick == expected if case in PLAIN else quick is paths.UNSURE


def test_config_candidates_match_the_loader():
    from appliance.config import loader

    assert tuple(str(p) for p in loader.CANDIDATES) == paths.CONFIG_CANDIDATES


def test_status_through_config_yaml_reads_no_yaml(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(HEAD + f"control:\n  socket: {tmp_path / 'none.sock'}\n")
    probe = (
        "import sys\n"
        "from appliance.cli import main\n"
        "code = main(['status', '--config', sys.argv[1]])\n"
        "print(code, sorted({'yaml', 'asyncio', 'numpy', 'aiohttp'} & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "1 []", result.stdout + result.stderr
    assert f"no control socket at {tmp_path / 'none.sock'}" in result.stderr


def test_the_private_socket_directory_is_ours_and_0700(tmp_path):
    """/tmp/appliance-UID is made 0700; one that someone else made first is refused (they
    could otherwise listen in the socket's place)."""
    sock = str(tmp_path / "mine" / "control.sock")
    paths.prepare_private_dir(sock)
    assert (tmp_path / "mine").stat().st_mode & 0o777 == 0o700
    (tmp_path / "mine").chmod(0o755)
    paths.prepare_private_dir(sock)  # ours, loosened: tightened again
    assert (tmp_path / "mine").stat().st_mode & 0o777 == 0o700
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    if os.geteuid() == 0:
        os.chown(theirs, 65534, 65534)
        with pytest.raises(ValueError, match="belongs to another user"):
            paths.prepare_private_dir(str(theirs / "control.sock"))
