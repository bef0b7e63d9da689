"""The control socket client and the commands built on it: press, release, talk, status.

These commands are what a person types over SSH and what Home Assistant and the black-box
tests run, so each prints one short line (status: a few) and exits 0, or prints one
``appliance: <reason>`` line to stderr and exits 1. ``--socket PATH`` reaches a daemon
without reading the configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from typing import Any

from appliance.control import protocol
from appliance.control.protocol import ControlError

TIMEOUT_S = 5.0  # press, release, status: the daemon answers at once
TALK_MARGIN_S = 30.0  # talk: the held seconds plus the answer's time
_REPLY_LIMIT = 1 << 20  # a status dict is small; a megabyte is no legitimate reply


async def request(
    path: str | os.PathLike[str],
    payload: dict[str, Any],
    timeout: float = TIMEOUT_S,  # noqa: ASYNC109 - one call, one deadline, for every caller
) -> dict[str, Any]:
    """Send one request, return the reply (``ok`` true or false); ControlError if no reply."""
    try:
        async with asyncio.timeout(timeout):
            return await _exchange(path, payload)
    except TimeoutError:
        raise ControlError(
            f"no answer from the appliance within {timeout:g} s (control socket {path})"
        ) from None


async def _exchange(path: str | os.PathLike[str], payload: dict[str, Any]) -> dict[str, Any]:
    try:
        reader, writer = await asyncio.open_unix_connection(path, limit=_REPLY_LIMIT)
    except (FileNotFoundError, ConnectionRefusedError):
        raise ControlError(f"the appliance is not running (no control socket at {path})") from None
    except PermissionError:
        raise ControlError(
            f"permission denied on control socket {path} (is your user in the appliance group?)"
        ) from None
    except OSError as exc:
        raise ControlError(f"cannot connect to control socket {path}: {exc.strerror}") from None
    try:
        writer.write(protocol.encode(payload))
        await writer.drain()
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise ControlError("the appliance closed the connection without answering") from None
        line = exc.partial
    except asyncio.LimitOverrunError:
        raise ControlError("the appliance sent an unreadable reply (too long)") from None
    except ConnectionError:
        raise ControlError("the appliance closed the connection without answering") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return protocol.decode_reply(line)


def send(
    path: str | os.PathLike[str], payload: dict[str, Any], timeout: float = TIMEOUT_S
) -> dict[str, Any]:
    """:func:`request` for code without an event loop (the CLI commands)."""
    return asyncio.run(request(path, payload, timeout))


# --- the CLI commands -----------------------------------------------------------------------


def socket_path(args: argparse.Namespace) -> str:
    """``--socket`` if given, else ``control.socket`` of the configuration (``--config``)."""
    if getattr(args, "socket", None):
        return args.socket
    # Imported here: a plain `--socket` run needs no YAML parsing at all.
    from appliance.config import find_config_path, load_config

    return load_config(find_config_path(getattr(args, "config", None))).control.socket


def _call(
    args: argparse.Namespace, payload: dict[str, Any], timeout: float
) -> dict[str, Any] | None:
    """The ``ok`` reply, or None after printing the one-line reason to stderr."""
    try:
        reply = send(socket_path(args), payload, timeout)
    except ControlError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return None
    if not reply["ok"]:
        print(f"appliance: {reply['error']}", file=sys.stderr)
        return None
    return reply


def cmd_press(args: argparse.Namespace) -> int:
    if _call(args, {"cmd": "press"}, TIMEOUT_S) is None:
        return 1
    print("pressed")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    if _call(args, {"cmd": "release"}, TIMEOUT_S) is None:
        return 1
    print("released")
    return 0


def cmd_talk(args: argparse.Namespace) -> int:
    reply = _call(args, {"cmd": "talk", "seconds": args.seconds}, args.seconds + TALK_MARGIN_S)
    if reply is None:
        return 1
    turn = reply.get("turn")
    if args.json:
        print(json.dumps(turn, ensure_ascii=False))
        return 0
    print(f"talked for {args.seconds:g} s")
    if isinstance(turn, dict):
        print("\n".join(describe(turn, indent=1)))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    reply = _call(args, {"cmd": "status"}, TIMEOUT_S)
    if reply is None:
        return 1
    status = reply.get("status")
    if args.json:
        print(json.dumps(status, ensure_ascii=False))
    elif isinstance(status, dict):
        print("\n".join(describe(status)) or "(no status)")
    else:
        print(status)
    return 0


def describe(data: dict[str, Any], indent: int = 0) -> list[str]:
    """A dict as ``key: value`` lines, nested dicts indented: for a person, not a parser."""
    pad = "  " * indent
    lines = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{key}:")
            lines.extend(describe(value, indent + 1))
        else:
            lines.append(f"{pad}{key}: {_human(value)}")
    return lines


def _human(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ", ".join(_human(v) for v in value) or "-"
    if isinstance(value, dict):
        return "-"
    return str(value)


def _seconds(text: str) -> float:
    """argparse type of ``--seconds``: the server's own rule, checked before connecting."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    problem = protocol.check_seconds(value)
    if problem:
        raise argparse.ArgumentTypeError(problem.replace('"seconds" ', ""))
    return value


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add press, release, talk and status to ``sub`` (the main parser's subparsers)."""
    connect = argparse.ArgumentParser(add_help=False)
    connect.add_argument(
        "--socket",
        metavar="PATH",
        help="the control socket (default: control.socket of the configuration)",
    )
    parents = [common, connect]

    p = sub.add_parser(
        "press",
        parents=parents,
        help="press the button (until `appliance release`)",
        description="Press the button of the running appliance, as if held down.",
    )
    p.set_defaults(func=cmd_press)

    p = sub.add_parser(
        "release",
        parents=parents,
        help="release the button",
        description="Release the button pressed with `appliance press`.",
    )
    p.set_defaults(func=cmd_release)

    p = sub.add_parser(
        "talk",
        parents=parents,
        help="hold the button for some seconds and wait for the answer",
        description="Hold the button for SECONDS, release it, and wait until the answer "
        "has been spoken; print the turn's summary.",
    )
    p.add_argument(
        "--seconds",
        type=_seconds,
        default=3.0,
        metavar="N",
        help=f"how long to hold the button ({protocol.SECONDS_MIN:g} to "
        f"{protocol.SECONDS_MAX:g}; default 3)",
    )
    p.add_argument("--json", action="store_true", help="print the turn summary as JSON")
    p.set_defaults(func=cmd_talk)

    p = sub.add_parser(
        "status",
        parents=parents,
        help="show what the appliance is doing",
        description="Show the running appliance's state.",
    )
    p.add_argument("--json", action="store_true", help="print the status as one line of JSON")
    p.set_defaults(func=cmd_status)
