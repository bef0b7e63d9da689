"""Tests for appliance.audio.wavfile: our own RIFF reader, atomic writer, Realtime conversion."""

from __future__ import annotations

import os
import struct
import wave

import numpy as np
import pytest

from appliance.audio import wavfile
from appliance.audio.wavfile import WavError, WavInfo, read_wav, write_wav

GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


# --- building WAV bytes by hand -----------------------------------------------------------


def chunk(cid: bytes, body: bytes, size: int | None = None) -> bytes:
    """A RIFF chunk with its pad byte; ``size`` overrides the declared size."""
    declared = len(body) if size is None else size
    return cid + struct.pack("<I", declared) + body + (b"\x00" if len(body) % 2 else b"")


def fmt_body(code: int, channels: int, rate: int, bits: int) -> bytes:
    block = channels * bits // 8
    return struct.pack("<HHIIHH", code, channels, rate, rate * block, block, bits)


def extensible_body(subcode: int, channels: int, rate: int, bits: int, valid: int) -> bytes:
    base = fmt_body(0xFFFE, channels, rate, bits)
    return base + struct.pack("<HHIH", 22, valid, 0x3, subcode) + GUID_TAIL


def riff(*chunks: bytes, riff_size: int | None = None) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


def make_wav(tmp_path, fmt: bytes, data: bytes, *, name="t.wav", before=(), size=None):
    path = tmp_path / name
    path.write_bytes(riff(chunk(b"fmt ", fmt), *before, chunk(b"data", data, size)))
    return path


# --- a known signal -----------------------------------------------------------------------


RATE = 44100


@pytest.fixture(scope="module")
def ref() -> np.ndarray:
    """int16 stereo that reaches both extremes: a sine on the left, a ramp on the right."""
    n = 2000
    left = np.rint(32767 * np.sin(2 * np.pi * 440 * np.arange(n) / RATE))
    right = np.linspace(-32768, 32767, n)
    return np.stack([left, np.rint(right)], axis=1).astype(np.int16)


@pytest.fixture(scope="module")
def low_bits() -> np.ndarray:
    """Random extra resolution below the 16 bits, centred so rounding must give ``ref`` back."""
    return np.random.default_rng(0).integers(-128, 128, (2000, 2))


def to_24bit(values: np.ndarray) -> bytes:
    v = values.astype(np.int64).reshape(-1) & 0xFFFFFF
    b = np.stack([v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF], axis=1).astype(np.uint8)
    return b.tobytes()


# --- reading each format ------------------------------------------------------------------


def test_16bit_exact_via_stdlib_wave(tmp_path, ref):
    path = tmp_path / "s16.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(ref.astype("<i2").tobytes())
    samples, info = read_wav(path)
    assert info == WavInfo(rate=RATE, channels=2, bits=16, float=False, frames=len(ref))
    assert samples.dtype == np.int16 and samples.shape == ref.shape
    np.testing.assert_array_equal(samples, ref)


def test_8bit_unsigned(tmp_path, ref):
    data = ((ref.astype(np.int32) >> 8) + 128).astype(np.uint8).tobytes()
    samples, info = read_wav(make_wav(tmp_path, fmt_body(1, 2, RATE, 8), data))
    assert (info.bits, info.float, info.frames) == (8, False, len(ref))
    np.testing.assert_array_equal(samples, (ref.astype(np.int32) >> 8) << 8)
    assert np.max(np.abs(samples.astype(int) - ref)) < 256  # the format's quantisation


def test_8bit_extremes(tmp_path):
    samples, _ = read_wav(make_wav(tmp_path, fmt_body(1, 1, 8000, 8), bytes([0, 128, 255])))
    np.testing.assert_array_equal(samples[:, 0], [-32768, 0, 32512])


def test_24bit_rounds_to_nearest(tmp_path, ref, low_bits):
    data = to_24bit(ref.astype(np.int64) * 256 + low_bits)
    samples, info = read_wav(make_wav(tmp_path, fmt_body(1, 2, RATE, 24), data))
    assert (info.bits, info.frames) == (24, len(ref))
    np.testing.assert_array_equal(samples, ref)  # truncation would be off by one half the time


