"""Webhook tools (issue 6 §3) against a local aiohttp server, and their config errors.

Everything listens on and talks to 127.0.0.0/8 only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from pathlib import Path

import pytest
from aiohttp import web
from multidict import CIMultiDict

from appliance.config import ConfigError, load_config
from appliance.config.schema import WebhookTool
from appliance.protocol.server_events import FunctionCall
from appliance.realtime.tools import ToolRegistry
from appliance.tools import webhook
from appliance.tools.webhook import (
    BODY_LIMIT,
    ERROR_BODY_LIMIT,
    GRACE_S,
    TRUNCATED,
    WebhookClient,
    webhook_tools,
)

SECRET = "hdr-SECRET-4b1d9e-never-log-me"
GARAGE_SCHEMA = {
    "type": "object",
    "properties": {
        "action": {"type": "string", "enum": ["open", "close"]},
        "percent": {"type": "integer", "minimum": 0, "maximum": 100},
    },
    "required": ["action"],
    "additionalProperties": False,
}
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))


# --- the local HTTP service -------------------------------------------------------------


class Service:
    """An aiohttp server on ``host`` (random port) that records what it was sent."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.hits: list[tuple[str, str, CIMultiDict, bytes]] = []  # method, path, headers, body
        self.release = asyncio.Event()  # ends the slow handler at teardown
        self._runner: web.AppRunner | None = None

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> Service:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.hits.append((request.method, request.path, request.headers.copy(), body))
        route = request.path
        query = request.query
        if route == "/echo":
            received = json.loads(body) if body else None
            return web.json_response({"ok": True, "method": request.method, "got": received})
        if route == "/slow":
            await asyncio.wait_for(self.release.wait(), 30)
            return web.json_response({"late": True})
        if route == "/fail":
            return web.Response(status=500, text="boom: the database is down")
        if route == "/fail-big":
            return web.Response(status=503, text="<html>" + "e" * 10_000 + "</html>")
        if route == "/big-text":
            return web.Response(text="x" * 100_000)
        if route == "/big-json":
            return web.json_response(list(range(20_000)))
        if route == "/big-unicode":
            return web.Response(text="é" * 50_000)
        if route == "/text":
            return web.Response(text="the door is open\n")
        if route == "/empty":
            return web.Response(status=204)
        if route == "/binary":
            return web.Response(body=PNG, content_type="image/png")
        if route == "/binary-untyped":
            return web.Response(body=PNG, content_type="application/octet-stream")
        if route == "/redirect":
            status = int(query.get("status", "302"))
            return web.Response(status=status, headers={"Location": query["to"]})
        if route == "/loop":
            n = int(query.get("n", "0"))
            return web.Response(status=302, headers={"Location": f"/loop?n={n + 1}"})
        return web.Response(status=404, text="no such route")


@pytest.fixture
async def service():
    srv = await Service().start()
    yield srv
    await srv.stop()


@pytest.fixture
async def client():
    holder = WebhookClient()
    yield holder
    await holder.close()


def make(
    service: Service,
    path: str,
    *,
    client: WebhookClient,
    name: str = "garage_door",
    parameters: dict | None = None,
    headers: dict | None = None,
    timeout_s: float = 5.0,
    base_dir: Path | None = None,
):
    """The handler of one webhook tool pointing at ``path`` on ``service``."""
    hook = WebhookTool(
        name=name,
        description="Open or close the garage door.",
        parameters=GARAGE_SCHEMA if parameters is None else parameters,
        url=service.base + path,
        headers=headers or {},
        timeout_s=timeout_s,
    )
    (tool,) = webhook_tools([hook], client, base_dir=base_dir)
    return tool


async def call(tool, arguments: dict) -> str:
    output = await tool.handler(arguments)
    assert isinstance(output, str)
    return output


# --- the Tool it makes ------------------------------------------------------------------


def test_tool_spec_and_time_limit(client):
    hook = WebhookTool(
        name="garage_door",
        description="Open or close the garage door.",
        parameters=GARAGE_SCHEMA,
        url="http://127.0.0.1:9/x",
        timeout_s=2.5,
    )
    (tool,) = webhook_tools([hook], client)
    assert tool.spec.as_dict() == {
        "type": "function",
        "name": "garage_door",
        "description": "Open or close the garage door.",
        "parameters": GARAGE_SCHEMA,
    }
    # The registry's limit is a little longer, so the handler's own message wins.
    assert tool.timeout_s == 2.5 + GRACE_S
    assert webhook_tools([], client) == []


# --- success ----------------------------------------------------------------------------


