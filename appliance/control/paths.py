"""Where the control socket is when ``control.socket`` is not set: the same answer for both ends.

- The service (systemd's ``RuntimeDirectory=appliance``, or root outside a login session, as
  under sudo): ``/run/appliance/control.sock``.
- Anyone else (``appliance run`` on a laptop): ``$XDG_RUNTIME_DIR/appliance/control.sock``, or,
  without a runtime directory, ``/tmp/appliance-<uid>/control.sock``. The directory is the
  user's own, mode 0700: nobody else may press the button.

The client looks for the caller's own socket first, then the service's. Only ``os`` is
imported: ``appliance status`` must start fast.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

SYSTEM_SOCKET = Path("/run/appliance/control.sock")
NAME = "control.sock"
PRIVATE_DIR_MODE = 0o700


def user_socket(environ: Mapping[str, str] | None = None, uid: int | None = None) -> Path:
    """The socket of a daemon run by this user."""
    environ = os.environ if environ is None else environ
    uid = os.getuid() if uid is None else uid
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime) and os.path.isdir(runtime):
        return Path(runtime) / "appliance" / NAME
    return Path(f"/tmp/appliance-{uid}") / NAME


def server_socket(environ: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """Where ``appliance run`` listens by default."""
    environ = os.environ if environ is None else environ
    euid = os.geteuid() if euid is None else euid
    runtime = environ.get("RUNTIME_DIRECTORY", "")  # systemd's RuntimeDirectory=, ":"-separated
    if runtime:
        return Path(runtime.split(":")[0]) / NAME
    # Root in a login session (XDG_RUNTIME_DIR=/run/user/0) runs a daemon of its own too;
    # `sudo appliance run` (sudo drops XDG_RUNTIME_DIR) takes the service's place.
    if euid == 0 and not environ.get("XDG_RUNTIME_DIR"):
        return SYSTEM_SOCKET
    return user_socket(environ, euid)


def client_sockets(environ: Mapping[str, str] | None = None) -> list[Path]:
    """Where the control commands look, in order: the caller's own daemon, then the service."""
    own = server_socket(
        {
            k: v
            for k, v in (os.environ if environ is None else environ).items()
            if k != "RUNTIME_DIRECTORY"
        }
    )
    return [own] if own == SYSTEM_SOCKET else [own, SYSTEM_SOCKET]


def prepare_private_dir(socket: Path) -> None:
    """Make the per-user socket directory (mode 0700); OSError/ValueError if it is unsafe."""
    directory = socket.parent
    directory.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{directory} is not a directory")
    if st.st_uid != os.geteuid():
        raise ValueError(f"{directory} belongs to another user (uid {st.st_uid})")
    if stat.S_IMODE(st.st_mode) != PRIVATE_DIR_MODE:
        os.chmod(directory, PRIVATE_DIR_MODE)
