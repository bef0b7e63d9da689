"""The Realtime services the box can talk to, as data. Pure: no I/O.

Every difference between the providers lives here, so the session, the supervisor and the turn
shell never ask which provider they talk to: they read a :class:`Provider`'s fields. A third
provider is one more entry in :data:`PROVIDERS`.

Sources (realtime-protocol.md section 0): Yandex's 2026 examples (``wss://ai.api.cloud.yandex.net
/v1/realtime?model=gpt://<folder>/<model>``, ``Authorization: Api-Key``, no ``session.type``, no
``channels``, ``audio.input.languages``, ``audio.output.role``, tool ``parameters`` as an object);
OpenAI's GA API (``Bearer``, ``session.type: realtime`` required, PCM at 24 kHz only, unknown
session fields refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote


@dataclass(frozen=True)
class Provider:
    """One Realtime service: its defaults, how it authenticates and what it accepts."""

    name: str
    url: str  # the WebSocket URL, without the model
    model: str  # the default model
    voice: str  # the default voice
    output_rate: int  # the default rate of the answers' PCM, Hz
    input_rates: tuple[int, ...]  # input PCM rates the service accepts, Hz
    output_rates: tuple[int, ...]  # output PCM rates the service accepts, Hz
    auth_schemes: tuple[tuple[str, str], ...]  # realtime.auth -> the Authorization scheme
    model_in_folder: bool  # the model query is gpt://<folder_id>/<model> (folder_id required)
    session_type: bool  # session.update carries type: "realtime"
    languages: bool  # audio.input.languages is understood
    voice_role: bool  # audio.output.role is understood
    server_tools: bool  # the server runs file_search / web_search itself
    transcript_before_response: bool  # ask only once the question's transcript is in
    input_clear: bool  # input_audio_buffer.clear is supported
    assistant_history: bool  # assistant text items may be created (history replay)
    retired_urls: tuple[str, ...] = ()  # endpoints the service no longer serves

    @property
    def auth_kinds(self) -> tuple[str, ...]:
        return tuple(kind for kind, _ in self.auth_schemes)

    def auth_header(self, auth: str, secret: str) -> str:
        """The ``Authorization`` value; ``auth`` is one of :attr:`auth_kinds`."""
        return f"{dict(self.auth_schemes)[auth]} {secret}"

    def model_query(self, model: str, folder_id: str = "") -> str:
        return f"gpt://{folder_id}/{model}" if self.model_in_folder else model

    def endpoint(self, url: str, model: str, folder_id: str = "") -> str:
        """``url`` with the model in its query (the URL's own query kept)."""
        sep = "&" if "?" in url else "?"
        return f"{url}{sep}model={quote(self.model_query(model, folder_id), safe='/:')}"

    def is_retired(self, url: str) -> bool:
        return any(url.startswith(old) for old in self.retired_urls)


YANDEX = Provider(
    name="yandex",
    url="wss://ai.api.cloud.yandex.net/v1/realtime",
    model="speech-realtime-250923",
    voice="marina",
    output_rate=44100,
    input_rates=(24000, 44100),
    output_rates=(8000, 16000, 22050, 24000, 44100, 48000),
    auth_schemes=(("api_key", "Api-Key"), ("iam_token", "Bearer")),
    model_in_folder=True,
    session_type=False,
    languages=True,
    voice_role=True,
    server_tools=True,
    transcript_before_response=True,
    input_clear=False,
    assistant_history=False,
    retired_urls=("wss://rest-assistant.api.cloud.yandex.net",),
)

OPENAI = Provider(
    name="openai",
    url="wss://api.openai.com/v1/realtime",
    model="gpt-realtime",
    voice="marin",
    output_rate=24000,
    input_rates=(24000,),
    output_rates=(24000,),
    auth_schemes=(("api_key", "Bearer"),),
    model_in_folder=False,
    session_type=True,
    languages=False,
    voice_role=False,
    server_tools=False,
    transcript_before_response=False,
    input_clear=True,
    assistant_history=True,
)

PROVIDERS: dict[str, Provider] = {p.name: p for p in (YANDEX, OPENAI)}


@dataclass(frozen=True)
class SessionShape:
    """What one session asks for, independent of the provider's spelling of it."""

    voice: str
    instructions: str
    input_rate: int
    output_rate: int
    languages: tuple[str, ...] = ()
    voice_role: str = ""
    transcription_model: str = ""


def session_fields(provider: Provider, shape: SessionShape) -> dict[str, Any]:
    """The ``session`` object of a ``session.update`` (without tools and turn detection) in the
    provider's spelling: no ``channels`` anywhere, ``type`` only where it is required."""
    audio_input: dict[str, Any] = {"format": {"type": "audio/pcm", "rate": shape.input_rate}}
    if provider.languages and shape.languages:
        audio_input["languages"] = list(shape.languages)
    if shape.transcription_model:
        audio_input["transcription"] = {"model": shape.transcription_model}
    audio_output: dict[str, Any] = {
        "format": {"type": "audio/pcm", "rate": shape.output_rate},
        "voice": shape.voice,
    }
    if provider.voice_role and shape.voice_role:
        audio_output["role"] = shape.voice_role
    session: dict[str, Any] = {}
    if provider.session_type:
        session["type"] = "realtime"
    session.update(
        output_modalities=["audio"],
        instructions=shape.instructions,
        audio={"input": audio_input, "output": audio_output},
    )
    return session
