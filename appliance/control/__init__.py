"""The local control socket: drive the running appliance from a shell, scripts and tests.

:mod:`~appliance.control.protocol` is the wire format (pure), :mod:`~appliance.control.server`
the daemon's side, :mod:`~appliance.control.client` the client and the ``press``, ``release``,
``talk`` and ``status`` commands.
"""

from typing import Any

from appliance.control.client import add_parsers, request, send
from appliance.control.protocol import ControlError


def __getattr__(name: str) -> Any:
    # The server (and asyncio with it) only when asked for: the commands must start fast.
    if name in ("ControlHandler", "ControlServer"):
        from appliance.control import server

        return getattr(server, name)
    raise AttributeError(name)


__all__ = ["ControlError", "ControlHandler", "ControlServer", "add_parsers", "request", "send"]
