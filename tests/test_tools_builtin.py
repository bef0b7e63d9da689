"""The built-in tools, the Yandex server-side specs and the feedback while a tool runs.

Three layers: each built-in's output for given inputs (a fake :class:`ToolHost`); each one
through the whole round trip against the local Realtime test server (the real supervisor and
registry); and the turn shell's "working" earcon and stop_talking with the real link and fakes
only for the speaker, the LED and the journal. The daemon end to end is in
tests/test_tools_daemon.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import fast_backoff, link_settings
from link_helpers import QUESTION, FakePanel, FakeTranscripts, ask_once, until
from realtime_server import AudioAnswer, ToolCallAnswer

from appliance.config import Config, RealtimeConfig
from appliance.config.schema import BuiltinTools, FileSearchConfig, ToolsConfig
from appliance.core import state_machine as sm
from appliance.protocol import server_events as ev
from appliance.protocol.client_events import FunctionTool
from appliance.realtime.link_events import Connected
from appliance.realtime.supervisor import SessionSupervisor
from appliance.realtime.tools import Tool, ToolRegistry
from appliance.tools import build_registry
from appliance.tools.builtin import (
    new_level,
    parse_wireless,
    read_wifi,
    set_volume_tool,
    stop_talking_tool,
    time_now,
)
from appliance.tools.state import StateFile
from appliance.turns import TurnShell


class FakeHost:
    """The daemon's side of the tools, reduced to what they touch."""

    def __init__(self, volume: float = 0.5) -> None:
        self.volume = volume
        self.stops = 0
        self.on_stop = None
        self.facts = {"state": "thinking", "connected": True, "uptime_s": 3725.4}
        self.facts["session_age_s"] = 42.6

    def set_volume(self, volume: float) -> None:
        self.volume = volume

    def stop_talking(self) -> None:
        self.stops += 1
        if self.on_stop:
            self.on_stop()

    def device_facts(self) -> dict[str, Any]:
        return dict(self.facts)


def config(tmp_path: Path, **tools: Any) -> Config:
    tools.setdefault("state_file", str(tmp_path / "state" / "state.json"))
    return Config(
        realtime=RealtimeConfig(folder_id="testfolder"),
        tools=ToolsConfig(**tools),
        path=tmp_path / "config.yaml",
    )


def output(result: str) -> Any:
    return json.loads(result)


async def call(registry: ToolRegistry, name: str, arguments: str = "{}") -> Any:
    return output(await registry.call(ev.FunctionCall("call_1", name, arguments)))


# ---- get_time ---------------------------------------------------------------------------

NOON_UTC = dt.datetime(2025, 1, 6, 9, 30, 15, tzinfo=dt.UTC)  # a Monday


def test_get_time_in_a_given_zone():
    assert time_now("Europe/Moscow", NOON_UTC) == {
        "iso": "2025-01-06T12:30:15+03:00",
        "date": "2025-01-06",
        "time": "12:30",
        "weekday": "Monday",
        "timezone": "Europe/Moscow",
        "utc_offset": "+03:00",
    }
    # Across the date line the weekday changes too.
    late = time_now("Pacific/Kiritimati", dt.datetime(2025, 1, 6, 23, 0, tzinfo=dt.UTC))
    assert (late["date"], late["weekday"], late["utc_offset"]) == (
        "2025-01-07",
        "Tuesday",
        "+14:00",
    )


