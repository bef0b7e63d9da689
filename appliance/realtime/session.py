"""One WebSocket connection to the Realtime API, which is one server session.

Opening it means: the HTTP upgrade with the provider's ``Authorization`` header, waiting for
``session.created``, sending our ``session.update`` and waiting for the ``session.updated`` that
says it took (an ``error`` instead, or a close, is a refusal: :class:`SetupRefused`). After that
it is a stream of typed events and a ``send``. It does not reconnect; the supervisor does.
Every way out sends a close frame (1000), never just a dropped TCP connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from appliance.config import ApiKey
from appliance.protocol import codec
from appliance.protocol import server_events as ev
from appliance.protocol.client_events import append_frame, encode, input_audio_append
from appliance.protocol.parser import parse_server_dict, parse_server_event
from appliance.protocol.providers import YANDEX, Provider
from appliance.realtime.trace import TraceWriter, endpoint_facts, response_headers

log = logging.getLogger(__name__)

# The API accepts 15 MiB per event; a server frame may be as large. Past this the link is closed.
MAX_FRAME_BYTES = 20 * 1024 * 1024


class LinkError(Exception):
    """The session could not be opened or was lost. The message never holds a secret."""

    kind = "link"


class ConnectFailed(LinkError):
    """No session: network down, DNS, TLS, a refused handshake other than auth, a timeout."""

    def __init__(self, message: str, kind: str = "connect") -> None:
        super().__init__(message)
        self.kind = kind


class AuthRefused(LinkError):
    """The server refused the key (HTTP 401/403, or an auth error before ``session.created``)."""

    kind = "auth"


class SetupRefused(LinkError):
    """The server refused our ``session.update`` (an error naming it, or a close before
    ``session.updated``): a configuration the service does not accept. Retried slowly."""

    kind = "setup"


class NotConnected(LinkError):
    """A send found no live session: the caller's turn has failed."""

    kind = "not-connected"


def describe_exception(exc: BaseException) -> str:
    """A one-line reason for a failed connect, without URLs' queries or headers."""
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"handshake refused: HTTP {exc.status}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot reach {exc.host}:{exc.port}: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# Frames whose only strings that reach a typed event are their two ids (see parse_scrubbed).
AUDIO_DELTA_TYPES = frozenset({"response.output_audio.delta", "response.audio.delta"})


def parse_scrubbed(frame: str, secret: str) -> ev.ServerEvent:
    """Parse a frame with the key blanked out first: a server that echoes the key in an error
    message (or anywhere) must not carry it into a log line, a status or an exception.

    An audio delta (25 a second while the box speaks, each a few kB of base64) is not scanned
    whole: of its strings only ``response_id`` and ``item_id`` reach the typed event (its
    payload becomes PCM that nothing logs, and ``***`` written into it would only break the
    audio; a malformed one says what was wrong in the parser's own words), so those two are
    checked. Every other frame is scanned before it is parsed.
    """
    if len(secret) < 4 or not isinstance(frame, str):
        return parse_server_event(frame)
    try:
        data = codec.loads(frame)
    except (ValueError, RecursionError):
        return ev.Malformed("not JSON")
    kind = data.get("type") if type(data) is dict else None
    if type(kind) is str and kind in AUDIO_DELTA_TYPES:
        event = parse_server_dict(data)
        if type(event) is ev.AudioDelta and (
            secret in event.response_id or secret in event.item_id
        ):
            event = dataclasses.replace(
                event,
                response_id=event.response_id.replace(secret, "***"),
                item_id=event.item_id.replace(secret, "***"),
            )
        return event
    if secret in frame:
        return parse_server_event(frame.replace(secret, "***"))
    return parse_server_dict(data)


