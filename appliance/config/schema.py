"""The configuration schema: frozen dataclasses with their defaults and documentation.

Each section of config.yaml is a frozen, keyword-only dataclass; each setting is a field with
its default and :func:`meta` as metadata::

    rate: int = field(default=16000, metadata=meta(doc="Capture rate, Hz.", choices=(16000,)))
    gain_db: float = field(default=0.0, metadata=meta(doc="Gain, dB.", range=(-20, 20)))
    device: str = field(default="", metadata=meta(doc="ALSA device.", check=my_check))

The loader (:mod:`appliance.config.loader`) walks these classes generically: it reads each
field's type hint (``str``, ``int``, ``float``, ``bool``, :class:`ApiKey`, ``X | None``,
``tuple[X, ...]`` or another dataclass, which is a sub-section) and its metadata (``range``,
``choices``, and ``check``: a callable taking the value and returning an error message or
None). Validation, error messages and defaults all come from here.

To add a section (say ``audio``)::

    @dataclass(frozen=True, kw_only=True)
    class AudioConfig:
        rate: int = field(default=16000, metadata=meta(doc="...", choices=(16000, 48000)))

    # and in Config:
    audio: AudioConfig = field(default_factory=AudioConfig, metadata=meta(doc="Audio."))

then document every new key in config.yaml (tests/test_config.py fails on an undocumented
key). A sub-section (``gpio.led``) is the same one level down: a dataclass-typed field in a
section. Nothing in the loader changes. A field without a default is required: give it
``meta(required="what to set it to")`` for the error message. A section whose settings all
have defaults may be left out of the file; one with a required setting has no default.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.config.secrets import ENV_VAR, ApiKey
from appliance.protocol.providers import PROVIDERS, Provider

EX_CONFIG = 78  # sysexits.h: configuration error


class ConfigError(Exception):
    """A configuration problem; ``str(e)`` is one line, ``e.exit_code`` is EX_CONFIG (78)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.splitlines()))
        self.exit_code = EX_CONFIG


