"""Tests for appliance.audio.resample: streaming equals one-shot, no clicks, exact pass-through."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.audio.resample import StreamResampler, resample_all, to_mono

RATE_PAIRS = [
    (48000, 24000),
    (44100, 24000),
    (24000, 44100),
    (24000, 48000),
    (16000, 24000),
    (22050, 24000),
]


def sine(freq: float, rate: int, n: int, amp: float = 0.5, phase: float = 0.0) -> np.ndarray:
    t = np.arange(n) / rate
    return np.rint(amp * 32767 * np.sin(2 * np.pi * freq * t + phase)).astype(np.int16)


def noise(n: int, seed: int = 0, channels: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (n,) if channels is None else (n, channels)
    return np.clip(rng.normal(0, 6000, shape), -32768, 32767).astype(np.int16)


def run_chunked(resampler: StreamResampler, x: np.ndarray, sizes) -> np.ndarray:
    out, i = [], 0
    for size in sizes:
        out.append(resampler.process(x[i : i + size]))
        i += size
    assert i >= len(x)
    out.append(resampler.flush())
    return np.concatenate(out)


def random_sizes(n: int, seed: int, max_size: int = 3000):
    rng = np.random.default_rng(seed)
    sizes, total = [], 0
    while total < n:
        size = int(rng.integers(0, max_size))  # 0 and 1 included on purpose
        sizes.append(size)
        total += size
    return sizes


def blackman_harris(n: int) -> np.ndarray:
    k = 2 * np.pi * np.arange(n) / (n - 1)
    return 0.35875 - 0.48829 * np.cos(k) + 0.14128 * np.cos(2 * k) - 0.01168 * np.cos(3 * k)


# --- pass-through -------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2])
def test_pass_through_is_bit_exact_and_immediate(channels):
    x = noise(5000, channels=None if channels == 1 else channels)
    r = StreamResampler(24000, 24000, channels)
    first = r.process(x[:17])
    assert first.dtype == np.int16
    np.testing.assert_array_equal(first, x[:17])  # zero latency: all of it, at once
    out = np.concatenate([first, r.process(x[17:]), r.flush()])
    np.testing.assert_array_equal(out, x)


def test_pass_through_returns_a_copy():
    x = noise(100)
    out = StreamResampler(16000, 16000).process(x)
    out[:] = 0
    assert np.any(x != 0)


def test_resample_all_pass_through_exact():
    x = noise(1234, seed=3)
    np.testing.assert_array_equal(resample_all(x, 24000, 24000), x)


# --- streaming vs one-shot ----------------------------------------------------------------


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
@pytest.mark.parametrize("seed", [1, 2])
def test_chunked_matches_one_shot(in_rate, out_rate, seed):
    x = noise(in_rate // 2, seed=seed)  # 0.5 s
    one_shot = resample_all(x, in_rate, out_rate)
    chunked = run_chunked(StreamResampler(in_rate, out_rate), x, random_sizes(len(x), seed))
    assert abs(len(chunked) - len(one_shot)) <= 1
    n = min(len(chunked), len(one_shot))
    assert np.max(np.abs(chunked[:n].astype(int) - one_shot[:n])) <= 1


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(0, 4000), max_size=12))
def test_chunked_matches_one_shot_any_split(cuts):
    x = noise(4000, seed=7)
    bounds = [0, *sorted(cuts), len(x)]
    sizes = [b - a for a, b in itertools.pairwise(bounds)]
    chunked = run_chunked(StreamResampler(44100, 24000), x, sizes)
    one_shot = resample_all(x, 44100, 24000)
    assert abs(len(chunked) - len(one_shot)) <= 1
    n = min(len(chunked), len(one_shot))
    assert np.max(np.abs(chunked[:n].astype(int) - one_shot[:n]), initial=0) <= 1


def test_resample_all_is_process_plus_flush():
    x = noise(7000, seed=5)
    r = StreamResampler(44100, 24000)
    expected = np.concatenate([r.process(x), r.flush()])
    np.testing.assert_array_equal(resample_all(x, 44100, 24000), expected)


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
@pytest.mark.parametrize("n_in", [1, 441, 44100, 44101])
def test_output_length(in_rate, out_rate, n_in):
    x = noise(n_in, seed=n_in)
    chunked = run_chunked(StreamResampler(in_rate, out_rate), x, random_sizes(n_in, n_in, 500))
    assert abs(len(chunked) - round(n_in * out_rate / in_rate)) <= 1


# --- no clicks at chunk edges -------------------------------------------------------------


def _resample_in_20ms_chunks(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    chunk = in_rate // 50
    return run_chunked(StreamResampler(in_rate, out_rate), x, [chunk] * (len(x) // chunk + 1))


def _max_step(y: np.ndarray) -> int:
    return int(np.max(np.abs(np.diff(y.astype(np.int64)))))


def _worst_spur_db(y: np.ndarray, freq: float, rate: int) -> float:
    """Strongest spectral component more than 50 Hz away from ``freq``, in dB re the peak."""
    y = y.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(y * blackman_harris(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / rate)
    assert abs(freqs[np.argmax(spectrum)] - freq) < 2
    db = 20 * np.log10(spectrum / spectrum.max() + 1e-20)
    return float(db[np.abs(freqs - freq) > 50].max())


AMP = 0.8
EDGE = 480  # 20 ms at 24 kHz: skip the filter's start-up (and end) transient
IDEAL_STEP = AMP * 32767 * 2 * np.sin(np.pi * 1000 / 24000)  # largest step of the ideal sine
MAX_STEP = IDEAL_STEP * 1.01 + 2
# The brief asked for -60 dB; chunks resampled independently already reach about -75 dB,
# and the streaming output is about -100 dB, so -80 dB is the bound that tells them apart.
MAX_SPUR_DB = -80


@pytest.fixture(scope="module")
def sine_1k_48k() -> np.ndarray:
    return sine(1000, 48000, 48000, amp=AMP)


def test_no_click_at_chunk_edges(sine_1k_48k):
    y = _resample_in_20ms_chunks(sine_1k_48k, 48000, 24000)
    assert len(y) == 24000
    steady = y[EDGE:-EDGE]
    assert _max_step(steady) <= MAX_STEP
    assert _worst_spur_db(steady, 1000, 24000) < MAX_SPUR_DB


def test_the_click_checks_catch_independent_chunks(sine_1k_48k):
    """Sanity check of the test above: resampling each chunk on its own fails both checks."""
    x = sine_1k_48k
    y = np.concatenate([soxr.resample(x[i : i + 960], 48000, 24000) for i in range(0, len(x), 960)])
    steady = y[EDGE:-EDGE]
    assert _max_step(steady) > MAX_STEP
    assert _worst_spur_db(steady, 1000, 24000) > MAX_SPUR_DB


# --- multi-channel, state, layout ---------------------------------------------------------


def test_multi_channel_matches_per_channel_mono():
    left = sine(440, 44100, 22050, amp=0.5)
    right = noise(22050, seed=9)
    stereo = np.stack([left, right], axis=1)
    r = StreamResampler(44100, 24000, channels=2)
    out = run_chunked(r, stereo, random_sizes(len(stereo), 4))
    assert out.ndim == 2 and out.shape[1] == 2 and out.dtype == np.int16
    for ch, mono in enumerate((left, right)):
        expected = resample_all(mono, 44100, 24000)
        assert abs(len(out) - len(expected)) <= 1
        n = min(len(out), len(expected))
        assert np.max(np.abs(out[:n, ch].astype(int) - expected[:n])) <= 1


def test_mono_accepts_n_by_1_and_keeps_layout():
    x = noise(3000, seed=2)
    r = StreamResampler(48000, 24000)
    out = np.concatenate([r.process(x[:, None]), r.flush()])
    assert out.ndim == 2 and out.shape[1] == 1
    np.testing.assert_array_equal(out[:, 0], resample_all(x, 48000, 24000))


@pytest.mark.parametrize(("in_rate", "channels"), [(48000, 1), (48000, 2), (24000, 1), (24000, 3)])
def test_empty_in_empty_out(in_rate, channels):
    r = StreamResampler(in_rate, 24000, channels)
    shape = (0,) if channels == 1 else (0, channels)
    out = r.process(np.zeros(shape, dtype=np.int16))
    assert out.shape == shape and out.dtype == np.int16
    assert r.flush().shape == shape


def test_flush_then_reuse_starts_from_scratch():
    x = noise(5000, seed=11)
    r = StreamResampler(44100, 24000)
    first = np.concatenate([r.process(x), r.flush()])
    second = np.concatenate([r.process(x), r.flush()])
    np.testing.assert_array_equal(first, second)


def test_reset_drops_state():
    x = noise(5000, seed=12)
    r = StreamResampler(44100, 24000)
    r.process(noise(3000, seed=13))
    r.reset()
    np.testing.assert_array_equal(
        np.concatenate([r.process(x), r.flush()]), resample_all(x, 44100, 24000)
    )


def test_silence_stays_silent():
    """soxr's int16 mode dithers; ours must not turn digital silence into noise."""
    out = resample_all(np.zeros(48000, dtype=np.int16), 48000, 24000)
    assert len(out) == 24000 and not np.any(out)


