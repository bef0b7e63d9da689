"""Journal logging and transcripts, read back from a REAL systemd-journald.

The journald runs in a private mount namespace (tests/journald_namespace.py); the writer is a
separate Python process that believes it runs under systemd (JOURNAL_STREAM/INVOCATION_ID set)
and has a fake API key in its environment, as the daemon would. The in-process tests below
cover the stderr side and the choice between the two.
"""

from __future__ import annotations

import io
import json
import logging
import textwrap

import pytest
from journald_namespace import run_with_journald, unavailable_reason

from appliance.service import journal as journal_mod
from appliance.service.journal import TranscriptLog, setup_service_logging, under_systemd

FAKE_KEY = "AQVN-fake-key-9d2e71-must-not-reach-the-journal"
QUESTION = "Какая сегодня погода?"
ANSWER = "Сегодня солнечно, +20 °C.\nВторая строка ответа: 100% без осадков."

WRITER = textwrap.dedent(
    f"""
    import logging, os
    from appliance.service.journal import TranscriptLog, setup_service_logging

    assert os.environ["APPLIANCE_API_KEY"]  # the key is there, as in the daemon
    assert setup_service_logging("info") == "journal"
    log = logging.getLogger("appliance.daemon")
    log.debug("below the level: not written")
    log.info("started, key of %d characters loaded", len(os.environ["APPLIANCE_API_KEY"]))
    log.warning("audio device busy, retrying")

    on = TranscriptLog(True)
    on.user({QUESTION!r}, 1, "sess-on")
    on.assistant({ANSWER!r}, 1, "sess-on")
    on.turn(1, 850, 2100, 4300, "answered", session_id="sess-on")

    off = TranscriptLog(False)  # logging.transcripts: false
    off.user("private question", 1, "sess-off")
    off.assistant("private answer", 1, "sess-off")
    off.turn(1, None, 120, 0, "too_short", session_id="sess-off")

    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("turn failed")
    """
)


@pytest.fixture(scope="module")
def journal(tmp_path_factory):
    """(entries written by the writer, raw journalctl JSON of the whole journal)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"real journald tests: {reason}")
    entries, raw = run_with_journald(
        tmp_path_factory.mktemp("journald"),
        WRITER,
        {
            "JOURNAL_STREAM": "8:12345",
            "INVOCATION_ID": "0123456789abcdef0123456789abcdef",
            "APPLIANCE_API_KEY": FAKE_KEY,
        },
    )
    ours = [e for e in entries if e.get("SYSLOG_IDENTIFIER") == "appliance"]
    return ours, raw


def by_session(entries, session):
    return [e for e in entries if e.get("APPLIANCE_SESSION") == session]


def test_everything_carries_the_identifier_and_the_level(journal):
    entries, _ = journal
    messages = [e["MESSAGE"] for e in entries]
    assert "below the level: not written" not in messages
    started = next(e for e in entries if e["MESSAGE"].startswith("started"))
    assert started["MESSAGE"] == f"started, key of {len(FAKE_KEY)} characters loaded"
    assert started["PRIORITY"] == "6"
    assert started["LOGGER"] == "appliance.daemon"
    assert started["CODE_FUNC"] == "<module>"
    warning = next(e for e in entries if e["MESSAGE"].startswith("audio device busy"))
    assert warning["PRIORITY"] == "4"


def test_transcripts_round_trip(journal):
    entries, _ = journal
    user, assistant, turn = by_session(entries, "sess-on")
    assert user["MESSAGE"] == f"user: {QUESTION}"
    assert user["APPLIANCE_ROLE"] == "user"
    assert user["APPLIANCE_TURN"] == "1"
    assert user["LOGGER"] == "appliance.transcript"
    # CODE_* name the caller of TranscriptLog, not the module itself.
    assert {user["CODE_FUNC"], assistant["CODE_FUNC"], turn["CODE_FUNC"]} == {"<module>"}
    assert user["CODE_FILE"].endswith("snippet.py")
    assert assistant["MESSAGE"] == f"assistant: {ANSWER}"  # multi-line, one entry
    assert assistant["APPLIANCE_ROLE"] == "assistant"
    assert assistant["APPLIANCE_TURN"] == "1"
    assert "CODE_ARGS" not in assistant  # the text is not repeated in a second field
    assert turn["MESSAGE"] == (
        "turn 1: answered in 850 ms (audio in 2100 ms, out 4300 ms, session sess-on)"
    )
    assert {k: v for k, v in turn.items() if k.startswith("APPLIANCE_")} == {
        "APPLIANCE_TURN": "1",
        "APPLIANCE_SESSION": "sess-on",
        "APPLIANCE_RESULT": "answered",
        "APPLIANCE_LATENCY_MS": "850",
        "APPLIANCE_AUDIO_IN_MS": "2100",
        "APPLIANCE_AUDIO_OUT_MS": "4300",
    }


def test_transcripts_off_keeps_only_the_figures(journal):
    entries, raw = journal
    (turn,) = by_session(entries, "sess-off")
    assert turn["MESSAGE"] == "turn 1: too_short (audio in 120 ms, out 0 ms, session sess-off)"
    assert turn["APPLIANCE_RESULT"] == "too_short"
    assert "APPLIANCE_LATENCY_MS" not in turn  # no answer, no latency
    assert "APPLIANCE_ROLE" not in turn
    assert "private question" not in raw
    assert "private answer" not in raw


def test_exception_is_one_entry_with_the_traceback(journal):
    entries, _ = journal
    (failed,) = [e for e in entries if e["MESSAGE"].startswith("turn failed")]
    assert failed["PRIORITY"] == "3"
    assert "ZeroDivisionError" in failed["MESSAGE"]
    assert "Traceback" in failed["MESSAGE"]


def test_no_entry_holds_the_key(journal):
    entries, raw = journal
    assert entries
    assert FAKE_KEY not in raw  # any field of any entry, journald's and the kernel's included
    assert "APPLIANCE_API_KEY" not in raw


def test_no_lowercase_record_attributes_leak_as_fields(journal):
    """JournalHandler offers the whole LogRecord; journald keeps only valid (upper-case) names."""
    entries, _ = journal
    for e in entries:
        assert all(not k[0].islower() for k in e), sorted(k for k in e if k[0].islower())


# ---- in process: the choice of handler and the stderr side ---------------------------------


@pytest.fixture
def root_logger():
    """setup_service_logging replaces the root handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("aiohttp").level
    yield root
    root.handlers[:], level, aiohttp_level = saved
    root.setLevel(level)
    logging.getLogger("aiohttp").setLevel(aiohttp_level)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),
        ({"JOURNAL_STREAM": "8:1234"}, True),
        ({"INVOCATION_ID": "abc"}, True),
        ({"JOURNAL_STREAM": "", "INVOCATION_ID": ""}, False),
        ({"TERM": "xterm"}, False),
    ],
)
def test_under_systemd(environ, expected):
    assert under_systemd(environ) is expected


