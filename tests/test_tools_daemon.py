"""Tools in ``appliance run`` end to end: a voice set_volume changes what the box plays and
survives a restart; the session declares the built-ins and Yandex's tools.

Like tests/test_daemon_e2e.py: a subprocess with paced virtual audio, the local Realtime test
server and the control socket; nothing inside the box is mocked.
"""

from __future__ import annotations

import json
import signal

import numpy as np
from box import PacedBox
from conftest import SECRET
from realtime_server import AudioAnswer, ToolCallAnswer


def speech(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 24000)) / 24000
    return (np.sin(2 * np.pi * 300 * t) * 6000).astype(np.int16)


async def start(tmp_path, name: str, server, tools: str) -> PacedBox:
    where = tmp_path / name
    where.mkdir()
    box = PacedBox(where, server, SECRET, tools)
    await box.start()
    await box.wait_status(lambda s: s["connected"] and s["state"] == "idle", timeout=15)
    return box


async def stop(box: PacedBox) -> None:
    code = await box.stop()
    assert SECRET not in box.log()
    assert "Traceback" not in box.log(), box.log()[-3000:]
    assert code == 0, box.log()[-3000:]


async def test_voice_volume_is_applied_kept_and_declared(server, tmp_path):
    state = tmp_path / "var" / "state.json"  # its directory does not exist yet
    yandex = server.profile.name != "openai"  # Yandex's own tools are Yandex's only
    tools = f"tools:\n  state_file: {state}\n" + (
        "  file_search:\n    index_id: idx42\n  web_search: true\n" if yandex else ""
    )
    box = await start(tmp_path, "first", server, tools)  # config: audio.volume 1.0
    try:
        assert (await box.status())["audio"]["volume"] == 1.0
        declared = server.connections[0].session["tools"]
        builtins = ["get_time", "set_volume", "stop_talking", "get_device_status"]
        assert [t["name"] for t in declared] == builtins + (
            ["file_search", "web_search"] if yandex else []
        )
        if yandex:
            assert declared[4]["description"] == "idx42" and declared[4]["parameters"] == {}
        server.answers.extend(
            [ToolCallAnswer([("set_volume", '{"level": 40}')]), AudioAnswer("Готово.")]
        )
        box.say(speech(0.5))
        reply = await box.command("talk", seconds=0.5)
        assert reply["turn"]["result"] == "answered", box.log()[-3000:]
        outputs = [
            json.loads(e["item"]["output"])
            for e in server.events_of("conversation.item.create")
            if e["item"]["type"] == "function_call_output"
        ]
        assert outputs == [{"volume": 40, "previous": 100}]
        assert (await box.status())["audio"]["volume"] == 0.4
        assert json.loads(state.read_text()) == {"volume": 0.4}
    finally:
        await stop(box)
    # A new start: the volume set by voice wins over audio.volume (still 1.0 in the config).
    again = await start(tmp_path, "second", server, tools)
    try:
        assert (await again.status())["audio"]["volume"] == 0.4
    finally:
        await stop(again)


async def test_sighup_with_new_tools_opens_a_session_declaring_them(server, tmp_path):
    box = await start(tmp_path, "box", server, "")
    try:
        before = await box.status()
        assert "web_search" not in [t["name"] for t in server.connections[0].session["tools"]]
        text = box.config.read_text()
        assert "tools:\n" in text  # PacedBox put its own state file there
        # A new tool on Yandex (its web search); on OpenAI one fewer (a built-in switched off).
        change = (
            "  builtin:\n    get_time: false\n"
            if server.profile.name == "openai"
            else "  web_search: true\n"
        )
        box.config.write_text(
            text.replace("tools:\n", "tools:\n" + change, 1).replace(
                "  volume: 1.0\n", "  volume: 0.6\n"
            )
        )
        box.proc.send_signal(signal.SIGHUP)
        after = await box.wait_status(
            lambda s: s["connected"] and s["session_id"] != before["session_id"], timeout=10
        )
        assert after["state"] == "idle" and after["audio"]["volume"] == 0.6
        declared = [t["name"] for t in server.connections[-1].session["tools"]]
        if server.profile.name == "openai":
            assert "get_time" not in declared and "set_volume" in declared
        else:
            assert declared[-1] == "web_search"
        # The owner's new audio.volume replaces any set by voice, after a restart too.
        assert json.loads((box.dir / "state.json").read_text()) == {"volume": 0.6}
    finally:
        await stop(box)
