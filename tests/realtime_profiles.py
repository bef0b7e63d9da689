"""What each kind of Realtime server expects and refuses: the test server's profiles, as data.

A profile is pure data plus the session checks it implies (no I/O). The test server
(tests/realtime_server.py) and the event validation (tests/event_validation.py) read it, so the
difference between the providers lives here only. Sources: /work/shared/realtime-protocol.md
section 0 (the 2026 formats), §7 (errors) and §8 (the SDK types).

- ``yandex-2026``: Yandex AI Studio since April 2026 (the default). Path ``/v1/realtime``,
  ``?model=gpt://<folder>/<model>``, ``Authorization: Api-Key|Bearer <key>`` (any case); no
  ``session.type`` needed; input PCM at 24000 or 44100 Hz; ``audio.input.languages`` and
  ``audio.output.role`` accepted; ``channels`` and a string tool ``parameters`` refused; the
  answer's words come on both text channels; ``function_call_arguments.done`` has no ``name``;
  ``input_audio_buffer.clear`` and assistant history items refused; a ``response.create`` sent
  before the last commit's transcript is done answers an empty question.
- ``openai``: OpenAI GA. Path ``/v1/realtime``, ``?model=gpt-realtime`` (a plain name),
  ``Authorization: Bearer <key>`` only; ``session.type: "realtime"`` required; PCM at 24000 Hz
  both ways; ``channels``, ``languages`` and ``role`` refused as unknown parameters.
- ``legacy``: TRANSITIONAL, the test server as it was before the 2026 profiles (the 2025 path
  ``/v1/realtime/openai``, everything accepted). Only for tests not yet moved to a 2026 profile;
  delete it once none uses it.

Under both 2026 profiles a `session.type` other than "realtime" and a format other than
``audio/pcm`` are refused too, and a response.create body is checked like the output side of a
session. Codes: ``unknown_parameter`` (refused fields), ``invalid_value`` (type, format, rate),
``invalid_type`` (string ``parameters``), ``missing_required_parameter`` (``session.type``,
openai); Yandex's ``clear`` and assistant-item refusals carry ``code: null``, as its reference
error does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

YANDEX_2026 = "yandex-2026"
OPENAI = "openai"
LEGACY = "legacy"

YANDEX_MODEL_QUERY = "gpt://test-folder/speech-realtime-250923"
OPENAI_MODEL = "gpt-realtime"
PCM_RATES = frozenset({8000, 16000, 22050, 24000, 44100, 48000})

# The words of the empty answer a yandex-2026 server gives a response.create sent before the
# question's transcript is done (a third party saw the model answer an empty question).
EMPTY_QUESTION_TRANSCRIPT = "Я не расслышала вопрос."
# Yandex's refusal of assistant history items, as a third party quoted it ("... not supported yet").
ASSISTANT_ITEM_MESSAGE = (
    "MessageContentItemOutputText content in conversation items is not supported yet"
)


@dataclass(frozen=True)
class Profile:
    """How one kind of server behaves. See the module docstring."""

    name: str
    path: str
    model_query: str  # a `model` query value this server accepts
    model_pattern: re.Pattern[str]
    model_hint: str  # the body of the 400 for a bad model query
    auth_schemes: frozenset[str]  # lower case
    session_type_required: bool
    input_rates: frozenset[int]
    output_rates: frozenset[int]  # rates a client may ask for (the server's own rate still wins)
    default_output_rate: int
    default_voice: str
    unknown_fields: tuple[str, ...]  # session paths refused with unknown_parameter
    object_parameters: bool  # a tool's `parameters` must be an object (a string is refused)
    text_on_both_channels: bool  # an audio answer's words also as response.output_text.*
    name_in_arguments_done: bool
    clear_supported: bool
    assistant_items: bool
    empty_answer_before_transcript: bool
    usage_in_transcription: bool
    transcript_delay_s: float  # the default of RealtimeTestServer.transcript_delay_s
    strict_validation: bool  # client events validated with no allowance at all


_GPT_MODEL = re.compile(r"^gpt://[^/\s]+/\S+$")

PROFILES: dict[str, Profile] = {
    YANDEX_2026: Profile(
        name=YANDEX_2026,
        path="/v1/realtime",
        model_query=YANDEX_MODEL_QUERY,
        model_pattern=_GPT_MODEL,
        model_hint="Query parameter model=gpt://<folder>/<model> is required",
        auth_schemes=frozenset({"api-key", "bearer"}),
        session_type_required=False,
        input_rates=frozenset({24000, 44100}),
        output_rates=PCM_RATES,
        default_output_rate=44100,
        default_voice="marina",
        unknown_fields=("audio.input.format.channels", "audio.output.format.channels"),
        object_parameters=True,
        text_on_both_channels=True,
        name_in_arguments_done=False,
        clear_supported=False,
        assistant_items=False,
        empty_answer_before_transcript=True,
        usage_in_transcription=False,
        transcript_delay_s=0.05,
        strict_validation=False,
    ),
    OPENAI: Profile(
        name=OPENAI,
        path="/v1/realtime",
        model_query=OPENAI_MODEL,
        model_pattern=re.compile(r"^(?!gpt:)[A-Za-z0-9][\w.\-]*$"),
        model_hint="Query parameter model=<model name> is required (e.g. gpt-realtime)",
        auth_schemes=frozenset({"bearer"}),
        session_type_required=True,
        input_rates=frozenset({24000}),
        output_rates=frozenset({24000}),
        default_output_rate=24000,
        default_voice="alloy",
        unknown_fields=(
            "audio.input.format.channels",
            "audio.output.format.channels",
            "audio.input.languages",
            "audio.output.role",
        ),
        object_parameters=True,
        text_on_both_channels=False,
        name_in_arguments_done=True,
        clear_supported=True,
        assistant_items=True,
        empty_answer_before_transcript=False,
        usage_in_transcription=True,
        transcript_delay_s=0.05,
        strict_validation=True,
    ),
    LEGACY: Profile(
        name=LEGACY,
        path="/v1/realtime/openai",
        model_query=YANDEX_MODEL_QUERY,
        model_pattern=_GPT_MODEL,
        model_hint="Query parameter model=gpt://<folder>/<model> is required",
        auth_schemes=frozenset({"api-key", "bearer"}),
        session_type_required=False,
        input_rates=PCM_RATES,
        output_rates=PCM_RATES,
        default_output_rate=44100,
        default_voice="marina",
        unknown_fields=(),
        object_parameters=False,
        text_on_both_channels=False,
        name_in_arguments_done=True,
        clear_supported=True,
        assistant_items=True,
        empty_answer_before_transcript=False,
        usage_in_transcription=True,
        transcript_delay_s=0.0,
        strict_validation=False,
    ),
}


def get_profile(profile: str | Profile) -> Profile:
    if isinstance(profile, Profile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown profile {profile!r}; known: {sorted(PROFILES)}") from None


@dataclass(frozen=True)
class Refusal:
    """An `error` event's `error` body, less the client's event_id."""

    code: str | None
    message: str
    param: str | None = None
    type: str = "invalid_request_error"


def _lookup(obj: Any, dotted: str) -> tuple[bool, Any]:
    for key in dotted.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return False, None
        obj = obj[key]
    return True, obj


def check_tools(profile: Profile, tools: Any, where: str) -> Refusal | None:
    """A string `parameters` (the 2025 Yandex spelling) where the server wants an object."""
    if not profile.object_parameters or not isinstance(tools, list):
        return None
    for i, tool in enumerate(tools):
        if isinstance(tool, dict) and isinstance(tool.get("parameters"), str):
            param = f"{where}.tools[{i}].parameters"
            message = f"Invalid type for '{param}': expected an object, but got a string instead."
            return Refusal("invalid_type", message, param)
    return None


def _check_body(profile: Profile, body: dict[str, Any], where: str) -> Refusal | None:
    """Unknown fields, audio formats and tools of a `session` or a `response` body."""
    sides = ("input", "output") if where == "session" else ("output",)
    for dotted in profile.unknown_fields:
        if dotted.split(".")[1] in sides and _lookup(body, dotted)[0]:
            param = f"{where}.{dotted}"
            return Refusal("unknown_parameter", f"Unknown parameter: '{param}'.", param)
    for side in sides:
        rates = profile.input_rates if side == "input" else profile.output_rates
        found, fmt = _lookup(body, f"audio.{side}.format")
        if not found or fmt is None:
            continue
        param = f"{where}.audio.{side}.format"
        if not isinstance(fmt, dict):
            message = f"Invalid type for '{param}': expected an object."
            return Refusal("invalid_type", message, param)
        if fmt.get("type", "audio/pcm") != "audio/pcm":
            message = (
                f"Invalid value for '{param}.type': {fmt.get('type')!r}. Supported: 'audio/pcm'."
            )
            return Refusal("invalid_value", message, f"{param}.type")
        if "rate" in fmt and fmt["rate"] not in rates:
            allowed = ", ".join(str(r) for r in sorted(rates))
            message = (
                f"Invalid value for '{param}.rate': {fmt['rate']!r}. "
                f"Supported values are: {allowed}."
            )
            return Refusal("invalid_value", message, f"{param}.rate")
    return check_tools(profile, body.get("tools"), where)


def check_session(profile: Profile, session: Any) -> Refusal | None:
    """Why this server refuses a session.update's `session`, or None if it takes it."""
    if not isinstance(session, dict):
        message = "Missing required parameter: 'session'."
        return Refusal("missing_required_parameter", message, "session")
    if profile.name == LEGACY:
        return None
    if "type" not in session and profile.session_type_required:
        message = "Missing required parameter: 'session.type'."
        return Refusal("missing_required_parameter", message, "session.type")
    if "type" in session and session["type"] != "realtime":
        message = (
            f"Invalid value for 'session.type': {session['type']!r}. "
            "Supported values are: 'realtime'."
        )
        return Refusal("invalid_value", message, "session.type")
    return _check_body(profile, session, "session")


def check_response(profile: Profile, response: Any) -> Refusal | None:
    """Why this server refuses a response.create's `response` body, or None (no body is fine)."""
    if not isinstance(response, dict) or profile.name == LEGACY:
        return None
    return _check_body(profile, response, "response")
