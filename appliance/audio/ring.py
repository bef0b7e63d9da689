"""Rings between a PortAudio callback thread and the asyncio loop.

:class:`ChunkRing` (the microphone): the callback's whole work is ``deque.append`` of the bytes
PortAudio handed it (atomic under the GIL: no lock, no copy, no arithmetic); the loop takes
everything at once every 100 ms. :class:`SampleRing` (the speaker): int16 samples read a
period at a time.

SampleRing: one producer, one consumer. The lock guards index arithmetic and one ``memcpy`` of at
most a period or so, never anything that can block; the callback thread never waits on I/O.

- Overrun (the producer is faster than the consumer, e.g. the loop stalled): the OLDEST audio
  is dropped to make room, and counted. Fresh audio matters more than stale audio.
- Underrun (the consumer finds too little) is the consumer's business: :meth:`read_into`
  returns how many frames it filled, and the playback callback pads with silence and counts.
"""

from __future__ import annotations

import mmap
import threading
from collections import deque

import numpy as np


class ChunkRing:
    """The byte chunks of a capture callback, oldest first, at most ``max_chunks`` of them.

    ``append`` is ``deque.append`` itself, so the callback pays one C call. When nobody takes
    for ``max_chunks`` callbacks the oldest chunks are dropped (fresh audio matters more);
    :meth:`take` counts an overrun when it finds the ring full (audio was, or was about to
    be, dropped: the consumer is late).
    """

    def __init__(self, max_chunks: int) -> None:
        if max_chunks <= 0:
            raise ValueError("max_chunks must be positive")
        self.max_chunks = max_chunks
        self._chunks: deque[bytes] = deque(maxlen=max_chunks)
        self.append = self._chunks.append  # the producer's only call
        self.overruns = 0
        self.taken = 0  # chunks taken or cleared so far (the consumer's side)
        self.taken_bytes = 0  # their bytes

    def __len__(self) -> int:
        return len(self._chunks)

    @property
    def oldest(self) -> bytes:
        """The chunk a full ring drops at the next append (IndexError if empty)."""
        return self._chunks[0]

    @property
    def newest(self) -> bytes | None:
        """The last chunk appended and not yet taken (its identity tells new audio came)."""
        try:
            return self._chunks[-1]
        except IndexError:
            return None

    def take(self) -> bytes:
        """Everything appended so far, joined, oldest first; the ring is left empty of it."""
        chunks = self._chunks
        n = len(chunks)
        if n == 0:
            return b""
        if n == chunks.maxlen:
            self.overruns += 1
        popleft = chunks.popleft  # exactly n: what the callback appends meanwhile stays
        taken = [popleft() for _ in range(n)]
        self.taken += n
        data = taken[0] if n == 1 else b"".join(taken)
        self.taken_bytes += len(data)
        return data

    def clear(self) -> int:
        """Drop everything; returns the number of chunks dropped."""
        n = len(self._chunks)
        popleft = self._chunks.popleft
        self.taken_bytes += sum(len(popleft()) for _ in range(n))
        self.taken += n
        return n


class SampleRing:
    """``capacity`` frames of ``channels`` int16 samples each.

    The buffer is an anonymous mapping: its pages take memory when first written, and
    :meth:`release_memory` gives them back while the ring is empty (the speaker at rest). The
    positions go back to the start whenever the ring runs empty, so what is ever touched is
    the longest backlog (an answer that came ahead of its playing), not the whole capacity
    (45 s of audio, ~4 MB, for a box that mostly says a few seconds at a time).
    """

    def __init__(self, capacity: int, channels: int = 1) -> None:
        if capacity <= 0 or channels <= 0:
            raise ValueError("capacity and channels must be positive")
        self.capacity = capacity
        self.channels = channels
        self._map = mmap.mmap(-1, capacity * channels * 2)  # zero pages until written
        self._buf = np.frombuffer(self._map, dtype=np.int16).reshape(capacity, channels)
        self._read = 0  # frames read (or dropped) since the ring was last empty
        self._write = 0  # frames written since the ring was last empty
        self._lock = threading.Lock()
        self.overruns = 0  # writes that had to drop old audio
        self.dropped_frames = 0

    def __len__(self) -> int:
        return self._write - self._read

    @property
    def free(self) -> int:
        return self.capacity - len(self)

    def _shape(self, frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames, dtype=np.int16)
        return frames.reshape(-1, self.channels)

    def write(self, frames: np.ndarray) -> int:
        """Append frames; returns how many old frames were dropped to make room."""
        frames = self._shape(frames)
        n = len(frames)
        if n == 0:
            return 0
        if n > self.capacity:  # only the newest capacity frames can be kept
            extra = n - self.capacity
            frames = frames[extra:]
            n = self.capacity
        else:
            extra = 0
        with self._lock:
            dropped = max(0, len(self) + n - self.capacity)
            if dropped:
                self._read += dropped
            start = self._write % self.capacity
            first = min(n, self.capacity - start)
            self._buf[start : start + first] = frames[:first]
            self._buf[: n - first] = frames[first:]
            self._write += n
            dropped += extra
            if dropped:
                self.overruns += 1
                self.dropped_frames += dropped
        return dropped

    def read_into(self, out: np.ndarray) -> int:
        """Fill ``out`` (frames x channels, or 1-D for mono) from the oldest frames; returns the
        number of frames filled. The rest of ``out`` is left untouched."""
        view = out.reshape(-1, self.channels)
        with self._lock:
            n = min(len(view), len(self))
            start = self._read % self.capacity
            first = min(n, self.capacity - start)
            view[:first] = self._buf[start : start + first]
            view[first:n] = self._buf[: n - first]
            self._read += n
            if self._read == self._write:  # empty: the next write starts at the top again
                self._read = self._write = 0
        return n

    def read(self, max_frames: int | None = None) -> np.ndarray:
        """Take up to ``max_frames`` (all if None) frames, oldest first, as a new array."""
        n = len(self) if max_frames is None else min(max_frames, len(self))
        out = np.empty((n, self.channels), dtype=np.int16)
        got = self.read_into(out)
        out = out[:got]
        return out.reshape(-1) if self.channels == 1 else out

    def clear(self) -> int:
        """Drop everything buffered; returns the number of frames dropped."""
        with self._lock:
            n = len(self)
            self._read = self._write = 0
        return n

    def release_memory(self) -> bool:
        """If the ring is empty, give its pages back to the kernel (they read as zeros and
        take memory again when written). Returns whether it did."""
        with self._lock:
            if len(self):
                return False
            self._read = self._write = 0
            if hasattr(self._map, "madvise"):
                self._map.madvise(mmap.MADV_DONTNEED)
            return True
