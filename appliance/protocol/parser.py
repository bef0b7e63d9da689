"""Server frames -> typed events. Never raises: a frame that cannot be read becomes ``Malformed``.

Beta event names (the protocol's pre-GA spelling, still sent by some servers) are mapped to their
GA names first, so the rest of the appliance knows one vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from appliance.protocol import codec
from appliance.protocol import server_events as ev

BETA_TO_GA = {
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "conversation.item.created": "conversation.item.added",
}

# Known to the protocol, not acted on by the appliance.
IGNORED_TYPES = frozenset(
    {
        "conversation.created",
        "conversation.item.done",
        "conversation.item.retrieved",
        "conversation.item.deleted",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.segment",
        "input_audio_buffer.timeout_triggered",
        "input_audio_buffer.dtmf_event_received",
        "response.content_part.added",
        "response.content_part.done",
        "response.function_call_arguments.delta",
        "rate_limits.updated",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "output_audio_buffer.cleared",
        "mcp_list_tools.in_progress",
        "mcp_list_tools.completed",
        "mcp_list_tools.failed",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
    }
)

MAX_TYPE_LEN = 100  # for log lines: a type string is echoed, a huge one is cut


class _Bad(Exception):
    """Internal: the frame lacks a field or has one of the wrong type."""


def _str(d: Mapping[str, Any], key: str) -> str:
    value = d.get(key)
    if not isinstance(value, str):
        raise _Bad(f"{key!r} missing or not a string")
    return value


def _opt_str(d: Mapping[str, Any], key: str) -> str | None:
    value = d.get(key)
    return value if isinstance(value, str) else None


def _int(d: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = d.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(f"{key!r} missing or not a number")
    return int(value)


def _obj(d: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = d.get(key)
    if not isinstance(value, dict):
        raise _Bad(f"{key!r} missing or not an object")
    return value


def _session(cls: type, d: Mapping[str, Any]) -> Any:
    session = _obj(d, "session")
    output = session.get("audio", {})
    output = output.get("output", {}) if isinstance(output, dict) else {}
    output = output if isinstance(output, dict) else {}
    fmt = output.get("format")
    rate = fmt.get("rate") if isinstance(fmt, dict) else None
    rate = rate if isinstance(rate, int) and not isinstance(rate, bool) else None
    voice = _opt_str(output, "voice") or _opt_str(session, "voice")
    if cls is ev.SessionCreated:
        return ev.SessionCreated(_str(session, "id"), rate, voice)
    reported, detection = _turn_detection(session)
    return ev.SessionUpdated(_opt_str(session, "id"), rate, voice, detection, reported)


def _turn_detection(session: Mapping[str, Any]) -> tuple[bool, str | None]:
    """Whether the session says its turn detection, and its type (GA: audio.input.turn_detection;
    beta and Yandex's reference: a flat turn_detection)."""
    audio = session.get("audio")
    audio_in = audio.get("input") if isinstance(audio, dict) else None
    for holder in (audio_in, session):
        if isinstance(holder, dict) and "turn_detection" in holder:
            value = holder["turn_detection"]
            kind = value.get("type") if isinstance(value, dict) else None
            return True, kind if isinstance(kind, str) else None
    return False, None


def _error(d: Mapping[str, Any]) -> ev.ServerError:
    error = _obj(d, "error")
    return ev.ServerError(
        type=_opt_str(error, "type") or "error",
        code=_opt_str(error, "code"),
        message=_opt_str(error, "message") or "",
        client_event_id=_opt_str(error, "event_id"),
    )


def _audio(d: Mapping[str, Any]) -> ev.AudioDelta:
    # The hot path (25 frames a second while the box speaks): plain lookups, one decode.
    delta, response_id, item_id = d.get("delta"), d.get("response_id"), d.get("item_id")
    if type(delta) is not str:
        raise _Bad("'delta' missing or not a string")
    if type(response_id) is not str or type(item_id) is not str:
        _ids(d)  # names the missing one
    try:
        audio = codec.b64decode(delta)
    except ValueError as exc:  # binascii.Error, or a non-ASCII character
        raise _Bad("audio delta is not valid base64") from exc
    if len(audio) % 2:
        raise _Bad("audio delta has an odd number of bytes (not PCM16)")
    index = d.get("content_index", 0)
    if type(index) is not int:
        index = 0
    return ev.AudioDelta(response_id, item_id, audio, index)


def _call_of(item: Mapping[str, Any]) -> ev.FunctionCall:
    arguments = item.get("arguments", "")
    if not isinstance(arguments, str):
        raise _Bad("'arguments' is not a string")
    return ev.FunctionCall(_str(item, "call_id"), _str(item, "name"), arguments)


def _item_text(item: Mapping[str, Any]) -> str | None:
    content = item.get("content")
    if not isinstance(content, list):
        return None
    texts = []
    for part in content:
        if isinstance(part, dict):
            text = part.get("transcript") or part.get("text")
            if isinstance(text, str):
                texts.append(text)
    return "".join(texts) or None


def _output_item_done(d: Mapping[str, Any]) -> ev.OutputItemDone:
    item = _obj(d, "item")
    item_type = _str(item, "type")
    call = None
    if item_type == "function_call" and item.get("status", "completed") == "completed":
        call = _call_of(item)
    return ev.OutputItemDone(
        _str(d, "response_id"), _str(item, "id"), item_type, call, _item_text(item)
    )


def _response_done(d: Mapping[str, Any]) -> ev.ResponseDone:
    response = _obj(d, "response")
    details = response.get("status_details")
    details = details if isinstance(details, dict) else {}
    error = details.get("error")
    error = error if isinstance(error, dict) else {}
    output = response.get("output")
    calls = tuple(
        _call_of(item)
        for item in (output if isinstance(output, list) else [])
        if isinstance(item, dict)
        and item.get("type") == "function_call"
        and item.get("status", "completed") == "completed"
    )
    return ev.ResponseDone(
        response_id=_str(response, "id"),
        status=_opt_str(response, "status") or "completed",
        reason=_opt_str(details, "reason"),
        error_code=_opt_str(error, "code"),
        error_message=_opt_str(error, "message"),
        calls=calls,
    )


def _arguments_done(d: Mapping[str, Any]) -> ev.FunctionCallArgumentsDone:
    arguments = d.get("arguments", "")
    if not isinstance(arguments, str):
        raise _Bad("'arguments' is not a string")
    return ev.FunctionCallArgumentsDone(
        *_ids(d), _str(d, "call_id"), arguments, _opt_str(d, "name") or None
    )


def _ids(d: Mapping[str, Any]) -> tuple[str, str]:
    return _str(d, "response_id"), _str(d, "item_id")


_PARSERS: dict[str, Callable[[Mapping[str, Any]], ev.ServerEvent]] = {
    "session.created": lambda d: _session(ev.SessionCreated, d),
    "session.updated": lambda d: _session(ev.SessionUpdated, d),
    "error": _error,
    "input_audio_buffer.committed": lambda d: ev.InputCommitted(_str(d, "item_id")),
    "input_audio_buffer.cleared": lambda d: ev.InputCleared(),
    "input_audio_buffer.speech_started": lambda d: ev.SpeechStarted(
        _opt_str(d, "item_id"), _int(d, "audio_start_ms", 0)
    ),
    "input_audio_buffer.speech_stopped": lambda d: ev.SpeechStopped(
        _opt_str(d, "item_id"), _int(d, "audio_end_ms", 0)
    ),
    "conversation.item.input_audio_transcription.completed": lambda d: ev.InputTranscript(
        _str(d, "item_id"), _str(d, "transcript")
    ),
    "conversation.item.input_audio_transcription.failed": lambda d: ev.InputTranscriptFailed(
        _str(d, "item_id"), _opt_str(_obj(d, "error"), "message") or ""
    ),
    "conversation.item.added": lambda d: ev.ItemAdded(
        _str(_obj(d, "item"), "id"),
        _opt_str(_obj(d, "item"), "type") or "message",
        _opt_str(_obj(d, "item"), "role"),
    ),
    "conversation.item.truncated": lambda d: ev.ItemTruncated(
        _str(d, "item_id"), _int(d, "audio_end_ms")
    ),
    "response.created": lambda d: ev.ResponseCreated(_str(_obj(d, "response"), "id")),
    "response.output_item.added": lambda d: ev.OutputItemAdded(
        _str(d, "response_id"),
        _str(_obj(d, "item"), "id"),
        _str(_obj(d, "item"), "type"),
        _opt_str(_obj(d, "item"), "role"),
    ),
    "response.output_item.done": _output_item_done,
    "response.output_audio.delta": _audio,
    "response.output_audio.done": lambda d: ev.AudioDone(*_ids(d)),
    "response.output_audio_transcript.delta": lambda d: ev.TranscriptDelta(
        *_ids(d), _str(d, "delta")
    ),
    "response.output_audio_transcript.done": lambda d: ev.TranscriptDone(
        *_ids(d), _str(d, "transcript")
    ),
    "response.output_text.delta": lambda d: ev.TranscriptDelta(
        *_ids(d), _str(d, "delta"), ev.OUTPUT_TEXT
    ),
    "response.output_text.done": lambda d: ev.TranscriptDone(
        *_ids(d), _str(d, "text"), ev.OUTPUT_TEXT
    ),
    "response.function_call_arguments.done": _arguments_done,
    "response.done": _response_done,
}


def event_type(frame: Mapping[str, Any]) -> str | None:
    """The GA type name of a decoded frame, beta names mapped; None if it has no string type."""
    kind = frame.get("type")
    if not isinstance(kind, str):
        return None
    return BETA_TO_GA.get(kind, kind)


def parse_server_event(frame: str | bytes | bytearray) -> ev.ServerEvent:
    """Parse one WebSocket frame. Binary frames, non-JSON, missing or mistyped fields and invalid
    base64 all give :class:`Malformed`; unknown types give :class:`Unknown`."""
    if not isinstance(frame, str):
        return ev.Malformed(f"binary frame of {len(frame)} bytes")
    try:
        data = codec.loads(frame)
    except (ValueError, RecursionError):  # orjson.JSONDecodeError is a ValueError
        return ev.Malformed("not JSON")
    return parse_server_dict(data)


def parse_server_dict(data: Any) -> ev.ServerEvent:
    """Parse an already decoded frame (see :func:`parse_server_event`)."""
    if not isinstance(data, dict):
        return ev.Malformed("not a JSON object")
    kind = event_type(data)
    if kind is None:
        return ev.Malformed("no event type")
    parser = _PARSERS.get(kind)
    if parser is None:
        if kind in IGNORED_TYPES:
            return ev.Ignored(kind)
        return ev.Unknown(kind[:MAX_TYPE_LEN])
    try:
        return parser(data)
    except (_Bad, KeyError, TypeError, ValueError, AttributeError) as exc:
        return ev.Malformed(str(exc) if isinstance(exc, _Bad) else type(exc).__name__, kind)