def test_24bit_rounding_and_clipping_at_the_top(tmp_path):
    values = np.array([0x7FFFFF, 0x7FFF7F, 0x7FFF80, -0x800000, 0x80, 0x7F, -0x81, -0x80])
    samples, _ = read_wav(make_wav(tmp_path, fmt_body(1, 1, 48000, 24), to_24bit(values)))
    np.testing.assert_array_equal(samples[:, 0], [32767, 32767, 32767, -32768, 1, 0, -1, 0])


def test_32bit_int_rounds_to_nearest(tmp_path, ref):
    low = np.random.default_rng(1).integers(-32768, 32768, ref.shape)
    data = (ref.astype(np.int64) * 65536 + low).astype("<i4").tobytes()
    samples, info = read_wav(make_wav(tmp_path, fmt_body(1, 2, RATE, 32), data))
    assert (info.bits, info.float) == (32, False)
    np.testing.assert_array_equal(samples, ref)


def test_32bit_int_clips_at_the_top(tmp_path):
    data = np.array([2**31 - 1, -(2**31)], dtype="<i4").tobytes()
    samples, _ = read_wav(make_wav(tmp_path, fmt_body(1, 1, 48000, 32), data))
    np.testing.assert_array_equal(samples[:, 0], [32767, -32768])


@pytest.mark.parametrize(("bits", "dtype"), [(32, "<f4"), (64, "<f8")])
def test_float(tmp_path, ref, bits, dtype):
    data = (ref.astype(np.float64) / 32767).astype(dtype).tobytes()
    samples, info = read_wav(make_wav(tmp_path, fmt_body(3, 2, RATE, bits), data))
    assert (info.bits, info.float, info.frames) == (bits, True, len(ref))
    np.testing.assert_array_equal(samples, np.maximum(ref, -32767))  # *32767 then clipped


def test_float_out_of_range_and_nan(tmp_path):
    data = np.array([1.5, -2.0, np.nan, 0.5, -1.0], dtype="<f4").tobytes()
    samples, _ = read_wav(make_wav(tmp_path, fmt_body(3, 1, 48000, 32), data))
    np.testing.assert_array_equal(samples[:, 0], [32767, -32767, 0, 16384, -32767])


def test_extensible_pcm_24(tmp_path, ref, low_bits):
    data = to_24bit(ref.astype(np.int64) * 256 + low_bits)
    samples, info = read_wav(make_wav(tmp_path, extensible_body(1, 2, RATE, 24, 24), data))
    assert info == WavInfo(rate=RATE, channels=2, bits=24, float=False, frames=len(ref))
    np.testing.assert_array_equal(samples, ref)


def test_extensible_24_in_32(tmp_path, ref):
    data = (ref.astype(np.int64) << 16).astype("<i4").tobytes()  # 24 valid bits, left-justified
    samples, info = read_wav(make_wav(tmp_path, extensible_body(1, 2, RATE, 32, 24), data))
    assert info.bits == 32
    np.testing.assert_array_equal(samples, ref)


def test_extensible_float(tmp_path, ref):
    data = (ref.astype(np.float64) / 32767).astype("<f4").tobytes()
    samples, info = read_wav(make_wav(tmp_path, extensible_body(3, 2, RATE, 32, 32), data))
    assert info.float
    np.testing.assert_array_equal(samples, np.maximum(ref, -32767))


def test_extensible_16bit_mono_stdlib_cannot(tmp_path, ref):
    data = ref[:, 0].astype("<i2").tobytes()
    path = make_wav(tmp_path, extensible_body(1, 1, 16000, 16, 16), data)
    with pytest.raises(wave.Error), wave.open(str(path), "rb"):  # why this module exists
        pass
    samples, info = read_wav(path)
    assert (info.rate, info.channels) == (16000, 1)
    np.testing.assert_array_equal(samples[:, 0], ref[:, 0])


# --- chunk layout -------------------------------------------------------------------------


def test_odd_sized_list_chunk_before_data(tmp_path, ref):
    info_chunk = chunk(b"LIST", b"INFOISFT\x05\x00\x00\x00abcd\x00")  # 17 bytes: padded
    assert len(info_chunk) == 8 + 18
    data = ref.astype("<i2").tobytes()
    samples, _ = read_wav(make_wav(tmp_path, fmt_body(1, 2, RATE, 16), data, before=[info_chunk]))
    np.testing.assert_array_equal(samples, ref)


