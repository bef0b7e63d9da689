"""sd_notify for a Type=notify service: READY, STATUS, RELOADING, STOPPING and the watchdog.

systemd passes the address of its notification socket in ``$NOTIFY_SOCKET`` (a path, or
``@name`` for an abstract socket) and, with ``WatchdogSec=``, the deadline in
``$WATCHDOG_USEC`` (plus ``$WATCHDOG_PID``, the process it is meant for). Every message is one
datagram of ``KEY=value`` lines.

The watchdog pings are sent by a coroutine of the daemon's own event loop, never by a thread:
if the loop hangs (a blocking call, a deadlock), the pings stop and systemd kills and restarts
the service, which is the whole point of the watchdog.

Nothing here raises: the daemon must not die because systemd's socket is gone or full, so a
failed send is logged at debug level and reported as ``False``. Without ``$NOTIFY_SOCKET``
(a terminal, a test) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger("appliance.service.notify")

try:  # libsystemd's own sd_notify, when systemd-python is installed (it is on the box).
    from systemd.daemon import notify as _sd_notify
except ImportError:  # pragma: no cover - depends on the environment
    _sd_notify = None

# A send to a wedged systemd must not hold the event loop for long.
_SEND_TIMEOUT_S = 1.0


def raw_notify(message: str, address: str) -> bool:
    """Send one sd_notify datagram to ``address`` without libsystemd.

    ``address`` is ``$NOTIFY_SOCKET``: an absolute path or ``@name`` (abstract namespace).
    Other forms (``vsock:``) are not used on the Pi and are refused. Raises ``OSError``.
    """
    if address.startswith("@"):
        target = "\0" + address[1:]
    elif address.startswith("/"):
        target = address
    else:
        raise OSError(f"unsupported NOTIFY_SOCKET address {address!r}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(_SEND_TIMEOUT_S)
        sock.connect(target)
        sock.sendall(message.encode("utf-8"))
    return True


def _one_line(text: str) -> str:
    """A value may not contain a newline: it would start a new KEY=value line."""
    return " ".join(str(text).splitlines())


class ServiceNotifier:
    """Talks to systemd through ``$NOTIFY_SOCKET``; every method is safe to call anywhere.

    ``environ`` defaults to the process environment, where libsystemd looks too. Given another
    mapping (tests), the datagrams go through :func:`raw_notify` to that mapping's
    ``NOTIFY_SOCKET``, since libsystemd cannot see it. ``sender`` replaces the transport
    altogether (``sender(message, address) -> bool``).
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        sender: Callable[[str, str], bool] | None = None,
    ) -> None:
        self._environ = os.environ if environ is None else environ
        if sender is not None:
            self._sender = sender
        elif environ is None and _sd_notify is not None:
            self._sender = self._libsystemd_send
        else:
            self._sender = raw_notify
        self.sent = 0  # datagrams sent successfully: handy in `appliance status` and tests

    # ---- the messages --------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """True when systemd listens (``$NOTIFY_SOCKET`` is set)."""
        return bool(self._environ.get("NOTIFY_SOCKET"))

    def ready(self, status: str | None = None) -> bool:
        """Startup (or a reload) is complete: config loaded, audio open, session up or retrying."""
        return self.notify("READY=1", status)

    def status(self, text: str) -> bool:
        """A one-line state for ``systemctl status`` ("idle, connected")."""
        return self.notify(None, text)

    def reloading(self, status: str | None = None) -> bool:
        """A reload (SIGHUP) has started; call :meth:`ready` when it is done.

        MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) match the reload to this
        message; older systemd ignores the field.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(f"RELOADING=1\nMONOTONIC_USEC={usec}", status)

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun (SIGTERM): systemd shows "deactivating" instead of a hang."""
        return self.notify("STOPPING=1", status)

    def watchdog(self) -> bool:
        """One keep-alive ping. :meth:`run_watchdog` sends them on schedule."""
        return self.notify("WATCHDOG=1")

    def notify(self, fields: str | None, status: str | None = None) -> bool:
        """Send ``fields`` (``KEY=value`` lines) and an optional STATUS in one datagram."""
        address = self._environ.get("NOTIFY_SOCKET")
        if not address:
            return False
        lines = [fields] if fields else []
        if status is not None:
            lines.append(f"STATUS={_one_line(status)}")
        if not lines:
            return False
        message = "\n".join(lines)
        try:
            ok = bool(self._sender(message, address))
        except Exception as exc:  # never let systemd's socket take the daemon down
            log.debug("sd_notify %r failed: %s", message.split("\n", 1)[0], exc)
            return False
        if ok:
            self.sent += 1
        else:
            log.debug("sd_notify %r was not sent", message.split("\n", 1)[0])
        return ok

    @staticmethod
    def _libsystemd_send(message: str, address: str) -> bool:
        # libsystemd reads $NOTIFY_SOCKET itself; ``address`` only told us it is set.
        return bool(_sd_notify(message))

    # ---- the watchdog ----------------------------------------------------------------------

    @property
    def watchdog_interval_s(self) -> float | None:
        """Seconds between pings (half of ``$WATCHDOG_USEC``), or None when there is no watchdog.

        As sd_watchdog_enabled(3): ``$WATCHDOG_PID``, when set, must be our own pid, so a child
        that inherited the environment does not ping for us.
        """
        raw_usec = self._environ.get("WATCHDOG_USEC")
        if not raw_usec:
            return None
        try:
            usec = int(raw_usec)
        except ValueError:
            log.debug("ignoring WATCHDOG_USEC=%r: not a number", raw_usec)
            return None
        if usec <= 0:
            return None
        raw_pid = self._environ.get("WATCHDOG_PID")
        if raw_pid:
            try:
                if int(raw_pid) != os.getpid():
                    return None
            except ValueError:
                log.debug("ignoring WATCHDOG_PID=%r: not a number", raw_pid)
                return None
        return usec / 2 / 1_000_000

    async def run_watchdog(self) -> None:
        """Ping every :attr:`watchdog_interval_s` for as long as the event loop runs.

        Run it as a task of the daemon's loop and cancel it at shutdown. Returns at once when
        there is no watchdog. The schedule is kept on the loop's clock, so pings do not drift;
        after the loop was blocked past a ping, the late ping goes out as soon as the loop runs
        again and the schedule restarts from there (no burst of catch-up pings).
        """
        interval = self.watchdog_interval_s
        if interval is None or not self.enabled:
            return
        loop = asyncio.get_running_loop()
        log.debug("watchdog: pinging every %.3f s", interval)
        deadline = loop.time()
        while True:
            self.watchdog()
            deadline += interval
            now = loop.time()
            if deadline <= now:
                deadline = now + interval
            await asyncio.sleep(deadline - now)