def test_overshoot_clips_instead_of_wrapping():
    square = np.where(sine(500, 48000, 9600) >= 0, 32767, -32768).astype(np.int16)
    out = resample_all(square, 48000, 24000)
    assert out.max() == 32767 and out.min() == -32768  # Gibbs overshoot, clipped
    assert _max_step(out) < 2 * 32767 * 0.8  # a wrap would jump by ~65535


def test_properties():
    r = StreamResampler(44100, 24000, channels=2)
    assert (r.in_rate, r.out_rate, r.channels) == (44100, 24000, 2)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"in_rate": 0, "out_rate": 24000}, ValueError),
        ({"in_rate": 48000, "out_rate": 24000, "channels": 0}, ValueError),
        ({"in_rate": 48000, "out_rate": 24000, "quality": "best"}, ValueError),
    ],
)
def test_bad_construction(kwargs, error):
    with pytest.raises(error):
        StreamResampler(**kwargs)


def test_bad_input():
    r = StreamResampler(48000, 24000, channels=2)
    with pytest.raises(TypeError):
        r.process(np.zeros((10, 2), dtype=np.float32))
    with pytest.raises(ValueError):
        r.process(np.zeros(10, dtype=np.int16))
    with pytest.raises(ValueError):
        r.process(np.zeros((10, 3), dtype=np.int16))


# --- to_mono ------------------------------------------------------------------------------


def test_to_mono_averages_and_rounds():
    x = np.array([[100, 200], [1, 2], [-1, -2], [3, 4], [-7, 0]], dtype=np.int16)
    np.testing.assert_array_equal(to_mono(x), [150, 2, -2, 4, -4])  # halves round to even


def test_to_mono_no_overflow():
    x = np.array([[32767, 32767], [-32768, -32768], [32767, -32768]], dtype=np.int16)
    np.testing.assert_array_equal(to_mono(x), [32767, -32768, 0])


def test_to_mono_three_channels_and_passthrough():
    x = np.array([[3, 3, 4], [-32768, -32768, -32768]], dtype=np.int16)
    np.testing.assert_array_equal(to_mono(x), [3, -32768])
    mono = noise(10)
    assert to_mono(mono) is mono
    np.testing.assert_array_equal(to_mono(mono[:, None]), mono)
    assert to_mono(x).dtype == np.int16
