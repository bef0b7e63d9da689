"""The control socket server: the daemon's local door for SSH, Home Assistant and tests.

It only moves lines: :mod:`appliance.control.protocol` decides what a line means and the
daemon's :class:`ControlHandler` decides what a command does. Anything that connects is
untrusted in the small (the socket is mode 0660, group appliance), so a client cannot make it
hold unbounded memory (line limit), linger forever (idle timeout: only requests count, not
blank lines), stall on a reply it never reads (write timeout), crowd out others (client limit;
at the limit a newcomer takes the slot of the client idle the longest, so a request always gets
in unless every slot is running one) or take the daemon down (every failure becomes an error
reply or a closed connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from appliance.control import protocol
from appliance.control.protocol import ControlError, Request
from appliance.logs import LogThrottle

log = logging.getLogger(__name__)

SOCKET_MODE = 0o660
DIR_MODE = 0o755
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes, NUL included


@dataclass(eq=False)
class _Client:
    """One connection: when it last sent a request, and whether one is running now."""

    task: asyncio.Task[None]
    writer: asyncio.StreamWriter
    last_request: float = field(default_factory=time.monotonic)
    running: bool = False  # a command runs (a talk may take minutes): never evicted


class ControlHandler(Protocol):
    """What the daemon does for each command.

    A method may raise :class:`ControlError` to refuse with a message for the user ("not
    connected"); any other exception is a bug, answered ``internal error: <ExcType>``.
    """

    async def press(self) -> None: ...

    async def release(self) -> None: ...

    async def talk(self, seconds: float) -> dict[str, Any]:
        """Press, wait ``seconds``, release, wait for the turn's end; the turn's summary."""
        ...

    def status(self) -> dict[str, Any]: ...


class ControlServer:
    """Serves :mod:`~appliance.control.protocol` on a Unix socket at ``path``.

    ``async with ControlServer(path, handler):`` or ``await start()`` ... ``await close()``.
    A ``talk`` whose client hangs up still runs to its end (the button must not stay
    pressed); only ``close()`` cancels requests in progress.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        handler: ControlHandler,
        *,
        idle_timeout: float = 30.0,
        max_clients: int = 16,
        write_timeout: float = 2.0,
    ) -> None:
        self.path = Path(path)
        self.handler = handler
        self.idle_timeout = idle_timeout
        self.max_clients = max_clients
        self.write_timeout = write_timeout
        self._server: asyncio.AbstractServer | None = None
        self._clients: dict[asyncio.Task[None], _Client] = {}
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of our socket file
        self._throttle = LogThrottle()  # a script hammering the socket must not flood the journal

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Listen; ControlError (one line) if the path is unusable or another daemon owns it."""
        if len(os.fsencode(self.path)) > _SUN_PATH_MAX:
            raise ControlError(
                f"control socket path {self.path} is too long (the limit is {_SUN_PATH_MAX} bytes)"
            )
        try:
            self._make_parent()
            await self._clear_stale()
            # The limit makes readuntil() refuse a longer line instead of buffering it.
            self._server = await asyncio.start_unix_server(
                self._accept, path=self.path, limit=protocol.MAX_LINE + 1
            )
            os.chmod(self.path, SOCKET_MODE)  # bind() honoured the umask; make it exact
            st = os.stat(self.path)
        except OSError as exc:
            await self.close()
            raise ControlError(
                f"cannot listen on control socket {self.path}: {_reason(exc)}"
            ) from None
        self._identity = (st.st_dev, st.st_ino)
        log.info("control socket listening on %s", self.path)

    async def close(self) -> None:
        """Stop listening, end every connection (requests in progress are cancelled), unlink."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        clients = list(self._clients)
        for task in clients:
            task.cancel()
        if clients:
            await asyncio.gather(*clients, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        if self._identity is not None:
            # Only our own file: a daemon started after us may have put its socket there.
            with contextlib.suppress(OSError):
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == self._identity:
                    os.unlink(self.path)
            self._identity = None

    def _make_parent(self) -> None:
        parent = self.path.parent
        if not parent.is_dir():
            parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            os.chmod(parent, DIR_MODE)  # mkdir's mode is masked by the umask

    async def _clear_stale(self) -> None:
        """Remove a socket file left by a daemon that died; refuse to steal a live one."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError(f"{self.path} exists and is not a socket; remove it")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_unix_connection(self.path), 2.0)
        except (ConnectionRefusedError, FileNotFoundError):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            log.info("removed the stale control socket %s", self.path)
            return
        except TimeoutError:  # a listener too busy to accept is still a listener
            pass
        else:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        raise ControlError(
            f"another appliance is already running (control socket {self.path} answers)"
        )

    # --- connections ------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._clients) >= self.max_clients and not self._evict_one():
            self._throttle.log(
                log,
                logging.WARNING,
                "busy",
                "control: refused a client, %d connected",
                len(self._clients),
            )
            writer.write(protocol.encode(protocol.error(self._busy_message())))
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        client = _Client(task, writer)
        self._clients[task] = client
        try:
            await self._serve(reader, writer, client)
        except asyncio.CancelledError:
            pass  # close(): the connection ends below
        except ConnectionError as exc:  # the peer reset or left: nothing to debug
            log.debug("control: connection ended: %s", _reason(exc))
        except Exception as exc:  # a broken peer; never an unhandled task exception
            log.debug("control: connection ended: %s", _reason(exc), exc_info=True)
        finally:
            self._clients.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    def _evict_one(self) -> bool:
        """Make room for a newcomer: drop the client whose last request is the oldest and
        that runs none now (silent, typing blank lines, or not reading its replies)."""
        idle = [c for c in self._clients.values() if not c.running]
        if not idle:
            return False  # every slot runs a command: the newcomer is refused
        oldest = min(idle, key=lambda c: c.last_request)
        del self._clients[oldest.task]
        oldest.writer.transport.abort()  # a peer that reads nothing gets no goodbye line
        oldest.task.cancel()
        self._throttle.log(
            log, logging.WARNING, "evict", "control: all slots taken; dropped the longest idle"
        )
        return True

    def _busy_message(self) -> str:
        return f"too many control clients (at most {self.max_clients}); try again later"

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: _Client
    ) -> None:
        while True:
            # Only a request resets the idle timer: blank lines do not keep a slot.
            left = client.last_request + self.idle_timeout - time.monotonic()
            try:
                line = await asyncio.wait_for(reader.readuntil(b"\n"), max(0.0, left))
            except TimeoutError:
                await self._send(
                    writer, protocol.error(f"idle for {self.idle_timeout:g} s; goodbye")
                )
                return
            except asyncio.LimitOverrunError:
                await self._send(
                    writer,
                    protocol.error(f"request line too long (over {protocol.MAX_LINE} bytes)"),
                )
                return
            except asyncio.IncompleteReadError as exc:  # EOF: a last line without "\n" counts
                if exc.partial.strip():
                    await self._send(writer, await self._request(client, exc.partial))
                return
            if line.strip():  # blank lines (a human typing in socat) get no reply
                await self._send(writer, await self._request(client, line))

    async def _request(self, client: _Client, line: bytes) -> dict[str, Any]:
        client.last_request = time.monotonic()
        client.running = True
        try:
            return await self._reply(line)
        finally:
            client.running = False
            client.last_request = time.monotonic()

    async def _send(self, writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
        """Write one reply; a client that already left is not an error, one that does not
        read its replies within ``write_timeout`` is dropped (TimeoutError ends the
        connection)."""
        if writer.is_closing():
            return
        writer.write(protocol.encode(reply))
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(writer.drain(), self.write_timeout)

    async def _reply(self, line: bytes) -> dict[str, Any]:
        request = protocol.parse_request(line.rstrip(b"\r\n"))
        if isinstance(request, dict):
            log.debug("control: bad request: %s", request["error"])
            return request
        log.debug("control: %s", request)
        try:
            return await self._dispatch(request)
        except ControlError as exc:
            return protocol.error(str(exc), exc.code, **exc.fields)
        except Exception as exc:
            self._throttle.log(
                log,
                logging.WARNING,
                f"failed:{request.cmd}",
                "control: %s failed: %s: %s",
                request.cmd,
                type(exc).__name__,
                protocol.one_line(str(exc)),
            )
            log.debug("control: %s traceback", request.cmd, exc_info=True)
            return protocol.error(f"internal error: {type(exc).__name__}")

    async def _dispatch(self, request: Request) -> dict[str, Any]:
        if request.cmd == "press":
            await self.handler.press()
            return protocol.ok()
        if request.cmd == "release":
            await self.handler.release()
            return protocol.ok()
        if request.cmd == "talk":
            assert request.seconds is not None
            return protocol.ok(turn=await self.handler.talk(request.seconds))
        return protocol.ok(status=self.handler.status())


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
