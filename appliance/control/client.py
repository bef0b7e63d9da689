"""The control socket client and the commands built on it: press, release, talk, status.

These commands are what a person types over SSH and what Home Assistant and the black-box
tests run, so each prints one short line (status: a few) and exits 0, or prints one
``appliance: <reason>`` line to stderr and exits non-zero: 1 the appliance cannot be reached,
3 not connected, 4 no microphone or speaker, 5 the turn failed (talk), 77 the key was refused.
``--socket PATH`` reaches a daemon without reading the configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from typing import Any

from appliance.control import paths, protocol
from appliance.control.protocol import ControlError

TIMEOUT_S = 5.0  # press, release, status: the daemon answers at once
TALK_MARGIN_S = 30.0  # talk: the held seconds plus the answer's time
_REPLY_LIMIT = 1 << 20  # a status dict is small; a megabyte is no legitimate reply

# Exit codes of press, release, talk and status (the README's table).
EXIT_FAILED = 1  # the appliance is not running, cannot be reached, or answered an error
EXIT_OFFLINE = 3  # not connected to the Realtime API (or still starting): nothing happened
EXIT_NO_AUDIO = 4  # no microphone or speaker: nothing happened
EXIT_TURN_FAILED = 5  # talk: the turn failed, timed out or was cancelled
EXIT_KEY_REFUSED = 77  # the API key was refused: nothing happened
EXIT_CODES = {
    protocol.OFFLINE: EXIT_OFFLINE,
    protocol.NO_AUDIO: EXIT_NO_AUDIO,
    protocol.TURN_FAILED: EXIT_TURN_FAILED,
    protocol.KEY_REFUSED: EXIT_KEY_REFUSED,
}


async def request(
    path: str | os.PathLike[str],
    payload: dict[str, Any],
    timeout: float = TIMEOUT_S,  # noqa: ASYNC109 - one call, one deadline, for every caller
) -> dict[str, Any]:
    """:func:`send` for code in an event loop (tests, the bench), in a worker thread."""
    import asyncio  # here: the commands themselves never start an event loop

    return await asyncio.to_thread(send, path, payload, timeout)


def send(
    path: str | os.PathLike[str], payload: dict[str, Any], timeout: float = TIMEOUT_S
) -> dict[str, Any]:
    """Send one request, return the reply (``ok`` true or false); ControlError if no reply.

    Plain blocking sockets: the commands import neither asyncio nor anything heavy.
    """
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(
                f"the appliance is not running (no control socket at {path})"
            ) from None
        except PermissionError:
            raise ControlError(
                f"permission denied on control socket {path} (is your user in the appliance group?)"
            ) from None
        except TimeoutError:
            raise _no_answer(path, timeout) from None
        except OSError as exc:
            raise ControlError(
                f"cannot connect to control socket {path}: {exc.strerror or exc}"
            ) from None
        line = _exchange(sock, protocol.encode(payload), deadline, path, timeout)
    finally:
        sock.close()
    return protocol.decode_reply(line)


def _no_answer(path: object, timeout: float) -> ControlError:
    return ControlError(
        f"no answer from the appliance within {timeout:g} s (control socket {path})"
    )


def _exchange(
    sock: socket.socket, data: bytes, deadline: float, path: object, timeout: float
) -> bytes:
    closed = ControlError("the appliance closed the connection without answering")
    received = b""
    try:
        sock.sendall(data)
        while b"\n" not in received:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _no_answer(path, timeout)
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
            if len(received) > _REPLY_LIMIT:
                raise ControlError("the appliance sent an unreadable reply (too long)")
    except TimeoutError:
        raise _no_answer(path, timeout) from None
    except (ConnectionError, OSError):
        raise closed from None
    if not received:
        raise closed
    return received.split(b"\n", 1)[0]


# --- the CLI commands -----------------------------------------------------------------------


def socket_paths(args: argparse.Namespace) -> list[str]:
    """``--socket``, else ``control.socket`` of the configuration, else the default places.

    The key is not read: a user who may not read it may still ask for the status. A plain
    config.yaml is scanned here; anything less plain goes through the real loader.
    """
    if getattr(args, "socket", None):
        return [args.socket]
    explicit = getattr(args, "config", None)
    configured: str | object | None = paths.UNSURE
    found = explicit or next((c for c in paths.CONFIG_CANDIDATES if os.path.exists(c)), None)
    if found is not None:
        try:
            with open(found, encoding="utf-8") as f:
                configured = paths.configured_socket(f.read())
        except (OSError, ValueError):
            configured = paths.UNSURE  # the loader says what is wrong, with the file's name
    elif explicit is None:
        configured = None  # no config.yaml here: the daemon's default places
    if configured is paths.UNSURE:
        from appliance.config import find_config_path, load_config

        configured = load_config(find_config_path(explicit), resolve_key=False).control.socket
    if configured:
        return [str(configured)]
    return paths.client_sockets()


def _send_first(candidates: list[str], payload: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send to the first candidate with a socket file (the last one when none has)."""
    for path in candidates[:-1]:
        if os.path.exists(path):
            return send(path, payload, timeout)
    if len(candidates) > 1 and not os.path.exists(candidates[-1]):
        raise ControlError(
            "the appliance is not running (no control socket at " + " or ".join(candidates) + ")"
        )
    return send(candidates[-1], payload, timeout)


def _call(
    args: argparse.Namespace, payload: dict[str, Any], timeout: float
) -> tuple[dict[str, Any] | None, int]:
    """The ``ok`` reply and 0, or None and the exit code after printing the reason to stderr."""
    try:
        reply = _send_first(socket_paths(args), payload, timeout)
    except ControlError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return None, EXIT_FAILED
    if not reply["ok"]:
        if getattr(args, "json", False) and "turn" in reply:  # talk --json: the failed turn too
            print(json.dumps(reply["turn"], ensure_ascii=False))
        print(f"appliance: {reply['error']}", file=sys.stderr)
        return None, EXIT_CODES.get(reply.get("code"), EXIT_FAILED)
    return reply, 0


def cmd_press(args: argparse.Namespace) -> int:
    reply, code = _call(args, {"cmd": "press"}, TIMEOUT_S)
    if reply is None:
        return code
    print("pressed")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    reply, code = _call(args, {"cmd": "release"}, TIMEOUT_S)
    if reply is None:
        return code
    print("released")
    return 0


def cmd_talk(args: argparse.Namespace) -> int:
    reply, code = _call(
        args, {"cmd": "talk", "seconds": args.seconds}, args.seconds + TALK_MARGIN_S
    )
    if reply is None:
        return code
    turn = reply.get("turn")
    if args.json:
        print(json.dumps(turn, ensure_ascii=False))
        return 0
    print(f"talked for {args.seconds:g} s")
    if isinstance(turn, dict):
        print("\n".join(describe(turn, indent=1)))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    reply, code = _call(args, {"cmd": "status"}, TIMEOUT_S)
    if reply is None:
        return code
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
        help="the control socket (default: control.socket of the configuration, else "
        "$XDG_RUNTIME_DIR/appliance/control.sock, then /run/appliance/control.sock)",
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
