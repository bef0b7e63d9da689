"""Logging to journald as structured entries, and the conversation transcript.

Under systemd the log goes straight to journald through its native protocol rather than as
stderr lines: each entry keeps its priority, the logger's name (``LOGGER``) and our own fields
(``APPLIANCE_ROLE``, ``APPLIANCE_TURN``...), multi-line text stays one entry, and the owner
can filter (``journalctl -t appliance APPLIANCE_ROLE=user``). Outside systemd the same records
go to stderr as plain lines (:func:`appliance.logs.setup_logging`), the fields left out.

Privacy: ``logging.transcripts: false`` keeps what was said out of the journal altogether,
while the figures of each turn (latency, audio lengths, outcome) are still written. Nothing
here logs the environment or the configuration, so the API key cannot reach the journal from
this module.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TextIO

from appliance.logs import setup_logging

try:
    from systemd.journal import JournalHandler
except ImportError:  # pragma: no cover - depends on the environment
    JournalHandler = None

SYSLOG_IDENTIFIER = "appliance"
RESULTS = ("answered", "cancelled", "failed", "timeout", "too_short")

log = logging.getLogger("appliance.service.journal")


def under_systemd(environ: Mapping[str, str] = os.environ) -> bool:
    """True when systemd started us: it sets ``$JOURNAL_STREAM`` (stderr goes to the journal)
    and ``$INVOCATION_ID`` (every service run) for its services, never for a login shell."""
    return bool(environ.get("JOURNAL_STREAM") or environ.get("INVOCATION_ID"))


def setup_service_logging(
    level: str,
    *,
    environ: Mapping[str, str] = os.environ,
    stream: TextIO | None = None,
) -> str:
    """Send the root logger to the journal under systemd, else to ``stream`` (stderr).

    Returns ``"journal"`` or ``"stderr"``, for the daemon's first log line. The level rules
    (and the quieting of aiohttp) are :func:`appliance.logs.setup_logging`'s; only the handler
    differs.
    """
    setup_logging(level, stream)
    if not under_systemd(environ):
        return "stderr"
    if JournalHandler is None:
        # stderr still reaches the journal (JOURNAL_STREAM), as plain lines without fields.
        log.warning("systemd-python is not installed: logging to stderr, without journal fields")
        return "stderr"
    # CODE_FILE/CODE_LINE/CODE_FUNC, LOGGER and PRIORITY come with every entry; the record's
    # `extra=` keys become fields of their own (journald drops the lower-case ones).
    logging.getLogger().handlers[:] = [JournalHandler(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)]
    return "journal"


class TranscriptLog:
    """Both sides of the conversation and each turn's figures, one journal entry each.

    ``user``/``assistant`` write ``MESSAGE="user: ..."`` / ``"assistant: ..."`` with
    ``APPLIANCE_ROLE``, ``APPLIANCE_TURN`` and ``APPLIANCE_SESSION``; with ``enabled=False``
    they write nothing. ``turn`` always writes ``"turn N: answered in X ms (...)"`` with
    ``APPLIANCE_LATENCY_MS``, ``APPLIANCE_AUDIO_IN_MS``, ``APPLIANCE_AUDIO_OUT_MS`` and
    ``APPLIANCE_RESULT``. A session id may be None (no session yet): the field is then left
    out rather than written as "None".
    """

    def __init__(self, enabled: bool, logger: logging.Logger | None = None) -> None:
        self.enabled = enabled
        self.logger = logger or logging.getLogger("appliance.transcript")

    def user(self, text: str, turn: int, session_id: str | None = None) -> None:
        """What the user said (the API's transcription of the question)."""
        self._said("user", text, turn, session_id)

    def assistant(self, text: str, turn: int, session_id: str | None = None) -> None:
        """What the speaker answered (the transcript of the answer's audio)."""
        self._said("assistant", text, turn, session_id)

    def turn(
        self,
        turn: int,
        latency_ms: int | None,
        audio_in_ms: int | None,
        audio_out_ms: int | None,
        result: str,
        session_id: str | None = None,
    ) -> None:
        """The figures of one finished turn; written even with transcripts off."""
        fields = _common(turn, session_id)
        fields["APPLIANCE_RESULT"] = result
        for key, value in (
            ("APPLIANCE_LATENCY_MS", latency_ms),
            ("APPLIANCE_AUDIO_IN_MS", audio_in_ms),
            ("APPLIANCE_AUDIO_OUT_MS", audio_out_ms),
        ):
            if value is not None:
                fields[key] = str(int(value))
        head = f"turn {turn}: {result}"
        if latency_ms is not None:
            head += f" in {int(latency_ms)} ms"
        audio = (
            f"audio in {_ms(audio_in_ms)}, out {_ms(audio_out_ms)}"
            f"{'' if session_id is None else f', session {session_id}'}"
        )
        # stacklevel: CODE_FILE/CODE_LINE/CODE_FUNC name the caller (the turn shell), not us.
        self.logger.info(f"{head} ({audio})", extra=fields, stacklevel=2)

    def _said(self, role: str, text: str, turn: int, session_id: str | None) -> None:
        if not self.enabled:
            return
        fields = _common(turn, session_id)
        fields["APPLIANCE_ROLE"] = role
        # Already formatted, no args: logging leaves a "%" in speech alone, and JournalHandler
        # adds no CODE_ARGS field repeating the whole text.
        self.logger.info(f"{role}: {text}", extra=fields, stacklevel=3)


def _common(turn: int, session_id: str | None) -> dict[str, str]:
    fields = {"APPLIANCE_TURN": str(int(turn))}
    if session_id is not None:
        fields["APPLIANCE_SESSION"] = str(session_id)
    return fields


def _ms(value: int | None) -> str:
    return "?" if value is None else f"{int(value)} ms"