def test_get_time_empty_zone_is_the_systems(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        now = time_now("", NOON_UTC)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert now["time"] == "18:30" and now["timezone"] == "Asia/Tokyo"
    assert now["utc_offset"] == "+09:00"


async def test_get_time_through_the_registry_uses_the_configured_zone(tmp_path):
    registry = build_registry(config(tmp_path, timezone="America/New_York"), FakeHost())
    now = await call(registry, "get_time")
    assert now["timezone"] == "America/New_York"
    assert now["utc_offset"] in ("-05:00", "-04:00")
    assert dt.datetime.fromisoformat(now["iso"]).weekday() == [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ].index(now["weekday"])


# ---- set_volume -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "args", "level"),
    [
        (50, {"level": 30}, 30),
        (50, {"level": 130}, 100),
        (50, {"level": -5}, 0),
        (50, {"level": "70%"}, 70),
        (50, {"level": 42.4}, 42),
        (50, {"change": "up"}, 60),
        (50, {"change": "down"}, 40),
        (95, {"change": "up"}, 100),
        (4, {"change": "down"}, 0),
        (50, {"level": 20, "change": "up"}, 20),  # an absolute level wins
    ],
)
def test_new_level(current, args, level):
    assert new_level(current, args) == level


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, 'give either "level" (0-100) or "change" ("up" or "down")'),
        ({"change": "sideways"}, 'change must be "up" or "down" (got \'sideways\')'),
        ({"level": "loud"}, "level must be a number from 0 to 100 (got 'loud')"),
        ({"level": True}, "level must be a number from 0 to 100 (got True)"),
        ({"level": [1]}, "level must be a number from 0 to 100 (got [1])"),
    ],
)
async def test_set_volume_bad_arguments_are_errors_and_change_nothing(tmp_path, args, message):
    host = FakeHost(0.5)
    state = StateFile(tmp_path / "state.json")
    registry = ToolRegistry([set_volume_tool(host, state)])
    assert await call(registry, "set_volume", json.dumps(args)) == {"error": message}
    assert host.volume == 0.5 and not state.path.exists()


async def test_set_volume_applies_at_once_and_is_kept(tmp_path):
    host = FakeHost(0.8)
    path = tmp_path / "new" / "dir" / "state.json"  # the directory is created
    registry = ToolRegistry([set_volume_tool(host, StateFile(path))])
    assert await call(registry, "set_volume", '{"level": 35}') == {"volume": 35, "previous": 80}
    assert host.volume == pytest.approx(0.35)
    assert json.loads(path.read_text()) == {"volume": 0.35}
    assert await call(registry, "set_volume", '{"change": "up"}') == {"volume": 45, "previous": 35}
    assert StateFile(path).volume() == pytest.approx(0.45)  # what the next start reads
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temp file left


async def test_set_volume_keeps_other_state_keys(tmp_path):
    path = tmp_path / "state.json"
    path.write_text('{"volume": 0.1, "other": [1, 2]}')
    registry = ToolRegistry([set_volume_tool(FakeHost(0.1), StateFile(path))])
    await call(registry, "set_volume", '{"level": 60}')
    assert json.loads(path.read_text()) == {"volume": 0.6, "other": [1, 2]}


async def test_set_volume_with_an_unwritable_state_dir_still_applies_and_logs_once(
    tmp_path, caplog
):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state directory should be")
    host = FakeHost(0.5)
    registry = ToolRegistry([set_volume_tool(host, StateFile(blocker / "state.json"))])
    with caplog.at_level(logging.DEBUG, logger="appliance.tools"):
        assert await call(registry, "set_volume", '{"level": 20}') == {
            "volume": 20,
            "previous": 50,
        }
        assert await call(registry, "set_volume", '{"change": "up"}') == {
            "volume": 30,
            "previous": 20,
        }
    assert host.volume == pytest.approx(0.3)
    failures = [r for r in caplog.records if "cannot write the state file" in r.getMessage()]
    assert [r.levelno for r in failures] == [logging.WARNING, logging.DEBUG]


@pytest.mark.parametrize(
    ("text", "volume"),
    [
        ('{"volume": 0.25}', 0.25),
        ('{"volume": 7}', 1.0),  # clamped
        ('{"volume": "loud"}', None),
        ('{"volume": true}', None),
        ("[0.3]", None),
        ("not json", None),
        ("", None),
    ],
)
def test_state_file_volume(tmp_path, text, volume):
    path = tmp_path / "state.json"
    path.write_text(text)
    assert StateFile(path).volume() == volume


def test_state_file_missing_is_no_volume(tmp_path):
    assert StateFile(tmp_path / "absent.json").volume() is None


# ---- stop_talking -----------------------------------------------------------------------


async def test_stop_talking_silences_and_wants_no_follow_up():
    host = FakeHost()
    tool = stop_talking_tool(host)
    registry = ToolRegistry([tool])
    assert await call(registry, "stop_talking") == {"stopped": True}
    assert host.stops == 1
    assert tool.follow_up is False and not registry.follows_up("stop_talking")
    assert registry.follows_up("anything_else")  # unknown calls get an error worth answering


