"""Shared fixtures: the local Realtime test server and link settings pointing at it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/ helpers import each other by name

from realtime_server import MODEL, RealtimeTestServer
from virtual_alsa import virtual_alsa, virtual_alsa_reset  # noqa: F401 (fixtures)

from appliance.config import ApiKey
from appliance.protocol.providers import OPENAI, YANDEX, Provider
from appliance.realtime.backoff import Backoff
from appliance.realtime.supervisor import LinkSettings

# Distinctive, so a test can assert it never shows up in any output.
SECRET = "sk-TEST-7f3a9c-never-print-me"


# Every test of the link runs against each kind of server the box must serve.
SERVER_PROFILES = ("yandex-2026", "openai")


@pytest.fixture(params=SERVER_PROFILES)
async def server(request):
    async with RealtimeTestServer(profile=request.param, api_key=SECRET) as srv:
        yield srv
        assert srv.validation_errors == [], "the client sent events the server's types reject"


def provider_of(server: RealtimeTestServer) -> Provider:
    """The client-side provider that speaks to this server profile."""
    return OPENAI if server.profile.name == "openai" else YANDEX


def realtime_config_lines(server: RealtimeTestServer) -> str:
    """The ``realtime:`` settings (indented, no header) that point a box at this server."""
    if server.profile.name == "openai":
        return f"  provider: openai\n  url: {server.url}\n"
    folder, model = MODEL.removeprefix("gpt://").split("/")
    return f"  url: {server.url}\n  folder_id: {folder.replace('-', '')}\n  model: {model}\n"


def link_settings(server: RealtimeTestServer, **overrides) -> LinkSettings:
    provider = provider_of(server)
    values = dict(
        endpoint=f"{server.url}?model={server.profile.model_query}",
        provider=provider,
        api_key=ApiKey(SECRET),
        voice=server.profile.default_voice,
        instructions="Be brief.",
        output_rate=server.output_rate,
        connect_timeout_s=2.0,
        heartbeat_s=5.0,
        session_max_s=300.0,
        history_max_chars=4000,
    )
    values.update(overrides)
    return LinkSettings(**values)


def fast_backoff(**overrides) -> Backoff:
    """The real backoff, scaled down 10x and without jitter, so timing is checkable."""
    values = dict(first_s=0.05, cap_s=0.4, stable_s=3.0, rng=lambda: 1.0)
    values.update(overrides)
    return Backoff(**values)
