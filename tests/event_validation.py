"""Validation of client events against the `openai` package's GA Realtime types.

See /work/shared/realtime-protocol.md §8. The SDK models are permissive about extra keys and
strict about a few things Yandex does differently, so the known Yandex deviations are applied
to a deep copy before validating:

- `audio.output.format.rate` may be any of the usual PCM rates (Yandex's sample asks for 44100;
  the SDK only allows 24000), in `session.update` and in `response.create`;
- extra keys such as `channels` pass anyway (the models use `extra="allow"`).

On top of the schema, a few checks the SDK types cannot express:

- `input_audio_buffer.append`: `audio` is strict base64 of an even number of bytes (PCM16);
- `conversation.item.truncate`: `content_index` is 0 and `audio_end_ms` is >= 0.

`validate_server_event` does the same schema check for server events (used to test the server).
"""

from __future__ import annotations

import base64
import binascii
import copy
from typing import Any

ALLOWED_OUTPUT_RATES = frozenset({8000, 16000, 22050, 24000, 44100, 48000})

_adapter: Any = None


def client_event_adapter() -> Any:
    """The discriminated-union TypeAdapter for GA client events (built once, lazily)."""
    global _adapter
    if _adapter is None:
        from typing import Annotated

        from openai.types.realtime import RealtimeClientEvent
        from pydantic import Field, TypeAdapter

        _adapter = TypeAdapter(Annotated[RealtimeClientEvent, Field(discriminator="type")])
    return _adapter


def _allow_output_rate(container: Any) -> None:
    """Replace an allowed non-24000 `audio.output.format.rate` by 24000, in place."""
    if not isinstance(container, dict):
        return
    audio = container.get("audio")
    output = audio.get("output") if isinstance(audio, dict) else None
    fmt = output.get("format") if isinstance(output, dict) else None
    if isinstance(fmt, dict) and fmt.get("rate") in ALLOWED_OUTPUT_RATES:
        fmt["rate"] = 24000


def _format_error(err: dict[str, Any]) -> str:
    loc = ".".join(str(part) for part in err.get("loc", ()))
    return f"{loc}: {err.get('msg')}" if loc else str(err.get("msg"))


def validate_client_event(event: Any) -> list[str]:
    """Return the problems found in one client event (an empty list means valid)."""
    from pydantic import ValidationError

    if not isinstance(event, dict):
        return [f"event is not a JSON object: {type(event).__name__}"]
    ev = copy.deepcopy(event)
    etype = ev.get("type")
    if etype == "session.update":
        _allow_output_rate(ev.get("session"))
    elif etype == "response.create":
        _allow_output_rate(ev.get("response"))

    problems: list[str] = []
    try:
        client_event_adapter().validate_python(ev)
    except ValidationError as exc:
        problems.extend(_format_error(e) for e in exc.errors())

    if etype == "input_audio_buffer.append":
        audio = ev.get("audio")
        if isinstance(audio, str):
            try:
                raw = base64.b64decode(audio, validate=True)
            except (binascii.Error, ValueError) as exc:
                problems.append(f"audio: invalid base64 ({exc})")
            else:
                if len(raw) % 2:
                    problems.append(f"audio: odd number of bytes ({len(raw)}) for PCM16")
    elif etype == "conversation.item.truncate":
        if ev.get("content_index") != 0:
            problems.append(f"content_index: must be 0, got {ev.get('content_index')!r}")
        end = ev.get("audio_end_ms")
        if isinstance(end, int) and not isinstance(end, bool) and end < 0:
            problems.append(f"audio_end_ms: must be >= 0, got {end}")
    return problems


_server_adapter: Any = None


def server_event_adapter() -> Any:
    """The discriminated-union TypeAdapter for GA server events (built once, lazily)."""
    global _server_adapter
    if _server_adapter is None:
        from typing import Annotated

        from openai.types.realtime import RealtimeServerEvent
        from pydantic import Field, TypeAdapter

        _server_adapter = TypeAdapter(Annotated[RealtimeServerEvent, Field(discriminator="type")])
    return _server_adapter


def validate_server_event(event: Any) -> list[str]:
    """Problems of one server event against the GA types (the Yandex output rates allowed)."""
    from pydantic import ValidationError

    if not isinstance(event, dict):
        return [f"event is not a JSON object: {type(event).__name__}"]
    ev = copy.deepcopy(event)
    for key in ("session", "response"):
        _allow_output_rate(ev.get(key))
    try:
        server_event_adapter().validate_python(ev)
    except ValidationError as exc:
        return [_format_error(e) for e in exc.errors()]
    return []