# ---- get_device_status ------------------------------------------------------------------

WIRELESS = """\
Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE
 face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22
 wlan0: 0000   54.  -56.  -256        0      0      0      0     12        0
 wlan1: 0000   20.  -80.  -256        0      0      0      0      0        0
"""


@pytest.mark.parametrize(
    ("text", "wifi"),
    [
        (
            WIRELESS,
            {"interface": "wlan0", "link_quality": 54, "signal_dbm": -56, "signal": "good"},
        ),
        (
            WIRELESS.replace("-56.", "-67."),
            {"interface": "wlan0", "link_quality": 54, "signal_dbm": -67, "signal": "fair"},
        ),
        (
            WIRELESS.replace("54.  -56.", "12.  -81."),
            {"interface": "wlan0", "link_quality": 12, "signal_dbm": -81, "signal": "poor"},
        ),
        # A driver reporting a relative level: no dBm figure is made up.
        (WIRELESS.replace("-56.", "200."), {"interface": "wlan0", "link_quality": 54}),
        ("\n".join(WIRELESS.splitlines()[:2]), None),  # no wireless interface
        ("", None),
        ("garbage\nmore\n wlan0: x y z\n", None),
    ],
)
def test_parse_wireless(text, wifi):
    assert parse_wireless(text) == wifi


def test_wifi_is_unknown_without_the_proc_file(tmp_path):
    assert read_wifi(tmp_path / "absent") == "unknown"
    (tmp_path / "empty").write_text("\n".join(WIRELESS.splitlines()[:2]))
    assert read_wifi(tmp_path / "empty") == "unknown"
    (tmp_path / "wireless").write_text(WIRELESS)
    assert read_wifi(tmp_path / "wireless")["signal_dbm"] == -56


async def test_get_device_status(tmp_path, monkeypatch):
    wireless = tmp_path / "wireless"
    wireless.write_text(WIRELESS)
    monkeypatch.setattr("appliance.tools.builtin.WIRELESS", wireless)
    host = FakeHost(0.7)
    registry = build_registry(config(tmp_path), host)
    assert await call(registry, "get_device_status") == {
        "connected": True,
        "state": "thinking",
        "uptime_s": 3725,
        "uptime": "1 h 2 min",
        "session_age_s": 43,
        "volume": 70,
        "wifi": {"interface": "wlan0", "link_quality": 54, "signal_dbm": -56, "signal": "good"},
    }
    host.facts.update(connected=False, session_age_s=None, uptime_s=59.9)
    wireless.unlink()
    status = await call(registry, "get_device_status")
    assert (status["connected"], status["session_age_s"], status["uptime"]) == (False, None, "59 s")
    assert status["wifi"] == "unknown"


# ---- the registry from the config -------------------------------------------------------


def names(registry: ToolRegistry) -> list[str]:
    return [spec.name for spec in registry.specs()]


def test_registry_defaults_all_builtins_no_yandex_tools(tmp_path):
    assert names(build_registry(config(tmp_path), FakeHost())) == [
        "get_time",
        "set_volume",
        "stop_talking",
        "get_device_status",
    ]


def test_registry_switches_and_yandex_tools(tmp_path):
    cfg = config(
        tmp_path,
        builtin=BuiltinTools(get_time=False, get_device_status=False),
        file_search=FileSearchConfig(index_id="fvt123index"),
        web_search=True,
    )
    registry = build_registry(cfg, FakeHost())
    assert names(registry) == ["set_volume", "stop_talking", "file_search", "web_search"]
    specs = {spec.name: spec.as_dict() for spec in registry.specs()}
    assert specs["file_search"] == {
        "type": "function",
        "name": "file_search",
        "description": "fvt123index",
        "parameters": {},
    }
    assert specs["web_search"]["parameters"] == {}
    assert registry.answered_by_server("file_search") and registry.answered_by_server("web_search")
    assert not registry.answered_by_server("set_volume")
    none = dataclasses.replace(
        cfg,
        tools=ToolsConfig(
            builtin=BuiltinTools(
                **dict.fromkeys(
                    ("get_time", "set_volume", "stop_talking", "get_device_status"), False
                )
            )
        ),
    )
    assert names(build_registry(none, FakeHost())) == []