def meta(
    *,
    doc: str,
    range: tuple[float, float] | None = None,
    choices: tuple[Any, ...] | None = None,
    check: Callable[[Any], str | None] | None = None,
    required: str = "",
    internal: bool = False,
) -> dict[str, Any]:
    """The metadata of a setting: ``field(default=..., metadata=meta(doc=..., ...))``.

    ``range`` is inclusive; ``check`` takes the converted value and returns an error message
    or None; ``required`` completes the "missing; ..." message of a field without a default;
    ``internal`` fields are not read from the file (the loader fills them in).
    """
    return {
        "doc": doc,
        "range": range,
        "choices": choices,
        "check": check,
        "required": required,
        "internal": internal,
    }


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``, else ``(tp, False)``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def settings_of(cls: type) -> dict[str, tuple[dataclasses.Field[Any], Any]]:
    """The file-visible fields of a section: name -> (field, type hint)."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: (f, hints[f.name])
        for f in dataclasses.fields(cls)
        if f.init and not f.metadata.get("internal")
    }


def iter_settings(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field[Any], Any]]:
    """Every leaf setting under ``cls`` as (dotted key, field, type hint), sections recursed."""
    for name, (f, tp) in settings_of(cls).items():
        inner, _ = unwrap_optional(tp)
        if is_section(inner):
            yield from iter_settings(inner, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", f, tp


def show(value: Any) -> str:
    """A value as it appears in a message: strings quoted and shortened, YAML spelling."""
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --- checks -----------------------------------------------------------------------------

FOLDER_HINT = "set it to the Yandex Cloud folder id"


def _ws_url(url: str) -> str | None:
    if not url.startswith(("ws://", "wss://")):
        return f"must start with ws:// or wss:// (got {show(url)})"
    if not url.split("://", 1)[1].split("/", 1)[0]:
        return f"has no host (got {show(url)})"
    return None


def folder_id_problem(value: str) -> str | None:
    # Never echo the value: a key pasted here by mistake must not reach the log.
    if not value:
        return f"is empty; {FOLDER_HINT}"
    if not re.fullmatch(r"[a-z0-9]+", value):
        return f"must be lowercase letters and digits only; {FOLDER_HINT}"
    return None


def _model(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if re.search(r"[\s?&#]", value):
        return f"must not contain spaces, '?', '&' or '#' (got {show(value)})"
    return None


def _model_or_default(value: str) -> str | None:
    return None if value == "" else _model(value)


def _not_empty(value: str) -> str | None:
    return None if value else "must not be empty"


def _path(value: str) -> str | None:
    return None if value.strip() else "is empty; give a path or remove the line"


# --- the schema -------------------------------------------------------------------------

DEFAULT_INSTRUCTIONS = (
    "You are the voice of a small smart speaker. Answer briefly and clearly, in the language "
    "of the question; your answers are heard, not read."
)


def _ws_url_or_default(url: str) -> str | None:
    return None if url == "" else _ws_url(url)


def _heartbeat(value: float) -> str | None:
    if value == 0 or 0.2 <= value <= 60:
        return None
    return f"must be 0 (off) or between 0.2 and 60 (got {show(value)})"


def _languages(value: tuple[str, ...]) -> str | None:
    for tag in value:
        if not re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*", tag):
            return f"{show(tag)} is not a language tag such as ru-RU or kk-KZ"
    return None


@dataclass(frozen=True, kw_only=True)
class RealtimeConfig:
    """The Realtime speech API: where it is, who we are, how the sessions behave.

    ``url``, ``model``, ``voice`` and ``output_rate`` left empty (0) take the provider's
    defaults (:mod:`appliance.protocol.providers`); they are filled in on construction, so the
    rest of the appliance always reads concrete values.
    """

    provider: str = field(
        default="yandex",
        metadata=meta(doc="Which service: yandex or openai.", choices=tuple(PROVIDERS)),
    )
    auth: str = field(
        default="api_key",
        metadata=meta(
            doc="api_key (Yandex: Api-Key, OpenAI: Bearer) or iam_token (Yandex: Bearer).",
            choices=("api_key", "iam_token"),
        ),
    )
    url: str = field(
        default="",
        metadata=meta(
            doc="WebSocket URL of the Realtime API, without the model; empty: the provider's.",
            check=_ws_url_or_default,
        ),
    )
    folder_id: str = field(
        default="",
        metadata=meta(
            doc="Yandex Cloud folder id (lowercase letters and digits); required for yandex.",
        ),
    )
    model: str = field(
        default="", metadata=meta(doc="Model name; empty: the provider's.", check=_model_or_default)
    )
    api_key: ApiKey | None = field(
        default=None, metadata=meta(doc="The API key itself (a string; prefer api_key_file).")
    )
    api_key_file: str | None = field(
        default=None,
        metadata=meta(doc="File holding the API key; relative to the config file.", check=_path),
    )
    voice: str = field(
        default="", metadata=meta(doc="Voice of the answers; empty: the provider's default.")
    )
    voice_role: str = field(
        default="", metadata=meta(doc="Yandex: the voice's role (emotion), e.g. good; optional.")
    )
    languages: tuple[str, ...] = field(
        default=("ru-RU",),
        metadata=meta(doc="Yandex: languages of the questions, e.g. [ru-RU].", check=_languages),
    )
    instructions: str = field(
        default=DEFAULT_INSTRUCTIONS, metadata=meta(doc="System instructions of the session.")
    )
    input_rate: int = field(
        default=24000,
        metadata=meta(
            doc="Sample rate of the speech we send, Hz (yandex also takes 44100).",
            choices=(24000, 44100),
        ),
    )
    output_rate: int = field(
        default=0,
        metadata=meta(
            doc="Sample rate of the speech we ask for, Hz; 0: the provider's.",
            choices=(0, 8000, 16000, 22050, 24000, 44100, 48000),
        ),
    )
    session_max_s: float = field(
        default=270.0,
        metadata=meta(
            doc="A session is renewed (between turns) once it is this old, s.", range=(10, 3600)
        ),
    )
    answer_timeout_s: float = field(
        default=30.0,
        metadata=meta(doc="Longest wait for the start of an answer, s.", range=(1, 120)),
    )
    transcript_wait_ms: int = field(
        default=1500,
        metadata=meta(
            doc="Push-to-talk: longest wait for the question's transcript before asking, ms.",
            range=(0, 10000),
        ),
    )
    connect_timeout_s: float = field(
        default=10.0, metadata=meta(doc="Longest wait to connect, s.", range=(1, 120))
    )
    heartbeat_s: float = field(
        default=10.0,
        metadata=meta(
            doc="WebSocket ping interval, s; a dead link is noticed within 1.5x this; 0: off.",
            check=_heartbeat,
        ),
    )
    history_replay: str = field(
        default="recap",
        metadata=meta(
            doc="How a new session learns the conversation: recap (one user text), items, off.",
            choices=("recap", "items", "off"),
        ),
    )
    history_max_chars: int = field(
        default=4000,
        metadata=meta(
            doc="Transcript budget replayed into a renewed session, characters.",
            range=(0, 100000),
        ),
    )
    transcription_model: str = field(
        default="",
        metadata=meta(doc="Input transcription model; empty: do not ask (Yandex transcribes)."),
    )
    trace_file: str | None = field(
        default=None,
        metadata=meta(
            doc="Write every Realtime event sent and received to this file (JSON lines; audio "
            "as byte counts, never the key), for `appliance run`; relative to the config file. "
            "Off when unset.",
            check=_path,
        ),
    )
    api_key_source: str = field(
        default="", metadata=meta(doc="Where the key came from, never the key.", internal=True)
    )

    def __post_init__(self) -> None:
        spec = self.spec
        for name, default in (
            ("url", spec.url),
            ("model", spec.model),
            ("voice", spec.voice),
            ("output_rate", spec.output_rate),
        ):
            if not getattr(self, name):
                object.__setattr__(self, name, default)

    @property
    def spec(self) -> Provider:
        """The provider's data (defaults, auth scheme, session shape, what it refuses)."""
        return PROVIDERS.get(self.provider, PROVIDERS["yandex"])

    @property
    def endpoint(self) -> str:
        """The full URL: ``url`` plus the model query (``gpt://<folder_id>/<model>`` on Yandex)."""
        return self.spec.endpoint(self.url, self.model, self.folder_id)


