"""Webhook tools against hostile answers and arguments (issue 13, items 1-4).

The network answers a webhook and the model chooses its arguments: each test here is one
attack from the adversarial review, replayed against a local aiohttp server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import bz2
import json
import time
import tracemalloc

import pytest
from aiohttp import web
from multidict import CIMultiDict

from appliance.config import ConfigError, load_config
from appliance.config.schema import WebhookTool
from appliance.tools.arguments import MAX_ARGUMENT_BYTES
from appliance.tools.webhook import WebhookClient, webhook_tools

SECRET = "hdr-SECRET-77c1-never-forward-me"
BOMB = bz2.compress(bytes(100_000_000), 9)  # ~100 bytes that inflate to 100 MB


class Hostile:
    """A server whose answers attack the client; it records every request it gets."""

    def __init__(self) -> None:
        self.hits: list[tuple[str, str, CIMultiDict, bytes]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Hostile:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.hits.append((request.method, request.path, request.headers.copy(), body))
        if request.path.startswith("/bomb/"):
            charset = request.path.removeprefix("/bomb/")
            return web.Response(
                body=BOMB, headers={"Content-Type": f"text/plain; charset={charset}"}
            )
        if request.path == "/latin":
            return web.Response(
                body="café".encode("latin-1"),
                headers={"Content-Type": "text/plain; charset=iso-8859-1"},
            )
        if request.path == "/redirect":
            return web.Response(status=307, headers={"Location": request.query["to"]})
        return web.json_response({"got": json.loads(body) if body else None})


@pytest.fixture
async def hostile():
    srv = await Hostile().start()
    yield srv
    await srv.stop()


@pytest.fixture
async def client():
    holder = WebhookClient()
    yield holder
    await holder.close()


def make(url: str, client: WebhookClient, *, parameters: dict | None = None, headers=None):
    hook = WebhookTool(
        name="hook",
        url=url,
        parameters=parameters or {"type": "object", "properties": {}},
        headers=headers or {},
    )
    (tool,) = webhook_tools([hook], client)
    return tool


async def call(tool, arguments: dict) -> dict:
    return json.loads(await tool.handler(arguments))


# ---- 1. a decompression bomb by charset -------------------------------------------------


@pytest.mark.parametrize("charset", ["bz2_codec", "zlib_codec", "base64_codec", "rot13"])
async def test_a_charset_that_is_no_text_encoding_is_refused(hostile, client, charset):
    tool = make(f"{hostile.base}/bomb/{charset}", client)
    tracemalloc.start()
    try:
        answer = await call(tool, {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert answer == {"error": "non-text response"}
    assert peak < 5_000_000  # the 100 MB the bomb inflates to was never made


async def test_a_text_charset_still_decodes(hostile, client):
    assert await call(make(f"{hostile.base}/latin", client), {}) == {"result": "café"}


# ---- 2. redirects ------------------------------------------------------------------------


async def test_redirect_to_another_port_of_the_same_host_is_refused(hostile, client, tmp_path):
    other = await Hostile().start()  # the same host, another port: another service
    try:
        token = tmp_path / "token"
        token.write_text(SECRET)
        tool = make(
            f"{hostile.base}/redirect?to={other.base}/steal",
            client,
            headers={"Authorization": {"file": str(token)}},
        )
        assert await call(tool, {"pin": "1234"}) == {"error": "redirect to another host refused"}
        assert other.hits == []  # neither the secret header nor the body went there
    finally:
        await other.stop()


@pytest.mark.parametrize("userinfo", ["user:pw@", "user@", ":pw@"])
async def test_redirect_with_credentials_is_refused(hostile, client, userinfo):
    target = f"http://{userinfo}127.0.0.1:{hostile.port}/echo"
    tool = make(f"{hostile.base}/redirect?to={target}", client)
    assert await call(tool, {}) == {"error": "redirect with credentials refused"}
    assert [path for _, path, _, _ in hostile.hits] == ["/redirect"]


async def test_the_urls_own_credentials_do_not_follow_a_redirect(hostile, client):
    url = f"http://owner:{SECRET}@127.0.0.1:{hostile.port}/redirect?to=/echo"
    assert await call(make(url, client), {"a": 1}) == {"got": {"a": 1}}
    first, second = hostile.hits
    assert first[2]["Authorization"].startswith("Basic ")
    assert "Authorization" not in second[2]


# ---- 3. regex denial of service ---------------------------------------------------------


async def _largest_loop_gap(coro) -> tuple[object, float]:
    """Run ``coro`` while a ticker measures the longest the loop went without running it."""
    gaps = [0.0]
    done = asyncio.Event()

    async def tick() -> None:
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.02)
    try:
        result = await coro
    finally:
        done.set()
        await ticker
    return result, max(gaps)


async def test_a_catastrophic_pattern_does_not_stall_the_loop(hostile, client):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "pattern": "^(a+)+$"}},
    }
    tool = make(f"{hostile.base}/echo", client, parameters=schema)
    # Python's re needs about 2**29 steps for this: the daemon froze (issue 13, item 3).
    answer, gap = await _largest_loop_gap(call(tool, {"name": "a" * 29 + "!"}))
    assert answer["error"].startswith("invalid arguments:")
    assert "does not match" in answer["error"]
    assert gap < 0.1
    assert hostile.hits == []
    assert await call(tool, {"name": "aaaa"}) == {"got": {"name": "aaaa"}}


async def test_too_large_arguments_are_refused_before_the_check(hostile, client):
    tool = make(f"{hostile.base}/echo", client)
    answer = await call(tool, {"text": "x" * (MAX_ARGUMENT_BYTES + 1)})
    assert answer["error"].startswith("invalid arguments: the arguments are too large")
    assert hostile.hits == []


# ---- 4. additionalProperties: false -----------------------------------------------------


async def test_arguments_outside_a_closed_schema_are_not_forwarded(hostile, client):
    schema = {
        "type": "object",
        "properties": {
            "action": {"type": "string"},
            "where": {
                "type": "object",
                "properties": {"room": {"type": "string"}},
                "additionalProperties": False,
            },
        },
        "patternProperties": {"^x_": {"type": "string"}},
        "additionalProperties": False,
    }
    tool = make(f"{hostile.base}/echo", client, parameters=schema)
    arguments = {
        "action": "open",
        "where": {"room": "hall", "callback": "http://evil.example/"},
        "x_note": "kept: patternProperties names it",
        "forward_to": "http://evil.example/",
    }
    answer = await call(tool, arguments)
    assert answer == {
        "got": {
            "action": "open",
            "where": {"room": "hall"},
            "x_note": "kept: patternProperties names it",
        }
    }


async def test_an_open_schema_forwards_every_argument(hostile, client):
    tool = make(f"{hostile.base}/echo", client)  # no additionalProperties: anything goes
    assert await call(tool, {"a": 1, "b": [2]}) == {"got": {"a": 1, "b": [2]}}


# ---- 3. patterns that cannot be checked safely are refused at load --------------------------

CONFIG = """\
realtime:
  url: ws://127.0.0.1:8765/v1/realtime/openai
  folder_id: b1gexample
  api_key: some-key