def test_registry_relative_state_file_is_next_to_the_config(tmp_path):
    from appliance.tools.state import state_file

    assert state_file(config(tmp_path, state_file="var/state.json")).path == (
        tmp_path / "var" / "state.json"
    )


# ---- round trips against the test Realtime server ---------------------------------------


def supervisor(server, registry) -> SessionSupervisor:
    return SessionSupervisor(link_settings(server), registry, backoff=fast_backoff())


def outputs(server) -> list[Any]:
    return [
        json.loads(e["item"]["output"])
        for e in server.events_of("conversation.item.create")
        if e["item"]["type"] == "function_call_output"
    ]


async def round_trip(server, registry, calls, answer=True, outputs_expected=1):
    """A turn whose first response makes ``calls``; returns the events of the turn."""
    server.answers.append(ToolCallAnswer(calls))
    if answer:
        server.answers.append(AudioAnswer("Done."))
    async with supervisor(server, registry) as link:
        await until(link, Connected)
        events = await ask_once(link)
        if not answer:  # nothing else is coming: give a stray response.create time to show
            await server.wait_for(lambda: len(outputs(server)) >= outputs_expected, timeout=2)
            await asyncio.sleep(0.3)
    return events


def creates_after_output(server) -> int:
    types = [e["type"] for e in server.received]
    return types[types.index("conversation.item.create") :].count("response.create")


async def test_round_trip_get_time(server, tmp_path):
    registry = build_registry(config(tmp_path, timezone="Europe/Moscow"), FakeHost())
    events = await round_trip(server, registry, [("get_time", "{}")])
    [now] = outputs(server)
    assert now["timezone"] == "Europe/Moscow" and now["utc_offset"] == "+03:00"
    assert creates_after_output(server) == 1
    assert events[-1].status == "completed"
    assert any(isinstance(e, ev.AudioDelta) for e in events)
    # The session declares every built-in (the server validates it against the GA types).
    declared = server.connections[0].session["tools"]
    assert [t["name"] for t in declared] == [
        "get_time",
        "set_volume",
        "stop_talking",
        "get_device_status",
    ]
    assert all(t["type"] == "function" and t["parameters"]["type"] == "object" for t in declared)


async def test_round_trip_set_volume(server, tmp_path):
    host = FakeHost(0.5)
    cfg = config(tmp_path)
    await round_trip(server, build_registry(cfg, host), [("set_volume", '{"level": 25}')])
    assert outputs(server) == [{"volume": 25, "previous": 50}]
    assert host.volume == pytest.approx(0.25)
    assert StateFile(cfg.tools.state_file).volume() == pytest.approx(0.25)
    assert creates_after_output(server) == 1


async def test_round_trip_get_device_status(server, tmp_path):
    await round_trip(
        server, build_registry(config(tmp_path), FakeHost()), [("get_device_status", "")]
    )
    [status] = outputs(server)
    assert status["connected"] is True and status["uptime_s"] == 3725
    assert "wifi" in status
    assert creates_after_output(server) == 1


async def test_round_trip_stop_talking_asks_for_no_answer(server, tmp_path):
    host = FakeHost()
    events = await round_trip(
        server, build_registry(config(tmp_path), host), [("stop_talking", "{}")], answer=False
    )
    assert host.stops == 1
    assert outputs(server) == [{"stopped": True}]
    # The output is sent (the protocol wants one per call), but no response.create follows:
    # the turn's own is the only one.
    assert creates_after_output(server) == 0
    assert len(server.events_of("response.create")) == 1
    assert events[-1].status == "completed"


async def test_stop_talking_with_another_call_still_gets_one_answer(server, tmp_path):
    registry = build_registry(config(tmp_path), FakeHost())
    events = await round_trip(server, registry, [("stop_talking", "{}"), ("get_time", "{}")])
    assert len(outputs(server)) == 2
    assert creates_after_output(server) == 1
    assert any(isinstance(e, ev.AudioDelta) for e in events)