@dataclass(frozen=True, kw_only=True)
class LoggingConfig:
    """What goes to the log."""

    level: str = field(
        default="info",
        metadata=meta(doc="Log level.", choices=("debug", "info", "warning", "error")),
    )
    transcripts: bool = field(
        default=True,
        metadata=meta(doc="Write both sides of the conversation to the log; false for privacy."),
    )


def _device(value: str) -> str | None:
    return None if value.strip() else "must not be empty (use default, an index, or part of a name)"


@dataclass(frozen=True, kw_only=True)
class AudioConfig:
    """The microphone and the speaker (PortAudio over ALSA)."""

    input_device: str = field(
        default="default",
        metadata=meta(
            doc="Microphone: default, a PortAudio device index, or part of its name.",
            check=_device,
        ),
    )
    output_device: str = field(
        default="default",
        metadata=meta(
            doc="Speaker: default, a PortAudio device index, or part of its name.",
            check=_device,
        ),
    )
    input_rate: int = field(
        default=0,
        metadata=meta(
            doc="Capture rate, Hz; 0 tries 24000, 48000, 44100, 16000 in turn.",
            choices=(0, 16000, 22050, 24000, 32000, 44100, 48000),
        ),
    )
    output_rate: int = field(
        default=0,
        metadata=meta(
            doc="Playback rate, Hz; 0 tries the answer's rate, then 48000, 44100, 24000.",
            choices=(0, 16000, 22050, 24000, 32000, 44100, 48000),
        ),
    )
    period_ms: int = field(default=20, metadata=meta(doc="Audio per callback, ms.", range=(5, 100)))
    volume: float = field(
        default=0.8, metadata=meta(doc="Software volume of everything played.", range=(0, 1))
    )
    sounds: bool = field(
        default=True, metadata=meta(doc="Play the short earcons (listening, sent, error...).")
    )
    retry_s: float = field(
        default=3.0,
        metadata=meta(
            doc="How soon a lost device is tried again, s (then less often: mic 4x, speaker 8x).",
            range=(0.5, 60),
        ),
    )
    echo_cancel: str = field(
        default="auto",
        metadata=meta(
            doc="Acoustic echo cancellation of the mic: auto (on in hands_free), on, off.",
            choices=("auto", "on", "off"),
        ),
    )
    playback_buffer_s: float = field(
        default=45.0,
        metadata=meta(doc="Most answer audio held for playback, s.", range=(5, 1800)),
    )
    speaker_idle_s: float = field(
        default=5.0,
        metadata=meta(
            doc="The speaker's stream stops this long after the last sound, s.", range=(0.5, 600)
        ),
    )


