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


# Messages of errors that live servers sent with ``code: null``, lowercased, by the code they mean.
_CODE_BY_MESSAGE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("session_expired", ("maximum duration", "session expired", "session has expired")),
    ("input_audio_buffer_commit_empty", ("committing input audio buffer", "buffer is empty")),
    ("response_cancel_not_active", ("no active response",)),
    ("conversation_already_has_active_response", ("already has an active response",)),
    ("invalid_api_key", ("incorrect api key", "invalid api key", "api key is invalid")),
)


@dataclass(frozen=True, slots=True)
class SessionCreated:
    session_id: str
    output_rate: int | None = None
    voice: str | None = None


@dataclass(frozen=True, slots=True)
class SessionUpdated:
    """The effective session after a ``session.update``. ``turn_detection`` is the type the
    server reports (``server_vad``, ``semantic_vad``; ``None`` for none) when it says."""

    session_id: str | None
    output_rate: int | None = None
    voice: str | None = None
    turn_detection: str | None = None
    reports_turn_detection: bool = False


@dataclass(frozen=True, slots=True)
class ServerError:
    type: str
    code: str | None
    message: str
    client_event_id: str | None = None

    @property
    def kind(self) -> str | None:
        """The error's code, or where a server sent ``code: null``, the code its message
        stands for (live servers do this: see shared/traces/E_quoted_live_frames.jsonl)."""
        if self.code:
            return self.code
        text = self.message.lower()
        for code, phrases in _CODE_BY_MESSAGE:
            if any(phrase in text for phrase in phrases):
                return code
        return None

    @property
    def is_auth_failure(self) -> bool:
        return self.kind in AUTH_ERROR_CODES or self.type in {"authentication_error"}

    @property
    def is_session_expired(self) -> bool:
        return self.kind == "session_expired"

    @property
    def is_commit_empty(self) -> bool:
        return self.kind == "input_audio_buffer_commit_empty"

    @property
    def is_harmless(self) -> bool:
        """Errors that only say there was nothing to do."""
        return self.kind in {"response_cancel_not_active"}


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
    content_index: int = 0  # of the audio part in its item (a truncate names it)


@dataclass(frozen=True, slots=True)
class AudioDone:
    response_id: str
    item_id: str


AUDIO_TRANSCRIPT = "audio"
OUTPUT_TEXT = "text"


@dataclass(frozen=True, slots=True)
class TranscriptDelta:
    """Part of the answer's words. ``channel`` says which: ``audio`` (the spoken transcript) or
    ``text`` (``response.output_text.*``). A server may send the same words on both channels;
    :class:`appliance.realtime.history.AnswerWords` keeps one."""

    response_id: str
    item_id: str
    delta: str
    channel: str = AUDIO_TRANSCRIPT


@dataclass(frozen=True, slots=True)
class TranscriptDone:
    response_id: str
    item_id: str
    text: str
    channel: str = AUDIO_TRANSCRIPT


@dataclass(frozen=True, slots=True)
class FunctionCallArgumentsDone:
    """The arguments of a call are complete. Yandex's schema has no ``name`` here (the GA one
    does): then ``call`` is None and the call starts from ``response.output_item.done``."""

    response_id: str
    item_id: str
    call_id: str
    arguments: str
    name: str | None = None

    @property
    def call(self) -> FunctionCall | None:
        return FunctionCall(self.call_id, self.name, self.arguments) if self.name else None


@dataclass(frozen=True, slots=True)
class ResponseDone:
    """The authoritative end of a response, whatever else was or was not sent."""

    response_id: str
    status: str  # completed | cancelled | failed | incomplete
    reason: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    calls: tuple[FunctionCall, ...] = ()
    # Set by the link when it passes the event on: another response follows this one (a tool
    # round). Decided as the event is handled, not when a slower reader looks at it.
    answer_follows: bool = False


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
