"""The tool round trip of one session: run each call once, send its output, then ask again.

Protocol rules (realtime-protocol.md §4): every ``function_call`` gets a
``function_call_output``; once all outputs of a response are sent *and* that response's
``response.done`` has arrived, exactly one ``response.create`` asks for the answer. Not when
every call of the response is a no-follow-up tool (``stop_talking``): the owner asked for
silence, so the outputs are sent and nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from appliance.protocol import client_events as ce
from appliance.protocol.server_events import FunctionCall
from appliance.realtime.session import NotConnected
from appliance.realtime.tools import ToolRegistry

log = logging.getLogger("appliance.realtime")

Send = Callable[[dict[str, Any]], Awaitable[None]]


class ToolCalls:
    """Tool calls in flight, grouped by the response that made them."""

    def __init__(self, registry: ToolRegistry) -> None:
        self.registry = registry
        self._seen: set[str] = set()
        # response id -> the calls it made: (task, whether its output wants an answer)
        self._running: dict[str, list[tuple[asyncio.Task, bool]]] = {}
        self._by_call: dict[str, asyncio.Task] = {}
        self._rounds: set[asyncio.Task] = set()
        self._asking: set[asyncio.Task] = set()  # rounds that end with a response.create

    @property
    def busy(self) -> bool:
        """Calls are running, or their outputs are sent and the follow-up is being asked for."""
        return bool(self._rounds) or any(self._running.values())

    @property
    def answer_pending(self) -> bool:
        """A ``response.create`` will follow: calls wanting an answer run, or a round that
        asks again is finishing. False for a round of no-follow-up tools only."""
        return bool(self._asking) or any(
            follow for calls in self._running.values() for _, follow in calls
        )

    def running(self, call_id: str) -> bool:
        """The tool of this call has not produced its output yet."""
        task = self._by_call.get(call_id)
        return task is not None and not task.done()

    def start(self, send: Send, response_id: str, call: FunctionCall) -> None:
        """Run ``call`` (once, however often the server announces it) and send its output."""
        if call.call_id in self._seen:
            return
        self._seen.add(call.call_id)
        if self.registry.answered_by_server(call.name):
            log.info("tool %s is answered by the server", call.name)
            return
        log.info("tool call: %s(%s)", call.name, call.arguments[:200])
        task = asyncio.create_task(self._run(send, call), name=f"tool-{call.name}")
        self._running.setdefault(response_id, []).append(
            (task, self.registry.follows_up(call.name))
        )
        self._by_call[call.call_id] = task
        task.add_done_callback(lambda _: self._by_call.pop(call.call_id, None))

    async def _run(self, send: Send, call: FunctionCall) -> None:
        output = await self.registry.call(call)
        try:
            await send(ce.function_call_output(call.call_id, output))
        except NotConnected:
            log.warning("the result of tool %s was lost with the session", call.name)

    def response_done(
        self, response_id: str, completed: bool, ask_again: Callable[[], Awaitable[None]]
    ) -> None:
        """The calling response ended: once its outputs are sent, ``ask_again`` (if completed,
        and some call wants an answer; a cancelled response means the owner interrupted, so
        the model should stay quiet)."""
        calls = self._running.pop(response_id, [])
        if not calls:
            return
        asks = completed and any(follow for _, follow in calls)
        tasks = [task for task, _ in calls]
        round_ = asyncio.create_task(self._finish(tasks, asks, ask_again), name="tool-round")
        self._rounds.add(round_)
        round_.add_done_callback(self._rounds.discard)
        if asks:
            self._asking.add(round_)
            round_.add_done_callback(self._asking.discard)

    async def _finish(
        self, tasks: list[asyncio.Task], asks: bool, ask_again: Callable[[], Awaitable[None]]
    ) -> None:
        await asyncio.gather(*tasks, return_exceptions=True)
        if not asks:
            return
        try:
            await ask_again()
        except NotConnected:
            log.warning("the answer after a tool call was lost with the session")

    def cancel_all(self) -> list[asyncio.Task]:
        """Forget everything (the session is gone); returns the cancelled tasks to await."""
        tasks = [t for calls in self._running.values() for t, _ in calls] + list(self._rounds)
        for task in tasks:
            task.cancel()
        self._running.clear()
        self._by_call.clear()
        self._rounds.clear()
        self._asking.clear()
        self._seen.clear()
        return tasks

    async def aclose(self) -> None:
        for task in self.cancel_all():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
