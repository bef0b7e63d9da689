"""What the owner actually heard of each answer: the basis of an honest barge-in. Pure.

The server sends audio faster than real time, so "received" is not "heard". The playback shell
reports how many samples the output device has been handed (at the answer's rate, monotonic);
the tracker attributes them, in queue order, to the answer items they belong to. On barge-in,
``conversation.item.truncate`` then says exactly what was played, clamped to what was received.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass
class _Segment:
    item_id: str
    start: int  # position in the queue (samples since the tracker started)
    end: int


class PlaybackTracker:
    """Queue positions in samples at ``rate`` (the Realtime output rate)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._segments: deque[_Segment] = deque()
        self._queued = 0  # queue position after the last queued sample
        self._played = 0  # samples handed to the device so far
        self._received: dict[str, int] = {}  # per item, samples received (bounded, see prune)
        self._heard: dict[str, int] = {}  # per item, samples handed to the device

    # ---- fed by the shell -------------------------------------------------------------

    def queued(self, item_id: str, samples: int) -> None:
        """``samples`` of ``item_id`` were put in the playback queue, after everything else."""
        if samples <= 0:
            return
        start = max(self._queued, self._played)
        last = self._segments[-1] if self._segments else None
        if last is not None and last.item_id == item_id and last.end == start:
            last.end += samples
        else:
            self._segments.append(_Segment(item_id, start, start + samples))
        self._queued = start + samples
        self._received[item_id] = self._received.get(item_id, 0) + samples
        self._heard.setdefault(item_id, 0)

    def played_up_to(self, total: int) -> None:
        """The device has been handed ``total`` samples since the start (monotonic)."""
        if total <= self._played:
            return
        self._played = total
        while self._segments:
            seg = self._segments[0]
            heard_end = min(seg.end, total)
            if heard_end > seg.start:
                self._heard[seg.item_id] += heard_end - seg.start
                seg.start = heard_end
            if seg.start >= seg.end:
                self._segments.popleft()
            else:
                break
        self._prune()

    def flush(self) -> dict[str, int]:
        """Forget everything not yet played; returns the heard ms of each cut item."""
        cut = {seg.item_id: self.audio_end_ms(seg.item_id) for seg in self._segments}
        self._segments.clear()
        self._queued = self._played
        return cut

    # ---- read by the appliance --------------------------------------------------------

    @property
    def playing_item(self) -> str | None:
        """The item being heard now (or next), None when the queue is drained."""
        return self._segments[0].item_id if self._segments else None

    @property
    def queue_end(self) -> int:
        """The position the next queued sample will take."""
        return max(self._queued, self._played)

    @property
    def drained(self) -> bool:
        return not self._segments

    @property
    def pending_samples(self) -> int:
        return sum(seg.end - seg.start for seg in self._segments)

    def heard_samples(self, item_id: str) -> int:
        return min(self._heard.get(item_id, 0), self._received.get(item_id, 0))

    def received_ms(self, item_id: str) -> int:
        return self._received.get(item_id, 0) * 1000 // self.rate

    def audio_end_ms(self, item_id: str) -> int:
        """Milliseconds of ``item_id`` actually played, never more than was received."""
        return self.heard_samples(item_id) * 1000 // self.rate

    def _prune(self, keep: int = 32) -> None:
        # A box answers thousands of questions: remember only recent items.
        if len(self._received) > keep:
            live = {seg.item_id for seg in self._segments}
            for item in list(self._received)[: len(self._received) - keep]:
                if item not in live:
                    self._received.pop(item, None)
                    self._heard.pop(item, None)