def test_unknown_chunks_and_data_before_fmt(tmp_path, ref):
    data = ref.astype("<i2").tobytes()
    path = tmp_path / "order.wav"
    path.write_bytes(
        riff(chunk(b"junk", b"xyz"), chunk(b"data", data), chunk(b"fmt ", fmt_body(1, 2, RATE, 16)))
    )
    samples, _ = read_wav(path)
    np.testing.assert_array_equal(samples, ref)


@pytest.mark.parametrize("declared", [0xFFFFFFFF, 0, 10**8])
def test_streamed_data_size_reads_to_eof(tmp_path, ref, declared):
    data = ref.astype("<i2").tobytes() + b"\x01\x02\x03"  # plus a partial frame
    path = tmp_path / "streamed.wav"
    body = riff(chunk(b"fmt ", fmt_body(1, 2, RATE, 16)), riff_size=0)
    path.write_bytes(body + b"data" + struct.pack("<I", declared) + data)
    samples, info = read_wav(path)
    assert info.frames == len(ref)
    np.testing.assert_array_equal(samples, ref)


def test_empty_data_chunk_followed_by_metadata(tmp_path):
    list_chunk = chunk(b"LIST", b"INFOICMT\x04\x00\x00\x00hi!\x00")
    path = tmp_path / "empty.wav"
    path.write_bytes(
        riff(chunk(b"fmt ", fmt_body(1, 1, 16000, 16)), chunk(b"data", b""), list_chunk)
    )
    samples, info = read_wav(path)
    assert info.frames == 0 and samples.shape == (0, 1)


def test_riff_size_field_is_ignored(tmp_path, ref):
    path = tmp_path / "bad_riff_size.wav"
    data = ref.astype("<i2").tobytes()
    path.write_bytes(
        riff(chunk(b"fmt ", fmt_body(1, 2, RATE, 16)), chunk(b"data", data), riff_size=12)
    )
    np.testing.assert_array_equal(read_wav(path)[0], ref)


# --- errors -------------------------------------------------------------------------------


def _error(path) -> str:
    with pytest.raises(WavError) as excinfo:
        read_wav(path)
    message = str(excinfo.value)
    assert str(path) in message
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "content", [b"", b"RIFF", b"hello, this is not a wav file", riff()[:8] + b"AVI LIST"]
)
def test_not_riff_wave(tmp_path, content):
    path = tmp_path / "x.wav"
    path.write_bytes(content)
    assert "not a RIFF/WAVE file" in _error(path)


def test_no_fmt_chunk(tmp_path):
    path = tmp_path / "nofmt.wav"
    path.write_bytes(riff(chunk(b"data", b"\x00\x00")))
    assert "no fmt chunk" in _error(path)


def test_no_data_chunk(tmp_path):
    path = tmp_path / "nodata.wav"
    path.write_bytes(riff(chunk(b"fmt ", fmt_body(1, 1, 16000, 16)), chunk(b"LIST", b"INFO")))
    assert "no data chunk" in _error(path)


def test_short_fmt_chunk(tmp_path):
    assert "fmt chunk too short" in _error(make_wav(tmp_path, b"\x01\x00\x01\x00", b""))


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        (fmt_body(7, 1, 8000, 8), "format 0x0007 (mu-law)"),
        (fmt_body(6, 1, 8000, 8), "format 0x0006 (A-law)"),
        (fmt_body(2, 1, 8000, 4), "format 0x0002 (MS ADPCM)"),
        (fmt_body(0x11, 1, 8000, 4), "format 0x0011 (IMA ADPCM)"),
        (fmt_body(0x1234, 1, 8000, 16), "format 0x1234 (unknown)"),
        (extensible_body(7, 1, 8000, 8, 8), "format 0x0007 (mu-law)"),
    ],
)
def test_unsupported_format_code(tmp_path, fmt, expected):
    assert expected in _error(make_wav(tmp_path, fmt, b"\x00" * 16))


def test_extensible_unknown_guid(tmp_path):
    fmt = extensible_body(1, 1, 16000, 16, 16)[:-14] + b"\x11" * 14
    assert "subformat" in _error(make_wav(tmp_path, fmt, b"\x00" * 16))