async def test_yandex_tools_are_declared_and_never_answered(server, tmp_path):
    if server.profile.name == "openai":
        pytest.skip("Yandex's tools with provider openai are a config error (test_config)")
    cfg = config(tmp_path, file_search=FileSearchConfig(index_id="searchindex42"), web_search=True)
    await round_trip(
        server,
        build_registry(cfg, FakeHost()),
        [("web_search", '{"q": "news"}')],
        answer=False,
        outputs_expected=0,
    )
    assert outputs(server) == []  # the server answers its own tools
    declared = {t["name"]: t for t in server.connections[0].session["tools"]}
    assert declared["file_search"] == {
        "type": "function",
        "name": "file_search",
        "description": "searchindex42",
        "parameters": {},  # an object in the 2026 format (the 2025 string is refused)
    }
    assert declared["web_search"]["parameters"] == {}


# ---- feedback while a tool runs: the real link, fakes for speaker, LED and journal --------


class FakePlayback:
    """Stands in for appliance.audio.playback.Playback: records, plays nothing."""

    def __init__(self) -> None:
        self.volume = 1.0
        self.earcons: list[str] = []
        self.flushes = 0

    def play_earcon(self, name: str) -> None:
        self.earcons.append(name)

    def play_answer(self, item_id: str, pcm: bytes) -> None:
        pass

    def end_answer(self, item_id: str) -> None:
        pass

    def flush(self) -> dict[str, int]:
        self.flushes += 1
        return {}

    async def wait_drained(self, timeout: float | None = None) -> bool:
        return True

    def first_sound_at(self, item_id: str) -> float | None:
        return None


async def slow_lookup(_args):
    await asyncio.sleep(1.4)
    return {"found": True}


async def one_turn(server, registry, answers, host=None, answer_timeout_s=10.0):
    """A whole turn through a TurnShell on the real link; returns (shell, playback, panel)."""
    server.answers.extend(answers)
    playback, panel = FakePlayback(), FakePanel()
    link = supervisor(server, registry)
    machine = sm.TurnMachine(sm.TurnRules(min_press_ms=0, answer_timeout_s=answer_timeout_s))
    shell = TurnShell(machine, link, playback, panel, FakeTranscripts())
    if host is not None:
        host.on_stop = shell.stop_talking

    async def pump():
        async for event in link.events():
            await shell.on_link_event(event)

    async with link:
        pumping = asyncio.create_task(pump())
        try:
            async with asyncio.timeout(5):
                while True:  # connected: the shell rests in idle
                    if machine.state is sm.State.IDLE:
                        break
                    await asyncio.sleep(0.01)
            await shell.press()
            await shell.on_mic_chunk(QUESTION)
            await shell.release()
            await shell.wait_turn_end(10)
        finally:
            pumping.cancel()
            await shell.close()
    return shell, playback, panel


async def test_a_slow_tool_plays_working_once_and_the_led_stays_thinking(server):
    registry = ToolRegistry([Tool(FunctionTool("slow_lookup", "slow"), slow_lookup)])
    shell, playback, panel = await one_turn(
        server, registry, [ToolCallAnswer([("slow_lookup", "{}")]), AudioAnswer("Found it.")]
    )
    assert shell.last_turn.result == "answered"
    assert playback.earcons == ["listening", "sent", "working"]
    assert panel.shown == [
        sm.State.IDLE,
        sm.State.LISTENING,
        sm.State.THINKING,
        sm.State.SPEAKING,
        sm.State.IDLE,
    ]


async def test_a_tool_gets_its_own_time_on_top_of_the_answer_timeout(server):
    """A tool allowed 3 s must not make a 0.5 s answer timeout fire while it runs."""
    registry = ToolRegistry([Tool(FunctionTool("slow_lookup", "slow"), slow_lookup, 3.0)])
    shell, playback, _ = await one_turn(
        server,
        registry,
        [ToolCallAnswer([("slow_lookup", "{}")]), AudioAnswer("Found it.")],
        answer_timeout_s=0.5,
    )
    assert shell.last_turn.result == "answered"
    assert "error" not in playback.earcons


