"""The local control socket: drive the running appliance from a shell, scripts and tests.

:mod:`~appliance.control.protocol` is the wire format (pure), :mod:`~appliance.control.server`
the daemon's side, :mod:`~appliance.control.client` the client and the ``press``, ``release``,
``talk`` and ``status`` commands.
"""

from appliance.control.client import add_parsers, request, send
from appliance.control.protocol import ControlError
from appliance.control.server import ControlHandler, ControlServer

__all__ = ["ControlError", "ControlHandler", "ControlServer", "add_parsers", "request", "send"]
