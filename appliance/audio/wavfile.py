"""WAV file reading and writing, for prompts, test fixtures and recordings.

Python 3.11's ``wave`` module only reads plain integer PCM: it rejects WAVE_FORMAT_EXTENSIBLE
(which most recorders and DAWs write for 24-bit or multi-channel audio) and 32-bit float WAVs.
So this module parses the RIFF chunks itself and turns any common PCM or float WAV into int16,
the format everything else in the appliance works in. ``appliance ask`` reads its questions
through libsndfile (:mod:`appliance.audio.sources`) and comes here only for the two WAVs
libsndfile gets wrong: a streamed data size of 0 with audio after it, and data before fmt.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

_PCM = 0x0001
_FLOAT = 0x0003
_EXTENSIBLE = 0xFFFE
# The 14 bytes that follow the format code in a KSDATAFORMAT_SUBTYPE_* GUID.
_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
_FORMAT_NAMES = {
    0x0002: "MS ADPCM",
    0x0006: "A-law",
    0x0007: "mu-law",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0055: "MP3",
}
_MIN_RATE, _MAX_RATE = 1000, 1_000_000
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # what streaming writers put in the data size before they know


class WavError(ValueError):
    """A WAV file that cannot be read; the message names the file and what is wrong."""


@dataclass(frozen=True)
class WavInfo:
    """The stored format: ``bits`` is the container size per sample (e.g. 32 for 24-in-32)."""

    rate: int
    channels: int
    bits: int
    float: bool
    frames: int


def _parse_fmt(path: object, body: bytes) -> tuple[int, int, int, int]:
    """-> (format code, channels, rate, bits), with EXTENSIBLE resolved to its subformat."""
    if len(body) < 16:
        raise WavError(f"{path}: fmt chunk too short ({len(body)} bytes)")
    code, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", body)
    if code == _EXTENSIBLE:
        if len(body) < 40:
            raise WavError(f"{path}: extensible fmt chunk too short ({len(body)} bytes)")
        code = struct.unpack_from("<H", body, 24)[0]
        if body[26:40] != _GUID_TAIL:
            raise WavError(f"{path}: unsupported WAVE_FORMAT_EXTENSIBLE subformat GUID")
    return code, channels, rate, bits


def _decode(raw: bytes, code: int, bits: int) -> np.ndarray:
    """Little-endian samples -> int16, scaled to full range (flat array)."""
    if code == _FLOAT:
        x = np.frombuffer(raw, dtype="<f4" if bits == 32 else "<f8")
        x = np.clip(np.nan_to_num(x.astype(np.float64)), -1.0, 1.0)
        return np.rint(x * 32767.0).astype(np.int16)
    if bits == 8:
        return ((np.frombuffer(raw, dtype=np.uint8).astype(np.int16) - 128) << 8).astype(np.int16)
    if bits == 16:
        return np.frombuffer(raw, dtype="<i2").astype(np.int16)
    if bits == 24:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        padded = np.zeros((b.shape[0], 4), dtype=np.uint8)
        padded[:, 1:] = b  # low byte zero: an int32 equal to the sample << 8, sign included
        x = padded.view("<i4").reshape(-1).astype(np.int64) >> 8
        return np.clip((x + 0x80) >> 8, -32768, 32767).astype(np.int16)
    x = np.frombuffer(raw, dtype="<i4").astype(np.int64)  # 32-bit int
    return np.clip((x + 0x8000) >> 16, -32768, 32767).astype(np.int16)


def read_wav(path: str | os.PathLike[str]) -> tuple[np.ndarray, WavInfo]:
    """Read a WAV file as int16 samples of shape ``(frames, channels)`` and its format.

    Reads 8-bit unsigned, 16/24/32-bit signed and 32/64-bit float data, plain or
    WAVE_FORMAT_EXTENSIBLE. Unknown chunks are skipped. A data chunk whose size is unknown or
    larger than the file (as written by streaming recorders) is read to the end of the file.
    """
    with open_riff_pcm(path) as pcm:
        samples = pcm.read(pcm.info.frames)
        return samples, dataclasses.replace(pcm.info, frames=len(samples))


def _check_format(path: object, code: int, channels: int, rate: int, bits: int) -> None:
    if code not in (_PCM, _FLOAT):
        name = _FORMAT_NAMES.get(code, "unknown")
        raise WavError(f"{path}: unsupported WAV format 0x{code:04X} ({name}); need PCM or float")
    if (code == _PCM and bits not in (8, 16, 24, 32)) or (code == _FLOAT and bits not in (32, 64)):
        kind = "PCM" if code == _PCM else "float"
        raise WavError(f"{path}: unsupported {kind} sample size of {bits} bits")
    if channels == 0:
        raise WavError(f"{path}: 0 channels")
    if not _MIN_RATE <= rate <= _MAX_RATE:
        raise WavError(f"{path}: implausible sample rate {rate} Hz")


class RiffPcm:
    """An open WAV's data chunk, read block by block as int16 ``(frames, channels)``."""

    def __init__(self, f: BinaryIO, info: WavInfo, code: int, size: int) -> None:
        self.info = info
        self._f = f
        self._code = code
        self._left = size  # bytes of whole frames still to read

    def read(self, frames: int) -> np.ndarray:
        frame_bytes = self.info.channels * self.info.bits // 8
        raw = self._f.read(min(self._left, frames * frame_bytes))
        raw = raw[: len(raw) - len(raw) % frame_bytes]  # a truncated file ends mid-frame
        self._left = len(raw) and self._left - len(raw)
        samples = _decode(raw, self._code, self.info.bits)
        return samples.reshape(-1, self.info.channels)

    def __enter__(self) -> RiffPcm:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