@dataclass(frozen=True, kw_only=True)
class ButtonConfig:
    """How a press becomes a turn."""

    mode: str = field(
        default="hold",
        metadata=meta(
            doc="hold: talk while held; toggle: press to start, press again to stop.",
            choices=("hold", "toggle"),
        ),
    )
    min_press_ms: int = field(
        default=150,
        metadata=meta(
            doc="A shorter press is ignored (with a short error sound), ms.", range=(0, 2000)
        ),
    )
    max_listen_s: float = field(
        default=30.0,
        metadata=meta(doc="Listening ends by itself after this long, s.", range=(1, 300)),
    )
    debounce_ms: int = field(
        default=30,
        metadata=meta(doc="Contact bounce shorter than this is ignored, ms.", range=(0, 500)),
    )


@dataclass(frozen=True, kw_only=True)
class LedPattern:
    """One LED pattern: steady, pulse (fade in and out), blink, triple (three blinks), off."""

    pattern: str = field(
        default="steady",
        metadata=meta(doc="The pattern.", choices=("off", "steady", "pulse", "blink", "triple")),
    )
    level: float = field(default=1.0, metadata=meta(doc="Brightness, 0 to 1.", range=(0, 1)))
    period_s: float = field(
        default=1.0, metadata=meta(doc="Length of one cycle, s.", range=(0.1, 10))
    )


def _led(pattern: str, level: float, period_s: float, doc: str) -> Any:
    return field(
        default_factory=lambda: LedPattern(pattern=pattern, level=level, period_s=period_s),
        metadata=meta(doc=doc),
    )


@dataclass(frozen=True, kw_only=True)
class LedConfig:
    """The LED pattern of each state."""

    starting: LedPattern = _led("pulse", 1.0, 0.5, "Coming up.")
    idle: LedPattern = _led("steady", 0.1, 1.0, "Connected, waiting for a press.")
    listening: LedPattern = _led("steady", 1.0, 1.0, "The microphone is on.")
    thinking: LedPattern = _led("pulse", 1.0, 0.8, "Waiting for the answer.")
    speaking: LedPattern = _led("pulse", 0.8, 3.0, "The answer plays.")
    offline: LedPattern = _led("blink", 1.0, 2.0, "No connection; retrying.")
    error: LedPattern = _led("triple", 1.0, 2.0, "A fault to fix: key refused, no audio device.")
    muted: LedPattern = _led("blink", 0.3, 4.0, "Hands-free, the microphone muted.")


@dataclass(frozen=True, kw_only=True)
class GpioConfig:
    """The push button and the LED on the Pi's header (BCM numbering)."""

    enabled: bool = field(
        default=True,
        metadata=meta(doc="Use the GPIO button and LED; false: terminal or control socket."),
    )
    button_pin: int = field(
        default=17,
        metadata=meta(
            doc="BCM pin of the button, wired to ground (internal pull-up).", range=(0, 27)
        ),
    )
    led_pin: int = field(
        default=18,
        metadata=meta(doc="BCM pin of the LED (through a resistor to ground), PWM.", range=(0, 27)),
    )
    led: LedConfig = field(default_factory=LedConfig, metadata=meta(doc="LED patterns."))


@dataclass(frozen=True, kw_only=True)
class ControlConfig:
    """The local control socket (appliance press/release/talk/status)."""

    socket: str | None = field(
        default=None,
        metadata=meta(
            doc="Path of the Unix socket (mode 0660); unset: /run/appliance/control.sock for "
            "the service, $XDG_RUNTIME_DIR/appliance/control.sock for a user.",
            check=_path,
        ),
    )


