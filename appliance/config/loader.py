"""Find config.yaml, parse it keeping line numbers, validate it against the schema.

The YAML is composed (``yaml.compose``, safe) into nodes, which know their line, and the
node tree is walked alongside the schema dataclasses (:mod:`appliance.config.schema`): each
key is looked up among the fields of its section, each value converted by the field's type
hint and checked against its metadata. The walk is generic: a new section is a new
dataclass and a field on Config, nothing here. Every problem is one ConfigError line,
``<file>:<line>: <dotted.key>: <message>``; a secret value is never part of a message.

Hostile files are refused before anything is built from them (issue 13): nesting deeper than
:data:`MAX_DEPTH` (Python's recursion would end in a RecursionError), aliases that refer to
themselves or that expand past :data:`MAX_EXPANDED_NODES` values (a "billion laughs" under a
webhook's ``parameters`` would be expanded when the session opens), and files larger than
:data:`MAX_FILE_BYTES` (``--config /dev/zero``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent, CollectionStartEvent
from yaml.nodes import CollectionNode, MappingNode, Node, ScalarNode, SequenceNode

from appliance.config.schema import (
    FOLDER_HINT,
    Config,
    ConfigError,
    folder_id_problem,
    is_section,
    iter_settings,
    settings_of,
    show,
    unwrap_optional,
)
from appliance.config.secrets import (
    CREDENTIAL_NAME,
    ApiKey,
    KeySourceError,
    clean_key,
    os_reason,
    read_capped,
    resolve_api_key,
)
from appliance.protocol.providers import PROVIDERS

# Looked for in this order when no --config is given.
CANDIDATES: tuple[Path, ...] = (Path("/etc/appliance/config.yaml"), Path("config.yaml"))

_EXPECTED = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    ApiKey: "a string",
}
_NULL_TAG = "tag:yaml.org,2002:null"

MAX_FILE_BYTES = 1024 * 1024  # a config file is a few KB
MAX_DEPTH = 64  # nested mappings and lists; the deepest real schema is a handful
MAX_EXPANDED_NODES = 10_000  # values once every alias is expanded; a full config has ~300


class _Refused(Exception):
    """A hostile structure, found while composing: ``line`` and the message."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses deep nesting as it composes and notes each alias's
    line (the composer resolves an alias to its anchor's node and forgets where it was)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0
        self.alias_lines: dict[int, int] = {}  # id(anchored node) -> line of its first alias

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(AliasEvent):
            line = self.peek_event().start_mark.line + 1
            node = super().compose_node(parent, index)
            self.alias_lines.setdefault(id(node), line)
            return node
        if not self.check_event(CollectionStartEvent):
            return super().compose_node(parent, index)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            line = self.peek_event().start_mark.line + 1
            raise _Refused(line, f"nested deeper than {MAX_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _check_aliases(root: Node, alias_lines: dict[int, int]) -> None:
    """Refuse an alias inside its own anchor, and aliases that expand too far: the size of
    the expanded tree is counted on the shared nodes, without expanding it."""
    if not alias_lines:
        return
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    # Iterative post-order walk: the tree may be as deep as MAX_DEPTH, aliases deeper still.
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            sizes[key] = total
            if total > MAX_EXPANDED_NODES:
                line = min(alias_lines.values())
                raise _Refused(
                    line,
                    f"YAML aliases expand to more than {MAX_EXPANDED_NODES} values; "
                    "write the values out instead",
                )
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            line = alias_lines.get(key, _line(node))
            raise _Refused(line, "a YAML alias refers to its own anchor (a loop)")
        open_nodes.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_nodes:
                raise _Refused(
                    alias_lines.get(id(child), _line(child)),
                    "a YAML alias refers to its own anchor (a loop)",
                )
            if id(child) not in sizes:
                stack.append((child, False))


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, CollectionNode):
        return list(node.value)
    return []


def find_config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """The explicit path if given, else the first of CANDIDATES that exists."""
    if explicit is not None:
        return Path(explicit)
    for candidate in CANDIDATES:
        if candidate.exists():
            return candidate
    names = [str(c) if c.is_absolute() else f"./{c}" for c in CANDIDATES]
    looked = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
    raise ConfigError(f"no configuration file: looked for {looked}; pass --config PATH")


def load_config(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    resolve_key: bool = True,
) -> Config:
    """Read, validate and build the configuration; resolve the API key (a missing key is fine).

    ``resolve_key=False`` leaves the key alone: the control commands need only the socket, and
    must work for a user who cannot read the key file.
    """
    environ = os.environ if environ is None else environ
    path = Path(path)
    name = str(path)
    try:
        data = read_capped(path, MAX_FILE_BYTES)
    except OSError as e:
        raise ConfigError(f"{name}: cannot read: {os_reason(e)}") from None
    except ValueError as e:  # too large, or not a regular file
        raise ConfigError(f"{name}: cannot read: {e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{name}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x})") from None

    config, lines = parse(Config, text, name)
    rt = config.realtime

    def where(key: str) -> str:
        """The file and line of ``key``, else of its nearest section that was given."""
        while key and key not in lines:
            key = key.rpartition(".")[0]
        return f"{name}:{lines.get(key, 1)}"

    check_provider(config, where, given=lines.__contains__)
    if not resolve_key:
        return dataclasses.replace(
            config, realtime=dataclasses.replace(rt, api_key=None), path=path
        )
    key_file = None if rt.api_key_file is None else _beside(path, rt.api_key_file)
    try:
        key, source = resolve_api_key(
            environ,
            key_file=key_file,
            inline=rt.api_key,
            inline_source=where("realtime.api_key"),
            installed=path.parent / CREDENTIAL_NAME,
        )
    except KeySourceError as e:
        if e.origin in ("api_key_file", "api_key"):
            raise ConfigError(
                f"{where('realtime.' + e.origin)}: realtime.{e.origin}: {e}"
            ) from None
        raise ConfigError(str(e)) from None
    rt = dataclasses.replace(rt, api_key=key, api_key_source=source)
    if rt.trace_file is not None:
        rt = dataclasses.replace(rt, trace_file=str(_beside(path, rt.trace_file)))
    return dataclasses.replace(config, realtime=rt, path=path)


def check_provider(
    config: Config, where: Callable[[str], str], given: Callable[[str], bool] = lambda _: True
) -> None:
    """What the chosen provider refuses, as config errors naming the key and its line."""
    rt = config.realtime
    spec = rt.spec

    def refuse(key: str, message: str) -> ConfigError:
        return ConfigError(f"{where(key)}: {key}: {message}")

    if spec.model_in_folder:
        problem = folder_id_problem(rt.folder_id)
        if problem and not given("realtime.folder_id"):
            problem = f"missing; {FOLDER_HINT}"
        if problem:
            raise refuse("realtime.folder_id", problem)
    if rt.auth not in spec.auth_kinds:
        raise refuse("realtime.auth", f"{rt.provider} takes {' or '.join(spec.auth_kinds)}")
    if rt.input_rate not in spec.input_rates:
        rates = " or ".join(map(str, spec.input_rates))
        raise refuse("realtime.input_rate", f"{rt.provider} takes {rates} Hz input only")
    if rt.output_rate not in spec.output_rates:
        rates = " or ".join(map(str, spec.output_rates))
        raise refuse("realtime.output_rate", f"{rt.provider} answers at {rates} Hz only")
    if not spec.server_tools:
        if config.tools.file_search.index_id:
            key = "tools.file_search.index_id"
            raise refuse(key, f"Yandex's file search needs provider yandex, not {rt.provider}")
        if config.tools.web_search:
            key = "tools.web_search"
            raise refuse(key, f"Yandex's web search needs provider yandex, not {rt.provider}")


def provider_warnings(config: Config) -> list[str]:
    """Lines to log once at start: settings that load but will not work as hoped."""
    rt = config.realtime
    warnings = []
    for spec in PROVIDERS.values():
        if spec.is_retired(rt.url):
            warnings.append(
                f"realtime.url {rt.url} is no longer served by {spec.name} (retired); "
                f"remove the line to use {spec.url}"
            )
    if rt.voice_role and not rt.spec.voice_role:
        warnings.append(f"realtime.voice_role is not used by {rt.provider}")
    return warnings


def _beside(config_path: Path, value: str) -> Path:
    """A path setting: ``~`` expanded, and a relative path taken relative to the config file."""
    result = Path(value)
    with contextlib.suppress(RuntimeError):  # ~user that does not exist: left as is
        result = result.expanduser()
    return result if result.is_absolute() else config_path.parent / result


def parse(cls: type, text: str, name: str) -> tuple[Any, dict[str, int]]:
    """Build ``cls`` from YAML text; also return the line of every dotted key that was given."""
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)  # the reader checks the characters here already
        root = loader.get_single_node()
        if root is not None:
            _check_aliases(root, loader.alias_lines)
    except _Refused as e:
        raise ConfigError(f"{name}:{e.line}: {e}") from None
    except RecursionError:  # pragma: no cover - MAX_DEPTH is far below Python's limit
        raise ConfigError(f"{name}: nested too deeply") from None
    except yaml.MarkedYAMLError as e:
        # Only the problem and its line: PyYAML's snippet could show a secret.
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        problem = "; ".join(p for p in (e.context, e.problem) if p) or "invalid YAML"
        raise ConfigError(f"{name}:{line}: YAML syntax error: {problem}") from None
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        problem = f"unacceptable character #x{e.character:04x}: {e.reason}"
        raise ConfigError(f"{name}:{line}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{name}: YAML error: {type(e).__name__}") from None
    finally:
        if loader is not None:
            loader.dispose()
    walker = _Walker(name, cls)
    if root is None or _is_null(root):
        return walker.section(cls, None, "", 1), walker.lines
    if not isinstance(root, MappingNode):
        sections = ", ".join(settings_of(cls))
        raise walker.error(
            _line(root), "", f"the top level must be a mapping of sections ({sections})"
        )
    return walker.section(cls, root, "", 1), walker.lines


