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
from appliance.config import Config, ConfigError, find_config_path, load_config
from appliance.logs import setup_logging

EX_USAGE, EX_NOPERM, EX_CONFIG = 2, 77, 78


def _config(args: argparse.Namespace) -> Config:
    config = load_config(find_config_path(getattr(args, "config", None)))
    setup_logging("debug" if getattr(args, "verbose", False) else config.logging.level)
    return config


def cmd_ask(args: argparse.Namespace) -> int:
    from appliance.ask import AskFailed, ask
    from appliance.audio.wavfile import WavError, read_for_realtime

    config = _config(args)
    key = config.require_api_key()
    try:
        question = read_for_realtime(args.question)
    except WavError as exc:
        print(f"appliance ask: {exc}", file=sys.stderr)
        return EX_USAGE
    try:
        return asyncio.run(ask(config, key, question, args.output))
    except AskFailed as exc:
        print(f"appliance ask: {exc}", file=sys.stderr)
        return exc.exit_code


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
    p.set_defaults(func=cmd_ask)
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
