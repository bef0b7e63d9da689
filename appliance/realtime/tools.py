"""The registry of tools the voice can use, and how a call becomes a ``function_call_output``.

The tools themselves live elsewhere; this module only maps a call's name to a handler, runs it
with a time limit and turns every outcome, failure included, into the string the protocol wants.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from appliance.protocol.client_events import FunctionTool
from appliance.protocol.server_events import FunctionCall

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Any | Awaitable[Any]]


@dataclass(frozen=True)
class Tool:
    """A client-side tool. ``follow_up=False`` marks a tool whose whole point is silence
    (``stop_talking``): its output is still sent, as the protocol wants, but the model is not
    asked to answer it (no ``response.create``) when every call of the response is like it."""

    spec: FunctionTool
    handler: Handler
    timeout_s: float = 10.0
    follow_up: bool = True


def _error(message: str) -> str:
    return json.dumps({"error": message}, ensure_ascii=False)


class ToolRegistry:
    """Tools answered by the box, plus names the server answers itself (Yandex file/web search)."""

    def __init__(self, tools: Iterable[Tool] = (), server_side: Iterable[FunctionTool] = ()):
        self._tools: dict[str, Tool] = {}
        self._server_side = {tool.name: tool for tool in server_side}
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool) -> None:
        if tool.spec.name in self._tools or tool.spec.name in self._server_side:
            raise ValueError(f"tool {tool.spec.name!r} is registered twice")
        self._tools[tool.spec.name] = tool

    def specs(self) -> list[FunctionTool]:
        """Everything declared to the model in ``session.update``."""
        return [tool.spec for tool in self._tools.values()] + list(self._server_side.values())

    def answered_by_server(self, name: str) -> bool:
        return name in self._server_side

    def timeout_of(self, name: str) -> float:
        """How long a call of ``name`` may run (0 for server-side and unknown names)."""
        tool = self._tools.get(name)
        return tool.timeout_s if tool is not None else 0.0

    def follows_up(self, name: str) -> bool:
        """Whether the model answers this call's output (unknown names too: their error is
        worth an answer)."""
        tool = self._tools.get(name)
        return tool is None or tool.follow_up

    async def call(self, call: FunctionCall) -> str:
        """Run the tool; the result (or the error) as the ``output`` string. Never raises."""
        tool = self._tools.get(call.name)
        if tool is None:
            return _error(f"unknown tool: {call.name}")
        try:
            arguments = json.loads(call.arguments) if call.arguments.strip() else {}
        except (ValueError, RecursionError):  # RecursionError: nested past Python's limit
            return _error("arguments are not valid JSON")
        if not isinstance(arguments, Mapping):
            return _error("arguments must be a JSON object")
        try:
            result = tool.handler(dict(arguments))
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(result, tool.timeout_s)
        except TimeoutError:
            log.warning("tool %s timed out after %.0f s", call.name, tool.timeout_s)
            return _error(f"timed out after {tool.timeout_s:g} s")
        except Exception as exc:  # a tool's bug must not take the conversation down
            log.warning("tool %s failed: %s: %s", call.name, type(exc).__name__, exc)
            return _error(f"{type(exc).__name__}: {exc}")
        if isinstance(result, str):
            return result
        try:
            return json.dumps(result, ensure_ascii=False)
        except (TypeError, ValueError):
            return _error("the tool returned a result that is not JSON")