def test_extensible_short(tmp_path):
    fmt = fmt_body(0xFFFE, 1, 16000, 16)
    assert "extensible fmt chunk too short" in _error(make_wav(tmp_path, fmt, b"\x00" * 16))


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [(fmt_body(1, 1, 16000, 12), "12 bits"), (fmt_body(3, 1, 16000, 16), "float sample size")],
)
def test_unsupported_sample_size(tmp_path, fmt, expected):
    assert expected in _error(make_wav(tmp_path, fmt, b"\x00" * 16))


def test_zero_channels(tmp_path):
    assert "0 channels" in _error(make_wav(tmp_path, fmt_body(1, 0, 16000, 16), b"\x00" * 16))


@pytest.mark.parametrize("rate", [0, 7, 50_000_000])
def test_absurd_rate(tmp_path, rate):
    message = _error(make_wav(tmp_path, fmt_body(1, 1, rate, 16), b"\x00" * 16))
    assert f"sample rate {rate} Hz" in message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.wav"
    assert _error(path) == f"cannot read {path}: No such file or directory"


def test_directory(tmp_path):
    assert _error(tmp_path) == f"cannot read {tmp_path}: Is a directory"


def test_permission_denied_message(tmp_path, monkeypatch):
    path = tmp_path / "locked.wav"

    def deny(p, mode="r"):
        raise PermissionError(13, "Permission denied", str(p))

    monkeypatch.setattr(wavfile, "open", deny, raising=False)
    assert _error(path) == f"cannot read {path}: Permission denied"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads anything")
def test_permission_denied_for_real(tmp_path):
    path = tmp_path / "locked.wav"
    write_wav(path, b"\x00\x00", 16000)
    path.chmod(0)
    assert _error(path) == f"cannot read {path}: Permission denied"


def test_wav_error_is_a_value_error():
    assert issubclass(WavError, ValueError)


# --- writing ------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2])
def test_write_round_trip_exact(tmp_path, ref, channels):
    pcm = ref[:, :channels].astype("<i2").tobytes()
    path = tmp_path / "out.wav"
    write_wav(path, pcm, 24000, channels)
    samples, info = read_wav(path)
    assert info == WavInfo(rate=24000, channels=channels, bits=16, float=False, frames=len(ref))
    np.testing.assert_array_equal(samples, ref[:, :channels])
    with wave.open(str(path), "rb") as w:  # and the stdlib agrees
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (channels, 2, 24000)
        assert w.getnframes() == len(ref)
        assert w.readframes(len(ref)) == pcm


def test_write_accepts_bytearray_and_memoryview(tmp_path):
    pcm = bytes(range(8))
    for i, buf in enumerate((bytearray(pcm), memoryview(pcm))):
        write_wav(tmp_path / f"{i}.wav", buf, 16000)
        assert read_wav(tmp_path / f"{i}.wav")[0].tobytes() == pcm


def test_write_empty(tmp_path):
    write_wav(tmp_path / "e.wav", b"", 24000)
    samples, info = read_wav(tmp_path / "e.wav")
    assert info.frames == 0 and samples.shape == (0, 1)


def test_write_leaves_no_temp_file_and_overwrites(tmp_path):
    path = tmp_path / "answer.wav"
    write_wav(path, b"\x01\x00" * 10, 24000)
    write_wav(path, b"\x02\x00" * 5, 24000)
    assert os.listdir(tmp_path) == ["answer.wav"]
    assert read_wav(path)[1].frames == 5
    assert path.stat().st_mode & 0o777 == 0o644


def test_write_is_atomic_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "answer.wav"
    write_wav(path, b"\x01\x00" * 10, 24000)
    before = path.read_bytes()

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(wavfile.os, "replace", fail)
    with pytest.raises(OSError):
        write_wav(path, b"\x02\x00" * 1000, 24000)
    assert path.read_bytes() == before  # the old file is untouched
    assert os.listdir(tmp_path) == ["answer.wav"]  # and the temp file is gone


@pytest.mark.parametrize(("pcm", "channels"), [(b"\x00\x00\x00", 1), (b"\x00\x00" * 3, 2)])
def test_write_rejects_partial_samples(tmp_path, pcm, channels):
    with pytest.raises(ValueError):
        write_wav(tmp_path / "bad.wav", pcm, 24000, channels)
    assert os.listdir(tmp_path) == []
