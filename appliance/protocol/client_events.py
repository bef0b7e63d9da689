"""Builders for every client event the appliance sends (OpenAI Realtime GA, as Yandex serves it).

Each builder returns a plain dict ready for :func:`encode`. The shapes follow the GA types of the
``openai`` package (tests validate them); where the providers spell a thing differently, the
:class:`~appliance.protocol.providers.Provider` decides (Yandex: no ``session.type``, rates other
than 24000, ``languages`` and ``role``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from appliance.protocol import codec
from appliance.protocol.providers import Provider, SessionShape, session_fields

INPUT_RATE = 24000
"""The input rate every provider takes: PCM16, mono, 24 kHz (Yandex also takes 44.1 kHz)."""


@dataclass(frozen=True)
class FunctionTool:
    """A function the model may call; answered by the appliance (or, for Yandex's reserved names
    ``file_search``/``web_search``, by the server itself)."""

    name: str
    description: str
    parameters: Mapping[str, Any] | str = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters
            if isinstance(self.parameters, str)
            else dict(self.parameters),
        }


@dataclass(frozen=True)
class ServerVad:
    """Server-side voice activity detection (hands-free turns); ``None`` means push-to-talk."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": "server_vad",
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
            "create_response": self.create_response,
            "interrupt_response": self.interrupt_response,
        }


def encode(event: Mapping[str, Any]) -> str:
    """Serialise one client event to the text frame sent on the WebSocket."""
    return codec.dumps(event)


def session_update(
    provider: Provider,
    shape: SessionShape,
    *,
    tools: Iterable[FunctionTool] = (),
    turn_detection: ServerVad | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """The ``session.update`` of a new session, in the provider's spelling (see
    :mod:`appliance.protocol.providers`): audio in and out, voice, instructions, tools, turn
    detection. ``event_id`` lets the box tell an error about this update from any other.

    ``turn_detection`` is sent explicitly as ``null`` for push-to-talk: leaving it out would keep
    the server's default (server VAD), which would commit and answer on its own.
    """
    session = session_fields(provider, shape)
    session["audio"]["input"]["turn_detection"] = (
        turn_detection.as_dict() if turn_detection else None
    )
    tool_list = [tool.as_dict() for tool in tools]
    session["tools"] = tool_list
    if tool_list:
        session["tool_choice"] = "auto"
    event: dict[str, Any] = {"type": "session.update", "session": session}
    if event_id:
        event["event_id"] = event_id
    return event


def turn_detection_update(provider: Provider, turn_detection: ServerVad | None) -> dict[str, Any]:
    """A ``session.update`` that only switches turn detection (the rest of the session stays):
    server VAD, or ``null`` for push-to-talk."""
    vad = turn_detection.as_dict() if turn_detection else None
    session: dict[str, Any] = {"type": "realtime"} if provider.session_type else {}
    session["audio"] = {"input": {"turn_detection": vad}}
    return {"type": "session.update", "session": session}


def input_audio_append(pcm16: bytes) -> dict[str, Any]:
    """One chunk of microphone audio: PCM16 little-endian, mono, 24 kHz."""
    return {"type": "input_audio_buffer.append", "audio": codec.b64encode(pcm16)}


_APPEND_HEAD = '{"type":"input_audio_buffer.append","audio":"'


def append_frame(pcm16: bytes) -> str:
    """``encode(input_audio_append(pcm16))``, the same text, without the dict and the JSON
    encoder: the microphone sends ten of these a second. Base64 needs no JSON escaping."""
    return _APPEND_HEAD + codec.b64encode(pcm16) + '"}'


def input_audio_commit() -> dict[str, Any]:
    return {"type": "input_audio_buffer.commit"}


def input_audio_clear() -> dict[str, Any]:
    return {"type": "input_audio_buffer.clear"}


def response_create() -> dict[str, Any]:
    """The bare form: the session's settings apply (Yandex accepts it after tool outputs too)."""
    return {"type": "response.create"}


def response_cancel(response_id: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "response.cancel"}
    if response_id:
        event["response_id"] = response_id
    return event


def function_call_output(call_id: str, output: str) -> dict[str, Any]:
    """A tool's result; ``output`` must already be a string (JSON-encode structured results)."""
    return {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": call_id, "output": output},
    }


def history_recap(text: str) -> dict[str, Any]:
    """The earlier conversation replayed into a new session as ONE user text item: every server
    accepts a user ``input_text`` (Yandex refuses assistant text items)."""
    return {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        },
    }


def history_message(role: str, text: str) -> dict[str, Any]:
    """A past utterance replayed as its own item (``history_replay: items``)."""
    part_type = "input_text" if role == "user" else "output_text"
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": role, "content": [{"type": part_type, "text": text}]},
    }


def item_truncate(item_id: str, audio_end_ms: int, content_index: int = 0) -> dict[str, Any]:
    """Tell the server how much of an answer was actually heard (barge-in); ``content_index``
    is that of the audio being played, as its deltas named it."""
    return {
        "type": "conversation.item.truncate",
        "item_id": item_id,
        "content_index": content_index,
        "audio_end_ms": max(0, int(audio_end_ms)),
    }
