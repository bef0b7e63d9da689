"""The model's arguments for a webhook tool, checked against the owner's JSON schema.

The model chooses the arguments and the owner the schema, and both reach the event loop, so
the check must cost little whatever either holds (issue 13, bench/schema_regex.py):

- Patterns (``pattern``, ``patternProperties``, ``propertyNames``...) run on a linear-time
  engine: ``jsonschema-rs`` with Rust's ``regex`` crate, not Python's backtracking ``re``
  (``^(a+)+$`` against 29 ``a``s and a ``!`` took Python's jsonschema tens of seconds and
  took this 4 microseconds). A pattern the engine cannot run in linear time (lookaround,
  backreferences) or that compiles larger than :data:`PATTERN_SIZE_LIMIT` is refused when the
  config is loaded (:func:`schema_problem`), so it never reaches a call.
- Linear is not free: time grows with the pattern's size times the text's length, so the
  arguments are capped at :data:`MAX_ARGUMENT_BYTES` (the measured worst case at both caps is a
  few milliseconds).
- Where the schema says ``additionalProperties: false``, keys outside its ``properties`` (and
  ``patternProperties``) are dropped before the check: they are never forwarded, and a model
  that invents one still gets its call done.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: 5 MB of RSS a box without webhooks does not need
    import jsonschema_rs

log = logging.getLogger(__name__)

# Compiled size of one pattern. 32 KB keeps the slowest accepted pattern (measured: (a{10}){80})
# at ~5 ms over the largest argument text; ordinary patterns (an e-mail shape, \w{1,64},
# a date) compile to a few KB.
PATTERN_SIZE_LIMIT = 32 * 1024
MAX_ARGUMENT_BYTES = 64 * 1024  # of the arguments as JSON; a spoken request is far smaller
_MESSAGE_LIMIT = 300


def _options() -> jsonschema_rs.RegexOptions:
    import jsonschema_rs

    return jsonschema_rs.RegexOptions(size_limit=PATTERN_SIZE_LIMIT)


def _where(path: Any) -> str:
    return "/".join(str(p) for p in path)


def schema_problem(schema: Mapping[str, Any]) -> str | None:
    """Why ``schema`` cannot be used to check arguments safely, or None.

    Called when the config is loaded (after jsonschema's own check of the schema's shape).
    """
    import jsonschema_rs

    try:
        jsonschema_rs.validator_for(dict(schema), pattern_options=_options())
    except jsonschema_rs.ValidationError as exc:
        where = _where(exc.instance_path) or "the schema"
        if where.rsplit("/", 1)[-1] == "pattern" or "/patternProperties/" in f"/{where}/":
            return (
                f"the pattern at {where} cannot be checked in linear time (no lookaround or "
                f"backreferences, at most {PATTERN_SIZE_LIMIT // 1024} KB compiled)"
            )
        return f"not a usable JSON schema at {where}: {_cut(exc.message)}"
    except (ValueError, TypeError) as exc:  # a schema jsonschema-rs refuses otherwise
        return f"not a usable JSON schema: {_cut(str(exc))}"
    return None


def _cut(text: str) -> str:
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT] + "…"


class ArgumentChecker:
    """``check(arguments)``: the arguments to forward, or ``ValueError(message)``."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        import jsonschema_rs

        self.schema = dict(schema)
        self._validator = jsonschema_rs.validator_for(self.schema, pattern_options=_options())

    def check(self, arguments: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(arguments, ensure_ascii=False).encode())
        if size > MAX_ARGUMENT_BYTES:
            raise ValueError(
                f"the arguments are too large ({size} bytes, at most {MAX_ARGUMENT_BYTES})"
            )
        dropped: list[str] = []
        arguments = _strip(self.schema, arguments, "", dropped)
        if dropped:
            log.info("dropped %d argument(s) outside the schema", len(dropped))
        for error in self._validator.iter_errors(arguments):
            where = _where(error.instance_path)
            message = _cut(error.message)
            raise ValueError(f"{message} at {where}" if where else message)
        return arguments


def _strip(schema: Any, value: Any, where: str, dropped: list[str]) -> Any:
    """``value`` without the keys a closed object schema (``additionalProperties: false``)
    does not name; nested plain ``properties`` are followed."""
    if not isinstance(schema, Mapping) or not isinstance(value, dict):
        return value
    properties = schema.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    kept: dict[str, Any] = {}
    closed = schema.get("additionalProperties") is False
    pattern_props = schema.get("patternProperties")
    for key, item in value.items():
        if key in properties:
            kept[key] = _strip(properties[key], item, f"{where}/{key}", dropped)
        elif closed and not (pattern_props and _matches_any(pattern_props, key)):
            dropped.append(f"{where}/{key}")
        else:
            kept[key] = item
    return kept


def _matches_any(patterns: Any, key: str) -> bool:
    """Whether ``key`` matches one of ``patternProperties`` (on the linear engine)."""
    if not isinstance(patterns, Mapping):
        return False
    import jsonschema_rs

    probe = {"type": "object", "patternProperties": {p: False for p in patterns}}
    try:
        return not jsonschema_rs.validator_for(probe, pattern_options=_options()).is_valid(
            {key: None}
        )
    except (jsonschema_rs.ValidationError, ValueError):
        return False
