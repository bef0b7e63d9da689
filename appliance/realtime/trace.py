"""A trace of first contact: every Realtime event sent and received, as JSON lines.

Nobody here can reach the real service, so the first box that does must be able to tell us
what it met. Each line of the file is one JSON object::

    {"t": 1.234, "wall": "2026-12-04T19:30:00.123+00:00", "dir": "sent", "event": {...}}

- ``t``: seconds since the trace started (monotonic clock; a ``trace.start`` note begins each
  count, so a file the service appended to across restarts holds several); ``wall``: UTC time,
  ISO 8601.
- ``dir``: ``sent`` (a client event, after it went out), ``recv`` (a server text frame) or
  ``note`` (what the session saw around the events: the connect, the handshake, the close).
- ``event``: the event as sent or received. A received frame that is not a JSON object is
  written as ``{"raw": <its first 1000 characters>}``. A note is ``{"type": <what>, ...facts}``.

What is left out:

- Audio. Every audio payload (``audio`` of ``input_audio_buffer.append``, ``delta`` of
  ``response.output_audio.delta`` / ``response.audio.delta``, any string ``audio`` field of an
  item or content part) is replaced by the string ``"<audio N bytes>"``, N being its decoded
  size (see :func:`audio_marker_bytes`). The trace shows the timing and the size of the audio,
  not the voice.
- Secrets. The writer never sees the ``Authorization`` header (the session does not pass it);
  every value given to :meth:`TraceWriter.protect` (the API key) is replaced by ``***`` wherever
  it appears in a line, as a second line of defence. The words of the conversation (the
  transcripts, the instructions) are in the file: it is as private as the journal.

Bounded: past ``max_bytes`` (default 50 MB) one last note (``trace.full``) is written and then
nothing more. It never raises into its caller once open: a failed write logs one warning and
turns the trace off. The file is created with mode 0600.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

log = logging.getLogger("appliance.trace")

FORMAT = 1
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
RAW_CHARS = 1000
AUDIO_DELTA_TYPES = frozenset({"response.output_audio.delta", "response.audio.delta"})
# Query parameters whose value is kept in the trace; every other one is masked.
PUBLIC_QUERY = frozenset({"model"})
_AUDIO_MARKER = re.compile(r"^<audio (\d+) bytes>$")


class TraceFileError(Exception):
    """The trace file cannot be opened; the message is one line naming the path."""


def audio_bytes(payload: str) -> int:
    """The decoded size of a base64 payload, without decoding it (padding counted)."""
    n = len(payload)
    return max(0, n * 3 // 4 - (payload.endswith("=") + payload.endswith("==")))


def audio_marker(payload: str) -> str:
    return f"<audio {audio_bytes(payload)} bytes>"


def audio_marker_bytes(value: Any) -> int | None:
    """N for a ``"<audio N bytes>"`` marker, else None (for readers of a trace)."""
    match = _AUDIO_MARKER.match(value) if isinstance(value, str) else None
    return int(match.group(1)) if match else None


def without_audio(event: Any, *, _top: bool = True) -> Any:
    """A copy of ``event`` with every audio payload replaced by its marker (input untouched)."""
    if isinstance(event, Mapping):
        audio_delta = _top and event.get("type") in AUDIO_DELTA_TYPES
        out = {}
        for key, value in event.items():
            if isinstance(value, str) and (key == "audio" or (audio_delta and key == "delta")):
                out[key] = audio_marker(value)
            else:
                out[key] = without_audio(value, _top=False)
        return out
    if isinstance(event, list | tuple):
        return [without_audio(v, _top=False) for v in event]
    return event


def endpoint_facts(endpoint: str) -> dict[str, Any]:
    """``url`` (no query, no user info) and ``query`` (only PUBLIC_QUERY values kept)."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    url = urlunsplit((parts.scheme, host, parts.path, "", ""))
    query = {k: (v if k in PUBLIC_QUERY else "***") for k, v in parse_qsl(parts.query)}
    return {"url": url, "query": query}


def response_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """A refused handshake's response headers, for the note: a server's request id is what its
    support asks for. Cookies and anything named like a credential are left out."""
    kept: dict[str, str] = {}
    for name, value in (headers or {}).items():
        lowered = name.lower()
        if any(word in lowered for word in ("cookie", "auth", "token", "key", "secret")):
            continue
        kept[name] = str(value)[:200]
    return kept


def _open_private(path: Path, append: bool) -> Any:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
    return os.fdopen(fd, "a" if append else "w", encoding="utf-8", buffering=1)