async def test_success_posts_json_with_headers(service, client, caplog):
    caplog.set_level(logging.INFO, logger="appliance.tools.webhook")
    tool = make(service, "/echo", client=client, headers={"X-Room": "garage"})
    output = await call(tool, {"action": "open", "percent": 50})
    assert json.loads(output) == {
        "ok": True,
        "method": "POST",
        "got": {"action": "open", "percent": 50},
    }
    ((method, path, headers, body),) = service.hits
    assert (method, path) == ("POST", "/echo")
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Room"] == "garage"
    assert json.loads(body) == {"action": "open", "percent": 50}
    (line,) = [r.getMessage() for r in caplog.records if r.name == "appliance.tools.webhook"]
    assert line.startswith("tool garage_door -> HTTP 200 in ") and line.endswith(" ms")
    assert str(service.port) not in line  # not even the URL is logged


async def test_through_the_registry(service, client):
    registry = ToolRegistry(webhook_tools([_hook(service, "/echo")], client))
    output = await registry.call(FunctionCall("c1", "garage_door", '{"action": "close"}'))
    assert json.loads(output)["got"] == {"action": "close"}


def _hook(service: Service, path: str, **kw) -> WebhookTool:
    return WebhookTool(name="garage_door", parameters=GARAGE_SCHEMA, url=service.base + path, **kw)


async def test_the_session_is_shared_and_reopened_after_close(service, client):
    other = WebhookTool(name="door_state", url=service.base + "/text")
    first, second = webhook_tools([_hook(service, "/echo"), other], client)
    await call(first, {"action": "open"})
    session = client.session()
    await call(second, {})
    assert client.session() is session
    await client.close()
    assert session.closed
    assert json.loads(await call(first, {"action": "open"}))["ok"] is True
    assert client.session() is not session


async def test_module_close_closes_the_default_session(service):
    (tool,) = webhook_tools([_hook(service, "/echo")])
    try:
        assert json.loads(await call(tool, {"action": "open"}))["ok"] is True
        session = webhook._shared.session()
    finally:
        await webhook.close()
    assert session.closed


# --- secret headers ---------------------------------------------------------------------


async def test_secret_header_from_a_file_is_sent_and_never_logged(
    service, client, caplog, tmp_path
):
    caplog.set_level(logging.DEBUG)
    secret_file = tmp_path / "ha-token"
    secret_file.write_text(f"  Bearer {SECRET}\n")
    tool = make(
        service,
        "/echo",
        client=client,
        headers={"Authorization": {"file": str(secret_file)}, "X-Room": "garage"},
    )
    output = await call(tool, {"action": "open"})
    assert json.loads(output)["ok"] is True
    ((_, _, headers, _),) = service.hits
    assert headers["Authorization"] == f"Bearer {SECRET}"
    assert SECRET not in caplog.text
    assert SECRET not in output
    # Read at each call: a rotated token is picked up without a restart.
    secret_file.write_text("Bearer rotated\n")
    await call(tool, {"action": "close"})
    assert service.hits[1][2]["Authorization"] == "Bearer rotated"


async def test_relative_header_file_is_looked_for_in_base_dir(service, client, tmp_path):
    (tmp_path / "token").write_text(SECRET)
    tool = make(
        service,
        "/echo",
        client=client,
        headers={"X-Token": {"file": "token"}},
        base_dir=tmp_path,
    )
    assert json.loads(await call(tool, {"action": "open"}))["ok"] is True
    assert service.hits[0][2]["X-Token"] == SECRET


async def test_unreadable_header_file_is_an_error_logged_once(service, client, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    missing = tmp_path / "nope"
    tool = make(service, "/echo", client=client, headers={"Authorization": {"file": str(missing)}})
    for _ in range(3):
        output = await call(tool, {"action": "open"})
        assert json.loads(output) == {"error": "header Authorization: cannot read its file"}
    assert service.hits == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"tool garage_door: header Authorization: cannot read {missing}: "
        "[Errno 2] No such file or directory"
    ]
    # Readable again: sent; unreadable again later: warned about again.
    missing.write_text(SECRET)
    assert json.loads(await call(tool, {"action": "open"}))["ok"] is True
    missing.unlink()
    await call(tool, {"action": "open"})
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("\n  \n", "header Authorization: its file is empty"),
        ("line one\nline two\n", "header Authorization: its file holds more than one line"),
    ],
)
async def test_header_file_that_is_not_one_value(service, client, tmp_path, content, message):
    path = tmp_path / "token"
    path.write_text(content)
    tool = make(service, "/echo", client=client, headers={"Authorization": {"file": str(path)}})
    assert json.loads(await call(tool, {"action": "open"})) == {"error": message}
    assert service.hits == []


