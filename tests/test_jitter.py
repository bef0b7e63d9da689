"""The jitter reserve's policy, pure: no threads, no clock (times are given), no device."""

from __future__ import annotations

import random

import pytest

from appliance.audio.jitter import (
    INITIAL_MS,
    ReservePolicy,
    needed_reserve,
    safe_start,
    start_time,
)

DELTA_MS = 40.0


def stream(
    n: int, speed: float, jitter_ms: float = 0.0, seed: int = 1
) -> list[tuple[float, float]]:
    """Arrivals of ``n`` 40 ms deltas sent at ``speed`` x real time, each delayed by up to
    +-jitter_ms, in order (one TCP connection)."""
    rng = random.Random(seed)
    out, last = [], 0.0
    for k in range(n):
        t = max(last, 1000.0 + k * DELTA_MS / speed + rng.uniform(-jitter_ms, jitter_ms))
        out.append((t, DELTA_MS))
        last = t
    return out


def play(policy: ReservePolicy, arrivals: list[tuple[float, float]]) -> tuple[float, int]:
    """One answer through the policy as the shell runs it, with a device that takes audio
    ``read_ahead_ms`` ahead of the clock. Returns (start, gaps): when it started after the
    first delta, and how many times it ran dry (each followed by holding again)."""
    t0 = arrivals[0][0]
    policy.begin(t0)
    received = 0.0
    playing: tuple[float, float] | None = None  # (since, audio position then)
    held_at = 0.0  # the audio position the answer waits at
    first_start: float | None = None
    gaps = 0

    def start(at: float) -> None:
        nonlocal playing, first_start
        policy.started()
        playing = (at, held_at)
        first_start = at if first_start is None else first_start

    for t, ms in arrivals:
        deadline = policy.deadline()
        if playing is None and deadline is not None and deadline <= t:
            start(deadline)  # the timer fired before this delta came
        if playing is not None:
            since, pos = playing
            if pos + (t - since) + policy.read_ahead_ms > received:  # ran dry meanwhile
                gaps += 1
                policy.underran(t)
                playing, held_at = None, received
        received += ms
        policy.arrived(t, ms)
        if playing is None and policy.waiting and policy.ready(t):
            start(t)
    policy.end()
    return (first_start if first_start is not None else arrivals[-1][0]) - t0, gaps


def test_a_burst_starts_after_a_fraction_of_the_reserve():
    policy = ReservePolicy(read_ahead_ms=40)
    start, gaps = play(policy, stream(50, speed=10))
    assert gaps == 0
    assert start <= INITIAL_MS / 5  # 160 ms ahead of real time after ~18 ms at 10x


def test_a_real_time_stream_waits_for_the_reserve():
    policy = ReservePolicy(read_ahead_ms=40)
    start, gaps = play(policy, stream(50, speed=1.0))
    assert start == pytest.approx(INITIAL_MS)
    assert gaps == 0


def test_bursts_let_the_reserve_fall_to_its_floor():
    policy = ReservePolicy(read_ahead_ms=40)
    for seed in range(12):
        play(policy, stream(50, speed=5, jitter_ms=5, seed=seed))
    assert policy.reserve_ms < 80  # 1.2 x (what a delta and the read-ahead need)
    assert policy.reserve_ms >= policy.min_ms


def test_real_time_with_50_ms_jitter_plays_without_a_gap_and_keeps_its_reserve():
    policy = ReservePolicy(read_ahead_ms=40)
    total = 0
    for seed in range(20):
        _, gaps = play(policy, stream(75, speed=1.0, jitter_ms=50, seed=seed))
        total += gaps
    assert total == 0
    assert 100 <= policy.reserve_ms <= 260  # about 1.2 x (100 ms of jitter + 40 read ahead)


def test_without_a_reserve_the_same_stream_runs_dry():
    # The policy pinned at no reserve: what playback did before (the first delta starts it).
    total = 0
    for seed in range(5):
        policy = ReservePolicy(read_ahead_ms=40, reserve_ms=0, min_ms=0, max_ms=0)
        _, gaps = play(policy, stream(75, speed=1.0, jitter_ms=50, seed=seed))
        total += gaps
    assert total >= 5


def test_an_underrun_raises_the_reserve_at_once_and_within_bounds():
    policy = ReservePolicy(read_ahead_ms=40)
    policy.begin(0)
    before = policy.reserve_ms
    policy.underran(500)
    assert policy.reserve_ms >= before * 1.5 and policy.underruns == 1
    assert policy.waiting and policy.deadline() == 500 + policy.reserve_ms
    for _ in range(20):
        policy.underran(600)
    assert policy.reserve_ms == policy.max_ms


def test_after_more_jitter_than_it_had_the_reserve_rises_to_what_was_needed():
    policy = ReservePolicy(read_ahead_ms=40)
    for seed in range(6):
        play(policy, stream(50, speed=5, seed=seed))
    low = policy.reserve_ms
    arrivals = stream(75, speed=1.0, jitter_ms=150, seed=3)
    play(policy, arrivals)
    need = needed_reserve(arrivals, 40, policy.min_ms, policy.max_ms)
    assert need > low + 100
    assert policy.reserve_ms >= need  # at once (1.2 x it, or more after underruns on the way)


def test_hindsight_on_a_hand_made_stream():
    # 40 ms deltas at real time; the fourth comes 60 ms late.
    arrivals = [(0, 40), (40, 40), (80, 40), (180, 40), (200, 40)]
    # Started at s, the device has taken (t - s) + 40 ms by t: the late delta needs s >= 100.
    assert safe_start(arrivals, 40) == 100
    assert start_time(arrivals, 100) == 100  # waited the reserve (the timer)
    assert needed_reserve(arrivals, 40, 40, 600) == 100
    # A stream that ended before the reserve: it starts at its end.
    assert start_time([(0, 40), (10, 40)], 200) == 10


def test_one_waiting_rule_each():
    policy = ReservePolicy(read_ahead_ms=40, reserve_ms=100)
    policy.begin(0)
    policy.arrived(0, 40)
    assert not policy.ready(50)
    assert policy.ready(100)  # waited the reserve
    policy.begin(1000)
    policy.arrived(1000, 80)
    policy.arrived(1010, 80)
    assert policy.ready(1010)  # 160 ms received in 10 ms: 150 ms ahead of real time
