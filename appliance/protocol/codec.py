"""JSON and base64 for the protocol's frames: orjson and pybase64 where they are installed, the
standard library otherwise. Pure: no I/O.

Every audio chunk crosses this module twice (PCM -> base64 -> JSON text up, the reverse down),
tens of times a second for as long as a conversation lasts: the C/SIMD libraries make that
about five times cheaper (bench/protocol.py). Both implementations give the same meaning:

- :func:`dumps`: compact JSON (no spaces), non-ASCII characters kept as they are. What orjson
  refuses (an integer past 64 bits, a key that is not a string) goes through the standard
  library instead, so a client event that encodes with one encodes with the other.
- :func:`loads`: raises ``ValueError`` (or ``RecursionError``) for anything that is not JSON.
  orjson is stricter on what is not JSON anyway (``NaN``, a lone surrogate escape): such a
  frame is malformed either way.
- :func:`b64encode`: standard alphabet, padded, ASCII ``str``.
- :func:`b64decode`: strict (standard alphabet, padding only where it belongs, no whitespace);
  raises ``ValueError`` (``binascii.Error`` mostly) otherwise.

:func:`use` switches between them (``"fast"``, ``"stdlib"``); the tests run both.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Callable
from typing import Any

try:
    import orjson
except ImportError:  # not installed (a platform without a wheel): the standard library
    orjson = None
try:
    import pybase64
except ImportError:
    pybase64 = None

_std_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_std_decoder = json.JSONDecoder()


def _std_dumps(obj: Any) -> str:
    return _std_encoder.encode(obj)


def _std_loads(text: str | bytes) -> Any:
    if not isinstance(text, str):
        text = bytes(text).decode("utf-8")
    return _std_decoder.decode(text)


def _std_b64encode(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _std_b64decode(text: str) -> bytes:
    padding = len(text) - len(text.rstrip("="))
    if padding > 2 or (padding and len(text) % 4):  # pybase64 refuses these; so do we
        raise binascii.Error("excess padding")
    return base64.b64decode(text, validate=True)


def _fast_dumps(obj: Any) -> str:
    try:
        return orjson.dumps(obj).decode("utf-8")
    except TypeError:  # orjson.JSONEncodeError: an int past 64 bits, a non-str key
        return _std_encoder.encode(obj)


dumps: Callable[[Any], str] = _std_dumps
loads: Callable[[str | bytes], Any] = _std_loads
b64encode: Callable[[bytes], str] = _std_b64encode
b64decode: Callable[[str], bytes] = _std_b64decode
NAME = ""
"""Which implementations run, e.g. ``orjson + pybase64`` (the benches print it)."""


def available() -> bool:
    """Whether both fast libraries are installed."""
    return orjson is not None and pybase64 is not None


def use(kind: str = "fast") -> str:
    """``"fast"``: orjson and pybase64, each where installed; ``"stdlib"``: json and base64.
    Returns :data:`NAME`."""
    global dumps, loads, b64encode, b64decode, NAME
    if kind not in ("fast", "stdlib"):
        raise ValueError(f"unknown codec {kind!r}")
    fast_json = kind == "fast" and orjson is not None
    fast_b64 = kind == "fast" and pybase64 is not None
    dumps = _fast_dumps if fast_json else _std_dumps
    loads = orjson.loads if fast_json else _std_loads
    b64encode = pybase64.b64encode_as_string if fast_b64 else _std_b64encode
    # partial, not a def: one Python frame less on every audio delta
    b64decode = functools.partial(pybase64.b64decode, validate=True) if fast_b64 else _std_b64decode
    NAME = f"{'orjson' if fast_json else 'json'} + {'pybase64' if fast_b64 else 'base64'}"
    return NAME


use("fast")
