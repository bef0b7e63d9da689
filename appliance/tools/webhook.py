"""Webhook tools: a tool declared in ``tools.webhooks`` is answered by an HTTP service.

The model's arguments are checked against the tool's JSON schema, then POSTed as JSON to its
URL; the response body, cut to :data:`BODY_LIMIT` characters, becomes the tool's output. Every
failure (bad arguments, an unreadable secret, a timeout, HTTP >= 400, an unreachable host, a
refused redirect) is an ``{"error": ...}`` output the model can read: the handler never raises.

Safety: http(s) only (checked when the config is loaded), no shell and nothing executed; a
redirect is followed only to the same origin (scheme, host and port; at most
:data:`MAX_REDIRECTS`), never with the secret headers (those read from a file) and never to a
``Location`` that carries credentials. The body is decoded only with a text encoding (a
``charset=zlib_codec`` would inflate it) and never past :data:`DECODED_LIMIT` characters.
Secret header values are read from their file at each call and are never logged, nor is the
URL (a webhook URL often carries a token); the log names the host at most. The arguments are
checked by :mod:`appliance.tools.arguments` (a linear-time regex engine, a size cap).

All webhook tools share one :class:`aiohttp.ClientSession` (kept-alive connections, no cookie
jar), made on the first call inside the running loop; the daemon closes it with :func:`close`
(or :meth:`WebhookClient.close` for a client of its own).
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from appliance.config.schema import WebhookTool
from appliance.config.secrets import os_reason
from appliance.protocol.client_events import FunctionTool
from appliance.realtime.tools import Tool
from appliance.tools.arguments import ArgumentChecker

log = logging.getLogger(__name__)

BODY_LIMIT = 4096  # characters of a response body the model gets
ERROR_BODY_LIMIT = 1024  # characters of the body of an HTTP error (often an HTML page)
DECODED_LIMIT = 4 * BODY_LIMIT + 4  # characters decoded at most (a text codec may expand)
TRUNCATED = "…[truncated]"  # appended to a body that was cut
MAX_REDIRECTS = 3  # same-origin redirects followed per call
# The registry's own time limit is a little longer, so that the handler's "timed out after
# N s" (with the configured N) is what the model sees.
GRACE_S = 1.0

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_BINARY_TYPES = ("image/", "audio/", "video/", "font/")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f]")  # in decoded text: binary, not text


class WebhookClient:
    """The HTTP session webhook tools share: made on first use in the running loop."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            # A session left behind by another loop cannot be closed from this one.
            self._session = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(),  # one call must not set cookies for the next
                timeout=aiohttp.ClientTimeout(total=None),  # each call has its own time limit
            )
            self._loop = loop
        return self._session

    async def close(self) -> None:
        """Close the session (a later call opens a new one)."""
        session, self._session, self._loop = self._session, None, None
        if session is not None and not session.closed:
            await session.close()


_shared = WebhookClient()


async def close() -> None:
    """Close the session of the tools made without a client of their own."""
    await _shared.close()


def webhook_tools(
    webhooks: Iterable[WebhookTool],
    client: WebhookClient | None = None,
    *,
    base_dir: Path | None = None,
) -> list[Tool]:
    """One :class:`Tool` per configured webhook.

    ``client``: the session holder (default: the module's, closed by :func:`close`).
    ``base_dir``: where a relative ``{file: PATH}`` header is looked for (default: the
    working directory); pass the config file's directory.
    """
    client = client or _shared
    return [
        Tool(
            spec=FunctionTool(webhook.name, webhook.description, webhook.parameters),
            handler=WebhookHandler(webhook, client, base_dir),
            timeout_s=webhook.timeout_s + GRACE_S,
        )
        for webhook in webhooks
    ]


class _Failed(Exception):
    """A call that ends with ``{"error": message}``; ``outcome`` is for the log line."""

    def __init__(self, message: str, outcome: str) -> None:
        super().__init__(message)
        self.message = message
        self.outcome = outcome


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _cut(text: str, limit: int, truncated: bool = False) -> str:
    if len(text) > limit or truncated:
        return text[:limit] + TRUNCATED
    return text


def _host_label(url: URL) -> str:
    """``host`` or ``host:port``: never the user info, path or query (they may hold tokens)."""
    host = url.host or "?"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{url.explicit_port}" if url.explicit_port else host