# --- failures ---------------------------------------------------------------------------


async def test_timeout(service, client):
    tool = make(service, "/slow", client=client, timeout_s=0.3)
    started = time.monotonic()
    output = await call(tool, {"action": "open"})
    elapsed = time.monotonic() - started
    assert json.loads(output) == {"error": "timed out after 0.3 s"}
    assert 0.3 <= elapsed < 0.3 + 0.5


async def test_timeout_through_the_registry_says_the_configured_limit(service, client):
    registry = ToolRegistry(webhook_tools([_hook(service, "/slow", timeout_s=0.2)], client))
    output = await registry.call(FunctionCall("c1", "garage_door", '{"action": "open"}'))
    assert json.loads(output) == {"error": "timed out after 0.2 s"}


async def test_http_500_with_body(service, client, caplog):
    caplog.set_level(logging.INFO, logger="appliance.tools.webhook")
    output = await call(make(service, "/fail", client=client), {"action": "open"})
    assert json.loads(output) == {"error": "HTTP 500", "body": "boom: the database is down"}
    assert caplog.records[-1].getMessage().startswith("tool garage_door -> HTTP 500 in ")


async def test_http_error_body_is_truncated(service, client):
    output = json.loads(await call(make(service, "/fail-big", client=client), {"action": "open"}))
    assert output["error"] == "HTTP 503"
    assert output["body"].endswith(TRUNCATED)
    assert len(output["body"]) == ERROR_BODY_LIMIT + len(TRUNCATED)


async def test_http_404(service, client):
    output = await call(make(service, "/nowhere", client=client), {"action": "open"})
    assert json.loads(output) == {"error": "HTTP 404", "body": "no such route"}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"action": "ajar"}, 'invalid arguments: "ajar" is not one of "open" or "close" at action'),
        ({}, 'invalid arguments: "action" is a required property'),
        (
            {"action": "open", "percent": 150},
            "invalid arguments: 150 is greater than the maximum of 100 at percent",
        ),
        (  # additionalProperties: false drops "colour" (issue 13), the rest is still checked
            {"action": "ajar", "colour": "red"},
            'invalid arguments: "ajar" is not one of "open" or "close" at action',
        ),
    ],
)
async def test_invalid_arguments_do_not_call_the_server(service, client, arguments, message):
    output = await call(make(service, "/echo", client=client), arguments)
    assert json.loads(output) == {"error": message}
    assert service.hits == []


async def test_invalid_argument_message_is_bounded(service, client):
    output = await call(make(service, "/echo", client=client), {"action": "o" * 10_000})
    error = json.loads(output)["error"]
    assert error.startswith('invalid arguments: "ooo') and error.endswith(" at action")
    assert len(error) < 400
    assert service.hits == []


async def test_connection_refused(client, caplog):
    caplog.set_level(logging.DEBUG)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://user:pw-{SECRET}@127.0.0.1:{port}/hook-{SECRET}?token={SECRET}"
    (tool,) = webhook_tools([WebhookTool(name="garage_door", url=url)], client)
    output = await call(tool, {})
    assert json.loads(output) == {"error": f"cannot reach 127.0.0.1:{port}: Connection refused"}
    line = caplog.records[-1].getMessage()
    assert line.startswith(f"tool garage_door -> cannot reach 127.0.0.1:{port}: Connection refused")
    assert SECRET not in caplog.text  # a URL may hold a token: neither logged nor told


async def test_configured_content_type_replaces_ours(service, client):
    tool = make(service, "/echo", client=client, headers={"content-type": "application/json; v=2"})
    assert json.loads(await call(tool, {"action": "open"}))["ok"] is True
    ((_, _, headers, _),) = service.hits
    assert headers.getall("Content-Type") == ["application/json; v=2"]


# --- response bodies --------------------------------------------------------------------


async def test_oversized_text_body_is_truncated(service, client):
    output = await call(make(service, "/big-text", client=client), {"action": "open"})
    result = json.loads(output)["result"]
    assert result == "x" * BODY_LIMIT + TRUNCATED
    assert len(output) < BODY_LIMIT + 100


async def test_oversized_json_body_is_its_json_text_truncated(service, client):
    output = await call(make(service, "/big-json", client=client), {"action": "open"})
    assert output.startswith("[0, 1, 2, ")
    assert output.endswith(TRUNCATED)
    assert len(output) == BODY_LIMIT + len(TRUNCATED)


