"""Helpers shared by the tests that drive the Realtime link or a TurnShell directly."""

from __future__ import annotations

import asyncio
from typing import Any

from appliance.core import state_machine as sm
from appliance.protocol import server_events as ev
from appliance.realtime.link_events import Disconnected

QUESTION = b"\x01\x00" * 4800  # 200 ms at 24 kHz


async def until(link, kinds, timeout=5.0):
    """Events up to and including the first of ``kinds``."""
    seen = []
    async with asyncio.timeout(timeout):
        while True:
            event = await link.next_event()
            seen.append(event)
            if isinstance(event, kinds):
                return seen


async def ask_once(link, question=QUESTION, timeout=5.0):
    """One push-to-talk turn; the events until the final response.done (or a lost link)."""
    link.begin_turn()
    try:
        await link.append_audio(question)
        await link.commit()
        link.ask_when_ready()
        seen = []
        while True:
            seen += await until(link, (ev.ResponseDone, Disconnected), timeout)
            if isinstance(seen[-1], Disconnected) or not seen[-1].answer_follows:
                return seen
    finally:
        link.end_turn()


class FakePanel:
    """Records the LED states shown (the real panel is tested with gpiozero's mock pins)."""

    def __init__(self) -> None:
        self.shown: list[sm.State] = []

    def show(self, state: sm.State) -> None:
        self.shown.append(state)


class FakeTranscripts:
    """Writes nothing (the journal is tested through a real journald)."""

    def user(self, *args: Any) -> None:
        pass

    def assistant(self, *args: Any) -> None:
        pass

    def turn(self, *args: Any, **kwargs: Any) -> None:
        pass