def open_riff_pcm(path: str | os.PathLike[str]) -> RiffPcm:
    """Open a PCM or float WAV for reading block by block; only the chunk headers are read.

    The same rules as :func:`read_wav` (chunks in any order, a streamed or oversized data size
    read to the end of the file), without holding the file in memory.
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 - RiffPcm closes it
    except OSError as e:
        raise WavError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        file_size = os.fstat(f.fileno()).st_size
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise WavError(f"{path}: not a RIFF/WAVE file")
        fmt: tuple[int, int, int, int] | None = None
        data: tuple[int, int] | None = None  # (offset, size)
        pos = 12
        while pos + 8 <= file_size and (fmt is None or data is None):
            f.seek(pos)
            cid, size = struct.unpack("<4sI", f.read(8))
            start = pos + 8
            if cid == b"fmt ":
                fmt = _parse_fmt(path, f.read(min(size, 1024)))
            elif cid == b"data":
                available = file_size - start
                if size > available or (
                    size in _UNKNOWN_SIZES and available and not _chunk_follows(f, start, file_size)
                ):
                    size = available
                data = (start, size)
            pos = start + size + (size & 1)
        if fmt is None:
            raise WavError(f"{path}: no fmt chunk")
        if data is None:
            raise WavError(f"{path}: no data chunk")
        code, channels, rate, bits = fmt
        _check_format(path, code, channels, rate, bits)
        frame_bytes = channels * bits // 8
        frames = data[1] // frame_bytes
        info = WavInfo(rate=rate, channels=channels, bits=bits, float=code == _FLOAT, frames=frames)
        f.seek(data[0])
        return RiffPcm(f, info, code, frames * frame_bytes)
    except BaseException:
        f.close()
        raise


def _chunk_follows(f: BinaryIO, pos: int, file_size: int) -> bool:
    f.seek(pos)
    header = f.read(8)
    if len(header) < 8:
        return False
    size = struct.unpack_from("<I", header, 4)[0]
    return all(0x20 <= c < 0x7F for c in header[:4]) and pos + 8 + size <= file_size


def write_wav(path: str | os.PathLike[str], pcm16: bytes, rate: int, channels: int = 1) -> None:
    """Write little-endian int16 PCM as a 16-bit WAV, atomically.

    The file is written to a temporary name in the same directory and renamed into place, so a
    reader (the player, a test, a person) sees either the old file or the whole new one.
    """
    pcm = bytes(pcm16)
    if len(pcm) % 2:
        raise ValueError(f"PCM16 data has an odd byte count ({len(pcm)})")
    if channels < 1 or len(pcm) % (2 * channels):
        raise ValueError(f"{len(pcm)} bytes is not a whole number of {channels}-channel frames")
    block = 2 * channels
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + len(pcm), b"WAVE",
        b"fmt ", 16, _PCM, channels, rate, rate * block, block, 16,
        b"data", len(pcm),
    )  # fmt: skip
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header)
            f.write(pcm)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a WAV is meant to be read by others
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
