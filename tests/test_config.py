"""Tests of appliance.config: schema, loader, validation messages and the API key."""

import copy
import dataclasses
import os
import pickle
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from appliance.config import (
    EX_CONFIG,
    ApiKey,
    Config,
    ConfigError,
    LoggingConfig,
    RealtimeConfig,
    find_config_path,
    load_config,
    loader,
)
from appliance.config.schema import is_section, iter_settings, meta, unwrap_optional

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "config.yaml"

MINIMAL = """\
realtime:
  url: ws://127.0.0.1:8765/v1/realtime/openai
  folder_id: b1gexample
  api_key: some-key
"""

SECRET = "AQVNsEcReT-9f8e7d6c5b4a_xyz"


def write(tmp_path: Path, text: str | bytes, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={} if environ is None else environ)
    return info.value


def value_at(obj: object, dotted: str) -> object:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


# --- loading a good file ----------------------------------------------------------------


def test_minimal_file_loads_with_defaults(tmp_path):
    path = write(tmp_path, MINIMAL)
    config = load_config(path, environ={})
    rt = config.realtime
    assert config.path == path
    assert rt.url == "ws://127.0.0.1:8765/v1/realtime/openai"
    assert rt.folder_id == "b1gexample"
    assert rt.api_key == ApiKey("some-key")
    assert rt.api_key.reveal() == "some-key"
    assert rt.api_key_source == f"{path}:4"
    given = {"realtime.url", "realtime.folder_id", "realtime.api_key"}
    defaults = Config(realtime=RealtimeConfig(folder_id="b1gexample"))
    for dotted, _f, _ in iter_settings(Config):
        if dotted not in given:
            assert value_at(config, dotted) == value_at(defaults, dotted), dotted
    assert config.logging == LoggingConfig()
    assert rt.endpoint == (
        "ws://127.0.0.1:8765/v1/realtime/openai?model=gpt://b1gexample/speech-realtime-250923"
    )
    assert isinstance(rt.session_max_s, float)
    assert isinstance(rt.output_rate, int)


