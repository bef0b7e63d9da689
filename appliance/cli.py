"""The ``appliance`` command: argument parsing, exit codes, and nothing else.

Exit codes: 0 ok, 1 failure, 2 usage, 77 the API key was refused (EX_NOPERM),
78 bad configuration (EX_CONFIG). No traceback reaches the user for any of them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from appliance import __version__
from appliance.config import ApiKey, Config, ConfigError, find_config_path, load_config
from appliance.config.loader import provider_warnings
from appliance.control.client import add_parsers as add_control_parsers
from appliance.logs import setup_logging
from appliance.realtime.trace import TraceFileError, TraceWriter

EX_USAGE, EX_NOPERM, EX_CONFIG = 2, 77, 78
TRACE_HELP = (
    "write every Realtime event sent and received to PATH as JSON lines (audio as byte "
    "counts, never the API key): attach it to a bug report"
)


def _config(args: argparse.Namespace) -> Config:
    config = load_config(find_config_path(getattr(args, "config", None)))
    setup_logging("debug" if getattr(args, "verbose", False) else config.logging.level)
    for warning in provider_warnings(config):
        logging.getLogger("appliance").warning("%s", warning)
    return config


def cmd_ask(args: argparse.Namespace) -> int:
    from appliance.ask import AskFailed, ask
    from appliance.audio.wavfile import WavError, read_for_realtime

    config = _config(args)
    key = config.require_api_key()
    try:
        question = read_for_realtime(args.question, config.realtime.input_rate)
    except WavError as exc:
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
    return TraceWriter(path, secrets=[key.reveal()] if key is not None else [])


def cmd_run(args: argparse.Namespace) -> int:
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
    p.add_argument("question", type=Path, metavar="QUESTION.wav")
    p.add_argument(
        "-o", "--output", type=Path, metavar="ANSWER.wav", help="where to write the answer"
    )
    p.add_argument("--trace", type=Path, metavar="PATH", help=TRACE_HELP)
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
    p.add_argument("--trace", type=Path, metavar="PATH", help=TRACE_HELP)
    p.set_defaults(func=cmd_check)
    add_control_parsers(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return EX_CONFIG
    except KeyboardInterrupt:
        return 130
    except Exception:  # the last line of defence: one line for the user, the detail in the log
        logging.getLogger("appliance").debug("unexpected error", exc_info=True)
        print(
            f"appliance: unexpected error ({sys.exc_info()[0].__name__}); run with -v for details",
            file=sys.stderr,
        )
        return 1