async def test_two_slow_calls_play_working_once_each(server):
    registry = ToolRegistry([Tool(FunctionTool("slow_lookup", "slow"), slow_lookup)])
    _, playback, _ = await one_turn(
        server,
        registry,
        [ToolCallAnswer([("slow_lookup", "{}"), ("slow_lookup", '{"b": 1}')]), AudioAnswer("Ok.")],
    )
    assert playback.earcons.count("working") == 2


async def test_a_quick_tool_or_a_server_tool_plays_no_working(server, tmp_path):
    cfg = config(tmp_path, web_search=True)
    registry = build_registry(cfg, FakeHost())
    _, playback, _ = await one_turn(
        server,
        registry,
        [ToolCallAnswer([("get_time", "{}"), ("web_search", "{}")]), AudioAnswer("Noon.")],
    )
    assert playback.earcons == ["listening", "sent"]


async def test_stop_talking_ends_the_turn_quietly(server, tmp_path):
    host = FakeHost()
    registry = build_registry(config(tmp_path), host)
    shell, playback, _ = await one_turn(
        server, registry, [ToolCallAnswer([("stop_talking", "{}")])], host=host
    )
    assert host.stops == 1 and playback.flushes == 1
    assert shell.last_turn.result == "answered"  # not a timeout: nothing more was awaited
    assert "error" not in playback.earcons
    assert len(server.events_of("response.create")) == 1
    assert shell.machine.state is sm.State.IDLE


class FakeLink:
    """Only what the shell reads of the link, for driving it event by event (no server)."""

    def __init__(self) -> None:
        self.tools = ToolRegistry()
        self.output_rate = 24000
        self.session_id = "sess_1"
        self.truncated: list[tuple[str, int]] = []
        self.sent: list[str] = []
        self.response_requested = False

    def begin_turn(self) -> None:
        pass

    def end_turn(self) -> None:
        pass

    async def append_audio(self, pcm: bytes) -> None:
        pass

    async def commit(self) -> None:
        self.sent.append("commit")

    async def create_response(self) -> None:
        self.sent.append("response.create")

    def ask_when_ready(self) -> None:
        self.sent.append("response.create")  # the real link sends it once the server is ready

    async def cancel_response(self) -> bool:
        self.sent.append("response.cancel")
        return True

    async def truncate(self, item_id: str, audio_end_ms: int, content_index: int = 0) -> None:
        self.truncated.append((item_id, audio_end_ms))

    def tool_running(self, call_id: str) -> bool:
        return False


async def test_stop_talking_while_speaking_silences_the_rest_of_the_answer():
    playback = RecordingPlayback()
    link = FakeLink()
    shell = TurnShell(
        sm.TurnMachine(sm.TurnRules(min_press_ms=0)),
        link,
        playback,
        FakePanel(),
        FakeTranscripts(),
    )
    await shell.on_link_event(Connected("sess_1", False, 0, 24000))
    await shell.press()
    await shell.on_mic_chunk(QUESTION)
    await shell.release()
    await shell.on_link_event(ev.ResponseCreated("resp_1"))
    await shell.on_link_event(ev.AudioDelta("resp_1", "item_1", b"\x00\x01" * 100))
    assert shell.machine.state is sm.State.SPEAKING
    shell.stop_talking()  # what the stop_talking tool does, through the daemon
    await asyncio.sleep(0)  # the truncate runs as its own task
    assert playback.flushes == 1
    assert link.truncated == [("item_1", 123)]
    await shell.on_link_event(ev.AudioDelta("resp_1", "item_2", b"\x00\x01" * 100))
    assert playback.played == ["item_1"]  # nothing after the stop
    await shell.on_link_event(ev.ResponseDone("resp_1", "completed"))
    turn = await shell.wait_turn_end(2)
    assert turn.result == "answered" and shell.machine.state is sm.State.IDLE
    assert link.sent == ["commit", "response.create"]  # no cancel: the response ends by itself
    await shell.close()


class RecordingPlayback(FakePlayback):
    def __init__(self) -> None:
        super().__init__()
        self.played: list[str] = []

    def play_answer(self, item_id: str, pcm: bytes) -> None:
        if item_id not in self.played:
            self.played.append(item_id)

    def flush(self) -> dict[str, int]:
        super().flush()
        return dict.fromkeys(self.played, 123)
