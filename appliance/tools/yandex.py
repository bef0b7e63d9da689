"""Yandex's server-side tools: file search over a search index, and web search.

Yandex spells them as function tools with reserved names and ``parameters: {}`` as an object
(its 2026 examples; the 2025 string ``"{}"`` is refused: realtime-protocol.md section 0); for
``file_search`` the description carries the search index id, and for ``web_search`` it is the
plain "Web search" of Yandex's own sample. The server runs them itself: they go to
:class:`~appliance.realtime.tools.ToolRegistry` as ``server_side``, so a call the server happens
to show us is logged and never answered.
"""

from __future__ import annotations

from appliance.config.schema import ToolsConfig
from appliance.protocol.client_events import FunctionTool

FILE_SEARCH = "file_search"
WEB_SEARCH = "web_search"


def server_side_tools(config: ToolsConfig) -> list[FunctionTool]:
    """The Yandex tools switched on in ``tools``: file search (an index id set), web search."""
    tools = []
    if config.file_search.index_id:
        tools.append(FunctionTool(FILE_SEARCH, config.file_search.index_id, {}))
    if config.web_search:
        tools.append(FunctionTool(WEB_SEARCH, "Web search", {}))
    return tools