def test_frozen(tmp_path):
    config = load_config(write(tmp_path, MINIMAL), environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.realtime.voice = "x"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.logging = LoggingConfig()


def test_provider_defaults(tmp_path):
    yandex = load_config(write(tmp_path, "realtime:\n  folder_id: b1g\n"), environ={}).realtime
    assert yandex.provider == "yandex" and yandex.spec.name == "yandex"
    assert yandex.endpoint == (
        "wss://ai.api.cloud.yandex.net/v1/realtime?model=gpt://b1g/speech-realtime-250923"
    )
    assert (yandex.voice, yandex.output_rate, yandex.input_rate) == ("marina", 44100, 24000)
    assert yandex.languages == ("ru-RU",) and yandex.answer_timeout_s == 30
    assert yandex.history_replay == "recap" and yandex.transcript_wait_ms == 1500
    assert yandex.spec.auth_header(yandex.auth, "K") == "Api-Key K"
    newer = RealtimeConfig(folder_id="b1g", model="speech-realtime-260528", auth="iam_token")
    assert newer.endpoint.endswith("model=gpt://b1g/speech-realtime-260528")
    assert newer.spec.auth_header(newer.auth, "T") == "Bearer T"
    openai = load_config(write(tmp_path, "realtime:\n  provider: openai\n"), environ={}).realtime
    assert openai.endpoint == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert (openai.voice, openai.output_rate) == ("marin", 24000)
    assert openai.spec.auth_header(openai.auth, "K") == "Bearer K"
    # Every default can still be set.
    own = RealtimeConfig(provider="openai", url="ws://127.0.0.1:1/v1/realtime", model="m2")
    assert own.endpoint == "ws://127.0.0.1:1/v1/realtime?model=m2"


def test_heartbeat_zero_is_off(tmp_path):
    path = write(tmp_path, HEAD + "  heartbeat_s: 0\n")
    assert load_config(path, environ={}).realtime.heartbeat_s == 0


def test_the_retired_yandex_endpoint_loads_with_one_warning(tmp_path):
    from appliance.config.loader import provider_warnings

    old = "wss://rest-assistant.api.cloud.yandex.net/v1/realtime/openai"
    config = load_config(write(tmp_path, f"realtime:\n  folder_id: b1g\n  url: {old}\n"), {})
    (warning,) = provider_warnings(config)
    assert "no longer served" in warning and "wss://ai.api.cloud.yandex.net" in warning
    assert provider_warnings(load_config(write(tmp_path, MINIMAL), {})) == []


def test_endpoint_with_query():
    rt = RealtimeConfig(url="wss://h/v1/realtime?x=1", folder_id="b1g", model="m")
    assert rt.endpoint == "wss://h/v1/realtime?x=1&model=gpt://b1g/m"


def test_values_and_conversions(tmp_path):
    path = write(
        tmp_path,
        "realtime:\n  folder_id: b1g\n  session_max_s: 60\n  heartbeat_s: 0.5\n"
        "  api_key:\n  api_key_file: null\nlogging:\n  transcripts: no\n  level: debug\n",
    )
    config = load_config(path, environ={})
    assert config.realtime.session_max_s == 60.0
    assert isinstance(config.realtime.session_max_s, float)
    assert config.realtime.heartbeat_s == 0.5
    assert config.realtime.api_key is None
    assert config.realtime.api_key_file is None
    assert config.logging == LoggingConfig(level="debug", transcripts=False)


def test_empty_section_means_defaults(tmp_path):
    path = write(tmp_path, "realtime:\n  folder_id: b1g\nlogging:\n  # level: debug\n")
    assert load_config(path, environ={}).logging == LoggingConfig()


# --- the shipped config.yaml ------------------------------------------------------------


def test_shipped_config_needs_folder_id():
    error = error_of(SHIPPED)
    assert re.fullmatch(
        rf"{re.escape(str(SHIPPED))}:\d+: realtime\.folder_id: is empty; "
        r"set it to the Yandex Cloud folder id",
        str(error),
    )


def test_shipped_config_is_the_defaults(tmp_path):
    text = SHIPPED.read_text(encoding="utf-8")
    assert text.count('folder_id: ""') == 1
    config = load_config(write(tmp_path, text.replace('folder_id: ""', "folder_id: b1gx")), {})
    assert config.realtime.folder_id == "b1gx"
    # The reference is built from the dataclasses alone (not the loader), so nested defaults
    # such as gpio.led.idle (a LedPattern with its own values) are checked as declared.
    defaults = Config(realtime=RealtimeConfig(folder_id="b1gx"))
    checked = 0
    for dotted, _f, _ in iter_settings(Config):
        if dotted == "realtime.folder_id":
            continue
        assert value_at(config, dotted) == value_at(defaults, dotted), dotted
        assert type(value_at(config, dotted)) is type(value_at(defaults, dotted)), dotted
        checked += 1
    assert checked >= 15
    assert config.realtime.api_key is None
    assert config.realtime.api_key_source == ""


def _key_lines(node: yaml.MappingNode, prefix: str = "") -> dict[str, int]:
    lines = {}
    for key, value in node.value:
        dotted = prefix + key.value
        lines[dotted] = key.start_mark.line
        if isinstance(value, yaml.MappingNode):
            lines.update(_key_lines(value, dotted + "."))
    return lines


def test_every_setting_is_documented_in_config_yaml():
    text = SHIPPED.read_text(encoding="utf-8")
    names = {d.rsplit(".", 1)[-1] for d, _, _ in iter_settings(Config)}
    # Optional settings are shipped commented out ("# api_key: ..."): uncomment to find them.
    pattern = re.compile(rf"^(\s*)# ((?:{'|'.join(names)}):(?: |$))", re.MULTILINE)
    lines = pattern.sub(r"\1\2", text).splitlines()
    found = _key_lines(yaml.compose("\n".join(lines), Loader=yaml.SafeLoader))
    for dotted, f, _ in iter_settings(Config):
        assert f.metadata.get("doc"), f"{dotted}: no doc in the schema"
        assert dotted in found, f"{dotted} is missing from config.yaml"
        above = lines[found[dotted] - 1].strip()
        assert above.startswith("#"), f"{dotted}: no comment directly above it in config.yaml"


# --- malformed configurations -----------------------------------------------------------

HEAD = "realtime:\n  folder_id: b1g\n"

BAD = {
    "unknown key": (
        HEAD + "  vocie: x\n",
        "3: realtime.vocie: unknown key; did you mean realtime.voice?",
    ),
    "unknown section": (
        "relatime:\n  folder_id: b1g\n",
        "1: relatime: unknown section; did you mean realtime?",
    ),
    "unknown key no match": (
        HEAD + "logging:\n  colour: red\n",
        "4: logging.colour: unknown key; valid keys: level, transcripts",
    ),
    "key in the wrong section": (
        HEAD + "logging:\n  voice: x\n",
        "4: logging.voice: unknown key; did you mean realtime.voice?",
    ),
    "unknown section no match": (
        HEAD + "zzz: 1\n",
        "3: zzz: unknown section; valid sections: "
        "realtime, audio, button, gpio, control, tools, conversation, logging",
    ),
    "wrong type int": (
        HEAD + "  output_rate: fast\n",
        "3: realtime.output_rate: expected an integer (got 'fast')",
    ),
    "float for int": (
        HEAD + "  history_max_chars: 10.5\n",
        "3: realtime.history_max_chars: expected an integer (got 10.5)",
    ),
    "bool for int": (
        HEAD + "  history_max_chars: true\n",
        "3: realtime.history_max_chars: expected an integer (got true)",
    ),
    "bool for number": (
        HEAD + "  heartbeat_s: yes\n",
        "3: realtime.heartbeat_s: expected a number (got true)",
    ),
    "wrong type bool": (
        HEAD + "logging:\n  transcripts: maybe\n",
        "4: logging.transcripts: expected true or false (got 'maybe')",
    ),
    "int for bool": (
        HEAD + "logging:\n  transcripts: 1\n",
        "4: logging.transcripts: expected true or false (got 1)",
    ),
    "string for a number": (
        HEAD + '  answer_timeout_s: "15"\n',
        "3: realtime.answer_timeout_s: expected a number (got '15')",
    ),
    "list for a string": (
        HEAD + "  voice: [a, b]\n",
        "3: realtime.voice: expected a string (got a list)",
    ),
    "number for a string": (
        HEAD + "  model: 12\n",
        "3: realtime.model: expected a string (got 12)",
    ),
    "null for a string": (HEAD + "  voice:\n", "3: realtime.voice: expected a string (got null)"),
    "null for a number": (
        HEAD + "  heartbeat_s: null\n",
        "3: realtime.heartbeat_s: expected a number (got null)",
    ),
    "out of range": (
        HEAD + "  session_max_s: 5\n",
        "3: realtime.session_max_s: must be between 10 and 3600 (got 5)",
    ),
    "out of range float": (
        HEAD + "  heartbeat_s: 0.1\n",
        "3: realtime.heartbeat_s: must be 0 (off) or between 0.2 and 60 (got 0.1)",
    ),
    "out of range nan": (
        HEAD + "  heartbeat_s: .nan\n",
        "3: realtime.heartbeat_s: must be 0 (off) or between 0.2 and 60 (got nan)",
    ),
    "not in choices": (
        HEAD + "  output_rate: 44000\n",
        "3: realtime.output_rate: must be one of 0, 8000, 16000, 22050, 24000, 44100, 48000"
        " (got 44000)",
    ),
    "not in string choices": (
        HEAD + "logging:\n  level: verbose\n",
        "4: logging.level: must be one of debug, info, warning, error (got 'verbose')",
    ),
    "bad url scheme": (
        HEAD + "  url: http://x\n",
        "3: realtime.url: must start with ws:// or wss:// (got 'http://x')",
    ),
    "url without host": (
        HEAD + "  url: wss:///x\n",
        "3: realtime.url: has no host (got 'wss:///x')",
    ),
    "bad model": (
        HEAD + "  model: a b\n",
        "3: realtime.model: must not contain spaces, '?', '&' or '#' (got 'a b')",
    ),
    "missing section": (
        "logging:\n  level: info\n",
        "1: realtime.folder_id: missing; set it to the Yandex Cloud folder id",
    ),
    "empty file": ("", "1: realtime.folder_id: missing; set it to the Yandex Cloud folder id"),
    "only comments": (
        "# nothing\n\n# here\n",
        "1: realtime.folder_id: missing; set it to the Yandex Cloud folder id",
    ),
    "openai output rate": (
        "realtime:\n  provider: openai\n  output_rate: 44100\n",
        "3: realtime.output_rate: openai answers at 24000 Hz only",
    ),
    "openai input rate": (
        "realtime:\n  provider: openai\n  input_rate: 44100\n",
        "3: realtime.input_rate: openai takes 24000 Hz input only",
    ),
    "openai iam token": (
        "realtime:\n  provider: openai\n  auth: iam_token\n",
        "3: realtime.auth: openai takes api_key",
    ),
    "openai file search": (
        "realtime:\n  provider: openai\ntools:\n  file_search:\n    index_id: idx1\n",
        "5: tools.file_search.index_id: Yandex's file search needs provider yandex, not openai",
    ),
    "openai web search": (
        "realtime:\n  provider: openai\ntools:\n  web_search: true\n",
        "4: tools.web_search: Yandex's web search needs provider yandex, not openai",
    ),
    "unknown provider": (
        "realtime:\n  provider: google\n  folder_id: b1g\n",
        "2: realtime.provider: must be one of yandex, openai (got 'google')",
    ),
    "yandex without folder_id": (
        "realtime:\n  voice: dasha\n",
        "1: realtime.folder_id: missing; set it to the Yandex Cloud folder id",
    ),
    "bad language tag": (
        HEAD + "  languages: [russian language]\n",
        "3: realtime.languages: 'russian language' is not a language tag such as ru-RU or kk-KZ",
    ),
    "empty folder_id": (
        'realtime:\n  folder_id: ""\n',
        "2: realtime.folder_id: is empty; set it to the Yandex Cloud folder id",
    ),
    "bad folder_id": (
        "realtime:\n  folder_id: B1G/x\n",
        "2: realtime.folder_id: must be lowercase letters and digits only;"
        " set it to the Yandex Cloud folder id",
    ),
    "yaml syntax error": (
        HEAD + "  voice: a: b\n",
        "3: YAML syntax error: mapping values are not allowed here",
    ),
    "yaml unterminated quote": (
        HEAD + '  voice: "marina\n',
        "4: YAML syntax error: while scanning a quoted scalar; found unexpected end of stream",
    ),
    "two documents": (
        HEAD + "---\nlogging: {}\n",
        "3: YAML syntax error: expected a single document in the stream;"
        " but found another document",
    ),
    "control character": (
        HEAD + "  voice: a\x01\n",
        "3: YAML syntax error: unacceptable character #x0001: special characters are not allowed",
    ),
    "unsafe tag": (
        HEAD + "  voice: !!python/object:os.system x\n",
        "3: realtime.voice: expected a string"
        " (unreadable tag:yaml.org,2002:python/object:os.system value)",
    ),
    "top-level list": (
        "- realtime\n- logging\n",
        "1: the top level must be a mapping of sections "
        "(realtime, audio, button, gpio, control, tools, conversation, logging)",
    ),
    "top-level scalar": (
        "hello\n",
        "1: the top level must be a mapping of sections "
        "(realtime, audio, button, gpio, control, tools, conversation, logging)",
    ),
    "section not a mapping": ("realtime: 5\n", "1: realtime: expected a mapping of keys"),
    "section is a list": ("realtime:\n  - a\n", "1: realtime: expected a mapping of keys"),
    "duplicate key": (
        HEAD + "  voice: a\n  voice: b\n",
        "4: realtime.voice: duplicate key (first on line 3)",
    ),
    "duplicate section": (
        HEAD + "logging: {}\nlogging: {}\n",
        "4: logging: duplicate key (first on line 3)",
    ),
    "non-scalar key": (HEAD + "  [a]: b\n", "3: realtime: keys must be plain names"),
    "api_key_file missing": (
        HEAD + "  api_key_file: no-such-key\n",
        "3: realtime.api_key_file: cannot read the key file: [Errno 2] No such file or directory",
    ),
    "api_key_file is a directory": (
        HEAD + "  api_key_file: /\n",
        "3: realtime.api_key_file: cannot read the key file: [Errno 21] Is a directory",
    ),
    "api_key_file empty string": (
        HEAD + '  api_key_file: ""\n',
        "3: realtime.api_key_file: is empty; give a path or remove the line",
    ),
    "api_key_file with a NUL": (
        HEAD + '  api_key_file: "a\\0b"\n',
        "3: realtime.api_key_file: cannot read the key file: bad path",
    ),
    "api_key_file of an unknown user": (
        HEAD + "  api_key_file: ~no-such-user-here/key\n",
        "3: realtime.api_key_file: cannot read the key file: [Errno 2] No such file or directory",
    ),
    "api_key with whitespace": (
        HEAD + "  api_key: two words\n",
        "3: realtime.api_key: the key contains whitespace (more than one line?)",
    ),
}


@pytest.mark.parametrize(("text", "expected"), list(BAD.values()), ids=list(BAD))
def test_malformed(tmp_path, text, expected):
    path = write(tmp_path, text)
    error = error_of(path)
    assert str(error) == f"{path}:{expected}"
    assert error.exit_code == EX_CONFIG == 78


def test_invalid_utf8(tmp_path):
    path = write(tmp_path, HEAD.encode() + b"  voice: caf\xe9\n")
    assert str(error_of(path)) == f"{path}:3: not valid UTF-8 (byte 0xe9)"


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    error = error_of(path)
    assert str(error) == f"{path}: cannot read: [Errno 2] No such file or directory"
    assert error.exit_code == 78


def test_directory_instead_of_file(tmp_path):
    assert str(error_of(tmp_path)) == f"{tmp_path}: cannot read: [Errno 21] Is a directory"


def test_empty_key_file(tmp_path):
    (tmp_path / "key").write_text("\n  \n")
    path = write(tmp_path, HEAD + "  api_key_file: key\n")
    assert str(error_of(path)) == f"{path}:3: realtime.api_key_file: the key file is empty"


# --- the API key ------------------------------------------------------------------------


@pytest.fixture
def all_sources(tmp_path):
    """A config with api_key and api_key_file, a credential directory and an environment."""
    (tmp_path / "file-key").write_text("from-file\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "api-key").write_text("  from-credential\n")
    path = write(tmp_path, HEAD + "  api_key_file: file-key\n  api_key: from-yaml\n")
    environ = {"APPLIANCE_API_KEY": "from-env", "CREDENTIALS_DIRECTORY": str(creds)}
    return path, environ, creds


def _key(path: Path, environ: dict[str, str]) -> tuple[str, str]:
    rt = load_config(path, environ=environ).realtime
    return rt.api_key.reveal(), rt.api_key_source


def test_key_resolution_order(all_sources, tmp_path):
    path, environ, creds = all_sources
    assert _key(path, environ) == ("from-env", "$APPLIANCE_API_KEY")
    environ["APPLIANCE_API_KEY"] = "  \n"
    assert _key(path, environ) == ("from-credential", "credential api-key")
    (creds / "api-key").write_text("")  # an empty credential counts as not given
    assert _key(path, environ) == ("from-file", str(tmp_path / "file-key"))
    (creds / "api-key").unlink()
    assert _key(path, environ) == ("from-file", str(tmp_path / "file-key"))
    del environ["CREDENTIALS_DIRECTORY"]
    assert _key(path, environ) == ("from-file", str(tmp_path / "file-key"))
    path.write_text(HEAD + "  api_key_file: null\n  api_key: from-yaml\n")
    assert _key(path, environ) == ("from-yaml", f"{path}:4")


def test_key_file_absolute_and_home(tmp_path, monkeypatch):
    (tmp_path / "k").write_text("abs-key")
    path = write(tmp_path, HEAD + f"  api_key_file: {tmp_path / 'k'}\n", name="sub.yaml")
    assert _key(path, {}) == ("abs-key", str(tmp_path / "k"))
    monkeypatch.setenv("HOME", str(tmp_path))
    path.write_text(HEAD + "  api_key_file: ~/k\n")
    assert _key(path, {}) == ("abs-key", str(tmp_path / "k"))


def test_environ_defaults_to_os_environ(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_API_KEY", "os-env-key")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    rt = load_config(write(tmp_path, HEAD)).realtime
    assert (rt.api_key.reveal(), rt.api_key_source) == ("os-env-key", "$APPLIANCE_API_KEY")


def test_broken_key_file_unused_when_env_given(tmp_path):
    path = write(tmp_path, HEAD + "  api_key_file: missing\n")
    assert _key(path, {"APPLIANCE_API_KEY": "k"}) == ("k", "$APPLIANCE_API_KEY")


def test_unreadable_credential(tmp_path):
    creds = tmp_path / "creds"
    (creds / "api-key").mkdir(parents=True)
    error = error_of(write(tmp_path, HEAD), {"CREDENTIALS_DIRECTORY": str(creds)})
    assert str(error) == f"{creds / 'api-key'}: cannot read the key file: [Errno 21] Is a directory"


def test_require_api_key(tmp_path):
    path = write(tmp_path, HEAD)
    config = load_config(path, environ={})
    assert config.realtime.api_key is None
    assert config.realtime.api_key_source == ""
    with pytest.raises(ConfigError) as info:
        config.require_api_key()
    assert str(info.value) == (
        "no API key: set $APPLIANCE_API_KEY, the systemd credential api-key, "
        f"realtime.api_key_file, realtime.api_key (in {path}) or put it in {tmp_path / 'api-key'}"
    )
    assert info.value.exit_code == 78
    keyed = load_config(path, environ={"APPLIANCE_API_KEY": "k"})
    assert keyed.require_api_key() == ApiKey("k")


def test_the_installed_key_beside_the_config_is_found_last(tmp_path):
    """install.sh keeps the key in /etc/appliance/api-key beside config.yaml and gives it to
    the service as a credential; `sudo appliance ask` and `check` have no credential."""
    path = write(tmp_path, HEAD)
    (tmp_path / "api-key").write_text("  installed-key\n")
    rt = load_config(path, environ={}).realtime
    assert (rt.api_key.reveal(), rt.api_key_source) == ("installed-key", str(tmp_path / "api-key"))
    rt = load_config(path, environ={"APPLIANCE_API_KEY": "env"}).realtime
    assert rt.api_key.reveal() == "env"


def test_an_unreadable_installed_key_says_to_use_sudo(tmp_path):
    path = write(tmp_path, HEAD)
    (tmp_path / "api-key").mkdir()  # unreadable for root too
    config = load_config(path, environ={})
    assert config.realtime.api_key is None
    with pytest.raises(ConfigError) as info:
        config.require_api_key()
    assert str(info.value) == (
        f"no API key you can read: the installed key {tmp_path / 'api-key'} is root's; "
        "run the command with sudo, or set $APPLIANCE_API_KEY"
    )


# --- secrets never show -----------------------------------------------------------------


def test_api_key_hides_itself():
    key = ApiKey(SECRET)
    assert key.reveal() == SECRET
    assert repr(key) == "ApiKey('***')"
    assert str(key) == "***"
    assert f"{key}" == "***"
    assert f"{key:>5}" == "  ***"
    assert "%s %r" % (key, key) == "*** ApiKey('***')"  # noqa: UP031
    assert key == ApiKey(SECRET)
    assert key != ApiKey("other")
    assert key != SECRET
    assert hash(key) == hash(ApiKey(SECRET))
    assert len({key, ApiKey(SECRET)}) == 1
    assert copy.copy(key) is key
    assert copy.deepcopy(key) is key
    with pytest.raises(TypeError):
        pickle.dumps(key)
    with pytest.raises(TypeError):
        copy.copy(key).__reduce_ex__(2)
    with pytest.raises(AttributeError):
        key._secret = "x"
    with pytest.raises(AttributeError):
        key.__dict__  # noqa: B018
    with pytest.raises(TypeError):
        ApiKey(12345)


def test_config_repr_hides_key(tmp_path):
    config = load_config(write(tmp_path, HEAD + f"  api_key: {SECRET}\n"), environ={})
    assert config.realtime.api_key.reveal() == SECRET
    for text in (repr(config), str(config), repr(config.realtime), str(dataclasses.asdict(config))):
        assert SECRET not in text
        assert "ApiKey('***')" in text
    assert copy.deepcopy(config) == config
    with pytest.raises(TypeError):
        pickle.dumps(config)


LEAKY = {
    "wrong type elsewhere": HEAD + f"  api_key: {SECRET}\n  output_rate: 1\n",
    "list": HEAD + f"  api_key: [{SECRET}]\n",
    "mapping": HEAD + f"  api_key: {{{SECRET}: 1}}\n",
    "whitespace": HEAD + f"  api_key: {SECRET} {SECRET}\n",
    "syntax error on the key line": HEAD + f"  api_key: {SECRET}: x\n",
    "unterminated quote": HEAD + f'  api_key: "{SECRET}\n',
    "bad escape": HEAD + f'  api_key: "{SECRET}\\q"\n',
    "tab": HEAD + f"  api_key:\t{SECRET}\n\t{SECRET}\n",
    "stray line": HEAD + f"  api_key:\n  {SECRET}\n",
    "duplicate": HEAD + f"  api_key: {SECRET}\n  api_key: {SECRET}\n",
    "misspelled key": HEAD + f"  api_kye: {SECRET}\n",
    "wrong section": HEAD + f"logging:\n  api_key: {SECRET}\n",
    "key in api_key_file": HEAD + f"  api_key_file: {SECRET}\n",
    "key in folder_id": f"realtime:\n  folder_id: {SECRET}\n",
    "section is the key": f"realtime: {SECRET}\n",
    "file is the key": f"{SECRET}\n",
    "indented key": f"realtime:\n  {SECRET}\n",
    "tagged": HEAD + f"  api_key: !!binary {SECRET}\n",
    "anchor": HEAD + f"  api_key: &a {SECRET}\n  voice: *b\n",
}


@pytest.mark.parametrize("text", list(LEAKY.values()), ids=list(LEAKY))
def test_errors_never_contain_the_key(tmp_path, text):
    error = error_of(write(tmp_path, text))
    assert SECRET not in str(error)
    assert SECRET not in repr(error)
    assert "\n" not in str(error)


def test_wrong_type_api_key_not_echoed(tmp_path):
    path = write(tmp_path, HEAD + "  api_key: 12345\n")
    error = error_of(path)
    assert str(error) == f"{path}:3: realtime.api_key: expected a string"
    assert "12345" not in str(error)


def test_env_key_with_whitespace_not_echoed(tmp_path):
    error = error_of(write(tmp_path, HEAD), {"APPLIANCE_API_KEY": f"{SECRET}\n{SECRET}"})
    assert str(error) == "$APPLIANCE_API_KEY: the key contains whitespace (more than one line?)"


def test_key_file_with_two_lines_not_echoed(tmp_path):
    (tmp_path / "k").write_text(f"{SECRET}\n{SECRET}\n")
    path = write(tmp_path, HEAD + "  api_key_file: k\n")
    error = error_of(path)
    assert SECRET not in str(error)
    assert str(error) == (
        f"{path}:3: realtime.api_key_file: the key contains whitespace (more than one line?)"
    )


# --- find_config_path -------------------------------------------------------------------


def test_find_explicit(tmp_path):
    assert find_config_path(tmp_path / "x.yaml") == tmp_path / "x.yaml"
    assert find_config_path(str(tmp_path / "x.yaml")) == tmp_path / "x.yaml"


def test_find_system_first(tmp_path, monkeypatch):
    system = write(tmp_path, MINIMAL, name="etc.yaml")
    monkeypatch.setattr(loader, "CANDIDATES", (system, Path("config.yaml")))
    monkeypatch.chdir(tmp_path)
    write(tmp_path, MINIMAL)
    assert find_config_path(None) == system


def test_find_local(tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "CANDIDATES", (tmp_path / "absent.yaml", Path("config.yaml")))
    monkeypatch.chdir(tmp_path)
    write(tmp_path, MINIMAL)
    found = find_config_path(None)
    assert found == Path("config.yaml")
    assert load_config(found, environ={}).realtime.folder_id == "b1gexample"


def test_find_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(loader, "CANDIDATES", (tmp_path / "etc.yaml", Path("config.yaml")))
    with pytest.raises(ConfigError) as info:
        find_config_path(None)
    assert str(info.value) == (
        f"no configuration file: looked for {tmp_path / 'etc.yaml'} and ./config.yaml;"
        " pass --config PATH"
    )
    assert info.value.exit_code == 78


def test_default_candidates():
    assert (Path("/etc/appliance/config.yaml"), Path("config.yaml")) == loader.CANDIDATES


# --- the walker is generic: nested sections, lists --------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Led:
    pin: int = field(default=17, metadata=meta(doc="GPIO pin.", range=(0, 27)))
    colours: tuple[str, ...] = field(default=("red",), metadata=meta(doc="Colours."))
    label: str | None = field(default=None, metadata=meta(doc="Label."))


@dataclass(frozen=True, kw_only=True)
class _Gpio:
    led: _Led = field(default_factory=_Led, metadata=meta(doc="The LED."))
    chip: str = field(default="gpiochip0", metadata=meta(doc="Chip."))


@dataclass(frozen=True, kw_only=True)
class _Root:
    gpio: _Gpio = field(default_factory=_Gpio, metadata=meta(doc="GPIO."))


def test_nested_sections():
    root, lines = loader.parse(_Root, "gpio:\n  led:\n    pin: 4\n    colours: [a, b]\n", "t")
    assert root == _Root(gpio=_Gpio(led=_Led(pin=4, colours=("a", "b"))))
    assert lines == {"gpio": 1, "gpio.led": 2, "gpio.led.pin": 3, "gpio.led.colours": 4}
    assert loader.parse(_Root, "", "t")[0] == _Root()
    assert [d for d, _, _ in iter_settings(_Root)] == [
        "gpio.led.pin",
        "gpio.led.colours",
        "gpio.led.label",
        "gpio.chip",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gpio:\n  led:\n    pin: 40\n", "t:3: gpio.led.pin: must be between 0 and 27 (got 40)"),
        (
            "gpio:\n  led:\n    pni: 4\n",
            "t:3: gpio.led.pni: unknown key; did you mean gpio.led.pin?",
        ),
        ("gpio:\n  lde: {}\n", "t:2: gpio.lde: unknown key; did you mean gpio.led?"),
        ("gpio:\n  led: 3\n", "t:2: gpio.led: expected a mapping of keys"),
        (
            "gpio:\n  led:\n    colours: [a,\n      5]\n",
            "t:4: gpio.led.colours[1]: expected a string (got 5)",
        ),
        ("gpio:\n  led:\n    colours: a\n", "t:3: gpio.led.colours: expected a list (got 'a')"),
        (
            "gpio:\n  led:\n    chip: x\n",
            "t:3: gpio.led.chip: unknown key; did you mean gpio.chip?",
        ),
    ],
)
def test_nested_errors(text, expected):
    with pytest.raises(ConfigError) as info:
        loader.parse(_Root, text, "t")
    assert str(info.value) == expected


def test_schema_types_are_supported():
    """Every setting's type is one the loader knows; sections are dataclasses."""
    supported = {str, int, float, bool, ApiKey, dict}
    for dotted, _, tp in iter_settings(Config):
        inner, _ = unwrap_optional(tp)
        if typing.get_origin(inner) is tuple:  # a list: of scalars, or of sub-sections
            (inner,) = typing.get_args(inner)[:1]
            if is_section(inner):
                continue
        assert inner in supported, dotted
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        assert is_section(hints[f.name]) or f.metadata.get("internal"), f.name


def test_config_error_is_one_line():
    assert str(ConfigError("a\nb")) == "a b"
    assert ConfigError("x").exit_code == 78
    assert os.EX_CONFIG == EX_CONFIG


def test_nested_section_defaults_come_from_the_parent(tmp_path):
    """Each gpio.led.<state> has its own default pattern; giving one key keeps the others."""
    text = MINIMAL + "gpio:\n  led:\n    idle:\n      level: 0.3\n"
    config = load_config(write(tmp_path, text), environ={})
    assert (config.gpio.led.idle.pattern, config.gpio.led.idle.level) == ("steady", 0.3)
    assert config.gpio.led.offline.pattern == "blink"
    assert config.gpio.led.error.pattern == "triple"
    assert config.gpio.led.starting.period_s == 0.5


@pytest.mark.parametrize(
    ("webhooks", "message"),
    [
        (
            "    - {name: a, url: 'http://x/'}\n    - {name: a, url: 'http://y/'}\n",
            "6: tools.webhooks: the tool name 'a' is used twice",
        ),
        (
            "    - {name: a, url: 'http://x/', headers: {'bad name': v}}\n",
            "7: tools.webhooks[0].headers: header name 'bad name' is not a valid HTTP header name",
        ),
        (
            '    - {name: a, url: "http://x/", headers: {X-Note: "a\\nb"}}\n',
            "7: tools.webhooks[0].headers: header X-Note: the value must be one line",
        ),
    ],
)
def test_webhook_lists_are_checked_as_a_whole(tmp_path, webhooks, message):
    path = write(tmp_path, MINIMAL + "tools:\n  webhooks:\n" + webhooks)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert str(err.value) == f"{path}:{message}"


@pytest.mark.parametrize("word", ["on", "off"])
def test_bare_on_and_off_are_words_where_they_are_choices(tmp_path, word):
    """YAML 1.1 reads a bare ``off`` as false; echo_cancel's choices include the word."""
    config = load_config(write(tmp_path, MINIMAL + f"audio:\n  echo_cancel: {word}\n"), {})
    assert config.audio.echo_cancel == word


def test_a_boolean_is_still_no_word_elsewhere(tmp_path):
    with pytest.raises(ConfigError, match=r"realtime.voice: expected a string \(got false\)"):
        load_config(write(tmp_path, MINIMAL.replace("api_key", "voice: off\n  api_key")), {})
