"""The four tools the box answers itself: get_time, set_volume, stop_talking, get_device_status.

They reach the running box only through :class:`ToolHost`, a small protocol the daemon
implements, so each tool can be tested with a plain fake and the daemon stays the one place
that knows the speaker and the link. Every outcome is JSON for the model; bad arguments give
``{"error": ...}`` (the registry turns anything unexpected into one too), never an exception
that could end the conversation.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from collections.abc import Callable
from math import isfinite
from pathlib import Path
from typing import Any, Protocol

from appliance.config.schema import ToolsConfig
from appliance.protocol.client_events import FunctionTool
from appliance.realtime.tools import Tool
from appliance.tools.state import StateFile

log = logging.getLogger("appliance.tools")

WIRELESS = Path("/proc/net/wireless")
VOLUME_STEP = 10  # points of 100 per "louder" / "quieter"

NO_ARGUMENTS = {"type": "object", "properties": {}}


class ToolHost(Protocol):
    """What the built-in tools need of the running box (the daemon's :class:`Appliance`)."""

    @property
    def volume(self) -> float:
        """The speaker's software volume now, 0..1."""
        ...

    def set_volume(self, volume: float) -> None:
        """Apply a volume (0..1) at once."""
        ...

    def stop_talking(self) -> None:
        """Silence the current answer now."""
        ...

    def device_facts(self) -> dict[str, Any]:
        """``state``, ``connected``, ``uptime_s``, ``session_age_s`` (None when no session)."""
        ...


# ---- get_time ---------------------------------------------------------------------------


def _system_zone_name(now: dt.datetime) -> str:
    """The system zone's name where the system says it (TZ, /etc/localtime), else its
    abbreviation: the model says "Moscow time" better from "Europe/Moscow" than from "MSK"."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz and not tz.startswith("/"):
        return tz
    try:
        target = os.readlink("/etc/localtime")
    except OSError:
        target = ""
    if "zoneinfo/" in target:
        return target.split("zoneinfo/", 1)[1]
    return now.tzname() or "local"


def time_now(timezone: str = "", now: dt.datetime | None = None) -> dict[str, Any]:
    """Date, time and weekday in ``timezone`` (an IANA name; empty: the system's local time).

    ``now`` (aware) is for tests; it is converted to the zone like the real clock would be.
    """
    if timezone:
        import zoneinfo  # only for a configured zone

        zone = zoneinfo.ZoneInfo(timezone)
        local = (now or dt.datetime.now(dt.UTC)).astimezone(zone)
        name = timezone
    else:
        local = (now or dt.datetime.now(dt.UTC)).astimezone()
        name = _system_zone_name(local)
    return {
        "iso": local.isoformat(timespec="seconds"),
        "date": local.strftime("%Y-%m-%d"),
        "time": local.strftime("%H:%M"),
        "weekday": local.strftime("%A"),
        "timezone": name,
        "utc_offset": local.strftime("%z")[:3] + ":" + local.strftime("%z")[3:],
    }


def get_time_tool(timezone: str, clock: Callable[[], dt.datetime] | None = None) -> Tool:
    def handler(_args: dict[str, Any]) -> dict[str, Any]:
        return time_now(timezone, clock() if clock else None)

    spec = FunctionTool(
        "get_time",
        "The current local date, time and day of the week. Use it for any question about the "
        "time or the date.",
        NO_ARGUMENTS,
    )
    return Tool(spec, handler, timeout_s=2.0)


# ---- set_volume -------------------------------------------------------------------------

SET_VOLUME_PARAMETERS = {
    "type": "object",
    "properties": {
        "level": {
            "type": "integer",
            "minimum": 0,
            "maximum": 100,
            "description": "The new volume, 0 (silent) to 100 (loudest).",
        },
        "change": {
            "type": "string",
            "enum": ["up", "down"],
            "description": "Louder or quieter by one step, when no level is named.",
        },
    },
}


def new_level(current: int, args: dict[str, Any]) -> int | str:
    """The new volume (0-100) the arguments ask for, clamped; or an error message."""
    level, change = args.get("level"), args.get("change")
    if level is not None:
        if isinstance(level, str):
            try:
                level = float(level.strip().rstrip("%"))
            except ValueError:
                return f"level must be a number from 0 to 100 (got {level!r})"
        if isinstance(level, bool) or not isinstance(level, int | float) or not isfinite(level):
            return f"level must be a number from 0 to 100 (got {level!r})"
        return max(0, min(100, round(level)))
    if change in ("up", "down"):
        step = VOLUME_STEP if change == "up" else -VOLUME_STEP
        return max(0, min(100, current + step))
    if change is not None:
        return f'change must be "up" or "down" (got {change!r})'
    return 'give either "level" (0-100) or "change" ("up" or "down")'


def set_volume_tool(host: ToolHost, state: StateFile) -> Tool:
    """Applied at once; kept in the state file (written off the loop: an SD card can stall)."""
    lock = asyncio.Lock()  # two quick changes are saved in the order they were made

    async def handler(args: dict[str, Any]) -> dict[str, Any]:
        before = round(host.volume * 100)
        level = new_level(before, args)
        if isinstance(level, str):
            return {"error": level}
        host.set_volume(level / 100)
        log.info("volume %d -> %d (by voice)", before, level)
        async with lock:
            await asyncio.to_thread(state.save_volume, level / 100)
        return {"volume": level, "previous": before}

    spec = FunctionTool(
        "set_volume",
        "Set the speaker's volume: an absolute level from 0 to 100, or one step up or down "
        '("louder", "quieter"). Answers with the new level.',
        SET_VOLUME_PARAMETERS,
    )
    return Tool(spec, handler, timeout_s=5.0)


# ---- stop_talking -----------------------------------------------------------------------


def stop_talking_tool(host: ToolHost) -> Tool:
    """``follow_up=False``: the point is silence, so the model is not asked to answer it."""

    def handler(_args: dict[str, Any]) -> dict[str, Any]:
        host.stop_talking()
        return {"stopped": True}

    spec = FunctionTool(
        "stop_talking",
        "Stop speaking at once and say nothing more until the owner speaks again. Use it when "
        'the owner says "stop", "enough", "be quiet" or similar.',
        NO_ARGUMENTS,
    )
    return Tool(spec, handler, timeout_s=2.0, follow_up=False)


# ---- get_device_status ------------------------------------------------------------------


def parse_wireless(text: str) -> dict[str, Any] | None:
    """The first interface of ``/proc/net/wireless``: link quality and signal level.

    The file has two header lines, then ``iface: status link. level. noise. ...``; the level is
    in dBm when negative (most drivers, the Pi's brcmfmac included).
    """
    for line in text.splitlines()[2:]:
        name, colon, rest = line.partition(":")
        fields = rest.split()
        if not colon or len(fields) < 3:
            continue
        try:
            link = float(fields[1].rstrip("."))
            level = float(fields[2].rstrip("."))
        except ValueError:
            continue
        wifi: dict[str, Any] = {"interface": name.strip(), "link_quality": round(link)}
        if level < 0:
            wifi["signal_dbm"] = round(level)
            wifi["signal"] = "good" if level >= -60 else "fair" if level >= -70 else "poor"
        return wifi
    return None


def read_wifi(path: Path | None = None) -> dict[str, Any] | str:
    try:
        text = (path or WIRELESS).read_text()
    except OSError:
        return "unknown"
    return parse_wireless(text) or "unknown"


def _duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {s} s" if minutes else f"{s} s"


def device_status(host: ToolHost, wireless: Path | None = None) -> dict[str, Any]:
    facts = host.device_facts()
    uptime, age = facts.get("uptime_s"), facts.get("session_age_s")
    return {
        "connected": bool(facts.get("connected")),
        "state": facts.get("state"),
        "uptime_s": None if uptime is None else round(uptime),
        "uptime": _duration(uptime),
        "session_age_s": None if age is None else round(age),
        "volume": round(host.volume * 100),
        "wifi": read_wifi(wireless),
    }


def get_device_status_tool(host: ToolHost, wireless: Path | None = None) -> Tool:
    spec = FunctionTool(
        "get_device_status",
        "The speaker's own status: whether it is connected, how long it has been running, "
        "its volume and its Wi-Fi signal.",
        NO_ARGUMENTS,
    )
    return Tool(spec, lambda _args: device_status(host, wireless), timeout_s=2.0)


# ---- all of them ------------------------------------------------------------------------


def builtin_tools(config: ToolsConfig, host: ToolHost, state: StateFile) -> list[Tool]:
    """The built-ins switched on in ``tools.builtin``, in a fixed order."""
    on = config.builtin
    tools = []
    if on.get_time:
        tools.append(get_time_tool(config.timezone))
    if on.set_volume:
        tools.append(set_volume_tool(host, state))
    if on.stop_talking:
        tools.append(stop_talking_tool(host))
    if on.get_device_status:
        tools.append(get_device_status_tool(host))
    return tools