def _connect_reason(exc: aiohttp.ClientConnectorError) -> str:
    """Why a connection failed, in words: ``Connection refused``, not the exception's text."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "certificate not trusted"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "TLS handshake failed"
    error = exc.os_error
    if error.errno is not None and error.errno > 0:  # getaddrinfo's are negative
        return os.strerror(error.errno)
    return error.strerror or type(error).__name__


class WebhookHandler:
    """The handler of one webhook tool: ``await handler(arguments)`` is the output string."""

    def __init__(
        self, webhook: WebhookTool, client: WebhookClient, base_dir: Path | None = None
    ) -> None:
        self.name = webhook.name
        self.url = URL(webhook.url)
        self.timeout_s = webhook.timeout_s
        self.client = client
        self.host = _host_label(self.url)
        self._arguments = ArgumentChecker(webhook.parameters)
        self._static: dict[str, str] = {}
        self._files: dict[str, Path] = {}
        for name, value in webhook.headers.items():
            if isinstance(value, Mapping):
                path = Path(value["file"]).expanduser()
                if base_dir is not None and not path.is_absolute():
                    path = base_dir / path
                self._files[name] = path
            else:
                self._static[name] = value
        self._unreadable: set[str] = set()  # headers whose file failed: warned about once

    async def __call__(self, arguments: dict[str, Any]) -> str:
        started = time.monotonic()
        try:
            output, outcome = await self._call(arguments)
        except _Failed as failed:
            output, outcome = _dumps({"error": failed.message}), failed.outcome
        except Exception as exc:  # never raises; the message may hold the URL, so no str(exc)
            output = _dumps({"error": f"request failed: {type(exc).__name__}"})
            outcome = f"failed: {type(exc).__name__}"
        elapsed_ms = (time.monotonic() - started) * 1000
        log.info("tool %s -> %s in %.0f ms", self.name, outcome, elapsed_ms)
        return output

    async def _call(self, arguments: dict[str, Any]) -> tuple[str, str]:
        try:
            arguments = self._arguments.check(arguments)
        except ValueError as exc:
            raise _Failed(f"invalid arguments: {exc}", "invalid arguments") from None
        headers = self._headers()
        body = json.dumps(arguments, ensure_ascii=False).encode()
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._post(headers, body)
        except TimeoutError:
            raise _Failed(f"timed out after {self.timeout_s:g} s", "timed out") from None
        except aiohttp.ClientConnectorError as exc:
            reason = _connect_reason(exc)
            raise _Failed(
                f"cannot reach {self.host}: {reason}", f"cannot reach {self.host}: {reason}"
            ) from None
        except aiohttp.ServerDisconnectedError:
            raise _Failed(
                f"cannot reach {self.host}: the server closed the connection", "disconnected"
            ) from None
        except aiohttp.ClientError as exc:  # a broken response: bad status line, payload...
            kind = type(exc).__name__
            raise _Failed(f"bad response from {self.host}: {kind}", f"failed: {kind}") from None

    def _headers(self) -> CIMultiDict[str]:
        headers = CIMultiDict({"Content-Type": "application/json"})
        for name, value in self._static.items():
            headers[name] = value  # case-insensitive: a configured Content-Type replaces ours
        for name, path in self._files.items():
            try:
                value = path.read_bytes().decode("utf-8").strip()
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                if name not in self._unreadable:
                    self._unreadable.add(name)
                    reason = os_reason(exc) if isinstance(exc, OSError) else "not UTF-8 text"
                    log.warning(
                        "tool %s: header %s: cannot read %s: %s", self.name, name, path, reason
                    )
                raise _Failed(
                    f"header {name}: cannot read its file", f"header {name} unreadable"
                ) from None
            self._unreadable.discard(name)
            if not value:
                raise _Failed(f"header {name}: its file is empty", f"header {name} empty")
            if any(c in value for c in "\r\n\0"):
                raise _Failed(
                    f"header {name}: its file holds more than one line",
                    f"header {name} not one line",
                )
            headers[name] = value
        return headers

    async def _post(self, headers: CIMultiDict[str], body: bytes) -> tuple[str, str]:
        session = self.client.session()
        url, method, data = self.url, "POST", body
        for hop in range(MAX_REDIRECTS + 1):
            async with session.request(
                method, url, data=data, headers=headers, allow_redirects=False
            ) as resp:
                location = resp.headers.get("Location")
                if resp.status not in _REDIRECT_STATUSES or location is None:
                    return await self._answer(resp)
                if hop == MAX_REDIRECTS:
                    raise _Failed(
                        f"too many redirects (more than {MAX_REDIRECTS})", "too many redirects"
                    )
                url = self._redirect_target(resp.url, location)
                # Only the configured URL gets the secrets, even on the same origin (another
                # path there may be a service that logs its headers).
                for name in self._files:
                    headers.popall(name, None)
                # As browsers do: 303, and 301/302 after a POST, continue with a GET.
                if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                    method, data = "GET", None
                    headers.popall("Content-Type", None)
        raise AssertionError("unreachable")  # pragma: no cover

    def _redirect_target(self, current: URL, location: str) -> URL:
        refused = _Failed("redirect to another host refused", "redirect refused")
        try:
            given = URL(location)
            target = current.join(given)
        except (ValueError, TypeError):
            raise refused from None
        if given.user is not None or given.password is not None or "@" in given.raw_authority:
            raise _Failed("redirect with credentials refused", "redirect refused")
        if target.scheme not in ("http", "https") or not target.host:
            raise refused
        if current.scheme == "https" and target.scheme == "http":
            raise _Failed("redirect from https to http refused", "redirect refused")
        if _origin(target) != _origin(current):  # another port is another service
            raise refused
        return target.with_user(None)  # credentials of the configured URL stay with it

    async def _answer(self, resp: aiohttp.ClientResponse) -> tuple[str, str]:
        status = resp.status
        outcome = f"HTTP {status}"
        limit = ERROR_BODY_LIMIT if status >= 400 else BODY_LIMIT
        raw, cut = await _read(resp, 4 * limit + 4)  # enough bytes for `limit` characters
        text = _decode(resp, raw, cut)
        if status >= 400:
            answer: dict[str, Any] = {"error": f"HTTP {status}"}
            if text is not None and text.strip():
                answer["body"] = _cut(text.strip(), limit, cut)
            return _dumps(answer), outcome
        if text is None:
            return _dumps({"error": "non-text response"}), f"{outcome}, not text"
        text = text.strip()
        if not text and not cut:
            return _dumps({"ok": True, "status": status}), outcome
        if _is_json(resp, text, cut):
            return _cut(text, limit, cut), outcome
        return _dumps({"result": _cut(text, limit, cut)}), outcome


async def _read(resp: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of the body, and whether there was more."""
    try:
        data = await resp.content.readexactly(limit + 1)
    except asyncio.IncompleteReadError as short:
        return short.partial, False
    return data[:limit], True