def _default_section(field: dataclasses.Field[Any], base: Any) -> Any:
    """The default instance of a sub-section field: from the parent's base, else declared."""
    if base is not None:
        return getattr(base, field.name)
    if field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    else:
        default = field.default
    return default if dataclasses.is_dataclass(default) else None


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def protocol_line(text: str) -> str:
    """The first line of a library's message, cut short: errors are one line."""
    first = text.strip().splitlines()[0] if text.strip() else "invalid"
    return first if len(first) <= 200 else first[:200] + "..."


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL_TAG


class _Walker:
    def __init__(self, name: str, root: type) -> None:
        self.name = name
        self.root = root
        self.lines: dict[str, int] = {}
        self.constructor = yaml.constructor.SafeConstructor()

    def error(self, line: int, key: str, message: str) -> ConfigError:
        return ConfigError(
            f"{self.name}:{line}: {key}: {message}" if key else f"{self.name}:{line}: {message}"
        )

    def describe(self, node: Node) -> str:
        """What a value is, for "(got ...)": never used for secrets."""
        if isinstance(node, MappingNode):
            return "a mapping"
        if isinstance(node, SequenceNode):
            return "a list"
        try:
            value = self.constructor.construct_object(node)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError):
            return show(node.value)
        if isinstance(value, str | bool | int | float) or value is None:
            return show(value)
        return show(node.value)

    def section(
        self, cls: type, node: MappingNode | None, prefix: str, line: int, base: Any = None
    ) -> Any:
        """Build section ``cls`` from ``node`` (None: absent); ``line`` is where it starts.

        ``base`` is the section's default instance where its parent declares one (e.g. each
        ``gpio.led.<state>`` has its own pattern): keys the file leaves out come from it, not
        from the class's field defaults.
        """
        fields = settings_of(cls)
        values: dict[str, Any] = {}
        seen: dict[str, int] = {}
        for key_node, value_node in node.value if node is not None else ():
            kline = _line(key_node)
            if not isinstance(key_node, ScalarNode):
                raise self.error(kline, prefix.rstrip("."), "keys must be plain names")
            key = key_node.value
            dotted = prefix + key
            if key in seen:
                raise self.error(kline, dotted, f"duplicate key (first on line {seen[key]})")
            seen[key] = kline
            if key not in fields:
                raise self.error(kline, dotted, self.unknown(key, list(fields), prefix))
            field, tp = fields[key]
            self.lines[dotted] = kline
            values[key] = self.value(
                tp, field.metadata, value_node, dotted, kline, _default_section(field, base)
            )
        for key, (field, tp) in fields.items():
            if key in values:
                continue
            inner, _ = unwrap_optional(tp)
            if is_section(inner):
                values[key] = self.section(
                    inner, None, f"{prefix}{key}.", line, _default_section(field, base)
                )
            elif (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                hint = field.metadata.get("required") or "this setting is required"
                raise self.error(line, prefix + key, f"missing; {hint}")
        return dataclasses.replace(base, **values) if base is not None else cls(**values)

    def value(
        self,
        tp: Any,
        meta: Mapping[str, Any],
        node: Node,
        dotted: str,
        line: int,
        base: Any = None,
    ) -> Any:
        tp, optional = unwrap_optional(tp)
        if optional and _is_null(node):
            return None
        if is_section(tp):
            if isinstance(node, MappingNode):
                return self.section(tp, node, dotted + ".", line, base)
            if _is_null(node):  # every key commented out: all defaults
                return self.section(tp, None, dotted + ".", line, base)
            raise self.error(line, dotted, "expected a mapping of keys")
        if tp is dict or typing.get_origin(tp) is dict:
            # Free-form data (a JSON schema, HTTP headers): any YAML mapping, checked by
            # the setting's own ``check``.
            if not isinstance(node, MappingNode):
                raise self.error(line, dotted, f"expected a mapping (got {self.describe(node)})")
            try:
                value = self.constructor.construct_object(node, deep=True)
            except yaml.MarkedYAMLError as exc:  # its str() has a snippet of the file
                raise self.error(line, dotted, f"unreadable mapping: {exc.problem}") from None
            except (yaml.YAMLError, ValueError, TypeError) as exc:
                message = protocol_line(str(exc))
                raise self.error(line, dotted, f"unreadable mapping: {message}") from None
        elif typing.get_origin(tp) is tuple:
            item_tp = typing.get_args(tp)[0]
            if not isinstance(node, SequenceNode):
                raise self.error(line, dotted, f"expected a list (got {self.describe(node)})")
            if is_section(item_tp):  # a list of sub-sections, e.g. tools.webhooks
                items = []
                for i, item in enumerate(node.value):
                    where = f"{dotted}[{i}]"
                    if not isinstance(item, MappingNode):
                        raise self.error(_line(item), where, "expected a mapping of keys")
                    items.append(self.section(item_tp, item, where + ".", _line(item)))
                value = tuple(items)
            else:
                value = tuple(
                    self.scalar(item_tp, meta, item, f"{dotted}[{i}]", _line(item))
                    for i, item in enumerate(node.value)
                )
        else:
            value = self.scalar(tp, meta, node, dotted, line)
        check = meta.get("check")
        message = check(value) if check is not None and value is not None else None
        if message:
            raise self.error(line, dotted, message)
        return value

    def scalar(self, tp: Any, meta: Mapping[str, Any], node: Node, dotted: str, line: int) -> Any:
        if tp not in _EXPECTED:
            raise TypeError(f"{dotted}: unsupported setting type {tp!r} in the schema")
        secret = tp is ApiKey
        expected = f"expected {_EXPECTED[tp]}"
        if not isinstance(node, ScalarNode):
            raise self.error(
                line, dotted, expected if secret else f"{expected} (got {self.describe(node)})"
            )
        try:
            value = self.constructor.construct_object(node)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError):
            raise self.error(line, dotted, f"{expected} (unreadable {node.tag} value)") from None
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        choices = meta.get("choices")
        if tp is str and isinstance(value, bool) and choices and node.value in choices:
            # YAML 1.1 reads a bare on/off/yes/no as a boolean; where those words are the
            # setting's own choices (echo_cancel: off), the owner meant the word.
            value = node.value
        if not isinstance(value, str if secret else tp) or (tp is int and isinstance(value, bool)):
            raise self.error(
                line, dotted, expected if secret else f"{expected} (got {self.describe(node)})"
            )
        if secret:
            try:
                key = clean_key(value)
            except ValueError as e:
                raise self.error(line, dotted, str(e)) from None
            return ApiKey(key) if key else None
        bounds = meta.get("range")
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            lo, hi = show(bounds[0]), show(bounds[1])
            raise self.error(line, dotted, f"must be between {lo} and {hi} (got {show(value)})")
        if choices is not None and value not in choices:
            listed = ", ".join(str(c) for c in choices)
            raise self.error(line, dotted, f"must be one of {listed} (got {show(value)})")
        return value

    def unknown(self, key: str, valid: list[str], prefix: str) -> str:
        import difflib  # only for a config with a mistake in it

        kind = "key" if prefix else "section"
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        if close:
            return f"unknown {kind}; did you mean {prefix}{close[0]}?"
        # The right key in the wrong section: name where it belongs.
        elsewhere = [d for d, _, _ in iter_settings(self.root) if d.rsplit(".", 1)[-1] == key]
        if elsewhere:
            return f"unknown {kind}; did you mean {elsewhere[0]}?"
        return f"unknown {kind}; valid {kind}s: {', '.join(valid)}"
