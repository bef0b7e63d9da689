"""The ring buffer and the playback tracker, without PortAudio (that is tested elsewhere)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.audio.ring import SampleRing
from appliance.audio.tracker import PlaybackTracker

# ---- ring -------------------------------------------------------------------------------

ops = st.lists(
    st.tuples(st.sampled_from(["w", "r"]), st.integers(min_value=0, max_value=300)),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(ops, st.integers(min_value=1, max_value=257))
def test_random_writes_and_reads_never_lose_duplicate_or_reorder(operations, capacity):
    """Against a model: what comes out is exactly the input stream minus the counted drops,
    and the drops are always the oldest audio."""
    ring = SampleRing(capacity)
    counter = 0
    model: list[int] = []  # the frames the ring should hold, oldest first
    out: list[int] = []
    dropped = 0
    for op, n in operations:
        if op == "w":
            frames = (np.arange(counter, counter + n) % 30000).astype(np.int16)
            counter += n
            model.extend(frames.tolist())
            lost = max(0, len(model) - capacity)
            del model[:lost]
            dropped += lost
            assert ring.write(frames) == lost
        else:
            got = ring.read(n).tolist()
            assert got == model[: len(got)]
            assert len(got) == min(n, len(model))
            del model[: len(got)]
            out.extend(got)
        assert len(ring) == len(model) <= capacity
    assert ring.dropped_frames == dropped
    out.extend(ring.read().tolist())
    # Everything ever written is accounted for: read, or dropped as counted.
    assert len(out) + dropped == counter


def test_read_into_fills_only_what_is_there():
    ring = SampleRing(8)
    ring.write(np.array([1, 2, 3], dtype=np.int16))
    out = np.full(5, -1, dtype=np.int16)
    assert ring.read_into(out) == 3
    assert out.tolist() == [1, 2, 3, -1, -1]
    assert ring.read_into(out) == 0


def test_multichannel_and_clear():
    ring = SampleRing(4, channels=2)
    ring.write(np.array([[1, -1], [2, -2], [3, -3]], dtype=np.int16))
    assert ring.read(2).tolist() == [[1, -1], [2, -2]]
    assert ring.clear() == 1 and len(ring) == 0
    ring.write(np.arange(12, dtype=np.int16).reshape(6, 2))  # more than capacity: newest kept
    assert ring.read().tolist() == [[4, 5], [6, 7], [8, 9], [10, 11]]
    assert ring.overruns == 1 and ring.dropped_frames == 2


def test_threads_one_producer_one_consumer_keep_order():
    """Real threads: whatever the scheduling, nothing is duplicated or reordered, and every
    frame is either read or counted as dropped (the oldest, when the reader fell behind)."""
    ring = SampleRing(1 << 12, channels=2)
    total, base = 200_000, 30_000
    got: list[np.ndarray] = []

    def produce():
        # Each frame carries its own index across its two channels: unique, never wraps.
        for start in range(0, total, 480):
            index = np.arange(start, min(start + 480, total))
            ring.write(np.stack([index // base, index % base], axis=1).astype(np.int16))

    producer = threading.Thread(target=produce)
    producer.start()
    while producer.is_alive() or len(ring):
        chunk = ring.read(1000)
        got.append(chunk)
        if not len(chunk):
            producer.join(0.0001)
    producer.join()
    frames = np.concatenate(got).astype(np.int64)
    out = frames[:, 0] * base + frames[:, 1]
    assert len(out) + ring.dropped_frames == total
    assert np.all(np.diff(out) > 0)  # in order, no duplicates
    # The gaps are exactly the dropped frames, in at most one gap per overrun.
    gaps = np.diff(out) - 1
    assert int(gaps.sum()) + int(out[0]) + (total - 1 - int(out[-1])) == ring.dropped_frames
    assert out[-1] == total - 1  # the newest audio always survives
    assert np.count_nonzero(gaps) <= ring.overruns


# ---- tracker ----------------------------------------------------------------------------


def test_tracker_attributes_played_samples_in_queue_order():
    t = PlaybackTracker(rate=1000)
    t.queued("a", 500)
    t.queued("a", 500)
    t.queued("b", 300)
    t.played_up_to(700)
    assert (t.audio_end_ms("a"), t.audio_end_ms("b"), t.playing_item) == (700, 0, "a")
    t.played_up_to(1100)
    assert (t.audio_end_ms("a"), t.audio_end_ms("b"), t.playing_item) == (1000, 100, "b")
    t.played_up_to(5000)  # silence after the end does not count
    assert (t.audio_end_ms("b"), t.drained, t.playing_item) == (300, True, None)


def test_flush_reports_heard_ms_and_forgets_the_rest():
    t = PlaybackTracker(rate=44100)
    t.queued("a", 44100)  # 1 s received
    t.played_up_to(11025)  # 250 ms heard
    assert t.flush() == {"a": 250}
    assert t.drained and t.pending_samples == 0
    # New audio after the flush is positioned after what was played, not after the cut.
    t.queued("b", 4410)
    t.played_up_to(11025 + 2205)
    assert t.audio_end_ms("b") == 50
    assert t.audio_end_ms("a") == 250  # never more than was heard


def test_heard_is_clamped_to_received():
    t = PlaybackTracker(rate=1000)
    t.queued("a", 100)
    t.played_up_to(10_000)
    assert t.audio_end_ms("a") == t.received_ms("a") == 100


def test_tracker_memory_is_bounded():
    t = PlaybackTracker(rate=1000)
    for i in range(1000):
        t.queued(f"item{i}", 10)
        t.played_up_to((i + 1) * 10)
    assert len(t._received) <= 33 and len(t._heard) <= 33
    assert t.audio_end_ms("item999") == 10


@pytest.mark.parametrize("n", [0, -5])
def test_empty_queue_calls_are_ignored(n):
    t = PlaybackTracker(rate=1000)
    t.queued("a", n)
    assert t.drained and t.playing_item is None


def resident_kb(ring: SampleRing) -> int:
    """How much of the ring's buffer is in memory: its mapping's Rss in /proc/self/smaps."""
    address = ring._buf.ctypes.data
    lines = Path("/proc/self/smaps").read_text().splitlines()
    inside = False
    for line in lines:
        head = line.split()[0]
        if "-" in head and ":" not in head:
            start, end = (int(x, 16) for x in head.split("-"))
            inside = start <= address < end
        elif inside and line.startswith("Rss:"):
            return int(line.split()[1])
    raise AssertionError("the ring's mapping is not in smaps")


def test_the_ring_takes_memory_only_for_its_longest_backlog():
    ring = SampleRing(48000 * 10)  # 10 s at 48 kHz: 960 kB
    assert resident_kb(ring) <= 8  # nothing written: nothing held
    chunk = np.arange(4800, dtype=np.int16)  # 100 ms
    for _ in range(500):  # 50 s of audio through it, never more than 100 ms queued
        ring.write(chunk)
        assert ring.read(4800).tobytes() == chunk.tobytes()
    assert resident_kb(ring) <= 16  # the same first pages, over and over


def test_release_memory_gives_an_empty_rings_pages_back():
    ring = SampleRing(48000 * 10)
    ring.write(np.ones(48000 * 8, dtype=np.int16))  # an answer 8 s ahead of its playing
    assert resident_kb(ring) >= 700
    assert ring.release_memory() is False  # it holds audio: kept
    assert len(ring.read()) == 48000 * 8
    assert ring.release_memory() is True
    assert resident_kb(ring) <= 8
    ring.write(np.full(3, 7, dtype=np.int16))  # usable again, from the top
    assert ring.read().tolist() == [7, 7, 7]
