"""The question of ``appliance ask``: any audio file people have, as 24 kHz mono PCM16 blocks.

libsndfile (through ``soundfile``) reads WAV of every encoding (PCM, float, mu-law, A-law,
ADPCM, WAVE_FORMAT_EXTENSIBLE, RF64), FLAC, OGG Vorbis and Opus, MP3, AIFF and more, block by
block. What it cannot read (M4A/AAC, WebM, AMR...) goes through ``ffmpeg`` when it is
installed, read from its stdout as it decodes. Two WAV oddities libsndfile refuses or reads as
empty are read by our own RIFF walker (:func:`appliance.audio.wavfile.open_riff_pcm`): a data
chunk whose size says 0 although audio follows (a streaming writer that never went back), and a
data chunk before the fmt chunk.

Memory stays flat whatever the length: a block is read, mixed down, resampled and handed on,
then dropped. :meth:`QuestionFile.blocks` opens the file afresh on each call, so a question
that must be asked again is read again rather than kept.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile
import soxr

from appliance.audio.wavfile import WavError, open_riff_pcm

OUT_RATE = 24000  # the Realtime API's input rate unless told another
BLOCK_S = 0.5  # seconds of input read at a time: small enough for a Pi, large enough to be cheap
MIN_MS = 100  # the API refuses a shorter commit
_FFMPEG_READ = 1 << 15

# Mono from more than two channels, by channel count and container: the ITU-R BS.775 stereo
# downmix (L + 0.707 C + 0.707 Ls, R + 0.707 C + 0.707 Rs) averaged to mono; the LFE is left
# out. WAV, FLAC, AIFF order the channels as WAVE_FORMAT_EXTENSIBLE does (FL FR FC LFE BL BR
# SL SR); Vorbis and Opus as the Vorbis spec does (FL FC FR ...).
_C, _S = 0.7071, 0.3536  # the centre, a surround
_WAV_MIX = {
    3: (0.5, 0.5, _C),  # FL FR FC
    4: (0.5, 0.5, _S, _S),  # FL FR BL BR
    5: (0.5, 0.5, _C, _S, _S),  # FL FR FC BL BR
    6: (0.5, 0.5, _C, 0.0, _S, _S),  # 5.1: FL FR FC LFE BL BR
    7: (0.5, 0.5, _C, 0.0, _S, _S, _S),  # 6.1: FL FR FC LFE BC SL SR
    8: (0.5, 0.5, _C, 0.0, _S, _S, _S, _S),  # 7.1: FL FR FC LFE BL BR SL SR
}
_VORBIS_MIX = {
    3: (0.5, _C, 0.5),  # FL FC FR
    4: (0.5, 0.5, _S, _S),  # FL FR RL RR
    5: (0.5, _C, 0.5, _S, _S),  # FL FC FR RL RR
    6: (0.5, _C, 0.5, _S, _S, 0.0),  # FL FC FR RL RR LFE
    7: (0.5, _C, 0.5, _S, _S, _S, 0.0),  # FL FC FR SL SR RC LFE
    8: (0.5, _C, 0.5, _S, _S, _S, _S, 0.0),  # FL FC FR SL SR RL RR LFE
}


class AudioFileError(ValueError):
    """The question cannot be read; the message is one line naming the file."""


class QuestionSource(Protocol):
    """What ask reads: the question as mono PCM16 blocks at ``rate``, afresh on each call."""

    def blocks(self, rate: int = OUT_RATE) -> Iterator[bytes]: ...


def downmix_weights(channels: int, container: str = "WAV") -> np.ndarray:
    """The weight of each channel in the mono mix."""
    if channels == 1:
        return np.ones(1, dtype=np.float32)
    if channels == 2:
        return np.full(2, 0.5, dtype=np.float32)
    table = _VORBIS_MIX if container == "OGG" else _WAV_MIX
    weights = table.get(channels)
    if weights is None:  # no standard layout: all channels alike
        return np.full(channels, 1.0 / channels, dtype=np.float32)
    return np.asarray(weights, dtype=np.float32)


def _what_is_it(head: bytes, path: Path) -> str:
    """A name for a file libsndfile does not read, from its first bytes."""
    if head[4:8] == b"ftyp":
        return "an MP4/M4A file (AAC audio)"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "a WebM/Matroska file"
    if head[:5] == b"#!AMR":
        return "an AMR voice file"
    if head[:4] == b"OggS":
        return "an OGG file with a codec libsndfile does not read"
    if head[:4] == b"caff":
        return "a CAF file"
    if head[:4] == b"RIFF":
        return "a RIFF file libsndfile does not read"
    suffix = path.suffix.lstrip(".").upper()
    return f"a {suffix} file" if suffix else "a file of unknown format"


def _mono_int16(block: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """float32 ``(n, ch)`` in [-1, 1] -> mono float32."""
    if block.ndim == 1:
        return block
    if block.shape[1] == 1:
        return block[:, 0]
    return block @ weights


def _pcm16(x: np.ndarray) -> bytes:
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype("<i2").tobytes()


@dataclass(frozen=True)
class QuestionFile:
    """An opened-and-checked question; ``blocks()`` reads it (again) as 24 kHz mono PCM16.

    ``reader`` is ``"soundfile"``, ``"riff"`` or ``"ffmpeg"``; ``frames`` is None when the
    length is known only at the end (ffmpeg).
    """

    path: Path
    reader: str
    kind: str
    rate: int
    channels: int
    frames: int | None

    @property
    def seconds(self) -> float | None:
        return None if self.frames is None else self.frames / self.rate

    def blocks(self, rate: int = OUT_RATE, block_s: float = BLOCK_S) -> Iterator[bytes]:
        """The question as little-endian int16 mono at ``rate``, one block at a time."""
        if self.reader == "ffmpeg":
            yield from _ffmpeg_blocks(self.path, rate, int(block_s * rate) * 2)
            return
        frames_per_block = max(1, int(block_s * self.rate))
        weights = downmix_weights(self.channels, self.kind.split()[0])
        resampler = None
        if self.rate != rate:
            resampler = soxr.ResampleStream(self.rate, rate, 1, dtype="float32", quality="HQ")
        source = (
            _soundfile_blocks(self.path, frames_per_block)
            if self.reader == "soundfile"
            else _riff_blocks(self.path, frames_per_block)
        )
        for block in source:
            mono = _mono_int16(block, weights)
            if resampler is not None:
                mono = resampler.resample_chunk(mono)
            if len(mono):
                yield _pcm16(mono)
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            if len(tail):
                yield _pcm16(tail)


def _soundfile_blocks(path: Path, frames: int) -> Iterator[np.ndarray]:
    try:
        with soundfile.SoundFile(path) as f:
            while True:
                block = f.read(frames, dtype="float32", always_2d=True)
                if not len(block):
                    return
                yield block
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioFileError(f"{path}: reading failed: {exc}") from None


def _riff_blocks(path: Path, frames: int) -> Iterator[np.ndarray]:
    try:
        with open_riff_pcm(path) as pcm:
            while True:
                block = pcm.read(frames)
                if not len(block):
                    return
                yield block.astype(np.float32) / np.float32(32768.0)
    except WavError as exc:
        raise AudioFileError(str(exc)) from None


def _ffmpeg_blocks(path: Path, rate: int, block_bytes: int) -> Iterator[bytes]:
    command = [
        shutil.which("ffmpeg") or "ffmpeg",
        *("-nostdin", "-hide_banner", "-loglevel", "error", "-i", os.fspath(path)),
        *("-vn", "-ac", "1", "-ar", str(rate), "-f", "s16le", "-acodec", "pcm_s16le", "-"),
    ]
    try:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError as exc:
        raise AudioFileError(f"{path}: cannot run ffmpeg: {exc.strerror or exc}") from None
    assert proc.stdout is not None and proc.stderr is not None
    pending = b""
    try:
        while chunk := proc.stdout.read1(_FFMPEG_READ):
            pending += chunk
            if len(pending) >= block_bytes:
                whole = len(pending) & ~1
                yield pending[:whole]
                pending = pending[whole:]
        errors = proc.stderr.read().decode("utf-8", "replace").strip()
        if proc.wait() != 0:
            last = errors.splitlines()[-1] if errors else f"exit status {proc.returncode}"
            raise AudioFileError(f"{path}: ffmpeg cannot read it: {last}")
        if len(pending) >= 2:
            yield pending[: len(pending) & ~1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def open_question(path: str | os.PathLike[str]) -> QuestionFile:
    """Check that ``path`` is audio we can read and long enough; AudioFileError (one line) if not.

    Cheap: only the header is read (ffmpeg is not run here; its errors come from ``blocks()``).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except IsADirectoryError:
        raise AudioFileError(f"{path}: is a directory, not an audio file") from None
    except OSError as exc:
        raise AudioFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not head:
        raise AudioFileError(f"{path}: the file is empty")
    try:
        info = soundfile.info(os.fspath(path))
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        if head[:4] == b"RIFF":
            return _riff_question(path, str(exc))
        return _ffmpeg_question(path, head)
    kind = f"{info.format} {info.subtype}"
    if info.format in ("WAV", "WAVEX") and info.frames == 0:
        return _riff_question(path, "no audio")
    question = QuestionFile(path, "soundfile", kind, info.samplerate, info.channels, info.frames)
    _check_length(question)
    return question


