"""The terminal panel alone on a real terminal (a tmux pane), for tests/test_terminal_tmux.py.

    python tests/terminal_harness.py EVENTS_FILE [--log-after S]

Runs :class:`~appliance.panel.terminal.TerminalPanel` on its own stdin/stderr with the
service's logging to stderr, shows the idle state, and appends one line per button event to
EVENTS_FILE (``ButtonDown <monotonic>``); ``ready`` once the panel is open. ``--log-after S``
logs a line S seconds after the start (the status line must stay off it). SIGTERM ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.core.state_machine import State
from appliance.logs import setup_logging
from appliance.panel.terminal import TerminalPanel


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("events", type=Path)
    parser.add_argument("--log-after", type=float)
    args = parser.parse_args()
    setup_logging("info")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def record(event) -> None:
        with args.events.open("a") as f:
            f.write(f"{type(event).__name__} {event.at:.3f} {time.monotonic():.3f}\n")

    panel = TerminalPanel(loop, record)
    panel.show(State.IDLE)
    with args.events.open("a") as f:
        f.write("ready\n")
    if args.log_after is not None:
        loop.call_later(args.log_after, logging.getLogger("appliance").info, "a log line")
    try:
        await stop.wait()
    finally:
        panel.close()


if __name__ == "__main__":
    asyncio.run(main())
