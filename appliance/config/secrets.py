"""The API key: a value that never shows itself, and where it comes from.

The key is looked for, first found wins, in

1. ``$APPLIANCE_API_KEY`` (when not empty),
2. ``$CREDENTIALS_DIRECTORY/api-key``: the systemd credential (``LoadCredential=api-key:...``);
   an empty credential counts as "not given",
3. the file named by ``realtime.api_key_file``: unreadable or empty is an error,
4. ``realtime.api_key`` in the configuration file,
5. the file ``api-key`` beside the configuration file: where ``install.sh`` keeps it
   (``/etc/appliance/api-key``, root's alone), so ``sudo appliance ask`` and ``sudo appliance
   check`` find the key the service uses. One the caller may not read is skipped (the error
   then says whose it is).

Leading and trailing whitespace (the newline of a key file) is dropped; whitespace inside a
key is an error. No message produced here ever contains a key.
"""

from __future__ import annotations

import hmac
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

ENV_VAR = "APPLIANCE_API_KEY"
CREDENTIAL_NAME = "api-key"
MAX_KEY_FILE_BYTES = 4096  # a key is a few dozen characters; /dev/zero would never end


class ApiKey:
    """A secret string. ``reveal()`` is the only way to get the value back."""

    __slots__ = ("_secret",)

    def __init__(self, secret: str) -> None:
        if not isinstance(secret, str):
            raise TypeError("ApiKey needs a str")
        object.__setattr__(self, "_secret", secret)

    def reveal(self) -> str:
        return self._secret

    def __repr__(self) -> str:
        return "ApiKey('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return format("***", spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ApiKey):
            return NotImplemented
        return hmac.compare_digest(self._secret.encode(), other._secret.encode())

    def __hash__(self) -> int:
        return hash((ApiKey, self._secret))

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("ApiKey is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("ApiKey is immutable")

    def __reduce__(self) -> NoReturn:
        raise TypeError("an ApiKey cannot be pickled")

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError("an ApiKey cannot be pickled")

    def __copy__(self) -> ApiKey:
        return self

    def __deepcopy__(self, memo: object) -> ApiKey:
        return self


class KeySourceError(Exception):
    """A key source that is given but unusable.

    ``origin`` is ``"env"``, ``"credential"``, ``"api_key_file"`` or ``"api_key"``; for the
    last two the loader prefixes the message with the file:line of that setting.
    """

    def __init__(self, origin: str, message: str) -> None:
        super().__init__(message)
        self.origin = origin


def clean_key(text: str) -> str:
    """The key without surrounding whitespace ("" when there is none); ValueError if malformed."""
    key = text.strip()
    if any(c.isspace() for c in key):
        raise ValueError("the key contains whitespace (more than one line?)")
    return key


def os_reason(error: OSError) -> str:
    """``[Errno 2] No such file or directory``: the reason without the file name."""
    if error.errno is not None and error.strerror:
        return f"[Errno {error.errno}] {error.strerror}"
    return type(error).__name__


def read_capped(path: Path, limit: int) -> bytes:
    """A regular file's bytes; ValueError if it is larger than ``limit`` or not a regular
    file (a device such as /dev/zero, a FIFO that would block); OSError as open() raises it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except ValueError:  # a NUL in the path
        raise ValueError("bad path") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data


def _read_key(path: Path, origin: str, prefix: str) -> str:
    try:
        data = read_capped(path, MAX_KEY_FILE_BYTES)
    except OSError as e:
        if origin == "credential" and isinstance(e, FileNotFoundError):
            return ""
        raise KeySourceError(origin, f"{prefix}cannot read the key file: {os_reason(e)}") from None
    except ValueError as e:
        raise KeySourceError(origin, f"{prefix}cannot read the key file: {e}") from None
    try:
        return clean_key(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise KeySourceError(origin, f"{prefix}the key file is not valid UTF-8") from None
    except ValueError as e:
        raise KeySourceError(origin, f"{prefix}{e}") from None


def resolve_api_key(
    environ: Mapping[str, str],
    *,
    key_file: Path | None,
    inline: ApiKey | None,
    inline_source: str,
    installed: Path | None = None,
) -> tuple[ApiKey | None, str]:
    """The key and a description of where it came from, or ``(None, "")``.

    Without a key, ``"unreadable PATH"`` when the installed key file is there but not readable.
    """
    try:
        value = clean_key(environ.get(ENV_VAR, ""))
    except ValueError as e:
        raise KeySourceError("env", f"${ENV_VAR}: {e}") from None
    if value:
        return ApiKey(value), f"${ENV_VAR}"

    directory = environ.get("CREDENTIALS_DIRECTORY")
    if directory:
        path = Path(directory) / CREDENTIAL_NAME
        value = _read_key(path, "credential", f"{path}: ")
        if value:
            return ApiKey(value), f"credential {CREDENTIAL_NAME}"

    if key_file is not None:
        value = _read_key(key_file, "api_key_file", "")
        if not value:
            raise KeySourceError("api_key_file", "the key file is empty")
        return ApiKey(value), os.fspath(key_file)

    if inline is not None:
        return inline, inline_source

    if installed is not None:
        try:
            value = _read_key(installed, "installed", f"{installed}: ")
        except KeySourceError:
            if os.path.exists(installed):
                return None, f"unreadable {installed}"
            return None, ""
        if value:
            return ApiKey(value), os.fspath(installed)
    return None, ""
