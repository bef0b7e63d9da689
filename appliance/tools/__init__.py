"""The tools the voice can use, put together from the ``tools`` config section.

- :mod:`appliance.tools.builtin`: the four the box answers itself (time, volume, silence,
  status), reaching the box through :class:`~appliance.tools.builtin.ToolHost`;
- :mod:`appliance.tools.yandex`: Yandex's file and web search, which the server answers;
- :mod:`appliance.tools.webhook`: the owner's HTTP tools.

The registry is built once per session: tools are declared in ``session.update``, so a change
of the ``tools`` section means a new session (the daemon's reload does that).
"""

from __future__ import annotations

from appliance.config import Config
from appliance.realtime.tools import ToolRegistry
from appliance.tools.builtin import ToolHost, builtin_tools
from appliance.tools.state import state_file
from appliance.tools.webhook import webhook_tools
from appliance.tools.yandex import server_side_tools

__all__ = ["ToolHost", "build_registry"]


def build_registry(config: Config, host: ToolHost) -> ToolRegistry:
    """The enabled built-ins, the webhook tools and the Yandex server-side tools.

    A webhook's ``{file: PATH}`` header is relative to the config file, like ``api_key_file``.
    """
    tools = config.tools
    webhooks = webhook_tools(tools.webhooks, base_dir=config.path.parent)
    return ToolRegistry(
        [*builtin_tools(tools, host, state_file(config)), *webhooks],
        server_side=server_side_tools(tools),
    )
