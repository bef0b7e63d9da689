"""Typed server events: what the rest of the appliance sees of the Realtime protocol.

Only the fields the appliance reads are kept. Every event is a frozen dataclass; the union
:data:`ServerEvent` lists them all. Events the protocol defines but the appliance does not act on
become :class:`Ignored`; types nobody knows become :class:`Unknown`; frames that cannot be read
become :class:`Malformed`. None of them is ever an exception.
"""

from __future__ import annotations

from dataclasses import dataclass

# Error codes that mean "this key will not work": retrying quickly cannot help.
AUTH_ERROR_CODES = frozenset(
    {
        "invalid_api_key",
        "authentication_error",
        "unauthorized",
        "permission_denied",
        "forbidden",
        "insufficient_quota",
        "account_deactivated",
    }
)


@dataclass(frozen=True, slots=True)
class SessionCreated:
    session_id: str
    output_rate: int | None = None
    voice: str | None = None


@dataclass(frozen=True, slots=True)
class SessionUpdated:
    session_id: str | None
    output_rate: int | None = None
    voice: str | None = None


@dataclass(frozen=True, slots=True)
class ServerError:
    type: str
    code: str | None
    message: str
    client_event_id: str | None = None

    @property
    def is_auth_failure(self) -> bool:
        return self.code in AUTH_ERROR_CODES or self.type in {"authentication_error"}

    @property
    def is_session_expired(self) -> bool:
        return self.code == "session_expired"

    @property
    def is_harmless(self) -> bool:
        """Errors that only say there was nothing to do."""
        return self.code in {"response_cancel_not_active"}


@dataclass(frozen=True, slots=True)
class InputCommitted:
    item_id: str


@dataclass(frozen=True, slots=True)
class InputCleared:
    pass


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    item_id: str | None
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    item_id: str | None
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class InputTranscript:
    """What the server heard the user say (asynchronous: may come before or after the answer)."""

    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class InputTranscriptFailed:
    item_id: str
    message: str


@dataclass(frozen=True, slots=True)
class ItemAdded:
    """``conversation.item.added`` (GA) or ``conversation.item.created`` (beta)."""

    item_id: str
    item_type: str
    role: str | None = None


@dataclass(frozen=True, slots=True)
class ItemTruncated:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class ResponseCreated:
    response_id: str


@dataclass(frozen=True, slots=True)
class FunctionCall:
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class OutputItemAdded:
    response_id: str
    item_id: str
    item_type: str
    role: str | None = None


@dataclass(frozen=True, slots=True)
class OutputItemDone:
    """An output item is final. ``call`` is set for a completed function call; ``text`` holds a
    message's transcript or text where the server included it (a fallback for missing deltas)."""

    response_id: str
    item_id: str
    item_type: str
    call: FunctionCall | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class AudioDelta:
    response_id: str
    item_id: str
    audio: bytes  # PCM16 little-endian mono at the session's output rate


@dataclass(frozen=True, slots=True)
class AudioDone:
    response_id: str
    item_id: str


@dataclass(frozen=True, slots=True)
class TranscriptDelta:
    """Part of the answer's words: the spoken transcript or, for a text answer, the text."""

    response_id: str
    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class TranscriptDone:
    response_id: str
    item_id: str
    text: str


@dataclass(frozen=True, slots=True)
class FunctionCallArgumentsDone:
    response_id: str
    item_id: str
    call: FunctionCall


@dataclass(frozen=True, slots=True)
class ResponseDone:
    """The authoritative end of a response, whatever else was or was not sent."""

    response_id: str
    status: str  # completed | cancelled | failed | incomplete
    reason: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    calls: tuple[FunctionCall, ...] = ()


@dataclass(frozen=True, slots=True)
class Ignored:
    """A known event the appliance does not act on."""

    type: str


@dataclass(frozen=True, slots=True)
class Unknown:
    """An event type this client does not know (a newer server): ignored."""

    type: str


@dataclass(frozen=True, slots=True)
class Malformed:
    """A frame that could not be read: logged and skipped."""

    reason: str
    type: str | None = None


ServerEvent = (
    SessionCreated
    | SessionUpdated
    | ServerError
    | InputCommitted
    | InputCleared
    | SpeechStarted
    | SpeechStopped
    | InputTranscript
    | InputTranscriptFailed
    | ItemAdded
    | ItemTruncated
    | ResponseCreated
    | OutputItemAdded
    | OutputItemDone
    | AudioDelta
    | AudioDone
    | TranscriptDelta
    | TranscriptDone
    | FunctionCallArgumentsDone
    | ResponseDone
    | Ignored
    | Unknown
    | Malformed
)