async def test_oversized_multibyte_body_is_cut_on_characters(service, client):
    output = await call(make(service, "/big-unicode", client=client), {"action": "open"})
    assert json.loads(output)["result"] == "é" * BODY_LIMIT + TRUNCATED


async def test_text_body_is_wrapped_as_result(service, client):
    output = await call(make(service, "/text", client=client), {"action": "open"})
    assert json.loads(output) == {"result": "the door is open"}


async def test_empty_body(service, client):
    output = await call(make(service, "/empty", client=client), {"action": "open"})
    assert json.loads(output) == {"ok": True, "status": 204}


@pytest.mark.parametrize("path", ["/binary", "/binary-untyped"])
async def test_binary_body(service, client, path):
    output = await call(make(service, path, client=client), {"action": "open"})
    assert json.loads(output) == {"error": "non-text response"}


# --- redirects --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "method", "got"),
    [
        (302, "GET", None),  # as browsers do: a POST redirected by 301/302/303 becomes a GET
        (303, "GET", None),
        (307, "POST", {"action": "open"}),  # 307/308 repeat the POST with its body
        (308, "POST", {"action": "open"}),
    ],
)
async def test_same_host_redirect_is_followed(service, client, tmp_path, status, method, got):
    token = tmp_path / "token"
    token.write_text(SECRET)
    tool = make(
        service,
        f"/redirect?status={status}&to=/echo",
        client=client,
        headers={"Authorization": {"file": str(token)}},
    )
    output = await call(tool, {"action": "open"})
    assert json.loads(output) == {"ok": True, "method": method, "got": got}
    assert [(m, p) for m, p, _, _ in service.hits] == [("POST", "/redirect"), (method, "/echo")]
    assert service.hits[0][2]["Authorization"] == SECRET
    assert "Authorization" not in service.hits[1][2]  # a secret never follows a redirect


async def test_absolute_same_host_redirect_is_followed(service, client):
    tool = make(service, f"/redirect?status=307&to={service.base}/echo", client=client)
    assert json.loads(await call(tool, {"action": "open"}))["got"] == {"action": "open"}


async def test_too_many_redirects(service, client):
    output = await call(make(service, "/loop", client=client), {"action": "open"})
    assert json.loads(output) == {"error": "too many redirects (more than 3)"}
    assert [p for _, p, _, _ in service.hits] == ["/loop"] * 4  # the first and 3 redirects


async def test_cross_host_redirect_is_refused(service, client, tmp_path):
    other = await Service("127.0.0.2").start()  # loopback too, but another host
    try:
        token = tmp_path / "token"
        token.write_text(SECRET)
        for target in (f"{other.base}/echo", f"http://localhost:{service.port}/echo"):
            tool = make(
                service,
                f"/redirect?status=307&to={target}",
                client=client,
                headers={"Authorization": {"file": str(token)}},
            )
            output = await call(tool, {"action": "open"})
            assert json.loads(output) == {"error": "redirect to another host refused"}
        assert other.hits == []
        assert [p for _, p, _, _ in service.hits] == ["/redirect", "/redirect"]
    finally:
        await other.stop()


@pytest.mark.parametrize(
    "target", ["file:///etc/passwd", "ftp://127.0.0.1/x", "javascript:alert(1)", "//127.0.0.2/x"]
)
async def test_non_http_or_scheme_relative_redirect_is_refused(service, client, target):
    tool = make(service, f"/redirect?status=302&to={target}", client=client)
    output = await call(tool, {"action": "open"})
    assert json.loads(output) == {"error": "redirect to another host refused"}
    assert len(service.hits) == 1


# --- config errors ----------------------------------------------------------------------

MINIMAL = """\
realtime:
  url: ws://127.0.0.1:8765/v1/realtime/openai
  folder_id: b1gexample
  api_key: some-key
"""


