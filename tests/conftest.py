"""Shared fixtures: the local Realtime test server and link settings pointing at it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/ helpers import each other by name

from realtime_server import MODEL, RealtimeTestServer
from virtual_alsa import virtual_alsa, virtual_alsa_reset  # noqa: F401 (fixtures)

from appliance.config import ApiKey
from appliance.realtime.backoff import Backoff
from appliance.realtime.supervisor import LinkSettings

# Distinctive, so a test can assert it never shows up in any output.
SECRET = "sk-TEST-7f3a9c-never-print-me"


@pytest.fixture
async def server():
    async with RealtimeTestServer(api_key=SECRET) as srv:
        yield srv
        assert srv.validation_errors == [], "the client sent events the GA types reject"


def link_settings(server: RealtimeTestServer, **overrides) -> LinkSettings:
    folder, model = MODEL.removeprefix("gpt://").split("/")
    values = dict(
        endpoint=f"{server.url}?model=gpt://{folder}/{model}",
        api_key=ApiKey(SECRET),
        voice="marina",
        instructions="Be brief.",
        output_rate=44100,
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
