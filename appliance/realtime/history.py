"""The conversation so far, as text, for replay into a renewed session. Pure.

A new WebSocket is a new server session with an empty conversation; replaying the transcripts as
text items lets the model keep the context across renewals and reconnects.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

Role = Literal["user", "assistant"]


@dataclass(frozen=True, slots=True)
class Utterance:
    role: Role
    text: str


class ConversationHistory:
    """Transcripts of both sides, oldest first, bounded by a character budget.

    ``max_chars`` is the replay budget: :meth:`replay` keeps the newest utterances that fit in it.
    Storage is bounded too (a box runs for months), to a few times the budget.
    """

    def __init__(self, max_chars: int, max_items: int = 200) -> None:
        self.max_chars = max_chars
        self._items: deque[Utterance] = deque(maxlen=max_items)

    def add(self, role: Role, text: str) -> None:
        text = text.strip()
        if text:
            self._items.append(Utterance(role, text))

    def replay(self) -> list[Utterance]:
        """The newest utterances whose texts fit in the budget, in chronological order.

        Selection walks from the newest back and stops at the first one that does not fit, so
        the replayed part is always a contiguous, most recent stretch of the conversation.
        """
        chosen: list[Utterance] = []
        used = 0
        for utterance in reversed(self._items):
            if used + len(utterance.text) > self.max_chars:
                break
            chosen.append(utterance)
            used += len(utterance.text)
        chosen.reverse()
        return chosen

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        return iter(self._items)
