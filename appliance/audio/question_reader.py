"""The question file, read and converted by a child process while ``appliance ask`` connects.

Reading a file means numpy, libsndfile and soxr (and maybe ffmpeg); connecting means aiohttp.
Each is a few hundred milliseconds of imports on a Pi, so they run side by side on two cores:
``python -m appliance.audio.sources FILE`` checks the file, prints one JSON line (its format,
or the one-line error), then streams 24 kHz mono PCM16 on stdout, paced by the pipe (so memory
stays flat). This module imports nothing heavy; :class:`QuestionReader` is what ask reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any, Protocol

BLOCK_BYTES = 24000  # 0.5 s of 24 kHz PCM16 mono


class AudioFileError(ValueError):
    """The question cannot be read; the message is one line naming the file."""


class QuestionSource(Protocol):
    """What ask reads: the question as 24 kHz mono PCM16 blocks, afresh on each call."""

    def blocks(self) -> Iterator[bytes]: ...


class QuestionReader:
    """``start()`` the child early; ``check()`` waits for its verdict; ``blocks()`` reads
    (again, for a retry) the converted audio."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.info: dict[str, Any] = {}
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> QuestionReader:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "appliance.audio.sources", self.path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        return self

    def check(self) -> dict[str, Any]:
        """The file's format (``reader``, ``kind``, ``seconds``); AudioFileError if unusable."""
        if self._proc is None:
            self.start()
        assert self._proc is not None and self._proc.stdout is not None
        line = self._proc.stdout.readline()
        try:
            header = json.loads(line)
        except ValueError:
            header = {"error": self._failure() or f"{self.path}: the reader failed"}
        if "error" in header:
            self.close()
            raise AudioFileError(header["error"])
        self.info = header
        return header

    def blocks(self) -> Iterator[bytes]:
        """The converted question; a second call reads the file again in a new child."""
        if self._proc is None:
            self.check()
        proc, self._proc = self._proc, None
        assert proc is not None and proc.stdout is not None
        try:
            while block := proc.stdout.read(BLOCK_BYTES):
                yield block
            if proc.wait() != 0:
                raise AudioFileError(self._failure(proc) or f"{self.path}: reading failed")
        finally:
            _end(proc)

    def _failure(self, proc: subprocess.Popen[bytes] | None = None) -> str:
        proc = proc or self._proc
        if proc is None or proc.stderr is None:
            return ""
        proc.wait()
        lines = proc.stderr.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else ""

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            _end(proc)


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