tools:
  webhooks:
    - name: hook
      url: http://127.0.0.1:9/hook
      parameters:
        type: object
        properties:
          name: {{type: string, pattern: '{pattern}'}}
"""


@pytest.mark.parametrize(
    "pattern",
    [r"^(a*)*\1$", "(?=a)a", "(?<!x)y", "((a{100}){100}){100}"],
    ids=["backreference", "lookahead", "lookbehind", "too large"],
)
def test_an_uncheckable_pattern_is_a_config_error(tmp_path, pattern):
    from appliance.cli import main

    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(pattern=pattern), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value) == (
        f"{path}:9: tools.webhooks[0].parameters: the pattern at properties/name/pattern "
        "cannot be checked in linear time (no lookaround or backreferences, at most 32 KB "
        "compiled)"
    )
    assert main(["--config", str(path), "check", "--skip-audio", "--skip-network"]) == 78


def test_a_linear_pattern_loads(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(pattern="^(a+)+$"), encoding="utf-8")
    (hook,) = load_config(path, environ={}).tools.webhooks
    assert hook.parameters["properties"]["name"]["pattern"] == "^(a+)+$"


async def test_arguments_nested_past_pythons_limit_are_an_error_output(hostile, client):
    from appliance.protocol.server_events import FunctionCall
    from appliance.realtime.tools import ToolRegistry

    registry = ToolRegistry([make(f"{hostile.base}/echo", client)])
    deep = '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    output = await registry.call(FunctionCall(call_id="c1", name="hook", arguments=deep))
    assert json.loads(output) == {"error": "arguments are not valid JSON"}
    assert hostile.hits == []
