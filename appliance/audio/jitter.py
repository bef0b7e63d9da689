"""When an answer may start to play: the adaptive reserve against network jitter. Pure.

Why a reserve: the server streams an answer in deltas over the network. When it sends faster
than real time (the usual case: a sentence at once), starting at the first delta is safe. When
it streams at about real time, a delta that comes 30 ms late, with nothing buffered, is 30 ms of
silence in the middle of a word (an underrun). So an answer starts only once it has a reserve.

The start rule, for an answer whose first delta came at ``t0`` (ms on any monotonic clock), with
``A`` ms of audio received since: start when ``now - t0 >= reserve`` (waited the reserve: at
real time that is the reserve buffered) or ``A - (now - t0) >= reserve`` (received the reserve
AHEAD of real time: a burst; a server sending at 5x starts after about a fifth of the reserve),
or when the answer ended. A stream slower than real time is therefore never held longer than
the reserve. After an underrun the shell holds the rest of the answer again under the same rule
(counted from the underrun), so one late delta makes one gap, not a stutter of small ones.

How the reserve adapts (per session, bounded by ``min_ms``..``max_ms``): each answer's arrivals
are kept (one pair per delta), and when it ends the reserve it would have needed is worked out
in hindsight: the smallest reserve whose start, by the rule above, had every delta arrive before
the audio received ahead of it had been played, with ``read_ahead_ms`` to spare (a device takes
a period or two at a time, ahead of the clock). The reserve rises to that at once and falls
by a quarter per answer towards 1.2x the most that any of the last 16 answers needed (one
lucky answer does not undo what the others needed; the next may need a little more than the
worst of them: 0 gaps in 800 simulated answers at +-50 ms), and all the way after an answer
that came at least twice as fast as real time (a server that bursts: the second answer
already starts after a few ms). An underrun raises it at once
(x1.5), so the rest of that answer already re-buffers with more.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

INITIAL_MS = 160.0  # covers +-50 ms of jitter in 40 ms deltas before anything is learned
MIN_MS = 40.0
MAX_MS = 600.0
STEP_MS = 10.0  # the hindsight search's resolution
FALL = 0.25  # how far the reserve falls towards a smaller need, per answer ...
BURST = 2.0  # ... all the way after an answer that came at least this much faster than real time
MAX_ARRIVALS = 4096  # per answer (an hour-long answer keeps its first ones only)
HISTORY = 16  # the reserve falls no lower than MARGIN x the most these last answers needed
MARGIN = 1.2  # (the next answer may need a little more than the worst of the last 16)


@dataclass
class ReservePolicy:
    """The reserve of one session. Times in ms on the caller's monotonic clock."""

    read_ahead_ms: float = 40.0
    reserve_ms: float = INITIAL_MS
    min_ms: float = MIN_MS
    max_ms: float = MAX_MS
    underruns: int = 0  # mid-answer underruns reported by the shell, this session
    answers: int = 0  # answers ended (their hindsight taken)
    _needs: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    # the current answer
    _arrivals: list[tuple[float, float]] = field(default_factory=list)  # (t, audio_ms) per delta
    _received_ms: float = 0.0
    _wait_from: float | None = None  # waiting for the reserve since (None: playing or idle)
    _wait_received: float = 0.0  # audio received when the wait began

    def __post_init__(self) -> None:
        self.reserve_ms = self._bounded(self.reserve_ms)

    def _bounded(self, ms: float) -> float:
        return float(min(self.max_ms, max(self.min_ms, ms)))

    # ---- one answer --------------------------------------------------------------------------

    @property
    def waiting(self) -> bool:
        """The answer is held for its reserve."""
        return self._wait_from is not None

    def begin(self, now: float) -> None:
        """A new answer's first delta is about to arrive: hold it for the reserve."""
        self._arrivals = []
        self._received_ms = 0.0
        self._wait_from, self._wait_received = now, 0.0

    def arrived(self, now: float, audio_ms: float) -> None:
        """A delta of ``audio_ms`` arrived."""
        if len(self._arrivals) < MAX_ARRIVALS:
            self._arrivals.append((now, audio_ms))
        self._received_ms += audio_ms

    def ready(self, now: float) -> bool:
        """Whether a held answer may start now (True when it is not held); the shell then
        calls :meth:`started`."""
        if self._wait_from is None:
            return True
        waited = now - self._wait_from
        ahead = (self._received_ms - self._wait_received) - waited
        return waited >= self.reserve_ms or ahead >= self.reserve_ms

    def deadline(self) -> float | None:
        """When a held answer starts at the latest (the waited-the-reserve rule)."""
        return None if self._wait_from is None else self._wait_from + self.reserve_ms

    def started(self) -> None:
        """The shell let the answer play (its reserve is there, or it ended, or was cut)."""
        self._wait_from = None

    def underran(self, now: float) -> None:
        """The answer ran dry while playing: a larger reserve at once, and hold again."""
        self.underruns += 1
        self.reserve_ms = self._bounded(
            max(self.reserve_ms * 1.5, self.reserve_ms + self.read_ahead_ms / 2)
        )
        self._wait_from, self._wait_received = now, self._received_ms

    def end(self) -> float:
        """The answer is complete: learn from it. Returns the reserve it needed (hindsight)."""
        self._wait_from = None
        arrivals, self._arrivals = self._arrivals, []
        if not arrivals:
            return self.reserve_ms
        need = needed_reserve(arrivals, self.read_ahead_ms, self.min_ms, self.max_ms)
        self.answers += 1
        self._needs.append(need)
        target = self._bounded(MARGIN * max(self._needs))  # a lucky answer undoes nothing
        span = arrivals[-1][0] - arrivals[0][0]
        burst = sum(ms for _, ms in arrivals) >= BURST * span
        if target > self.reserve_ms or burst:
            self.reserve_ms = target
        else:
            self.reserve_ms = self._bounded(self.reserve_ms - FALL * (self.reserve_ms - target))
        return need


def start_time(arrivals: list[tuple[float, float]], reserve_ms: float) -> float:
    """When the start rule starts an answer with these arrivals (relative to the first one);
    the last arrival when the answer ended first."""
    t0 = arrivals[0][0]
    received = 0.0
    for t, ms in arrivals:
        waited = t - t0
        if waited >= reserve_ms:
            return reserve_ms  # the timer fired before this delta came
        received += ms
        if received - waited >= reserve_ms:
            return waited
    last = arrivals[-1][0] - t0
    return min(last, reserve_ms)


def safe_start(arrivals: list[tuple[float, float]], read_ahead_ms: float) -> float:
    """The earliest start (ms after the first arrival) after which no delta came too late:
    every delta arrived before the audio received ahead of it, less the read-ahead, had
    played."""
    t0 = arrivals[0][0]
    need = 0.0
    received = 0.0
    for k, (t, ms) in enumerate(arrivals):
        if k:
            need = max(need, (t - t0) - received + read_ahead_ms)
        received += ms
    return need


def needed_reserve(
    arrivals: list[tuple[float, float]], read_ahead_ms: float, min_ms: float, max_ms: float
) -> float:
    """The smallest reserve (in STEP_MS steps, within the bounds) the start rule would have
    played these arrivals with, without an underrun."""
    need = safe_start(arrivals, read_ahead_ms)
    reserve = min_ms
    while reserve < max_ms:
        if start_time(arrivals, reserve) >= need:
            return reserve
        reserve += STEP_MS
    return max_ms
