"""The daemon process itself: no core dumps (they would hold the API key), one instance.

- :func:`make_undumpable`: ``prctl(PR_SET_DUMPABLE, 0)``: no core file, no ptrace by the same
  user, /proc/PID/mem and environ closed to them. The unit adds ``LimitCORE=0``.
- :func:`claim_instance`: a second ``appliance run`` must find the first before it opens the
  audio devices (it would take the microphone from the running box). A lock file beside the
  control socket (``<socket>.lock``, flock: released by the kernel when the process dies, so
  never stale) says so; the socket itself is probed as well, for a daemon of an older version.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import socket
from pathlib import Path

from appliance.control.protocol import ControlError

PR_SET_DUMPABLE, PR_GET_DUMPABLE = 4, 3
_DIR_MODE = 0o755


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def make_undumpable() -> bool:
    """Mark this process non-dumpable; False where the kernel refused (not Linux)."""
    try:
        return _libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return False


def release_free_memory() -> bool:
    """Hand the C heap's free pages back to the kernel (glibc's ``malloc_trim``). What the
    start-up allocated and freed again (the imports' and the config's passing objects) stays
    in the process's RSS otherwise, for as long as the box runs: about a megabyte. False where
    the C library has no such call (not glibc)."""
    try:
        return bool(_libc().malloc_trim(0))
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return False


def dumpable() -> bool | None:
    """Whether this process may dump core (None where it cannot be told)."""
    try:
        return bool(_libc().prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return None


class InstanceLock:
    """Held while the daemon runs; :meth:`release` (or the process's end) frees it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # the lock goes with the descriptor; the file stays (harmless)


def _answers(path: Path) -> bool:
    """A daemon listens on the control socket ``path`` (a connect succeeds)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(os.fspath(path))
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            return False
        except OSError:
            return False  # not a socket, or unreachable: ControlServer says why later
        return True


def claim_instance(control_socket: str | os.PathLike[str]) -> InstanceLock:
    """Make sure no other ``appliance run`` uses this control socket; ControlError (one line)
    if one does. Call before opening any device."""
    path = Path(control_socket)
    lock_path = path.with_name(path.name + ".lock")
    running = ControlError(
        f"another appliance is already running (control socket {path}); stop it first"
    )
    try:
        if not path.parent.is_dir():
            path.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ControlError(f"cannot create {lock_path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise running from None
    if _answers(path):
        with contextlib.suppress(OSError):
            os.close(fd)
        raise running
    return InstanceLock(lock_path, fd)
