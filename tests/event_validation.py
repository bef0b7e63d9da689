"""Validation of Realtime events against the `openai` package's GA types, by server profile.

See /work/shared/realtime-protocol.md §0 and §8, and tests/realtime_profiles.py. The SDK models
are permissive about extra keys and strict about a few things Yandex does differently, so the
known deviations of the profile are applied to a deep copy before validating.

Client events (`validate_client_event(event, profile)`):

- ``openai``: nothing is waived; on top of the schema, the session fields OpenAI refuses as
  unknown (`channels`, `audio.input.languages`, `audio.output.role`) and a string tool
  `parameters` are problems;
- ``yandex-2026`` (the default): a `session.update` may leave out `session.type`; the input
  rate may be 24000 or 44100 and the output rate any usual PCM rate (the SDK allows 24000 only);
  `languages`/`role` pass; `channels` and a string tool `parameters` are problems;
- ``legacy`` (transitional, the 2025 allowances): any usual PCM output rate; `session.type`
  required; `channels` and string `parameters` pass.

In every profile, a few checks the SDK types cannot express:

- `input_audio_buffer.append`: `audio` is strict base64 of an even number of bytes (PCM16);
- `conversation.item.truncate`: `content_index` and `audio_end_ms` are >= 0 (the server checks
  that `content_index` is the audio's, as its deltas named it).

Server events (`validate_server_event(event, profile)`): the same schema check; except under
``openai``, Yandex's deviations are allowed: PCM rates other than 24000, no `name` in
`response.function_call_arguments.done`, no `usage` in the input transcription's `.completed`.
"""

from __future__ import annotations

import base64
import binascii
import copy
from typing import Any

try:  # importable both as `tests.event_validation` and as a top-level module
    from . import realtime_profiles as rp
except ImportError:
    import realtime_profiles as rp  # type: ignore[no-redef]

ALLOWED_OUTPUT_RATES = rp.PCM_RATES

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


def _allow_rate(container: Any, side: str, rates: frozenset[int]) -> None:
    """Replace an allowed non-24000 `audio.<side>.format.rate` by 24000, in place."""
    if not isinstance(container, dict):
        return
    audio = container.get("audio")
    found = audio.get(side) if isinstance(audio, dict) else None
    fmt = found.get("format") if isinstance(found, dict) else None
    if isinstance(fmt, dict) and fmt.get("rate") in rates:
        fmt["rate"] = 24000


def _refused_fields(profile: rp.Profile, container: Any, where: str) -> list[str]:
    """The session fields this profile's server refuses, and string tool `parameters`."""
    if not isinstance(container, dict):
        return []
    problems = []
    for dotted in profile.unknown_fields:
        if where == "response" and not dotted.startswith("audio.output."):
            continue
        node: Any = container
        for key in dotted.split("."):
            node = node.get(key, KeyError) if isinstance(node, dict) else KeyError
        if node is not KeyError:
            problems.append(f"{where}.{dotted}: refused by {profile.name} (unknown_parameter)")
    refusal = rp.check_tools(profile, container.get("tools"), where)
    if refusal is not None:
        problems.append(f"{refusal.param}: refused by {profile.name} (must be an object)")
    return problems


def _format_error(err: dict[str, Any]) -> str:
    loc = ".".join(str(part) for part in err.get("loc", ()))
    return f"{loc}: {err.get('msg')}" if loc else str(err.get("msg"))


def validate_client_event(event: Any, profile: str | rp.Profile = rp.YANDEX_2026) -> list[str]:
    """Return the problems found in one client event (an empty list means valid)."""
    from pydantic import ValidationError

    prof = rp.get_profile(profile)
    if not isinstance(event, dict):
        return [f"event is not a JSON object: {type(event).__name__}"]
    ev = copy.deepcopy(event)
    etype = ev.get("type")
    body_key = {"session.update": "session", "response.create": "response"}.get(etype)
    body = ev.get(body_key) if isinstance(body_key, str) else None
    problems: list[str] = []
    if body_key is not None and prof.name != rp.LEGACY:
        problems += _refused_fields(prof, body, body_key)
    if isinstance(body, dict) and not prof.strict_validation:
        _allow_rate(body, "output", prof.output_rates)
        if prof.name != rp.LEGACY:
            _allow_rate(body, "input", prof.input_rates)
        if body_key == "session" and not prof.session_type_required and prof.name != rp.LEGACY:
            body.setdefault("type", "realtime")

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
        index = ev.get("content_index")
        if isinstance(index, int) and not isinstance(index, bool) and index < 0:
            problems.append(f"content_index: must be >= 0, got {index}")
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


def validate_server_event(event: Any, profile: str | rp.Profile = rp.YANDEX_2026) -> list[str]:
    """Problems of one server event against the GA types (Yandex's deviations allowed unless
    the profile is openai)."""
    from pydantic import ValidationError

    prof = rp.get_profile(profile)
    if not isinstance(event, dict):
        return [f"event is not a JSON object: {type(event).__name__}"]
    ev = copy.deepcopy(event)
    if not prof.strict_validation:
        for key in ("session", "response"):
            _allow_rate(ev.get(key), "output", ALLOWED_OUTPUT_RATES)
            _allow_rate(ev.get(key), "input", ALLOWED_OUTPUT_RATES)
        if ev.get("type") == "response.function_call_arguments.done":
            ev.setdefault("name", "(not sent)")
        elif ev.get("type") == "conversation.item.input_audio_transcription.completed":
            ev.setdefault("usage", {"type": "duration", "seconds": 0.0})
    try:
        server_event_adapter().validate_python(ev)
    except ValidationError as exc:
        return [_format_error(e) for e in exc.errors()]
    return []
