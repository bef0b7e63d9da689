"""The ``appliance`` command: argument parsing, exit codes, and nothing else.

Exit codes: 0 ok, 1 failure, 2 usage, 77 the API key was refused (EX_NOPERM),
78 bad configuration (EX_CONFIG). No traceback reaches the user for any of them.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from appliance import __version__
from appliance.control.client import add_parsers as add_control_parsers

if TYPE_CHECKING:
    from pathlib import Path

    from appliance.config import ApiKey, Config
    from appliance.realtime.trace import TraceWriter


def _path(text: str) -> Path:
    """argparse type: pathlib is imported only by the commands that take a file."""
    from pathlib import Path

    return Path(text)


# Only what every command needs is imported above: press, release, talk and status must not
# pay for YAML, asyncio, numpy or aiohttp (`appliance status` runs in tens of milliseconds).

EX_USAGE, EX_NOPERM, EX_CONFIG = 2, 77, 78
TRACE_HELP = (
    "write every Realtime event sent and received to PATH as JSON lines (audio as byte "
    "counts, never the API key): attach it to a bug report"
)


def _config(args: argparse.Namespace) -> Config:
    import logging

    from appliance.config import find_config_path, load_config
    from appliance.config.loader import provider_warnings
    from appliance.logs import setup_logging

    config = load_config(find_config_path(getattr(args, "config", None)))
    setup_logging("debug" if getattr(args, "verbose", False) else config.logging.level)
    for warning in provider_warnings(config):
        logging.getLogger("appliance").warning("%s", warning)
    return config


def answer_path_problem(output: Path, question: Path) -> str | None:
    """Why the answer cannot be written to ``output``, or None: found before anything is sent."""
    import contextlib
    import tempfile

    parent = output.parent
    if output.is_dir():
        return f"{output} is a directory; give a file name, e.g. {output / 'answer.wav'}"
    if not parent.is_dir():
        return f"{output}: no such directory: {parent}"
    with contextlib.suppress(OSError):
        if output.exists() and question.exists() and os.path.samefile(output, question):
            return f"{output} is the question file; give another name for the answer"
    # The answer is written to a temporary file beside it and renamed: try exactly that.
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{output.name}.", suffix=".check")
    except OSError as exc:
        return f"{output}: cannot create a file in {parent} ({exc.strerror or exc})"
    os.close(fd)
    os.unlink(probe)
    return None


def cmd_ask(args: argparse.Namespace) -> int:
    if args.output is not None:
        problem = answer_path_problem(args.output, args.question)
        if problem:
            print(f"appliance ask: {problem}", file=sys.stderr)
            return EX_USAGE
    import asyncio

    from appliance.ask import AskFailed, ask
    from appliance.audio.sources import AudioFileError, open_question
    from appliance.realtime.trace import TraceFileError

    config = _config(args)
    key = config.require_api_key()
    try:
        question = open_question(args.question)  # the header only: read while connecting
    except AudioFileError as exc:
        print(f"appliance ask: {exc}", file=sys.stderr)
        return EX_USAGE
    try:
        trace = open_trace(args.trace, key)
    except TraceFileError as exc:
        print(f"appliance ask: {exc}", file=sys.stderr)
        return EX_USAGE
    try:
        return asyncio.run(ask(config, key, question, args.output, trace=trace))
    except AskFailed as exc:
        print(f"appliance ask: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        if trace is not None:
            trace.close()


def open_trace(path: Path | None, key: ApiKey | None) -> TraceWriter | None:
    """The trace of ``--trace PATH`` (a new file each time); :class:`TraceFileError` if the
    file cannot be written."""
    if path is None:
        return None
    from appliance.realtime.trace import TraceWriter

    return TraceWriter(path, secrets=[key.reveal()] if key is not None else [])


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from appliance.config import find_config_path, load_config
    from appliance.control.protocol import ControlError
    from appliance.daemon import Appliance
    from appliance.service.journal import setup_service_logging

    config = load_config(find_config_path(getattr(args, "config", None)))
    setup_service_logging("debug" if getattr(args, "verbose", False) else config.logging.level)
    key = config.require_api_key()
    try:
        return asyncio.run(Appliance(config, key).run())
    except ControlError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return 1


def cmd_devices(args: argparse.Namespace) -> int:
    from appliance.audio.devices import format_device_table, list_devices, open_pyaudio

    _config(args)  # for the log level; the API key is not needed
    pa = open_pyaudio()
    try:
        devices = list_devices(pa)
    finally:
        pa.terminate()
    if not devices:
        print(
            "appliance devices: PortAudio finds no sound device "
            "(no sound card, or ALSA is not configured for this user)",
            file=sys.stderr,
        )
        return 1
    print(format_device_table(devices))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from appliance.check import run_check

    return run_check(args)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,  # so "appliance --config X ask" is not undone by the subparser
        help="configuration file (default: /etc/appliance/config.yaml, then ./config.yaml)",
    )
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log at debug level"
    )

    parser = argparse.ArgumentParser(
        prog="appliance", description="A push-to-talk smart speaker.", parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"appliance {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "ask",
        parents=[common],
        help="ask one question from a WAV file and save the spoken answer",
        description="Send QUESTION.wav (any PCM WAV) to the Realtime API, print both sides "
        "of the conversation, and write the spoken answer to ANSWER.wav.",
    )
    p.add_argument("question", type=_path, metavar="QUESTION.wav")
    p.add_argument(
        "-o", "--output", type=_path, metavar="ANSWER.wav", help="where to write the answer"
    )
    p.add_argument("--trace", type=_path, metavar="PATH", help=TRACE_HELP)
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser(
        "run",
        parents=[common],
        help="run the appliance (the systemd service runs this)",
        description="Run the smart speaker: microphone, speaker, button, LED, the Realtime "
        "session and the control socket, until SIGTERM. SIGHUP reloads the configuration.",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "devices",
        parents=[common],
        help="list the sound devices and the rates they support",
        description="List PortAudio's sound devices: index, name, input and output channels, "
        "the standard rates each supports, and the defaults. audio.input_device and "
        "audio.output_device take an index, part of a name, or default.",
    )
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser(
        "check",
        parents=[common],
        help="check the box: config, key, audio, button, LED, network, clock",
        description="One line per check, ok or FAIL with what to do. Exit 0 when all pass, "
        "77 if the API key was refused, 78 if the configuration is invalid, else 1.",
    )
    p.add_argument("--skip-audio", action="store_true", help="do not touch the sound devices")
    p.add_argument("--skip-network", action="store_true", help="do not contact the Realtime API")
    p.add_argument("--trace", type=_path, metavar="PATH", help=TRACE_HELP)
    p.set_defaults(func=cmd_check)
    add_control_parsers(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, not at exit: a closed pipe is handled below
        return code
    except BrokenPipeError:
        # `appliance status | head -1`: the reader has gone. Say nothing, like any Unix tool,
        # and keep the interpreter's last flush from complaining.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by the pipe
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # ConfigError lives with the schema; if that was never imported, this is not one.
        schema = sys.modules.get("appliance.config.schema")
        if schema is not None and isinstance(exc, schema.ConfigError):
            print(f"appliance: {exc}", file=sys.stderr)
            return EX_CONFIG
        # The last line of defence: one line for the user, the detail in the log.
        import logging

        logging.getLogger("appliance").debug("unexpected error", exc_info=True)
        print(
            f"appliance: unexpected error ({type(exc).__name__}); run with -v for details",
            file=sys.stderr,
        )
        return 1