_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Header names whose values are secrets: they must come from a file, never inline.
_SECRET_HEADER = re.compile(r"auth|token|key|secret|cookie|password", re.I)
RESERVED_TOOLS = (
    "get_time",
    "set_volume",
    "stop_talking",
    "get_device_status",
    "file_search",
    "web_search",
)


def _tool_name(value: str) -> str | None:
    if not _TOOL_NAME.match(value):
        return "must be 1 to 64 letters, digits, _ or - (the name the model calls)"
    if value in RESERVED_TOOLS:
        return f"{value!r} is a built-in tool's name; choose another"
    return None


def _http_url(value: str) -> str | None:
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"must be an http:// or https:// URL (got {show(value)})"
    return None


def _json_schema(value: Any) -> str | None:
    import jsonschema

    if value.get("type", "object") != "object":
        return "the parameters must be a JSON schema of type object"
    try:
        jsonschema.Draft202012Validator.check_schema(value)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "the schema"
        return f"not a valid JSON schema at {where}: {exc.message}"
    from appliance.tools.arguments import schema_problem  # the engine the calls are checked by

    return schema_problem(value)


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _headers(value: Any) -> str | None:
    for name, header in value.items():
        if not isinstance(name, str):
            return "header names must be strings"
        if not _HEADER_NAME.match(name):
            return f"header name {show(name)} is not a valid HTTP header name"
        if isinstance(header, str) and ("\n" in header or "\r" in header):
            return f"header {name}: the value must be one line"
        if isinstance(header, dict):
            if set(header) != {"file"} or not isinstance(header["file"], str):
                return f"header {name}: use {{file: /path/to/secret}} for a value from a file"
        elif not isinstance(header, str):
            return f"header {name}: expected a string or {{file: PATH}}"
        elif _SECRET_HEADER.search(name):
            return (
                f"header {name} looks secret: give it as {{file: /path/to/file}}, "
                "never inline in config.yaml"
            )
    return None


