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

# Plain strings, not pathlib: `appliance status` imports as little as it can.
SYSTEM_SOCKET = "/run/appliance/control.sock"
NAME = "control.sock"
PRIVATE_DIR_MODE = 0o700


def user_socket(environ: Mapping[str, str] | None = None, uid: int | None = None) -> str:
    """The socket of a daemon run by this user."""
    environ = os.environ if environ is None else environ
    uid = os.getuid() if uid is None else uid
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime) and os.path.isdir(runtime):
        return os.path.join(runtime, "appliance", NAME)
    return f"/tmp/appliance-{uid}/{NAME}"


def server_socket(environ: Mapping[str, str] | None = None, euid: int | None = None) -> str:
    """Where ``appliance run`` listens by default."""
    environ = os.environ if environ is None else environ
    euid = os.geteuid() if euid is None else euid
    runtime = environ.get("RUNTIME_DIRECTORY", "")  # systemd's RuntimeDirectory=, ":"-separated
    if runtime:
        return os.path.join(runtime.split(":")[0], NAME)
    # Root in a login session (XDG_RUNTIME_DIR=/run/user/0) runs a daemon of its own too;
    # `sudo appliance run` (sudo drops XDG_RUNTIME_DIR) takes the service's place.
    if euid == 0 and not environ.get("XDG_RUNTIME_DIR"):
        return SYSTEM_SOCKET
    return user_socket(environ, euid)


def client_sockets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Where the control commands look, in order: the caller's own daemon, then the service."""
    own = server_socket(
        {
            k: v
            for k, v in (os.environ if environ is None else environ).items()
            if k != "RUNTIME_DIRECTORY"
        }
    )
    return [own] if own == SYSTEM_SOCKET else [own, SYSTEM_SOCKET]


def prepare_private_dir(socket: str) -> None:
    """Make the per-user socket directory (mode 0700); OSError/ValueError if it is unsafe."""
    directory = os.path.dirname(socket)
    os.makedirs(directory, mode=PRIVATE_DIR_MODE, exist_ok=True)
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{directory} is not a directory")
    if st.st_uid != os.geteuid():
        raise ValueError(f"{directory} belongs to another user (uid {st.st_uid})")
    if stat.S_IMODE(st.st_mode) != PRIVATE_DIR_MODE:
        os.chmod(directory, PRIVATE_DIR_MODE)


# --- control.socket from config.yaml, without the schema ------------------------------------

# The loader's CANDIDATES (appliance/config/loader.py; a test keeps the two equal): importing
# the loader costs the YAML parser and the whole schema, four times what `status` needs.
CONFIG_CANDIDATES = ("/etc/appliance/config.yaml", "config.yaml")
UNSURE = object()  # the text is not plain enough to read here: ask the real loader
_PLAIN = frozenset("&*!|>{}[]%@`")


def configured_socket(text: str) -> str | object | None:
    """``control.socket`` of a config.yaml text: the path, None when unset, or :data:`UNSURE`.

    Only the plain block style the shipped config.yaml uses is read here; anything else
    (flow style, anchors, escapes, tabs, duplicate sections) is :data:`UNSURE`.
    """
    if "control" not in text:
        return None
    found: str | object | None = None
    sections = 0
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("control"):
            continue
        head = line[len("control") :].split("#", 1)[0].strip()
        if head != ":":
            if head.startswith(":") or not head:
                return UNSURE  # `control: {socket: ...}` or a key split over lines
            continue  # another key that starts with "control"
        sections += 1
        found = _socket_in(lines[i + 1 :])
    return UNSURE if sections > 1 else found


def _socket_in(section: list[str]) -> str | object | None:
    indent = None
    for line in section:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            break  # the next top-level key
        if "\t" in line:
            return UNSURE
        width = len(line) - len(line.lstrip(" "))
        indent = width if indent is None else indent
        key, sep, value = line.strip().partition(":")
        if width != indent or key.strip() != "socket":
            continue
        if not sep:
            return UNSURE
        return _scalar(value.strip())
    return None


def _scalar(value: str) -> str | object | None:
    if value[:1] in ("'", '"'):
        quote = value[0]
        end = value.find(quote, 1)
        rest = value[end + 1 :].strip() if end > 0 else "unterminated"
        if (rest and not rest.startswith("#")) or "\\" in value[:end] or quote * 2 in value:
            return UNSURE
        return value[1:end]
    value = value.split(" #", 1)[0].strip()
    if not value or value[0] in _PLAIN or value.startswith("#"):
        return UNSURE
    if value in ("~", "null", "Null", "NULL"):
        return None
    return value
