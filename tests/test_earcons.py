"""Earcons: the sounds themselves (pure numpy), then played through REAL PortAudio over the
virtual speaker_fifo device (see test_playback.py for the helpers and the device notes)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from test_playback import FADE_N, RATE, capture, config, on_speaker_fifo, stalled

from appliance.audio.earcons import EARCONS, earcon

pytestmark = pytest.mark.timeout(30)

DURATIONS_MS = {  # roughly: what the owner hears
    "listening": (100, 140),
    "sent": (40, 100),
    "error": (220, 280),
    "not_connected": (200, 320),
    "working": (260, 340),
}


def first_sound(x: np.ndarray) -> int:
    return int(np.flatnonzero(x)[0])


@pytest.fixture
def alsa(virtual_alsa):  # the session's devices, reset before each test
    return virtual_alsa


@pytest.mark.parametrize("rate", [16000, 24000, 44100, 48000])
@pytest.mark.parametrize("name", EARCONS)
def test_each_is_short_at_minus_12_dbfs_and_starts_and_ends_at_zero(name, rate):
    e = earcon(name, rate)
    assert e.dtype == np.int16 and e.ndim == 1
    lo, hi = DURATIONS_MS[name]
    assert lo <= len(e) * 1000 / rate <= hi
    peak = int(np.max(np.abs(e.astype(np.int32))))
    assert abs(20 * np.log10(peak / 32767) - (-12.0)) < 0.5
    # A raised-cosine fade of at least 3 ms at both ends: never louder than that ramp allows.
    n = round(0.003 * rate)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(n) / n)
    bound = 1.01 * peak * ramp + 2
    assert np.all(np.abs(e[:n]) <= bound)
    assert np.all(np.abs(e[::-1][:n]) <= bound)
    assert e[0] == 0 and e[-1] == 0


def test_they_are_distinct():
    spectra = {}
    for name in EARCONS:
        m = np.abs(np.fft.rfft(earcon(name, RATE).astype(np.float64), 1 << 15))
        spectra[name] = m / np.linalg.norm(m)
    for i, a in enumerate(EARCONS):
        for b in EARCONS[i + 1 :]:
            assert spectra[a] @ spectra[b] < 0.6, (a, b)  # little overlap in pitch
    # listening rises, error falls: the dominant pitch of the second half against the first.
    for name, rises in (("listening", True), ("error", False)):
        e = earcon(name, RATE).astype(np.float64)
        half = len(e) // 2

        def pitch(x):
            m = np.abs(np.fft.rfft(x, 1 << 15))
            return np.argmax(m) * RATE / (1 << 15)

        assert (pitch(e[half:]) > pitch(e[:half])) == rises, name


def test_cached_read_only_and_unknown_names_refused():
    e = earcon("sent", 48000)
    assert earcon("sent", 48000) is e
    with pytest.raises(ValueError):
        e[0] = 1
    with pytest.raises(ValueError, match="unknown earcon 'beep'"):
        earcon("beep", 48000)


async def test_an_earcon_plays_exactly_and_is_tracked(alsa):
    async with on_speaker_fifo(alsa, config(output_device="speaker_fifo")) as p:
        (await stalled(p)).play_earcon("listening")
        assert p.playing_item == "earcon:listening" and not p.drained
        out = await capture(alsa, p)
        assert p.playing_item is None
    e = earcon("listening", RATE)
    start = first_sound(out) - first_sound(e)  # (the earcon fades in from 0)
    assert np.array_equal(out[start : start + len(e)], e)
    assert not out[start + len(e) :].any()


async def test_earcon_after_an_answer_keeps_the_answer_accounting(alsa):
    answer = np.full(RATE // 10, 3000, dtype=np.int16)
    answer[-RATE // 100 :] = 0
    async with on_speaker_fifo(alsa, config(output_device="speaker_fifo")) as p:
        p = await stalled(p)
        p.play_answer("item_1", answer[:2000].tobytes())
        p.play_earcon("sent")  # arrives mid-answer: queued after what is queued
        p.play_answer("item_1", answer[2000:].tobytes())
        p.end_answer("item_1")
        # Nothing of it played yet (the device waits for the listener): only the 5 ms fade-out
        # taken from the head of the queue will be, and counts as heard. Earcons not listed.
        cut = p.flush()
        assert cut == {"item_1": FADE_N * 1000 // RATE}
        p.play_answer("item_2", answer.tobytes())
        p.end_answer("item_2")
        p.play_earcon("error")
        out = await capture(alsa, p)
        assert p.audio_end_ms("item_2") == 100
    first = int(np.flatnonzero(out)[0])
    fade = out[first : first + FADE_N].astype(np.int32)
    assert fade[0] > 2900 and fade[-1] == 0 and np.all(np.diff(fade) <= 0)  # item_1 fades out
    body_end = first + FADE_N + len(answer) - RATE // 100
    assert np.all(out[first + FADE_N : body_end] == 3000)  # then item_2, whole
    e = earcon("error", RATE)
    tail = out[body_end:]
    first = first_sound(tail) - first_sound(e)
    assert np.array_equal(tail[first : first + len(e)], e)


async def test_sounds_off_plays_nothing(alsa):
    async with on_speaker_fifo(alsa, config(output_device="speaker_fifo", sounds=False)) as p:
        for name in EARCONS:
            (await stalled(p)).play_earcon(name)
        assert p.drained and p.playing_item is None
        await asyncio.sleep(0.2)
        # Nothing to play: the speaker's stream is not even started.
        assert p.starts == 0 and p.callbacks == 0 and not p.running
    assert alsa.read_speaker_fifo(1 << 16, timeout=0.05) == b""


async def test_earcons_follow_the_volume(alsa):
    async with on_speaker_fifo(alsa, config(output_device="speaker_fifo", volume=0.5)) as p:
        (await stalled(p)).play_earcon("working")
        out = await capture(alsa, p)
    e = earcon("working", RATE).astype(np.int32)
    peak = int(np.max(np.abs(out.astype(np.int32))))
    assert abs(peak - np.max(np.abs(e)) / 2) <= 1