def _origin(url: URL) -> tuple[str, str, int | None]:
    return url.scheme, (url.host or "").lower(), url.port


def _text_codec(charset: str | None) -> codecs.CodecInfo | None:
    """The codec of a declared charset; utf-8 when none is declared or it is unknown, None
    when it is no text encoding (bz2_codec, zlib_codec, base64...: the body would be
    decompressed or transformed, not decoded)."""
    try:
        info = codecs.lookup(charset or "utf-8")
    except LookupError:
        return codecs.lookup("utf-8")
    # CodecInfo's own flag: str.decode() refuses the same codecs by it.
    return info if getattr(info, "_is_text_encoding", False) else None


def _decode(resp: aiohttp.ClientResponse, raw: bytes, cut: bool) -> str | None:
    """The body as text, or None when it is binary (or declares a charset that is not a text
    encoding)."""
    if "Content-Type" in resp.headers and resp.content_type.startswith(_BINARY_TYPES):
        return None
    info = _text_codec(resp.charset)
    if info is None:
        return None
    decoder = info.incrementaldecoder("strict")
    try:
        # A body cut short may end inside a multi-byte character: not an error.
        text = decoder.decode(raw, final=not cut)
    except (UnicodeDecodeError, ValueError):
        return None
    text = text[:DECODED_LIMIT]
    if _CONTROL.search(text):
        return None
    return text


def _is_json(resp: aiohttp.ClientResponse, text: str, cut: bool) -> bool:
    ctype = resp.content_type
    declared = ctype == "application/json" or ctype.endswith("+json")
    if cut:  # cannot be parsed: trust the declared type, or how it starts
        return declared or text.startswith(("{", "["))
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return declared or isinstance(value, dict | list)
