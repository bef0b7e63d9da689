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


class AnswerTranscripts:
    """Assembles each answer item's words from whatever the server sent.

    Preference: the ``*.done`` transcript, else the joined deltas, else the text inside
    ``output_item.done``. Yandex documents some of these as unsupported, so any may be missing.
    """

    def __init__(self) -> None:
        self._deltas: dict[str, list[str]] = {}
        self._final: dict[str, str] = {}

    def delta(self, item_id: str, text: str) -> None:
        self._deltas.setdefault(item_id, []).append(text)

    def done(self, item_id: str, text: str) -> None:
        self._final[item_id] = text

    def finish(self, item_id: str, fallback: str | None = None) -> str:
        deltas = self._deltas.pop(item_id, None)
        final = self._final.pop(item_id, None)
        return final or ("".join(deltas) if deltas else "") or fallback or ""

    def finish_all(self) -> list[str]:
        """Every item still open (its output_item.done never came), in arrival order."""
        items = list(dict.fromkeys([*self._deltas, *self._final]))
        return [self.finish(item) for item in items]

    def clear(self) -> None:
        self._deltas.clear()
        self._final.clear()