def test_journal_handler_under_systemd(root_logger):
    if journal_mod.JournalHandler is None:
        pytest.skip("systemd-python is not installed")
    assert setup_service_logging("warning", environ={"INVOCATION_ID": "x"}) == "journal"
    (handler,) = root_logger.handlers
    assert isinstance(handler, journal_mod.JournalHandler)
    assert handler._extra["SYSLOG_IDENTIFIER"] == "appliance"
    assert root_logger.level == logging.WARNING


def test_stderr_outside_systemd(root_logger):
    stream = io.StringIO()
    assert setup_service_logging("debug", environ={}, stream=stream) == "stderr"
    assert root_logger.level == logging.DEBUG
    t = TranscriptLog(True)
    t.user("hello 100%", 3, "s1")
    t.assistant("hi", 3, "s1")
    t.turn(3, 640, 1500, 2200, "answered", session_id="s1")
    assert stream.getvalue().splitlines() == [
        "INFO appliance.transcript: user: hello 100%",
        "INFO appliance.transcript: assistant: hi",
        "INFO appliance.transcript: turn 3: answered in 640 ms "
        "(audio in 1500 ms, out 2200 ms, session s1)",
    ]


def test_stderr_without_transcripts(root_logger):
    stream = io.StringIO()
    setup_service_logging("info", environ={}, stream=stream)
    t = TranscriptLog(False, logging.getLogger("appliance.x"))
    t.user("private", 1, "s")
    t.assistant("private", 1, "s")
    t.turn(1, None, None, None, "cancelled")
    assert stream.getvalue() == "INFO appliance.x: turn 1: cancelled (audio in ?, out ?)\n"


def test_fields_passed_as_extra(caplog):
    with caplog.at_level(logging.INFO, logger="appliance.transcript"):
        t = TranscriptLog(True)
        t.user("q", 7, None)
        t.turn(7, 900, 1000, 2000, "timeout", session_id=None)
    user, turn = caplog.records
    assert user.APPLIANCE_ROLE == "user"
    assert user.APPLIANCE_TURN == "7"
    assert not hasattr(user, "APPLIANCE_SESSION")  # no session yet: left out, not "None"
    assert user.args == ()
    assert turn.APPLIANCE_RESULT == "timeout"
    assert turn.APPLIANCE_LATENCY_MS == "900"
    assert json.dumps(turn.__dict__, default=str)  # plain values only