def _riff_question(path: Path, libsndfile_said: str) -> QuestionFile:
    try:
        with open_riff_pcm(path) as pcm:
            info = pcm.info
    except WavError as exc:
        raise AudioFileError(f"{exc} (libsndfile: {libsndfile_said})") from None
    question = QuestionFile(path, "riff", "WAV PCM", info.rate, info.channels, info.frames)
    _check_length(question)
    return question


def _ffmpeg_question(path: Path, head: bytes) -> QuestionFile:
    what = _what_is_it(head, path)
    if shutil.which("ffmpeg") is None:
        raise AudioFileError(
            f"{path}: {what}, which only ffmpeg reads, and ffmpeg is not installed; "
            f"install it (sudo apt install ffmpeg) or convert the file: "
            f"ffmpeg -i {path} {path.with_suffix('.wav').name}"
        )
    return QuestionFile(path, "ffmpeg", what, OUT_RATE, 1, None)


def _check_length(question: QuestionFile) -> None:
    if question.frames == 0:
        raise AudioFileError(f"{question.path}: the file holds no audio (empty)")
    if question.frames is not None and question.frames * 1000 < MIN_MS * question.rate:
        raise AudioFileError(
            f"{question.path}: the question is shorter than 100 ms of audio "
            f"({question.frames / question.rate * 1000:.0f} ms)"
        )