class RealtimeSession:
    """A live session: create with :meth:`open`, read :meth:`events`, write with :meth:`send`."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        created: ev.SessionCreated,
        trace: TraceWriter | None = None,
        secret: str = "",
    ) -> None:
        self._ws = ws
        self._trace = trace
        self._secret = secret  # scrubbed from every frame read (see parse_scrubbed)
        self._closing = False
        self.session_id = created.session_id
        self.output_rate = created.output_rate
        # The effective settings, from session.updated (None: the server did not say).
        self.updated: ev.SessionUpdated | None = None
        self.opened_at = time.monotonic()
        self.close_code: int | None = None
        self._send_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"RealtimeSession({self.session_id!r}, closed={self.closed})"

    @classmethod
    async def open(
        cls,
        http: aiohttp.ClientSession,
        *,
        endpoint: str,
        api_key: ApiKey,
        setup: Mapping[str, Any],
        provider: Provider = YANDEX,
        auth: str = "api_key",
        connect_timeout_s: float = 10.0,
        heartbeat_s: float = 10.0,
        trace: TraceWriter | None = None,
    ) -> RealtimeSession:
        """Connect, wait for ``session.created``, send ``setup`` (the ``session.update``) and
        wait for ``session.updated``. ``heartbeat_s`` 0 turns the WebSocket pings off.

        Raises :class:`AuthRefused`, :class:`SetupRefused` or :class:`ConnectFailed`; never
        anything else. With a ``trace``, every frame both ways and the connect/handshake/close
        facts are written to it.
        """
        if trace is not None:
            trace.protect(api_key.reveal())
            trace.note("connect", **endpoint_facts(endpoint))
        try:
            async with asyncio.timeout(connect_timeout_s):
                ws = await http.ws_connect(
                    endpoint,
                    headers={"Authorization": provider.auth_header(auth, api_key.reveal())},
                    heartbeat=heartbeat_s or None,
                    max_msg_size=MAX_FRAME_BYTES,
                    autoping=True,
                )
        except aiohttp.WSServerHandshakeError as exc:
            if trace is not None:
                trace.note(
                    "handshake",
                    status=exc.status,
                    reason=describe_exception(exc),
                    message=exc.message,
                    headers=response_headers(exc.headers),
                )
            if exc.status in (401, 403):
                raise AuthRefused(f"the API key was refused (HTTP {exc.status})") from None
            raise ConnectFailed(describe_exception(exc), kind=f"http-{exc.status}") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            if trace is not None:
                trace.note("connect_failed", reason=describe_exception(exc))
            raise ConnectFailed(describe_exception(exc), kind=type(exc).__name__) from None
        if trace is not None:
            trace.note("handshake", status=101)
        try:
            async with asyncio.timeout(connect_timeout_s):
                created = await cls._await_created(ws, trace, api_key.reveal())
            session = cls(ws, created, trace, api_key.reveal())
            await session.send(setup)
        except TimeoutError:
            await ws.close()
            _note_closed(trace, ws, "client")
            raise ConnectFailed(
                f"no session.created within {connect_timeout_s:g} s", kind="no-session"
            ) from None
        except BaseException:
            by = "server" if ws.closed else "client"
            await ws.close()
            _note_closed(trace, ws, by)
            raise
        try:
            async with asyncio.timeout(connect_timeout_s):
                session.updated = await session._await_updated(setup.get("event_id"))
        except TimeoutError:
            # The reference lists session.updated, but a server that never sends it must not
            # keep the box offline for ever: carry on with what we asked for, and say so.
            log.warning(
                "no session.updated within %g s; assuming the session took", connect_timeout_s
            )
        except BaseException:
            await session.close()
            raise
        if session.updated is not None and session.updated.output_rate:
            session.output_rate = session.updated.output_rate
        return session

    async def _await_updated(self, setup_id: str | None) -> ev.SessionUpdated:
        """Until ``session.updated``; an error before it (the only thing we sent was the
        update), or a close, is a refusal of our settings."""
        try:
            async for msg in self._ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                if self._trace is not None:
                    self._trace.received(msg.data)
                event = parse_scrubbed(msg.data, self._secret)
                if isinstance(event, ev.SessionUpdated):
                    return event
                if isinstance(event, ev.ServerError) and not event.is_harmless:
                    if event.is_auth_failure:
                        raise AuthRefused(f"the API key was refused ({event.kind})")
                    named = " (our session.update)" if event.client_event_id == setup_id else ""
                    what = event.message or event.kind or event.type
                    raise SetupRefused(f"the server refused the session settings{named}: {what}")
        except aiohttp.ClientError as exc:
            raise ConnectFailed(describe_exception(exc)) from None
        raise SetupRefused(
            f"the server closed the session before accepting its settings "
            f"(code {self._ws.close_code})"
        )

    @staticmethod
    async def _await_created(
        ws: aiohttp.ClientWebSocketResponse, trace: TraceWriter | None = None, secret: str = ""
    ) -> ev.SessionCreated:
        error: ev.ServerError | None = None
        try:
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                if trace is not None:
                    trace.received(msg.data)
                event = parse_scrubbed(msg.data, secret)
                if isinstance(event, ev.SessionCreated):
                    return event
                if isinstance(event, ev.ServerError):
                    error = event
                    if event.is_auth_failure:
                        raise AuthRefused(f"the API key was refused ({event.code})")
        except aiohttp.ClientError as exc:
            raise ConnectFailed(describe_exception(exc)) from None
        # Closed before the session existed. An error first means the server turned us away.
        if error is not None:
            raise AuthRefused(f"the server closed the session at once: {error.code or error.type}")
        raise ConnectFailed(f"closed before session.created (code {ws.close_code})", kind="early")

    @property
    def closed(self) -> bool:
        return self._ws.closed

    @property
    def age_s(self) -> float:
        return time.monotonic() - self.opened_at

    async def send(self, event: Mapping[str, Any]) -> None:
        """Send one client event; :class:`NotConnected` if the link is gone."""
        await self._send_text(encode(event))
        if self._trace is not None:
            self._trace.sent(event)

    async def send_audio(self, pcm16: bytes) -> None:
        """``send(input_audio_append(pcm16))``, the same frame, built without the dict."""
        await self._send_text(append_frame(pcm16))
        if self._trace is not None:
            self._trace.sent(input_audio_append(pcm16))

    async def _send_text(self, text: str) -> None:
        if self._ws.closed:
            raise NotConnected("the Realtime session is closed")
        try:
            async with self._send_lock:
                await self._ws.send_str(text)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            raise NotConnected(f"the Realtime session was lost: {type(exc).__name__}") from None

    async def events(self) -> AsyncIterator[ev.ServerEvent]:
        """Typed events until the link closes (by either side, or a missed heartbeat)."""
        try:
            async for msg in self._ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    if self._trace is not None:
                        self._trace.received(msg.data)
                    yield parse_scrubbed(msg.data, self._secret)
                elif msg.type is aiohttp.WSMsgType.BINARY:
                    if self._trace is not None:
                        self._trace.note("binary_frame", bytes=len(msg.data))
                    yield ev.Malformed(f"binary frame of {len(msg.data)} bytes")
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    log.debug("websocket error: %s", describe_exception(msg.data))
                    break
        except (aiohttp.ClientError, ConnectionError) as exc:
            log.debug("websocket read failed: %s", describe_exception(exc))
        finally:
            self.close_code = self._ws.close_code
        if not self._closing:  # the server (or the network) ended it; not close(), not cancel
            self._closing = True
            _note_closed(self._trace, self._ws, "server")

    async def close(self, code: int = aiohttp.WSCloseCode.OK) -> None:
        noted, self._closing = self._closing, True
        by = "server" if self._ws.closed else "client"  # already closed: not by us
        if not self._ws.closed:
            try:
                async with asyncio.timeout(2.0):
                    await self._ws.close(code=code)
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                pass
        self.close_code = self._ws.close_code
        if not noted:
            _note_closed(self._trace, self._ws, by, code)


def _note_closed(
    trace: TraceWriter | None,
    ws: aiohttp.ClientWebSocketResponse,
    by: str,
    code: int = aiohttp.WSCloseCode.OK,
) -> None:
    """The close, for the trace: ours with the code we sent, the server's with its code."""
    if trace is not None:
        trace.note("closed", code=int(code) if by == "client" else ws.close_code, by=by)