def config_error(tmp_path: Path, tools_yaml: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(MINIMAL + tools_yaml, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.exit_code == 78
    message = str(info.value)
    assert "\n" not in message
    return message.removeprefix(f"{path}:")


def test_good_webhook_config_loads_and_makes_a_tool(tmp_path, client):
    path = tmp_path / "config.yaml"
    path.write_text(
        MINIMAL
        + """\
tools:
  webhooks:
    - name: garage_door
      description: Open or close the garage door.
      parameters:
        type: object
        properties: {action: {type: string, enum: [open, close]}}
        required: [action]
      url: http://homeassistant.local:8123/api/webhook/garage
      headers: {Authorization: {file: /etc/appliance/ha-token}, X-Room: garage}
      timeout_s: 3
""",
        encoding="utf-8",
    )
    config = load_config(path, environ={})
    (hook,) = config.tools.webhooks
    assert hook.headers == {
        "Authorization": {"file": "/etc/appliance/ha-token"},
        "X-Room": "garage",
    }
    (tool,) = webhook_tools(config.tools.webhooks, client, base_dir=path.parent)
    assert tool.spec.name == "garage_door"
    assert tool.spec.parameters["required"] == ["action"]
    assert tool.timeout_s == 3 + GRACE_S


HOOK = "tools:\n  webhooks:\n    - name: garage_door\n      url: http://127.0.0.1:9/hook\n"


@pytest.mark.parametrize(
    ("tools_yaml", "message"),
    [
        pytest.param(
            HOOK + "      parameters: {type: object, properties: {a: {type: strng}}}\n",
            "9: tools.webhooks[0].parameters: not a valid JSON schema at properties/a/type: "
            "'strng' is not valid under any of the given schemas",
            id="bad schema",
        ),
        pytest.param(
            HOOK + "      parameters: {type: array}\n",
            "9: tools.webhooks[0].parameters: the parameters must be a JSON schema of type object",
            id="schema not an object",
        ),
        pytest.param(
            HOOK + "      parameters: [a, b]\n",
            "9: tools.webhooks[0].parameters: expected a mapping (got a list)",
            id="schema not a mapping",
        ),
        pytest.param(
            "tools:\n  webhooks:\n    - name: garage_door\n      url: not a url\n",
            "8: tools.webhooks[0].url: must be an http:// or https:// URL (got 'not a url')",
            id="bad url",
        ),
        pytest.param(
            "tools:\n  webhooks:\n    - name: garage_door\n      url: ftp://127.0.0.1/hook\n",
            "8: tools.webhooks[0].url: must be an http:// or https:// URL "
            "(got 'ftp://127.0.0.1/hook')",
            id="non-http url",
        ),
        pytest.param(
            "tools:\n  webhooks:\n    - name: garage_door\n      url: file:///etc/passwd\n",
            "8: tools.webhooks[0].url: must be an http:// or https:// URL "
            "(got 'file:///etc/passwd')",
            id="file url",
        ),
        pytest.param(
            HOOK + "      headers: {Authorization: Bearer abc123}\n",
            "9: tools.webhooks[0].headers: header Authorization looks secret: give it as "
            "{file: /path/to/file}, never inline in config.yaml",
            id="inline secret header",
        ),
        pytest.param(
            HOOK + "      headers: {X-Api-Key: abc123}\n",
            "9: tools.webhooks[0].headers: header X-Api-Key looks secret: give it as "
            "{file: /path/to/file}, never inline in config.yaml",
            id="inline api key header",
        ),
        pytest.param(
            HOOK + "      headers: {X-Room: {path: /x}}\n",
            "9: tools.webhooks[0].headers: header X-Room: use {file: /path/to/secret} "
            "for a value from a file",
            id="header mapping without file",
        ),
        pytest.param(
            "tools:\n  webhooks:\n    - name: open the door\n      url: http://127.0.0.1/\n",
            "7: tools.webhooks[0].name: must be 1 to 64 letters, digits, _ or - "
            "(the name the model calls)",
            id="bad tool name",
        ),
        pytest.param(
            "tools:\n  webhooks:\n    - name: get_time\n      url: http://127.0.0.1/\n",
            "7: tools.webhooks[0].name: 'get_time' is a built-in tool's name; choose another",
            id="reserved name",
        ),
        pytest.param(
            "tools:\n  webhooks:\n    - web_search\n",
            "7: tools.webhooks[0]: expected a mapping of keys",
            id="entry not a mapping",
        ),
        pytest.param(
            "tools:\n  webhooks:\n    - name: garage_door\n      description: x\n",
            "7: tools.webhooks[0].url: missing; give the URL to POST to",
            id="missing url",
        ),
        pytest.param(
            "tools:\n  webhooks:\n    - url: http://127.0.0.1/\n",
            "7: tools.webhooks[0].name: missing; give the tool a name",
            id="missing name",
        ),
        pytest.param(
            HOOK + "      timeout_s: 600\n",
            "9: tools.webhooks[0].timeout_s: must be between 0.1 and 60 (got 600)",
            id="timeout out of range",
        ),
        pytest.param(
            HOOK + "      method: GET\n",
            "9: tools.webhooks[0].method: unknown key; valid keys: name, description, "
            "parameters, url, headers, timeout_s",
            id="unknown key",
        ),
    ],
)
def test_webhook_config_errors(tmp_path, tools_yaml, message):
    assert config_error(tmp_path, tools_yaml) == message
