"""The control socket's wire format: request parsing and validation, response building. Pure.

Newline-delimited JSON over a Unix stream socket, one request per line and one response line
per request::

    {"cmd": "press"}                    -> {"ok": true}
    {"cmd": "release"}                  -> {"ok": true}
    {"cmd": "talk", "seconds": 2.5}     -> {"ok": true, "turn": {...}}
    {"cmd": "status"}                   -> {"ok": true, "status": {...}}
    anything wrong                      -> {"ok": false, "error": "<one line>"}
    a command that did nothing          -> {"ok": false, "error": "...", "code": "offline"}

Keys a request does not need are ignored, so a newer client can add one without breaking an
older daemon. Parsing never raises: whatever bytes arrive, the server gets either a
:class:`Request` to act on or the error reply to send back (the fuzz test holds us to that).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

COMMANDS = ("press", "release", "talk", "status")
MAX_LINE = 4096  # bytes of one request line, newline excluded
SECONDS_MIN, SECONDS_MAX = 0.1, 300.0
_VALID = "valid commands: " + ", ".join(COMMANDS)
_SECONDS_RULE = f"a number from {SECONDS_MIN:g} to {SECONDS_MAX:g}"
_ERROR_MAX = 300  # characters of an error message; a reply stays one short line


# Why a command did nothing, for the client's exit code (the ``code`` of an error reply).
OFFLINE = "offline"  # not connected to the Realtime API (or still starting)
NO_AUDIO = "no_audio"  # no microphone or no speaker
KEY_REFUSED = "key_refused"  # the API key was refused
TURN_FAILED = "turn_failed"  # talk: the turn failed, timed out or was cancelled


class ControlError(Exception):
    """A control socket problem for the user; ``str(e)`` is one line, never a traceback.

    ``code`` (one of the constants above) and ``fields`` (``turn=...``) travel in the error
    reply.
    """

    def __init__(self, message: str, code: str | None = None, **fields: Any) -> None:
        super().__init__(one_line(message))
        self.code = code
        self.fields = fields


class Request(NamedTuple):  # not a dataclass: the commands must not import dataclasses
    """A valid request. ``seconds`` is set for ``talk`` only."""

    cmd: str
    seconds: float | None = None

    def payload(self) -> dict[str, Any]:
        """The request as the client sends it."""
        if self.seconds is None:
            return {"cmd": self.cmd}
        return {"cmd": self.cmd, "seconds": self.seconds}


def one_line(message: str) -> str:
    """``message`` folded onto one line and cut short: replies and errors are single lines."""
    text = " ".join(str(message).split())
    return text if len(text) <= _ERROR_MAX else text[: _ERROR_MAX - 3] + "..."


def _show(value: Any) -> str:
    """A JSON value as it appears in an error message, shortened."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):  # pragma: no cover - json.loads only yields dumpable values
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_seconds(value: Any) -> str | None:
    """Why ``value`` is not a valid talk duration, or None. Shared with the CLI's --seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f'"seconds" must be {_SECONDS_RULE}, got {_show(value)}'
    # Compared as is, not converted: an int too big for a float must not raise OverflowError.
    # NaN fails the comparison too.
    if not SECONDS_MIN <= value <= SECONDS_MAX:
        return f'"seconds" must be {_SECONDS_RULE}, got {_show(value)}'
    return None


def parse_request(line: bytes | str) -> Request | dict[str, Any]:
    """One request line -> the :class:`Request`, or the error reply to send. Never raises."""
    if len(line) > MAX_LINE:
        return error(f"request line too long (over {MAX_LINE} bytes)")
    try:
        text = line.decode("utf-8") if isinstance(line, bytes) else line
        data = json.loads(text)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return error("bad request: not JSON (send one JSON object per line)")
    if not isinstance(data, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
        return error(f"bad request: expected a JSON object, got {kind.get(type(data), 'a number')}")
    if "cmd" not in data:
        return error(f'bad request: missing "cmd"; {_VALID}')
    cmd = data["cmd"]
    if not isinstance(cmd, str) or cmd not in COMMANDS:
        return error(f"bad request: unknown cmd {_show(cmd)}; {_VALID}")
    if cmd != "talk":
        return Request(cmd)
    if "seconds" not in data:
        return error(f'bad request: talk needs "seconds" ({_SECONDS_RULE})')
    problem = check_seconds(data["seconds"])
    if problem:
        return error(f"bad request: {problem}")
    return Request(cmd, float(data["seconds"]))


def ok(**fields: Any) -> dict[str, Any]:
    """A success reply carrying ``fields`` (``status=...``, ``turn=...``)."""
    return {"ok": True, **fields}


def error(message: str, code: str | None = None, **fields: Any) -> dict[str, Any]:
    """A failure reply; the message is folded to one line."""
    reply = {"ok": False, "error": one_line(message), **fields}
    if code is not None:
        reply["code"] = code
    return reply


def encode(message: dict[str, Any]) -> bytes:
    """A request or reply as one line of JSON, newline included.

    Values JSON cannot hold (a Path, an enum in a status dict) are written as their str(),
    so a handler's odd value never costs the reply.
    """
    try:
        text = json.dumps(message, default=str, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):  # a circular reference or a non-string key type
        text = json.dumps(error("internal error: the reply could not be encoded"))
    return text.encode("utf-8") + b"\n"


def decode_reply(line: bytes) -> dict[str, Any]:
    """A reply line as the client reads it; ControlError if it is not a reply."""
    try:
        data = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
        raise ControlError("the appliance sent an unreadable reply")
    if not data["ok"] and not isinstance(data.get("error"), str):
        data["error"] = "request failed (no reason given)"
    return data