def _timezone(value: str) -> str | None:
    if not value:
        return None
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {show(value)} (e.g. Europe/Moscow; empty: the system's)"
    return None


@dataclass(frozen=True, kw_only=True)
class BuiltinTools:
    """The tools the box answers itself; each can be switched off."""

    get_time: bool = field(default=True, metadata=meta(doc="Local date, time and weekday."))
    set_volume: bool = field(default=True, metadata=meta(doc="Set the volume by voice."))
    stop_talking: bool = field(default=True, metadata=meta(doc="End the current answer."))
    get_device_status: bool = field(
        default=True, metadata=meta(doc="Connection, uptime, Wi-Fi signal.")
    )


@dataclass(frozen=True, kw_only=True)
class FileSearchConfig:
    """Yandex's server-side search over a search index (the box does not answer it)."""

    index_id: str = field(default="", metadata=meta(doc="Search index id; empty: off."))


@dataclass(frozen=True, kw_only=True)
class WebhookTool:
    """A tool the model may call, answered by POSTing its arguments to a URL."""

    name: str = field(
        metadata=meta(
            doc="The name the model calls.", check=_tool_name, required="give the tool a name"
        )
    )
    description: str = field(default="", metadata=meta(doc="What it does, for the model."))
    parameters: dict = field(
        default_factory=lambda: {"type": "object", "properties": {}},
        metadata=meta(doc="JSON schema of the arguments (type object).", check=_json_schema),
    )
    url: str = field(
        metadata=meta(
            doc="http(s) URL the arguments are POSTed to.",
            check=_http_url,
            required="give the URL to POST to",
        )
    )
    headers: dict = field(
        default_factory=dict,
        metadata=meta(doc="Extra headers; secret ones as {file: PATH}.", check=_headers),
    )
    timeout_s: float = field(
        default=5.0, metadata=meta(doc="Longest wait for the answer, s.", range=(0.1, 60))
    )


def _unique_names(value: Any) -> str | None:
    names = [tool.name for tool in value]
    twice = sorted({name for name in names if names.count(name) > 1})
    return f"the tool name {twice[0]!r} is used twice" if twice else None


@dataclass(frozen=True, kw_only=True)
class ToolsConfig:
    """Tools the voice can use."""

    builtin: BuiltinTools = field(
        default_factory=BuiltinTools, metadata=meta(doc="Built-in tools.")
    )
    timezone: str = field(
        default="",
        metadata=meta(doc="Time zone of get_time; empty: the system's.", check=_timezone),
    )
    state_file: str = field(
        default="/var/lib/appliance/state.json",
        metadata=meta(doc="Where the volume is kept across restarts.", check=_path),
    )
    file_search: FileSearchConfig = field(
        default_factory=FileSearchConfig, metadata=meta(doc="Yandex file search.")
    )
    web_search: bool = field(default=False, metadata=meta(doc="Yandex web search."))
    webhooks: tuple[WebhookTool, ...] = field(
        default=(),
        metadata=meta(doc="Tools answered by an HTTP service of yours.", check=_unique_names),
    )


@dataclass(frozen=True, kw_only=True)
class VadConfig:
    """The server's voice activity detection (hands-free turns)."""

    threshold: float = field(
        default=0.5, metadata=meta(doc="Speech detection threshold, 0 to 1.", range=(0, 1))
    )
    prefix_padding_ms: int = field(
        default=300, metadata=meta(doc="Audio kept before speech starts, ms.", range=(0, 2000))
    )
    silence_duration_ms: int = field(
        default=500,
        metadata=meta(doc="Silence that ends a turn, ms.", range=(100, 5000)),
    )


@dataclass(frozen=True, kw_only=True)
class ConversationConfig:
    """Push-to-talk, or hands-free with the server finding the turns."""

    mode: str = field(
        default="push_to_talk",
        metadata=meta(doc="push_to_talk or hands_free.", choices=("push_to_talk", "hands_free")),
    )
    follow_up_s: float = field(
        default=0.0,
        metadata=meta(
            doc="Push-to-talk: after an answer, listen hands-free this long, s; 0: off.",
            range=(0, 60),
        ),
    )
    long_press_s: float = field(
        default=2.0,
        metadata=meta(
            doc="Hands-free: a press this long ends the conversation, s.", range=(0.5, 10)
        ),
    )
    vad: VadConfig = field(default_factory=VadConfig, metadata=meta(doc="Server VAD."))


@dataclass(frozen=True, kw_only=True)
class Config:
    """The whole configuration. Sections are the dataclass-typed fields."""

    realtime: RealtimeConfig = field(metadata=meta(doc="The Realtime speech API."))
    audio: AudioConfig = field(
        default_factory=AudioConfig, metadata=meta(doc="Microphone and speaker.")
    )
    button: ButtonConfig = field(
        default_factory=ButtonConfig, metadata=meta(doc="The push button's rules.")
    )
    gpio: GpioConfig = field(default_factory=GpioConfig, metadata=meta(doc="Button and LED pins."))
    control: ControlConfig = field(
        default_factory=ControlConfig, metadata=meta(doc="The control socket.")
    )
    tools: ToolsConfig = field(default_factory=ToolsConfig, metadata=meta(doc="Tools."))
    conversation: ConversationConfig = field(
        default_factory=ConversationConfig, metadata=meta(doc="Conversation mode.")
    )
    logging: LoggingConfig = field(default_factory=LoggingConfig, metadata=meta(doc="Logging."))
    path: Path = field(
        default=Path("config.yaml"),
        metadata=meta(doc="The file this configuration came from.", internal=True),
    )

    def require_api_key(self) -> ApiKey:
        """The API key, or ConfigError saying how to give one."""
        if self.realtime.api_key is None:
            unreadable = self.realtime.api_key_source.removeprefix("unreadable ")
            if unreadable != self.realtime.api_key_source:
                raise ConfigError(
                    f"no API key you can read: the installed key {unreadable} is root's; "
                    f"run the command with sudo, or set ${ENV_VAR}"
                )
            raise ConfigError(
                f"no API key: set ${ENV_VAR}, the systemd credential api-key, "
                f"realtime.api_key_file, realtime.api_key (in {self.path}) "
                f"or put it in {self.path.parent / 'api-key'}"
            )
        return self.realtime.api_key
