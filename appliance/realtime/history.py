"""The conversation so far, as text, for replay into a renewed session. Pure.

A new WebSocket is a new server session with an empty conversation; replaying the transcripts as
text items lets the model keep the context across renewals and reconnects.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from appliance.protocol.server_events import AUDIO_TRANSCRIPT, OUTPUT_TEXT

Role = Literal["user", "assistant"]
RECAP_HEADER = (
    "Earlier in this conversation (a recap for context; do not answer it, wait for the next "
    "question):\n"
)


@dataclass(frozen=True, slots=True)
class Utterance:
    role: Role
    text: str


@dataclass(slots=True)
class _Entry:
    role: Role
    text: str
    item_id: str | None = None


class ConversationHistory:
    """Transcripts of both sides, oldest first, bounded by a character budget.

    ``max_chars`` is the replay budget: :meth:`replay` keeps the newest utterances that fit in it.
    Storage is bounded too (a box runs for months), to a few times the budget. A question's
    place is kept from its commit (:meth:`reserve`): its transcript may arrive after the answer.
    """

    def __init__(self, max_chars: int, max_items: int = 200) -> None:
        self.max_chars = max_chars
        self._items: deque[_Entry] = deque(maxlen=max_items)

    def reserve(self, item_id: str) -> None:
        """The user's question ``item_id`` was committed: its words go here when they come."""
        self._items.append(_Entry("user", "", item_id))

    def add(self, role: Role, text: str, item_id: str | None = None) -> None:
        text = text.strip()
        if not text:
            return
        if item_id is not None:
            for entry in reversed(self._items):
                if entry.item_id == item_id:
                    entry.text = text
                    return
        self._items.append(_Entry(role, text, item_id))

    def _said(self) -> list[Utterance]:
        return [Utterance(e.role, e.text) for e in self._items if e.text]

    def replay(self) -> list[Utterance]:
        """The newest utterances whose texts fit in the budget, in chronological order.

        Selection walks from the newest back and stops at the first one that does not fit, so
        the replayed part is always a contiguous, most recent stretch of the conversation.
        """
        chosen: list[Utterance] = []
        used = 0
        for utterance in reversed(self._said()):
            if used + len(utterance.text) > self.max_chars:
                break
            chosen.append(utterance)
            used += len(utterance.text)
        chosen.reverse()
        return chosen

    def recap(self) -> str:
        """The replayable part as ONE text (``history_replay: recap``), or "" when empty."""
        lines = [f"{u.role.capitalize()}: {u.text}" for u in self.replay()]
        if not lines:
            return ""
        return RECAP_HEADER + "\n".join(lines)

    def __len__(self) -> int:
        return len(self._said())

    def __iter__(self):
        return iter(self._said())


class AnswerWords:
    """Assembles each answer item's words from whatever the server sent, once.

    A server may send an answer's words as ``response.output_text.*`` and also as
    ``response.output_audio_transcript.*``: two channels of the same words, not two answers.
    Per item the preference is the audio transcript (its ``done``, else its deltas), then the
    text (likewise), else the text inside ``output_item.done``. Yandex documents some of these
    as unsupported, so any may be missing.

    Live display (:meth:`delta`'s return value) follows the first channel an item speaks on,
    so words are shown once even when the second channel starts later.
    """

    def __init__(self) -> None:
        # item id -> channel -> [deltas, final or None]; dicts keep arrival order
        self._items: dict[str, dict[str, list]] = {}
        self._live: dict[str, str] = {}  # item id -> the channel shown live

    def _channel(self, item_id: str, channel: str) -> list:
        return self._items.setdefault(item_id, {}).setdefault(channel, [[], None])

    def delta(self, item_id: str, text: str, channel: str = AUDIO_TRANSCRIPT) -> str | None:
        """Record a delta; return it if it is to be shown live, else None (a second channel)."""
        self._channel(item_id, channel)[0].append(text)
        live = self._live.setdefault(item_id, channel)
        return text if live == channel else None

    def done(self, item_id: str, text: str, channel: str = AUDIO_TRANSCRIPT) -> None:
        self._channel(item_id, channel)[1] = text
        self._live.setdefault(item_id, channel)

    def text(self, item_id: str, fallback: str | None = None) -> str:
        """The item's words so far, by the preference above."""
        channels = self._items.get(item_id, {})
        for name in (AUDIO_TRANSCRIPT, OUTPUT_TEXT, *channels):
            if name in channels:
                deltas, final = channels[name]
                words = final or "".join(deltas)
                if words:
                    return words
        return fallback or ""

    def joined(self) -> str:
        """Every item's words, in arrival order, one space between items."""
        return " ".join(t for t in (self.text(item) for item in self._items) if t)

    def finish(self, item_id: str, fallback: str | None = None) -> str:
        words = self.text(item_id, fallback)
        self._items.pop(item_id, None)
        self._live.pop(item_id, None)
        return words

    def finish_all(self) -> list[str]:
        """Every item still open (its output_item.done never came), in arrival order."""
        return [self.finish(item) for item in list(self._items)]

    def clear(self) -> None:
        self._items.clear()
        self._live.clear()