class TraceWriter:
    """Writes the trace file; see the module docstring. Not thread-safe: use it from one loop.

    ``TraceWriter(path)`` opens (or creates) the file and raises :class:`TraceFileError` if it
    cannot; after that, :meth:`sent`, :meth:`received`, :meth:`note` and :meth:`close` never
    raise. ``append=True`` keeps what an earlier run wrote (the service's restarts must not
    erase the trace of the failure that caused them); ``max_bytes`` then counts it too.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        append: bool = False,
        secrets: Iterable[str] = (),
        clock: Any = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.lines = 0
        self._secrets: list[str] = []
        self._clock = clock
        self._start = clock()
        for secret in secrets:
            self.protect(secret)
        try:
            self._file = _open_private(self.path, append)
            self.bytes = self._file.tell() if append else 0
        except OSError as exc:
            raise TraceFileError(
                f"cannot write the trace {self.path}: {exc.strerror or type(exc).__name__}"
            ) from None
        self._on = True
        if self.bytes >= max_bytes:
            log.warning("the trace %s is full (%d bytes); not tracing", self.path, self.bytes)
            self._stop()
            return
        from appliance import __version__

        self.note("trace.start", format=FORMAT, appliance=__version__, pid=os.getpid())

    def __repr__(self) -> str:
        return f"TraceWriter({str(self.path)!r}, lines={self.lines}, on={self._on})"

    @property
    def enabled(self) -> bool:
        return self._on

    def protect(self, secret: str) -> None:
        """Never write ``secret``: it becomes ``***`` wherever it appears in a line."""
        if secret and len(secret) >= 4 and secret not in self._secrets:
            self._secrets.append(secret)
            escaped = json.dumps(secret, ensure_ascii=False)[1:-1]
            if escaped != secret:
                self._secrets.append(escaped)

    # ---- what the session calls ----------------------------------------------------------

    def sent(self, event: Mapping[str, Any]) -> None:
        """A client event that went out."""
        if self._on:
            self._guarded(lambda: self._write("sent", without_audio(event)))

    def received(self, frame: str) -> None:
        """A server text frame, exactly as it came."""
        if self._on:
            self._guarded(lambda: self._write("recv", self._parse(frame)))

    def note(self, kind: str, **facts: Any) -> None:
        """A fact around the events: ``note("closed", code=1000, by="client")``."""
        if self._on:
            self._guarded(lambda: self._write("note", {"type": kind, **facts}))

    def close(self) -> None:
        if self._on:
            self._guarded(lambda: self._write("note", {"type": "trace.end", "lines": self.lines}))
        self._stop()

    # ---- inside ------------------------------------------------------------------------------

    def _parse(self, frame: str) -> Any:
        frame = self._scrub(frame)  # before cutting: a key split at the cut would survive
        try:
            event = json.loads(frame)
        except ValueError:
            event = None
        if isinstance(event, dict):
            return without_audio(event)
        return {"raw": frame[:RAW_CHARS]}

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def _write(self, direction: str, event: Any) -> None:
        line = json.dumps(
            {
                "t": round(self._clock() - self._start, 6),
                "wall": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "dir": direction,
                "event": event,
            },
            ensure_ascii=False,
            separators=(",", ":"),
            default=str,
        )
        line = self._scrub(line) + "\n"
        size = len(line.encode("utf-8"))
        if self.bytes + size > self.max_bytes:
            self._full()
            return
        self._file.write(line)
        self.bytes += size
        self.lines += 1

    def _full(self) -> None:
        line = json.dumps(
            {
                "t": round(self._clock() - self._start, 6),
                "wall": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "dir": "note",
                "event": {"type": "trace.full", "max_bytes": self.max_bytes},
            }
        )
        self._file.write(line + "\n")
        self.bytes += len(line) + 1
        self.lines += 1
        log.warning("the trace %s reached %d bytes; tracing stopped", self.path, self.max_bytes)
        self._stop()

    def _guarded(self, write: Any) -> None:
        try:
            write()
        except Exception as exc:  # a trace must never take the box down
            reason = exc.strerror if isinstance(exc, OSError) else type(exc).__name__
            log.warning("cannot write the trace %s (%s); tracing is off", self.path, reason)
            self._stop()

    def _stop(self) -> None:
        self._on = False
        file, self._file = getattr(self, "_file", None), None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()


def open_service_trace(path: str | None, secrets: Iterable[str] = ()) -> TraceWriter | None:
    """The trace of ``realtime.trace_file`` for the service: appended to (a restart keeps the
    trace of what went wrong before it); a file that cannot be written is one warning and no
    trace, never a box that does not start."""
    if not path:
        return None
    try:
        return TraceWriter(path, append=True, secrets=secrets)
    except TraceFileError as exc:
        log.warning("realtime.trace_file: %s; running without a trace", exc)
        return None
